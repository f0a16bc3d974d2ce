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

export interface Store {
  /** The value at path, or undefined. Reads (get, list) see every write committed before they start, by any process. */
  get(path: string): Promise<Uint8Array | undefined>;
  /** Writes value only if path is absent. Resolves true if written, false if it existed. Durable on resolve. */
  putIfAbsent(path: string, value: Uint8Array): Promise<boolean>;
  /** Creates or replaces. Durable on resolve. */
  put(path: string, value: Uint8Array): Promise<void>;
  /** Resolves true if something was deleted. Durable on resolve. */
  delete(path: string): Promise<boolean>;
  /** All records whose path starts with prefix, in ascending path order, streamed (never buffered whole). */
  list(prefix: string): AsyncIterable<StoreRecord>;
  /**
   * A consistent copy of the whole store, as of one moment, into the new file `file` (the embedded store: a backup
   * while it serves). Backends without it (etcd) are backed up with their own snapshot tools.
   */
  snapshot?(file: string): Promise<void>;
  /** Throws if the backend cannot serve (used by /v1/ready and /v1/status). */
  status(): Promise<void>;
  close(): Promise<void>;
}
