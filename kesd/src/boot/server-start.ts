// What `kesd server` does before it serves: initialise the data dir if init.yml asks and it is new, unseal the root
// key before anything is written or the store is opened, bring .unseal and .init in line with init.yml, check TLS.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { wipe } from '../crypto/secret.js';
import { checkServerCertificate } from '../identity/tls-files.js';
import {
  readServerConfig, SERVER_CONFIG_FILE, toServerConfig, unsealSourceOf, writeServerConfig, type InitConfig, type ServerConfig,
} from '../config/config.js';
import { openRootKey as unsealRoot, rewriteUnsealSource, sameUnsealSource, type RootKeyInfo, type SealedRootKey } from '../store/unseal.js';
import { configuredStore, initDataDir } from './data-dir.js';
import { readStoreSealedRootKey, unsealKeyFrom } from './root-key.js';

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
      await initDataDir(dir, declared, { unsealKey });
      log(`kesd: initialised ${dir} from ${initFile}`);
    }
    // Unseal before anything is written or the store is opened: a wrong key must leave the data dir untouched.
    sealed = await readStoreSealedRootKey(dir, store);
    unsealKey ??= unsealKeyFrom(declaredSource ?? sealed.source, env);
    root = unsealRoot(sealed, unsealKey);
  } finally {
    wipe(unsealKey);
  }
  if (declared !== undefined) {
    if (declared.sysadmin !== root.sysadmin) {
      wipe(root.key);
      throw new Error(`${initFile} names system admin ${declared.sysadmin}, but ${dir} was initialised for ${root.sysadmin}`);
    }
    // init.yml moved the unseal key (an environment variable → a key file): .unseal records where it is now. In
    // etcd the recorded source stays; replicas started with --init read init.yml's.
    if (store === undefined && !sameUnsealSource(sealed.source, declaredSource!)) await rewriteUnsealSource(dir, sealed, declaredSource!);
    await writeServerConfig(dir, toServerConfig(declared));
  }
  const config = await readServerConfig(dir);
  await checkServerCertificate(config.tls);
  return { config, root };
}
