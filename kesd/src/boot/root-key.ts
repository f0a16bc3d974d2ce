// Unsealing the root key at start: from <dir>/.unseal or from etcd, with the unseal key from its source (read once,
// taken out of this process's environment, wiped once the root key is open).
import { wipe } from '../crypto/secret.js';
import type { StoreConfig } from '../config/config.js';
import {
  describeUnsealSource,
  openRootKey as unsealRoot,
  readSealedRootKey,
  takeUnsealKey,
  type RootKeyInfo,
  type SealedRootKey,
  type UnsealSource,
} from '../store/unseal.js';
import { etcdModule } from './data-dir.js';

/** The sealed root key of the store `store` names: <dir>/.unseal for the embedded store, else the one in etcd. */
export async function readStoreSealedRootKey(dir: string, store: StoreConfig | undefined): Promise<SealedRootKey> {
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
export function unsealKeyFrom(source: UnsealSource, env: NodeJS.ProcessEnv): Buffer {
  const { key, residue } = takeUnsealKey(source, env);
  if (residue !== undefined) {
    console.error(
      `kesd: warning: the unseal key from the ${describeUnsealSource(source)} may stay in this process's memory: ${residue}; an unseal key file (unseal.file.path) avoids this`,
    );
  }
  return key;
}

/**
 * Unseals the root key of the store `store` names (see readStoreSealedRootKey) with the unseal key from `source`,
 * by default the source recorded with it. Never writes.
 */
export async function openRootKey(
  dir: string,
  store: StoreConfig | undefined,
  env: NodeJS.ProcessEnv,
  source?: UnsealSource,
): Promise<RootKeyInfo> {
  const sealed = await readStoreSealedRootKey(dir, store);
  const unsealKey = unsealKeyFrom(source ?? sealed.source, env);
  try {
    return unsealRoot(sealed, unsealKey);
  } finally {
    wipe(unsealKey);
  }
}
