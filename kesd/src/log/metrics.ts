// Prometheus metrics under the KES family names, so KES dashboards and `kes metric` keep working.
// Latency buckets start at 50 µs: the data-key path is far below KES's 10 ms first bucket.
import os from 'node:os';
import { Counter, Gauge, Registry, type Aggregator, type Metric } from 'prom-client';
import type { AuditLog } from './audit.js';
import type { ErrorLog } from './errorlog.js';

/** What the upstream metrics read (upstream/upstream.ts provides it). */
export interface UpstreamFigures {
  status(): Promise<{ backlog: number; conflicts: number; oldestUnsyncedSeconds: number; reachable: boolean }>;
  readonly sync: { readonly synced: number; readonly failures: number };
}

export const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 3, 5, 10,
];

/**
 * A histogram without labels that a request updates with plain arithmetic (prom-client's observe() builds a label
 * object and hashes it per call). Its samples read exactly as prom-client's Histogram's do: cumulative buckets,
 * +Inf, _sum, _count, summed over a cluster's workers.
 */
class RequestHistogram {
  readonly type = 'histogram';
  readonly aggregator: Aggregator = 'sum';
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    const { bounds } = this;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    if (i < bounds.length) this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  get() {
    const bucket = `${this.name}_bucket`;
    let acc = 0;
    const values = this.bounds.map((le, i) => ({
      labels: { le } as Record<string, string | number>,
      value: (acc += this.counts[i]!),
      metricName: bucket,
    }));
    values.push(
      { labels: { le: '+Inf' }, value: this.count, metricName: bucket },
      { labels: {}, value: this.sum, metricName: `${this.name}_sum` },
      { labels: {}, value: this.count, metricName: `${this.name}_count` },
    );
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export class Metrics {
  readonly registry = new Registry();
  /** Set in a cluster worker: the exposition of the whole server (all workers), instead of this process's. */
  gather: (() => Promise<string>) | undefined;
  /** Requests per status code, in the order the codes were first seen (the order the samples are listed in). */
  private readonly byStatus = new Map<number, number>();
  private readonly responseTime = new RequestHistogram(
    'kes_http_response_time',
    'Response time of requests in seconds',
    LATENCY_BUCKETS,
  );
  /** Requests in flight: a plain number, which the gauge reads at scrape time. */
  readonly active = {
    n: 0,
    inc() {
      this.n++;
    },
    dec() {
      this.n--;
    },
  };
  readonly contentType = this.registry.contentType;

  constructor(startedAt: number, audit: AuditLog, errors: ErrorLog) {
    // The request counters are read from byStatus at scrape time: a request costs a Map update, not label hashing.
    const byStatus = this.byStatus;
    const requests = (name: string, help: string, from: number, to: number) =>
      new Counter({
        name,
        help,
        labelNames: ['code'],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [status, n] of byStatus) if (status >= from && status < to) this.inc({ code: String(status) }, n);
        },
      });
    requests('kes_http_request_success', 'Number of requests that succeeded (2xx)', -Infinity, 400);
    requests('kes_http_request_error', 'Number of requests that failed with a client error (4xx)', 400, 500);
    requests('kes_http_request_failure', 'Number of requests that failed with a server error (5xx)', 500, Infinity);
    this.registry.registerMetric(this.responseTime as unknown as Metric);
    const active = this.active;
    new Gauge({
      name: 'kes_http_request_active',
      help: 'Number of requests in flight',
      registers: [this.registry],
      collect() {
        this.set(active.n);
      },
    });
    // In a cluster, workers' values are summed unless a gauge says otherwise (aggregator).
    const gauge = (name: string, help: string, value: () => number, aggregator: Aggregator = 'sum') =>
      new Gauge({
        name,
        help,
        aggregator,
        registers: [this.registry],
        collect() {
          this.set(value());
        },
      });
    // Counted where they happen (no hot-path cost here); exposed as counters as KES does.
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(value());
        },
      });
    counter('kes_log_error_events', 'Number of error log events', () => errors.events);
    counter('kes_log_audit_events', 'Number of audit log events', () => audit.events);
    // One family per sink, without labels: kms-go (the `kes metric` CLI) rejects a family with several series.
    counter(
      'kesd_log_audit_dropped_events',
      'Audit events dropped for a /v1/log/audit subscriber that did not keep up',
      () => audit.dropped,
    );
    counter(
      'kesd_log_error_stderr_suppressed_events',
      'Error messages not written to stderr (rate limit)',
      () => errors.suppressed,
    );
    counter(
      'kesd_log_error_dropped_events',
      'Error events dropped for a /v1/log/error subscriber that did not keep up',
      () => errors.stream.dropped,
    );
    counter(
      'kesd_log_audit_stdout_dropped_events',
      'Audit events not written to stdout because it did not keep up',
      () => audit.stdoutDropped,
    );
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
    const fromStatus = (
      name: string,
      help: string,
      value: (s: Awaited<ReturnType<UpstreamFigures['status']>>) => number,
    ) =>
      new Gauge({
        name,
        help,
        aggregator: 'max',
        registers: [this.registry],
        async collect() {
          this.set(value(await source.status()));
        },
      });
    fromStatus(
      'kesd_upstream_backlog',
      'Key changes queued for the upstream (Vault) and not yet synced',
      (s) => s.backlog,
    );
    fromStatus(
      'kesd_upstream_oldest_unsynced_seconds',
      'Age of the oldest key change not yet synced to the upstream',
      (s) => s.oldestUnsyncedSeconds,
    );
    fromStatus(
      'kesd_upstream_conflicts',
      'Queued key changes the upstream holds a different key for (left for an operator)',
      (s) => s.conflicts,
    );
    fromStatus(
      'kesd_upstream_reachable',
      'Whether the syncing process reached the upstream on its last call (1) or not (0)',
      (s) => (s.reachable ? 1 : 0),
    );
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(value());
        },
      });
    counter('kesd_upstream_synced_changes', 'Key changes synced to the upstream', () => source.sync.synced);
    counter(
      'kesd_upstream_sync_failures',
      'Sync attempts that failed (upstream unreachable or refusing)',
      () => source.sync.failures,
    );
  }

  observe(status: number, seconds: number): void {
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1);
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
