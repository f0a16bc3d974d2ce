// Mocks for @pulumi/tls and random.RandomBytes that behave like their providers: real keys, CSRs and CA-signed
// certificates built from the resource inputs, usable for real TLS. A fake only because the provider plugins
// cannot run here (no Pulumi CLI). Use: `registerTlsMocks()` before the code under test creates resources.
import 'reflect-metadata';
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  webcrypto,
  type KeyObject,
} from 'node:crypto';
import { closeSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import { onResource, unsecret } from './pulumi-mocks.ts';

x509.cryptoProvider.set(webcrypto);

type Outputs = Record<string, unknown>;
type Inputs = Record<string, any>;

// ---- keys ---------------------------------------------------------------------------------------------------

const CURVES: Record<string, { node: string; web: string; hash: string }> = {
  P256: { node: 'prime256v1', web: 'P-256', hash: 'SHA-256' },
  P384: { node: 'secp384r1', web: 'P-384', hash: 'SHA-384' },
  P521: { node: 'secp521r1', web: 'P-521', hash: 'SHA-512' },
};

function generateKey(algorithm: string, ecdsaCurve: string, rsaBits: number): KeyObject {
  switch (algorithm) {
    case 'RSA':
      return generateKeyPairSync('rsa', { modulusLength: rsaBits }).privateKey;
    case 'ED25519':
      return generateKeyPairSync('ed25519').privateKey;
    case 'ECDSA': {
      const curve = CURVES[ecdsaCurve];
      if (!curve)
        throw new Error(
          `tls-mock: ECDSA curve '${ecdsaCurve}' is not supported by the mock (WebCrypto signs with P256, P384, P521 only)`,
        );
      return generateKeyPairSync('ec', { namedCurve: curve.node }).privateKey;
    }
    default:
      throw new Error(`tls-mock: invalid algorithm '${algorithm}': must be one of RSA, ECDSA, ED25519`);
  }
}

/** tls.PrivateKey's computed outputs. PEM types as the provider writes them: PKCS#1 (RSA), SEC 1 (EC), PKCS#8 (Ed25519). */
export function mockPrivateKey(inputs: Inputs): Outputs {
  const algorithm = String(inputs.algorithm);
  const ecdsaCurve = inputs.ecdsaCurve ?? 'P224';
  const rsaBits = inputs.rsaBits ?? 2048;
  const key = generateKey(algorithm, ecdsaCurve, rsaBits);
  const type = algorithm === 'RSA' ? 'pkcs1' : algorithm === 'ECDSA' ? 'sec1' : 'pkcs8';
  return {
    ecdsaCurve,
    rsaBits,
    privateKeyPem: key.export({ type, format: 'pem' }) as string,
    privateKeyPemPkcs8: key.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKeyPem: createPublicKey(key).export({ type: 'spki', format: 'pem' }) as string,
  };
}

interface SigningKey {
  keys: webcrypto.CryptoKeyPair;
  signingAlgorithm: webcrypto.Algorithm | webcrypto.EcdsaParams;
  keyAlgorithm: 'RSA' | 'ECDSA' | 'ED25519';
  spki: Buffer;
}

// SHA-256 for RSA and P-256, SHA-384/512 for the larger curves: the hashes Go's x509 picks for these keys.
async function signingKey(privateKeyPem: string): Promise<SigningKey> {
  const priv = createPrivateKey(privateKeyPem);
  const spki = createPublicKey(priv).export({ type: 'spki', format: 'der' });
  let params: webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams | webcrypto.Algorithm;
  let signingAlgorithm: webcrypto.Algorithm | webcrypto.EcdsaParams;
  let keyAlgorithm: SigningKey['keyAlgorithm'];
  switch (priv.asymmetricKeyType) {
    case 'ed25519':
      params = signingAlgorithm = { name: 'Ed25519' };
      keyAlgorithm = 'ED25519';
      break;
    case 'rsa':
      params = signingAlgorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as webcrypto.RsaHashedImportParams;
      keyAlgorithm = 'RSA';
      break;
    case 'ec': {
      const curve = Object.values(CURVES).find((c) => c.node === priv.asymmetricKeyDetails?.namedCurve);
      if (!curve) throw new Error(`tls-mock: unsupported EC curve ${priv.asymmetricKeyDetails?.namedCurve}`);
      params = { name: 'ECDSA', namedCurve: curve.web } as webcrypto.EcKeyImportParams;
      signingAlgorithm = { name: 'ECDSA', hash: curve.hash } as webcrypto.EcdsaParams;
      keyAlgorithm = 'ECDSA';
      break;
    }
    default:
      throw new Error(`tls-mock: unsupported key type ${priv.asymmetricKeyType}`);
  }
  const pkcs8 = priv.export({ type: 'pkcs8', format: 'der' });
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', pkcs8, params, false, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', spki, params, true, ['verify']),
  } as webcrypto.CryptoKeyPair;
  return { keys, signingAlgorithm, keyAlgorithm, spki };
}

