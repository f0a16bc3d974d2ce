// Soak: mixed load (key create, delete, generate, decrypt, list; policy write and read) against a `kesd server`
// process group, with a graceful restart (SIGTERM to the `kesd server` process, as Kubernetes sends it; wait for
// its exit; start again on the same data dir and port) every RESTART_EVERY seconds. Clients retry what a restart
// refuses or cuts; every other error, every unexpected status, and every acknowledged write missing afterwards is a
// failure. Each client loop owns its keys and its policy, so its model of them is exact: a request that was cut
// and retried resolves itself (a create answered "already exists", a delete answered 404, were applied the first
// time).
//
// Every SAMPLE_MS the RSS and the open file descriptors of the whole process group (the primary and its workers)
// are sampled, with what tells growth apart: anonymous vs file-backed RSS, RSS per process, the JS heap in use and
// the store file's size; the series are printed. Growth check, deliberately generous (a gross leak check, not a measurement):
// the median of the last third of the samples must stay under 1.5 × the first third's + 64 MiB (RSS), and under
// the first third's + 32 (FDs; kesd holds a fixed set plus one per client connection). Each process lifetime gets
// SAMPLES_PER_LIFETIME samples before its restart (the restart waits; the load outlasts SECONDS until the last one
// has them): a sample can take seconds on a loaded machine, and a count that depended on it failed the run.
//
// Settings: KESD_SOAK_MIXED_SECONDS (length of the load, CI 30), KESD_SOAK_RESTART_EVERY (seconds, CI 10),
// KESD_SOAK_CONCURRENCY (client loops, CI 8), KESD_SOAK_SAMPLE_MS (CI 1000), KESD_SOAK_SEED (replay),
// KESD_RELIABILITY_WORKERS (worker processes, default 2).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import {
  agentFor,
  call,
  deadline,
  envInt,
  groupPids,
  groupRss,
  makeFixture,
  MiB,
  percentile,
  pool,
  rng,
  seedFrom,
  sleep,
  startKesd,
  type Fixture,
  type KesdProcess,
  type Rng,
} from './load.js';
import { startTestServer, type Reply } from './harness.js';

const SECONDS = envInt('KESD_SOAK_MIXED_SECONDS', 30);
const RESTART_EVERY = envInt('KESD_SOAK_RESTART_EVERY', 10);
const CONCURRENCY = envInt('KESD_SOAK_CONCURRENCY', 8);
/** Caps each loop's live keys (a create at the cap deletes instead): growth that remains is not the key set. */
const KEYS_PER_LOOP = envInt('KESD_SOAK_KEYS_PER_LOOP', Infinity);
const SAMPLE_MS = envInt('KESD_SOAK_SAMPLE_MS', 1000);
const WORKERS = String(envInt('KESD_RELIABILITY_WORKERS', 2));
const SEED = seedFrom('KESD_SOAK_SEED');
/** Ciphertexts each loop keeps to decrypt later (the oldest are forgotten: memory stays flat on long runs). */
const KEEP_CIPHERTEXTS = 64;
/** How long a request may keep failing with refusals or cuts while a restart is under way. */
const RETRY_MS = 60_000;
/**
 * Samples each process lifetime gets before it ends (a restart waits for them; the load goes on until the last
 * lifetime has them): the growth check compares thirds, so the count may not depend on how fast the machine is.
 */
const SAMPLES_PER_LIFETIME = 2;
/** How long one lifetime may go without its samples before the soak fails (kesd stopped answering /v1/metrics). */
const SAMPLE_WAIT_MS = 120_000;

let fx: Fixture;
let proc: KesdProcess | undefined;
let port = 0;
/** Set while a restart is under way (from the SIGTERM until the new process listens): refusals and cuts are expected. */
let restarting = false;

before(async () => {
  fx = await makeFixture({ keys: ['minio-default'] });
});
after(async () => {
  await proc?.stop();
  await fx?.remove();
});

