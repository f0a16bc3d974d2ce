// The scale-out figure (issue 7): generate/decrypt throughput of 1, 2 and 3 kesd replicas on one 3-member etcd
// cluster, with the embedded store as the reference. Each replica is one process (--workers 1) and gets its own
// load generator with an equal share of the connections; the ops/s are summed. On a 2-core machine that also runs
// the load generators and etcd, more replicas cannot add cores: this shows the overhead of the layout, not a speed-up.
//
//   node --import tsx bench/replicas.mts [--duration S] [--conns N] [--smoke] [--out DIR]
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startEtcd, type EtcdCluster } from '../harness/etcd.ts';
import { ensureLoadgen, runLoadgen, type LoadgenResult } from './lib/loadgen.mts';
import { freePort, killAll, spawnLogged, stop, waitReady } from './lib/proc.mts';
import { BENCH_KEY, benchInitYml, cleanEnv, KESD_BIN, makeIdentities, type Identities } from './lib/targets.mts';

export interface ReplicaPoint {
  store: 'embedded' | 'etcd';
  replicas: number;
  op: 'generate' | 'decrypt';
  conns: number;
  ops_per_s: number;
  errors: number;
  p50_ms: number;
  p99_ms: number;
  /** Server CPU per request over all replicas, µs. */
  server_us_per_req: number;
}

export interface ReplicasResult {
  when: string;
  duration_s: number;
  conns: number;
  points: ReplicaPoint[];
}

const UNSEAL_ENV = 'KESD_BENCH_UNSEAL_KEY';

interface Replica {
  port: number;
  pid: number;
  child: import('node:child_process').ChildProcess;
}

async function startReplicas(
  dir: string,
  ids: Identities,
  n: number,
  etcd: EtcdCluster | undefined,
  tag: string,
): Promise<Replica[]> {
  const yml = join(dir, `init-${tag}.yml`);
  const store = etcd && { endpoints: etcd.endpoints, prefix: 'bench/' };
  writeFileSync(
    yml,
    benchInitYml(ids, { address: '127.0.0.1:0', unsealEnv: UNSEAL_ENV, keys: [BENCH_KEY], etcd: store }),
  );
  const env = cleanEnv({ [UNSEAL_ENV]: Buffer.alloc(32, 42).toString('base64') });
  const replicas: Replica[] = [];
  for (let i = 0; i < n; i++) {
    const port = await freePort();
    const data = join(dir, `${tag}-${i}`);
    mkdirSync(data, { recursive: true });
    const args = [
      KESD_BIN,
      'server',
      data,
      '--init',
      yml,
      '--addr',
      `127.0.0.1:${port}`,
      '--audit-log',
      'off',
      '--workers',
      '1',
    ];
    const { child, output } = spawnLogged(process.execPath, args, { env, log: join(dir, `${tag}-${i}.log`) });
    await waitReady(`kesd ${tag} ${i}`, port, child, output, ids.clientTls);
    replicas.push({ port, pid: child.pid!, child });
  }
  return replicas;
}

async function measure(
  bin: string,
  ids: Identities,
  replicas: Replica[],
  op: 'generate' | 'decrypt',
  conns: number,
  durationS: number,
  warmupS: number,
): Promise<Omit<ReplicaPoint, 'store' | 'replicas'>> {
  const share = Math.max(1, Math.round(conns / replicas.length));
  const pids = replicas.map((r) => r.pid);
  const results: LoadgenResult[] = await Promise.all(
    replicas.map((r, i) =>
      runLoadgen(bin, {
        url: `https://127.0.0.1:${r.port}`,
        cert: ids.client.certFile,
        key: ids.client.keyFile,
        ca: ids.server.certFile,
        op,
        conns: share,
        durationS,
        warmupS,
        keyName: BENCH_KEY,
        pids: i === 0 ? pids : [],
      }),
    ),
  );
  const ops = results.reduce((s, r) => s + r.ops_per_s, 0);
  const weighted = (k: string) => results.reduce((s, r) => s + (r.latency_ms[k] ?? 0) * r.ops_per_s, 0) / ops;
  return {
    op,
    conns: share * replicas.length,
    ops_per_s: ops,
    errors: results.reduce((s, r) => s + Object.values(r.errors).reduce((a, b) => a + b, 0), 0),
    p50_ms: weighted('p50'),
    p99_ms: Math.max(...results.map((r) => r.latency_ms.p99 ?? 0)),
    // Load generator 0 samples every replica's CPU over its window; divide by what all of them served.
    server_us_per_req: ((results[0]!.server_cpu?.seconds ?? NaN) * 1e6) / (ops * durationS),
  };
}

