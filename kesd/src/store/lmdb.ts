// The embedded Store backend: one LMDB environment, string keys (paths), raw binary values.
//
// Layout: `path` names a single data file (noSubdir), e.g. `<dir>/store.mdb`; LMDB keeps its reader table
// in `<path>-lock` next to it. Several processes (cluster workers) may open the same file: LMDB allows
// many readers and serialises writers through the lock file, and nothing here takes an exclusive lock.
//
// Durability: lmdb-js turns `overlappingSync` on by default on Linux. Its write promises then resolve once a
// commit is *visible*, and the fsync happens later (node_modules/lmdb/README.md, "Overlapping Sync Options").
// We turn it off. The writer thread then starts each transaction without MDB_NOSYNC
// (node_modules/lmdb/src/writer.cpp, WriteWorker::Write), so mdb_txn_commit fdatasyncs the data pages and
// the meta page before it returns, and the write promise settles only after that. The README's put() contract:
// "Once the promise resolves, the transaction will have been fully written to the physical storage medium".
// A kill -9 test cannot tell these modes apart (the page cache survives the process); an strace of a put
// shows fdatasync returning before the promise settles. Open the file only through openLmdbStore, so no
// handle in the process ever turns overlappingSync back on.
import { statfsSync } from 'node:fs';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { open, IF_EXISTS, type RootDatabase } from 'lmdb';
import { StoreError, type Store, type StoreCondition, type StoreRecord, type StoreWrite } from './store.js';
import { syncDir } from '../fs/atomic.js';

// The map is reserved address space, not disk: the file grows with its data. 64 GiB leaves room for a
// very large key store; lmdb-js also grows the map itself when a commit needs more (its mdb.c addition).
const MAP_SIZE = 64 * 1024 ** 3;
const noop = () => {};

// lmdb-js 3.5.6 batches concurrent writes into one transaction. When such a batched commit fails (ENOSPC), it
// corrupts its own heap: the process aborts ("corrupted size vs. prev_size", "malloc(): corrupted top size"),
// reproducible with 8 concurrent puts on a full 2 MiB tmpfs; one write at a time fails cleanly every time.
// So writes go one at a time while the disk is nearly full (a batch can then no longer fail for space) or
// shortly after any write failed (the disk may be full in ways statfs does not show, e.g. a quota).
export const LOW_SPACE_BYTES = 64 * 1024 ** 2;
// Even one write at a time can abort the process when its commit hits ENOSPC with a value that needs overflow
// pages (seen with 4 KiB values on a full tmpfs). So near a full disk a write is refused before LMDB sees it
// unless this much room (plus the value) is left: a commit of one record writes far less.
export const RESERVE_BYTES = 256 * 1024;
const AFTER_FAILURE_MS = 10_000;

class LmdbStore implements Store {
  private closed = false;
  /** The tail of the one-at-a-time write chain (see LOW_SPACE_BYTES). */
  private serial: Promise<unknown> = Promise.resolve();
  private lastFailure = -Infinity;
  private pendingCareful = 0;

  constructor(
    private readonly db: RootDatabase<Buffer, string>,
    private readonly path: string,
    private readonly lowSpaceBytes: number,
  ) {}

  async get(path: string): Promise<Uint8Array | undefined> {
    this.assertOpen();
    this.fresh();
    return this.db.get(path);
  }

  async putIfAbsent(path: string, value: Uint8Array): Promise<boolean> {
    this.assertOpen();
    // The condition is checked inside the writer's transaction, so concurrent callers (threads or
    // processes) cannot both win. Resolves true iff the condition held and the put was committed.
    // Near a full disk writes may be refused (wrap): a path that exists needs none, so answer that first (a restart
    // on a full disk re-declares existing keys).
    if (this.pendingCareful > 0 || this.careful()) {
      this.fresh();
      if (this.db.get(path) !== undefined) return false;
    }
    return this.wrap(
      'put',
      path,
      () => this.db.ifNoExists(path, () => void this.db.put(path, value as Buffer)),
      value.length,
    );
  }

  async put(path: string, value: Uint8Array): Promise<void> {
    this.assertOpen();
    await this.wrap('put', path, () => this.db.put(path, value as Buffer), value.length);
  }