async function startServer(): Promise<void> {
  const addr = port === 0 ? [] : ['--addr', `127.0.0.1:${port}`];
  proc = await startKesd(fx.dataDir, fx.env, ['--workers', WORKERS, ...addr], { stdout: 'ignore' }); // audit on, discarded
  port = proc.port;
}

/** SIGTERM to `kesd server` alone; it must stop its workers and exit 0; then a new one on the same dir and port. */
async function gracefulRestart(): Promise<{ stopMs: number; startMs: number }> {
  const old = proc!;
  restarting = true;
  const started = Date.now();
  try {
    process.kill(old.pid, 'SIGTERM');
    const exit = await deadline(old.exited, 30_000, 'kesd to exit after SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `graceful stop: ${old.output()}`);
    assert.deepEqual(await groupPids(old.pid), [], 'no worker outlives the primary');
    await old.stop(); // bookkeeping only: the group is gone
    const stopped = Date.now();
    await startServer();
    return { stopMs: stopped - started, startMs: Date.now() - stopped };
  } finally {
    restarting = false;
  }
}

// ---- clients -------------------------------------------------------------------------------------------------

const stats = { requests: 0, retried: 0, refused: 0, cut: 0, appliedBeforeCut: 0, byOp: {} as Record<string, number> };
const errors: string[] = [];

/** Connection-level failures a restart causes: refused while no process listens, cut while one stops. */
function restartFailure(err: unknown): 'refused' | 'cut' | undefined {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'ECONNRESET' || code === 'EPIPE' || /socket hang up/.test(String(err))) return 'cut';
  return undefined;
}

/**
 * One request, retried while a restart explains its failure. `cut` says an earlier attempt was cut after it may
 * have reached the server (so a write may already have happened).
 */
async function send(
  agent: https.Agent,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ reply: Reply; cut: boolean }> {
  const end = Date.now() + RETRY_MS;
  let cut = false;
  for (;;) {
    const during = restarting;
    try {
      const reply = await call(agent, port, method, path, body);
      stats.requests++;
      return { reply, cut };
    } catch (err) {
      const kind = restartFailure(err);
      // A failure counts as the restart's if one was under way when the request started or when it failed.
      if (kind === undefined || !(during || restarting) || Date.now() > end) throw err;
      stats[kind]++;
      stats.retried++;
      if (kind === 'cut') cut = true;
      await sleep(50);
    }
  }
}

interface Ciphertext {
  readonly key: string;
  readonly ciphertext: string;
  readonly plaintext: string;
}

/** What one client loop owns, and what it knows about it. */
class Loop {
  readonly agent = agentFor(fx.admin, { maxSockets: 1 });
  readonly live = new Set<string>();
  readonly deleted = new Set<string>();
  readonly ciphertexts: Ciphertext[] = [];
  rules: { allow: string[]; deny: string[] } | undefined;
  private serial = 0;

  constructor(
    readonly id: number,
    private readonly r: Rng,
  ) {}

  get prefix(): string {
    return `soak-${this.id}-`;
  }
  get policyName(): string {
    return `soak-policy-${this.id}`;
  }

  private fail(what: string, reply: Reply): never {
    throw new Error(`${what}: ${reply.status} ${reply.text.slice(0, 200)}`);
  }

  async step(): Promise<void> {
    const roll = this.r.next();
    const op =
      roll < 0.2
        ? 'create'
        : roll < 0.27
          ? 'delete'
          : roll < 0.55
            ? 'generate'
            : roll < 0.8
              ? 'decrypt'
              : roll < 0.9
                ? 'list'
                : 'policy';
    stats.byOp[op] = (stats.byOp[op] ?? 0) + 1;
    await this[op]();
  }

