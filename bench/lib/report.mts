// Turns the bench results into Markdown tables, a hand-written SVG chart and docs/performance.md.
import type { LoadgenResult } from './loadgen.mts';

export type TargetName = 'kesd' | 'kes' | 'floor';
export const TARGETS: readonly TargetName[] = ['kesd', 'kes', 'floor'];

export interface RunRecord {
  target: TargetName;
  op: string;
  conns: number;
  /** 'half' runs: the offered rate. */
  rate?: number;
  result?: LoadgenResult;
  /** Why there is no result: n/a for this target, or the error. */
  skipped?: string;
  error?: string;
  /** More than 1 when the point was measured again because of other load on the machine. */
  attempts?: number;
  /** When the measurement started. */
  at?: string;
  /** HTTP/2 runs (the h2 column), with their streams in flight per connection; absent: HTTP/1.1. */
  proto?: 'h2';
  inflight?: number;
}

export interface Meta {
  date: string;
  machine: { nproc: number; cpu: string; flags: string; kernel: string; memGiB: number; virt: string };
  versions: Record<string, string>;
  settings: Record<string, unknown>;
  commands: { bench: string; smoke: string; ran: string };
  targets: Record<string, Record<string, unknown>>;
  wallSeconds?: number;
  /** Later `--merge` runs that replaced some points. */
  updates?: { date: string; ops: string[]; command: string; kesd: string }[];
}

export interface Results {
  meta: Meta;
  runs: RunRecord[];
  profile?: ProfileSummary;
  /** Parts measured by their own modules (bench/scale.mts, e2e.mts, replicas.mts), each with its own report. */
  scale?: import('../scale.mts').ScaleResult;
  e2e?: import('../e2e.mts').E2EResult;
  replicas?: import('../replicas.mts').ReplicasResult;
  /** Vault Transit on the same machine in the same run (bench/transit.mts). */
  transit?: import('../transit.mts').TransitResult;
}

export interface ProfileSummary {
  op: string;
  conns: number;
  durationS: number;
  processes: number;
  /** Only samples from the measured window (no start-up, no warm-up). */
  windowed: boolean;
  opsPerS: number;
  totalMs: number;
  top: { name: string; where: string; selfMs: number; pct: number }[];
  groups: { group: string; selfMs: number; pct: number }[];
}

const label: Record<TargetName, string> = { kesd: 'kesd', kes: 'KES', floor: 'floor' };

export function find(
  runs: RunRecord[],
  target: TargetName,
  op: string,
  conns: number,
  proto: 'h1' | 'h2' = 'h1',
): RunRecord | undefined {
  return runs.find((r) => r.target === target && r.op === op && r.conns === conns && (r.proto ?? 'h1') === proto);
}

/** Streams per connection of the h2 column in these runs (one value per run). */
function h2Inflight(runs: RunRecord[]): number | undefined {
  return runs.find((r) => r.proto === 'h2' && r.inflight)?.inflight;
}

const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
const fmtMs = (n: number | undefined) =>
  n === undefined ? '–' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : Math.round(n).toString();
const fmtRatio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? '–' : `${(a / b).toFixed(2)}×`;

function cell(r: RunRecord | undefined, f: (x: LoadgenResult) => string): string {
  if (r === undefined) return '–';
  if (r.skipped) return 'n/a';
  if (r.error || !r.result) return 'failed';
  return f(r.result);
}

const ops = (r: RunRecord | undefined) => (r?.result && !r.error ? r.result.ops_per_s : undefined);
const cpu = (r: RunRecord | undefined) =>
  r?.result?.server_cpu && r.result.ops > 0 ? r.result.server_cpu.us_per_req : undefined;

