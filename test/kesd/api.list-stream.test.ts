// /v1/key/list with many keys: every key once, in order, with the v0.22 fields; the response streams (it starts
// before the store has been read to the end); a client that leaves ends the read; other requests are served meanwhile.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { paths, type RecordStore } from '../../kesd/src/state/records.js';
import { startTestServer, type TestServer } from './harness.js';

const KEYS = 6000;
const name = (i: number) => `many-${String(i).padStart(5, '0')}`;

let s: TestServer;
let reads = { records: 0, closed: 0 };
before(async () => {
  s = await startTestServer();
  const enclave = s.kesd.system.enclaves.get('default')!;
  for (let i = 0; i < KEYS; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, KEYS - i) }, (_, j) => enclave.createKey(name(i + j), s.admin.identity)),
    );
  }
  enclave.forgetKeys(); // as after a restart: the listing must read every record from the store
  countReads(s.kesd.system.records);
});
after(async () => {
  await s.stop();
});

/** Counts the key paths the server reads from its store (a page at a time), and the page iterations that ended. */
function countReads(records: RecordStore): void {
  const pages = records.pathPages.bind(records);
  records.pathPages = async function* (prefix: string, pageSize?: number): AsyncGenerator<string[]> {
    try {
      for await (const page of pages(prefix, pageSize)) {
        reads.records += page.length;
        yield page;
      }
    } finally {
      reads.closed++;
    }
  };
}

function get(path: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: s.port, path, agent: s.agent(s.admin) }, resolve);
    req.on('error', reject);
    req.end();
  });
}

async function text(res: IncomingMessage): Promise<string> {
  let out = '';
  res.setEncoding('utf8');
  for await (const chunk of res) out += chunk;
  return out;
}

test('a list of many keys has every key once, in name order, with id, algorithm and creation info', async () => {
  const res = await get('/v1/key/list/many-*');
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-type'], 'application/x-ndjson');
  const lines = (await text(res))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => l.name),
    Array.from({ length: KEYS }, (_, i) => name(i)),
  );
  for (const l of lines) {
    assert.match(l.id, /^[0-9a-f]{32}$/);
    assert.equal(l.algorithm, 'AES256-GCM_SHA256');
    assert.equal(l.created_by, s.admin.identity);
    assert.ok(!Number.isNaN(Date.parse(l.created_at)), l.created_at);
  }
  const described = (await s.request(s.admin, 'GET', `/v1/key/describe/${name(1234)}`)).json();
  assert.equal(lines[1234].id, described.id);
  assert.equal(lines[1234].created_at, described.created_at);
});

test('the response starts before the store has been read to the end', async () => {
  reads = { records: 0, closed: 0 };
  const res = await get('/v1/key/list/many-*');
  let readAtFirstByte = -1;
  res.once('data', () => (readAtFirstByte = reads.records));
  const body = await text(res);
  assert.equal(body.split('\n').filter((l) => l !== '').length, KEYS);
  assert.equal(reads.records, KEYS);
  assert.ok(
    readAtFirstByte > 0 && readAtFirstByte < KEYS,
    `the first byte came after ${readAtFirstByte} of ${KEYS} records`,
  );
});

test("a client that leaves mid-list ends the server's read of the store", async () => {
  reads = { records: 0, closed: 0 };
  const res = await get('/v1/key/list/many-*');
  await new Promise((resolve) => res.once('data', resolve));
  res.socket.destroy();
  const deadline = Date.now() + 30_000; // a bound for a hung listing, not a timing check
  while (reads.closed === 0) {
    assert.ok(Date.now() < deadline, 'the store iteration was never closed');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(reads.records < KEYS, `the server read all ${KEYS} records for a client that had left`);
});

test('other requests are answered while a long list streams', async () => {
  const res = await get('/v1/key/list/many-*');
  let listEnded = false;
  const body = text(res).then((t) => {
    listEnded = true;
    return t;
  });
  const described = await s.request(s.admin, 'GET', `/v1/key/describe/${name(42)}`);
  assert.equal(described.status, 200);
  assert.equal(listEnded, false, 'the describe waited for the whole list');
  assert.equal((await body).split('\n').filter((l) => l !== '').length, KEYS);
});

test('a record that cannot be opened ends the listing with an error line after the lines before it', async () => {
  const enclave = s.kesd.system.enclaves.get('default')!;
  await enclave.createKey('bad-a', s.admin.identity);
  await enclave.createKey('bad-c', s.admin.identity);
  await s.kesd.system.records.store.put(paths.key(enclave.info.uid, 'bad-b'), Buffer.alloc(80, 1)); // not sealed by kesd
  const res = await get('/v1/key/list/bad-*');
  assert.equal(res.statusCode, 200);
  const lines = (await text(res))
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((l) => l.name ?? null),
    ['bad-a', null],
  );
  assert.match(lines[1].error, /^key 'bad-b' is corrupt in the key store \(its record is not authentic/);
  // Never used, but an admin can delete it; then the listing is whole again.
  for (const [method, path] of [
    ['GET', '/v1/key/describe/bad-b'],
    ['POST', '/v1/key/generate/bad-b'],
  ] as const) {
    const r = await s.request(s.admin, method, path, method === 'POST' ? {} : undefined);
    assert.equal(r.status, 500, r.text);
    assert.match(
      r.json().message,
      /^key 'bad-b' is corrupt in the key store .*delete it, or restore it from a backup$/,
    );
  }
  assert.equal((await s.request(s.admin, 'DELETE', '/v1/key/delete/bad-b')).status, 200);
  const after = await get('/v1/key/list/bad-*');
  assert.deepEqual(
    (await text(after))
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l).name),
    ['bad-a', 'bad-c'],
  );
});
