// What the components hand each other. Each component file exports its class; these shapes are the seams.
import type * as pulumi from '@pulumi/pulumi';

/** A TLS identity: a certificate, its private key (secret), and its KES identity (hex SHA-256 of the SPKI). */
export interface TlsIdentity {
  readonly certPem: pulumi.Output<string>;
  readonly keyPem: pulumi.Output<string>;
  readonly identity: pulumi.Output<string>;
}

/** Where the kesd unseal key lives in the cluster; the value itself never leaves the Secret (kesd reads it as a file). */
export interface UnsealKeyRef {
  readonly secretName: pulumi.Output<string>;
  readonly secretKey: string;
  /** During a rotation (generation > 0): the previous generation's Secret, mounted as init.yml's unseal.previous. */
  readonly previousSecretName?: pulumi.Output<string>;
}

/** How kesd is reached from MinIO. */
export interface KesdEndpoints {
  /** The client Service URL, e.g. https://kesd.kesd.svc.cluster.local:7373. */
  readonly serviceUrl: pulumi.Output<string>;
  /** MINIO_KMS_KES_ENDPOINT: every pod, in MinIO's ellipsis syntax when replicas > 1. */
  readonly minioEndpoint: pulumi.Output<string>;
}

/** A shared store for kesd (what EtcdCluster provides): with it, every kesd replica serves the same keys. */
export interface EtcdStoreRef {
  /** Every member's client URL, e.g. https://etcd-0.etcd-hl.kesd.svc.cluster.local:2379. */
  readonly endpoints: pulumi.Output<string[]>;
  /** A kubernetes.io/tls Secret in kesd's namespace: kesd's client certificate, its key, and the etcd CA (ca.crt). */
  readonly clientTlsSecretName: pulumi.Output<string>;
  /** The client certificate, for a checksum annotation: a new one restarts kesd. */
  readonly clientCertPem: pulumi.Output<string>;
  /** kesd starts only once this is ready (Pulumi awaits a StatefulSet's rollout). */
  readonly statefulSet: pulumi.Resource;
}

export const KESD_PORT = 7373;
export const UNSEAL_SECRET_KEY = 'unseal-key';

/** Labels every object of a component carries (selector-safe, deterministic). */
export function labels(app: string, component: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': app,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/part-of': 'stateful-kes',
    'app.kubernetes.io/managed-by': 'pulumi',
  };
}
