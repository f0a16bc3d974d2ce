// kesd's backup format: one tar file holding what a data dir of the embedded store needs to come back, and nothing
// that is not sealed already:
//   kesd-backup.json   the manifest: {"format":"kesd-backup","version":1,"created_at","kesd","files":[{name,size,sha256}]}
//   .init              the server config (TLS paths, address, declared keys; no key material)
//   .unseal            the root key, sealed under the unseal key of the moment of the backup
//   db                 a compacted, consistent LMDB snapshot: records sealed under keys derived from the root key
// Without the unseal key the file is useless; with it, it is every key kesd had at that moment. The restore checks
// every file against the manifest before anything is put in place.
import { createHash, randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { SERVER_CONFIG_FILE } from '../config/config.js';
import { syncDir } from '../fs/atomic.js';
import { tarEnd, tarEntries, TarError, tarHeader, tarPadding } from '../fs/tar.js';
import { VERSION } from '../version.js';
import { openLmdbStore } from './lmdb.js';
import type { Store } from './store.js';
import { UNSEAL_FILE } from './unseal.js';

export const BACKUP_MANIFEST = 'kesd-backup.json';
/** Snapshots the server stages in its data dir for GET /v1/sys/backup; one a crash left is removed at the next start. */
export const BACKUP_STAGING_PREFIX = '.backup-';
/** The LMDB file in a data dir (boot/data-dir.ts names it too). */
export const LMDB_FILE = 'db';
const FILES = [SERVER_CONFIG_FILE, UNSEAL_FILE, LMDB_FILE] as const;
const CHUNK = 1 << 20;

export class BackupError extends Error {
  override name = 'BackupError';
}

export interface BackupManifest {
  readonly format: 'kesd-backup';
  readonly version: 1;
  readonly created_at: string;
  /** The kesd version that wrote it. */
  readonly kesd: string;
  readonly files: readonly { readonly name: string; readonly size: number; readonly sha256: string }[];
}

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(file, 'r');
  try {
    for await (const chunk of fh.createReadStream({ highWaterMark: CHUNK })) h.update(chunk as Buffer);
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/**
 * Copies what a restore needs from the data dir `dir` of the embedded store `store` into `staging` (created here,
 * 0700): .init and .unseal as they are, and a snapshot of the store taken while it serves.
 */
export async function snapshotDataDir(dir: string, store: Store, staging: string): Promise<BackupManifest> {
  if (store.snapshot === undefined)
    throw new BackupError(
      'backup: this store is backed up with its own tools (etcd: an etcd snapshot, see docs/security.md), not by kesd',
    );
  await mkdir(staging, { mode: 0o700 });
  for (const name of [SERVER_CONFIG_FILE, UNSEAL_FILE]) {
    try {
      await copyFile(join(dir, name), join(staging, name));
    } catch (err) {
      throw new BackupError(
        `backup: cannot read '${join(dir, name)}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    await chmod(join(staging, name), 0o600);
  }
  await store.snapshot(join(staging, LMDB_FILE));
  await chmod(join(staging, LMDB_FILE), 0o600);
  const files = [];
  for (const name of FILES)
    files.push({ name, size: (await stat(join(staging, name))).size, sha256: await sha256Of(join(staging, name)) });
  return { format: 'kesd-backup', version: 1, created_at: new Date().toISOString(), kesd: VERSION.version, files };
}

/** The backup file's bytes, from a snapshot in `staging`: the manifest first, then each file, in chunks. */
export async function* backupChunks(staging: string, manifest: BackupManifest): AsyncGenerator<Buffer> {
  const text = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  yield Buffer.concat([tarHeader(BACKUP_MANIFEST, text.length), text, tarPadding(text.length)]);
  for (const { name, size } of manifest.files) {
    yield tarHeader(name, size);
    const fh = await open(join(staging, name), 'r');
    try {
      let sent = 0;
      for await (const chunk of fh.createReadStream({ highWaterMark: CHUNK })) {
        sent += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
      if (sent !== size) throw new BackupError(`backup: '${name}' changed while it was written`);
    } finally {
      await fh.close();
    }
    yield tarPadding(size);
  }
  yield tarEnd();
}

/** Writes a backup of the embedded-store data dir `dir` to `file` atomically (temp file, fsync, rename). */
export async function writeBackupFile(dir: string, store: Store, file: string): Promise<BackupManifest> {
  const target = resolve(file);
  const staging = join(dirname(target), `.${basename(target)}.staging-${randomBytes(6).toString('hex')}`);
  try {
    const manifest = await snapshotDataDir(dir, store, staging);
    await writeFileFrom(target, backupChunks(staging, manifest));
    return manifest;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/**
 * Writes `chunks` to `file` through a temp file beside it, fsynced, renamed over it, the directory fsynced; 0600.
 * `check` reads the complete temp file before it takes the name (a backup received over the network is verified).
 */
export async function writeFileFrom(
  file: string,
  chunks: AsyncIterable<Uint8Array>,
  check?: (tmp: string) => Promise<unknown>,
): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    for await (const chunk of chunks) await fh.write(chunk);
    await fh.sync();
    await fh.close();
    await check?.(tmp);
    await rename(tmp, file);
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(dirname(file));
}

/** Reads and checks a backup file: its manifest, and every file it lists (size and SHA-256). Nothing is written. */
export async function verifyBackup(file: string): Promise<BackupManifest> {
  return readBackup(file, undefined);
}

/**
 * Checks a backup and extracts it into `into` (a new directory, created 0700): every file is checked against the
 * manifest while it is copied, and fsynced; the LMDB snapshot must open. Throws before anything is left half-done
 * (the caller removes `into` on failure).
 */
export async function extractBackup(file: string, into: string): Promise<BackupManifest> {
  await mkdir(into, { mode: 0o700 });
  const manifest = await readBackup(file, into);
  const store = await openLmdbStore(join(into, LMDB_FILE)).catch((err: Error) => {
    throw new BackupError(`restore: the store snapshot in '${file}' does not open: ${err.message}`);
  });
  try {
    await store.status();
  } finally {
    await store.close();
  }
  await rm(join(into, `${LMDB_FILE}-lock`), { force: true }); // the reader table that open made: LMDB makes its own
  await syncDir(into);
  return manifest;
}

async function readBackup(file: string, into: string | undefined): Promise<BackupManifest> {
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    throw new BackupError(
      `backup: cannot read '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const bad = (why: string) => new BackupError(`backup: '${file}' is not a kesd backup, or it is damaged: ${why}`);
  try {
    const size = (await fh.stat()).size;
    let manifest: BackupManifest | undefined;
    const seen = new Set<string>();
    for await (const entry of tarEntries(fh, size)) {
      if (manifest === undefined) {
        if (entry.name !== BACKUP_MANIFEST || entry.size > 64 * 1024)
          throw bad(`it does not start with ${BACKUP_MANIFEST}`);
        const text = Buffer.alloc(entry.size);
        await fh.read(text, 0, entry.size, entry.offset);
        manifest = parseManifest(text.toString('utf8'), bad);
        continue;
      }
      const listed = manifest.files.find((f) => f.name === entry.name);
      if (listed === undefined || seen.has(entry.name)) throw bad(`'${entry.name}' is not in its manifest`);
      seen.add(entry.name);
      if (entry.size !== listed.size)
        throw bad(`'${entry.name}' has ${entry.size} bytes, the manifest says ${listed.size}`);
      if (
        (await copyChecked(fh, entry.offset, entry.size, into === undefined ? undefined : join(into, entry.name))) !==
        listed.sha256
      ) {
        throw bad(`'${entry.name}' does not match its SHA-256 in the manifest`);
      }
    }
    if (manifest === undefined) throw bad('it is empty');
    const missing = manifest.files.filter((f) => !seen.has(f.name)).map((f) => f.name);
    if (missing.length > 0) throw bad(`it lacks ${missing.join(', ')}`);
    return manifest;
  } catch (err) {
    if (err instanceof TarError) throw bad(err.message);
    throw err;
  } finally {
    await fh.close();
  }
}

function parseManifest(text: string, bad: (why: string) => BackupError): BackupManifest {
  let m: Partial<BackupManifest>;
  try {
    m = JSON.parse(text) as Partial<BackupManifest>;
  } catch {
    throw bad('its manifest is not JSON');
  }
  if (m.format !== 'kesd-backup') throw bad('its manifest is not a kesd backup manifest');
  if (m.version !== 1)
    throw bad(`its format version ${JSON.stringify(m.version)} is not supported (this kesd reads version 1)`);
  const files = Array.isArray(m.files) ? m.files : [];
  const names = files.map((f) => f?.name).sort();
  if (JSON.stringify(names) !== JSON.stringify([...FILES].sort()))
    throw bad(`its manifest must list ${FILES.join(', ')}`);
  for (const f of files) {
    if (!Number.isSafeInteger(f.size) || f.size < 0 || typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256))
      throw bad(`its manifest entry for '${f.name}' is invalid`);
  }
  return m as BackupManifest;
}

/** Hashes `size` bytes at `offset`, copying them to `to` (fsynced, 0600) when given. */
async function copyChecked(fh: FileHandle, offset: number, size: number, to: string | undefined): Promise<string> {
  const h = createHash('sha256');
  const out = to === undefined ? undefined : await open(to, 'wx', 0o600);
  try {
    const buf = Buffer.alloc(Math.min(CHUNK, Math.max(size, 1)));
    for (let done = 0; done < size; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - done), offset + done);
      if (bytesRead === 0) throw new BackupError('backup: the file ended early');
      h.update(buf.subarray(0, bytesRead));
      await out?.write(buf.subarray(0, bytesRead));
      done += bytesRead;
    }
    await out?.sync();
  } finally {
    await out?.close();
  }
  return h.digest('hex');
}

/** Backup files named by the time they were taken, so a directory of them sorts oldest first. */
export const backupFileName = (at = new Date()): string =>
  `kesd-backup-${at
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')}.tar`;
const BACKUP_NAME = /^kesd-backup-\d{8}T\d{6}Z\.tar$/;

/** Removes staged snapshots a crash left in the data dir (called before serving, when no backup can be running). */
export async function removeStaleBackupStaging(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [])) {
    if (name.startsWith(BACKUP_STAGING_PREFIX)) await rm(join(dir, name), { recursive: true, force: true });
  }
}

/** Deletes all but the newest `keep` backups named by backupFileName in `dir`; returns the names deleted. */
export async function pruneBackups(dir: string, keep: number): Promise<string[]> {
  const all = (await readdir(dir)).filter((n) => BACKUP_NAME.test(n)).sort();
  const old = all.slice(0, Math.max(0, all.length - keep));
  for (const name of old) await rm(join(dir, name), { force: true });
  return old;
}
