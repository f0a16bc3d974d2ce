// The HTTP/2 side of the listener (server.ts hands it the TLS connections that chose h2 in ALPN). MinIO's client
// (Go, ForceAttemptHTTP2) then multiplexes its KMS calls over few connections instead of opening a new mTLS
// connection for each call beyond Go's 2 idle HTTP/1.1 connections. The timeouts mirror the HTTP/1.1 listener's.
import http2 from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { ErrBodyTooLarge, type KesError } from '../kes/errors.js';
import type { Exchange, Headers } from '../api/exchange.js';
import { collectBody, NO_BODY } from './exchange.js';

/** h2 is offered in ALPN unless KESD_HTTP2=off (then HTTP/1.1 only). */
export function http2Enabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.KESD_HTTP2 !== 'off';
}

/**
 * Streams a client may have in flight per HTTP/2 connection. Go's client opens another connection beyond this
 * (StrictMaxConcurrentStreams is off), but until our SETTINGS frame arrives it assumes 100: a lower limit gets a
 * burst on a new connection refused (REFUSED_STREAM), which MinIO surfaces as failed S3 requests (seen with 8).
 */
export const H2_STREAMS_PER_CONNECTION = 128;

/**
 * The Rapid Reset budget (CVE-2023-44487; nghttp2's defaults): past it, GOAWAY ENHANCE_YOUR_CALM. kesd counts the
 * resets itself because nghttp2 answers with INTERNAL_ERROR and counts streams it cannot tell apart. Go's client
 * (MinIO's) resets a stream whose body it has decoded if END_STREAM has not arrived: Node's HTTP/2 compatibility layer
 * sent END_STREAM in an empty DATA frame after the body, so Go reset nearly every stream (MinIO's kms:DecryptionFailed
 * once the budget was spent). On the core stream API a small answer carries END_STREAM in its one DATA frame, so an
 * honest client has nothing left to reset, and every reset of a stream kesd had not finished counts.
 */
export const H2_RESET_BURST = 1000;
const H2_RESETS_PER_SECOND = 33;
const H2_NGHTTP2_RESET_LIMIT = 2 ** 32 - 1;

/**
 * As HTTP/1.1's headersTimeout, keepAliveTimeout and requestTimeout: a connection that opens no stream, one idle
 * after its last stream, and a request whose body has not fully arrived. Timers, not inactivity: PING or SETTINGS
 * frames do not keep an h2 connection without streams open.
 */
export const H2_FIRST_STREAM_MS = 10_000;
export const H2_IDLE_MS = 120_000;
export const H2_REQUEST_MS = 30_000;

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

export interface H2Sessions {
  /** Serves a TLS connection that negotiated h2 in ALPN (server.ts). */
  accept(socket: TLSSocket): void;
  /** GOAWAY to every session, now and to any that starts later; their streams in flight finish. */
  stop(): void;
  /**
   * Ends every session with no stream to keep at once; in the others resets the streams not kept (after stop(), a
   * session then ends with its last kept stream).
   */
  cut(keep: (exchange: Exchange) => boolean): void;
}

