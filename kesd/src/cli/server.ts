// `kesd init` and `kesd server`: the stateful data dir, as in `kes init` / `kes server <dir>` of KES v0.22.
import { existsSync } from 'node:fs';
import os from 'node:os';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  parseInitConfig, readServerConfig, SERVER_CONFIG_FILE, toServerConfig, unsealSourceOf, writeServerConfig, type EtcdConfig, type InitConfig, type ServerConfig, type StoreConfig,
} from '../store/config.js';
import { syncDir } from '../store/atomic.js';
import { openLmdbStore } from '../store/lmdb.js';
import {
  describeUnsealSource, openRootKey as unsealRoot, readSealedRootKey, rewriteUnsealSource, sameUnsealSource, sealRootKey, takeUnsealKey, writeSealedRootKey,
  type RootKeyInfo, type SealedRootKey, type UnsealSource,
} from '../store/unseal.js';
import { randomBytes, randomFill } from '../crypto/random.js';
import { secretBuffer, wipe } from '../crypto/secret.js';
import { System } from '../state/system.js';
import { ErrEnclaveExists, ErrKeyExists } from '../api/errors.js';
import { checkServerCertificate } from '../server/tls-check.js';
import { runServer } from '../server/run.js';
import { runCluster } from '../server/cluster.js';
import { CliError, parse, positionals, type Command } from './command.js';

// The LMDB data file inside the data dir (LMDB adds db-lock beside it).
export const STORE_FILE = 'db';

const initUsage = 'kesd init --config <init.yml> [--force] <dir>';

/**
 * Brings a System in line with an init.yml: creates missing enclaves, writes policies that differ, assigns declared
 * identities, creates missing keys. Idempotent, so it runs at init and (with `server --init`) at every start;
 * what was created through the API is left alone.
 */
export async function applyDeclarations(system: System, init: InitConfig): Promise<number> {
  let changes = 0;
  for (const e of init.enclaves) {
    let enclave = system.enclaves.get(e.name);
    if (enclave === undefined) {
      try {
        enclave = await system.createEnclave(e.name, e.admin, init.sysadmin);
        changes++;
      } catch (err) {
        // On a shared store (etcd) another replica applying the same init.yml created it first: load theirs.
        if (err !== ErrEnclaveExists) throw err;
        await system.apply({ kind: 'enclave', enclave: e.name });
        enclave = system.enclaves.get(e.name);
        if (enclave === undefined) throw err;
      }
    }
    if (enclave.info.admin !== e.admin) {
      throw new CliError(`enclave '${e.name}' exists with admin ${enclave.info.admin}, but init.yml names ${e.admin}; an enclave admin cannot change`);
    }
    for (const p of e.policies) {
      const current = enclave.policies.get(p.name);
      if (current === undefined || !sameList(current.allow, p.allow) || !sameList(current.deny, p.deny)) {
        await enclave.writePolicy(p.name, { allow: p.allow, deny: p.deny }, init.sysadmin);
        changes++;
      }
      for (const id of p.identities) {
        if (enclave.identities.get(id)?.policy === p.name) continue;
        await enclave.assignPolicy(p.name, id, init.sysadmin);
        changes++;
      }
    }
    changes += await ensureDeclaredKeys(system, { [e.name]: e.keys }, init.sysadmin);
  }
  return changes;
}

