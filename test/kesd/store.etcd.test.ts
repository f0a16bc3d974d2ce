// The etcd Store backend (kesd/src/store/etcd.ts) against a real etcd (test/etcd.ts): the Store contract, the
// shared root key, TLS, a lost quorum, the watch follower; plus the pure parts (store config, write → Change).
// The etcd parts skip only when etcd is not installed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import {
  ConfigError,
  parseInitConfig,
  readServerConfig,
  toServerConfig,
  writeServerConfig,
} from '../../kesd/src/config/config.js';
import {
  initEtcdRootKey,
  LIST_PAGE,
  openEtcdStore,
  prefixRangeEnd,
  readEtcdRootKey,
  ROOT_KEY_PATH,
  type EtcdStore,
} from '../../kesd/src/store/etcd.js';
import { EtcdFollower, type StoreEvent } from '../../kesd/src/store/etcd-watch.js';
import { StoreError } from '../../kesd/src/store/store.js';
import { sealRootKey, UnsealError } from '../../kesd/src/store/unseal.js';
import { applyStoreWrites, changeOfStoreWrite, resyncFromStore } from '../../kesd/src/state/store-changes.js';
import { System } from '../../kesd/src/state/system.js';
import { ErrKeyNotFound } from '../../kesd/src/kes/errors.js';
import { ETCD_SKIP, startEtcd, type EtcdCluster } from '../../harness/etcd.ts';
import { storeContract } from './store-contract.js';

const b = (s: string) => Buffer.from(s);
let prefixes = 0;
const freshPrefix = () => `t${process.pid}-${++prefixes}/`;

async function paths(s: EtcdStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const r of s.list(prefix)) out.push(r.path);
  return out;
}

/** Retries op while etcd elects a new leader (a write then fails: it may or may not have committed). */
async function retrying<T>(op: () => Promise<T>, ms = 10_000): Promise<T> {
  for (const start = Date.now(); ; await new Promise((r) => setTimeout(r, 100))) {
    try {
      return await op();
    } catch (err) {
      if (Date.now() - start > ms) throw err;
    }
  }
}

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  for (const start = Date.now(); !check(); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  }
}

// ---- pure parts ---------------------------------------------------------------------------------------------

