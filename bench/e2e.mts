// End to end through the real MinIO: small-object PUT and GET throughput with SSE-KMS via kesd, via the real KES
// (kes-latest), and with no KMS at all. One fresh single-drive MinIO per target; its bucket's default encryption is
// SSE-KMS with the bench key, so the load (bench/s3load) sends the same requests to all three. After the PUT run the
// objects are checked with the real `mc stat` and on the drive, and MinIO's own KMS request counters must show a KMS
// call per request: a run that silently went unencrypted is an error, not a number.
//
//   node --import tsx bench/e2e.mts [--seconds N] [--smoke] [--out DIR] [--help]
//
// runE2E(opts) returns the JSON-able result; e2eMarkdown(result) renders it as a Markdown fragment.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { BUCKET, checkEncryption, startMinio, type E2EMinio, type EncryptionCheck } from './lib/e2e-minio.mts';
import {
  ensureS3load,
  kmsCounters,
  runS3load,
  type KmsCounters,
  type S3Endpoint,
  type S3LoadResult,
} from './lib/e2e-s3load.mts';
import { goVersion } from './lib/loadgen.mts';
import { waitQuiet } from './lib/proc.mts';
import {
  BENCH_KEY,
  kesBinary,
  makeIdentities,
  REPO,
  startKes,
  startKesd,
  stopTarget,
  type Target,
} from './lib/targets.mts';

export type E2ETarget = 'none' | 'kesd' | 'kes';
const ALL_TARGETS: E2ETarget[] = ['none', 'kesd', 'kes'];

export interface E2EOptions {
  /** Measured seconds per PUT run and per GET run (default 10; smoke 2). */
  seconds?: number;
  /** Runs per target and operation, interleaved across targets; the median stands (default 3; smoke 1). */
  rounds?: number;
  /** Warm-up seconds before each, same load, not recorded (default 2; smoke 0.5). */
  warmupS?: number;
  /** Checks only that numbers come out (and that encryption is real); short runs, no noise retries. */
  smoke?: boolean;
  conns?: number;
  sizeBytes?: number;
  targets?: E2ETarget[];
  /** Rerun a PUT or GET run up to N times while other processes used more than noiseThreshold cores (default 1; smoke 0). */
  noiseRetries?: number;
  noiseThreshold?: number;
  /** Before each run, wait up to this many seconds for the machine to be quiet (default 0). */
  waitQuietS?: number;
  keep?: boolean;
  log?: (s: string) => void;
}

export interface E2ERun extends S3LoadResult {
  /** KMS requests MinIO made during the run (warm-up included), by MinIO's own counters; absent without a KMS. */
  kms?: KmsCounters & { per_request: number };
  attempts?: number;
}

export interface E2EPhase {
  target: E2ETarget;
  label: string;
  info: Record<string, unknown>;
  /** The run with the median ops/s of the rounds. */
  put?: E2ERun;
  get?: E2ERun;
  /** Every round's run, when there was more than one. */
  putRounds?: E2ERun[];
  getRounds?: E2ERun[];
  encryption?: EncryptionCheck;
  /** Set when the target failed or the objects were not what it promises: its numbers must not be used. */
  error?: string;
}

export interface E2EResult {
  meta: {
    date: string;
    machine: {
      nproc: number;
      cpu: string;
      memGiB: number;
      kernel: string;
      loadavgStart: number[];
      loadavgEnd: number[];
      driveFs: string;
    };
    versions: Record<string, string>;
    settings: {
      seconds: number;
      rounds: number;
      warmupS: number;
      conns: number;
      sizeBytes: number;
      smoke: boolean;
      noiseRetries: number;
      noiseThreshold: number;
      waitQuietS: number;
      bucketEncryption: string;
    };
    wallSeconds: number;
  };
  phases: E2EPhase[];
  /** ops/s and p99 ratios, e.g. put.kesd_vs_kes = kesd PUT ops/s ÷ KES PUT ops/s. */
  ratios: Record<'put' | 'get', Record<string, { ops: number; p99: number } | undefined>>;
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

function versions(): Record<string, string> {
  const peers = JSON.parse(readFileSync(join(REPO, 'peers.json'), 'utf8')) as Record<string, { version: string }>;
  const kesd = JSON.parse(readFileSync(join(REPO, 'kesd/package.json'), 'utf8')) as { version: string };
  const commit = sh('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']);
  const dirty = sh('git', ['-C', REPO, 'status', '--porcelain', '--', 'kesd']) ? '+dirty' : '';
  let kes = 'not built';
  try {
    kes = kesBinary().version;
  } catch {
    // reported as not built
  }
  return {
    kesd: `${kesd.version} (${commit || 'no git'}${dirty})`,
    kes,
    minio: peers.minio?.version ?? '?',
    mc: peers.mc?.version ?? '?',
    node: process.version,
    go: goVersion(),
  };
}

