// The upstream queue (state/sync-queue.ts) and the sync loop's decisions (upstream/sync.ts), on a real LMDB store.
// The upstream here is MemoryKeystore, an in-memory stand-in for the UpstreamKeystore interface that exercises kesd's
// own logic (coalescing, conflicts, idempotent replay, the lease); the real Vault behind the same interface is
// proven in test/interop/vault-*.test.ts.
import { describe, test } from 'node:test';
import type { KesError } from '../../kesd/src/kes/errors.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import type { Store } from '../../kesd/src/store/store.js';
import { System } from '../../kesd/src/state/system.js';
import { fingerprint, syncPaths, type SyncEntry } from '../../kesd/src/state/sync-queue.js';
import { paths } from '../../kesd/src/state/records.js';
import { encodeKesStoredKey, parseKesStoredKey } from '../../kesd/src/kes/stored-key.js';
import { UpstreamSync, type UpstreamKeystore } from '../../kesd/src/upstream/sync.js';
import { Lease, LEASE_PATH, TAKEOVER_MS } from '../../kesd/src/upstream/lease.js';
import { VaultError } from '../../kesd/src/upstream/vault-http.js';
import { adoptExistingKeys } from '../../kesd/src/boot/upstream-seed.js';
import type { UpstreamConfig } from '../../kesd/src/config/upstream.js';
import { openEtcdStore } from '../../kesd/src/store/etcd.js';
import { ETCD_SKIP, startEtcd } from '../../harness/etcd.ts';

const SYSADMIN = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);

/** Names → stored values, with KES's create semantics; `down` makes every call fail as an unreachable Vault does. */
class MemoryKeystore implements UpstreamKeystore {
  readonly values = new Map<string, string>();
  down = false;
  calls = 0;
  location(name: string) {
    return `kv/${name}`;
  }
  private check() {
    this.calls++;
    if (this.down) throw new VaultError('vault: GET /v1/kv: connect ECONNREFUSED');
  }
  async get(name: string) {
    this.check();
    return this.values.get(name);
  }
  async create(name: string, value: string) {
    this.check();
    if (this.values.has(name)) return 'exists' as const;
    this.values.set(name, value);
    return 'created' as const;
  }
  async replace(name: string, value: string) {
    this.check();
    this.values.set(name, value);
  }
  async delete(name: string) {
    this.check();
    this.values.delete(name);
  }
  bytes(name: string): string | undefined {
    const v = this.values.get(name);
    return v === undefined ? undefined : parseKesStoredKey(Buffer.from(v)).bytes.toString('base64');
  }
}

interface Fixture {
  store: Store;
  system: System;
  root: { key: Buffer; sysadmin: string };
}

async function fixture(t: { after(fn: () => unknown): void }): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-upstream-'));
  const store = await openLmdbStore(join(dir, 'db'));
  const root = { key: randomBytes(32), sysadmin: SYSADMIN };
  const setup = await System.open(store, root, { upstreamEnclave: 'default' });
  await setup.createEnclave('default', ADMIN, SYSADMIN);
  await setup.createEnclave('other', ADMIN, SYSADMIN);
  const system = await System.open(store, root, { upstreamEnclave: 'default' });
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, system, root };
}

async function entry(system: System, name: string): Promise<SyncEntry | undefined> {
  return system.records.get<SyncEntry>(syncPaths.entry(system.enclaves.get('default')!.info.uid, name));
}