/** The main table: one row per (op, conns), kesd vs KES vs floor. */
export function mainTable(
  runs: RunRecord[],
  rows: { op: string; conns: number; title?: string }[],
  noisy: number,
): string {
  const mark = (r: RunRecord | undefined, text: string) =>
    r?.result && r.result.machine.other_cores > noisy ? `${text}†` : text;
  const perCpu = (k: RunRecord | undefined, s: RunRecord | undefined) =>
    cpu(k) !== undefined && cpu(s) !== undefined ? `${(cpu(s)! / cpu(k)!).toFixed(2)}×` : '–';
  const inflight = h2Inflight(runs);
  // The h2 columns only when the run has them (results from before the h2 column render as they did).
  const h2Head = inflight
    ? ` h2 ops/s: kesd · KES · floor | h2 kesd/KES | h2 kesd/floor | h2 p50 / p99 ms: kesd · KES · floor | h2 server CPU µs/req: kesd · KES · floor | h2 kesd/KES per CPU µs |`
    : '';
  const out = [
    `| op | conns | kesd ops/s | KES ops/s | floor ops/s | kesd/KES | kesd/floor | p50 / p99 ms: kesd · KES · floor | server CPU µs/req: kesd · KES · floor | kesd/KES per CPU µs |${h2Head}`,
    `|---|---:|---:|---:|---:|---:|---:|---|---|---:|${inflight ? '---:|---:|---:|---|---|---:|' : ''}`,
  ];
  for (const row of rows) {
    const [k, s, f] = TARGETS.map((t) => find(runs, t, row.op, row.conns));
    const lat = [k, s, f]
      .map((r) => cell(r, (x) => `${fmtMs(x.latency_ms.p50)} / ${fmtMs(x.latency_ms.p99)}`))
      .join(' · ');
    const c = [k, s, f].map((r) => cell(r, (x) => (x.server_cpu ? fmtInt(x.server_cpu.us_per_req) : '–'))).join(' · ');
    let h2 = '';
    if (inflight) {
      const [k2, s2, f2] = TARGETS.map((t) => find(runs, t, row.op, row.conns, 'h2'));
      const both = (f: (r: RunRecord | undefined) => string) => [k2, s2, f2].map(f).join(' · ');
      h2 = ` ${both((r) =>
        mark(
          r,
          cell(r, (x) => fmtInt(x.ops_per_s)),
        ),
      )} | ${fmtRatio(ops(k2), ops(s2))} | ${fmtRatio(ops(k2), ops(f2))} | ${both((r) => cell(r, (x) => `${fmtMs(x.latency_ms.p50)} / ${fmtMs(x.latency_ms.p99)}`))} | ${both((r) => cell(r, (x) => (x.server_cpu ? fmtInt(x.server_cpu.us_per_req) : '–')))} | ${perCpu(k2, s2)} |`;
    }
    out.push(
      `| ${row.title ?? row.op} | ${row.conns} | ${mark(
        k,
        cell(k, (x) => fmtInt(x.ops_per_s)),
      )} | ${mark(
        s,
        cell(s, (x) => fmtInt(x.ops_per_s)),
      )} | ${mark(
        f,
        cell(f, (x) => fmtInt(x.ops_per_s)),
      )} | ${fmtRatio(ops(k), ops(s))} | ${fmtRatio(ops(k), ops(f))} | ${lat} | ${c} | ${perCpu(k, s)} |${h2}`,
    );
  }
  if (inflight)
    out.push(
      '',
      `h2: HTTP/2 as MinIO's client speaks it to its KMS, the same connections with ${inflight} streams in flight on each (so ${inflight}× the requests in flight of the HTTP/1.1 columns); the floor answers on node:http2's core stream API, as kesd.`,
    );
  out.push(
    '',
    `† measured while other processes used more than ${noisy} cores (see "Every run"): this throughput is less trustworthy; CPU µs/req much less affected.`,
  );
  return out.join('\n');
}

