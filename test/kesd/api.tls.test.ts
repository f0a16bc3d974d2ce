// TLS behaviour of kesd: protocol versions, identities of Ed25519 / P-256 / RSA client certificates,
// session resumption, client-certificate verification (verify_cert + tls.ca) and certificate reload
// (kes-protocol §1, §2.1, §2.3).
import 'reflect-metadata';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, webcrypto, X509Certificate } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import tls from 'node:tls';
import * as x509 from '@peculiar/x509';
import { parse, stringify } from 'yaml';
import { makeIdentity, request, startTestServer, type Reply, type TestIdentity, type TestServer } from './harness.js';

x509.cryptoProvider.set(webcrypto);

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s.stop();
});

let counter = 0;
const fresh = (prefix = 'id') => `${prefix}-${++counter}`;
const as = (who: TestIdentity | undefined, method: string, path: string, body?: unknown) =>
  request(s.agent(who), s.port, method, path, body);

async function ok(r: Promise<Reply>): Promise<Reply> {
  const reply = await r;
  assert.equal(reply.status, 200, reply.text);
  return reply;
}

/** The KES identity computed independently of kesd: SHA-256 over the certificate's DER SubjectPublicKeyInfo. */
function identityOfPem(pem: string): string {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

const DAY = 24 * 3600 * 1000;

async function writeIdentity(
  dir: string,
  name: string,
  cert: x509.X509Certificate,
  keyPem: string,
): Promise<TestIdentity> {
  const certPem = cert.toString('pem') + '\n';
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await writeFile(certFile, certPem);
  await writeFile(keyFile, keyPem, { mode: 0o600 });
  return { certFile, keyFile, cert: certPem, key: keyPem, identity: identityOfPem(certPem) };
}

/** A self-signed RSA-2048 client certificate (node:crypto key pair, @peculiar/x509 certificate). */
async function rsaIdentity(dir: string, name: string): Promise<TestIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const keys = {
    privateKey: await webcrypto.subtle.importKey(
      'pkcs8',
      privateKey.export({ type: 'pkcs8', format: 'der' }),
      alg,
      true,
      ['sign'],
    ),
    publicKey: await webcrypto.subtle.importKey('spki', publicKey.export({ type: 'spki', format: 'der' }), alg, true, [
      'verify',
    ]),
  };
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + DAY),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
    ],
  });
  return writeIdentity(dir, name, cert, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
}

/** A P-256 CA and a client certificate it signed. */
async function caAndLeaf(dir: string): Promise<{ caPem: string; caFile: string; leaf: TestIdentity }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const caKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + DAY);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=kesd test client CA',
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const leafKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=ca-signed-client',
    issuer: ca.subject,
    notBefore,
    notAfter,
    signingKey: caKeys.privateKey,
    publicKey: leafKeys.publicKey,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
  const caPem = ca.toString('pem') + '\n';
  const caFile = join(dir, 'client-ca.crt');
  await writeFile(caFile, caPem);
  return { caPem, caFile, leaf: await writeIdentity(dir, 'ca-signed-client', leaf, keyPem) };
}

interface RawResult {
  status: number;
  body: string;
  reused: boolean;
  protocol: string | null;
  session: Buffer | undefined;
}