// ---- names, uses, extensions --------------------------------------------------------------------------------

// Subject attributes in the order Go's pkix.Name.ToRDNSequence writes them.
const SUBJECT_OIDS: [keyof SubjectInput, string][] = [
  ['country', '2.5.4.6'],
  ['province', '2.5.4.8'],
  ['locality', '2.5.4.7'],
  ['streetAddresses', '2.5.4.9'],
  ['postalCode', '2.5.4.17'],
  ['organization', '2.5.4.10'],
  ['organizationalUnit', '2.5.4.11'],
  ['commonName', '2.5.4.3'],
  ['serialNumber', '2.5.4.5'],
  ['emailAddress', '1.2.840.113549.1.9.1'],
];

interface SubjectInput {
  commonName?: string;
  country?: string;
  emailAddress?: string;
  locality?: string;
  organization?: string;
  organizationalUnit?: string;
  postalCode?: string;
  province?: string;
  serialNumber?: string;
  streetAddresses?: string[];
}

function subjectName(subject: SubjectInput | undefined): x509.JsonName {
  const name: x509.JsonName = [];
  for (const [field, oid] of SUBJECT_OIDS) {
    const value = subject?.[field];
    if (value === undefined || value === null || value === '') continue;
    for (const v of Array.isArray(value) ? value : [value]) name.push({ [oid]: [v] });
  }
  return name;
}

const KEY_USAGES: Record<string, x509.KeyUsageFlags> = {
  digital_signature: x509.KeyUsageFlags.digitalSignature,
  content_commitment: x509.KeyUsageFlags.nonRepudiation,
  key_encipherment: x509.KeyUsageFlags.keyEncipherment,
  data_encipherment: x509.KeyUsageFlags.dataEncipherment,
  key_agreement: x509.KeyUsageFlags.keyAgreement,
  cert_signing: x509.KeyUsageFlags.keyCertSign,
  crl_signing: x509.KeyUsageFlags.cRLSign,
  encipher_only: x509.KeyUsageFlags.encipherOnly,
  decipher_only: x509.KeyUsageFlags.decipherOnly,
};

const EXTENDED_KEY_USAGES: Record<string, string> = {
  any_extended: '2.5.29.37.0',
  server_auth: '1.3.6.1.5.5.7.3.1',
  client_auth: '1.3.6.1.5.5.7.3.2',
  code_signing: '1.3.6.1.5.5.7.3.3',
  email_protection: '1.3.6.1.5.5.7.3.4',
  ipsec_end_system: '1.3.6.1.5.5.7.3.5',
  ipsec_tunnel: '1.3.6.1.5.5.7.3.6',
  ipsec_user: '1.3.6.1.5.5.7.3.7',
  timestamping: '1.3.6.1.5.5.7.3.8',
  ocsp_signing: '1.3.6.1.5.5.7.3.9',
  microsoft_server_gated_crypto: '1.3.6.1.4.1.311.10.3.3',
  netscape_server_gated_crypto: '2.16.840.1.113730.4.1',
  microsoft_commercial_code_signing: '1.3.6.1.4.1.311.2.1.22',
  microsoft_kernel_code_signing: '1.3.6.1.4.1.311.61.1.1',
};

