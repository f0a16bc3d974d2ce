// What `kesd server` does before it serves: initialise the data dir if init.yml asks and it is new, unseal the root
// key before anything is written or the store is opened, bring .unseal and .init in line with init.yml, check TLS.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { wipe } from '../crypto/secret.js';
import { checkServerCertificate } from '../identity/tls-files.js';
import {
  readServerConfig,
  SERVER_CONFIG_FILE,
  toServerConfig,
  unsealSourceOf,
  writeServerConfig,
  type InitConfig,
  type ServerConfig,
  type StoreConfig,
} from '../config/config.js';
import {
  describeUnsealSource,
  openRootKey as unsealRoot,
  rewriteUnsealSource,
  RootKeyMissingError,
  sameUnsealSource,
  UnsealError,
  WrongUnsealKeyError,
  type RootKeyInfo,
  type SealedRootKey,
  type UnsealSource,
} from '../store/unseal.js';
import { configuredStore, initDataDir } from './data-dir.js';
import { removeStaleBackupStaging } from '../store/backup.js';
import { resealRootKey } from './rekey.js';
import { readStoreSealedRootKey, unsealKeyFrom } from './root-key.js';

/**
 * Opens the sealed root key with the unseal key. When it does not open and init.yml names `unseal.previous` (an
 * unseal key rotation: init.yml names the new key, and the one the root key is sealed under), the root key is
 * opened with the previous key and re-sealed under the new one (atomically, boot/rekey.ts) before it is served.
 */
async function unsealOrRotate(
  dir: string,
  store: StoreConfig | undefined,
  sealed: SealedRootKey,
  unsealKey: Buffer,
  declared: InitConfig | undefined,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<{ root: RootKeyInfo; sealed: SealedRootKey }> {
  try {
    return { root: unsealRoot(sealed, unsealKey), sealed };
  } catch (err) {
    const previous = declared?.unsealPrevious;
    if (!(err instanceof WrongUnsealKeyError) || previous === undefined) throw err;
    const current = unsealSourceOf(declared!);
    const root = openWithPrevious(sealed, previous, current, env);
    let replaced: boolean;
    try {
      replaced = await resealRootKey(dir, store, sealed, root, current, unsealKey);
    } catch (e) {
      wipe(root.key);
      throw e;
    }
    log(
      replaced
        ? `kesd: re-sealed the root key under the unseal key from the ${describeUnsealSource(current)} (it was sealed under the previous one, from the ${describeUnsealSource(previous)})`
        : `kesd: the root key was re-sealed under the unseal key from the ${describeUnsealSource(current)} by another replica meanwhile`,
    );
    return { root, sealed: await readStoreSealedRootKey(dir, store) };
  }
}

/** The root key opened with init.yml's `unseal.previous` key (wiped here), or an error naming both keys. */
function openWithPrevious(
  sealed: SealedRootKey,
  previous: UnsealSource,
  current: UnsealSource,
  env: NodeJS.ProcessEnv,
): RootKeyInfo {
  let key: Buffer | undefined;
  try {
    key = unsealKeyFrom(previous, env);
    return unsealRoot(sealed, key);
  } catch (err) {
    const why =
      err instanceof WrongUnsealKeyError ? 'does not open it either' : `cannot be used: ${(err as Error).message}`;
    throw new UnsealError(
      `unseal key is wrong: the key from the ${describeUnsealSource(current)} does not open the root key, and the previous key (unseal.previous, ${describeUnsealSource(previous)}) ${why}`,
    );
  } finally {
    wipe(key);
  }
}

export interface ServerStart {
  readonly config: ServerConfig;
  readonly root: RootKeyInfo;
}

/**
 * declared: the parsed init.yml of `server --init` (initFile names it in messages). env: where the unseal key
 * variable is looked up (this process's environment loses it).
 */
export async function prepareServerStart(
  dir: string,
  declared: InitConfig | undefined,
  initFile: string | undefined,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<ServerStart> {
  // The root key is in the store init.yml names (it becomes .init below), else in the one .init names. The unseal
  // key comes from init.yml's source, else from the one recorded with the sealed root key; it is read once (from
  // this process's environment it is taken out: workers never inherit it) and wiped once the root key is open.
  const store = declared !== undefined ? toServerConfig(declared).store : await configuredStore(dir);
  const declaredSource = declared !== undefined ? unsealSourceOf(declared) : undefined;
  let unsealKey: Buffer | undefined;
  let sealed: SealedRootKey;
  let root: RootKeyInfo;
  try {
    if (declared !== undefined && !existsSync(join(dir, SERVER_CONFIG_FILE))) {
      unsealKey = unsealKeyFrom(declaredSource!, env);
      // A replica joining an etcd store while the unseal key rotates (its data dir is new at every start): the root
      // key there may still be sealed under the previous key. Re-seal it first; init then opens it with this key.
      if (store !== undefined && declared.unsealPrevious !== undefined) {
        const existing = await readStoreSealedRootKey(dir, store).catch((err: unknown) => {
          if (err instanceof RootKeyMissingError) return undefined;
          throw err;
        });
        if (existing !== undefined)
          wipe((await unsealOrRotate(dir, store, existing, unsealKey, declared, env, log)).root.key);
      }
      await initDataDir(dir, declared, { unsealKey });
      log(`kesd: initialised ${dir} from ${initFile}`);
    }
    // Unseal before anything is written or the store is opened: a wrong key must leave the data dir untouched.
    const found = await readStoreSealedRootKey(dir, store);
    unsealKey ??= unsealKeyFrom(declaredSource ?? found.source, env);
    ({ root, sealed } = await unsealOrRotate(dir, store, found, unsealKey, declared, env, log));
  } finally {
    wipe(unsealKey);
  }
  if (declared !== undefined) {
    if (declared.sysadmin !== root.sysadmin) {
      wipe(root.key);
      throw new Error(
        `${initFile} names system admin ${declared.sysadmin}, but ${dir} was initialised for ${root.sysadmin}`,
      );
    }
    // init.yml moved the unseal key (an environment variable → a key file): .unseal records where it is now. In
    // etcd the recorded source stays; replicas started with --init read init.yml's.
    if (store === undefined && !sameUnsealSource(sealed.source, declaredSource!))
      await rewriteUnsealSource(dir, sealed, declaredSource!);
    await writeServerConfig(dir, toServerConfig(declared));
  }
  const config = await readServerConfig(dir);
  await checkServerCertificate(config.tls);
  if (config.store === undefined) await removeStaleBackupStaging(dir); // a backup a crash interrupted: no one serves it now
  return { config, root };
}
