// HTTP/2: MinIO's KES client (Go, ForceAttemptHTTP2) speaks h2 when the server offers it in ALPN, and then sends
// its KMS calls as streams over few connections instead of opening (and handshaking) one connection per call in
// flight. kesd offers h2 and HTTP/1.1; both must answer the same, with the identity of the connection.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import tls, { type TLSSocket } from 'node:tls';
import { H2_STREAMS_PER_CONNECTION, http2Enabled } from '../../kesd/src/server/h2.ts';
import { startTestServer, type TestIdentity, type TestServer } from './harness.ts';

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.stop());

function connect(who: TestIdentity | undefined): http2.ClientHttp2Session {
  return http2.connect(s.url, { ca: s.server.cert, cert: who?.cert, key: who?.key, servername: 'localhost' });
}

interface H2Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  text: string;
}

function call(session: http2.ClientHttp2Session, method: string, path: string, body?: unknown): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': method,
      ':path': path,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    });
    let headers: http2.IncomingHttpHeaders = {};
    let text = '';
    stream.setEncoding('utf8');
    stream.on('response', (h) => (headers = h));
    stream.on('data', (d: string) => (text += d));
    stream.on('end', () => resolve({ status: Number(headers[':status']), headers, text }));
    stream.on('error', reject);
    stream.end(body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));
  });
}

test('HTTP/2 is on unless KESD_HTTP2=off', () => {
  assert.equal(http2Enabled({}), true);
  assert.equal(http2Enabled({ KESD_HTTP2: 'on' }), true);
  assert.equal(http2Enabled({ KESD_HTTP2: 'off' }), false);
});

test('ALPN offers h2: a client that asks for it gets it, one without gets HTTP/1.1', async () => {
  const h2 = connect(s.user);
  try {
    await call(h2, 'GET', '/version');
    assert.equal((h2.socket as TLSSocket).alpnProtocol, 'h2');
  } finally {
    h2.close();
  }
  const r = await s.request(s.user, 'GET', '/version');
  assert.equal(r.status, 200);
});

test('over h2: generate and decrypt, as many streams in flight as the server allows, each answered correctly', async () => {
  const h2 = connect(s.user);
  try {
    await call(h2, 'GET', '/version');
    // Go's client opens another connection beyond this limit, but assumes 100 until it has read it: a lower limit
    // refuses a burst on a new connection (REFUSED_STREAM), which MinIO turned into failed S3 GETs.
    assert.equal(h2.remoteSettings.maxConcurrentStreams, H2_STREAMS_PER_CONNECTION);
    assert.ok(H2_STREAMS_PER_CONNECTION >= 100);
    const context = Buffer.from('bucket/object').toString('base64');
    const generated = await Promise.all(
      Array.from({ length: H2_STREAMS_PER_CONNECTION }, () =>
        call(h2, 'POST', '/v1/key/generate/minio-default', { context }),
      ),
    );
    for (const g of generated) assert.equal(g.status, 200, g.text);
    const decrypted = await Promise.all(
      generated.map((g) =>
        call(h2, 'POST', '/v1/key/decrypt/minio-default', { ciphertext: JSON.parse(g.text).ciphertext, context }),
      ),
    );
    decrypted.forEach((d, i) => {
      assert.equal(d.status, 200, d.text);
      assert.equal(JSON.parse(d.text).plaintext, JSON.parse(generated[i]!.text).plaintext);
    });
    assert.equal(generated[0]!.headers['content-type'], 'application/json');
  } finally {
    h2.close();
  }
});

