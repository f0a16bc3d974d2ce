// Finding 6 (docs/security.md), the low ones: an enclave-existence oracle for strangers, files kesd creates readable by
// others, and no overall bound on what stalled audit subscribers hold.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, stat, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import type { Subscriber } from '../../kesd/src/log/stream.js';
import { EventStream, MAX_TOTAL_BUFFERED_BYTES } from '../../kesd/src/log/stream.js';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import { makeIdentity, startTestServer, type TestIdentity, type TestServer } from './harness.js';

let s: TestServer;
let stranger: TestIdentity;
before(async () => {
  s = await startTestServer();
  stranger = await makeIdentity(s.dir, 'stranger');
});
after(() => s.stop());

test('a stranger gets the same answer for an enclave that exists and one that does not', async () => {
  for (const path of ['/v1/status', '/v1/metrics', '/v1/key/describe/minio-default', '/v1/log/audit']) {
    const existing = await s.request(stranger, 'GET', `${path}?enclave=default`);
    const missing = await s.request(stranger, 'GET', `${path}?enclave=no-such-enclave`);
    assert.deepEqual(
      { status: missing.status, text: missing.text },
      { status: existing.status, text: existing.text },
      path,
    );
    assert.equal(existing.status, 403, path);
  }
});

test('every file kesd creates in its data dir is owner-only', async () => {
  const modes: string[] = [];
  for (const entry of await readdir(s.dataDir, { recursive: true, withFileTypes: true })) {
    const mode = (await stat(join(entry.parentPath, entry.name))).mode & 0o777;
    modes.push(`${entry.name} ${mode.toString(8)}`);
    assert.equal(mode & 0o077, 0, `${entry.name} is ${mode.toString(8)}`);
  }
  assert.ok(modes.includes('db 600') && modes.includes('db-lock 600'), modes.join(', '));
});

test('opening a store whose files others may read makes them owner-only', async () => {
  const path = join(s.dir, 'loose', 'store.mdb');
  const store = await openLmdbStore(path);
  await store.close();
  for (const file of [path, `${path}-lock`]) await chmod(file, 0o644);
  const again = await openLmdbStore(path);
  await again.close();
  for (const file of [path, `${path}-lock`]) assert.equal((await stat(file)).mode & 0o777, 0o600, file);
});

/** An exchange whose client reads nothing (stalled) or everything at once (fast). */
function subscriber(fast: boolean): Subscriber & { received: number } {
  let buffered = 0;
  const ex = {
    received: 0,
    closed: false,
    status: undefined,
    get buffered() {
      return buffered;
    },
    keepOpen() {},
    start() {},
    onClose() {},
    write(chunk: string) {
      this.received++;
      if (!fast) buffered += chunk.length;
      return true;
    },
  };
  return ex as unknown as Subscriber & { received: number };
}

test('stalled log subscribers together hold at most the overall bound, and a subscriber that keeps up loses nothing', async () => {
  const stream = new EventStream();
  const stalled = Array.from({ length: 40 }, () => subscriber(false));
  const fast = subscriber(true);
  for (const ex of [...stalled, fast]) await stream.subscribe(ex, undefined);
  const line = JSON.stringify({ pad: 'x'.repeat(1000) }) + '\n';
  const events = 4000; // 4 MB per subscriber if nothing were dropped: 160 MB for the stalled ones
  for (let i = 0; i < events; i++) stream.publish(null, line);
  const held = stalled.reduce((sum, ex) => sum + ex.buffered, 0);
  assert.ok(held <= MAX_TOTAL_BUFFERED_BYTES + stalled.length * line.length, `stalled subscribers hold ${held} bytes`);
  assert.equal(fast.received, events);
  assert.equal(stream.dropped, events * stalled.length - stalled.reduce((sum, ex) => sum + ex.received, 0));
});
