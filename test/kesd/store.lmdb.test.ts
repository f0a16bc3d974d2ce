import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import { paths, storeContract } from './store-contract.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const lmdbModule = pathToFileURL(join(repoRoot, 'kesd/src/store/lmdb.ts')).href;

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-lmdb-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const b = (s: string) => Buffer.from(s);

// The contract every backend keeps (store-contract.ts): handles of one group share one file, as cluster workers do.
const contractDir = mkdtempSync(join(tmpdir(), 'kesd-lmdb-contract-'));
after(() => rmSync(contractDir, { recursive: true, force: true }));
let fresh = 0;
storeContract({ open: (shared) => openLmdbStore(join(contractDir, `${shared ?? `s${++fresh}`}.mdb`)), clients: 2 });

test('data survives close and reopen; a closed store rejects', async (t) => {
  const file = join(tempDir(t), 'nested', 'store.mdb');
  const s1 = await openLmdbStore(file);
  await s1.put('p/1', b('one'));
  assert.equal(await s1.putIfAbsent('p/2', b('two')), true);
  await s1.close();
  await assert.rejects(s1.get('p/1'), /closed/);
  await assert.rejects(s1.put('p/3', b('x')), /closed/);
  await assert.rejects(s1.status(), /closed/);

  const s2 = await openLmdbStore(file);
  t.after(() => s2.close());
  assert.deepEqual(Buffer.from((await s2.get('p/1'))!), b('one'));
  assert.deepEqual(await paths(s2, 'p/'), ['p/1', 'p/2']);
});

// The child writes with 16 writes in flight and prints "ack <i>" only after a write's promise resolved.
const WRITER = `
import { openLmdbStore } from ${JSON.stringify(lmdbModule)};
const s = await openLmdbStore(process.argv[2]);
let next = 0;
async function worker() {
  for (;;) {
    const i = next++;
    await s.put('w/' + i, Buffer.from('value-' + i));
    process.stdout.write('ack ' + i + '\\n');
  }
}
for (let k = 0; k < 16; k++) worker();
`;

test('every acknowledged write survives kill -9 of the writing process (another process has it open)', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'store.mdb');
  const script = join(dir, 'writer.mjs');
  writeFileSync(script, WRITER);
  const reader = await openLmdbStore(file); // a second process on the same environment, open throughout
  t.after(() => reader.close());

  const child = spawn(process.execPath, ['--import', 'tsx', script, file], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const acked: number[] = [];
  const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_code, sig) => r(sig)));
  for await (const line of createInterface({ input: child.stdout! })) {
    const m = /^ack (\d+)$/.exec(line);
    if (m) acked.push(Number(m[1]));
    if (acked.length === 300) child.kill('SIGKILL');
  }
  assert.equal(await exited, 'SIGKILL');
  assert.ok(acked.length >= 300);

  for (const i of acked)
    assert.deepEqual(Buffer.from((await reader.get(`w/${i}`)) ?? []), b(`value-${i}`), `w/${i} (live reader)`);
  await reader.close();
  const reopened = await openLmdbStore(file);
  t.after(() => reopened.close());
  for (const i of acked)
    assert.deepEqual(Buffer.from((await reopened.get(`w/${i}`)) ?? []), b(`value-${i}`), `w/${i} (reopened)`);
  await reopened.put('after-crash', b('ok')); // the dead writer's lock did not wedge the environment
  assert.equal(await reopened.putIfAbsent('after-crash', b('x')), false);
});

// Under RLIMIT_FSIZE the commit's page writes fail (EFBIG / short write), like a full disk.
const FILLER = `
import { openLmdbStore } from ${JSON.stringify(lmdbModule)};
const s = await openLmdbStore(process.argv[2]);
await s.put('small', Buffer.alloc(10));
try { await s.put('big', Buffer.alloc(16 << 20)); console.log('big-written'); } catch (e) { console.log('rejected ' + e.name + ': ' + e.message); }
try { await s.putIfAbsent('big2', Buffer.alloc(16 << 20)); console.log('big2-written'); } catch (e) { console.log('rejected ' + e.name + ': ' + e.message); }
const settled = await Promise.allSettled([s.put('c1', Buffer.alloc(10)), s.putIfAbsent('c2', Buffer.alloc(16 << 20)), s.delete('small')]);
console.log('batch ' + settled.map((r) => r.status).join(','));
console.log('big-present ' + ((await s.get('big')) !== undefined || (await s.get('big2')) !== undefined));
await s.put('small2', Buffer.alloc(10));
await s.status();
console.log('still-writable ' + (await s.get('small2')).length);
await s.close();
`;