/** One HTTP/1.1 request on a fresh TLS connection, with full control of the TLS options. */
function rawTlsGet(port: number, path: string, options: tls.ConnectionOptions): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...options });
    let session: Buffer | undefined;
    let data = '';
    socket.setEncoding('utf8');
    socket.on('session', (sess: Buffer) => {
      session = sess;
    });
    socket.on('secureConnect', () =>
      socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`),
    );
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('end', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({
        status: Number(head.split(' ')[1]),
        body,
        reused: socket.isSessionReused(),
        protocol: socket.getProtocol(),
        session,
      });
    });
  });
}

function handshake(port: number, options: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...options });
    socket.on('secureConnect', () => {
      const protocol = socket.getProtocol() ?? '';
      socket.destroy();
      resolve(protocol);
    });
    socket.on('error', reject);
  });
}

// ---- protocol versions ----------------------------------------------------------------------------

test('TLS 1.1 is refused by the server', async () => {
  await assert.rejects(
    handshake(s.port, {
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT:@SECLEVEL=0',
      ca: s.server.cert,
      cert: s.user.cert,
      key: s.user.key,
    }),
    (err: NodeJS.ErrnoException) => {
      // The server answers with a protocol_version alert; the client did offer TLS 1.1.
      assert.match(`${err.code} ${err.message}`, /PROTOCOL_VERSION|protocol version/i);
      return true;
    },
  );
});

test('TLS 1.2 and TLS 1.3 are accepted, also with an Ed25519 client certificate', async () => {
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const r = await rawTlsGet(s.port, '/v1/identity/self/describe', {
      minVersion: version,
      maxVersion: version,
      ca: s.server.cert,
      cert: s.admin.cert,
      key: s.admin.key,
    });
    assert.equal(r.protocol, version);
    assert.equal(r.status, 200, r.body);
    assert.equal(JSON.parse(r.body).identity, s.admin.identity);
  }
});

// ---- identities of different key types -------------------------------------------------------------

const keyTypes: [label: string, make: (dir: string, name: string) => Promise<TestIdentity>][] = [
  ['Ed25519', (dir, name) => makeIdentity(dir, name, 'ed25519')],
  ['P-256', (dir, name) => makeIdentity(dir, name, 'p256')],
  ['RSA-2048', rsaIdentity],
];
for (const [label, make] of keyTypes) {
  test(`${label} client certificate: the identity is SHA-256 of its SubjectPublicKeyInfo`, async () => {
    const id = await make(s.dir, fresh(label.toLowerCase()));
    const expected = identityOfPem(id.cert);
    assert.equal(id.identity, expected);
    await ok(as(s.admin, 'POST', '/v1/policy/assign/app', { identity: expected }));
    const self = (await ok(as(id, 'GET', '/v1/identity/self/describe'))).json();
    assert.equal(self.identity, expected);
    assert.equal(self.policy, 'app');
    await ok(as(id, 'GET', '/v1/key/describe/minio-default'));
  });
}

test('a client chain of leaf + CA certificate identifies as the leaf (CA certificates are skipped)', async () => {
  const dir = join(s.dir, 'chain');
  await mkdir(dir);
  const { caPem, leaf } = await caAndLeaf(dir);
  await ok(as(s.admin, 'POST', '/v1/policy/assign/app', { identity: leaf.identity }));
  const chained: TestIdentity = { ...leaf, cert: leaf.cert + caPem };
  const self = (await ok(as(chained, 'GET', '/v1/identity/self/describe'))).json();
  assert.equal(self.identity, leaf.identity);
});

// Finding 8 (docs/security.md): the identity is the first certificate's either way. Node shows kesd only the
// certificates it links by issuer, so an unrelated second certificate is invisible and lends nothing; a linked second
// non-CA certificate is refused with KES's 400 (test/kesd/security.forged-chain.test.ts).
test('a client sending two unrelated non-CA certificates is identified by the first, never by the second', async () => {
  const other = await makeIdentity(s.dir, fresh('second'));
  const twoLeaves: TestIdentity = { ...s.user, cert: s.user.cert + other.cert };
  const self = (await ok(as(twoLeaves, 'GET', '/v1/identity/self/describe'))).json();
  assert.equal(self.identity, s.user.identity);
  const swapped: TestIdentity = { ...other, cert: other.cert + s.admin.cert };
  const r = await as(swapped, 'GET', '/v1/identity/self/describe');
  assert.notEqual(r.status === 200 ? r.json().identity : undefined, s.admin.identity);
});

// ---- session resumption ---------------------------------------------------------------------------

test('a resumed TLS 1.3 session keeps the identity', async () => {
  const options = { minVersion: 'TLSv1.3', ca: s.server.cert, cert: s.user.cert, key: s.user.key } as const;
  const first = await rawTlsGet(s.port, '/v1/identity/self/describe', options);
  assert.equal(first.status, 200, first.body);
  assert.equal(first.reused, false);
  assert.ok(first.session, 'no session ticket received');
  const second = await rawTlsGet(s.port, '/v1/identity/self/describe', { ...options, session: first.session });
  assert.equal(second.reused, true, 'session was not resumed');
  assert.equal(second.protocol, 'TLSv1.3');
  assert.equal(second.status, 200, second.body);
  assert.equal(JSON.parse(second.body).identity, s.user.identity);
  assert.equal(JSON.parse(first.body).identity, s.user.identity);
});

// ---- client certificate verification ---------------------------------------------------------------

test('verify_cert rejects a client certificate not signed by a trusted CA', async () => {
  const v = await startTestServer({ verifyCert: true });
  try {
    await assert.rejects(request(v.agent(v.user), v.port, 'GET', '/v1/key/describe/minio-default'));
    await assert.rejects(request(v.agent(v.admin), v.port, 'GET', '/v1/identity/self/describe'));
  } finally {
    await v.stop();
  }
});

test('verify_cert with tls.ca accepts a client certificate signed by that CA and still rejects self-signed ones', async () => {
  let v = await startTestServer({ verifyCert: true });
  try {
    const dir = join(v.dir, 'pki');
    await mkdir(dir);
    const { caFile, leaf } = await caAndLeaf(dir);
    // The harness has no tls.ca option: add it to the server config (<dir>/.init) and restart.
    const initFile = join(v.dataDir, '.init');
    const config = parse(await readFile(initFile, 'utf8'));
    config.tls.ca = caFile;
    assert.equal(config.tls.client.verify_cert, true);
    await writeFile(initFile, stringify(config), { mode: 0o600 });
    v = await v.restart();

    const version = await request(v.agent(leaf), v.port, 'GET', '/version');
    assert.equal(version.status, 200, version.text);
    // Authenticated as the leaf (an identity the enclave does not know), not refused at the TLS layer.
    const self = await request(v.agent(leaf), v.port, 'GET', '/v1/identity/self/describe');
    assert.equal(self.status, 404, self.text);
    assert.equal(self.json().message, 'identity does not exist');
    const key = await request(v.agent(leaf), v.port, 'GET', '/v1/key/describe/minio-default');
    assert.equal(key.status, 403, key.text);
    await assert.rejects(request(v.agent(v.admin), v.port, 'GET', '/v1/key/describe/minio-default'));
  } finally {
    await v.stop();
  }
});

// ---- certificate reload (last: it replaces the shared server's certificate) -------------------------

function getOn(
  agent: https.Agent,
  path: string,
): Promise<{ status: number; reused: boolean; localPort: number | undefined; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: s.port, method: 'GET', path, agent }, (res) => {
      const socket = res.socket as tls.TLSSocket;
      const info = {
        status: res.statusCode ?? 0,
        reused: req.reusedSocket,
        localPort: socket.localPort,
        fingerprint: socket.getPeerCertificate().fingerprint256,
      };
      res.resume();
      res.on('end', () => resolve(info));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

test('reloadTls (SIGHUP) keeps keep-alive connections working and new connections get the new certificate', async () => {
  const oldAgent = new https.Agent({
    keepAlive: true,
    maxSockets: 1,
    ca: s.server.cert,
    cert: s.admin.cert,
    key: s.admin.key,
    servername: 'localhost',
  });
  const dir = join(s.dir, 'reload');
  await mkdir(dir);
  const next = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  const newAgent = new https.Agent({
    keepAlive: false,
    ca: next.cert,
    cert: s.admin.cert,
    key: s.admin.key,
    servername: 'localhost',
  });
  try {
    const before = await getOn(oldAgent, '/v1/key/describe/minio-default');
    assert.equal(before.status, 200);

    await writeFile(s.server.keyFile, next.key);
    await writeFile(s.server.certFile, next.cert);
    s.kesd.reloadTls();

    const after = await getOn(oldAgent, '/v1/key/describe/minio-default');
    assert.equal(after.status, 200);
    assert.equal(after.reused, true, 'the keep-alive connection was not reused');
    assert.equal(after.localPort, before.localPort);
    assert.equal(after.fingerprint, before.fingerprint);

    const fresh = await getOn(newAgent, '/v1/key/describe/minio-default');
    assert.equal(fresh.status, 200);
    assert.equal(fresh.fingerprint, new X509Certificate(next.cert).fingerprint256);
    assert.notEqual(fresh.fingerprint, before.fingerprint);
  } finally {
    oldAgent.destroy();
    newAgent.destroy();
  }
});
