// Nobody gets in who should not: an authorisation matrix over EVERY route in kesd/src/api/routes.ts × every kind
// of caller, with the expected outcome derived from the route's auth mode (kes-protocol §3, §9.5):
//   none      → everybody passes;
//   identify  → any client certificate passes; none → 400 tls: client certificate is required;
//   server    → the system admin, the enclave admin and an allowing policy pass; other identities 403;
//   enclave   → the enclave admin and an allowing policy pass (the system admin does NOT); other identities 403;
//   sysadmin  → only the system admin passes; every other identity 403, whatever its policy says.
// "Passes" = neither 401/403 nor the no-certificate 400: the argument may still make it a 400/404.
// Then the escalations: assigning a policy to oneself, deleting or re-assigning an admin, the enclave admin
// creating enclaves or sealing, and reaching another enclave's keys via ?enclave= (or Kes-Enclave).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { routes } from '../../kesd/src/api/routes.js';
import type { Authenticator } from '../../kesd/src/api/auth.js';
import {
  makeIdentity,
  readReply,
  request,
  startTestServer,
  type Reply,
  type TestIdentity,
  type TestServer,
} from './harness.js';

let s: TestServer;
const ids: Record<string, TestIdentity> = {};
let ciphertext: string;
let otherCiphertext: string;

const NOT_ALLOWED = 'not authorized: insufficient permissions';
const NO_CERT = 'tls: client certificate is required';
const b64 = (data: string | Buffer) => Buffer.from(data).toString('base64');
const hex = () => randomBytes(32).toString('hex');
const as = (who: TestIdentity | undefined, method: string, path: string, body?: unknown) =>
  request(s.agent(who), s.port, method, path, body);

async function ok(r: Promise<Reply>): Promise<Reply> {
  const reply = await r;
  assert.equal(reply.status, 200, reply.text);
  return reply;
}

function assertError(r: Reply, status: number, message: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json().message, message);
}

/** Allow patterns naming every route: exact paths as they are, prefix routes with a trailing '*'. */
const EVERY_ROUTE = [...new Set(routes.map((r) => (r.path.endsWith('/') ? `${r.path}*` : r.path)))];

before(async () => {
  s = await startTestServer({ keys: ['minio-default'] });
  for (const name of [
    'allowed',
    'denied',
    'override',
    'stranger',
    'otherAdmin',
    'otherMember',
    'dangling',
    'delegate',
    'deleter',
    'star',
  ]) {
    ids[name] = await makeIdentity(s.dir, name);
  }
  const policies: [string, { allow: string[]; deny: string[] }, string][] = [
    ['matrix-allow', { allow: EVERY_ROUTE, deny: [] }, 'allowed'],
    ['matrix-deny', { allow: ['/v1/nothing'], deny: [] }, 'denied'],
    ['matrix-override', { allow: EVERY_ROUTE, deny: EVERY_ROUTE }, 'override'],
    ['matrix-dangling', { allow: EVERY_ROUTE, deny: [] }, 'dangling'],
    [
      'delegate',
      {
        allow: ['/v1/policy/assign/*', '/v1/policy/describe/*', '/v1/identity/self/describe', '/v1/key/describe/*'],
        deny: [],
      },
      'delegate',
    ],
    ['deleter', { allow: ['/v1/identity/delete/*', '/v1/identity/describe/*'], deny: [] }, 'deleter'],
    ['star', { allow: ['*'], deny: [] }, 'star'],
  ];
  for (const [name, rules, who] of policies) {
    await ok(as(s.admin, 'POST', `/v1/policy/write/${name}`, rules));
    await ok(as(s.admin, 'POST', `/v1/policy/assign/${name}`, { identity: ids[who]!.identity }));
  }
  await ok(as(s.admin, 'DELETE', '/v1/policy/delete/matrix-dangling')); // assigned to a policy that is gone
  await ok(as(s.admin, 'POST', '/v1/policy/write/matrix-scratch', { allow: [], deny: [] }));
  await ok(as(s.admin, 'POST', '/v1/secret/create/matrix-secret', { bytes: b64('s') }));
  ({ ciphertext } = (await ok(as(s.admin, 'POST', '/v1/key/generate/minio-default', {}))).json());

  // Another enclave: its admin, a member allowed everything there, and a key named like one in 'default'.
  await ok(as(s.sysadmin, 'POST', '/v1/enclave/create/other', { admin: ids.otherAdmin!.identity }));
  await ok(as(ids.otherAdmin, 'POST', '/v1/policy/write/all?enclave=other', { allow: ['*'], deny: [] }));
  await ok(as(ids.otherAdmin, 'POST', '/v1/policy/assign/all?enclave=other', { identity: ids.otherMember!.identity }));
  await ok(as(ids.otherAdmin, 'POST', '/v1/key/create/minio-default?enclave=other'));
  await ok(as(ids.otherAdmin, 'POST', '/v1/key/create/other-only?enclave=other'));
  ({ ciphertext: otherCiphertext } = (
    await ok(as(ids.otherAdmin, 'POST', '/v1/key/generate/other-only?enclave=other', {}))
  ).json());
});
after(async () => {
  await s?.stop();
});