const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Creates every declared key that is missing; existing keys are left alone. */
export async function ensureDeclaredKeys(system: System, declared: Record<string, string[]>, sysadmin: string): Promise<number> {
  let created = 0;
  for (const [enclaveName, names] of Object.entries(declared)) {
    const enclave = system.enclaves.get(enclaveName);
    if (enclave === undefined) continue;
    for (const name of names) {
      try {
        await enclave.createKey(name, sysadmin);
        created++;
      } catch (err) {
        if (err !== ErrKeyExists) throw err;
      }
    }
  }
  return created;
}

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
  if (existsSync(dir) && !opts.force && !(await isEmptyDir(dir))) throw new CliError(`'${dir}' already exists. Use 'kesd init --force' to replace it`);
  const source = unsealSourceOf(init, opts.cwd);
  const unsealKey = opts.unsealKey ?? takeUnsealKey(source, opts.env ?? process.env).key;
  const root: RootKeyInfo = { key: secretBuffer(32), sysadmin: init.sysadmin, createdAt: new Date().toISOString() };
  try {
    const serverConfig: ServerConfig = { ...toServerConfig(init, opts.cwd), keys: Object.fromEntries(init.enclaves.map((e) => [e.name, e.keys])) };
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
          const system = await System.open(store, { key: root.key, sysadmin: root.sysadmin });
          try {
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

// The etcd client is loaded only when a store.etcd section asks for it: the embedded store's start stays as fast.
const etcdModule = () => import('../store/etcd.js');

async function initInEtcd(config: EtcdConfig, init: InitConfig, sealed: string, unsealKey: Buffer): Promise<void> {
  const { initEtcdRootKey, openEtcdStore } = await etcdModule();
  const store = openEtcdStore(config);
  let root: RootKeyInfo | undefined;
  try {
    root = await initEtcdRootKey(store, sealed, unsealKey);
    if (root.sysadmin !== init.sysadmin) {
      throw new CliError(`the etcd store at ${config.prefix} was initialised for system admin ${root.sysadmin}, but the init config names ${init.sysadmin}`);
    }
    const system = await System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false });
    try {
      await applyDeclarations(system, init);
    } finally {
      system.release();
    }
  } finally {
    wipe(root?.key);
    await store.close();
  }
}

/** The sealed root key of the store `store` names: <dir>/.unseal for the embedded store, else the one in etcd. */
async function readStoreSealedRootKey(dir: string, store: StoreConfig | undefined): Promise<SealedRootKey> {
  if (store === undefined) return readSealedRootKey(dir);
  const { openEtcdStore, readEtcdSealedRootKey } = await etcdModule();
  const etcd = openEtcdStore(store.etcd);
  try {
    return await readEtcdSealedRootKey(etcd);
  } finally {
    await etcd.close();
  }
}

/** Reads the unseal key from `source`; says so on stderr if a copy of it may stay in this process (never the key). */
function unsealKeyFrom(source: UnsealSource, env: NodeJS.ProcessEnv): Buffer {
  const { key, residue } = takeUnsealKey(source, env);
  if (residue !== undefined) {
    console.error(`kesd: warning: the unseal key from the ${describeUnsealSource(source)} may stay in this process's memory: ${residue}; an unseal key file (unseal.file.path) avoids this`);
  }
  return key;
}

/**
 * Unseals the root key of the store `store` names (see readStoreSealedRootKey) with the unseal key from `source`,
 * by default the source recorded with it. Never writes.
 */
export async function openRootKey(dir: string, store: StoreConfig | undefined, env: NodeJS.ProcessEnv, source?: UnsealSource): Promise<RootKeyInfo> {
  const sealed = await readStoreSealedRootKey(dir, store);
  const unsealKey = unsealKeyFrom(source ?? sealed.source, env);
  try {
    return unsealRoot(sealed, unsealKey);
  } finally {
    wipe(unsealKey);
  }
}

/** The store <dir>/.init names; undefined for the embedded one (also when there is no .init to read). */
async function configuredStore(dir: string): Promise<StoreConfig | undefined> {
  return existsSync(join(dir, SERVER_CONFIG_FILE)) ? (await readServerConfig(dir)).store : undefined;
}

async function isEmptyDir(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length === 0;
  } catch {
    return false;
  }
}

const init: Command = {
  name: 'init',
  summary: 'Initialise a stateful data dir from an init.yml (KES v0.22 format)',
  usage: initUsage,
  async run(argv) {
    const { values, positionals: args } = parse(argv, { config: { type: 'string', short: 'c' }, force: { type: 'boolean', short: 'f' } }, initUsage);
    const [dir] = positionals(args, 1, initUsage);
    if (values.config === undefined) throw new CliError(`no init config specified: use --config <init.yml>\nusage: ${initUsage}`, 2);
    const config = parseInitConfig(await readFile(values.config, 'utf8'), process.env);
    await initDataDir(dir!, config, { force: values.force });
    const enclaves = config.enclaves.map((e) => `${e.name} (${e.policies.length} policies, ${e.keys.length} keys)`).join(', ');
    console.log(`Initialized kesd in ${dir}\n  Address:   ${config.address}\n  Sysadmin:  ${config.sysadmin}\n  Unseal:    ${describeUnsealSource(unsealSourceOf(config))}\n  Enclaves:  ${enclaves}`);
    return 0;
  },
};