export function bulkTable(runs: RunRecord[], bulkSize: number): string {
  const rows = runs.filter((r) => r.op === 'bulk');
  if (rows.length === 0) return '_not run_';
  const out = [
    `| target | conns | requests/s | ciphertexts/s | p50 ms | p95 ms | p99 ms | max ms | server CPU ms/request |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    if (r.skipped || r.error || !r.result) {
      out.push(
        `| ${label[r.target]} | ${r.conns} | ${r.skipped ? `n/a (${r.skipped})` : `failed: ${r.error}`} | | | | | | |`,
      );
      continue;
    }
    const x = r.result;
    out.push(
      `| ${label[r.target]} | ${r.conns} | ${x.ops_per_s.toFixed(1)} | ${fmtInt(x.ops_per_s * bulkSize)} | ${fmtMs(x.latency_ms.p50)} | ${fmtMs(x.latency_ms.p95)} | ${fmtMs(x.latency_ms.p99)} | ${fmtMs(x.latency_ms.max)} | ${x.server_cpu ? (x.server_cpu.us_per_req / 1000).toFixed(2) : '–'} |`,
    );
  }
  return out.join('\n');
}

export function halfTable(runs: RunRecord[], targetP99Ms: number): string {
  const rows = runs.filter((r) => r.op === 'half');
  if (rows.length === 0) return '_not run_';
  const out = [
    '| target | peak generate ops/s (conns) | offered rate (50 %) | achieved ops/s | p50 ms | p99 ms | p99.9 ms | max ms | service-time p99 ms | p99 ≤ ' +
      targetP99Ms +
      ' ms |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of rows) {
    const peak = runs
      .filter((p) => p.target === r.target && p.op === 'generate' && !p.proto && p.result)
      .sort((a, b) => b.result!.ops_per_s - a.result!.ops_per_s)[0];
    const peakCell = peak ? `${fmtInt(peak.result!.ops_per_s)} (${peak.conns})` : '–';
    if (!r.result || r.error) {
      out.push(
        `| ${label[r.target]} | ${peakCell} | ${r.rate ? fmtInt(r.rate) : '–'} | failed: ${r.error ?? r.skipped} | | | | | | |`,
      );
      continue;
    }
    const x = r.result;
    out.push(
      `| ${label[r.target]} | ${peakCell} | ${fmtInt(r.rate ?? 0)} over ${r.conns} conns | ${fmtInt(x.ops_per_s)} | ${fmtMs(x.latency_ms.p50)} | ${fmtMs(x.latency_ms.p99)} | ${fmtMs(x.latency_ms.p999)} | ${fmtMs(x.latency_ms.max)} | ${fmtMs(x.service_ms?.p99)} | ${x.latency_ms.p99! <= targetP99Ms ? 'yes' : '**no**'} |`,
    );
  }
  return out.join('\n');
}

/** Every run, for transparency about noise: connections really used, errors, CPU of server, client and the rest. */
export function runsTable(runs: RunRecord[], noisy: number): string {
  const out = [
    '| target | op | conns | ops/s | errors | conns dialed (in window) | TLS | server cores | loadgen cores | other load cores | steal | attempts |',
    '|---|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of runs) {
    if (!r.result) {
      out.push(
        `| ${label[r.target]} | ${r.op}${r.proto ? ` h2×${r.inflight}` : ''} | ${r.conns} | ${r.skipped ? 'n/a' : 'failed'} | ${(r.skipped ?? r.error ?? '').replace(/\|/g, '/').replace(/\n/g, ' ').slice(0, 120)} | | | | | | | |`,
      );
      continue;
    }
    const x = r.result;
    const errs =
      Object.entries(x.errors)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ') || '0';
    const tls = x.tls ? `${x.tls.version?.replace('TLS ', '')} ${x.tls.curve ?? ''}` : '';
    out.push(
      `| ${label[r.target]} | ${r.op}${r.rate ? ` @${fmtInt(r.rate)}/s` : ''}${r.proto ? ` h2×${r.inflight}` : ''} | ${r.conns} | ${fmtInt(x.ops_per_s)} | ${errs} | ${x.connections.dialed_total} (${x.connections.dialed_in_window})${x.connections.resumed ? `, ${x.connections.resumed} resumed` : ''} | ${tls} | ${x.server_cpu?.cores.toFixed(2) ?? '–'} | ${x.client_cpu.cores.toFixed(2)} | ${x.machine.other_cores.toFixed(2)}${x.machine.other_cores > noisy ? ' †' : ''} | ${x.machine.steal_cores.toFixed(2)} | ${r.attempts ?? 1} |`,
    );
  }
  return out.join('\n');
}

export function profileSection(p: ProfileSummary | undefined): string {
  if (!p) return '_No profile in this run (`--no-profile`)._';
  const top = [
    '| self ms | % | function | where |',
    '|---:|---:|---|---|',
    ...p.top.map((t) => `| ${t.selfMs.toFixed(0)} | ${t.pct.toFixed(1)} | \`${t.name}\` | ${t.where} |`),
  ];
  const groups = [
    '| self ms | % | group |',
    '|---:|---:|---|',
    ...p.groups.map((g) => `| ${g.selfMs.toFixed(0)} | ${g.pct.toFixed(1)} | ${g.group} |`),
  ];
  return `kesd under \`${p.op}\` with ${p.conns} connections for ${p.durationS} s (${fmtInt(p.opsPerS)} ops/s while profiled; ${p.processes} processes, one profile each; ${(p.totalMs / 1000).toFixed(1)} s of non-idle samples ${p.windowed ? 'from the measured window only' : 'over the whole process lifetime, start-up included'}).\n\nBy group (file or package):\n\n${groups.join('\n')}\n\nTop functions by self time:\n\n${top.join('\n')}`;
}

