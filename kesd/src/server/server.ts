// The HTTPS listener: TLS ≥ 1.2, any client certificate requested (KES authorises by identity, not by chain)
// unless verify_cert is on; long keep-alive because Go clients keep idle connections for 90 s.
// One TLS listener, HTTP/2 or HTTP/1.1 by ALPN: a connection that chose h2 goes to the h2 sessions (h2.ts), any
// other to a plain HTTP/1.1 server, which keeps its header, request and keep-alive timeouts (Node's HTTP/1.1
// fallback inside an h2 server did not: slowloris connections stayed open).
import http, { type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import tls from 'node:tls';
import type { SecureContextOptions, TLSSocket } from 'node:tls';
import type { ServerContext } from '../api/context.js';
import { skipsAuth } from '../api/routes.js';
import { createH2Sessions, http2Enabled } from './h2.js';
import { H1Exchange } from './exchange.js';
import { createDispatcher } from './http.js';
import { InFlight } from './in-flight.js';
import { identifyConnection } from '../identity/connection.js';
import { loadServerTls, type ServerTlsMaterial } from '../identity/tls-files.js';

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
  const { cert, key, passphrase, ca } =
    tls.material ?? loadServerTls({ cert: tls.certFile, key: tls.keyFile, password: tls.password, ca: tls.caFile });
  return { cert, key, passphrase, ca };
}

/**
 * How long a stop waits for connections to close by themselves. Then it cuts every connection that carries no request
 * being handled; a request whose handler has started is still answered (in-flight.ts).
 */
export const STOP_GRACE_MS = 5_000;
const STOP_IDLE_MS = 300;

/**
 * A connection must finish its TLS handshake this soon after it was accepted, and at most this many may be in their
 * handshake at once (per process; past it the oldest is dropped, so a flood of silent connections cannot keep honest
 * ones out). Node's own handshakeTimeout only reports the timeout: the connection stayed open (docs/security.md).
 */
export const HANDSHAKE_DEADLINE_MS = 5_000;
export const MAX_PENDING_HANDSHAKES = 512;

/** Connections accepted but not yet through their handshake, oldest first (a Map keeps insertion order). */
function boundHandshakes(server: tls.Server): void {
  const pending = new Map<string, { socket: Socket; deadline: NodeJS.Timeout }>();
  const keyOf = (socket: Socket) => `${socket.remoteAddress}|${socket.remotePort}`;
  const forget = (key: string, socket?: Socket) => {
    const entry = pending.get(key);
    if (entry === undefined || (socket !== undefined && entry.socket !== socket)) return;
    clearTimeout(entry.deadline);
    pending.delete(key);
    return entry.socket;
  };
  server.on('connection', (socket: Socket) => {
    const key = keyOf(socket);
    forget(key);
    const deadline = setTimeout(() => forget(key, socket)?.destroy(), HANDSHAKE_DEADLINE_MS);
    pending.set(key, { socket, deadline });
    socket.once('close', () => forget(key, socket));
    if (pending.size > MAX_PENDING_HANDSHAKES) forget(pending.keys().next().value!)?.destroy();
  });
  // The TLS socket of a connection has the same remote address and port as the raw one.
  server.prependListener('secureConnection', (socket: TLSSocket) => void forget(keyOf(socket)));
}

/** Splits "host:port", "[::]:port" or ":port" (KES address syntax). */
export function parseAddress(address: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(address);
  if (m === null) throw new Error(`invalid address '${address}': expected host:port`);
  const host = m[1] ?? m[2];
  return { host: host === '' ? undefined : host, port: Number(m[3]) };
}

