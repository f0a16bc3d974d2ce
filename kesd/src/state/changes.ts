// State changes that other processes serving the same store (cluster workers) must apply.
//
// A mutation writes the store, updates its own process, then publishes its change and is answered only when
// publish resolves, i.e. once every other process has applied it (System.apply): read-your-writes across
// processes. A change names what changed, never its content: the receiver reloads the record from the store
// (so concurrent changes converge on what the store holds) or drops what it cached.
export type Change =
  /** An enclave was created or deleted: reload its record. */
  | { readonly kind: 'enclave'; readonly enclave: string }
  /** A policy was written or deleted: reload it. */
  | { readonly kind: 'policy'; readonly enclave: string; readonly name: string }
  /** An identity was assigned or deleted: reload it. */
  | { readonly kind: 'identity'; readonly enclave: string; readonly identity: string }
  /** A key was deleted, or a version of it added or deleted: drop it from the cache (keys load lazily, with their
   * versions, and a missing key is never cached). */
  | { readonly kind: 'key'; readonly enclave: string; readonly name: string }
  /** The system was sealed. */
  | { readonly kind: 'seal' };

export interface ChangeBus {
  /** Resolves once every other process has applied the change. */
  publish(change: Change): Promise<void>;
}

/** A single process: there is nobody else to tell. */
export const localBus: ChangeBus = { publish: () => Promise.resolve() };