describe('store config: the store.etcd section', () => {
  const ID = 'a'.repeat(64);
  const base = (store: string) => `
version: v1
system: { admin: { identity: ${ID} } }
tls: { key: k.key, cert: c.crt }
unseal: { environment: { name: KEY } }
enclave: { default: { admin: { identity: ${'b'.repeat(64)} } } }
${store}`;

  test('absent: no store (the embedded one), and .init stays as it was', () => {
    const init = parseInitConfig(base(''), {});
    assert.equal(init.store, undefined);
    assert.equal('store' in toServerConfig(init, '/w'), false);
  });

  test('endpoints, default prefix, TLS paths resolved, carried through .init', async () => {
    const init = parseInitConfig(
      base(`store:
  etcd:
    endpoints: [https://etcd-0.etcd-hl.ns.svc.cluster.local:2379, "https://10.0.0.2:2379/"]
    tls: { ca: tls/ca.crt, cert: /abs/tls.crt, key: tls/tls.key }`),
      {},
    );
    assert.deepEqual(init.store, {
      etcd: {
        endpoints: ['https://etcd-0.etcd-hl.ns.svc.cluster.local:2379', 'https://10.0.0.2:2379'],
        prefix: 'kesd/',
        tls: { ca: 'tls/ca.crt', cert: '/abs/tls.crt', key: 'tls/tls.key' },
      },
    });
    const server = toServerConfig(init, '/work');
    assert.deepEqual(server.store?.etcd.tls, {
      ca: '/work/tls/ca.crt',
      cert: '/abs/tls.crt',
      key: '/work/tls/tls.key',
    });
    const dir = mkdtempSync(join(tmpdir(), 'kesd-etcdcfg-'));
    try {
      await writeServerConfig(dir, server);
      assert.deepEqual((await readServerConfig(dir, {})).store, server.store);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a prefix and plain http endpoints', () => {
    const init = parseInitConfig(
      base(`store: { etcd: { endpoints: [http://127.0.0.1:2379], prefix: prod/kesd/ } }`),
      {},
    );
    assert.deepEqual(init.store, { etcd: { endpoints: ['http://127.0.0.1:2379'], prefix: 'prod/kesd/' } });
  });

  for (const [what, store, message] of [
    ['no endpoints', 'store: { etcd: { endpoints: [] } }', /needs at least one URL/],
    ['no etcd', 'store: { other: {} }', /unknown field 'store.other'/],
    ['empty etcd', 'store: { etcd: { prefix: x/ } }', /needs at least one URL/],
    [
      'no port',
      'store: { etcd: { endpoints: [https://etcd:/] } }',
      /not an http:\/\/ or https:\/\/ URL with a host and port/,
    ],
    ['port missing', 'store: { etcd: { endpoints: [https://etcd] } }', /with a host and port/],
    ['a path', 'store: { etcd: { endpoints: [https://etcd:2379/v3] } }', /with a host and port/],
    ['another scheme', 'store: { etcd: { endpoints: [unix://etcd:2379] } }', /with a host and port/],
    ['mixed schemes', 'store: { etcd: { endpoints: [https://a:2379, http://b:2379] } }', /mixes http and https/],
    ['tls with http', 'store: { etcd: { endpoints: [http://a:2379], tls: { ca: ca.crt } } }', /endpoints use http/],
    [
      'cert without key',
      'store: { etcd: { endpoints: [https://a:2379], tls: { cert: c.crt } } }',
      /cert and key must be given together/,
    ],
    [
      'unknown tls field',
      'store: { etcd: { endpoints: [https://a:2379], tls: { password: x } } }',
      /unknown field 'store.etcd.tls.password'/,
    ],
  ] as const) {
    test(`rejected: ${what}`, () => {
      assert.throws(
        () => parseInitConfig(base(store), {}),
        (err: Error) => err instanceof ConfigError && message.test(err.message),
      );
    });
  }
});

describe('a store write → the Change for this replica', () => {
  const uids: Record<string, string> = { u1: 'default', u2: 'tenant' };
  const of = (path: string, deleted = false) => changeOfStoreWrite(path, deleted, (uid) => uids[uid]);

  test('enclave records, both ways', () => {
    assert.deepEqual(of('enclave/default'), { kind: 'enclave', enclave: 'default' });
    assert.deepEqual(of('enclave/new-one', true), { kind: 'enclave', enclave: 'new-one' });
  });
  test('a key: only a delete drops it', () => {
    assert.deepEqual(of('e/u1/key/my-key', true), { kind: 'key', enclave: 'default', name: 'my-key' });
    assert.equal(of('e/u1/key/my-key', false), undefined);
  });
  test('a key version added or deleted (another replica rotated): the key is dropped and read again', () => {
    assert.deepEqual(of('e/u1/keyv/my-key/0123456789abcdef0123456789abcdef/0000000002'), {
      kind: 'key',
      enclave: 'default',
      name: 'my-key',
    });
    assert.deepEqual(of('e/u1/keyv/my-key/0123456789abcdef0123456789abcdef/0000000002', true), {
      kind: 'key',
      enclave: 'default',
      name: 'my-key',
    });
  });
  test('policies and identities reload on put and delete', () => {
    assert.deepEqual(of('e/u2/policy/app'), { kind: 'policy', enclave: 'tenant', name: 'app' });
    assert.deepEqual(of('e/u2/policy/app', true), { kind: 'policy', enclave: 'tenant', name: 'app' });
    const id = 'c'.repeat(64);
    assert.deepEqual(of(`e/u1/identity/${id}`), { kind: 'identity', enclave: 'default', identity: id });
    assert.deepEqual(of(`e/u1/identity/${id}`, true), { kind: 'identity', enclave: 'default', identity: id });
  });
  test('nothing for secrets, sweeps, the root key, unknown enclaves and odd paths', () => {
    for (const path of [
      'e/u1/secret/s',
      'sweep/u1',
      ROOT_KEY_PATH,
      'e/u9/key/k',
      'e/u9/policy/p',
      'enclave/',
      'e/u1/key/',
      'e/u1/other/x',
      'e/',
      'x',
    ]) {
      assert.equal(of(path, true), undefined, path);
      assert.equal(of(path, false), undefined, path);
    }
  });
});

test('prefixRangeEnd: the first key after every key with the prefix', () => {
  assert.deepEqual(prefixRangeEnd(b('kesd/')), b('kesd0'));
  assert.deepEqual(prefixRangeEnd(Buffer.from([0x61, 0xff, 0xff])), Buffer.from([0x62]));
  assert.deepEqual(prefixRangeEnd(Buffer.from([0xff])), Buffer.from([0]));
});

// ---- against etcd -------------------------------------------------------------------------------------------

describe('EtcdStore on a 3-member cluster', { skip: ETCD_SKIP }, () => {
  let etcd: EtcdCluster;
  const stores: EtcdStore[] = [];
  const open = (prefix = freshPrefix()) => {
    const s = openEtcdStore({ endpoints: [...etcd.endpoints], prefix });
    stores.push(s);
    return s;
  };
  before(async () => {
    etcd = await startEtcd(3);
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await etcd?.stop();
  });

  // The contract every backend keeps (store-contract.ts); handles of one group share a prefix, as replicas do.
  storeContract({
    open: async (shared) => open(shared === undefined ? freshPrefix() : `${shared}-${process.pid}/`),
    clients: 3,
  });

  test('list shows nothing outside the store prefix', async () => {
    const prefix = freshPrefix();
    const s = open(prefix);
    const neighbour = open(prefix.slice(0, -1) + '0/'); // a prefix sorting right after this one
    await neighbour.put('a/1', b('not mine'));
    await s.put('a/2', b('mine'));
    assert.deepEqual(await paths(s, ''), ['a/2']);
  });

  test(`list pages through ${LIST_PAGE}-key ranges from one snapshot and can stop early`, async () => {
    const s = open();
    const count = LIST_PAGE * 2 + 37;
    const names = Array.from({ length: count }, (_, i) => `e/${String(i).padStart(5, '0')}`);
    for (let i = 0; i < names.length; i += 100) await Promise.all(names.slice(i, i + 100).map((n) => s.put(n, b(n))));
    assert.deepEqual(await paths(s, 'e/'), names);

    const it = s.list('e/')[Symbol.asyncIterator]();
    assert.equal((await it.next()).value?.path, 'e/00000');
    await it.return?.();

    // Writes during a listing land after its snapshot: the listing shows exactly what was there when it started.
    let n = 0;
    for await (const r of s.list('e/')) {
      if (n % LIST_PAGE === 0) await s.put(`e/zz${n}`, b('late'));
      assert.equal(r.path, names[n]);
      n++;
    }
    assert.equal(n, count);
    assert.equal((await paths(s, 'e/')).length, count + 3);
  });

  test('one member down: every call still succeeds (a call that cannot reach it goes to another member)', async () => {
    const s = open();
    await etcd.kill(0);
    try {
      await etcd.waitHealthy(); // the other two have (re)elected a leader
      for (let i = 0; i < 30; i++) {
        await s.put(`one-down/${i}`, b(`${i}`));
        assert.deepEqual(Buffer.from((await s.get(`one-down/${i}`))!), b(`${i}`));
      }
      assert.equal((await paths(s, 'one-down/')).length, 30);
      await s.status();
    } finally {
      await etcd.restart(0);
      await etcd.waitHealthy();
    }
  });

  test('the root key: replicas initialising at once agree on one; a wrong unseal key is refused and writes nothing', async () => {
    const prefix = freshPrefix();
    const env = { ROOT_UNSEAL: Buffer.alloc(32, 9).toString('base64') };
    const sysadmin = 'a'.repeat(64);
    const candidates = Array.from({ length: 5 }, (_, i) => ({
      key: Buffer.alloc(32, i + 1),
      sysadmin,
      createdAt: new Date().toISOString(),
    }));
    const roots = await Promise.all(
      candidates.map((root) =>
        initEtcdRootKey(open(prefix), sealRootKey('ROOT_UNSEAL', Buffer.alloc(32, 9), root), Buffer.alloc(32, 9)),
      ),
    );
    const agreed = roots[0]!.key.toString('hex');
    assert.ok(candidates.some((c) => c.key.toString('hex') === agreed));
    for (const r of roots) assert.equal(r.key.toString('hex'), agreed);
    assert.equal((await readEtcdRootKey(open(prefix), env)).key.toString('hex'), agreed);

    const s = open(prefix);
    const before = await s.revision();
    const wrong = { ROOT_UNSEAL: Buffer.alloc(32, 8).toString('base64') };
    const sealedWrong = sealRootKey('ROOT_UNSEAL', Buffer.alloc(32, 8), candidates[0]!);
    await assert.rejects(
      initEtcdRootKey(s, sealedWrong, Buffer.alloc(32, 8)),
      (err: Error) => err instanceof UnsealError && /unseal key is wrong/.test(err.message),
    );
    await assert.rejects(readEtcdRootKey(s, wrong), /unseal key is wrong/);
    assert.equal(await s.revision(), before, 'etcd was written');
    await assert.rejects(readEtcdRootKey(open(), env), /does not exist \(was the store initialized/);
  });

  test('the follower sees every write in order, resumes after a member dies, and reloads after compaction', async () => {
    const prefix = freshPrefix();
    const writer = open(prefix);
    const watched = open(prefix);
    const seen: StoreEvent[] = [];
    let resyncs = 0;
    const logs: string[] = [];
    const hooks = {
      apply: async (events: readonly StoreEvent[]) => void seen.push(...events),
      resync: async () => void resyncs++,
      log: (m: string) => logs.push(m),
    };
    const follower = new EtcdFollower(watched, await watched.revision(), hooks);
    try {
      await writer.put('enclave/a', b('1'));
      await writer.put('e/u/policy/p', b('2'));
      await writer.delete('enclave/a');
      await until('3 events', () => seen.length >= 3);
      assert.deepEqual(seen, [
        { path: 'enclave/a', deleted: false },
        { path: 'e/u/policy/p', deleted: false },
        { path: 'enclave/a', deleted: true },
      ]);

      // Kill each member in turn (the follower's among them) and write meanwhile: nothing is lost or reordered.
      for (let i = 0; i < 3; i++) {
        await etcd.kill(i);
        await retrying(() => writer.put(`during/${i}`, b('x')));
        await etcd.restart(i);
        await etcd.waitHealthy();
      }
      await writer.put('after', b('x'));
      await until('the writes made while members were down', () => seen.some((e) => e.path === 'after'));
      assert.deepEqual(
        seen.slice(3).map((e) => e.path),
        ['during/0', 'during/1', 'during/2', 'after'],
      );
      assert.equal(resyncs, 0);
    } finally {
      await follower.stop();
    }

    // A follower that starts from a compacted revision reloads everything, then follows on.
    const raw = new Etcd3({ hosts: [...etcd.endpoints] });
    try {
      const from = await watched.revision();
      await writer.put('x', b('1'));
      await raw.kv.compact({ revision: (await watched.revision()).toString(), physical: true });
      const late = new EtcdFollower(watched, from - 1n, hooks);
      try {
        await until('a reload', () => resyncs === 1);
        await writer.put('after-compaction', b('x'));
        await until('the write after the reload', () => seen.some((e) => e.path === 'after-compaction'));
        assert.ok(
          logs.some((m) => /compacted/.test(m)),
          logs.join('\n'),
        );
      } finally {
        await late.stop();
      }
    } finally {
      raw.close();
    }
  });

  test("two replicas' state: one that missed writes catches up by resyncFromStore, a following one at once", async () => {
    const prefix = freshPrefix();
    const root = { key: Buffer.alloc(32, 5), sysadmin: 'a'.repeat(64) };
    const [admin, user] = ['b'.repeat(64), 'c'.repeat(64)];
    const a = await System.open(open(prefix), root);
    const first = await a.createEnclave('first', admin, root.sysadmin);
    await first.createKey('k', root.sysadmin);
    await first.writePolicy('app', { allow: ['/v1/key/*'], deny: [] }, root.sysadmin);
    await first.assignPolicy('app', user, root.sysadmin);
    await a.createEnclave('doomed', admin, root.sysadmin);

    const missed = await System.open(open(prefix), root); // follows nothing
    const followingStore = open(prefix);
    const following = await System.open(followingStore, root);
    const follower = new EtcdFollower(followingStore, await followingStore.revision(), {
      apply: (writes) => applyStoreWrites(following, writes),
      resync: () => resyncFromStore(following),
      log: () => {},
    });
    try {
      for (const s of [missed, following]) {
        await s.enclaves.get('first')!.key('k'); // cached
        assert.equal(s.enclaves.get('first')!.isAllowed(user, '/v1/key/generate/k'), true);
      }
      await first.deleteKey('k');
      await first.writePolicy('app', { allow: ['/v1/key/*'], deny: ['/v1/key/generate/*'] }, root.sysadmin);
      await a.deleteEnclave('doomed');
      await a.createEnclave('second', admin, root.sysadmin);

      const inLine = (s: System) =>
        s.enclaves.get('first')?.cachedKey('k') === undefined &&
        s.enclaves.get('first')?.isAllowed(user, '/v1/key/generate/k') === false &&
        !s.enclaves.has('doomed') &&
        s.enclaves.has('second');
      await until('the following replica to apply the writes', () => inLine(following));
      assert.equal(inLine(missed), false, 'the replica without a watch should still hold the old state');
      await resyncFromStore(missed);
      assert.equal(inLine(missed), true);
      await assert.rejects(missed.enclaves.get('first')!.key('k'), (err) => err === ErrKeyNotFound);
      assert.equal(missed.enclaves.get('first')!.isAllowed(user, '/v1/key/describe/k'), true);
    } finally {
      await follower.stop();
    }
  });

  test('a lost quorum: reads, writes and status fail with a StoreError, not a hang; all recover', {
    timeout: 60_000,
  }, async (t) => {
    const s = open();
    await s.put('q', b('before'));
    await etcd.kill(1);
    await etcd.kill(2);
    try {
      // All at once, each bounded by its own deadline (CALL_TIMEOUT_MS; status: STATUS_TIMEOUT_MS); a hang would
      // run into the test's timeout instead.
      const ops = {
        status: () => s.status(),
        get: () => s.get('q'),
        put: () => s.put('q', b('during')),
        putIfAbsent: () => s.putIfAbsent('q2', b('during')),
      };
      await Promise.all(
        Object.entries(ops).map(async ([what, op]) => {
          const start = Date.now();
          let message = '';
          await assert.rejects(
            op(),
            (err: Error) =>
              err instanceof StoreError &&
              /did not answer within|no leader|timed out|unavailable|No connection/i.test((message = err.message)),
            what,
          );
          const ms = Date.now() - start;
          t.diagnostic(`${what} without quorum failed after ${ms} ms: ${message}`);
        }),
      );
    } finally {
      await etcd.restart(1);
      await etcd.restart(2);
      await etcd.waitHealthy();
    }
    await s.status();
    await s.put('q', b('after'));
    assert.deepEqual(Buffer.from((await s.get('q'))!), b('after'));
  });
});

describe('EtcdStore over TLS with client certificates', { skip: ETCD_SKIP }, () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(1, { tls: true });
  });
  after(async () => {
    await etcd?.stop();
  });

  test('with the CA and a client certificate: the contract holds', async () => {
    const s = openEtcdStore({ endpoints: [...etcd.endpoints], prefix: freshPrefix(), tls: { ...etcd.tls! } });
    try {
      assert.equal(await s.putIfAbsent('k', b('v')), true);
      assert.equal(await s.putIfAbsent('k', b('w')), false);
      assert.deepEqual(await paths(s, ''), ['k']);
      await s.status();
    } finally {
      await s.close();
    }
  });

  test('without a client certificate, or trusting another CA: a StoreError, not a hang', async () => {
    for (const tls of [{ ca: etcd.tls!.ca }, { ca: etcd.tls!.cert, cert: etcd.tls!.cert, key: etcd.tls!.key }]) {
      const s = openEtcdStore({ endpoints: [...etcd.endpoints], prefix: freshPrefix(), tls });
      try {
        await assert.rejects(s.get('k'), StoreError);
      } finally {
        await s.close();
      }
    }
  });

  test('an unreadable TLS file is a clear error at open', () => {
    assert.throws(
      () => openEtcdStore({ endpoints: [...etcd.endpoints], prefix: 'x/', tls: { ca: '/nonexistent/ca.crt' } }),
      /cannot read the etcd TLS CA '\/nonexistent\/ca.crt'/,
    );
  });
});
