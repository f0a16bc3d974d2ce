// A small KES HTTP client over node:https, speaking both dialects kesd serves (kes-protocol §5, §6, §11.1).
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';

export interface KesClientOptions {
  /** https://host:port */
  endpoint: string;
  certFile?: string;
  keyFile?: string;
  /** A PEM file with the CA certificate(s) that signed the server's certificate. */
  caFile?: string;
  insecure?: boolean;
  /** Sent as ?enclave=<name> on key, secret, policy and identity routes. */
  enclave?: string;
}

export interface KesResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A KES error reply: the (status, message) pair clients compare (kes-protocol §4.5). */
export class KesApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'KesApiError';
  }
}

// Go's url.PathEscape keeps the unreserved set plus the sub-delimiters allowed inside a path segment.
const PATH_SAFE = /^[A-Za-z0-9\-_.~$&+:=@]$/;

/** Escapes one path segment exactly like Go's url.PathEscape (`*` → %2A, `/` → %2F, space → %20). */
export function pathEscape(segment: string): string {
  let out = '';
  for (const byte of Buffer.from(segment, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += byte < 0x80 && PATH_SAFE.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

const ENCLAVE_SCOPED = ['/v1/key/', '/v1/secret/', '/v1/policy/', '/v1/identity/'];

/** Whether a request path carries ?enclave= (the v0.22 client rule: not for enclave, sys, server-info or log routes). */
export function isEnclaveScoped(path: string): boolean {
  return ENCLAVE_SCOPED.some((prefix) => path.startsWith(prefix));
}

/** The error a KES client reports for a reply: JSON `error` or `message`, otherwise the raw body text. */
export function parseErrorResponse(status: number, headers: IncomingHttpHeaders, body: Buffer): KesApiError {
  const text = body.toString('utf8');
  let message = text.trim();
  if (String(headers['content-type'] ?? '').startsWith('application/json')) {
    try {
      const json = JSON.parse(text) as { message?: unknown; error?: unknown };
      if (typeof json.error === 'string' && json.error !== '') message = json.error;
      else if (typeof json.message === 'string') message = json.message;
    } catch {
      // Not JSON after all: keep the raw text, as the Go clients do.
    }
  }
  return new KesApiError(status, message || `HTTP ${status}`);
}

/** Splits an NDJSON body into objects; a line carrying `error` aborts the listing with that message. */
export function parseNdjson(text: string): Record<string, unknown>[] {
  const items: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const item = JSON.parse(line) as Record<string, unknown>;
    if (typeof item.error === 'string' && item.error !== '') throw new Error(item.error);
    items.push(item);
  }
  return items;
}

/**
 * A listing reply as entries: v0.22 NDJSON (any content type, even none for empty lists) or the newest
 * `{names|identities, continue_at}` object, whose names become `{ [field]: name }` entries.
 */
export function parseListResponse(res: KesResponse, field: 'name' | 'identity'): Record<string, unknown>[] {
  const text = res.body.toString('utf8');
  if (String(res.headers['content-type'] ?? '').startsWith('application/json')) {
    const json = JSON.parse(text) as { names?: unknown; identities?: unknown };
    const names = json.names ?? json.identities;
    if (Array.isArray(names)) return names.map((n) => ({ [field]: n }));
  }
  return parseNdjson(text);
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const fromB64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : '', 'base64');

export interface KeyVersionInfo {
  version: string;
  id?: string;
  algorithm?: string;
  created_at?: string;
  created_by?: string;
}
/** `version` and `versions` are kesd's (KES has no key versions). */
export interface KeyInfo {
  name: string;
  id?: string;
  algorithm?: string;
  created_at?: string;
  created_by?: string;
  version?: string;
  versions?: KeyVersionInfo[];
}
/** `version`: the key version that sealed the ciphertext (kesd, and kms-go's DEK.Version). */
export interface DataKey {
  plaintext: Buffer;
  ciphertext: Buffer;
  version?: string;
}
/** Both policy shapes: v0.22 arrays or newest `{pattern: {}}` maps. */
export interface PolicyJson {
  name?: string;
  allow?: string[] | Record<string, unknown>;
  deny?: string[] | Record<string, unknown>;
  created_at?: string;
  created_by?: string;
}
export interface PolicyInfo {
  name?: string;
  created_at?: string;
  created_by?: string;
}
export interface IdentityInfo {
  identity?: string;
  admin?: boolean;
  policy?: string;
  created_at?: string;
  created_by?: string;
}
/** Self-describe in either shape: kms-go (flat allow/deny, `policy` a name) or v0.22 (`policy_name`, nested policy). */
export interface SelfInfo {
  identity: string;
  admin?: boolean;
  policy?: string | PolicyJson;
  policy_name?: string;
  allow?: PolicyJson['allow'];
  deny?: PolicyJson['deny'];
  created_at?: string;
  created_by?: string;
}
export interface EnclaveInfo {
  name: string;
  created_at?: string;
  created_by?: string;
}
export interface SecretInfo {
  name?: string;
  type?: string;
  created_at?: string;
  mod_time?: string;
  created_by?: string;
}
export interface StatusInfo {
  version: string;
  os?: string;
  arch?: string;
  uptime: number;
  num_cpu?: number;
  num_cpu_used?: number;
  mem_heap_used?: number;
  mem_stack_used?: number;
  keystore_latency?: number;
  keystore_unreachable?: boolean;
  [field: string]: unknown;
}
export interface ApiRoute {
  method: string;
  path: string;
  max_body: number;
  timeout: number;
}

/** An open log stream: call it to disconnect; `done` settles when the stream ends (rejects on an error reply). */
export type LogStream = (() => void) & { readonly done: Promise<void> };

export class KesClient {
  readonly endpoint: URL;
  readonly enclave: string | undefined;
  private readonly agent: https.Agent;

  constructor(opts: KesClientOptions) {
    this.endpoint = new URL(opts.endpoint);
    if (this.endpoint.protocol !== 'https:') throw new Error(`kes: endpoint '${opts.endpoint}' is not an https:// URL`);
    this.enclave = opts.enclave || undefined;
    this.agent = new https.Agent({
      keepAlive: true,
      cert: opts.certFile ? readFileSync(opts.certFile) : undefined,
      key: opts.keyFile ? readFileSync(opts.keyFile) : undefined,
      ca: opts.caFile ? readFileSync(opts.caFile) : undefined,
      rejectUnauthorized: !opts.insecure,
      minVersion: 'TLSv1.2',
    });
  }

  /** Closes the idle keep-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  private target(path: string): string {
    const base = this.endpoint.pathname.replace(/\/+$/, '');
    const query =
      this.enclave !== undefined && isEnclaveScoped(path) ? `?enclave=${encodeURIComponent(this.enclave)}` : '';
    return base + path + query;
  }

  private send(
    method: string,
    path: string,
    body: unknown,
    onResponse: (res: IncomingMessage) => void,
  ): { abort(): void; failed: Promise<never> } {
    let payload: Buffer | undefined;
    const headers: Record<string, string | number> = {};
    if (body !== undefined) {
      payload = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    } else if (method !== 'GET' && method !== 'DELETE') {
      headers['content-length'] = 0;
    }
    let fail!: (err: Error) => void;
    const failed = new Promise<never>((_, reject) => (fail = reject));
    failed.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    const req = https.request(
      {
        protocol: 'https:',
        hostname: this.endpoint.hostname.replace(/^\[|\]$/g, ''),
        port: this.endpoint.port || 443,
        method,
        path: this.target(path),
        headers,
        agent: this.agent,
      },
      onResponse,
    );
    req.on('error', fail);
    req.end(payload);
    return { abort: () => req.destroy(), failed };
  }

  /** One request; resolves with the whole reply, throws KesApiError for status ≥ 400. */
  request(method: string, path: string, body?: unknown): Promise<KesResponse> {
    return new Promise<KesResponse>((resolve, reject) => {
      const { failed } = this.send(method, path, body, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const reply = { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) };
          if (reply.status >= 400) reject(parseErrorResponse(reply.status, reply.headers, reply.body));
          else resolve(reply);
        });
      });
      failed.catch(reject);
    });
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body);
    return JSON.parse(res.body.toString('utf8')) as T;
  }

  // Server info.
  version(): Promise<{ version: string; commit?: string }> {
    return this.json('GET', '/version');
  }
  status(): Promise<StatusInfo> {
    return this.json('GET', '/v1/status');
  }
  api(): Promise<ApiRoute[]> {
    return this.json('GET', '/v1/api');
  }
  async metrics(): Promise<string> {
    return (await this.request('GET', '/v1/metrics')).body.toString('utf8');
  }

  // Keys.
  async createKey(name: string): Promise<void> {
    await this.request('POST', `/v1/key/create/${pathEscape(name)}`);
  }
  /** Sends both import shapes: newest `{key, cipher}` and v0.22 `{bytes}`. */
  async importKey(name: string, bytes: Uint8Array, cipher = 'AES256'): Promise<void> {
    await this.request('POST', `/v1/key/import/${pathEscape(name)}`, { key: b64(bytes), cipher, bytes: b64(bytes) });
  }
  describeKey(name: string): Promise<KeyInfo> {
    return this.json('GET', `/v1/key/describe/${pathEscape(name)}`);
  }
  async deleteKey(name: string): Promise<void> {
    await this.request('DELETE', `/v1/key/delete/${pathEscape(name)}`);
  }
  async listKeys(pattern = '*'): Promise<KeyInfo[]> {
    return parseListResponse(
      await this.request('GET', `/v1/key/list/${pathEscape(pattern)}`),
      'name',
    ) as unknown as KeyInfo[];
  }
  async generateKey(name: string, context?: Uint8Array): Promise<DataKey> {
    const r = await this.json<{ plaintext: string; ciphertext: string; version?: string }>(
      'POST',
      `/v1/key/generate/${pathEscape(name)}`,
      context ? { context: b64(context) } : {},
    );
    return {
      plaintext: fromB64(r.plaintext),
      ciphertext: fromB64(r.ciphertext),
      ...(r.version !== undefined ? { version: r.version } : {}),
    };
  }
  /** kesd: adds a version to the key. */
  rotateKey(name: string): Promise<{ name: string; version: string; created_at: string }> {
    return this.json('POST', `/v1/key/rotate/${pathEscape(name)}`);
  }
  /** kesd: deletes one version of the key (not version 1, not the newest). */
  async deleteKeyVersion(name: string, version: string): Promise<void> {
    await this.request('DELETE', `/v1/key/version/delete/${pathEscape(name)}/${pathEscape(version)}`);
  }
  async encrypt(name: string, plaintext: Uint8Array, context?: Uint8Array): Promise<Buffer> {
    const body = { plaintext: b64(plaintext), ...(context ? { context: b64(context) } : {}) };
    return fromB64(
      (await this.json<{ ciphertext: string }>('POST', `/v1/key/encrypt/${pathEscape(name)}`, body)).ciphertext,
    );
  }
  /** `version`: the key version that sealed it (kms-go's optional field); without it kesd finds the version. */
  async decrypt(name: string, ciphertext: Uint8Array, context?: Uint8Array, version?: string): Promise<Buffer> {
    const body = {
      ciphertext: b64(ciphertext),
      ...(context ? { context: b64(context) } : {}),
      ...(version ? { version } : {}),
    };
    return fromB64(
      (await this.json<{ plaintext: string }>('POST', `/v1/key/decrypt/${pathEscape(name)}`, body)).plaintext,
    );
  }
  async bulkDecrypt(
    name: string,
    items: readonly { ciphertext: Uint8Array; context?: Uint8Array }[],
  ): Promise<Buffer[]> {
    const body = items.map((i) => ({
      ciphertext: b64(i.ciphertext),
      ...(i.context ? { context: b64(i.context) } : {}),
    }));
    const r = await this.json<{ plaintext: string }[]>('POST', `/v1/key/bulk/decrypt/${pathEscape(name)}`, body);
    return r.map((p) => fromB64(p.plaintext));
  }
  async hmac(name: string, message: Uint8Array): Promise<Buffer> {
    return fromB64(
      (await this.json<{ hmac: string }>('PUT', `/v1/key/hmac/${pathEscape(name)}`, { message: b64(message) })).hmac,
    );
  }

  // Policies.
  async writePolicy(name: string, policy: { allow?: string[]; deny?: string[] }): Promise<void> {
    await this.request('POST', `/v1/policy/write/${pathEscape(name)}`, {
      allow: policy.allow ?? [],
      deny: policy.deny ?? [],
    });
  }
  readPolicy(name: string): Promise<PolicyJson> {
    return this.json('GET', `/v1/policy/read/${pathEscape(name)}`);
  }
  describePolicy(name: string): Promise<PolicyInfo> {
    return this.json('GET', `/v1/policy/describe/${pathEscape(name)}`);
  }
  async listPolicies(pattern = '*'): Promise<PolicyInfo[]> {
    return parseListResponse(
      await this.request('GET', `/v1/policy/list/${pathEscape(pattern)}`),
      'name',
    ) as PolicyInfo[];
  }
  async deletePolicy(name: string): Promise<void> {
    await this.request('DELETE', `/v1/policy/delete/${pathEscape(name)}`);
  }
  async assignPolicy(policy: string, identity: string): Promise<void> {
    await this.request('POST', `/v1/policy/assign/${pathEscape(policy)}`, { identity });
  }

  // Identities.
  describeIdentity(identity: string): Promise<IdentityInfo> {
    return this.json('GET', `/v1/identity/describe/${pathEscape(identity)}`);
  }
  describeSelf(): Promise<SelfInfo> {
    return this.json('GET', '/v1/identity/self/describe');
  }
  async listIdentities(pattern = '*'): Promise<IdentityInfo[]> {
    return parseListResponse(
      await this.request('GET', `/v1/identity/list/${pathEscape(pattern)}`),
      'identity',
    ) as IdentityInfo[];
  }
  async deleteIdentity(identity: string): Promise<void> {
    await this.request('DELETE', `/v1/identity/delete/${pathEscape(identity)}`);
  }

  // Enclaves and sys (sysadmin only).
  async createEnclave(name: string, admin: string): Promise<void> {
    await this.request('POST', `/v1/enclave/create/${pathEscape(name)}`, { admin });
  }
  describeEnclave(name: string): Promise<EnclaveInfo> {
    return this.json('GET', `/v1/enclave/describe/${pathEscape(name)}`);
  }
  async deleteEnclave(name: string): Promise<void> {
    await this.request('DELETE', `/v1/enclave/delete/${pathEscape(name)}`);
  }
  async seal(): Promise<void> {
    await this.request('POST', '/v1/sys/seal');
  }

  // Secrets (stateful only).
  async createSecret(name: string, bytes: Uint8Array, type = 'generic'): Promise<void> {
    await this.request('POST', `/v1/secret/create/${pathEscape(name)}`, { bytes: b64(bytes), type });
  }
  async readSecret(name: string): Promise<SecretInfo & { bytes: Buffer }> {
    const r = await this.json<SecretInfo & { bytes: string }>('GET', `/v1/secret/read/${pathEscape(name)}`);
    return { ...r, bytes: fromB64(r.bytes) };
  }
  describeSecret(name: string): Promise<SecretInfo> {
    return this.json('GET', `/v1/secret/describe/${pathEscape(name)}`);
  }
  async listSecrets(pattern = '*'): Promise<SecretInfo[]> {
    return parseListResponse(
      await this.request('GET', `/v1/secret/list/${pathEscape(pattern)}`),
      'name',
    ) as SecretInfo[];
  }
  async deleteSecret(name: string): Promise<void> {
    await this.request('DELETE', `/v1/secret/delete/${pathEscape(name)}`);
  }

  /** kesd: GET /v1/sys/backup (system admin): the backup file's bytes as they arrive. */
  backup(): Promise<AsyncIterable<Buffer>> {
    return new Promise((resolve, reject) => {
      const { failed } = this.send('GET', '/v1/sys/backup', undefined, (res) => {
        const status = res.statusCode ?? 0;
        if (status < 400) return resolve(res);
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => reject(parseErrorResponse(status, res.headers, Buffer.concat(chunks))));
      });
      failed.catch(reject);
    });
  }

  /** Follows /v1/log/<kind>, calling onLine with each NDJSON line (without its newline) until aborted. */
  streamLog(kind: 'audit' | 'error', onLine: (line: string) => void): LogStream {
    let aborted = false;
    let settle!: { resolve(): void; reject(err: Error): void };
    const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    const { abort, failed } = this.send('GET', `/v1/log/${kind}`, undefined, (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (status >= 400) return void chunks.push(Buffer.from(chunk));
        pending += chunk;
        for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
          const line = pending.slice(0, i).replace(/\r$/, '');
          pending = pending.slice(i + 1);
          if (line.trim() !== '') onLine(line);
        }
      });
      res.on('error', (err) => (aborted ? settle.resolve() : settle.reject(err)));
      res.on('close', () => {
        if (status >= 400) settle.reject(parseErrorResponse(status, res.headers, Buffer.concat(chunks)));
        else settle.resolve();
      });
    });
    failed.catch((err: Error) => (aborted ? settle.resolve() : settle.reject(err)));
    const stop = () => {
      aborted = true;
      abort();
      settle.resolve();
    };
    return Object.assign(stop, { done });
  }
}

/** The client the `kes` CLI builds from its environment (kes-protocol §11.3), plus KES_CA for a private CA. */
export function clientFromEnv(
  flags: { insecure?: boolean; enclave?: string },
  env: NodeJS.ProcessEnv = process.env,
): KesClient {
  let endpoint = (env.KES_SERVER || 'https://127.0.0.1:7373').split(',')[0]!.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint)) endpoint = `https://${endpoint}`;
  return new KesClient({
    endpoint,
    certFile: env.KES_CLIENT_CERT || undefined,
    keyFile: env.KES_CLIENT_KEY || undefined,
    caFile: env.KES_CA || undefined,
    insecure: flags.insecure ?? false,
    enclave: flags.enclave || env.KES_ENCLAVE || undefined,
  });
}
