// The scale benchmark's Markdown fragment (for docs/performance.md and bench/results/scale.md).
import type { ScaleResult, SizeResult } from './scale-types.mts';

const TARGET_READY_MS = 2000;
const TARGET_FLAT = 1.2;

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const ms = (n: number) =>
  !Number.isFinite(n) ? 'n/a' : n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
const mib = (n: number) => `${int(n)} MiB`;
const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : 'n/a');
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const verdict = (ok: boolean) => (ok ? '**met**' : '**not met**');

function restTotals(s: SizeResult): { rss: number; anon: number; line: string } {
  const rss = s.restAt.reduce((a, p) => a + p.rssMiB, 0);
  const anon = s.restAt.reduce((a, p) => a + p.anonMiB, 0);
  const worst = Math.max(...s.restAt.map((p) => p.rssMiB));
  return { rss, anon, line: `${mib(rss)} (anon ${mib(anon)}; largest process ${mib(worst)})` };
}

const size = (bytes: number) =>
  bytes >= 10 * 1048576 ? `${int(bytes / 1048576)} MiB` : `${(bytes / 1048576).toFixed(1)} MiB`;

function listCell(s: SizeResult): string {
  const l = s.list;
  const status =
    l.complete && l.errorLines === 0 && l.lines === l.expectedLines
      ? 'complete'
      : `**cut off after ${int(l.lines)} of ${int(l.expectedLines)} lines** (${l.problem ?? `${l.errorLines} error lines`})`;
  return `${int(l.linesPerS)} lines/s, ${l.seconds.toFixed(1)} s, ${size(l.bytes)}; ${status}`;
}

function slicesCell(s: SizeResult): string {
  const l = s.slices;
  const status = l.complete ? 'all complete' : `**incomplete: ${int(l.lines)} of ${int(l.expectedLines)} lines**`;
  return `${int(l.linesPerS)} lines/s, ${l.seconds.toFixed(1)} s in ${l.runs.length} request${l.runs.length === 1 ? '' : 's'}; ${status}; peak RSS ${mib(l.peak.maxProcessRssMiB)} (anon ${mib(l.peak.maxProcessAnonMiB)})`;
}

