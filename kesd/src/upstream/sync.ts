// The sync loop: drains the upstream queue (state/sync-queue.ts) into Vault, oldest change first, in the process
// that holds the lease (lease.ts). Every process serving the store runs one; the others only contend for the lease
// and report status. A change is acknowledged (removed from the queue) only after Vault holds what it asks for, and
// only if it was not changed meanwhile; applying one twice is harmless, so a crash between Vault's answer and the
// acknowledgement just applies it again. While Vault does not answer, changes stay queued and the loop retries
// with a backoff; kesd itself never waits for Vault.
import { keyId } from '../crypto/key.js';
import { encodeKesStoredKey, parseKesStoredKey } from '../kes/stored-key.js';
import type { PendingChange, QueueStats, UpstreamKey } from '../state/sync-queue.js';
import type { System } from '../state/system.js';
import { BEAT_MS, Lease, readLease } from './lease.js';
import { VaultError } from './vault-http.js';

/** What the loop needs of the upstream: VaultKeystore (vault-keystore.ts). */
export interface UpstreamKeystore {
  location(name: string): string;
  get(name: string): Promise<string | undefined>;
  create(name: string, value: string): Promise<'created' | 'exists'>;
  replace(name: string, value: string): Promise<void>;
  delete(name: string): Promise<void>;
}

export interface SyncOptions {
  /** Error log (never given key material or tokens). */
  readonly log: (message: string) => void;
  /** How often the holder looks for changes other processes queued (its own are synced at once). */
  readonly pollMs?: number;
  /** Changes applied at once (distinct key names: they do not depend on each other). */
  readonly concurrency?: number;
  /** How long a conflicted entry waits before it is tried again, unless it changes (default 10 s). */
  readonly conflictRetryMs?: number;
  /** Called in a test at named points of a sync (crash-point tests); undefined in production. */
  readonly failpoint?: (point: 'before-vault' | 'before-ack' | 'after-ack') => void;
}

export interface UpstreamStatus {
  readonly backlog: number;
  readonly conflicts: number;
  /** Seconds since the oldest unsynced change; 0 without a backlog. */
  readonly oldestUnsyncedSeconds: number;
  /** The syncing process's last call to Vault got an answer (false if no process holds the lease). */
  readonly reachable: boolean;
  /** Why it did not, if it did not. */
  readonly lastError?: string;
}

type Outcome = 'synced' | 'conflict' | 'changed';

const MAX_BACKOFF_MS = 10_000;
const CONFLICT_RETRY_MS = 10_000;

export class UpstreamSync {
  readonly lease: Lease;
  /** Changes this process synced, and sync attempts that failed (metrics). */
  synced = 0;
  failures = 0;
  private reachable = true;
  private lastError: string | undefined;
  private backoffMs = 0;
  private backoffUntil = 0;
  private lastBeat = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly noted = new Map<string, string>();
  private readonly conflicts = new Map<string, { sealed: Buffer; until: number }>();
  private reading: Promise<UpstreamStatus> | undefined;

  constructor(
    private readonly system: System,
    private readonly keystore: UpstreamKeystore,
    private readonly opts: SyncOptions,
  ) {
    this.lease = new Lease(system.records);
    system.upstreamQueued = () => this.kick();
  }

  start(): void {
    const every = this.opts.pollMs ?? 500;
    const tick = () => {
      this.timer = setTimeout(() => void this.tick().finally(() => this.stopped || tick()), every);
      this.timer.unref();
    };
    void this.tick().finally(tick);
  }

  /** A change was queued in this process: sync it now if this process holds the lease. */
  kick(): void {
    this.again = true;
    if (this.lease.held() && performance.now() >= this.backoffUntil) void this.pump();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    if (!this.system.sealed) await this.lease.release().catch(() => undefined);
  }

  private async tick(): Promise<void> {
    if (this.stopped || this.system.sealed) return;
    const now = performance.now();
    if (now - this.lastBeat >= BEAT_MS) {
      this.lastBeat = now;
      try {
        await this.lease.beatOnce({ reachable: this.reachable, ...(this.lastError ? { error: this.lastError } : {}) });
      } catch (err) {
        if (!this.system.sealed)
          this.note('lease', `upstream: cannot renew the sync lease in the store: ${(err as Error).message}`);
      }
    }
    this.again = true;
    if (this.lease.held() && performance.now() >= this.backoffUntil) await this.pump();
  }