  async create(): Promise<void> {
    if (this.live.size >= KEYS_PER_LOOP) return this.delete();
    const name = `${this.prefix}${this.serial++}`;
    const { reply, cut } = await send(this.agent, 'POST', `/v1/key/create/${name}`);
    const appliedEarlier = cut && reply.status === 400 && /already exists/.test(reply.text);
    if (reply.status !== 200 && !appliedEarlier) this.fail(`create ${name}`, reply);
    if (appliedEarlier) stats.appliedBeforeCut++;
    this.live.add(name);
  }

  async delete(): Promise<void> {
    if (this.live.size === 0) return this.create();
    const name = this.r.pick([...this.live]);
    const { reply, cut } = await send(this.agent, 'DELETE', `/v1/key/delete/${name}`);
    const appliedEarlier = cut && reply.status === 404;
    if (reply.status !== 200 && !appliedEarlier) this.fail(`delete ${name}`, reply);
    if (appliedEarlier) stats.appliedBeforeCut++;
    this.live.delete(name);
    this.deleted.add(name);
    for (let i = this.ciphertexts.length - 1; i >= 0; i--)
      if (this.ciphertexts[i]!.key === name) this.ciphertexts.splice(i, 1);
  }

  async generate(): Promise<void> {
    const key = this.live.size > 0 && this.r.chance(0.7) ? this.r.pick([...this.live]) : 'minio-default';
    const { reply } = await send(this.agent, 'POST', `/v1/key/generate/${key}`, {});
    if (reply.status !== 200) this.fail(`generate ${key}`, reply);
    const { plaintext, ciphertext } = reply.json();
    this.ciphertexts.push({ key, ciphertext, plaintext });
    if (this.ciphertexts.length > KEEP_CIPHERTEXTS) this.ciphertexts.shift();
  }

  async decrypt(
    c: Ciphertext | undefined = this.ciphertexts.length > 0 ? this.r.pick(this.ciphertexts) : undefined,
  ): Promise<void> {
    if (c === undefined) return this.generate();
    const { reply } = await send(this.agent, 'POST', `/v1/key/decrypt/${c.key}`, { ciphertext: c.ciphertext });
    if (reply.status !== 200) this.fail(`decrypt with ${c.key}`, reply);
    assert.equal(reply.json().plaintext, c.plaintext, `decrypt with ${c.key}: another plaintext`);
  }

  /** The listing of this loop's keys is exactly what it created and did not delete. */
  async list(): Promise<void> {
    const { reply } = await send(this.agent, 'GET', `/v1/key/list/${this.prefix}*`);
    if (reply.status !== 200) this.fail('list', reply);
    const names = reply.text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l).name as string)
      .sort();
    assert.deepEqual(
      names,
      [...this.live].sort(),
      `loop ${this.id}: the listing differs from the keys it created and did not delete`,
    );
  }

  /** Writes new rules to the loop's policy and reads them back. */
  async policy(): Promise<void> {
    const rules = {
      allow: [`/v1/key/generate/${this.prefix}${this.r.int(1e6)}`],
      deny: [`/v1/key/delete/${this.prefix}${this.r.int(1e6)}`],
    };
    const { reply } = await send(this.agent, 'POST', `/v1/policy/write/${this.policyName}`, rules);
    if (reply.status !== 200) this.fail(`policy write ${this.policyName}`, reply);
    this.rules = rules;
    await this.checkPolicy();
  }

  async checkPolicy(): Promise<void> {
    if (this.rules === undefined) return;
    const { reply } = await send(this.agent, 'GET', `/v1/policy/read/${this.policyName}`);
    if (reply.status !== 200) this.fail(`policy read ${this.policyName}`, reply);
    const got = reply.json();
    assert.deepEqual(
      { allow: Object.keys(got.allow), deny: Object.keys(got.deny) },
      this.rules,
      `policy ${this.policyName}`,
    );
  }

  /** After the last restart: every key, ciphertext and the policy as acknowledged. */
  async verify(): Promise<number> {
    await this.list();
    await pool([...this.deleted].slice(-20), 1, async (name) => {
      const { reply } = await send(this.agent, 'GET', `/v1/key/describe/${name}`);
      assert.equal(reply.status, 404, `deleted key ${name}: ${reply.status}`);
    });
    await pool([...this.live], 1, async (name) => {
      const { reply } = await send(this.agent, 'GET', `/v1/key/describe/${name}`);
      if (reply.status !== 200) this.fail(`describe ${name}`, reply);
    });
    for (const c of this.ciphertexts) await this.decrypt(c);
    await this.checkPolicy();
    return this.live.size + this.ciphertexts.length;
  }
}