export function scaleMarkdown(r: ScaleResult): string {
  const [small, large] = r.sizes as [SizeResult, SizeResult];
  const m = r.meta;
  const head = (s: SizeResult) => `${int(s.keys)} keys`;
  const readyMed = (s: SizeResult) => median(s.readyMs);
  const readyMax = (s: SizeResult) => Math.max(...s.readyMs);
  const readyOk = readyMax(small) <= TARGET_READY_MS && readyMax(large) <= TARGET_READY_MS;
  const p50Ratio = large.cold.p50 / small.cold.p50;
  const p99Ratio = large.cold.p99 / small.cold.p99;
  const lat = (l: { p50: number; p99: number; samples: number; errors: number }) =>
    `${ms(l.p50)} / ${ms(l.p99)} ms${l.errors ? ` (${l.errors} errors)` : ''}`;
  const evictedCell = (s: SizeResult) => {
    if (s.evicted === undefined) return 'n/a (python3 missing)';
    const e = s.evicted.eviction;
    const res =
      e.residentBefore !== undefined && e.residentAfter !== undefined
        ? `; store resident ${mib(e.residentBefore / 1048576)} → ${mib(e.residentAfter / 1048576)}`
        : '';
    return `${lat(s.evicted.cold)}${other(s.evicted)}; ready in ${int(s.evicted.readyMs)} ms${res}`;
  };
  const createCell = (s: SizeResult) =>
    s.create === undefined
      ? `n/a (${s.createSkipped ?? 'skipped'})`
      : `${int(s.create.opsPerS)}/s (p50 ${ms(s.create.p50Ms)} / p99 ${ms(s.create.p99Ms)} ms${s.create.serverUsPerReq !== undefined ? `, ${int(s.create.serverUsPerReq)} µs server CPU/req` : ''}${s.create.otherCores > 0.3 ? `, other load ${s.create.otherCores.toFixed(2)} cores †` : ''})`;
  const startOther = (s: SizeResult) =>
    Math.max(...s.startOtherCores) > 0.3
      ? ` † other load up to ${Math.max(...s.startOtherCores).toFixed(2)} cores`
      : '';
  const otherMax = (xs: number[]) =>
    Math.max(...xs) > 0.3 ? ` † other load up to ${Math.max(...xs).toFixed(2)} cores` : '';
  const roundRatios = large.coldRoundP50.map((p, i) => ratio(p, small.coldRoundP50[i]!)).join(', ');
  const other = (c: { otherCores: number }) =>
    c.otherCores > 0.3 ? ` † other load ${c.otherCores.toFixed(2)} cores` : '';
  const fillLine = r.fills
    .filter((f) => f.created > 0)
    .map((f) => `${int(f.created)} keys for the ${f.store} store in ${f.seconds.toFixed(1)} s (${int(f.perSecond)}/s)`)
    .join(', ');

  const rows = [
    `| store file (LMDB) | ${mib(small.storeMiB)} | ${mib(large.storeMiB)} | |`,
    `| restart → \`/v1/ready\` 200, median / max of ${small.readyMs.length} | ${int(readyMed(small))} / ${int(readyMax(small))} ms${startOther(small)} | ${int(readyMed(large))} / ${int(readyMax(large))} ms${startOther(large)} | ≤ 2 s and independent of the key count: ${verdict(readyOk)} (large/small median ${ratio(readyMed(large), readyMed(small))}) |`,
    `| CPU time kesd used to get ready (all processes), median | ${int(median(small.startCpuMs))} ms | ${int(median(large.startCpuMs))} ms | |`,
    `| RSS at rest after restart, all ${m.kesdProcesses} processes | ${restTotals(small).line} | ${restTotals(large).line} | |`,
    `| generate, **cold** key (first use since the restart), p50 / p99 of ${int(small.cold.samples)} · ${int(large.cold.samples)} | ${lat(small.cold)}${otherMax(small.generateOtherCores)} | ${lat(large.cold)}${otherMax(large.generateOtherCores)} | flat within 20 %: p50 ${verdict(p50Ratio <= TARGET_FLAT)} (${ratio(large.cold.p50, small.cold.p50)}; per round ${roundRatios}), p99 ${verdict(p99Ratio <= TARGET_FLAT)} (${ratio(large.cold.p99, small.cold.p99)}) |`,
    `| generate, warm key (same keys again), p50 / p99 | ${lat(small.warm)} | ${lat(large.warm)} | |`,
    `| cold − warm p50: what the cache miss itself adds | ${ms(small.cold.p50 - small.warm.p50)} ms | ${ms(large.cold.p50 - large.warm.p50)} ms | |`,
    `| generate, cold key and the store file evicted from the page cache, p50 / p99 | ${evictedCell(small)} | ${evictedCell(large)} | |`,
    `| full list (\`/v1/key/list/*\`) | ${listCell(small)}${other(small.list.cpu)} | ${listCell(large)}${other(large.list.cpu)} | streams |`,
    `| peak RSS during the full list: serving process (anon / file-backed) · all processes | ${mib(small.list.peak.maxProcessRssMiB)} (${mib(small.list.peak.maxProcessAnonMiB)} / ${mib(small.list.peak.maxProcessFileMiB)}) · ${mib(small.list.peak.totalRssMiB)} | ${mib(large.list.peak.maxProcessRssMiB)} (${mib(large.list.peak.maxProcessAnonMiB)} / ${mib(large.list.peak.maxProcessFileMiB)}) · ${mib(large.list.peak.totalRssMiB)} | streams: anon memory does not grow with the list |`,
    `| the bulk keys as prefix lists of ≤ 10,000 (\`k-000*\`, \`k-001*\`, …), one after another | ${slicesCell(small)}${other(small.slices.cpu)} | ${slicesCell(large)}${other(large.slices.cpu)} | |`,
    `| list \`k-0000*\` (${int(large.prefixList.expectedLines)} keys) | ${int(small.prefixList.lines)} lines in ${ms(small.prefixList.seconds * 1000)} ms | ${int(large.prefixList.lines)} lines in ${ms(large.prefixList.seconds * 1000)} ms | |`,
    `| create over HTTP (Go load generator, ${large.create?.conns ?? small.create?.conns ?? '–'} conns) | ${createCell(small)} | ${createCell(large)} | |`,
  ];

  return [
    ...(m.smoke ? ['_Smoke run: small sizes; the numbers only show that the harness works._', ''] : []),
    `${head(large)} against ${head(small)}, two data dirs served in turn by \`kesd server\` (${m.kesdProcesses} processes: the primary` +
      ` and its workers). Run ${m.date} on ${m.machine.nproc} vCPU ${m.machine.cpu}, kesd ${m.versions.kesd}, Node ${m.versions.node};` +
      ` took ${int(m.wallSeconds)} s. The machine is shared: 1-minute load average ${m.loadavgBefore.toFixed(2)} before,` +
      ` ${m.loadavgAfter.toFixed(2)} after; † marks a phase during which other processes used more than 0.3 cores.`,
    '',
    `| | ${head(small)} | ${head(large)} | target |`,
    '|---|---|---|---|',
    ...rows,
    '',
    `- **Key creation.** The bulk keys were made in-process: ${fillLine}, through \`Enclave.createKey\` (what the create` +
      ' handler calls) on the same LMDB file with no server running, 2,000 creates in flight, which lmdb-js commits together.' +
      ' That is a store-and-crypto rate, not an API rate; the API rate is the "create over HTTP" row (200 only after' +
      ' the commit is fdatasynced; concurrent requests share commits).',
    `- **Paired rounds.** Restart → ready, RSS at rest and generate are measured in ${small.readyMs.length} rounds; each round` +
      ' starts and samples both stores, one after the other (the order alternates), so other load on the machine falls on' +
      ' both sizes alike. The lists, the evicted page cache and the HTTP creates follow, once per store.',
    '- **Restart → ready**: from spawning `kesd server` to the first 200 from `/v1/ready`, polled every 10 ms on fresh' +
      ' connections. Start-up loads enclaves, policies and identities only; keys are read on first use. The CPU row is' +
      ' the CPU time all kesd processes used until ready, which load from other processes does not inflate much.',
    '- **Cold generate**: right after a start, one keep-alive connection (so one worker) generates with each sampled key' +
      ' once (distinct keys spread over the whole key range, the same in every round): each request is a cache miss that' +
      ' reads and opens the key\'s record. "Warm" repeats the same keys on the same connection. Latency is measured by a' +
      ' Node client on the same machine, so it includes the client. "Evicted" drops the store file from the page cache' +
      ' first, so a miss may read B-tree pages from disk.',
    '- **List**: one client reads the NDJSON stream as it comes and counts lines; RSS is sampled every 50 ms from' +
      ' `/proc/<pid>/status`. File-backed RSS grows with the part of the LMDB map a process has touched (shared page' +
      ' cache, not heap); anonymous RSS is the heap and buffers. A line the key ring has not kept yet costs an AEAD' +
      ' open of the key record (the v0.22 line carries id, algorithm, created_at and created_by); a kept one (at most' +
      ' 100,000 per enclave) only its path. The prefix lists read the same bulk keys again,' +
      ' 10,000 per request, as a client that lists by prefix would.',
    '',
  ].join('\n');
}
