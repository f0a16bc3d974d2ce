// Pure functions behind Kesd: its init.yml, the endpoint MinIO dials, and the content-addressed image tag.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix, relative, sep } from 'node:path';
import { stringify } from 'yaml';
import { KESD_PORT, UNSEAL_ENV } from './contracts';

/** Fixed object names, so the server certificate's SANs can be computed before Kesd exists (KesIdentities). */
export const KESD_NAMES = {
  statefulSet: 'kesd',
  service: 'kesd',
  headlessService: 'kesd-hl',
  tlsSecret: 'kesd-tls',
  initConfigMap: 'kesd-init',
} as const;

export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

/** Where things live inside the kesd pod. The data dir is below the PVC mount so `init` can rename into place. */
export const KESD_PATHS = {
  stateDir: '/var/lib/kesd',
  dataDir: '/var/lib/kesd/data',
  initFile: '/etc/kesd/init.yml',
  tlsDir: '/etc/kesd/tls',
  tmpDir: '/tmp',
} as const;

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
  /** The env var holding the unseal key; UNSEAL_ENV unless the UnsealKey says otherwise. */
  unsealEnv?: string;
}

const IDENTITY = /^[0-9a-f]{64}$/;
// kesd's name rule (kesd/src/state/names.ts): 1-80 of [0-9A-Za-z_-], '-' neither first nor last, not '_' alone.
const NAME = /^(?!-)(?!_$)[0-9A-Za-z_-]{1,80}(?<!-)$/;

/** init.yml for `kesd server --init`: KES v0.22 format plus `enclave.<name>.keys` and `api` skip_auth for probes. */
export function kesdInitYaml(input: KesdInitInput): string {
  const { sysadmin, enclave, minioIdentity, keys, tlsDir, caFile, unsealEnv = UNSEAL_ENV } = input;
  for (const [what, id] of [['sysadmin', sysadmin], ['enclave admin', enclave.admin], ['MinIO identity', minioIdentity]] as const) {
    if (!IDENTITY.test(id)) throw new Error(`kesd init.yml: ${what} identity '${id}' is not 64 lowercase hex characters`);
  }
  if (new Set([sysadmin, enclave.admin, minioIdentity]).size !== 3) {
    throw new Error('kesd init.yml: the sysadmin, the enclave admin and MinIO must be three different identities');
  }
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(unsealEnv)) throw new Error(`kesd init.yml: '${unsealEnv}' is not a valid environment variable name`);
  if (!NAME.test(enclave.name)) throw new Error(`kesd init.yml: enclave name '${enclave.name}' is not a valid kesd name`);
  for (const k of keys) if (!NAME.test(k)) throw new Error(`kesd init.yml: key name '${k}' is not a valid kesd name`);
  const dup = keys.find((k, i) => keys.indexOf(k) !== i);
  if (dup !== undefined) throw new Error(`kesd init.yml: key '${dup}' is listed twice`);
  for (const [what, p] of [['tlsDir', tlsDir], ['caFile', caFile]] as const) {
    if (p !== undefined && !p.startsWith('/')) throw new Error(`kesd init.yml: ${what} '${p}' must be an absolute path`);
  }

  const doc = {
    version: 'v1',
    address: `0.0.0.0:${KESD_PORT}`,
    system: { admin: { identity: sysadmin } },
    tls: {
      key: posix.join(tlsDir, 'tls.key'),
      cert: posix.join(tlsDir, 'tls.crt'),
      ...(caFile !== undefined ? { ca: caFile } : {}),
    },
    unseal: { environment: { name: unsealEnv } },
    enclave: {
      [enclave.name]: {
        admin: { identity: enclave.admin },
        policy: { minio: { allow: [...MINIO_POLICY_ALLOW], identities: [minioIdentity] } },
        keys: keys.map((name) => ({ name })),
      },
    },
    api: { [READY_PATH]: { skip_auth: true } },
  };
  return stringify(doc, { lineWidth: 0 });
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
  if (!Number.isInteger(i.replicas) || i.replicas < 1) throw new Error(`kesd endpoint: replicas must be a positive integer, got ${i.replicas}`);
  if (i.replicas === 1) return kesdServiceUrl(i);
  return `https://${i.statefulSet}-{0...${i.replicas - 1}}.${i.headlessService}.${i.namespace}.svc.${i.clusterDomain}:${i.port}`;
}

/** The build context files kesd/Dockerfile copies (kesd/Dockerfile.dockerignore admits exactly these), plus the recipe. */
export function kesdImageSources(repoRoot: string): string[] {
  const files = ['package.json', 'package-lock.json', 'kesd/package.json', 'kesd/tsconfig.json', 'kesd/Dockerfile', 'kesd/Dockerfile.dockerignore'];
  for (const dir of ['kesd/bin', 'kesd/src']) {
    for (const e of readdirSync(join(repoRoot, dir), { recursive: true, withFileTypes: true })) {
      if (e.isFile()) files.push(posix.join(dir, relative(join(repoRoot, dir), join(e.parentPath, e.name)).split(sep).join('/')));
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

/** The container args: initialise the data dir on first start, apply init.yml at every start. */
export function kesdServerArgs(port: number = KESD_PORT): string[] {
  return ['server', KESD_PATHS.dataDir, '--init', KESD_PATHS.initFile, '--addr', `0.0.0.0:${port}`];
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
