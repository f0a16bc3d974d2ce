// Nothing acknowledged is lost: kill -9 of a `kesd server` process at random moments under concurrent load.
//
// Each cycle starts kesd on the same data dir with the same unseal key, runs mixed load (key create/delete,
// policy write/assign, enclave create as sysadmin, generate on existing keys) from several connections, and at a
// random moment kill -9s either its whole process group or the `kesd server` process alone (then its worker
// processes, in cluster mode, must not outlive it). The test keeps a model of every request that got a 200
// and of every request that was in flight when the process died. After the restart it checks:
//   - acknowledged key creates: listed, with the key id first seen; describe 200 + generate + decrypt;
//   - acknowledged key deletes: 404 (describe and generate), not listed;
//   - acknowledged policy writes: policy read returns exactly the last acknowledged rules;
//   - acknowledged assignments: identity describe names the policy, and the identity can use it (and only it);
//   - acknowledged enclave creates: enclave describe 200 and its admin can list its keys;
//   (keys: all through the listing every cycle; new ones, in-flight ones and a sample in full; everything in full
//   after the last cycle. Enclaves likewise.)
//   - every ciphertext generated before any crash still decrypts to its plaintext;
//   - whatever was in flight is all-or-nothing: a key fully works or is 404, a policy holds the old or the new
//     rules, an enclave is 200 and usable or 404; never a 5xx. What was observed is then part of the model.
//
// Settings (CI defaults): KESD_RELIABILITY_CYCLES=20, KESD_RELIABILITY_LOAD_MS=600 (kill at a random moment in
// 50…LOAD_MS ms of load), KESD_RELIABILITY_CONCURRENCY=8, KESD_RELIABILITY_SEED (replay), KESD_RELIABILITY_WORKERS
// (pass --workers N; default: kesd's own default).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type https from 'node:https';
import type { TestIdentity } from './harness.js';
import {
  agentFor,
  b64,
  call,
  deadline,
  envInt,
  makeFixture,
  pool,
  rng,
  seedFrom,
  sleep,
  startKesd,
  type Fixture,
  type KesdProcess,
  type Rng,
} from './load.js';

const CYCLES = envInt('KESD_RELIABILITY_CYCLES', 20);
const LOAD_MS = envInt('KESD_RELIABILITY_LOAD_MS', 600);
const CONCURRENCY = envInt('KESD_RELIABILITY_CONCURRENCY', 8);
const SEED = seedFrom('KESD_RELIABILITY_SEED');
const WORKERS = process.env.KESD_RELIABILITY_WORKERS ? ['--workers', process.env.KESD_RELIABILITY_WORKERS] : [];
/** Older keys and enclaves re-checked in full per cycle (all keys are checked through the listing every cycle,
 * and everything in full after the last one). */
const SAMPLE = envInt('KESD_RELIABILITY_SAMPLE', 40);

const MEMBERS = ['m0', 'm1', 'm2', 'm3', 'm4', 'm5'];
const POLICIES = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'];

let fx: Fixture;
before(async () => {
  fx = await makeFixture({ extra: ['eadmin', ...MEMBERS], keys: ['minio-default'] });
});
after(async () => {
  await fx?.remove();
});

// ---- the model ------------------------------------------------------------------------------------------

interface KeyModel {
  /** Present for sure (create acknowledged, or observed after a restart), absent for sure, or unknown (in flight). */
  state: 'present' | 'absent' | 'unknown';
  /** Generate/decrypt only on keepers; deletes only on the others, so the two never race. */
  readonly keeper: boolean;
  /** An operation on it is in flight. */
  busy: boolean;
  /** The key id the listing showed first: key material never changes. */
  id?: string;
  /** Touched in this cycle: re-checked in full. */
  touched: boolean;
  ackedAs?: 'create' | 'delete';
  /** What was in flight when its state became unknown. */
  pending?: 'create' | 'delete';
}

interface Rules {
  allow: string[];
  deny: string[];
}
interface PolicyModel {
  acked?: Rules;
  pending?: Rules;
  busy: boolean;
}
interface AssignModel {
  acked?: string;
  pending?: string;
  busy: boolean;
}
interface EnclaveModel {
  state: 'present' | 'unknown' | 'absent';
  usable?: boolean;
}
interface Ciphertext {
  key: string;
  context?: string;
  plaintext: string;
  ciphertext: string;
}

