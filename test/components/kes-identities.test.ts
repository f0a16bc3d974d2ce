// KesIdentities: the KES identity and SAN functions, the PKI under Pulumi mocks (real certificates from tls-mock.ts,
// standing in for the tls provider plugin, which cannot run here), and a real mTLS handshake with that material.
import 'reflect-metadata';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import * as tls from '@pulumi/tls';
import {
  setupMocks,
  byType,
  outputValue,
  isSecret,
  unsecret,
  lineage,
  recordLineage,
} from '../../harness/pulumi-mocks.ts';
import {
  registerTlsMocks,
  mockPrivateKey,
  mockSelfSignedCert,
  mockCertRequest,
  mockLocallySignedCert,
  SUPPORTED_ALLOWED_USES,
} from '../../harness/tls-mock.ts';
import { identityOfPem } from '../../kesd/src/identity/spki.js';
import { newIdentity } from '../../kesd/src/identity/certificate.js';
import { kesIdentity, kesdServerDnsNames } from '../../components/kes-identity.ts';

await setupMocks();
registerTlsMocks();
const {
  KesIdentities,
  CA_ALLOWED_USES,
  SERVER_ALLOWED_USES,
  CLIENT_ALLOWED_USES,
  CA_VALIDITY_HOURS,
  LEAF_VALIDITY_HOURS,
} = await import('../../components/kes-identities.ts');

const HEX64 = /^[0-9a-f]{64}$/;
const HOUR_MS = 3_600_000;
const sans = (pem: string) => (new X509Certificate(pem).subjectAltName ?? '').split(', ').filter(Boolean);
const keyUsages = (pem: string) => new x509.X509Certificate(pem).getExtension(x509.KeyUsagesExtension)?.usages ?? 0;
const lifetimeHours = (c: X509Certificate) => (c.validToDate.getTime() - c.validFromDate.getTime()) / HOUR_MS;
const EKU = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' };

describe('kesIdentity', () => {
  test("equals kesd's identityOfPem for Ed25519, P-256 and RSA certificates", async () => {
    const ed25519 = (await newIdentity({ subject: 'ed', keyType: 'ed25519' })).certPem;
    const p256 = (await newIdentity({ subject: 'p256', keyType: 'p256' })).certPem;
    const rsaKey = mockPrivateKey({ algorithm: 'RSA', rsaBits: 2048 });
    const rsa = (
      await mockSelfSignedCert({
        privateKeyPem: rsaKey.privateKeyPem,
        subject: { commonName: 'rsa' },
        allowedUses: ['client_auth'],
        validityPeriodHours: 1,
      })
    ).certPem as string;
    for (const pem of [ed25519, p256, rsa]) {
      assert.match(kesIdentity(pem), HEX64);
      assert.equal(kesIdentity(pem), identityOfPem(pem));
    }
    assert.equal(new Set([ed25519, p256, rsa].map(kesIdentity)).size, 3);
  });

  test('depends only on the public key: a re-issued certificate for the same key keeps the identity', async () => {
    const key = mockPrivateKey({ algorithm: 'ED25519' });
    const issue = async () =>
      (
        await mockSelfSignedCert({
          privateKeyPem: key.privateKeyPem,
          subject: { commonName: 'minio' },
          allowedUses: ['client_auth'],
          validityPeriodHours: 24,
        })
      ).certPem as string;
    const [a, b] = [await issue(), await issue()];
    assert.notEqual(a, b);
    assert.equal(kesIdentity(a), kesIdentity(b));
  });
});

