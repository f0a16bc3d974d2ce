// A kesd data dir (KES v0.22's `kes init` / `kes server <dir>`): its initialisation, built aside and renamed into
// place, and the store it names (the embedded LMDB file, or etcd).
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes, randomFill } from '../crypto/random.js';
import { secretBuffer, wipe } from '../crypto/secret.js';
import { checkServerCertificate } from '../identity/tls-files.js';
import { System } from '../state/system.js';
import { syncDir } from '../fs/atomic.js';
import {
  readServerConfig,
  SERVER_CONFIG_FILE,
  toServerConfig,
  unsealSourceOf,
  writeServerConfig,
  type EtcdConfig,
  type InitConfig,
  type ServerConfig,
  type StoreConfig,
} from '../config/config.js';
import { openLmdbStore } from '../store/lmdb.js';
import type { Store } from '../store/store.js';
import { sealRootKey, takeUnsealKey, writeSealedRootKey, type RootKeyInfo } from '../store/unseal.js';
import { applyDeclarations } from './declarations.js';
import { seedFromUpstream } from './upstream-seed.js';

// The LMDB data file inside the data dir (LMDB adds db-lock beside it).
export const STORE_FILE = 'db';

export interface InitOptions {
  force?: boolean;
  /** Where the unseal key variable is looked up (default process.env, which then loses it: store/environ.ts). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** The unseal key, read already by the caller (who wipes it); otherwise read from init.yml's source. */
  unsealKey?: Buffer;
}

/**
 * Initialises a data dir: built in a sibling temp dir and renamed into place, so a failed init leaves nothing. With
 * an etcd store the dir holds only .init: the root key is created in etcd unless another replica's is there (then
 * that one is used, if this unseal key opens it), and the declarations are applied to the shared store.
 */
export async function initDataDir(dir: string, init: InitConfig, opts: InitOptions = {}): Promise<void> {
  if (existsSync(dir) && !opts.force && !(await isEmptyDir(dir)))
    throw new Error(`'${dir}' already exists. Use 'kesd init --force' to replace it`);
  const source = unsealSourceOf(init, opts.cwd);
  const unsealKey = opts.unsealKey ?? takeUnsealKey(source, opts.env ?? process.env).key;
  const root: RootKeyInfo = { key: secretBuffer(32), sysadmin: init.sysadmin, createdAt: new Date().toISOString() };
  try {
    const serverConfig: ServerConfig = {
      ...toServerConfig(init, opts.cwd),
      keys: Object.fromEntries(init.enclaves.map((e) => [e.name, e.keys])),
    };
    await checkServerCertificate(serverConfig.tls);

    const staging = join(dirname(resolve(dir)), `.${basename(dir)}.init-${randomBytes(4).toString('hex')}`);
    await mkdir(dirname(staging), { recursive: true });
    await mkdir(staging, { mode: 0o700 });
    try {
      randomFill(root.key);
      const etcd = serverConfig.store?.etcd;
      if (etcd !== undefined) {
        await initInEtcd(etcd, init, sealRootKey(source, unsealKey, root), unsealKey);
        await writeServerConfig(staging, serverConfig);
      } else {
        await writeSealedRootKey(staging, source, unsealKey, root);
        await writeServerConfig(staging, serverConfig);
        const store = await openLmdbStore(join(staging, STORE_FILE));
        try {
          const system = await System.open(
            store,
            { key: root.key, sysadmin: root.sysadmin },
            { upstreamEnclave: init.upstream?.enclave },
          );
          try {
            await seedFromUpstream(system, init);
            await applyDeclarations(system, init);
          } finally {
            system.release();
          }
        } finally {
          await store.close();
        }
      }
      if (existsSync(dir)) await rm(dir, { recursive: true, force: true });
      await rename(staging, dir);
      await syncDir(dirname(resolve(dir)));
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
  } finally {
    // The server unseals the root key again from what was written; this process keeps no copy.
    wipe(root.key);
    if (opts.unsealKey === undefined) wipe(unsealKey);
  }
}

async function initInEtcd(config: EtcdConfig, init: InitConfig, sealed: string, unsealKey: Buffer): Promise<void> {
  const { initEtcdRootKey, openEtcdStore } = await etcdModule();
  const store = openEtcdStore(config);
  let root: RootKeyInfo | undefined;
  try {
    root = await initEtcdRootKey(store, sealed, unsealKey);
    if (root.sysadmin !== init.sysadmin) {
      throw new Error(
        `the etcd store at ${config.prefix} was initialised for system admin ${root.sysadmin}, but the init config names ${init.sysadmin}`,
      );
    }
    const system = await System.open(
      store,
      { key: root.key, sysadmin: root.sysadmin },
      { resumeSweeps: false, upstreamEnclave: init.upstream?.enclave },
    );
    try {
      await seedFromUpstream(system, init);
      await applyDeclarations(system, init);
    } finally {
      system.release();
    }
  } finally {
    wipe(root?.key);
    await store.close();
  }
}

/** The store the config names: the embedded LMDB file in the data dir, or etcd (its client is loaded only then). */
export async function openStore(dir: string, config: ServerConfig): Promise<Store> {
  const etcd = config.store?.etcd;
  if (etcd === undefined) return openLmdbStore(join(dir, STORE_FILE));
  return (await etcdModule()).openEtcdStore(etcd);
}

// The etcd client is loaded only when a store.etcd section asks for it: the embedded store's start stays as fast.
export const etcdModule = () => import('../store/etcd.js');

/** The store <dir>/.init names; undefined for the embedded one (also when there is no .init to read). */
export async function configuredStore(dir: string): Promise<StoreConfig | undefined> {
  return existsSync(join(dir, SERVER_CONFIG_FILE)) ? (await readServerConfig(dir)).store : undefined;
}

async function isEmptyDir(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch {
    return false;
  }
}