  async delete(path: string): Promise<boolean> {
    this.assertOpen();
    // A plain remove() resolves true even when nothing was there; conditioning it on existence gives the
    // "was something deleted" answer atomically.
    return this.wrap('delete', path, () => this.db.ifVersion(path, IF_EXISTS, () => void this.db.remove(path)));
  }

  async commit(conditions: readonly StoreCondition[], writes: readonly StoreWrite[]): Promise<boolean> {
    this.assertOpen();
    const size = writes.reduce((n, w) => n + ('put' in w ? w.value.length : 0), 0);
    const first = writes[0] === undefined ? '' : 'put' in writes[0] ? writes[0].put : writes[0].delete;
    // The callback runs inside the writer's transaction: the conditions are read there, so no other writer (thread
    // or process) commits between the check and the writes.
    return this.wrap(
      'commit',
      first,
      () =>
        this.db.transaction(() => {
          if (!conditions.every((c) => holds(c, this.db.get(c.path)))) return false;
          for (const w of writes) {
            if ('put' in w) void this.db.put(w.put, w.value as Buffer);
            else void this.db.remove(w.delete);
          }
          return true;
        }),
      size,
    );
  }

  async count(prefix: string): Promise<number> {
    this.assertOpen();
    this.fresh();
    let n = 0;
    for (const key of this.db.getKeys(prefix === '' ? {} : { start: prefix })) {
      if (typeof key !== 'string' || !key.startsWith(prefix)) break;
      n++;
    }
    return n;
  }

  async *list(prefix: string): AsyncIterable<StoreRecord> {
    this.assertOpen();
    this.fresh();
    // getRange walks a cursor lazily: one record is decoded per step, so memory stays flat. String keys
    // sort by their UTF-8 bytes, so all keys with the prefix are contiguous from `start: prefix` onwards.
    const range = this.db.getRange(prefix === '' ? {} : { start: prefix });
    for (const { key, value } of range) {
      if (typeof key !== 'string' || !key.startsWith(prefix)) break;
      yield { path: key, value };
    }
  }

  async paths(prefix: string, limit: number, after?: string): Promise<string[]> {
    this.assertOpen();
    this.fresh();
    const out: string[] = [];
    if (limit <= 0) return out;
    for (const key of this.db.getKeys(
      after !== undefined ? { start: after } : prefix === '' ? {} : { start: prefix },
    )) {
      if (typeof key !== 'string' || !key.startsWith(prefix)) break;
      if (key === after) continue;
      out.push(key);
      if (out.length >= limit) break;
    }
    return out;
  }

  /**
   * mdb_env_copy2 with compaction, in a read transaction of its own: a consistent snapshot while writers go on, with
   * no free pages (so no leftovers of deleted records). Written to `file` (which must not exist), mode 0600.
   */
  async snapshot(file: string): Promise<void> {
    this.assertOpen();
    const umask = process.umask(0o077); // LMDB creates the copy 0666 minus the umask
    try {
      await this.db.backup(file, true);
    } catch (err) {
      throw new StoreError(`store: snapshot of '${this.path}' failed: ${(err as Error).message}`, { cause: err });
    } finally {
      process.umask(umask);
    }
  }

  async status(): Promise<void> {
    this.assertOpen();
    this.db.getStats(); // a real read of the environment: throws if it is unusable
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }

  // Besides the promise a write returns, lmdb-js may create a shared commit promise that nobody holds
  // (seen with conditional writes of large values). If that commit fails, the orphan rejects unobserved and
  // Node kills the process. `committed.then` attaches to the current one; the failure itself is reported
  // through the write's own promise.
  private observeCommit(): void {
    this.db.committed.then(noop, noop);
  }

  // lmdb-js reuses one read snapshot until a timer of the next event turn (or its own commit) resets it. A
  // commit by another process (cluster worker) in between would stay invisible, and a request that already
  // saw it answered could read stale data here. Resetting first makes every read see all committed writes;
  // it costs a native call per read, and reads happen only on cache misses and admin paths.
  private fresh(): void {
    this.db.resetReadTxn();
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError(`store '${this.path}' is closed`);
  }

