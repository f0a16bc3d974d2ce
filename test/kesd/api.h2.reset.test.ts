// HTTP/2 stream resets. Go's client (MinIO's KES client) decodes the JSON answer and closes the body before Node's
// END_STREAM (an empty DATA frame after the body) has arrived, so it resets nearly every stream it used (RST_STREAM
// CANCEL). nghttp2 counted those against its Rapid Reset budget and, after ~1000, ended the connection with GOAWAY,
// failing the calls in flight on it: MinIO's kms:DecryptionFailed under h2. Resets of unanswered streams (the
// attack) must still end the connection.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import tls from 'node:tls';
import { H2_RESET_BURST } from '../../kesd/src/server/h2.ts';
import { startTestServer, type TestServer } from './harness.ts';

const { NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.stop());

function connect(): http2.ClientHttp2Session {
  return http2.connect(s.url, { ca: s.server.cert, cert: s.user.cert, key: s.user.key, servername: 'localhost' });
}

/** Watches a session for GOAWAY and close. */
function watch(session: http2.ClientHttp2Session): { goaway: number[]; closed: () => boolean } {
  const goaway: number[] = [];
  let closed = false;
  session.on('goaway', (code: number) => goaway.push(code));
  session.on('error', () => {}); // the outcome is read from goaway/close
  session.once('close', () => (closed = true));
  return { goaway, closed: () => closed };
}

function generate(
  session: http2.ClientHttp2Session,
  context: string,
): Promise<{ plaintext: string; ciphertext: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': '/v1/key/generate/minio-default' });
    let text = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => (text += d));
    stream.on('end', () => resolve(JSON.parse(text)));
    stream.on('error', reject);
    stream.end(JSON.stringify({ context }));
  });
}

/**
 * A decrypt as kms-go sends it: the answer is taken as soon as it parses, and the stream is then reset if END_STREAM
 * has not arrived yet. Go's transport has processed the whole DATA frame (flags included) before the caller reads
 * its bytes, so the check runs once Node's client has handled the rest of that frame (setImmediate). Resolves with
 * the plaintext and whether a reset was sent.
 */
function decryptLikeGo(
  session: http2.ClientHttp2Session,
  body: string,
): Promise<{ plaintext: string; reset: boolean }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'POST',
      ':path': '/v1/key/decrypt/minio-default',
      'content-type': 'application/json',
    });
    let text = '';
    let done = false;
    stream.setEncoding('utf8');
    stream.on('response', (h) => {
      if (h[':status'] !== 200) reject(new Error(`status ${h[':status']}`));
    });
    stream.on('data', (d: string) => {
      text += d;
      if (done || !text.endsWith('\n')) return;
      done = true;
      setImmediate(() => {
        const reset = !stream.closed && !stream.readableEnded;
        if (reset) stream.close(NGHTTP2_CANCEL);
        resolve({ plaintext: JSON.parse(text).plaintext, reset });
      });
    });
    stream.on('close', () => {
      if (!done) reject(new Error(`stream closed before an answer (rst ${stream.rstCode})`));
    });
    stream.on('error', reject);
    stream.end(body);
  });
}

test('over h2: a client that closes each answer once decoded (as Go does) has nothing to reset and keeps its connection', async () => {
  const session = connect();
  const seen = watch(session);
  try {
    const context = Buffer.from('bucket/object').toString('base64');
    const g = await generate(session, context);
    const body = JSON.stringify({ ciphertext: g.ciphertext, context });
    const calls = H2_RESET_BURST * 2;
    let next = 0;
    let resets = 0;
    const failures: string[] = [];
    // 16 in flight, as the e2e bench's MinIO load.
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < calls && failures.length === 0) {
          next++;
          try {
            const r = await decryptLikeGo(session, body);
            if (r.reset) resets++;
            if (r.plaintext !== g.plaintext) failures.push('wrong plaintext');
          } catch (err) {
            failures.push((err as Error).message);
          }
        }
      }),
    );
    // END_STREAM comes with the body, so Go's client never resets (with Node's compatibility layer nearly every
    // stream was reset: END_STREAM came in an empty DATA frame of its own).
    assert.deepEqual(
      { resets, failures: failures.slice(0, 3), goaway: seen.goaway, closed: seen.closed() },
      { resets: 0, failures: [], goaway: [], closed: false },
    );
  } finally {
    session.close();
  }
});

