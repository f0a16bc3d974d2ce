// What kesd persists, and where. Every record is sealed under a key derived from the root key,
// with its path bound as associated data, so a record cannot be read, altered or moved unnoticed.
import { createHmac } from 'node:crypto';
import { open, seal, type Algorithm, type SecretKey } from '../crypto/key.js';
import type { Store, StoreRecord } from '../store/store.js';

export interface EnclaveRecord { uid: string; admin: string; created_at: string; created_by: string }
export interface KeyRecord { algorithm: Algorithm; key: string; hmac: string; created_at: string; created_by: string }
export interface PolicyRecord { allow: string[]; deny: string[]; created_at: string; created_by: string }
export interface IdentityRecord { policy: string; created_at: string; created_by: string }
export interface SecretRecord { type: 'generic'; bytes: string; created_at: string; mod_time: string; created_by: string }

/** Record paths. Children live under the enclave's random uid, so deleting an enclave record orphans them at once. */
export const paths = {
  enclave: (name: string) => `enclave/${name}`,
  enclaves: 'enclave/',
  sweep: (uid: string) => `sweep/${uid}`,
  sweeps: 'sweep/',
  scope: (uid: string) => `e/${uid}/`,
  key: (uid: string, name = '') => `e/${uid}/key/${name}`,
  policy: (uid: string, name = '') => `e/${uid}/policy/${name}`,
  identity: (uid: string, id = '') => `e/${uid}/identity/${id}`,
  secret: (uid: string, name = '') => `e/${uid}/secret/${name}`,
};

export function deriveRecordKey(rootKey: Uint8Array): SecretKey {
  return { algorithm: 'AES256', bytes: createHmac('sha256', rootKey).update('kesd/records/v1').digest() };
}

/** JSON records over a Store, sealed with the path as associated data. */
export class RecordStore {
  constructor(readonly store: Store, private readonly recordKey: SecretKey) {}

  private seal(path: string, record: unknown): Buffer {
    return seal(this.recordKey, Buffer.from(JSON.stringify(record)), Buffer.from(path));
  }

  private open<T>(path: string, value: Uint8Array): T {
    return JSON.parse(open(this.recordKey, value, Buffer.from(path)).toString('utf8')) as T;
  }

  async get<T>(path: string): Promise<T | undefined> {
    const value = await this.store.get(path);
    return value === undefined ? undefined : this.open<T>(path, value);
  }

  putIfAbsent(path: string, record: unknown): Promise<boolean> {
    return this.store.putIfAbsent(path, this.seal(path, record));
  }

  put(path: string, record: unknown): Promise<void> {
    return this.store.put(path, this.seal(path, record));
  }

  delete(path: string): Promise<boolean> {
    return this.store.delete(path);
  }

  /**
   * Records under prefix whose name (the rest of the path) starts with namePrefix. `keep` filters by name before a
   * record is opened: opening (an AEAD call) costs far more than reading the path.
   */
  async *list<T>(prefix: string, namePrefix = '', keep?: (name: string) => boolean): AsyncGenerator<{ name: string; record: T }> {
    for await (const r of this.store.list(prefix + namePrefix) as AsyncIterable<StoreRecord>) {
      const name = r.path.slice(prefix.length);
      if (keep === undefined || keep(name)) yield { name, record: this.open<T>(r.path, r.value) };
    }
  }

  async *listPaths(prefix: string): AsyncGenerator<string> {
    for await (const r of this.store.list(prefix)) yield r.path;
  }
}
