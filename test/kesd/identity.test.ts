import 'reflect-metadata';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import * as x509 from '@peculiar/x509';
import {
  identityOfApiKey,
  identityOfCertificate,
  identityOfPem,
  subjectPublicKeyInfo,
} from '../../kesd/src/identity/spki.js';
import { newIdentity, parseDuration } from '../../kesd/src/identity/certificate.js';

x509.cryptoProvider.set(webcrypto);

const sha256Hex = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const reexportedIdentity = (der: Uint8Array) =>
  sha256Hex(new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' }));
const derOf = (pem: string) => new X509Certificate(pem).raw;

// A certificate signed by a key pair of any algorithm Node's WebCrypto supports (for RSA, which newIdentity lacks).
async function certWith(gen: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams | webcrypto.Algorithm) {
  const keys = (await webcrypto.subtle.generateKey(gen, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=test', keys });
  return new Uint8Array(cert.rawData);
}

test('API key vectors of kes-protocol §2.3 give the listed identities', () => {
  const vectors: [string, string][] = [
    [
      'kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw',
      '0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb',
    ],
    [
      'kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ',
      'ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7',
    ],
    [
      'kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs',
      'ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6',
    ],
  ];
  for (const [key, identity] of vectors) {
    assert.equal(identityOfApiKey(key), identity);
    assert.equal(identityOfPem(`${key}\n`), identity);
  }
});

test('malformed API keys are rejected', () => {
  const good = 'kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw';
  assert.throws(() => identityOfApiKey(good.replace('kes:v1:', 'kes:v2:')), /prefix/);
  assert.throws(() => identityOfApiKey(good.slice(0, -4)), /length/);
  assert.throws(() => identityOfApiKey('kes:v1:AS' + good.slice(9)), /key type/);
  assert.throws(() => identityOfApiKey(good + '!'), /base64/);
});

test('certificate identity equals the hash of the re-exported SPKI for Ed25519, P-256 and RSA-2048', async () => {
  const rsa = {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: 'SHA-256',
  };
  for (const gen of [{ name: 'Ed25519' }, { name: 'ECDSA', namedCurve: 'P-256' }, rsa]) {
    const der = await certWith(gen);
    assert.equal(identityOfCertificate(der), reexportedIdentity(der), gen.name);
  }
});

test('the SPKI is the exact TLV from the certificate bytes', async () => {
  const der = await certWith({ name: 'Ed25519' });
  const spki = subjectPublicKeyInfo(der);
  assert.equal(spki.length, 44);
  assert.equal(spki.subarray(0, 12).toString('hex'), '302a300506032b6570032100');
  assert.ok(Buffer.from(der).includes(spki));
});

test('malformed DER throws', async () => {
  const der = Buffer.from(await certWith({ name: 'Ed25519' }));
  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array()],
    ['truncated', der.subarray(0, der.length - 1)],
    ['trailing data', Buffer.concat([der, Buffer.from([0])])],
    ['not a SEQUENCE', Buffer.from([0x31, ...der.subarray(1)])],
    ['indefinite length', Buffer.from([0x30, 0x80, 0x00, 0x00])],
    ['non-minimal length', Buffer.from([0x30, 0x81, 0x03, 0x30, 0x01, 0x00])],
    ['tbsCertificate without SPKI', Buffer.from('300a3008a003020102020101', 'hex')],
    ['random bytes', webcrypto.getRandomValues(new Uint8Array(64))],
  ];
  for (const [name, bytes] of cases) assert.throws(() => identityOfCertificate(bytes), Error, name);
});

test('identityOfPem skips a leading PRIVATE KEY block and takes the first CERTIFICATE', async () => {
  const a = await newIdentity({ subject: 'a' });
  const b = await newIdentity({ subject: 'b' });
  assert.equal(identityOfPem(a.keyPem + a.certPem + b.certPem), a.identity);
  assert.equal(identityOfPem(a.certPem), reexportedIdentity(derOf(a.certPem)));
  assert.throws(() => identityOfPem(a.keyPem), /no CERTIFICATE/);
});

test('newIdentity certificates carry SANs, both EKUs, CA=false and a positive 16-byte serial', async () => {
  for (const keyType of ['ed25519', 'p256'] as const) {
    const id = await newIdentity({
      subject: 'kesd',
      keyType,
      ips: ['127.0.0.1', '::1'],
      dnsNames: ['localhost', 'kes.local'],
    });
    const cert = new X509Certificate(id.certPem);
    assert.equal(cert.subject, 'CN=kesd');
    assert.equal(cert.ca, false);
    assert.equal(cert.subjectAltName, 'DNS:localhost, DNS:kes.local, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    assert.deepEqual(cert.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    assert.equal(cert.serialNumber.length, 32); // 16 bytes, no 0x00 pad: the top bit is clear
    assert.ok(parseInt(cert.serialNumber.slice(0, 2), 16) < 0x80);
    assert.ok(Date.parse(cert.validFrom) <= Date.now() - 59_000);
    assert.equal(cert.publicKey.asymmetricKeyType, keyType === 'p256' ? 'ec' : 'ed25519');
    assert.ok(cert.verify(cert.publicKey));
    assert.ok(cert.checkPrivateKey(createPrivateKey(id.keyPem)));
    assert.equal(id.identity, reexportedIdentity(cert.raw));
    assert.match(id.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  }
});

test('newIdentity honours expiry and rejects bad input', async () => {
  const id = await newIdentity({ subject: 'x', expiryMs: parseDuration('1h') });
  const cert = new X509Certificate(id.certPem);
  assert.ok(Math.abs(Date.parse(cert.validTo) - Date.now() - 3_600_000) < 5_000);
  assert.equal(cert.subjectAltName, undefined);
  await assert.rejects(newIdentity({ subject: 'x', ips: ['300.1.1.1'] }), /invalid IP/);
  await assert.rejects(newIdentity({ subject: 'x', expiryMs: 0 }), /expiry/);
});

test('parseDuration accepts Go durations and rejects the rest', () => {
  const ok: [string, number][] = [
    ['8760h', 8760 * 3_600_000],
    ['30m', 1_800_000],
    ['90s', 90_000],
    ['1h30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['500ms', 500],
    ['0', 0],
    ['-2m', -120_000],
    ['+1s', 1000],
    ['1500us', 1.5],
    ['2h0m0s', 7_200_000],
  ];
  for (const [text, ms] of ok) assert.equal(parseDuration(text), ms, text);
  for (const bad of ['', '10', 'h', '1d', '1h 30m', '.', '-', '1.2.3s', 'abc']) {
    assert.throws(() => parseDuration(bad), /invalid duration/, bad);
  }
});

// A TLS round trip with newIdentity certs: the server computes the client's identity, on a fresh and on a
// resumed TLS 1.3 session (MinIO resumes sessions, so the identity must survive resumption).
test('mTLS: server computes the client identity on fresh and resumed TLS 1.3 sessions', async (t) => {
  const server = await newIdentity({ subject: 'kesd', keyType: 'p256', ips: ['127.0.0.1'] });
  const client = await newIdentity({ subject: 'client', keyType: 'ed25519' });

  const srv = https.createServer(
    { cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' },
    (req, res) => {
      const socket = req.socket as TLSSocket;
      const identity = identityOfCertificate(socket.getPeerCertificate(true).raw);
      res.end(JSON.stringify({ identity, reused: socket.isSessionReused(), protocol: socket.getProtocol() }));
    },
  );
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => srv.close());
  const { port } = srv.address() as AddressInfo;

  // Each call uses a fresh agent, so resumption happens only through the explicit `session`.
  const call = (session?: Buffer) =>
    new Promise<{ body: { identity: string; reused: boolean; protocol: string }; session?: Buffer }>(
      (resolve, reject) => {
        const agent = new https.Agent({ keepAlive: false });
        let ticket: Buffer | undefined;
        // `session` reaches tls.connect through the agent, though https.RequestOptions does not declare it.
        const options: https.RequestOptions & ConnectionOptions = {
          host: '127.0.0.1',
          port,
          path: '/',
          ca: server.certPem,
          cert: client.certPem,
          key: client.keyPem,
          agent,
          session,
        };
        const req = https.request(options, (res) => {
          let data = '';
          res.on('data', (chunk) => (data += chunk));
          res.on('end', () => {
            agent.destroy();
            resolve({ body: JSON.parse(data), session: ticket });
          });
        });
        req.on('socket', (socket) => socket.on('session', (s: Buffer) => (ticket = s)));
        req.on('error', reject);
        req.end();
      },
    );

  const first = await call();
  assert.equal(first.body.protocol, 'TLSv1.3');
  assert.equal(first.body.reused, false);
  assert.equal(first.body.identity, client.identity);
  assert.ok(first.session, 'the server issued a session ticket');

  const second = await call(first.session);
  assert.equal(second.body.reused, true);
  assert.equal(second.body.identity, client.identity);
});
