// One enclave: its keys (cached in memory on first use), policies, identities and secrets.
import { hmacSha256, newSecretKey, type Algorithm, type SecretKey } from '../crypto/key.js';
import { randomBytes } from '../crypto/random.js';
import { secretBuffer, wipe } from '../crypto/secret.js';
import {
  ErrAssignAdmin, ErrDeleteAdmin, ErrIdentityNotFound, ErrKeyExists, ErrKeyNotFound, ErrPolicyNotFound,
  ErrSealed, ErrSecretExists, ErrSecretNotFound, ErrStoreWrite,
} from '../kes/errors.js';
import type { Change, ChangeBus } from './changes.js';
import { isAllowed, type PolicyRules } from './policy.js';
import { upstreamKey, type SyncQueue } from './sync-queue.js';
import { paths, type EnclaveRecord, type IdentityRecord, type KeyRecord, type PolicyRecord, type RecordStore, type SecretRecord } from './records.js';

export interface CachedKey {
  readonly name: string;
  readonly secret: SecretKey;
  readonly hmacKey: Buffer;
  /** What describe reports besides the key itself (the record's base64 key strings are not kept). */
  readonly createdAt: string;
  readonly createdBy: string;
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

export interface KeyMaterial {
  readonly algorithm: Algorithm;
  readonly bytes: Buffer;
  readonly hmac?: Buffer;
  readonly createdAt?: string;
}

/** Runs store writes and maps backend failures to a 502 that names the operation, as KES does. */
async function storeOp<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw Object.assign(ErrStoreWrite(what), { cause: err });
  }
}

export class Enclave {
  readonly policies = new Map<string, PolicyRecord>();
  readonly identities = new Map<string, IdentityRecord>();
  private readonly keys = new Map<string, CachedKey>();
  private readonly keyLocks = new Map<string, Promise<unknown>>();
  /** Counts cache drops, so a read that a drop overtook (a delete in another process) reads again. */
  private drops = 0;
  /** Set by seal(): no key is cached any more. */
  private sealed = false;
  private mutations: Promise<unknown> = Promise.resolve();

  /** sync: the upstream's queue, when this enclave's keys are mirrored to one (state/sync-queue.ts). */
  constructor(
    readonly name: string,
    readonly info: EnclaveRecord,
    private readonly records: RecordStore,
    private readonly bus: ChangeBus,
    private readonly sync?: SyncQueue,
  ) {}

  async load(): Promise<void> {
    for await (const { name, record } of this.records.list<PolicyRecord>(paths.policy(this.info.uid))) this.policies.set(name, record);
    for await (const { name, record } of this.records.list<IdentityRecord>(paths.identity(this.info.uid))) this.identities.set(name, record);
  }

  /** Replaces policies and identities with the store's and drops cached keys (resyncFromStore, store-changes.ts). */
  async reload(): Promise<void> {
    await this.serial(async () => {
      const policies = new Map<string, PolicyRecord>();
      const identities = new Map<string, IdentityRecord>();
      for await (const { name, record } of this.records.list<PolicyRecord>(paths.policy(this.info.uid))) policies.set(name, record);
      for await (const { name, record } of this.records.list<IdentityRecord>(paths.identity(this.info.uid))) identities.set(name, record);
      // Swapped in without an await in between, so a request never sees half of it.
      this.policies.clear();
      for (const [name, record] of policies) this.policies.set(name, record);
      this.identities.clear();
      for (const [id, record] of identities) this.identities.set(id, record);
      this.forgetKeys();
    });
  }

  /** The enclave admin passes everything; others need a policy that allows the path. */
  isAllowed(identity: string, path: string): boolean {
    if (identity === this.info.admin) return true;
    const assigned = this.identities.get(identity);
    if (assigned === undefined) return false;
    const policy = this.policies.get(assigned.policy);
    return policy !== undefined && isAllowed(policy, path);
  }

  // ---- keys -------------------------------------------------------------------------------------------

  /** The cached key, or undefined if it must be loaded (the hot path stays synchronous on a hit). */
  cachedKey(name: string): CachedKey | undefined {
    return this.keys.get(name);
  }

