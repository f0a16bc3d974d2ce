// `kesd server` as a process: audit lines on stdout, and a TLS certificate reload on SIGHUP.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newIdentity } from '../../kesd/src/identity/certificate.js';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { makeIdentity, request, type TestIdentity } from './harness.js';
import { startServer, stopServer, type ServerProcess } from './cli-process.js';

let dir: string;
let admin: TestIdentity;
let server: ServerProcess;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-proc-'));
  const tls = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  const sysadmin = await makeIdentity(dir, 'sysadmin');
  admin = await makeIdentity(dir, 'admin');
  const env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 9).toString('base64') };
  await initDataDir(
    join(dir, 'data'),
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
      enclaves: [{ name: 'default', admin: admin.identity, policies: [], keys: ['k1'] }],
    },
    { env },
  );
  server = await startServer([join(dir, 'data')], env);
});

after(async () => {
  await stopServer(server.child);
  await rm(dir, { recursive: true, force: true });
});

const fingerprintOf = (socket: import('node:tls').TLSSocket) => socket.getPeerX509Certificate()!.fingerprint256;

test('every request is audited on stdout as one JSON line with identity, path, status and time in ns', async () => {
  const agent = new https.Agent({ keepAlive: true, cert: admin.cert, key: admin.key, rejectUnauthorized: false });
  const reply = await request(agent, server.port, 'POST', '/v1/key/generate/k1', {});
  assert.equal(reply.status, 200);
  const missing = await request(agent, server.port, 'GET', '/v1/key/describe/nope');
  assert.equal(missing.status, 404);
  agent.destroy();
  await new Promise((r) => setTimeout(r, 300)); // the stdout destination is asynchronous
  await stopServer(server.child); // flushes stdout
  const lines = server
    .stdout()
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  const generate = lines.filter((e) => e.request.path === '/v1/key/generate/k1');
  assert.equal(generate.length, 1);
  assert.equal(generate[0].request.identity, admin.identity);
  assert.equal(generate[0].response.code, 200);
  assert.ok(Number.isInteger(generate[0].response.time) && generate[0].response.time > 0);
  assert.ok(!Number.isNaN(Date.parse(generate[0].time)));
  assert.equal(lines.filter((e) => e.request.path === '/v1/key/describe/nope' && e.response.code === 404).length, 1);
  server = await startServer([join(dir, 'data')], {
    ...process.env,
    KESD_UNSEAL: Buffer.alloc(32, 9).toString('base64'),
  });
});

test('SIGHUP reloads the server certificate; an open keep-alive connection keeps working', async () => {
  const agent = new https.Agent({
    keepAlive: true,
    maxSockets: 1,
    cert: admin.cert,
    key: admin.key,
    rejectUnauthorized: false,
  });
  const first = await new Promise<string>((res, rej) => {
    https
      .get({ host: '127.0.0.1', port: server.port, path: '/version', agent }, (r) => {
        const fingerprint = fingerprintOf(r.socket as import('node:tls').TLSSocket);
        r.resume();
        r.on('end', () => res(fingerprint));
      })
      .on('error', rej);
  });
  const next = await newIdentity({ subject: 'server-2', keyType: 'p256', ips: ['127.0.0.1'] });
  await writeFile(join(dir, 'server.crt'), next.certPem);
  await writeFile(join(dir, 'server.key'), next.keyPem);
  server.child.kill('SIGHUP');
  while (!/TLS certificate reloaded/.test(server.output())) await new Promise((r) => setTimeout(r, 20));

  const onOldConnection = await request(agent, server.port, 'POST', '/v1/key/generate/k1', {});
  assert.equal(onOldConnection.status, 200, 'the keep-alive connection survives the reload');
  const fresh = await new Promise<string>((res, rej) => {
    https
      .get(
        {
          host: '127.0.0.1',
          port: server.port,
          path: '/version',
          agent: false,
          cert: admin.cert,
          key: admin.key,
          rejectUnauthorized: false,
        },
        (r) => {
          const fingerprint = fingerprintOf(r.socket as import('node:tls').TLSSocket);
          r.resume();
          r.on('end', () => res(fingerprint));
        },
      )
      .on('error', rej);
  });
  assert.notEqual(fresh, first);
  assert.equal(fresh, new X509Certificate(next.certPem).fingerprint256);
  agent.destroy();
});
