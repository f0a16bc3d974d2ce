// Wires a running kesd: store → state → declared keys → HTTPS, plus logs, metrics and signals.
import pino from 'pino';
import type { ServerContext } from '../api/context.js';
import { servedRoutes } from '../api/routes.js';
import type { InitConfig, ServerConfig } from '../config/config.js';
import type { EtcdStore } from '../store/etcd.js';
import { EtcdFollower } from '../store/etcd-watch.js';
import type { RootKeyInfo } from '../store/unseal.js';
import type { ChangeBus } from '../state/changes.js';
import { followStore, writeSealMarker } from '../state/store-changes.js';
import { System } from '../state/system.js';
import { VERSION } from '../version.js';
import { applyDeclarations, ensureDeclaredKeys } from '../boot/declarations.js';
import { openStore } from '../boot/data-dir.js';
import { adoptExistingKeys, forgetUpstream } from '../boot/upstream-seed.js';
import { AuditLog } from '../log/audit.js';
import { ErrorLog } from '../log/errorlog.js';
import { LineWriter } from '../log/lines.js';
import { Metrics } from '../log/metrics.js';
import { startUpstream } from '../upstream/upstream.js';
import { startServer, type RunningServer, type TlsMaterial } from './server.js';

export interface KesdOptions {
  readonly dir: string;
  readonly config: ServerConfig;
  readonly root: RootKeyInfo;
  readonly address: string;
  readonly auditStdout: boolean;
  /** An init.yml to apply at start (`server --init`): enclaves, policies, assignments and keys. */
  readonly declared?: InitConfig;
  /** Checked TLS bytes to serve instead of reading config.tls's files (a cluster worker's, from the primary). */
  readonly tls?: TlsMaterial;
  /** Set in a cluster worker (worker.ts): the primary has applied the declarations; changes go to the others. */
  readonly worker?: WorkerLink;
}

export interface WorkerLink {
  readonly bus: ChangeBus;
  readonly sealed: boolean;
  readonly startedAt: number;
  readonly workers: number;
  /** Connects the worker's log streams and metrics to the other workers, before it serves. */
  attach(ctx: ServerContext): void;
}

export interface Kesd extends RunningServer {
  readonly system: System;
  stop(): Promise<void>;
}

/**
 * What happens once per start, before serving: declared keys are created and init.yml is applied; an upstream new to
 * this store gets every key the store already holds queued (boot/upstream-seed.ts).
 */
async function declare(system: System, opts: KesdOptions): Promise<void> {
  await ensureDeclaredKeys(system, opts.config.keys ?? {}, opts.root.sysadmin);
  if (opts.declared !== undefined) await applyDeclarations(system, opts.declared);
  if (opts.config.upstream === undefined) return forgetUpstream(system);
  const queued = await adoptExistingKeys(system, opts.config.upstream);
  if (queued > 0)
    console.error(
      `kesd: upstream ${opts.config.upstream.vault.endpoint} is new to this store: ${queued} existing keys queued for it`,
    );
}

/** The cluster primary's part of a start: the declarations, on a store it closes before the workers open it. */
export async function declareInStore(opts: KesdOptions): Promise<void> {
  const store = await openStore(opts.dir, opts.config);
  try {
    const system = await System.open(
      store,
      { key: opts.root.key, sysadmin: opts.root.sysadmin },
      { resumeSweeps: false, upstreamEnclave: opts.config.upstream?.enclave },
    );
    try {
      await declare(system, opts);
    } finally {
      system.release(); // the record key and the keys it cached; the root key stays for the workers
    }
  } finally {
    await store.close();
  }
}