/** A short generated summary: the headline ratios. */
export function summary(runs: RunRecord[], conns: number[], halfP99: number, noisy = Infinity): string {
  const lines: string[] = [];
  for (const op of ['generate', 'decrypt']) {
    const parts = conns.flatMap((c) => {
      const k = find(runs, 'kesd', op, c);
      const s = find(runs, 'kes', op, c);
      const f = find(runs, 'floor', op, c);
      return k?.result
        ? [`${c} conns: ${fmtRatio(ops(k), ops(s))} of KES, ${fmtRatio(ops(k), ops(f))} of the floor`]
        : [];
    });
    const med = (a: number[]) => (a.length ? [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]! : NaN);
    const medCell = (a: number[]) => (a.length ? `${fmtInt(med(a))} µs` : '–');
    const kc = conns.map((c) => cpu(find(runs, 'kesd', op, c))).filter((x) => x !== undefined) as number[];
    const sc = conns.map((c) => cpu(find(runs, 'kes', op, c))).filter((x) => x !== undefined) as number[];
    const fc = conns.map((c) => cpu(find(runs, 'floor', op, c))).filter((x) => x !== undefined) as number[];
    if (parts.length > 0)
      lines.push(
        `- **${op}** throughput, kesd: ${parts.join('; ')}. Server CPU per request (median over the connection counts): kesd ${medCell(kc)}, KES ${medCell(sc)}, floor ${medCell(fc)}.`,
      );
    const h2 = conns.flatMap((c) => {
      const k = find(runs, 'kesd', op, c, 'h2');
      return k?.result
        ? [
            `${c} conns: ${fmtRatio(ops(k), ops(find(runs, 'kes', op, c, 'h2')))} of KES, ${fmtRatio(ops(k), ops(find(runs, 'floor', op, c, 'h2')))} of the floor`,
          ]
        : [];
    });
    if (h2.length > 0) {
      const kc2 = conns.map((c) => cpu(find(runs, 'kesd', op, c, 'h2'))).filter((x) => x !== undefined) as number[];
      const sc2 = conns.map((c) => cpu(find(runs, 'kes', op, c, 'h2'))).filter((x) => x !== undefined) as number[];
      const fc2 = conns.map((c) => cpu(find(runs, 'floor', op, c, 'h2'))).filter((x) => x !== undefined) as number[];
      lines.push(
        `- **${op} over h2** (${h2Inflight(runs)} streams per connection, as MinIO): kesd ${h2.join('; ')}. Server CPU per request (median): kesd ${medCell(kc2)}, KES ${medCell(sc2)}, floor ${medCell(fc2)}.`,
      );
    }
  }
  for (const op of ['churn', 'mix', 'create', 'list']) {
    const k = runs.find((r) => r.target === 'kesd' && r.op === op);
    if (!k) continue;
    const s = find(runs, 'kes', op, k.conns);
    const f = find(runs, 'floor', op, k.conns);
    lines.push(
      `- **${op}** (${k.conns} conns): kesd ${cell(k, (x) => fmtInt(x.ops_per_s))} ops/s, ${fmtRatio(ops(k), ops(s))} of KES${f?.result ? `, ${fmtRatio(ops(k), ops(f))} of the floor` : ''}; server CPU ${cell(k, (x) => (x.server_cpu ? fmtInt(x.server_cpu.us_per_req) : '–'))} µs/req (KES ${cell(s, (x) => (x.server_cpu ? fmtInt(x.server_cpu.us_per_req) : '–'))}).`,
    );
  }
  const bulk = runs
    .filter((r) => r.target === 'kesd' && r.op === 'bulk' && r.result)
    .sort((a, b) => a.conns - b.conns)[0];
  if (bulk)
    lines.push(
      `- **bulk decrypt** of 1,000 ciphertexts in one request (kesd, ${bulk.conns} conn): p50 ${fmtMs(bulk.result!.latency_ms.p50)} ms, p99 ${fmtMs(bulk.result!.latency_ms.p99)} ms. KES v0.24 has no bulk API (n/a).`,
    );
  const half = runs.find((r) => r.target === 'kesd' && r.op === 'half');
  if (half?.result) {
    const other = half.result.machine.other_cores;
    lines.push(
      `- **latency at half of peak** (kesd, ${fmtInt(half.rate ?? 0)} generate/s offered): p99 ${fmtMs(half.result.latency_ms.p99)} ms (target ≤ ${halfP99} ms: ${half.result.latency_ms.p99! <= halfP99 ? 'met' : 'not met'})${other > noisy ? ` †: other processes used ${other.toFixed(2)} cores during this run, so the offered load did not fit into the CPU left and queues grew; this says little about kesd` : ''}.`,
    );
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- SVG

const COLORS: Record<TargetName, string> = { kesd: '#1f6fd1', kes: '#e07b00', floor: '#6b6b6b' };

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const e = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * e >= v) return m * e;
  return 10 * e;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Throughput vs connections for kesd/KES/floor: one panel per op, a shared y axis. */
export function throughputSvg(
  runs: RunRecord[],
  conns: number[],
  opsShown: string[],
  subtitle: string,
  noisy = Infinity,
): string {
  const W = 960;
  const H = 440;
  const panelW = (W - 60) / opsShown.length;
  const top = 78;
  const plotH = 260;
  const left = 70;
  const all = runs.filter((r) => opsShown.includes(r.op) && r.result).map((r) => r.result!.ops_per_s);
  const yMax = niceMax(Math.max(1, ...all) * 1.08);
  const ticks = 5;
  const xs = (i: number, pw: number) => (conns.length === 1 ? pw / 2 : 30 + (i * (pw - 60)) / (conns.length - 1));
  const y = (v: number) => top + plotH - (v / yMax) * plotH;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">Keep-alive mTLS throughput vs connections (requests/s, higher is better)</text>`,
  );
  parts.push(`<text x="${W / 2}" y="44" text-anchor="middle" fill="#555">${esc(subtitle)}</text>`);
  opsShown.forEach((op, pi) => {
    const ox = left + pi * panelW;
    const pw = panelW - 40;
    parts.push(`<g transform="translate(${ox},0)">`);
    parts.push(
      `<text x="${pw / 2}" y="${top - 12}" text-anchor="middle" font-size="14" font-weight="bold">${esc(op)}</text>`,
    );
    for (let t = 0; t <= ticks; t++) {
      const v = (yMax * t) / ticks;
      const yy = y(v).toFixed(1);
      parts.push(`<line x1="0" x2="${pw}" y1="${yy}" y2="${yy}" stroke="#e3e3e3"/>`);
      if (pi === 0) parts.push(`<text x="-8" y="${yy}" dy="4" text-anchor="end" fill="#333">${fmtInt(v)}</text>`);
    }
    parts.push(`<line x1="0" x2="0" y1="${top}" y2="${top + plotH}" stroke="#999"/>`);
    parts.push(`<line x1="0" x2="${pw}" y1="${top + plotH}" y2="${top + plotH}" stroke="#999"/>`);
    conns.forEach((c, i) => {
      parts.push(
        `<text x="${xs(i, pw).toFixed(1)}" y="${top + plotH + 18}" text-anchor="middle" fill="#333">${c}</text>`,
      );
    });
    parts.push(
      `<text x="${pw / 2}" y="${top + plotH + 38}" text-anchor="middle" fill="#333">connections (log scale)</text>`,
    );
    for (const t of TARGETS) {
      const pts = conns.map((c, i) => ({ i, r: find(runs, t, op, c) })).filter((p) => p.r?.result);
      if (pts.length === 0) continue;
      const d = pts
        .map((p, k) => `${k === 0 ? 'M' : 'L'}${xs(p.i, pw).toFixed(1)},${y(p.r!.result!.ops_per_s).toFixed(1)}`)
        .join(' ');
      parts.push(
        `<path d="${d}" fill="none" stroke="${COLORS[t]}" stroke-width="2.5"${t === 'floor' ? ' stroke-dasharray="6,4"' : ''}/>`,
      );
      for (const p of pts) {
        const hollow = p.r!.result!.machine.other_cores > noisy; // measured while other processes were busy
        parts.push(
          `<circle cx="${xs(p.i, pw).toFixed(1)}" cy="${y(p.r!.result!.ops_per_s).toFixed(1)}" r="4" fill="${hollow ? '#ffffff' : COLORS[t]}" stroke="${COLORS[t]}" stroke-width="2"/>`,
        );
      }
    }
    // Value labels: the highest point at each x gets its label above, the others below, at least 13 px apart.
    conns.forEach((c, i) => {
      const here = TARGETS.map((t) => ({ t, r: find(runs, t, op, c) }))
        .filter((p) => p.r?.result)
        .map((p) => ({ t: p.t, v: p.r!.result!.ops_per_s, y: y(p.r!.result!.ops_per_s) }));
      here.sort((p, q) => p.y - q.y);
      let last = -Infinity;
      here.forEach((p, k) => {
        let ly = k === 0 ? p.y - 8 : p.y + 16;
        if (ly < last + 13) ly = last + 13;
        last = ly;
        const anchor = i === conns.length - 1 ? 'end' : 'start';
        const lx = xs(i, pw) + (anchor === 'end' ? -7 : 7);
        parts.push(
          `<text x="${lx.toFixed(1)}" y="${ly.toFixed(1)}" fill="${COLORS[p.t]}" font-size="11" text-anchor="${anchor}" stroke="#ffffff" stroke-width="3" paint-order="stroke">${fmtInt(p.v)}</text>`,
        );
      });
    });
    parts.push('</g>');
  });
  if (opsShown.length > 0)
    parts.push(
      `<text transform="translate(16,${top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#333">requests/s</text>`,
    );
  const ly = H - 26;
  let lx = W / 2 - 230;
  for (const t of TARGETS) {
    parts.push(
      `<line x1="${lx}" x2="${lx + 26}" y1="${ly}" y2="${ly}" stroke="${COLORS[t]}" stroke-width="2.5"${t === 'floor' ? ' stroke-dasharray="6,4"' : ''}/>`,
    );
    parts.push(`<circle cx="${lx + 13}" cy="${ly}" r="4" fill="${COLORS[t]}"/>`);
    const name = t === 'kesd' ? 'kesd' : t === 'kes' ? 'KES v0.24 (Go)' : 'floor: bare Node http / http2 + mTLS';
    parts.push(`<text x="${lx + 32}" y="${ly + 4}">${esc(name)}</text>`);
    lx += t === 'floor' ? 0 : t === 'kesd' ? 90 : 140;
  }
  if (
    Number.isFinite(noisy) &&
    runs.some((r) => opsShown.includes(r.op) && r.result && r.result.machine.other_cores > noisy)
  ) {
    parts.push(
      `<text x="${W / 2}" y="${H - 4}" text-anchor="middle" fill="#777" font-size="11">hollow point: measured while other processes used more than ${noisy} cores (less trustworthy)</text>`,
    );
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

export function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{\{(\w+)\}\}/g, (m, k: string) => {
    if (!(k in values)) throw new Error(`template: no value for ${m}`);
    return values[k]!;
  });
}