// ---- the matrix -----------------------------------------------------------------------------------------

type Caller =
  | 'no cert'
  | 'unknown identity'
  | 'allowed by policy'
  | 'denied by policy'
  | 'deny overrides allow'
  | 'dangling policy'
  | 'enclave admin'
  | 'system admin'
  | 'other enclave admin'
  | 'other enclave member';
const CALLERS: readonly Caller[] = [
  'no cert',
  'unknown identity',
  'allowed by policy',
  'denied by policy',
  'deny overrides allow',
  'dangling policy',
  'enclave admin',
  'system admin',
  'other enclave admin',
  'other enclave member',
];

const identityOf = (c: Caller): TestIdentity | undefined =>
  ({
    'no cert': undefined,
    'unknown identity': ids.stranger,
    'allowed by policy': ids.allowed,
    'denied by policy': ids.denied,
    'deny overrides allow': ids.override,
    'dangling policy': ids.dangling,
    'enclave admin': s.admin,
    'system admin': s.sysadmin,
    'other enclave admin': ids.otherAdmin,
    'other enclave member': ids.otherMember,
  })[c];

type Expected = 'pass' | 'no cert' | 'denied';

function expected(auth: Authenticator['name'], c: Caller): Expected {
  if (auth === 'none') return 'pass';
  if (c === 'no cert') return 'no cert';
  switch (auth) {
    case 'identify':
      return 'pass';
    case 'server':
      return c === 'system admin' || c === 'enclave admin' || c === 'allowed by policy' ? 'pass' : 'denied';
    case 'enclave':
      return c === 'enclave admin' || c === 'allowed by policy' ? 'pass' : 'denied';
    case 'sysadmin':
      return c === 'system admin' ? 'pass' : 'denied';
  }
}

let serial = 0;
const fresh = (p: string) => `${p}-${++serial}`;

