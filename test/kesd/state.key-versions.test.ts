// Key versions at the state layer, with two Systems on one store standing in for two processes or replicas: their
// concurrent rotations never share a version number (putIfAbsent), a replica whose cache missed another's rotation
// still decrypts the new version's ciphertexts, key records from before versions keep working, and versions a crash
// left behind after a delete never attach to a key re-created under the same name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateDataKey } from '../../kesd/src/crypto/key.js';
import { paths, type KeyRecord } from '../../kesd/src/state/records.js';
import { System } from '../../kesd/src/state/system.js';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import type { Store } from '../../kesd/src/store/store.js';

const SYSADMIN = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);

async function twoSystems(t: { after(fn: () => unknown): void }): Promise<{ a: System; b: System; store: Store }> {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-versions-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = await openLmdbStore(join(dir, 'db'));
  t.after(() => store.close());
  const root = { key: randomBytes(32), sysadmin: SYSADMIN };
  const a = await System.open(store, root);
  await a.createEnclave('e', ADMIN, SYSADMIN);
  const b = await System.open(store, root);
  return { a, b, store };
}

test('concurrent rotations in two processes: every version number once, all of them visible to both', async (t) => {
  const { a, b } = await twoSystems(t);
  const ea = a.enclaves.get('e')!;
  const eb = b.enclaves.get('e')!;
  await ea.createKey('k', ADMIN);
  const rotations = await Promise.all(
    Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? ea : eb).keys.rotate('k', ADMIN)),
  );
  assert.deepEqual(
    rotations.map((r) => r.version).sort((x, y) => x - y),
    [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
  );
  for (const e of [ea, eb]) {
    e.forgetKeys();
    const key = await e.key('k');
    assert.deepEqual(
      key.versions.map((v) => v.version),
      [13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1],
    );
    assert.equal(key.secret, key.newest.secret);
  }
});

test('a process whose cached key missed a rotation elsewhere still decrypts the new version (and then caches it)', async (t) => {
  const { a, b } = await twoSystems(t);
  const ea = a.enclaves.get('e')!;
  const eb = b.enclaves.get('e')!;
  await ea.createKey('k', ADMIN);
  const stale = await eb.key('k'); // b caches version 1
  await ea.keys.rotate('k', ADMIN); // no change reaches b (no bus between them, as with etcd before its watch delivers)
  const fresh = await ea.key('k');
  assert.equal(fresh.newest.version, 2);
  const dek = generateDataKey(fresh.secret, Buffer.from('ctx'));
  assert.equal(eb.cachedKey('k'), stale);
  const opened = eb.decrypt(stale, dek.ciphertext, Buffer.from('ctx'));
  assert.ok(opened instanceof Promise, 'no cached version opens it: the store is asked');
  assert.deepEqual(await opened, dek.plaintext);
  assert.equal(eb.cachedKey('k')?.newest.version, 2, 'the new version is cached now');
  // A ciphertext no version opens stays the KES decrypt error, after one look at the store.
  await assert.rejects(async () => eb.decrypt(eb.cachedKey('k')!, randomBytes(80), undefined), {
    status: 400,
    message: 'decryption failed: ciphertext is not authentic',
  });
});

test('a key record from before versions (no uid) rotates and loads; its versions stay its own', async (t) => {
  const { a, store } = await twoSystems(t);
  const e = a.enclaves.get('e')!;
  const legacy: KeyRecord = {
    algorithm: 'AES256',
    key: randomBytes(32).toString('base64'),
    hmac: randomBytes(32).toString('base64'),
    created_at: '2024-01-02T03:04:05Z',
    created_by: ADMIN,
  };
  await a.records.put(paths.key(e.info.uid, 'old'), legacy);
  const v1 = await e.key('old');
  assert.deepEqual(
    v1.versions.map((v) => v.version),
    [1],
  );
  const dek = generateDataKey(v1.secret);
  assert.equal((await e.keys.rotate('old', ADMIN)).version, 2);
  const key = await e.key('old');
  assert.deepEqual(
    key.versions.map((v) => v.version),
    [2, 1],
  );
  assert.equal(key.createdAt, '2024-01-02T03:04:05Z');
  assert.deepEqual(await e.decrypt(key, dek.ciphertext, undefined), dek.plaintext);
  // The record itself was not rewritten: an older kesd still reads it as it wrote it.
  assert.equal((await a.records.get<KeyRecord>(paths.key(e.info.uid, 'old')))?.uid, undefined);
  void store;
});

test('versions a crash left after deleting the key record never attach to a key re-created under its name', async (t) => {
  const { a } = await twoSystems(t);
  const e = a.enclaves.get('e')!;
  await e.createKey('k', ADMIN);
  await e.keys.rotate('k', ADMIN);
  await e.keys.rotate('k', ADMIN);
  // The crash: the key record is deleted, its version records are not.
  assert.equal(await a.records.delete(paths.key(e.info.uid, 'k')), true);
  e.forgetKeys();
  let left = 0;
  for await (const _ of a.records.listPaths(paths.keyVersionScope(e.info.uid))) left++;
  assert.equal(left, 2, 'the versions are still there');
  await e.createKey('k', ADMIN);
  e.forgetKeys();
  assert.deepEqual(
    (await e.key('k')).versions.map((v) => v.version),
    [1],
  );
  assert.equal((await e.keys.rotate('k', ADMIN)).version, 2);
});

test('a delete removes the key record and its versions', async (t) => {
  const { a } = await twoSystems(t);
  const e = a.enclaves.get('e')!;
  await e.createKey('k', ADMIN);
  await e.keys.rotate('k', ADMIN);
  await e.deleteKey('k');
  const left: string[] = [];
  for await (const p of a.records.listPaths(`e/${e.info.uid}/`)) left.push(p);
  assert.deepEqual(left, []);
});

test('a key record that is not authentic (corrupted, or sealed under another root key) can still be deleted', async (t) => {
  const { a, store } = await twoSystems(t);
  const e = a.enclaves.get('e')!;
  await e.createKey('bad', ADMIN);
  await e.keys.rotate('bad', ADMIN);
  await e.createKey('good', ADMIN);
  const path = paths.key(e.info.uid, 'bad');
  const sealed = Buffer.from((await store.get(path))!);
  sealed[0]! ^= 1; // one flipped bit: the record no longer authenticates
  await store.put(path, sealed);
  e.forgetKeys();
  await assert.rejects(e.key('bad'), (err: Error & { status?: number }) => {
    assert.equal(err.status, 500);
    assert.match(err.message, /^key 'bad' is corrupt in the key store .*delete it, or restore it from a backup$/);
    return true;
  });
  // A list gives the lines before it, then fails naming the key (the API ends the NDJSON with that error line).
  const lines: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const chunk of e.keys.listLines()) lines.push(chunk);
    })(),
    /^KesError: key 'bad' is corrupt in the key store/,
  );
  assert.deepEqual(lines, []);
  await e.deleteKey('bad');
  assert.equal(await store.get(path), undefined, 'the record is gone');
  let listed = '';
  for await (const chunk of e.keys.listLines()) listed += chunk;
  assert.match(listed, /^\{"name":"good",/);
  await assert.rejects(e.key('bad'), /key does not exist/);
  await assert.rejects(e.deleteKey('bad'), /key does not exist/);
  // The name is free again, and the other key is untouched.
  await e.createKey('bad', ADMIN);
  assert.equal((await e.key('bad')).versions.length, 1, 'the new key does not pick up the old versions');
  const good = await e.key('good');
  const dek = generateDataKey(good.secret);
  assert.ok(dek.ciphertext.length > 0);
});