/** Ends a session that reset too many streams, once. Not reported: an attack must not write to stderr (security.md). */
function calm(session: http2.ServerHttp2Session): void {
  if (!session.destroyed)
    session.destroy(new Error('too many streams reset'), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
}

/**
 * Node's HTTP/2 core stream API (not the compatibility layer): a reply is one respond() and one end().
 * `report` (the error log) hears of the stream resets and GOAWAYs kesd sends to clients it has served: a client may
 * see a failed call there. What a connection that never opened a stream or a Rapid Reset gets stays unreported, as
 * every answer to an unauthenticated flood (security.md).
 */
export function createH2Sessions(
  dispatch: (exchange: Exchange) => void,
  report: (what: string) => void = () => {},
): H2Sessions {
  const server = http2.createServer({
    settings: { maxConcurrentStreams: H2_STREAMS_PER_CONNECTION },
    streamResetBurst: H2_NGHTTP2_RESET_LIMIT,
    streamResetRate: H2_NGHTTP2_RESET_LIMIT,
  });
  let stopping = false;
  let accepting: TLSSocket | undefined;
  // Each session with the exchanges of its open streams.
  const sessions = new Map<http2.ServerHttp2Session, Set<H2Exchange>>();
  server.on('session', (session: http2.ServerHttp2Session) => {
    // Emitted while accept() hands the socket over: that socket is this session's.
    const socket = accepting!;
    const remoteAddress = socket.remoteAddress ?? '';
    const peer = `${remoteAddress}:${socket.remotePort}`;
    const reportOn = (what: string) => report(`h2 ${peer}: ${what}`);
    const exchanges = new Set<H2Exchange>();
    sessions.set(session, exchanges);
    if (stopping) {
      reportOn('GOAWAY NO_ERROR (stopping)');
      session.close();
    }
    let open = 0;
    let idle: NodeJS.Timeout | undefined;
    const closeWhenIdleFor = (ms: number, reported: boolean) => {
      idle = setTimeout(() => {
        if (open !== 0) return;
        if (reported) reportOn(`GOAWAY NO_ERROR (no stream for ${ms} ms)`);
        session.close();
      }, ms);
    };
    closeWhenIdleFor(H2_FIRST_STREAM_MS, false);
    session.once('close', () => {
      clearTimeout(idle);
      sessions.delete(session);
    });
    const resetAllowed = resetBudget();
    const resetByClient = () => {
      if (!resetAllowed()) calm(session);
    };
    session.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      // Reset in the same read as its HEADERS (Rapid Reset): gone before any of kesd's code ran.
      if (stream.destroyed) return resetByClient();
      open++;
      clearTimeout(idle);
      const exchange = new H2Exchange(stream, headers, socket, remoteAddress, reportOn);
      exchanges.add(exchange);
      // The request must have arrived in full by then; an answer already sent is kept (NO_ERROR: stop sending).
      const request = stream.endAfterHeaders
        ? undefined
        : setTimeout(() => {
            exchange.resetByServer = true;
            const code = stream.writableEnded ? http2.constants.NGHTTP2_NO_ERROR : http2.constants.NGHTTP2_CANCEL;
            reportOn(
              `RST_STREAM ${code === http2.constants.NGHTTP2_CANCEL ? 'CANCEL' : 'NO_ERROR'} on stream ${stream.id} ${exchange.url} (request body not in after ${H2_REQUEST_MS} ms)`,
            );
            stream.close(code);
          }, H2_REQUEST_MS);
      stream.once('end', () => clearTimeout(request));
      // 'aborted': closed before kesd ended its answer.
      let aborted = false;
      stream.once('aborted', () => (aborted = true));
      stream.once('close', () => {
        exchanges.delete(exchange);
        clearTimeout(request);
        // Reset by the client: before kesd answered, or with an error code (also after an answer not yet sent). Go's
        // client, which reset streams whose END_STREAM came in a frame of its own (Node's compatibility layer), gets
        // END_STREAM with the body now, so an honest client's streams close with NO_ERROR.
        if (!exchange.resetByServer && (aborted || stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR))
          resetByClient();
        if (--open === 0 && !session.closed && !session.destroyed) closeWhenIdleFor(H2_IDLE_MS, true);
      });
      dispatch(exchange);
    });
  });
  return {
    accept(socket) {
      accepting = socket;
      try {
        server.emit('connection', socket);
      } finally {
        accepting = undefined;
      }
    },
    stop() {
      stopping = true;
      if (sessions.size > 0) report(`h2: GOAWAY NO_ERROR to ${sessions.size} sessions (stopping)`);
      for (const session of sessions.keys()) session.close();
    },
    cut(keep) {
      for (const [session, exchanges] of sessions) {
        const reset = [...exchanges].filter((exchange) => !keep(exchange));
        if (reset.length === exchanges.size) {
          if (exchanges.size > 0) report(`h2 session cut with ${exchanges.size} streams (stop grace over)`);
          session.destroy();
        } else for (const exchange of reset) exchange.destroy();
      }
    },
  };
}

