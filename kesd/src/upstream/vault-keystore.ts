// Keys in Vault's KV engine exactly where and how KES v0.24's keystore.vault keeps them (minio/kes@v0.24.0
// internal/keystore/vault/vault.go), so KES and kesd read each other's keys:
//   KV v1: <engine>/<prefix>/<name>        holding {"<name>": "<value>"}
//   KV v2: <engine>/data/<prefix>/<name>   the same data; KES reads version 1 of it and deletes the metadata (all
//          versions) to delete a key, so a replaced key is written as a new version 1 (delete, then create).
// <value> is the KES-encoded key (kes/stored-key.ts), or with `transit` its Vault Transit ciphertext (vault:v1:…).
import type { VaultConfig } from '../config/upstream.js';
import { VaultToken } from './vault-auth.js';
import { VaultError, VaultHttp, type VaultCall, type VaultReply } from './vault-http.js';

/** Go's path.Join over non-empty parts (mount, prefix, name never hold '.' or '..' segments: config/upstream.ts). */
const joinPath = (...parts: string[]) => parts.filter((p) => p !== '').join('/');

export class VaultKeystore {
  readonly http: VaultHttp;
  private readonly auth: VaultToken;

  constructor(
    readonly config: VaultConfig,
    timeoutMs?: number,
  ) {
    this.http = new VaultHttp(config.endpoint, config.tls, timeoutMs);
    this.auth = new VaultToken(this.http, config.auth, config.namespace);
  }

  /** Where a key lives, for messages: engine/prefix/name as KES names it. */
  location(name: string): string {
    const { engine, prefix, version } = this.config;
    return version === 'v2' ? joinPath(engine, 'data', prefix, name) : joinPath(engine, prefix, name);
  }

  /** An authenticated call; a 403 drops the token and the call is made once more with a fresh one. */
  private async call(
    method: string,
    path: string,
    call: Omit<VaultCall, 'token' | 'namespace'> = {},
  ): Promise<VaultReply> {
    for (let attempt = 0; ; attempt++) {
      const reply = await this.http.request(method, path, {
        ...call,
        token: await this.auth.token(),
        namespace: this.config.namespace,
      });
      if (reply.status !== 403 || attempt > 0) return reply;
      this.auth.refused();
    }
  }

  /** The stored value of key `name` (Transit-decrypted), or undefined if Vault holds none. */
  async get(name: string): Promise<string | undefined> {
    const { engine, prefix, version } = this.config;
    const reply =
      version === 'v2'
        ? await this.call('GET', joinPath(engine, 'data', prefix, name), { query: { version: '1' } })
        : await this.call('GET', joinPath(engine, prefix, name));
    if (reply.status === 404) return undefined;
    if (reply.status !== 200) throw VaultHttp.failure(`read '${this.location(name)}'`, reply);
    const data = version === 'v2' ? reply.body?.data?.data : reply.body?.data;
    if (data === null || data === undefined) return undefined; // v2: version 1 deleted (soft) or destroyed
    const value = data[name];
    if (typeof value !== 'string')
      throw new VaultError(`vault: '${this.location(name)}' holds no string under '${name}' (not a KES key entry)`);
    return value.startsWith('vault:v1:') ? this.decrypt(name, value) : value;
  }

  /** Writes key `name` unless Vault holds one (KV v2: atomically, cas=0); 'exists' if it does. */
  async create(name: string, value: string): Promise<'created' | 'exists'> {
    const { engine, prefix, version } = this.config;
    const stored = await this.encrypt(name, value);
    if (version === 'v1') {
      if ((await this.get(name)) !== undefined) return 'exists';
      const reply = await this.call('PUT', joinPath(engine, prefix, name), { body: { [name]: stored } });
      if (reply.status !== 204 && reply.status !== 200)
        throw VaultHttp.failure(`write '${this.location(name)}'`, reply);
      return 'created';
    }
    const reply = await this.call('PUT', joinPath(engine, 'data', prefix, name), {
      body: { options: { cas: 0 }, data: { [name]: stored } },
    });
    if (reply.status === 200 || reply.status === 204) return 'created';
    if (reply.status === 400 && /check-and-set/i.test(JSON.stringify(reply.body?.errors ?? ''))) return 'exists';
    throw VaultHttp.failure(`write '${this.location(name)}'`, reply);
  }