test("over h2: the identity is the connection's; policy, errors and the body limit are the same as on HTTP/1.1", async () => {
  const user = connect(s.user);
  const admin = connect(s.admin);
  const nobody = connect(undefined);
  try {
    // The user's policy denies delete; the admin passes everything.
    assert.deepEqual(
      await call(user, 'DELETE', '/v1/key/delete/minio-default').then((r) => [r.status, r.text.trim()]),
      [403, '{"message":"not authorized: insufficient permissions"}'],
    );
    assert.equal((await call(admin, 'GET', '/v1/key/describe/minio-default')).status, 200);
    assert.equal((await call(user, 'GET', '/v1/key/describe/minio-default')).status, 200);
    assert.deepEqual(
      await call(nobody, 'GET', '/v1/key/describe/minio-default').then((r) => [r.status, r.text.trim()]),
      [400, '{"message":"tls: client certificate is required"}'],
    );
    assert.deepEqual(await call(user, 'GET', '/v1/key/describe/missing').then((r) => [r.status, r.text.trim()]), [
      404,
      '{"message":"key does not exist"}',
    ]);
    // No content-length (Node's client sends none): the limit holds while the body streams in.
    assert.deepEqual(
      await call(user, 'POST', '/v1/key/decrypt/minio-default', { ciphertext: 'A'.repeat(2 << 20) }).then((r) => [
        r.status,
        r.text.trim(),
      ]),
      [413, '{"message":"request body too large"}'],
    );
    // A body without content-length is read, not ignored.
    const g = JSON.parse((await call(user, 'POST', '/v1/key/generate/minio-default', {})).text);
    assert.equal(
      JSON.parse((await call(user, 'POST', '/v1/key/decrypt/minio-default', { ciphertext: g.ciphertext })).text)
        .plaintext,
      g.plaintext,
    );
    const whoami = JSON.parse((await call(user, 'GET', '/v1/identity/self/describe')).text);
    assert.equal(whoami.identity, s.user.identity);
  } finally {
    user.close();
    admin.close();
    nobody.close();
  }
});

test('over h2: a list streams as NDJSON', async () => {
  const h2 = connect(s.admin);
  try {
    const r = await call(h2, 'GET', '/v1/key/list/*');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/x-ndjson');
    assert.deepEqual(
      r.text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).name),
      ['minio-default'],
    );
  } finally {
    h2.close();
  }
});

test('with KESD_HTTP2=off, ALPN offers HTTP/1.1 only: a client that offers both gets HTTP/1.1', async () => {
  process.env.KESD_HTTP2 = 'off';
  let off: TestServer;
  try {
    off = await startTestServer();
  } finally {
    delete process.env.KESD_HTTP2;
  }
  try {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: off.port,
      ca: off.server.cert,
      servername: 'localhost',
      ALPNProtocols: ['h2', 'http/1.1'],
    });
    await once(socket, 'secureConnect');
    assert.equal(socket.alpnProtocol, 'http/1.1');
    socket.destroy();
    assert.equal((await off.request(off.user, 'GET', '/version')).status, 200);
  } finally {
    await off.stop();
  }
});

test('a stop over h2: GOAWAY, the stream in flight is still answered, then the connection closes', async () => {
  const srv = await startTestServer();
  const session = http2.connect(srv.url, {
    ca: srv.server.cert,
    cert: srv.user.cert,
    key: srv.user.key,
    servername: 'localhost',
  });
  session.on('error', () => {});
  let stopped: Promise<void> | undefined;
  try {
    assert.equal((await call(session, 'GET', '/version')).status, 200);
    const goaway = once(session, 'goaway');
    const closed = once(session, 'close');
    // A generate whose body is only half sent when the stop begins.
    const stream = session.request({
      ':method': 'POST',
      ':path': '/v1/key/generate/minio-default',
      'content-type': 'application/json',
    });
    let text = '';
    let status: unknown;
    stream.setEncoding('utf8');
    stream.on('response', (h) => (status = h[':status']));
    stream.on('data', (d: string) => (text += d));
    const answered = once(stream, 'end');
    stream.write('{"context":"');
    // A PING answered: the server has read the frames before it, so the stream is in flight there.
    await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
    stopped = srv.stop();
    await goaway;
    stream.end('"}');
    await answered;
    assert.equal(status, 200, text);
    assert.equal(typeof JSON.parse(text).plaintext, 'string');
    await closed;
    await stopped;
  } finally {
    session.destroy();
    await stopped;
  }
});
