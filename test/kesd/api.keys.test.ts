// /v1/key/* over real mTLS: create, import, describe, delete, generate, encrypt/decrypt, bulk decrypt,
// hmac, list, name validation and request-body handling (kes-protocol §4, §5.2, §6.2, §8.3–8.4, §12).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import https from 'node:https';
import { readReply, request, startTestServer, type Reply, type TestServer } from './harness.js';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s.stop();
});

let counter = 0;
const fresh = (prefix = 'k') => `${prefix}-${++counter}`;
const b64 = (data: string | Uint8Array) => Buffer.from(data).toString('base64');
const ZERO_KEY = Buffer.alloc(32);
const ndjson = (text: string) =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
const admin = (method: string, path: string, body?: unknown) => s.request(s.admin, method, path, body);

function assertError(r: Reply, status: number, message: string): void {
  assert.equal(r.status, status, r.text);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assert.equal(r.json().message, message);
}

async function ok(r: Promise<Reply>): Promise<Reply> {
  const reply = await r;
  assert.equal(reply.status, 200, reply.text);
  return reply;
}

async function importKey(name: string, bytes: Buffer, cipher = 'AES256'): Promise<void> {
  await ok(admin('POST', `/v1/key/import/${name}`, { key: b64(bytes), cipher }));
}

/** Decrypts the raw format ct ‖ tag(16) ‖ iv(16) ‖ nonce(12) of an AES256 key locally (kes-protocol §8.2–8.3). */
function openRawAes(key: Buffer, ciphertext: Buffer, aad: Buffer = Buffer.alloc(0)): Buffer {
  const nonce = ciphertext.subarray(ciphertext.length - 12);
  const iv = ciphertext.subarray(ciphertext.length - 28, ciphertext.length - 12);
  const sealed = ciphertext.subarray(0, ciphertext.length - 28);
  const d = createDecipheriv('aes-256-gcm', createHmac('sha256', key).update(iv).digest(), nonce);
  d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]);
}

/** A request with full control of headers and body framing (the harness always sends Content-Length). */
function send(
  method: string,
  path: string,
  opts: { headers?: Record<string, string | number>; chunks?: Buffer[]; agent?: https.Agent } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: s.port,
        method,
        path,
        agent: opts.agent ?? s.agent(s.admin),
        headers: opts.headers ?? {},
      },
      (res) => {
        readReply(res).then(resolve, reject);
      },
    );
    req.on('error', reject);
    for (const c of opts.chunks ?? []) req.write(c);
    req.end();
  });
}

// ---- create ---------------------------------------------------------------------------------------

test('POST /v1/key/create/<name> creates a key', async () => {
  const name = fresh();
  const r = await ok(admin('POST', `/v1/key/create/${name}`));
  assert.equal(r.text, '');
  await ok(admin('GET', `/v1/key/describe/${name}`));
});

test('PUT /v1/key/create/<name> creates a key (newest dialect)', async () => {
  const name = fresh();
  await ok(admin('PUT', `/v1/key/create/${name}`));
  await ok(admin('GET', `/v1/key/describe/${name}`));
});

test('creating or importing an existing key is 400 key already exists', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const before = (await ok(admin('GET', `/v1/key/describe/${name}`))).json();
  assertError(await admin('POST', `/v1/key/create/${name}`), 400, 'key already exists');
  assertError(await admin('PUT', `/v1/key/create/${name}`), 400, 'key already exists');
  assertError(
    await admin('POST', `/v1/key/import/${name}`, { key: b64(ZERO_KEY), cipher: 'AES256' }),
    400,
    'key already exists',
  );
  // The original key is untouched (KES v0.22's overwrite quirk is not copied).
  assert.deepEqual((await ok(admin('GET', `/v1/key/describe/${name}`))).json(), before);
});

// ---- import ---------------------------------------------------------------------------------------

test('import accepts the newest body {"key","cipher"} and uses exactly those key bytes', async () => {
  const name = fresh();
  const bytes = randomBytes(32);
  await ok(admin('PUT', `/v1/key/import/${name}`, { key: b64(bytes), cipher: 'AES256' }));
  const d = (await ok(admin('GET', `/v1/key/describe/${name}`))).json();
  assert.equal(d.algorithm, 'AES256-GCM_SHA256');
  assert.equal(d.id, createHash('sha256').update(bytes).digest().subarray(0, 16).toString('hex'));
  const { ciphertext } = (await ok(admin('POST', `/v1/key/encrypt/${name}`, { plaintext: b64('hello') }))).json();
  assert.equal(openRawAes(bytes, Buffer.from(ciphertext, 'base64')).toString(), 'hello');
});