  /** Makes key `name` hold `value` whatever it held (KV v2: as a new version 1, the one KES reads). */
  async replace(name: string, value: string): Promise<void> {
    if (this.config.version === 'v2') {
      await this.delete(name);
      if ((await this.create(name, value)) === 'exists')
        throw new VaultError(`vault: '${this.location(name)}' was written by someone else while kesd replaced it`);
      return;
    }
    const reply = await this.call('PUT', joinPath(this.config.engine, this.config.prefix, name), {
      body: { [name]: await this.encrypt(name, value) },
    });
    if (reply.status !== 204 && reply.status !== 200) throw VaultHttp.failure(`write '${this.location(name)}'`, reply);
  }

  /** Removes key `name` (KV v2: its metadata and every version, as KES does); a missing key is no error. */
  async delete(name: string): Promise<void> {
    const { engine, prefix, version } = this.config;
    const reply = await this.call(
      'DELETE',
      version === 'v2' ? joinPath(engine, 'metadata', prefix, name) : joinPath(engine, prefix, name),
    );
    if (reply.status !== 204 && reply.status !== 200 && reply.status !== 404)
      throw VaultHttp.failure(`delete '${this.location(name)}'`, reply);
  }

  /** Every key name under the prefix (sub-folders, which KES never writes, are left out). */
  async list(): Promise<string[]> {
    const { engine, prefix, version } = this.config;
    const reply = await this.call(
      'GET',
      version === 'v2' ? joinPath(engine, 'metadata', prefix) : joinPath(engine, prefix),
      { query: { list: 'true' } },
    );
    if (reply.status === 404) return [];
    if (reply.status !== 200) throw VaultHttp.failure(`list '${joinPath(engine, prefix)}'`, reply);
    const keys = reply.body?.data?.keys;
    if (!Array.isArray(keys)) throw new VaultError(`vault: the listing of '${joinPath(engine, prefix)}' has no keys`);
    return keys
      .map(String)
      .filter((k) => !k.endsWith('/'))
      .sort();
  }

  private async encrypt(name: string, value: string): Promise<string> {
    const transit = this.config.transit;
    if (transit === undefined) return value;
    const reply = await this.call('POST', joinPath(transit.engine, 'encrypt', transit.key), {
      body: { plaintext: Buffer.from(value).toString('base64') },
    });
    const ciphertext = reply.body?.data?.ciphertext;
    if (reply.status !== 200) throw VaultHttp.failure(`encrypt '${name}' with the Transit key '${transit.key}'`, reply);
    if (typeof ciphertext !== 'string' || !ciphertext.startsWith('vault:v1:'))
      throw new VaultError(`vault: Transit answered no ciphertext for '${name}'`);
    return ciphertext;
  }

  private async decrypt(name: string, ciphertext: string): Promise<string> {
    const transit = this.config.transit;
    if (transit === undefined)
      throw new VaultError(
        `vault: '${this.location(name)}' is encrypted with a Vault Transit key, and no 'transit' is configured`,
      );
    const reply = await this.call('POST', joinPath(transit.engine, 'decrypt', transit.key), { body: { ciphertext } });
    if (reply.status !== 200)
      throw VaultHttp.failure(`decrypt '${this.location(name)}' with the Transit key '${transit.key}'`, reply);
    const plaintext = reply.body?.data?.plaintext;
    if (typeof plaintext !== 'string') throw new VaultError(`vault: Transit answered no plaintext for '${name}'`);
    return Buffer.from(plaintext, 'base64').toString('utf8');
  }

  close(): void {
    this.http.close();
  }
}
