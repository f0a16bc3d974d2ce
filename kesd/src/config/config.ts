// The two YAML files of stateful mode (kes-protocol §9.1, §9.4):
//   init.yml     input of `kesd init`, the KES v0.22 format plus `enclave.<name>.keys` and `tls.ca`;
//   <dir>/.init  the server config `kesd init` writes and `kesd server` reads.
// Both are read strictly (yaml-reader.ts): unknown fields are errors, `${VAR}` values come from the environment.
// The unseal key comes from `unseal.environment.name` (KES v0.22) or, kesd's extension, `unseal.file.path`: a file
// holding the base64 key, e.g. a Kubernetes Secret mounted as a volume (store/unseal-key.ts).
// An optional `store.etcd` section (both files) puts the records and the sealed root key in etcd (store/etcd.ts);
// without it the store is the embedded LMDB file in the data dir. An optional `upstream` section (both files) mirrors
// one enclave's keys to a Vault in KES's KV layout (config/upstream.ts).
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { writeFileAtomic } from '../fs/atomic.js';
import { ENV_NAME, sameUnsealSource, type UnsealSource } from './unseal-source.js';
import { absoluteUpstreamPaths, parseUpstream, upstreamDoc, type UpstreamConfig } from './upstream.js';
import { ConfigError, ENV_REF, Reader, type Y } from './yaml-reader.js';

export { ConfigError } from './yaml-reader.js';
export type { UpstreamConfig, VaultAuth, VaultConfig } from './upstream.js';

export interface PolicyConfig {
  name: string;
  allow: string[];
  deny: string[];
  identities: string[];
}
export interface EnclaveConfig {
  name: string;
  admin: string;
  policies: PolicyConfig[];
  keys: string[];
}
export interface EtcdConfig {
  /** 1+ URLs with a port, all http or all https. */
  endpoints: string[];
  /** Prepended to every etcd key kesd writes; default 'kesd/'. */
  prefix: string;
  /** For https endpoints: file paths (absolute in .init). Without ca, the system roots verify etcd. */
  tls?: { ca?: string; cert?: string; key?: string };
}
/** A replicated store instead of the embedded one; etcd is the only such backend. */
export interface StoreConfig {
  etcd: EtcdConfig;
}
/** Where the unseal key comes from: an environment variable or a file, exactly one. */
export type UnsealConfig =
  | { unsealEnv: string; unsealFile?: undefined }
  | { unsealFile: string; unsealEnv?: undefined };
export type InitConfig = InitFields & UnsealConfig;
export type ServerConfig = ServerFields & UnsealConfig;

interface InitFields {
  version: 'v1';
  /** Defaults to 0.0.0.0:7373. */
  address: string;
  sysadmin: string;
  tls: {
    key: string;
    cert: string;
    password: string;
    ca?: string;
    verifyCert: boolean;
    /** The VAR when the password was written as `${VAR}`: .init then stores the reference, not the secret. */
    passwordEnv?: string;
    /** Parsed and validated as KES does, not carried into .init. */
    proxy: { identities: string[]; header: string };
  };
  enclaves: EnclaveConfig[];
  /**
   * kesd's `unseal.previous` (init.yml only): the unseal key before a rotation. `server --init` tries it when the
   * configured key does not open the root key, and then re-seals the root key under the configured one (boot/rekey.ts).
   */
  unsealPrevious?: UnsealSource;
  /**
   * kesd's `system.backup.identities`: identities besides the system admin that may take a backup (GET
   * /v1/sys/backup), e.g. a backup job's. A backup is sealed; the identity can do nothing else.
   */
  backupIdentities?: string[];
  /** Routes answered without a client certificate (`api.<path>.skip_auth`, as in the newest KES), e.g. for probes. */
  skipAuth?: string[];
  store?: StoreConfig;
  /** A Vault mirroring one enclave's keys (kesd's extension). */
  upstream?: UpstreamConfig;
}
interface ServerFields {
  version: '1';
  address: string;
  /** Absolute paths. password may be a `${VAR}` reference, expanded by readServerConfig. */
  tls: { key: string; cert: string; password?: string; ca?: string; verifyCert: boolean };
  /** Keys declared per enclave in init.yml (`enclave.<name>.keys`), enclave name → key names. */
  keys?: Record<string, string[]>;
  /** Routes served without authentication (init.yml `api.<path>.skip_auth`). */
  skipAuth?: string[];
  /** Who besides the system admin may take a backup (init.yml `system.backup.identities`; .init `backup.identities`). */
  backupIdentities?: string[];
  /** Absent: the embedded LMDB store in the data dir. */
  store?: StoreConfig;
  /** Paths absolute; secrets written as `${VAR}` are expanded by readServerConfig. */
  upstream?: UpstreamConfig;
}

