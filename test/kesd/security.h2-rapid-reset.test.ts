// Finding 2 (docs/security.md): HTTP/2 Rapid Reset without authentication. A client with no certificate opens streams
// and resets each at once, 50 at a time, each batch paced by a PING round trip (so Node's own limit on streams opened
// within one read, which cuts the connection without a GOAWAY, never bites, as in the attack reported): kesd must end the connection with GOAWAY ENHANCE_YOUR_CALM once its reset
// budget is spent (it never did: 20,000 resets per connection went through), and write nothing to stderr for it
// (each reset stream printed a ~1.4 KB stack trace). Against a real `kesd server` process, whose stderr is read.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { H2_RESET_BURST } from '../../kesd/src/server/h2.js';
import { FLAG, FRAME, frame, hpack, rawH2, rstStream } from './h2-frames.js';
import { makeIdentity, type TestIdentity } from './harness.js';
import { startServer, stopServer, type ServerProcess } from './cli-process.js';

let dir: string;
let user: TestIdentity;
let server: ServerProcess;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-rapid-reset-'));
  const tls = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  const sysadmin = await makeIdentity(dir, 'sysadmin');
  user = await makeIdentity(dir, 'user');
  const env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 3).toString('base64') };
  const data = join(dir, 'data');
  await initDataDir(
    data,
    {
      version: 'v1',
      address: '127.0.0.1:0',
      sysadmin: sysadmin.identity,
      unsealEnv: 'KESD_UNSEAL',
      tls: {
        key: tls.keyFile,
        cert: tls.certFile,
        password: '',
        verifyCert: false,
        proxy: { identities: [], header: '' },
      },
      enclaves: [{ name: 'default', admin: user.identity, policies: [], keys: ['k1'] }],
    },
    { env },
  );
  server = await startServer([data, '--workers', '1', '--addr', '127.0.0.1:0', '--audit-log', 'off'], env);
});
after(async () => {
  await stopServer(server.child);
  await rm(dir, { recursive: true, force: true });
});

const RESETS = 20_000;
const BATCH = 50;

test('over h2: streams reset by a client without a certificate end in GOAWAY ENHANCE_YOUR_CALM, with nothing on stderr', async () => {
  const stderrBefore = server.output().length;
  const h2 = await rawH2({ port: server.port, rejectUnauthorized: false });
  const block = hpack([
    [':method', 'GET'],
    [':scheme', 'https'],
    [':path', '/v1/status'],
    [':authority', 'localhost'],
  ]);
  let sent = 0;
  for (let id = 1; sent < RESETS && h2.goaway() === undefined && !h2.closed(); ) {
    const frames: Buffer[] = [];
    for (let i = 0; i < BATCH; i++, id += 2, sent++) {
      frames.push(
        frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, block),
        rstStream(id, http2.constants.NGHTTP2_CANCEL),
      );
    }
    h2.socket.write(Buffer.concat(frames));
    await h2.ping();
  }
  h2.socket.destroy();
  assert.equal(h2.goaway(), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, `no GOAWAY after ${sent} resets`);
  // The budget (plus what refilled while the batches went out) was spent, not much more.
  assert.ok(sent <= 2 * H2_RESET_BURST, `${sent} resets before the GOAWAY`);
  assert.equal(server.output().slice(stderrBefore), '', 'kesd wrote to stderr');
});

test('over h2: the server still answers other clients after the attack', async () => {
  const session = http2.connect(`https://127.0.0.1:${server.port}`, {
    cert: user.cert,
    key: user.key,
    rejectUnauthorized: false,
  });
  try {
    const stream = session.request({ ':method': 'POST', ':path': '/v1/key/generate/k1' });
    let status: number | undefined;
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.resume();
    stream.end('{}');
    await once(stream, 'close');
    assert.equal(status, 200);
  } finally {
    session.close();
  }
});
