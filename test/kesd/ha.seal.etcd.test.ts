// A seal reaches every replica on one etcd store (KES: key operations stop until a restart): three `kesd server`
// processes, C with two workers; /v1/sys/seal through A makes B and C (both workers) answer 403 `system is sealed`,
// measured from A's 200 and printed. A worker of C restarted after the seal stays sealed; a restarted replica
// is unsealed (the marker already in etcd is ignored at start) and a later seal reaches it again. The reload path
// (a replica that missed the watch event) is checked in process. Skips only without etcd.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEtcdStore, readEtcdRootKey } from '../../kesd/src/store/etcd.ts';
import { followStore, writeSealMarker } from '../../kesd/src/state/store-changes.ts';
import { System } from '../../kesd/src/state/system.ts';
import { makeIdentity, type TestIdentity } from './harness.ts';
import { agentFor, call, groupPids, sleep, startKesd, type KesdProcess } from './load.ts';
import { ETCD_SKIP, etcdInitYml, startEtcd, type EtcdCluster } from '../../harness/etcd.ts';

const UNSEAL_ENV = 'KESD_HA_SEAL_UNSEAL';
const SEALED = 'system is sealed';
const PREFIX = 'seal/';

interface Replica {
  readonly name: string;
  readonly workers: number;
  proc: KesdProcess;
}

