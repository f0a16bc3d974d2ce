// The `upstream` section of init.yml and .init (kesd's extension): a Vault that mirrors one enclave's keys in the KV
// layout KES's `keystore.vault` uses (kes-protocol §8.7, §10.1). The `vault` block has KES's field names, so a KES
// config's `keystore.vault` block works as it is (also for `kesd import vault`), plus `token`/`token_file`, which KES
// lacks. Secrets written as `${VAR}` stay references in .init and are read from the environment at each start.
import { resolve } from 'node:path';
import { ENV_REF, type Reader, type Y } from './yaml-reader.js';

/** A value that may be a secret: `env` when written as `${VAR}` (then .init keeps the reference, not the value). */
export interface SecretValue {
  readonly value: string;
  readonly env?: string;
}

export type VaultAuth =
  | { readonly kind: 'token'; readonly token: SecretValue }
  | { readonly kind: 'token-file'; readonly file: string }
  | {
      readonly kind: 'approle';
      readonly engine: string;
      readonly namespace?: string;
      readonly id: SecretValue;
      readonly secret: SecretValue;
    }
  /** jwt: the token itself, or (containing a '/', as in KES) a file read at each login (projected tokens rotate). */
  | {
      readonly kind: 'kubernetes';
      readonly engine: string;
      readonly namespace?: string;
      readonly role: string;
      readonly jwt: SecretValue;
    };

export interface VaultConfig {
  /** scheme://host[:port], no path. */
  readonly endpoint: string;
  /** The KV mount; KES's default 'kv'. */
  readonly engine: string;
  /** The KV engine version; KES's default v1. */
  readonly version: 'v1' | 'v2';
  readonly namespace?: string;
  /** '' or a path without leading or trailing '/'. */
  readonly prefix: string;
  /** Entries encrypted with this Vault Transit key (KES's `transit`). */
  readonly transit?: { readonly engine: string; readonly key: string };
  readonly auth: VaultAuth;
  /** ca: a PEM file or a directory of them (as in KES); cert and key: a client certificate for Vault's TLS. */
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string };
}

export interface UpstreamConfig {
  /** The kesd enclave whose keys the Vault prefix mirrors (KES has no enclaves). */
  readonly enclave: string;
  readonly vault: VaultConfig;
}

