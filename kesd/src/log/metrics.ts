// Prometheus metrics under the KES family names, so KES dashboards and `kes metric` keep working.
// Latency buckets start at 50 µs: the data-key path is far below KES's 10 ms first bucket.
import os from 'node:os';
import { Counter, Gauge, Histogram, Registry, type Aggregator } from 'prom-client';
import type { AuditLog } from './audit.js';
import type { ErrorLog } from './errorlog.js';

/** What the upstream metrics read (upstream/upstream.ts provides it). */
export interface UpstreamFigures {
  status(): Promise<{ backlog: number; conflicts: number; oldestUnsyncedSeconds: number; reachable: boolean }>;
  readonly sync: { readonly synced: number; readonly failures: number };
}

export const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 3, 5, 10];

export class Metrics {
  readonly registry = new Registry();
  /** Set in a cluster worker: the exposition of the whole server (all workers), instead of this process's. */
  gather: (() => Promise<string>) | undefined;
  private readonly success = new Counter({ name: 'kes_http_request_success', help: 'Number of requests that succeeded (2xx)', labelNames: ['code'], registers: [this.registry] });
  private readonly error = new Counter({ name: 'kes_http_request_error', help: 'Number of requests that failed with a client error (4xx)', labelNames: ['code'], registers: [this.registry] });
  private readonly failure = new Counter({ name: 'kes_http_request_failure', help: 'Number of requests that failed with a server error (5xx)', labelNames: ['code'], registers: [this.registry] });
  private readonly responseTime = new Histogram({ name: 'kes_http_response_time', help: 'Response time of requests in seconds', buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly active = new Gauge({ name: 'kes_http_request_active', help: 'Number of requests in flight', registers: [this.registry] });
  readonly contentType = this.registry.contentType;

  constructor(startedAt: number, audit: AuditLog, errors: ErrorLog) {
    // In a cluster, workers' values are summed unless a gauge says otherwise (aggregator).
    const gauge = (name: string, help: string, value: () => number, aggregator: Aggregator = 'sum') =>
      new Gauge({ name, help, aggregator, registers: [this.registry], collect() { this.set(value()); } });
    // Counted where they happen (no hot-path cost here); exposed as counters as KES does.
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({ name, help, registers: [this.registry], collect() { this.reset(); this.inc(value()); } });
    counter('kes_log_error_events', 'Number of error log events', () => errors.events);
    counter('kes_log_audit_events', 'Number of audit log events', () => audit.events);
    // One family per sink, without labels: kms-go (the `kes metric` CLI) rejects a family with several series.
    counter('kesd_log_audit_dropped_events', 'Audit events dropped for a /v1/log/audit subscriber that did not keep up', () => audit.dropped);
    counter('kesd_log_error_stderr_suppressed_events', 'Error messages not written to stderr (rate limit)', () => errors.suppressed);
    counter('kesd_log_error_dropped_events', 'Error events dropped for a /v1/log/error subscriber that did not keep up', () => errors.stream.dropped);
    counter('kesd_log_audit_stdout_dropped_events', 'Audit events not written to stdout because it did not keep up', () => audit.stdoutDropped);
    gauge('kes_system_up_time', 'Uptime in seconds', () => (Date.now() - startedAt) / 1000, 'max');
    gauge('kes_system_num_cpu', 'Number of CPUs', () => os.availableParallelism(), 'first');
    gauge('kes_system_num_cpu_used', 'Number of CPUs used (one per worker process)', () => 1);
    gauge('kes_system_num_threads', 'Number of threads', () => 1);
    gauge('kes_system_mem_heap_used', 'Heap bytes in use', () => process.memoryUsage().heapUsed);
    gauge('kes_system_mem_heap_objects', 'Heap objects (not tracked by V8; 0)', () => 0);
    gauge('kes_system_mem_stack_used', 'Stack bytes in use (not tracked; 0)', () => 0);
  }

  /**
   * kesd_upstream_* families, one per value (no labels: `kes metric` rejects labelled families). The queue figures
   * come from the store, the same in every process, so a cluster reports their maximum, not their sum.
   */
  upstream(source: UpstreamFigures): void {
    const fromStatus = (name: string, help: string, value: (s: Awaited<ReturnType<UpstreamFigures['status']>>) => number) =>
      new Gauge({ name, help, aggregator: 'max', registers: [this.registry], async collect() { this.set(value(await source.status())); } });
    fromStatus('kesd_upstream_backlog', 'Key changes queued for the upstream (Vault) and not yet synced', (s) => s.backlog);
    fromStatus('kesd_upstream_oldest_unsynced_seconds', 'Age of the oldest key change not yet synced to the upstream', (s) => s.oldestUnsyncedSeconds);
    fromStatus('kesd_upstream_conflicts', 'Queued key changes the upstream holds a different key for (left for an operator)', (s) => s.conflicts);
    fromStatus('kesd_upstream_reachable', 'Whether the syncing process reached the upstream on its last call (1) or not (0)', (s) => (s.reachable ? 1 : 0));
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({ name, help, registers: [this.registry], collect() { this.reset(); this.inc(value()); } });
    counter('kesd_upstream_synced_changes', 'Key changes synced to the upstream', () => source.sync.synced);
    counter('kesd_upstream_sync_failures', 'Sync attempts that failed (upstream unreachable or refusing)', () => source.sync.failures);
  }

  observe(status: number, seconds: number): void {
    const code = String(status);
    if (status < 400) this.success.labels(code).inc();
    else if (status < 500) this.error.labels(code).inc();
    else this.failure.labels(code).inc();
    this.responseTime.observe(seconds);
  }

  /** Prometheus text; families without samples are omitted, because the kms-go client rejects them. */
  async exposition(): Promise<string> {
    const text = this.gather !== undefined ? await this.gather() : await this.registry.metrics();
    return text
      .split(/(?=^# HELP )/m)
      .filter((family) => family.split('\n').some((line) => line !== '' && !line.startsWith('#')))
      .join('');
  }
}
