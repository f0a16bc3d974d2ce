// The request metrics are counted in plain numbers and read at scrape time (log/metrics.ts): the exposition must
// read as prom-client's own Counter and Histogram would, in one process and summed over a cluster's workers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AggregatorRegistry } from 'prom-client';
import { LATENCY_BUCKETS, Metrics } from '../../kesd/src/log/metrics.js';
import type { AuditLog } from '../../kesd/src/log/audit.js';
import type { ErrorLog } from '../../kesd/src/log/errorlog.js';

const audit = { events: 0, dropped: 0, stdoutDropped: 0 } as unknown as AuditLog;
const errors = { events: 0, suppressed: 0, stream: { dropped: 0 } } as unknown as ErrorLog;

function served(): Metrics {
  const m = new Metrics(Date.now(), audit, errors);
  for (const [status, seconds] of [
    [200, 0.00004],
    [404, 0.0003],
    [200, 0.00005],
    [500, 0.02],
    [499, 12],
    [201, 1.5],
  ] as const) {
    m.active.inc();
    m.observe(status, seconds);
    m.active.dec();
  }
  m.active.inc();
  return m;
}

const lines = (text: string) => text.split('\n').filter((l) => l.startsWith('kes_http_'));

test('request counters by code, in the order first seen; a histogram with cumulative buckets, +Inf, _sum, _count', async () => {
  const got = lines(await served().exposition());
  const buckets = LATENCY_BUCKETS.map(
    (le) =>
      `kes_http_response_time_bucket{le="${le}"} ${[0.00004, 0.0003, 0.00005, 0.02, 12, 1.5].filter((s) => s <= le).length}`,
  );
  assert.deepEqual(got, [
    'kes_http_request_success{code="200"} 2',
    'kes_http_request_success{code="201"} 1',
    'kes_http_request_error{code="404"} 1',
    'kes_http_request_error{code="499"} 1',
    'kes_http_request_failure{code="500"} 1',
    ...buckets,
    'kes_http_response_time_bucket{le="+Inf"} 6',
    `kes_http_response_time_sum ${0.00004 + 0.0003 + 0.00005 + 0.02 + 12 + 1.5}`,
    'kes_http_response_time_count 6',
    'kes_http_request_active 1',
  ]);
});

test('before any request: no counter samples, a histogram of zeros, 0 in flight', async () => {
  const text = await new Metrics(Date.now(), audit, errors).exposition();
  assert.doesNotMatch(text, /kes_http_request_success/);
  assert.match(text, /^kes_http_response_time_bucket\{le="0\.00005"\} 0$/m);
  assert.match(text, /^kes_http_response_time_count 0$/m);
  assert.match(text, /^kes_http_request_active 0$/m);
});

test('summed over workers as a cluster reports them', async () => {
  const a = served();
  const b = served();
  const sum = AggregatorRegistry.aggregate([await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()]);
  const got = lines(await sum.metrics());
  assert.ok(got.includes('kes_http_request_success{code="200"} 4'), got.join('\n'));
  assert.ok(got.includes('kes_http_response_time_bucket{le="+Inf"} 12'), got.join('\n'));
  assert.ok(got.includes('kes_http_response_time_count 12'), got.join('\n'));
  assert.ok(got.includes('kes_http_request_active 2'), got.join('\n'));
});
