// The keys of one enclave: their versions, the in-memory cache, and every lifecycle change (create, import, rotate,
// delete a version, delete). A change to what a key is happens here and nowhere else, so a hook on "a key was
// created, imported, rotated or deleted" has one place to go.
//
// Layout (records.ts): the key record `e/<uid>/key/<name>` is version 1, in the format kesd always wrote, so data
// dirs from before versions existed work unchanged, and a list line (version 1's) never changes with a rotation.
// Versions 2, 3, … are records of their own, `e/<uid>/keyv/<name>/<key uid>/<10-digit version>`, each created with putIfAbsent: of
// two concurrent rotations (workers, replicas) only one can create version n+1; the other takes n+2. The key uid
// names one incarnation of the name (records from before versions have none: theirs is derived from their HMAC key),
// so versions a crash left behind after a delete never attach to a key re-created under the same name.
import {
  hmacSha256,
  keyId,
  legacyAlgorithmName,
  newSecretKey,
  open,
  type Algorithm,
  type SecretKey,
} from '../crypto/key.js';
import { randomBytes } from '../crypto/random.js';
import { secretBuffer, wipe } from '../crypto/secret.js';
import {
  ErrDecrypt,
  ErrKeyExists,
  ErrKeyNotFound,
  ErrSealed,
  ErrStoreWrite,
  errKeyNotAuthentic,
  KesError,
} from '../kes/errors.js';
import type { ChangeBus } from './changes.js';
import { paths, type KeyRecord, type KeyVersionRecord, type RecordStore } from './records.js';
import { upstreamKey, type SyncQueue } from './sync-queue.js';

/** Versions a key may have: decrypting a ciphertext without a version tries at most this many keys. */
export const MAX_KEY_VERSIONS = 1000;

export const ErrKeyVersionNotFound = new KesError(404, 'key version does not exist');
export const ErrKeyTooManyVersions = new KesError(
  400,
  `key has too many versions (at most ${MAX_KEY_VERSIONS}): delete old ones first`,
);
export const ErrDeleteNewestVersion = new KesError(
  400,
  'cannot delete the newest key version: it encrypts; rotate first',
);
export const ErrKeyVersionsMirrored = new KesError(
  400,
  'key versions are not available in an enclave mirrored to an upstream Vault: its layout holds one version per key',
);
export const ErrDeleteFirstVersion = new KesError(
  400,
  'cannot delete key version 1: it is the key record itself; delete the key instead',
);

export interface KeyVersion {
  readonly version: number;
  readonly secret: SecretKey;
  /** The v0.22 key id of this version's bytes (legacy ciphertexts name it). */
  readonly id: string;
  readonly createdAt: string;
  readonly createdBy: string;
}

export interface CachedKey {
  readonly name: string;
  /** The newest version: generate and encrypt use it. */
  readonly newest: KeyVersion;
  /** The newest version's key (`newest.secret`). */
  readonly secret: SecretKey;
  /** Every version, newest first. */
  readonly versions: readonly KeyVersion[];
  /** Version 1's HMAC key: HMACs never change with a rotation (MinIO derives root credentials from them). */
  readonly hmacKey: Buffer;
  /** Version 1's id, algorithm and dates: what describe and list report for the key. */
  readonly createdAt: string;
  readonly createdBy: string;
  /** Names this incarnation's version records. */
  readonly uid: string;
}

export interface KeyMaterial {
  readonly algorithm: Algorithm;
  readonly bytes: Buffer;
  readonly hmac?: Buffer;
  readonly createdAt?: string;
}

// Cached keys live as long as the process, so their bytes get buffers of their own: a Buffer.from() slice of
// Node's shared 8 KiB pool would keep the whole slab alive, 16 KiB per cached key (found by the soak, bug 6), and
// a secret buffer is never moved by the GC, so wiping it reaches the only copy (crypto/secret.ts).
function ownBytes(base64: string): Buffer {
  const decoded = Buffer.from(base64, 'base64');
  const own = secretBuffer(decoded.length);
  decoded.copy(own);
  wipe(decoded);
  return own;
}