/** One HTTP/2 stream as an Exchange. */
class H2Exchange implements Exchange {
  status: number | undefined;
  /** kesd cut the stream itself (request timeout, a stalled reader). */
  resetByServer = false;

  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly headers: http2.IncomingHttpHeaders,
    readonly socket: TLSSocket,
    readonly remoteAddress: string,
    private readonly report: (what: string) => void,
  ) {
    stream.on('error', () => {}); // a reset or a session error; the outcome is seen on 'close'
  }

  get method(): string {
    return (this.headers[':method'] as string | undefined) ?? '';
  }

  get url(): string {
    return (this.headers[':path'] as string | undefined) ?? '/';
  }

  header(name: string): string | undefined {
    const v = this.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }

  readBody(maxBody: number, done: (err: KesError | undefined, body: Buffer) => void): void {
    const { stream } = this;
    // A body is announced by a HEADERS frame that does not end the stream (HTTP/2 has no content-length rule).
    if (maxBody === 0 || stream.endAfterHeaders || stream.readableEnded) {
      stream.resume();
      return done(undefined, NO_BODY);
    }
    if (Number(this.headers['content-length'] ?? 0) > maxBody) {
      stream.resume();
      return done(ErrBodyTooLarge, NO_BODY);
    }
    collectBody(stream, maxBody, (err, body) => {
      if (err !== undefined) stream.resume();
      // A JSON body of zero bytes, ended by the client's END_STREAM (a reset stream counts against the Rapid Reset
      // budget instead). Without a JSON content type an empty body is one a client may mean ("no context").
      if (err === undefined && body.length === 0 && this.announcesJson() && !stream.destroyed && !stream.closed)
        return this.refuse();
      done(err, body);
    });
  }

  private announcesJson(): boolean {
    return /^application\/json\b/i.test(this.header('content-type') ?? '');
  }

  /**
   * HEADERS announced a JSON body and the stream ended without a byte of it: what MinIO's KES client (kms-go) sends
   * when it fails a call over to the next replica, because it reuses the body reader the failed attempt had read to
   * the end (docs/ha.md). Answered, that call is lost: decrypt fails (400, which MinIO reports as
   * kms:DecryptionFailed) and generate seals a data key without the caller's context, which MinIO then cannot
   * decrypt. REFUSED_STREAM says nothing was processed, and Go's transport sends such a request again with its body
   * rewound (Request.GetBody).
   */
  private refuse(): void {
    this.resetByServer = true;
    if (this.stream.destroyed) return;
    this.report(
      `RST_STREAM REFUSED_STREAM on stream ${this.stream.id} ${this.url} (a body was announced and none came; the client sends it again)`,
    );
    this.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
  }

  send(status: number, headers: Headers, body: string): void {
    if (this.status !== undefined || this.closed) return;
    this.status = status;
    this.stream.respond({ ':status': status, ...headers });
    this.stream.end(body);
  }

  start(status: number, headers: Headers): void {
    if (this.status !== undefined || this.closed) return;
    this.status = status;
    this.stream.respond({ ':status': status, ...headers });
  }

  write(chunk: string | Uint8Array): boolean {
    return this.closed ? true : this.stream.write(chunk);
  }

  end(chunk?: string | Uint8Array): void {
    if (!this.closed) this.stream.end(chunk);
  }

  destroy(): void {
    this.resetByServer = true;
    if (this.stream.destroyed) return;
    this.report(
      `RST_STREAM CANCEL on stream ${this.stream.id} ${this.url} (answer cut after status ${this.status ?? 'none'})`,
    );
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  keepOpen(): void {}

  get closed(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  get buffered(): number {
    return this.stream.writableLength;
  }

  onDrain(listener: () => void): void {
    this.stream.once('drain', listener);
  }

  onClose(listener: () => void): void {
    this.stream.once('close', listener);
  }
}
