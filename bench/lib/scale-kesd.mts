// The scale benchmark's kesd: one data dir, filled in-process through kesd's own System API, served by
// `kesd server` processes that are started, timed to /v1/ready, sampled for memory and stopped again.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrKeyExists } from '../../kesd/src/kes/errors.js';
import { STORE_FILE } from '../../kesd/src/boot/data-dir.js';
import { System } from '../../kesd/src/state/system.js';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import { openSealedRootKey } from '../../kesd/src/store/unseal.js';
import { descendants, exeOf, request, runSync, sleep, spawnLogged, stop } from './proc.mts';
import { benchInitYml, cleanEnv, KESD_BIN, type Identities } from './targets.mts';

const NODE = process.execPath;
const UNSEAL_ENV = 'KESD_SCALE_UNSEAL_KEY';
const ENCLAVE = 'default'; // the enclave benchInitYml makes

/** Bulk key names sort in creation order: k-0000000, k-0000001, … */
export const keyName = (i: number) => `k-${String(i).padStart(7, '0')}`;

export interface ScaleStore {
  readonly home: string;
  readonly dataDir: string;
  readonly storeFile: string;
  readonly env: NodeJS.ProcessEnv;
  readonly ids: Identities;
}

/** `kesd init` of a data dir whose default enclave lets the bench client use /v1/key/* (as MinIO's identity). */
export function initStore(home: string, ids: Identities): ScaleStore {
  const env = cleanEnv({ [UNSEAL_ENV]: Buffer.alloc(32, 43).toString('base64') });
  const initYml = join(home, 'init.yml');
  writeFileSync(initYml, benchInitYml(ids, { address: '127.0.0.1:7373', unsealEnv: UNSEAL_ENV }));
  const dataDir = join(home, 'data');
  runSync(NODE, [KESD_BIN, 'init', '--config', initYml, dataDir], { env });
  return { home, dataDir, storeFile: join(dataDir, STORE_FILE), env, ids };
}

export interface FillResult {
  /** How the keys were made. */
  path: string;
  from: number;
  to: number;
  created: number;
  seconds: number;
  perSecond: number;
}

/**
 * Creates keys keyName(from) … keyName(to - 1) through Enclave.createKey, the call the create handler makes, on the
 * same LMDB file (no server running): `concurrency` creates in flight, which lmdb-js commits in shared transactions.
 */
export async function fillKeys(
  s: ScaleStore,
  from: number,
  to: number,
  createdBy: string,
  log: (m: string) => void,
  concurrency = 2000,
): Promise<FillResult> {
  const { root } = await openSealedRootKey(s.dataDir, s.env);
  const store = await openLmdbStore(s.storeFile);
  const t0 = performance.now();
  let created = 0;
  try {
    const system = await System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false });
    const enclave = system.enclaves.get(ENCLAVE);
    if (enclave === undefined) throw new Error(`the store has no '${ENCLAVE}' enclave`);
    let next = from;
    let reported = from;
    const worker = async () => {
      while (next < to) {
        const i = next++;
        try {
          await enclave.createKey(keyName(i), createdBy);
          created++;
        } catch (err) {
          if (err !== ErrKeyExists) throw err;
        }
        if (next - reported >= 100_000) {
          reported = next;
          enclave.forgetKeys(); // createKey caches every key it makes; the bench process need not hold a million
          log(
            `  filled ${next.toLocaleString('en-US')} / ${to.toLocaleString('en-US')} keys (${Math.round((next - from) / ((performance.now() - t0) / 1000)).toLocaleString('en-US')}/s)`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, to - from)) }, worker));
    enclave.forgetKeys();
  } finally {
    await store.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    path:
      'in-process: Enclave.createKey over the same LMDB store (no HTTP, TLS or auth), ' + `${concurrency} in flight`,
    from,
    to,
    created,
    seconds,
    perSecond: created / seconds,
  };
}

