// The whole server state: the system admin, the enclaves, and the sealed flag.
import { randomBytes } from '../crypto/random.js';
import { secretBuffer, wipe } from '../crypto/secret.js';
import { ErrEnclaveExists, ErrSealed, ErrStoreWrite } from '../kes/errors.js';
import type { Store } from '../store/store.js';
import { localBus, type Change, type ChangeBus } from './changes.js';
import { Enclave } from './enclave.js';
import { collectGarbage } from './gc.js';
import { deriveRecordKey, paths, RecordStore, type EnclaveRecord } from './records.js';
import { SyncQueue } from './sync-queue.js';

/** Records an enclave sweep lists and deletes at a time. */
export const SWEEP_BATCH = 1000;

export interface RootKey {
  readonly key: Buffer;
  readonly sysadmin: string;
}

export interface SystemOptions {
  /** Where changes go for the other processes serving the same store (cluster workers); none by default. */
  readonly bus?: ChangeBus;
  /** Start sealed (a cluster worker restarted after a seal): nothing is loaded, and root.key is not used. */
  readonly sealed?: boolean;
  /** When the server started (a cluster worker gets the primary's start time). */
  readonly startedAt?: number;
  /** Finish enclave sweeps a previous run left unfinished (default true). */
  readonly resumeSweeps?: boolean;
  /**
   * On a shared store (etcd): tells the other replicas that this one sealed (store-changes.ts). Called while the
   * record key still exists; what it seals it must seal before it returns its promise (the key is wiped then).
   */
  readonly announceSeal?: () => Promise<void>;
  /** The enclave whose key changes are queued for an upstream (config/upstream.ts), if any. */
  readonly upstreamEnclave?: string;
}

export class System {
  readonly enclaves = new Map<string, Enclave>();
  readonly startedAt: number;
  sealed = false;
  private mutations: Promise<unknown> = Promise.resolve();
  private announceSeal: (() => Promise<void>) | undefined;
  private upstreamEnclave: string | undefined;
  /** Called when a key change was queued for the upstream in this process (the sync loop listens). */
  upstreamQueued: () => void = () => {};

  /** rootKey: the caller's buffer, zeroed when the system is sealed (a sealed kesd holds no key material). */
  private constructor(
    readonly sysadmin: string,
    readonly records: RecordStore,
    private readonly bus: ChangeBus,
    startedAt: number,
    private readonly rootKey: Buffer,
  ) {
    this.startedAt = startedAt;
  }

  /**
   * Loads enclaves, policies and identities (keys load lazily), and resumes unfinished enclave sweeps. Sealed, it
   * loads nothing: a sealed system answers every enclave request with 403 and needs no record.
   */
  static async open(store: Store, root: RootKey, opts: SystemOptions = {}): Promise<System> {
    const sealed = opts.sealed ?? false;
    const recordKey = sealed ? { algorithm: 'AES256' as const, bytes: secretBuffer(32) } : deriveRecordKey(root.key);
    const system = new System(
      root.sysadmin,
      new RecordStore(store, recordKey),
      opts.bus ?? localBus,
      opts.startedAt ?? Date.now(),
      root.key,
    );
    system.announceSeal = opts.announceSeal;
    system.upstreamEnclave = opts.upstreamEnclave;
    if (sealed) {
      system.sealed = true;
      system.dropKeyMaterial();
      return system;
    }
    for await (const { name, record } of system.records.list<EnclaveRecord>(paths.enclaves)) {
      const enclave = system.newEnclave(name, record);
      await enclave.load();
      system.enclaves.set(name, enclave);
    }
    if (opts.resumeSweeps ?? true) {
      for await (const path of system.records.listPaths(paths.sweeps)) {
        // A failed sweep (store unreachable, disk full) keeps its sweep record and resumes at the next start;
        // left unobserved, its rejection would kill the process.
        system.sweep(path.slice(paths.sweeps.length)).catch(() => {});
      }
    }
    return system;
  }

  get store(): Store {
    return this.records.store;
  }

  /** The upstream's queue of the enclave it mirrors, as it is now (undefined without one, or while it does not exist). */
  upstreamQueue(): SyncQueue | undefined {
    const uid = this.upstreamEnclave === undefined ? undefined : this.enclaves.get(this.upstreamEnclave)?.info.uid;
    return uid === undefined ? undefined : new SyncQueue(this.records, uid, () => this.upstreamQueued());
  }

  private newEnclave(name: string, record: EnclaveRecord): Enclave {
    const sync =
      name === this.upstreamEnclave ? new SyncQueue(this.records, record.uid, () => this.upstreamQueued()) : undefined;
    return new Enclave(name, record, this.records, this.bus, sync);
  }

