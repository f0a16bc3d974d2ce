// Changing the unseal key (`kesd rekey`, and `kesd server --init` with `unseal.previous`): the root key is sealed
// again under the new unseal key, and nothing else changes (every record is sealed under keys derived from the root
// key, which stays the same). One atomic replacement of the sealed root key:
//   embedded store: <dir>/.unseal through a temp file, fsync, rename, directory fsync (fs/atomic.ts);
//   etcd:           one transaction that swaps the text only if it is still the one that was opened.
// A kill -9 at any point leaves the old text (opens with the old key only) or the new one (new key only), never
// neither: both keys are read and the root key opened before anything is written, and the new text is checked to
// open before it replaces the old. A rerun after a crash finds the new key already in place and says so.
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { wipe } from '../crypto/secret.js';
import type { StoreConfig } from '../config/config.js';
import { ATOMIC_WRITE_STEPS, isTempOf, type AtomicWriteStep } from '../fs/atomic.js';
import {
  describeUnsealSource,
  openRootKey,
  parseSealedRootKey,
  replaceSealedRootKey,
  rewriteUnsealSource,
  sameUnsealSource,
  sealRootKey,
  UNSEAL_FILE,
  UnsealError,
  WrongUnsealKeyError,
  type RootKeyInfo,
  type SealedRootKey,
  type UnsealSource,
} from '../store/unseal.js';
import { configuredStore, etcdModule } from './data-dir.js';
import { readStoreSealedRootKey, unsealKeyFrom } from './root-key.js';

/** The points a rekey passes, in order: each leaves a different state behind if the process dies right there. */
export type RekeyStep = 'opened' | AtomicWriteStep | 'swapped' | 'verified';
export const LMDB_REKEY_STEPS: readonly RekeyStep[] = ['opened', ...ATOMIC_WRITE_STEPS, 'verified'];
export const ETCD_REKEY_STEPS: readonly RekeyStep[] = ['opened', 'swapped', 'verified'];

export interface RekeyOptions {
  /** Where the current unseal key is; default: the source recorded with the sealed root key. */
  readonly current?: UnsealSource;
  /** Where the new unseal key is; it is recorded with the new sealed root key. */
  readonly next: UnsealSource;
  /** Where variables are looked up (this process's own environment loses them: store/environ.ts). */
  readonly env: NodeJS.ProcessEnv;
  readonly onStep?: (step: RekeyStep) => void;
}

/**
 * Re-seals the root key of the data dir (or of the etcd store its .init names) under the new unseal key.
 * 'already': the new key opens it already (a rekey that finished, or one a crash interrupted after the swap).
 */
export async function rekeyDataDir(dir: string, opts: RekeyOptions): Promise<'rekeyed' | 'already'> {
  const store = await configuredStore(dir);
  const sealed = await readStoreSealedRootKey(dir, store);
  const current = opts.current ?? sealed.source;
  const currentKey = unsealKeyFrom(current, opts.env);
  let nextKey: Buffer | undefined;
  let root: RootKeyInfo | undefined;
  try {
    nextKey = unsealKeyFrom(opts.next, opts.env);
    // Done already: a rekey that finished, or one a crash interrupted after the swap (its rerun has the new key as
    // the recorded, hence default, current one).
    const done = tryOpen(sealed, nextKey);
    if (done !== undefined) {
      wipe(done.key);
      if (store === undefined) {
        await removeStrayTemps(dir);
        if (!sameUnsealSource(sealed.source, opts.next)) await rewriteUnsealSource(dir, sealed, opts.next);
      }
      return 'already';
    }
    root = tryOpen(sealed, currentKey);
    if (root === undefined) {
      throw new UnsealError(
        `neither the current unseal key (${describeUnsealSource(current)}) nor the new one (${describeUnsealSource(opts.next)}) opens the root key in ${sealed.where}`,
      );
    }
    opts.onStep?.('opened');
    await resealRootKey(dir, store, sealed, root, opts.next, nextKey, opts.onStep);
    return 'rekeyed';
  } finally {
    wipe(currentKey, nextKey, root?.key);
  }
}

/**
 * Replaces `sealed` (as read) with `root` sealed under `key` from `source`, then reads it back and opens it with
 * `key`. On etcd the swap happens only if `sealed` is still there; if another replica swapped first (false), what it
 * wrote must open with `key` too.
 */
export async function resealRootKey(
  dir: string,
  store: StoreConfig | undefined,
  sealed: SealedRootKey,
  root: RootKeyInfo,
  source: UnsealSource,
  key: Buffer,
  onStep?: (step: RekeyStep) => void,
): Promise<boolean> {
  let replaced = true;
  const text = sealRootKey(source, key, root);
  wipe(openRootKey(parseSealedRootKey(text, 'the new sealed root key'), key).key); // it opens, before it replaces the old one
  if (store === undefined) {
    await removeStrayTemps(dir);
    await replaceSealedRootKey(dir, text, onStep);
  } else {
    const { openEtcdStore, swapEtcdRootKey } = await etcdModule();
    const etcd = openEtcdStore(store.etcd);
    try {
      replaced = await swapEtcdRootKey(etcd, sealed.text, text);
      if (replaced) onStep?.('swapped');
    } finally {
      await etcd.close();
    }
  }
  const written = await readStoreSealedRootKey(dir, store);
  const check = tryOpen(written, key);
  if (check === undefined)
    throw new UnsealError(
      `the root key in ${written.where} changed meanwhile and does not open with the unseal key from ${describeUnsealSource(source)}`,
    );
  wipe(check.key);
  onStep?.('verified');
  return replaced;
}

function tryOpen(sealed: SealedRootKey, key: Buffer): RootKeyInfo | undefined {
  try {
    return openRootKey(sealed, key);
  } catch (err) {
    if (err instanceof WrongUnsealKeyError) return undefined;
    throw err;
  }
}

/** Temp files of an interrupted .unseal write: never read, but they hold a sealed root key, so they go. */
async function removeStrayTemps(dir: string): Promise<void> {
  for (const entry of await readdir(dir))
    if (isTempOf(UNSEAL_FILE, entry)) await unlink(join(dir, entry)).catch(() => {});
}
