// What the MinIO Tenant is made of, computed without Pulumi: the KES env, the config.env text, the Tenant spec and
// the in-cluster endpoints. The MinioTenant component (minio-tenant.ts) only wires these into resources.
// Facts about the operator (mount paths, env handling) are from MinIO Operator v7.1.1; see docs/minio-integration.md.
import { isKesName, KES_NAME_RULE } from './kes-name';

export const MINIO_IMAGE = 'quay.io/minio/minio:RELEASE.2025-04-08T15-41-24Z';
export const POOL_NAME = 'pool-0';
export const MOUNT_PATH = '/export';
export const CONSOLE_PORT = 9443;
/** The uid/gid MinIO runs as (the operator's default, and what tenant-lite pins). */
export const MINIO_UID = 1000;

/** The Secret type written in Tenant references; it decides which Secret keys the operator mounts. */
export const TLS_REF_TYPE = 'kubernetes.io/tls';

// Where the operator mounts externalClientCertSecrets[0] and externalCaCertSecret[0] referenced with TLS_REF_TYPE.
export const CERTS_DIR = '/tmp/certs';
export const KES_CLIENT_CERT_FILE = `${CERTS_DIR}/client-0/client.crt`;
export const KES_CLIENT_KEY_FILE = `${CERTS_DIR}/client-0/client.key`;
export const KES_CA_FILE = `${CERTS_DIR}/CAs/ca-0.crt`;

export interface EnvVar {
  readonly name: string;
  readonly value: string;
}

/** A file the operator projects into every MinIO pod from a Secret the Tenant references. */
export interface CertMount {
  readonly secret: string;
  readonly key: string;
  readonly path: string;
}

/**
 * The MINIO_KMS_KES_* env for spec.env: mTLS with the client cert from externalClientCertSecrets[0] and the kesd CA
 * from externalCaCertSecret[0]. Plain values only (the operator drops valueFrom).
 */
export function tenantKmsEnv(opts: { endpoint: string; defaultKey: string }): EnvVar[] {
  const endpoints = opts.endpoint.split(',').map((e) => e.trim());
  if (opts.endpoint.trim() === '' || endpoints.some((e) => !/^https:\/\/[^\s/]+(:\d+)?\/?$/.test(e))) {
    throw new Error(
      `tenant: KES endpoint '${opts.endpoint}' must be one or more https:// URLs (host[:port]), comma-separated`,
    );
  }
  if (!isKesName(opts.defaultKey)) {
    throw new Error(`tenant: default key '${opts.defaultKey}' is not a KES key name (${KES_NAME_RULE})`);
  }
  return [
    { name: 'MINIO_KMS_KES_ENDPOINT', value: opts.endpoint },
    { name: 'MINIO_KMS_KES_CERT_FILE', value: KES_CLIENT_CERT_FILE },
    { name: 'MINIO_KMS_KES_KEY_FILE', value: KES_CLIENT_KEY_FILE },
    { name: 'MINIO_KMS_KES_CAPATH', value: KES_CA_FILE },
    { name: 'MINIO_KMS_KES_KEY_NAME', value: opts.defaultKey },
  ];
}