const now = () => new Date().toISOString();
const UID_LABEL = Buffer.from('kesd/key-versions/v1');

/** A key record's uid: its own, or (records from before versions) one derived from its HMAC key. */
function uidOf(record: KeyRecord, hmacKey: Buffer): string {
  if (record.uid !== undefined) return record.uid;
  const mac = hmacSha256(hmacKey, UID_LABEL);
  const uid = mac.subarray(0, 16).toString('hex');
  wipe(mac);
  return uid;
}

/** Runs store operations and maps backend failures to a 502 that names the operation, as KES does; a KES error
 * (the key does not exist, the system is sealed) goes out as it is. */
export async function storeOp<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (err instanceof KesError) throw err;
    throw Object.assign(ErrStoreWrite(what), { cause: err });
  }
}

function versionEntry(
  version: number,
  algorithm: Algorithm,
  key: string,
  createdAt: string,
  createdBy: string,
): KeyVersion {
  const bytes = ownBytes(key);
  return { version, secret: { algorithm, bytes }, id: keyId(bytes), createdAt, createdBy };
}

/** Names whose list line is kept in memory, per enclave: a list of a million keys must not hold a million lines. */
export const MAX_LIST_LINES = 100_000;

/** A key's NDJSON list line: version 1's id, algorithm (the v0.22 name) and dates, so a rotation never changes it. */
function listLine(name: string, algorithm: Algorithm, id: string, createdAt: string, createdBy: string): string {
  return `${JSON.stringify({ name, id, algorithm: legacyAlgorithmName(algorithm), created_at: createdAt, created_by: createdBy })}\n`;
}

const lineOfKey = (key: CachedKey): string => {
  const first = key.versions[key.versions.length - 1]!;
  return listLine(key.name, first.secret.algorithm, first.id, key.createdAt, key.createdBy);
};

function wipeKey(key: CachedKey): void {
  for (const v of key.versions) v.secret.bytes.fill(0);
  key.hmacKey.fill(0);
}

const LIST_CHUNK = 64 * 1024;

export class KeyRing {
  private readonly cache = new Map<string, CachedKey>();
  /**
   * List lines by name, so a list opens no record it has listed before (an AEAD open and a hash per key). Not key
   * material; filled on create, load and list, dropped with the cached key (drop, forget, seal), so a change in
   * another process, which reaches drop() through the change bus, drops it here too. Names still come from the store.
   */
  private readonly lines = new Map<string, string>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Counts cache drops, so a read that a drop overtook (a change in another process) reads again. */
  private drops = 0;
  /** Set by seal(): no key is cached any more. */
  private sealed = false;

  /** sync: with an upstream, each create and delete is queued for it in the same commit (sync-queue.ts). */
  constructor(
    private readonly enclave: string,
    private readonly uid: string,
    private readonly records: RecordStore,
    private readonly bus: ChangeBus,
    private readonly sync?: SyncQueue,
  ) {}

  /** The cached key, or undefined if it must be loaded (the hot path stays synchronous on a hit). */
  cached(name: string): CachedKey | undefined {
    return this.cache.get(name);
  }

  async get(name: string): Promise<CachedKey> {
    const cached = this.cache.get(name);
    if (cached !== undefined) return cached;
    const pending = this.locks.get(name);
    if (pending !== undefined) await pending.catch(() => undefined);
    const drops = this.drops;
    const loaded = await storeOp('read key', () => this.read(name));
    if (loaded === undefined) throw ErrKeyNotFound;
    if (this.locks.has(name) || this.drops !== drops || this.sealed) {
      wipeKey(loaded);
      if (this.sealed) throw ErrSealed; // sealed while the record was read: keep no key
      return this.get(name); // a change raced the read: read again
    }
    this.cache.set(name, loaded);
    this.keepLine(name, lineOfKey(loaded));
    return loaded;
  }