const keys = new Map<string, KeyModel>([
  ['minio-default', { state: 'present', keeper: true, busy: false, touched: true }],
]);
const policies = new Map<string, PolicyModel>(POLICIES.map((p) => [p, { busy: false }]));
const assignments = new Map<string, AssignModel>(MEMBERS.map((m) => [m, { busy: false }]));
const enclaves = new Map<string, EnclaveModel>();
const ciphertexts: Ciphertext[] = [];

const acked = { keyCreate: 0, keyDelete: 0, policyWrite: 0, assign: 0, enclaveCreate: 0, generate: 0 };
const inflightAtKill = { total: 0 };
const kills = { group: 0, leader: 0 };
const checked = { keys: 0, deletes: 0, policies: 0, assignments: 0, enclaves: 0, ciphertexts: 0, inflightResolved: 0 };
/** How the writes in flight at a kill turned out: committed (new state) or not (old state). */
const inflight = { committed: 0, notCommitted: 0 };
const resolved = (committed: boolean) => void (committed ? inflight.committed++ : inflight.notCommitted++);
const anomalies: string[] = [];

// ---- load -----------------------------------------------------------------------------------------------

interface Clients {
  readonly port: number;
  readonly admin: https.Agent;
  readonly sysadmin: https.Agent;
  readonly eadmin: https.Agent;
  readonly members: Map<string, https.Agent>;
  destroy(): void;
}

function clientsFor(proc: KesdProcess): Clients {
  const admin = agentFor(fx.admin);
  const sysadmin = agentFor(fx.sysadmin);
  const eadmin = agentFor(fx.ids.eadmin);
  const members = new Map(MEMBERS.map((m) => [m, agentFor(fx.ids[m])]));
  return {
    port: proc.port,
    admin,
    sysadmin,
    eadmin,
    members,
    destroy() {
      for (const a of [admin, sysadmin, eadmin, ...members.values()]) a.destroy();
    },
  };
}

const randomRules = (r: Rng, name: string): Rules => ({
  allow: [
    `/v1/policy/describe/${name}`,
    ...Array.from({ length: r.range(0, 3) }, () => `/v1/key/generate/x${r.int(1e6)}*`),
  ].sort(),
  deny: Array.from({ length: r.range(0, 2) }, () => `/v1/key/delete/y${r.int(1e6)}`).sort(),
});

let serial = 0;