  /** Enclave mutations, local and remote, run one at a time, so the map always ends as the store is. */
  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.mutations.then(op, op);
    this.mutations = run.catch(() => undefined);
    return run;
  }

  async createEnclave(name: string, admin: string, createdBy: string): Promise<Enclave> {
    if (this.sealed) throw ErrSealed;
    const record: EnclaveRecord = {
      uid: randomBytes(16).toString('hex'),
      admin,
      created_at: new Date().toISOString(),
      created_by: createdBy,
    };
    const enclave = await this.serial(async () => {
      let created: boolean;
      try {
        created = await this.records.putIfAbsent(paths.enclave(name), record);
      } catch (err) {
        throw Object.assign(ErrStoreWrite('create enclave'), { cause: err });
      }
      if (!created) throw ErrEnclaveExists;
      const enclave = this.newEnclave(name, record);
      this.enclaves.set(name, enclave);
      return enclave;
    });
    await this.bus.publish({ kind: 'enclave', enclave: name });
    return enclave;
  }

  /** Deleting the enclave record removes the enclave at once; its records are swept afterwards. */
  async deleteEnclave(name: string): Promise<void> {
    if (this.sealed) throw ErrSealed;
    const enclave = await this.serial(async () => {
      const enclave = this.enclaves.get(name);
      if (enclave === undefined) return undefined;
      try {
        await this.records.put(paths.sweep(enclave.info.uid), { enclave: name });
        await this.records.delete(paths.enclave(name));
      } catch (err) {
        throw Object.assign(ErrStoreWrite('delete enclave'), { cause: err });
      }
      this.enclaves.delete(name);
      enclave.forgetKeys();
      return enclave;
    });
    if (enclave === undefined) return;
    await this.bus.publish({ kind: 'enclave', enclave: name });
    await this.sweep(enclave.info.uid);
  }

  /**
   * Deletes an orphaned enclave's records in batches: each batch is read afresh from the start of the scope (what
   * was deleted is gone), so memory stays at one batch and no read snapshot stays open while the deletes commit.
   * The deletes of a batch run concurrently, so the store can commit them together.
   */
  private async sweep(uid: string): Promise<void> {
    for (;;) {
      const batch: string[] = [];
      for await (const path of this.records.listPaths(paths.scope(uid))) {
        batch.push(path);
        if (batch.length === SWEEP_BATCH) break;
      }
      if (batch.length === 0) break;
      await Promise.all(batch.map((path) => this.records.delete(path)));
    }
    await this.records.delete(paths.sweep(uid));
  }

  /**
   * Stops all key operations until a restart; key material is dropped from memory. On a shared store the other
   * replicas seal too; if the store cannot take the announcement, this one is sealed anyway and it throws a 502.
   */
  async seal(): Promise<void> {
    if (this.sealed) throw ErrSealed;
    this.sealed = true;
    // The announcement is sealed under the record key, so it is made before the key is wiped.
    let announced: Promise<void> | undefined;
    try {
      announced = this.announceSeal?.();
    } catch (err) {
      announced = Promise.reject(err);
    }
    announced?.catch(() => {}); // awaited below; until then a rejection is not unhandled
    this.sealHere();
    await this.bus.publish({ kind: 'seal' });
    try {
      await announced;
    } catch (err) {
      throw Object.assign(ErrStoreWrite('seal the other replicas'), { cause: err });
    }
  }

  /** A seal another replica announced (store-changes.ts): this process and its sibling workers seal. */
  async sealedElsewhere(): Promise<void> {
    if (this.sealed) return;
    this.sealHere();
    await this.bus.publish({ kind: 'seal' });
  }

  private sealHere(): void {
    this.sealed = true;
    this.dropKeyMaterial();
    wipe(this.rootKey);
    // Key objects and cipher contexts that held per-message keys are freed (and cleared by OpenSSL) only when
    // collected: collect them now rather than whenever memory gets short.
    collectGarbage();
  }

  /** Zeroes the record key and every cached key, and refuses to cache or open anything from now on. */
  private dropKeyMaterial(): void {
    for (const enclave of this.enclaves.values()) enclave.seal();
    this.records.wipe();
  }

  /**
   * Zeroes the key material a short-lived system holds (one that applied init.yml, or imported keys): the record key
   * and the cached keys; the root key stays with its owner. The system is sealed afterwards.
   */
  release(): void {
    this.sealed = true;
    this.dropKeyMaterial();
  }

  /** Applies a change another process published (see ChangeBus). A sealed system holds no state to update. */
  async apply(change: Change): Promise<void> {
    if (this.sealed) return;
    switch (change.kind) {
      case 'seal':
        return this.sealHere();
      case 'enclave':
        return this.serial(() => this.reloadEnclave(change.enclave));
      default:
        await this.enclaves.get(change.enclave)?.apply(change);
    }
  }

  private async reloadEnclave(name: string): Promise<void> {
    const record = await this.records.get<EnclaveRecord>(paths.enclave(name));
    const current = this.enclaves.get(name);
    if (current !== undefined && current.info.uid === record?.uid) return;
    if (current !== undefined) {
      this.enclaves.delete(name);
      current.forgetKeys();
    }
    if (record === undefined) return;
    const enclave = this.newEnclave(name, record);
    await enclave.load();
    this.enclaves.set(name, enclave);
  }
}