export async function runReplicas(opts: {
  durationS: number;
  warmupS: number;
  conns: number;
  counts: number[];
  log?: (s: string) => void;
}): Promise<ReplicasResult> {
  const log = opts.log ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), 'kesd-bench-replicas-'));
  const bin = ensureLoadgen(log);
  const ids = makeIdentities(dir, 'ed25519');
  const points: ReplicaPoint[] = [];
  let etcd: EtcdCluster | undefined;
  try {
    const layouts: [ReplicaPoint['store'], number][] = [
      ['embedded', 1],
      ...opts.counts.map((n): [ReplicaPoint['store'], number] => ['etcd', n]),
    ];
    for (const [store, n] of layouts) {
      if (store === 'etcd' && etcd === undefined) etcd = await startEtcd(3);
      log(`${n} replica(s), ${store} store`);
      const replicas = await startReplicas(dir, ids, n, store === 'etcd' ? etcd : undefined, `${store}-${n}`);
      try {
        for (const op of ['generate', 'decrypt'] as const) {
          const p = await measure(bin, ids, replicas, op, opts.conns, opts.durationS, opts.warmupS);
          log(`  ${op}: ${p.ops_per_s.toFixed(0)} ops/s, ${p.errors} errors, p99 ${p.p99_ms.toFixed(1)} ms`);
          points.push({ store, replicas: n, ...p });
        }
      } finally {
        await Promise.all(replicas.map((r) => stop(r.child)));
      }
    }
  } finally {
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return { when: new Date().toISOString(), duration_s: opts.durationS, conns: opts.conns, points };
}

export function replicasMarkdown(r: ReplicasResult): string {
  const base = (op: string) => r.points.find((p) => p.store === 'embedded' && p.op === op)?.ops_per_s ?? NaN;
  const rows = r.points.map(
    (p) =>
      `| ${p.store === 'embedded' ? 'embedded (LMDB)' : 'etcd'} | ${p.replicas} | ${p.op} | ${Math.round(p.ops_per_s).toLocaleString('en-US')} | ${(p.ops_per_s / base(p.op)).toFixed(2)}× | ${p.p50_ms.toFixed(2)} / ${p.p99_ms.toFixed(1)} | ${Number.isFinite(p.server_us_per_req) ? p.server_us_per_req.toFixed(0) : '–'} | ${p.errors} |`,
  );
  return [
    `${r.conns} connections in all, split evenly over the replicas (one load generator each), ${r.duration_s} s per point; every replica is one process (\`--workers 1\`).`,
    '',
    '| store | replicas | op | ops/s (sum) | vs embedded | p50 / p99 ms | server CPU µs/req | errors |',
    '|---|---:|---|---:|---:|---|---:|---:|',
    ...rows,
  ].join('\n');
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      conns: { type: 'string' },
      smoke: { type: 'boolean' },
      out: { type: 'string' },
    },
  });
  const smoke = values.smoke ?? false;
  process.once('SIGINT', () => {
    killAll();
    process.exit(130);
  });
  const result = await runReplicas({
    durationS: Number(values.duration ?? (smoke ? 1 : 10)),
    warmupS: smoke ? 0.3 : 2,
    conns: Number(values.conns ?? 48),
    counts: smoke ? [1, 2] : [1, 2, 3],
    log: (s) => console.error(`[replicas] ${s}`),
  });
  if (values.out) {
    mkdirSync(values.out, { recursive: true });
    writeFileSync(join(values.out, 'replicas.json'), JSON.stringify(result, null, 2));
  }
  console.log(replicasMarkdown(result));
  if (result.points.some((p) => p.ops_per_s <= 0)) process.exit(1);
}