/** How each route is called: the argument and body an allowed caller could sensibly send. Harmless by design. */
const CALLS: Record<string, () => { arg?: string; body?: unknown }> = {
  '/version': () => ({}),
  '/v1/ready': () => ({}),
  '/v1/status': () => ({}),
  '/v1/metrics': () => ({}),
  '/v1/api': () => ({}),
  '/v1/key/create/': () => ({ arg: fresh('mk') }),
  '/v1/key/import/': () => ({ arg: fresh('mi'), body: { key: b64(randomBytes(32)), cipher: 'AES256' } }),
  '/v1/key/describe/': () => ({ arg: 'minio-default' }),
  '/v1/key/delete/': () => ({ arg: fresh('missing') }),
  '/v1/key/generate/': () => ({ arg: 'minio-default', body: {} }),
  '/v1/key/encrypt/': () => ({ arg: 'minio-default', body: { plaintext: b64('p') } }),
  '/v1/key/decrypt/': () => ({ arg: 'minio-default', body: { ciphertext } }),
  '/v1/key/bulk/decrypt/': () => ({ arg: 'minio-default', body: [{ ciphertext }] }),
  '/v1/key/hmac/': () => ({ arg: 'minio-default', body: { message: b64('m') } }),
  '/v1/key/list/': () => ({ arg: '*' }),
  '/v1/key/rotate/': () => ({ arg: fresh('missing') }),
  '/v1/key/version/delete/': () => ({ arg: `${fresh('missing')}/2` }),
  '/v1/secret/create/': () => ({ arg: fresh('ms'), body: { bytes: b64('s') } }),
  '/v1/secret/describe/': () => ({ arg: 'matrix-secret' }),
  '/v1/secret/read/': () => ({ arg: 'matrix-secret' }),
  '/v1/secret/delete/': () => ({ arg: fresh('missing') }),
  '/v1/secret/list/': () => ({ arg: '*' }),
  '/v1/policy/describe/': () => ({ arg: 'matrix-allow' }),
  '/v1/policy/assign/': () => ({ arg: 'matrix-scratch', body: { identity: hex() } }),
  '/v1/policy/read/': () => ({ arg: 'matrix-allow' }),
  '/v1/policy/write/': () => ({ arg: fresh('mp'), body: { allow: ['/v1/key/list/*'], deny: [] } }),
  '/v1/policy/list/': () => ({ arg: '*' }),
  '/v1/policy/delete/': () => ({ arg: fresh('missing') }),
  '/v1/identity/describe/': () => ({ arg: ids.allowed!.identity }),
  '/v1/identity/self/describe': () => ({}),
  '/v1/identity/list/': () => ({ arg: '*' }),
  '/v1/identity/delete/': () => ({ arg: hex() }),
  '/v1/log/error': () => ({}),
  '/v1/log/audit': () => ({}),
  '/v1/enclave/create/': () => ({ arg: fresh('me'), body: { admin: hex() } }),
  '/v1/enclave/describe/': () => ({ arg: 'default' }),
  '/v1/enclave/delete/': () => ({ arg: fresh('missing') }),
  '/v1/sys/seal': () => ({}),
  '/v1/sys/backup': () => ({}),
};

/** Status and message of one call; a streaming answer (the log routes) is cut after its head. */
function statusOf(
  who: TestIdentity | undefined,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; message: string }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const agent = new https.Agent({
    keepAlive: false,
    ca: s.server.cert,
    cert: who?.cert,
    key: who?.key,
    servername: 'localhost',
  });
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: s.port,
        method,
        path,
        agent,
        headers: payload ? { 'content-length': payload.length } : {},
      },
      (res) => {
        const status = res.statusCode ?? 0;
        if (String(res.headers['content-type']).startsWith('application/x-ndjson') && path.startsWith('/v1/log/')) {
          res.destroy();
          agent.destroy();
          return resolve({ status, message: '(stream)' });
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          agent.destroy();
          const text = Buffer.concat(chunks).toString();
          let message = text.slice(0, 100);
          try {
            message = JSON.parse(text).message ?? message;
          } catch {
            // not JSON (metrics, NDJSON lists)
          }
          resolve({ status, message });
        });
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`timeout: ${method} ${path}`)));
    req.on('error', reject);
    req.end(payload);
  });
}

function verdict(status: number, message: string): Expected | 'other' {
  if (status === 400 && message === NO_CERT) return 'no cert';
  if (status === 401 || status === 403) return 'denied';
  return status >= 500 ? 'other' : 'pass';
}

test('every route is in the matrix', () => {
  const missing = routes.filter((r) => !(r.path in CALLS)).map((r) => r.path);
  assert.deepEqual(missing, [], 'routes without a call in the matrix: add them to CALLS');
});

