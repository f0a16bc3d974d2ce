// Builds the Go S3 load generator (bench/s3load) into the bench cache (go-tool.mts, like bench/loadgen) and runs
// it: PUT/GET load, and MinIO's own KMS request counters.
import { spawn } from 'node:child_process';
import { ensureGoTool } from './go-tool.mts';
import { track } from './proc.mts';

/** The s3load binary, built only when its sources (or the Go toolchain) changed. */
export function ensureS3load(log: (s: string) => void): string {
  return ensureGoTool('s3load', 'the S3 load generator', log);
}

export interface CpuUse {
  seconds: number;
  cores: number;
  us_per_op: number;
}

export interface S3LoadResult {
  op: 'put' | 'get';
  size: number;
  conns: number;
  duration_s: number;
  warmup_s: number;
  ops: number;
  ops_per_s: number;
  mib_per_s: number;
  errors: Record<string, number>;
  error_sample?: Record<string, string>;
  latency_ms: Partial<Record<'p50' | 'p90' | 'p99' | 'p999' | 'max' | 'mean', number>>;
  /** put: object indexes handed out, [0, objects); get: the range read. */
  objects: number;
  /** 200s over the whole run, warm-up included. */
  total_ok: number;
  /** Hex of the first 32 bytes of every object's body, to look for on disk. */
  payload_head: string;
  cpu: Record<string, CpuUse>;
  /**
   * other_cores: busy cores less the measured processes, irq/softirq (loopback traffic) and kernel threads (disk
   * writeback): other work on the machine. tcp_active_opens: connections opened on the machine over the window
   * (mostly MinIO dialling its KMS).
   */
  machine: {
    busy_cores: number;
    irq_cores: number;
    kthread_cores: number;
    other_cores: number;
    steal_cores: number;
    tcp_active_opens: number;
  };
}

export interface S3Endpoint {
  url: string;
  user: string;
  password: string;
}

export interface S3LoadArgs {
  op: 'put' | 'get';
  bucket: string;
  size: number;
  conns: number;
  durationS: number;
  warmupS: number;
  seed: number;
  objects?: number;
  /** put: the first object index (objects of an earlier put run stay readable). */
  start?: number;
  /** name → pid whose CPU (with descendants) is sampled over the measured window. */
  pids: Record<string, number>;
}

function exec(bin: string, args: string[], s3: S3Endpoint, limitS: number): Promise<string> {
  return new Promise((res, rej) => {
    // Credentials go through the environment, not argv (which `ps` shows).
    const child = track(
      spawn(bin, args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, S3LOAD_ACCESS_KEY: s3.user, S3LOAD_SECRET_KEY: s3.password },
      }),
    );
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const limit = setTimeout(() => child.kill('SIGKILL'), limitS * 1000);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(limit);
      if (code !== 0) rej(new Error(`s3load ${args.join(' ')} exited with ${code}: ${err.trim()}`));
      else res(out);
    });
  });
}

export async function runS3load(bin: string, s3: S3Endpoint, a: S3LoadArgs): Promise<S3LoadResult> {
  const args = [
    '-endpoint',
    s3.url,
    '-op',
    a.op,
    '-bucket',
    a.bucket,
    '-size',
    String(a.size),
    '-conns',
    String(a.conns),
    '-duration',
    `${a.durationS}s`,
    '-warmup',
    `${a.warmupS}s`,
    '-seed',
    String(a.seed),
    '-pids',
    Object.entries(a.pids)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
    ...(a.objects !== undefined ? ['-objects', String(a.objects)] : []),
    ...(a.start ? ['-start', String(a.start)] : []),
  ];
  const out = await exec(bin, args, s3, a.durationS + a.warmupS + 120);
  try {
    return JSON.parse(out) as S3LoadResult;
  } catch (e) {
    throw new Error(`s3load printed no JSON (${(e as Error).message}): ${out}`);
  }
}

/** MinIO's KMS request counters (GET /minio/kms/v1/metrics): every KMS call MinIO made, as MinIO counted it. */
export interface KmsCounters {
  ok: number;
  error: number;
  failure: number;
}

export async function kmsCounters(bin: string, s3: S3Endpoint): Promise<KmsCounters> {
  const out = await exec(bin, ['-endpoint', s3.url, '-op', 'kms-metrics'], s3, 30);
  const m = JSON.parse(out) as { kms_req_success?: number; kms_req_error?: number; kms_req_failure?: number };
  return { ok: m.kms_req_success ?? 0, error: m.kms_req_error ?? 0, failure: m.kms_req_failure ?? 0 };
}
