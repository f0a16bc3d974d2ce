// The three servers under test, started with the same certificates: kesd (the built dist), the real KES
// (kes-latest, fs keystore) and the floor (bench/floor.mjs, a bare Node TLS server: node:http and node:http2).
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { stringify } from 'yaml';
import { descendants, exeOf, freePort, request, runSync, spawnLogged, stop, waitReady } from './proc.mts';

export const REPO = resolve(import.meta.dirname, '../..');
export const KESD_BIN = join(REPO, 'kesd/bin/kesd.js');
const NODE = process.execPath;

/** An environment for child processes without anything tsx or the caller put into NODE_OPTIONS. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  if (extra.NODE_OPTIONS) env.NODE_OPTIONS = extra.NODE_OPTIONS;
  return env;
}

export interface Identity {
  certFile: string;
  keyFile: string;
  identity: string;
}

export interface Identities {
  /** The client certificate and key PEMs, for set-up requests from Node. */
  clientTls: { cert: string; key: string };
  server: Identity;
  client: Identity;
  admin: Identity;
  sysadmin: Identity;
}

function identityNew(dir: string, name: string, extra: string[]): Identity {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const out = runSync(NODE, [KESD_BIN, 'identity', 'new', '--key', keyFile, '--cert', certFile, ...extra, name], {
    env: cleanEnv(),
  });
  const m = /Identity:\s+([0-9a-f]{64})/.exec(out);
  if (!m) throw new Error(`kesd identity new printed no identity: ${out}`);
  return { certFile, keyFile, identity: m[1]! };
}

/** Certificates shared by every target: a P-256 server certificate for 127.0.0.1, and the load generator's client. */
export function makeIdentities(dir: string, clientKey: 'ed25519' | 'p256'): Identities {
  const client = identityNew(dir, 'client', clientKey === 'p256' ? ['--p256'] : []);
  return {
    clientTls: { cert: readFileSync(client.certFile, 'utf8'), key: readFileSync(client.keyFile, 'utf8') },
    server: identityNew(dir, 'server', ['--p256', '--ip', '127.0.0.1', '--dns', 'localhost']),
    client,
    admin: identityNew(dir, 'admin', []),
    sysadmin: identityNew(dir, 'sysadmin', []),
  };
}

export interface Target {
  readonly name: 'kesd' | 'kes' | 'floor';
  readonly label: string;
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  readonly child: ChildProcess;
  /** What the process wrote (last 64 KiB). */
  output(): string;
  /** Extra facts for the report (workers, GOMAXPROCS, …). */
  readonly info: Record<string, unknown>;
}

export const BENCH_KEY = 'bench-key';
export const LIST_PREFIX = 'ls-';
export const LIST_KEYS = 100;
const listKeys = () => Array.from({ length: LIST_KEYS }, (_, i) => `${LIST_PREFIX}${String(i).padStart(3, '0')}`);

/** The policy the load generator's identity gets on kesd and KES alike (it is not an admin on either). */
export const CLIENT_POLICY = ['/v1/key/*'];

export function kesdHelp(): string {
  try {
    return runSync(NODE, [KESD_BIN, 'server', '--help'], { env: cleanEnv() });
  } catch (err) {
    return (err as Error).message;
  }
}

export interface BenchInitOptions {
  /** The address kesd init records (the bench always passes --addr to kesd server as well). */
  address: string;
  /** The environment variable that holds the unseal key. */
  unsealEnv: string;
  /** Keys the default enclave starts with. */
  keys?: readonly string[];
  /** A shared etcd store instead of the embedded one. */
  etcd?: { endpoints: readonly string[]; prefix: string };
}

/**
 * kesd's init.yml for the bench: the sysadmin, the server certificate, and a `default` enclave with the admin and a
 * policy that lets the client identity use CLIENT_POLICY. Written with the yaml library, so any temp path is quoted
 * as it must be.
 */
export function benchInitYml(ids: Identities, opts: BenchInitOptions): string {
  return stringify({
    version: 'v1',
    address: opts.address,
    system: { admin: { identity: ids.sysadmin.identity } },
    tls: { key: ids.server.keyFile, cert: ids.server.certFile },
    unseal: { environment: { name: opts.unsealEnv } },
    ...(opts.etcd ? { store: { etcd: opts.etcd } } : {}),
    enclave: {
      default: {
        admin: { identity: ids.admin.identity },
        policy: { bench: { allow: CLIENT_POLICY, identities: [ids.client.identity] } },
        ...(opts.keys?.length ? { keys: opts.keys.map((name) => ({ name })) } : {}),
      },
    },
  });
}

