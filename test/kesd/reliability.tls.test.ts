// TLS reliability: client-certificate checks with verify_cert on (untrusted, expired, not yet valid, wrong EKU,
// none) and off (the identity alone decides), verify_cert with a skip_auth route (KES: VerifyClientCertIfGiven),
// reloads with bad files keeping the running certificate, and the server certificate replaced and reloaded
// (SIGHUP) under concurrent load, in one process and in cluster mode, with no failed request.
// TLS 1.1 refused / 1.2 and 1.3 accepted at start: api.tls.test.ts; here they are checked again after a reload.
import 'reflect-metadata';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, webcrypto, X509Certificate } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import * as x509 from '@peculiar/x509';
import { parse, stringify } from 'yaml';
import { KESD_BIN } from './cli-process.js';
import { makeIdentity, readReply, request, startTestServer, type TestIdentity, type TestServer } from './harness.js';
import { deadline, envInt, groupPids, makeFixture, sleep, startKesd, type Fixture, type KesdProcess } from './load.js';

x509.cryptoProvider.set(webcrypto);

// ---- certificates ------------------------------------------------------------------------------------------

const P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

interface Ca {
  readonly cert: x509.X509Certificate;
  readonly keys: webcrypto.CryptoKeyPair;
  readonly pem: string;
}

