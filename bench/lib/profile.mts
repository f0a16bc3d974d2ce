// Summarises V8 .cpuprofile files (from `node --cpu-prof`): self time by function and by file/package.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProfileSummary } from './report.mts';
import { REPO } from './targets.mts';

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function where(url: string, line: number): string {
  if (!url) return '(native)';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(REPO + '/')) u = u.slice(REPO.length + 1);
  u = u.replace(/^.*?node_modules\//, 'node_modules/');
  return `${u}:${line + 1}`;
}

function group(name: string, url: string): string {
  if (name === '(garbage collector)' || name === '(idle)' || name === '(program)' || name === '(root)') return name;
  if (!url) return '(native: builtins, C++ bindings)';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(REPO + '/')) u = u.slice(REPO.length + 1);
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (nm) return `node_modules/${nm[1]}`;
  const kesd = /^kesd\/dist\/(.*)$/.exec(u);
  if (kesd) return `kesd/dist/${kesd[1]!.replace(/\.js$/, '')}`;
  if (u.startsWith('node:')) {
    const m = u.slice(5);
    if (/http|_http/.test(m)) return 'node: http';
    if (/tls|_tls/.test(m)) return 'node: tls';
    if (/stream/.test(m)) return 'node: streams';
    if (/net|dgram|dns/.test(m)) return 'node: net';
    if (/crypto/.test(m)) return 'node: crypto';
    if (/timers/.test(m)) return 'node: timers';
    if (/events|process|task_queues|async_hooks/.test(m)) return 'node: events, process, async';
    return `node: ${m.replace(/^internal\//, '')}`;
  }
  return u;
}

/**
 * Sums self time over every profile in dir. With a window (µs on CLOCK_MONOTONIC, which both V8's profile
 * timestamps and process.hrtime use on Linux), only samples inside it count: start-up and warm-up are left out.
 */
export function summariseProfiles(
  dir: string,
  meta: { op: string; conns: number; durationS: number; opsPerS: number },
  window?: { fromUs: number; toUs: number },
  topN = 25,
): ProfileSummary {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) throw new Error(`no .cpuprofile in ${dir}`);
  const byFn = new Map<string, { name: string; where: string; self: number }>();
  const byGroup = new Map<string, number>();
  let total = 0;
  for (const f of files) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile;
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    // Self time: each sample's node gets the time until the next sample (µs).
    const self = new Map<number, number>();
    let t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      t += p.timeDeltas[i] ?? 0;
      if (window && (t < window.fromUs || t > window.toUs)) continue;
      const dt = p.timeDeltas[i + 1] ?? 0;
      self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + Math.max(0, dt));
    }
    for (const [id, us] of self) {
      const n = nodes.get(id)!;
      const name = n.callFrame.functionName || '(anonymous)';
      if (name === '(idle)') continue; // not CPU time
      const w = where(n.callFrame.url, n.callFrame.lineNumber);
      const key = `${name}@${w}`;
      const e = byFn.get(key) ?? { name, where: w, self: 0 };
      e.self += us;
      byFn.set(key, e);
      const g = group(name, n.callFrame.url);
      byGroup.set(g, (byGroup.get(g) ?? 0) + us);
      total += us;
    }
  }
  if (total === 0) throw new Error('no profile samples in the measured window');
  const pct = (us: number) => (100 * us) / total;
  return {
    ...meta,
    windowed: window !== undefined,
    processes: files.length,
    totalMs: total / 1000,
    top: [...byFn.values()]
      .sort((a, b) => b.self - a.self)
      .slice(0, topN)
      .map((e) => ({ name: e.name, where: e.where, selfMs: e.self / 1000, pct: pct(e.self) })),
    groups: [...byGroup.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 20)
      .map(([g, us]) => ({ group: g, selfMs: us / 1000, pct: pct(us) })),
  };
}