test(`authorisation matrix: ${routes.length} routes × ${CALLERS.length} callers`, { timeout: 120_000 }, async (t) => {
  const mismatches: string[] = [];
  const rows: string[] = [];
  let cells = 0;
  // /v1/sys/seal as the system admin really seals: it goes last, in its own test below.
  for (const route of routes) {
    const row: string[] = [];
    for (const caller of CALLERS) {
      if (route.path === '/v1/sys/seal' && caller === 'system admin') {
        row.push('(last)');
        continue;
      }
      const { arg = '', body } = CALLS[route.path]!();
      const path = route.path + arg;
      const want = expected(route.auth.name, caller);
      const { status, message } = await statusOf(identityOf(caller), route.methods[0]!, path, body);
      const got = verdict(status, message);
      cells++;
      row.push(String(status));
      if (got !== want || (want === 'denied' && !(status === 403 && message === NOT_ALLOWED))) {
        mismatches.push(
          `${route.methods[0]} ${path} as ${caller} (auth ${route.auth.name}): expected ${want}, got ${status} ${message}`,
        );
      }
    }
    rows.push(
      `${route.auth.name.padEnd(8)} ${route.methods[0]!.padEnd(6)} ${route.path.padEnd(28)} ${row.map((c) => c.padStart(6)).join(' ')}`,
    );
  }
  t.diagnostic(
    `${''.padEnd(45)}${CALLERS.map((c) =>
      c
        .split(' ')
        .map((w) => w[0])
        .join('')
        .padStart(7),
    ).join('')}  (${CALLERS.join(', ')})`,
  );
  for (const row of rows) t.diagnostic(row);
  t.diagnostic(`${cells} cells checked`);
  assert.deepEqual(mismatches, []);
});

// ---- escalations ----------------------------------------------------------------------------------------

test('assigning a policy to oneself fails and changes nothing', async () => {
  const delegate = ids.delegate!;
  assertError(
    await as(delegate, 'POST', '/v1/policy/assign/matrix-allow', { identity: delegate.identity }),
    403,
    'identity cannot assign policy to itself',
  );
  assertError(
    await as(delegate, 'POST', '/v1/policy/assign/star', { Identity: delegate.identity }),
    403,
    'identity cannot assign policy to itself',
  );
  assert.equal((await ok(as(delegate, 'GET', '/v1/identity/self/describe'))).json().policy, 'delegate');
  assertError(await as(delegate, 'POST', '/v1/key/create/escalated'), 403, NOT_ALLOWED);
  // Nor via another enclave where it holds no policy.
  assertError(
    await as(delegate, 'POST', '/v1/policy/assign/all?enclave=other', { identity: delegate.identity }),
    403,
    NOT_ALLOWED,
  );
  // The enclave admin cannot turn itself into a policy holder either.
  assertError(
    await as(s.admin, 'POST', '/v1/policy/assign/matrix-deny', { identity: s.admin.identity }),
    403,
    'identity cannot assign policy to itself',
  );
  assert.equal((await ok(as(s.admin, 'GET', `/v1/identity/describe/${s.admin.identity}`))).json().admin, true);
});