const serverUsage = 'kesd server [--addr HOST:PORT] [--init init.yml] [--audit-log on|off] [--workers N] <dir>';

const server: Command = {
  name: 'server',
  summary: 'Serve the KES API from a data dir (unsealed by the key in the configured env var); with --init, initialise it first if needed and apply init.yml at every start; --workers N processes (default: one per CPU)',
  usage: serverUsage,
  async run(argv) {
    // A SIGHUP (certificate rotation) before the server holds its own handler must not kill it (the default action);
    // the certificate is read after this point anyway.
    process.on('SIGHUP', () => {});
    const { values, positionals: args } = parse(argv, { addr: { type: 'string' }, init: { type: 'string' }, 'audit-log': { type: 'string' }, workers: { type: 'string' } }, serverUsage);
    const [dir] = positionals(args, 1, serverUsage);
    const audit = values['audit-log'] ?? 'on';
    if (audit !== 'on' && audit !== 'off') throw new CliError(`--audit-log must be 'on' or 'off', got '${audit}'`, 2);
    const workers = values.workers === undefined ? os.availableParallelism() : /^\d+$/.test(values.workers) ? Number(values.workers) : NaN;
    if (!(workers >= 1 && workers <= 256)) throw new CliError(`--workers must be a number from 1 to 256, got '${values.workers}'`, 2);
    const declared = values.init === undefined ? undefined : parseInitConfig(await readFile(values.init, 'utf8'), process.env);
    // The root key is in the store init.yml names (it becomes .init below), else in the one .init names. The unseal
    // key comes from init.yml's source, else from the one recorded with the sealed root key; it is read once (from
    // this process's environment it is taken out: workers never inherit it) and wiped once the root key is open.
    const store = declared !== undefined ? toServerConfig(declared).store : await configuredStore(dir!);
    const declaredSource = declared !== undefined ? unsealSourceOf(declared) : undefined;
    let unsealKey: Buffer | undefined;
    let sealed: SealedRootKey;
    let root: RootKeyInfo;
    try {
      if (declared !== undefined && !existsSync(join(dir!, SERVER_CONFIG_FILE))) {
        unsealKey = unsealKeyFrom(declaredSource!, process.env);
        await initDataDir(dir!, declared, { unsealKey });
        console.error(`kesd: initialised ${dir} from ${values.init}`);
      }
      // Unseal before anything is written or the store is opened: a wrong key must leave the data dir untouched.
      sealed = await readStoreSealedRootKey(dir!, store);
      unsealKey ??= unsealKeyFrom(declaredSource ?? sealed.source, process.env);
      root = unsealRoot(sealed, unsealKey);
    } finally {
      wipe(unsealKey);
    }
    if (declared !== undefined) {
      if (declared.sysadmin !== root.sysadmin) {
        wipe(root.key);
        throw new CliError(`${values.init} names system admin ${declared.sysadmin}, but ${dir} was initialised for ${root.sysadmin}`);
      }
      // init.yml moved the unseal key (an environment variable → a key file): .unseal records where it is now. In
      // etcd the recorded source stays; replicas started with --init read init.yml's.
      if (store === undefined && !sameUnsealSource(sealed.source, declaredSource!)) await rewriteUnsealSource(dir!, sealed, declaredSource!);
      await writeServerConfig(dir!, toServerConfig(declared));
    }
    const config = await readServerConfig(dir!);
    await checkServerCertificate(config.tls);
    const opts = { dir: dir!, config, root, address: values.addr ?? config.address, auditStdout: audit === 'on', declared };
    // One worker is the plain single process; more run on node:cluster (server/cluster.ts).
    if (workers > 1) return runCluster(opts, workers);
    await runServer(opts);
    return 0;
  },
};

export const serverCommands: readonly Command[] = [init, server];
