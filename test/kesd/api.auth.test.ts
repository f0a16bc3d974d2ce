// Authentication and authorisation over real mTLS: identities, the sysadmin / enclave admin / policy model,
// enclave isolation, the policy and identity APIs, and sealing (kes-protocol §2, §3, §5.3–5.4, §5.6, §9.5).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeIdentity, request, startTestServer, type Reply, type TestIdentity, type TestServer } from './harness.js';

let s: TestServer;
let stranger: TestIdentity;
before(async () => {
  s = await startTestServer();
  stranger = await makeIdentity(s.dir, 'stranger');
});
after(async () => {
  await s.stop();
});

let counter = 0;
const fresh = (prefix = 'k') => `${prefix}-${++counter}`;
const b64 = (data: string) => Buffer.from(data).toString('base64');
const ndjson = (text: string) =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
const as = (who: TestIdentity | undefined, method: string, path: string, body?: unknown) =>
  request(s.agent(who), s.port, method, path, body);

const NOT_ALLOWED = 'not authorized: insufficient permissions';

function assertError(r: Reply, status: number, message: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json().message, message);
}

async function ok(r: Promise<Reply>): Promise<Reply> {
  const reply = await r;
  assert.equal(reply.status, 200, reply.text);
  return reply;
}

/** A new identity with its own policy in the default enclave, written and assigned by the enclave admin. */
async function identityWithPolicy(name: string, allow: string[], deny: string[] = []): Promise<TestIdentity> {
  const id = await makeIdentity(s.dir, name);
  await ok(as(s.admin, 'POST', `/v1/policy/write/${name}`, { allow, deny }));
  await ok(as(s.admin, 'POST', `/v1/policy/assign/${name}`, { identity: id.identity }));
  return id;
}

// ---- authentication -------------------------------------------------------------------------------

test('a key route without a client certificate is 400 tls: client certificate is required', async () => {
  assertError(await as(undefined, 'GET', '/v1/key/describe/minio-default'), 400, 'tls: client certificate is required');
  assertError(await as(undefined, 'POST', `/v1/key/create/${fresh()}`), 400, 'tls: client certificate is required');
  assertError(await as(undefined, 'GET', '/v1/status'), 400, 'tls: client certificate is required');
});

test('/version works without a client certificate', async () => {
  const r = await ok(as(undefined, 'GET', '/version'));
  assert.equal(typeof r.json().version, 'string');
});