const ENDPOINT = /^(https?):\/\/([^/?#@\s]+?)(?::(\d{1,5}))?\/?$/;

function secret(r: Reader, v: Y, path: string): SecretValue {
  const value = r.str(v, path, true)!;
  const ref = ENV_REF.exec(String(v).trim());
  return ref ? { value, env: ref[1]! } : { value };
}

function optional(r: Reader, v: Y, path: string): string | undefined {
  return r.str(v, path) || undefined;
}

/** Vault's mount and prefix paths: segments without '.', '..' or empty ones, no leading or trailing '/'. */
function vaultPath(r: Reader, value: string, path: string, allowEmpty: boolean): string {
  const trimmed = value.replace(/^\/+|\/+$/g, '');
  if (trimmed === '' && !allowEmpty) r.fail(`'${path}' is empty`);
  if (trimmed !== '' && trimmed.split('/').some((s) => s === '' || s === '.' || s === '..' || /[\s?#%]/.test(s)))
    r.fail(`'${path}': '${value}' is not a Vault path`);
  return trimmed;
}

/**
 * A `vault` block with KES's field names (keystore.vault of a KES config, or upstream.vault of kesd's). `status` is
 * accepted and ignored (kesd probes Vault with every sync). Exactly one authentication method.
 */
export function parseVaultSection(r: Reader, v: Y, path: string): VaultConfig {
  const vault = r.obj(v, path, [
    'endpoint',
    'engine',
    'version',
    'namespace',
    'prefix',
    'transit',
    'approle',
    'kubernetes',
    'token',
    'token_file',
    'tls',
    'status',
  ]);
  if (vault.size === 0) r.fail(`'${path}' is required`);
  const endpointText = r.str(vault.get('endpoint'), `${path}.endpoint`, true)!.trim();
  const m = ENDPOINT.exec(endpointText);
  if (m === null || (m[3] !== undefined && (Number(m[3]) < 1 || Number(m[3]) > 65535))) {
    r.fail(`'${path}.endpoint': '${endpointText}' is not an http:// or https:// URL of a host (and port)`);
  }
  const endpoint = `${m[1]}://${m[2]}${m[3] ? `:${m[3]}` : ''}`;
  const version = optional(r, vault.get('version'), `${path}.version`) ?? 'v1';
  if (version !== 'v1' && version !== 'v2')
    r.fail(`'${path}.version': '${version}' is not a KV engine version (v1 or v2)`);

  const auths: VaultAuth[] = [];
  if (vault.get('token') !== undefined)
    auths.push({ kind: 'token', token: secret(r, vault.get('token'), `${path}.token`) });
  if (vault.get('token_file') !== undefined)
    auths.push({ kind: 'token-file', file: r.str(vault.get('token_file'), `${path}.token_file`, true)! });
  if (vault.get('approle') !== undefined) {
    const a = r.obj(vault.get('approle'), `${path}.approle`, ['engine', 'namespace', 'id', 'secret', 'retry']);
    auths.push({
      kind: 'approle',
      engine: vaultPath(
        r,
        optional(r, a.get('engine'), `${path}.approle.engine`) ?? 'approle',
        `${path}.approle.engine`,
        false,
      ),
      namespace: optional(r, a.get('namespace'), `${path}.approle.namespace`),
      id: secret(r, a.get('id'), `${path}.approle.id`),
      secret: secret(r, a.get('secret'), `${path}.approle.secret`),
    });
  }
  if (vault.get('kubernetes') !== undefined) {
    const k = r.obj(vault.get('kubernetes'), `${path}.kubernetes`, ['engine', 'namespace', 'role', 'jwt', 'retry']);
    auths.push({
      kind: 'kubernetes',
      engine: vaultPath(
        r,
        optional(r, k.get('engine'), `${path}.kubernetes.engine`) ?? 'kubernetes',
        `${path}.kubernetes.engine`,
        false,
      ),
      namespace: optional(r, k.get('namespace'), `${path}.kubernetes.namespace`),
      role: r.str(k.get('role'), `${path}.kubernetes.role`, true)!,
      jwt: secret(r, k.get('jwt'), `${path}.kubernetes.jwt`),
    });
  }
  if (auths.length === 0)
    r.fail(`'${path}': no authentication method: set one of token, token_file, approle or kubernetes`);
  if (auths.length > 1)
    r.fail(`'${path}': more than one authentication method (${auths.map((a) => a.kind).join(', ')}); set exactly one`);

  let transit: VaultConfig['transit'];
  if (vault.get('transit') !== undefined) {
    const t = r.obj(vault.get('transit'), `${path}.transit`, ['engine', 'key']);
    transit = {
      engine: vaultPath(
        r,
        optional(r, t.get('engine'), `${path}.transit.engine`) ?? 'transit',
        `${path}.transit.engine`,
        false,
      ),
      key: r.str(t.get('key'), `${path}.transit.key`, true)!,
    };
  }
  const tls = r.obj(vault.get('tls'), `${path}.tls`, ['ca', 'cert', 'key']);
  const [ca, cert, key] = (['ca', 'cert', 'key'] as const).map((f) => optional(r, tls.get(f), `${path}.tls.${f}`));
  if ((cert === undefined) !== (key === undefined)) r.fail(`'${path}.tls': cert and key must be given together`);
  if ((ca !== undefined || cert !== undefined) && m[1] === 'http')
    r.fail(`'${path}.tls' is set but the endpoint uses http://; use https://`);
  r.obj(vault.get('status'), `${path}.status`, ['ping']);
  return {
    endpoint,
    engine: vaultPath(r, optional(r, vault.get('engine'), `${path}.engine`) ?? 'kv', `${path}.engine`, false),
    version,
    ...(optional(r, vault.get('namespace'), `${path}.namespace`) !== undefined
      ? { namespace: optional(r, vault.get('namespace'), `${path}.namespace`) }
      : {}),
    prefix: vaultPath(r, optional(r, vault.get('prefix'), `${path}.prefix`) ?? '', `${path}.prefix`, true),
    ...(transit ? { transit } : {}),
    auth: auths[0]!,
    ...(ca || cert ? { tls: { ...(ca ? { ca } : {}), ...(cert ? { cert, key } : {}) } } : {}),
  };
}

/** `upstream: {enclave, vault}`; undefined when absent. */
export function parseUpstream(r: Reader, v: Y): UpstreamConfig | undefined {
  if (v === undefined) return undefined;
  const upstream = r.obj(v, 'upstream', ['enclave', 'vault']);
  const enclave = r.name('upstream.enclave', r.str(upstream.get('enclave'), 'upstream.enclave') || 'default');
  return { enclave, vault: parseVaultSection(r, upstream.get('vault'), 'upstream.vault') };
}

/** File paths made absolute against cwd (for .init, as the TLS paths are). */
export function absoluteUpstreamPaths(u: UpstreamConfig, cwd: string): UpstreamConfig {
  const { vault } = u;
  const abs = (p: string | undefined) => (p === undefined ? undefined : resolve(cwd, p));
  let auth = vault.auth;
  if (auth.kind === 'token-file') auth = { ...auth, file: abs(auth.file)! };
  if (auth.kind === 'kubernetes' && auth.jwt.env === undefined && auth.jwt.value.includes('/'))
    auth = { ...auth, jwt: { value: abs(auth.jwt.value)! } };
  const tls = vault.tls && Object.fromEntries(Object.entries(vault.tls).map(([k, p]) => [k, abs(p)]));
  return { enclave: u.enclave, vault: { ...vault, auth, ...(tls ? { tls } : {}) } };
}

const secretDoc = (s: SecretValue) => (s.env !== undefined ? `\${${s.env}}` : s.value);

/** The `upstream` section as .init writes it: secrets given as `${VAR}` stay references. */
export function upstreamDoc(u: UpstreamConfig): Record<string, unknown> {
  const { vault } = u;
  const a = vault.auth;
  const auth =
    a.kind === 'token'
      ? { token: secretDoc(a.token) }
      : a.kind === 'token-file'
        ? { token_file: a.file }
        : a.kind === 'approle'
          ? {
              approle: {
                engine: a.engine,
                ...(a.namespace ? { namespace: a.namespace } : {}),
                id: secretDoc(a.id),
                secret: secretDoc(a.secret),
              },
            }
          : {
              kubernetes: {
                engine: a.engine,
                ...(a.namespace ? { namespace: a.namespace } : {}),
                role: a.role,
                jwt: secretDoc(a.jwt),
              },
            };
  return {
    enclave: u.enclave,
    vault: {
      endpoint: vault.endpoint,
      engine: vault.engine,
      version: vault.version,
      ...(vault.namespace ? { namespace: vault.namespace } : {}),
      prefix: vault.prefix,
      ...(vault.transit ? { transit: vault.transit } : {}),
      ...auth,
      ...(vault.tls ? { tls: vault.tls } : {}),
    },
  };
}
