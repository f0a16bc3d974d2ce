// One request and its answer, whatever the transport: the dispatcher, the handlers and the log streams see only this.
// server/ implements it for HTTP/1.1 (server/exchange.ts) and HTTP/2 (server/h2.ts).
import type { TLSSocket } from 'node:tls';
import type { KesError } from '../kes/errors.js';

export type Headers = Record<string, string | number>;

export interface Exchange {
  readonly method: string;
  /** Path and query, as sent. */
  readonly url: string;
  /** The client's address, read when the request arrived. */
  readonly remoteAddress: string;
  /** The TLS connection (its identity is computed at the handshake: identity.ts). */
  readonly socket: TLSSocket;
  /** A request header (lower-case name); the first value if repeated. */
  header(name: string): string | undefined;
  /** Reads at most maxBody bytes; a larger body is 413 and never buffered. maxBody 0: any body is ignored. */
  readBody(maxBody: number, done: (err: KesError | undefined, body: Buffer) => void): void;
  /** The whole answer in one go. Ignored once the answer has started or the exchange is closed. */
  send(status: number, headers: Headers, body: string): void;
  /** Starts a streamed answer (NDJSON lists, log streams): the status and headers go out now. */
  start(status: number, headers: Headers): void;
  /** Part of a streamed answer (text, or bytes: a backup); false: wait for onDrain. */
  write(chunk: string | Uint8Array): boolean;
  end(chunk?: string | Uint8Array): void;
  /** Abandons the exchange (its connection or stream is cut). */
  destroy(): void;
  /** A long-lived answer (log streams): no idle timeout applies to it. */
  keepOpen(): void;
  /** The status sent, once the answer started. */
  readonly status: number | undefined;
  /** The client is gone or the answer is complete and flushed. */
  readonly closed: boolean;
  /** Bytes written but not yet flushed. */
  readonly buffered: number;
  onDrain(listener: () => void): void;
  /** Once: when the answer is complete, or the client left (then status may be undefined). */
  onClose(listener: () => void): void;
}
