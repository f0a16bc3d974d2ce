// The MinIO Tenant (minio.min.io/v2) wired to kesd: root credentials, config.env, the mTLS client cert and the kesd
// CA as Secrets, and the Tenant itself, created only once kesd is ready (MinIO exits at start without its KMS).
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import * as random from '@pulumi/random';
import { labels, type KesdEndpoints, type TlsIdentity } from './contracts';
import { configEnv, consoleEndpoint, s3Endpoint, tenantSpec } from './tenant-config';

export interface MinioTenantArgs {
  namespace: pulumi.Input<string>;
  /** The Tenant name (also the prefix of the operator's objects: `<name>-pool-0`, `<name>-console`, …). */
  name: string;
  servers: number;
  volumesPerServer: number;
  /** PVC size per volume, e.g. 2Gi. */
  volumeSize: string;
  /** Kubernetes StorageClass of the PVCs; omitted → the cluster default. */
  storageClass?: string;
  /** MINIO_STORAGE_CLASS_STANDARD (erasure parity), e.g. EC:2; omitted → MinIO's default for the drive count. */
  standardStorageClass?: string;
  kesd: KesdEndpoints;
  /** PEM of the CA that signed kesd's server certificate. */
  kesdCaCertPem: pulumi.Input<string>;
  /** The identity MinIO presents to kesd (kesd's policy must allow `minioClient.identity`). */
  minioClient: TlsIdentity;
  /** MINIO_KMS_KES_KEY_NAME: MinIO creates it at first start if kesd lacks it. */
  defaultKey: string;
  provider: k8s.Provider;
  /** What must be ready before the Tenant exists: the kesd StatefulSet (and the operator, if not implied). */
  dependsOn: pulumi.Input<pulumi.Resource>[];
}

export const ROOT_USER = 'minio-admin';

export class MinioTenant extends pulumi.ComponentResource {
  public readonly s3Endpoint: pulumi.Output<string>;
  public readonly consoleEndpoint: pulumi.Output<string>;
  public readonly rootUser: pulumi.Output<string>;
  public readonly rootPassword: pulumi.Output<string>;
  public readonly tenantName: pulumi.Output<string>;

  constructor(name: string, args: MinioTenantArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:MinioTenant', name, {}, opts);
    const k8sOpts = { parent: this, provider: args.provider };
    const metadata = (objectName: string) => ({
      name: objectName,
      namespace: args.namespace,
      labels: labels('minio', 'tenant'),
    });

    // Alphanumeric: config.env has no escaping, and mc/URLs take it unquoted.
    const password = new random.RandomPassword(
      `${name}-root-password`,
      { length: 32, special: false, minUpper: 2, minLower: 2, minNumeric: 2 },
      { parent: this },
    );
    this.rootUser = pulumi.output(ROOT_USER);
    this.rootPassword = pulumi.secret(password.result);

    const configSecret = new k8s.core.v1.Secret(
      `${name}-config-env`,
      {
        metadata: metadata(`${args.name}-config-env`),
        type: 'Opaque',
        stringData: {
          'config.env': pulumi.secret(
            this.rootPassword.apply((rootPassword) =>
              configEnv({ rootUser: ROOT_USER, rootPassword, storageClass: args.standardStorageClass }),
            ),
          ),
        },
      },
      k8sOpts,
    );

    const clientSecret = new k8s.core.v1.Secret(
      `${name}-kesd-client`,
      {
        metadata: metadata(`${args.name}-kesd-client`),
        type: 'kubernetes.io/tls',
        stringData: { 'tls.crt': args.minioClient.certPem, 'tls.key': pulumi.secret(args.minioClient.keyPem) },
      },
      k8sOpts,
    );

    // Opaque: a kubernetes.io/tls Secret must hold a key too; the Tenant still references it as kubernetes.io/tls so
    // the operator mounts its tls.crt as /tmp/certs/CAs/ca-0.crt.
    const caSecret = new k8s.core.v1.Secret(
      `${name}-kesd-ca`,
      {
        metadata: metadata(`${args.name}-kesd-ca`),
        type: 'Opaque',
        stringData: { 'tls.crt': args.kesdCaCertPem },
      },
      k8sOpts,
    );

    // Secret names come from the Secrets' outputs, so the Tenant also waits for them.
    const spec = pulumi
      .all([args.kesd.minioEndpoint, configSecret.metadata.name, clientSecret.metadata.name, caSecret.metadata.name])
      .apply(([kmsEndpoint, configName, clientName, caName]) =>
        tenantSpec({
          servers: args.servers,
          volumesPerServer: args.volumesPerServer,
          volumeSize: args.volumeSize,
          storageClass: args.storageClass,
          configSecret: configName,
          clientCertSecret: clientName,
          caSecret: caName,
          kmsEndpoint,
          defaultKey: args.defaultKey,
        }),
      );

    const tenant = new k8s.apiextensions.CustomResource(
      `${name}-tenant`,
      {
        apiVersion: 'minio.min.io/v2',
        kind: 'Tenant',
        metadata: metadata(args.name),
        spec,
      },
      { ...k8sOpts, dependsOn: args.dependsOn },
    );

    this.tenantName = tenant.metadata.name;
    this.s3Endpoint = pulumi.output(args.namespace).apply(s3Endpoint);
    this.consoleEndpoint = pulumi
      .all([args.namespace, this.tenantName])
      .apply(([ns, tenantName]) => consoleEndpoint(ns, tenantName));

    this.registerOutputs({
      s3Endpoint: this.s3Endpoint,
      consoleEndpoint: this.consoleEndpoint,
      rootUser: this.rootUser,
      rootPassword: this.rootPassword,
      tenantName: this.tenantName,
    });
  }
}