test('import accepts the v0.22 body {"bytes"} and defaults to AES256', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/import/${name}`, { bytes: b64(ZERO_KEY) }));
  const d = (await ok(admin('GET', `/v1/key/describe/${name}`))).json();
  assert.equal(d.algorithm, 'AES256-GCM_SHA256');
  assert.equal(d.id, '66687aadf862bd776c8fc18b8e9f8e20'); // kes-protocol §8.6: id of the all-zero key
});

test('import accepts the v0.22 body {"bytes","algorithm":"XCHACHA20-POLY1305"} as a ChaCha key', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/import/${name}`, { bytes: b64(ZERO_KEY), algorithm: 'XCHACHA20-POLY1305' }));
  assert.equal((await ok(admin('GET', `/v1/key/describe/${name}`))).json().algorithm, 'XCHACHA20-POLY1305');
  // kes-protocol §8.4 msgpack/ChaCha vector under the all-zero key → 16 zero bytes.
  const ciphertext =
    'lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu';
  assert.equal(
    (await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }))).json().plaintext,
    b64(Buffer.alloc(16)),
  );
});

test('import with an unsupported cipher is 406', async () => {
  const name = fresh();
  assertError(
    await admin('POST', `/v1/key/import/${name}`, { key: b64(ZERO_KEY), cipher: 'AES128' }),
    406,
    "algorithm 'AES128' is not supported",
  );
  assertError(await admin('GET', `/v1/key/describe/${name}`), 404, 'key does not exist');
});

test('import of a key that is not 32 bytes is 406', async () => {
  const name = fresh();
  assertError(
    await admin('POST', `/v1/key/import/${name}`, { key: b64(Buffer.alloc(16)), cipher: 'AES256' }),
    406,
    "invalid key size for 'AES256'",
  );
  assertError(
    await admin('POST', `/v1/key/import/${name}`, { key: b64(Buffer.alloc(33)), cipher: 'AES256' }),
    406,
    "invalid key size for 'AES256'",
  );
  assertError(await admin('GET', `/v1/key/describe/${name}`), 404, 'key does not exist');
});

test('import with a malformed body is 400', async () => {
  const name = fresh();
  for (const body of ['{"key":', '[]', '"x"', '']) {
    assertError(await admin('POST', `/v1/key/import/${name}`, body), 400, 'invalid import key request body');
  }
  assertError(
    await admin('POST', `/v1/key/import/${name}`, { key: 'not base64!', cipher: 'AES256' }),
    400,
    'invalid import key request body',
  );
});

// ---- describe, delete -----------------------------------------------------------------------------

test("describe returns name, id, algorithm, created_at and created_by (and kesd's version, versions)", async () => {
  const name = fresh();
  const t0 = Date.now();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const r = await ok(admin('GET', `/v1/key/describe/${name}`));
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const d = r.json();
  assert.deepEqual(Object.keys(d).sort(), [
    'algorithm',
    'created_at',
    'created_by',
    'id',
    'name',
    'version',
    'versions',
  ]);
  assert.deepEqual(d.versions, [
    { version: '1', id: d.id, algorithm: d.algorithm, created_at: d.created_at, created_by: d.created_by },
  ]);
  assert.equal(d.name, name);
  assert.match(d.id, /^[0-9a-f]{32}$/);
  assert.ok(['AES256-GCM_SHA256', 'XCHACHA20-POLY1305'].includes(d.algorithm), d.algorithm);
  assert.match(d.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  assert.ok(Math.abs(Date.parse(d.created_at) - t0) < 60_000);
  assert.equal(d.created_by, s.admin.identity);
});

test('describe of a missing key is 404 key does not exist', async () => {
  assertError(await admin('GET', `/v1/key/describe/${fresh('missing')}`), 404, 'key does not exist');
});

test('delete removes a key: afterwards every key route is 404 key does not exist', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const { ciphertext } = (await ok(admin('POST', `/v1/key/generate/${name}`, {}))).json();
  const r = await ok(admin('DELETE', `/v1/key/delete/${name}`));
  assert.equal(r.text, '');
  assertError(await admin('GET', `/v1/key/describe/${name}`), 404, 'key does not exist');
  assertError(await admin('POST', `/v1/key/generate/${name}`, {}), 404, 'key does not exist');
  assertError(await admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }), 404, 'key does not exist');
  assertError(await admin('DELETE', `/v1/key/delete/${name}`), 404, 'key does not exist');
  // The name is free again, and the new key is a different key.
  await ok(admin('POST', `/v1/key/create/${name}`));
  assertError(
    await admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }),
    400,
    'decryption failed: ciphertext is not authentic',
  );
});

