// Crash points of the upstream queue: kill -9 of `kesd server` (one process, or a primary with two workers) at random
// moments of concurrent key creates and deletes, with an upstream that never answers (nothing listens on its port),
// so every change stays queued. After each crash the store is opened as it was left and must hold:
//   - every acknowledged change: a key whose last acknowledged operation was a create (none in flight) is there, one
//     whose last was a delete is gone;
//   - the queue exactly in step with the keys: every name ever changed has an entry, and the entry wants exactly
//     what the store holds (that key's bytes, or nothing): a change is queued if and only if it was committed;
//   - every entry has its place in line (its queued_at) and nothing else is in line.
// Then the server restarts on the same dir, reports the same backlog in /v1/status and /v1/metrics, and goes on.
// Settings: KESD_UPSTREAM_CRASH_CYCLES (default 8), KESD_UPSTREAM_CRASH_SEED (replay).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import { openSealedRootKey } from '../../kesd/src/store/unseal.js';
import { System } from '../../kesd/src/state/system.js';
import { paths } from '../../kesd/src/state/records.js';
import { syncPaths, type SyncEntry } from '../../kesd/src/state/sync-queue.js';
import {
  agentFor,
  call,
  envInt,
  makeFixture,
  rng,
  seedFrom,
  sleep,
  startKesd,
  UNSEAL_ENV,
  type Fixture,
  type KesdProcess,
} from './load.js';
import { freePort } from '../../harness/minio-stack.js';

const CYCLES = envInt('KESD_UPSTREAM_CRASH_CYCLES', 8);
const SEED = seedFrom('KESD_UPSTREAM_CRASH_SEED');
const NAMES = Array.from({ length: 12 }, (_, i) => `u${i}`);
/** minio-default was made before the upstream was configured: the first start queues it (adoption). */
const INSPECTED = [...NAMES, 'minio-default'];

let fx: Fixture;
let initYml: string;

before(async () => {
  fx = await makeFixture();
  // The upstream is added to the existing data dir by `server --init` (a new store would first take Vault's keys).
  initYml = join(fx.dir, 'init.yml');
  await writeFile(
    initYml,
    stringify({
      version: 'v1',
      address: '127.0.0.1:0',
      system: { admin: { identity: fx.sysadmin.identity } },
      tls: { key: fx.server.keyFile, cert: fx.server.certFile },
      unseal: { environment: { name: UNSEAL_ENV } },
      enclave: { default: { admin: { identity: fx.admin.identity }, keys: [{ name: 'minio-default' }] } },
      upstream: {
        vault: {
          endpoint: `http://127.0.0.1:${await freePort()}`,
          engine: 'kv',
          version: 'v2',
          prefix: 'kesd',
          token: 'never-used',
        },
      },
    }),
  );
});
after(() => fx?.remove());

interface NameModel {
  acked?: 'create' | 'delete';
  inFlight: number;
}

/** The store as the crash left it: each name's key bytes (base64) and queue entry, and the queue's bookkeeping. */
async function inspect(): Promise<{
  keys: Map<string, string | undefined>;
  entries: Map<string, SyncEntry>;
  inLine: string[];
  backlog: number;
}> {
  const store = await openLmdbStore(join(fx.dataDir, 'db'));
  try {
    const { root } = await openSealedRootKey(fx.dataDir, fx.env);
    const system = await System.open(
      store,
      { key: root.key, sysadmin: root.sysadmin },
      { upstreamEnclave: 'default', resumeSweeps: false },
    );
    const uid = system.enclaves.get('default')!.info.uid;
    const keys = new Map<string, string | undefined>();
    const entries = new Map<string, SyncEntry>();
    for (const name of INSPECTED) {
      keys.set(name, (await system.records.get<{ key: string }>(paths.key(uid, name)))?.key);
      const entry = await system.records.get<SyncEntry>(syncPaths.entry(uid, name));
      if (entry !== undefined) entries.set(name, entry);
    }
    const inLine: string[] = [];
    for await (const path of system.records.listPaths(syncPaths.order(uid)))
      inLine.push(path.slice(syncPaths.order(uid).length));
    const backlog = await store.count(syncPaths.entry(uid));
    system.release();
    return { keys, entries, inLine, backlog };
  } finally {
    await store.close();
  }
}