  /** One drain at a time; a kick during a drain runs another. */
  private pump(): Promise<void> {
    this.running ??= (async () => {
      while (this.again && !this.stopped && !this.system.sealed && this.lease.held()) {
        this.again = false;
        if (!(await this.drain())) break;
      }
    })().finally(() => (this.running = undefined));
    return this.running;
  }

  /** Applies every queued change; false if Vault did not answer (the loop backs off). */
  private async drain(): Promise<boolean> {
    const queue = this.system.upstreamQueue();
    if (queue === undefined) return true;
    const inFlight = new Set<Promise<void>>();
    let unavailable: VaultError | undefined;
    const limit = this.opts.concurrency ?? 8;
    try {
      for await (const change of queue.pending()) {
        if (unavailable !== undefined || !this.lease.held() || this.stopped || this.system.sealed) break;
        if (this.waitingConflict(change)) continue;
        const done: Promise<void> = this.syncOne(change, (c) => queue.ack(c))
          .catch((err: unknown) => {
            if (err instanceof VaultError && err.unavailable) unavailable ??= err;
            else this.failed(change.name, err);
          })
          .finally(() => inFlight.delete(done));
        inFlight.add(done);
        if (inFlight.size >= limit) await Promise.race(inFlight);
      }
    } catch (err) {
      // The store failed (or the system was sealed): try again at the next tick.
      if (!this.system.sealed) this.note('store', `upstream: cannot read the queue: ${(err as Error).message}`);
    }
    await Promise.all(inFlight);
    if (unavailable !== undefined) {
      this.unreachable(unavailable);
      return false;
    }
    this.backoffMs = 0;
    this.backoffUntil = 0;
    return true;
  }

  private async syncOne(change: PendingChange, ack: (c: PendingChange) => Promise<boolean>): Promise<void> {
    this.opts.failpoint?.('before-vault');
    const outcome = await this.apply(change);
    this.answered();
    if (outcome === 'conflict') return;
    this.opts.failpoint?.('before-ack');
    if (await ack(change)) {
      this.synced++;
      this.noted.delete(change.name);
      this.opts.failpoint?.('after-ack');
    } else {
      this.again = true; // changed while it was synced: the new entry is synced next
    }
  }

  /** A conflicted entry is tried again after CONFLICT_RETRY_MS, or at once if it changed. */
  private waitingConflict(change: PendingChange): boolean {
    const last = this.conflicts.get(change.name);
    if (last === undefined) return false;
    if (last.sealed.equals(change.sealed) && performance.now() < last.until) return true;
    this.conflicts.delete(change.name);
    return false;
  }

  /**
   * Makes Vault hold what the entry wants, whatever it held; 'conflict' if that would touch a key that is not kesd's
   * (not the wanted one, nor one `known` lists). The wanted key with another HMAC key (a KES JSON-era key has none,
   * and kesd gave it one) is rewritten, so a restore from Vault brings back the HMAC key too.
   */
  private async apply(change: PendingChange): Promise<Outcome> {
    const { name, entry } = change;
    const where = this.keystore.location(name);
    const stored = await this.keystore.get(name);
    let current: { bytes: Buffer; hmac?: Buffer } | undefined;
    if (stored !== undefined) {
      try {
        current = parseKesStoredKey(Buffer.from(stored));
      } catch (err) {
        return this.conflict(
          change,
          `Vault holds something under '${where}' that is not a KES key (${(err as Error).message})`,
        );
      }
    }
    const ours = (bytes: Buffer) => entry.known.includes(keyId(bytes));
    const want = entry.want;
    if (want === null) {
      if (current === undefined) return 'synced';
      if (!ours(current.bytes))
        return this.conflict(
          change,
          `Vault holds a different key under '${where}' than the one kesd deleted; left in place`,
        );
      await this.keystore.delete(name);
      return 'synced';
    }
    const wanted = kesKey(want);
    if (current === undefined) {
      if ((await this.keystore.create(name, encodeKesStoredKey(wanted))) === 'created') return 'synced';
      // KV v2 refuses a new version 1 while the entry's metadata lives on (its version 1 deleted or destroyed): KES
      // could not read it either. Someone else's doing: leave it to them.
      if ((await this.keystore.get(name)) === undefined) {
        return this.conflict(
          change,
          `Vault keeps metadata under '${where}' without a readable version 1 (deleted or destroyed?); delete the entry's metadata to let kesd write it`,
        );
      }
      return 'changed'; // written by someone else meanwhile: compared again next round
    }
    const same = current.bytes.equals(wanted.bytes);
    if (same && current.hmac?.equals(wanted.hmac)) return 'synced';
    if (!same && !ours(current.bytes))
      return this.conflict(
        change,
        `Vault holds a different key under '${where}', not one kesd wrote; kesd's key is not written there`,
      );
    await this.keystore.replace(name, encodeKesStoredKey(wanted));
    return 'synced';
  }