/** One random operation; its outcome goes into the model. Connection errors (the kill) leave it unknown. */
async function operate(r: Rng, c: Clients, cycle: number): Promise<void> {
  const roll = r.next();
  if (roll < 0.3) {
    const name = `k-${cycle}-${++serial}`;
    const k: KeyModel = { state: 'unknown', keeper: r.chance(0.5), busy: true, touched: true, pending: 'create' };
    keys.set(name, k);
    const reply = await call(c.admin, c.port, 'POST', `/v1/key/create/${name}`).catch(() => undefined);
    k.busy = false;
    if (reply === undefined) return void inflightAtKill.total++;
    if (reply.status !== 200) return void anomalies.push(`create ${name}: ${reply.status} ${reply.text}`);
    k.state = 'present';
    k.pending = undefined;
    k.ackedAs = 'create';
    acked.keyCreate++;
  } else if (roll < 0.4) {
    const candidates = [...keys].filter(([, k]) => !k.keeper && !k.busy && k.state === 'present');
    if (candidates.length === 0) return;
    const [name, k] = r.pick(candidates);
    k.busy = true;
    k.state = 'unknown';
    k.pending = 'delete';
    k.touched = true;
    const reply = await call(c.admin, c.port, 'DELETE', `/v1/key/delete/${name}`).catch(() => undefined);
    k.busy = false;
    if (reply === undefined) return void inflightAtKill.total++;
    if (reply.status !== 200) return void anomalies.push(`delete ${name}: ${reply.status} ${reply.text}`);
    k.state = 'absent';
    k.pending = undefined;
    k.ackedAs = 'delete';
    acked.keyDelete++;
  } else if (roll < 0.55) {
    const free = POLICIES.filter((p) => !policies.get(p)!.busy);
    if (free.length === 0) return;
    const name = r.pick(free);
    const p = policies.get(name)!;
    const rules = randomRules(r, name);
    p.busy = true;
    p.pending = rules;
    const reply = await call(c.admin, c.port, 'POST', `/v1/policy/write/${name}`, rules).catch(() => undefined);
    p.busy = false;
    if (reply === undefined) return void inflightAtKill.total++; // stays pending until the restart resolves it
    p.pending = undefined;
    if (reply.status !== 200) return void anomalies.push(`policy write ${name}: ${reply.status} ${reply.text}`);
    p.acked = rules;
    acked.policyWrite++;
  } else if (roll < 0.65) {
    const written = POLICIES.filter((p) => policies.get(p)!.acked !== undefined);
    const free = MEMBERS.filter((m) => !assignments.get(m)!.busy);
    if (written.length === 0 || free.length === 0) return;
    const member = r.pick(free);
    const policy = r.pick(written);
    const a = assignments.get(member)!;
    a.busy = true;
    a.pending = policy;
    const reply = await call(c.admin, c.port, 'POST', `/v1/policy/assign/${policy}`, {
      identity: fx.ids[member]!.identity,
    }).catch(() => undefined);
    a.busy = false;
    if (reply === undefined) return void inflightAtKill.total++;
    a.pending = undefined;
    if (reply.status !== 200)
      return void anomalies.push(`assign ${policy} to ${member}: ${reply.status} ${reply.text}`);
    a.acked = policy;
    acked.assign++;
  } else if (roll < 0.69) {
    const name = `e-${cycle}-${++serial}`;
    const e: EnclaveModel = { state: 'unknown' };
    enclaves.set(name, e);
    const reply = await call(c.sysadmin, c.port, 'POST', `/v1/enclave/create/${name}`, {
      admin: fx.ids.eadmin!.identity,
    }).catch(() => undefined);
    if (reply === undefined) return void inflightAtKill.total++;
    if (reply.status !== 200) return void anomalies.push(`enclave create ${name}: ${reply.status} ${reply.text}`);
    e.state = 'present';
    acked.enclaveCreate++;
  } else {
    const candidates = [...keys].filter(([, k]) => k.keeper && k.state === 'present');
    const [name] = r.pick(candidates);
    const context = r.chance(0.5) ? b64(r.bytes(r.range(1, 32))) : undefined;
    const reply = await call(
      c.admin,
      c.port,
      'POST',
      `/v1/key/generate/${name}`,
      context === undefined ? {} : { context },
    ).catch(() => undefined);
    if (reply === undefined) return void inflightAtKill.total++;
    if (reply.status !== 200) return void anomalies.push(`generate ${name}: ${reply.status} ${reply.text}`);
    const { plaintext, ciphertext } = reply.json();
    ciphertexts.push({ key: name, context, plaintext, ciphertext });
    acked.generate++;
  }
}

/** CONCURRENCY loops of operations until `stop()`; resolves once all of them ended. */
function runLoad(r: Rng, c: Clients, cycle: number): { stop(): void; done: Promise<void> } {
  let stopped = false;
  const loop = async () => {
    for (let i = 0; i < 100_000 && !stopped; i++) await operate(r, c, cycle);
  };
  return {
    stop: () => void (stopped = true),
    done: Promise.all(Array.from({ length: CONCURRENCY }, loop)).then(() => undefined),
  };
}

// ---- checks after a restart --------------------------------------------------------------------------------

type KeyProbe = 'present' | 'absent';

/** A key fully works (describe + generate + decrypt) or is 404 on both; anything else is a failure. */
async function probeKey(c: Clients, name: string): Promise<KeyProbe> {
  const describe = await call(c.admin, c.port, 'GET', `/v1/key/describe/${name}`);
  const generate = await call(c.admin, c.port, 'POST', `/v1/key/generate/${name}`, {});
  if (describe.status === 404 && generate.status === 404) return 'absent';
  assert.equal(
    describe.status,
    200,
    `key ${name}: describe ${describe.status} ${describe.text} (generate ${generate.status})`,
  );
  assert.equal(describe.json().name, name);
  assert.equal(generate.status, 200, `key ${name}: describe 200 but generate ${generate.status} ${generate.text}`);
  const { plaintext, ciphertext } = generate.json();
  const decrypt = await call(c.admin, c.port, 'POST', `/v1/key/decrypt/${name}`, { ciphertext });
  assert.equal(decrypt.status, 200, `key ${name}: decrypt ${decrypt.status} ${decrypt.text}`);
  assert.equal(decrypt.json().plaintext, plaintext, `key ${name}: decrypt returned another plaintext`);
  return 'present';
}

