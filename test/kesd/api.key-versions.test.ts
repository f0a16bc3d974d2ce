// Key versions over real mTLS (kesd's extension, issue 16): /v1/key/rotate adds a version, generate and encrypt use
// the newest, decrypt finds the version that sealed a ciphertext (or the one a `version` field names), describe
// lists the versions, HMACs stay version 1's, and a deleted version's ciphertexts fail with the KES decrypt error.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, type Reply, type TestServer } from './harness.js';

let s: TestServer;
before(async () => {
  // The user may rotate only keys named 'rot-*', and delete no version.
  s = await startTestServer({
    userPolicy: { allow: ['/v1/key/generate/*', '/v1/key/decrypt/*', '/v1/key/rotate/rot-*'], deny: [] },
  });
});
after(async () => {
  await s.stop();
});

let counter = 0;
const fresh = (prefix = 'v') => `${prefix}-${++counter}`;
const b64 = (data: string | Uint8Array) => Buffer.from(data).toString('base64');
const admin = (method: string, path: string, body?: unknown) => s.request(s.admin, method, path, body);
const DECRYPT_ERROR = 'decryption failed: ciphertext is not authentic';

async function ok(r: Promise<Reply>): Promise<Reply> {
  const reply = await r;
  assert.equal(reply.status, 200, reply.text);
  return reply;
}

function assertError(r: Reply, status: number, message: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json().message, message);
}

async function generate(
  name: string,
  context?: string,
): Promise<{ plaintext: string; ciphertext: string; version: string }> {
  return (
    await ok(admin('POST', `/v1/key/generate/${name}`, context === undefined ? {} : { context: b64(context) }))
  ).json();
}

const decrypt = (name: string, body: Record<string, unknown>) => admin('POST', `/v1/key/decrypt/${name}`, body);

test('rotate adds versions: generate uses the newest, every older ciphertext still decrypts, describe lists them', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const v1 = await generate(name, 'ctx');
  assert.equal(v1.version, '1');
  const before = (await ok(admin('GET', `/v1/key/describe/${name}`))).json();

  const r2 = (await ok(admin('POST', `/v1/key/rotate/${name}`))).json();
  assert.equal(r2.name, name);
  assert.equal(r2.version, '2');
  assert.ok(!Number.isNaN(Date.parse(r2.created_at)), r2.created_at);
  const v2 = await generate(name, 'ctx');
  assert.equal(v2.version, '2');
  assert.equal((await ok(admin('PUT', `/v1/key/rotate/${name}`))).json().version, '3', 'PUT rotates too');
  const v3 = await generate(name, 'ctx');
  assert.equal(v3.version, '3');

  for (const dek of [v1, v2, v3]) {
    const got = (await ok(decrypt(name, { ciphertext: dek.ciphertext, context: b64('ctx') }))).json();
    assert.equal(got.plaintext, dek.plaintext, `version ${dek.version}`);
    assertError(await decrypt(name, { ciphertext: dek.ciphertext, context: b64('other') }), 400, DECRYPT_ERROR);
  }

  const info = (await ok(admin('GET', `/v1/key/describe/${name}`))).json();
  // What KES clients read stays version 1's: the key's id, algorithm and dates do not change with a rotation.
  for (const field of ['name', 'id', 'algorithm', 'created_at', 'created_by'])
    assert.equal(info[field], before[field], field);
  assert.equal(info.version, '3');
  assert.deepEqual(
    info.versions.map((v: { version: string }) => v.version),
    ['3', '2', '1'],
  );
  assert.equal(info.versions[2].id, before.id);
  assert.equal(new Set(info.versions.map((v: { id: string }) => v.id)).size, 3, 'each version has its own key');
  for (const v of info.versions) {
    assert.equal(v.algorithm, 'AES256-GCM_SHA256');
    assert.ok(!Number.isNaN(Date.parse(v.created_at)), v.created_at);
    assert.equal(v.created_by, s.admin.identity);
  }
  assert.ok(Date.parse(info.versions[0].created_at) >= Date.parse(info.versions[2].created_at));

  // encrypt too uses the newest version, and says so.
  const sealed = (await ok(admin('POST', `/v1/key/encrypt/${name}`, { plaintext: b64('hello') }))).json();
  assert.equal(sealed.version, '3');
  assert.equal((await ok(decrypt(name, { ciphertext: sealed.ciphertext }))).json().plaintext, b64('hello'));
});