export const SERVER_CONFIG_FILE = '.init';

/** The unseal key's source a config names; a relative key file path is taken from `cwd`. */
export function unsealSourceOf(c: UnsealConfig, cwd: string = process.cwd()): UnsealSource {
  if (c.unsealFile !== undefined) return { file: resolve(cwd, c.unsealFile) };
  if (c.unsealEnv !== undefined) return { env: c.unsealEnv };
  throw new ConfigError('no unseal key source: set unseal.environment.name or unseal.file.path');
}

/** init.yml `unseal.previous`: `{environment: {name}}` or `{file: {path}}`, as the key itself. */
function parsePreviousUnseal(r: Reader, v: Y, cwd: string): UnsealSource | undefined {
  const unseal = r.obj(v, 'unseal', ['environment', 'file', 'previous']);
  if (unseal.get('previous') === undefined) return undefined;
  const previous = parseUnseal(r, unseal.get('previous'), 'unseal.previous');
  return unsealSourceOf(previous, cwd);
}

/** `unseal: {environment: {name}}` or `unseal: {file: {path}}`, exactly one. */
function parseUnseal(r: Reader, v: Y, at = 'unseal', extra: string[] = []): UnsealConfig {
  const unseal = r.obj(v, at, ['environment', 'file', ...extra]);
  if (unseal.get('environment') !== undefined && unseal.get('file') !== undefined) {
    r.fail(`'${at}': set either 'environment' (a variable) or 'file' (a key file), not both`);
  }
  if (unseal.get('file') !== undefined) {
    const path = r.str(r.obj(unseal.get('file'), `${at}.file`, ['path']).get('path'), `${at}.file.path`, true)!;
    if (path.includes('\0')) r.fail(`'${at}.file.path' is not a valid path`);
    return { unsealFile: path };
  }
  const name = r.str(
    r.obj(unseal.get('environment'), `${at}.environment`, ['name']).get('name'),
    `${at}.environment.name`,
    true,
  )!;
  if (!ENV_NAME.test(name)) r.fail(`'${at}.environment.name': '${name}' is not a valid environment variable name`);
  return { unsealEnv: name };
}

/** The `unseal` section of a config file. */
function unsealDoc(c: UnsealConfig): Record<string, unknown> {
  return c.unsealFile !== undefined ? { file: { path: c.unsealFile } } : { environment: { name: c.unsealEnv } };
}
/** Only read-only server routes may skip authentication: never a key, policy or enclave route. */
export const SKIPPABLE_ROUTES = ['/v1/ready', '/v1/status', '/v1/metrics', '/v1/api'];

function parseApi(r: Reader, v: Y, prefix: string): string[] {
  const skip: string[] = [];
  for (const [path, route] of r.obj(v, prefix, [])) {
    const where = `${prefix}.${path}`;
    if (!SKIPPABLE_ROUTES.includes(path)) r.fail(`'${where}': only ${SKIPPABLE_ROUTES.join(', ')} may be configured`);
    if (r.bool(r.obj(route, where, ['skip_auth']).get('skip_auth'), `${where}.skip_auth`)) skip.push(path);
  }
  return skip;
}

