// The HTTPS listener: TLS ≥ 1.2, any client certificate requested (KES authorises by identity, not by chain)
// unless verify_cert is on; long keep-alive because Go clients keep idle connections for 90 s.
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import type { ServerContext } from '../api/context.js';
import { routes } from '../api/routes.js';
import { createDispatcher } from './http.js';
import { loadServerTls } from './tls-check.js';

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
  /**
   * Re-reads the certificate, key and CAs; new handshakes use them, open connections are kept. Throws (and
   * keeps the running ones) if a file is missing or bad, the key does not match or the certificate has no SAN.
   */
  reloadTls(): void;
  close(): Promise<void>;
}

function secureContext(tls: TlsFiles): SecureContextOptions {
  const { cert, key, passphrase, ca } = loadServerTls({ cert: tls.certFile, key: tls.keyFile, password: tls.password, ca: tls.caFile });
  return { cert, key, passphrase, ca };
}

/** Some route is served without authentication by configuration (`api.<path>.skip_auth`), not by nature (/version). */
function skipsAuth(ctx: ServerContext): boolean {
  const declared = new Map(routes.map((r) => [r.path, r.auth]));
  return ctx.routes.some((r) => r.auth === 'none' && declared.get(r.path) !== 'none');
}

/** Splits "host:port", "[::]:port" or ":port" (KES address syntax). */
export function parseAddress(address: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(address);
  if (m === null) throw new Error(`invalid address '${address}': expected host:port`);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port: Number(m[3]) };
}

export async function startServer(ctx: ServerContext, address: string, tls: TlsFiles): Promise<RunningServer> {
  // verify_cert with skip_auth routes: as KES (VerifyClientCertIfGiven), a client without a certificate gets
  // through the handshake (to reach those routes; the others answer 400), one with a bad certificate does not.
  const verifyIfGiven = tls.verifyCert && skipsAuth(ctx);
  const server = https.createServer(
    {
      ...secureContext(tls),
      minVersion: 'TLSv1.2',
      requestCert: true,
      rejectUnauthorized: tls.verifyCert && !verifyIfGiven,
      keepAliveTimeout: 120_000,
      headersTimeout: 10_000,
      requestTimeout: 30_000,
    },
    createDispatcher(ctx),
  );
  server.keepAliveTimeout = 120_000;
  if (verifyIfGiven) {
    // Before the HTTP layer sees the socket; Node closes rejected ones the same way (no alert after the handshake).
    server.prependListener('secureConnection', (socket: TLSSocket) => {
      if (!socket.authorized && socket.getPeerX509Certificate() !== undefined) socket.destroy();
    });
  }
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
