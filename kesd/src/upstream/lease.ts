// Exactly one sync loop drains the upstream queue, among the worker processes of a server and the replicas sharing
// an etcd store: the one holding the lease, a record in the store (`sync/lease`) changed only by compare-and-set
// commits. Concurrent drainers would not be safe: one that read Vault before a newer change was synced by the
// other could write the older key back.
//
// No clocks are compared across machines. The holder rewrites the record every BEAT_MS; a contender takes the lease
// over only after it has seen the same record (the same sealed bytes) for TAKEOVER_MS by its own monotonic clock.
// The holder stops calling Vault once HOLD_MS have passed since its last successful rewrite, and a Vault call lasts
// at most CALL_TIMEOUT_MS (vault-http.ts): HOLD_MS + CALL_TIMEOUT_MS < TAKEOVER_MS, so a holder that lost the lease
// (stalled, cut off from the store) has finished its last Vault call before anyone else starts one.
import { randomBytes } from '../crypto/random.js';
import type { RecordStore } from '../state/records.js';
import { CALL_TIMEOUT_MS } from './vault-http.js';

export const LEASE_PATH = 'sync/lease';
export const BEAT_MS = 2000;
export const HOLD_MS = 6000;
export const TAKEOVER_MS = 15_000;
if (HOLD_MS + CALL_TIMEOUT_MS >= TAKEOVER_MS) throw new Error('lease timings overlap'); // a guard for whoever tunes them

/** The lease record; the holder also publishes what it saw of Vault, for /v1/status of every process. */
export interface LeaseRecord {
  readonly holder: string;
  readonly beat: number;
  readonly renewed_at: string;
  /** Whether the holder's last call to Vault got an answer. */
  readonly reachable: boolean;
  readonly error?: string;
}

export class Lease {
  readonly id = randomBytes(8).toString('hex');
  private renewedAt = -Infinity;
  private seen: { sealed: Buffer; since: number } | undefined;
  private beat = 0;

  constructor(
    private readonly records: RecordStore,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Whether this process may call Vault now. */
  held(): boolean {
    return this.now() - this.renewedAt < HOLD_MS;
  }

  /** One beat: take a free or abandoned lease, or renew ours (publishing `vault`). Resolves whether we hold it. */
  async beatOnce(vault: { reachable: boolean; error?: string }): Promise<boolean> {
    const started = this.now();
    const current = await this.records.getSealed<LeaseRecord>(LEASE_PATH);
    const mine = current === undefined || current.record.holder === this.id;
    if (!mine) {
      const sealed = Buffer.from(current.sealed);
      if (this.seen === undefined || !this.seen.sealed.equals(sealed)) this.seen = { sealed, since: started };
      if (started - this.seen.since < TAKEOVER_MS) {
        this.renewedAt = -Infinity;
        return false;
      }
    }
    const next: LeaseRecord = { holder: this.id, beat: ++this.beat, renewed_at: new Date().toISOString(), ...vault };
    const won = await this.records.commit(
      [{ path: LEASE_PATH, is: current?.sealed ?? 'absent' }],
      [{ put: LEASE_PATH, record: next }],
    );
    // Counted from before the read: the record was ours no later than that.
    this.renewedAt = won ? started : -Infinity;
    if (won) this.seen = undefined;
    return won;
  }

  /** Gives the lease up (a clean stop), so another process takes over at its next beat. */
  async release(): Promise<void> {
    const current = await this.records.getSealed<LeaseRecord>(LEASE_PATH);
    this.renewedAt = -Infinity;
    if (current?.record.holder === this.id)
      await this.records.commit([{ path: LEASE_PATH, is: current.sealed }], [{ delete: LEASE_PATH }]);
  }
}

/** The lease as any process sees it (for status): undefined if nobody holds it. */
export function readLease(records: RecordStore): Promise<LeaseRecord | undefined> {
  return records.get<LeaseRecord>(LEASE_PATH);
}
