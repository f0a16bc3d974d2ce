// High availability, process level: three `kesd server --init` processes on one 3-member etcd cluster (TLS with
// client certificates), started at the same moment on empty data dirs. They must agree on one root key, see each
// other's writes at once, drop what the others deleted or changed within about a second (measured and printed),
// keep serving cached keys while etcd has no quorum (writes fail with 5xx, status says so) and recover after.
// Replica C runs two worker processes, so each worker's own watch is covered too. Skips only without etcd.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import type https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEtcdStore } from '../../kesd/src/store/etcd.ts';
import { fingerprint } from './cli-process.ts';
import { makeIdentity, type TestIdentity } from './harness.ts';
import { agentFor, call, runKesd, startKesd, type KesdProcess } from './load.ts';
import { ETCD_SKIP, etcdInitYml, startEtcd, type EtcdCluster } from '../../harness/etcd.ts';

const UNSEAL_ENV = 'KESD_HA_UNSEAL';
const PREFIX = 'ha/';
const NAMES = ['A', 'B', 'C'] as const;

interface Replica {
  readonly name: string;
  proc: KesdProcess;
  /** One keep-alive connection for A and B; a fresh connection per request for C, so both its workers answer. */
  readonly admin: https.Agent;
  readonly user: https.Agent;
}