test('a `version` field is honoured: that version only; one the key does not have is the KES decrypt error', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const v1 = await generate(name);
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  const v2 = await generate(name);

  assert.equal((await ok(decrypt(name, { ciphertext: v1.ciphertext, version: '1' }))).json().plaintext, v1.plaintext);
  assert.equal((await ok(decrypt(name, { ciphertext: v2.ciphertext, version: '2' }))).json().plaintext, v2.plaintext);
  assert.equal(
    (await ok(decrypt(name, { ciphertext: v2.ciphertext, version: 2 }))).json().plaintext,
    v2.plaintext,
    'a JSON number',
  );
  assert.equal(
    (await ok(decrypt(name, { ciphertext: v1.ciphertext, version: '' }))).json().plaintext,
    v1.plaintext,
    'empty: not given (kms-go omitempty)',
  );
  // The wrong version is not tried further: the named version is what the client says sealed it.
  assertError(await decrypt(name, { ciphertext: v1.ciphertext, version: '2' }), 400, DECRYPT_ERROR);
  assertError(await decrypt(name, { ciphertext: v2.ciphertext, version: '1' }), 400, DECRYPT_ERROR);
  assertError(await decrypt(name, { ciphertext: v1.ciphertext, version: '7' }), 400, DECRYPT_ERROR);
  for (const bad of ['0', '-1', 'v1', '1.5', 1.5, true, {}]) {
    assertError(await decrypt(name, { ciphertext: v1.ciphertext, version: bad }), 400, 'invalid request body');
  }
  // bulk decrypt: per item.
  const bulk = await ok(
    admin('POST', `/v1/key/bulk/decrypt/${name}`, [
      { ciphertext: v1.ciphertext },
      { ciphertext: v2.ciphertext, version: '2' },
    ]),
  );
  assert.deepEqual(bulk.json(), [{ plaintext: v1.plaintext }, { plaintext: v2.plaintext }]);
  assertError(
    await admin('POST', `/v1/key/bulk/decrypt/${name}`, [
      { ciphertext: v1.ciphertext },
      { ciphertext: v2.ciphertext, version: '1' },
    ]),
    400,
    DECRYPT_ERROR,
  );
});

test('HMACs do not change with a rotation (MinIO derives its root credentials from them)', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const mac = async () =>
    (await ok(admin('PUT', `/v1/key/hmac/${name}`, { message: b64('root access key') }))).json().hmac;
  const before = await mac();
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  assert.equal(await mac(), before);
});

test('deleting a version: its ciphertexts fail with the KES decrypt error, the others still decrypt', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  const v1 = await generate(name);
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  const v2 = await generate(name);
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  const v3 = await generate(name);

  await ok(admin('DELETE', `/v1/key/version/delete/${name}/2`));
  assertError(await decrypt(name, { ciphertext: v2.ciphertext }), 400, DECRYPT_ERROR);
  assertError(await decrypt(name, { ciphertext: v2.ciphertext, version: '2' }), 400, DECRYPT_ERROR);
  assert.equal((await ok(decrypt(name, { ciphertext: v1.ciphertext }))).json().plaintext, v1.plaintext);
  assert.equal((await ok(decrypt(name, { ciphertext: v3.ciphertext }))).json().plaintext, v3.plaintext);
  assert.deepEqual(
    (await ok(admin('GET', `/v1/key/describe/${name}`))).json().versions.map((v: { version: string }) => v.version),
    ['3', '1'],
  );

  assertError(await admin('DELETE', `/v1/key/version/delete/${name}/2`), 404, 'key version does not exist');
  assertError(
    await admin('DELETE', `/v1/key/version/delete/${name}/3`),
    400,
    'cannot delete the newest key version: it encrypts; rotate first',
  );
  assertError(
    await admin('DELETE', `/v1/key/version/delete/${name}/1`),
    400,
    'cannot delete key version 1: it is the key record itself; delete the key instead',
  );
  assertError(await admin('DELETE', `/v1/key/version/delete/no-such-key/2`), 404, 'key does not exist');
  assertError(
    await admin('DELETE', `/v1/key/version/delete/${name}/x`),
    400,
    "key version 'x' is empty, too long or contains invalid characters",
  );
  assertError(
    await admin('DELETE', `/v1/key/version/delete/${name}`),
    400,
    "key version '' is empty, too long or contains invalid characters",
  );
  assertError(await admin('POST', `/v1/key/rotate/no-such-key`), 404, 'key does not exist');
  assertError(
    await admin('POST', `/v1/key/rotate/bad.name`),
    400,
    "key name 'bad.name' is empty, too long or contains invalid characters",
  );

  // Versions never come back with a key re-created under the same name.
  await ok(admin('DELETE', `/v1/key/delete/${name}`));
  await ok(admin('POST', `/v1/key/create/${name}`));
  const info = (await ok(admin('GET', `/v1/key/describe/${name}`))).json();
  assert.deepEqual(
    info.versions.map((v: { version: string }) => v.version),
    ['1'],
  );
  for (const dek of [v1, v3]) assertError(await decrypt(name, { ciphertext: dek.ciphertext }), 400, DECRYPT_ERROR);
});

