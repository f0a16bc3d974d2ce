// The upstream queue: what kesd still owes the Vault that mirrors one enclave's keys (config/upstream.ts). A change
// of a key (created, imported, deleted; a mirrored enclave's keys have no versions) is queued in the same store commit as the key record
// itself, so a change is queued if and only if it happened, and an acknowledged change survives kill -9 like the key.
//
// One entry per key name, coalesced: `want` is what Vault should hold for the name now (the key, or nothing), and
// `known` lists the fingerprints of keys kesd may already have given Vault under that name, which `want` may replace
// or delete. Anything else found in Vault under the name is not kesd's to touch (a conflict). Syncing an entry makes
// Vault hold `want` whatever it held before (idempotent), and the entry is removed only if it is still the one synced
// (a commit that requires its sealed bytes unchanged), so a change made meanwhile is synced next.
//
// Records (sealed like every record, under the enclave's uid, so a deleted enclave's queue is swept with it):
//   e/<uid>/sync/q/<name>               the entry
//   e/<uid>/sync/t/<queued_at>/<name>   its place in line: the oldest change first, and the backlog's age
//   e/<uid>/sync/c/<name>               why the last sync of the entry found a conflict
import { keyId } from '../crypto/key.js';
import { StoreError, type StoreCondition } from '../store/store.js';
import type { KeyRecord, RecordStore } from './records.js';

/** A key as the upstream stores it (KES's KeyVersion): what a key record holds of its newest version. */
export interface UpstreamKey {
  readonly algorithm: KeyRecord['algorithm'];
  /** base64 */
  readonly key: string;
  /** base64 */
  readonly hmac: string;
  readonly created_at: string;
  readonly created_by: string;
}

export interface SyncEntry {
  readonly want: UpstreamKey | null;
  readonly known: readonly string[];
  /** When the oldest change coalesced into this entry was queued. */
  readonly queued_at: string;
}

export interface PendingChange {
  readonly name: string;
  readonly entry: SyncEntry;
  /** The entry's sealed bytes: ack() removes it only if they are unchanged. */
  readonly sealed: Uint8Array;
}

export interface QueueStats {
  /** Key names with a change not yet in the upstream. */
  readonly backlog: number;
  /** Entries whose last sync found a conflict. */
  readonly conflicts: number;
  /** queued_at of the oldest unsynced change. */
  readonly oldest?: string;
}

/** How many fingerprints an entry keeps: a name's history while the upstream stays away. */
const MAX_KNOWN = 32;
/** Attempts of a commit whose queue entry another process keeps changing. */
const MAX_ATTEMPTS = 50;

export const syncPaths = {
  entry: (uid: string, name = '') => `e/${uid}/sync/q/${name}`,
  order: (uid: string, queuedAt = '', name = '') => `e/${uid}/sync/t/${queuedAt === '' ? '' : `${queuedAt}/${name}`}`,
  conflict: (uid: string, name = '') => `e/${uid}/sync/c/${name}`,
};

/** The fingerprint `known` holds: the KES key id (hex of SHA-256(key)[0:16]), nothing that reveals the key. */
export const fingerprint = (k: UpstreamKey) => keyId(Buffer.from(k.key, 'base64'));

/** The upstream form of a key record (its newest version). */
export function upstreamKey(record: KeyRecord): UpstreamKey {
  return {
    algorithm: record.algorithm,
    key: record.key,
    hmac: record.hmac,
    created_at: record.created_at,
    created_by: record.created_by,
  };
}

export function nextEntry(
  prev: SyncEntry | undefined,
  want: UpstreamKey | null,
  replaced: UpstreamKey | undefined,
  now: string,
): SyncEntry {
  const known = new Set(prev?.known ?? []);
  if (prev?.want) known.add(fingerprint(prev.want));
  if (replaced !== undefined) known.add(fingerprint(replaced));
  return { want, known: [...known].slice(-MAX_KNOWN), queued_at: prev?.queued_at ?? now };
}