// ---- sampling ------------------------------------------------------------------------------------------------

interface Sample {
  readonly t: number;
  /** The `kesd server` process sampled (one per lifetime). */
  readonly leader: number;
  readonly rss: number;
  /** Of rss: anonymous memory (heaps) and file-backed pages (the mapped LMDB file, code). */
  readonly anon: number;
  readonly file: number;
  readonly fds: number;
  readonly pids: number;
  /** Size of the store file. */
  readonly store: number;
  /** RSS per process: `kesd server` (the primary in cluster mode) first, then its workers. */
  readonly perProcess: number[];
  /** JS heap in use, summed over the workers (kes_system_mem_heap_used; not after a GC, so noisy). */
  readonly heap: number;
}

/** kes_system_mem_heap_used from /v1/metrics (NaN if the request failed: a restart began). */
async function heapUsed(): Promise<number> {
  const agent = agentFor(fx.sysadmin, { keepAlive: false });
  try {
    const reply = await call(agent, port, 'GET', '/v1/metrics', undefined, { timeoutMs: 5000 });
    return Number(/^kes_system_mem_heap_used (\S+)$/m.exec(reply.text)?.[1] ?? NaN);
  } catch {
    return NaN;
  } finally {
    agent.destroy();
  }
}

async function rssParts(
  leader: number,
  pids: readonly number[],
): Promise<{ anon: number; file: number; perProcess: number[] }> {
  let anon = 0;
  let file = 0;
  const perProcess: number[] = [];
  for (const pid of [leader, ...pids.filter((p) => p !== leader)]) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const kB = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    anon += kB('RssAnon');
    file += kB('RssFile');
    perProcess.push(kB('VmRSS'));
  }
  return { anon, file, perProcess };
}

/** RSS and FDs of the running process group; undefined if a restart began meanwhile. */
async function sample(t0: number): Promise<Sample | undefined> {
  const sampled = proc;
  if (sampled === undefined || restarting) return undefined;
  const pids = await groupPids(sampled.pid);
  let fds = 0;
  for (const pid of pids) fds += (await readdir(`/proc/${pid}/fd`).catch(() => [])).length;
  const rss = await groupRss(sampled.pid);
  const { anon, file, perProcess } = await rssParts(sampled.pid, pids);
  const store = (await stat(join(fx.dataDir, 'db')).catch(() => undefined))?.size ?? 0;
  const heap = await heapUsed();
  if (restarting || proc !== sampled) return undefined;
  return {
    t: (Date.now() - t0) / 1000,
    leader: sampled.pid,
    rss,
    anon,
    file,
    fds,
    pids: pids.length,
    store,
    perProcess,
    heap,
  };
}

const median = (xs: readonly number[]) => percentile(xs, 50);
const thirds = (xs: readonly number[]) => {
  const n = Math.floor(xs.length / 3);
  return { first: median(xs.slice(0, n)), last: median(xs.slice(xs.length - n)) };
};

// ---- the test ------------------------------------------------------------------------------------------------

