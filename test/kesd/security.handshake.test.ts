// Finding 3 (docs/security.md): TCP connections that never send a ClientHello were never closed (Node's handshakeTimeout
// only reports itself), each holding a file descriptor and ~18 KB. kesd closes a connection that has not finished its
// handshake HANDSHAKE_DEADLINE_MS after accepting it, and holds at most MAX_PENDING_HANDSHAKES in their handshake
// (the oldest go first), so honest clients still get in. Against a real `kesd server` process.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { HANDSHAKE_DEADLINE_MS, MAX_PENDING_HANDSHAKES } from '../../kesd/src/server/server.js';
import { makeIdentity, request, type TestIdentity } from './harness.js';
import { startServer, stopServer, type ServerProcess } from './cli-process.js';

let dir: string;
let user: TestIdentity;
let server: ServerProcess;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-handshake-'));
  const tls = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  user = await makeIdentity(dir, 'user');
  const env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 4).toString('base64') };
  const data = join(dir, 'data');
  await initDataDir(
    data,
    {
      version: 'v1',
      address: '127.0.0.1:0',
      sysadmin: user.identity,
      unsealEnv: 'KESD_UNSEAL',
      tls: {
        key: tls.keyFile,
        cert: tls.certFile,
        password: '',
        verifyCert: false,
        proxy: { identities: [], header: '' },
      },
      enclaves: [],
    },
    { env },
  );
  server = await startServer([data, '--workers', '1', '--addr', '127.0.0.1:0', '--audit-log', 'off'], env);
});
after(async () => {
  await stopServer(server.child);
  await rm(dir, { recursive: true, force: true });
});

interface Silent {
  readonly sockets: net.Socket[];
  /** How many the server has closed so far. */
  closed(): number;
}

/** Opens n TCP connections that never send a byte. */
async function silentConnections(n: number): Promise<Silent> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from({ length: n }, async () => {
      const socket = net.connect(server.port, '127.0.0.1');
      socket.on('error', () => {});
      socket.once('close', () => closed++);
      socket.resume();
      await once(socket, 'connect');
      return socket;
    }),
  );
  return { sockets, closed: () => closed };
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  return check();
}

test('connections that never start a TLS handshake are closed after the handshake deadline', async () => {
  const silent = await silentConnections(20);
  try {
    // Generous: the deadline runs from accept; a loaded machine may be slow to deliver the close.
    const allClosed = await until(() => silent.closed() === 20, HANDSHAKE_DEADLINE_MS + 10_000);
    assert.ok(allClosed, `${silent.closed()} of 20 closed`);
  } finally {
    for (const s of silent.sockets) s.destroy();
  }
});

test('past the bound on pending handshakes the oldest silent connections go, and an honest client still gets in', async () => {
  const extra = 40;
  const silent = await silentConnections(MAX_PENDING_HANDSHAKES + extra);
  try {
    // Evicted at once, long before the deadline.
    assert.ok(await until(() => silent.closed() >= extra, HANDSHAKE_DEADLINE_MS / 2), `${silent.closed()} closed`);
    const agent = new https.Agent({ cert: user.cert, key: user.key, rejectUnauthorized: false });
    const reply = await request(agent, server.port, 'GET', '/v1/identity/self/describe');
    agent.destroy();
    assert.equal(reply.status, 200, reply.text);
    // The earliest were evicted, not arbitrary ones.
    assert.ok(
      silent.sockets.slice(0, extra).every((s) => s.destroyed || s.readableEnded),
      'the oldest were not the ones closed',
    );
  } finally {
    for (const s of silent.sockets) s.destroy();
  }
});