  /** Reads a key and all its versions from the store (not cached). */
  private async read(name: string): Promise<CachedKey | undefined> {
    try {
      return await this.readRecords(name);
    } catch (err) {
      // Not the caller's ciphertext failing (that is ErrDecrypt from open()): the store's own record.
      throw err === ErrDecrypt ? errKeyNotAuthentic(name) : err;
    }
  }

  private async readRecords(name: string): Promise<CachedKey | undefined> {
    const record = await this.records.get<KeyRecord>(paths.key(this.uid, name));
    if (record === undefined) return undefined;
    const hmacKey = ownBytes(record.hmac);
    const uid = uidOf(record, hmacKey);
    const versions = [versionEntry(1, record.algorithm, record.key, record.created_at, record.created_by)];
    for await (const { name: n, record: v } of this.records.list<KeyVersionRecord>(
      paths.keyVersions(this.uid, name, uid),
    )) {
      versions.push(versionEntry(Number(n), v.algorithm, v.key, v.created_at, v.created_by));
    }
    versions.reverse(); // paths sort by zero-padded version: newest last
    const newest = versions[0]!;
    return {
      name,
      newest,
      secret: newest.secret,
      versions,
      hmacKey,
      createdAt: record.created_at,
      createdBy: record.created_by,
      uid,
    };
  }

  /** The version numbers in the store now (no record opened). */
  private async storedVersions(name: string, uid: string): Promise<number[]> {
    const found = [1];
    const prefix = paths.keyVersions(this.uid, name, uid);
    for await (const path of this.records.listPaths(prefix)) found.push(Number(path.slice(prefix.length)));
    return found;
  }

  /** Serialises the changes of one key name in this process so the cache never outlives or predates the store. */
  private async locked<T>(name: string, op: () => Promise<T>): Promise<T> {
    while (this.locks.has(name)) await this.locks.get(name)!.catch(() => undefined);
    const running = op();
    this.locks.set(name, running);
    try {
      return await running;
    } finally {
      this.locks.delete(name);
    }
  }

  /** Creates a key: random material, or imported material (a migration may also carry its HMAC key and dates). */
  async create(name: string, createdBy: string, material?: KeyMaterial): Promise<void> {
    const secret = material ?? newSecretKey();
    const hmac = material?.hmac ?? randomBytes(32);
    const record: KeyRecord = {
      algorithm: secret.algorithm,
      key: secret.bytes.toString('base64'),
      hmac: hmac.toString('base64'),
      created_at: material?.createdAt ?? now(),
      created_by: createdBy,
      uid: randomBytes(16).toString('hex'),
    };
    // The cache decodes its own copies from the record; bytes drawn here are not kept (the caller's material is its own).
    if (material === undefined) wipe(secret.bytes);
    if (material?.hmac === undefined) wipe(hmac);
    await this.locked(name, async () => {
      const created = await storeOp('create key', () => this.putKeyRecord(name, record));
      if (!created) throw ErrKeyExists;
      if (this.sealed) throw ErrSealed;
      const hmacKey = ownBytes(record.hmac);
      const v1 = versionEntry(1, record.algorithm, record.key, record.created_at, createdBy);
      const key: CachedKey = {
        name,
        newest: v1,
        secret: v1.secret,
        versions: [v1],
        hmacKey,
        createdAt: record.created_at,
        createdBy,
        uid: record.uid!,
      };
      this.cache.set(name, key);
      this.keepLine(name, lineOfKey(key));
    });
  }