test('a failed commit (file size limit, like a full disk) rejects the write and the process keeps serving', async (t) => {
  const dir = tempDir(t);
  const script = join(dir, 'filler.mjs');
  writeFileSync(script, FILLER);
  const r = spawnSync(
    'sh',
    ['-c', 'ulimit -f 2048 && exec "$@"', 'sh', process.execPath, '--import', 'tsx', script, join(dir, 'store.mdb')],
    {
      cwd: repoRoot,
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^rejected StoreError: store: put 'big' failed: .+$/m);
  assert.match(r.stdout, /^rejected StoreError: store: put 'big2' failed: .+$/m);
  // Writes of one event turn share a transaction, so the small neighbours may fail with it; none may crash.
  assert.match(r.stdout, /^batch (fulfilled|rejected),rejected,(fulfilled|rejected)$/m);
  assert.match(r.stdout, /^big-present false$/m);
  assert.match(r.stdout, /^still-writable 10$/m);
});

// lmdb-js aborts the process (glibc heap corruption) when a commit that batched several writes fails for space;
// the store must fall back to one write at a time near a full disk. The child fills a 2 MiB tmpfs with 8 writes in
// flight (before the fix: SIGABRT in 7 of 7 runs), then writes 4 KiB values one at a time (SIGABRT in 5 of 5 runs
// before kesd kept a reserve free).
const CONCURRENT_FILLER = `
import { openLmdbStore } from ${JSON.stringify(lmdbModule)};
const s = await openLmdbStore(process.argv[2]);
let ok = 0, failed = 0, other = 0, next = 0;
await Promise.all(Array.from({ length: 8 }, async () => {
  while (next < 12000) {
    const i = next++;
    try { await s.putIfAbsent('keys/' + i, Buffer.alloc(150, 1)); ok++; }
    catch (e) { if (e.name === 'StoreError') failed++; else other++; }
  }
}));
// Then values that need LMDB overflow pages, one at a time: these aborted the process even unbatched.
let big = 0;
for (let j = 0; j < 30; j++) {
  try { await s.putIfAbsent('secrets/' + j, Buffer.alloc(4200, 2)); big++; }
  catch (e) { if (e.name === 'StoreError') failed++; else other++; }
}
console.log('ok ' + ok + ' failed ' + failed + ' other ' + other);
await s.close();
`;

test('a full disk with 8 writes in flight, then large values: every write resolves or rejects with StoreError, no crash', async (t) => {
  const script = join(tempDir(t), 'concurrent-filler.mjs');
  writeFileSync(script, CONCURRENT_FILLER);
  const mnt = mkdtempSync(join(tmpdir(), 'kesd-lmdb-full-'));
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { encoding: 'utf8' });
  t.after(() => {
    if (mount.status === 0) spawnSync('umount', ['-l', mnt]);
    rmSync(mnt, { recursive: true, force: true });
  });
  if (mount.status !== 0) return t.skip(`cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): ${mount.stderr.trim()}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', script, join(mnt, 'store.mdb')], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 120_000,
    maxBuffer: 256 * 1024 ** 2,
  });
  assert.equal(r.signal, null, `the writer died with ${r.signal}: ${r.stderr.slice(-500)}`);
  assert.equal(r.status, 0, r.stderr.slice(-500));
  const m = /^ok (\d+) failed (\d+) other (\d+)$/m.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.ok(Number(m[1]) > 1000, `only ${m[1]} writes succeeded before the disk filled`);
  assert.ok(Number(m[2]) > 0, 'the disk never filled up');
  assert.equal(Number(m[3]), 0, 'a write failed with something other than StoreError');
});