describe('kesdServerDnsNames', () => {
  const names = { namespace: 'kesd', service: 'kesd', headlessService: 'kesd-headless', statefulSet: 'kesd' };

  test('one replica: the client Service in every search-path form, the headless Service and the pod', () => {
    assert.deepEqual(kesdServerDnsNames({ ...names, replicas: 1 }), [
      'kesd',
      'kesd.kesd',
      'kesd.kesd.svc',
      'kesd.kesd.svc.cluster.local',
      'kesd-headless.kesd.svc.cluster.local',
      'kesd-0.kesd-headless.kesd.svc.cluster.local',
    ]);
  });

  test('three replicas and a custom cluster domain: every pod FQDN, never an IP', () => {
    const dns = kesdServerDnsNames({ ...names, replicas: 3, clusterDomain: 'k8s.example' });
    assert.deepEqual(dns, [
      'kesd',
      'kesd.kesd',
      'kesd.kesd.svc',
      'kesd.kesd.svc.k8s.example',
      'kesd-headless.kesd.svc.k8s.example',
      'kesd-0.kesd-headless.kesd.svc.k8s.example',
      'kesd-1.kesd-headless.kesd.svc.k8s.example',
      'kesd-2.kesd-headless.kesd.svc.k8s.example',
    ]);
    for (const name of dns) assert.equal(isIP(name), 0, name);
  });

  test('lists a name once when the client and headless Services coincide', () => {
    const dns = kesdServerDnsNames({ ...names, headlessService: 'kesd', replicas: 1 });
    assert.equal(new Set(dns).size, dns.length);
    assert.ok(dns.includes('kesd-0.kesd.kesd.svc.cluster.local'));
  });

  test('rejects names that are not DNS labels and non-positive or fractional replica counts', () => {
    assert.throws(
      () => kesdServerDnsNames({ ...names, namespace: 'Kesd', replicas: 1 }),
      /namespace 'Kesd' is not an RFC 1123 DNS label/,
    );
    assert.throws(() => kesdServerDnsNames({ ...names, service: 'kesd.svc', replicas: 1 }), /service 'kesd.svc'/);
    assert.throws(() => kesdServerDnsNames({ ...names, statefulSet: 'x'.repeat(63), replicas: 1 }), /pod name/);
    assert.throws(() => kesdServerDnsNames({ ...names, replicas: 0 }), /replicas must be a positive integer, got 0/);
    assert.throws(() => kesdServerDnsNames({ ...names, replicas: 1.5 }), /got 1.5/);
  });
});

describe('tls-mock', () => {
  test('rejects allowed_uses the provider rejects (the SDK docs list camelCase; the provider takes snake_case)', async () => {
    const key = mockPrivateKey({ algorithm: 'ECDSA', ecdsaCurve: 'P256' });
    await assert.rejects(
      mockSelfSignedCert({
        privateKeyPem: key.privateKeyPem,
        subject: { commonName: 'x' },
        allowedUses: ['serverAuth'],
        validityPeriodHours: 1,
      }),
      /allowed_uses\[0\] value must be one of: .*server_auth.*got 'serverAuth'/,
    );
  });

  test('marks the outputs the provider lists in additionalSecretOutputs secret, as the engine would', async () => {
    const key = new tls.PrivateKey('probe-key', { algorithm: 'ED25519' });
    assert.equal(await isSecret(key.privateKeyPem), true);
    assert.equal(await isSecret(key.privateKeyPemPkcs8), true);
    assert.equal(await isSecret(key.publicKeyPem), false);
    assert.match(await outputValue(key.publicKeyPem), /^-----BEGIN PUBLIC KEY-----\n/);
  });

  test('signs a CSR with the CA: subject and SANs from the request, positive serial, SHA-256, chain verifies', async () => {
    const caKey = mockPrivateKey({ algorithm: 'ECDSA', ecdsaCurve: 'P256' });
    const ca = await mockSelfSignedCert({
      privateKeyPem: caKey.privateKeyPem,
      subject: { commonName: 'ca' },
      isCaCertificate: true,
      allowedUses: ['cert_signing'],
      validityPeriodHours: 2,
    });
    const key = mockPrivateKey({ algorithm: 'RSA', rsaBits: 2048 });
    const csr = await mockCertRequest({
      privateKeyPem: key.privateKeyPem,
      subject: { commonName: 'leaf', organization: 'o' },
      dnsNames: ['a.example'],
      ipAddresses: ['10.1.2.3'],
    });
    const leaf = await mockLocallySignedCert({
      certRequestPem: csr.certRequestPem,
      caPrivateKeyPem: caKey.privateKeyPem,
      caCertPem: ca.certPem,
      allowedUses: ['server_auth'],
      validityPeriodHours: 5,
    });
    const cert = new X509Certificate(leaf.certPem as string);
    const caCert = new X509Certificate(ca.certPem as string);
    assert.equal(cert.subject, 'O=o\nCN=leaf');
    assert.deepEqual(sans(leaf.certPem as string), ['DNS:a.example', 'IP Address:10.1.2.3']);
    assert.ok(cert.checkIssued(caCert) && cert.verify(caCert.publicKey));
    assert.equal(lifetimeHours(cert), 5);
    assert.ok(Number.parseInt(cert.serialNumber.slice(0, 2), 16) < 0x80, 'serial is positive');
    assert.equal(new x509.X509Certificate(leaf.certPem as string).signatureAlgorithm.hash?.name, 'SHA-256');
  });
});

