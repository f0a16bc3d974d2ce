// Request dispatch: route → method → identity → authorisation → body → handler → reply, then audit and metrics.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Reply, RequestContext, Route, ServerContext } from '../api/context.js';
import { STREAMING } from '../api/context.js';
import {
  ErrBodyTooLarge, ErrNotAllowed, ErrNotFound, invalidName, KesError, methodNotAllowed,
} from '../api/errors.js';
import { RouteTable } from '../api/routes.js';
import type { Enclave } from '../state/enclave.js';
import { isValidName } from '../state/names.js';
import { identityOf } from './identity.js';
import { InFlight } from './in-flight.js';

const EMPTY = Buffer.alloc(0);
const TIMEOUT = new KesError(503, 'request timeout exceeded');
const INTERNAL = new KesError(500, 'internal server error');
const CLIENT_CLOSED = 499;

function enclaveNameOf(req: IncomingMessage, query: string): string {
  if (query !== '') {
    const name = new URLSearchParams(query).get('enclave');
    if (name !== null && name !== '') return name;
  }
  const header = req.headers['kes-enclave'];
  return typeof header === 'string' && header !== '' ? header : 'default';
}

function writeError(res: ServerResponse, err: KesError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ message: err.message }) + '\n';
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (err.status === 405) headers['accept'] = (err as KesError & { accept?: string }).accept ?? '';
  res.writeHead(err.status, headers);
  res.end(body);
}

/** A list reader that takes no data for this long is cut off (it holds a store read snapshot open meanwhile). */
const STALLED_READER_MS = 60_000;

/** Resolves on 'drain'; destroys the response if the reader stalls. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const stalled = setTimeout(() => {
      res.destroy();
      resolve();
    }, STALLED_READER_MS);
    res.once('drain', () => {
      clearTimeout(stalled);
      resolve();
    });
    res.once('close', () => {
      clearTimeout(stalled);
      resolve();
    });
  });
}

// The route timeout bounds the time to the first line (started() disarms it): a list of a million keys streams
// for longer than any route timeout, at the pace of its reader.
async function writeNdjson(res: ServerResponse, lines: AsyncIterable<unknown>, started: () => void): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  started();
  // Lines go out in batches of ~64 KiB (one write and TLS record per batch, not per line), and between batches the
  // event loop gets a turn: a store iterator resolves without ever yielding to it, so a long list would otherwise
  // hold up every other request on this process.
  let batch = '';
  const flush = async () => {
    const ok = res.write(batch);
    batch = '';
    await (ok ? new Promise((resolve) => setImmediate(resolve)) : drained(res));
  };
  try {
    for await (const line of lines) {
      batch += JSON.stringify(line) + '\n';
      if (batch.length >= NDJSON_BATCH) await flush();
      if (res.destroyed) return;
    }
  } catch (err) {
    batch += JSON.stringify({ error: err instanceof KesError ? err.message : 'failed to list' }) + '\n';
  }
  res.end(batch);
}

const NDJSON_BATCH = 64 * 1024;

function writeReply(res: ServerResponse, reply: Reply, streaming: () => void): void | Promise<void> {
  if (reply === STREAMING || res.headersSent) return; // headers sent: the route timed out meanwhile
  if (reply === undefined) {
    res.writeHead(200, { 'content-length': 0 });
    res.end();
  } else if ('json' in reply) {
    const body = JSON.stringify(reply.json) + '\n';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  } else if ('text' in reply) {
    res.writeHead(200, { 'content-type': reply.contentType, 'content-length': Buffer.byteLength(reply.text) });
    res.end(reply.text);
  } else {
    return writeNdjson(res, reply.ndjson, streaming);
  }
}

/**
 * Reads at most maxBody bytes; a larger body is 413 and never buffered. Routes without a body ignore one,
 * as KES does (its body limit only bites when a handler reads).
 */