/** The allowed_uses values the provider accepts (it rejects anything else at plan time, so the mock does too). */
export const SUPPORTED_ALLOWED_USES = [...Object.keys(KEY_USAGES), ...Object.keys(EXTENDED_KEY_USAGES)].sort();

function checkAllowedUses(uses: string[]): void {
  for (const [i, use] of uses.entries()) {
    if (!SUPPORTED_ALLOWED_USES.includes(use)) {
      throw new Error(
        `tls-mock: allowed_uses[${i}] value must be one of: ${SUPPORTED_ALLOWED_USES.join(', ')}; got '${use}'`,
      );
    }
  }
}

interface CertTemplate {
  isCaCertificate?: boolean;
  maxPathLength?: number;
  allowedUses?: string[];
  sans: x509.JsonGeneralName[];
  setSubjectKeyId?: boolean;
  authorityKeyId?: string;
}

// The extensions, criticality and order Go's x509.CreateCertificate gives the provider's template.
async function certificateExtensions(t: CertTemplate, publicKey: x509.PublicKey): Promise<x509.Extension[]> {
  const uses = t.allowedUses ?? [];
  checkAllowedUses(uses);
  const flags = uses.reduce((f, u) => f | (KEY_USAGES[u] ?? 0), 0);
  const ekus = uses.filter((u) => u in EXTENDED_KEY_USAGES).map((u) => EXTENDED_KEY_USAGES[u]);
  const isCa = t.isCaCertificate === true;
  const extensions: x509.Extension[] = [];
  if (flags) extensions.push(new x509.KeyUsagesExtension(flags, true));
  if (ekus.length) extensions.push(new x509.ExtendedKeyUsageExtension(ekus, false));
  const pathLength = isCa && t.maxPathLength !== undefined && t.maxPathLength > 0 ? t.maxPathLength : undefined;
  extensions.push(new x509.BasicConstraintsExtension(isCa, pathLength, true));
  if (isCa || t.setSubjectKeyId) extensions.push(await x509.SubjectKeyIdentifierExtension.create(publicKey));
  if (t.authorityKeyId) extensions.push(new x509.AuthorityKeyIdentifierExtension(t.authorityKeyId));
  if (t.sans.length) extensions.push(new x509.SubjectAlternativeNameExtension(t.sans));
  return extensions;
}

function sansOf(inputs: Inputs): x509.JsonGeneralName[] {
  return [
    ...((inputs.dnsNames as string[] | undefined) ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...((inputs.ipAddresses as string[] | undefined) ?? []).map((value) => ({ type: 'ip' as const, value })),
    ...((inputs.uris as string[] | undefined) ?? []).map((value) => ({ type: 'url' as const, value })),
  ];
}

// 16 random bytes, top bit clear, first byte non-zero: a positive, minimally encoded INTEGER (Go rejects negatives).
function serialHex(): string {
  const serial = randomBytes(16);
  serial[0] = serial[0] & 0x7f || 0x01;
  return serial.toString('hex');
}

function pem(type: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  return `-----BEGIN ${type}-----\n${b64.replace(/.{1,64}/g, '$&\n')}-----END ${type}-----\n`;
}

function validity(hours: number): { notBefore: Date; notAfter: Date } {
  if (!(Number.isInteger(hours) && hours >= 0))
    throw new Error(`tls-mock: validity_period_hours must be a non-negative integer, got ${hours}`);
  const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000);
  return { notBefore, notAfter: new Date(notBefore.getTime() + hours * 3_600_000) };
}