test('re-assigning or deleting an admin fails, and the admins keep their powers', async () => {
  assertError(
    await as(ids.delegate, 'POST', '/v1/policy/assign/matrix-deny', { identity: s.admin.identity }),
    400,
    'cannot assign policy to admin',
  );
  assertError(
    await as(ids.delegate, 'POST', '/v1/policy/assign/matrix-allow', { identity: s.sysadmin.identity }),
    400,
    'cannot assign policy to system admin',
  );
  assertError(await as(ids.deleter, 'DELETE', `/v1/identity/delete/${s.admin.identity}`), 400, 'cannot delete admin');
  assertError(
    await as(ids.deleter, 'DELETE', `/v1/identity/delete/${s.sysadmin.identity}`),
    400,
    'cannot delete system admin',
  );
  assertError(await as(s.admin, 'DELETE', `/v1/identity/delete/${s.admin.identity}`), 400, 'cannot delete admin');
  // Another enclave's admin, via ?enclave=: the target enclave decides, and there it is a stranger.
  assertError(
    await as(ids.otherAdmin, 'DELETE', `/v1/identity/delete/${s.admin.identity}?enclave=default`),
    403,
    NOT_ALLOWED,
  );
  assertError(
    await as(ids.otherAdmin, 'POST', `/v1/policy/assign/matrix-deny?enclave=default`, { identity: s.admin.identity }),
    403,
    NOT_ALLOWED,
  );
  // Still the admin of 'default' (an admin-only route), still no enclave access for the sysadmin.
  assert.equal((await ok(as(s.admin, 'GET', `/v1/identity/describe/${s.admin.identity}`))).json().admin, true);
  await ok(as(s.admin, 'GET', '/v1/policy/list/*'));
  assertError(await as(s.sysadmin, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
  assertError(await as(s.admin, 'GET', `/v1/identity/describe/${s.sysadmin.identity}`), 404, 'identity does not exist');
});

test('neither the enclave admin nor a policy allowing * gets the system admin routes', async () => {
  for (const who of [s.admin, ids.star!, ids.otherAdmin!]) {
    const name = fresh('escalated');
    assertError(await as(who, 'POST', `/v1/enclave/create/${name}`, { admin: who.identity }), 403, NOT_ALLOWED);
    assertError(await as(who, 'GET', '/v1/enclave/describe/default'), 403, NOT_ALLOWED);
    assertError(await as(who, 'DELETE', '/v1/enclave/delete/other'), 403, NOT_ALLOWED);
    assertError(await as(who, 'POST', '/v1/sys/seal'), 403, NOT_ALLOWED);
    assertError(await as(who, 'PUT', '/v1/sys/seal'), 403, NOT_ALLOWED);
    assertError(await as(s.sysadmin, 'GET', `/v1/enclave/describe/${name}`), 404, 'enclave does not exist');
  }
  // Nothing was sealed or deleted.
  await ok(as(s.admin, 'POST', '/v1/key/generate/minio-default', {}));
  await ok(as(ids.otherAdmin, 'POST', '/v1/key/generate/other-only?enclave=other', {}));
  // The '*' policy does give everything inside its enclave.
  await ok(as(ids.star, 'GET', '/v1/policy/list/*'));
});

test("another enclave's keys are out of reach: ?enclave=, Kes-Enclave, duplicates and encodings", async () => {
  const outsiders = [s.admin, ids.allowed!, ids.star!, s.sysadmin];
  for (const who of outsiders) {
    for (const path of [
      '/v1/key/describe/other-only?enclave=other',
      '/v1/key/list/*?enclave=other',
      '/v1/key/describe/other-only?enclave=other&enclave=default',
      '/v1/key/describe/other-only?foo=1&enclave=other',
    ])
      assertError(await as(who, 'GET', path), 403, NOT_ALLOWED);
    assertError(await as(who, 'POST', '/v1/key/generate/other-only?enclave=other', {}), 403, NOT_ALLOWED);
    assertError(
      await as(who, 'POST', '/v1/key/decrypt/other-only?enclave=other', { ciphertext: otherCiphertext }),
      403,
      NOT_ALLOWED,
    );
    assertError(await as(who, 'DELETE', '/v1/key/delete/other-only?enclave=other'), 403, NOT_ALLOWED);
    assertError(await as(who, 'POST', '/v1/policy/write/mine?enclave=other', { allow: ['*'] }), 403, NOT_ALLOWED);
    const viaHeader = await new Promise<Reply>((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: s.port,
          method: 'GET',
          path: '/v1/key/describe/other-only',
          agent: s.agent(who),
          headers: { 'kes-enclave': 'other' },
        },
        (res) => {
          readReply(res).then(resolve, reject);
        },
      );
      req.on('error', reject);
      req.end();
    });
    assertError(viaHeader, 403, NOT_ALLOWED);
  }
  // Encoded or odd enclave names are refused, not mapped onto 'other'.
  for (const q of ['?enclave=%6Fther', '?enclave=other%00', '?enclave=..%2Fother', '?enclave=OTHER']) {
    const r = await as(s.admin, 'GET', `/v1/key/describe/other-only${q}`);
    assert.ok(r.status === 400 || r.status === 404 || r.status === 403, `${q}: ${r.status} ${r.text}`);
    assert.notEqual(r.status, 200);
  }
  // The first ?enclave= wins; 'default' first means the default enclave, where the key does not exist.
  assertError(
    await as(s.admin, 'GET', '/v1/key/describe/other-only?enclave=default&enclave=other'),
    404,
    'key does not exist',
  );
  // Same key name in two enclaves, different material: a ciphertext of one does not open with the other.
  const { ciphertext: fromOther } = (
    await ok(as(ids.otherAdmin, 'POST', '/v1/key/generate/minio-default?enclave=other', {}))
  ).json();
  assertError(
    await as(s.admin, 'POST', '/v1/key/decrypt/minio-default', { ciphertext: fromOther }),
    400,
    'decryption failed: ciphertext is not authentic',
  );
  // And the other way round: the other enclave's admin and members are strangers in 'default'.
  for (const who of [ids.otherAdmin!, ids.otherMember!]) {
    assertError(await as(who, 'GET', '/v1/key/describe/minio-default'), 403, NOT_ALLOWED);
    assertError(
      await as(who, 'POST', '/v1/key/decrypt/minio-default?enclave=default', { ciphertext }),
      403,
      NOT_ALLOWED,
    );
  }
});