  async key(name: string): Promise<CachedKey> {
    const cached = this.keys.get(name);
    if (cached !== undefined) return cached;
    const pending = this.keyLocks.get(name);
    if (pending !== undefined) await pending.catch(() => undefined);
    const drops = this.drops;
    const record = await storeOp('read key', () => this.records.get<KeyRecord>(paths.key(this.info.uid, name)));
    if (record === undefined) throw ErrKeyNotFound;
    if (this.keyLocks.has(name) || this.drops !== drops) return this.key(name); // a create/delete raced the read: read again
    return this.cacheKey(name, record);
  }

  private cacheKey(name: string, record: KeyRecord): CachedKey {
    if (this.sealed) throw ErrSealed; // sealed while the record was read or written: keep no key
    const entry: CachedKey = {
      name,
      secret: { algorithm: record.algorithm, bytes: ownBytes(record.key) },
      hmacKey: ownBytes(record.hmac),
      createdAt: record.created_at,
      createdBy: record.created_by,
    };
    this.keys.set(name, entry);
    return entry;
  }

  /** Serialises create/delete of one key name so the cache never outlives or predates the store. */
  private async withKeyLock<T>(name: string, op: () => Promise<T>): Promise<T> {
    while (this.keyLocks.has(name)) await this.keyLocks.get(name)!.catch(() => undefined);
    const running = op();
    this.keyLocks.set(name, running);
    try {
      return await running;
    } finally {
      this.keyLocks.delete(name);
    }
  }

  /** Creates a key: random material, or imported material (a migration may also carry its HMAC key and dates). */
  async createKey(name: string, createdBy: string, material?: KeyMaterial): Promise<void> {
    const secret = material ?? newSecretKey();
    const hmac = material?.hmac ?? randomBytes(32);
    const record: KeyRecord = {
      algorithm: secret.algorithm,
      key: secret.bytes.toString('base64'),
      hmac: hmac.toString('base64'),
      created_at: material?.createdAt ?? now(),
      created_by: createdBy,
    };
    // The cache decodes its own copies from the record; bytes drawn here are not kept (the caller's material is its own).
    if (material === undefined) wipe(secret.bytes);
    if (material?.hmac === undefined) wipe(hmac);
    await this.withKeyLock(name, async () => {
      const created = await storeOp('create key', () => this.writeKey(name, record));
      if (!created) throw ErrKeyExists;
      this.cacheKey(name, record);
    });
  }

  async deleteKey(name: string): Promise<void> {
    await this.withKeyLock(name, async () => {
      const deleted = await storeOp('delete key', () => this.writeKey(name, undefined));
      this.dropKey(name);
      if (!deleted) throw ErrKeyNotFound;
    });
    await this.bus.publish({ kind: 'key', enclave: this.name, name });
  }

  /**
   * The one place key material changes in the store: a key is created (or imported) when `next` is given, deleted
   * otherwise (a rotation would replace it here). False if the key existed (create) or did not (delete). With an
   * upstream, the change is queued for it in the same commit (sync-queue.ts).
   */
  private async writeKey(name: string, next: KeyRecord | undefined): Promise<boolean> {
    const path = paths.key(this.info.uid, name);
    if (next !== undefined) {
      if (this.sync === undefined) return this.records.putIfAbsent(path, next);
      return this.sync.commit(name, [{ path, is: 'absent' }], [{ put: path, record: next }], upstreamKey(next));
    }
    if (this.sync === undefined) return this.records.delete(path);
    for (;;) {
      // The delete requires the record it read: a concurrent change of the key (another process) reads again.
      const current = await this.records.getSealed<KeyRecord>(path);
      if (current === undefined) return false;
      if (await this.sync.commit(name, [{ path, is: current.sealed }], [{ delete: path }], null, upstreamKey(current.record))) return true;
    }
  }

  private dropKey(name: string): void {
    this.drops++;
    const cached = this.keys.get(name);
    this.keys.delete(name);
    cached?.secret.bytes.fill(0);
    cached?.hmacKey.fill(0);
  }

  /** Key records in name order, streamed from the store (never cached): `keep` skips names before opening. */
  listKeys(namePrefix = '', keep?: (name: string) => boolean): AsyncGenerator<{ name: string; record: KeyRecord }> {
    return this.records.list<KeyRecord>(paths.key(this.info.uid), namePrefix, keep);
  }

  hmac(key: CachedKey, message: Uint8Array): Buffer {
    return hmacSha256(key.hmacKey, message);
  }

  /** Drops the cached keys for good: the system is sealed. */
  seal(): void {
    this.sealed = true;
    this.forgetKeys();
  }