async function localKey(system: System, name: string): Promise<string | undefined> {
  return (await system.records.get<{ key: string }>(paths.key(system.enclaves.get('default')!.info.uid, name)))?.key;
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function all<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

const backlog = async (system: System) => (await system.upstreamQueue()!.stats()).backlog;

test('queue: a key change and its entry are one commit; later changes coalesce into the entry, oldest time kept', async (t) => {
  const { system, store } = await fixture(t);
  const enclave = system.enclaves.get('default')!;
  await enclave.createKey('k1', ADMIN);
  const first = (await entry(system, 'k1'))!;
  assert.equal(first.want?.key, await localKey(system, 'k1'));
  assert.deepEqual(first.known, []);
  assert.equal((await system.upstreamQueue()!.stats()).oldest, first.queued_at);

  await enclave.deleteKey('k1');
  const deleted = (await entry(system, 'k1'))!;
  assert.equal(deleted.want, null);
  assert.deepEqual(deleted.known, [fingerprint(first.want!)]);
  assert.equal(deleted.queued_at, first.queued_at);

  await enclave.createKey('k1', ADMIN);
  const again = (await entry(system, 'k1'))!;
  assert.equal(again.want?.key, await localKey(system, 'k1'));
  assert.notEqual(again.want?.key, first.want?.key);
  assert.deepEqual(again.known, [fingerprint(first.want!)]);
  assert.deepEqual(await system.upstreamQueue()!.stats(), { backlog: 1, conflicts: 0, oldest: first.queued_at });
  assert.equal(await store.count(`e/${enclave.info.uid}/sync/t/`), 1, 'one place in line per name');

  // A failed create or delete queues nothing more.
  await assert.rejects(enclave.createKey('k1', ADMIN), /key already exists/);
  await assert.rejects(enclave.deleteKey('never'), /key does not exist/);
  assert.equal(await entry(system, 'never'), undefined);
  // An enclave nobody mirrors has no queue.
  await system.enclaves.get('other')!.createKey('k1', ADMIN);
  assert.equal(await store.count(`e/${system.enclaves.get('other')!.info.uid}/sync/`), 0);
});

test('queue: a mirrored enclave refuses key versions (Vault holds one per name); an unmirrored one rotates', async (t) => {
  const { system } = await fixture(t);
  const mirrored = system.enclaves.get('default')!;
  await mirrored.createKey('k', ADMIN);
  await assert.rejects(
    mirrored.keys.rotate('k', ADMIN),
    (err: KesError) => err.status === 400 && /mirrored to an upstream Vault/.test(err.message),
  );
  await assert.rejects(mirrored.keys.deleteVersion('k', 1), /mirrored to an upstream Vault/);
  assert.equal((await mirrored.key('k')).versions.length, 1);
  const other = system.enclaves.get('other')!;
  await other.createKey('k', ADMIN);
  assert.equal((await other.keys.rotate('k', ADMIN)).version, 2);
});

test('an enclave whose keys were rotated before it was mirrored is refused at start (Vault would hold version 1)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-upstream-'));
  const store = await openLmdbStore(join(dir, 'db'));
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const root = { key: randomBytes(32), sysadmin: SYSADMIN };
  const plain = await System.open(store, root);
  await plain.createEnclave('default', ADMIN, SYSADMIN);
  const enclave = plain.enclaves.get('default')!;
  await enclave.createKey('once', ADMIN);
  await enclave.createKey('rotated', ADMIN);
  const upstream = { enclave: 'default', vault: { endpoint: 'http://127.0.0.1:1' } } as unknown as UpstreamConfig;
  // A key deleted after a rotation leaves no live versions: not a reason to refuse.
  await enclave.createKey('gone', ADMIN);
  await enclave.keys.rotate('gone', ADMIN);
  await enclave.deleteKey('gone');
  assert.ok((await adoptExistingKeys(await System.open(store, root, { upstreamEnclave: 'default' }), upstream)) >= 2);
  await enclave.keys.rotate('rotated', ADMIN);
  const mirrored = await System.open(store, root, { upstreamEnclave: 'default' });
  await assert.rejects(
    adoptExistingKeys(mirrored, upstream),
    /enclave 'default' has rotated keys \('rotated' has 2 versions\)/,
  );
});

test('queue: an entry is acknowledged only as it was read; a change in between keeps it queued', async (t) => {
  const { system } = await fixture(t);
  const enclave = system.enclaves.get('default')!;
  const queue = system.upstreamQueue()!;
  await enclave.createKey('k', ADMIN);
  const [read] = await all(queue.pending());
  await enclave.deleteKey('k');
  assert.equal(await queue.ack(read!), false);
  assert.equal(await backlog(system), 1);
  const [now] = await all(queue.pending());
  assert.equal(await queue.ack(now!), true);
  assert.deepEqual(await queue.stats(), { backlog: 0, conflicts: 0 });
});

