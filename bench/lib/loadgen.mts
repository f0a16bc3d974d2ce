// Builds the Go load generator (bench/loadgen) into the bench cache (go-tool.mts) and runs it.
import { spawn } from 'node:child_process';
import { ensureGoTool } from './go-tool.mts';
import { track } from './proc.mts';

// run.mts and e2e.mts report the Go version; they import it from here.
export { goVersion } from './go-tool.mts';

/** The loadgen binary, built only when its sources (or the Go toolchain) changed. */
export function ensureLoadgen(log: (s: string) => void): string {
  return ensureGoTool('loadgen', 'the load generator', log);
}

export interface LoadgenResult {
  op: string;
  url: string;
  proto: string;
  conns: number;
  inflight?: number;
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
  /** Added to the environment (a Vault token for transit-* ops: never in argv, which ps shows). */
  env?: Record<string, string>;
}

export function runLoadgen(bin: string, a: LoadgenArgs): Promise<LoadgenResult> {
  const args = [
    '-url',
    a.url,
    '-cert',
    a.cert,
    '-key',
    a.key,
    '-ca',
    a.ca,
    '-op',
    a.op,
    '-conns',
    String(a.conns),
    '-duration',
    `${a.durationS}s`,
    '-warmup',
    `${a.warmupS}s`,
    '-pids',
    a.pids.join(','),
    ...(a.rate ? ['-rate', String(a.rate)] : []),
    ...(a.keyName ? ['-key-name', a.keyName] : []),
    ...(a.extra ?? []),
  ];
  return new Promise((res, rej) => {
    const child = track(
      spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(a.env ? { env: { ...process.env, ...a.env } } : {}) }),
    );
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