  /** Drops key material from memory (a reload, a deleted enclave, a seal). */
  forgetKeys(): void {
    this.drops++;
    for (const k of this.keys.values()) {
      k.secret.bytes.fill(0);
      k.hmacKey.fill(0);
    }
    this.keys.clear();
  }

  // ---- policies and identities (held in memory, written through) ---------------------------------------

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.mutations.then(op, op);
    this.mutations = run.catch(() => undefined);
    return run;
  }

  // Each mutation publishes its change after its serial section: a remote change waits in that queue, so
  // waiting there for the other processes' acknowledgements could deadlock two processes mutating at once.

  async writePolicy(name: string, rules: PolicyRules, createdBy: string): Promise<void> {
    await this.serial(async () => {
      const record: PolicyRecord = { allow: [...rules.allow], deny: [...rules.deny], created_at: now(), created_by: createdBy };
      await storeOp('write policy', () => this.records.put(paths.policy(this.info.uid, name), record));
      this.policies.set(name, record);
    });
    await this.bus.publish({ kind: 'policy', enclave: this.name, name });
  }

  policy(name: string): PolicyRecord {
    const p = this.policies.get(name);
    if (p === undefined) throw ErrPolicyNotFound;
    return p;
  }

  async deletePolicy(name: string): Promise<void> {
    await this.serial(async () => {
      if (!this.policies.has(name)) throw ErrPolicyNotFound;
      await storeOp('delete policy', () => this.records.delete(paths.policy(this.info.uid, name)));
      this.policies.delete(name);
    });
    await this.bus.publish({ kind: 'policy', enclave: this.name, name });
  }

  async assignPolicy(policy: string, identity: string, createdBy: string): Promise<void> {
    await this.serial(async () => {
      if (identity === this.info.admin) throw ErrAssignAdmin;
      const record: IdentityRecord = { policy, created_at: now(), created_by: createdBy };
      await storeOp('assign policy', () => this.records.put(paths.identity(this.info.uid, identity), record));
      this.identities.set(identity, record);
    });
    await this.bus.publish({ kind: 'identity', enclave: this.name, identity });
  }

  async deleteIdentity(identity: string): Promise<void> {
    await this.serial(async () => {
      if (identity === this.info.admin) throw ErrDeleteAdmin;
      if (!this.identities.has(identity)) throw ErrIdentityNotFound;
      await storeOp('delete identity', () => this.records.delete(paths.identity(this.info.uid, identity)));
      this.identities.delete(identity);
    });
    await this.bus.publish({ kind: 'identity', enclave: this.name, identity });
  }

  /** Applies a change another process made to this enclave: reloads the record, or drops the cached key. */
  async apply(change: Change): Promise<void> {
    const uid = this.info.uid;
    switch (change.kind) {
      case 'key':
        return this.dropKey(change.name);
      case 'policy':
        return this.serial(async () => {
          const record = await this.records.get<PolicyRecord>(paths.policy(uid, change.name));
          if (record === undefined) this.policies.delete(change.name);
          else this.policies.set(change.name, record);
        });
      case 'identity':
        return this.serial(async () => {
          const record = await this.records.get<IdentityRecord>(paths.identity(uid, change.identity));
          if (record === undefined) this.identities.delete(change.identity);
          else this.identities.set(change.identity, record);
        });
    }
  }

  // ---- secrets ----------------------------------------------------------------------------------------

  async createSecret(name: string, bytes: Buffer, createdBy: string): Promise<void> {
    const t = now();
    const record: SecretRecord = { type: 'generic', bytes: bytes.toString('base64'), created_at: t, mod_time: t, created_by: createdBy };
    const created = await storeOp('create secret', () => this.records.putIfAbsent(paths.secret(this.info.uid, name), record));
    if (!created) throw ErrSecretExists;
  }

  async secret(name: string): Promise<SecretRecord> {
    const record = await storeOp('read secret', () => this.records.get<SecretRecord>(paths.secret(this.info.uid, name)));
    if (record === undefined) throw ErrSecretNotFound;
    return record;
  }

  async deleteSecret(name: string): Promise<void> {
    const deleted = await storeOp('delete secret', () => this.records.delete(paths.secret(this.info.uid, name)));
    if (!deleted) throw ErrSecretNotFound;
  }

  listSecrets(namePrefix = ''): AsyncGenerator<{ name: string; record: SecretRecord }> {
    return this.records.list<SecretRecord>(paths.secret(this.info.uid), namePrefix);
  }
}
