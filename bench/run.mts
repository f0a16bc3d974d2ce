// npm run bench: kesd vs the real KES vs a bare-Node floor, side by side, in one run, with the same certificates,
// driven by the Go load generator in bench/loadgen. Writes <out>/latest.json, latest.md and throughput.svg, and
// regenerates docs/performance.md (+ docs/performance-throughput.svg) from bench/performance.template.md.
//
//   node --import tsx bench/run.mts [--smoke] [--duration S] [--warmup S] [--conns 16,64,256] [--ops …] [--out DIR]
//
// --smoke runs each target for about a second at one point and checks only that numbers come out.
// --merge FILE measures only --ops and replaces those points in an earlier results file (e.g. to redo a noisy point).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir, totalmem } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { ensureLoadgen, goVersion, runLoadgen } from './lib/loadgen.mts';
import { sleep, stop, waitQuiet } from './lib/proc.mts';
import { summariseProfiles } from './lib/profile.mts';
import {
  bulkTable,
  fill,
  find,
  halfTable,
  mainTable,
  profileSection,
  runsTable,
  summary,
  throughputSvg,
  type Meta,
  type Results,
  type RunRecord,
  type TargetName,
} from './lib/report.mts';
import { e2eMarkdown, runE2E } from './e2e.mts';
import { replicasMarkdown, runReplicas } from './replicas.mts';
import { runScale, scaleMarkdown } from './scale.mts';
import { runTransit, transitMarkdown } from './transit.mts';
import {
  BENCH_KEY,
  kesBinary,
  LIST_KEYS,
  LIST_PREFIX,
  makeIdentities,
  probeGenerate,
  REPO,
  startFloor,
  startKes,
  startKesd,
  stopTarget,
  type Target,
} from './lib/targets.mts';

const USAGE = `usage: node --import tsx bench/run.mts [options]
  --smoke               ~1 s per target at one point (generate, 16 conns); checks that numbers come out, never timings
  --duration S          measured seconds per run (default 10; smoke 1)
  --warmup S            warm-up seconds per run, same load, not recorded (default 2; smoke 0.3)
  --conns LIST          connection counts for generate/decrypt (default 16,64,256)
  --ops LIST            default generate,decrypt,mix,list,bulk,churn,half,create,profile,scale,e2e,replicas,transit
                        (half = latency at 50 % of the generate peak; profile = --cpu-prof of kesd under generate;
                        scale = 1,000,000 keys (bench/scale.mts); e2e = through the real MinIO (bench/e2e.mts);
                        replicas = 1-3 kesd replicas on etcd (bench/replicas.mts); transit = a real Vault's
                        Transit datakey/encrypt/decrypt beside kesd (bench/transit.mts); each also runs on its own)
  --targets LIST        default kesd,kes,floor
  --kesd-workers N      pass --workers N to kesd server (default: kesd's own default)
  --kes-gomaxprocs N    GOMAXPROCS for KES (default: kesd's worker count, at most nproc)
  --client-key TYPE     ed25519 (default, what 'kes identity new' makes) | p256
  --half-conns N        connections for the rate-limited half-peak run (default 64)
  --h2-inflight N       streams in flight per connection in the h2 column of generate/decrypt (kesd and KES, same
                        --conns; default 4, see docs/performance.md "Method"; 0 = no h2 column)
  --noise-retries N     rerun a point up to N times while other processes used more than --noise-threshold
                        cores during it, keeping the quietest attempt (default 1; smoke 0)
  --noise-threshold C   cores of "other load" that make a run noisy (default 0.3)
  --wait-quiet S        before each run, wait up to S seconds for the machine to be quiet (default 0)
  --no-profile          same as leaving 'profile' out of --ops
  --merge FILE          measure only --ops and merge them into FILE (an earlier latest.json): same points are
                        replaced, the rest kept; then write the reports from the merged results
  --render FILE         only write the reports (and docs) from a results file; measures nothing
  --no-docs             don't regenerate docs/performance.md
  --out DIR             results directory (default bench/results)
  --keep                keep the temp dir (data dirs, logs, profiles)`;