  /**
   * Adds a version with fresh material of the newest version's algorithm. Durable before it resolves; every process
   * of this server has dropped its cached copy by then (other replicas follow the store's watch).
   */
  async rotate(name: string, createdBy: string): Promise<{ version: number; createdAt: string }> {
    this.mirrored();
    const added = await this.locked(name, () =>
      storeOp('rotate key', async () => {
        const record = await this.records.get<KeyRecord>(paths.key(this.uid, name));
        if (record === undefined) throw ErrKeyNotFound;
        const hmacKey = ownBytes(record.hmac);
        const uid = uidOf(record, hmacKey);
        wipe(hmacKey);
        for (;;) {
          const versions = await this.storedVersions(name, uid);
          if (versions.length >= MAX_KEY_VERSIONS) throw ErrKeyTooManyVersions;
          const next = Math.max(...versions) + 1;
          const fresh = newSecretKey(await this.newestAlgorithm(name, uid, record, versions));
          const version: KeyVersionRecord = {
            algorithm: fresh.algorithm,
            key: fresh.bytes.toString('base64'),
            created_at: now(),
            created_by: createdBy,
          };
          wipe(fresh.bytes);
          // Another process may have taken `next` meanwhile: then take the one after it.
          if (await this.records.putIfAbsent(paths.keyVersion(this.uid, name, uid, next), version))
            return { version: next, createdAt: version.created_at };
        }
      }).finally(() => this.drop(name)),
    );
    await this.bus.publish({ kind: 'key', enclave: this.enclave, name });
    return added;
  }

  private async newestAlgorithm(name: string, uid: string, record: KeyRecord, versions: number[]): Promise<Algorithm> {
    const newest = Math.max(...versions);
    if (newest === 1) return record.algorithm;
    return (
      (await this.records.get<KeyVersionRecord>(paths.keyVersion(this.uid, name, uid, newest)))?.algorithm ??
      record.algorithm
    );
  }

  /** Deletes one version (neither version 1 nor the newest): its ciphertexts no longer decrypt. */
  async deleteVersion(name: string, version: number): Promise<void> {
    this.mirrored();
    await this.locked(name, () =>
      storeOp('delete key version', async () => {
        const record = await this.records.get<KeyRecord>(paths.key(this.uid, name));
        if (record === undefined) throw ErrKeyNotFound;
        const hmacKey = ownBytes(record.hmac);
        const uid = uidOf(record, hmacKey);
        wipe(hmacKey);
        const versions = await this.storedVersions(name, uid);
        if (!versions.includes(version)) throw ErrKeyVersionNotFound;
        if (version === 1) throw ErrDeleteFirstVersion;
        // The newest only grows (it is never deleted), so once a version is not the newest it never is again.
        if (version === Math.max(...versions)) throw ErrDeleteNewestVersion;
        if (!(await this.records.delete(paths.keyVersion(this.uid, name, uid, version)))) throw ErrKeyVersionNotFound;
      }).finally(() => this.drop(name)),
    );
    await this.bus.publish({ kind: 'key', enclave: this.enclave, name });
  }

  /** Deletes the key record (the key is gone at once), then its versions. */
  async delete(name: string): Promise<void> {
    let deleted = false;
    try {
      await this.locked(name, async () => {
        let found: { record: KeyRecord | undefined } | undefined;
        try {
          found = await storeOp('delete key', () => this.deleteKeyRecord(name));
        } finally {
          this.drop(name); // also when the store failed: the delete may have been applied
        }
        if (found === undefined) throw ErrKeyNotFound;
        deleted = true;
        const { record } = found;
        // A record that was not authentic is gone too; without its HMAC key its versions cannot be found: they stay
        // sealed, never read again, until the enclave is deleted.
        if (record === undefined) return;
        const hmacKey = ownBytes(record.hmac);
        const uid = uidOf(record, hmacKey);
        wipe(hmacKey);
        // A crash or a store failure here leaves version records of a key that no longer exists: never read again
        // (the uid is gone), still sealed, removed with the enclave.
        const prefix = paths.keyVersions(this.uid, name, uid);
        const stale: string[] = [];
        for await (const path of this.records.listPaths(prefix)) stale.push(path);
        await storeOp('delete key', () => Promise.all(stale.map((p) => this.records.delete(p))));
      });
    } finally {
      // The other processes drop their copy once the key is gone, whatever became of its versions.
      if (deleted) await this.bus.publish({ kind: 'key', enclave: this.enclave, name });
    }
  }