export async function startServer(ctx: ServerContext, address: string, tlsFiles: TlsFiles): Promise<RunningServer> {
  // verify_cert with skip_auth routes: as KES (VerifyClientCertIfGiven), a client without a certificate gets
  // through the handshake (to reach those routes; the others answer 400), one with a bad certificate does not.
  const verifyIfGiven = tlsFiles.verifyCert && skipsAuth(ctx.routes);
  const server = tls.createServer({
    ...secureContext(tlsFiles),
    minVersion: 'TLSv1.2',
    requestCert: true,
    rejectUnauthorized: tlsFiles.verifyCert && !verifyIfGiven,
    ALPNProtocols: http2Enabled() ? ['h2', 'http/1.1'] : ['http/1.1'],
  });
  boundHandshakes(server);
  const inFlight = new InFlight();
  const dispatch = createDispatcher(ctx, inFlight);
  const h1 = http.createServer(
    { keepAliveTimeout: 120_000, headersTimeout: 10_000, requestTimeout: 30_000 },
    (req, res) => dispatch(new H1Exchange(req, res)),
  );
  const h2 = createH2Sessions(dispatch, (what) => ctx.errors.log(what));
  // Connections, for a graceful stop: HTTP/1.1 ones with their requests in flight (h2 sessions: h2.ts), and the
  // HTTP/1.1 answers not begun yet, which a stop makes say `connection: close`.
  let stopping = false;
  const sockets = new Map<Socket, number>();
  const lastActive = new WeakMap<Socket, number>();
  const unsent = new Set<ServerResponse>();
  server.on('secureConnection', (socket: TLSSocket) => {
    // Node closes rejected ones the same way (no alert after the handshake).
    if (verifyIfGiven && !socket.authorized && socket.getPeerX509Certificate() !== undefined) return socket.destroy();
    identifyConnection(socket);
    // Nagle off, as Go (KES) has it: a reply in two writes (a streamed list's headers, then its lines) otherwise
    // waits for the client's delayed ACK of the first, ~40 ms.
    socket.setNoDelay(true);
    sockets.set(socket, 0);
    lastActive.set(socket, performance.now());
    socket.once('close', () => sockets.delete(socket));
    // The TLS socket itself stays the request's socket: identity.ts reads the peer certificate from it.
    if (socket.alpnProtocol === 'h2') h2.accept(socket);
    else h1.emit('connection', socket);
  });
  // Before the dispatcher, so a response during a stop can still say `connection: close`.
  h1.prependListener('request', (req, res) => {
    const socket = req.socket;
    sockets.set(socket, (sockets.get(socket) ?? 0) + 1);
    if (stopping) res.setHeader('connection', 'close');
    else unsent.add(res);
    res.once('close', () => {
      unsent.delete(res);
      if (sockets.has(socket)) sockets.set(socket, sockets.get(socket)! - 1);
      lastActive.set(socket, performance.now());
    });
  });
  const { host, port } = parseAddress(address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // An http.Server starts checking headersTimeout and requestTimeout on 'listening' (Node's _http_server.js);
  // this one never listens itself, so it is told that the TLS listener does.
  h1.emit('listening');
  let closing: Promise<void> | undefined;
  return {
    server,
    port: (server.address() as AddressInfo).port,
    reloadTls: (material) => server.setSecureContext(secureContext({ ...tlsFiles, material })),
    // Graceful: no new connections; requests in flight finish (HTTP/1.1 answers say `connection: close`, h2
    // sessions get GOAWAY); idle connections, also ones accepted meanwhile, are closed as they go idle. After
    // STOP_GRACE_MS every connection is cut but those carrying a request whose handler has started: that one may have
    // applied a change, so it is answered first (in-flight.ts). The store may close once no handler runs.
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        stopping = true;
        for (const res of unsent) if (!res.headersSent) res.setHeader('connection', 'close');
        let graceOver = false;
        server.close(() => {
          clearInterval(check);
          clearTimeout(cut);
          // Not before: its close() also destroys what Node deems idle, including connections whose answer is not flushed.
          h1.close();
          // A handler whose client has gone may still be writing to the store.
          void inFlight.idle().then(resolve);
        });
        h2.stop();
        // A busy keep-alive client sends its next request within moments and gets `connection: close` on it; closing
        // its connection in between would cut that request. So only connections idle for a while close.
        const closeConnections = () => {
          const handled = inFlight.requests();
          const handling = new Set<Socket>();
          for (const exchange of handled) handling.add(exchange.socket);
          const idleSince = performance.now() - STOP_IDLE_MS;
          for (const [socket, open] of sockets) {
            if ((socket as TLSSocket).alpnProtocol === 'h2') continue;
            if (graceOver ? !handling.has(socket) : open === 0 && (lastActive.get(socket) ?? 0) < idleSince)
              socket.destroy();
          }
          if (graceOver) h2.cut((exchange) => handled.has(exchange));
        };
        closeConnections();
        const check = setInterval(closeConnections, 50);
        const cut = setTimeout(() => {
          graceOver = true;
          closeConnections();
        }, STOP_GRACE_MS);
      })),
  };
}
