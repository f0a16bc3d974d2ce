// Optional: buckets with default SSE-KMS encryption, created by a one-shot `mc` Job against the tenant. The script is
// idempotent (a re-run changes nothing), so the Job can be replaced whenever the bucket list changes.
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import { labels } from './contracts';
import { isKesName, KES_NAME_RULE } from './kes-name';

/** The MinIO client released a week after the tenant's MinIO image (RELEASE.2025-04-08T15-41-24Z). */
export const MC_IMAGE = 'quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z';
/** The alias the script gives the tenant. */
export const MC_ALIAS = 'tenant';
/** mc's config dir (HOME too); its certs/CAs/ holds the cluster CA, which signed the tenant's auto-cert. */
export const MC_CONFIG_DIR = '/tmp/.mc';
/** The ConfigMap Kubernetes publishes in every namespace with the cluster CA (the service-account ca.crt). */
export const CLUSTER_CA_CONFIGMAP = 'kube-root-ca.crt';
/** Each step is retried this often, RETRY_DELAY_S apart: MinIO may still be starting when the Job runs. */
export const RETRY_ATTEMPTS = 30;
export const RETRY_DELAY_S = 10;

export interface BucketSpec {
  readonly name: string;
  /** The kesd key the bucket's objects are encrypted with (SSE-KMS default). It must exist in kesd. */
  readonly key: string;
}

export class BucketConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid buckets:\n  - ${problems.join('\n  - ')}`);
  }
}

/** Why a name is not a valid S3 bucket name (MinIO's strict rules plus AWS's reserved forms), or undefined. */
export function bucketNameProblem(name: string): string | undefined {
  if (name.length < 3 || name.length > 63) return 'must be 3-63 characters long';
  if (!/^[a-z0-9.-]+$/.test(name)) return 'may hold only lowercase letters, digits, dots and hyphens';
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) return 'must start and end with a letter or digit';
  if (/\.\.|\.-|-\./.test(name)) return "must not contain '..', '.-' or '-.'";
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(name)) return 'must not look like an IP address';
  if (/^(xn--|sthree-|amzn-s3-demo-)/.test(name)) return "must not start with 'xn--', 'sthree-' or 'amzn-s3-demo-'";
  if (/(-s3alias|--ol-s3|--x-s3|\.mrap)$/.test(name))
    return "must not end with '-s3alias', '--ol-s3', '--x-s3' or '.mrap'";
  return undefined;
}

/** Validates the bucket list, reporting every problem at once. */
export function validateBuckets(buckets: readonly BucketSpec[]): void {
  const problems: string[] = [];
  const seen = new Set<string>();
  buckets.forEach((b, i) => {
    const why = bucketNameProblem(b.name);
    if (why) problems.push(`buckets[${i}].name: '${b.name}' is not an S3 bucket name: it ${why}`);
    if (!isKesName(b.key)) problems.push(`buckets[${i}].key: '${b.key}' is not a KES key name (${KES_NAME_RULE})`);
    if (seen.has(b.name)) problems.push(`buckets[${i}].name: bucket '${b.name}' is listed twice`);
    seen.add(b.name);
  });
  if (problems.length > 0) throw new BucketConfigError(problems);
}

/** The keys kesd must hold for these buckets (deduplicated, in order): declare them in kesd's init config. */
export function bucketKeys(buckets: readonly BucketSpec[]): string[] {
  return [...new Set(buckets.map((b) => b.key))];
}

/**
 * The POSIX sh script the Job runs. It reads S3_ENDPOINT, MINIO_ROOT_USER and MINIO_ROOT_PASSWORD from the env (never
 * from its text), and is idempotent: alias set overwrites, mb ignores existing buckets, encrypt set overwrites.
 */
export function bucketScript(buckets: readonly BucketSpec[]): string {
  validateBuckets(buckets);
  const target = (b: BucketSpec) => `'${MC_ALIAS}/${b.name}'`; // validated names: no quotes or shell characters
  return [
    'set -eu',
    `# MinIO may still be starting: retry each step (${RETRY_ATTEMPTS} x ${RETRY_DELAY_S}s). Logs name the step, never the credentials.`,
    'retry() {',
    '  attempt=1',
    '  until "$@"; do',
    `    if [ "$attempt" -ge ${RETRY_ATTEMPTS} ]; then echo "buckets: giving up on '$1 $2 $3' after $attempt attempts" >&2; return 1; fi`,
    `    attempt=$((attempt + 1)); sleep ${RETRY_DELAY_S}`,
    '  done',
    '}',
    `retry mc alias set ${MC_ALIAS} "$S3_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" --api S3v4`,
    ...buckets.flatMap((b) => [
      `retry mc mb --ignore-existing ${target(b)}`,
      `retry mc encrypt set sse-kms '${b.key}' ${target(b)}`,
      `retry mc encrypt info ${target(b)}`,
    ]),
    `echo "buckets: ${buckets.length} bucket(s) ready with SSE-KMS"`,
    '',
  ].join('\n');
}