  private async conflict(change: PendingChange, reason: string): Promise<Outcome> {
    const queue = this.system.upstreamQueue();
    await queue?.noteConflict(change.name, reason);
    this.conflicts.set(change.name, {
      sealed: Buffer.from(change.sealed),
      until: performance.now() + (this.opts.conflictRetryMs ?? CONFLICT_RETRY_MS),
    });
    if (this.noted.get(change.name) !== reason) {
      this.noted.set(change.name, reason);
      this.opts.log(`upstream: key '${change.name}' stays queued: ${reason}`);
    }
    return 'conflict';
  }

  private answered(): void {
    if (!this.reachable) this.opts.log('upstream: Vault answers again; syncing the queued changes');
    this.reachable = true;
    this.lastError = undefined;
  }

  private unreachable(err: VaultError): void {
    this.failures++;
    if (this.reachable)
      this.opts.log(`upstream: ${err.message}; key changes stay queued in kesd's store until Vault answers`);
    this.reachable = false;
    this.lastError = err.message;
    this.backoffMs = Math.min(Math.max(this.backoffMs * 2, 250), MAX_BACKOFF_MS);
    this.backoffUntil = performance.now() + this.backoffMs;
    this.again = true;
  }

  private failed(name: string, err: unknown): void {
    this.failures++;
    this.note(name, `upstream: syncing key '${name}' failed, it stays queued: ${(err as Error).message}`);
  }

  /** Logs a message once until a different one comes for the same subject. */
  private note(subject: string, message: string): void {
    if (this.noted.get(subject) === message) return;
    this.noted.set(subject, message);
    this.opts.log(message);
  }

  /**
   * The queue and the syncing process's view of Vault, from the store (so every process reports the same). Calls that
   * come while a read is under way share it (a scrape asks once per gauge); a call after it reads again, so a status
   * never predates a change its caller already saw, whichever process answers.
   */
  status(): Promise<UpstreamStatus> {
    this.reading ??= this.readStatus().finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async readStatus(): Promise<UpstreamStatus> {
    const queue = this.system.upstreamQueue();
    const stats: QueueStats = queue === undefined ? { backlog: 0, conflicts: 0 } : await queue.stats();
    const lease = await readLease(this.system.records);
    // A lease not renewed for a while has no holder any more: nobody is talking to Vault.
    const fresh = lease !== undefined && Date.now() - Date.parse(lease.renewed_at) < 30_000;
    return {
      backlog: stats.backlog,
      conflicts: stats.conflicts,
      oldestUnsyncedSeconds:
        stats.oldest === undefined ? 0 : Math.max(0, Math.floor((Date.now() - Date.parse(stats.oldest)) / 1000)),
      reachable: fresh && lease.reachable,
      ...(fresh && !lease.reachable && lease.error ? { lastError: lease.error } : {}),
    };
  }
}

function kesKey(k: UpstreamKey) {
  return {
    algorithm: k.algorithm,
    bytes: Buffer.from(k.key, 'base64'),
    hmac: Buffer.from(k.hmac, 'base64'),
    createdAt: k.created_at,
    createdBy: k.created_by,
  };
}

/** Failpoints a crash-point test names in KESD_TEST_FAILPOINT: the process kills itself (SIGKILL) there. */
export function failpointFromEnv(env: NodeJS.ProcessEnv): SyncOptions['failpoint'] {
  const at = env.KESD_TEST_FAILPOINT;
  if (at === undefined || at === '') return undefined;
  return (point) => {
    if (point === at) process.kill(process.pid, 'SIGKILL');
  };
}
