// Finding 1 (docs/security.md): a client that knows a victim's PUBLIC certificate must never be identified as the
// victim. The attacker sends [its own certificate marked CA=true, a forged non-CA certificate with the victim's public
// key] (KES's rule skipped the first and took the forgery), or [its own plain leaf, the forgery] (two linked non-CA
// certificates). Run against real `kesd server` processes: 1 and 2 workers, verify_cert off and on, HTTP/1.1 and h2,
// and four victims: the system admin, an enclave admin and a policy identity (P-256), and a policy identity with an
// Ed25519 key. Over h2, Node fails the whole session (GOAWAY INTERNAL_ERROR, before any request is read) when a client
// chain holds an Ed25519 signature that does not verify: OpenSSL leaves an error behind from the handshake's chain
// check. That refusal is safe but proves nothing about identities, so the identity checks use P-256 victims too.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { forgedChain, type ForgedChain } from './forged-chain.js';
import { makeIdentity, type TestIdentity } from './harness.js';
import { startServer, stopServer, type ServerProcess } from './cli-process.js';

interface Outcome {
  readonly status?: number;
  readonly body?: string;
  /** The TLS handshake or the connection failed (verify_cert on refuses the chain). */
  readonly refused?: string;
}

type Creds = { cert: string; key: string };

function h1(port: number, who: Creds, method: string, path: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        cert: who.cert,
        key: who.key,
        rejectUnauthorized: false,
        agent: false,
        headers: { 'content-length': 0 },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on('error', (err) => resolve({ refused: err.message }));
    req.end();
  });
}

function h2(port: number, who: Creds, method: string, path: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, {
      cert: who.cert,
      key: who.key,
      rejectUnauthorized: false,
    });
    let settled = false;
    const done = (o: Outcome) => {
      if (settled) return;
      settled = true;
      session.destroy();
      resolve(o);
    };
    session.on('error', (err) => done({ refused: err.message }));
    const stream = session.request({ ':method': method, ':path': path });
    let status: number | undefined;
    let body = '';
    stream.setEncoding('utf8');
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (d: string) => (body += d));
    stream.on('end', () =>
      done(status === undefined ? { refused: 'the stream ended without an answer' } : { status, body }),
    );
    stream.on('close', () =>
      done(status === undefined ? { refused: `stream closed (${stream.rstCode})` } : { status, body }),
    );
    stream.on('error', (err) => done({ refused: err.message }));
    stream.end();
  });
}

const protocols = { 'HTTP/1.1': h1, h2 } as const;

let dir: string;
let sysadmin: TestIdentity;
let admin: TestIdentity;
let user: TestIdentity;
let edUser: TestIdentity;
let caFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-forged-'));
  sysadmin = await makeIdentity(dir, 'sysadmin', 'p256');
  admin = await makeIdentity(dir, 'admin', 'p256');
  user = await makeIdentity(dir, 'user', 'p256');
  edUser = await makeIdentity(dir, 'ed-user', 'ed25519');
  caFile = sysadmin.certFile; // verify_cert on: a CA the forgeries do not chain to
});
after(() => rm(dir, { recursive: true, force: true }));

async function startKesd(name: string, workers: number, verifyCert: boolean): Promise<ServerProcess> {
  const tls = await makeIdentity(dir, `${name}-server`, 'p256', { ips: ['127.0.0.1'] });
  const env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 9).toString('base64') };
  const data = join(dir, name);
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
        verifyCert,
        ca: verifyCert ? caFile : undefined,
        proxy: { identities: [], header: '' },
      },
      enclaves: [
        {
          name: 'default',
          admin: admin.identity,
          policies: [{ name: 'app', allow: ['/v1/key/*'], deny: [], identities: [user.identity, edUser.identity] }],
          keys: ['k1'],
        },
      ],
    },
    { env },
  );
  return startServer([data, '--workers', String(workers), '--addr', '127.0.0.1:0', '--audit-log', 'off'], env);
}

// What only the victim may do: a request that answers 200 to it.
const victims = () =>
  [
    { name: 'system admin', who: sysadmin, only: ['GET', '/v1/enclave/describe/default'] },
    { name: 'enclave admin', who: admin, only: ['GET', '/v1/policy/list/*'] },
    { name: 'policy identity', who: user, only: ['POST', '/v1/key/generate/k1'] },
    { name: 'Ed25519 policy identity', who: edUser, only: ['POST', '/v1/key/generate/k1'], h2MayRefuse: true },
  ] as const;

for (const workers of [1, 2]) {
  for (const verifyCert of [false, true]) {
    describe(`kesd --workers ${workers}, verify_cert ${verifyCert ? 'on' : 'off'}`, () => {
      let server: ServerProcess;
      before(async () => {
        server = await startKesd(`w${workers}-v${verifyCert}`, workers, verifyCert);
      });
      after(() => stopServer(server.child));

      for (const [protocol, call] of Object.entries(protocols)) {
        test(`over ${protocol}: a forged chain never acts as the system admin, an enclave admin or a policy identity`, async () => {
          for (const victim of victims()) {
            // The victim's own request succeeds on this server (verify_cert off), so a refusal below is the forgery's.
            if (!verifyCert)
              assert.equal(
                (await call(server.port, victim.who, victim.only[0], victim.only[1])).status,
                200,
                `${victim.name} itself`,
              );
            for (const firstIsCa of [true, false]) {
              const chain: ForgedChain = await forgedChain(victim.who.cert, firstIsCa);
              const label = `${victim.name}, first certificate ${firstIsCa ? 'CA' : 'non-CA'}`;
              const self = await call(server.port, chain, 'GET', '/v1/identity/self/describe');
              const act = await call(server.port, chain, victim.only[0], victim.only[1]);
              const h2Refused =
                protocol === 'h2' && 'h2MayRefuse' in victim && self.refused !== undefined && act.refused !== undefined;
              if (verifyCert || h2Refused) {
                // The chain does not verify: no HTTP answer at all, or at most a 400 without an identity.
                for (const o of [self, act])
                  assert.ok(o.refused !== undefined || o.status === 400, `${label}: ${JSON.stringify(o)}`);
                continue;
              }
              const expected = firstIsCa
                ? 'tls: client certificate is required'
                : 'tls: received more than one client certificate';
              assert.deepEqual(
                { status: self.status, message: JSON.parse(self.body ?? '{}').message },
                { status: 400, message: expected },
                label,
              );
              assert.deepEqual(
                { status: act.status, message: JSON.parse(act.body ?? '{}').message },
                { status: 400, message: expected },
                label,
              );
            }
          }
        });
      }
    });
  }
}
