// The HTTP/2 side of the listener (server.ts hands it the TLS connections that chose h2 in ALPN). MinIO's client
// (Go, ForceAttemptHTTP2) then multiplexes its KMS calls over few connections instead of opening a new mTLS
// connection for each call beyond Go's 2 idle HTTP/1.1 connections. The timeouts mirror the HTTP/1.1 listener's.
import http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';

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
  /** Not listening itself: server.ts emits 'connection' on it with each TLS socket that negotiated h2. */
  readonly server: http2.Http2Server;
  /** GOAWAY to every session, now and to any that starts later; their streams in flight finish. */
  stop(): void;
  /**
   * Ends every session with no stream to keep at once; in the others resets the streams not kept (after stop(), a
   * session then ends with its last kept stream).
   */
  cut(keep: (stream: http2.ServerHttp2Stream) => boolean): void;
}

export function createH2Sessions(handler: (req: IncomingMessage, res: ServerResponse) => void): H2Sessions {
  const server = http2.createServer(
    {
      settings: { maxConcurrentStreams: H2_STREAMS_PER_CONNECTION },
      streamResetBurst: H2_NGHTTP2_RESET_LIMIT,
      streamResetRate: H2_NGHTTP2_RESET_LIMIT,
    },
    // The dispatcher uses only what IncomingMessage/ServerResponse and their HTTP/2 compatibility classes share.
    handler as unknown as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
  );
  let stopping = false;
  // Each session with its open streams.
  const sessions = new Map<http2.ServerHttp2Session, Set<http2.ServerHttp2Stream>>();
  server.on('session', (session: http2.ServerHttp2Session) => {
    const streams = new Set<http2.ServerHttp2Stream>();
    sessions.set(session, streams);
    if (stopping) session.close();
    let open = 0;
    let idle: NodeJS.Timeout | undefined;
    const closeWhenIdleFor = (ms: number) => {
      idle = setTimeout(() => {
        if (open === 0) session.close();
      }, ms);
    };
    closeWhenIdleFor(H2_FIRST_STREAM_MS);
    session.once('close', () => {
      clearTimeout(idle);
      sessions.delete(session);
    });
    const resetAllowed = resetBudget();
    session.on('stream', (stream: http2.ServerHttp2Stream) => {
      open++;
      streams.add(stream);
      clearTimeout(idle);
      let cut = false;
      // The request must have arrived in full by then; an answer already sent is kept (NO_ERROR: stop sending).
      const request = stream.endAfterHeaders ? undefined : setTimeout(() => {
        cut = true;
        stream.close(stream.writableEnded ? http2.constants.NGHTTP2_NO_ERROR : http2.constants.NGHTTP2_CANCEL);
      }, H2_REQUEST_MS);
      stream.once('end', () => clearTimeout(request));
      stream.once('close', () => {
        streams.delete(stream);
        clearTimeout(request);
        if (--open === 0 && !session.closed && !session.destroyed) closeWhenIdleFor(H2_IDLE_MS);
      });
      // 'aborted': closed before kesd ended its answer (a reset after the answer, as Go's client sends, is not).
      stream.once('aborted', () => {
        if (!cut && !resetAllowed()) session.destroy(new Error('too many streams reset'), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      });
    });
  });
  return {
    server,
    stop() {
      stopping = true;
      for (const session of sessions.keys()) session.close();
    },
    cut(keep) {
      for (const [session, streams] of sessions) {
        const reset = [...streams].filter((stream) => !keep(stream));
        if (reset.length === streams.size) session.destroy();
        else for (const stream of reset) stream.close(http2.constants.NGHTTP2_CANCEL);
      }
    },
  };
}
