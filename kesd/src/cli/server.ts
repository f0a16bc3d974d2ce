// `kesd init` and `kesd server`: the stateful data dir, as in `kes init` / `kes server <dir>` of KES v0.22.
import { existsSync } from 'node:fs';
import os from 'node:os';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  parseInitConfig, readServerConfig, SERVER_CONFIG_FILE, toServerConfig, writeServerConfig, type EtcdConfig, type InitConfig, type ServerConfig, type StoreConfig,
} from '../store/config.js';
import { syncDir } from '../store/atomic.js';
import { openLmdbStore } from '../store/lmdb.js';
import { openSealedRootKey, readUnsealKey, sealRootKey, writeSealedRootKey, type RootKeyInfo } from '../store/unseal.js';
import { randomBytes } from '../crypto/random.js';
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

/**
 * Initialises a data dir: built in a sibling temp dir and renamed into place, so a failed init leaves nothing. With
 * an etcd store the dir holds only .init: the root key is created in etcd unless another replica's is there (then
 * that one is used, if this unseal key opens it), and the declarations are applied to the shared store.
 */
export async function initDataDir(dir: string, init: InitConfig, opts: { force?: boolean; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<void> {
  const env = opts.env ?? process.env;
  if (existsSync(dir) && !opts.force && !(await isEmptyDir(dir))) throw new CliError(`'${dir}' already exists. Use 'kesd init --force' to replace it`);
  const unsealKey = readUnsealKey(init.unsealEnv, env);
  const serverConfig: ServerConfig = { ...toServerConfig(init, opts.cwd), keys: Object.fromEntries(init.enclaves.map((e) => [e.name, e.keys])) };
  await checkServerCertificate(serverConfig.tls);

  const staging = join(dirname(resolve(dir)), `.${basename(dir)}.init-${randomBytes(4).toString('hex')}`);
  await mkdir(dirname(staging), { recursive: true });
  await mkdir(staging, { mode: 0o700 });
  try {
    const root: RootKeyInfo = { key: randomBytes(32), sysadmin: init.sysadmin, createdAt: new Date().toISOString() };
    const etcd = serverConfig.store?.etcd;
    if (etcd !== undefined) {
      await initInEtcd(etcd, init, sealRootKey(init.unsealEnv, unsealKey, root), env);
      await writeServerConfig(staging, serverConfig);
    } else {
      await writeSealedRootKey(staging, init.unsealEnv, unsealKey, root);
      await writeServerConfig(staging, serverConfig);
      const store = await openLmdbStore(join(staging, STORE_FILE));
      try {
        await applyDeclarations(await System.open(store, { key: root.key, sysadmin: root.sysadmin }), init);
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
}

// The etcd client is loaded only when a store.etcd section asks for it: the embedded store's start stays as fast.
const etcdModule = () => import('../store/etcd.js');

async function initInEtcd(config: EtcdConfig, init: InitConfig, sealed: string, env: NodeJS.ProcessEnv): Promise<void> {
  const { initEtcdRootKey, openEtcdStore } = await etcdModule();
  const store = openEtcdStore(config);
  try {
    const root = await initEtcdRootKey(store, sealed, env);
    if (root.sysadmin !== init.sysadmin) {
      throw new CliError(`the etcd store at ${config.prefix} was initialised for system admin ${root.sysadmin}, but the init config names ${init.sysadmin}`);
    }
    await applyDeclarations(await System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false }), init);
  } finally {
    await store.close();
  }
}

/** Unseals the root key of the store `store` names: <dir>/.unseal for the embedded store, else the one in etcd. */
export async function openRootKey(dir: string, store: StoreConfig | undefined, env: NodeJS.ProcessEnv): Promise<RootKeyInfo> {
  if (store === undefined) return (await openSealedRootKey(dir, env)).root;
  const { openEtcdStore, readEtcdRootKey } = await etcdModule();
  const etcd = openEtcdStore(store.etcd);
  try {
    return await readEtcdRootKey(etcd, env);
  } finally {
    await etcd.close();
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
    console.log(`Initialized kesd in ${dir}\n  Address:   ${config.address}\n  Sysadmin:  ${config.sysadmin}\n  Unseal:    environment variable ${config.unsealEnv}\n  Enclaves:  ${enclaves}`);
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
    if (declared !== undefined && !existsSync(join(dir!, SERVER_CONFIG_FILE))) {
      await initDataDir(dir!, declared);
      console.error(`kesd: initialised ${dir} from ${values.init}`);
    }
    // Unseal before anything is written or the store is opened: a wrong key must leave the data dir untouched. The
    // root key is in the store init.yml names (it becomes .init below), else in the one .init names.
    const root = await openRootKey(dir!, declared !== undefined ? toServerConfig(declared).store : await configuredStore(dir!), process.env);
    if (declared !== undefined) {
      if (declared.sysadmin !== root.sysadmin) throw new CliError(`${values.init} names system admin ${declared.sysadmin}, but ${dir} was initialised for ${root.sysadmin}`);
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
