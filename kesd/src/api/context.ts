// The request context handlers see, and what they may return.
import type { Enclave } from '../state/enclave.js';
import type { System } from '../state/system.js';
import type { AuditLog } from '../log/audit.js';
import type { ErrorLog } from '../log/errorlog.js';
import type { Metrics } from '../log/metrics.js';
import type { Upstream } from '../upstream/upstream.js';
import type { Authenticator } from './auth.js';
import type { Exchange } from './exchange.js';

/** What a prefix route's path argument is: its errors say so (400 `<kind> '…' is empty, too long or …`). */
export type ArgKind =
  | 'key name'
  | 'key version'
  | 'policy name'
  | 'identity'
  | 'secret name'
  | 'enclave name'
  | 'pattern';

export interface Route {
  readonly methods: readonly string[];
  /** Exact, or a prefix ending in '/' whose remainder is the argument. */
  readonly path: string;
  readonly arg: ArgKind | undefined;
  readonly maxBody: number;
  readonly timeoutMs: number;
  /** Who may call it (api/auth.ts). */
  readonly auth: Authenticator;
  readonly handle: Handler;
}

export interface ServerContext {
  readonly system: System;
  readonly version: { version: string; commit: string };
  readonly audit: AuditLog;
  readonly errors: ErrorLog;
  readonly metrics: Metrics;
  readonly routes: readonly Route[];
  /** How many processes serve the API (cluster workers); 1 if unset. */
  readonly workers?: number;
  /** The data dir (GET /v1/sys/backup stages its snapshot there). */
  readonly dataDir?: string;
  /** The Vault mirroring an enclave's keys (init.yml `upstream`), if configured. */
  readonly upstream?: Upstream;
}

export interface RequestContext {
  /** The request and its answer, whatever the transport. */
  readonly exchange: Exchange;
  readonly route: Route;
  /** The decoded request path, as policies see it. */
  readonly path: string;
  /** The decoded part of the path after the route prefix. */
  readonly arg: string;
  /** The route's authenticator's verdict (api/auth.ts): '' on routes anyone may call. */
  readonly identity: string;
  /** Set for enclave routes, and for server routes called by anyone but the system admin. */
  readonly enclave: Enclave | undefined;
  readonly enclaveName: string;
  readonly body: Buffer;
  readonly server: ServerContext;
}

/**
 * A handler's reply: nothing (200, empty), a JSON value, an NDJSON stream (of values, or of text chunks that are
 * whole lines already), or STREAMING if it wrote the response itself.
 */
export type Reply =
  | void
  | { json: unknown }
  | { ndjson: AsyncIterable<unknown> }
  | { ndjsonText: AsyncIterable<string> }
  | { text: string; contentType: string }
  | typeof STREAMING;
export const STREAMING = Symbol('streaming');

export type Handler = (ctx: RequestContext) => Reply | Promise<Reply>;
