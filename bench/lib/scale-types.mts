// What bench/scale.mts measures, shared with its report (bench/lib/scale-report.mts).
import type { Eviction, FillResult, MemoryPeak, PhaseCpu, ProcessMemory } from './scale-kesd.mts';
import type { Latency, ListRun } from './scale-client.mts';

export interface ScaleOptions {
  /** Keys in the large store. */
  keys: number;
  /** Keys in the small store (the reference). */
  small: number;
  /** Restarts timed per store. Each is one paired round: both stores are started and sampled, alternately. */
  restarts: number;
  /** Cold-generate samples per store, spread over the rounds (each round samples the same distinct keys, cold again). */
  samples: number;
  /** Seconds of HTTP creates (Go load generator, `createConns` connections) per store; 0 skips them. */
  createSeconds: number;
  createConns: number;
  /** `kesd server --workers N`; kesd's default (one per CPU) if unset. */
  workers?: number;
  /** Before each round and each later phase, wait up to this many seconds for other load to drop below 0.3 cores. */
  waitQuietS: number;
  smoke: boolean;
  /** Keep the temp dir (data dirs, logs). */
  keep: boolean;
  log?: (message: string) => void;
}

export interface SizeResult {
  label: 'small' | 'large';
  /** Keys in the enclave during the paired rounds (the HTTP creates come last). */
  keys: number;
  storeMiB: number;
  /** Per round: spawn → /v1/ready 200; CPU time of all kesd processes up to then; other load meanwhile (cores). */
  readyMs: number[];
  startCpuMs: number[];
  startOtherCores: number[];
  /** Memory of each kesd process a few seconds after the last round's start, before any request. */
  restAt: ProcessMemory[];
  /** All rounds together. */
  cold: Latency;
  warm: Latency;
  /** Per round: cold p50, and other load during the generate passes. */
  coldRoundP50: number[];
  generateOtherCores: number[];
  generateError?: string;
  /** One request for every key. */
  list: ListRun & { expectedLines: number; peak: MemoryPeak; cpu: PhaseCpu };
  /** The bulk keys again, as consecutive prefix lists of at most SLICE keys (a client that lists by prefix). */
  slices: {
    runs: (ListRun & { expectedLines: number })[];
    lines: number;
    expectedLines: number;
    seconds: number;
    linesPerS: number;
    complete: boolean;
    peak: MemoryPeak;
    cpu: PhaseCpu;
  };
  /** k-0000*: the first 1,000 bulk keys, whatever the store's size. */
  prefixList: ListRun & { expectedLines: number };
  evicted?: { eviction: Eviction; readyMs: number; cold: Latency; otherCores: number };
  create?: {
    conns: number;
    seconds: number;
    opsPerS: number;
    errors: Record<string, number>;
    p50Ms: number;
    p99Ms: number;
    serverUsPerReq?: number;
    otherCores: number;
  };
  createSkipped?: string;
}

export interface ScaleResult {
  meta: {
    date: string;
    command: string;
    smoke: boolean;
    options: Omit<ScaleOptions, 'log'>;
    machine: { nproc: number; cpu: string; memGiB: number; kernel: string };
    versions: { node: string; kesd: string };
    /** 1-minute load average before and after: the machine is shared. */
    loadavgBefore: number;
    loadavgAfter: number;
    wallSeconds: number;
    kesdProcesses: number;
  };
  fills: (FillResult & { store: SizeResult['label'] })[];
  sizes: SizeResult[];
}