function certificateOutputs(cert: x509.X509Certificate): Outputs {
  return {
    certPem: pem('CERTIFICATE', cert.rawData),
    validityStartTime: cert.notBefore.toISOString().replace('.000Z', 'Z'),
    validityEndTime: cert.notAfter.toISOString().replace('.000Z', 'Z'),
    readyForRenewal: false,
  };
}

// ---- resources ----------------------------------------------------------------------------------------------

/** tls.SelfSignedCert's computed outputs. */
export async function mockSelfSignedCert(inputs: Inputs): Promise<Outputs> {
  const key = await signingKey(inputs.privateKeyPem);
  const name = subjectName(inputs.subject);
  if (inputs.isCaCertificate && name.length === 0) {
    throw new Error(
      'tls-mock: Invalid Certificate Subject: must contain at least one Distinguished Name when creating a CA',
    );
  }
  const publicKey = new x509.PublicKey(key.spki);
  const skid = inputs.setAuthorityKeyId ? Buffer.from(await publicKey.getKeyIdentifier()).toString('hex') : undefined;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialHex(),
    name,
    ...validity(inputs.validityPeriodHours),
    keys: key.keys,
    signingAlgorithm: key.signingAlgorithm,
    extensions: await certificateExtensions({ ...inputs, sans: sansOf(inputs), authorityKeyId: skid }, publicKey),
  });
  return {
    keyAlgorithm: key.keyAlgorithm,
    earlyRenewalHours: inputs.earlyRenewalHours ?? 0,
    ...certificateOutputs(cert),
  };
}

/** tls.CertRequest's computed outputs: a real PKCS#10 request carrying the subject and SANs. */
export async function mockCertRequest(inputs: Inputs): Promise<Outputs> {
  const key = await signingKey(inputs.privateKeyPem);
  const sans = sansOf(inputs);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subjectName(inputs.subject),
    keys: key.keys,
    signingAlgorithm: key.signingAlgorithm,
    extensions: sans.length ? [new x509.SubjectAlternativeNameExtension(sans)] : [],
  });
  return { keyAlgorithm: key.keyAlgorithm, certRequestPem: pem('CERTIFICATE REQUEST', csr.rawData) };
}

/** tls.LocallySignedCert's computed outputs: subject, SANs and key from the CSR; issuer and signature from the CA. */
export async function mockLocallySignedCert(inputs: Inputs): Promise<Outputs> {
  const csr = new x509.Pkcs10CertificateRequest(inputs.certRequestPem);
  if (!(await csr.verify())) throw new Error('tls-mock: the certificate request signature is invalid');
  const ca = new x509.X509Certificate(inputs.caCertPem);
  const caKey = await signingKey(inputs.caPrivateKeyPem);
  if (!Buffer.from(ca.publicKey.rawData).equals(caKey.spki))
    throw new Error("tls-mock: the CA private key does not match the CA certificate's public key");

  const sanExt = csr.getExtension('2.5.29.17');
  const sans = sanExt
    ? new x509.SubjectAlternativeNameExtension(sanExt.rawData).names.items.map((n) => ({
        type: n.type,
        value: n.value,
      }))
    : [];
  const caSkid = ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialHex(),
    subject: csr.subjectName,
    issuer: ca.subjectName,
    ...validity(inputs.validityPeriodHours),
    publicKey: csr.publicKey,
    signingKey: caKey.keys.privateKey,
    signingAlgorithm: caKey.signingAlgorithm,
    extensions: await certificateExtensions(
      { ...inputs, sans: sans as x509.JsonGeneralName[], authorityKeyId: caSkid },
      csr.publicKey,
    ),
  });
  return {
    caKeyAlgorithm: caKey.keyAlgorithm,
    earlyRenewalHours: inputs.earlyRenewalHours ?? 0,
    ...certificateOutputs(cert),
  };
}

/** random.RandomBytes' computed outputs. */
export function mockRandomBytes(inputs: Inputs): Outputs {
  const bytes = randomBytes(Number(inputs.length));
  return { base64: bytes.toString('base64'), hex: bytes.toString('hex') };
}