export async function runE2E(opts: E2EOptions = {}): Promise<E2EResult> {
  const t0 = Date.now();
  const log =
    opts.log ?? ((s: string) => console.error(`[e2e ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${s}`));
  const smoke = opts.smoke ?? false;
  const seconds = opts.seconds ?? (smoke ? 2 : 10);
  const warmupS = opts.warmupS ?? (smoke ? 0.5 : 2);
  const rounds = opts.rounds ?? (smoke ? 1 : 3);
  const conns = opts.conns ?? 16;
  const sizeBytes = opts.sizeBytes ?? 4096;
  const noiseRetries = opts.noiseRetries ?? (smoke ? 0 : 1);
  const noiseThreshold = opts.noiseThreshold ?? 0.3;
  const waitQuietS = opts.waitQuietS ?? 0;
  const targets = opts.targets ?? ALL_TARGETS;
  for (const [k, v] of Object.entries({
    seconds,
    warmupS,
    rounds,
    conns,
    sizeBytes,
    noiseRetries,
    noiseThreshold,
    waitQuietS,
  }))
    if (!(typeof v === 'number' && v >= 0)) throw new Error(`${k}: not a number ≥ 0`);
  if (!(seconds > 0 && rounds >= 1 && conns >= 1 && sizeBytes >= 32))
    throw new Error(
      'seconds > 0, rounds ≥ 1, conns ≥ 1 and sizeBytes ≥ 32 (the on-disk plaintext check looks for the first 32 bytes)',
    );
  for (const t of targets)
    if (!ALL_TARGETS.includes(t)) throw new Error(`unknown target '${t}' (known: ${ALL_TARGETS.join(', ')})`);

  const tmp = mkdtempSync(join(tmpdir(), 'kesd-e2e-'));
  log(`temp dir ${tmp}`);
  const loadavgStart = loadavg();
  const s3load = ensureS3load(log);
  const ids = makeIdentities(tmp, 'ed25519');
  const seed = 1 + Math.floor(Math.random() * 1e9);

  interface Stack {
    phase: E2EPhase;
    kms?: Target;
    m?: E2EMinio;
    s3?: S3Endpoint;
    objects: number;
    runs: Record<'put' | 'get', E2ERun[]>;
  }
  const stacks: Stack[] = targets.map((target) => ({
    phase: { target, label: target === 'none' ? 'no KMS' : target, info: {} },
    objects: 0,
    runs: { put: [], get: [] },
  }));
  const live = () => stacks.filter((st) => st.m && !st.phase.error);
  // The CPU of every stack is sampled: the active one's as minio/kms, the idle ones' so they don't count as "other load".
  const pidsFor = (active: Stack) => {
    const pids: Record<string, number> = {};
    for (const st of live()) {
      const pre = st === active ? '' : `idle-${st.phase.target}-`;
      pids[`${pre}minio`] = st.m!.pid;
      if (st.kms) pids[`${pre}kms`] = st.kms.pid;
    }
    return pids;
  };

  // One PUT or GET run, rerun while the machine was busy with other work; MinIO's KMS counters around each attempt.
  const measure = async (st: Stack, op: 'put' | 'get'): Promise<E2ERun> => {
    const s3 = st.s3!;
    let best: E2ERun | undefined;
    let attempts = 0;
    do {
      if (best)
        log(`  other load ${best.machine.other_cores.toFixed(2)} cores > ${noiseThreshold}: measuring ${op} again`);
      await waitQuiet(waitQuietS, noiseThreshold, log);
      const before = st.kms ? await kmsCounters(s3load, s3) : undefined;
      const r: E2ERun = await runS3load(s3load, s3, {
        op,
        bucket: BUCKET,
        size: sizeBytes,
        conns,
        durationS: seconds,
        warmupS,
        seed,
        pids: pidsFor(st),
        ...(op === 'put' ? { start: st.objects } : { objects: st.objects }),
      });
      if (before) {
        const after = await kmsCounters(s3load, s3);
        const ok = after.ok - before.ok;
        r.kms = {
          ok,
          error: after.error - before.error,
          failure: after.failure - before.failure,
          per_request: r.total_ok > 0 ? ok / r.total_ok : 0,
        };
      }
      attempts++;
      if (op === 'put') st.objects = r.objects; // later PUT runs add objects after the earlier ones
      if (!best || r.machine.other_cores < best.machine.other_cores) best = r;
    } while (attempts <= noiseRetries && best.machine.other_cores > noiseThreshold);
    if (attempts > 1) best.attempts = attempts;
    const r = best;
    const errs = Object.values(r.errors).reduce((a, b) => a + b, 0);
    const cpu = ['minio', 'kms', 'client']
      .filter((k) => r.cpu[k])
      .map((k) => `${k} ${r.cpu[k]!.us_per_op.toFixed(0)}`)
      .join(' ');
    log(
      `  ${st.phase.label.padEnd(11)} ${op.toUpperCase().padEnd(3)} ${Math.round(r.ops_per_s).toString().padStart(6)} ops/s  p50 ${r.latency_ms.p50?.toFixed(2)} p99 ${r.latency_ms.p99?.toFixed(2)} ms  ${errs ? `errors ${JSON.stringify(r.errors)}  ` : ''}${r.kms ? `KMS calls/request ${r.kms.per_request.toFixed(2)}  ` : ''}cpu µs/op ${cpu}  TCP connects/op ${(r.machine.tcp_active_opens / Math.max(1, r.ops)).toFixed(2)}  other load ${r.machine.other_cores.toFixed(2)}`,
    );
    return r;
  };
  const fail = (st: Stack, err: unknown) => {
    st.phase.error = (err as Error).message.split('\n').slice(0, 6).join(' ');
    log(`${st.phase.label}: FAILED ${st.phase.error}`);
  };

  try {
    // Every stack up at once, then the runs interleaved round by round (rotating the order), so a burst of other
    // work on a shared machine lands on all targets rather than on one.
    let kesdWorkers: number | undefined;
    for (const st of stacks) {
      const name = st.phase.target;
      try {
        if (name === 'kesd') {
          st.kms = await startKesd(tmp, ids);
          kesdWorkers = Number(st.kms.info.workers);
          st.phase.info = { workers: st.kms.info.workers, how: st.kms.info.workersHow };
        } else if (name === 'kes') {
          // Like bench/run.mts: KES gets as many cores as kesd has workers.
          const gomaxprocs = Math.min(kesdWorkers ?? availableParallelism(), availableParallelism());
          st.kms = await startKes(tmp, ids, gomaxprocs);
          st.phase.label = st.kms.label;
          st.phase.info = { gomaxprocs, version: st.kms.info.version };
        }
        const kms = st.kms && {
          endpoint: st.kms.url,
          certFile: ids.client.certFile,
          keyFile: ids.client.keyFile,
          caFile: ids.server.certFile,
          defaultKey: BENCH_KEY,
        };
        st.m = await startMinio(join(tmp, `minio-${name}`), kms);
        st.s3 = { url: st.m.minio.url, user: st.m.minio.user, password: st.m.minio.password };
        log(
          `${st.phase.label}: MinIO up on ${st.s3.url}${st.kms ? ` with KES endpoint ${st.kms.url}` : ' without a KMS'}`,
        );
      } catch (err) {
        fail(st, err);
      }
    }
    for (const op of ['put', 'get'] as const) {
      for (let round = 0; round < rounds; round++) {
        if (rounds > 1) log(`${op.toUpperCase()} round ${round + 1}/${rounds}`);
        const order = live();
        for (const st of order.map((_, k) => order[(k + round) % order.length]!)) {
          try {
            st.runs[op].push(await measure(st, op));
          } catch (err) {
            fail(st, err);
          }
        }
      }
      if (op === 'put') {
        for (const st of live()) {
          try {
            const e = await checkEncryption(
              st.m!,
              st.objects,
              st.runs.put[0]!.payload_head,
              st.kms ? BENCH_KEY : undefined,
            );
            st.phase.encryption = e;
            log(
              `${st.phase.label}: objects: mc stat ${[...new Set(e.stat)].join(', ')}; sealed key on disk ${e.sealedKeyOnDisk.join(',')}; plaintext on disk ${e.plaintextOnDisk.join(',')}`,
            );
            if (e.problems.length) fail(st, new Error(e.problems.join('; ')));
          } catch (err) {
            fail(st, err);
          }
        }
      }
    }
  } finally {
    for (const st of stacks) {
      await st.m?.stop();
      if (st.kms) await stopTarget(st.kms);
    }
    if (!opts.keep) rmSync(tmp, { recursive: true, force: true });
  }

  for (const st of stacks) {
    const problems: string[] = [];
    for (const op of ['put', 'get'] as const) {
      const runs = st.runs[op];
      // The run with the median throughput stands for the target; every run is kept.
      const median = [...runs].sort((a, b) => a.ops_per_s - b.ops_per_s)[Math.floor((runs.length - 1) / 2)];
      if (median) st.phase[op] = median;
      if (runs.length > 1) st.phase[`${op}Rounds`] = runs;
      for (const run of runs) {
        if (run.ops === 0)
          problems.push(`${op}: no successful request (${JSON.stringify(run.error_sample ?? run.errors)})`);
        // Each SSE-KMS PUT needs a generate, each GET a decrypt; fewer calls would mean unencrypted requests.
        if (st.kms && !run.kms) problems.push(`${op}: no KMS counters`);
        if (st.kms && run.kms && run.kms.ok < run.total_ok)
          problems.push(`${op}: MinIO made ${run.kms.ok} KMS calls for ${run.total_ok} requests`);
      }
    }
    if (problems.length) st.phase.error = [st.phase.error, ...problems].filter(Boolean).join('; ');
  }
  const phases = stacks.map((st) => st.phase);

  const ratio = (op: 'put' | 'get', a: E2ETarget, b: E2ETarget) => {
    const x = phases.find((p) => p.target === a && !p.error)?.[op];
    const y = phases.find((p) => p.target === b && !p.error)?.[op];
    if (!x || !y?.ops_per_s || !y.latency_ms.p99 || !x.latency_ms.p99) return undefined;
    return { ops: x.ops_per_s / y.ops_per_s, p99: x.latency_ms.p99 / y.latency_ms.p99 };
  };
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    meta: {
      date: new Date().toISOString(),
      machine: {
        nproc: availableParallelism(),
        cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? '?',
        memGiB: Math.round(totalmem() / 2 ** 30),
        kernel: sh('uname', ['-r']),
        loadavgStart: loadavgStart.map((x) => Number(x.toFixed(2))),
        loadavgEnd: loadavg().map((x) => Number(x.toFixed(2))),
        driveFs:
          sh('findmnt', ['-n', '-o', 'FSTYPE', '--target', tmpdir()]) || sh('stat', ['-f', '-c', '%T', tmpdir()]),
      },
      versions: versions(),
      settings: {
        seconds,
        rounds,
        warmupS,
        conns,
        sizeBytes,
        smoke,
        noiseRetries,
        noiseThreshold,
        waitQuietS,
        bucketEncryption: `SSE-KMS, key ${BENCH_KEY} (mc encrypt set sse-kms); none without a KMS`,
      },
      wallSeconds: Math.round((Date.now() - t0) / 1000),
    },
    phases,
    ratios: {
      put: {
        kesd_vs_kes: ratio('put', 'kesd', 'kes'),
        kesd_vs_none: ratio('put', 'kesd', 'none'),
        kes_vs_none: ratio('put', 'kes', 'none'),
      },
      get: {
        kesd_vs_kes: ratio('get', 'kesd', 'kes'),
        kesd_vs_none: ratio('get', 'kesd', 'none'),
        kes_vs_none: ratio('get', 'kes', 'none'),
      },
    },
  };
}