test('legacy ciphertexts under a rotated key: the version their key id names decrypts them', async () => {
  const name = fresh();
  // kes-protocol §8.4: the all-zero key, its msgpack and JSON vectors (16 zero bytes).
  await ok(admin('POST', `/v1/key/import/${name}`, { key: b64(Buffer.alloc(32)), cipher: 'AES256' }));
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  const msgpack =
    'lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=';
  const json = b64(
    '{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}',
  );
  for (const ciphertext of [msgpack, json]) {
    assert.equal((await ok(decrypt(name, { ciphertext }))).json().plaintext, b64(Buffer.alloc(16)));
  }
  assert.equal((await ok(admin('GET', `/v1/key/describe/${name}`))).json().id, '66687aadf862bd776c8fc18b8e9f8e20');
});

test('rotation has its own policy path; concurrent rotations each get a version of their own', async () => {
  const denied = fresh('other');
  const allowed = fresh('rot');
  for (const name of [denied, allowed]) await ok(admin('POST', `/v1/key/create/${name}`));
  assertError(
    await s.request(s.user, 'POST', `/v1/key/rotate/${denied}`),
    403,
    'not authorized: insufficient permissions',
  );
  assertError(
    await s.request(s.user, 'DELETE', `/v1/key/version/delete/${allowed}/2`),
    403,
    'not authorized: insufficient permissions',
  );

  const rotations = await Promise.all(
    Array.from({ length: 8 }, () => ok(s.request(s.user, 'POST', `/v1/key/rotate/${allowed}`))),
  );
  assert.deepEqual(
    rotations.map((r) => Number(r.json().version)).sort((a, b) => a - b),
    [2, 3, 4, 5, 6, 7, 8, 9],
  );
  const dek = (await ok(s.request(s.user, 'POST', `/v1/key/generate/${allowed}`, {}))).json();
  assert.equal(dek.version, '9');

  const routes = (await ok(admin('GET', '/v1/api')))
    .json()
    .map((r: { method: string; path: string }) => `${r.method} ${r.path}`);
  assert.ok(routes.includes('POST /v1/key/rotate/'), routes.join(', '));
  assert.ok(routes.includes('DELETE /v1/key/version/delete/'), routes.join(', '));
});

test('listing is unchanged by versions: one line per key, version 1 as before', async () => {
  const name = fresh('list');
  await ok(admin('POST', `/v1/key/create/${name}`));
  const line = async () => (await ok(admin('GET', `/v1/key/list/${name}`))).text;
  const before = await line();
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  assert.equal(await line(), before);
});

test('versions survive a restart', async () => {
  const name = fresh();
  await ok(admin('POST', `/v1/key/create/${name}`));
  await ok(admin('POST', `/v1/key/rotate/${name}`));
  const dek = await generate(name);
  s = await s.restart();
  assert.equal((await ok(decrypt(name, { ciphertext: dek.ciphertext }))).json().plaintext, dek.plaintext);
  assert.equal((await generate(name)).version, '2');
});
