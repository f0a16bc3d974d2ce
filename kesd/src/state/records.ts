// What kesd persists, and where. Every record is sealed under a key derived from the root key,
// with its path bound as associated data, so a record cannot be read, altered or moved unnoticed.
import { hmacSha256, open, seal, type Algorithm, type SecretKey } from '../crypto/key.js';
import { secretBuffer, wipe } from '../crypto/secret.js';
import { ErrDecrypt, ErrSealed } from '../kes/errors.js';
import type { Store, StoreCondition, StoreRecord } from '../store/store.js';

export interface EnclaveRecord {
  uid: string;
  admin: string;
  created_at: string;
  created_by: string;
}
/** A key, and its version 1. `uid` names its later versions' records (keys.ts); records from before versions lack it. */
export interface KeyRecord {
  algorithm: Algorithm;
  key: string;
  hmac: string;
  created_at: string;
  created_by: string;
  uid?: string;
}
/** Version 2, 3, … of a key: its material only (the HMAC key stays version 1's). */
export interface KeyVersionRecord {
  algorithm: Algorithm;
  key: string;
  created_at: string;
  created_by: string;
}
export interface PolicyRecord {
  allow: string[];
  deny: string[];
  created_at: string;
  created_by: string;
}
export interface IdentityRecord {
  policy: string;
  created_at: string;
  created_by: string;
}
export interface SecretRecord {
  type: 'generic';
  bytes: string;
  created_at: string;
  mod_time: string;
  created_by: string;
}

/** Record paths. Children live under the enclave's random uid, so deleting an enclave record orphans them at once. */
export const paths = {
  enclave: (name: string) => `enclave/${name}`,
  enclaves: 'enclave/',
  sweep: (uid: string) => `sweep/${uid}`,
  sweeps: 'sweep/',
  scope: (uid: string) => `e/${uid}/`,
  key: (uid: string, name = '') => `e/${uid}/key/${name}`,
  /** Every version record of every key of an enclave ('keyv/' never shares a prefix with 'key/'). */
  keyVersionScope: (uid: string) => `e/${uid}/keyv/`,
  keyVersions: (uid: string, name: string, keyUid: string) => `e/${uid}/keyv/${name}/${keyUid}/`,
  /** Zero-padded, so the store lists versions in order. */
  keyVersion: (uid: string, name: string, keyUid: string, version: number) =>
    `e/${uid}/keyv/${name}/${keyUid}/${String(version).padStart(10, '0')}`,
  policy: (uid: string, name = '') => `e/${uid}/policy/${name}`,
  identity: (uid: string, id = '') => `e/${uid}/identity/${id}`,
  secret: (uid: string, name = '') => `e/${uid}/secret/${name}`,
};

const RECORDS_LABEL = Buffer.from('kesd/records/v1');
/** Paths per store read of pathPages. */
const PATH_PAGE = 256;

/** HMAC-SHA256(root, 'kesd/records/v1'), in a buffer of its own (crypto/secret.ts). */
export function deriveRecordKey(rootKey: Uint8Array): SecretKey {
  const digest = hmacSha256(rootKey, RECORDS_LABEL);
  const bytes = secretBuffer(digest.length);
  digest.copy(bytes);
  wipe(digest);
  return { algorithm: 'AES256', bytes };
}

/**
 * JSON records over a Store, sealed with the path as associated data. wipe() zeroes the record key (the system is
 * sealed): from then on every seal and open throws ErrSealed, so no record is ever written under a zeroed key.
 */
export class RecordStore {
  private wiped = false;

  constructor(
    readonly store: Store,
    private readonly recordKey: SecretKey,
  ) {}

  /** Zeroes the record key for good. */
  wipe(): void {
    this.wiped = true;
    wipe(this.recordKey.bytes);
  }

  /** The sealed value of a record at path (synchronous: it seals with the key as it is now). */
  sealRecord(path: string, record: unknown): Buffer {
    if (this.wiped) throw ErrSealed;
    // The JSON may hold key material (a key record's base64): wipe the bytes once sealed. The string is the GC's.
    const plaintext = Buffer.from(JSON.stringify(record));
    try {
      return seal(this.recordKey, plaintext, Buffer.from(path));
    } finally {
      wipe(plaintext);
    }
  }

  private seal(path: string, record: unknown): Buffer {
    return this.sealRecord(path, record);
  }

  private open<T>(path: string, value: Uint8Array): T {
    if (this.wiped) throw ErrSealed;
    const plaintext = open(this.recordKey, value, Buffer.from(path));
    try {
      return JSON.parse(plaintext.toString('utf8')) as T;
    } finally {
      wipe(plaintext);
    }
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

  /** A record with its sealed bytes as stored, which a commit can require unchanged ({ path, is: sealed }). */
  async getSealed<T>(path: string): Promise<{ record: T; sealed: Uint8Array } | undefined> {
    const sealed = await this.store.get(path);
    return sealed === undefined ? undefined : { record: this.open<T>(path, sealed), sealed };
  }

  /**
   * As getSealed, but a record that is not authentic (corrupted, or sealed under another root key) comes back
   * without its record instead of failing: a delete can still remove it.
   */
  async getSealedOrCorrupt<T>(path: string): Promise<{ record: T | undefined; sealed: Uint8Array } | undefined> {
    const sealed = await this.store.get(path);
    if (sealed === undefined) return undefined;
    try {
      return { record: this.open<T>(path, sealed), sealed };
    } catch (err) {
      if (err !== ErrDecrypt) throw err;
      return { record: undefined, sealed };
    }
  }

  /** Store.commit with records: each put is sealed under its own path. */
  commit(
    conditions: readonly StoreCondition[],
    writes: readonly ({ put: string; record: unknown } | { delete: string })[],
  ): Promise<boolean> {
    const sealed = writes.map((w) => ('put' in w ? { put: w.put, value: this.seal(w.put, w.record) } : w));
    return this.store.commit(conditions, sealed);
  }

  /**
   * Records under prefix whose name (the rest of the path) starts with namePrefix. `keep` filters by name before a
   * record is opened: opening (an AEAD call) costs far more than reading the path.
   */
  async *list<T>(
    prefix: string,
    namePrefix = '',
    keep?: (name: string) => boolean,
  ): AsyncGenerator<{ name: string; record: T }> {
    for await (const r of this.store.list(prefix + namePrefix) as AsyncIterable<StoreRecord>) {
      const name = r.path.slice(prefix.length);
      if (keep === undefined || keep(name)) yield { name, record: this.open<T>(r.path, r.value) };
    }
  }

  /** The paths under prefix in order, a page at a time: no value is read, no record opened. */
  async *pathPages(prefix: string, pageSize = PATH_PAGE): AsyncGenerator<string[]> {
    let after: string | undefined;
    for (;;) {
      const page = await this.store.paths(prefix, pageSize, after);
      if (page.length > 0) yield page;
      if (page.length < pageSize) return;
      after = page[page.length - 1];
    }
  }

  async *listPaths(prefix: string): AsyncGenerator<string> {
    for await (const page of this.pathPages(prefix)) yield* page;
  }
}