// ---- generate, encrypt, decrypt -------------------------------------------------------------------

test('generate with an empty body returns a 32-byte data key and a 76-byte raw ciphertext', async () => {
  const name = fresh();
  const key = randomBytes(32);
  await importKey(name, key);
  const r = await ok(admin('POST', `/v1/key/generate/${name}`));
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const { plaintext, ciphertext } = r.json();
  const pt = Buffer.from(plaintext, 'base64');
  const ct = Buffer.from(ciphertext, 'base64');
  assert.equal(pt.length, 32);
  assert.equal(ct.length, 76);
  assert.deepEqual(openRawAes(key, ct), pt); // raw layout: ct ‖ tag ‖ iv ‖ nonce
  assert.equal((await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }))).json().plaintext, plaintext);
});

test('generate with a {} body returns a data key that decrypts', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const { plaintext, ciphertext } = (await ok(admin('PUT', `/v1/key/generate/${name}`, {}))).json();
  assert.equal(Buffer.from(plaintext, 'base64').length, 32);
  assert.equal(Buffer.from(ciphertext, 'base64').length, 76);
  assert.equal((await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }))).json().plaintext, plaintext);
});

test('generate with a context binds the ciphertext to that context', async () => {
  const name = fresh();
  const key = randomBytes(32);
  await importKey(name, key);
  const context = b64('{"bucket":"b","object":"o"}');
  const { plaintext, ciphertext } = (await ok(admin('POST', `/v1/key/generate/${name}`, { context }))).json();
  assert.deepEqual(
    openRawAes(key, Buffer.from(ciphertext, 'base64'), Buffer.from(context, 'base64')),
    Buffer.from(plaintext, 'base64'),
  );
  assert.equal(
    (await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext, context }))).json().plaintext,
    plaintext,
  );
});

test('decrypt with the wrong context, no context or another key is 400 decryption failed', async () => {
  const name = fresh();
  const other = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  await ok(admin('POST', `/v1/key/create/${other}`));
  const { ciphertext } = (await ok(admin('POST', `/v1/key/generate/${name}`, { context: b64('right') }))).json();
  const failed = 'decryption failed: ciphertext is not authentic';
  assertError(await admin('POST', `/v1/key/decrypt/${name}`, { ciphertext, context: b64('wrong') }), 400, failed);
  assertError(await admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }), 400, failed);
  assertError(await admin('POST', `/v1/key/decrypt/${other}`, { ciphertext, context: b64('right') }), 400, failed);
  const tampered = Buffer.from(ciphertext, 'base64');
  tampered[0]! ^= 1;
  assertError(
    await admin('POST', `/v1/key/decrypt/${name}`, { ciphertext: b64(tampered), context: b64('right') }),
    400,
    failed,
  );
  assertError(await admin('POST', `/v1/key/decrypt/${name}`, { ciphertext: b64(Buffer.alloc(10)) }), 400, failed);
});

test('encrypt then decrypt returns the plaintext (POST and PUT)', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const plaintext = b64(randomBytes(100));
  const context = b64('ctx');
  const r = await ok(admin('PUT', `/v1/key/encrypt/${name}`, { plaintext, context }));
  const { ciphertext } = r.json();
  assert.equal(Buffer.from(ciphertext, 'base64').length, 100 + 44);
  assert.equal(
    (await ok(admin('PUT', `/v1/key/decrypt/${name}`, { ciphertext, context }))).json().plaintext,
    plaintext,
  );
  assert.equal(
    (await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext, context }))).json().plaintext,
    plaintext,
  );
});

