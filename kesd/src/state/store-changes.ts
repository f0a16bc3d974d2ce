// What a write to a shared store (etcd: another replica, or this one) means for this process's memory: the Change
// to apply (changes.ts), derived from the record path alone. Keys need a Change when deleted or when a version is
// added or deleted (a key is cached on first use with its versions, and a create needs its path to be absent first);
// secrets and sweeps are never held in memory.
//
// Seal: a replica that seals writes the seal marker; the others see the write and seal too. A replica that starts
// later ignores a marker that is already there (a restart unseals, as with one server), so a seal only counts when
// its write comes after the replica loaded its state: on the watch, or, after a reload, as a marker that differs
// from the one there at the start.
import { randomBytes } from '../crypto/random.js';
import type { Change } from './changes.js';
import { paths, type EnclaveRecord } from './records.js';
import type { System } from './system.js';

/** The seal marker's store path: outside every record scope (records.ts) and apart from the root key ('unseal'). */
export const SEAL_PATH = 'sys/seal';

/** Sealed like every record; the id tells one seal from the next. */
interface SealRecord {
  id: string;
  sealed_at: string;
}

/**
 * Announces a seal of this replica to the others (System's announceSeal on a shared store). The marker is sealed
 * before this returns, so the record key may be wiped while the write is on its way.
 */
export function writeSealMarker(system: System): Promise<void> {
  const marker = system.records.sealRecord(SEAL_PATH, {
    id: randomBytes(16).toString('hex'),
    sealed_at: new Date().toISOString(),
  } satisfies SealRecord);
  return system.store.put(SEAL_PATH, marker);
}

/** The id of the last seal announced, if any. */
export async function readSealMarker(system: System): Promise<string | undefined> {
  return (await system.records.get<SealRecord>(SEAL_PATH))?.id;
}

/** The Change a put or delete at `path` calls for, or undefined; `enclaveOfUid` names the enclave of a uid. */
export function changeOfStoreWrite(
  path: string,
  deleted: boolean,
  enclaveOfUid: (uid: string) => string | undefined,
): Change | undefined {
  if (path === SEAL_PATH) return deleted ? undefined : { kind: 'seal' };
  if (path.startsWith(paths.enclaves)) {
    const enclave = path.slice(paths.enclaves.length);
    return enclave === '' ? undefined : { kind: 'enclave', enclave };
  }
  const scope = /^e\/([^/]+)\//.exec(path);
  if (scope === null) return undefined;
  const uid = scope[1]!;
  const enclave = enclaveOfUid(uid);
  if (enclave === undefined) return undefined; // an enclave this process does not hold (deleted, being swept)
  const child = (prefix: string) =>
    path.startsWith(prefix) && path.length > prefix.length ? path.slice(prefix.length) : undefined;
  const key = child(paths.key(uid));
  if (key !== undefined) return deleted ? { kind: 'key', enclave, name: key } : undefined;
  const version = child(paths.keyVersionScope(uid)); // <name>/<key uid>/<version>
  if (version !== undefined) return { kind: 'key', enclave, name: version.split('/')[0]! };
  const policy = child(paths.policy(uid));
  if (policy !== undefined) return { kind: 'policy', enclave, name: policy };
  const identity = child(paths.identity(uid));
  if (identity !== undefined) return { kind: 'identity', enclave, identity };
  return undefined;
}

/** Applies the writes seen on the store's watch, in order (etcd-watch.ts). */
export async function applyStoreWrites(
  system: System,
  writes: readonly { path: string; deleted: boolean }[],
): Promise<void> {
  const enclaveOfUid = (uid: string) => {
    for (const [name, enclave] of system.enclaves) if (enclave.info.uid === uid) return name;
    return undefined;
  };
  for (const { path, deleted } of writes) {
    const change = changeOfStoreWrite(path, deleted, enclaveOfUid);
    // A seal from another replica also reaches this server's other workers (and workers it restarts later).
    if (change?.kind === 'seal') await system.sealedElsewhere();
    else if (change !== undefined) await system.apply(change);
  }
}

/**
 * Reloads every enclave with its policies and identities from the store and drops all cached keys: what a replica
 * does when it may have missed writes (etcd-watch.ts). Enclaves gone from the store are dropped.
 */
export async function resyncFromStore(system: System): Promise<void> {
  if (system.sealed) return; // a sealed replica holds nothing to reload, and no key to read records with
  const stored = new Map<string, string>(); // enclave name → uid
  for await (const { name, record } of system.records.list<EnclaveRecord>(paths.enclaves)) stored.set(name, record.uid);
  for (const name of new Set([...system.enclaves.keys(), ...stored.keys()])) {
    const held = system.enclaves.get(name);
    if (held !== undefined && held.info.uid === stored.get(name)) await held.reload();
    else await system.apply({ kind: 'enclave', enclave: name }); // loads, replaces or drops it
  }
}

/**
 * The etcd follower's hooks for one System (run.ts). Call it right after loading the state: the marker there now
 * is from before the start; one written later is a seal, whether the watch delivers it or a reload finds it.
 */
export async function followStore(
  system: System,
): Promise<{ apply(writes: readonly { path: string; deleted: boolean }[]): Promise<void>; resync(): Promise<void> }> {
  let known = system.sealed ? undefined : await readSealMarker(system);
  return {
    apply: (writes) => applyStoreWrites(system, writes),
    async resync() {
      if (system.sealed) return;
      await resyncFromStore(system);
      if (system.sealed) return; // sealed meanwhile: the record key is gone
      const now = await readSealMarker(system);
      if (now !== undefined && now !== known) {
        known = now;
        await system.sealedElsewhere();
      }
    },
  };
}