// ---------------------------------------------------------------- Markdown

const f0 = (x: number | undefined) => (x === undefined ? '–' : Math.round(x).toLocaleString('en-US'));
const f2 = (x: number | undefined) => (x === undefined ? '–' : x.toFixed(2));

export function e2eMarkdown(r: E2EResult): string {
  const s = r.meta.settings;
  const m = r.meta.machine;
  const lines: string[] = [];
  lines.push(
    `${s.sizeBytes / 1024} KiB objects, ${s.conns} requests in flight. Per target ${s.rounds} PUT run${s.rounds > 1 ? 's' : ''} then ${s.rounds} GET run${s.rounds > 1 ? 's' : ''} of ${s.seconds} s ` +
      `(each after ${s.warmupS} s of warm-up)${s.rounds > 1 ? ', interleaved across the targets; each cell is the run with the median ops/s' : ''}. ` +
      `One fresh single-drive MinIO (${r.meta.versions.minio}) per target, on ${m.driveFs}; bucket default encryption SSE-KMS with \`${BENCH_KEY}\` ` +
      `(none for "no KMS"). Load: bench/s3load (Go, SigV4, keep-alive HTTP/1.1). ${m.nproc} cores (${m.cpu}) shared by the load generator, MinIO and the KMS.` +
      `${s.smoke ? ' **Smoke run: the numbers only show that the pipeline works.**' : ''}`,
    '',
    '| KMS | PUT ops/s | PUT p50 / p99 ms | GET ops/s | GET p50 / p99 ms | errors | KMS calls per PUT / GET | objects (mc stat) |',
    '|---|--:|--:|--:|--:|--:|--:|---|',
  );
  for (const p of r.phases) {
    if (p.error && !p.put) {
      lines.push(`| ${p.label} | failed: ${p.error.replace(/\|/g, '\\|')} |||||||`);
      continue;
    }
    const errs = [p.put, p.get].reduce((n, x) => n + Object.values(x?.errors ?? {}).reduce((a, b) => a + b, 0), 0);
    const stat = [...new Set(p.encryption?.stat ?? [])].join(', ') || '–';
    const kms = p.put?.kms ? `${f2(p.put.kms.per_request)} / ${f2(p.get?.kms?.per_request)}` : '–';
    lines.push(
      `| ${p.label}${p.error ? ' ⚠' : ''} | ${f0(p.put?.ops_per_s)} | ${f2(p.put?.latency_ms.p50)} / ${f2(p.put?.latency_ms.p99)} | ${f0(p.get?.ops_per_s)} | ${f2(p.get?.latency_ms.p50)} / ${f2(p.get?.latency_ms.p99)} | ${errs} | ${kms} | ${stat} |`,
    );
  }
  const setup = r.phases
    .filter((p) => p.target !== 'none')
    .map(
      (p) =>
        `${p.label}: ${p.target === 'kesd' ? `${p.info.workers} worker process(es)` : `GOMAXPROCS=${p.info.gomaxprocs}`}`,
    );
  if (setup.length)
    lines.push('', `${setup.join('; ')}. Both are reached by MinIO over mTLS with the same certificates.`);
  const failed = r.phases.filter((p) => p.error);
  for (const p of failed) lines.push('', `⚠ ${p.label}: ${p.error} — do not use its numbers.`);
  lines.push(
    '',
    'Over the measured window: CPU per request (µs; MinIO / KMS / load generator), TCP connections opened on the machine per request ' +
      '(the load generator keeps its own, so these are mostly MinIO dialling its KMS) and other load on the machine (cores):',
    '',
    '| KMS | CPU per PUT | CPU per GET | connects per PUT / GET | other load PUT / GET |',
    '|---|--:|--:|--:|--:|',
  );
  const cpu = (x: E2ERun | undefined) =>
    x
      ? `${f0(x.cpu.minio?.us_per_op)} / ${x.cpu.kms ? f0(x.cpu.kms.us_per_op) : '–'} / ${f0(x.cpu.client?.us_per_op)}`
      : '–';
  const connects = (x: E2ERun | undefined) => (x?.ops ? f2(x.machine.tcp_active_opens / x.ops) : '–');
  for (const p of r.phases)
    if (p.put)
      lines.push(
        `| ${p.label} | ${cpu(p.put)} | ${cpu(p.get)} | ${connects(p.put)} / ${connects(p.get)} | ${f2(p.put.machine.other_cores)} / ${f2(p.get?.machine.other_cores)} |`,
      );
  const ratio = (op: 'put' | 'get', k: string) => {
    const x = r.ratios[op][k];
    return x ? `${x.ops.toFixed(2)}× ops/s, ${x.p99.toFixed(2)}× p99` : '–';
  };
  lines.push(
    '',
    `kesd ÷ KES: PUT ${ratio('put', 'kesd_vs_kes')}; GET ${ratio('get', 'kesd_vs_kes')}.  `,
    `kesd ÷ no KMS: PUT ${ratio('put', 'kesd_vs_none')}; GET ${ratio('get', 'kesd_vs_none')}.  `,
    `KES ÷ no KMS: PUT ${ratio('put', 'kes_vs_none')}; GET ${ratio('get', 'kes_vs_none')}.`,
  );
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------- CLI

const USAGE = `usage: node --import tsx bench/e2e.mts [options]
  --seconds N         measured seconds per PUT run and per GET run (default 10; smoke 2)
  --rounds N          runs per target and operation, interleaved across targets; the median stands (default 3; smoke 1)
  --warmup N          warm-up seconds before each (default 2; smoke 0.5)
  --conns N           requests in flight (default 16)
  --size BYTES        object size (default 4096)
  --targets LIST      default none,kesd,kes
  --noise-retries N   rerun a run up to N times while other processes used > 0.3 cores (default 1; smoke 0)
  --wait-quiet S      before each run, wait up to S seconds for the machine to be quiet (default 0)
  --smoke             a few seconds per target; checks only that numbers come out and that encryption is real
  --out DIR           writes e2e.json and e2e.md there (smoke: e2e-smoke.*; default bench/results)
  --keep              keep the temp dir (MinIO drives and logs)
Needs: npm run build (kesd/dist) and npm run peers (minio, mc, kes-latest).`;

async function main(): Promise<number> {
  const { values: a } = parseArgs({
    options: {
      seconds: { type: 'string' },
      rounds: { type: 'string' },
      warmup: { type: 'string' },
      conns: { type: 'string' },
      size: { type: 'string' },
      targets: { type: 'string' },
      'noise-retries': { type: 'string' },
      'wait-quiet': { type: 'string' },
      smoke: { type: 'boolean', default: false },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (a.help) {
    console.log(USAGE);
    return 0;
  }
  const num = (v: string | undefined, flag: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${flag}: not a number ≥ 0: ${v}`);
    return n;
  };
  const result = await runE2E({
    smoke: a.smoke,
    seconds: num(a.seconds, 'seconds'),
    rounds: num(a.rounds, 'rounds'),
    warmupS: num(a.warmup, 'warmup'),
    conns: num(a.conns, 'conns'),
    sizeBytes: num(a.size, 'size'),
    noiseRetries: num(a['noise-retries'], 'noise-retries'),
    waitQuietS: num(a['wait-quiet'], 'wait-quiet'),
    targets: a.targets?.split(',') as E2ETarget[] | undefined,
    keep: a.keep,
  });
  const outDir = resolve(a.out ?? join(REPO, 'bench/results'));
  mkdirSync(outDir, { recursive: true });
  const base = join(outDir, a.smoke ? 'e2e-smoke' : 'e2e');
  const md = e2eMarkdown(result);
  writeFileSync(`${base}.json`, `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(`${base}.md`, md);
  process.stdout.write(md);
  console.error(`wrote ${base}.json and ${base}.md`);
  const failed = result.phases.filter((p) => p.error || !(p.put?.ops && p.get?.ops));
  for (const p of failed) console.error(`${a.smoke ? 'SMOKE ' : ''}FAIL: ${p.label}: ${p.error ?? 'no numbers'}`);
  return failed.length ? 1 : 0;
}

if (import.meta.main) {
  main().then(
    (code) => process.exit(code),
    (err: Error) => {
      console.error(`e2e: ${err.message}`);
      process.exit(1);
    },
  );
}
