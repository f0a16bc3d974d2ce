// Server-level routes: version, readiness, status, metrics, the route table, and the log streams.
import os from 'node:os';
import type { Reply, RequestContext } from '../context.js';
import { STREAMING } from '../context.js';
import { KesError } from '../../kes/errors.js';

export function version(ctx: RequestContext): Reply {
  return { json: ctx.server.version };
}

async function storeLatencyMs(ctx: RequestContext): Promise<number | undefined> {
  const start = process.hrtime.bigint();
  try {
    await ctx.server.system.store.status();
  } catch {
    return undefined;
  }
  return Math.max(1, Math.round(Number(process.hrtime.bigint() - start) / 1e6));
}

export async function ready(ctx: RequestContext): Promise<Reply> {
  if ((await storeLatencyMs(ctx)) === undefined) throw new KesError(504, 'key store is not reachable');
  if (ctx.server.system.sealed) throw new KesError(503, 'system is sealed');
}

/**
 * kesd's extension of the status: the upstream's queue (clients decode the status into structs that ignore unknown
 * fields: the kes CLIs and MinIO were run against it). A store failure leaves the figures out, never the status.
 */
async function upstreamStatus(ctx: RequestContext): Promise<Record<string, unknown> | undefined> {
  const upstream = ctx.server.upstream;
  if (upstream === undefined) return undefined;
  const base = { endpoint: upstream.endpoint, enclave: upstream.enclave };
  try {
    const s = await upstream.status();
    return {
      ...base,
      reachable: s.reachable,
      backlog: s.backlog,
      oldest_unsynced_seconds: s.oldestUnsyncedSeconds,
      conflicts: s.conflicts,
      ...(s.lastError ? { last_error: s.lastError } : {}),
    };
  } catch {
    return base;
  }
}

/** Newest dialect: uptime in seconds; both keystore_* flags, as kms-go requires them to agree. */
export async function status(ctx: RequestContext): Promise<Reply> {
  const [latency, upstream] = await Promise.all([
    storeLatencyMs(ctx),
    ctx.server.system.sealed ? undefined : upstreamStatus(ctx),
  ]);
  const mem = process.memoryUsage();
  return {
    json: {
      version: ctx.server.version.version,
      os: process.platform,
      arch: process.arch === 'x64' ? 'amd64' : process.arch,
      uptime: Math.floor((Date.now() - ctx.server.system.startedAt) / 1000),
      num_cpu: os.availableParallelism(),
      num_cpu_used: ctx.server.workers ?? 1,
      mem_heap_used: mem.heapUsed,
      mem_stack_used: 0,
      keystore_latency: latency ?? 0,
      keystore_unreachable: latency === undefined,
      keystore_unavailable: latency === undefined,
      sealed: ctx.server.system.sealed,
      ...(upstream ? { upstream } : {}),
    },
  };
}

export async function metrics(ctx: RequestContext): Promise<Reply> {
  return { text: await ctx.server.metrics.exposition(), contentType: ctx.server.metrics.contentType };
}

export function api(ctx: RequestContext): Reply {
  return {
    json: ctx.server.routes.map((r) => ({
      method: r.methods[0],
      path: r.path,
      max_body: r.maxBody,
      timeout: Math.round(r.timeoutMs / 1000),
    })),
  };
}

/** The system admin sees every event; anyone else only the events of the enclave it was allowed in. */
function subscriberScope(ctx: RequestContext): string | undefined {
  return ctx.identity === ctx.server.system.sysadmin ? undefined : ctx.enclaveName;
}

export async function auditLog(ctx: RequestContext): Promise<Reply> {
  await ctx.server.audit.subscribe(ctx.exchange, subscriberScope(ctx));
  return STREAMING;
}

export async function errorLog(ctx: RequestContext): Promise<Reply> {
  await ctx.server.errors.subscribe(ctx.exchange, subscriberScope(ctx));
  return STREAMING;
}