/** Keys in the default enclave, counted from the store's paths (records are not opened). */
export async function countKeys(s: ScaleStore): Promise<number> {
  const { root } = await openSealedRootKey(s.dataDir, s.env);
  const store = await openLmdbStore(s.storeFile);
  try {
    const system = await System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false });
    const uid = system.enclaves.get(ENCLAVE)!.info.uid;
    let n = 0;
    for await (const _ of system.records.listPaths(`e/${uid}/key/`)) n++;
    return n;
  } finally {
    await store.close();
  }
}

export function storeBytes(s: ScaleStore): number {
  return existsSync(s.storeFile) ? statSync(s.storeFile).size : 0;
}

// ---- the server -------------------------------------------------------------------------------------------

export interface Running {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  /** Process spawn → first 200 from /v1/ready, in ms. */
  readonly readyMs: number;
  /** CPU the kesd processes used up to ready, and what else the machine did meanwhile (cores). */
  readonly startCpuMs: number;
  readonly startOtherCores: number;
  output(): string;
}

/** Starts `kesd server` and polls /v1/ready (as the enclave admin) every 10 ms until it answers 200. */
export async function startServer(
  s: ScaleStore,
  port: number,
  opts: { workers?: number; log: string; timeoutMs?: number },
): Promise<Running> {
  const args = [KESD_BIN, 'server', s.dataDir, '--addr', `127.0.0.1:${port}`, '--audit-log', 'off'];
  if (opts.workers !== undefined) args.push('--workers', String(opts.workers));
  const tls = { cert: readFileSync(s.ids.admin.certFile, 'utf8'), key: readFileSync(s.ids.admin.keyFile, 'utf8') };
  const t0 = performance.now();
  const m0 = machineTicks();
  const client0 = process.cpuUsage();
  const { child, output } = spawnLogged(NODE, args, { env: s.env, log: opts.log });
  const until = Date.now() + (opts.timeoutMs ?? 60_000);
  let last = '';
  while (Date.now() < until) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`kesd exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${output()}`);
    try {
      const r = await request(port, 'GET', '/v1/ready', tls);
      if (r.status === 200) {
        const readyMs = performance.now() - t0;
        const kesdTicks = [child.pid!, ...descendants(child.pid!)].reduce((a, p) => a + ticksOf(p), 0);
        const c = process.cpuUsage(client0);
        const busyCores = (machineTicks().busy - m0.busy) / TICK / (readyMs / 1000);
        const startOtherCores = Math.max(
          0,
          busyCores - (kesdTicks / TICK + (c.user + c.system) / 1e6) / (readyMs / 1000),
        );
        return {
          child,
          pid: child.pid!,
          port,
          readyMs,
          startCpuMs: (kesdTicks / TICK) * 1000,
          startOtherCores,
          output,
        };
      }
      last = `HTTP ${r.status} ${r.body}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(10);
  }
  await stop(child);
  throw new Error(`kesd was not ready after ${opts.timeoutMs ?? 60_000} ms (${last}):\n${output()}`);
}

export async function stopServer(r: Running): Promise<void> {
  await stop(r.child, 30_000);
}

// ---- memory and CPU of the server's processes ---------------------------------------------------------------

export interface ProcessMemory {
  pid: number;
  role: 'primary' | 'worker' | 'other';
  rssMiB: number;
  anonMiB: number;
  fileMiB: number;
}

const MiB = 1024 * 1024;

function statusOf(pid: number): Record<string, number> | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(VmRSS|RssAnon|RssFile|RssShmem):\s+(\d+) kB$/gm)) out[m[1]!] = Number(m[2]) * 1024;
  return out;
}

/** VmRSS split into anonymous memory (heap, buffers) and file pages (code, and the LMDB map as it is touched). */
export function memoryOf(rootPid: number): ProcessMemory[] {
  const exe = exeOf(rootPid);
  const out: ProcessMemory[] = [];
  for (const pid of [rootPid, ...descendants(rootPid)]) {
    const st = statusOf(pid);
    if (st === undefined) continue;
    const role = pid === rootPid ? 'primary' : exeOf(pid) === exe ? 'worker' : 'other';
    out.push({
      pid,
      role,
      rssMiB: (st.VmRSS ?? 0) / MiB,
      anonMiB: (st.RssAnon ?? 0) / MiB,
      fileMiB: ((st.RssFile ?? 0) + (st.RssShmem ?? 0)) / MiB,
    });
  }
  return out;
}

export interface MemoryPeak {
  samples: number;
  /** The highest sum over all processes. */
  totalRssMiB: number;
  totalAnonMiB: number;
  /** The highest single process (the worker serving the request, during a list). */
  maxProcessRssMiB: number;
  maxProcessAnonMiB: number;
  maxProcessFileMiB: number;
}

/** Samples memoryOf every intervalMs until stopped; reports the peaks. */
export function sampleMemory(rootPid: number, intervalMs = 50): { stop(): MemoryPeak } {
  const peak: MemoryPeak = {
    samples: 0,
    totalRssMiB: 0,
    totalAnonMiB: 0,
    maxProcessRssMiB: 0,
    maxProcessAnonMiB: 0,
    maxProcessFileMiB: 0,
  };
  const take = () => {
    const ps = memoryOf(rootPid);
    peak.samples++;
    peak.totalRssMiB = Math.max(
      peak.totalRssMiB,
      ps.reduce((a, p) => a + p.rssMiB, 0),
    );
    peak.totalAnonMiB = Math.max(
      peak.totalAnonMiB,
      ps.reduce((a, p) => a + p.anonMiB, 0),
    );
    for (const p of ps) {
      peak.maxProcessRssMiB = Math.max(peak.maxProcessRssMiB, p.rssMiB);
      peak.maxProcessAnonMiB = Math.max(peak.maxProcessAnonMiB, p.anonMiB);
      peak.maxProcessFileMiB = Math.max(peak.maxProcessFileMiB, p.fileMiB);
    }
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return peak;
    },
  };
}

const TICK = 100; // USER_HZ

function ticksOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]); // utime + stime
  } catch {
    return 0;
  }
}

function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((x, y) => x + y, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

export interface PhaseCpu {
  seconds: number;
  /** CPU of kesd (all its processes) and of this bench process (the client), in cores. */
  serverCores: number;
  clientCores: number;
  /** Machine-wide busy CPU that is neither: other processes on the machine, and kernel work billed to no one. */
  otherCores: number;
}

/** Measures who used the CPU between start and stop. Pids are those of kesd (its children are found at stop). */
export function phaseCpu(rootPid: number | undefined): { stop(): PhaseCpu } {
  const pidsNow = () => (rootPid === undefined ? [] : [rootPid, ...descendants(rootPid)]);
  const server0 = new Map(pidsNow().map((p) => [p, ticksOf(p)]));
  const client0 = process.cpuUsage();
  const m0 = machineTicks();
  const t0 = performance.now();
  return {
    stop() {
      const seconds = (performance.now() - t0) / 1000;
      let serverTicks = 0;
      for (const p of pidsNow()) serverTicks += ticksOf(p) - (server0.get(p) ?? 0);
      const c = process.cpuUsage(client0);
      const m1 = machineTicks();
      const busyCores = (m1.busy - m0.busy) / TICK / seconds;
      const serverCores = serverTicks / TICK / seconds;
      const clientCores = (c.user + c.system) / 1e6 / seconds;
      return { seconds, serverCores, clientCores, otherCores: Math.max(0, busyCores - serverCores - clientCores) };
    },
  };
}

// ---- the page cache ------------------------------------------------------------------------------------------

export interface Eviction {
  /** Bytes of the store file in the page cache before and after (util-linux fincore), when it is available. */
  residentBefore?: number;
  residentAfter?: number;
  how: string;
}

function resident(file: string): number | undefined {
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const n = Number(r.stdout.trim());
  return Number.isFinite(n) ? n : undefined;
}

/** Drops the store file's clean pages from the page cache (posix_fadvise DONTNEED); kesd must be stopped. */
export function evictFromPageCache(file: string): Eviction | undefined {
  const residentBefore = resident(file);
  const py =
    'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fdatasync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)';
  const r = spawnSync('python3', ['-c', py, file], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return {
    residentBefore,
    residentAfter: resident(file),
    how: 'posix_fadvise(POSIX_FADV_DONTNEED) on the store file (python3), checked with fincore',
  };
}
