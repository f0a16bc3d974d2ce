// Key list lines (state/keys.ts keeps one per key, so a list opens no record it has listed before): what a list shows
// follows creates, deletes and re-creates made by another process on the same store, a rotation never changes a
// line, and patterns (exact, prefix) pick the same keys as before. Two Systems on one LMDB store stand in for two
// worker processes; the bus between them is what the primary relays (server/cluster.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Change, ChangeBus } from '../../kesd/src/state/changes.js';
import type { Enclave } from '../../kesd/src/state/enclave.js';
import { System } from '../../kesd/src/state/system.js';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import { listPrefix, matchesListPattern } from '../../kesd/src/kes/names.js';
import { startTestServer } from './harness.js';

const SYSADMIN = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);

/** Two Systems on one store; each one's changes are applied by the other before publish resolves, as workers'. */
async function twoProcesses(t: { after(fn: () => unknown): void }): Promise<{ a: Enclave; b: Enclave }> {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-list-lines-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = await openLmdbStore(join(dir, 'db'));
  t.after(() => store.close());
  const root = { key: randomBytes(32), sysadmin: SYSADMIN };
  const systems: System[] = [];
  const busOf = (i: number): ChangeBus => ({ publish: async (change: Change) => systems[1 - i]?.apply(change) });
  systems.push(await System.open(store, root, { bus: busOf(0) }));
  await systems[0]!.createEnclave('e', ADMIN, SYSADMIN);
  systems.push(await System.open(store, root, { bus: busOf(1) }));
  return { a: systems[0]!.enclaves.get('e')!, b: systems[1]!.enclaves.get('e')! };
}

interface Line {
  name: string;
  id: string;
  algorithm: string;
  created_at: string;
  created_by: string;
}

/** What GET /v1/key/list/<pattern> answers from this enclave (the handler's prefix and match). */
async function list(e: Enclave, pattern = '*'): Promise<Line[]> {
  let text = '';
  for await (const chunk of e.listKeyLines(listPrefix(pattern), (name) => matchesListPattern(pattern, name)))
    text += chunk;
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Line);
}

/** Version 1's id, as describe reports it. */
async function idOf(e: Enclave, name: string): Promise<string> {
  const key = await e.key(name);
  return key.versions[key.versions.length - 1]!.id;
}

test('a list follows creates, deletes and re-creates made in another process', async (t) => {
  const { a, b } = await twoProcesses(t);
  await a.createKey('k1', ADMIN);
  await a.createKey('k2', ADMIN);
  const first = await list(a);
  assert.deepEqual(
    first.map((l) => l.name),
    ['k1', 'k2'],
  );
  assert.deepEqual(await list(b), first); // b opened the records; a answered from its kept lines

  await b.createKey('k3', 'c'.repeat(64)); // a create is not published: a sees it because names come from the store
  assert.deepEqual(
    (await list(a)).map((l) => [l.name, l.created_by]),
    [
      ['k1', ADMIN],
      ['k2', ADMIN],
      ['k3', 'c'.repeat(64)],
    ],
  );

  await b.deleteKey('k1');
  assert.deepEqual(
    (await list(a)).map((l) => l.name),
    ['k2', 'k3'],
  );
  await b.createKey('k1', 'd'.repeat(64)); // the same name, another key
  const again = await list(a);
  const k1 = again.find((l) => l.name === 'k1')!;
  assert.notEqual(k1.id, first[0]!.id);
  assert.equal(k1.id, await idOf(b, 'k1'));
  assert.equal(k1.created_by, 'd'.repeat(64));
  assert.deepEqual(await list(b), again);

  // Deleted and re-created while a holds a kept line and its cached key.
  await a.key('k2');
  const k2 = (await list(a)).find((l) => l.name === 'k2')!;
  await b.deleteKey('k2');
  await b.createKey('k2', ADMIN);
  const k2now = (await list(a)).find((l) => l.name === 'k2')!;
  assert.notEqual(k2now.id, k2.id);
  assert.equal(k2now.id, await idOf(a, 'k2'));
});

test("a rotation, here or in another process, does not change a key's list line", async (t) => {
  const { a, b } = await twoProcesses(t);
  await a.createKey('r', ADMIN);
  const before = await list(a);
  assert.equal(before[0]!.id, await idOf(a, 'r'));
  await a.keys.rotate('r', 'c'.repeat(64));
  assert.deepEqual(await list(a), before);
  await b.keys.rotate('r', 'c'.repeat(64));
  assert.deepEqual(await list(a), before);
  assert.deepEqual(await list(b), before);
  assert.equal((await a.key('r')).newest.version, 3);
});

test('patterns: all, exact, prefix, none', async (t) => {
  const { a, b } = await twoProcesses(t);
  for (const n of ['app-1', 'app-2', 'apple', 'b', 'app']) await a.createKey(n, ADMIN);
  for (const e of [a, b, a]) {
    // b from the records, a from kept lines
    assert.deepEqual(
      (await list(e, '*')).map((l) => l.name),
      ['app', 'app-1', 'app-2', 'apple', 'b'],
    );
    assert.deepEqual(
      (await list(e, 'app')).map((l) => l.name),
      ['app'],
    );
    assert.deepEqual(
      (await list(e, 'app-*')).map((l) => l.name),
      ['app-1', 'app-2'],
    );
    assert.deepEqual(
      (await list(e, 'app*')).map((l) => l.name),
      ['app', 'app-1', 'app-2', 'apple'],
    );
    assert.deepEqual(await list(e, 'zzz*'), []);
    assert.deepEqual(await list(e, 'ap'), []);
  }
});

test('over the API: lines match describe (version 1) before and after a rotation, for each pattern', async () => {
  const s = await startTestServer();
  try {
    const names = ['ll-a', 'll-b1', 'll-b2'];
    for (const n of names) assert.equal((await s.request(s.admin, 'POST', `/v1/key/create/${n}`)).status, 200);
    const lines = async (pattern: string) => {
      const r = await s.request(s.admin, 'GET', `/v1/key/list/${pattern}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'application/x-ndjson');
      return r.text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Line);
    };
    const before = await lines('ll-*');
    assert.deepEqual(
      before.map((l) => l.name),
      names,
    );
    for (const l of before) {
      const d = (await s.request(s.admin, 'GET', `/v1/key/describe/${l.name}`)).json();
      assert.deepEqual(l, {
        name: d.name,
        id: d.id,
        algorithm: d.algorithm,
        created_at: d.created_at,
        created_by: d.created_by,
      });
    }
    assert.equal((await s.request(s.admin, 'POST', '/v1/key/rotate/ll-b1')).status, 200);
    assert.deepEqual(await lines('ll-*'), before);
    assert.deepEqual(await lines('ll-b1'), [before[1]]);
    assert.deepEqual(await lines('ll-b*'), before.slice(1));
    assert.deepEqual(await lines('nothing-*'), []);
    assert.equal((await s.request(s.admin, 'DELETE', '/v1/key/delete/ll-b1')).status, 200);
    assert.deepEqual(
      (await lines('ll-*')).map((l) => l.name),
      ['ll-a', 'll-b2'],
    );
  } finally {
    await s.stop();
  }
});
