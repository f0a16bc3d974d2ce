// The HTTPS listener: TLS ≥ 1.2, any client certificate requested (KES authorises by identity, not by chain)
// unless verify_cert is on; long keep-alive because Go clients keep idle connections for 90 s.
// HTTP/2 and HTTP/1.1 by ALPN: MinIO's client (Go, ForceAttemptHTTP2) then multiplexes its KMS calls over few
// connections instead of opening a new mTLS connection for each call beyond Go's 2 idle HTTP/1.1 connections.
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type tls from 'node:tls';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import type { ServerContext } from '../api/context.js';
import { routes } from '../api/routes.js';
import { createDispatcher } from './http.js';
import { loadServerTls, type ServerTlsMaterial } from './tls-check.js';

/** Checked TLS bytes (loadServerTls): what a cluster worker gets from the primary instead of reading the files. */
export type TlsMaterial = Pick<ServerTlsMaterial, 'cert' | 'key' | 'passphrase' | 'ca'>;

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly password?: string;
  readonly caFile?: string;
  readonly verifyCert: boolean;
  /** Serve these bytes instead of reading the files. */
  readonly material?: TlsMaterial;
}

export interface RunningServer {
  readonly server: tls.Server;
  readonly port: number;
  /**
   * Re-reads the certificate, key and CAs; new handshakes use them, open connections are kept. Throws (and
   * keeps the running ones) if a file is missing or bad, the key does not match or the certificate has no SAN.
   * With `material`, installs those (already checked) bytes instead of reading the files.
   */
  reloadTls(material?: TlsMaterial): void;
  close(): Promise<void>;
}

function secureContext(tls: TlsFiles): SecureContextOptions {
  const { cert, key, passphrase, ca } = tls.material ?? loadServerTls({ cert: tls.certFile, key: tls.keyFile, password: tls.password, ca: tls.caFile });
  return { cert, key, passphrase, ca };
}

/** Some route is served without authentication by configuration (`api.<path>.skip_auth`), not by nature (/version). */
function skipsAuth(ctx: ServerContext): boolean {
  const declared = new Map(routes.map((r) => [r.path, r.auth]));
  return ctx.routes.some((r) => r.auth === 'none' && declared.get(r.path) !== 'none');
}

/**
 * Streams a client may have in flight per HTTP/2 connection. Go's client opens another connection beyond this
 * (StrictMaxConcurrentStreams is off), but until our SETTINGS frame arrives it assumes 100: a lower limit gets a
 * burst on a new connection refused (REFUSED_STREAM), which MinIO surfaces as failed S3 requests (seen with 8).
 */
export const H2_STREAMS_PER_CONNECTION = 128;

/**
 * Go's client (MinIO's KES client) closes a response body once it has decoded the JSON and then resets the stream
 * (RST_STREAM CANCEL) if END_STREAM has not arrived yet, which Node sends in an empty DATA frame of its own after
 * the body: about one reset per call. nghttp2 counts every reset received against its Rapid Reset budget
 * (CVE-2023-44487) and, once spent, ends the connection with GOAWAY INTERNAL_ERROR, failing the calls in flight on
 * it (MinIO: kms:DecryptionFailed). So nghttp2's count is lifted (H2_NGHTTP2_RESET_LIMIT) and kesd applies the same
 * budget (nghttp2's defaults) only to resets of streams it has not answered: those are the ones that cost it work.
 */
export const H2_RESET_BURST = 1000;
const H2_RESETS_PER_SECOND = 33;
const H2_NGHTTP2_RESET_LIMIT = 2 ** 32 - 1;

/** A token bucket: false once more than H2_RESET_BURST resets came in faster than H2_RESETS_PER_SECOND. */
function resetBudget(): () => boolean {
  let tokens = H2_RESET_BURST;
  let last = performance.now();
  return () => {
    const now = performance.now();
    tokens = Math.min(H2_RESET_BURST, tokens + ((now - last) / 1000) * H2_RESETS_PER_SECOND) - 1;
    last = now;
    return tokens >= 0;
  };
}

/** HTTP/2 is offered in ALPN only with KESD_HTTP2=on (see startServer). */
export function http2Enabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.KESD_HTTP2 === 'on';
}

