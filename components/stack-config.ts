// The stack's configuration, validated up front: every problem names the config key and the allowed values.
import { etcdQuotaBytes } from './etcd-config';
import { KES_NAME, KES_NAME_RULE, isKesName } from './kes-name';
import { parseUpstreamConfig, type UpstreamStackConfig } from './upstream-config';

export interface StackConfig {
  readonly cluster:
    | { readonly mode: 'kind'; readonly name: string; readonly workers: number; readonly nodeImage?: string }
    | { readonly mode: 'existing'; readonly kubeconfig?: string; readonly context?: string };
  readonly namespaces: { readonly operator: string; readonly kesd: string; readonly tenant: string };
  /** The MinIO Operator: installed by this stack, or (install false) one already on the cluster is used. */
  readonly operator:
    | { readonly install: true; readonly replicas: number; readonly chart: OperatorChartSource }
    | { readonly install: false };
  readonly tenant: {
    readonly name: string;
    readonly servers: number;
    readonly volumesPerServer: number;
    readonly volumeSize: string;
    readonly storageClass?: string;
  };
  readonly kesd: {
    /** As the stack sets it; with more than one, the store is etcd. */
    readonly replicas: number;
    readonly store: KesdStoreConfig;
    readonly cpu: string;
    readonly workers?: number;
    readonly image?: string;
    readonly defaultKey: string;
    /** Raise by one to rotate the unseal key (components/unseal-key.ts). */
    readonly unsealKeyGeneration: number;
    /** A backup CronJob (one replica only); absent: none. */
    readonly backup?: {
      readonly schedule: string;
      readonly keep: number;
      readonly storageSize: string;
      readonly storageClass?: string;
    };
  };
  readonly keys: readonly string[];
  readonly buckets: readonly { readonly name: string; readonly key: string }[];
  /** A Vault mirroring kesd's keys (upstream-config.ts); off when unset. */
  readonly upstream?: UpstreamStackConfig;
}

/**
 * Where kesd keeps its keys, decided here and nowhere else. One replica: the embedded store on its PVC (kesd.storageSize,
 * kesd.storageClass). More: an etcd cluster the stack deploys and every replica shares (etcd.storageSize and
 * etcd.storageClass size etcd's own PVCs); each replica on its own store would hold keys the others cannot decrypt.
 */
export type KesdStoreConfig =
  | { readonly kind: 'pvc'; readonly storageSize: string; readonly storageClass?: string }
  | { readonly kind: 'etcd'; readonly storageSize: string; readonly storageClass?: string };

/** Where the operator chart comes from: a Helm repository (by URL) or a chart archive on disk. */
export type OperatorChartSource = { readonly repo: string } | { readonly path: string };

/** The public MinIO Operator Helm repository. */
export const PUBLIC_OPERATOR_REPO = 'https://operator.min.io';

export class StackConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid stack configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const QUANTITY = /^[1-9][0-9]*(Ki|Mi|Gi|Ti)$/;
// At least 100m; whole or decimal CPUs, or millicores.
const CPU = /^([1-9][0-9]{2,}m|[1-9][0-9]*(\.[0-9]{1,3})?|0\.[1-9][0-9]{0,2})$/;
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Reads values of one config object, collecting problems instead of stopping at the first. */
class Reader {
  private readonly used = new Set<string>();

  constructor(
    private readonly problems: string[],
    private readonly key: string,
    private readonly raw: Record<string, unknown>,
  ) {}

