// Scale of the store: kesd with many keys (default 1,000,000) against the same kesd with few (default 1,000).
//
//   node --import tsx bench/scale.mts [--keys N] [--small N] [--out DIR] [--smoke] [--help]
//
// Two data dirs, filled in-process through kesd's own Enclave.createKey (see FillResult.path). The comparisons that
// have targets run in paired rounds, alternating the two stores, so load from other processes on this shared machine
// falls on both alike: restart-to-ready (spawn → /v1/ready 200), RSS at rest, cold and warm generate latency. Then,
// per store: a full streaming list (lines/s, peak RSS), the bulk keys as prefix lists, a prefix list of 1,000 keys,
// cold generate with the store file evicted from the page cache, and the create rate over HTTP.
// Writes <out>/scale.json and scale.md (scale-smoke.* with --smoke); runScale and scaleMarkdown are for bench/run.mts.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { ensureLoadgen, runLoadgen } from './lib/loadgen.mts';
import { freePort, sleep, waitQuiet } from './lib/proc.mts';
import { generateColdWarm, latencyStats, listKeys, type Tls } from './lib/scale-client.mts';
import {
  countKeys,
  evictFromPageCache,
  fillKeys,
  initStore,
  keyName,
  memoryOf,
  phaseCpu,
  sampleMemory,
  startServer,
  stopServer,
  storeBytes,
  type ProcessMemory,
  type Running,
  type ScaleStore,
} from './lib/scale-kesd.mts';
import { scaleMarkdown } from './lib/scale-report.mts';
import { makeIdentities, REPO } from './lib/targets.mts';
import type { ScaleOptions, ScaleResult, SizeResult } from './lib/scale-types.mts';

export { scaleMarkdown };

export type { ScaleOptions, ScaleResult, SizeResult };

const MiB = 1024 * 1024;
/** Keys per prefix slice: k-000*, k-001*, … each match 10,000 bulk names. */
const SLICE = 10_000;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

function kesdVersion(): string {
  const pkg = JSON.parse(readFileSync(join(REPO, 'kesd/package.json'), 'utf8')) as { version: string };
  const commit = sh('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']);
  const dirty = sh('git', ['-C', REPO, 'status', '--porcelain', '--', 'kesd']) ? '+dirty' : '';
  return `${pkg.version} (${commit || 'no git'}${dirty})`;
}

/** `count` distinct key indexes from [1, n), in a fixed pseudo-random order (index 0 warms the connection). */
function sampleIndexes(n: number, count: number): number[] {
  const picked = new Set<number>();
  let x = 0x9e3779b9;
  while (picked.size < Math.min(count, n - 1)) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    picked.add(1 + ((x >>> 0) % (n - 1)));
  }
  return [...picked];
}

interface Bench {
  readonly opts: ScaleOptions;
  readonly port: number;
  readonly tls: Tls;
  readonly log: (m: string) => void;
  quiet(): Promise<void>;
}

/** One store under test, and what was measured on it so far. */
interface Subject {
  readonly label: SizeResult['label'];
  readonly store: ScaleStore;
  /** Bulk keys k-0000000 … k-(bulk-1). */
  readonly bulk: number;
  readonly names: string[];
  readonly readyMs: number[];
  readonly startCpuMs: number[];
  readonly startOtherCores: number[];
  readonly coldMs: number[];
  readonly warmMs: number[];
  readonly coldRoundP50: number[];
  readonly generateOtherCores: number[];
  restAt: ProcessMemory[];
  generateErrors: number;
  generateError?: string;
  starts: number;
}

