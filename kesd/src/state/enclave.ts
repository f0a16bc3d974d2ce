// One enclave: its keys (keys.ts: versions, cached in memory on first use), policies, identities and secrets.
import { hmacSha256 } from '../crypto/key.js';
import {
  ErrAssignAdmin,
  ErrDecrypt,
  ErrDeleteAdmin,
  ErrIdentityNotFound,
  ErrPolicyNotFound,
  ErrSecretExists,
  ErrSecretNotFound,
} from '../kes/errors.js';
import type { Change, ChangeBus } from './changes.js';
import { KeyRing, storeOp, type CachedKey, type KeyMaterial } from './keys.js';
import { isAllowed, type PolicyRules } from './policy.js';
import type { SyncQueue } from './sync-queue.js';
import {
  paths,
  type EnclaveRecord,
  type IdentityRecord,
  type KeyRecord,
  type PolicyRecord,
  type RecordStore,
  type SecretRecord,
} from './records.js';

export type { CachedKey, KeyMaterial, KeyVersion } from './keys.js';

const now = () => new Date().toISOString();

export class Enclave {
  readonly policies = new Map<string, PolicyRecord>();
  readonly identities = new Map<string, IdentityRecord>();
  /** Every change to a key goes through here. */
  readonly keys: KeyRing;
  private mutations: Promise<unknown> = Promise.resolve();

  /** sync: the upstream's queue, when this enclave's keys are mirrored to one (state/sync-queue.ts). */
  constructor(
    readonly name: string,
    readonly info: EnclaveRecord,
    private readonly records: RecordStore,
    private readonly bus: ChangeBus,
    sync?: SyncQueue,
  ) {
    this.keys = new KeyRing(name, info.uid, records, bus, sync);
  }

  async load(): Promise<void> {
    for await (const { name, record } of this.records.list<PolicyRecord>(paths.policy(this.info.uid)))
      this.policies.set(name, record);
    for await (const { name, record } of this.records.list<IdentityRecord>(paths.identity(this.info.uid)))
      this.identities.set(name, record);
  }

  /** Replaces policies and identities with the store's and drops cached keys (resyncFromStore, store-changes.ts). */
  async reload(): Promise<void> {
    await this.serial(async () => {
      const policies = new Map<string, PolicyRecord>();
      const identities = new Map<string, IdentityRecord>();
      for await (const { name, record } of this.records.list<PolicyRecord>(paths.policy(this.info.uid)))
        policies.set(name, record);
      for await (const { name, record } of this.records.list<IdentityRecord>(paths.identity(this.info.uid)))
        identities.set(name, record);
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

  // ---- keys (keys.ts) -----------------------------------------------------------------------------------

  /** The cached key, or undefined if it must be loaded (the hot path stays synchronous on a hit). */
  cachedKey(name: string): CachedKey | undefined {
    return this.keys.cached(name);
  }

  key(name: string): Promise<CachedKey> {
    return this.keys.get(name);
  }

  createKey(name: string, createdBy: string, material?: KeyMaterial): Promise<void> {
    return this.keys.create(name, createdBy, material);
  }

  deleteKey(name: string): Promise<void> {
    return this.keys.delete(name);
  }

  /** Key records in name order, streamed from the store (never cached): `keep` skips names before opening. */
  listKeys(namePrefix = '', keep?: (name: string) => boolean): AsyncGenerator<{ name: string; record: KeyRecord }> {
    return this.keys.list(namePrefix, keep);
  }

  /** What GET /v1/key/list answers: NDJSON lines in chunks (keys.ts keeps them, so a list opens few records). */
  listKeyLines(namePrefix = '', keep?: (name: string) => boolean): AsyncGenerator<string> {
    return this.keys.listLines(namePrefix, keep);
  }

  /**
   * The plaintext of a ciphertext under one of the key's versions (`version`: that one only), else ErrDecrypt.
   * Synchronous when a cached version opens it; when none does, the store is asked whether another replica added
   * versions this process has not heard of yet, and if so they are tried.
   */
  decrypt(
    key: CachedKey,
    ciphertext: Uint8Array,
    context: Uint8Array | undefined,
    version?: number,
  ): Buffer | Promise<Buffer> {
    const plaintext = KeyRing.open(key, ciphertext, context, version);
    if (plaintext !== undefined) return plaintext;
    return this.keys.stale(key).then(async (stale) => {
      const again = stale ? KeyRing.open(await this.keys.get(key.name), ciphertext, context, version) : undefined;
      if (again === undefined) throw ErrDecrypt;
      return again;
    });
  }

  hmac(key: CachedKey, message: Uint8Array): Buffer {
    return hmacSha256(key.hmacKey, message);
  }

  /** Drops the cached keys for good: the system is sealed. */
  seal(): void {
    this.keys.seal();
  }

  /** Drops key material from memory (a reload, a deleted enclave, a seal). */
  forgetKeys(): void {
    this.keys.forget();
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
      const record: PolicyRecord = {
        allow: [...rules.allow],
        deny: [...rules.deny],
        created_at: now(),
        created_by: createdBy,
      };
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
        return this.keys.drop(change.name);
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
    const record: SecretRecord = {
      type: 'generic',
      bytes: bytes.toString('base64'),
      created_at: t,
      mod_time: t,
      created_by: createdBy,
    };
    const created = await storeOp('create secret', () =>
      this.records.putIfAbsent(paths.secret(this.info.uid, name), record),
    );
    if (!created) throw ErrSecretExists;
  }

  async secret(name: string): Promise<SecretRecord> {
    const record = await storeOp('read secret', () =>
      this.records.get<SecretRecord>(paths.secret(this.info.uid, name)),
    );
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