const { values: a } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    conns: { type: 'string', default: '16,64,256' },
    ops: {
      type: 'string',
      default: 'generate,decrypt,mix,list,bulk,churn,half,create,profile,scale,e2e,replicas,transit',
    },
    targets: { type: 'string', default: 'kesd,kes,floor' },
    'kesd-workers': { type: 'string' },
    'kes-gomaxprocs': { type: 'string' },
    'client-key': { type: 'string', default: 'ed25519' },
    'half-conns': { type: 'string', default: '64' },
    'h2-inflight': { type: 'string', default: '4' },
    'noise-retries': { type: 'string' },
    'noise-threshold': { type: 'string', default: '0.3' },
    'wait-quiet': { type: 'string', default: '0' },
    'no-profile': { type: 'boolean', default: false },
    'no-docs': { type: 'boolean', default: false },
    out: { type: 'string' },
    merge: { type: 'string' },
    render: { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (a.help) {
  console.log(USAGE);
  process.exit(0);
}

const smoke = a.smoke!;
const durationS = Number(a.duration ?? (smoke ? 1 : 10));
const warmupS = Number(a.warmup ?? (smoke ? 0.3 : 2));
const connsList = a.conns!.split(',').map(Number);
const opsWanted = new Set(smoke ? ['generate', 'scale', 'e2e', 'replicas', 'transit'] : a.ops!.split(','));
if (a['no-profile']) opsWanted.delete('profile');
const KNOWN_OPS = [
  'generate',
  'decrypt',
  'mix',
  'list',
  'bulk',
  'churn',
  'half',
  'create',
  'profile',
  'scale',
  'e2e',
  'replicas',
  'transit',
];
for (const op of opsWanted)
  if (!KNOWN_OPS.includes(op)) throw new Error(`--ops: unknown op '${op}' (known: ${KNOWN_OPS.join(', ')})`);
const prior: Results | undefined = a.merge
  ? (JSON.parse(readFileSync(resolve(a.merge), 'utf8')) as Results)
  : undefined;
if (prior && smoke) throw new Error('--merge and --smoke do not go together');
const targetsWanted = a.targets!.split(',') as TargetName[];
const clientKey = a['client-key'] as 'ed25519' | 'p256';
const halfConns = Number(a['half-conns']);
const h2Inflight = Number(a['h2-inflight']);
const noiseRetries = Number(a['noise-retries'] ?? (smoke ? 0 : 1));
const noiseThreshold = Number(a['noise-threshold']);
const waitQuietS = Number(a['wait-quiet']);
const BULK = 1000;
const BENCH_CMD =
  'npm run bench   # = npm run build && node scripts/peers.mjs --check && node --import tsx bench/run.mts';
const SMOKE_CMD = 'npm run bench -- --smoke';
const HALF_P99_MS = 2;
const outDir = resolve(a.out ?? join(REPO, 'bench/results'));
for (const [k, v] of Object.entries({
  duration: durationS,
  warmup: warmupS,
  'half-conns': halfConns,
  'h2-inflight': h2Inflight,
  'noise-retries': noiseRetries,
  'noise-threshold': noiseThreshold,
  'wait-quiet': waitQuietS,
}))
  if (!(v >= 0)) throw new Error(`--${k}: not a number`);
if (connsList.some((c) => !(c >= 1))) throw new Error('--conns: a comma-separated list of numbers');
if (!['ed25519', 'p256'].includes(clientKey)) throw new Error('--client-key: ed25519 or p256');

const t0 = Date.now();
const log = (s: string) => console.error(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${s}`);

// ---------------------------------------------------------------- the plan

interface Point {
  op: string;
  conns: number;
  targets: TargetName[];
  na?: Partial<Record<TargetName, string>>;
  extra?: string[];
  /** Per-target flags, after `extra`. */
  extraFor?: Partial<Record<TargetName, string[]>>;
  /** HTTP/2 with this many streams in flight per connection (default HTTP/1.1). */
  h2?: number;
}

function plan(): Point[] {
  const all: TargetName[] = ['kesd', 'kes', 'floor'];
  const servers: TargetName[] = ['kesd', 'kes'];
  const noFloor = { floor: 'the floor only answers a fixed body' };
  const h2 = (op: string, conns: number): Point => ({ op, conns, targets: all, h2: h2Inflight });
  const p: Point[] = [];
  // The smoke run takes the h2 path once (kesd's and KES's), so a broken h2 column fails CI: decrypt, whose ciphertext
  // pool is built over HTTP/1.1 first.
  if (smoke) return [{ op: 'generate', conns: 16, targets: all }, ...(h2Inflight > 0 ? [h2('decrypt', 16)] : [])];
  for (const op of ['generate', 'decrypt'])
    if (opsWanted.has(op)) for (const c of connsList) p.push({ op, conns: c, targets: all });
  // The h2 column: what MinIO speaks to its KMS; after the HTTP/1.1 points, in the same run.
  if (h2Inflight > 0)
    for (const op of ['generate', 'decrypt']) if (opsWanted.has(op)) for (const c of connsList) p.push(h2(op, c));
  if (opsWanted.has('mix')) p.push({ op: 'mix', conns: 64, targets: servers, na: noFloor });
  // The same 100 keys on both: KES v0.24 lists by a plain prefix (it answers `ls-*` with no names, and refuses `ls-`).
  if (opsWanted.has('list')) {
    const extraFor = {
      kesd: ['-list-pattern', `${LIST_PREFIX}*`],
      kes: ['-list-pattern', LIST_PREFIX.replace(/-$/, '')],
    };
    p.push({ op: 'list', conns: 16, targets: servers, na: noFloor, extraFor });
  }
  if (opsWanted.has('bulk')) {
    for (const c of [1, 4])
      p.push({
        op: 'bulk',
        conns: c,
        targets: ['kesd'],
        na: { kes: 'KES v0.24 has no bulk decrypt API', floor: 'no bulk API' },
        extra: ['-bulk', String(BULK)],
      });
  }
  if (opsWanted.has('churn')) p.push({ op: 'churn', conns: 16, targets: all });
  // 'half' needs the generate peaks, so it comes after them; create comes last: it adds keys, and KES's fs keystore
  // lists by reading the whole directory.
  if (opsWanted.has('half')) p.push({ op: 'half', conns: halfConns, targets: servers });
  if (opsWanted.has('create')) p.push({ op: 'create', conns: 16, targets: servers, na: noFloor });
  return p;
}

// ---------------------------------------------------------------- meta

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

function machine(): Meta['machine'] {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? '?';
  const flags = (/^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? '').split(' ');
  const interesting = ['aes', 'vaes', 'vpclmulqdq', 'pclmulqdq', 'sha_ni', 'avx2', 'avx512f', 'hypervisor'].filter(
    (f) => flags.includes(f),
  );
  const detected = sh('systemd-detect-virt', []);
  const virt =
    [detected && `systemd-detect-virt: ${detected}`, flags.includes('hypervisor') && 'hypervisor CPU flag (a VM)']
      .filter(Boolean)
      .join('; ') || 'none detected';
  return {
    nproc: availableParallelism(),
    cpu: model,
    flags: interesting.join(' '),
    kernel: sh('uname', ['-r']),
    memGiB: Math.round(totalmem() / 2 ** 30),
    virt,
  };
}

function kesdVersion(): string {
  const pkg = JSON.parse(readFileSync(join(REPO, 'kesd/package.json'), 'utf8')) as { version: string };
  const commit = sh('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']);
  const dirty = sh('git', ['-C', REPO, 'status', '--porcelain', '--', 'kesd']) ? '+dirty' : '';
  return `${pkg.version} (${commit || 'no git'}${dirty})`;
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  mkdirSync(outDir, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), 'kesd-bench-'));
  log(`temp dir ${tmp}`);
  const loadgen = ensureLoadgen(log);
  const ids = makeIdentities(tmp, clientKey);
  const targets = new Map<TargetName, Target>();
  const runs: RunRecord[] = [];
  let profile: Results['profile'];
  let failed = false;
  try {
    // Targets. kesd first: its worker count sets KES's GOMAXPROCS and its generate reply sets the floor's body size.
    const kesdWorkers = a['kesd-workers'] ? Number(a['kesd-workers']) : undefined;
    const kesd = await startKesd(tmp, ids, { workers: kesdWorkers });
    targets.set('kesd', kesd);
    log(
      `kesd up on ${kesd.url}: ${kesd.info.workersHow}${kesd.info.workersFlag ? ' (kesd server has --workers)' : ''}`,
    );
    const bodySize = await probeGenerate(kesd, ids);
    const gomaxprocs = a['kes-gomaxprocs']
      ? Number(a['kes-gomaxprocs'])
      : Math.min(Number(kesd.info.workers), availableParallelism());
    if (targetsWanted.includes('kes')) {
      const kes = await startKes(tmp, ids, gomaxprocs);
      targets.set('kes', kes);
      log(`KES up on ${kes.url} (GOMAXPROCS=${gomaxprocs})`);
      const kb = await probeGenerate(kes, ids);
      if (kb !== bodySize) log(`note: KES generate reply is ${kb} bytes, kesd's ${bodySize}`);
    }
    if (targetsWanted.includes('floor')) {
      const floor = await startFloor(tmp, ids, bodySize, Number(kesd.info.workers));
      targets.set('floor', floor);
      log(
        `floor up on ${floor.url} (${floor.info.workers} process(es) like kesd; fixed ${bodySize}-byte body = kesd's generate reply)`,
      );
    }
    if (!targetsWanted.includes('kesd')) {
      await stopTarget(kesd);
      targets.delete('kesd');
    }

    const points = plan();
    const runCount = points.reduce((n, p) => n + p.targets.filter((t) => targets.has(t)).length, 0);
    log(
      `${runCount} runs of ${warmupS}+${durationS} s: about ${Math.ceil((runCount * (durationS + warmupS + 1.5)) / 60)} min`,
    );

    let spawnedUs = 0; // CLOCK_MONOTONIC µs when the last load generator was started (to window the CPU profile)
    const attempt = async (
      t: Target,
      op: string,
      conns: number,
      extra: string[] = [],
      rate?: number,
      h2?: number,
    ): Promise<RunRecord> => {
      const rec: RunRecord = {
        target: t.name,
        op: rate ? 'half' : op,
        conns,
        ...(rate ? { rate } : {}),
        ...(h2 ? { proto: 'h2' as const, inflight: h2 } : {}),
      };
      if (t.child.exitCode !== null || t.child.signalCode !== null) {
        rec.error = `${t.name} is not running (exited ${t.child.exitCode ?? t.child.signalCode})`;
        return rec;
      }
      await waitQuiet(waitQuietS, noiseThreshold, log);
      rec.at = new Date().toISOString();
      spawnedUs = Number(process.hrtime.bigint() / 1000n);
      try {
        rec.result = await runLoadgen(loadgen, {
          url: t.url,
          cert: ids.client.certFile,
          key: ids.client.keyFile,
          ca: ids.server.certFile,
          op,
          conns,
          durationS,
          warmupS,
          pids: [t.pid],
          rate,
          keyName: BENCH_KEY,
          extra: h2 ? [...extra, '-proto', 'h2', '-inflight', String(h2)] : extra,
        });
        const r = rec.result;
        const errs = Object.values(r.errors).reduce((x, y) => x + y, 0);
        log(
          `${t.name.padEnd(5)} ${rec.op.padEnd(8)} ${String(conns).padStart(3)} conns${h2 ? ` h2×${h2}` : ''}${rate ? ` @${Math.round(rate)}/s` : ''}: ${Math.round(r.ops_per_s).toString().padStart(6)} ops/s  p50 ${r.latency_ms.p50?.toFixed(2)} p99 ${r.latency_ms.p99?.toFixed(2)} ms  cpu ${r.server_cpu?.us_per_req.toFixed(0)} µs/req${errs ? `  errors ${JSON.stringify(r.errors)}` : ''}  other load ${r.machine.other_cores.toFixed(2)}`,
        );
        if (r.ops === 0) rec.error = `no successful request: ${JSON.stringify(r.error_sample ?? r.errors)}`;
      } catch (err) {
        rec.error = (err as Error).message.split('\n').slice(0, 3).join(' ');
        log(`${t.name} ${op} ${conns}: FAILED ${rec.error}`);
      }
      return rec;
    };
    // On a shared machine: rerun a point measured while other processes were busy, and keep the quietest attempt.
    const noise = (r: RunRecord) => r.result?.machine.other_cores ?? 0;
    const one = async (
      t: Target,
      op: string,
      conns: number,
      extra: string[] = [],
      rate?: number,
      h2?: number,
    ): Promise<RunRecord> => {
      let best = await attempt(t, op, conns, extra, rate, h2);
      let attempts = 1;
      while (attempts <= noiseRetries && best.result && noise(best) > noiseThreshold) {
        log(`  other load ${noise(best).toFixed(2)} cores > ${noiseThreshold}: measuring again`);
        await sleep(1000);
        const again = await attempt(t, op, conns, extra, rate, h2);
        attempts++;
        if (again.result && noise(again) < noise(best)) best = again;
      }
      return attempts > 1 ? { ...best, attempts } : best;
    };

    for (const [i, p] of points.entries()) {
      if (p.op === 'half') {
        // Latency at half of peak: an open-loop (rate-limited) generate load at 50 % of each server's best generate
        // throughput in this run; latency counts from the scheduled send time, so stalls are not hidden
        // (no coordinated omission).
        for (const name of p.targets) {
          const t = targets.get(name);
          const peak = [...runs, ...(prior?.runs ?? [])]
            .filter((r) => r.target === name && r.op === 'generate' && !r.proto && r.result && !r.error)
            .map((r) => r.result!.ops_per_s);
          if (!t || peak.length === 0) continue;
          runs.push(await one(t, 'generate', p.conns, [], Math.max(1, Math.round(Math.max(...peak) / 2))));
          await sleep(300);
        }
        continue;
      }
      for (const [t, why] of Object.entries(p.na ?? {}))
        if (targetsWanted.includes(t as TargetName))
          runs.push({
            target: t as TargetName,
            op: p.op,
            conns: p.conns,
            skipped: why,
            ...(p.h2 ? { proto: 'h2' as const, inflight: p.h2 } : {}),
          });
      // Rotate the order per point, so no target always runs right after another.
      const order = p.targets.filter((t) => targets.has(t));
      const rotated = order.map((_, k) => order[(k + i) % order.length]!);
      for (const name of rotated) {
        runs.push(
          await one(
            targets.get(name)!,
            p.op,
            p.conns,
            [...(p.extra ?? []), ...(p.extraFor?.[name] ?? [])],
            undefined,
            p.h2,
          ),
        );
        await sleep(300);
      }
    }

    if (smoke) {
      for (const r of runs) {
        if (r.skipped) continue;
        if (!r.result || r.error || !(r.result.ops > 0)) {
          failed = true;
          log(`SMOKE FAIL: ${r.target} ${r.op}${r.proto ? ` ${r.proto}` : ''}: ${r.error ?? 'no ops'}`);
        }
      }
      for (const [name, t] of targets) {
        if (t.child.exitCode !== null || t.child.signalCode !== null) {
          failed = true;
          log(
            `SMOKE FAIL: ${name} exited (${t.child.exitCode ?? t.child.signalCode}):\n${t.output().split('\n').slice(-20).join('\n')}`,
          );
        }
      }
    }

    for (const [name, t] of targets) {
      await stopTarget(t);
      targets.delete(name);
    }

    // A CPU profile of kesd under generate load, on a fresh kesd (the profiler slows it down: not part of the matrix).
    if (!smoke && opsWanted.has('profile') && targetsWanted.includes('kesd')) {
      const profDir = join(tmp, 'cpu-prof');
      mkdirSync(profDir, { recursive: true });
      const pk = await startKesd(tmp, ids, {
        workers: kesdWorkers,
        nodeOptions: `--cpu-prof --cpu-prof-dir=${profDir}`,
        name: 'kesd-profiled',
      });
      // Over h2 when the h2 column is on: the path MinIO uses.
      const conns = 64;
      const rec = await attempt(pk, 'generate', conns, [], undefined, h2Inflight || undefined);
      await stop(pk.child, 30_000);
      try {
        const window = { fromUs: spawnedUs + warmupS * 1e6, toUs: spawnedUs + (warmupS + durationS) * 1e6 };
        profile = summariseProfiles(
          profDir,
          {
            op: h2Inflight ? `generate over h2 (${h2Inflight} streams per connection)` : 'generate',
            conns,
            durationS,
            opsPerS: rec.result?.ops_per_s ?? 0,
          },
          window,
        );
        log(
          `profile: ${profile.top
            .slice(0, 5)
            .map((t) => `${t.name} ${t.pct.toFixed(1)}%`)
            .join(', ')}`,
        );
      } catch (err) {
        log(`profile failed: ${(err as Error).message}`);
      }
    }

    // ------------------------------------------------------------ parts with their own modules (nothing else running)
    const parts: Pick<Results, 'scale' | 'e2e' | 'replicas' | 'transit'> = {};
    const part = async <T,>(name: string, run: () => Promise<T>, ok: (r: T) => boolean): Promise<T | undefined> => {
      if (!opsWanted.has(name)) return undefined;
      log(`${name}: starting`);
      try {
        const r = await run();
        if (smoke && !ok(r)) {
          failed = true;
          log(`SMOKE FAIL: ${name}: no numbers`);
        }
        return r;
      } catch (err) {
        failed = true;
        log(`${smoke ? 'SMOKE FAIL' : 'FAILED'}: ${name}: ${(err as Error).stack ?? err}`);
        return undefined;
      }
    };
    const sub = (name: string) => (s: string) => log(`${name}: ${s}`);
    parts.scale = await part(
      'scale',
      () =>
        runScale({
          keys: smoke ? 10_000 : 1_000_000,
          small: 1000,
          samples: smoke ? 200 : 1000,
          restarts: smoke ? 2 : 3,
          createSeconds: smoke ? 1 : 10,
          createConns: 16,
          workers: kesdWorkers,
          smoke,
          waitQuietS,
          keep: false,
          log: sub('scale'),
        }),
      (r) => r.sizes.every((s) => s.cold.samples > 0 && s.list.lines > 0 && s.readyMs.length > 0),
    );
    parts.e2e = await part(
      'e2e',
      () => runE2E({ smoke, waitQuietS, log: sub('e2e') }),
      (r) => JSON.stringify(r).includes('ops_per_s'),
    );
    parts.replicas = await part(
      'replicas',
      () =>
        runReplicas({
          durationS: smoke ? 1 : durationS,
          warmupS: smoke ? 0.3 : warmupS,
          conns: 48,
          counts: smoke ? [1, 2] : [1, 2, 3],
          log: sub('replicas'),
        }),
      (r) => r.points.length > 0 && r.points.every((p) => p.ops_per_s > 0 && p.errors === 0),
    );
    parts.transit = await part(
      'transit',
      () =>
        runTransit({
          ids,
          conns: smoke ? [16] : connsList.filter((c) => c <= 64),
          durationS,
          warmupS,
          ops: smoke ? ['transit-datakey', 'transit-decrypt'] : undefined,
          log: sub('transit'),
        }),
      (r) => r.points.length > 0 && r.points.every((p) => !p.error && (p.result?.ops ?? 0) > 0),
    );
    for (const k of ['scale', 'e2e', 'replicas', 'transit'] as const) if (parts[k] === undefined) delete parts[k];

    // ------------------------------------------------------------ reports
    const m = machine();
    const meta: Meta = {
      date: new Date().toISOString(),
      machine: m,
      versions: {
        kesd: kesdVersion(),
        node: process.version,
        openssl: process.versions.openssl ?? '?',
        go: goVersion(),
        kes: (() => {
          try {
            return kesBinary().version;
          } catch {
            return 'not built';
          }
        })(),
        loadgen: relative(REPO, loadgen).startsWith('..') ? loadgen.split('/').pop()! : loadgen,
      },
      settings: {
        durationS,
        warmupS,
        conns: connsList,
        ops: [...opsWanted],
        clientKey,
        halfConns,
        h2Inflight,
        bulk: BULK,
        listKeys: LIST_KEYS,
        smoke,
        noiseRetries,
        noiseThreshold,
        waitQuietS,
      },
      commands: {
        bench: BENCH_CMD,
        smoke: SMOKE_CMD,
        ran: `node --import tsx bench/run.mts ${process.argv.slice(2).join(' ')}`.trim(),
      },
      targets: {},
      wallSeconds: Math.round((Date.now() - t0) / 1000),
    };
    meta.targets = {
      kesd: { ...kesd.info, bodySize },
      kes: { gomaxprocs },
      floor: { bodySize, workers: Number(kesd.info.workers) },
    };
    let results: Results = { meta, runs, ...(profile ? { profile } : {}), ...parts };
    if (prior) {
      // Same (target, op, conns) replaces the earlier point in place; anything new is appended.
      const merged = [...prior.runs];
      for (const r of runs) {
        const i = merged.findIndex(
          (x) => x.target === r.target && x.op === r.op && x.conns === r.conns && x.proto === r.proto,
        );
        if (i >= 0) merged[i] = r;
        else merged.push(r);
      }
      const updates = [
        ...(prior.meta.updates ?? []),
        { date: meta.date, ops: [...opsWanted], command: meta.commands.ran, kesd: meta.versions.kesd ?? '?' },
      ];
      results = {
        meta: { ...prior.meta, updates },
        runs: merged,
        ...((profile ?? prior.profile) ? { profile: profile ?? prior.profile } : {}),
        ...(prior.scale ? { scale: prior.scale } : {}),
        ...(prior.e2e ? { e2e: prior.e2e } : {}),
        ...(prior.replicas ? { replicas: prior.replicas } : {}),
        ...(prior.transit ? { transit: prior.transit } : {}),
        ...parts,
      };
      log(`merged ${runs.length} runs${profile ? ' and a profile' : ''} into ${a.merge}`);
    }
    const base = smoke ? 'smoke' : 'latest';
    writeFileSync(join(outDir, `${base}.json`), JSON.stringify(results, null, 2) + '\n');
    const sections = render(results);
    writeFileSync(
      join(outDir, `${base}.md`),
      `# kesd benchmark results (${results.meta.date})\n\n${sections.RESULTS}\n`,
    );
    writeFileSync(join(outDir, `${base}-throughput.svg`), chart(results));
    log(`wrote ${join(outDir, `${base}.json`)}, ${base}.md, ${base}-throughput.svg`);
    if (!smoke && !a['no-docs']) writeDocs(results, sections, join(outDir, `${base}-throughput.svg`));
    console.log(sections.RESULTS);
  } finally {
    for (const t of targets.values()) await stopTarget(t);
    if (!a.keep) rmSync(tmp, { recursive: true, force: true });
    else log(`kept ${tmp}`);
  }
  log(`done in ${Math.round((Date.now() - t0) / 1000)} s${smoke ? (failed ? ': SMOKE FAILED' : ': smoke ok') : ''}`);
  return failed ? 1 : 0;
}

