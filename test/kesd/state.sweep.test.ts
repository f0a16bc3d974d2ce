// Deleting an enclave sweeps its records in batches (System.sweep): memory stays at one batch, deletes start
// before the scope has been read to the end, other enclaves are untouched, and an interrupted sweep resumes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import type { Store, StoreRecord } from '../../kesd/src/store/store.js';
import { paths } from '../../kesd/src/state/records.js';
import { SWEEP_BATCH, System } from '../../kesd/src/state/system.js';
import type { Enclave } from '../../kesd/src/state/enclave.js';

const SYSADMIN = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);
const root = { key: randomBytes(32), sysadmin: SYSADMIN };

function tempFile(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-sweep-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'store.mdb');
}

async function fill(enclave: Enclave, keys: number): Promise<void> {
  for (let i = 0; i < keys; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, keys - i) }, (_, j) =>
        enclave.createKey(`k-${String(i + j).padStart(5, '0')}`, ADMIN),
      ),
    );
  }
  await enclave.writePolicy('p', { allow: ['/v1/key/*'], deny: [] }, ADMIN);
  await enclave.assignPolicy('p', 'c'.repeat(64), ADMIN);
  await enclave.createSecret('s', Buffer.from('x'), ADMIN);
}

async function count(store: Store, prefix: string): Promise<number> {
  let n = 0;
  for await (const _ of store.list(prefix)) n++;
  return n;
}

/** Records what the store sees: records each list call yields, and how many were read before the first delete. */
function watch(store: Store) {
  const seen = { lists: [] as number[], reads: 0, deletes: 0, readsBeforeFirstDelete: -1 };
  const list = store.list.bind(store);
  const del = store.delete.bind(store);
  store.list = async function* (prefix: string): AsyncGenerator<StoreRecord> {
    const i = seen.lists.push(0) - 1;
    for await (const r of list(prefix)) {
      seen.lists[i]!++;
      seen.reads++;
      yield r;
    }
  };
  store.delete = (path: string) => {
    if (seen.deletes++ === 0) seen.readsBeforeFirstDelete = seen.reads;
    return del(path);
  };
  return seen;
}

test('deleting an enclave sweeps its records in batches and leaves other enclaves alone', async (t) => {
  const store = await openLmdbStore(tempFile(t));
  t.after(() => store.close());
  const system = await System.open(store, root);
  const doomed = await system.createEnclave('doomed', ADMIN, SYSADMIN);
  const kept = await system.createEnclave('kept', ADMIN, SYSADMIN);
  const keys = 2 * SWEEP_BATCH + 500;
  await fill(doomed, keys);
  await fill(kept, 10);
  const scope = paths.scope(doomed.info.uid);
  const records = await count(store, scope);
  assert.equal(records, keys + 3); // + policy, identity, secret

  const seen = watch(store);
  await system.deleteEnclave('doomed');

  assert.equal(await count(store, scope), 0);
  assert.equal(await store.get(paths.sweep(doomed.info.uid)), undefined);
  assert.equal(await count(store, paths.scope(kept.info.uid)), 13);
  assert.equal(seen.deletes, records + 2); // every record, the enclave record and the sweep marker
  assert.ok(Math.max(...seen.lists) <= SWEEP_BATCH, `a list call read ${Math.max(...seen.lists)} records`);
  assert.ok(seen.readsBeforeFirstDelete < records, `all ${records} records were read before the first delete`);
});

test('a sweep that a restart interrupted resumes when the store is opened again', async (t) => {
  const file = tempFile(t);
  let store = await openLmdbStore(file);
  let system = await System.open(store, root);
  const enclave = await system.createEnclave('gone', ADMIN, SYSADMIN);
  await fill(enclave, SWEEP_BATCH + 200);
  // What deleteEnclave does before it sweeps: the marker, then the enclave record. Then the process "dies".
  await system.records.put(paths.sweep(enclave.info.uid), { enclave: 'gone' });
  await system.records.delete(paths.enclave('gone'));
  await store.close();

  store = await openLmdbStore(file);
  t.after(() => store.close());
  system = await System.open(store, root);
  assert.equal(system.enclaves.has('gone'), false);
  const scope = paths.scope(enclave.info.uid);
  const deadline = Date.now() + 60_000; // a bound for a hung sweep, not a timing check
  while ((await count(store, scope)) > 0 || (await store.get(paths.sweep(enclave.info.uid))) !== undefined) {
    assert.ok(Date.now() < deadline, `the resumed sweep left ${await count(store, scope)} records`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(await count(store, ''), 0); // nothing else was in the store
});
