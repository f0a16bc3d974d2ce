// kesd in the cluster: its image, TLS Secret, init.yml, Services, StatefulSet, PDB and NetworkPolicy. One replica keeps
// its keys on a PVC (the embedded store); several share an etcd cluster and keep nothing on disk.
import * as path from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import * as command from '@pulumi/command';
import * as dockerbuild from '@pulumi/docker-build';
import {
  KESD_PORT,
  labels,
  type EtcdStoreRef,
  type KesdEndpoints,
  type TlsIdentity,
  type UnsealKeyRef,
} from './contracts';
import {
  DEFAULT_CLUSTER_DOMAIN,
  KESD_CONTAINER_SECURITY_CONTEXT,
  KESD_ETCD_PREFIX,
  KESD_NAMES,
  KESD_PATHS,
  KESD_POD_SECURITY_CONTEXT,
  kesdImageTag,
  kesdInitYaml,
  kesdMinioEndpoint,
  kesdProbes,
  kesdPublishNotReadyAddresses,
  kesdResources,
  kesdServerArgs,
  kesdServiceUrl,
  kesdSourceHash,
  kesdWorkers,
  sha256Hex,
} from './kesd-config';
import { dataClaimTemplate, ingressOnlyPolicy, onePodDownBudget, podsLabelled, tcpIngressRule } from './k8s-shapes';
import { UPSTREAM_PATHS, UPSTREAM_TOKEN_SECONDS, type UpstreamStackConfig } from './upstream-config';

/**
 * Where kesd keeps its keys: one replica on the embedded store (its PVC), or any number of replicas sharing an etcd
 * cluster. There is no several-replicas-on-PVCs shape: each replica would hold its own root key and keys, and MinIO
 * would get data keys from one replica that the others cannot decrypt.
 */
export type KesdStore =
  | { readonly kind: 'pvc'; readonly storageSize: string; readonly storageClass?: string }
  | { readonly kind: 'etcd'; readonly etcd: EtcdStoreRef; readonly replicas: number };

/** Build the image from this repo (and `kind load` it when a cluster name is given), or use an existing image. */
export type KesdImage = { build: { kindClusterName?: pulumi.Input<string> } } | { ref: string };

export interface KesdArgs {
  /** The namespace (created by the caller). */
  namespace: pulumi.Input<string>;
  store: KesdStore;
  /** The container's CPU limit; defaults to DEFAULT_KESD_CPU. */
  cpu?: string;
  /** kesd processes per pod; defaults to kesdWorkers() of the CPU limit. */
  workers?: number;
  image: KesdImage;
  identities: {
    server: TlsIdentity;
    caCertPem: pulumi.Output<string>;
    sysadmin: TlsIdentity;
    enclaveAdmin: TlsIdentity;
    minio: TlsIdentity;
  };
  unsealKey: UnsealKeyRef;
  /** An identity that may take backups (GET /v1/sys/backup) besides the system admin: the backup CronJob's. */
  backupIdentity?: pulumi.Output<string>;
  /** Keys kesd creates if missing in the `default` enclave, MinIO's default key among them. */
  keys: string[];
  /**
   * A Vault mirroring the `default` enclave's keys: kesd logs in with the Kubernetes auth method as its own
   * ServiceAccount (created here, named KESD_NAMES.serviceAccount), through a projected token for Vault's audience.
   */
  upstream?: UpstreamStackConfig;
  /** MinIO's namespace: its pods may reach kesd. */
  tenantNamespace: pulumi.Input<string>;
  provider: k8s.Provider;
  clusterDomain?: string;
}

/** Labels that let a pod in kesd's namespace (an admin Job, a debug pod) through the NetworkPolicy. */
export const KESD_ADMIN_LABELS: Record<string, string> = { 'stateful-kes.io/kesd-client': 'admin' };

/** The build context: the repository root (components/ is one level down). */
export const REPO_ROOT = path.resolve(__dirname, '..');

/** The CPU limit of a kesd container unless the stack sets one. */
export const DEFAULT_KESD_CPU = '1';