function readBody(req: IncomingMessage, maxBody: number, done: (err: KesError | undefined, body: Buffer) => void): void {
  if (maxBody === 0) {
    req.resume();
    return done(undefined, EMPTY);
  }
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > maxBody) return done(ErrBodyTooLarge, EMPTY);
  // HTTP/1.1 without content-length or chunking has no body. HTTP/2 has neither header: a body is announced by
  // the HEADERS frame not ending the stream.
  const noBody = req.httpVersionMajor === 2
    ? (req as unknown as { stream?: { endAfterHeaders?: boolean } }).stream?.endAfterHeaders === true
    : declared === 0 && req.headers['transfer-encoding'] === undefined;
  if (req.readableEnded || noBody) {
    req.resume();
    return done(undefined, EMPTY);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let failed = false;
  req.on('data', (chunk: Buffer) => {
    if (failed) return;
    size += chunk.length;
    if (size > maxBody) {
      failed = true;
      done(ErrBodyTooLarge, EMPTY);
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (!failed) done(undefined, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
  });
  req.on('error', () => {
    failed = true;
  });
}

/** A reply streamed at the pace of its reader: the handler has done all it applies once it returns one. */
const isStreamed = (reply: Reply) => reply === STREAMING || (reply !== undefined && 'ndjson' in reply);

/** `inFlight` learns of every request whose handler starts (a graceful stop waits for those: server.ts). */
export function createDispatcher(server: ServerContext, inFlight = new InFlight()): (req: IncomingMessage, res: ServerResponse) => void {
  const table = new RouteTable(server.routes);
  const { system, audit, metrics, errors } = server;

  return (req, res) => {
    const start = process.hrtime.bigint();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    let identity = '';
    let enclaveName: string | undefined;
    let path = rawPath;
    let timer: NodeJS.Timeout | undefined;
    const disarm = () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    };
    metrics.active.inc();

    res.once('finish', () => finish());
    res.once('close', () => finish());
    let finished = false;
    const ip = req.socket.remoteAddress ?? ''; // read now: once the client is gone the socket no longer knows
    const finish = () => {
      if (finished) return;
      finished = true;
      if (timer !== undefined) clearTimeout(timer);
      metrics.active.dec();
      const ns = Number(process.hrtime.bigint() - start);
      // A client that left before any answer was sent: 499 (nginx's "client closed request"), not the default 200.
      const code = res.headersSent || res.writableFinished ? res.statusCode : CLIENT_CLOSED;
      metrics.observe(code, ns / 1e9);
      audit.record({
        time: new Date().toISOString(),
        request: { ip, enclave: enclaveName, path, identity: identity || undefined },
        response: { code, time: ns },
      });
    };

    const fail = (err: unknown) => {
      if (err instanceof KesError) return writeError(res, err);
      errors.log(`${req.method} ${path} failed`, err);
      writeError(res, INTERNAL);
    };

    try {
      const found = table.lookup(rawPath);
      if (found === undefined) throw ErrNotFound;
      const { route } = found;
      if (!route.methods.includes(req.method ?? '')) {
        throw Object.assign(methodNotAllowed(req.method ?? '', route.methods[0]!), { accept: route.methods.join(', ') });
      }
      let arg: string;
      try {
        arg = found.arg.includes('%') ? decodeURIComponent(found.arg) : found.arg;
      } catch {
        throw invalidName('key name', found.arg);
      }
      path = route.path.endsWith('/') ? route.path + arg : route.path;

      let enclave: Enclave | undefined;
      if (route.auth !== 'none') {
        identity = identityOf(req.socket as TLSSocket);
        enclaveName = enclaveNameOf(req, query);
        if (!isValidName(enclaveName)) throw invalidName('enclave name', enclaveName);
        enclave = authorize(route, identity, enclaveName, path);
      }

      if (route.timeoutMs > 0) {
        timer = setTimeout(() => writeError(res, TIMEOUT), route.timeoutMs);
        timer.unref();
      }
      readBody(req, route.maxBody, (err, body) => {
        if (err !== undefined) {
          writeError(res, err);
          req.resume();
          return;
        }
        const ctx: RequestContext = { req, res, route, path, arg, identity, enclave, enclaveName: enclaveName ?? 'default', body, server };
        const handling = inFlight.start(req, res);
        const reply = (r: Reply) => {
          handling.replied(isStreamed(r));
          return writeReply(res, r, disarm);
        };
        let written: void | Promise<void> = undefined;
        try {
          const r = route.handle(ctx);
          written = r instanceof Promise ? r.then(reply) : reply(r);
        } catch (err) {
          fail(err);
        }
        if (written instanceof Promise) written.then(undefined, fail).finally(handling.ended);
        else handling.ended();
      });
    } catch (err) {
      fail(err);
      req.resume();
    }
  };

  function authorize(route: Route, identity: string, enclaveName: string, path: string): Enclave | undefined {
    switch (route.auth) {
      case 'none':
      case 'identify':
        return undefined;
      case 'sysadmin':
        if (identity !== system.sysadmin) throw ErrNotAllowed;
        return undefined;
      case 'server':
        if (identity === system.sysadmin) return undefined;
        return allowedIn(system.enclave(enclaveName), identity, path);
      case 'enclave':
        return allowedIn(system.enclave(enclaveName), identity, path);
    }
  }

  function allowedIn(enclave: Enclave, identity: string, path: string): Enclave {
    if (!enclave.isAllowed(identity, path)) throw ErrNotAllowed;
    return enclave;
  }
}