type RecordWrite = { put: string; record: unknown } | { delete: string };

const sameBytes = (a: Uint8Array | undefined, b: Uint8Array | undefined) =>
  a === undefined || b === undefined ? a === b : Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

/** The queue of one enclave (by uid). Stateless: any process serving the store may queue, one process syncs. */
export class SyncQueue {
  constructor(
    private readonly records: RecordStore,
    readonly uid: string,
    private readonly queued: () => void = () => {},
  ) {}

  /**
   * Commits a change of key `name`: the key's own conditions and writes, and its queue entry, atomically. Resolves
   * false if one of the key's conditions failed (nothing written). `want` is what the upstream should now hold;
   * `replaced` the key the change replaced or deleted.
   */
  async commit(
    name: string,
    conditions: readonly StoreCondition[],
    writes: readonly RecordWrite[],
    want: UpstreamKey | null,
    replaced?: UpstreamKey,
  ): Promise<boolean> {
    const entryPath = syncPaths.entry(this.uid, name);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const prev = await this.records.getSealed<SyncEntry>(entryPath);
      const next = nextEntry(prev?.record, want, replaced, new Date().toISOString());
      const queueWrites: RecordWrite[] = [{ put: entryPath, record: next }];
      if (prev === undefined)
        queueWrites.push({ put: syncPaths.order(this.uid, next.queued_at, name), record: { name } });
      if (
        await this.records.commit(
          [...conditions, { path: entryPath, is: prev?.sealed ?? 'absent' }],
          [...writes, ...queueWrites],
        )
      ) {
        this.queued();
        return true;
      }
      // If the entry is as read, one of the key's own conditions failed; otherwise it changed under us: again.
      if (sameBytes(await this.records.store.get(entryPath), prev?.sealed)) return false;
    }
    throw new StoreError(`store: the upstream queue entry of key '${name}' kept changing`);
  }

  /** Entries in line, oldest change first, read lazily. */
  async *pending(): AsyncGenerator<PendingChange> {
    const prefix = syncPaths.order(this.uid);
    for await (const path of this.records.listPaths(prefix)) {
      const name = path.slice(path.lastIndexOf('/') + 1);
      const found = await this.records.getSealed<SyncEntry>(syncPaths.entry(this.uid, name));
      if (found !== undefined) yield { name, entry: found.record, sealed: found.sealed };
    }
  }

  /** Removes a synced entry, its place in line and any conflict note, if the entry is unchanged; false otherwise. */
  ack(change: PendingChange): Promise<boolean> {
    return this.records.commit(
      [{ path: syncPaths.entry(this.uid, change.name), is: change.sealed }],
      [
        { delete: syncPaths.entry(this.uid, change.name) },
        { delete: syncPaths.order(this.uid, change.entry.queued_at, change.name) },
        { delete: syncPaths.conflict(this.uid, change.name) },
      ],
    );
  }

  /** Notes why an entry cannot be synced (it stays queued; the note is cleared when it syncs). */
  async noteConflict(name: string, reason: string): Promise<void> {
    const path = syncPaths.conflict(this.uid, name);
    if ((await this.records.get<{ reason: string }>(path))?.reason !== reason)
      await this.records.put(path, { reason, at: new Date().toISOString() });
  }

  async stats(): Promise<QueueStats> {
    const store = this.records.store;
    const [backlog, conflicts] = await Promise.all([
      store.count(syncPaths.entry(this.uid)),
      store.count(syncPaths.conflict(this.uid)),
    ]);
    let oldest: string | undefined;
    const prefix = syncPaths.order(this.uid);
    for await (const path of this.records.listPaths(prefix)) {
      oldest = path.slice(prefix.length, path.lastIndexOf('/'));
      break;
    }
    return { backlog, conflicts, ...(oldest !== undefined ? { oldest } : {}) };
  }
}