describe('a seal on one etcd-backed replica seals them all', { skip: ETCD_SKIP, timeout: 180_000 }, () => {
  let etcd: EtcdCluster;
  let dir: string;
  let admin: TestIdentity;
  let sysadmin: TestIdentity;
  let initYml: string;
  let env: NodeJS.ProcessEnv;
  const replicas: Replica[] = [];
  const agents: https.Agent[] = [];
  // A fresh connection per request: node:cluster hands each new connection to the next worker.
  const fresh = (who: TestIdentity, r: Replica, method: string, path: string, body?: unknown) => {
    const agent = agentFor(who, { keepAlive: false });
    agents.push(agent);
    return call(agent, r.proc.port, method, path, body);
  };
  const start = (name: string, workers: number, init: boolean) =>
    startKesd(
      join(dir, `data-${name}`),
      env,
      [...(init ? ['--init', initYml] : []), '--audit-log', 'off', '--workers', String(workers)],
      { startMs: 60_000 },
    );

  /** Whether `count` requests on fresh connections (so every worker) all got 403 system is sealed. */
  async function sealedOn(r: Replica, count: number): Promise<boolean> {
    for (let i = 0; i < count; i++) {
      const reply = await fresh(admin, r, 'POST', '/v1/key/generate/minio-default', {});
      if (reply.status !== 403) {
        assert.equal(reply.status, 200, `${r.name}: ${reply.text}`);
        return false;
      }
      assert.equal(reply.json().message, SEALED);
    }
    return true;
  }

  /** Polls until check holds; the ms it took from since. */
  async function until(what: string, since: number, check: () => Promise<boolean>): Promise<number> {
    for (;;) {
      if (await check()) return Date.now() - since;
      if (Date.now() - since > 15_000) throw new Error(`${what}: not within 15 s`);
      await sleep(5);
    }
  }

  async function seal(via: Replica): Promise<number> {
    const reply = await fresh(sysadmin, via, 'POST', '/v1/sys/seal');
    assert.equal(reply.status, 200, `seal via ${via.name}: ${reply.text}`);
    return Date.now();
  }

  before(async () => {
    etcd = await startEtcd(1);
    dir = await mkdtemp(join(tmpdir(), 'kesd-ha-seal-'));
    const server = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
    sysadmin = await makeIdentity(dir, 'sysadmin');
    admin = await makeIdentity(dir, 'admin');
    initYml = join(dir, 'init.yml');
    await writeFile(
      initYml,
      etcdInitYml(etcd, { server, sysadmin, admin, unsealEnv: UNSEAL_ENV, prefix: PREFIX, keys: ['minio-default'] }),
    );
    env = { ...process.env, [UNSEAL_ENV]: Buffer.alloc(32, 0x4d).toString('base64') };
    const layout = [
      ['A', 1],
      ['B', 1],
      ['C', 2],
    ] as const;
    const procs = await Promise.all(layout.map(([name, workers]) => start(name, workers, true)));
    layout.forEach(([name, workers], i) => replicas.push({ name, workers, proc: procs[i]! }));
  });

  after(async () => {
    for (const a of agents) a.destroy();
    await Promise.all(replicas.map((r) => r.proc.stop()));
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('a seal via A: B and C (both workers) answer 403 system is sealed; a restarted worker of C stays sealed', async (t) => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    // Every worker holds the key first: a seal must also drop cached key material.
    for (const r of replicas) {
      for (let i = 0; i < 4; i++) {
        const reply = await fresh(admin, r, 'POST', '/v1/key/generate/minio-default', {});
        assert.equal(reply.status, 200, `${r.name} before the seal: ${reply.text}`);
      }
    }

    const since = await seal(a);
    assert.ok(await sealedOn(a, 2), 'A itself');
    await Promise.all(
      [b, c].map(async (r) => {
        const ms = await until(`the seal to reach ${r.name}`, since, () => sealedOn(r, 4));
        t.diagnostic(
          `seal via A reached ${r.name} (${r.workers} worker${r.workers > 1 ? 's' : ''}) ${ms} ms after A's 200`,
        );
      }),
    );
    for (const r of [b, c]) {
      for (const [method, path, body] of [
        ['GET', '/v1/key/describe/minio-default', undefined],
        ['POST', '/v1/key/create/after-seal', undefined],
      ] as const) {
        for (let i = 0; i < 2; i++) {
          const reply = await fresh(admin, r, method, path, body);
          assert.equal(reply.status, 403, `${r.name}: ${method} ${path}: ${reply.text}`);
          assert.equal(reply.json().message, SEALED);
        }
      }
      const status = await fresh(sysadmin, r, 'GET', '/v1/status');
      assert.equal(status.json().sealed, true, `${r.name} /v1/status`);
      assert.equal((await fresh(sysadmin, r, 'POST', '/v1/sys/seal')).status, 403, `${r.name}: seal again`);
      assert.doesNotMatch(r.proc.output(), /error|failed/i, `${r.name} logged: ${r.proc.output()}`);
    }

    // A worker of C that restarts after the seal starts sealed: C's primary learned of the seal from its workers.
    const pids = await groupPids(c.proc.pid);
    const killed = pids.find((p) => p !== c.proc.pid)!;
    process.kill(killed, 'SIGKILL');
    const exitLine = new RegExp(`worker (\\d+) \\(pid ${killed}\\) exited \\(SIGKILL\\); restarting`);
    await until('C to see its worker exit', Date.now(), async () => exitLine.test(c.proc.output()));
    const slot = exitLine.exec(c.proc.output())![1]!;
    await until('a new worker on C', Date.now(), async () => {
      const now = await groupPids(c.proc.pid);
      return now.length === pids.length && !now.includes(killed);
    });
    await until(`C's new worker ${slot} to serve (sealed)`, Date.now(), async () => {
      assert.ok(await sealedOn(c, 1), 'a request to C after its worker restarted');
      const metrics = await fresh(sysadmin, c, 'GET', '/v1/metrics');
      return (
        Number(new RegExp(`^kesd_worker_requests\\{worker="${slot}"\\} (\\d+)$`, 'm').exec(metrics.text)?.[1] ?? 0) > 0
      );
    });
    assert.ok(await sealedOn(c, 6), 'C after its worker restarted');
  });

  test('a restarted replica is unsealed (the marker in etcd is from before its start); the next seal reaches it', async (t) => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    await b.proc.stop();
    b.proc = await start('B', 1, false);
    assert.equal(await sealedOn(b, 3), false, 'B after its restart');
    assert.ok((await sealedOn(a, 2)) && (await sealedOn(c, 4)), 'A and C stay sealed');

    await a.proc.stop();
    a.proc = await start('A', 1, false);
    assert.equal(await sealedOn(a, 2), false, 'A after its restart');
    const since = await seal(b);
    const ms = await until('the second seal to reach A', since, () => sealedOn(a, 2));
    t.diagnostic(`a second seal, via B, reached the restarted A ${ms} ms after B's 200`);
  });

  test('a replica that reloads its state (missed the watch event) seals if the marker changed since its start, not otherwise', async () => {
    const config = { endpoints: [...etcd.endpoints], prefix: PREFIX };
    const store = openEtcdStore(config);
    try {
      const root = await readEtcdRootKey(store, env);
      const open = () => System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false });
      // Started after the seals above: the marker is there, and a reload alone must not seal.
      const replica = await open();
      const hooks = await followStore(replica);
      await hooks.resync();
      assert.equal(replica.sealed, false, 'the marker from before the start sealed it');
      await writeSealMarker(await open()); // another replica seals; this one misses the watch event
      await hooks.resync();
      assert.equal(replica.sealed, true, 'a seal after the start was not applied by the reload');
    } finally {
      await store.close();
    }
  });
});