/** How long a stop waits for requests in flight (the cluster primary kills a worker after 10 s). */
export const STOP_GRACE_MS = 5_000;
const STOP_IDLE_MS = 300;

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
  const options = {
    ...secureContext(tls),
    minVersion: 'TLSv1.2' as const,
    requestCert: true,
    rejectUnauthorized: tls.verifyCert && !verifyIfGiven,
  };
  // HTTP/1.1 is the default listener. h2 only when asked for (KESD_HTTP2=on): through MinIO it saved the per-call
  // handshakes, but Node's HTTP/1.1 fallback inside the h2 server ignores the keep-alive, header and request
  // timeouts below (slowloris connections stayed open), so it is not the default.
  const dispatcher = createDispatcher(ctx);
  const timeouts = { keepAliveTimeout: 120_000, headersTimeout: 10_000, requestTimeout: 30_000 };
  const server: tls.Server = http2Enabled()
    ? http2.createSecureServer(
        {
          ...options,
          allowHTTP1: true,
          settings: { maxConcurrentStreams: H2_STREAMS_PER_CONNECTION },
          streamResetBurst: H2_NGHTTP2_RESET_LIMIT,
          streamResetRate: H2_NGHTTP2_RESET_LIMIT,
        },
        // The dispatcher uses only what IncomingMessage/ServerResponse and their HTTP/2 compatibility classes share.
        dispatcher as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
      )
    : https.createServer({ ...options, ...timeouts }, dispatcher);
  Object.assign(server, timeouts);
  // Connections, for a graceful stop: HTTP/1.1 ones with their requests in flight, and h2 sessions.
  let stopping = false;
  const sockets = new Map<Socket, number>();
  const lastActive = new WeakMap<Socket, number>();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('secureConnection', (socket: TLSSocket) => {
    sockets.set(socket, 0);
    lastActive.set(socket, performance.now());
    socket.once('close', () => sockets.delete(socket));
  });
  // Before the dispatcher, so a response during a stop can still say `connection: close`.
  server.prependListener('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    // (IncomingMessage and ServerResponse on the HTTP/1.1 listener: the members used here are the same.)
    if (req.httpVersionMajor !== 1) return;
    const socket = req.socket as Socket;
    sockets.set(socket, (sockets.get(socket) ?? 0) + 1);
    if (stopping) res.setHeader('connection', 'close');
    res.once('close', () => {
      if (sockets.has(socket)) sockets.set(socket, sockets.get(socket)! - 1);
      lastActive.set(socket, performance.now());
    });
  });
  // An h2 connection with no stream open for as long as an idle HTTP/1.1 keep-alive connection is closed too.
  server.on('session', (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    if (stopping) session.close();
    let open = 0;
    const resetAllowed = resetBudget();
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      open++;
      stream.once('close', () => open--);
      // 'aborted': closed before kesd ended its answer (a reset after the answer, as Go's client sends, is not).
      stream.once('aborted', () => {
        if (!resetAllowed()) session.destroy(new Error('too many streams reset'), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      });
    });
    session.setTimeout(120_000, () => {
      if (open === 0) session.close();
    });
  });
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
    reloadTls: (material) => server.setSecureContext(secureContext({ ...tls, material })),
    // Graceful: no new connections; requests in flight finish (HTTP/1.1 answers say `connection: close`, h2
    // sessions get GOAWAY); idle connections, also ones accepted meanwhile, are closed as they go idle; whatever
    // is left after STOP_GRACE_MS is cut.
    close: () =>
      new Promise<void>((resolve) => {
        stopping = true;
        server.close(() => {
          clearInterval(idle);
          clearTimeout(cut);
          resolve();
        });
        for (const session of sessions) session.close();
        // A busy keep-alive client sends its next request within moments and gets `connection: close` on it;
        // closing its connection in between would cut that request. So only connections idle for a while close.
        const closeIdle = () => {
          const before = performance.now() - STOP_IDLE_MS;
          for (const [socket, inFlight] of sockets) {
            if (inFlight === 0 && (socket as TLSSocket).alpnProtocol !== 'h2' && (lastActive.get(socket) ?? 0) < before) socket.destroy();
          }
        };
        closeIdle();
        const idle = setInterval(closeIdle, 50);
        const cut = setTimeout(() => {
          clearInterval(idle);
          for (const session of sessions) session.destroy();
          for (const socket of sockets.keys()) socket.destroy();
        }, STOP_GRACE_MS);
      }),
  };
}