test('bulk decrypt returns the plaintexts in request order', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const items = [];
  for (const word of ['one', 'two', 'three', 'four']) {
    const context = b64(`ctx-${word}`);
    const { ciphertext } = (
      await ok(admin('POST', `/v1/key/encrypt/${name}`, { plaintext: b64(word), context }))
    ).json();
    items.push({ word, ciphertext, context });
  }
  items.reverse();
  const r = await ok(
    admin(
      'POST',
      `/v1/key/bulk/decrypt/${name}`,
      items.map(({ ciphertext, context }) => ({ ciphertext, context })),
    ),
  );
  assert.deepEqual(
    r.json(),
    items.map(({ word }) => ({ plaintext: b64(word) })),
  );
  // One ciphertext that does not decrypt fails the whole call.
  const bad = [
    ...items.map(({ ciphertext, context }) => ({ ciphertext, context })),
    { ciphertext: items[0]!.ciphertext },
  ];
  assertError(
    await admin('POST', `/v1/key/bulk/decrypt/${name}`, bad),
    400,
    'decryption failed: ciphertext is not authentic',
  );
});

test('bulk decrypt of more than 1000 ciphertexts is 400 too many ciphertexts', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const { ciphertext } = (await ok(admin('POST', `/v1/key/encrypt/${name}`, { plaintext: b64('x') }))).json();
  const r = await ok(
    admin(
      'POST',
      `/v1/key/bulk/decrypt/${name}`,
      Array.from({ length: 1000 }, () => ({ ciphertext })),
    ),
  );
  assert.equal(r.json().length, 1000);
  assertError(
    await admin(
      'POST',
      `/v1/key/bulk/decrypt/${name}`,
      Array.from({ length: 1001 }, () => ({ ciphertext })),
    ),
    400,
    'too many ciphertexts',
  );
});

// ---- hmac -----------------------------------------------------------------------------------------

test('hmac is deterministic for the same key and message', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const message = b64('message');
  const a = (await ok(admin('PUT', `/v1/key/hmac/${name}`, { message }))).json().hmac;
  const b = (await ok(admin('POST', `/v1/key/hmac/${name}`, { message }))).json().hmac;
  assert.equal(Buffer.from(a, 'base64').length, 32);
  assert.equal(a, b);
});

test('hmac differs per key and per message', async () => {
  const k1 = fresh();
  const k2 = fresh();
  await ok(admin('POST', `/v1/key/create/${k1}`));
  await ok(admin('POST', `/v1/key/create/${k2}`));
  const mac = async (k: string, m: string) =>
    (await ok(admin('PUT', `/v1/key/hmac/${k}`, { message: b64(m) }))).json().hmac as string;
  const m1k1 = await mac(k1, 'm1');
  assert.notEqual(m1k1, await mac(k2, 'm1'));
  assert.notEqual(m1k1, await mac(k1, 'm2'));
});

// ---- list -----------------------------------------------------------------------------------------

async function listNames(path: string): Promise<string[]> {
  const r = await ok(admin('GET', path));
  assert.equal(r.headers['content-type'], 'application/x-ndjson');
  return ndjson(r.text)
    .map((line) => line.name as string)
    .sort();
}

async function makeKeys(...names: string[]): Promise<void> {
  for (const n of names) await ok(admin('POST', `/v1/key/create/${n}`));
}

test('list * returns every key as NDJSON lines with application/x-ndjson', async () => {
  const p = fresh('lsall');
  await makeKeys(`${p}-a`, `${p}-b`);
  const r = await ok(admin('GET', '/v1/key/list/*'));
  assert.equal(r.headers['content-type'], 'application/x-ndjson');
  assert.ok(r.text.endsWith('\n'));
  const lines = ndjson(r.text);
  const names = lines.map((l) => l.name);
  for (const n of ['minio-default', `${p}-a`, `${p}-b`]) assert.ok(names.includes(n), `${n} missing from ${names}`);
  const line = lines.find((l) => l.name === `${p}-a`);
  assert.equal(line.created_by, s.admin.identity);
  assert.match(line.id, /^[0-9a-f]{32}$/);
  // '*' percent-escaped as Go's url.PathEscape sends it.
  assert.deepEqual(await listNames('/v1/key/list/%2A'), names.sort());
});

