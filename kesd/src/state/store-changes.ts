// What a write to a shared store (etcd: another replica, or this one) means for this process's memory: the Change
// to apply (changes.ts), derived from the record path alone. Keys need a Change only when deleted (a key is cached
// on first use and a create needs its path to be absent first); secrets and sweeps are never held in memory.
import type { Change } from './changes.js';
import { paths, type EnclaveRecord } from './records.js';
import type { System } from './system.js';

/** The Change a put or delete at `path` calls for, or undefined; `enclaveOfUid` names the enclave of a uid. */
export function changeOfStoreWrite(path: string, deleted: boolean, enclaveOfUid: (uid: string) => string | undefined): Change | undefined {
  if (path.startsWith(paths.enclaves)) {
    const enclave = path.slice(paths.enclaves.length);
    return enclave === '' ? undefined : { kind: 'enclave', enclave };
  }
  const scope = /^e\/([^/]+)\//.exec(path);
  if (scope === null) return undefined;
  const uid = scope[1]!;
  const enclave = enclaveOfUid(uid);
  if (enclave === undefined) return undefined; // an enclave this process does not hold (deleted, being swept)
  const child = (prefix: string) => (path.startsWith(prefix) && path.length > prefix.length ? path.slice(prefix.length) : undefined);
  const key = child(paths.key(uid));
  if (key !== undefined) return deleted ? { kind: 'key', enclave, name: key } : undefined;
  const policy = child(paths.policy(uid));
  if (policy !== undefined) return { kind: 'policy', enclave, name: policy };
  const identity = child(paths.identity(uid));
  if (identity !== undefined) return { kind: 'identity', enclave, identity };
  return undefined;
}

/** Applies the writes seen on the store's watch, in order (etcd-watch.ts). */
export async function applyStoreWrites(system: System, writes: readonly { path: string; deleted: boolean }[]): Promise<void> {
  const enclaveOfUid = (uid: string) => {
    for (const [name, enclave] of system.enclaves) if (enclave.info.uid === uid) return name;
    return undefined;
  };
  for (const { path, deleted } of writes) {
    const change = changeOfStoreWrite(path, deleted, enclaveOfUid);
    if (change !== undefined) await system.apply(change);
  }
}

/**
 * Reloads every enclave with its policies and identities from the store and drops all cached keys: what a replica
 * does when it may have missed writes (etcd-watch.ts). Enclaves gone from the store are dropped.
 */
export async function resyncFromStore(system: System): Promise<void> {
  const stored = new Map<string, string>(); // enclave name → uid
  for await (const { name, record } of system.records.list<EnclaveRecord>(paths.enclaves)) stored.set(name, record.uid);
  for (const name of new Set([...system.enclaves.keys(), ...stored.keys()])) {
    const held = system.enclaves.get(name);
    if (held !== undefined && held.info.uid === stored.get(name)) await held.reload();
    else await system.apply({ kind: 'enclave', enclave: name }); // loads, replaces or drops it
  }
}
