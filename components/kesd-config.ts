// Pure functions behind Kesd: its init.yml, the endpoint MinIO dials, and the content-addressed image tag.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { stringify } from 'yaml';
import { KESD_PORT } from './contracts';
import { isKesName } from './kes-name';
import { upstreamInitDoc, type UpstreamStackConfig } from './upstream-config';

/** Fixed object names, so the server certificate's SANs can be computed before Kesd exists (KesIdentities). */
export const KESD_NAMES = {
  statefulSet: 'kesd',
  service: 'kesd',
  headlessService: 'kesd-hl',
  tlsSecret: 'kesd-tls',
  initConfigMap: 'kesd-init',
  /** With an upstream only: the ServiceAccount Vault's Kubernetes auth role is bound to, and the Vault CA. */
  serviceAccount: 'kesd',
  vaultCaConfigMap: 'kesd-vault-ca',
} as const;

export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

/** Where things live inside the kesd pod. The data dir is below the PVC mount so `init` can rename into place. */
export const KESD_PATHS = {
  stateDir: '/var/lib/kesd',
  dataDir: '/var/lib/kesd/data',
  initFile: '/etc/kesd/init.yml',
  tlsDir: '/etc/kesd/tls',
  /** The unseal key Secret, mounted read-only; kesd reads the key from the file (init.yml `unseal.file`). */
  unsealDir: '/etc/kesd/unseal',
  unsealFile: '/etc/kesd/unseal/key',
  /** During an unseal key rotation: the previous key's Secret (init.yml `unseal.previous`). */
  unsealPreviousDir: '/etc/kesd/unseal-previous',
  unsealPreviousFile: '/etc/kesd/unseal-previous/key',
  /** kesd's etcd client certificate, key and the etcd CA (the EtcdCluster's client Secret). */
  etcdTlsDir: '/etc/kesd/etcd',
  tmpDir: '/tmp',
} as const;

/** Where kesd keeps its records in etcd. */
export const KESD_ETCD_PREFIX = 'kesd/';

/** What MinIO may call (kes-protocol: its KMS client needs key create/generate/decrypt plus status and listing). */
export const MINIO_POLICY_ALLOW = [
  '/v1/key/create/*',
  '/v1/key/generate/*',
  '/v1/key/decrypt/*',
  '/v1/key/describe/*',
  '/v1/key/list/*',
  '/v1/key/hmac/*',
  '/v1/status',
  '/v1/api',
  '/v1/metrics',
] as const;

/** The probe route: kubelet sends no client certificate. */
export const READY_PATH = '/v1/ready';

/**
 * The container's probes. Readiness is READY_PATH: not ready while sealed or, on etcd, while the store is
 * unreachable, so the ClusterIP Service (admin tools), Pulumi's await, rolling updates and the PDB only count replicas
 * that reach their keys. Startup and liveness only check the port: a restart during an etcd outage would drop the
 * keys the replica has cached, and it could not start again until etcd is back (it unseals from etcd).
 */
export function kesdProbes(portName: string) {
  return {
    // The first start initialises the data dir: give it a minute before liveness counts.
    startupProbe: { tcpSocket: { port: portName }, periodSeconds: 2, failureThreshold: 30 },
    readinessProbe: {
      httpGet: { scheme: 'HTTPS', path: READY_PATH, port: portName },
      periodSeconds: 5,
      timeoutSeconds: 3,
      failureThreshold: 3,
    },
    livenessProbe: { tcpSocket: { port: portName }, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 6 },
  };
}

/**
 * Whether the headless Service publishes pods that are not Ready. Several replicas: yes. MinIO dials each pod by
 * its name there (kesdMinioEndpoint), and while etcd has no quorum every replica is unready yet still serves the
 * keys it has cached; unpublished, the names would not resolve and MinIO would lose every replica at once. MinIO
 * fails over by itself from a pod that does not answer or answers 5xx. One replica: MinIO dials the ClusterIP
 * Service and nothing dials the pod's name, so Kubernetes' default.
 */
export function kesdPublishNotReadyAddresses(replicas: number): boolean {
  if (!Number.isInteger(replicas) || replicas < 1)
    throw new Error(`kesd: replicas must be a positive integer, got ${replicas}`);
  return replicas > 1;
}