async function listKeys(c: Clients): Promise<Map<string, string>> {
  const reply = await call(c.admin, c.port, 'GET', '/v1/key/list/*');
  assert.equal(reply.status, 200, reply.text);
  const listed = new Map<string, string>();
  for (const line of reply.text.split('\n')) {
    if (line === '') continue;
    const entry = JSON.parse(line);
    assert.equal(entry.error, undefined, `key listing failed: ${line}`);
    listed.set(entry.name, entry.id);
  }
  return listed;
}

async function checkKeys(c: Clients, r: Rng, final: boolean): Promise<void> {
  const listed = await listKeys(c);
  const unknown = [...keys].filter(([, k]) => k.state === 'unknown');
  // In flight at the kill: all or nothing, and the listing agrees with what the key does.
  await pool(unknown, 8, async ([name, k]) => {
    const seen = await probeKey(c, name);
    assert.equal(
      listed.has(name),
      seen === 'present',
      `key ${name} (in flight at the kill) is ${seen} but ${listed.has(name) ? '' : 'not '}listed`,
    );
    resolved(seen === (k.pending === 'create' ? 'present' : 'absent'));
    k.pending = undefined;
    k.state = seen;
    k.touched = true;
    checked.inflightResolved++;
  });
  for (const [name, k] of keys) {
    if (k.state === 'absent') {
      assert.ok(
        !listed.has(name),
        `key ${name} is listed although its delete was acknowledged (or it was seen absent)`,
      );
    } else {
      assert.ok(
        listed.has(name),
        `key ${name} (${k.ackedAs === 'create' ? 'create acknowledged' : 'seen present'}) is missing after the restart`,
      );
      if (k.id === undefined) k.id = listed.get(name);
      else assert.equal(listed.get(name), k.id, `key ${name}: key id changed from ${k.id} to ${listed.get(name)}`);
    }
  }
  for (const name of listed.keys()) assert.ok(keys.has(name), `unexpected key ${name} listed`);
  // Full probes: everything touched in the cycle (acknowledged creates and deletes), plus a sample of the rest;
  // after the last cycle, every key.
  const touched = [...keys].filter(([, k]) => (k.touched || final) && k.state !== 'unknown');
  const rest = final ? [] : [...keys].filter(([, k]) => !k.touched && k.state === 'present');
  const sample = Array.from({ length: Math.min(SAMPLE, rest.length) }, () => rest[r.int(rest.length)]!);
  await pool([...touched, ...sample], 8, async ([name, k]) => {
    const seen = await probeKey(c, name);
    assert.equal(seen, k.state, `key ${name}: expected ${k.state} (${k.ackedAs ?? 'resolved'}), found ${seen}`);
    if (k.ackedAs === 'delete') checked.deletes++;
    else checked.keys++;
    k.touched = false;
  });
}

async function checkCiphertexts(c: Clients): Promise<void> {
  const byKey = new Map<string, Ciphertext[]>();
  for (const ct of ciphertexts) byKey.set(ct.key, [...(byKey.get(ct.key) ?? []), ct]);
  for (const [key, list] of byKey) {
    for (let i = 0; i < list.length; i += 1000) {
      const chunk = list.slice(i, i + 1000);
      const reply = await call(
        c.admin,
        c.port,
        'POST',
        `/v1/key/bulk/decrypt/${key}`,
        chunk.map(({ ciphertext, context }) => ({ ciphertext, context })),
      );
      if (reply.status !== 200) {
        for (const ct of chunk) {
          const one = await call(c.admin, c.port, 'POST', `/v1/key/decrypt/${key}`, {
            ciphertext: ct.ciphertext,
            context: ct.context,
          });
          assert.equal(one.status, 200, `ciphertext of ${key} no longer decrypts: ${one.status} ${one.text}`);
        }
        assert.fail(`bulk decrypt of ${key}: ${reply.status} ${reply.text}`);
      }
      const plaintexts = reply.json().map((p: { plaintext: string }) => p.plaintext);
      assert.deepEqual(
        plaintexts,
        chunk.map((ct) => ct.plaintext),
        `ciphertexts of ${key} decrypt to other plaintexts`,
      );
      checked.ciphertexts += chunk.length;
    }
  }
}

