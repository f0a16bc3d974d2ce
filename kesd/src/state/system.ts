// The whole server state: the system admin, the enclaves, and the sealed flag.
import { randomBytes } from '../crypto/random.js';
import { ErrEnclaveExists, ErrEnclaveNotFound, ErrSealed, ErrStoreWrite } from '../api/errors.js';
import type { Store } from '../store/store.js';
import { Enclave } from './enclave.js';
import { deriveRecordKey, paths, RecordStore, type EnclaveRecord } from './records.js';

export interface RootKey {
  readonly key: Buffer;
  readonly sysadmin: string;
}

export class System {
  readonly enclaves = new Map<string, Enclave>();
  readonly startedAt = Date.now();
  sealed = false;

  private constructor(readonly sysadmin: string, readonly records: RecordStore) {}

  /** Loads enclaves, policies and identities (keys load lazily), and resumes unfinished enclave sweeps. */
  static async open(store: Store, root: RootKey): Promise<System> {
    const system = new System(root.sysadmin, new RecordStore(store, deriveRecordKey(root.key)));
    for await (const { name, record } of system.records.list<EnclaveRecord>(paths.enclaves)) {
      const enclave = new Enclave(name, record, system.records);
      await enclave.load();
      system.enclaves.set(name, enclave);
    }
    for await (const path of system.records.listPaths(paths.sweeps)) {
      void system.sweep(path.slice(paths.sweeps.length));
    }
    return system;
  }

  get store(): Store {
    return this.records.store;
  }

  /** The enclave a request addresses; 403 while sealed, 404 if unknown. */
  enclave(name: string): Enclave {
    if (this.sealed) throw ErrSealed;
    const enclave = this.enclaves.get(name);
    if (enclave === undefined) throw ErrEnclaveNotFound;
    return enclave;
  }

  async createEnclave(name: string, admin: string, createdBy: string): Promise<Enclave> {
    if (this.sealed) throw ErrSealed;
    const record: EnclaveRecord = { uid: randomBytes(16).toString('hex'), admin, created_at: new Date().toISOString(), created_by: createdBy };
    let created: boolean;
    try {
      created = await this.records.putIfAbsent(paths.enclave(name), record);
    } catch (err) {
      throw Object.assign(ErrStoreWrite('create enclave'), { cause: err });
    }
    if (!created) throw ErrEnclaveExists;
    const enclave = new Enclave(name, record, this.records);
    this.enclaves.set(name, enclave);
    return enclave;
  }

  /** Deleting the enclave record removes the enclave at once; its records are swept afterwards. */
  async deleteEnclave(name: string): Promise<void> {
    if (this.sealed) throw ErrSealed;
    const enclave = this.enclaves.get(name);
    if (enclave === undefined) return;
    try {
      await this.records.put(paths.sweep(enclave.info.uid), { enclave: name });
      await this.records.delete(paths.enclave(name));
    } catch (err) {
      throw Object.assign(ErrStoreWrite('delete enclave'), { cause: err });
    }
    this.enclaves.delete(name);
    enclave.forgetKeys();
    await this.sweep(enclave.info.uid);
  }

  private async sweep(uid: string): Promise<void> {
    const doomed: string[] = [];
    for await (const path of this.records.listPaths(paths.scope(uid))) doomed.push(path);
    for (const path of doomed) await this.records.delete(path);
    await this.records.delete(paths.sweep(uid));
  }

  /** Stops all key operations until a restart; key material is dropped from memory. */
  seal(): void {
    if (this.sealed) throw ErrSealed;
    this.sealed = true;
    for (const enclave of this.enclaves.values()) enclave.forgetKeys();
  }
}
