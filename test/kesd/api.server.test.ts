// Server-level API over real mTLS: version, status, ready, the route table, metrics, routing errors,
// the audit and error log streams, secrets and enclaves (kes-protocol §4.1–4.2, §5.1, §5.5–5.6, §6.1, §7).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { routes } from '../../kesd/src/api/routes.js';
import { makeIdentity, request, startTestServer, type Reply, type TestIdentity, type TestServer } from './harness.js';

let s: TestServer;
before(async () => {
  s = await startTestServer();
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
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

function assertError(r: Reply, status: number, message: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json().message, message);
}

async function ok(r: Promise<Reply>): Promise<Reply> {
  const reply = await r;
  assert.equal(reply.status, 200, reply.text);
  return reply;
}

/** A long-lived NDJSON stream (/v1/log/*) on its own connection. */
interface Stream {
  readonly res: IncomingMessage;
  readonly events: any[];
  waitFor(done: (events: any[]) => boolean, timeoutMs?: number): Promise<void>;
  close(): void;
}

function openStream(who: TestIdentity, path: string): Promise<Stream> {
  const agent = new https.Agent({
    keepAlive: false,
    ca: s.server.cert,
    cert: who.cert,
    key: who.key,
    servername: 'localhost',
  });
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: s.port, method: 'GET', path, agent }, (res) => {
      const events: any[] = [];
      let buffered = '';
      const waiters = new Set<() => void>();
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buffered.slice(0, nl)));
          buffered = buffered.slice(nl + 1);
        }
        for (const w of waiters) w();
      });
      res.on('error', () => undefined);
      resolve({
        res,
        events,
        waitFor: (done, timeoutMs = 5000) =>
          new Promise<void>((ok, fail) => {
            if (done(events)) return ok();
            const timer = setTimeout(() => {
              waiters.delete(check);
              fail(
                new Error(
                  `stream ${path}: condition not met within ${timeoutMs} ms; events: ${JSON.stringify(events)}`,
                ),
              );
            }, timeoutMs);
            const check = () => {
              if (!done(events)) return;
              clearTimeout(timer);
              waiters.delete(check);
              ok();
            };
            waiters.add(check);
          }),
        close: () => {
          req.destroy();
          agent.destroy();
        },
      });
    });
    req.on('error', reject);
    req.end();
  });
}

// ---- server info ----------------------------------------------------------------------------------

test('/version returns {version, commit} as JSON', async () => {
  const r = await ok(as(undefined, 'GET', '/version'));
  const v = r.json();
  assert.deepEqual(Object.keys(v).sort(), ['commit', 'version']);
  assert.equal(typeof v.version, 'string');
  assert.ok(v.version.length > 0);
  assert.equal(typeof v.commit, 'string');
});

test('/v1/status reports a numeric uptime and both keystore flags false', async () => {
  const r = await ok(as(s.sysadmin, 'GET', '/v1/status'));
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const st = r.json();
  assert.equal(typeof st.uptime, 'number');
  assert.ok(Number.isInteger(st.uptime) && st.uptime >= 0);
  assert.equal(st.keystore_unreachable, false);
  assert.equal(st.keystore_unavailable, false);
  for (const f of ['version', 'os', 'arch']) assert.equal(typeof st[f], 'string', f);
  for (const f of ['num_cpu', 'num_cpu_used', 'mem_heap_used', 'mem_stack_used'])
    assert.equal(typeof st[f], 'number', f);
});

test('/v1/ready is 200', async () => {
  await ok(as(s.sysadmin, 'GET', '/v1/ready'));
  await ok(as(s.admin, 'GET', '/v1/ready'));
});

test('/v1/api lists every route with method, path, max_body and timeout', async () => {
  const r = await ok(as(s.sysadmin, 'GET', '/v1/api'));
  const listed: { method: string; path: string; max_body: number; timeout: number }[] = r.json();
  assert.equal(listed.length, routes.length);
  for (const route of routes) {
    const entry = listed.find((e) => e.path === route.path);
    assert.ok(entry, `${route.path} missing from /v1/api`);
    assert.deepEqual(Object.keys(entry).sort(), ['max_body', 'method', 'path', 'timeout']);
    assert.ok(route.methods.includes(entry.method), `${route.path}: ${entry.method} not in ${route.methods}`);
    assert.equal(entry.max_body, route.maxBody, route.path);
    assert.equal(entry.timeout, Math.round(route.timeoutMs / 1000), route.path);
  }
  const byPath = new Map(listed.map((e) => [e.path, e]));
  assert.equal(byPath.get('/v1/key/import/')?.max_body, 1 << 20);
  assert.equal(byPath.get('/v1/log/audit')?.timeout, 0);
  assert.equal(byPath.get('/v1/key/list/')?.method, 'GET');
});