export interface KesdInitInput {
  sysadmin: string;
  enclave: { name: string; admin: string };
  minioIdentity: string;
  /** Keys kesd creates if missing, MinIO's default key among them. */
  keys: string[];
  /** Absolute directory holding tls.crt and tls.key. */
  tlsDir: string;
  /** Absolute path of a CA bundle for `tls.ca` (optional; see the note in Kesd on why it is not set there). */
  caFile?: string;
  /**
   * Where kesd reads the unseal key: a file (default KESD_PATHS.unsealFile, the mounted Secret), or, given instead,
   * an environment variable. The file keeps the key out of every process's environment (docs/security.md).
   */
  unsealFile?: string;
  unsealEnv?: string;
  /** During an unseal key rotation: the previous key's file; kesd re-seals its root key under the current one. */
  unsealPreviousFile?: string;
  /** Identities that may take backups besides the system admin (a backup CronJob's). */
  backupIdentities?: string[];
  /** The shared store; without it kesd uses the embedded one in its data dir. */
  etcd?: KesdEtcdStore;
  /** A Vault mirroring the enclave's keys (init.yml `upstream`). */
  upstream?: UpstreamStackConfig;
}

export interface KesdEtcdStore {
  /** Every member's client URL (https://host:port). */
  endpoints: string[];
  prefix: string;
  /** Absolute directory holding ca.crt, tls.crt and tls.key. */
  tlsDir: string;
}

const IDENTITY = /^[0-9a-f]{64}$/;

/** init.yml for `kesd server --init`: KES v0.22 format plus `enclave.<name>.keys` and `api` skip_auth for probes. */
export function kesdInitYaml(input: KesdInitInput): string {
  const { sysadmin, enclave, minioIdentity, keys, tlsDir, caFile, unsealEnv, unsealPreviousFile, etcd, upstream } =
    input;
  const backupIdentities = input.backupIdentities ?? [];
  for (const [what, id] of [
    ['sysadmin', sysadmin],
    ['enclave admin', enclave.admin],
    ['MinIO identity', minioIdentity],
    ...backupIdentities.map((b) => ['backup identity', b] as const),
  ] as const) {
    if (!IDENTITY.test(id))
      throw new Error(`kesd init.yml: ${what} identity '${id}' is not 64 lowercase hex characters`);
  }
  if (backupIdentities.includes(sysadmin))
    throw new Error('kesd init.yml: the sysadmin may take backups anyway: give the backup job an identity of its own');
  if (new Set([sysadmin, enclave.admin, minioIdentity]).size !== 3) {
    throw new Error('kesd init.yml: the sysadmin, the enclave admin and MinIO must be three different identities');
  }
  if (unsealEnv !== undefined && input.unsealFile !== undefined)
    throw new Error('kesd init.yml: give the unseal key as a file or as an environment variable, not both');
  if (unsealEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(unsealEnv))
    throw new Error(`kesd init.yml: '${unsealEnv}' is not a valid environment variable name`);
  const unsealFile = input.unsealFile ?? KESD_PATHS.unsealFile;
  if (unsealEnv === undefined && !unsealFile.startsWith('/'))
    throw new Error(`kesd init.yml: unsealFile '${unsealFile}' must be an absolute path`);
  if (unsealPreviousFile !== undefined && (!unsealPreviousFile.startsWith('/') || unsealPreviousFile === unsealFile)) {
    throw new Error(
      `kesd init.yml: unsealPreviousFile '${unsealPreviousFile}' must be an absolute path other than the unseal key's`,
    );
  }
  if (!isKesName(enclave.name))
    throw new Error(`kesd init.yml: enclave name '${enclave.name}' is not a valid kesd name`);
  for (const k of keys) if (!isKesName(k)) throw new Error(`kesd init.yml: key name '${k}' is not a valid kesd name`);
  const dup = keys.find((k, i) => keys.indexOf(k) !== i);
  if (dup !== undefined) throw new Error(`kesd init.yml: key '${dup}' is listed twice`);
  for (const [what, p] of [
    ['tlsDir', tlsDir],
    ['caFile', caFile],
  ] as const) {
    if (p !== undefined && !p.startsWith('/'))
      throw new Error(`kesd init.yml: ${what} '${p}' must be an absolute path`);
  }
  if (etcd !== undefined) checkEtcdStore(etcd);

  const doc = {
    version: 'v1',
    address: `0.0.0.0:${KESD_PORT}`,
    system: {
      admin: { identity: sysadmin },
      ...(backupIdentities.length > 0 ? { backup: { identities: [...backupIdentities] } } : {}),
    },
    tls: {
      key: posix.join(tlsDir, 'tls.key'),
      cert: posix.join(tlsDir, 'tls.crt'),
      ...(caFile !== undefined ? { ca: caFile } : {}),
    },
    unseal: {
      ...(unsealEnv !== undefined ? { environment: { name: unsealEnv } } : { file: { path: unsealFile } }),
      ...(unsealPreviousFile !== undefined ? { previous: { file: { path: unsealPreviousFile } } } : {}),
    },
    ...(etcd !== undefined ? { store: { etcd: etcdStoreDoc(etcd) } } : {}),
    enclave: {
      [enclave.name]: {
        admin: { identity: enclave.admin },
        policy: { minio: { allow: [...MINIO_POLICY_ALLOW], identities: [minioIdentity] } },
        keys: keys.map((name) => ({ name })),
      },
    },
    api: { [READY_PATH]: { skip_auth: true } },
    ...(upstream !== undefined ? { upstream: upstreamInitDoc(upstream, enclave.name) } : {}),
  };
  return stringify(doc, { lineWidth: 0 });
}

