// Shared helpers of the reliability suite (test/kesd/reliability.*.test.ts): a seeded PRNG, env-var settings,
// a `kesd server` process in its own process group (so kill -9 takes down everything it started), HTTPS calls
// with a deadline, latency percentiles and the RSS of a process group. Loopback only; every wait is bounded.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import type { EnclaveConfig } from '../../kesd/src/config/config.js';
import { makeIdentity, readReply, type Reply, type TestIdentity } from './harness.js';
import { KESD_BIN } from './cli-process.js';

// ---- settings and randomness ------------------------------------------------------------------------

/** A positive integer from the environment, or the CI default. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${raw}: expected a positive number`);
  return n;
}

export interface Rng {
  readonly seed: number;
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number;
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  bytes(n: number): Buffer;
}

/** mulberry32: small, fast, good enough for test inputs, and reproducible from its 32-bit seed. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    seed,
    next,
    int,
    range: (lo, hi) => lo + int(hi - lo + 1),
    chance: (p) => next() < p,
    pick: (items) => items[int(items.length)]!,
    bytes: (n) => {
      const b = Buffer.alloc(n);
      for (let i = 0; i < n; i++) b[i] = int(256);
      return b;
    },
  };
}

/** The seed from `envName` (to replay a run), else a fresh one. Callers print it. */
export function seedFrom(envName: string): number {
  const raw = process.env[envName];
  if (raw !== undefined && raw !== '') return Number(raw) >>> 0;
  return (Math.random() * 2 ** 32) >>> 0;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Rejects after ms with `what` in the message; the timer never keeps the process alive. */
export function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

// ---- a data dir and a `kesd server` process ----------------------------------------------------------

export const UNSEAL_ENV = 'KESD_RELIABILITY_UNSEAL';

export interface Fixture {
  /** Holds the identities (and, unless dataDir was given, the data dir). */
  readonly dir: string;
  readonly dataDir: string;
  /** The environment the server runs with: UNSEAL_ENV holds the right unseal key. */
  readonly env: NodeJS.ProcessEnv;
  readonly unsealKey: string;
  readonly server: TestIdentity;
  readonly sysadmin: TestIdentity;
  /** Admin of the 'default' enclave. */
  readonly admin: TestIdentity;
  /** Extra identities by name (no role unless the caller gives them one). */
  readonly ids: Record<string, TestIdentity>;
  remove(): Promise<void>;
}

export interface FixtureOptions {
  /** Where the data dir goes (e.g. on a small tmpfs); default <dir>/data. */
  readonly dataDir?: string;
  /** Names of extra identities to create. */
  readonly extra?: readonly string[];
  /** Keys of the 'default' enclave. */
  readonly keys?: readonly string[];
  /** Policies of the 'default' enclave (identities by extra name). */
  readonly policies?: readonly { name: string; allow: string[]; deny: string[]; identities: string[] }[];
}

/** Identities plus an initialised data dir ('default' enclave, admin = fixture.admin). */
export async function makeFixture(opts: FixtureOptions = {}): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-rel-'));
  const server = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  const sysadmin = await makeIdentity(dir, 'sysadmin');
  const admin = await makeIdentity(dir, 'admin');
  const ids: Record<string, TestIdentity> = {};
  for (const name of opts.extra ?? []) ids[name] = await makeIdentity(dir, name);
  const unsealKey = Buffer.alloc(32, 0x5a).toString('base64');
  const env: NodeJS.ProcessEnv = { ...process.env, [UNSEAL_ENV]: unsealKey };
  const enclave: EnclaveConfig = {
    name: 'default',
    admin: admin.identity,
    keys: [...(opts.keys ?? ['minio-default'])],
    policies: (opts.policies ?? []).map((p) => ({ ...p, identities: p.identities.map((n) => ids[n]!.identity) })),
  };
  const dataDir = opts.dataDir ?? join(dir, 'data');
  await initDataDir(
    dataDir,
    {
      version: 'v1',
      address: '127.0.0.1:0',
      sysadmin: sysadmin.identity,
      tls: {
        key: server.keyFile,
        cert: server.certFile,
        password: '',
        verifyCert: false,
        proxy: { identities: [], header: '' },
      },
      unsealEnv: UNSEAL_ENV,
      enclaves: [enclave],
    },
    { env, force: true },
  );
  return {
    dir,
    dataDir,
    env,
    unsealKey,
    server,
    sysadmin,
    admin,
    ids,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface KesdProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  /** stderr so far (bounded to the last 64 KiB). */
  output(): string;
  /** Resolves with (code, signal) once the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** kill -9 of the whole process group; resolves once the leader is gone. */
  kill9(): Promise<void>;
  /**
   * kill -9 of the `kesd server` process only (what `kill -9 <pid>` or the OOM killer does). Resolves with the
   * pids of its group still alive `graceMs` later (orphaned workers), which are then killed too.
   */
  /** SIGKILL to the server process alone; `orphaned` runs once it is dead, while its workers may still live. */
  kill9Leader(graceMs?: number, orphaned?: () => Promise<void>): Promise<number[]>;
  /** SIGTERM (graceful), then SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
  alive(): boolean;
}

const live = new Set<KesdProcess>();
process.once('exit', () => {
  for (const p of live) {
    try {
      process.kill(-p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/**
 * `kesd server <dataDir> [args]` as its own process group (detached), so a kill -9 also takes any workers it
 * forked. Resolves once it logs "listening on"; rejects (and kills it) if it exits first or after startMs.
 */
export function startKesd(
  dataDir: string,
  env: NodeJS.ProcessEnv,
  args: string[] = [],
  opts: { startMs?: number; stdout?: 'ignore' | 'pipe'; stdoutFile?: string } = {},
): Promise<KesdProcess> {
  // stdoutFile: kesd appends to the file itself (its audit lines), so nothing is lost when it is killed.
  const stdoutFd = opts.stdoutFile === undefined ? undefined : openSync(opts.stdoutFile, 'a');
  const child = spawn(process.execPath, [KESD_BIN, 'server', dataDir, ...args], {
    env,
    detached: true,
    stdio: ['ignore', stdoutFd ?? opts.stdout ?? 'ignore', 'pipe'],
  });
  if (stdoutFd !== undefined) closeSync(stdoutFd); // the child has its own copy
  let stderr = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  const groupKill = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // the group is gone already
    }
  };
  return new Promise((resolve, reject) => {
    let started = false;
    const timer = setTimeout(() => {
      groupKill('SIGKILL');
      reject(new Error(`kesd server did not start within ${opts.startMs ?? 20_000} ms: ${stderr}`));
    }, opts.startMs ?? 20_000);
    child.stdout?.resume();
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-65536);
      const m = /listening on \S+:(\d+)/.exec(stderr);
      if (m && !started) {
        started = true;
        clearTimeout(timer);
        const proc: KesdProcess = {
          child,
          pid: child.pid!,
          port: Number(m[1]),
          output: () => stderr,
          exited,
          alive: () => child.exitCode === null && child.signalCode === null,
          async kill9() {
            groupKill('SIGKILL');
            await deadline(exited, 10_000, 'kesd to die after SIGKILL');
            live.delete(proc);
          },
          async kill9Leader(graceMs = 10_000, orphaned?: () => Promise<void>) {
            try {
              process.kill(child.pid!, 'SIGKILL');
            } catch {
              // gone already
            }
            await deadline(exited, 10_000, 'kesd to die after SIGKILL');
            await orphaned?.();
            let left = await groupPids(child.pid!);
            for (let waited = 0; left.length > 0 && waited < graceMs; waited += 100) {
              await sleep(100);
              left = await groupPids(child.pid!);
            }
            if (left.length > 0 && process.env.KESD_ORPHAN_DEBUG) {
              const { execSync } = await import('node:child_process');
              for (const p of left)
                console.error(
                  execSync(
                    `grep -E 'State|PPid|SigBlk|SigCgt' /proc/${p}/status; cat /proc/${p}/wchan; echo; cat /proc/${p}/stack 2>/dev/null; ls -l /proc/${p}/fd; cat /proc/${p}/task/*/stat | cut -d' ' -f1-3`,
                  ).toString(),
                );
            }
            if (left.length > 0) groupKill('SIGKILL');
            live.delete(proc);
            return left;
          },
          async stop(graceMs = 10_000) {
            if (proc.alive()) {
              groupKill('SIGTERM');
              const t = setTimeout(() => groupKill('SIGKILL'), graceMs);
              await exited;
              clearTimeout(t);
            }
            groupKill('SIGKILL'); // any stray worker of the group
            live.delete(proc);
          },
        };
        live.add(proc);
        resolve(proc);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (!started) reject(new Error(`kesd server exited (${code ?? signal}) before listening: ${stderr}`));
    });
  });
}

