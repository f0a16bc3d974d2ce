// Vault's HTTP API over Node's own http/https (no client library: kesd needs a dozen calls). Keep-alive
// connections, a deadline per call, TLS verified against the configured CA (a PEM file or a directory of them, as
// KES's `tls.ca`), an optional client certificate. Tokens travel only in the X-Vault-Token header and are never part
// of an error message.
import http from 'node:http';
import https from 'node:https';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** A call's deadline: Vault answers in milliseconds; seconds mean it is down or unreachable. */
export const CALL_TIMEOUT_MS = 5000;

/** A failed Vault call. status: Vault's answer, undefined if it gave none (unreachable, timeout). */
export class VaultError extends Error {
  override name = 'VaultError';
  /** login: kesd could not log in (every call would fail the same way until that changes). */
  constructor(
    message: string,
    readonly status?: number,
    readonly login = false,
  ) {
    super(message);
  }

  /**
   * Nothing can be synced now: Vault did not answer, answered that it cannot serve (sealed, standby without
   * forwarding, overloaded), or refused the login.
   */
  get unavailable(): boolean {
    return this.login || this.status === undefined || this.status >= 500 || this.status === 429;
  }
}

export interface VaultTls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

export interface VaultCall {
  readonly token?: string;
  /** The X-Vault-Namespace header; none for the root namespace. */
  readonly namespace?: string;
  readonly body?: unknown;
  readonly query?: Record<string, string>;
}

export interface VaultReply {
  readonly status: number;
  readonly body: any;
}

/** PEM CA certificates from a file, or from every file of a directory (as Vault's api.TLSConfig.CAPath). */
function readCa(path: string): Buffer[] {
  let isDir: boolean;
  try {
    isDir = statSync(path).isDirectory();
  } catch (err) {
    throw new Error(`vault: cannot read the CA '${path}': ${(err as Error).message}`);
  }
  const files = isDir
    ? readdirSync(path)
        .filter((f) => !f.startsWith('.'))
        .map((f) => join(path, f))
    : [path];
  const pems = files.map((f) => readFileSync(f)).filter((b) => b.includes('-----BEGIN CERTIFICATE-----'));
  if (pems.length === 0) throw new Error(`vault: the CA '${path}' holds no PEM certificate`);
  return pems;
}

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`vault: cannot read the TLS ${what} '${path}': ${(err as Error).message}`);
  }
}

export class VaultHttp {
  private readonly url: URL;
  private readonly agent: http.Agent;

  constructor(
    endpoint: string,
    tls: VaultTls = {},
    private readonly timeoutMs = CALL_TIMEOUT_MS,
  ) {
    this.url = new URL(endpoint);
    this.agent =
      this.url.protocol === 'https:'
        ? new https.Agent({
            keepAlive: true,
            maxSockets: 16,
            ...(tls.ca ? { ca: readCa(tls.ca) } : {}),
            ...(tls.cert && tls.key ? { cert: readFile(tls.cert, 'certificate'), key: readFile(tls.key, 'key') } : {}),
          })
        : new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  get endpoint(): string {
    return this.url.origin;
  }

  /** One call to `/v1/<path>`; resolves with any HTTP answer, rejects (VaultError) only when there is none. */
  request(method: string, path: string, call: VaultCall = {}): Promise<VaultReply> {
    const payload = call.body === undefined ? undefined : Buffer.from(JSON.stringify(call.body));
    const query = call.query ? `?${new URLSearchParams(call.query)}` : '';
    const headers: Record<string, string | number> = { accept: 'application/json' };
    if (call.token) headers['x-vault-token'] = call.token;
    if (call.namespace) headers['x-vault-namespace'] = call.namespace;
    if (payload) Object.assign(headers, { 'content-type': 'application/json', 'content-length': payload.length });
    const lib = this.url.protocol === 'https:' ? https : http;
    const where = `${method} /v1/${path}`;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        {
          protocol: this.url.protocol,
          hostname: this.url.hostname,
          port: this.url.port,
          method,
          path: `/v1/${path}${query}`,
          headers,
          agent: this.agent,
          signal: AbortSignal.timeout(this.timeoutMs),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(new VaultError(`vault: ${where}: ${err.message}`)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown;
            try {
              body = text === '' ? undefined : JSON.parse(text);
            } catch {
              body = undefined;
            }
            resolve({ status: res.statusCode ?? 0, body });
          });
        },
      );
      req.on('error', (err) => {
        const reason =
          err.name === 'AbortError' || err.name === 'TimeoutError'
            ? `no answer within ${this.timeoutMs} ms`
            : err.message;
        reject(new VaultError(`vault: ${where}: ${reason} (${this.url.origin})`));
      });
      req.end(payload);
    });
  }

  /** A VaultError for an unexpected answer, with Vault's own error messages (they never hold secrets). */
  static failure(what: string, reply: VaultReply): VaultError {
    const errors = (reply.body as { errors?: unknown } | undefined)?.errors;
    const detail = Array.isArray(errors) && errors.length > 0 ? errors.map(String).join('; ') : `HTTP ${reply.status}`;
    return new VaultError(`vault: ${what}: ${detail} (${reply.status})`, reply.status);
  }

  close(): void {
    this.agent.destroy();
  }
}
