// Builds the Go load generator (bench/loadgen) into a cache dir outside the clone, keyed by a hash of its sources
// and the Go version, and runs it.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './targets.mts';
import { runSync, track } from './proc.mts';

const SRC = join(REPO, 'bench/loadgen');

export function cacheDir(): string {
  return process.env.KESD_BENCH_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'stateful-kes', 'bench');
}

export function goVersion(): string {
  return runSync('go', ['version'], { env: { ...process.env, GOTOOLCHAIN: 'local' } }).trim();
}

/** The loadgen binary, built only when its sources (or the Go toolchain) changed. */
export function ensureLoadgen(log: (s: string) => void): string {
  const files = readdirSync(SRC).filter((f) => f.endsWith('.go') || f === 'go.mod' || f === 'go.sum').sort();
  const h = createHash('sha256');
  for (const f of files) h.update(f).update('\0').update(readFileSync(join(SRC, f))).update('\0');
  const go = goVersion();
  h.update(go);
  const hash = h.digest('hex').slice(0, 16);
  const dir = cacheDir();
  const bin = join(dir, `loadgen-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  log(`building the load generator (${go}) → ${bin}`);
  const tmp = `${bin}.tmp-${process.pid}`;
  try {
    runSync('go', ['build', '-trimpath', '-buildvcs=false', '-o', tmp, '.'], { cwd: SRC, env: { ...process.env, GOTOOLCHAIN: 'local', CGO_ENABLED: '0', GOFLAGS: '' } });
    renameSync(tmp, bin);
  } finally {
    rmSync(tmp, { force: true });
  }
  return bin;
}

export interface LoadgenResult {
  op: string;
  url: string;
  proto: string;
  conns: number;
  concurrency: number;
  rate?: number;
  duration_s: number;
  ops: number;
  ops_per_s: number;
  errors: Record<string, number>;
  error_sample?: Record<string, string>;
  latency_ms: Record<string, number>;
  service_ms?: Record<string, number>;
  connections: Record<string, number>;
  tls: Record<string, string>;
  server_cpu?: { pids: number[]; processes: number; seconds: number; cores: number; us_per_req: number };
  client_cpu: { seconds: number; cores: number; us_per_req: number };
  machine: { cpus: number; busy_cores: number; other_cores: number; steal_cores: number };
  timeline_ops_per_s: number[];
  response_bytes_avg: number;
  mix?: Record<string, number>;
  stuck_workers?: number;
  predial_s?: number;
}

export interface LoadgenArgs {
  url: string;
  cert: string;
  key: string;
  ca: string;
  op: string;
  conns: number;
  durationS: number;
  warmupS: number;
  pids: number[];
  rate?: number;
  keyName?: string;
  extra?: string[];
}

export function runLoadgen(bin: string, a: LoadgenArgs): Promise<LoadgenResult> {
  const args = [
    '-url', a.url, '-cert', a.cert, '-key', a.key, '-ca', a.ca, '-op', a.op, '-conns', String(a.conns),
    '-duration', `${a.durationS}s`, '-warmup', `${a.warmupS}s`, '-pids', a.pids.join(','),
    ...(a.rate ? ['-rate', String(a.rate)] : []), ...(a.keyName ? ['-key-name', a.keyName] : []), ...(a.extra ?? []),
  ];
  return new Promise((res, rej) => {
    const child = track(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const limit = setTimeout(() => child.kill('SIGKILL'), (a.durationS + a.warmupS + 180) * 1000);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(limit);
      if (code !== 0) return rej(new Error(`loadgen ${args.join(' ')} exited with ${code}: ${err}`));
      try {
        res(JSON.parse(out) as LoadgenResult);
      } catch (e) {
        rej(new Error(`loadgen printed no JSON (${(e as Error).message}): ${out}${err}`));
      }
    });
  });
}
