// The Store contract (kesd/src/store/store.ts), one suite for every backend: store.lmdb.test.ts and store.etcd.test.ts
// run it against LMDB and against a real etcd. A backend's own behaviour (crash safety, quorum loss, TLS, paging)
// stays in its own file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../kesd/src/store/store.js';

export interface Backend {
  /** A fresh, empty store; `shared` names a group of handles that must see the same records (other replicas). */
  open(shared?: string): Promise<Store>;
  /** Several clients of one store at once (processes or replicas), if the backend has them. */
  readonly clients: number;
}

const b = (s: string) => Buffer.from(s);

export async function paths(s: Store, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const r of s.list(prefix)) out.push(r.path);
  return out;
}

let groups = 0;

/** Registers the contract's tests (call at the top level of a test file, or inside a describe). */
export function storeContract(backend: Backend): void {
  const withStore = async (fn: (s: Store) => Promise<void>) => {
    const s = await backend.open();
    try {
      await fn(s);
    } finally {
      await s.close();
    }
  };

  test('contract: put, get, overwrite, binary values and missing paths', () =>
    withStore(async (s) => {
      assert.equal(await s.get('a/x'), undefined);
      await s.put('a/x', b('one'));
      assert.deepEqual(Buffer.from((await s.get('a/x'))!), b('one'));
      await s.put('a/x', new Uint8Array([0, 255, 7]));
      assert.deepEqual(Buffer.from((await s.get('a/x'))!), Buffer.from([0, 255, 7]));
      await s.status();
    }));

  test('contract: putIfAbsent writes only when absent; delete says whether it deleted', () =>
    withStore(async (s) => {
      assert.equal(await s.putIfAbsent('k', b('first')), true);
      assert.equal(await s.putIfAbsent('k', b('second')), false);
      assert.deepEqual(Buffer.from((await s.get('k'))!), b('first'));
      assert.equal(await s.delete('k'), true);
      assert.equal(await s.get('k'), undefined);
      assert.equal(await s.delete('k'), false);
      assert.equal(await s.delete('never'), false);
      assert.equal(await s.putIfAbsent('k', b('again')), true);
    }));

  test('contract: concurrent putIfAbsent on one path from every client: exactly one wins and its value is stored', async () => {
    const group = `race-${++groups}`;
    const clients = await Promise.all(Array.from({ length: backend.clients }, () => backend.open(group)));
    try {
      for (let round = 0; round < 3; round++) {
        const results = await Promise.all(
          Array.from({ length: 30 }, (_, i) => clients[i % clients.length]!.putIfAbsent(`race/${round}`, b(`v${i}`))),
        );
        const winners = results.flatMap((ok, i) => (ok ? [i] : []));
        assert.equal(winners.length, 1, `round ${round}: ${winners}`);
        for (const c of clients) assert.deepEqual(Buffer.from((await c.get(`race/${round}`))!), b(`v${winners[0]}`));
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  test('contract: commit applies all of its writes when every condition holds, and nothing otherwise', () =>
    withStore(async (s) => {
      await s.put('c/held', b('v1'));
      // absent, present and exact-value conditions, all holding: puts and a delete land together
      assert.equal(
        await s.commit(
          [
            { path: 'c/new', is: 'absent' },
            { path: 'c/held', is: b('v1') },
            { path: 'c/held', is: 'present' },
          ],
          [{ put: 'c/new', value: b('n') }, { put: 'c/queue/1', value: b('q') }, { delete: 'c/held' }],
        ),
        true,
      );
      assert.deepEqual(await paths(s, 'c/'), ['c/new', 'c/queue/1']);
      // each kind of condition failing on its own: nothing of the commit is written
      for (const failing of [
        { path: 'c/new', is: 'absent' as const },
        { path: 'c/gone', is: 'present' as const },
        { path: 'c/new', is: b('other') },
        { path: 'c/gone', is: b('n') },
      ]) {
        assert.equal(
          await s.commit(
            [{ path: 'c/queue/1', is: 'present' }, failing],
            [{ put: 'c/x', value: b('x') }, { delete: 'c/new' }],
          ),
          false,
          JSON.stringify(failing),
        );
        assert.deepEqual(await paths(s, 'c/'), ['c/new', 'c/queue/1']);
      }
      assert.equal(await s.commit([], [{ delete: 'c/never' }]), true); // deleting nothing is no error
      assert.equal(await s.count('c/'), 2);
      assert.equal(await s.count('c/queue/'), 1);
      assert.equal(await s.count('c/none/'), 0);
    }));

  test('contract: concurrent compare-and-set commits on one path from every client: exactly one wins each round', async () => {
    const group = `cas-${++groups}`;
    const clients = await Promise.all(Array.from({ length: backend.clients }, () => backend.open(group)));
    try {
      await clients[0]!.put('lease', b('v0'));
      for (let round = 0; round < 3; round++) {
        const seen = b(`v${round * 100}`);
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            clients[i % clients.length]!.commit(
              [{ path: 'lease', is: seen }],
              [
                { put: 'lease', value: b(`v${(round + 1) * 100}`) },
                { put: `won/${round}/${i}`, value: b('') },
              ],
            ),
          ),
        );
        assert.equal(results.filter(Boolean).length, 1, `round ${round}`);
        assert.equal(await clients[0]!.count(`won/${round}/`), 1);
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  test('contract: list returns exactly the prefix, in ascending byte order, with the values', () =>
    withStore(async (s) => {
      for (const p of ['b', 'a/2', 'ab', 'a/10', 'a', 'a/', 'ab/1', 'a/1', 'a0', 'a.']) await s.put(p, b(p));
      assert.deepEqual(await paths(s, 'a/'), ['a/', 'a/1', 'a/10', 'a/2']);
      assert.deepEqual(await paths(s, 'ab'), ['ab', 'ab/1']);
      assert.deepEqual(await paths(s, 'a'), ['a', 'a.', 'a/', 'a/1', 'a/10', 'a/2', 'a0', 'ab', 'ab/1']);
      assert.deepEqual(await paths(s, ''), ['a', 'a.', 'a/', 'a/1', 'a/10', 'a/2', 'a0', 'ab', 'ab/1', 'b']);
      assert.deepEqual(await paths(s, 'zzz'), []);
      assert.deepEqual(await paths(s, 'a/2/'), []);
      for await (const r of s.list('ab/')) assert.deepEqual(Buffer.from(r.value), b(r.path));
    }));

  test('contract: paths pages through exactly the prefix, in list order, without values', () =>
    withStore(async (s) => {
      for (const p of ['b', 'a/2', 'ab', 'a/10', 'a', 'a/', 'ab/1', 'a/1', 'a0', 'a.']) await s.put(p, b(p));
      const pages = async (prefix: string, limit: number) => {
        const out: string[][] = [];
        for (let after: string | undefined; ; ) {
          const page = await s.paths(prefix, limit, after);
          if (page.length > 0) out.push(page);
          if (page.length < limit) return out;
          after = page[page.length - 1];
        }
      };
      for (const prefix of ['a/', 'ab', 'a', '', 'zzz', 'a/2/']) {
        const all = await paths(s, prefix);
        assert.deepEqual((await pages(prefix, 1000)).flat(), all, prefix);
        assert.deepEqual((await pages(prefix, 2)).flat(), all, prefix);
        assert.ok((await pages(prefix, 2)).every((p) => p.length <= 2));
      }
      assert.deepEqual(await s.paths('a', 3, 'a/'), ['a/1', 'a/10', 'a/2']);
      assert.deepEqual(await s.paths('a', 0), []);
    }));

  test('contract: list is lazy, can stop early, and a write during a listing neither fails it nor breaks its order', () =>
    withStore(async (s) => {
      const names = Array.from({ length: 1200 }, (_, i) => `e/${String(i).padStart(5, '0')}`);
      for (let i = 0; i < names.length; i += 100) await Promise.all(names.slice(i, i + 100).map((n) => s.put(n, b(n))));
      const it = s.list('e/')[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.path, 'e/00000');
      await it.return?.();

      let n = 0;
      let last = '';
      for await (const r of s.list('e/')) {
        if (n % 400 === 0) await s.put(`e/zz${n}`, b('late'));
        assert.ok(r.path.startsWith('e/') && r.path > last, `${r.path} after ${last}`);
        last = r.path;
        if (++n === 1000) break;
      }
      assert.equal(n, 1000);
      assert.equal((await paths(s, 'e/')).length, names.length + 3); // the puts at n = 0, 400, 800
    }));

  test('contract: values of 1 MiB list and read back whole', () =>
    withStore(async (s) => {
      const big = (i: number) => Buffer.alloc(1 << 20, i);
      for (let i = 0; i < 6; i++) await s.put(`big/${i}`, big(i));
      let n = 0;
      for await (const r of s.list('big/')) assert.ok(Buffer.from(r.value).equals(big(n++)), r.path);
      assert.equal(n, 6);
    }));

  test('contract: a closed store rejects every call', async () => {
    const s = await backend.open();
    await s.put('x', b('y'));
    await s.close();
    await assert.rejects(s.get('x'), /closed/);
    await assert.rejects(s.put('x', b('z')), /closed/);
    await assert.rejects(s.putIfAbsent('w', b('z')), /closed/);
    await assert.rejects(s.delete('x'), /closed/);
    await assert.rejects(s.status(), /closed/);
    await assert.rejects(s.commit([], [{ put: 'x', value: b('z') }]), /closed/);
    await assert.rejects(s.count(''), /closed/);
  });
}
