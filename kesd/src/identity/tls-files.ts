// The server's TLS files, read and checked before use, at start and on every reload: a bad file is a clear
// error and the running certificate stays, instead of a context no client can handshake with (Node accepts an
// empty certificate file, or a CA file without certificates, without complaint).
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface ServerTlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly password?: string;
  /** A PEM file, or a directory of them, with the CAs that client certificates are verified against. */
  readonly ca?: string;
}

export interface ServerTlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly passphrase: string | undefined;
  readonly ca: Buffer[] | undefined;
  /** The leaf certificate the server presents. */
  readonly leaf: X509Certificate;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g;

/** Every PEM certificate in pem; throws if there is none or one does not parse. */
function certificatesIn(pem: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new Error('no PEM certificate found');
  return blocks.map((b) => new X509Certificate(b));
}

function read(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`tls: cannot load ${what} '${path}': ${(err as Error).message}`);
  }
}

/** The CA files: the file itself, or every file directly inside the directory (as KES reads `tls.ca`). */
function readCaFiles(path: string): Buffer[] {
  let files = [path];
  try {
    if (statSync(path).isDirectory()) {
      files = readdirSync(path, { withFileTypes: true })
        .filter((e) => !e.isDirectory())
        .map((e) => join(path, e.name))
        .sort();
    }
  } catch (err) {
    throw new Error(`tls: cannot load CA certificates '${path}': ${(err as Error).message}`);
  }
  if (files.length === 0) throw new Error(`tls: cannot load CA certificates '${path}': the directory is empty`);
  return files.map((file) => {
    const pem = read('CA certificates', file);
    try {
      certificatesIn(pem.toString('latin1'));
    } catch (err) {
      throw new Error(`tls: cannot load CA certificates '${file}': ${(err as Error).message}`);
    }
    return pem;
  });
}

/** Reads the certificate (leaf first, then any chain), its private key and the client CAs, and checks them. */
export function loadServerTls(files: ServerTlsFiles): ServerTlsMaterial {
  const cert = read('certificate', files.cert);
  let leaf: X509Certificate;
  try {
    leaf = certificatesIn(cert.toString('latin1'))[0]!;
  } catch (err) {
    throw new Error(`tls: cannot load certificate '${files.cert}': ${(err as Error).message}`);
  }
  const key = read('private key', files.key);
  const passphrase = files.password || undefined;
  try {
    if (!leaf.checkPrivateKey(createPrivateKey({ key, passphrase })))
      throw new Error('the private key does not match the certificate');
  } catch (err) {
    throw new Error(`tls: cannot load private key '${files.key}': ${(err as Error).message}`);
  }
  // Go clients ignore the CN: without a DNS or IP SAN no client can verify the server (KES refuses too).
  if (!leaf.subjectAltName || !/(DNS|IP Address):/.test(leaf.subjectAltName)) {
    throw new Error(`tls: certificate '${files.cert}' does not contain any DNS or IP address as SAN`);
  }
  return { cert, key, passphrase, ca: files.ca ? readCaFiles(files.ca) : undefined, leaf };
}

/** The start-up check (`kesd init`, `kesd server`): the same as at every reload. */
export async function checkServerCertificate(tls: ServerTlsFiles): Promise<void> {
  loadServerTls(tls);
}