function chart(results: Results): string {
  const rm = results.meta;
  const shownOps = ['generate', 'decrypt'].filter((o) => results.runs.some((r) => r.op === o));
  const noisy = Number(rm.settings.noiseThreshold ?? Infinity);
  return throughputSvg(
    results.runs,
    (rm.settings.conns as number[]) ?? connsList,
    shownOps,
    `${rm.machine.nproc} vCPU ${rm.machine.cpu}, kesd ${rm.targets.kesd?.workers ?? '?'} worker(s), KES GOMAXPROCS=${rm.targets.kes?.gomaxprocs ?? '?'} · ${rm.date.slice(0, 10)} · ${rm.settings.durationS} s per point`,
    noisy,
  );
}

function writeDocs(_results: Results, sections: Record<string, string>, svgFile: string): void {
  const template = readFileSync(join(REPO, 'bench/performance.template.md'), 'utf8');
  writeFileSync(join(REPO, 'docs/performance.md'), fill(template, sections));
  copyFileSync(svgFile, join(REPO, 'docs/performance-throughput.svg'));
  log('regenerated docs/performance.md and docs/performance-throughput.svg');
}

/** --render FILE: the reports (and docs) from an earlier results file, without measuring anything. */
function renderOnly(file: string): number {
  const results = JSON.parse(readFileSync(resolve(file), 'utf8')) as Results;
  const smokeFile = results.meta.settings.smoke === true;
  const base = smokeFile ? 'smoke' : 'latest';
  mkdirSync(outDir, { recursive: true });
  const sections = render(results);
  writeFileSync(join(outDir, `${base}.md`), `# kesd benchmark results (${results.meta.date})\n\n${sections.RESULTS}\n`);
  writeFileSync(join(outDir, `${base}-throughput.svg`), chart(results));
  log(`rendered ${file} into ${outDir}/${base}.md and ${base}-throughput.svg`);
  if (!smokeFile && !a['no-docs']) writeDocs(results, sections, join(outDir, `${base}-throughput.svg`));
  return 0;
}