describe('kesd replicas on one etcd cluster', { skip: ETCD_SKIP, timeout: 180_000 }, () => {
  let etcd: EtcdCluster;
  let dir: string;
  let admin: TestIdentity;
  let user: TestIdentity;
  let initYml: string;
  let env: NodeJS.ProcessEnv;
  const replicas: Replica[] = [];
  const agents: https.Agent[] = [];
  const agent = (who: TestIdentity, keepAlive: boolean) => {
    const a = agentFor(who, { keepAlive });
    agents.push(a);
    return a;
  };
  const as = (r: Replica, who: 'admin' | 'user', method: string, path: string, body?: unknown) =>
    call(r[who], r.proc.port, method, path, body);

  /** Polls `check` on replica r until it holds; resolves with the ms it took from `since`. */
  async function until(r: Replica, what: string, since: number, check: () => Promise<boolean>): Promise<number> {
    for (;;) {
      if (await check()) return Date.now() - since;
      if (Date.now() - since > 15_000) throw new Error(`replica ${r.name}: ${what} did not happen within 15 s`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  before(async () => {
    etcd = await startEtcd(3, { tls: true });
    dir = await mkdtemp(join(tmpdir(), 'kesd-ha-'));
    const server = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
    const sysadmin = await makeIdentity(dir, 'sysadmin');
    admin = await makeIdentity(dir, 'admin');
    user = await makeIdentity(dir, 'user');
    initYml = join(dir, 'init.yml');
    await writeFile(
      initYml,
      etcdInitYml(etcd, {
        server,
        sysadmin,
        admin,
        unsealEnv: UNSEAL_ENV,
        prefix: PREFIX,
        policies: { app: { allow: ['/v1/key/*'], identities: [user.identity] } },
        keys: ['minio-default'],
      }),
    );
    env = { ...process.env, [UNSEAL_ENV]: Buffer.alloc(32, 0x3c).toString('base64') };
    // All three at once, each on an empty data dir: they race to create the root key and the declarations.
    const procs = await Promise.all(
      NAMES.map((name) =>
        startKesd(
          join(dir, `data-${name}`),
          env,
          ['--init', initYml, '--audit-log', 'off', '--workers', name === 'C' ? '2' : '1'],
          { startMs: 60_000 },
        ),
      ),
    );
    NAMES.forEach((name, i) => {
      const keepAlive = name !== 'C';
      replicas.push({ name, proc: procs[i]!, admin: agent(admin, keepAlive), user: agent(user, keepAlive) });
    });
  });

  after(async () => {
    for (const a of agents) a.destroy();
    await Promise.all(replicas.map((r) => r.proc.stop()));
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('started together on empty dirs, the replicas agree on one root key; the data dirs hold only .init', async () => {
    for (const name of NAMES) assert.deepEqual(await readdir(join(dir, `data-${name}`)), ['.init']);
    // A data key one replica generates, every other one decrypts: the records and the root key are shared.
    for (const from of replicas) {
      const gen = await as(from, 'admin', 'POST', '/v1/key/generate/minio-default', {});
      assert.equal(gen.status, 200, `${from.name}: ${gen.text}`);
      for (const to of replicas) {
        const dec = await as(to, 'admin', 'POST', '/v1/key/decrypt/minio-default', {
          ciphertext: gen.json().ciphertext,
        });
        assert.equal(dec.status, 200, `${from.name} → ${to.name}: ${dec.text}`);
        assert.equal(dec.json().plaintext, gen.json().plaintext);
      }
    }
    for (const r of replicas)
      assert.doesNotMatch(r.proc.output(), /error|failed/i, `replica ${r.name} logged: ${r.proc.output()}`);
  });

  test('a key created via A is usable via B and C at once; a second create of it fails everywhere', async () => {
    const [a] = replicas;
    assert.equal((await as(a!, 'admin', 'POST', '/v1/key/create/shared')).status, 200);
    for (const r of replicas) {
      const gen = await as(r, 'admin', 'POST', '/v1/key/generate/shared', {});
      assert.equal(gen.status, 200, `${r.name}: ${gen.text}`);
      const again = await as(r, 'admin', 'POST', '/v1/key/create/shared');
      assert.equal(again.status, 400, `${r.name}: ${again.text}`);
      assert.equal(again.json().message, 'key already exists');
    }
  });

  test('a key deleted via A stops working on B and C (which had it cached)', async (t) => {
    const [a, ...others] = replicas;
    assert.equal((await as(a!, 'admin', 'POST', '/v1/key/create/short-lived')).status, 200);
    for (const r of others)
      for (let i = 0; i < 3; i++)
        assert.equal((await as(r, 'admin', 'POST', '/v1/key/generate/short-lived', {})).status, 200);
    const deleted = await as(a!, 'admin', 'DELETE', '/v1/key/delete/short-lived');
    assert.equal(deleted.status, 200, deleted.text);
    const since = Date.now();
    await Promise.all(
      others.map(async (r) => {
        const ms = await until(r, 'the delete', since, async () => {
          for (let i = 0; i < 3; i++)
            if ((await as(r, 'admin', 'POST', '/v1/key/generate/short-lived', {})).status !== 404) return false;
          return true;
        });
        t.diagnostic(`key delete via A reached ${r.name} after ${ms} ms`);
      }),
    );
  });

  test('a policy change via A takes effect on B and C', async (t) => {
    const [a, ...others] = replicas;
    for (const r of others)
      assert.equal((await as(r, 'user', 'POST', '/v1/key/generate/minio-default', {})).status, 200);
    const write = await as(a!, 'admin', 'POST', '/v1/policy/write/app', {
      allow: ['/v1/key/*'],
      deny: ['/v1/key/generate/*'],
    });
    assert.equal(write.status, 200, write.text);
    const since = Date.now();
    await Promise.all(
      others.map(async (r) => {
        const ms = await until(r, 'the policy change', since, async () => {
          for (let i = 0; i < 3; i++)
            if ((await as(r, 'user', 'POST', '/v1/key/generate/minio-default', {})).status !== 403) return false;
          return true;
        });
        t.diagnostic(`policy change via A reached ${r.name} after ${ms} ms`);
      }),
    );
    // The rest of the policy still applies everywhere.
    for (const r of replicas) assert.equal((await as(r, 'user', 'GET', '/v1/key/describe/minio-default')).status, 200);
  });

  test('a replica restarts from its .init alone: the root key and the state come from etcd', async () => {
    const [a, b] = replicas;
    const gen = await as(b!, 'admin', 'POST', '/v1/key/generate/minio-default', {});
    await a!.proc.stop();
    a!.proc = await startKesd(join(dir, 'data-A'), env, ['--audit-log', 'off', '--workers', '1']);
    const dec = await as(a!, 'admin', 'POST', '/v1/key/decrypt/minio-default', { ciphertext: gen.json().ciphertext });
    assert.equal(dec.status, 200, dec.text);
    assert.equal(dec.json().plaintext, gen.json().plaintext);
    assert.equal((await as(a!, 'user', 'POST', '/v1/key/generate/minio-default', {})).status, 403); // the changed policy
  });

  test('a wrong unseal key: the clear error and exit code of the embedded store, and nothing written anywhere', async () => {
    const wrong = { ...env, [UNSEAL_ENV]: Buffer.alloc(32, 0x3d).toString('base64') };
    const store = openEtcdStore({ endpoints: [...etcd.endpoints], prefix: PREFIX, tls: { ...etcd.tls! } });
    try {
      const revision = await store.revision();
      const existing = join(dir, 'data-B');
      const before = await fingerprint(existing);
      for (const args of [
        ['server', existing],
        ['server', '--init', initYml, join(dir, 'data-new')],
        ['init', '--config', initYml, join(dir, 'data-new')],
      ]) {
        const run = await runKesd(
          [...args, ...(args[0] === 'server' ? ['--audit-log', 'off', '--workers', '1'] : [])],
          wrong,
        );
        assert.equal(run.timedOut, false, `${args.join(' ')}: kept running`);
        assert.equal(run.code, 1, `${args.join(' ')}: ${run.stderr}`);
        assert.match(run.stderr, /^kesd: unseal key is wrong: the root key is not authentic$/m, args.join(' '));
      }
      assert.deepEqual(await fingerprint(existing), before);
      assert.deepEqual(
        (await readdir(dir)).filter((f) => f.includes('data-new')),
        [],
      );
      assert.equal(await store.revision(), revision, 'etcd was written');
    } finally {
      await store.close();
    }
  });

  test('etcd loses its quorum: creates fail with 5xx, cached keys keep working, status says unreachable; then all recover', async (t) => {
    const [a] = replicas;
    assert.equal((await as(a!, 'admin', 'POST', '/v1/key/create/cached')).status, 200);
    const ciphertexts = new Map<string, { ciphertext: string; plaintext: string }>();
    for (const r of replicas) {
      // twice for C, so both of its workers hold the key
      for (let i = 0; i < 2; i++) {
        const gen = await as(r, 'admin', 'POST', '/v1/key/generate/cached', {});
        assert.equal(gen.status, 200, gen.text);
        ciphertexts.set(r.name, gen.json());
      }
    }

    await etcd.kill(1);
    await etcd.kill(2);
    let lost = Date.now();
    try {
      // Every replica at once, and the slow parts (each waits for the store's deadline) at once too.
      await Promise.all(
        replicas.map(async (r) => {
          const started = Date.now();
          const timed = async (what: string, method: string, path: string) => {
            const reply = await as(r, 'admin', method, path, method === 'POST' ? {} : undefined);
            t.diagnostic(
              `replica ${r.name}: ${what} without quorum → ${reply.status} ${reply.text.trim()} after ${Date.now() - started} ms`,
            );
            return reply;
          };
          const [create, miss, status, ready] = await Promise.all([
            timed('create', 'POST', `/v1/key/create/during-outage-${r.name}`),
            timed('generate with an uncached key', 'POST', '/v1/key/generate/never-cached'),
            timed('status', 'GET', '/v1/status'),
            timed('ready', 'GET', '/v1/ready'),
          ]);
          assert.equal(create.status, 502, `${r.name}: ${create.text}`);
          assert.equal(create.json().message, 'failed to create key');
          assert.equal(miss.status, 502, `${r.name}: a cache miss: ${miss.text}`);
          assert.equal(status.status, 200, status.text);
          assert.equal(status.json().keystore_unreachable, true);
          assert.equal(status.json().keystore_unavailable, true);
          assert.equal(ready.status, 504, ready.text);

          for (let i = 0; i < 2; i++) {
            const gen = await as(r, 'admin', 'POST', '/v1/key/generate/cached', {});
            assert.equal(gen.status, 200, `${r.name}: generate of a cached key: ${gen.text}`);
            const dec = await as(r, 'admin', 'POST', '/v1/key/decrypt/cached', {
              ciphertext: ciphertexts.get(r.name)!.ciphertext,
            });
            assert.equal(dec.status, 200, `${r.name}: decrypt with a cached key: ${dec.text}`);
            assert.equal(dec.json().plaintext, ciphertexts.get(r.name)!.plaintext);
          }
        }),
      );
      t.diagnostic(`all checks without quorum took ${Date.now() - lost} ms`);
    } finally {
      await etcd.restart(1);
      await etcd.restart(2);
      lost = Date.now();
    }
    for (const r of replicas) {
      const ms = await until(
        r,
        'a create after the quorum came back',
        lost,
        async () => (await as(r, 'admin', 'POST', `/v1/key/create/after-outage-${r.name}`)).status === 200,
      );
      t.diagnostic(`replica ${r.name}: creates work again ${ms} ms after the members were restarted`);
      // A member that just restarted may not know the leader yet: status and ready follow within moments.
      await until(r, 'status reporting the store reachable', Date.now(), async () => {
        const status = (await as(r, 'admin', 'GET', '/v1/status')).json();
        return status.keystore_unreachable === false && status.keystore_unavailable === false;
      });
      await until(r, 'ready', Date.now(), async () => (await as(r, 'admin', 'GET', '/v1/ready')).status === 200);
    }
    // The replicas kept following: a delete after the outage still reaches the others.
    assert.equal((await as(a!, 'admin', 'DELETE', '/v1/key/delete/cached')).status, 200);
    const since = Date.now();
    await Promise.all(
      replicas.slice(1).map(async (r) => {
        const ms = await until(r, 'the delete after the outage', since, async () => {
          for (let i = 0; i < 3; i++)
            if ((await as(r, 'admin', 'POST', '/v1/key/generate/cached', {})).status !== 404) return false;
          return true;
        });
        t.diagnostic(`key delete via A after the outage reached ${r.name} after ${ms} ms`);
      }),
    );
  });
});