  /** Creates the key record (false: the name is taken); with an upstream, queued for it in the same commit. */
  private putKeyRecord(name: string, record: KeyRecord): Promise<boolean> {
    const path = paths.key(this.uid, name);
    if (this.sync === undefined) return this.records.putIfAbsent(path, record);
    return this.sync.commit(name, [{ path, is: 'absent' }], [{ put: path, record }], upstreamKey(record));
  }

  /**
   * Deletes the key record, returning what it held (undefined: there was none; record undefined: it was not
   * authentic, corrupted or sealed under another root key, and an admin may still delete it). With an upstream, queued
   * with it (for a record that was not authentic, kesd cannot tell the upstream's key as its own: a conflict).
   */
  private async deleteKeyRecord(name: string): Promise<{ record: KeyRecord | undefined } | undefined> {
    const path = paths.key(this.uid, name);
    for (;;) {
      // The delete requires the record it read: a concurrent change of the key (another process) reads again.
      const current = await this.records.getSealedOrCorrupt<KeyRecord>(path);
      if (current === undefined) return undefined;
      const conditions = [{ path, is: current.sealed }];
      const replaced = current.record === undefined ? undefined : upstreamKey(current.record);
      const deleted =
        this.sync === undefined
          ? await this.records.commit(conditions, [{ delete: path }])
          : await this.sync.commit(name, conditions, [{ delete: path }], null, replaced);
      if (deleted) return { record: current.record };
    }
  }

  /** Versions are kesd's own: KES's Vault layout holds one key per name, so a mirrored enclave's keys keep one. */
  private mirrored(): void {
    if (this.sync !== undefined) throw ErrKeyVersionsMirrored;
  }

  /**
   * Opens a ciphertext with the key's versions: with `version`, that one only; otherwise the version a legacy
   * ciphertext names by key id first, then newest to oldest, stopping at the first authentic open (AEAD: a wrong
   * key never yields a plaintext). Undefined when no version opens it, so the caller can check for versions another
   * replica added before answering ErrDecrypt.
   */
  static open(
    key: CachedKey,
    ciphertext: Uint8Array,
    context: Uint8Array | undefined,
    version?: number,
  ): Buffer | undefined {
    if (version !== undefined) {
      const v = key.versions.find((x) => x.version === version);
      return v === undefined ? undefined : tryOpen(v.secret, ciphertext, context);
    }
    const named = key.versions.length > 1 ? legacyKeyId(ciphertext) : undefined;
    const first = named === undefined ? undefined : key.versions.find((v) => v.id === named);
    if (first !== undefined) {
      const plaintext = tryOpen(first.secret, ciphertext, context);
      if (plaintext !== undefined) return plaintext;
    }
    for (const v of key.versions) {
      if (v === first) continue;
      const plaintext = tryOpen(v.secret, ciphertext, context);
      if (plaintext !== undefined) return plaintext;
    }
    return undefined;
  }

  /**
   * Whether the store holds versions the cached key lacks (another replica rotated, and its change has not reached
   * this one yet); if so the cached copy is dropped, so the next get() reads them.
   */
  async stale(key: CachedKey): Promise<boolean> {
    const stored = await storeOp('read key', () => this.storedVersions(key.name, key.uid));
    const known = new Set(key.versions.map((v) => v.version));
    if (stored.every((v) => known.has(v))) return false;
    if (this.cache.get(key.name) === key) this.drop(key.name);
    return true;
  }

  /** Key records in name order, streamed from the store (never cached): `keep` skips names before opening. */
  list(namePrefix = '', keep?: (name: string) => boolean): AsyncGenerator<{ name: string; record: KeyRecord }> {
    return this.records.list<KeyRecord>(paths.key(this.uid), namePrefix, keep);
  }

