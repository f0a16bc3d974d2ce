// The HTTP/1.1 Exchange (api/exchange.ts) over Node's IncomingMessage/ServerResponse, and body collection shared with
// HTTP/2 (h2.ts wraps a core stream, which sends a small answer as one HEADERS and one DATA frame with END_STREAM).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Exchange, Headers } from '../api/exchange.js';
import { ErrBodyTooLarge, type KesError } from '../kes/errors.js';

const EMPTY = Buffer.alloc(0);

/** Collects a body of at most maxBody bytes from a readable side. */
export function collectBody(
  source: NodeJS.ReadableStream,
  maxBody: number,
  done: (err: KesError | undefined, body: Buffer) => void,
): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let failed = false;
  source.on('data', (chunk: Buffer) => {
    if (failed) return;
    size += chunk.length;
    if (size > maxBody) {
      failed = true;
      done(ErrBodyTooLarge, EMPTY);
      return;
    }
    chunks.push(chunk);
  });
  source.on('end', () => {
    if (!failed) done(undefined, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
  });
  source.on('error', () => {
    failed = true;
  });
}

export const NO_BODY = EMPTY;

/** HTTP/1.1, over Node's http.Server. */
export class H1Exchange implements Exchange {
  readonly remoteAddress: string;
  status: number | undefined;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {
    this.remoteAddress = req.socket.remoteAddress ?? ''; // read now: once the client is gone the socket no longer knows
  }

  get method(): string {
    return this.req.method ?? '';
  }

  get url(): string {
    return this.req.url ?? '/';
  }

  get socket(): TLSSocket {
    return this.req.socket as TLSSocket;
  }

  header(name: string): string | undefined {
    const v = this.req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }

  readBody(maxBody: number, done: (err: KesError | undefined, body: Buffer) => void): void {
    const { req } = this;
    if (maxBody === 0) {
      req.resume();
      return done(undefined, EMPTY);
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > maxBody) {
      req.resume();
      return done(ErrBodyTooLarge, EMPTY);
    }
    // Without content-length or chunking a request has no body.
    if (req.readableEnded || (declared === 0 && req.headers['transfer-encoding'] === undefined)) {
      req.resume();
      return done(undefined, EMPTY);
    }
    collectBody(req, maxBody, (err, body) => {
      if (err !== undefined) req.resume();
      done(err, body);
    });
  }

  send(status: number, headers: Headers, body: string): void {
    if (this.res.headersSent || this.res.destroyed) return;
    this.status = status;
    this.res.writeHead(status, headers);
    this.res.end(body);
  }

  start(status: number, headers: Headers): void {
    this.status = status;
    this.res.writeHead(status, headers);
    this.res.flushHeaders();
  }

  write(chunk: string | Uint8Array): boolean {
    return this.res.write(chunk);
  }

  end(chunk?: string | Uint8Array): void {
    this.res.end(chunk);
  }

  destroy(): void {
    this.res.destroy();
  }

  keepOpen(): void {
    this.req.socket.setTimeout(0);
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableFinished;
  }

  get buffered(): number {
    return this.res.writableLength;
  }

  onDrain(listener: () => void): void {
    this.res.once('drain', listener);
  }

  onClose(listener: () => void): void {
    let called = false;
    const once = () => {
      if (!called) {
        called = true;
        listener();
      }
    };
    this.res.once('finish', once);
    this.res.once('close', once);
  }
}