export interface BucketsArgs {
  namespace: pulumi.Input<string>;
  /** The tenant to create the buckets in (a MinioTenant, or anything with the same outputs). */
  tenant: { s3Endpoint: pulumi.Input<string>; rootUser: pulumi.Input<string>; rootPassword: pulumi.Input<string> };
  buckets: BucketSpec[];
  provider: k8s.Provider;
  /** Typically the Tenant (or MinioTenant): the Job only starts once it exists. */
  dependsOn?: pulumi.Input<pulumi.Resource>[];
  image?: string;
}

export class Buckets extends pulumi.ComponentResource {
  public readonly bucketNames: pulumi.Output<string[]>;
  /** The kesd keys the buckets use (see bucketKeys). */
  public readonly keys: pulumi.Output<string[]>;
  public readonly jobName: pulumi.Output<string | undefined>;

  constructor(name: string, args: BucketsArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:Buckets', name, {}, opts);
    this.bucketNames = pulumi.output(args.buckets.map((b) => b.name));
    this.keys = pulumi.output(bucketKeys(args.buckets));

    if (args.buckets.length === 0) {
      this.jobName = pulumi.output(undefined);
      this.registerOutputs({ bucketNames: this.bucketNames, keys: this.keys, jobName: this.jobName });
      return;
    }
    const script = bucketScript(args.buckets);
    const k8sOpts = { parent: this, provider: args.provider };
    const objectLabels = labels('minio-buckets', 'buckets');

    const credentials = new k8s.core.v1.Secret(
      `${name}-credentials`,
      {
        metadata: { namespace: args.namespace, labels: objectLabels },
        type: 'Opaque',
        stringData: { 'root-user': args.tenant.rootUser, 'root-password': pulumi.secret(args.tenant.rootPassword) },
      },
      k8sOpts,
    );
    const fromSecret = (key: string) => ({ secretKeyRef: { name: credentials.metadata.name, key } });

    // Auto-named: the pod template is immutable, so a changed bucket list replaces the Job (create, then delete).
    // No ttlSecondsAfterFinished: the finished Job stays, so Pulumi can await and later refresh it.
    const job = new k8s.batch.v1.Job(
      `${name}-job`,
      {
        metadata: { namespace: args.namespace, labels: objectLabels },
        spec: {
          backoffLimit: 3,
          activeDeadlineSeconds: 2 * RETRY_ATTEMPTS * RETRY_DELAY_S,
          template: {
            metadata: { labels: objectLabels },
            spec: {
              restartPolicy: 'Never',
              automountServiceAccountToken: false,
              securityContext: {
                runAsNonRoot: true,
                runAsUser: 1000,
                runAsGroup: 1000,
                seccompProfile: { type: 'RuntimeDefault' },
              },
              containers: [
                {
                  name: 'mc',
                  image: args.image ?? MC_IMAGE,
                  imagePullPolicy: 'IfNotPresent',
                  command: ['/bin/sh', '-c', script],
                  env: [
                    { name: 'S3_ENDPOINT', value: args.tenant.s3Endpoint },
                    { name: 'MINIO_ROOT_USER', valueFrom: fromSecret('root-user') },
                    { name: 'MINIO_ROOT_PASSWORD', valueFrom: fromSecret('root-password') },
                    { name: 'HOME', value: '/tmp' },
                    { name: 'MC_CONFIG_DIR', value: MC_CONFIG_DIR },
                  ],
                  securityContext: {
                    allowPrivilegeEscalation: false,
                    readOnlyRootFilesystem: true,
                    capabilities: { drop: ['ALL'] },
                  },
                  resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
                  // The config dir is its own emptyDir (mode 0777): the runtime creates the CA mount point's parents
                  // root-owned, and mc (uid 1000) must still write config.json beside them.
                  volumeMounts: [
                    { name: 'tmp', mountPath: '/tmp' },
                    { name: 'mc-config', mountPath: MC_CONFIG_DIR },
                    { name: 'cluster-ca', mountPath: `${MC_CONFIG_DIR}/certs/CAs`, readOnly: true },
                  ],
                },
              ],
              volumes: [
                { name: 'tmp', emptyDir: { sizeLimit: '16Mi' } },
                { name: 'mc-config', emptyDir: { sizeLimit: '16Mi' } },
                {
                  name: 'cluster-ca',
                  configMap: { name: CLUSTER_CA_CONFIGMAP, items: [{ key: 'ca.crt', path: 'cluster-ca.crt' }] },
                },
              ],
            },
          },
        },
      },
      { ...k8sOpts, dependsOn: args.dependsOn, customTimeouts: { create: '15m', update: '15m' } },
    );

    this.jobName = job.metadata.name;
    this.registerOutputs({ bucketNames: this.bucketNames, keys: this.keys, jobName: this.jobName });
  }
}