function checkEtcdStore(etcd: KesdEtcdStore): void {
  if (etcd.endpoints.length === 0) throw new Error('kesd init.yml: store.etcd needs at least one endpoint');
  for (const e of etcd.endpoints) {
    if (!/^https:\/\/[a-z0-9.-]+:\d{1,5}$/.test(e))
      throw new Error(`kesd init.yml: etcd endpoint '${e}' must be https://host:port`);
  }
  const dup = etcd.endpoints.find((e, i) => etcd.endpoints.indexOf(e) !== i);
  if (dup !== undefined) throw new Error(`kesd init.yml: etcd endpoint '${dup}' is listed twice`);
  if (!/^[A-Za-z0-9_./-]+\/$/.test(etcd.prefix))
    throw new Error(`kesd init.yml: etcd prefix '${etcd.prefix}' must be non-empty, end with '/', and hold no spaces`);
  if (!etcd.tlsDir.startsWith('/'))
    throw new Error(`kesd init.yml: etcd tlsDir '${etcd.tlsDir}' must be an absolute path`);
}

/** init.yml `store.etcd`: the members, the key prefix, and kesd's client TLS for etcd. */
function etcdStoreDoc(etcd: KesdEtcdStore): Record<string, unknown> {
  return {
    endpoints: [...etcd.endpoints],
    prefix: etcd.prefix,
    tls: {
      ca: posix.join(etcd.tlsDir, 'ca.crt'),
      cert: posix.join(etcd.tlsDir, 'tls.crt'),
      key: posix.join(etcd.tlsDir, 'tls.key'),
    },
  };
}

export interface KesdEndpointInput {
  statefulSet: string;
  headlessService: string;
  /** The ClusterIP Service, used when there is a single replica. */
  service: string;
  namespace: string;
  replicas: number;
  port: number;
  clusterDomain: string;
}

/** The client Service URL, e.g. https://kesd.kesd.svc.cluster.local:7373. */
export function kesdServiceUrl(i: Pick<KesdEndpointInput, 'service' | 'namespace' | 'port' | 'clusterDomain'>): string {
  return `https://${i.service}.${i.namespace}.svc.${i.clusterDomain}:${i.port}`;
}

/**
 * MINIO_KMS_KES_ENDPOINT. Several replicas: every pod through the headless Service, in MinIO's ellipsis syntax,
 * so MinIO balances and fails over itself. One replica: the client Service, whose ClusterIP survives pod restarts
 * (a pod's IP does not) and which only routes to a Ready pod.
 */
export function kesdMinioEndpoint(i: KesdEndpointInput): string {
  if (!Number.isInteger(i.replicas) || i.replicas < 1)
    throw new Error(`kesd endpoint: replicas must be a positive integer, got ${i.replicas}`);
  if (i.replicas === 1) return kesdServiceUrl(i);
  return `https://${i.statefulSet}-{0...${i.replicas - 1}}.${i.headlessService}.${i.namespace}.svc.${i.clusterDomain}:${i.port}`;
}

/** The build context files kesd/Dockerfile copies (kesd/Dockerfile.dockerignore admits exactly these), plus the recipe. */
export function kesdImageSources(repoRoot: string): string[] {
  const files = [
    'package.json',
    'package-lock.json',
    'kesd/package.json',
    'kesd/tsconfig.json',
    'kesd/Dockerfile',
    'kesd/Dockerfile.dockerignore',
  ];
  for (const dir of ['kesd/bin', 'kesd/src']) {
    for (const e of readdirSync(join(repoRoot, dir), { recursive: true, withFileTypes: true })) {
      if (e.isFile())
        files.push(posix.join(dir, relative(join(repoRoot, dir), join(e.parentPath, e.name)).split(sep).join('/')));
    }
  }
  return files.sort();
}