test(`kill -9 during key creates and deletes: the queue holds exactly the committed changes (${CYCLES} cycles, seed ${SEED})`, async () => {
  const r = rng(SEED);
  const model = new Map<string, NameModel>(NAMES.map((n) => [n, { inFlight: 0 }]));
  const touched = new Set<string>();
  let acked = 0;
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    const workers = cycle % 2 === 0 ? '1' : '2';
    const kesd: KesdProcess = await startKesd(fx.dataDir, fx.env, [
      '--init',
      initYml,
      '--workers',
      workers,
      '--audit-log',
      'off',
    ]);
    const agent = agentFor(fx.admin);
    let stop = false;
    const load = Array.from({ length: 6 }, async () => {
      while (!stop) {
        const name = r.pick(NAMES);
        const m = model.get(name)!;
        const op = r.chance(0.6) ? 'create' : 'delete';
        m.inFlight++;
        touched.add(name);
        try {
          const reply = await call(
            agent,
            kesd.port,
            'POST',
            `/v1/key/${op}/${name}`,
            op === 'create' ? {} : undefined,
            { timeoutMs: 5000 },
          );
          if (reply.status === 200) {
            m.acked = op;
            acked++;
          } else if (reply.status === 400 || reply.status === 404) {
            m.acked = op === 'create' ? 'create' : 'delete'; // exists already / absent already: the same state
          } else assert.fail(`${op} ${name}: ${reply.status} ${reply.text}`);
        } catch {
          // the connection died with the server: the outcome is unknown
        } finally {
          m.inFlight--;
        }
      }
    });
    await sleep(r.range(80, 700));
    await kesd.kill9();
    stop = true;
    await Promise.all(load);
    agent.destroy();

    const { keys, entries, inLine, backlog } = await inspect();
    assert.equal(
      entries.get('minio-default')?.want?.key,
      keys.get('minio-default'),
      `cycle ${cycle}: the key made before the upstream was not adopted`,
    );
    for (const name of NAMES) {
      const m = model.get(name)!;
      const key = keys.get(name);
      const entry = entries.get(name);
      if (m.acked === 'create' && m.inFlight === 0)
        assert.ok(key !== undefined, `cycle ${cycle}: acknowledged create of ${name} lost`);
      if (m.acked === 'delete' && m.inFlight === 0)
        assert.equal(key, undefined, `cycle ${cycle}: acknowledged delete of ${name} lost`);
      if (entry === undefined) {
        assert.equal(key, undefined, `cycle ${cycle}: ${name} exists but its change was not queued`);
        continue;
      }
      assert.equal(
        entry.want?.key,
        key,
        `cycle ${cycle}: the queue entry of ${name} wants something else than the store holds`,
      );
      assert.ok(inLine.includes(`${entry.queued_at}/${name}`), `cycle ${cycle}: ${name} has no place in line`);
    }
    assert.equal(
      inLine.length,
      entries.size,
      `cycle ${cycle}: places in line ${inLine.join(', ')} vs entries ${[...entries.keys()].join(', ')}`,
    );
    assert.equal(backlog, entries.size);
  }
  assert.ok(acked > 0, 'the load acknowledged changes');
  assert.ok(touched.size > 0);

  // The restarted server reports the queue it finds, in the status extension and as metrics.
  const kesd = await startKesd(fx.dataDir, fx.env, ['--init', initYml, '--audit-log', 'off']);
  try {
    const { entries } = await inspect();
    const agent = agentFor(fx.sysadmin);
    // The lease record a killed holder left says what it last knew of Vault (reachable until a call failed) until
    // the restarted server takes the lease over (upstream/lease.ts) and its own call fails: wait for that.
    let status = (await call(agent, kesd.port, 'GET', '/v1/status')).json();
    for (const end = Date.now() + 60_000; status.upstream.reachable !== false && Date.now() < end; ) {
      await sleep(250);
      status = (await call(agent, kesd.port, 'GET', '/v1/status')).json();
    }
    assert.equal(status.upstream.backlog, entries.size);
    assert.equal(status.upstream.reachable, false);
    assert.equal(
      status.keystore_unreachable,
      false,
      "kesd's own store is fine: the upstream does not count as the keystore",
    );
    const metrics = (await call(agent, kesd.port, 'GET', '/v1/metrics')).text;
    assert.match(metrics, new RegExp(`^kesd_upstream_backlog ${entries.size}$`, 'm'));
    agent.destroy();
  } finally {
    await kesd.stop();
  }
});
