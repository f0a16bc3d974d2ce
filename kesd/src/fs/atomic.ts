// Crash-safe small-file writes for <dir>/.init and <dir>/.unseal.
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** The states a crash can leave on disk, in order: each is reported once it is reached (a test kills there). */
export const ATOMIC_WRITE_STEPS = ['temp-created', 'temp-written', 'temp-synced', 'renamed', 'dir-synced'] as const;
export type AtomicWriteStep = (typeof ATOMIC_WRITE_STEPS)[number];

/** The temp files writeFileAtomic makes for `name` (one a crash left behind is safe to remove). */
export const isTempOf = (name: string, entry: string): boolean =>
  entry.startsWith(`.${name}.`) && /^\.[0-9a-f]{12}\.tmp$/.test(entry.slice(name.length + 1));

/**
 * Replaces `file` with `data` so that a crash leaves either the old or the new content, never a mix:
 * write a temp file in the same directory, fsync it, rename it over the target, fsync the directory
 * (the rename itself is only durable once the directory is flushed). The file is created with `mode`.
 */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  mode = 0o600,
  onStep?: (step: AtomicWriteStep) => void,
): Promise<void> {
  const dir = dirname(file);
  const tmp = join(dir, `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    onStep?.('temp-created');
    await fh.writeFile(data);
    onStep?.('temp-written');
    await fh.chmod(mode); // the umask may have narrowed it further; make it exact
    await fh.sync();
    onStep?.('temp-synced');
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, file);
    onStep?.('renamed');
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dir);
  onStep?.('dir-synced');
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
