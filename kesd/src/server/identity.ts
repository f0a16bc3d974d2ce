// The KES identity of a TLS connection: SHA-256 of the client leaf's SubjectPublicKeyInfo,
// computed once per connection and cached on the socket (also correct on resumed sessions).
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { ErrNoClientCert, ErrTooManyClientCerts, KesError } from '../api/errors.js';
import { identityOfCertificate } from '../identity/spki.js';

const IDENTITY = Symbol('kesd.identity');
type Tagged = TLSSocket & { [IDENTITY]?: string | KesError };

/** Skips CA certificates in what the client sent; exactly one non-CA certificate must remain. */
function computeIdentity(socket: TLSSocket): string | KesError {
  const leaf = socket.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
  if (!leaf || leaf.raw === undefined) return ErrNoClientCert; // no certificate: Node returns {}
  let identity: string | undefined;
  let count = 0;
  const seen = new Set<DetailedPeerCertificate>();
  for (let c: DetailedPeerCertificate | undefined = leaf; c && c.raw && !seen.has(c); c = c.issuerCertificate) {
    seen.add(c);
    if (c.ca) continue;
    count++;
    identity = identityOfCertificate(c.raw);
  }
  if (count === 0 || identity === undefined) return ErrNoClientCert;
  if (count > 1) return ErrTooManyClientCerts;
  return identity;
}

export function identityOf(socket: TLSSocket): string {
  const tagged = socket as Tagged;
  let id = tagged[IDENTITY];
  if (id === undefined) id = tagged[IDENTITY] = computeIdentity(socket);
  if (id instanceof KesError) throw id;
  return id;
}