const sortedKeys = (o: Record<string, unknown>) => Object.keys(o).sort();

async function checkPolicies(c: Clients): Promise<void> {
  for (const [name, p] of policies) {
    const reply = await call(c.admin, c.port, 'GET', `/v1/policy/read/${name}`);
    const options = [p.acked, p.pending].filter((x): x is Rules => x !== undefined);
    if (reply.status === 404) {
      assert.equal(p.acked, undefined, `policy ${name}: its write was acknowledged but it is 404 after the restart`);
      if (p.pending !== undefined) resolved(false);
      p.pending = undefined;
      continue;
    }
    assert.equal(reply.status, 200, `policy ${name}: ${reply.status} ${reply.text}`);
    const got = reply.json();
    const rules = { allow: sortedKeys(got.allow), deny: sortedKeys(got.deny) };
    const match = options.find((o) => JSON.stringify(o) === JSON.stringify(rules));
    assert.ok(
      match,
      `policy ${name}: read ${JSON.stringify(rules)}, expected ${options.map((o) => JSON.stringify(o)).join(' or ') || '404'}`,
    );
    if (p.pending !== undefined) {
      checked.inflightResolved++;
      resolved(match === p.pending);
    } else checked.policies++;
    p.acked = match;
    p.pending = undefined;
  }
}

async function checkAssignments(c: Clients): Promise<void> {
  for (const [member, a] of assignments) {
    const id = fx.ids[member]!;
    const reply = await call(c.admin, c.port, 'GET', `/v1/identity/describe/${id.identity}`);
    const options = [a.acked, a.pending].filter((x): x is string => x !== undefined);
    let now: string | undefined;
    if (reply.status === 404) {
      assert.equal(
        a.acked,
        undefined,
        `identity ${member}: assigned to ${a.acked} (acknowledged) but 404 after the restart`,
      );
    } else {
      assert.equal(reply.status, 200, `identity ${member}: ${reply.status} ${reply.text}`);
      now = reply.json().policy;
      assert.ok(options.includes(now!), `identity ${member}: assigned to ${now}, expected ${options.join(' or ')}`);
    }
    if (a.pending !== undefined) {
      checked.inflightResolved++;
      resolved(now === a.pending);
    } else if (a.acked !== undefined) checked.assignments++;
    a.acked = now;
    a.pending = undefined;
    await checkInEffect(c, member, id, now);
  }
}

/** The assignment is in effect: the member may describe its own policy and no other. */
async function checkInEffect(c: Clients, member: string, _id: TestIdentity, policy: string | undefined): Promise<void> {
  const agent = c.members.get(member)!;
  for (const name of POLICIES) {
    const p = policies.get(name)!;
    if (p.acked === undefined) continue;
    const reply = await call(agent, c.port, 'GET', `/v1/policy/describe/${name}`);
    const want = name === policy ? 200 : 403;
    assert.equal(
      reply.status,
      want,
      `${member} (assigned ${policy ?? 'nothing'}) describing policy ${name}: ${reply.status} ${reply.text}`,
    );
  }
}

/** New and in-flight enclaves in full, a sample of the older ones; after the last cycle, all of them. */
async function checkEnclaves(c: Clients, r: Rng, final: boolean): Promise<void> {
  const fresh = [...enclaves].filter(
    ([, e]) => e.state === 'unknown' || (e.state === 'present' && (!e.usable || final)),
  );
  const old = final ? [] : [...enclaves].filter(([, e]) => e.state === 'present' && e.usable);
  const sample = Array.from({ length: Math.min(SAMPLE, old.length) }, () => old[r.int(old.length)]!);
  await pool([...fresh, ...sample], 8, async ([name, e]) => {
    const reply = await call(c.sysadmin, c.port, 'GET', `/v1/enclave/describe/${name}`);
    if (reply.status === 404) {
      assert.notEqual(
        e.state,
        'present',
        `enclave ${name}: its create was acknowledged but it is 404 after the restart`,
      );
      e.state = 'absent';
      checked.inflightResolved++;
      resolved(false);
      return;
    }
    assert.equal(reply.status, 200, `enclave ${name}: ${reply.status} ${reply.text}`);
    assert.equal(reply.json().name, name);
    // Its admin gets in: the enclave record is complete.
    const list = await call(c.eadmin, c.port, 'GET', `/v1/key/list/*?enclave=${name}`);
    assert.equal(
      list.status,
      200,
      `enclave ${name} describes but its admin cannot list its keys: ${list.status} ${list.text}`,
    );
    if (e.state === 'unknown') {
      checked.inflightResolved++;
      resolved(true);
    } else checked.enclaves++;
    e.state = 'present';
    e.usable = true;
  });
}