  private keepLine(name: string, line: string): void {
    if (this.lines.size < MAX_LIST_LINES || this.lines.has(name)) this.lines.set(name, line);
  }

  /**
   * The NDJSON list lines of the keys whose names start with namePrefix and pass `keep`, in name order, in chunks of
   * ~64 KiB. Names come from the store's paths (no value read); only a name without a kept line opens its record.
   */
  async *listLines(namePrefix = '', keep?: (name: string) => boolean): AsyncGenerator<string> {
    const prefix = paths.key(this.uid);
    let chunk = '';
    try {
      for await (const page of this.records.pathPages(prefix + namePrefix)) {
        for (const path of page) {
          const name = path.slice(prefix.length);
          if (keep !== undefined && !keep(name)) continue;
          chunk += this.lines.get(name) ?? (await this.readLine(name, path));
          if (chunk.length >= LIST_CHUNK) {
            yield chunk;
            chunk = '';
          }
        }
      }
    } catch (err) {
      if (chunk !== '') yield chunk; // the lines before a record that failed to open, then the error
      throw err;
    }
    if (chunk !== '') yield chunk;
  }

  /** A key's list line from its record ('' if it is gone), kept unless a change came while it was read. */
  private async readLine(name: string, path: string): Promise<string> {
    const drops = this.drops;
    let record: KeyRecord | undefined;
    try {
      record = await this.records.get<KeyRecord>(path);
    } catch (err) {
      throw err === ErrDecrypt ? errKeyNotAuthentic(name) : err; // the list ends with an error line naming it
    }
    if (record === undefined) return ''; // deleted since its path was read
    const bytes = Buffer.from(record.key, 'base64');
    const line = listLine(name, record.algorithm, keyId(bytes), record.created_at, record.created_by);
    wipe(bytes);
    if (this.drops === drops && !this.sealed && !this.locks.has(name)) this.keepLine(name, line);
    return line;
  }

  /** Drops a key from the cache and wipes its bytes (a change here or in another process). */
  drop(name: string): void {
    this.drops++;
    this.lines.delete(name);
    const cached = this.cache.get(name);
    this.cache.delete(name);
    if (cached !== undefined) wipeKey(cached);
  }

  /** Drops every cached key (a reload, a deleted enclave). */
  forget(): void {
    this.drops++;
    for (const k of this.cache.values()) wipeKey(k);
    this.cache.clear();
    this.lines.clear();
  }

  /** Drops the cached keys for good: the system is sealed. */
  seal(): void {
    this.sealed = true;
    this.forget();
  }
}

function tryOpen(secret: SecretKey, ciphertext: Uint8Array, context: Uint8Array | undefined): Buffer | undefined {
  try {
    return open(secret, ciphertext, context);
  } catch (err) {
    if (err === ErrDecrypt || !(err instanceof KesError)) return undefined;
    throw err;
  }
}

/** The key id a legacy JSON or msgpack ciphertext carries (kes-protocol §8.3), if any. */
function legacyKeyId(ciphertext: Uint8Array): string | undefined {
  const first = ciphertext[0];
  if (first === 0x7b) {
    try {
      const id = (JSON.parse(Buffer.from(ciphertext).toString('utf8')) as { id?: unknown })?.id;
      return typeof id === 'string' ? id : undefined;
    } catch {
      return undefined;
    }
  }
  // msgpack: fixarray(5), then the algorithm as a fixstr, then the id as str8 (how v0.20–v0.22 wrote them).
  if (first === 0x95 && ciphertext.length > 2) {
    const t = ciphertext[1]!;
    if (t < 0xa0 || t > 0xbf) return undefined;
    const at = 2 + (t & 0x1f);
    if (ciphertext[at] !== 0xd9) return undefined;
    const n = ciphertext[at + 1]!;
    return at + 2 + n <= ciphertext.length
      ? Buffer.from(ciphertext.subarray(at + 2, at + 2 + n)).toString('utf8')
      : undefined;
  }
  return undefined;
}
