// Cached keys stay in memory for the life of the process, so what they hold must be theirs alone (bug 6 in
// docs/reliability.md): a 32-byte Buffer.from() slice of Node's shared 8 KiB allocation pool keeps the whole slab
// alive, and under mixed load every cached key pinned up to 16 KiB. The entry also keeps no copy of the key as a
// base64 string (strings cannot be wiped when the key is deleted or the system sealed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import { System } from '../../kesd/src/state/system.js';
import type { CachedKey } from '../../kesd/src/state/enclave.js';

const SYSADMIN = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);

function tempFile(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-keycache-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'store.mdb');
}

function assertOwnsItsBytes(key: CachedKey): void {
  for (const [what, bytes] of [
    ['key', key.secret.bytes],
    ['hmac key', key.hmacKey],
  ] as const) {
    assert.equal(bytes.length, 32, `${key.name}: ${what} length`);
    assert.equal(bytes.byteOffset, 0, `${key.name}: ${what} is a slice of a shared buffer`);
    assert.equal(
      bytes.buffer.byteLength,
      32,
      `${key.name}: ${what} keeps a ${bytes.buffer.byteLength}-byte buffer alive`,
    );
  }
  const strings = Object.values(key).filter((v): v is string => typeof v === 'string');
  for (const s of strings) {
    assert.notEqual(s, key.secret.bytes.toString('base64'), `${key.name}: the key is kept as a string`);
    assert.notEqual(s, key.hmacKey.toString('base64'), `${key.name}: the hmac key is kept as a string`);
  }
}

test('cached keys own their bytes, both when created and when loaded from the store', async (t) => {
  const path = tempFile(t);
  const root = { key: randomBytes(32), sysadmin: SYSADMIN };
  const store = await openLmdbStore(path);
  t.after(() => store.close());

  const system = await System.open(store, root);
  const enclave = await system.createEnclave('e', ADMIN, SYSADMIN);
  await enclave.createKey('created', ADMIN);
  const created = enclave.cachedKey('created');
  assert.ok(created, 'a created key is cached');
  assertOwnsItsBytes(created);
  assert.equal(created.createdBy, ADMIN);
  assert.ok(!Number.isNaN(Date.parse(created.createdAt)), `created_at ${created.createdAt}`);

  // A second System on the same store starts with an empty cache: the key is read and opened on first use.
  const again = await System.open(store, root);
  const reopened = again.enclaves.get('e')!;
  assert.equal(reopened.cachedKey('created'), undefined);
  const loaded = await reopened.key('created');
  assertOwnsItsBytes(loaded);
  assert.deepEqual(loaded.secret.bytes, created.secret.bytes);
  assert.deepEqual(loaded.hmacKey, created.hmacKey);
  assert.equal(loaded.createdAt, created.createdAt);
});