test('an unknown identity is 403 not authorized', async () => {
  assertError(await as(stranger, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
  assertError(await as(stranger, 'POST', `/v1/key/create/${fresh()}`), 403, NOT_ALLOWED);
  assertError(await as(stranger, 'GET', '/v1/status'), 403, NOT_ALLOWED);
});

// ---- policies in action ---------------------------------------------------------------------------

test('the user may call the routes its policy allows', async () => {
  const name = fresh();
  await ok(as(s.user, 'POST', `/v1/key/create/${name}`));
  const { plaintext, ciphertext } = (await ok(as(s.user, 'POST', `/v1/key/generate/${name}`, {}))).json();
  assert.equal((await ok(as(s.user, 'POST', `/v1/key/decrypt/${name}`, { ciphertext }))).json().plaintext, plaintext);
  await ok(as(s.user, 'GET', '/v1/key/list/*'));
  await ok(as(s.user, 'GET', '/v1/status'));
});

test('the user is 403 on routes its policy does not allow', async () => {
  assertError(await as(s.user, 'GET', '/v1/policy/list/*'), 403, NOT_ALLOWED);
  assertError(await as(s.user, 'GET', '/v1/metrics'), 403, NOT_ALLOWED);
  assertError(await as(s.user, 'POST', `/v1/secret/create/${fresh()}`, { bytes: b64('x') }), 403, NOT_ALLOWED);
});

test('deny overrides allow: the user cannot delete a key', async () => {
  const name = fresh();
  await ok(as(s.user, 'POST', `/v1/key/create/${name}`));
  assertError(await as(s.user, 'DELETE', `/v1/key/delete/${name}`), 403, NOT_ALLOWED);
  await ok(as(s.user, 'GET', `/v1/key/describe/${name}`));
});

test('policies see the decoded path: a percent-escaped name does not bypass a deny rule', async () => {
  const member = await identityWithPolicy(fresh('pol'), ['/v1/key/*'], ['/v1/key/describe/minio-default']);
  assertError(await as(member, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
  assertError(await as(member, 'GET', '/v1/key/describe/minio%2Ddefault'), 403, NOT_ALLOWED);
  assertError(await as(member, 'GET', '/v1/key/describe/%6Dinio-default'), 403, NOT_ALLOWED);
  await ok(as(member, 'POST', '/v1/key/generate/minio%2Ddefault', {}));
});

test('the enclave admin is allowed on every route of its enclave', async () => {
  const name = fresh();
  await ok(as(s.admin, 'POST', `/v1/key/create/${name}`));
  await ok(as(s.admin, 'POST', `/v1/key/generate/${name}`, {}));
  await ok(as(s.admin, 'GET', '/v1/key/list/*'));
  await ok(as(s.admin, 'DELETE', `/v1/key/delete/${name}`));
  await ok(as(s.admin, 'POST', `/v1/secret/create/${name}`, { bytes: b64('x') }));
  await ok(as(s.admin, 'GET', '/v1/policy/list/*'));
  await ok(as(s.admin, 'GET', '/v1/identity/list/*'));
  await ok(as(s.admin, 'GET', `/v1/identity/describe/${s.user.identity}`));
  await ok(as(s.admin, 'GET', '/v1/status'));
  await ok(as(s.admin, 'GET', '/v1/api'));
});

test('the sysadmin is 403 on the key routes of an enclave', async () => {
  assertError(await as(s.sysadmin, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
  assertError(await as(s.sysadmin, 'POST', `/v1/key/create/${fresh()}`), 403, NOT_ALLOWED);
  assertError(await as(s.sysadmin, 'POST', '/v1/key/generate/minio-default', {}), 403, NOT_ALLOWED);
  assertError(await as(s.sysadmin, 'GET', '/v1/key/list/*'), 403, NOT_ALLOWED);
  assertError(await as(s.sysadmin, 'GET', '/v1/policy/list/*'), 403, NOT_ALLOWED);
});

test('the sysadmin is allowed on /v1/status, /v1/metrics, /v1/api and the enclave routes', async () => {
  await ok(as(s.sysadmin, 'GET', '/v1/status'));
  await ok(as(s.sysadmin, 'GET', '/v1/metrics'));
  await ok(as(s.sysadmin, 'GET', '/v1/api'));
  const enclave = fresh('enc');
  await ok(as(s.sysadmin, 'POST', `/v1/enclave/create/${enclave}`, { admin: stranger.identity }));
  await ok(as(s.sysadmin, 'GET', `/v1/enclave/describe/${enclave}`));
  await ok(as(s.sysadmin, 'DELETE', `/v1/enclave/delete/${enclave}`));
});

test('only the sysadmin may create, describe or delete enclaves', async () => {
  for (const who of [s.admin, s.user, stranger]) {
    assertError(
      await as(who, 'POST', `/v1/enclave/create/${fresh('enc')}`, { admin: stranger.identity }),
      403,
      NOT_ALLOWED,
    );
    assertError(await as(who, 'GET', '/v1/enclave/describe/default'), 403, NOT_ALLOWED);
    assertError(await as(who, 'DELETE', '/v1/enclave/delete/default'), 403, NOT_ALLOWED);
  }
  await ok(as(s.admin, 'GET', '/v1/key/describe/minio-default')); // default still exists
});

// Finding 6 (docs/security.md): only the system admin learns that an enclave does not exist.
test('?enclave=<unknown> is 403 for anyone but the system admin, as for an enclave that exists', async () => {
  assertError(
    await as(s.admin, 'GET', '/v1/key/describe/minio-default?enclave=unknown'),
    403,
    'not authorized: insufficient permissions',
  );
  assertError(
    await as(s.user, 'POST', '/v1/key/generate/minio-default?enclave=unknown', {}),
    403,
    'not authorized: insufficient permissions',
  );
  assertError(
    await as(s.sysadmin, 'GET', '/v1/key/describe/minio-default?enclave=unknown'),
    404,
    'enclave does not exist',
  );
});

test('an identity of one enclave cannot reach the keys of another', async () => {
  const admin2 = await makeIdentity(s.dir, 'admin2');
  await ok(as(s.sysadmin, 'POST', '/v1/enclave/create/tenant2', { admin: admin2.identity }));
  const name = fresh();
  await ok(as(admin2, 'POST', `/v1/key/create/${name}?enclave=tenant2`));
  await ok(as(admin2, 'GET', `/v1/key/describe/${name}?enclave=tenant2`));
  // The default enclave's admin and user are strangers in tenant2 …
  assertError(await as(s.admin, 'GET', `/v1/key/describe/${name}?enclave=tenant2`), 403, NOT_ALLOWED);
  assertError(await as(s.admin, 'POST', `/v1/key/generate/${name}?enclave=tenant2`, {}), 403, NOT_ALLOWED);
  assertError(await as(s.user, 'GET', `/v1/key/describe/${name}?enclave=tenant2`), 403, NOT_ALLOWED);
  // … the key does not exist in the default enclave …
  assertError(await as(s.admin, 'GET', `/v1/key/describe/${name}`), 404, 'key does not exist');
  // … and tenant2's admin is a stranger in the default enclave.
  assertError(await as(admin2, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
  assertError(await as(admin2, 'GET', '/v1/key/describe/minio-default?enclave=default'), 403, NOT_ALLOWED);
  const listed = ndjson((await ok(as(admin2, 'GET', '/v1/key/list/*?enclave=tenant2'))).text).map((l) => l.name);
  assert.deepEqual(listed, [name]);
});

// ---- policy API -----------------------------------------------------------------------------------

test('the enclave admin writes, reads, describes, lists, assigns and deletes a policy', async () => {
  const policy = fresh('pol');
  const member = await makeIdentity(s.dir, fresh('member'));
  const keyName = fresh();
  await ok(as(s.admin, 'POST', `/v1/key/create/${keyName}`));

  await ok(
    as(s.admin, 'POST', `/v1/policy/write/${policy}`, {
      allow: ['/v1/key/describe/*'],
      deny: ['/v1/key/describe/secret-*'],
    }),
  );
  const read = (await ok(as(s.admin, 'GET', `/v1/policy/read/${policy}`))).json();
  assert.deepEqual(read.allow, { '/v1/key/describe/*': {} });
  assert.deepEqual(read.deny, { '/v1/key/describe/secret-*': {} });
  assert.equal(read.created_by, s.admin.identity);

  const described = (await ok(as(s.admin, 'GET', `/v1/policy/describe/${policy}`))).json();
  assert.equal(described.created_by, s.admin.identity);
  assert.ok(!Number.isNaN(Date.parse(described.created_at)));

  const list = await ok(as(s.admin, 'GET', '/v1/policy/list/*'));
  assert.equal(list.headers['content-type'], 'application/x-ndjson');
  const names = ndjson(list.text).map((l) => l.name);
  assert.ok(names.includes(policy) && names.includes('app'), String(names));
  assert.deepEqual(
    ndjson((await ok(as(s.admin, 'GET', `/v1/policy/list/${policy}`))).text).map((l) => l.name),
    [policy],
  );

  await ok(as(s.admin, 'POST', `/v1/policy/assign/${policy}`, { identity: member.identity }));
  assert.equal((await ok(as(s.admin, 'GET', `/v1/identity/describe/${member.identity}`))).json().policy, policy);
  await ok(as(member, 'GET', `/v1/key/describe/${keyName}`));
  assertError(await as(member, 'POST', `/v1/key/generate/${keyName}`, {}), 403, NOT_ALLOWED);

  await ok(as(s.admin, 'DELETE', `/v1/policy/delete/${policy}`));
  assertError(await as(s.admin, 'GET', `/v1/policy/read/${policy}`), 404, 'policy does not exist');
  assertError(await as(s.admin, 'GET', `/v1/policy/describe/${policy}`), 404, 'policy does not exist');
  assertError(await as(s.admin, 'DELETE', `/v1/policy/delete/${policy}`), 404, 'policy does not exist');
});

test('policy write accepts the v0.22 client body {"Allow","Deny"} (case-insensitive keys)', async () => {
  const policy = fresh('pol');
  await ok(
    as(s.admin, 'POST', `/v1/policy/write/${policy}`, {
      Allow: ['/v1/key/list/*'],
      Deny: ['/v1/key/delete/*'],
      Info: {},
    }),
  );
  const read = (await ok(as(s.admin, 'GET', `/v1/policy/read/${policy}`))).json();
  assert.deepEqual(read.allow, { '/v1/key/list/*': {} });
  assert.deepEqual(read.deny, { '/v1/key/delete/*': {} });
});

test('policy write replaces an existing policy and its assignments follow the new rules', async () => {
  const key = fresh();
  await ok(as(s.admin, 'POST', `/v1/key/create/${key}`));
  const member = await identityWithPolicy(fresh('pol'), ['/v1/key/describe/*']);
  const policy = (await ok(as(s.admin, 'GET', `/v1/identity/describe/${member.identity}`))).json().policy;
  await ok(as(member, 'GET', `/v1/key/describe/${key}`));
  await ok(as(s.admin, 'POST', `/v1/policy/write/${policy}`, { allow: ['/v1/key/list/*'] }));
  assertError(await as(member, 'GET', `/v1/key/describe/${key}`), 403, NOT_ALLOWED);
  await ok(as(member, 'GET', '/v1/key/list/*'));
});

test('an identity cannot assign a policy to itself: 403', async () => {
  const delegate = await identityWithPolicy(fresh('delegate'), ['/v1/policy/*']);
  assertError(
    await as(delegate, 'POST', '/v1/policy/assign/app', { identity: delegate.identity }),
    403,
    'identity cannot assign policy to itself',
  );
  // It may assign others.
  const other = await makeIdentity(s.dir, fresh('other'));
  await ok(as(delegate, 'POST', '/v1/policy/assign/app', { identity: other.identity }));
});

test('assigning a policy to the system admin is 400', async () => {
  assertError(
    await as(s.admin, 'POST', '/v1/policy/assign/app', { identity: s.sysadmin.identity }),
    400,
    'cannot assign policy to system admin',
  );
});

test('assigning a policy to the enclave admin is 400', async () => {
  const delegate = await identityWithPolicy(fresh('delegate'), ['/v1/policy/*']);
  assertError(
    await as(delegate, 'POST', '/v1/policy/assign/app', { identity: s.admin.identity }),
    400,
    'cannot assign policy to admin',
  );
  assert.equal((await ok(as(s.admin, 'GET', `/v1/identity/describe/${s.admin.identity}`))).json().admin, true);
});

test('assigning a policy to an empty identity is 400 identity is unknown', async () => {
  assertError(await as(s.admin, 'POST', '/v1/policy/assign/app', { identity: '' }), 400, 'identity is unknown');
  assertError(await as(s.admin, 'POST', '/v1/policy/assign/app', {}), 400, 'identity is unknown');
});

test('the enclave admin identity cannot be deleted: 400 cannot delete admin', async () => {
  assertError(await as(s.admin, 'DELETE', `/v1/identity/delete/${s.admin.identity}`), 400, 'cannot delete admin');
  await ok(as(s.admin, 'GET', '/v1/key/describe/minio-default'));
});

test('the system admin identity cannot be deleted: 400 cannot delete system admin', async () => {
  assertError(
    await as(s.admin, 'DELETE', `/v1/identity/delete/${s.sysadmin.identity}`),
    400,
    'cannot delete system admin',
  );
});

test('deleting an assigned identity revokes its access', async () => {
  const member = await identityWithPolicy(fresh('pol'), ['/v1/key/describe/*']);
  await ok(as(member, 'GET', '/v1/key/describe/minio-default'));
  await ok(as(s.admin, 'DELETE', `/v1/identity/delete/${member.identity}`));
  assertError(await as(member, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
  assertError(await as(s.admin, 'GET', `/v1/identity/describe/${member.identity}`), 404, 'identity does not exist');
  assertError(await as(s.admin, 'DELETE', `/v1/identity/delete/${member.identity}`), 404, 'identity does not exist');
});

test('a policy pattern with glob syntax is 400 with a message naming the pattern', async () => {
  for (const pattern of ['/v1/key/*/x', '/v1/key/create/a?', '/v1/key/[ab]*']) {
    const policy = fresh('glob');
    const r = await as(s.admin, 'POST', `/v1/policy/write/${policy}`, { allow: [pattern] });
    assert.equal(r.status, 400, r.text);
    assert.ok(r.json().message.includes(pattern), r.json().message);
    assert.match(r.json().message, /glob/);
    assertError(await as(s.admin, 'GET', `/v1/policy/read/${policy}`), 404, 'policy does not exist');
  }
});

test('deleting a policy makes its assigned identities 403', async () => {
  const name = fresh('pol');
  const member = await identityWithPolicy(name, ['/v1/key/*']);
  await ok(as(member, 'GET', '/v1/key/describe/minio-default'));
  await ok(as(s.admin, 'DELETE', `/v1/policy/delete/${name}`));
  assertError(await as(member, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
  // The assignment itself remains (KES v0.22), pointing at a missing policy.
  assert.equal((await ok(as(s.admin, 'GET', `/v1/identity/describe/${member.identity}`))).json().policy, name);
});

// ---- identity API ---------------------------------------------------------------------------------

test('self describe returns the user, its policy name and allow/deny maps', async () => {
  const r = await ok(as(s.user, 'GET', '/v1/identity/self/describe'));
  const d = r.json();
  assert.equal(d.identity, s.user.identity);
  assert.equal(d.policy, 'app');
  assert.deepEqual(d.allow, { '/v1/key/*': {}, '/v1/status': {} });
  assert.deepEqual(d.deny, { '/v1/key/delete/*': {} });
});

test('self describe needs no policy permission but an unknown certificate is 404 identity does not exist', async () => {
  assertError(await as(stranger, 'GET', '/v1/identity/self/describe'), 404, 'identity does not exist');
  assertError(await as(undefined, 'GET', '/v1/identity/self/describe'), 400, 'tls: client certificate is required');
});

test('identity list is NDJSON and includes the enclave admin', async () => {
  const r = await ok(as(s.admin, 'GET', '/v1/identity/list/*'));
  assert.equal(r.headers['content-type'], 'application/x-ndjson');
  const lines = ndjson(r.text);
  const admin = lines.find((l) => l.identity === s.admin.identity);
  assert.ok(admin, r.text);
  assert.equal(admin.admin, true);
  const user = lines.find((l) => l.identity === s.user.identity);
  assert.equal(user?.policy, 'app');
  assert.ok(!lines.some((l) => l.identity === s.sysadmin.identity));
});

// ---- seal (last: it needs a restart) ---------------------------------------------------------------

test('a non-sysadmin cannot seal the system: 403', async () => {
  assertError(await as(s.admin, 'POST', '/v1/sys/seal'), 403, NOT_ALLOWED);
  assertError(await as(s.user, 'POST', '/v1/sys/seal'), 403, NOT_ALLOWED);
  await ok(as(s.admin, 'GET', '/v1/key/describe/minio-default'));
});

test('sealing stops key routes with 403 system is sealed until a restart', async () => {
  const name = fresh();
  await ok(as(s.admin, 'POST', `/v1/key/create/${name}`));
  const member = await identityWithPolicy(fresh('pol'), ['/v1/key/describe/*']);
  const { plaintext, ciphertext } = (await ok(as(s.admin, 'POST', `/v1/key/generate/${name}`, {}))).json();
  const sealed = await ok(as(s.sysadmin, 'POST', '/v1/sys/seal'));
  assert.equal(sealed.text, '');
  assertError(await as(s.admin, 'POST', `/v1/key/decrypt/${name}`, { ciphertext }), 403, 'system is sealed');
  assertError(await as(s.admin, 'GET', `/v1/key/describe/${name}`), 403, 'system is sealed');
  assertError(await as(s.user, 'POST', `/v1/key/generate/${name}`, {}), 403, 'system is sealed');
  assertError(await as(s.admin, 'GET', '/v1/policy/list/*'), 403, 'system is sealed');
  assertError(await as(s.sysadmin, 'POST', '/v1/sys/seal'), 403, 'system is sealed');
  s = await s.restart();
  assert.equal((await ok(as(s.admin, 'POST', `/v1/key/decrypt/${name}`, { ciphertext }))).json().plaintext, plaintext);
  await ok(as(s.user, 'POST', `/v1/key/generate/${name}`, {}));
  // State written through the API survives the restart too: policies, assignments, enclaves.
  await ok(as(member, 'GET', `/v1/key/describe/${name}`));
  assertError(await as(member, 'GET', '/v1/key/list/*'), 403, NOT_ALLOWED);
  await ok(as(s.sysadmin, 'GET', '/v1/enclave/describe/tenant2'));
});

test("a malformed percent-escape in a route argument is a 400 naming that route's argument", async () => {
  assertError(
    await as(s.admin, 'GET', '/v1/key/describe/a%ZZ'),
    400,
    "key name 'a%ZZ' is empty, too long or contains invalid characters",
  );
  assertError(
    await as(s.admin, 'GET', '/v1/policy/describe/p%ZZ'),
    400,
    "policy name 'p%ZZ' is empty, too long or contains invalid characters",
  );
  assertError(
    await as(s.admin, 'GET', '/v1/secret/read/s%ZZ'),
    400,
    "secret name 's%ZZ' is empty, too long or contains invalid characters",
  );
  assertError(
    await as(s.admin, 'GET', '/v1/key/list/k%ZZ'),
    400,
    "listing pattern 'k%ZZ' is empty, too long or is invalid",
  );
});