  // Turns both synchronous throws (e.g. key too large) and commit failures (MDB_MAP_FULL, ENOSPC, EIO)
  // into a rejected promise with context; the process keeps running.
  private wrap<T>(op: string, path: string, start: () => Promise<T>, size = 0): Promise<T> {
    if (this.pendingCareful === 0 && !this.careful()) return this.attempt(op, path, start);
    this.pendingCareful++;
    const run = () => {
      const free = this.freeBytes();
      if (free < RESERVE_BYTES + size) {
        this.lastFailure = performance.now();
        return Promise.reject(
          new StoreError(
            `store: ${op} '${path}' failed: no space left on device (${Math.floor(free / 1024)} KiB free; kesd keeps ${RESERVE_BYTES / 1024} KiB)`,
          ),
        );
      }
      return this.attempt(op, path, start);
    };
    const result = this.serial.then(run, run).finally(() => this.pendingCareful--);
    this.serial = result.catch(noop);
    return result;
  }

  /** Writes one at a time when the disk is nearly full or a write failed recently. */
  private careful(): boolean {
    return performance.now() - this.lastFailure < AFTER_FAILURE_MS || this.freeBytes() < this.lowSpaceBytes;
  }

  private freeBytes(): number {
    try {
      const fs = statfsSync(dirname(this.path));
      return fs.bavail * fs.bsize;
    } catch {
      return 0;
    }
  }

  private async attempt<T>(op: string, path: string, start: () => Promise<T>): Promise<T> {
    try {
      const pending = start();
      this.observeCommit();
      return await pending;
    } catch (err) {
      this.lastFailure = performance.now();
      this.observeCommit();
      const reason = await commitFailure(err);
      throw new StoreError(`store: ${op} '${path}' failed: ${reason}`, { cause: err });
    }
  }
}

function holds(c: StoreCondition, value: Uint8Array | undefined): boolean {
  if (c.is === 'absent') return value === undefined;
  if (c.is === 'present') return value !== undefined;
  return value !== undefined && Buffer.from(value.buffer, value.byteOffset, value.byteLength).equals(c.is);
}

// A failed commit rejects with "Commit failed (see commitError for details)" and carries the real error as
// `commitError`, a second promise that lmdb-js rejects in the same native callback. Left unobserved, that
// promise is an unhandled rejection, which kills the process; so observe it and report its message.
async function commitFailure(err: unknown): Promise<string> {
  const pending = (err as { commitError?: Promise<unknown> } | null)?.commitError;
  if (!pending || typeof pending.then !== 'function') return (err as Error).message;
  let detail: string | undefined;
  pending.catch((e: unknown) => void (detail = (e as Error)?.message));
  await new Promise((r) => setImmediate(r));
  return detail ?? (err as Error).message;
}

export interface LmdbOptions {
  /** Below this much free space writes go one at a time (default LOW_SPACE_BYTES). */
  readonly lowSpaceBytes?: number;
}

/** Owner-only (0600), if the file exists and allows more. */
async function restrictMode(file: string): Promise<void> {
  let mode: number;
  try {
    mode = (await stat(file)).mode & 0o777;
  } catch {
    return;
  }
  if ((mode & 0o077) !== 0) await chmod(file, mode & 0o700);
}

export async function openLmdbStore(path: string, opts: LmdbOptions = {}): Promise<Store> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  let db: RootDatabase<Buffer, string>;
  // LMDB creates its data and lock files 0664 minus the umask; kesd's files are 0600 whatever the umask (and a data
  // dir made before this is brought in line).
  const umask = process.umask(0o077);
  try {
    db = open<Buffer, string>({
      path,
      noSubdir: true,
      encoding: 'binary',
      overlappingSync: false,
      mapSize: MAP_SIZE,
    });
  } catch (err) {
    throw new StoreError(`store: cannot open '${path}': ${(err as Error).message}`, { cause: err });
  } finally {
    process.umask(umask);
  }
  for (const file of [path, `${path}-lock`]) await restrictMode(file);
  await syncDir(dir); // make the new file's directory entry durable too
  return new LmdbStore(db, path, opts.lowSpaceBytes ?? LOW_SPACE_BYTES);
}
