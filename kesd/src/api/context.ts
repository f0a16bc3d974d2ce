// The request context handlers see, and what they may return.
import type { Enclave } from '../state/enclave.js';
import type { System } from '../state/system.js';
import type { AuditLog } from '../log/audit.js';
import type { ErrorLog } from '../log/errorlog.js';
import type { Metrics } from '../log/metrics.js';
import type { Exchange } from './exchange.js';

/**
 * How a route authenticates and authorises:
 * - none: no identity needed (/version);
 * - identify: any client with a certificate (self-describe);
 * - server: the system admin, or an identity the selected enclave allows (status, metrics, logs…);
 * - enclave: the selected enclave's admin or policy must allow the path;
 * - sysadmin: only the system admin (enclaves, seal).
 */
export type AuthMode = 'none' | 'identify' | 'server' | 'enclave' | 'sysadmin';

export interface Route {
  readonly methods: readonly string[];
  readonly path: string;
  readonly maxBody: number;
  readonly timeoutMs: number;
  readonly auth: AuthMode;
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
}

export interface RequestContext {
  /** The request and its answer, whatever the transport. */
  readonly exchange: Exchange;
  readonly route: Route;
  /** The decoded request path, as policies see it. */
  readonly path: string;
  /** The decoded part of the path after the route prefix. */
  readonly arg: string;
  readonly identity: string;
  /** Set for 'enclave' routes and for 'server' routes used by non-sysadmins. */
  readonly enclave: Enclave | undefined;
  readonly enclaveName: string;
  readonly body: Buffer;
  readonly server: ServerContext;
}

/** A handler's reply: nothing (200, empty), a JSON value, an NDJSON stream, or STREAMING if it wrote the response itself. */
export type Reply = void | { json: unknown } | { ndjson: AsyncIterable<unknown> } | { text: string; contentType: string } | typeof STREAMING;
export const STREAMING = Symbol('streaming');

export type Handler = (ctx: RequestContext) => Reply | Promise<Reply>;