/** `bin`: another build's kesd.js (an A/B of two builds); default this checkout's. */
export async function startKesd(
  dir: string,
  ids: Identities,
  opts: { workers?: number; nodeOptions?: string; name?: string; bin?: string } = {},
): Promise<Target> {
  const name = opts.name ?? 'kesd';
  const home = join(dir, name);
  mkdirSync(home, { recursive: true });
  const port = await freePort();
  const env = cleanEnv({
    KESD_BENCH_UNSEAL_KEY: Buffer.alloc(32, 42).toString('base64'),
    ...(opts.nodeOptions ? { NODE_OPTIONS: opts.nodeOptions } : {}),
  });
  const initYml = join(home, 'init.yml');
  writeFileSync(
    initYml,
    benchInitYml(ids, {
      address: `127.0.0.1:${port}`,
      unsealEnv: 'KESD_BENCH_UNSEAL_KEY',
      keys: [BENCH_KEY, ...listKeys()],
    }),
  );
  const data = join(home, 'data');
  runSync(NODE, [opts.bin ?? KESD_BIN, 'init', '--config', initYml, data], {
    env: cleanEnv({ KESD_BENCH_UNSEAL_KEY: env.KESD_BENCH_UNSEAL_KEY }),
  });
  const help = kesdHelp();
  const workersFlag = /--workers\b/.test(help);
  const args = [opts.bin ?? KESD_BIN, 'server', data, '--addr', `127.0.0.1:${port}`, '--audit-log', 'off'];
  if (opts.workers !== undefined) {
    if (!workersFlag)
      throw new Error(`--kesd-workers ${opts.workers}: this kesd has no --workers flag (kesd server --help):\n${help}`);
    args.push('--workers', String(opts.workers));
  }
  const { child, output } = spawnLogged(NODE, args, { env, log: join(home, 'kesd.log') });
  await waitReady(name, port, child, output, ids.clientTls);
  // Multi-worker kesd: wait until the worker count is stable (every worker up), then count them.
  let kids = descendants(child.pid!);
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 150));
    const now = descendants(child.pid!);
    if (now.length === kids.length && i >= 3) break;
    kids = now;
  }
  // Node 24 names its main thread 'MainThread' (that is what /proc/<pid>/comm shows), so tell workers by executable.
  const nodeKids = kids.filter((p) => exeOf(p) === exeOf(child.pid!));
  const workers = nodeKids.length > 0 ? nodeKids.length : 1;
  return {
    name: 'kesd',
    label: 'kesd',
    url: `https://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    child,
    output,
    info: {
      workers,
      processes: 1 + kids.length,
      workersFlag,
      workersArg: opts.workers ?? null,
      workersHow:
        nodeKids.length > 0
          ? `${nodeKids.length} worker processes under the primary`
          : 'one process (no worker processes)',
      log: join(home, 'kesd.log'),
    },
  };
}

export function kesBinary(): { path: string; version: string } {
  const cache =
    process.env.KESD_PEERS_DIR ||
    join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'stateful-kes', 'peers');
  const binJson = join(resolve(cache), 'bin.json');
  const fail = () => new Error(`the real KES (kes-latest) is not built: run 'npm run peers' (looked in ${binJson})`);
  if (!existsSync(binJson)) throw fail();
  const path = (JSON.parse(readFileSync(binJson, 'utf8')) as Record<string, string>)['kes-latest'];
  if (!path || !existsSync(path)) throw fail();
  const peers = JSON.parse(readFileSync(join(REPO, 'peers.json'), 'utf8')) as Record<string, { version: string }>;
  return { path, version: peers['kes-latest']?.version ?? '?' };
}

export async function startKes(dir: string, ids: Identities, gomaxprocs: number): Promise<Target> {
  const home = join(dir, 'kes');
  mkdirSync(home, { recursive: true });
  const port = await freePort();
  const bin = kesBinary();
  const config = join(home, 'kes.yml');
  writeFileSync(
    config,
    `address: 127.0.0.1:${port}
admin:
  identity: ${ids.admin.identity}
tls:
  key: ${ids.server.keyFile}
  cert: ${ids.server.certFile}
policy:
  bench:
    allow: [${CLIENT_POLICY.join(', ')}]
    identities: [${ids.client.identity}]
log:
  error: on
  audit: off
keystore:
  fs:
    path: ${join(home, 'keys')}
`,
  );
  const { child, output } = spawnLogged(bin.path, ['server', '--config', config], {
    env: cleanEnv({ GOMAXPROCS: String(gomaxprocs) }),
    log: join(home, 'kes.log'),
  });
  await waitReady('kes', port, child, output, ids.clientTls);
  // KES v0.24 parses the config's `keys:` list but never creates them, so create the keys through the API.
  for (const k of [BENCH_KEY, ...listKeys()]) {
    const r = await request(port, 'POST', `/v1/key/create/${k}`, ids.clientTls);
    if (r.status !== 200) throw new Error(`kes: creating key ${k} answered ${r.status}: ${r.body}`);
  }
  return {
    name: 'kes',
    label: `KES ${bin.version}`,
    url: `https://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    child,
    output,
    info: { gomaxprocs, version: bin.version, binary: bin.path, log: join(home, 'kes.log') },
  };
}

export async function startFloor(dir: string, ids: Identities, bodySize: number, workers: number): Promise<Target> {
  const port = await freePort();
  const { child, output } = spawnLogged(
    NODE,
    [
      join(REPO, 'bench/floor.mjs'),
      '--cert',
      ids.server.certFile,
      '--key',
      ids.server.keyFile,
      '--addr',
      `127.0.0.1:${port}`,
      '--body-size',
      String(bodySize),
      '--workers',
      String(workers),
    ],
    {
      env: cleanEnv(),
      log: join(dir, 'floor.log'),
    },
  );
  await waitReady('floor', port, child, output, ids.clientTls);
  return {
    name: 'floor',
    label: 'floor (bare Node http / http2)',
    url: `https://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    child,
    output,
    info: { bodySize, workers },
  };
}

/** Checks that the client identity can generate on a target and returns the response size. */
export async function probeGenerate(t: Target, ids: Identities): Promise<number> {
  const r = await request(t.port, 'POST', `/v1/key/generate/${BENCH_KEY}`, ids.clientTls, '{}');
  if (r.status !== 200) throw new Error(`${t.name}: generate answered ${r.status}: ${r.body}\n${t.output()}`);
  return Buffer.byteLength(r.body);
}

export async function stopTarget(t: Target): Promise<void> {
  await stop(t.child);
}
