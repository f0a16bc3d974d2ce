// The HTTPS listener: TLS ≥ 1.2, any client certificate requested (KES authorises by identity, not by chain)
// unless verify_cert is on; long keep-alive because Go clients keep idle connections for 90 s.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import type { ServerContext } from '../api/context.js';
import { createDispatcher } from './http.js';

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly password?: string;
  readonly caFile?: string;
  readonly verifyCert: boolean;
}

export interface RunningServer {
  readonly server: https.Server;
  readonly port: number;
  /** Re-reads the certificate and key; new handshakes use them, open connections are kept. */
  reloadTls(): void;
  close(): Promise<void>;
}

function secureContext(tls: TlsFiles): SecureContextOptions {
  return {
    cert: readFileSync(tls.certFile),
    key: readFileSync(tls.keyFile),
    passphrase: tls.password || undefined,
    ca: tls.caFile ? readFileSync(tls.caFile) : undefined,
  };
}

/** Splits "host:port", "[::]:port" or ":port" (KES address syntax). */
export function parseAddress(address: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(address);
  if (m === null) throw new Error(`invalid address '${address}': expected host:port`);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port: Number(m[3]) };
}

export async function startServer(ctx: ServerContext, address: string, tls: TlsFiles): Promise<RunningServer> {
  const server = https.createServer(
    {
      ...secureContext(tls),
      minVersion: 'TLSv1.2',
      requestCert: true,
      rejectUnauthorized: tls.verifyCert,
      keepAliveTimeout: 120_000,
      headersTimeout: 10_000,
      requestTimeout: 30_000,
    },
    createDispatcher(ctx),
  );
  server.keepAliveTimeout = 120_000;
  const { host, port } = parseAddress(address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    reloadTls: () => server.setSecureContext(secureContext(tls)),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