/** 12 hex chars of a SHA-256 over the image sources (path and content), known at preview so a change shows as a new tag. */
export function kesdSourceHash(repoRoot: string): string {
  const h = createHash('sha256');
  for (const file of kesdImageSources(repoRoot)) {
    const content = readFileSync(join(repoRoot, file));
    h.update(`${file}\0${content.length}\0`).update(content);
  }
  return h.digest('hex').slice(0, 12);
}

export function kesdImageTag(hash: string): string {
  if (!/^[0-9a-f]{12}$/.test(hash)) throw new Error(`kesd image tag: '${hash}' is not 12 hex characters`);
  return `stateful-kes/kesd:${hash}`;
}

/**
 * The container args: initialise the data dir on first start, apply init.yml at every start, and run `workers`
 * processes (always given: kesd's default, one per CPU of the node, ignores the container's CPU limit).
 */
export function kesdServerArgs(workers: number, port: number = KESD_PORT): string[] {
  if (!Number.isInteger(workers) || workers < 1 || workers > 256)
    throw new Error(`kesd args: workers must be an integer from 1 to 256, got ${workers}`);
  return [
    'server',
    KESD_PATHS.dataDir,
    '--init',
    KESD_PATHS.initFile,
    '--addr',
    `0.0.0.0:${port}`,
    '--workers',
    String(workers),
  ];
}

/** Millicores of a Kubernetes CPU quantity: '500m' → 500, '2' → 2000, '1.5' → 1500. */
export function cpuMillis(quantity: string): number {
  const m = /^(?:(\d+)m|(\d+(?:\.\d{1,3})?))$/.exec(quantity);
  const millis = m?.[1] !== undefined ? Number(m[1]) : m?.[2] !== undefined ? Math.round(Number(m[2]) * 1000) : NaN;
  if (!(millis > 0))
    throw new Error(`kesd: CPU '${quantity}' is not a positive Kubernetes CPU quantity such as 500m, 1 or 1.5`);
  return millis;
}

/**
 * kesd's worker count: an explicit one, else one per whole CPU of the container's limit (its request when there is
 * no limit), at least 1. A pod sees every CPU of its node, so kesd's own default would fork more workers than the
 * CFS quota lets run, and they would only contend for it.
 */
export function kesdWorkers(cpu: { limit?: string; request?: string }, workers?: number): number {
  if (workers !== undefined) {
    if (!Number.isInteger(workers) || workers < 1 || workers > 256)
      throw new Error(`kesd: workers must be an integer from 1 to 256, got ${workers}`);
    return workers;
  }
  const basis = cpu.limit ?? cpu.request;
  return basis === undefined ? 1 : Math.max(1, Math.min(256, Math.floor(cpuMillis(basis) / 1000)));
}

/** Memory per kesd process: its RSS levels off near 256 MiB under heavy connection churn (docs/reliability.md). */
const MEMORY_PER_WORKER_MI = 256;
/** The cluster primary only forks and relays: it needs far less than a worker. */
const PRIMARY_MEMORY_MI = 64;

/** The container's resources for a CPU limit and worker count: memory scales with the processes kesd runs. */
export function kesdResources(
  cpuLimit: string,
  workers: number,
): { requests: Record<string, string>; limits: Record<string, string> } {
  cpuMillis(cpuLimit);
  const limitMi = MEMORY_PER_WORKER_MI * workers + (workers > 1 ? PRIMARY_MEMORY_MI : 0);
  return { requests: { cpu: '50m', memory: `${64 * workers}Mi` }, limits: { cpu: cpuLimit, memory: `${limitMi}Mi` } };
}

/** The uid/gid kesd runs as; the image's USER matches, fsGroup makes the PVC writable. */
export const KESD_UID = 1000;

/** Pod-level security context: the Pod Security Standards "restricted" profile. */
export const KESD_POD_SECURITY_CONTEXT = {
  runAsNonRoot: true,
  runAsUser: KESD_UID,
  runAsGroup: KESD_UID,
  fsGroup: KESD_UID,
  fsGroupChangePolicy: 'OnRootMismatch',
  seccompProfile: { type: 'RuntimeDefault' },
};

/** Container-level security context: restricted, and a read-only root filesystem (kesd writes only to its PVC). */
export const KESD_CONTAINER_SECURITY_CONTEXT = {
  runAsNonRoot: true,
  runAsUser: KESD_UID,
  runAsGroup: KESD_UID,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  privileged: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

/** Hex SHA-256 of a text, for pod-template checksum annotations. */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