  string(field: string, def: string | undefined, pattern?: RegExp, allowed?: string): string | undefined {
    this.used.add(field);
    const v = this.raw[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string')
      return this.fail(field, `must be a string${allowed ? ` (${allowed})` : ''}, got ${JSON.stringify(v)}`);
    if (pattern && !pattern.test(v)) return this.fail(field, `'${v}' is not allowed: ${allowed}`);
    return v;
  }

  oneOf<T extends string>(field: string, def: T, values: readonly T[]): T {
    const v = this.string(field, def, undefined, values.join(' | '));
    if (v !== undefined && !values.includes(v as T)) {
      this.fail(field, `'${v}' is not allowed: one of ${values.join(' | ')}`);
      return def;
    }
    return (v ?? def) as T;
  }

  /** A CPU quantity, written as a string ('500m', '1') or a plain number (1, 1.5). */
  cpu(field: string, def: string): string {
    const allowed = 'a CPU limit of at least 100m, such as 500m, 1 or 2';
    const v = this.raw[field];
    if (typeof v !== 'number') return this.string(field, def, CPU, allowed) ?? def;
    this.used.add(field);
    if (CPU.test(String(v))) return String(v);
    this.fail(field, `${v} is not allowed: ${allowed}`);
    return def;
  }

  bool(field: string, def: boolean): boolean {
    this.used.add(field);
    const v = this.raw[field];
    if (v === undefined || v === null) return def;
    if (v === true || v === 'true') return true;
    if (v === false || v === 'false') return false;
    this.fail(field, `must be true or false, got ${JSON.stringify(v)}`);
    return def;
  }

  /** A nested object, for a Reader of its own. */
  nested(field: string): unknown {
    this.used.add(field);
    return this.raw[field];
  }

  /** Whether the field is set at all (to tell a default from an explicit value). */
  has(field: string): boolean {
    return this.raw[field] !== undefined && this.raw[field] !== null;
  }

  fail(field: string, message: string): undefined {
    this.problems.push(`stateful-kes:${this.key}.${field}: ${message}`);
    return undefined;
  }

  optionalInt(field: string, min: number, max: number): number | undefined {
    this.used.add(field);
    if (!this.has(field)) return undefined;
    return this.int(field, min, min, max); // on a bad value the problem is recorded and parsing fails anyway
  }

  int(field: string, def: number, min: number, max: number): number {
    this.used.add(field);
    const v = this.raw[field];
    if (v === undefined || v === null) return def;
    const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      this.fail(field, `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
      return def;
    }
    return n;
  }

  /** Reports fields nobody read: a typo must not be silently ignored. */
  done(): void {
    for (const k of Object.keys(this.raw)) if (!this.used.has(k)) this.fail(k, 'unknown setting');
  }
}

function object(problems: string[], key: string, raw: unknown): Record<string, unknown> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    problems.push(`stateful-kes:${key}: must be an object`);
    return {};
  }
  return raw as Record<string, unknown>;
}

/** The top-level config keys (`stateful-kes:<key>`). */
export const STACK_CONFIG_KEYS = [
  'cluster',
  'namespaces',
  'operator',
  'tenant',
  'kesd',
  'etcd',
  'keys',
  'buckets',
  'upstream',
];

/** Validates the raw config objects (as `pulumi.Config.getObject` returns them) and applies defaults. */
export function parseStackConfig(raw: Record<string, unknown>): StackConfig {
  const problems: string[] = [];
  for (const k of Object.keys(raw)) {
    if (!STACK_CONFIG_KEYS.includes(k)) problems.push(`stateful-kes:${k}: unknown setting`);
  }

  const c = new Reader(problems, 'cluster', object(problems, 'cluster', raw.cluster));
  const mode = c.oneOf('mode', 'kind', ['kind', 'existing'] as const);
  const cluster: StackConfig['cluster'] =
    mode === 'kind'
      ? {
          mode,
          name: c.string('name', 'stateful-kes', DNS_LABEL, 'a lowercase DNS label')!,
          workers: c.int('workers', 1, 0, 8),
          nodeImage: c.string('nodeImage', undefined),
        }
      : { mode, kubeconfig: c.string('kubeconfig', undefined), context: c.string('context', undefined) };
  c.done();

  const n = new Reader(problems, 'namespaces', object(problems, 'namespaces', raw.namespaces));
  const ns = (field: string, def: string) => n.string(field, def, DNS_LABEL, 'a lowercase DNS label (RFC 1123)') ?? def;
  const namespaces = {
    operator: ns('operator', 'minio-operator'),
    kesd: ns('kesd', 'kesd'),
    tenant: ns('tenant', 'tenant-1'),
  };
  n.done();

  const o = new Reader(problems, 'operator', object(problems, 'operator', raw.operator));
  const install = o.bool('install', true);
  const replicas = o.int('replicas', 1, 1, 3);
  const chart = operatorChart(o);
  // Without an install these would be silently ignored: the operator already on the cluster is used as it is.
  if (!install) {
    for (const field of ['replicas', 'chart'])
      if (o.has(field))
        o.fail(field, 'not used with operator.install false (the operator already on the cluster is used)');
    if (n.has('operator'))
      n.fail('operator', 'not used with operator.install false (the operator already on the cluster is used)');
  }
  const operator: StackConfig['operator'] = install ? { install, replicas, chart } : { install };
  o.done();

  const t = new Reader(problems, 'tenant', object(problems, 'tenant', raw.tenant));
  const tenant = {
    name: t.string('name', 'myminio', DNS_LABEL, 'a lowercase DNS label') ?? 'myminio',
    servers: t.int('servers', 4, 1, 32),
    volumesPerServer: t.int('volumesPerServer', 2, 1, 16),
    volumeSize: t.string('volumeSize', '2Gi', QUANTITY, 'a size such as 2Gi') ?? '2Gi',
    storageClass: t.string('storageClass', undefined, DNS_LABEL, 'a StorageClass name'),
  };
  t.done();

  const k = new Reader(problems, 'kesd', object(problems, 'kesd', raw.kesd));
  const kesdReplicas = k.int('replicas', 1, 1, 16);
  // The store decision (KesdStoreConfig), made once: every check below and the store itself follow from it.
  const onEtcd = kesdReplicas > 1;
  const pvc = {
    storageSize: k.string('storageSize', '1Gi', QUANTITY, 'a size such as 1Gi') ?? '1Gi',
    storageClass: k.string('storageClass', undefined, DNS_LABEL, 'a StorageClass name'),
  };
  const kesd = {
    replicas: kesdReplicas,
    cpu: k.cpu('cpu', '1'),
    workers: k.optionalInt('workers', 1, 64),
    image: k.string(
      'image',
      undefined,
      /^[^\s]+:[^\s]+$|^[^\s]+@sha256:[0-9a-f]{64}$/,
      'an image reference with a tag or digest (omit it to build kesd from this repo)',
    ),
    defaultKey:
      k.string('defaultKey', 'minio-default-key', KES_NAME, `a KES key name (${KES_NAME_RULE})`) ?? 'minio-default-key',
    unsealKeyGeneration: k.int('unsealKeyGeneration', 0, 0, 1_000_000),
    backup: kesdBackup(problems, k.nested('backup')),
  };
  if (kesd.backup !== undefined && onEtcd)
    k.fail('backup', 'only with replicas = 1 (on etcd, back up etcd with an etcd snapshot: docs/security.md)');
  // With etcd kesd keeps no data on disk: a PVC setting would be silently ignored.
  if (onEtcd) {
    for (const field of ['storageSize', 'storageClass']) {
      if (k.has(field))
        k.fail(field, `not used with replicas > 1 (kesd keeps its keys in etcd): set etcd.${field} instead`);
    }
  }
  k.done();

  const e = new Reader(problems, 'etcd', object(problems, 'etcd', raw.etcd));
  const etcd = {
    storageSize: e.string('storageSize', '1Gi', QUANTITY, 'a size such as 1Gi') ?? '1Gi',
    storageClass: e.string('storageClass', undefined, DNS_LABEL, 'a StorageClass name'),
  };
  if (QUANTITY.test(etcd.storageSize)) {
    try {
      etcdQuotaBytes(etcd.storageSize);
    } catch (err) {
      e.fail('storageSize', (err as Error).message.replace(/^etcd: /, ''));
    }
  }
  if (!onEtcd && Object.keys(object([], 'etcd', raw.etcd)).length > 0) {
    problems.push('stateful-kes:etcd: only used with kesd.replicas > 1 (one replica keeps its keys on its own PVC)');
  }
  e.done();
  const store: KesdStoreConfig = onEtcd ? { kind: 'etcd', ...etcd } : { kind: 'pvc', ...pvc };

  const keys = list(problems, 'keys', raw.keys).flatMap((v, i) => {
    if (typeof v === 'string' && isKesName(v)) return [v];
    problems.push(`stateful-kes:keys[${i}]: ${JSON.stringify(v)} is not a KES key name (${KES_NAME_RULE})`);
    return [];
  });
  const buckets = list(problems, 'buckets', raw.buckets).flatMap((v, i) => {
    const b = new Reader(problems, `buckets[${i}]`, object(problems, `buckets[${i}]`, v));
    const name = b.string('name', undefined, BUCKET, 'an S3 bucket name (3-63 of a-z 0-9 . -)');
    const key = b.string('key', undefined, KES_NAME, `a KES key name (${KES_NAME_RULE})`);
    b.done();
    if (name === undefined || key === undefined) {
      if (name === undefined && key === undefined)
        problems.push(`stateful-kes:buckets[${i}]: needs both 'name' and 'key'`);
      return [];
    }
    return [{ name, key }];
  });
  const names = buckets.map((b) => b.name);
  names.forEach(
    (b, i) => names.indexOf(b) !== i && problems.push(`stateful-kes:buckets: bucket '${b}' is listed twice`),
  );

  const upstream = parseUpstreamConfig(problems, raw.upstream);

  if (problems.length > 0) throw new StackConfigError(problems);
  return {
    cluster,
    namespaces,
    operator,
    tenant,
    kesd: { ...kesd, store },
    keys,
    buckets,
    ...(upstream ? { upstream } : {}),
  };
}

const CHART_ALLOWED = `an http:// or https:// Helm repository URL serving the operator chart (default ${PUBLIC_OPERATOR_REPO}), or the path of a chart archive ending in .tgz`;

/** operator.chart: a Helm repository URL or a local .tgz (relative paths are relative to the project directory). */
function operatorChart(o: Reader): OperatorChartSource {
  const value = o.string('chart', PUBLIC_OPERATOR_REPO, undefined, CHART_ALLOWED) ?? PUBLIC_OPERATOR_REPO;
  if (/^https?:\/\//i.test(value)) {
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (url && url.hostname !== '' && !/\s/.test(value) && url.search === '' && url.hash === '') return { repo: value };
  } else if (/\.tgz$/.test(value) && !/^[a-z][a-z0-9+.-]*:\/\//i.test(value) && value.trim() === value) {
    return { path: value };
  }
  o.fail('chart', `'${value}' is not allowed: ${CHART_ALLOWED}`);
  return { repo: PUBLIC_OPERATOR_REPO };
}

/** kesd.backup: {schedule, keep, storageSize, storageClass}; absent: no backups. */
function kesdBackup(problems: string[], raw: unknown): StackConfig['kesd']['backup'] {
  if (raw === undefined || raw === null) return undefined;
  const b = new Reader(problems, 'kesd.backup', object(problems, 'kesd.backup', raw));
  const backup = {
    schedule:
      b.string('schedule', '0 3 * * *', /^\S+(\s+\S+){4}$/, 'a five-field cron schedule such as "0 3 * * *"') ??
      '0 3 * * *',
    keep: b.int('keep', 7, 1, 9999),
    storageSize: b.string('storageSize', '1Gi', QUANTITY, 'a size such as 1Gi') ?? '1Gi',
    storageClass: b.string('storageClass', undefined, DNS_LABEL, 'a StorageClass name'),
  };
  b.done();
  return backup;
}

function list(problems: string[], key: string, raw: unknown): unknown[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    problems.push(`stateful-kes:${key}: must be a list`);
    return [];
  }
  return raw;
}

/** Every key kesd must hold: MinIO's default key, the extra keys, and each bucket's key (deduplicated, ordered). */
export function declaredKeys(config: StackConfig): string[] {
  return [...new Set([config.kesd.defaultKey, ...config.keys, ...config.buckets.map((b) => b.key)])];
}