test(`mixed load for ${SECONDS} s with a graceful restart every ${RESTART_EVERY} s: nothing lost, no errors, RSS and FDs flat (--workers ${WORKERS})`, async (t) => {
  t.diagnostic(`seed ${SEED} (KESD_SOAK_SEED to replay the operation mix)`);
  const seeds = rng(SEED);
  await startServer();
  const loops = Array.from({ length: CONCURRENCY }, (_, i) => new Loop(i, rng(seeds.int(2 ** 32))));
  const t0 = Date.now();
  const end = t0 + SECONDS * 1000;
  const samples: Sample[] = [];
  const restarts: { stopMs: number; startMs: number }[] = [];
  let running = true;

  const sampler = (async () => {
    while (running) {
      const s = await sample(t0);
      if (s !== undefined) samples.push(s);
      await sleep(SAMPLE_MS);
    }
  })();
  /** The running kesd has its SAMPLES_PER_LIFETIME samples (an error if it went SAMPLE_WAIT_MS since `since` without). */
  const lifetimeSampled = (since: number) => {
    if (samples.filter((s) => s.leader === proc!.pid).length >= SAMPLES_PER_LIFETIME) return true;
    if (Date.now() - since > SAMPLE_WAIT_MS)
      throw new Error(
        `kesd (pid ${proc!.pid}) was not sampled ${SAMPLES_PER_LIFETIME} times in ${SAMPLE_WAIT_MS / 1000} s`,
      );
    return false;
  };
  let planned = 0;
  for (let next = t0 + RESTART_EVERY * 1000; next < end - 2000; next += RESTART_EVERY * 1000) planned++;
  let restarted = false;
  const restarter = (async () => {
    for (let i = 1; i <= planned && errors.length === 0; i++) {
      const due = t0 + i * RESTART_EVERY * 1000;
      await sleep(Math.max(0, due - Date.now()));
      while (!lifetimeSampled(due)) await sleep(50);
      restarts.push(await gracefulRestart());
    }
  })()
    .catch((err: Error) => errors.push(`restart: ${err.message}`))
    .finally(() => (restarted = true));
  const loadOver = () => {
    try {
      return errors.length > 0 || (Date.now() >= end && restarted && lifetimeSampled(end));
    } catch (err) {
      errors.push((err as Error).message);
      return true;
    }
  };
  const load = Promise.all(
    loops.map(async (loop) => {
      try {
        while (!loadOver()) await loop.step();
      } catch (err) {
        errors.push(`loop ${loop.id}: ${(err as Error).message}`);
      }
    }),
  );
  try {
    await load;
  } finally {
    running = false;
    await restarter;
    await sampler;
  }
  const loadMs = Date.now() - t0;

  // One more restart with no load, then everything acknowledged must be there.
  restarts.push(await gracefulRestart());
  let verified = 0;
  for (const loop of loops) verified += await loop.verify();
  for (const loop of loops) loop.agent.destroy();

  const rss = thirds(samples.map((s) => s.rss));
  const fds = thirds(samples.map((s) => s.fds));
  t.diagnostic(
    `${stats.requests} requests in ${(loadMs / 1000).toFixed(1)} s (${Object.entries(stats.byOp)
      .map(([op, n]) => `${op} ${n}`)
      .join(', ')}); ` +
      `${restarts.length} graceful restarts (stop + start: ${restarts.map((r) => `${(r.stopMs / 1000).toFixed(1)} + ${(r.startMs / 1000).toFixed(1)}`).join(', ')} s); retried after a restart refused ${stats.refused} and cut ${stats.cut} requests ` +
      `(${stats.appliedBeforeCut} cut writes had been applied); ` +
      `errors: ${errors.length}; verified afterwards: ${verified} keys and ciphertexts`,
  );
  t.diagnostic(
    `RSS of the process group (MiB), per sample: ${samples.map((s) => `${s.t.toFixed(0)}s=${(s.rss / MiB).toFixed(0)}`).join(' ')}`,
  );
  t.diagnostic(
    `of which anonymous / file-backed (MiB), and the store file's size (MiB), per sample: ${samples.map((s) => `${s.t.toFixed(0)}s=${(s.anon / MiB).toFixed(0)}/${(s.file / MiB).toFixed(0)}/${(s.store / MiB).toFixed(0)}`).join(' ')}`,
  );
  t.diagnostic(
    `RSS per process (MiB; kesd server first, then its workers), per sample: ${samples.map((s) => `${s.t.toFixed(0)}s=${s.perProcess.map((b) => (b / MiB).toFixed(0)).join('/')}`).join(' ')}`,
  );
  t.diagnostic(
    `JS heap in use, all workers (MiB), per sample: ${samples.map((s) => `${s.t.toFixed(0)}s=${(s.heap / MiB).toFixed(0)}`).join(' ')}`,
  );
  t.diagnostic(
    `open FDs of the process group, per sample: ${samples.map((s) => `${s.t.toFixed(0)}s=${s.fds}`).join(' ')}`,
  );
  t.diagnostic(
    `medians, first third → last third: RSS ${(rss.first / MiB).toFixed(1)} → ${(rss.last / MiB).toFixed(1)} MiB, FDs ${fds.first} → ${fds.last}; ` +
      `max RSS ${(Math.max(...samples.map((s) => s.rss)) / MiB).toFixed(1)} MiB, max FDs ${Math.max(...samples.map((s) => s.fds))}`,
  );

  assert.deepEqual(errors, []);
  assert.equal(restarts.length, planned + 1, 'restarts under load, and the one before the checks');
  assert.ok(samples.length >= SAMPLES_PER_LIFETIME * (planned + 1), `${samples.length} samples`);
  assert.ok(
    rss.last < 1.5 * rss.first + 64 * MiB,
    `RSS grew: median ${(rss.first / MiB).toFixed(1)} → ${(rss.last / MiB).toFixed(1)} MiB`,
  );
  assert.ok(fds.last <= fds.first + 32, `open FDs grew: median ${fds.first} → ${fds.last}`);
});

