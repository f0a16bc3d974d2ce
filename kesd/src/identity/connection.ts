// The KES identity of a TLS connection: SHA-256 of the client leaf's SubjectPublicKeyInfo, computed once per
// connection as the handshake completes (identifyConnection) and kept on the socket (also correct on resumed sessions).
//
// The leaf is the FIRST certificate the client sent: the only one whose private key the handshake proves
// (CertificateVerify). KES instead skips every CA=true certificate and takes the next non-CA one; with verify_cert
// off nobody checks the chain's signatures, so [own cert marked CA, forged non-CA cert with a victim's public key]
// was identified as the victim (docs/security.md, finding 1). Later certificates never lend an identity.
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { ErrNoClientCert, ErrTooManyClientCerts, KesError } from '../kes/errors.js';
import { identityOfCertificate } from './spki.js';

const IDENTITY = Symbol('kesd.identity');
type Tagged = TLSSocket & { [IDENTITY]?: string | KesError };

function computeIdentity(socket: TLSSocket): string | KesError {
  const leaf = socket.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
  if (!leaf || leaf.raw === undefined) return ErrNoClientCert; // no certificate: Node returns {}
  if (leaf.ca) return ErrNoClientCert;
  // Node shows only the certificates it links by issuer; a second non-CA one among them makes the chain ambiguous,
  // which KES answers with 400 too. An unlinked extra certificate is invisible here, and harmless: it lends nothing.
  const seen = new Set<DetailedPeerCertificate>([leaf]);
  for (let c = leaf.issuerCertificate; c?.raw && !seen.has(c); c = c.issuerCertificate) {
    seen.add(c);
    if (!c.ca) return ErrTooManyClientCerts;
  }
  return identityOfCertificate(leaf.raw);
}

/**
 * Called once per connection, right after the handshake. Reading the peer certificate there also clears what
 * OpenSSL's chain check left on its error queue for a chain whose signatures do not verify (verify_cert off): left
 * there, Node's HTTP/2 session took it for a socket error and ended with GOAWAY INTERNAL_ERROR.
 */
export function identifyConnection(socket: TLSSocket): void {
  (socket as Tagged)[IDENTITY] = computeIdentity(socket);
}

/**
 * The caller's identity; throws the KES error (400) when the connection has no usable client certificate. `socket`
 * is the TLS socket, or HTTP/2's proxy of it (which reads the property from the session's socket).
 */
export function identityOf(socket: TLSSocket): string {
  const id = (socket as Tagged)[IDENTITY] ?? ErrNoClientCert;
  if (id instanceof KesError) throw id;
  return id;
}