export async function runScale(opts: ScaleOptions): Promise<ScaleResult> {
  const log = opts.log ?? ((m: string) => console.error(m));
  if (!(opts.small >= 2 && opts.keys > opts.small))
    throw new Error(`need 2 <= small (${opts.small}) < keys (${opts.keys})`);
  const t0 = Date.now();
  const loadavgBefore = loadavg()[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'kesd-scale-'));
  log(`scale: working in ${dir}`);
  try {
    const ids = makeIdentities(dir, 'ed25519');
    const bench: Bench = {
      opts,
      log,
      port: await freePort(),
      tls: { cert: ids.clientTls.cert, key: ids.clientTls.key, ca: readFileSync(ids.server.certFile, 'utf8') },
      quiet: () => waitQuiet(opts.waitQuietS, 0.3, log),
    };
    let loadgen: string | undefined;
    let loadgenProblem: string | undefined;
    if (opts.createSeconds > 0) {
      try {
        loadgen = ensureLoadgen(log);
      } catch (err) {
        loadgenProblem = `the Go load generator is not available: ${(err as Error).message.split('\n')[0]}`;
      }
    }

    const fills: ScaleResult['fills'] = [];
    const subjects: Subject[] = [];
    for (const [label, bulk] of [
      ['small', opts.small],
      ['large', opts.keys],
    ] as const) {
      const home = join(dir, label);
      mkdirSync(home);
      const store = initStore(home, ids);
      log(`scale: filling the ${label} store with ${fmt(bulk)} keys in-process`);
      const fill = await fillKeys(store, 0, bulk, ids.client.identity, log);
      fills.push({ ...fill, store: label });
      log(`  ${fmt(fill.created)} keys in ${fill.seconds.toFixed(1)} s: ${fmt(fill.perSecond)}/s`);
      subjects.push({
        label,
        store,
        bulk,
        names: sampleIndexes(bulk, Math.ceil(opts.samples / opts.restarts)).map(keyName),
        readyMs: [],
        startCpuMs: [],
        startOtherCores: [],
        coldMs: [],
        warmMs: [],
        coldRoundP50: [],
        generateOtherCores: [],
        restAt: [],
        generateErrors: 0,
        starts: 0,
      });
    }

    for (let round = 1; round <= opts.restarts; round++) {
      await bench.quiet();
      // Alternate which store goes first, so neither always follows the other.
      for (const subject of round % 2 ? subjects : [...subjects].reverse()) await pairedRound(bench, subject, round);
    }

    const sizes: SizeResult[] = [];
    for (const subject of subjects) sizes.push(await perStore(bench, subject, loadgen, loadgenProblem));
    return {
      meta: {
        date: new Date(t0).toISOString(),
        command: `node --import tsx bench/scale.mts ${process.argv.slice(2).join(' ')}`.trim(),
        smoke: opts.smoke,
        options: { ...opts, log: undefined } as Omit<ScaleOptions, 'log'>,
        machine: {
          nproc: availableParallelism(),
          cpu: /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? '?',
          memGiB: Math.round(totalmem() / 2 ** 30),
          kernel: sh('uname', ['-r']),
        },
        versions: { node: process.version, kesd: kesdVersion() },
        loadavgBefore,
        loadavgAfter: loadavg()[0]!,
        wallSeconds: Math.round((Date.now() - t0) / 1000),
        kesdProcesses: Math.max(...sizes.map((s) => s.restAt.length)),
      },
      fills,
      sizes,
    };
  } finally {
    if (opts.keep) log(`scale: kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

function start(b: Bench, s: Subject, what: string): Promise<Running> {
  return startServer(s.store, b.port, {
    workers: b.opts.workers,
    log: join(s.store.home, `kesd-${s.starts++}-${what}.log`),
  });
}

/** A start timed to ready, memory at rest, then cold and warm generate on the sampled keys. */
async function pairedRound(b: Bench, s: Subject, round: number): Promise<void> {
  const server = await start(b, s, `round${round}`);
  try {
    s.readyMs.push(server.readyMs);
    s.startCpuMs.push(server.startCpuMs);
    s.startOtherCores.push(server.startOtherCores);
    await sleep(b.opts.smoke ? 300 : 2000);
    s.restAt = memoryOf(server.pid);
    const cpu = phaseCpu(server.pid);
    const gen = await generateColdWarm(b.port, b.tls, s.names, keyName(0));
    s.generateOtherCores.push(cpu.stop().otherCores);
    s.coldMs.push(...gen.coldMs);
    s.warmMs.push(...gen.warmMs);
    s.coldRoundP50.push(latencyStats(gen.coldMs, 0).p50);
    s.generateErrors += gen.errors;
    s.generateError ??= gen.firstError;
    b.log(
      `scale: round ${round}, ${s.label} (${fmt(s.bulk)} keys): ready in ${fmt(server.readyMs)} ms (kesd CPU ${fmt(server.startCpuMs)} ms, other load ${server.startOtherCores.toFixed(2)} cores); ` +
        `RSS ${s.restAt.map((p) => p.rssMiB.toFixed(0)).join('+')} MiB; cold p50 ${latencyStats(gen.coldMs, 0).p50.toFixed(2)} / p99 ${latencyStats(gen.coldMs, 0).p99.toFixed(2)} ms, warm p50 ${latencyStats(gen.warmMs, 0).p50.toFixed(2)} ms`,
    );
  } finally {
    await stopServer(server);
  }
}

/** The measurements without a target ratio: lists, the evicted page cache, HTTP creates. */
async function perStore(
  b: Bench,
  s: Subject,
  loadgen: string | undefined,
  loadgenProblem: string | undefined,
): Promise<SizeResult> {
  const { port, tls, log } = b;
  const keys = await countKeys(s.store);
  const storeMiB = storeBytes(s.store) / MiB;
  log(`scale: ${s.label}: ${fmt(keys)} keys, store file ${storeMiB.toFixed(0)} MiB`);
  let server = await start(b, s, 'lists');

  await b.quiet();
  const memory = sampleMemory(server.pid);
  let cpu = phaseCpu(server.pid);
  const full = await listKeys(port, tls, '*');
  const list = { ...full, expectedLines: keys, cpu: cpu.stop(), peak: memory.stop() };
  log(
    `  list *: ${fmt(list.lines)} of ${fmt(keys)} lines in ${list.seconds.toFixed(1)} s (${fmt(list.linesPerS)}/s), ${list.complete ? 'complete' : `INCOMPLETE: ${list.problem}`}; peak RSS of one process ${list.peak.maxProcessRssMiB.toFixed(0)} MiB (anon ${list.peak.maxProcessAnonMiB.toFixed(0)})`,
  );
  await b.quiet();
  const slices = await listSlices(port, tls, s.bulk, server.pid);
  log(
    `  list in ${slices.runs.length} prefix slices: ${fmt(slices.lines)} of ${fmt(slices.expectedLines)} lines in ${slices.seconds.toFixed(1)} s (${fmt(slices.linesPerS)}/s), ${slices.complete ? 'complete' : 'INCOMPLETE'}; peak RSS of one process ${slices.peak.maxProcessRssMiB.toFixed(0)} MiB (anon ${slices.peak.maxProcessAnonMiB.toFixed(0)})`,
  );
  const prefix = await listKeys(port, tls, 'k-0000*');
  const prefixList = { ...prefix, expectedLines: Math.min(1000, s.bulk) };
  log(`  list k-0000*: ${prefixList.lines} lines in ${(prefixList.seconds * 1000).toFixed(0)} ms`);
  await stopServer(server);

  let evicted: SizeResult['evicted'];
  await b.quiet();
  const eviction = evictFromPageCache(s.store.storeFile);
  server = await start(b, s, 'evicted');
  if (eviction !== undefined) {
    cpu = phaseCpu(server.pid);
    const again = await generateColdWarm(port, tls, s.names, keyName(0));
    evicted = {
      eviction,
      readyMs: server.readyMs,
      cold: latencyStats(again.coldMs, again.errors),
      otherCores: cpu.stop().otherCores,
    };
    log(
      `  page cache evicted (${((eviction.residentBefore ?? NaN) / MiB).toFixed(0)} → ${((eviction.residentAfter ?? NaN) / MiB).toFixed(0)} MiB resident): ready ${fmt(server.readyMs)} ms, cold p50 ${evicted.cold.p50.toFixed(2)} / p99 ${evicted.cold.p99.toFixed(2)} ms`,
    );
  }

  let create: SizeResult['create'];
  let createSkipped = b.opts.createSeconds > 0 ? loadgenProblem : 'not requested (--create-seconds 0)';
  if (loadgen !== undefined) {
    await b.quiet();
    try {
      const r = await runLoadgen(loadgen, {
        url: `https://127.0.0.1:${port}`,
        cert: s.store.ids.client.certFile,
        key: s.store.ids.client.keyFile,
        ca: s.store.ids.server.certFile,
        op: 'create',
        conns: b.opts.createConns,
        durationS: b.opts.createSeconds,
        warmupS: b.opts.smoke ? 0.3 : 1,
        pids: [server.pid],
        extra: ['-create-prefix', 'http-'],
      });
      create = {
        conns: r.conns,
        seconds: r.duration_s,
        opsPerS: r.ops_per_s,
        errors: r.errors,
        p50Ms: r.latency_ms.p50 ?? NaN,
        p99Ms: r.latency_ms.p99 ?? NaN,
        serverUsPerReq: r.server_cpu?.us_per_req,
        otherCores: r.machine.other_cores,
      };
      log(`  create over HTTP (${r.conns} conns): ${fmt(r.ops_per_s)}/s`);
    } catch (err) {
      createSkipped = `the load generator failed: ${(err as Error).message.split('\n')[0]}`;
    }
  }
  await stopServer(server);
  return {
    label: s.label,
    keys,
    storeMiB,
    readyMs: s.readyMs,
    startCpuMs: s.startCpuMs,
    startOtherCores: s.startOtherCores,
    restAt: s.restAt,
    cold: latencyStats(s.coldMs, s.generateErrors),
    warm: latencyStats(s.warmMs, 0),
    coldRoundP50: s.coldRoundP50,
    generateOtherCores: s.generateOtherCores,
    generateError: s.generateError,
    list,
    slices,
    prefixList,
    evicted,
    create,
    createSkipped,
  };
}

