// The etcd Store backend: several kesd replicas share one etcd cluster (docs/ha.md).
//
// Layout: the record at path P is the etcd key `<prefix>P`, and the sealed root key (the text a data dir's .unseal
// holds) is `<prefix>unseal`. Values are sealed above this layer, so etcd, its disks and its backups see only
// ciphertext.
//
// Consistency: etcd reads are linearizable (the default; never `serializable`) and a write resolves once a quorum
// has committed it, so the Store contract (durable on resolve, reads see every earlier commit) holds across
// replicas. putIfAbsent is one transaction on create_revision == 0, so of concurrent callers exactly one wins.
//
// Faults: every read and write carries a deadline, so a lost quorum becomes a prompt StoreError (the API answers 502), never
// a hang. A call moves on to the next endpoint only when it never reached one (no connection: the member is down);
// a call that may have reached etcd is not repeated, so a create never reports its own write as a conflict. etcd3's
// own circuit breaker is off: it would keep failing calls for seconds after the quorum is back.
import { readFileSync } from 'node:fs';
import { handleWhen, noop, retry } from 'cockatiel';
import {
  Etcd3,
  GRPCUnavailableError,
  type IDuplexStream,
  type IOptions,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import type { EtcdConfig } from '../config/config.js';
import { StoreError, type Store, type StoreCondition, type StoreRecord, type StoreWrite } from './store.js';
import { wipe } from '../crypto/secret.js';
import {
  openRootKey,
  parseSealedRootKey,
  readUnsealKey,
  RootKeyMissingError,
  type RootKeyInfo,
  type SealedRootKey,
  type UnsealSource,
} from './unseal.js';

/** Deadline of a read or write: etcd commits in milliseconds; seconds mean no leader (a lost quorum, an election). */
export const CALL_TIMEOUT_MS = 3000;
/** Deadline of status() (/v1/ready, /v1/status): a probe must answer quickly either way. */
export const STATUS_TIMEOUT_MS = 1000;
/** Keys per range call of list(). */
export const LIST_PAGE = 256;
// etcd refuses requests over 1.5 MiB (--max-request-bytes), so no value is larger; a page of the largest values
// must still fit in one response (grpc's default limit is 4 MiB).
const MAX_RESPONSE_BYTES = LIST_PAGE * 2 * 1024 * 1024;
/** The store path of the sealed root key. Record paths never collide with it (records.ts). */
export const ROOT_KEY_PATH = 'unseal';

export type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;
type CallOptions = NonNullable<Parameters<Etcd3['kv']['range']>[1]>;

// "No connection established": grpc-js failed the call before sending it (the member is down or unreachable).
const neverSent = (err: Error) => err instanceof GRPCUnavailableError && /No connection established/i.test(err.message);

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new StoreError(`store: cannot read the etcd TLS ${what} '${path}': ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function clientOptions(config: EtcdConfig): IOptions {
  const { tls } = config;
  return {
    hosts: config.endpoints,
    ...(tls
      ? {
          credentials: {
            // grpc-js falls back to the system roots when no CA is given.
            rootCertificate: (tls.ca ? readPem(tls.ca, 'CA') : null) as Buffer,
            ...(tls.cert && tls.key
              ? { certChain: readPem(tls.cert, 'certificate'), privateKey: readPem(tls.key, 'key') }
              : {}),
          },
        }
      : {}),
    grpcOptions: {
      // Finds a dead connection (a partition, not just a killed member) under the watch stream. etcd tolerates
      // pings every 5 s or more while a stream is open.
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      // Reconnect to a member that came back within seconds (grpc's default backoff grows to 2 minutes).
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2_000,
      'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
    },
    faultHandling: {
      host: () => noop,
      global: retry(handleWhen(neverSent), { maxAttempts: config.endpoints.length - 1 }),
    },
  };
}

function reasonOf(err: unknown, ms: number): string {
  const message = (err as Error)?.message ?? String(err);
  if (/DEADLINE_EXCEEDED|context deadline exceeded/i.test(message))
    return `etcd did not answer within ${ms} ms (no quorum, or unreachable)`;
  return message.replace(/^\w+Error: /, '');
}

/** The end of the etcd key range holding every key that starts with `prefix` (etcd's GetPrefixRangeEnd). */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // the prefix is all 0xff bytes (or empty): every key from it onwards
}

export class EtcdStore implements Store {
  private closed = false;
  private readonly prefix: Buffer;

  constructor(
    readonly config: EtcdConfig,
    private readonly client: Etcd3,
    private readonly watcher: Etcd3,
  ) {
    this.prefix = Buffer.from(config.prefix);
  }

  private key(path: string): Buffer {
    return Buffer.concat([this.prefix, Buffer.from(path)]);
  }

  private async call<T>(
    op: string,
    path: string,
    run: (options: CallOptions) => Promise<T>,
    ms = CALL_TIMEOUT_MS,
  ): Promise<T> {
    if (this.closed) throw new StoreError('store: the etcd client is closed');
    try {
      return await run({ deadline: Date.now() + ms });
    } catch (err) {
      throw new StoreError(`store: ${op} '${path}' failed: ${reasonOf(err, ms)}`, { cause: err });
    }
  }

  async get(path: string): Promise<Uint8Array | undefined> {
    const res = await this.call('get', path, (o) => this.client.kv.range({ key: this.key(path) }, o));
    return res.kvs[0]?.value;
  }

  async putIfAbsent(path: string, value: Uint8Array): Promise<boolean> {
    const key = this.key(path);
    const res = await this.call('put', path, (o) =>
      this.client.kv.txn(
        {
          compare: [{ key, target: 'Create', create_revision: 0, result: 'Equal' }],
          success: [{ request_put: { key, value: Buffer.from(value) } }],
        },
        o,
      ),
    );
    return res.succeeded;
  }

  /** Writes value only if path holds `expected` now (one transaction). Resolves true if written. */
  async compareAndPut(path: string, expected: Uint8Array, value: Uint8Array): Promise<boolean> {
    const key = this.key(path);
    const res = await this.call('put', path, (o) =>
      this.client.kv.txn(
        {
          compare: [{ key, target: 'Value', value: Buffer.from(expected), result: 'Equal' }],
          success: [{ request_put: { key, value: Buffer.from(value) } }],
        },
        o,
      ),
    );
    return res.succeeded;
  }

  async put(path: string, value: Uint8Array): Promise<void> {
    await this.call('put', path, (o) => this.client.kv.put({ key: this.key(path), value: Buffer.from(value) }, o));
  }

  async delete(path: string): Promise<boolean> {
    const res = await this.call('delete', path, (o) => this.client.kv.deleteRange({ key: this.key(path) }, o));
    return Number(res.deleted) > 0;
  }

  /** One etcd transaction: the conditions compare create revisions (absent/present) or values, the writes follow. */
  async commit(conditions: readonly StoreCondition[], writes: readonly StoreWrite[]): Promise<boolean> {
    const compare = conditions.map((c) => {
      const key = this.key(c.path);
      if (c.is === 'absent') return { key, target: 'Create' as const, create_revision: 0, result: 'Equal' as const };
      if (c.is === 'present') return { key, target: 'Create' as const, create_revision: 0, result: 'Greater' as const };
      return { key, target: 'Value' as const, value: Buffer.from(c.is), result: 'Equal' as const };
    });
    const success = writes.map((w) =>
      'put' in w
        ? { request_put: { key: this.key(w.put), value: Buffer.from(w.value) } }
        : { request_delete_range: { key: this.key(w.delete) } },
    );
    const first = writes[0] === undefined ? '' : 'put' in writes[0] ? writes[0].put : writes[0].delete;
    const res = await this.call('commit', first, (o) => this.client.kv.txn({ compare, success }, o));
    return res.succeeded;
  }

  async count(prefix: string): Promise<number> {
    const key = this.key(prefix);
    const res = await this.call('count', prefix, (o) =>
      this.client.kv.range({ key, range_end: prefixRangeEnd(key), count_only: true }, o),
    );
    return Number(res.count);
  }

  /** Pages of LIST_PAGE keys, all read at the revision of the first page: one consistent snapshot, as in LMDB. */
  async *list(prefix: string): AsyncIterable<StoreRecord> {
    const start = this.key(prefix);
    const end = prefixRangeEnd(start);
    let from = start;
    let revision: string | undefined;
    for (;;) {
      const page = await this.call('list', prefix, (o) =>
        this.client.kv.range({ key: from, range_end: end, limit: LIST_PAGE, ...(revision ? { revision } : {}) }, o),
      );
      revision ??= page.header.revision;
      for (const kv of page.kvs) yield { path: kv.key.subarray(this.prefix.length).toString('utf8'), value: kv.value };
      if (!page.more || page.kvs.length === 0) return;
      from = Buffer.concat([page.kvs[page.kvs.length - 1]!.key, Buffer.from([0])]); // the next key after the last one
    }
  }

  async paths(prefix: string, limit: number, after?: string): Promise<string[]> {
    if (limit <= 0) return [];
    const start = this.key(prefix);
    const from = after === undefined ? start : Buffer.concat([this.key(after), Buffer.from([0])]); // the next key after it
    const page = await this.call('list', prefix, (o) =>
      this.client.kv.range({ key: from, range_end: prefixRangeEnd(start), limit, keys_only: true }, o),
    );
    return page.kvs.map((kv) => kv.key.subarray(this.prefix.length).toString('utf8'));
  }

  /** A linearizable read: it succeeds only while the etcd cluster has a quorum. */
  async status(): Promise<void> {
    await this.revision(STATUS_TIMEOUT_MS);
  }

  /** The etcd revision now (a linearizable read): every change after it is still to come on a watch from it + 1. */
  async revision(ms = CALL_TIMEOUT_MS): Promise<bigint> {
    const res = await this.call(
      'status',
      ROOT_KEY_PATH,
      (o) => this.client.kv.range({ key: this.key(ROOT_KEY_PATH), count_only: true }, o),
      ms,
    );
    return BigInt(res.header.revision);
  }

  /** A raw etcd watch stream on the whole prefix from `startRevision` (store/etcd-watch.ts keeps it going). */
  async watch(startRevision: bigint): Promise<WatchStream> {
    if (this.closed) throw new StoreError('store: the etcd client is closed');
    const stream = await this.watcher.watchClient.watch();
    stream.write({
      create_request: {
        key: this.prefix,
        range_end: prefixRangeEnd(this.prefix),
        start_revision: startRevision.toString(),
        progress_notify: true,
      },
    });
    return stream;
  }

  /** The store path of an etcd key from a watch event, or undefined if it is not under the prefix. */
  pathOf(key: Buffer): string | undefined {
    return key.subarray(0, this.prefix.length).equals(this.prefix)
      ? key.subarray(this.prefix.length).toString('utf8')
      : undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
    this.watcher.close();
  }
}

/**
 * Clients for the configured etcd cluster; nothing connects until the first call. The watch gets a client of its
 * own: etcd3 closes every connection of a member after a failed call (a timeout during an election, say), and a
 * shared one would take the watch stream down with it.
 */
export function openEtcdStore(config: EtcdConfig): EtcdStore {
  return new EtcdStore(config, new Etcd3(clientOptions(config)), new Etcd3(clientOptions(config)));
}

const where = (config: EtcdConfig) => `etcd key '${config.prefix}${ROOT_KEY_PATH}'`;

/**
 * Stores `sealed` (sealRootKey's text) as the root key unless one is there already, in one etcd transaction, and
 * unseals the one that is there now with `unsealKey`: ours, or the one a replica initialising at the same moment
 * wrote first. A wrong unseal key throws UnsealError, and then nothing was written.
 */
export async function initEtcdRootKey(store: EtcdStore, sealed: string, unsealKey: Buffer): Promise<RootKeyInfo> {
  if (await store.putIfAbsent(ROOT_KEY_PATH, Buffer.from(sealed)))
    return openRootKey(parseSealedRootKey(sealed, where(store.config)), unsealKey);
  return openRootKey(await readEtcdSealedRootKey(store), unsealKey);
}

/**
 * Replaces the sealed root key kept in etcd with `next` if it still is `expected` (the text read before), in one
 * transaction: a rekey racing another (replicas starting at once) changes it once. Resolves false if it had changed.
 */
export async function swapEtcdRootKey(store: EtcdStore, expected: string, next: string): Promise<boolean> {
  return store.compareAndPut(ROOT_KEY_PATH, Buffer.from(expected), Buffer.from(next));
}

/** The sealed root key kept in etcd, with the source of its unseal key. Never writes. */
export async function readEtcdSealedRootKey(store: EtcdStore): Promise<SealedRootKey> {
  const sealed = await store.get(ROOT_KEY_PATH);
  if (sealed === undefined)
    throw new RootKeyMissingError(
      `unseal: ${where(store.config)} does not exist (was the store initialized with 'kesd init'?)`,
    );
  return parseSealedRootKey(Buffer.from(sealed).toString('utf8'), where(store.config));
}

/** Unseals the root key kept in etcd with the unseal key from `source` (default: the one recorded there). Never writes. */
export async function readEtcdRootKey(
  store: EtcdStore,
  env: NodeJS.ProcessEnv,
  source?: UnsealSource,
): Promise<RootKeyInfo> {
  const sealed = await readEtcdSealedRootKey(store);
  const unsealKey = readUnsealKey(source ?? sealed.source, env);
  try {
    return openRootKey(sealed, unsealKey);
  } finally {
    wipe(unsealKey);
  }
}
