// The Pulumi program: reads and validates config, composes the components, exports what other stacks consume.
import * as pulumi from '@pulumi/pulumi';
import { Buckets } from './components/buckets';
import { EtcdCluster } from './components/etcd-cluster';
import { KesIdentities } from './components/kes-identities';
import { Kesd, KESD_SELECTOR, type KesdStore } from './components/kesd';
import { KesdBackup } from './components/kesd-backup';
import { KESD_NAMES } from './components/kesd-config';
import { existingClusterProvider, KindCluster } from './components/kind-cluster';
import { MinioOperator } from './components/minio-operator';
import { MinioTenant } from './components/minio-tenant';
import { Namespaces } from './components/namespaces';
import { declaredKeys, parseStackConfig, STACK_CONFIG_KEYS } from './components/stack-config';
import { UnsealKey } from './components/unseal-key';

const raw = new pulumi.Config('stateful-kes');
const config = parseStackConfig(Object.fromEntries(STACK_CONFIG_KEYS.map((k) => [k, raw.getObject(k)])));

const kind =
  config.cluster.mode === 'kind'
    ? new KindCluster('kind', {
        name: config.cluster.name,
        workers: config.cluster.workers,
        nodeImage: config.cluster.nodeImage,
      })
    : undefined;
const provider =
  kind?.provider ?? existingClusterProvider('cluster', config.cluster.mode === 'existing' ? config.cluster : {});

// operator.install false: a second stack on a cluster whose operator (and its cluster-scoped CRDs and RBAC) another
// stack or an administrator installed.
const operator = config.operator.install
  ? new MinioOperator('minio-operator', {
      namespace: config.namespaces.operator,
      replicas: config.operator.replicas,
      chart: config.operator.chart,
      provider,
    })
  : undefined;
const namespaces = new Namespaces('namespaces', {
  names: { kesd: config.namespaces.kesd, tenant: config.namespaces.tenant },
  provider,
});

const identities = new KesIdentities('kes-identities', {
  namespace: config.namespaces.kesd,
  serviceName: KESD_NAMES.service,
  headlessServiceName: KESD_NAMES.headlessService,
  statefulSetName: KESD_NAMES.statefulSet,
  replicas: config.kesd.replicas,
  backupClient: config.kesd.backup !== undefined,
});
// kesd.unsealKeyGeneration + 1 rotates the unseal key: kesd re-seals under the new one when the rollout restarts it.
const unsealKey = new UnsealKey('kesd-unseal-key', {
  namespace: namespaces.names.kesd!,
  provider,
  generation: config.kesd.unsealKeyGeneration,
});

// The store parseStackConfig decided on. An etcd cluster lives in kesd's namespace (kesd mounts its client Secret).
const store = config.kesd.store;
const kesdStore: KesdStore =
  store.kind === 'pvc'
    ? store
    : {
        kind: 'etcd',
        etcd: new EtcdCluster('etcd', {
          namespace: namespaces.names.kesd!,
          storageSize: store.storageSize,
          storageClass: store.storageClass,
          clientSelector: KESD_SELECTOR,
          provider,
        }),
        replicas: config.kesd.replicas,
      };

const kesd = new Kesd('kesd', {
  namespace: namespaces.names.kesd!,
  store: kesdStore,
  cpu: config.kesd.cpu,
  workers: config.kesd.workers,
  image: config.kesd.image ? { ref: config.kesd.image } : { build: { kindClusterName: kind?.name } },
  identities: {
    server: identities.server,
    caCertPem: identities.caCertPem,
    sysadmin: identities.sysadmin,
    enclaveAdmin: identities.enclaveAdmin,
    minio: identities.minio,
  },
  unsealKey,
  backupIdentity: identities.backup?.identity,
  keys: declaredKeys(config),
  upstream: config.upstream,
  tenantNamespace: namespaces.names.tenant!,
  provider,
});

// Optional (kesd.backup): sealed backups of the embedded store on a schedule, into a PVC of their own.
if (config.kesd.backup !== undefined && identities.backup !== undefined) {
  new KesdBackup(
    'kesd-backup',
    {
      ...config.kesd.backup,
      namespace: namespaces.names.kesd!,
      image: kesd.imageRef,
      serviceUrl: kesd.serviceUrl,
      caCertPem: identities.caCertPem,
      client: identities.backup,
      provider,
    },
    { dependsOn: [kesd.statefulSet] },
  );
}

const tenant = new MinioTenant('minio-tenant', {
  namespace: namespaces.names.tenant!,
  name: config.tenant.name,
  servers: config.tenant.servers,
  volumesPerServer: config.tenant.volumesPerServer,
  volumeSize: config.tenant.volumeSize,
  storageClass: config.tenant.storageClass,
  kesd,
  kesdCaCertPem: identities.caCertPem,
  minioClient: identities.minio,
  defaultKey: config.kesd.defaultKey,
  provider,
  dependsOn: operator ? [kesd.statefulSet, operator.chart] : [kesd.statefulSet],
});

if (config.buckets.length > 0) {
  new Buckets('buckets', {
    namespace: namespaces.names.tenant!,
    tenant,
    buckets: [...config.buckets],
    provider,
    dependsOn: [tenant],
  });
}

// Stack outputs (documented in the README for StackReference consumers).
export const kesdEndpoint = kesd.serviceUrl;
export const kesdMinioEndpoint = kesd.minioEndpoint;
export const kesdCaCert = identities.caCertPem;
export const kesdNamespace = namespaces.names.kesd;
// Every output exists in every shape, so a StackReference consumer reads a value, never a missing key: an empty
// list without etcd, null for a kubeconfig the stack does not own (cluster.mode existing).
/** etcd's client URLs when kesd runs on etcd (kesd.replicas > 1), else []. */
export const etcdEndpoints = kesdStore.kind === 'etcd' ? kesdStore.etcd.endpoints : [];
export const tenantNamespace = namespaces.names.tenant;
export const s3Endpoint = tenant.s3Endpoint;
export const consoleEndpoint = tenant.consoleEndpoint;
export const identitiesHex = {
  sysadmin: identities.sysadmin.identity,
  enclaveAdmin: identities.enclaveAdmin.identity,
  minio: identities.minio.identity,
};
export const enclaveAdminCert = identities.enclaveAdmin.certPem;
export const enclaveAdminKey = identities.enclaveAdmin.keyPem;
export const defaultKey = config.kesd.defaultKey;
/** With an upstream: the ServiceAccount to bind Vault's Kubernetes auth role to ({namespace, name}); else null. */
export const kesdServiceAccount = config.upstream
  ? { namespace: namespaces.names.kesd, name: KESD_NAMES.serviceAccount }
  : null;
/** The kind cluster's admin kubeconfig (secret); null with cluster.mode existing. */
export const kubeconfig = kind ? kind.kubeconfig : null;
export const rootUser = tenant.rootUser;
export const rootPassword = tenant.rootPassword;
