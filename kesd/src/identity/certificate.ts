// Self-signed certificates for `kesd identity new`, usable as TLS server and client certs by Node and Go.
import 'reflect-metadata';
import { isIP } from 'node:net';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { identityOfCertificate } from './spki.js';

x509.cryptoProvider.set(webcrypto);

export type KeyType = 'ed25519' | 'p256';

export interface NewIdentityOptions {
  subject: string;
  keyType?: KeyType; // default ed25519
  ips?: string[];
  dnsNames?: string[];
  expiryMs?: number; // default 1 year
}

const YEAR_MS = 365 * 24 * 3600 * 1000;

const ALGORITHMS = {
  ed25519: { gen: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
  p256: { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
} as const;

// 16 bytes with the top bit clear and a non-zero first byte: a positive INTEGER of exactly 16 bytes.
function randomSerialHex(): string {
  const serial = webcrypto.getRandomValues(new Uint8Array(16));
  serial[0] = serial[0] & 0x7f || 0x01;
  return Buffer.from(serial).toString('hex');
}

export async function newIdentity(
  opts: NewIdentityOptions,
): Promise<{ certPem: string; keyPem: string; identity: string }> {
  const keyType = opts.keyType ?? 'ed25519';
  const alg = ALGORITHMS[keyType];
  if (!alg) throw new Error(`identity: unsupported key type '${keyType}'`);
  const expiryMs = opts.expiryMs ?? YEAR_MS;
  if (!(expiryMs > 0)) throw new Error('identity: expiry must be positive');
  const ips = opts.ips ?? [];
  for (const ip of ips) if (!isIP(ip)) throw new Error(`identity: invalid IP address '${ip}'`);

  const keys = (await webcrypto.subtle.generateKey(alg.gen, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const sans: x509.JsonGeneralName[] = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...ips.map((value) => ({ type: 'ip' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
  ];
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans));

  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: [{ CN: [opts.subject] }],
    notBefore: new Date(now - 60_000), // tolerate small clock skew between peers
    notAfter: new Date(now + expiryMs),
    keys,
    signingAlgorithm: alg.sign,
    extensions,
  });

  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
  return {
    certPem: cert.toString('pem') + '\n',
    keyPem,
    identity: identityOfCertificate(new Uint8Array(cert.rawData)),
  };
}

// Go's time.ParseDuration units, in milliseconds.
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Parses a Go duration ('8760h', '1h30m', '1.5s', '-90s', '0') into milliseconds, as KES's --expiry flag does. */
export function parseDuration(text: string): number {
  const bad = () => new Error(`invalid duration '${text}': use Go syntax such as 8760h, 30m or 1h30m`);
  const sign = text.startsWith('-') ? -1 : 1;
  const body = /^[-+]/.test(text) ? text.slice(1) : text;
  if (body === '0') return 0;
  if (body === '') throw bad();

  const part = /(\d+\.?\d*|\.\d+)([^\d.]+)/y;
  let total = 0;
  while (part.lastIndex < body.length) {
    const m = part.exec(body);
    if (!m) throw bad();
    const unit = UNIT_MS[m[2]];
    if (unit === undefined) throw new Error(`invalid duration '${text}': unknown unit '${m[2]}'`);
    total += Number(m[1]) * unit;
  }
  if (!Number.isFinite(total)) throw bad();
  return total === 0 ? 0 : sign * total;
}