/** HPACK literal header fields without indexing, new names (RFC 7541 6.2.2); every string here is < 127 bytes. */
function hpack(headers: [string, string][]): Buffer {
  return Buffer.concat(
    headers.flatMap(([n, v]) => [Buffer.from([0, n.length]), Buffer.from(n), Buffer.from([v.length]), Buffer.from(v)]),
  );
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

test('over h2: a small answer is one HEADERS frame and one DATA frame that ends the stream', async () => {
  const socket = tls.connect({
    host: '127.0.0.1',
    port: s.port,
    ca: s.server.cert,
    cert: s.user.cert,
    key: s.user.key,
    servername: 'localhost',
    ALPNProtocols: ['h2'],
  });
  await once(socket, 'secureConnect');
  const block = hpack([
    [':method', 'POST'],
    [':scheme', 'https'],
    [':path', '/v1/key/generate/minio-default'],
    [':authority', 'localhost'],
  ]);
  socket.write(
    Buffer.concat([
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
      frame(0x4, 0, 0, Buffer.alloc(0)),
      frame(0x1, 0x5, 1, block),
    ]),
  );
  const frames: string[] = [];
  let received = Buffer.alloc(0);
  for await (const chunk of socket) {
    received = Buffer.concat([received, chunk as Buffer]);
    while (received.length >= 9 && received.length >= 9 + received.readUIntBE(0, 3)) {
      const [length, type, flags, stream] = [
        received.readUIntBE(0, 3),
        received[3]!,
        received[4]!,
        received.readUInt32BE(5),
      ];
      if (stream === 1)
        frames.push(
          type === 0x1
            ? 'HEADERS'
            : type === 0x0
              ? `DATA${length > 0 ? '+body' : ''}${flags & 1 ? '+END_STREAM' : ''}`
              : `type ${type}`,
        );
      received = received.subarray(9 + length);
    }
    if (frames.some((f) => f.includes('END_STREAM'))) break;
  }
  socket.destroy();
  assert.deepEqual(frames, ['HEADERS', 'DATA+body+END_STREAM']);
});

test('over h2: a client that resets streams before they are answered (Rapid Reset) gets GOAWAY ENHANCE_YOUR_CALM', async () => {
  // Raw frames: Node's client ends a request body before resetting it, and then kesd has answered already.
  const socket = tls.connect({
    host: '127.0.0.1',
    port: s.port,
    ca: s.server.cert,
    cert: s.user.cert,
    key: s.user.key,
    servername: 'localhost',
    ALPNProtocols: ['h2'],
  });
  await once(socket, 'secureConnect');
  const block = hpack([
    [':method', 'POST'],
    [':scheme', 'https'],
    [':path', '/v1/key/decrypt/minio-default'],
    [':authority', 'localhost'],
  ]);
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(NGHTTP2_CANCEL);
  const frames = [Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(0x4, 0, 0, Buffer.alloc(0))];
  // HEADERS (END_HEADERS, not END_STREAM: a decrypt whose body kesd then waits for), then RST_STREAM.
  for (let i = 0; i < H2_RESET_BURST + 200; i++)
    frames.push(frame(0x1, 0x4, 2 * i + 1, block), frame(0x3, 0, 2 * i + 1, cancel));
  socket.end(Buffer.concat(frames));
  // The server's frames, until GOAWAY or the end of the connection.
  let received = Buffer.alloc(0);
  let goaway: number | undefined;
  for await (const chunk of socket) {
    received = Buffer.concat([received, chunk as Buffer]);
    while (received.length >= 9 && received.length >= 9 + received.readUIntBE(0, 3)) {
      const length = received.readUIntBE(0, 3);
      if (received[3] === 0x7) goaway = received.readUInt32BE(9 + 4);
      received = received.subarray(9 + length);
    }
    if (goaway !== undefined) break;
  }
  socket.destroy();
  assert.equal(goaway, NGHTTP2_ENHANCE_YOUR_CALM);
  // Only that connection ends: the server goes on answering.
  const other = connect();
  try {
    const g = await generate(other, '');
    assert.equal(typeof g.plaintext, 'string');
  } finally {
    other.close();
  }
});