/** Lists the bulk keys k-000*, k-001*, … one slice after another, sampling memory throughout. */
async function listSlices(port: number, tls: Tls, bulkKeys: number, pid: number): Promise<SizeResult['slices']> {
  const memory = sampleMemory(pid);
  const cpu = phaseCpu(pid);
  const runs: SizeResult['slices']['runs'] = [];
  for (let d = 0; d * SLICE < bulkKeys; d++) {
    const run = await listKeys(port, tls, `k-${String(d).padStart(3, '0')}*`);
    runs.push({ ...run, expectedLines: Math.min(SLICE, bulkKeys - d * SLICE) });
  }
  const lines = runs.reduce((a, r) => a + r.lines, 0);
  const seconds = runs.reduce((a, r) => a + r.seconds, 0);
  const complete = runs.every((r) => r.complete && r.errorLines === 0 && r.lines === r.expectedLines);
  return {
    runs,
    lines,
    expectedLines: bulkKeys,
    seconds,
    linesPerS: lines / seconds,
    complete,
    cpu: cpu.stop(),
    peak: memory.stop(),
  };
}

// ---- command line ---------------------------------------------------------------------------------------------

const USAGE = `usage: node --import tsx bench/scale.mts [options]
  --keys N            keys in the large store (default 1000000; smoke 10000)
  --small N           keys in the small store (default 1000)
  --restarts N        paired rounds: each restarts both stores once and samples generate on each (default 3; smoke 2)
  --samples N         cold-generate samples per store, spread over the rounds (default 1000; smoke 200)
  --create-seconds S  seconds of HTTP creates per store with the Go load generator, 0 = skip (default 10; smoke 1)
  --create-conns N    connections for those creates (default 16)
  --workers N         kesd server --workers N (default: kesd's default)
  --wait-quiet S      before each measured phase, wait up to S s for other load to drop below 0.3 cores (default 0)
  --smoke             a small run (~10k keys) that only checks that numbers come out
  --out DIR           results directory (default bench/results): scale.json, scale.md (scale-smoke.* with --smoke)
  --keep              keep the temp dir (data dirs, server logs)
  --render FILE       only print the Markdown for an earlier scale.json; measures nothing`;

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      keys: { type: 'string' },
      small: { type: 'string' },
      samples: { type: 'string' },
      restarts: { type: 'string' },
      'create-seconds': { type: 'string' },
      'create-conns': { type: 'string' },
      workers: { type: 'string' },
      'wait-quiet': { type: 'string' },
      smoke: { type: 'boolean', default: false },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
      render: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (a.help) return void console.log(USAGE);
  if (a.render !== undefined)
    return void console.log(
      `# Scale of the store\n\n${scaleMarkdown(JSON.parse(readFileSync(resolve(a.render), 'utf8')) as ScaleResult)}`,
    );
  const smoke = a.smoke!;
  const num = (name: string, v: string | undefined, dflt: number, min: number): number => {
    const n = v === undefined ? dflt : Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: an integer >= ${min}, got '${v}'`);
    return n;
  };
  const opts: ScaleOptions = {
    keys: num('keys', a.keys, smoke ? 10_000 : 1_000_000, 3),
    small: num('small', a.small, 1000, 2),
    samples: num('samples', a.samples, smoke ? 200 : 1000, 1),
    restarts: num('restarts', a.restarts, smoke ? 2 : 3, 1),
    createSeconds: num('create-seconds', a['create-seconds'], smoke ? 1 : 10, 0),
    createConns: num('create-conns', a['create-conns'], 16, 1),
    workers: a.workers === undefined ? undefined : num('workers', a.workers, 1, 1),
    waitQuietS: num('wait-quiet', a['wait-quiet'], 0, 0),
    smoke,
    keep: a.keep!,
  };
  const result = await runScale(opts);
  const out = resolve(a.out ?? join(REPO, 'bench/results'));
  mkdirSync(out, { recursive: true });
  const base = join(out, smoke ? 'scale-smoke' : 'scale');
  const md = `# Scale of the store\n\n${scaleMarkdown(result)}`;
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  writeFileSync(`${base}.md`, md);
  console.log(md);
  console.error(`scale: wrote ${base}.json and ${base}.md`);
  if (smoke) {
    const broken = result.sizes.filter(
      (s) => !(s.cold.samples > 0 && s.warm.samples > 0 && s.list.lines > 0 && s.readyMs.length > 0),
    );
    if (broken.length > 0) throw new Error(`smoke: no numbers for ${broken.map((s) => s.label).join(', ')}`);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  });
}
