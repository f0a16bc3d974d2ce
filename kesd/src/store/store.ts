// The storage seam: a small ordered key-value interface, implemented by the embedded LMDB backend and by etcd and held
// to one contract (test/kesd/store-contract.ts). Values are opaque bytes (already sealed above this layer).

/** A backend failure (unreachable, full, closed): the state layer answers it with a 502 naming the operation. */
export class StoreError extends Error {
  override name = 'StoreError';
}

export interface StoreRecord {
  readonly path: string;
  readonly value: Uint8Array;
}

/** What a path must hold for a commit to apply: nothing, something, or exactly these bytes. */
export interface StoreCondition {
  readonly path: string;
  readonly is: 'absent' | 'present' | Uint8Array;
}

/** One write of a commit. */
export type StoreWrite = { readonly put: string; readonly value: Uint8Array } | { readonly delete: string };

export interface Store {
  /** The value at path, or undefined. Reads (get, list) see every write committed before they start, by any process. */
  get(path: string): Promise<Uint8Array | undefined>;
  /** Writes value only if path is absent. Resolves true if written, false if it existed. Durable on resolve. */
  putIfAbsent(path: string, value: Uint8Array): Promise<boolean>;
  /** Creates or replaces. Durable on resolve. */
  put(path: string, value: Uint8Array): Promise<void>;
  /** Resolves true if something was deleted. Durable on resolve. */
  delete(path: string): Promise<boolean>;
  /**
   * Applies every write in one atomic commit if every condition holds when it commits; resolves true if it applied
   * them, false (and nothing written) if a condition failed. Durable on resolve. A path appears in at most one write.
   */
  commit(conditions: readonly StoreCondition[], writes: readonly StoreWrite[]): Promise<boolean>;
  /** How many records' paths start with prefix (a consistent count, like list). */
  count(prefix: string): Promise<number>;
  /** All records whose path starts with prefix, in ascending path order, streamed (never buffered whole). */
  list(prefix: string): AsyncIterable<StoreRecord>;
  /**
   * Up to `limit` paths that start with prefix, in ascending order, after `after` (a path under prefix) if given:
   * names without their values. Each page is read on its own (changes between pages may show in later ones).
   */
  paths(prefix: string, limit: number, after?: string): Promise<string[]>;
  /**
   * A consistent copy of the whole store, as of one moment, into the new file `file` (the embedded store: a backup
   * while it serves). Backends without it (etcd) are backed up with their own snapshot tools.
   */
  snapshot?(file: string): Promise<void>;
  /** Throws if the backend cannot serve (used by /v1/ready and /v1/status). */
  status(): Promise<void>;
  close(): Promise<void>;
}