// ---- HTTPS ----------------------------------------------------------------------------------------------

export function agentFor(who: TestIdentity | undefined, opts: https.AgentOptions = {}): https.Agent {
  return new https.Agent({ keepAlive: true, rejectUnauthorized: false, cert: who?.cert, key: who?.key, ...opts });
}

export interface CallOptions {
  readonly timeoutMs?: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  readonly headers?: Record<string, string>;
}

/** One request with a deadline (the request is destroyed when it passes, so nothing waits forever). */
export function call(
  agent: https.Agent,
  port: number,
  method: string,
  path: string,
  body?: unknown,
  opts: CallOptions = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload =
      body === undefined
        ? undefined
        : Buffer.isBuffer(body)
          ? body
          : typeof body === 'string'
            ? Buffer.from(body)
            : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { ...(opts.headers ?? {}) };
    if (payload) headers['content-length'] = payload.length;
    const req = https.request({ host: opts.host ?? '127.0.0.1', port, method, path, agent, headers }, (res) => {
      readReply(res).then(resolve, reject);
    });
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Runs `count` tasks with at most `width` in flight. */
export async function pool<T>(
  items: readonly T[],
  width: number,
  task: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await task(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

// ---- memory ----------------------------------------------------------------------------------------------

/** Resident set size in bytes, summed over every process of the process group `pgid`. */
export async function groupRss(pgid: number): Promise<number> {
  let total = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) !== pgid) continue; // field 5 of /proc/pid/stat: the process group
      const status = await readFile(`/proc/${entry}/status`, 'utf8');
      const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // the process went away meanwhile
    }
  }
  return total;
}

export const MiB = 1 << 20;
export const b64 = (data: string | Buffer) => Buffer.from(data).toString('base64');

/** The pids of the process group `pgid` (the leader and, in cluster mode, its workers). */
export async function groupPids(pgid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid && fields[0] !== 'Z') pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids.sort((a, b) => a - b);
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** It was still running after timeoutMs and was killed. */
  readonly timedOut: boolean;
}

/** Runs `kesd <args>` to its exit, killing its process group after timeoutMs (a server that should not have started). */
export function runKesd(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 20_000): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [KESD_BIN, ...args], {
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (d) => (stdout = (stdout + d).slice(-65536)));
    child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-65536)));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone
      }
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}
