// Wires a running kesd: store → state → declared keys → HTTPS, plus logs, metrics and signals.
import { join } from 'node:path';
import pino from 'pino';
import type { ServerContext } from '../api/context.js';
import { routes } from '../api/routes.js';
import type { InitConfig, ServerConfig } from '../store/config.js';
import { openLmdbStore } from '../store/lmdb.js';
import type { RootKeyInfo } from '../store/unseal.js';
import { System } from '../state/system.js';
import { VERSION } from '../version.js';
import { applyDeclarations, ensureDeclaredKeys, STORE_FILE } from '../cli/server.js';
import { AuditLog } from './audit.js';
import { ErrorLog } from './errorlog.js';
import { Metrics } from './metrics.js';
import { startServer, type RunningServer } from './server.js';

export interface KesdOptions {
  readonly dir: string;
  readonly config: ServerConfig;
  readonly root: RootKeyInfo;
  readonly address: string;
  readonly auditStdout: boolean;
  /** An init.yml to apply at start (`server --init`): enclaves, policies, assignments and keys. */
  readonly declared?: InitConfig;
}

export interface Kesd extends RunningServer {
  readonly system: System;
  stop(): Promise<void>;
}

export async function startKesd(opts: KesdOptions): Promise<Kesd> {
  const logger = pino({ base: undefined }, pino.destination(2));
  const stdout = opts.auditStdout ? pino.destination({ dest: 1, sync: false, minLength: 4096 }) : undefined;
  const store = await openLmdbStore(join(opts.dir, STORE_FILE));
  const system = await System.open(store, { key: opts.root.key, sysadmin: opts.root.sysadmin });
  await ensureDeclaredKeys(system, opts.config.keys ?? {}, opts.root.sysadmin);
  if (opts.declared !== undefined) await applyDeclarations(system, opts.declared);
  const skipAuth = new Set(opts.config.skipAuth ?? []);

  const audit = new AuditLog(stdout ? (line) => stdout.write(line) : undefined);
  const errors = new ErrorLog(logger);
  const served = routes.map((r) => (skipAuth.has(r.path) ? { ...r, auth: 'none' as const } : r));
  const ctx: ServerContext = { system, version: VERSION, audit, errors, metrics: new Metrics(system.startedAt, audit, errors), routes: served };
  const tls = { certFile: opts.config.tls.cert, keyFile: opts.config.tls.key, password: opts.config.tls.password, caFile: opts.config.tls.ca, verifyCert: opts.config.tls.verifyCert };
  const running = await startServer(ctx, opts.address, tls);
  return {
    ...running,
    system,
    async stop() {
      await running.close();
      await store.close();
      stdout?.flushSync();
    },
  };
}

/** Runs until SIGTERM/SIGINT; SIGHUP reloads the TLS certificate without dropping connections. */
export async function runServer(opts: KesdOptions): Promise<void> {
  const kesd = await startKesd(opts);
  const host = opts.address.replace(/:\d+$/, '');
  console.error(`kesd ${VERSION.version} listening on ${host}:${kesd.port}\n  sysadmin ${opts.root.sysadmin}\n  verify client certificates: ${opts.config.tls.verifyCert ? 'on' : 'off'}`);
  process.on('SIGHUP', () => {
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