describe('KesIdentities under mocks', () => {
  const args = {
    namespace: 'kesd',
    serviceName: 'kesd',
    headlessServiceName: 'kesd-headless',
    statefulSetName: 'kesd',
    replicas: 3,
  };
  const ids = new KesIdentities('kes', args, { transformations: [recordLineage] });
  const expectedDns = kesdServerDnsNames({
    namespace: 'kesd',
    service: 'kesd',
    headlessService: 'kesd-headless',
    statefulSet: 'kesd',
    replicas: 3,
  });
  const clients = { sysadmin: ids.sysadmin, enclaveAdmin: ids.enclaveAdmin, minio: ids.minio };

  test('the CA is a self-signed ECDSA P-256 CA certificate for cert and CRL signing, valid ten years', async () => {
    const pem = await outputValue(ids.caCertPem);
    const ca = new X509Certificate(pem);
    assert.equal(ca.ca, true);
    assert.ok(ca.checkIssued(ca) && ca.verify(ca.publicKey));
    assert.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const ku = keyUsages(pem);
    assert.ok(
      ku & x509.KeyUsageFlags.keyCertSign &&
        ku & x509.KeyUsageFlags.cRLSign &&
        ku & x509.KeyUsageFlags.digitalSignature,
    );
    assert.equal(lifetimeHours(ca), CA_VALIDITY_HOURS);
    assert.ok(CA_VALIDITY_HOURS >= 10 * 365 * 24);
    const [selfSigned] = byType('tls:index/selfSignedCert:SelfSignedCert').map((r) => unsecret(r.inputs));
    assert.equal(selfSigned.isCaCertificate, true);
    assert.deepEqual(selfSigned.allowedUses, ['cert_signing', 'crl_signing', 'digital_signature']);
  });

  test('the server certificate covers the Service and every pod FQDN, no IP, for server auth, signed by the CA', async () => {
    const [pem, caPem, dnsNames] = await Promise.all([
      outputValue(ids.server.certPem),
      outputValue(ids.caCertPem),
      outputValue(ids.serverDnsNames),
    ]);
    assert.deepEqual(dnsNames, expectedDns);
    assert.deepEqual(
      sans(pem),
      expectedDns.map((n) => `DNS:${n}`),
    );
    assert.ok(sans(pem).every((s) => !s.startsWith('IP Address:')));
    const cert = new X509Certificate(pem);
    assert.equal(cert.ca, false);
    assert.ok(cert.checkIssued(new X509Certificate(caPem)) && cert.verify(new X509Certificate(caPem).publicKey));
    assert.ok(cert.keyUsage?.includes(EKU.serverAuth));
    assert.ok(keyUsages(pem) & x509.KeyUsageFlags.digitalSignature);
    assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(lifetimeHours(cert), LEAF_VALIDITY_HOURS);
  });

  test('client certificates are Ed25519, named by CN, for client auth only, signed by the CA', async () => {
    const caCert = new X509Certificate(await outputValue(ids.caCertPem));
    const cns = { sysadmin: 'sysadmin', enclaveAdmin: 'enclave-admin', minio: 'minio' };
    for (const [role, identity] of Object.entries(clients)) {
      const cert = new X509Certificate(await outputValue(identity.certPem));
      assert.match(cert.subject, new RegExp(`^CN=${cns[role as keyof typeof cns]}$`, 'm'), role);
      assert.equal(cert.publicKey.asymmetricKeyType, 'ed25519', role);
      assert.deepEqual(cert.keyUsage, [EKU.clientAuth], role);
      assert.equal(cert.ca, false, role);
      assert.ok(cert.checkIssued(caCert) && cert.verify(caCert.publicKey), role);
    }
  });

  test('uses the provider spelling of allowedUses, with early renewal on every leaf', async () => {
    await outputValue(ids.minio.certPem);
    const leaves = byType('tls:index/locallySignedCert:LocallySignedCert').map(
      (r): Record<string, any> => ({ ...unsecret(r.inputs), name: r.name }),
    );
    assert.equal(leaves.length, 4);
    for (const leaf of leaves) {
      const expected = leaf.name === 'kes-server-cert' ? SERVER_ALLOWED_USES : CLIENT_ALLOWED_USES;
      assert.deepEqual(leaf.allowedUses, expected, leaf.name);
      assert.ok(leaf.earlyRenewalHours > 0, leaf.name);
    }
    for (const use of [...CA_ALLOWED_USES, ...SERVER_ALLOWED_USES, ...CLIENT_ALLOWED_USES])
      assert.ok(SUPPORTED_ALLOWED_USES.includes(use), use);
    assert.deepEqual(SERVER_ALLOWED_USES.slice(0, 3), ['digital_signature', 'key_encipherment', 'server_auth']);
  });

  test('identities are the 64-hex SPKI hashes of the certificates and of the private keys, all distinct', async () => {
    const all = { server: ids.server, ...clients };
    const seen = new Set<string>();
    for (const [role, identity] of Object.entries(all)) {
      const [cert, key, id] = await Promise.all([
        outputValue(identity.certPem),
        outputValue(identity.keyPem),
        outputValue(identity.identity),
      ]);
      assert.match(id, HEX64, role);
      assert.equal(id, identityOfPem(cert), role);
      assert.equal(id, kesIdentity(cert), role);
      assert.deepEqual(
        createPublicKey(key).export({ type: 'spki', format: 'der' }),
        new X509Certificate(cert).publicKey.export({ type: 'spki', format: 'der' }),
        role,
      );
      seen.add(id);
    }
    assert.equal(seen.size, 4);
  });

  test('every private key is secret; certificates and identities are not', async () => {
    for (const [role, identity] of Object.entries({ server: ids.server, ...clients })) {
      assert.equal(await isSecret(identity.keyPem), true, role);
      assert.equal(await isSecret(identity.certPem), false, role);
      assert.equal(await isSecret(identity.identity), false, role);
    }
    assert.equal(await isSecret(ids.caCertPem), false);
  });

  test('every child is parented to the component', async () => {
    await outputValue(ids.minio.identity);
    const children = [...lineage.entries()].filter(([name]) => name.startsWith('kes-'));
    assert.equal(children.length, 2 + 4 * 3, children.map(([n]) => n).join(', '));
    for (const [name, { parent }] of children) assert.equal(parent, 'kes', name);
  });

  test('a real mTLS handshake: the kesd server cert for its Service and pod names, the minio client cert, the CA', async () => {
    const [cert, key, ca, minioCert, minioKey, minioId] = await Promise.all([
      outputValue(ids.server.certPem),
      outputValue(ids.server.keyPem),
      outputValue(ids.caCertPem),
      outputValue(ids.minio.certPem),
      outputValue(ids.minio.keyPem),
      outputValue(ids.minio.identity),
    ]);
    const server = https.createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      res.end(kesIdentity((req.socket as TLSSocket).getPeerX509Certificate()!.toString()));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const get = (servername: string, maxVersion: 'TLSv1.2' | 'TLSv1.3') =>
      new Promise<string>((resolve, reject) => {
        const req = https.get(
          {
            host: '127.0.0.1',
            port,
            path: '/',
            servername,
            ca,
            cert: minioCert,
            key: minioKey,
            maxVersion,
            agent: false,
          },
          (res) => {
            let body = '';
            res
              .setEncoding('utf8')
              .on('data', (d) => (body += d))
              .on('end', () => resolve(body));
          },
        );
        req.on('error', reject);
      });
    try {
      for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
        assert.equal(await get('kesd.kesd.svc.cluster.local', version), minioId, version);
        assert.equal(await get('kesd-2.kesd-headless.kesd.svc.cluster.local', version), minioId, version);
      }
      await assert.rejects(get('kesd.other.svc.cluster.local', 'TLSv1.3'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    } finally {
      server.close();
    }
  });
});

describe('tls-mock cacheFile', () => {
  // Each render is a fresh process, as two `pulumi preview` runs would be.
  const render = `
    const [cacheFile, replicas] = process.argv.slice(1);
    const { setupMocks, outputValue } = await import(${JSON.stringify(new URL('../../harness/pulumi-mocks.ts', import.meta.url).href)});
    const { registerTlsMocks } = await import(${JSON.stringify(new URL('../../harness/tls-mock.ts', import.meta.url).href)});
    await setupMocks();
    registerTlsMocks({ cacheFile });
    const { KesIdentities } = await import(${JSON.stringify(new URL('../../components/kes-identities.ts', import.meta.url).href)});
    const ids = new KesIdentities('kes', { namespace: 'kesd', serviceName: 'kesd', headlessServiceName: 'kesd-headless', statefulSetName: 'kesd', replicas: Number(replicas) });
    const out = {};
    for (const role of ['server', 'sysadmin', 'enclaveAdmin', 'minio']) {
      out[role] = { cert: await outputValue(ids[role].certPem), key: await outputValue(ids[role].keyPem), identity: await outputValue(ids[role].identity) };
    }
    out.ca = await outputValue(ids.caCertPem);
    process.stdout.write(JSON.stringify(out));`;
  const run = async (cacheFile: string, replicas: number) => {
    const { stdout } = await promisify(execFile)(process.execPath, [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      render,
      cacheFile,
      String(replicas),
    ]);
    return JSON.parse(stdout);
  };

  test('two renders of the same program in separate processes are byte-identical', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tls-mock-'));
    try {
      const cacheFile = join(dir, 'material.json');
      const first = await run(cacheFile, 1);
      assert.deepEqual(await run(cacheFile, 1), first);
      // A new replica count re-issues the server certificate; its key, and so its identity, stays, like the provider's.
      const scaled = await run(cacheFile, 3);
      assert.equal(scaled.ca, first.ca);
      assert.notEqual(scaled.server.cert, first.server.cert);
      assert.equal(scaled.server.identity, first.server.identity);
      assert.deepEqual(scaled.minio, first.minio);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