export const DEFAULT_ETCD_PREFIX = 'kesd/';
// scheme://host:port with an explicit port and nothing after it (a trailing '/' is tolerated).
const ENDPOINT = /^(https?):\/\/([^/?#@\s]+):(\d{1,5})\/?$/;

function parseStore(r: Reader, v: Y): StoreConfig | undefined {
  if (v === undefined) return undefined;
  const store = r.obj(v, 'store', ['etcd']);
  if (store.get('etcd') === undefined)
    r.fail(`'store.etcd' is required in a 'store' section (omit 'store' for the embedded store)`);
  const etcd = r.obj(store.get('etcd'), 'store.etcd', ['endpoints', 'prefix', 'tls']);
  const endpoints = r.list(etcd.get('endpoints'), 'store.etcd.endpoints').map((e, i) => {
    const where = `store.etcd.endpoints[${i}]`;
    const url = r.str(e, where, true)!.trim();
    const m = ENDPOINT.exec(url);
    if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535)
      r.fail(`'${where}': '${url}' is not an http:// or https:// URL with a host and port`);
    return `${m[1]}://${m[2]}:${m[3]}`;
  });
  if (endpoints.length === 0) r.fail(`'store.etcd.endpoints' needs at least one URL`);
  const schemes = new Set(endpoints.map((e) => e.slice(0, e.indexOf(':'))));
  if (schemes.size > 1) r.fail(`'store.etcd.endpoints' mixes http and https`);
  const tls = r.obj(etcd.get('tls'), 'store.etcd.tls', ['ca', 'cert', 'key']);
  const [ca, cert, key] = (['ca', 'cert', 'key'] as const).map(
    (f) => r.str(tls.get(f), `store.etcd.tls.${f}`) || undefined,
  );
  if ((cert === undefined) !== (key === undefined)) r.fail(`'store.etcd.tls': cert and key must be given together`);
  const hasTls = ca !== undefined || cert !== undefined;
  if (hasTls && schemes.has('http')) r.fail(`'store.etcd.tls' is set but the endpoints use http://; use https:// URLs`);
  return {
    etcd: {
      endpoints,
      prefix: r.str(etcd.get('prefix'), 'store.etcd.prefix') || DEFAULT_ETCD_PREFIX,
      ...(hasTls ? { tls: { ...(ca ? { ca } : {}), ...(cert ? { cert, key } : {}) } } : {}),
    },
  };
}

/** Parses and validates init.yml; a relative `unseal.previous` file is taken from `cwd`. */
export function parseInitConfig(text: string, env: NodeJS.ProcessEnv, cwd: string = process.cwd()): InitConfig {
  const r = new Reader('init config', env);
  const top = r.obj(r.parse(text), '', [
    'version',
    'address',
    'system',
    'tls',
    'unseal',
    'enclave',
    'api',
    'store',
    'upstream',
  ]);
  const version = r.str(top.get('version'), 'version', true);
  if (version !== 'v1') r.fail(`version '${version}' is not supported: must be 'v1'`);

  const system = r.obj(top.get('system'), 'system', ['admin', 'backup']);
  const admin = r.obj(system.get('admin'), 'system.admin', ['identity']);
  const sysadmin = r.identity(admin.get('identity'), 'system.admin.identity');
  const backupIdentities = parseBackupIdentities(
    r,
    r.obj(system.get('backup'), 'system.backup', ['identities']).get('identities'),
    'system.backup.identities',
    sysadmin,
  );

  const unseal = parseUnseal(r, top.get('unseal'), 'unseal', ['previous']);
  const previous = parsePreviousUnseal(r, top.get('unseal'), cwd);
  if (previous !== undefined && sameUnsealSource(previous, unsealSourceOf(unseal, cwd)))
    r.fail(`'unseal.previous' names the same key source as 'unseal'`);

  const tls = r.obj(top.get('tls'), 'tls', ['key', 'cert', 'password', 'ca', 'proxy', 'client']);
  const proxy = r.obj(tls.get('proxy'), 'tls.proxy', ['identity', 'header']);
  const password = r.str(tls.get('password'), 'tls.password') ?? '';
  const passwordRef = ENV_REF.exec(String(tls.get('password') ?? '').trim()); // str() above checked it is a scalar
  const ca = r.str(tls.get('ca'), 'tls.ca');
  const config: InitConfig = {
    version: 'v1',
    address: r.address(top.get('address'), 'address'),
    sysadmin,
    tls: {
      key: r.str(tls.get('key'), 'tls.key', true)!,
      cert: r.str(tls.get('cert'), 'tls.cert', true)!,
      password,
      ...(passwordRef ? { passwordEnv: passwordRef[1]! } : {}),
      ...(ca ? { ca } : {}),
      verifyCert: r.bool(
        r.obj(tls.get('client'), 'tls.client', ['verify_cert']).get('verify_cert'),
        'tls.client.verify_cert',
      ),
      proxy: {
        identities: r
          .list(proxy.get('identity'), 'tls.proxy.identity')
          .map((v, i) => r.identity(v, `tls.proxy.identity[${i}]`)),
        header:
          r.str(r.obj(proxy.get('header'), 'tls.proxy.header', ['cert']).get('cert'), 'tls.proxy.header.cert') ??
          'X-Tls-Client-Cert',
      },
    },
    ...unseal,
    ...(previous !== undefined ? { unsealPrevious: previous } : {}),
    ...(backupIdentities.length > 0 ? { backupIdentities } : {}),
    enclaves: [],
    skipAuth: parseApi(r, top.get('api'), 'api'),
  };
  const store = parseStore(r, top.get('store'));
  if (store !== undefined) config.store = store;
  for (const [name, v] of r.obj(top.get('enclave'), 'enclave', []))
    config.enclaves.push(parseEnclave(r, name, v, sysadmin));
  if (config.enclaves.length === 0) r.fail('no enclave configuration specified');
  const upstream = parseUpstream(r, top.get('upstream'));
  if (upstream !== undefined) {
    if (!config.enclaves.some((e) => e.name === upstream.enclave))
      r.fail(`'upstream.enclave': enclave '${upstream.enclave}' is not declared under 'enclave'`);
    config.upstream = upstream;
  }
  return config;
}

function parseBackupIdentities(r: Reader, v: Y, path: string, sysadmin?: string): string[] {
  const ids = r.list(v, path).map((x, i) => r.identity(x, `${path}[${i}]`));
  for (const [i, id] of ids.entries()) {
    if (id === sysadmin) r.fail(`'${path}[${i}]': the system admin may take backups anyway`);
    if (ids.indexOf(id) !== i) r.fail(`'${path}': identity '${id}' is listed twice`);
  }
  return ids;
}

function parseEnclave(r: Reader, name: string, v: Y, sysadmin: string): EnclaveConfig {
  const path = `enclave.${name}`;
  r.name('enclave', name);
  const e = r.obj(v, path, ['admin', 'policy', 'keys']);
  const admin = r.identity(
    r.obj(e.get('admin'), `${path}.admin`, ['identity']).get('identity'),
    `${path}.admin.identity`,
  );
  if (admin === sysadmin) r.fail(`enclave '${name}': the enclave admin must not be the system admin`);

  const owner = new Map<string, string>(); // identity → policy, to find identities assigned twice
  const policies: PolicyConfig[] = [];
  for (const [pname, pv] of r.obj(e.get('policy'), `${path}.policy`, [])) {
    const ppath = `${path}.policy.${pname}`;
    const where = `enclave '${name}': policy '${pname}'`;
    r.name(`enclave '${name}': policy`, pname);
    const p = r.obj(pv, ppath, ['allow', 'deny', 'identities']);
    const patterns = (field: string) =>
      r
        .list(p.get(field), `${ppath}.${field}`)
        .map((x, i) => checkPattern(r, where, r.str(x, `${ppath}.${field}[${i}]`) ?? ''));
    const identities = r
      .list(p.get('identities'), `${ppath}.identities`)
      .map((x, i) => r.identity(x, `${ppath}.identities[${i}]`));
    for (const id of identities) {
      if (id === sysadmin) r.fail(`${where}: identity '${id}' is the system admin and cannot be assigned a policy`);
      if (id === admin) r.fail(`${where}: identity '${id}' is the enclave admin and cannot be assigned a policy`);
      const other = owner.get(id);
      if (other !== undefined) r.fail(`${where}: identity '${id}' is already assigned to policy '${other}'`);
      owner.set(id, pname);
    }
    policies.push({ name: pname, allow: patterns('allow'), deny: patterns('deny'), identities });
  }

  const keys: string[] = [];
  r.list(e.get('keys'), `${path}.keys`).forEach((kv, i) => {
    const k = r.str(r.obj(kv, `${path}.keys[${i}]`, ['name']).get('name'), `${path}.keys[${i}].name`, true)!;
    r.name(`enclave '${name}': key`, k);
    if (keys.includes(k)) r.fail(`enclave '${name}': key '${k}' is listed twice`);
    keys.push(k);
  });
  return { name, admin, policies, keys };
}

// Newest-KES pattern semantics (kes-protocol §3.2): exact match, or a prefix ending in a single trailing '*'.
function checkPattern(r: Reader, where: string, pattern: string): string {
  if (pattern === '') r.fail(`${where}: empty pattern`);
  const stem = pattern.endsWith('*') ? pattern.slice(0, -1) : pattern;
  if (/[*?[\\]/.test(stem)) {
    r.fail(
      `${where}: pattern '${pattern}' uses glob syntax that kesd does not support; only a trailing '*' is a wildcard`,
    );
  }
  return pattern;
}

/** The .init content for an init.yml: TLS paths (also etcd's) made absolute against `cwd`, as KES resolves them. */
export function toServerConfig(init: InitConfig, cwd: string = process.cwd()): ServerConfig {
  const password = init.tls.passwordEnv ? `\${${init.tls.passwordEnv}}` : init.tls.password;
  const keys = init.enclaves.filter((e) => e.keys.length > 0).map((e) => [e.name, e.keys] as const);
  return {
    version: '1',
    address: init.address,
    tls: {
      key: resolve(cwd, init.tls.key),
      cert: resolve(cwd, init.tls.cert),
      ...(password ? { password } : {}),
      ...(init.tls.ca ? { ca: resolve(cwd, init.tls.ca) } : {}),
      verifyCert: init.tls.verifyCert,
    },
    ...(init.unsealFile !== undefined ? { unsealFile: resolve(cwd, init.unsealFile) } : { unsealEnv: init.unsealEnv }),
    ...(keys.length > 0 ? { keys: Object.fromEntries(keys) } : {}),
    ...(init.skipAuth && init.skipAuth.length > 0 ? { skipAuth: init.skipAuth } : {}),
    ...(init.backupIdentities && init.backupIdentities.length > 0
      ? { backupIdentities: [...init.backupIdentities] }
      : {}),
    ...(init.store ? { store: { etcd: absoluteEtcdPaths(init.store.etcd, cwd) } } : {}),
    ...(init.upstream ? { upstream: absoluteUpstreamPaths(init.upstream, cwd) } : {}),
  };
}

function absoluteEtcdPaths(etcd: EtcdConfig, cwd: string): EtcdConfig {
  if (etcd.tls === undefined) return { ...etcd, endpoints: [...etcd.endpoints] };
  const tls = Object.fromEntries(Object.entries(etcd.tls).map(([k, v]) => [k, resolve(cwd, v)]));
  return { ...etcd, endpoints: [...etcd.endpoints], tls };
}

/** Writes <dir>/.init atomically, mode 0600. */
export async function writeServerConfig(dir: string, cfg: ServerConfig): Promise<void> {
  const doc = {
    version: cfg.version,
    address: cfg.address,
    tls: {
      key: cfg.tls.key,
      cert: cfg.tls.cert,
      password: cfg.tls.password ?? '',
      ...(cfg.tls.ca ? { ca: cfg.tls.ca } : {}),
      client: { verify_cert: cfg.tls.verifyCert },
    },
    unseal: unsealDoc(cfg),
    ...(cfg.keys && Object.keys(cfg.keys).length > 0 ? { keys: cfg.keys } : {}),
    ...(cfg.skipAuth && cfg.skipAuth.length > 0
      ? { api: Object.fromEntries(cfg.skipAuth.map((p) => [p, { skip_auth: true }])) }
      : {}),
    ...(cfg.backupIdentities && cfg.backupIdentities.length > 0
      ? { backup: { identities: cfg.backupIdentities } }
      : {}),
    ...(cfg.store
      ? {
          store: {
            etcd: {
              endpoints: cfg.store.etcd.endpoints,
              prefix: cfg.store.etcd.prefix,
              ...(cfg.store.etcd.tls ? { tls: cfg.store.etcd.tls } : {}),
            },
          },
        }
      : {}),
    ...(cfg.upstream ? { upstream: upstreamDoc(cfg.upstream) } : {}),
  };
  await writeFileAtomic(join(dir, SERVER_CONFIG_FILE), stringify(doc), 0o600);
}

/** Reads <dir>/.init; `${VAR}` values (e.g. the key password) are expanded from `env`. */
export async function readServerConfig(dir: string, env: NodeJS.ProcessEnv = process.env): Promise<ServerConfig> {
  const path = join(dir, SERVER_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new ConfigError(`server config '${path}' does not exist (was the directory initialized with 'kesd init'?)`);
    throw new ConfigError(`server config '${path}': cannot read: ${(err as Error).message}`);
  }
  const r = new Reader(`server config '${path}'`, env);
  const top = r.obj(r.parse(text), '', [
    'version',
    'address',
    'tls',
    'unseal',
    'keys',
    'api',
    'store',
    'backup',
    'upstream',
  ]);
  const version = r.str(top.get('version'), 'version', true);
  if (version !== '1') r.fail(`config version '${version}' is not supported`);
  const tls = r.obj(top.get('tls'), 'tls', ['key', 'cert', 'password', 'ca', 'client']);
  const password = r.str(tls.get('password'), 'tls.password');
  const ca = r.str(tls.get('ca'), 'tls.ca');
  const unseal = parseUnseal(r, top.get('unseal'));
  if (unseal.unsealFile !== undefined && !unseal.unsealFile.startsWith('/'))
    r.fail(`'unseal.file.path': '${unseal.unsealFile}' must be an absolute path`);
  const skipAuth = parseApi(r, top.get('api'), 'api');
  const backupIdentities = parseBackupIdentities(
    r,
    r.obj(top.get('backup'), 'backup', ['identities']).get('identities'),
    'backup.identities',
  );
  const store = parseStore(r, top.get('store'));
  const upstream = parseUpstream(r, top.get('upstream'));
  const keys = new Map<string, string[]>();
  for (const [enclave, list] of r.obj(top.get('keys'), 'keys', [])) {
    r.name('enclave', enclave);
    keys.set(
      enclave,
      r
        .list(list, `keys.${enclave}`)
        .map((k, i) => r.name(`enclave '${enclave}': key`, r.str(k, `keys.${enclave}[${i}]`, true)!)),
    );
  }
  return {
    version: '1',
    address: r.address(top.get('address'), 'address'),
    tls: {
      key: r.str(tls.get('key'), 'tls.key', true)!,
      cert: r.str(tls.get('cert'), 'tls.cert', true)!,
      ...(password ? { password } : {}),
      ...(ca ? { ca } : {}),
      verifyCert: r.bool(
        r.obj(tls.get('client'), 'tls.client', ['verify_cert']).get('verify_cert'),
        'tls.client.verify_cert',
      ),
    },
    ...unseal,
    ...(keys.size > 0 ? { keys: Object.fromEntries(keys) } : {}),
    ...(skipAuth.length > 0 ? { skipAuth } : {}),
    ...(backupIdentities.length > 0 ? { backupIdentities } : {}),
    ...(store ? { store } : {}),
    ...(upstream ? { upstream } : {}),
  };
}
