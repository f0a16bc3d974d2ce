// Start-up checks of the server certificate, so a bad one is a clear error instead of failing clients later.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';

export async function checkServerCertificate(tls: { cert: string; key: string; password?: string }): Promise<void> {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await readFile(tls.cert));
  } catch (err) {
    throw new Error(`tls: cannot load certificate '${tls.cert}': ${(err as Error).message}`);
  }
  try {
    const key = createPrivateKey({ key: await readFile(tls.key), passphrase: tls.password || undefined });
    if (!cert.checkPrivateKey(key)) throw new Error('the private key does not match the certificate');
  } catch (err) {
    throw new Error(`tls: cannot load private key '${tls.key}': ${(err as Error).message}`);
  }
  // Go clients ignore the CN: without a DNS or IP SAN no client can verify the server (KES refuses too).
  if (!cert.subjectAltName || !/(DNS|IP Address):/.test(cert.subjectAltName)) {
    throw new Error(`tls: certificate '${tls.cert}' does not contain any DNS or IP address as SAN`);
  }
}