// ---- metrics --------------------------------------------------------------------------------------

async function metricsText(): Promise<string> {
  const r = await ok(as(s.sysadmin, 'GET', '/v1/metrics'));
  assert.match(String(r.headers['content-type']), /^text\/plain/);
  return r.text;
}

test('/v1/metrics is Prometheus text with a kes_http_response_time histogram from 50 µs', async () => {
  const text = await metricsText();
  assert.ok(text.includes('# TYPE kes_http_response_time histogram\n'), text);
  assert.match(text, /^kes_http_response_time_bucket\{le="0\.00005"\} \d+$/m);
  assert.match(text, /^kes_http_response_time_bucket\{le="\+Inf"\} \d+$/m);
  assert.match(text, /^kes_http_response_time_count \d+$/m);
  for (const family of [
    'kes_http_request_active',
    'kes_log_error_events',
    'kes_log_audit_events',
    'kes_system_up_time',
    'kes_system_num_cpu',
  ]) {
    assert.match(text, new RegExp(`^# TYPE ${family} (counter|gauge)$`, 'm'), family);
  }
});

test('/v1/metrics counts responses by status code', async () => {
  await ok(as(s.admin, 'GET', '/v1/key/describe/minio-default'));
  await as(s.admin, 'GET', `/v1/key/describe/${fresh('missing')}`);
  await as(s.admin, 'GET', '/v1/no/such/route');
  const text = await metricsText();
  const sample = (name: string, code: number) =>
    Number(new RegExp(`^${name}\\{code="${code}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  assert.ok(sample('kes_http_request_success', 200) >= 1, text);
  assert.ok(sample('kes_http_request_error', 404) >= 2, text);
  assert.match(text, /^# TYPE kes_http_request_success counter$/m);
  assert.match(text, /^# TYPE kes_http_request_error counter$/m);
});

test('/v1/metrics has no family without samples', async () => {
  const text = await metricsText();
  const lines = text.split('\n');
  const families = lines.filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]!);
  assert.ok(families.length > 5);
  for (const family of families) {
    const samples = lines.filter(
      (l) =>
        !l.startsWith('#') && (l.startsWith(`${family} `) || l.startsWith(`${family}{`) || l.startsWith(`${family}_`)),
    );
    assert.ok(samples.length > 0, `family ${family} has no samples`);
  }
  // No 5xx yet: the failure counter is labelled and must be omitted rather than emitted empty.
  assert.ok(!text.includes('# TYPE kes_http_request_failure'), 'empty kes_http_request_failure family emitted');
});

// ---- routing errors -------------------------------------------------------------------------------

test('an unknown path is 404', async () => {
  for (const path of ['/v1/nope', '/v2/key/create/x', '/', '/v1/key/frobnicate/x']) {
    const r = await as(s.admin, 'GET', path);
    assert.equal(r.status, 404, `${path}: ${r.text}`);
    assert.equal(
      String(r.headers['content-type']).startsWith('application/json') ? r.json().message : r.text.trim(),
      '404 page not found',
    );
  }
});

test('a wrong method is 405 with an Accept header and the KES message', async () => {
  const get = await as(s.admin, 'GET', '/v1/key/create/x');
  assertError(get, 405, "received method 'GET' expected 'POST'");
  assert.match(String(get.headers.accept), /\bPOST\b/);
  const del = await as(s.admin, 'DELETE', '/v1/key/describe/minio-default');
  assertError(del, 405, "received method 'DELETE' expected 'GET'");
  assert.equal(del.headers.accept, 'GET');
  const post = await as(s.admin, 'POST', '/v1/key/delete/minio-default');
  assertError(post, 405, "received method 'POST' expected 'DELETE'");
  assert.equal(post.headers.accept, 'DELETE');
  await ok(as(s.admin, 'GET', '/v1/key/describe/minio-default')); // not deleted
});

// ---- log streams ----------------------------------------------------------------------------------

test('the audit stream emits exactly one NDJSON event per request', async () => {
  const stream = await openStream(s.sysadmin, '/v1/log/audit');
  try {
    assert.equal(stream.res.statusCode, 200);
    assert.equal(stream.res.headers['content-type'], 'application/x-ndjson');
    const name = fresh('audit');
    const calls: [string, string, number][] = [
      ['POST', `/v1/key/create/${name}`, 200],
      ['GET', `/v1/key/describe/${name}`, 200],
      ['GET', `/v1/key/describe/${name}-missing`, 404],
      ['DELETE', `/v1/key/delete/${name}`, 200],
    ];
    for (const [method, path, code] of calls) assert.equal((await as(s.admin, method, path)).status, code, path);
    const mine = (events: any[]) => events.filter((e) => e.request?.identity === s.admin.identity);
    await stream.waitFor((events) => mine(events).length >= calls.length);
    await new Promise((r) => setTimeout(r, 150)); // no duplicates trickle in
    const events = mine(stream.events);
    assert.deepEqual(
      events.map((e) => [e.request.path, e.response.code]),
      calls.map(([, path, code]) => [path, code]),
    );
    for (const e of events) {
      assert.match(e.time, RFC3339);
      assert.ok(Math.abs(Date.parse(e.time) - Date.now()) < 60_000);
      assert.ok(Number.isInteger(e.response.time) && e.response.time > 0, `response.time ${e.response.time} (ns)`);
      assert.ok(e.response.time < 10e9, `response.time ${e.response.time} is not nanoseconds`);
    }
    // Only the admin's requests were made while subscribed.
    assert.equal(stream.events.length, events.length, JSON.stringify(stream.events));
  } finally {
    stream.close();
  }
});

test('the error stream answers 200 with application/x-ndjson', async () => {
  const stream = await openStream(s.sysadmin, '/v1/log/error');
  try {
    assert.equal(stream.res.statusCode, 200);
    assert.equal(stream.res.headers['content-type'], 'application/x-ndjson');
  } finally {
    stream.close();
  }
});

test('the log streams need authorisation', async () => {
  assertError(await as(s.user, 'GET', '/v1/log/audit'), 403, 'not authorized: insufficient permissions');
  assertError(await as(s.user, 'GET', '/v1/log/error'), 403, 'not authorized: insufficient permissions');
});

// ---- secrets --------------------------------------------------------------------------------------

test('secrets can be created, described, read, listed and deleted', async () => {
  const name = fresh('secret');
  await ok(as(s.admin, 'POST', `/v1/secret/create/${name}`, { bytes: b64('s3cr3t'), type: 'generic' }));
  const described = (await ok(as(s.admin, 'GET', `/v1/secret/describe/${name}`))).json();
  assert.equal(described.type, 'generic');
  assert.equal(described.created_by, s.admin.identity);
  assert.match(described.created_at, RFC3339);
  assert.match(described.mod_time, RFC3339);
  assert.equal(described.bytes, undefined);
  const read = (await ok(as(s.admin, 'GET', `/v1/secret/read/${name}`))).json();
  assert.equal(read.bytes, b64('s3cr3t'));
  assert.equal(read.type, 'generic');
  const list = await ok(as(s.admin, 'GET', `/v1/secret/list/${name}*`));
  assert.equal(list.headers['content-type'], 'application/x-ndjson');
  assert.deepEqual(
    ndjson(list.text).map((l) => l.name),
    [name],
  );
  await ok(as(s.admin, 'DELETE', `/v1/secret/delete/${name}`));
  assertError(await as(s.admin, 'GET', `/v1/secret/read/${name}`), 404, 'secret does not exist');
  assert.equal((await ok(as(s.admin, 'GET', `/v1/secret/list/${name}*`))).text, '');
});

test('a secret without a type is generic', async () => {
  const name = fresh('secret');
  await ok(as(s.admin, 'POST', `/v1/secret/create/${name}`, { bytes: b64('x') }));
  assert.equal((await ok(as(s.admin, 'GET', `/v1/secret/describe/${name}`))).json().type, 'generic');
});

test('creating an existing secret is 404 secret already exists', async () => {
  const name = fresh('secret');
  await ok(as(s.admin, 'POST', `/v1/secret/create/${name}`, { bytes: b64('one') }));
  assertError(
    await as(s.admin, 'POST', `/v1/secret/create/${name}`, { bytes: b64('two') }),
    404,
    'secret already exists',
  );
  assert.equal((await ok(as(s.admin, 'GET', `/v1/secret/read/${name}`))).json().bytes, b64('one'));
});

test('a missing secret is 404 secret does not exist', async () => {
  const name = fresh('secret');
  assertError(await as(s.admin, 'GET', `/v1/secret/describe/${name}`), 404, 'secret does not exist');
  assertError(await as(s.admin, 'GET', `/v1/secret/read/${name}`), 404, 'secret does not exist');
  assertError(await as(s.admin, 'DELETE', `/v1/secret/delete/${name}`), 404, 'secret does not exist');
});

test('an unsupported secret type is 400', async () => {
  const name = fresh('secret');
  assertError(
    await as(s.admin, 'POST', `/v1/secret/create/${name}`, { bytes: b64('x'), type: 'x509' }),
    400,
    "unsupported secret type 'x509'",
  );
  assertError(await as(s.admin, 'GET', `/v1/secret/describe/${name}`), 404, 'secret does not exist');
});

// ---- enclaves -------------------------------------------------------------------------------------

test('the sysadmin creates, describes and deletes an enclave', async () => {
  const name = fresh('enc');
  const admin2 = await makeIdentity(s.dir, name);
  await ok(as(s.sysadmin, 'POST', `/v1/enclave/create/${name}`, { admin: admin2.identity }));
  const d = (await ok(as(s.sysadmin, 'GET', `/v1/enclave/describe/${name}`))).json();
  assert.equal(d.name, name);
  assert.equal(d.created_by, s.sysadmin.identity);
  assert.match(d.created_at, RFC3339);
  await ok(as(admin2, 'POST', `/v1/key/create/k?enclave=${name}`));
  await ok(as(s.sysadmin, 'DELETE', `/v1/enclave/delete/${name}`));
  assertError(await as(s.sysadmin, 'GET', `/v1/enclave/describe/${name}`), 404, 'enclave does not exist');
  await ok(as(s.sysadmin, 'DELETE', `/v1/enclave/delete/${name}`)); // deleting a missing enclave is 200 (v0.22)
});

test('creating an existing enclave is 400 enclave already exists', async () => {
  assertError(
    await as(s.sysadmin, 'POST', '/v1/enclave/create/default', { admin: s.user.identity }),
    400,
    'enclave already exists',
  );
  await ok(as(s.admin, 'GET', '/v1/key/describe/minio-default')); // default's admin unchanged
});

test('an enclave whose admin is the sysadmin is 400', async () => {
  const name = fresh('enc');
  assertError(
    await as(s.sysadmin, 'POST', `/v1/enclave/create/${name}`, { admin: s.sysadmin.identity }),
    400,
    'admin identity cannot system admin',
  );
  assertError(await as(s.sysadmin, 'POST', `/v1/enclave/create/${name}`, { admin: '' }), 400, 'identity is unknown');
  assertError(await as(s.sysadmin, 'GET', `/v1/enclave/describe/${name}`), 404, 'enclave does not exist');
});

test('deleting an enclave makes its keys unreachable and recreating it does not restore them', async () => {
  const name = fresh('enc');
  const admin2 = await makeIdentity(s.dir, name);
  await ok(as(s.sysadmin, 'POST', `/v1/enclave/create/${name}`, { admin: admin2.identity }));
  await ok(as(admin2, 'POST', `/v1/key/create/old?enclave=${name}`));
  const { ciphertext } = (await ok(as(admin2, 'POST', `/v1/key/generate/old?enclave=${name}`, {}))).json();
  await ok(as(admin2, 'POST', `/v1/secret/create/old?enclave=${name}`, { bytes: b64('x') }));

  await ok(as(s.sysadmin, 'DELETE', `/v1/enclave/delete/${name}`));
  assertError(
    await as(admin2, 'GET', `/v1/key/describe/old?enclave=${name}`),
    403,
    'not authorized: insufficient permissions',
  );
  assertError(
    await as(admin2, 'POST', `/v1/key/decrypt/old?enclave=${name}`, { ciphertext }),
    403,
    'not authorized: insufficient permissions',
  );

  await ok(as(s.sysadmin, 'POST', `/v1/enclave/create/${name}`, { admin: admin2.identity }));
  assertError(await as(admin2, 'GET', `/v1/key/describe/old?enclave=${name}`), 404, 'key does not exist');
  assertError(
    await as(admin2, 'POST', `/v1/key/decrypt/old?enclave=${name}`, { ciphertext }),
    404,
    'key does not exist',
  );
  assertError(await as(admin2, 'GET', `/v1/secret/read/old?enclave=${name}`), 404, 'secret does not exist');
  assert.equal((await ok(as(admin2, 'GET', `/v1/key/list/*?enclave=${name}`))).text, '');
  // A new key of the same name is a new key.
  await ok(as(admin2, 'POST', `/v1/key/create/old?enclave=${name}`));
  assertError(
    await as(admin2, 'POST', `/v1/key/decrypt/old?enclave=${name}`, { ciphertext }),
    400,
    'decryption failed: ciphertext is not authentic',
  );
});
