// Stalled HTTP/2 clients: h2 is the default, so the slowloris bounds HTTP/1.1 has (headers, request and keep-alive
// timeouts) must hold for h2 connections too. Each case waits for the server to act, up to a limit well above its
// timer; the three run side by side (~30 s in all).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import tls from 'node:tls';
import { H2_FIRST_STREAM_MS, H2_REQUEST_MS } from '../../kesd/src/server/h2.ts';
import { startTestServer, type TestServer } from './harness.ts';

const SLACK_MS = 10_000;

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(() => s.stop());

/** Resolves true once `emitter` emits `event`, false if it has not within `ms`. */
function within(ms: number, emitter: NodeJS.EventEmitter, event: string): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    emitter.once(event, () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe('stalled h2 connections are cut', { concurrency: true }, () => {
  test('TLS with h2 chosen, then not even the connection preface', async () => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: s.port,
      ca: s.server.cert,
      cert: s.user.cert,
      key: s.user.key,
      servername: 'localhost',
      ALPNProtocols: ['h2'],
    });
    socket.on('error', () => {});
    socket.resume();
    await once(socket, 'secureConnect');
    assert.equal(socket.alpnProtocol, 'h2');
    const closed = within(H2_FIRST_STREAM_MS + SLACK_MS, socket, 'close');
    try {
      assert.equal(await closed, true, 'the server kept a silent h2 connection open');
    } finally {
      socket.destroy();
    }
  });

  test('a preface and then only PINGs, never a stream', async () => {
    const session = http2.connect(s.url, {
      ca: s.server.cert,
      cert: s.user.cert,
      key: s.user.key,
      servername: 'localhost',
    });
    session.on('error', () => {});
    await once(session, 'connect');
    // PINGs are traffic: an inactivity timeout alone would never fire.
    const pings = setInterval(() => {
      if (!session.closed && !session.destroyed) session.ping(() => {});
    }, 1000);
    const goaway = within(H2_FIRST_STREAM_MS + SLACK_MS, session, 'goaway');
    const closed = within(H2_FIRST_STREAM_MS + SLACK_MS, session, 'close');
    try {
      assert.equal(await goaway, true, 'no GOAWAY for an h2 connection without streams');
      assert.equal(await closed, true, 'the server kept an h2 connection without streams open');
    } finally {
      clearInterval(pings);
      session.destroy();
    }
  });

  test('a stream whose request body never arrives is reset; the connection serves other streams meanwhile', async () => {
    const session = http2.connect(s.url, {
      ca: s.server.cert,
      cert: s.user.cert,
      key: s.user.key,
      servername: 'localhost',
    });
    session.on('error', () => {});
    try {
      const stalled = session.request({
        ':method': 'POST',
        ':path': '/v1/key/generate/minio-default',
        'content-type': 'application/json',
      });
      stalled.on('error', () => {});
      stalled.write('{"context":"'); // and nothing more, END_STREAM never comes
      let status: unknown;
      stalled.on('response', (h) => (status = h[':status']));
      stalled.resume();
      // Another stream on the same connection is answered while that one hangs.
      const other = session.request({ ':method': 'GET', ':path': '/version' }, { endStream: true });
      const [headers] = (await once(other, 'response')) as [http2.IncomingHttpHeaders];
      other.resume();
      assert.equal(headers[':status'], 200);
      assert.equal(
        await within(H2_REQUEST_MS + SLACK_MS, stalled, 'close'),
        true,
        'the server kept the stalled stream open',
      );
      // The route timeout (15 s) answered before the request timeout reset the stream; NO_ERROR: "stop sending".
      assert.equal(status, 503);
      assert.equal(stalled.rstCode, http2.constants.NGHTTP2_NO_ERROR);
      assert.equal(session.destroyed, false, 'only the stream was cut, not the connection');
    } finally {
      session.destroy();
    }
  });
});