function render(res: Results): Record<string, string> {
  const { meta, runs } = res;
  const m = meta.machine;
  const v = meta.versions;
  const conns = (meta.settings.conns as number[]) ?? [];
  const rows = [
    ...['generate', 'decrypt'].flatMap((op) => conns.map((c) => ({ op, conns: c }))),
    ...['mix', 'list', 'create', 'churn'].flatMap((op) => {
      const r = runs.find((x) => x.op === op && x.target === 'kesd');
      return r
        ? [
            {
              op,
              conns: r.conns,
              title:
                op === 'churn'
                  ? 'churn (new TLS conn per generate)'
                  : op === 'mix'
                    ? 'mix (50 % generate / 50 % decrypt)'
                    : op === 'list'
                      ? `list (${LIST_KEYS} keys)`
                      : op,
            },
          ]
        : [];
    }),
  ].filter(
    (r) =>
      find(runs, 'kesd', r.op, r.conns) ||
      find(runs, 'kes', r.op, r.conns) ||
      find(runs, 'floor', r.op, r.conns) ||
      find(runs, 'kesd', r.op, r.conns, 'h2'),
  );
  const kesdInfo = meta.targets.kesd ?? {};
  const results = [
    `Run ${meta.date} on ${m.nproc} vCPU ${m.cpu} (${m.virt}); ${meta.settings.durationS} s measured after ${meta.settings.warmupS} s warm-up per point; took ${meta.wallSeconds} s.`,
    `kesd: ${kesdInfo.workersHow ?? '?'}; KES: GOMAXPROCS=${meta.targets.kes?.gomaxprocs ?? '?'}; floor: ${meta.targets.floor?.workers ?? '?'} worker process(es), body ${meta.targets.floor?.bodySize ?? '?'} bytes.`,
    ...(meta.updates ?? []).map(
      (u) =>
        `Re-measured on ${u.date} with \`--merge\` (kesd ${u.kesd}): ${u.ops.join(', ')}; those rows replace the first run's.`,
    ),
    '',
    '### Summary',
    '',
    summary(runs, conns, HALF_P99_MS, Number(meta.settings.noiseThreshold ?? Infinity)),
    '',
    '### Throughput, latency and server CPU',
    '',
    'Ratios are ops/s of kesd divided by ops/s of the other server (> 1× means kesd is faster). "kesd/KES per CPU µs" divides',
    "KES's server CPU per request by kesd's, so it is the efficiency ratio, and the least sensitive to noise from other processes.",
    '',
    mainTable(runs, rows, Number(meta.settings.noiseThreshold)),
    '',
    '![throughput vs connections](performance-throughput.svg)',
    '',
    `### Bulk decrypt: ${BULK.toLocaleString('en-US')} ciphertexts in one request`,
    '',
    bulkTable(runs, BULK),
    '',
    '### Latency at half of peak (rate-limited generate)',
    '',
    halfTable(runs, HALF_P99_MS),
    '',
    '### Where the CPU goes in kesd (`--cpu-prof`)',
    '',
    profileSection(res.profile),
    '',
    '### Scale of the store',
    '',
    res.scale ? scaleMarkdown(res.scale) : '_not run_',
    '',
    '### End to end: small objects through the real MinIO',
    '',
    res.e2e ? e2eMarkdown(res.e2e) : '_not run_',
    '',
    '### Replicas on etcd (the HA layout)',
    '',
    res.replicas ? replicasMarkdown(res.replicas) : '_not run_',
    '',
    '### Vault Transit, what many users would pick instead of a KES',
    '',
    res.transit ? transitMarkdown(res.transit, (op, c) => find(runs, 'kesd', op, c)?.result) : '_not run_',
    '',
    '### Every run',
    '',
    '"conns dialed" counts the TLS connections the load generator opened for the run, and in brackets those opened inside',
    'the measured window. Keep-alive runs open all of theirs before the warm-up, so it must read conns (0); churn opens one per',
    'request. "other load" is machine-wide busy CPU minus the server and the load generator: other processes on this shared',
    'machine, and kernel work (loopback networking) billed to neither. † marks a run above the noise threshold; "attempts"',
    'above 1 means the point was measured again and the quietest attempt kept.',
    '',
    runsTable(runs, Number(meta.settings.noiseThreshold)),
  ].join('\n');
  return {
    DATE: meta.date,
    MACHINE: [
      `| | |`,
      `|---|---|`,
      `| CPUs (\`nproc\`) | ${m.nproc} |`,
      `| CPU model | ${m.cpu} (flags: ${m.flags}) |`,
      `| virtualisation | ${m.virt} |`,
      `| memory | ${m.memGiB} GiB |`,
      `| kernel | ${m.kernel} |`,
      `| Node | ${v.node} (OpenSSL ${v.openssl}) |`,
      `| Go | ${v.go} (load generator and KES build; Go's own crypto/tls) |`,
      `| kesd | ${v.kesd} |`,
      `| KES | ${v.kes} (\`kes-latest\` from peers.json) |`,
      `| load generator | bench/loadgen, binary ${v.loadgen} |`,
    ].join('\n'),
    COMMANDS: [
      '```sh',
      BENCH_CMD,
      SMOKE_CMD,
      `# the run below:`,
      meta.commands.ran,
      ...(meta.updates ?? []).map((u) => u.command),
      '```',
    ].join('\n'),
    RESULTS: results,
  };
}

process.exitCode = a.render ? renderOnly(a.render) : await main();