test('list prefix* returns only the keys with that prefix', async () => {
  const p = fresh('lspre');
  await makeKeys(`${p}-a1`, `${p}-a2`, `${p}-b1`);
  assert.deepEqual(await listNames(`/v1/key/list/${p}-a*`), [`${p}-a1`, `${p}-a2`]);
  assert.deepEqual(await listNames(`/v1/key/list/${p}-a%2A`), [`${p}-a1`, `${p}-a2`]);
  assert.deepEqual(await listNames(`/v1/key/list/${p}*`), [`${p}-a1`, `${p}-a2`, `${p}-b1`]);
});

test('list with an exact name returns only that key', async () => {
  const p = fresh('lsexact');
  await makeKeys(`${p}-a`, `${p}-ab`);
  assert.deepEqual(await listNames(`/v1/key/list/${p}-a`), [`${p}-a`]);
});

test('list with an empty pattern via /v1/key/list (no trailing slash) returns every key', async () => {
  const p = fresh('lsempty');
  await makeKeys(`${p}-a`);
  const all = await listNames('/v1/key/list/*');
  assert.ok(all.includes(`${p}-a`));
  assert.deepEqual(await listNames('/v1/key/list'), all);
  assert.deepEqual(await listNames('/v1/key/list/'), all);
});

test('list with no match is 200 with an empty body and still application/x-ndjson', async () => {
  const r = await ok(admin('GET', `/v1/key/list/${fresh('nomatch')}*`));
  assert.equal(r.headers['content-type'], 'application/x-ndjson');
  assert.equal(r.text, '');
});

test('list with an invalid pattern is 400', async () => {
  for (const pattern of ['a*b', '_', 'a.b']) {
    assertError(
      await admin('GET', `/v1/key/list/${pattern}`),
      400,
      `listing pattern '${pattern}' is empty, too long or is invalid`,
    );
  }
});

// ---- names and bodies ------------------------------------------------------------------------------

const invalidNames: [sent: string, name: string][] = [
  ['-x', '-x'],
  ['_', '_'],
  ['a'.repeat(81), 'a'.repeat(81)],
  ['a.b', 'a.b'],
  ['a%2Fb', 'a/b'], // the name is taken from the decoded path
  ['..', '..'],
];
for (const [sent, name] of invalidNames) {
  test(`key name ${JSON.stringify(sent.length > 20 ? `${sent.slice(0, 5)}…(${sent.length})` : sent)} is 400 invalid name`, async () => {
    const message = `key name '${name}' is empty, too long or contains invalid characters`;
    assertError(await admin('POST', `/v1/key/create/${sent}`), 400, message);
    assertError(await admin('GET', `/v1/key/describe/${sent}`), 400, message);
  });
}

test('a percent-escaped key name is decoded', async () => {
  const name = fresh('esc');
  await ok(admin('POST', `/v1/key/create/${name.replace('-', '%2D')}`));
  assert.equal((await ok(admin('GET', `/v1/key/describe/${name}`))).json().name, name);
});

test('concurrent creates of one key name: exactly one succeeds', async () => {
  const name = fresh('race');
  const replies = await Promise.all(
    Array.from({ length: 8 }, (_, i) => admin(i % 2 ? 'PUT' : 'POST', `/v1/key/create/${name}`)),
  );
  assert.equal(replies.filter((r) => r.status === 200).length, 1, replies.map((r) => r.text).join(' | '));
  for (const r of replies.filter((r) => r.status !== 200)) assertError(r, 400, 'key already exists');
  await ok(admin('POST', `/v1/key/generate/${name}`, {}));
});

test('an 80-character key name is valid', async () => {
  const name = `${fresh('long')}-`.padEnd(80, 'x');
  await ok(admin('POST', `/v1/key/create/${name}`));
});

test('JSON field names match case-insensitively', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const context = b64('ctx');
  const { Plaintext, plaintext, ciphertext } = (
    await ok(admin('POST', `/v1/key/generate/${name}`, { Context: context }))
  ).json();
  assert.equal(Plaintext, undefined);
  // The capitalised "Context" was used as associated data: without it decryption fails.
  assertError(
    await admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }),
    400,
    'decryption failed: ciphertext is not authentic',
  );
  assert.equal(
    (await ok(admin('POST', `/v1/key/decrypt/${name}`, { CipherText: ciphertext, CONTEXT: context }))).json().plaintext,
    plaintext,
  );
});