test('a prefix policy cannot be escaped with dot segments or encoded slashes', async () => {
  const member = await makeIdentity(s.dir, 'prefix-member');
  await ok(as(s.admin, 'POST', '/v1/policy/write/prefix', { allow: ['/v1/key/generate/app-*'], deny: [] }));
  await ok(as(s.admin, 'POST', '/v1/policy/assign/prefix', { identity: member.identity }));
  await ok(as(s.admin, 'POST', '/v1/key/create/app-1'));
  await ok(as(member, 'POST', '/v1/key/generate/app-1', {}));
  for (const path of [
    '/v1/key/generate/app-x/../../minio-default',
    '/v1/key/generate/app-x%2F..%2F..%2Fminio-default',
    '/v1/key/generate/app-%2e%2e%2fminio-default',
    '/v1/key/generate/app-1/../../describe/minio-default',
  ]) {
    const r = await as(member, 'POST', path, {});
    assert.ok(r.status === 400 || r.status === 403 || r.status === 404, `${path}: ${r.status} ${r.text}`);
  }
  assertError(await as(member, 'POST', '/v1/key/generate/minio-default', {}), 403, NOT_ALLOWED);
  assertError(await as(member, 'GET', '/v1/key/describe/app-1', {}), 403, NOT_ALLOWED);
});

test('a deleted and re-created enclave does not bring back old admins or assignments', async () => {
  const oldAdmin = await makeIdentity(s.dir, 'old-admin');
  const oldMember = await makeIdentity(s.dir, 'old-member');
  const newAdmin = await makeIdentity(s.dir, 'new-admin');
  await ok(as(s.sysadmin, 'POST', '/v1/enclave/create/phoenix', { admin: oldAdmin.identity }));
  await ok(as(oldAdmin, 'POST', '/v1/policy/write/all?enclave=phoenix', { allow: ['*'] }));
  await ok(as(oldAdmin, 'POST', '/v1/policy/assign/all?enclave=phoenix', { identity: oldMember.identity }));
  await ok(as(oldMember, 'POST', '/v1/key/create/k?enclave=phoenix'));
  await ok(as(s.sysadmin, 'DELETE', '/v1/enclave/delete/phoenix'));
  await ok(as(s.sysadmin, 'POST', '/v1/enclave/create/phoenix', { admin: newAdmin.identity }));
  assertError(await as(oldAdmin, 'GET', '/v1/key/list/*?enclave=phoenix'), 403, NOT_ALLOWED);
  assertError(await as(oldMember, 'GET', '/v1/key/list/*?enclave=phoenix'), 403, NOT_ALLOWED);
  assertError(await as(newAdmin, 'GET', '/v1/key/describe/k?enclave=phoenix'), 404, 'key does not exist');
  assertError(await as(newAdmin, 'GET', '/v1/policy/read/all?enclave=phoenix'), 404, 'policy does not exist');
});

test('last: the system admin may seal (the matrix cell left out above); then enclave routes are 403 sealed', async () => {
  const seal = routes.find((r) => r.path === '/v1/sys/seal')!;
  assert.equal(seal.auth.name, 'sysadmin');
  const { status, message } = await statusOf(s.sysadmin, seal.methods[0]!, seal.path);
  assert.equal(verdict(status, message), 'pass', `${status} ${message}`);
  assertError(await as(s.admin, 'POST', '/v1/key/generate/minio-default', {}), 403, 'system is sealed');
  assertError(await as(ids.allowed, 'POST', '/v1/key/generate/minio-default', {}), 403, 'system is sealed');
});