// ---- cache and registration ---------------------------------------------------------------------------------

const UNKNOWN = '04da6b54-80e4-46f7-96ec-b56ff0331ba9'; // pulumi.runtime.unknownValue

function hasUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (Array.isArray(value)) return value.some(hasUnknown);
  if (value !== null && typeof value === 'object') return Object.values(value).some(hasUnknown);
  return false;
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Cross-process exclusive section on `${file}.lock`; a lock older than 60 s is taken to be left by a dead process.
async function withFileLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${file}.lock`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx'));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > 60_000) rmSync(lock, { force: true });
      } catch {
        // the holder released it meanwhile
      }
      if (Date.now() > deadline) throw new Error(`tls-mock: timed out waiting for ${lock}`);
      await sleep(10);
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

/** Computed outputs, reused from `cacheFile` when the same resource name and inputs were seen before (any process). */
function materialStore(cacheFile?: string): (key: string, make: () => Outputs | Promise<Outputs>) => Promise<Outputs> {
  if (!cacheFile) return async (_key, make) => make();
  let queue: Promise<unknown> = Promise.resolve();
  return (key, make) => {
    const run = () =>
      withFileLock(cacheFile, async () => {
        let entries: Record<string, Outputs> = {};
        try {
          entries = JSON.parse(readFileSync(cacheFile, 'utf8'));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
        if (entries[key]) return entries[key];
        const outputs = await make();
        entries[key] = outputs;
        const tmp = `${cacheFile}.${process.pid}.tmp`;
        writeFileSync(tmp, JSON.stringify(entries, null, 1), { mode: 0o600 });
        renameSync(tmp, cacheFile);
        return outputs;
      });
    const result = queue.then(run);
    queue = result.catch(() => undefined);
    return result;
  };
}

// Outputs the real resources list in additionalSecretOutputs; the engine marks them secret, mocks do not, so the hook does.
function secretEnvelope(value: unknown): unknown {
  return value === undefined
    ? undefined
    : { '4dabf18193072939515e22adb298388d': '1b47061264138c4ac30d75fd1eb44270', value };
}

const MOCKS: Record<string, { compute: (inputs: Inputs) => Outputs | Promise<Outputs>; secrets: string[] }> = {
  'tls:index/privateKey:PrivateKey': {
    compute: mockPrivateKey,
    secrets: ['privateKeyPem', 'privateKeyPemPkcs8', 'privateKeyOpenssh'],
  },
  'tls:index/selfSignedCert:SelfSignedCert': { compute: mockSelfSignedCert, secrets: [] },
  'tls:index/certRequest:CertRequest': { compute: mockCertRequest, secrets: [] },
  'tls:index/locallySignedCert:LocallySignedCert': { compute: mockLocallySignedCert, secrets: [] },
  'random:index/randomBytes:RandomBytes': { compute: mockRandomBytes, secrets: ['base64', 'hex'] },
};

/**
 * Registers the hooks. With `cacheFile`, material is keyed by type, resource name and a hash of the inputs and shared
 * across processes, so two renders of the same program are byte-identical, as a real provider's state would make them.
 * Inputs still unknown (preview) leave the computed outputs unknown, as the provider does before create.
 */
export function registerTlsMocks(opts: { cacheFile?: string } = {}): void {
  const store = materialStore(opts.cacheFile);
  for (const [type, { compute, secrets }] of Object.entries(MOCKS)) {
    onResource(type, async (args) => {
      const inputs = unsecret(args.inputs);
      if (hasUnknown(inputs)) return {};
      const key = `${type}::${args.name}::${createHash('sha256').update(canonicalJson(inputs)).digest('hex')}`;
      const outputs = { ...(await store(key, () => compute(inputs))) };
      for (const name of secrets) if (name in outputs) outputs[name] = secretEnvelope(outputs[name]);
      return outputs;
    });
  }
}