const APP = 'kesd';
const COMPONENT = 'key-server';
/** Selects kesd's pods (for the etcd NetworkPolicy, among others). */
export const KESD_SELECTOR = { 'app.kubernetes.io/name': APP, 'app.kubernetes.io/component': COMPONENT };
const SELECTOR = KESD_SELECTOR;
const PORT_NAME = 'https';

export class Kesd extends pulumi.ComponentResource implements KesdEndpoints {
  readonly serviceUrl: pulumi.Output<string>;
  readonly minioEndpoint: pulumi.Output<string>;
  /** Pulumi awaits its readiness: make the Tenant depend on it, so MinIO starts with kesd answering. */
  readonly statefulSet: k8s.apps.v1.StatefulSet;
  readonly serviceName: pulumi.Output<string>;
  readonly headlessServiceName: pulumi.Output<string>;
  readonly imageRef: pulumi.Output<string>;

  constructor(name: string, args: KesdArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:Kesd', name, {}, opts);
    const { store } = args;
    const replicas = store.kind === 'etcd' ? store.replicas : 1;
    if (!Number.isInteger(replicas) || replicas < 1)
      throw new Error(`Kesd: replicas must be a positive integer, got ${replicas}`);
    const etcd = store.kind === 'etcd' ? store.etcd : undefined;
    const cpu = args.cpu ?? DEFAULT_KESD_CPU;
    const workers = kesdWorkers({ limit: cpu }, args.workers);

    const k8sOpts = { parent: this, provider: args.provider };
    const meta = (objectName: string) => ({
      name: objectName,
      namespace: args.namespace,
      labels: labels(APP, COMPONENT),
    });
    const clusterDomain = args.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
    const { server, caCertPem, sysadmin, enclaveAdmin, minio } = args.identities;

    const image = this.image(name, args.image);
    this.imageRef = image.ref;

    const tlsSecret = new k8s.core.v1.Secret(
      `${name}-tls`,
      {
        metadata: meta(KESD_NAMES.tlsSecret),
        type: 'kubernetes.io/tls',
        stringData: { 'tls.crt': server.certPem, 'tls.key': pulumi.secret(server.keyPem), 'ca.crt': caCertPem },
      },
      k8sOpts,
    );

    // tls.ca stays unset: with it the server names the CA in its CertificateRequest, and Go clients (MinIO, kes) then
    // send no certificate unless theirs is issued by that CA. KES authorises by identity, so it would add nothing.
    const previousUnseal = args.unsealKey.previousSecretName;
    const initYaml = pulumi
      .all([sysadmin.identity, enclaveAdmin.identity, minio.identity, etcd?.endpoints, args.backupIdentity])
      .apply(([sysadminId, adminId, minioId, etcdEndpoints, backupId]) =>
        kesdInitYaml({
          sysadmin: sysadminId,
          enclave: { name: 'default', admin: adminId },
          minioIdentity: minioId,
          keys: args.keys,
          tlsDir: KESD_PATHS.tlsDir,
          unsealFile: KESD_PATHS.unsealFile,
          // During a rotation kesd re-seals its root key under the new key at start (the rollout).
          ...(previousUnseal !== undefined ? { unsealPreviousFile: KESD_PATHS.unsealPreviousFile } : {}),
          ...(backupId !== undefined ? { backupIdentities: [backupId] } : {}),
          etcd:
            etcdEndpoints === undefined
              ? undefined
              : { endpoints: etcdEndpoints, prefix: KESD_ETCD_PREFIX, tlsDir: KESD_PATHS.etcdTlsDir },
          upstream: args.upstream,
        }),
      );
    const upstream = args.upstream === undefined ? undefined : this.upstreamObjects(name, args.upstream, meta, k8sOpts);
    const initConfig = new k8s.core.v1.ConfigMap(
      `${name}-init`,
      { metadata: meta(KESD_NAMES.initConfigMap), data: { 'init.yml': initYaml } },
      k8sOpts,
    );

    const port = { name: PORT_NAME, port: KESD_PORT, targetPort: PORT_NAME, protocol: 'TCP' };
    const headless = new k8s.core.v1.Service(
      `${name}-hl`,
      // With several replicas MinIO dials the pod names here, and they must resolve while etcd is down (kesdPublishNotReadyAddresses).
      {
        metadata: meta(KESD_NAMES.headlessService),
        spec: {
          clusterIP: 'None',
          publishNotReadyAddresses: kesdPublishNotReadyAddresses(replicas),
          selector: SELECTOR,
          ports: [port],
        },
      },
      k8sOpts,
    );
    // Routes to Ready pods only: admin tools (and MinIO with one replica) reach a kesd that reaches its keys.
    const service = new k8s.core.v1.Service(
      `${name}-svc`,
      { metadata: meta(KESD_NAMES.service), spec: { type: 'ClusterIP', selector: SELECTOR, ports: [port] } },
      k8sOpts,
    );

    const container: k8s.types.input.core.v1.Container = {
      name: APP,
      image: image.ref,
      imagePullPolicy: 'IfNotPresent',
      args: kesdServerArgs(workers, KESD_PORT),
      // No env: the unseal key is a mounted file (an env var would sit in every kesd process's environment, and in
      // the container runtime's spec on the node).
      ports: [{ name: PORT_NAME, containerPort: KESD_PORT, protocol: 'TCP' }],
      // Readiness on /v1/ready (served without a client certificate: init.yml api skip_auth), liveness on the port.
      ...kesdProbes(PORT_NAME),
      resources: kesdResources(cpu, workers),
      securityContext: KESD_CONTAINER_SECURITY_CONTEXT,
      volumeMounts: [
        { name: 'data', mountPath: KESD_PATHS.stateDir },
        { name: 'tls', mountPath: KESD_PATHS.tlsDir, readOnly: true },
        { name: 'unseal', mountPath: KESD_PATHS.unsealDir, readOnly: true },
        ...(previousUnseal !== undefined
          ? [{ name: 'unseal-previous', mountPath: KESD_PATHS.unsealPreviousDir, readOnly: true }]
          : []),
        ...(etcd ? [{ name: 'etcd-tls', mountPath: KESD_PATHS.etcdTlsDir, readOnly: true }] : []),
        ...(upstream?.mounts ?? []),
        // subPath: the file does not follow ConfigMap edits, but checksum/init rolls the pods on every change.
        { name: 'init', mountPath: KESD_PATHS.initFile, subPath: 'init.yml', readOnly: true },
        { name: 'tmp', mountPath: KESD_PATHS.tmpDir },
      ],
    };

    // With etcd the data dir holds only the .init file (the root key is in etcd): an emptyDir, rebuilt from init.yml.
    const dataVolumes = etcd ? [{ name: 'data', emptyDir: { sizeLimit: '16Mi' } }] : [];
    const claims =
      store.kind === 'etcd'
        ? {}
        : {
            // The PVC holds the sealed keys: never delete it with the StatefulSet or on scale-down.
            persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
            volumeClaimTemplates: [dataClaimTemplate(labels(APP, COMPONENT), store.storageSize, store.storageClass)],
          };

    this.statefulSet = new k8s.apps.v1.StatefulSet(
      `${name}-sts`,
      {
        metadata: meta(KESD_NAMES.statefulSet),
        spec: {
          serviceName: headless.metadata.name,
          replicas,
          podManagementPolicy: 'Parallel',
          updateStrategy: { type: 'RollingUpdate' },
          ...claims,
          selector: { matchLabels: SELECTOR },
          template: {
            metadata: {
              labels: labels(APP, COMPONENT),
              // Non-secret inputs only: a new init.yml or server certificate restarts kesd, which reads both at start.
              annotations: {
                'checksum/init': initYaml.apply(sha256Hex),
                'checksum/tls': server.certPem.apply(sha256Hex),
                ...(etcd ? { 'checksum/etcd-tls': etcd.clientCertPem.apply(sha256Hex) } : {}),
              },
            },
            spec: {
              // No API token in the pod: with an upstream, only a token for Vault's audience (upstreamObjects).
              automountServiceAccountToken: false,
              ...(upstream ? { serviceAccountName: upstream.serviceAccountName } : {}),
              enableServiceLinks: false,
              securityContext: KESD_POD_SECURITY_CONTEXT,
              // Replicas on different nodes where there are several: one node going down leaves MinIO the others.
              ...(replicas > 1
                ? {
                    topologySpreadConstraints: [
                      {
                        maxSkew: 1,
                        topologyKey: 'kubernetes.io/hostname',
                        whenUnsatisfiable: 'ScheduleAnyway',
                        labelSelector: { matchLabels: SELECTOR },
                      },
                    ],
                  }
                : {}),
              containers: [container],
              volumes: [
                ...dataVolumes,
                { name: 'tls', secret: { secretName: tlsSecret.metadata.name, defaultMode: 0o440 } },
                // Only the key, as the file kesd reads. 0440, owned by root, group fsGroup: uid 1000 reads it through its
                // group, no other user can, and kesd refuses a key file that others may read. (With an fsGroup the kubelet
                // adds group read to any defaultMode, so 0400 would end up 0440 as well.)
                {
                  name: 'unseal',
                  secret: {
                    secretName: args.unsealKey.secretName,
                    items: [{ key: args.unsealKey.secretKey, path: path.posix.basename(KESD_PATHS.unsealFile) }],
                    defaultMode: 0o440,
                  },
                },
                ...(previousUnseal !== undefined
                  ? [
                      {
                        name: 'unseal-previous',
                        secret: {
                          secretName: previousUnseal,
                          items: [
                            { key: args.unsealKey.secretKey, path: path.posix.basename(KESD_PATHS.unsealPreviousFile) },
                          ],
                          defaultMode: 0o440,
                        },
                      },
                    ]
                  : []),
                ...(etcd
                  ? [{ name: 'etcd-tls', secret: { secretName: etcd.clientTlsSecretName, defaultMode: 0o440 } }]
                  : []),
                ...(upstream?.volumes ?? []),
                {
                  name: 'init',
                  configMap: { name: initConfig.metadata.name, items: [{ key: 'init.yml', path: 'init.yml' }] },
                },
                { name: 'tmp', emptyDir: { sizeLimit: '16Mi' } },
              ],
            },
          },
        },
      },
      // With etcd, kesd starts once the cluster has a quorum: it initialises the store there at its first start.
      { ...k8sOpts, dependsOn: [...image.loaded, ...(etcd ? [etcd.statefulSet] : [])] },
    );

    // One pod down at a time: with N replicas MinIO keeps N-1 to fail over to; a lone replica cannot be protected
    // without blocking node drains.
    new k8s.policy.v1.PodDisruptionBudget(
      `${name}-pdb`,
      { metadata: meta(KESD_NAMES.statefulSet), spec: onePodDownBudget(SELECTOR) },
      k8sOpts,
    );

    new k8s.networking.v1.NetworkPolicy(
      `${name}-netpol`,
      {
        metadata: meta(KESD_NAMES.statefulSet),
        spec: ingressOnlyPolicy(SELECTOR, [
          tcpIngressRule(
            [
              { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': args.tenantNamespace } } },
              podsLabelled(KESD_ADMIN_LABELS),
            ],
            KESD_PORT,
          ),
        ]),
      },
      k8sOpts,
    );

    this.serviceName = service.metadata.name;
    this.headlessServiceName = headless.metadata.name;
    const names = {
      statefulSet: KESD_NAMES.statefulSet,
      service: KESD_NAMES.service,
      headlessService: KESD_NAMES.headlessService,
    };
    this.serviceUrl = pulumi
      .output(args.namespace)
      .apply((namespace) => kesdServiceUrl({ ...names, namespace, port: KESD_PORT, clusterDomain }));
    this.minioEndpoint = pulumi
      .output(args.namespace)
      .apply((namespace) => kesdMinioEndpoint({ ...names, namespace, replicas, port: KESD_PORT, clusterDomain }));

    this.registerOutputs({
      serviceUrl: this.serviceUrl,
      minioEndpoint: this.minioEndpoint,
      statefulSet: this.statefulSet,
      serviceName: this.serviceName,
      headlessServiceName: this.headlessServiceName,
      imageRef: this.imageRef,
    });
  }

  /**
   * kesd's ServiceAccount (Vault's Kubernetes auth method binds a role to it), the token kesd logs in with (projected
   * for Vault's audience, so it is useless against the Kubernetes API), and the CA of Vault's certificate.
   */
  private upstreamObjects(
    name: string,
    upstream: UpstreamStackConfig,
    meta: (objectName: string) => { name: string; namespace: pulumi.Input<string>; labels: Record<string, string> },
    k8sOpts: pulumi.CustomResourceOptions,
  ) {
    const account = new k8s.core.v1.ServiceAccount(
      `${name}-sa`,
      { metadata: meta(KESD_NAMES.serviceAccount), automountServiceAccountToken: false },
      k8sOpts,
    );
    const ca =
      upstream.vault.caCert === undefined
        ? undefined
        : new k8s.core.v1.ConfigMap(
            `${name}-vault-ca`,
            { metadata: meta(KESD_NAMES.vaultCaConfigMap), data: { 'ca.crt': upstream.vault.caCert } },
            k8sOpts,
          );
    const volumes: k8s.types.input.core.v1.Volume[] = [
      {
        name: 'vault-token',
        projected: {
          defaultMode: 0o440,
          sources: [
            {
              serviceAccountToken: {
                audience: upstream.vault.audience,
                expirationSeconds: UPSTREAM_TOKEN_SECONDS,
                path: 'token',
              },
            },
          ],
        },
      },
      ...(ca
        ? [{ name: 'vault-ca', configMap: { name: ca.metadata.name, items: [{ key: 'ca.crt', path: 'ca.crt' }] } }]
        : []),
    ];
    const mounts: k8s.types.input.core.v1.VolumeMount[] = [
      { name: 'vault-token', mountPath: UPSTREAM_PATHS.tokenDir, readOnly: true },
      ...(ca ? [{ name: 'vault-ca', mountPath: UPSTREAM_PATHS.caDir, readOnly: true }] : []),
    ];
    return { serviceAccountName: account.metadata.name, volumes, mounts };
  }

  /** The image reference, and what must exist before pods can start with it. */
  private image(name: string, image: KesdImage): { ref: pulumi.Output<string>; loaded: pulumi.Resource[] } {
    if ('ref' in image) return { ref: pulumi.output(image.ref), loaded: [] };

    // Content-addressed tag, known at preview: a kesd change shows as a new image in the StatefulSet diff.
    const tag = kesdImageTag(kesdSourceHash(REPO_ROOT));
    // Relative to the working dir (the project root under `pulumi up`), so state does not hold a machine's path.
    const context = path.relative(process.cwd(), REPO_ROOT) || '.';
    const built = new dockerbuild.Image(
      `${name}-image`,
      {
        context: { location: context },
        dockerfile: { location: path.posix.join(context.split(path.sep).join('/'), 'kesd/Dockerfile') },
        tags: [tag],
        push: false,
        buildOnPreview: false,
        exports: [{ docker: {} }],
      },
      { parent: this },
    );
    if (image.build.kindClusterName === undefined) return { ref: pulumi.output(tag), loaded: [built] };

    // kind nodes do not see the host's Docker images; load by tag (kind cannot run images referenced by digest).
    const load = new command.local.Command(
      `${name}-kind-load`,
      {
        create: pulumi.interpolate`kind load docker-image ${tag} --name ${image.build.kindClusterName}`,
        triggers: [built.digest],
      },
      { parent: this, dependsOn: [built] },
    );
    return { ref: pulumi.output(tag), loaded: [load] };
  }
}