test('queue: concurrent creates of one name from two processes: one key wins and the entry holds exactly it', async (t) => {
  const { system, store, root } = await fixture(t);
  const other = await System.open(store, root, { upstreamEnclave: 'default' });
  for (let round = 0; round < 5; round++) {
    const name = `race-${round}`;
    const results = await Promise.allSettled(
      [system, other, system, other].map((s) => s.enclaves.get('default')!.createKey(name, ADMIN)),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    assert.equal((await entry(system, name))!.want?.key, await localKey(system, name));
  }
});

test('sync: drains to the upstream in the KES encoding; while it is down changes queue and nothing fails; back up, it converges', async (t) => {
  const { system } = await fixture(t);
  const upstream = new MemoryKeystore();
  const sync = new UpstreamSync(system, upstream, { log: () => {}, pollMs: 50 });
  sync.start();
  t.after(() => sync.stop());
  const enclave = system.enclaves.get('default')!;
  await enclave.createKey('a', ADMIN);
  await until('a synced', async () => (await backlog(system)) === 0);
  const stored = parseKesStoredKey(Buffer.from(upstream.values.get('a')!));
  const cached = await enclave.key('a');
  assert.ok(stored.bytes.equals(cached.secret.bytes) && stored.hmac!.equals(cached.hmacKey));

  upstream.down = true;
  await enclave.deleteKey('a');
  await enclave.createKey('a', ADMIN); // new bytes under the same name
  for (const n of ['b', 'c', 'd']) await enclave.createKey(n, ADMIN);
  await enclave.deleteKey('d');
  await until('an attempt failed', () => sync.failures > 0);
  assert.equal(await backlog(system), 4);
  assert.equal((await sync.status()).reachable !== undefined, true);

  upstream.down = false;
  await until('drained', async () => (await backlog(system)) === 0);
  assert.deepEqual([...upstream.values.keys()].sort(), ['a', 'b', 'c']);
  for (const n of ['a', 'b', 'c']) assert.equal(upstream.bytes(n), await localKey(system, n), n);
});

test('sync: a name Vault holds a foreign key under is a conflict: never overwritten or deleted, stays queued, synced once cleared', async (t) => {
  const { system } = await fixture(t);
  const upstream = new MemoryKeystore();
  const foreign = encodeKesStoredKey({
    algorithm: 'AES256',
    bytes: Buffer.alloc(32, 9),
    hmac: Buffer.alloc(32, 8),
    createdAt: '2024-01-01T00:00:00Z',
    createdBy: 'someone',
  });
  upstream.values.set('taken', foreign);
  upstream.values.set('gone', foreign);
  const logs: string[] = [];
  const sync = new UpstreamSync(system, upstream, { log: (m) => logs.push(m), pollMs: 50, conflictRetryMs: 100 });
  const enclave = system.enclaves.get('default')!;
  await enclave.createKey('taken', ADMIN);
  // 'gone' exists in kesd with other bytes than Vault's; kesd deletes it: Vault's key is not kesd's to delete.
  await enclave.createKey('gone', ADMIN, { algorithm: 'AES256', bytes: randomBytes(32) });
  const queue = system.upstreamQueue()!;
  for await (const c of queue.pending()) if (c.name === 'gone') await queue.ack(c);
  await enclave.deleteKey('gone');
  sync.start();
  t.after(() => sync.stop());
  await until('two conflicts', async () => (await sync.status()).conflicts === 2, 10_000);
  assert.equal(upstream.values.get('taken'), foreign);
  assert.equal(upstream.values.get('gone'), foreign);
  assert.equal(await backlog(system), 2);
  assert.ok(
    logs.some((l) => /key 'taken' stays queued: Vault holds a different key/.test(l)),
    logs.join('\n'),
  );
  const callsBefore = upstream.calls;
  upstream.values.delete('taken'); // an operator removes the foreign key
  await until('taken synced', async () => upstream.bytes('taken') === (await localKey(system, 'taken')));
  assert.ok(upstream.calls > callsBefore);
  assert.equal(upstream.values.get('gone'), foreign);
  await until('one conflict left', async () => (await sync.status()).conflicts === 1);
});

test("sync: deleting a key whose local record no longer authenticates leaves Vault's copy alone (a conflict), to restore from", async (t) => {
  const { system, store } = await fixture(t);
  const upstream = new MemoryKeystore();
  const logs: string[] = [];
  const sync = new UpstreamSync(system, upstream, { log: (m) => logs.push(m), pollMs: 50, conflictRetryMs: 100 });
  sync.start();
  t.after(() => sync.stop());
  const enclave = system.enclaves.get('default')!;
  await enclave.createKey('k', ADMIN);
  await until('k synced', async () => (await backlog(system)) === 0);
  const inVault = upstream.values.get('k');
  const path = paths.key(enclave.info.uid, 'k');
  const sealed = Buffer.from((await store.get(path))!);
  sealed[3]! ^= 0x40;
  await store.put(path, sealed);
  enclave.forgetKeys();
  await enclave.deleteKey('k');
  assert.equal(await store.get(path), undefined);
  await until('a conflict', async () => (await sync.status()).conflicts === 1, 10_000);
  assert.equal(upstream.values.get('k'), inVault, 'Vault keeps the key: kesd cannot tell it as its own');
  assert.ok(
    logs.some((l) => /key 'k' stays queued: Vault holds a different key .* than the one kesd deleted/.test(l)),
    logs.join('\n'),
  );
});

test('sync: replaying a change whose acknowledgement was lost is harmless (the crash point between Vault and the queue)', async (t) => {
  const { system } = await fixture(t);
  const upstream = new MemoryKeystore();
  let crashes = 0;
  const sync = new UpstreamSync(system, upstream, {
    log: () => {},
    pollMs: 50,
    failpoint: (point) => {
      if (point === 'before-ack' && crashes++ < 3) throw new Error('crash before the acknowledgement');
    },
  });
  const enclave = system.enclaves.get('default')!;
  await enclave.createKey('k', ADMIN);
  sync.start();
  t.after(() => sync.stop());
  await until('synced after the replays', async () => (await backlog(system)) === 0);
  assert.ok(crashes >= 4);
  assert.equal(upstream.bytes('k'), await localKey(system, 'k'));
  assert.equal(upstream.values.size, 1);
});

test('sync: an imported KES JSON-era key (no HMAC key in Vault) is rewritten with kesd HMAC key, same key bytes', async (t) => {
  const { system } = await fixture(t);
  const upstream = new MemoryKeystore();
  const bytes = randomBytes(32);
  upstream.values.set(
    'old',
    JSON.stringify({
      bytes: bytes.toString('base64'),
      algorithm: 'AES256-GCM_SHA256',
      created_at: '2022-01-01T00:00:00Z',
    }),
  );
  await system.enclaves.get('default')!.createKey('old', ADMIN, { algorithm: 'AES256', bytes });
  const sync = new UpstreamSync(system, upstream, { log: () => {}, pollMs: 50 });
  sync.start();
  t.after(() => sync.stop());
  await until('synced', async () => (await backlog(system)) === 0);
  const now = parseKesStoredKey(Buffer.from(upstream.values.get('old')!));
  assert.ok(now.bytes.equals(bytes));
  assert.ok(now.hmac!.equals((await system.enclaves.get('default')!.key('old')).hmacKey));
});

test('lease: one of two processes drains; the other takes over after a clean stop', async (t) => {
  const { system, store, root } = await fixture(t);
  const other = await System.open(store, root, { upstreamEnclave: 'default' });
  const upstream = new MemoryKeystore();
  const first = new UpstreamSync(system, upstream, { log: () => {}, pollMs: 50 });
  const second = new UpstreamSync(other, upstream, { log: () => {}, pollMs: 50 });
  first.start();
  await until('first holds the lease', () => first.lease.held());
  second.start();
  t.after(() => second.stop());
  for (let i = 0; i < 20; i++) await other.enclaves.get('default')!.createKey(`k${i}`, ADMIN);
  await until('drained', async () => (await backlog(system)) === 0);
  assert.equal(second.synced, 0, 'the process without the lease synced nothing');
  assert.equal(first.synced, 20);
  await first.stop();
  await other.enclaves.get('default')!.createKey('after', ADMIN);
  await until('the second took over', async () => upstream.values.has('after') && (await backlog(system)) === 0);
  assert.equal(second.synced, 1);
});

test('lease: a holder that stops renewing is taken over only after the record stayed unchanged for TAKEOVER_MS', async (t) => {
  const { system } = await fixture(t);
  let clock = 0;
  const now = () => clock;
  const a = new Lease(system.records, now);
  const b = new Lease(system.records, now);
  assert.equal(await a.beatOnce({ reachable: true }), true);
  assert.equal(await b.beatOnce({ reachable: true }), false);
  clock += TAKEOVER_MS - 1;
  assert.equal(await b.beatOnce({ reachable: true }), false, 'too early');
  assert.equal(a.held(), false, 'the holder that did not renew stopped calling long before');
  assert.equal(await a.beatOnce({ reachable: true }), true, 'a renewal resets the watch');
  clock += TAKEOVER_MS - 1;
  assert.equal(await b.beatOnce({ reachable: true }), false, 'the renewal was seen: the watch starts again');
  clock += TAKEOVER_MS;
  assert.equal(await b.beatOnce({ reachable: true }), true);
  assert.equal(b.held(), true);
  assert.equal(await a.beatOnce({ reachable: true }), false, 'the old holder lost it');
  assert.equal((await system.records.get<{ holder: string }>(LEASE_PATH))?.holder, b.id);
});

describe('on etcd: three replicas, three sync loops, one lease', { skip: ETCD_SKIP }, () => {
  test('exactly one replica drains; when it stops, another takes over; the queue converges', async (t) => {
    const etcd = await startEtcd(3);
    t.after(() => etcd.stop());
    const prefix = `upstream-${process.pid}/`;
    const stores = [0, 1, 2].map(() => openEtcdStore({ endpoints: [...etcd.endpoints], prefix }));
    t.after(() => Promise.all(stores.map((s) => s.close())));
    const root = { key: randomBytes(32), sysadmin: SYSADMIN };
    await (await System.open(stores[0]!, root, { upstreamEnclave: 'default' })).createEnclave(
      'default',
      ADMIN,
      SYSADMIN,
    );
    const replicas = await Promise.all(stores.map((s) => System.open(s, root, { upstreamEnclave: 'default' })));
    const upstream = new MemoryKeystore();
    const loops = replicas.map((r) => new UpstreamSync(r, upstream, { log: () => {}, pollMs: 50 }));
    for (const l of loops) l.start();
    t.after(() => Promise.all(loops.map((l) => l.stop())));
    await until('one holds the lease', () => loops.some((l) => l.lease.held()));
    // Every replica makes keys; only one loop syncs them all.
    for (let i = 0; i < 30; i++) await replicas[i % 3]!.enclaves.get('default')!.createKey(`k${i}`, ADMIN);
    await until('drained', async () => (await backlog(replicas[0]!)) === 0);
    assert.deepEqual(
      loops.map((l) => l.synced).filter((n) => n > 0),
      [30],
      `synced per replica: ${loops.map((l) => l.synced)}`,
    );
    assert.equal(loops.filter((l) => l.lease.held()).length, 1);
    const holder = loops.findIndex((l) => l.lease.held());
    await loops[holder]!.stop();
    await replicas[(holder + 1) % 3]!.enclaves.get('default')!.createKey('after', ADMIN);
    await until('another took over', async () => upstream.values.has('after') && (await backlog(replicas[0]!)) === 0);
    assert.equal(loops.filter((l, i) => i !== holder && l.synced > 0).length, 1);
    assert.equal(upstream.values.size, 31);
  });
});
