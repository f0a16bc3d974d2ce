// Request dispatch: route → method → the route's authenticator (api/auth.ts) → body → handler → reply, then audit and
// metrics. Transport only: who may call is decided in api/auth.ts; HTTP/1.1 and HTTP/2 hand it an Exchange.
import type { Reply, RequestContext, Route, ServerContext } from '../api/context.js';
import { STREAMING } from '../api/context.js';
import type { Exchange, Headers } from '../api/exchange.js';
import { RouteTable } from '../api/routes.js';
import { ErrNotFound, invalidName, invalidPattern, KesError, methodNotAllowed } from '../kes/errors.js';
import { InFlight } from './in-flight.js';

const TIMEOUT = new KesError(503, 'request timeout exceeded');
const INTERNAL = new KesError(500, 'internal server error');
const CLIENT_CLOSED = 499;

/** The route argument, percent-decoded; a malformed escape is the argument's own 400. */
function decodedArg(route: Route, raw: string): string {
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    throw route.arg === 'pattern' ? invalidPattern(raw) : invalidName(route.arg ?? 'key name', raw);
  }
}

function enclaveNameOf(exchange: Exchange, query: string): string {
  if (query !== '') {
    const name = new URLSearchParams(query).get('enclave');
    if (name !== null && name !== '') return name;
  }
  const header = exchange.header('kes-enclave');
  return header !== undefined && header !== '' ? header : 'default';
}

function writeError(exchange: Exchange, err: KesError): void {
  if (exchange.status !== undefined) {
    exchange.destroy(); // an answer had started: cut it rather than append an error to it
    return;
  }
  const body = JSON.stringify({ message: err.message }) + '\n';
  const headers: Headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (err.status === 405) headers.accept = (err as KesError & { accept?: string }).accept ?? '';
  exchange.send(err.status, headers, body);
}

/** A list reader that takes no data for this long is cut off (it holds a store read snapshot open meanwhile). */
const STALLED_READER_MS = 60_000;

/** Resolves on 'drain'; destroys the exchange if the reader stalls. */
function drained(exchange: Exchange): Promise<void> {
  return new Promise((resolve) => {
    const stalled = setTimeout(() => {
      exchange.destroy();
      resolve();
    }, STALLED_READER_MS);
    const done = () => {
      clearTimeout(stalled);
      resolve();
    };
    exchange.onDrain(done);
    exchange.onClose(done);
  });
}

// The route timeout bounds the handler's time to its reply (started() disarms it): a list of a million keys streams
// for longer than any route timeout, at the pace of its reader.
// `text`: the items are chunks of serialised lines, written as they are.
async function writeNdjson(
  exchange: Exchange,
  lines: AsyncIterable<unknown>,
  started: () => void,
  text = false,
): Promise<void> {
  started();
  const headers = { 'content-type': 'application/x-ndjson' };
  // Lines go out in batches of ~64 KiB (one write and TLS record per batch, not per line), and between batches the
  // event loop gets a turn: a store iterator resolves without ever yielding to it, so a long list would otherwise
  // hold up every other request on this process. The headers wait for the first batch: a list that fits in one
  // goes out as one write with a content-length.
  let batch = '';
  const flush = async () => {
    if (exchange.status === undefined) exchange.start(200, headers);
    const ok = exchange.write(batch);
    batch = '';
    await (ok ? new Promise((resolve) => setImmediate(resolve)) : drained(exchange));
  };
  try {
    for await (const line of lines) {
      batch += text ? (line as string) : JSON.stringify(line) + '\n';
      if (batch.length >= NDJSON_BATCH) await flush();
      if (exchange.closed) return;
    }
  } catch (err) {
    batch += JSON.stringify({ error: err instanceof KesError ? err.message : 'failed to list' }) + '\n';
  }
  if (exchange.status === undefined)
    exchange.send(200, { ...headers, 'content-length': Buffer.byteLength(batch) }, batch);
  else exchange.end(batch);
}

const NDJSON_BATCH = 64 * 1024;

function writeReply(exchange: Exchange, reply: Reply, streaming: () => void): void | Promise<void> {
  if (reply === STREAMING || exchange.status !== undefined) return; // started: the route timed out meanwhile
  if (reply === undefined) {
    exchange.send(200, { 'content-length': 0 }, '');
  } else if ('json' in reply) {
    const body = JSON.stringify(reply.json) + '\n';
    exchange.send(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, body);
  } else if ('text' in reply) {
    exchange.send(
      200,
      { 'content-type': reply.contentType, 'content-length': Buffer.byteLength(reply.text) },
      reply.text,
    );
  } else if ('ndjsonText' in reply) {
    return writeNdjson(exchange, reply.ndjsonText, streaming, true);
  } else {
    return writeNdjson(exchange, reply.ndjson, streaming);
  }
}

/** A reply streamed at the pace of its reader: the handler has done all it applies once it returns one. */
const isStreamed = (reply: Reply) =>
  reply === STREAMING || (reply !== undefined && ('ndjson' in reply || 'ndjsonText' in reply));

/** `inFlight` learns of every request whose handler starts (a graceful stop waits for those: server.ts). */
export function createDispatcher(server: ServerContext, inFlight = new InFlight()): (exchange: Exchange) => void {
  const table = new RouteTable(server.routes);
  const { system, audit, metrics, errors } = server;

  return (exchange) => {
    const start = process.hrtime.bigint();
    const url = exchange.url;
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

    exchange.onClose(() => {
      if (timer !== undefined) clearTimeout(timer);
      metrics.active.dec();
      const ns = Number(process.hrtime.bigint() - start);
      // A client that left before any answer was sent: 499 (nginx's "client closed request").
      const code = exchange.status ?? CLIENT_CLOSED;
      metrics.observe(code, ns / 1e9);
      audit.record({
        time: new Date().toISOString(),
        request: { ip: exchange.remoteAddress, enclave: enclaveName, path, identity: identity || undefined },
        response: { code, time: ns },
      });
    });

    const fail = (err: unknown) => {
      if (err instanceof KesError) return writeError(exchange, err);
      errors.log(`${exchange.method} ${path} failed`, err, enclaveName);
      writeError(exchange, INTERNAL);
    };

    try {
      const found = table.lookup(rawPath);
      if (found === undefined) throw ErrNotFound;
      const { route } = found;
      const method = exchange.method;
      if (!route.methods.includes(method)) {
        throw Object.assign(methodNotAllowed(method, route.methods[0]!), { accept: route.methods.join(', ') });
      }
      const arg = decodedArg(route, found.arg);
      path = route.path.endsWith('/') ? route.path + arg : route.path;
      const request = { socket: exchange.socket, path, enclaveName: () => enclaveNameOf(exchange, query) };
      const caller = route.auth.authenticate(request, system);
      identity = caller.identity;
      enclaveName = caller.enclaveName;
      if (caller.refusal !== undefined) throw caller.refusal;
      const enclave = caller.enclave;

      if (route.timeoutMs > 0) {
        timer = setTimeout(() => writeError(exchange, TIMEOUT), route.timeoutMs);
        timer.unref();
      }
      exchange.readBody(route.maxBody, (err, body) => {
        if (err !== undefined) return writeError(exchange, err);
        const ctx: RequestContext = {
          exchange,
          route,
          path,
          arg,
          identity,
          enclave,
          enclaveName: enclaveName ?? 'default',
          body,
          server,
        };
        const handling = inFlight.start(exchange);
        const reply = (r: Reply) => {
          handling.replied(isStreamed(r));
          return writeReply(exchange, r, disarm);
        };
        let written: unknown;
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
      exchange.readBody(0, () => {});
    }
  };
}