// kesd's stop (server/server.ts) used to close every connection at once, so requests in flight at a SIGTERM were
// cut: the client saw ECONNRESET and could not know whether its write happened (bug 5 in docs/reliability.md).
// Still cut (reported above): connections caught in the accept queue or the TLS handshake when the listener
// closes. Those requests never reached kesd; what this pins is that no write kesd applied is cut from its answer.
test('a graceful restart cuts no request kesd has applied', () => {
  assert.ok(stats.requests > 0, 'the soak ran');
  assert.equal(
    stats.appliedBeforeCut,
    0,
    `${stats.cut} requests were cut by graceful stops, ${stats.appliedBeforeCut} of them writes that had been applied`,
  );
});

// The same stop, in process: a connection whose TLS handshake completes after the stop began used to be served as
// usual, and a client that kept using it held the stop (and the store) open; in cluster mode the primary SIGKILLed
// such a worker after 10 s. Now its answer says `connection: close`.
test('a graceful stop ends while a client keeps using a connection accepted during the stop', async () => {
  const s = await startTestServer();
  const raw = await new Promise<net.Socket>((resolve, reject) => {
    const c = net.connect(s.port, '127.0.0.1', () => resolve(c)).on('error', reject);
  });
  let stopped = false;
  const stopping = s.kesd.stop().then(() => (stopped = true));
  const socket = tls.connect({ socket: raw, rejectUnauthorized: false, cert: s.admin.cert, key: s.admin.key });
  await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  (agent as unknown as { createConnection: () => net.Socket }).createConnection = () => socket;
  let served = 0;
  let closedByServer = false;
  try {
    for (let i = 0; i < 20 && !stopped; i++) {
      const reply = await call(agent, s.port, 'GET', '/version').catch(() => undefined);
      if (reply === undefined) {
        closedByServer = true; // the stop closed the connection: it can end now
        break;
      }
      served++;
      await sleep(100);
    }
    if (closedByServer) await deadline(stopping, 10_000, 'the stop to end').catch(() => undefined);
    assert.ok(stopped, `the stop had not ended after ${served} requests on a connection accepted during it`);
  } finally {
    socket.destroy();
    agent.destroy();
    await stopping;
    await rm(s.dir, { recursive: true, force: true });
  }
});