const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;
// MinIO and the operator read `export K="v"` literally (outer quotes stripped, no escapes), and people `source` the
// file: so a value may hold none of " \ $ ` nor control characters, which makes the line mean the same everywhere.
const UNSAFE_VALUE = /["\\$`\u0000-\u001f\u007f]/;

function envLine(name: string, value: string): string {
  if (!ENV_NAME.test(name)) throw new Error(`config.env: '${name}' is not an environment variable name`);
  const bad = UNSAFE_VALUE.exec(value);
  if (bad) {
    throw new Error(
      `config.env: the value of ${name} contains ${JSON.stringify(bad[0])}, which config.env cannot carry (no " \\ $ \` or control characters)`,
    );
  }
  return `export ${name}="${value}"`;
}

/**
 * The Tenant's `config.env` Secret text: root credentials and, optionally, MinIO's standard storage class
 * (erasure-code parity such as `EC:2`, MINIO_STORAGE_CLASS_STANDARD).
 */
export function configEnv(opts: { rootUser: string; rootPassword: string; storageClass?: string }): string {
  if (opts.rootUser.length < 3) throw new Error('config.env: MINIO_ROOT_USER must be at least 3 characters');
  if (opts.rootPassword.length < 8) throw new Error('config.env: MINIO_ROOT_PASSWORD must be at least 8 characters');
  if (opts.storageClass !== undefined && !/^EC:\d+$/.test(opts.storageClass)) {
    throw new Error(`config.env: storage class '${opts.storageClass}' must look like EC:<parity>, e.g. EC:2`);
  }
  const lines = [envLine('MINIO_ROOT_USER', opts.rootUser), envLine('MINIO_ROOT_PASSWORD', opts.rootPassword)];
  if (opts.storageClass !== undefined) lines.push(envLine('MINIO_STORAGE_CLASS_STANDARD', opts.storageClass));
  return lines.join('\n') + '\n';
}

export interface TenantSpecOptions {
  readonly servers: number;
  readonly volumesPerServer: number;
  /** PVC size per volume, a Kubernetes quantity such as 2Gi. */
  readonly volumeSize: string;
  /** Kubernetes StorageClass for the PVCs; omitted → the cluster default (kind: `standard`). */
  readonly storageClass?: string;
  /** Name of the Secret holding `config.env`. */
  readonly configSecret: string;
  /** Name of the Secret (tls.crt, tls.key) MinIO authenticates to kesd with. */
  readonly clientCertSecret: string;
  /** Name of the Secret whose `tls.crt` is the kesd CA. */
  readonly caSecret: string;
  /** MINIO_KMS_KES_ENDPOINT. */
  readonly kmsEndpoint: string;
  readonly defaultKey: string;
  readonly image?: string;
}

const QUANTITY = /^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/;

/** The Tenant spec, modelled on the operator's tenant-lite example, wired to kesd. */
export function tenantSpec(o: TenantSpecOptions): Record<string, unknown> {
  const problems: string[] = [];
  if (!Number.isInteger(o.servers) || o.servers < 1)
    problems.push(`servers must be a positive integer, got ${JSON.stringify(o.servers)}`);
  if (!Number.isInteger(o.volumesPerServer) || o.volumesPerServer < 1)
    problems.push(`volumesPerServer must be a positive integer, got ${JSON.stringify(o.volumesPerServer)}`);
  if (!QUANTITY.test(o.volumeSize))
    problems.push(`volumeSize '${o.volumeSize}' is not a Kubernetes quantity such as 2Gi`);
  for (const [field, name] of [
    ['configSecret', o.configSecret],
    ['clientCertSecret', o.clientCertSecret],
    ['caSecret', o.caSecret],
  ] as const) {
    if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) problems.push(`${field} '${name}' is not a Secret name`);
  }
  if (problems.length > 0) throw new Error(`tenant: ${problems.join('; ')}`);

  const ids = { runAsUser: MINIO_UID, runAsGroup: MINIO_UID, runAsNonRoot: true };
  return {
    image: o.image ?? MINIO_IMAGE,
    imagePullPolicy: 'IfNotPresent',
    configuration: { name: o.configSecret },
    pools: [
      {
        name: POOL_NAME,
        servers: o.servers,
        volumesPerServer: o.volumesPerServer,
        volumeClaimTemplate: {
          metadata: { name: 'data' },
          spec: {
            accessModes: ['ReadWriteOnce'],
            resources: { requests: { storage: o.volumeSize } },
            ...(o.storageClass !== undefined ? { storageClassName: o.storageClass } : {}),
          },
        },
        securityContext: { ...ids, fsGroup: MINIO_UID, fsGroupChangePolicy: 'OnRootMismatch' },
        containerSecurityContext: {
          ...ids,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        },
      },
    ],
    requestAutoCert: true,
    mountPath: MOUNT_PATH,
    podManagementPolicy: 'Parallel',
    env: tenantKmsEnv({ endpoint: o.kmsEndpoint, defaultKey: o.defaultKey }),
    externalClientCertSecrets: [{ name: o.clientCertSecret, type: TLS_REF_TYPE }],
    externalCaCertSecret: [{ name: o.caSecret, type: TLS_REF_TYPE }],
    features: { bucketDNS: false },
  };
}

interface SecretRef {
  name: string;
  type?: string;
}

/**
 * The cert files the operator (v7.1.1, minio-statefulset.go) projects into /tmp/certs for a Tenant spec's
 * externalClientCertSecrets and externalCaCertSecret; the Secret keys read depend on the `type` in the reference.
 */
export function operatorCertMounts(spec: {
  externalClientCertSecrets?: SecretRef[];
  externalCaCertSecret?: SecretRef[];
}): CertMount[] {
  const certManager = (t?: string) => t === 'cert-manager.io/v1' || t === 'cert-manager.io/v1alpha2';
  const mounts: CertMount[] = [];
  (spec.externalClientCertSecrets ?? []).forEach((ref, i) => {
    const tlsKeys = ref.type === TLS_REF_TYPE || certManager(ref.type);
    mounts.push({
      secret: ref.name,
      key: tlsKeys ? 'tls.crt' : 'public.crt',
      path: `${CERTS_DIR}/client-${i}/client.crt`,
    });
    mounts.push({
      secret: ref.name,
      key: tlsKeys ? 'tls.key' : 'private.key',
      path: `${CERTS_DIR}/client-${i}/client.key`,
    });
    if (certManager(ref.type))
      mounts.push({ secret: ref.name, key: 'ca.crt', path: `${CERTS_DIR}/CAs/client-ca-${i}.crt` });
  });
  (spec.externalCaCertSecret ?? []).forEach((ref, i) => {
    const key = ref.type === TLS_REF_TYPE ? 'tls.crt' : certManager(ref.type) ? 'ca.crt' : 'public.crt';
    mounts.push({ secret: ref.name, key, path: `${CERTS_DIR}/CAs/ca-${i}.crt` });
  });
  return mounts;
}

/** The in-cluster S3 endpoint: the operator's `minio` Service (443 → 9000 with TLS). */
export function s3Endpoint(namespace: string): string {
  return `https://minio.${namespace}.svc.cluster.local`;
}

/** The in-cluster console endpoint: the operator's `<tenant>-console` Service (9443 with TLS). */
export function consoleEndpoint(namespace: string, tenantName: string): string {
  return `https://${tenantName}-console.${namespace}.svc.cluster.local:${CONSOLE_PORT}`;
}
