// KES identities (kes-protocol §2): hex SHA-256 over the certificate's raw SubjectPublicKeyInfo.
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const VERSION_TAG = 0xa0; // [0] EXPLICIT, context-specific constructed

interface Tlv {
  tag: number;
  start: number; // offset of the tag byte
  body: number; // offset of the first content byte
  end: number; // offset just past the content
}

// Reads one DER TLV at `pos`, refusing anything DER forbids (indefinite or non-minimal lengths).
function readTlv(der: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new Error('x509: truncated DER element');
  const tag = der[pos];
  if ((tag & 0x1f) === 0x1f) throw new Error('x509: unexpected multi-byte DER tag');
  let len = der[pos + 1];
  let body = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new Error('x509: indefinite DER length');
    if (n > 4) throw new Error('x509: DER length too large');
    if (body + n > limit) throw new Error('x509: truncated DER length');
    if (der[body] === 0) throw new Error('x509: non-minimal DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[body + i];
    if (len < 0x80) throw new Error('x509: non-minimal DER length');
    body += n;
  }
  const end = body + len;
  if (end > limit) throw new Error('x509: DER element exceeds its container');
  return { tag, start: pos, body, end };
}

function expect(tlv: Tlv, tag: number, what: string): Tlv {
  if (tlv.tag !== tag) throw new Error(`x509: malformed certificate: bad ${what}`);
  return tlv;
}

/** The exact DER SubjectPublicKeyInfo TLV inside tbsCertificate (not a re-encoding). */
export function subjectPublicKeyInfo(certDer: Uint8Array): Buffer {
  const der = certDer;
  const cert = expect(readTlv(der, 0, der.length), SEQUENCE, 'certificate');
  if (cert.end !== der.length) throw new Error('x509: trailing data after certificate');
  const tbs = expect(readTlv(der, cert.body, cert.end), SEQUENCE, 'tbsCertificate');

  let field = readTlv(der, tbs.body, tbs.end);
  if (field.tag === VERSION_TAG) field = readTlv(der, field.end, tbs.end);
  expect(field, INTEGER, 'serialNumber');
  for (const name of ['signature', 'issuer', 'validity', 'subject']) {
    field = expect(readTlv(der, field.end, tbs.end), SEQUENCE, name);
  }
  const spki = expect(readTlv(der, field.end, tbs.end), SEQUENCE, 'subjectPublicKeyInfo');
  return Buffer.from(der.subarray(spki.start, spki.end));
}

const sha256Hex = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

export function identityOfCertificate(certDer: Uint8Array): string {
  return sha256Hex(subjectPublicKeyInfo(certDer));
}

const API_KEY_PREFIX = 'kes:v1:';
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** Identity of a `kes:v1:` API key: the hash of its Ed25519 public key's SPKI (§2.3). */
export function identityOfApiKey(apiKey: string): string {
  if (!apiKey.startsWith(API_KEY_PREFIX)) throw new Error('kes: invalid API key: missing kes:v1: prefix');
  const encoded = apiKey.slice(API_KEY_PREFIX.length);
  const raw = Buffer.from(encoded, 'base64');
  // Node's base64 decoder skips junk silently; a round trip catches it.
  if (raw.toString('base64') !== encoded) throw new Error('kes: invalid API key: bad base64');
  if (raw.length !== 33) throw new Error('kes: invalid API key: wrong length');
  if (raw[0] !== 0x00) throw new Error('kes: invalid API key: unsupported key type');

  const privateKey = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, raw.subarray(1)]),
    format: 'der',
    type: 'pkcs8',
  });
  // Node exports Ed25519 as 302a300506032b6570032100 ‖ pubkey, the SPKI Go's MarshalPKIXPublicKey yields.
  return sha256Hex(createPublicKey(privateKey).export({ type: 'spki', format: 'der' }));
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/** Like `kes identity of`: the first CERTIFICATE block of a PEM text, or a kes:v1: API key. */
export function identityOfPem(pem: string): string {
  const text = pem.trim();
  if (text.startsWith(API_KEY_PREFIX)) return identityOfApiKey(text);
  for (const [, type, body] of text.matchAll(PEM_BLOCK)) {
    if (type !== 'CERTIFICATE') continue;
    const b64 = body.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new Error('x509: invalid PEM base64');
    return identityOfCertificate(Buffer.from(b64, 'base64'));
  }
  throw new Error('x509: no CERTIFICATE PEM block found');
}
