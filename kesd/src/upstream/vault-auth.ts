// A Vault token for kesd's calls: a given token (or a file holding one, re-read when Vault refuses it), or a login
// with AppRole or the Kubernetes auth method (as KES's keystore.vault). A login's token is renewed at 80 % of its TTL
// (renew-self, else a new login, as KES does) and dropped when Vault answers 403, so the next call logs in again.
import { readFileSync } from 'node:fs';
import type { VaultAuth } from '../config/upstream.js';
import { VaultError, VaultHttp } from './vault-http.js';

interface Held {
  readonly token: string;
  /** Date.now() after which it is renewed; Infinity for a token without a TTL. */
  readonly renewAt: number;
  readonly renewable: boolean;
}

function readSecretFile(path: string, what: string): string {
  try {
    const text = readFileSync(path, 'utf8').trim();
    if (text === '') throw new Error('the file is empty');
    return text;
  } catch (err) {
    throw new VaultError(`vault: cannot read the ${what} '${path}': ${(err as Error).message}`);
  }
}

/** The namespace a login uses: its own, else the Vault one; '/' is the root namespace (as in KES). */
function loginNamespace(own: string | undefined, vault: string | undefined): string | undefined {
  const ns = own ?? vault;
  return ns === '/' || ns === '' ? undefined : ns;
}

export class VaultToken {
  private held: Held | undefined;
  private pending: Promise<Held> | undefined;

  constructor(
    private readonly http: VaultHttp,
    private readonly auth: VaultAuth,
    private readonly namespace: string | undefined,
  ) {}

  /** A token to call with. */
  async token(): Promise<string> {
    const held = this.held;
    if (held !== undefined && Date.now() < held.renewAt) return held.token;
    this.pending ??= (held?.renewable ? this.renew(held) : this.login()).finally(() => (this.pending = undefined));
    this.held = await this.pending;
    return this.held.token;
  }

  /** Vault refused the token (403): the next call gets a fresh one. */
  refused(): void {
    this.held = undefined;
  }

  private async renew(held: Held): Promise<Held> {
    try {
      const reply = await this.http.request('POST', 'auth/token/renew-self', {
        token: held.token,
        namespace: this.namespace,
        body: {},
      });
      // Near the token's max TTL a renewal grants only seconds: then log in again.
      if (reply.status === 200) {
        const renewed = this.heldFrom(reply.body);
        if (renewed.renewAt - Date.now() > 5000) return renewed;
      }
    } catch {
      // unreachable: a login will say so
    }
    return this.login();
  }

  /** A login; any failure is a VaultError marked as one (the sync loop backs off instead of failing every key). */
  private async login(): Promise<Held> {
    try {
      return await this.loginOnce();
    } catch (err) {
      if (err instanceof VaultError && err.login) throw err;
      const status = err instanceof VaultError ? err.status : undefined;
      throw new VaultError((err as Error).message, status, true);
    }
  }

  private async loginOnce(): Promise<Held> {
    const a = this.auth;
    switch (a.kind) {
      case 'token':
        return { token: a.token.value, renewAt: Infinity, renewable: false };
      case 'token-file':
        return { token: readSecretFile(a.file, 'Vault token file'), renewAt: Infinity, renewable: false };
      case 'approle': {
        const reply = await this.http.request('POST', `auth/${a.engine}/login`, {
          namespace: loginNamespace(a.namespace, this.namespace),
          body: { role_id: a.id.value, secret_id: a.secret.value },
        });
        if (reply.status !== 200) throw VaultHttp.failure(`AppRole login at auth/${a.engine}`, reply);
        return this.heldFrom(reply.body);
      }
      case 'kubernetes': {
        // KES's rule: a jwt containing '/' is a file (a service account token, which the kubelet rotates).
        const jwt = a.jwt.value.includes('/')
          ? readSecretFile(a.jwt.value, 'Kubernetes service account token')
          : a.jwt.value;
        const reply = await this.http.request('POST', `auth/${a.engine}/login`, {
          namespace: loginNamespace(a.namespace, this.namespace),
          body: { role: a.role, jwt },
        });
        if (reply.status !== 200)
          throw VaultHttp.failure(`Kubernetes login at auth/${a.engine} (role '${a.role}')`, reply);
        return this.heldFrom(reply.body);
      }
    }
  }

  private heldFrom(body: any): Held {
    const auth = body?.auth;
    if (typeof auth?.client_token !== 'string' || auth.client_token === '')
      throw new VaultError('vault: the login answer holds no token');
    const ttl = Number(auth.lease_duration ?? 0);
    return {
      token: auth.client_token,
      renewAt: ttl > 0 ? Date.now() + ttl * 800 : Infinity,
      renewable: auth.renewable === true,
    };
  }
}