test('a body needs no Content-Type header, also when sent chunked', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const body = Buffer.from(JSON.stringify({ plaintext: b64('chunky') }));
  const r = await send('POST', `/v1/key/encrypt/${name}`, { chunks: [body.subarray(0, 5), body.subarray(5)] });
  assert.equal(r.status, 200, r.text);
  const { ciphertext } = r.json();
  assert.equal((await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }))).json().plaintext, b64('chunky'));
});

test('a []byte field that is not padded standard base64 is 400 invalid request body', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  for (const plaintext of ['not base64!', 'AAA', '-_8=', 42]) {
    assertError(await admin('POST', `/v1/key/encrypt/${name}`, { plaintext }), 400, 'invalid request body');
  }
  assertError(await admin('POST', `/v1/key/generate/${name}`, { context: 'AAA' }), 400, 'invalid request body');
});

test('malformed JSON is 400 invalid request body', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  assertError(await admin('POST', `/v1/key/encrypt/${name}`, '{"plaintext":'), 400, 'invalid request body');
  assertError(await admin('POST', `/v1/key/generate/${name}`, '{'), 400, 'invalid request body');
  assertError(await admin('POST', `/v1/key/decrypt/${name}`, 'null'), 400, 'invalid request body');
  assertError(await admin('POST', `/v1/key/bulk/decrypt/${name}`, '{}'), 400, 'invalid request body');
});

test('a body over 1 MiB is 413, whether declared or chunked', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const big = Buffer.alloc((1 << 20) + 1, 0x20);
  const agent = new https.Agent({
    keepAlive: false,
    ca: s.server.cert,
    cert: s.admin.cert,
    key: s.admin.key,
    servername: 'localhost',
  });
  try {
    const declared = await request(agent, s.port, 'POST', `/v1/key/encrypt/${name}`, big);
    assert.equal(declared.status, 413, declared.text);
    const chunked = await send('POST', `/v1/key/encrypt/${name}`, {
      agent,
      chunks: [big.subarray(0, 1 << 19), big.subarray(1 << 19)],
    });
    assert.equal(chunked.status, 413, chunked.text);
  } finally {
    agent.destroy();
  }
  // Exactly 1 MiB is still accepted by the size check (it then fails as JSON, not as too large).
  assertError(await admin('POST', `/v1/key/encrypt/${name}`, Buffer.alloc(1 << 20, 0x20)), 400, 'invalid request body');
});

// ---- old ciphertext formats ------------------------------------------------------------------------

test('decrypts a KES v0.22 msgpack ciphertext made with an imported all-zero AES256 key', async () => {
  const name = fresh('zero');
  await importKey(name, ZERO_KEY, 'AES256');
  const ciphertext =
    'lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=';
  const r = await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }));
  assert.equal(r.json().plaintext, b64(Buffer.alloc(16)));
});

test('decrypts legacy JSON and newest raw ciphertexts of the all-zero key', async () => {
  const name = fresh('zero');
  await importKey(name, ZERO_KEY, 'AES256');
  const json =
    '{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}';
  const raw = 'zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc';
  for (const ciphertext of [b64(json), raw]) {
    assert.equal(
      (await ok(admin('POST', `/v1/key/decrypt/${name}`, { ciphertext }))).json().plaintext,
      b64(Buffer.alloc(16)),
    );
  }
});

// ---- persistence (last: it replaces the server) ----------------------------------------------------

test('keys survive a restart', async () => {
  const created = fresh('persist');
  const imported = fresh('persist');
  await ok(admin('POST', `/v1/key/create/${created}`));
  await importKey(imported, ZERO_KEY);
  const before = (await ok(admin('GET', `/v1/key/describe/${created}`))).json();
  const { plaintext, ciphertext } = (
    await ok(admin('POST', `/v1/key/generate/${created}`, { context: b64('c') }))
  ).json();
  s = await s.restart();
  assert.deepEqual((await ok(admin('GET', `/v1/key/describe/${created}`))).json(), before);
  assert.equal(
    (await ok(admin('POST', `/v1/key/decrypt/${created}`, { ciphertext, context: b64('c') }))).json().plaintext,
    plaintext,
  );
  assert.equal((await ok(admin('GET', `/v1/key/describe/${imported}`))).json().id, '66687aadf862bd776c8fc18b8e9f8e20');
  assert.ok((await listNames('/v1/key/list/persist*')).includes(imported));
});
