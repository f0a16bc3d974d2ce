// The optional `stateful-kes:upstream` stack config: a Vault that mirrors kesd's `default` enclave in KES's KV layout
// (kesd's init.yml `upstream` section), reached with the Kubernetes auth method as kesd's own ServiceAccount. Off
// unless set. Nothing here is secret: the pod's token is projected by the kubelet, the CA certificate is public.
export interface UpstreamStackConfig {
  readonly vault: {
    /** https://host[:port] */
    readonly address: string;
    /** The KV mount; default 'kv'. */
    readonly mount: string;
    /** The KV engine version; default 'v2'. */
    readonly version: 'v1' | 'v2';
    /** Where under the mount the keys live; default 'kesd'. */
    readonly prefix: string;
    readonly namespace?: string;
    /** PEM of the CA that issued Vault's certificate (default: the system roots). */
    readonly caCert?: string;
    /** The Vault role of the Kubernetes auth method bound to kesd's ServiceAccount; default 'kesd'. */
    readonly role: string;
    /** Where the Kubernetes auth method is mounted; default 'kubernetes'. */
    readonly authMount: string;
    /** The audience of kesd's projected ServiceAccount token (the role's `audience`); default 'vault'. */
    readonly audience: string;
  };
}

const URL = /^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/?$/;
const VAULT_PATH = /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/;
const NAME = /^[A-Za-z0-9_.-]{1,128}$/;

/** Parses `stateful-kes:upstream`; problems are collected as `stateful-kes:upstream.<field>: …`. */
export function parseUpstreamConfig(problems: string[], raw: unknown): UpstreamStackConfig | undefined {
  if (raw === undefined || raw === null) return undefined;
  const fail = (field: string, message: string) => void problems.push(`stateful-kes:upstream.${field}: ${message}`);
  if (typeof raw !== 'object' || Array.isArray(raw))
    return void problems.push('stateful-kes:upstream: must be an object');
  const top = raw as Record<string, unknown>;
  for (const k of Object.keys(top)) if (k !== 'vault') fail(k, 'unknown setting');
  const v = top.vault;
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return void fail('vault', 'must be an object with at least an address');
  const vault = v as Record<string, unknown>;
  const known = ['address', 'mount', 'version', 'prefix', 'namespace', 'caCert', 'role', 'authMount', 'audience'];
  for (const k of Object.keys(vault)) if (!known.includes(k)) fail(`vault.${k}`, 'unknown setting');
  const str = (
    field: string,
    def: string | undefined,
    pattern: RegExp | undefined,
    allowed: string,
  ): string | undefined => {
    const x = vault[field];
    if (x === undefined || x === null) return def;
    if (typeof x !== 'string' || (pattern !== undefined && !pattern.test(x))) {
      fail(`vault.${field}`, `${JSON.stringify(x)} is not allowed: ${allowed}`);
      return def;
    }
    return x;
  };
  const address = str('address', undefined, URL, 'an https:// URL of Vault (kesd reaches it over TLS)');
  if (address === undefined && vault.address === undefined) fail('vault.address', 'is required');
  const version = str('version', 'v2', /^v[12]$/, 'v1 or v2');
  const caCert = str('caCert', undefined, /-----BEGIN CERTIFICATE-----/, 'PEM certificates');
  const parsed = {
    address: (address ?? '').replace(/\/$/, ''),
    mount: str('mount', 'kv', VAULT_PATH, 'a Vault mount path')!,
    version: version as 'v1' | 'v2',
    prefix: str('prefix', 'kesd', VAULT_PATH, 'a Vault path under the mount')!,
    ...(vault.namespace !== undefined
      ? { namespace: str('namespace', undefined, VAULT_PATH, 'a Vault namespace') }
      : {}),
    ...(caCert !== undefined ? { caCert } : {}),
    role: str('role', 'kesd', NAME, 'a Vault role name')!,
    authMount: str('authMount', 'kubernetes', VAULT_PATH, 'a Vault auth mount path')!,
    audience: str('audience', 'vault', NAME, 'a token audience')!,
  };
  return { vault: parsed };
}

/** Where the upstream's files live in the kesd pod. */
export const UPSTREAM_PATHS = {
  /** The projected ServiceAccount token kesd logs in to Vault with (the kubelet rotates it). */
  tokenDir: '/var/run/secrets/kesd/vault',
  tokenFile: '/var/run/secrets/kesd/vault/token',
  caDir: '/etc/kesd/vault',
  caFile: '/etc/kesd/vault/ca.crt',
} as const;

/** The projected token's lifetime: the kubelet renews it at 80 %, kesd reads the file at each login. */
export const UPSTREAM_TOKEN_SECONDS = 3600;

/** init.yml `upstream`: kesd's extension (kesd/src/config/upstream.ts), KES's keystore.vault field names. */
export function upstreamInitDoc(u: UpstreamStackConfig, enclave: string): Record<string, unknown> {
  const v = u.vault;
  return {
    enclave,
    vault: {
      endpoint: v.address,
      engine: v.mount,
      version: v.version,
      prefix: v.prefix,
      ...(v.namespace ? { namespace: v.namespace } : {}),
      kubernetes: { engine: v.authMount, role: v.role, jwt: UPSTREAM_PATHS.tokenFile },
      ...(v.caCert ? { tls: { ca: UPSTREAM_PATHS.caFile } } : {}),
    },
  };
}