const newKeys = async () =>
  (await webcrypto.subtle.generateKey(P256, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
const pkcs8Pem = async (key: webcrypto.CryptoKey) =>
  `-----BEGIN PRIVATE KEY-----\n${Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key))
    .toString('base64')
    .replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;

/** The KES identity, computed independently of kesd: SHA-256 of the DER SubjectPublicKeyInfo. */
const identityOfPem = (pem: string) =>
  createHash('sha256')
    .update(new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex');

async function makeCa(name: string): Promise<Ca> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + DAY),
    keys,
    signingAlgorithm: P256,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys, pem: cert.toString('pem') + '\n' };
}

interface LeafOptions {
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Extended key usages; an empty list leaves the extension out (any usage, for Go and OpenSSL alike). */
  readonly eku: readonly string[];
}

let serial = 16;
/** A client certificate signed by `issuer`, with exactly the given validity and extended key usages. */
async function makeLeaf(dir: string, name: string, issuer: Ca, opts: LeafOptions): Promise<TestIdentity> {
  const keys = await newKeys();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
  ];
  if (opts.eku.length > 0) extensions.push(new x509.ExtendedKeyUsageExtension([...opts.eku]));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (++serial).toString(16).padStart(4, '0'),
    subject: `CN=${name}`,
    issuer: issuer.cert.subject,
    notBefore: opts.notBefore,
    notAfter: opts.notAfter,
    signingKey: issuer.keys.privateKey,
    publicKey: keys.publicKey,
    signingAlgorithm: P256,
    extensions,
  });
  const certPem = cert.toString('pem') + '\n';
  const keyPem = await pkcs8Pem(keys.privateKey);
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await writeFile(certFile, certPem);
  await writeFile(keyFile, keyPem, { mode: 0o600 });
  return { certFile, keyFile, cert: certPem, key: keyPem, identity: identityOfPem(certPem) };
}

// ---- one request on a fresh TLS connection ------------------------------------------------------------------

interface Attempt {
  /** The client saw its handshake complete. */
  readonly handshake: boolean;
  /** The HTTP status, if any response came. */
  readonly status?: number;
  readonly body?: string;
  /** The client's error, if the connection failed (a TLS alert shows as its code). */
  readonly error?: string;
}

type Version = 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';

function attempt(
  port: number,
  serverCa: string | string[],
  who: TestIdentity | undefined,
  version: Version,
  path: string,
): Promise<Attempt> {
  return new Promise((resolve) => {
    const legacy = version === 'TLSv1' || version === 'TLSv1.1';
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: serverCa,
      cert: who?.cert,
      key: who?.key,
      minVersion: version,
      maxVersion: version,
      ...(legacy ? { ciphers: 'DEFAULT:@SECLEVEL=0' } : {}),
    });
    let handshake = false;
    let data = '';
    let done = false;
    const finish = (a: Attempt) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(a);
    };
    socket.setTimeout(10_000, () => finish({ handshake, error: 'client timeout' }));
    socket.setEncoding('utf8');
    socket.on('secureConnect', () => {
      handshake = true;
      socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    });
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ handshake, error: err.code ?? err.message }));
    socket.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      finish(m ? { handshake, status: Number(m[1]), body: data.slice(data.indexOf('\r\n\r\n') + 4) } : { handshake });
    });
  });
}

const NOT_AUTHORIZED = 'not authorized: insufficient permissions';
const NO_CERT = 'tls: client certificate is required';
const KEY_PATH = '/v1/key/describe/minio-default';

// ---- shared PKI and the verify_cert servers ------------------------------------------------------------------

let pki: string;
let trusted: Ca;
let admin: TestIdentity;
/** Client certificates that verify_cert accepts (all signed by the trusted CA, valid now). */
let good: Record<string, TestIdentity>;
let client: TestIdentity;
let expired: TestIdentity;
/** Client certificates that verify_cert rejects. */
let bad: Record<string, TestIdentity>;

before(async () => {
  pki = await mkdtemp(join(tmpdir(), 'kesd-tls-pki-'));
  trusted = await makeCa('kesd test trusted client CA');
  const other = await makeCa('kesd test other CA');
  const now = Date.now();
  const valid = { notBefore: new Date(now - MINUTE), notAfter: new Date(now + DAY) };
  const { clientAuth, serverAuth, codeSigning } = x509.ExtendedKeyUsage;
  admin = await makeLeaf(pki, 'admin', trusted, { ...valid, eku: [clientAuth] });
  client = await makeLeaf(pki, 'client', trusted, { ...valid, eku: [clientAuth] });
  expired = await makeLeaf(pki, 'expired', trusted, {
    notBefore: new Date(now - DAY),
    notAfter: new Date(now - MINUTE),
    eku: [clientAuth],
  });
  good = {
    clientAuth: client,
    'clientAuth + serverAuth': await makeLeaf(pki, 'both', trusted, { ...valid, eku: [serverAuth, clientAuth] }),
    'no EKU extension': await makeLeaf(pki, 'no-eku', trusted, { ...valid, eku: [] }),
  };
  bad = {
    'signed by an untrusted CA': await makeLeaf(pki, 'untrusted', other, { ...valid, eku: [clientAuth] }),
    'self-signed (as MinIO API-key certificates)': await makeIdentity(pki, 'self-signed'),
    'expired a minute ago': expired,
    'not valid for another hour': await makeLeaf(pki, 'not-yet-valid', trusted, {
      notBefore: new Date(now + 60 * MINUTE),
      notAfter: new Date(now + DAY),
      eku: [clientAuth],
    }),
    'EKU serverAuth only': await makeLeaf(pki, 'server-auth', trusted, { ...valid, eku: [serverAuth] }),
    'EKU codeSigning only': await makeLeaf(pki, 'code-signing', trusted, { ...valid, eku: [codeSigning] }),
  };
});
after(async () => {
  await rm(pki, { recursive: true, force: true });
});

/** A verify_cert server whose tls.ca is a directory holding the trusted CA, admin = a trusted certificate. */
async function startVerifying(extra: (config: any) => void = () => {}): Promise<{ v: TestServer; caDir: string }> {
  let v = await startTestServer({ verifyCert: true, adminIdentity: admin.identity });
  try {
    const caDir = join(v.dir, 'client-cas');
    await mkdir(caDir);
    await writeFile(join(caDir, 'trusted.pem'), trusted.pem);
    // The harness has no tls.ca or api option: add them to the server config (<dir>/.init) and restart.
    const initFile = join(v.dataDir, '.init');
    const config = parse(await readFile(initFile, 'utf8'));
    config.tls.ca = caDir;
    extra(config);
    await writeFile(initFile, stringify(config), { mode: 0o600 });
    v = await v.restart();
    for (const id of Object.values(good)) {
      const r = await request(v.agent(admin), v.port, 'POST', '/v1/policy/assign/app', { identity: id.identity });
      assert.equal(r.status, 200, r.text);
    }
    return { v, caDir };
  } catch (err) {
    await v.stop();
    throw err;
  }
}

const VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;

/** The server closes the connection without an HTTP response, on TLS 1.2 and 1.3; returns what the client saw. */
async function assertRejected(
  port: number,
  serverCa: string | string[],
  label: string,
  id: TestIdentity,
): Promise<string[]> {
  const seen: string[] = [];
  for (const version of VERSIONS) {
    const a = await attempt(port, serverCa, id, version, KEY_PATH);
    // Node closes a connection whose certificate fails verification right after the handshake, before any HTTP
    // byte and without an alert. (Not the client refusing the server: that would be a certificate error here.)
    assert.equal(a.status, undefined, `${label} (${version}) got an HTTP response: ${a.status} ${a.body}`);
    assert.ok(
      a.handshake || a.error === undefined || /^(ECONNRESET|EPIPE)$/.test(a.error),
      `${label} (${version}): ${a.error}`,
    );
    seen.push(`${version}: ${a.handshake ? 'handshake, then closed' : `handshake failed (${a.error ?? 'closed'})`}`);
  }
  return seen;
}

// ---- verify_cert on -----------------------------------------------------------------------------------------

test('verify_cert on: trusted certificates get in; untrusted, self-signed, expired, not yet valid, wrong-EKU ones and none do not', async (t) => {
  const { v } = await startVerifying();
  try {
    for (const [label, id] of Object.entries(good)) {
      for (const version of VERSIONS) {
        const a = await attempt(v.port, v.server.cert, id, version, KEY_PATH);
        assert.equal(a.status, 200, `${label} (${version}): ${a.error ?? a.body}`);
      }
      t.diagnostic(`accepted: ${label}: 200 on TLS 1.2 and 1.3`);
    }
    for (const [label, id] of Object.entries(bad)) {
      t.diagnostic(`rejected: ${label}: ${(await assertRejected(v.port, v.server.cert, label, id)).join('; ')}`);
      await assert.rejects(
        request(
          new https.Agent({ ca: v.server.cert, cert: id.cert, key: id.key, servername: 'localhost' }),
          v.port,
          'GET',
          '/version',
        ),
      );
    }
    // No certificate: the handshake itself fails, with the alert KES (RequireAndVerifyClientCert) sends too.
    const tls12 = await attempt(v.port, v.server.cert, undefined, 'TLSv1.2', '/version');
    assert.equal(tls12.status, undefined);
    assert.match(tls12.error ?? '', /HANDSHAKE_FAILURE/);
    const tls13 = await attempt(v.port, v.server.cert, undefined, 'TLSv1.3', '/version');
    assert.equal(tls13.status, undefined);
    assert.match(tls13.error ?? '', /CERTIFICATE_REQUIRED/);
    t.diagnostic(`no certificate: TLS 1.2 ${tls12.error}; TLS 1.3 ${tls13.error}`);
  } finally {
    await v.stop();
  }
});

test('verify_cert on with a skip_auth route: no certificate reaches it (KES VerifyClientCertIfGiven), bad certificates are still rejected', async () => {
  const { v } = await startVerifying((config) => {
    config.api = { '/v1/ready': { skip_auth: true } };
  });
  try {
    for (const version of VERSIONS) {
      const ready = await attempt(v.port, v.server.cert, undefined, version, '/v1/ready');
      assert.equal(ready.status, 200, `${version}: ${ready.error ?? ready.body}`);
      const key = await attempt(v.port, v.server.cert, undefined, version, KEY_PATH);
      assert.equal(key.status, 400, key.body);
      assert.equal(JSON.parse(key.body!).message, NO_CERT);
      assert.equal((await attempt(v.port, v.server.cert, client, version, KEY_PATH)).status, 200);
    }
    for (const [label, id] of Object.entries(bad)) {
      await assertRejected(v.port, v.server.cert, label, id);
      assert.equal((await attempt(v.port, v.server.cert, id, 'TLSv1.3', '/v1/ready')).status, undefined, label);
    }
  } finally {
    await v.stop();
  }
});

// ---- verify_cert off ----------------------------------------------------------------------------------------

test('verify_cert off: every certificate passes the handshake and the identity alone decides (403 until assigned, then 200)', async (t) => {
  const s = await startTestServer();
  try {
    const everyone = { ...good, ...bad };
    for (const [label, id] of Object.entries(everyone)) {
      for (const version of VERSIONS) {
        const a = await attempt(s.port, s.server.cert, id, version, KEY_PATH);
        assert.equal(a.status, 403, `${label} (${version}): ${a.error ?? a.body}`);
        assert.equal(JSON.parse(a.body!).message, NOT_AUTHORIZED);
      }
      const self = await attempt(s.port, s.server.cert, id, 'TLSv1.3', '/v1/identity/self/describe');
      assert.equal(self.status, 404, self.body);
      const r = await request(s.agent(s.admin), s.port, 'POST', '/v1/policy/assign/app', { identity: id.identity });
      assert.equal(r.status, 200, r.text);
      for (const version of VERSIONS) {
        const a = await attempt(s.port, s.server.cert, id, version, KEY_PATH);
        assert.equal(a.status, 200, `${label} (${version}) after assignment: ${a.error ?? a.body}`);
      }
    }
    t.diagnostic(
      `${Object.keys(everyone).length} certificates: 403 "${NOT_AUTHORIZED}" unassigned, 200 once assigned, on TLS 1.2 and 1.3`,
    );
    const none = await attempt(s.port, s.server.cert, undefined, 'TLSv1.3', KEY_PATH);
    assert.equal(none.status, 400);
    assert.equal(JSON.parse(none.body!).message, NO_CERT);
    assert.equal((await attempt(s.port, s.server.cert, undefined, 'TLSv1.3', '/version')).status, 200);
  } finally {
    await s.stop();
  }
});

// ---- reloads in process -------------------------------------------------------------------------------------

async function fingerprintOf(port: number, ca: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, minVersion: 'TLSv1.3' }, () => {
      const fp = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fp);
    });
    socket.on('error', reject);
  });
}

test('a reload with a bad certificate, key or CA throws and keeps the running certificate; a good one then takes over with TLS ≥ 1.2', async (t) => {
  const { v, caDir } = await startVerifying();
  const dir = join(v.dir, 'next');
  await mkdir(dir);
  try {
    const original = v.server;
    const next = await makeIdentity(dir, 'next', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
    const noSan = await makeIdentity(dir, 'no-san', 'p256');
    const cas = [original.cert, next.cert];
    const before = await fingerprintOf(v.port, cas);
    assert.equal(before, new X509Certificate(original.cert).fingerprint256);

    const cases: [label: string, cert: string, key: string, message: RegExp][] = [
      ['empty certificate file', '', original.key, /cannot load certificate .*no PEM certificate found/],
      [
        'certificate cut in half',
        original.cert.slice(0, original.cert.length >> 1),
        original.key,
        /cannot load certificate .*no PEM certificate found/,
      ],
      ['certificate without a DNS or IP SAN', noSan.cert, noSan.key, /does not contain any DNS or IP address as SAN/],
      ['new certificate, old key', next.cert, original.key, /private key .*does not match the certificate/],
      ['empty key file', next.cert, '', /cannot load private key/],
    ];
    for (const [label, cert, key, message] of cases) {
      await writeFile(v.server.certFile, cert);
      await writeFile(v.server.keyFile, key);
      assert.throws(() => v.kesd.reloadTls(), message, label);
      assert.equal(await fingerprintOf(v.port, cas), before, `${label}: the server changed its certificate`);
      const a = await attempt(v.port, cas, client, 'TLSv1.3', KEY_PATH);
      assert.equal(a.status, 200, `${label}: ${a.error ?? a.body}`);
    }
    t.diagnostic(`${cases.length} bad reloads refused; the old certificate kept serving`);

    await writeFile(v.server.certFile, next.cert);
    await writeFile(v.server.keyFile, next.key);
    await writeFile(join(caDir, 'junk.pem'), 'not a certificate\n');
    assert.throws(() => v.kesd.reloadTls(), /cannot load CA certificates .*junk\.pem.*no PEM certificate found/);
    assert.equal(await fingerprintOf(v.port, cas), before);
    await unlink(join(caDir, 'junk.pem'));

    v.kesd.reloadTls();
    assert.equal(await fingerprintOf(v.port, cas), new X509Certificate(next.cert).fingerprint256);
    // The reload kept the listener's settings: client verification, and the protocol floor.
    assert.equal((await attempt(v.port, cas, client, 'TLSv1.3', KEY_PATH)).status, 200);
    await assertRejected(v.port, cas, 'expired', expired);
    for (const version of ['TLSv1', 'TLSv1.1'] as const) {
      const old = await attempt(v.port, cas, client, version, '/version');
      assert.equal(old.handshake, false, version);
      // The server's protocol_version alert: the client did offer the old version.
      assert.match(old.error ?? '', /ALERT_PROTOCOL_VERSION/, `${version}: ${old.error}`);
      t.diagnostic(`after the reload, ${version}: refused (${old.error})`);
    }
    for (const version of VERSIONS)
      assert.equal((await attempt(v.port, cas, client, version, '/version')).status, 200, version);
  } finally {
    await v.stop();
  }
});

// ---- reload under load, as a process --------------------------------------------------------------------------

const LOAD_MS = envInt('KESD_TLS_RELOAD_LOAD_MS', 5000);
// At least 4: the clients take turns at the three kinds below.
const CLIENTS = Math.max(4, envInt('KESD_TLS_RELOAD_CLIENTS', 8));
const RELOADS = envInt('KESD_TLS_RELOADS', 4);

interface Generation {
  readonly name: string;
  /** The certificate's SHA-256 fingerprint as Node prints it; undefined for the broken one. */
  readonly fingerprint: string | undefined;
  readonly pem: string | undefined;
}

/**
 * The server's cert and key as Kubernetes mounts a Secret: <file> → tls/..data/<name> → tls/gen-N/<name>;
 * a rotation swaps the ..data symlink in one rename.
 */
async function mountedCertificates(
  fx: Fixture,
): Promise<{ rotate(gen: string): Promise<void>; add(gen: string, cert: string, key: string): Promise<void> }> {
  const tlsDir = join(fx.dir, 'tls');
  const add = async (gen: string, cert: string, key: string) => {
    await mkdir(join(tlsDir, gen), { recursive: true });
    await writeFile(join(tlsDir, gen, 'tls.crt'), cert);
    await writeFile(join(tlsDir, gen, 'tls.key'), key, { mode: 0o600 });
  };
  await add('gen-0', fx.server.cert, fx.server.key);
  await symlink('gen-0', join(tlsDir, '..data'));
  for (const [file, name] of [
    [fx.server.certFile, 'tls.crt'],
    [fx.server.keyFile, 'tls.key'],
  ] as const) {
    await unlink(file);
    await symlink(join(tlsDir, '..data', name), file);
  }
  return {
    add,
    async rotate(gen) {
      await rm(join(tlsDir, '..data_tmp'), { force: true });
      await symlink(gen, join(tlsDir, '..data_tmp'));
      await rename(join(tlsDir, '..data_tmp'), join(tlsDir, '..data'));
    },
  };
}

interface Sample {
  readonly ok: boolean;
  readonly detail: string;
  readonly startedAt: number;
  /** A fresh TLS handshake (not a kept-alive socket, not a resumed session) and the certificate it got. */
  readonly handshakeFingerprint?: string;
  readonly resumed: boolean;
  /** The connection it went over (to count a keep-alive client's connections). */
  readonly socket?: object;
}

function loadRequest(agent: https.Agent, port: number, method: string, path: string, body?: unknown): Promise<Sample> {
  const startedAt = performance.now();
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = https.request(
      { host: '127.0.0.1', port, method, path, agent, headers: payload ? { 'content-length': payload.length } : {} },
      (res) => {
        const socket = res.socket as tls.TLSSocket;
        const fresh = !req.reusedSocket && !socket.isSessionReused();
        const fingerprint = fresh ? socket.getPeerCertificate().fingerprint256 : undefined;
        const resumed = !req.reusedSocket && socket.isSessionReused();
        readReply(res).then(
          (r) =>
            resolve({
              ok: r.status === 200,
              detail: `${method} ${path}: ${r.status} ${r.text.slice(0, 200)}`,
              startedAt,
              handshakeFingerprint: fingerprint,
              resumed,
              socket,
            }),
          (err: Error) =>
            resolve({ ok: false, detail: `${method} ${path}: ${err.message}`, startedAt, resumed, socket }),
        );
      },
    );
    req.setTimeout(15_000, () => req.destroy(new Error('timeout')));
    req.on('error', (err) =>
      resolve({ ok: false, detail: `${method} ${path}: ${err.message}`, startedAt, resumed: false }),
    );
    req.end(payload);
  });
}

/** Waits until kesd's stderr has `count` reload outcomes; returns the last one. */
async function reloadOutcome(proc: KesdProcess, count: number): Promise<string> {
  const outcomes = () => proc.output().match(/kesd: TLS (certificate reloaded|reload failed[^\n]*)/g) ?? [];
  await deadline(
    (async () => {
      while (outcomes().length < count) await sleep(10);
    })(),
    15_000,
    `reload ${count} to be logged`,
  );
  return outcomes()[count - 1]!;
}

for (const workers of [1, 2]) {
  test(`the server certificate is replaced and reloaded (SIGHUP) under load, --workers ${workers}: no request fails, new handshakes get the new certificate`, {
    timeout: 120_000,
  }, async (t) => {
    const fx = await makeFixture();
    let proc: KesdProcess | undefined;
    const agents: https.Agent[] = [];
    try {
      const mount = await mountedCertificates(fx);
      const generations: Generation[] = [
        { name: 'gen-0', fingerprint: new X509Certificate(fx.server.cert).fingerprint256, pem: fx.server.cert },
      ];
      for (let i = 1; i <= RELOADS; i++) {
        const id = await makeIdentity(fx.dir, `server-${i}`, 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
        await mount.add(`gen-${i}`, id.cert, id.key);
        generations.push({ name: `gen-${i}`, fingerprint: new X509Certificate(id.cert).fingerprint256, pem: id.cert });
      }
      // A rotation whose certificate file was cut short (a half-written Secret): its reload must fail.
      const broken = await makeIdentity(fx.dir, 'server-broken', 'p256', { ips: ['127.0.0.1'] });
      await mount.add('broken', broken.cert.slice(0, 300), broken.key);
      const ca = generations.map((g) => g.pem!);
      // The reload order: good ones, the broken one in the middle.
      const order = generations.slice(1).map((g) => g.name);
      order.splice(Math.ceil(order.length / 2), 0, 'broken');

      proc = await startKesd(fx.dataDir, fx.env, ['--workers', String(workers), '--audit-log', 'off']);
      const port = proc.port;
      // Half keep-alive clients (one connection each, kept across every reload), half a new connection per
      // request: with session caching (resumes, as Go clients do) and without (a full handshake every time).
      const clients = Array.from({ length: CLIENTS }, (_, i) => {
        const keepAlive = i % 2 === 0;
        const agent = new https.Agent({
          keepAlive,
          maxSockets: 1,
          ca,
          cert: fx.admin.cert,
          key: fx.admin.key,
          ...(keepAlive || i % 4 === 1 ? {} : { maxCachedSessions: 0 }),
        });
        agents.push(agent);
        return { keepAlive, agent, sockets: new Set<object>() };
      });

      const samples: Sample[] = [];
      let stop = false;
      const load = Promise.all(
        clients.map(async (c, i) => {
          for (let n = 0; !stop; n++) {
            const sample =
              n % 2 === 0
                ? await loadRequest(c.agent, port, 'POST', '/v1/key/generate/minio-default', {
                    context: Buffer.from(`c${i}`).toString('base64'),
                  })
                : await loadRequest(c.agent, port, 'GET', '/v1/key/describe/minio-default');
            samples.push(sample);
            if (sample.socket) c.sockets.add(sample.socket);
          }
        }),
      );

      // Reloads spread over the load; each is confirmed from kesd's log before the next.
      const current: { since: number; gen: number }[] = [{ since: 0, gen: 0 }];
      const step = LOAD_MS / (order.length + 1);
      const loadStart = performance.now();
      let firstSighup = 0;
      for (const [k, name] of order.entries()) {
        await sleep(Math.max(0, loadStart + step * (k + 1) - performance.now()));
        await mount.rotate(name);
        if (k === 0) firstSighup = performance.now();
        process.kill(proc.pid, 'SIGHUP');
        const outcome = await reloadOutcome(proc, k + 1);
        if (name === 'broken') {
          assert.match(outcome, /TLS reload failed.*keeping the old certificate.*cannot load certificate/, outcome);
        } else {
          assert.equal(outcome, 'kesd: TLS certificate reloaded');
          current.push({ since: performance.now(), gen: generations.findIndex((g) => g.name === name) });
        }
      }
      const lastConfirmed = performance.now();
      await sleep(Math.max(0, loadStart + LOAD_MS - performance.now()));
      stop = true;
      await deadline(load, 30_000, 'the load to finish');

      const failures = samples.filter((s) => !s.ok);
      const during = samples.filter((s) => s.startedAt >= firstSighup && s.startedAt <= lastConfirmed).length;
      const handshakes = samples.filter((s) => s.handshakeFingerprint !== undefined);
      const perGeneration = generations.map(
        (g) => `${g.name} ${handshakes.filter((s) => s.handshakeFingerprint === g.fingerprint).length}`,
      );
      t.diagnostic(
        `${samples.length} requests from ${CLIENTS} clients in ${LOAD_MS} ms, ${during} of them during the ${order.length} reloads (${Math.round(lastConfirmed - firstSighup)} ms); failed: ${failures.length}`,
      );
      t.diagnostic(
        `full handshakes per certificate: ${perGeneration.join(', ')}; resumed sessions: ${samples.filter((s) => s.resumed).length}; keep-alive connections: ${clients
          .filter((c) => c.keepAlive)
          .map((c) => c.sockets.size)
          .join(', ')}`,
      );
      assert.deepEqual(
        failures.map((s) => s.detail).slice(0, 5),
        [],
        `${failures.length} of ${samples.length} requests failed`,
      );

      // A full handshake started after a reload was confirmed presents that certificate (or a later one).
      for (const s of handshakes) {
        const expected = current.filter((c) => c.since <= s.startedAt).at(-1)!.gen;
        const got = generations.findIndex((g) => g.fingerprint === s.handshakeFingerprint);
        assert.ok(
          got >= expected,
          `a handshake started after gen-${expected} was loaded presented ${got < 0 ? 'an unknown certificate' : generations[got]!.name}`,
        );
      }
      assert.ok(handshakes.length > order.length, `only ${handshakes.length} full handshakes`);
      // Keep-alive connections outlive every reload.
      for (const c of clients.filter((c) => c.keepAlive))
        assert.equal(c.sockets.size, 1, 'a keep-alive client had to reconnect');

      // Every worker now presents the last certificate (round robin: 4 connections reach both workers).
      const last = generations.at(-1)!;
      for (let i = 0; i < 4; i++) assert.equal(await fingerprintOf(port, ca), last.fingerprint);
      for (const version of ['TLSv1', 'TLSv1.1'] as const)
        assert.match(
          (await attempt(port, ca, fx.admin, version, '/version')).error ?? '',
          /ALERT_PROTOCOL_VERSION/,
          version,
        );
      assert.ok(proc.alive());
      assert.doesNotMatch(proc.output(), /exited|restarting/);
    } finally {
      for (const a of agents) a.destroy();
      await proc?.stop();
      await fx.remove();
    }
  });
}

test('cluster: a worker that restarts after a failed reload serves the last good certificate', {
  timeout: 60_000,
}, async () => {
  const fx = await makeFixture();
  const proc = await startKesd(fx.dataDir, fx.env, ['--workers', '2', '--audit-log', 'off']);
  try {
    const good = new X509Certificate(fx.server.cert).fingerprint256;
    await writeFile(fx.server.certFile, fx.server.cert.slice(0, 300));
    process.kill(proc.pid, 'SIGHUP');
    assert.match(await reloadOutcome(proc, 1), /TLS reload failed/);
    const workers = (await groupPids(proc.pid)).filter((pid) => pid !== proc.pid);
    assert.equal(workers.length, 2);
    process.kill(workers[0]!, 'SIGKILL'); // a crash, an OOM kill
    // Long enough for the primary's restart backoff (100, 200, 400, 800, 1600 ms) to run out.
    await sleep(6000);
    assert.ok(proc.alive(), `kesd stopped: ${proc.output().split('\n').slice(-3).join(' | ')}`);
    const restarted = (await groupPids(proc.pid)).filter((pid) => pid !== proc.pid && pid !== workers[0]);
    assert.equal(restarted.length, 2, 'the crashed worker was not replaced');
    for (let i = 0; i < 4; i++) assert.equal(await fingerprintOf(proc.port, [fx.server.cert]), good);
    assert.equal(
      (proc.output().match(/restarting it in/g) ?? []).length,
      1,
      `the replacement worker failed to start: ${proc.output()}`,
    );
    // The next good reload reaches the replacement too: every connection (both workers) gets the new certificate.
    const next = await makeIdentity(fx.dir, 'server-next', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
    await writeFile(fx.server.certFile, next.cert);
    await writeFile(fx.server.keyFile, next.key);
    process.kill(proc.pid, 'SIGHUP');
    assert.equal(await reloadOutcome(proc, 2), 'kesd: TLS certificate reloaded');
    for (let i = 0; i < 4; i++)
      assert.equal(await fingerprintOf(proc.port, [next.cert]), new X509Certificate(next.cert).fingerprint256);
  } finally {
    await proc.stop();
    await fx.remove();
  }
});

// ---- SIGHUP while kesd starts -----------------------------------------------------------------------------------

/**
 * Whether process pid catches SIGHUP (SigCgt in /proc/<pid>/status; SIGHUP is signal 1): from then on a SIGHUP no
 * longer ends it by default. Once set it stays set, so a test process that is not scheduled for a while cannot miss
 * it, as it missed the cluster primary's brief hold of the store (the moment this test used to wait for).
 */
async function catchesSighup(pid: number): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const caught = /^SigCgt:\s+([0-9a-f]+)$/m.exec(status)?.[1];
  return caught !== undefined && (BigInt(`0x${caught}`) & 1n) === 1n;
}

// Declared keys make the start (every declared key is checked at each start) long enough to aim a signal into it.
const DECLARED_KEYS = envInt('KESD_SIGHUP_DECLARED_KEYS', 400);

for (const workers of [1, 2]) {
  test(`SIGHUPs while kesd starts (--workers ${workers}) do not kill it; the reload runs once it is up`, {
    timeout: 120_000,
  }, async (t) => {
    const keys = Array.from({ length: DECLARED_KEYS }, (_, i) => `declared-${i}`);
    const fx = await makeFixture({ keys });
    // Detached: its own process group, so the cleanup below reaches any worker.
    const child = spawn(
      process.execPath,
      [KESD_BIN, 'server', fx.dataDir, '--workers', String(workers), '--audit-log', 'off'],
      {
        env: fx.env,
        detached: true,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<string>((resolve) =>
      child.once('exit', (code, signal) => resolve(signal ?? `code ${code}`)),
    );
    let exit: string | undefined;
    void exited.then((how) => (exit = how));
    try {
      // From the moment kesd catches SIGHUP (`kesd server` does from its first line; the store, the 400 declared
      // keys and, with --workers 2, the workers come after) until it says it listens, a SIGHUP every few ms.
      const started = performance.now();
      while (exit === undefined && !/listening on/.test(stderr) && !(await catchesSighup(child.pid!))) {
        assert.ok(performance.now() - started < 30_000, 'kesd did not catch SIGHUP within 30 s');
        await sleep(1);
      }
      let sent = 0;
      const firstAt = performance.now();
      while (exit === undefined && !/listening on/.test(stderr) && performance.now() - firstAt < 30_000) {
        process.kill(child.pid!, 'SIGHUP');
        sent++;
        await sleep(5);
      }
      const window = Math.round(performance.now() - firstAt);
      t.diagnostic(
        `${sent} SIGHUPs in the ${window} ms between kesd catching SIGHUP and "listening on" (${DECLARED_KEYS} declared keys)`,
      );
      assert.ok(sent > 0, 'no SIGHUP was sent while kesd started (the test aimed at nothing)');
      assert.equal(exit, undefined, `kesd died of the SIGHUP at start: ${exit}: ${stderr}`);
      assert.match(stderr, /listening on/);
      const port = Number(/listening on \S+:(\d+)/.exec(stderr)![1]);
      // The reload the early SIGHUPs asked for happens once the server is up; it serves.
      await deadline(
        (async () => {
          while (!/TLS certificate reloaded/.test(stderr)) await sleep(10);
        })(),
        15_000,
        'the deferred reload to be logged',
      );
      assert.equal(await fingerprintOf(port, [fx.server.cert]), new X509Certificate(fx.server.cert).fingerprint256);
      assert.equal(exit, undefined);
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone already
      }
      await exited;
      await fx.remove();
    }
  });
}
