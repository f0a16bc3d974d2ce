// Backups of a data dir (`kesd backup`, `kesd restore`, `kesd check`): the format is store/backup.ts's. A restore is
// built aside and renamed into place, as `kesd init` does, so a failed one leaves the target as it was; a check
// opens everything a server would, and writes nothing.
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from '../crypto/random.js';
import { wipe } from '../crypto/secret.js';
import { readServerConfig, SERVER_CONFIG_FILE } from '../config/config.js';
import { syncDir } from '../fs/atomic.js';
import { System } from '../state/system.js';
import { BackupError, extractBackup, LMDB_FILE, writeBackupFile, type BackupManifest } from '../store/backup.js';
import { openLmdbStore } from '../store/lmdb.js';
import type { UnsealSource } from '../store/unseal.js';
import { configuredStore, openStore } from './data-dir.js';
import { openRootKey } from './root-key.js';

/** A backup of the data dir of a running (or stopped) kesd on the embedded store, written atomically to `file`. */
export async function backupDataDir(dir: string, file: string): Promise<BackupManifest> {
  if (!existsSync(join(dir, SERVER_CONFIG_FILE)))
    throw new BackupError(`backup: '${dir}' is not a kesd data dir (no ${SERVER_CONFIG_FILE})`);
  if ((await configuredStore(dir)) !== undefined) {
    throw new BackupError(
      `backup: '${dir}' keeps its keys in etcd: back up etcd with an etcd snapshot (docs/security.md), then 'kesd check' a restored store`,
    );
  }
  // openLmdbStore would create a missing file: a data dir without one is not one to back up.
  if (!existsSync(join(dir, LMDB_FILE))) throw new BackupError(`backup: '${dir}' has no store file '${LMDB_FILE}'`);
  const store = await openLmdbStore(join(dir, LMDB_FILE));
  try {
    return await writeBackupFile(dir, store, file);
  } finally {
    await store.close();
  }
}

/**
 * Restores a backup into `dir`: checked in full and built in a sibling temp dir first. An existing non-empty `dir`
 * is replaced only with `force` (stop kesd first): it is renamed aside, the restored dir renamed into place, and
 * the old one removed; a crash in between leaves the old one beside it, never a half-restored `dir`.
 */
export async function restoreDataDir(
  file: string,
  dir: string,
  opts: { force?: boolean } = {},
): Promise<BackupManifest> {
  const target = resolve(dir);
  const exists = existsSync(target);
  if (exists && !(await stat(target)).isDirectory()) throw new BackupError(`restore: '${dir}' is not a directory`);
  const empty = !exists || (await readdir(target)).length === 0;
  if (!empty && !opts.force)
    throw new BackupError(`restore: '${dir}' is not empty: use --force to replace it (stop kesd first)`);
  const parent = dirname(target);
  await mkdir(parent, { recursive: true });
  const staging = join(parent, `.${basename(target)}.restore-${randomBytes(4).toString('hex')}`);
  let manifest: BackupManifest;
  try {
    manifest = await extractBackup(file, staging);
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
  if (exists) {
    const aside = join(parent, `.${basename(target)}.replaced-${randomBytes(4).toString('hex')}`);
    await rename(target, aside);
    await rename(staging, target);
    await syncDir(parent);
    await rm(aside, { recursive: true, force: true });
  } else {
    await rename(staging, target);
  }
  await syncDir(parent);
  return manifest;
}

export interface CheckReport {
  enclaves: number;
  keys: number;
  versions: number;
  policies: number;
  identities: number;
  secrets: number;
}

/**
 * Opens a data dir as `kesd server` would (the unseal key from `source`, default the recorded one; the store .init
 * names, embedded or etcd) and opens every record: enclaves, policies, identities, every key with every version,
 * secrets. Writes nothing. Throws at the first thing that does not open.
 */
export async function checkDataDir(dir: string, env: NodeJS.ProcessEnv, source?: UnsealSource): Promise<CheckReport> {
  const config = await readServerConfig(dir, env);
  const root = await openRootKey(dir, config.store, env, source);
  let store: Awaited<ReturnType<typeof openStore>> | undefined;
  try {
    if (config.store === undefined && !existsSync(join(dir, LMDB_FILE)))
      throw new BackupError(`check: '${dir}' has no store file '${LMDB_FILE}'`);
    store = await openStore(dir, config);
    const system = await System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false });
    try {
      const report: CheckReport = {
        enclaves: system.enclaves.size,
        keys: 0,
        versions: 0,
        policies: 0,
        identities: 0,
        secrets: 0,
      };
      for (const enclave of system.enclaves.values()) {
        report.policies += enclave.policies.size;
        report.identities += enclave.identities.size;
        for await (const { name } of enclave.listKeys()) {
          const key = await enclave.key(name);
          report.keys++;
          report.versions += key.versions.length;
          enclave.forgetKeys(); // one key in memory at a time
        }
        for await (const _ of enclave.listSecrets()) report.secrets++;
      }
      return report;
    } finally {
      system.release();
    }
  } finally {
    wipe(root.key);
    await store?.close();
  }
}