// ---- the test -------------------------------------------------------------------------------------------

test(`kill -9 at random moments under load: nothing acknowledged is lost (${CYCLES} cycles, seed ${SEED})`, {
  timeout: 60_000 + CYCLES * (LOAD_MS + 15_000),
}, async (t) => {
  const r = rng(SEED);
  t.diagnostic(
    `seed ${SEED} (replay: KESD_RELIABILITY_SEED=${SEED}); ${CYCLES} cycles, load ≤ ${LOAD_MS} ms, ${CONCURRENCY} connections`,
  );
  let proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off', ...WORKERS]);
  let clients = clientsFor(proc);
  const started = Date.now();
  try {
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      const load = runLoad(r, clients, cycle);
      await sleep(r.range(50, LOAD_MS));
      load.stop(); // no new requests; those in flight now are cut by the kill
      if (r.chance(0.5)) {
        await proc.kill9(); // the whole process group at once
        kills.group++;
      } else {
        // Only the `kesd server` process, as `kill -9 <pid>` or the OOM killer would: any worker processes it
        // started must not serve without it (stale state from an orphaned cache) and must not live on. The primary
        // accepts the connections (node:cluster round-robin), so the port refuses at once; a worker exits when it
        // reads the end of its IPC channel, which takes as long as it waits for a CPU (seconds on a loaded machine).
        const port = proc.port;
        const orphans = await proc.kill9Leader(30_000, async () => {
          assert.equal(await connectError(port), 'ECONNREFUSED', 'a worker accepted a connection without its primary');
        });
        assert.deepEqual(orphans, [], `worker processes outlived the killed kesd server process by 30 s`);
        kills.leader++;
      }
      await deadline(load.done, 20_000, 'the load loops to end after the kill');
      clients.destroy();
      assert.deepEqual(anomalies, [], 'every request answered before the kill is a 200');

      const t0 = Date.now();
      proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off', ...WORKERS]);
      const t1 = Date.now();
      clients = clientsFor(proc);
      await checkKeys(clients, r, cycle === CYCLES);
      const t2 = Date.now();
      await checkCiphertexts(clients);
      await checkPolicies(clients);
      await checkAssignments(clients);
      await checkEnclaves(clients, r, cycle === CYCLES);
      if (process.env.KESD_RELIABILITY_VERBOSE) {
        console.error(
          `cycle ${cycle}: start ${t1 - t0} ms, keys ${t2 - t1} ms, rest ${Date.now() - t2} ms; acked ${JSON.stringify(acked)} in flight ${inflightAtKill.total} checked ${JSON.stringify(checked)}`,
        );
      }
    }
  } finally {
    clients.destroy();
    await proc.stop();
  }
  const totalAcked = Object.values(acked).reduce((x, y) => x + y, 0);
  const totalChecked = Object.values(checked).reduce((x, y) => x + y, 0);
  t.diagnostic(`kills: ${kills.group} of the process group, ${kills.leader} of the kesd server process alone`);
  t.diagnostic(
    `acknowledged: ${JSON.stringify(acked)} = ${totalAcked}; in flight at a kill: ${inflightAtKill.total} (writes among them found committed ${inflight.committed}, not committed ${inflight.notCommitted}; the rest were generates)`,
  );
  t.diagnostic(
    `checked after restarts: ${JSON.stringify(checked)} = ${totalChecked} (in ${((Date.now() - started) / 1000).toFixed(1)} s)`,
  );
  // The load must really have exercised every kind of write, and kills must have hit requests in flight.
  for (const [kind, n] of Object.entries(acked)) assert.ok(n > 0, `no acknowledged ${kind} in ${CYCLES} cycles`);
  assert.ok(inflightAtKill.total > 0, 'no request was in flight at any kill');
  assert.ok(checked.ciphertexts >= acked.generate, 'every ciphertext was checked at least once');
});

/** How a TCP connection to the port fails ('' if it connects). */
function connectError(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}