export async function startKesd(opts: KesdOptions): Promise<Kesd> {
  const logger = pino({ base: undefined }, pino.destination(2));
  const stdout = opts.auditStdout ? new LineWriter(1) : undefined;
  const store = await openStore(opts.dir, opts.config);
  const worker = opts.worker;
  // On etcd, the revision before loading: the watch starts right after it, so no write of another replica falls
  // between what was loaded and what is followed (one seen twice is harmless).
  const etcd = opts.config.store?.etcd !== undefined ? (store as EtcdStore) : undefined;
  const loadedAt = await etcd?.revision();
  const system: System = await System.open(
    store,
    { key: opts.root.key, sysadmin: opts.root.sysadmin },
    {
      bus: worker?.bus,
      sealed: worker?.sealed,
      startedAt: worker?.startedAt,
      // On etcd a seal reaches every replica: this one writes the seal marker, the others' watches see it.
      announceSeal: etcd === undefined ? undefined : () => writeSealMarker(system),
      upstreamEnclave: opts.config.upstream?.enclave,
    },
  );
  const follower =
    etcd === undefined || loadedAt === undefined
      ? undefined
      : new EtcdFollower(etcd, loadedAt, {
          ...(await followStore(system)),
          log: (message) => console.error(`kesd: ${message}`),
        });
  if (worker === undefined) await declare(system, opts);

  const audit = new AuditLog(stdout ? (line) => stdout.write(line) : undefined);
  const errors = new ErrorLog(logger);
  const served = servedRoutes(opts.config.skipAuth ?? [], opts.config.backupIdentities ?? []);
  const metrics = new Metrics(system.startedAt, audit, errors);
  // Every serving process runs a sync loop; the one holding the lease drains the queue (upstream/lease.ts).
  const upstream =
    opts.config.upstream && !system.sealed
      ? startUpstream(system, opts.config.upstream, (message) => errors.log(message))
      : undefined;
  if (upstream !== undefined) metrics.upstream(upstream);
  const ctx: ServerContext = {
    system,
    version: VERSION,
    audit,
    errors,
    metrics,
    routes: served,
    workers: worker?.workers,
    dataDir: opts.dir,
    upstream,
  };
  worker?.attach(ctx);
  const { cert, key, password, ca, verifyCert } = opts.config.tls;
  const tls = { certFile: cert, keyFile: key, password, caFile: ca, verifyCert, material: opts.tls };
  const running = await startServer(ctx, opts.address, tls);
  return {
    ...running,
    system,
    async stop() {
      await running.close();
      await upstream?.stop();
      await follower?.stop();
      await store.close();
      await stdout?.drain();
    },
  };
}

/** The start banner; tests and operators look for "listening on HOST:PORT". */
export function banner(opts: KesdOptions, port: number, workers = 1): string {
  const host = opts.address.replace(/:\d+$/, '');
  return (
    `kesd ${VERSION.version} listening on ${host}:${port}\n  sysadmin ${opts.root.sysadmin}\n  verify client certificates: ${opts.config.tls.verifyCert ? 'on' : 'off'}` +
    (workers > 1 ? `\n  worker processes: ${workers}` : '')
  );
}

export interface SighupHold {
  /** Installs `reload` as the SIGHUP handler (with no moment in between without one); runs it once if SIGHUPs came. */
  release(reload: () => void): void;
  /** Stops holding SIGHUPs (the start failed). */
  drop(): void;
}

/**
 * Keeps SIGHUP from ending the process while kesd starts (its default action; a certificate rotation may send one at
 * any time): until release, SIGHUPs are only noted, and the reload they asked for runs once the server is up.
 */
export function holdSighup(): SighupHold {
  let missed = 0;
  const hold = () => void missed++;
  process.on('SIGHUP', hold);
  return {
    release(reload) {
      process.on('SIGHUP', reload);
      process.off('SIGHUP', hold);
      if (missed > 0) reload();
    },
    drop: () => void process.off('SIGHUP', hold),
  };
}

/** Runs until SIGTERM/SIGINT; SIGHUP reloads the TLS certificate without dropping connections. */
export async function runServer(opts: KesdOptions): Promise<void> {
  const sighup = holdSighup();
  let kesd: Kesd;
  try {
    kesd = await startKesd(opts);
  } catch (err) {
    sighup.drop();
    throw err;
  }
  console.error(banner(opts, kesd.port));
  sighup.release(() => {
    try {
      kesd.reloadTls();
      console.error('kesd: TLS certificate reloaded');
    } catch (err) {
      console.error(`kesd: TLS reload failed, keeping the old certificate: ${(err as Error).message}`);
    }
  });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await kesd.stop();
}
