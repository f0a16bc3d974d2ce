// kesd's shared store: an etcd cluster with its own CA, peer and client-port TLS, a client certificate for kesd, a
// StatefulSet with one PVC per member, a PDB that keeps quorum, and a NetworkPolicy admitting peers and kesd only.
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import { labels, type EtcdStoreRef } from './contracts';
import {
  ETCD_BINARY,
  ETCD_CLIENT_CN,
  ETCD_CLIENT_PORT,
  ETCD_CONTAINER_SECURITY_CONTEXT,
  ETCD_IMAGE,
  ETCD_MEMBERS,
  ETCD_METRICS_PORT,
  ETCD_NAMES,
  ETCD_PATHS,
  ETCD_PEER_CN,
  ETCD_PEER_PORT,
  ETCD_POD_NAME_ENV,
  ETCD_POD_SECURITY_CONTEXT,
  ETCD_SERVER_CN,
  ETCD_SERVER_IPS,
  checkEtcdMembers,
  etcdArgs,
  etcdClientEndpoints,
  etcdPeerDnsNames,
  etcdQuotaBytes,
  etcdServerDnsNames,
  type EtcdTopology,
} from './etcd-config';
import { dataClaimTemplate, ingressOnlyPolicy, onePodDownBudget, podsLabelled, tcpIngressRule } from './k8s-shapes';
import { selfSignedCa, type IssuedCert } from './pki';

export interface EtcdClusterArgs {
  /** The namespace (created by the caller); kesd's, since kesd mounts the client Secret. */
  namespace: pulumi.Input<string>;
  /** Defaults to ETCD_MEMBERS (3). */
  members?: number;
  storageSize: string;
  storageClass?: string;
  /** Labels of the pods (in the same namespace) that may reach the client port: kesd's. */
  clientSelector: Record<string, string>;
  provider: k8s.Provider;
  clusterDomain?: string;
  /** Defaults to ETCD_IMAGE. */
  image?: string;
}

export const ETCD_PEER_ALLOWED_USES = ['digital_signature', 'key_encipherment', 'server_auth', 'client_auth'];
// client_auth too: etcd's HTTP gateway dials its own client port with this certificate (refused without it).
export const ETCD_SERVER_ALLOWED_USES = ['digital_signature', 'key_encipherment', 'server_auth', 'client_auth'];
export const ETCD_CLIENT_ALLOWED_USES = ['digital_signature', 'client_auth'];

const APP = 'etcd';
const COMPONENT = 'kesd-store';
export const ETCD_SELECTOR = { 'app.kubernetes.io/name': APP, 'app.kubernetes.io/component': COMPONENT };

export class EtcdCluster extends pulumi.ComponentResource implements EtcdStoreRef {
  readonly endpoints: pulumi.Output<string[]>;
  readonly clientTlsSecretName: pulumi.Output<string>;
  readonly clientCertPem: pulumi.Output<string>;
  readonly caCertPem: pulumi.Output<string>;
  /** Pulumi awaits its rollout, i.e. a quorum: make kesd depend on it. */
  readonly statefulSet: k8s.apps.v1.StatefulSet;
  readonly serviceName: pulumi.Output<string>;
  readonly headlessServiceName: pulumi.Output<string>;

  constructor(name: string, args: EtcdClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:EtcdCluster', name, {}, opts);
    const members = args.members ?? ETCD_MEMBERS;
    const quotaBytes = etcdQuotaBytes(args.storageSize);
    const topology = pulumi
      .output(args.namespace)
      .apply((namespace): EtcdTopology => ({ namespace, members, clusterDomain: args.clusterDomain }));
    checkEtcdMembers(members); // at construction, not later inside an apply

    const k8sOpts = { parent: this, provider: args.provider };
    const meta = (objectName: string) => ({
      name: objectName,
      namespace: args.namespace,
      labels: labels(APP, COMPONENT),
    });

    // A CA of its own: certificates for etcd are worth nothing against kesd, and kesd's against etcd's peer port.
    const ca = selfSignedCa(name, 'stateful-kes etcd CA', this);
    this.caCertPem = ca.certPem;
    const tlsSecret = (role: string, secretName: string, pair: IssuedCert) =>
      new k8s.core.v1.Secret(
        `${name}-${role}-tls`,
        {
          metadata: meta(secretName),
          type: 'kubernetes.io/tls',
          stringData: { 'tls.crt': pair.certPem, 'tls.key': pair.keyPem, 'ca.crt': ca.certPem },
        },
        k8sOpts,
      );

    const peer = ca.issue('peer', {
      commonName: ETCD_PEER_CN,
      allowedUses: ETCD_PEER_ALLOWED_USES,
      dnsNames: topology.apply(etcdPeerDnsNames),
    });
    const server = ca.issue('server', {
      commonName: ETCD_SERVER_CN,
      allowedUses: ETCD_SERVER_ALLOWED_USES,
      dnsNames: topology.apply(etcdServerDnsNames),
      ipAddresses: ETCD_SERVER_IPS,
    });
    const client = ca.issue('client', { commonName: ETCD_CLIENT_CN, allowedUses: ETCD_CLIENT_ALLOWED_USES });
    const peerSecret = tlsSecret('peer', ETCD_NAMES.peerTlsSecret, peer);
    const serverSecret = tlsSecret('server', ETCD_NAMES.serverTlsSecret, server);
    const clientSecret = tlsSecret('client', ETCD_NAMES.clientTlsSecret, client);

    const clientPort = { name: 'client', port: ETCD_CLIENT_PORT, targetPort: 'client', protocol: 'TCP' };
    const peerPort = { name: 'peer', port: ETCD_PEER_PORT, targetPort: 'peer', protocol: 'TCP' };
    const headless = new k8s.core.v1.Service(
      `${name}-hl`,
      // publishNotReadyAddresses: members must find each other before any of them is ready (no quorum yet).
      {
        metadata: meta(ETCD_NAMES.headlessService),
        spec: {
          clusterIP: 'None',
          publishNotReadyAddresses: true,
          selector: ETCD_SELECTOR,
          ports: [clientPort, peerPort],
        },
      },
      k8sOpts,
    );
    const service = new k8s.core.v1.Service(
      `${name}-svc`,
      { metadata: meta(ETCD_NAMES.service), spec: { type: 'ClusterIP', selector: ETCD_SELECTOR, ports: [clientPort] } },
      k8sOpts,
    );

    const metrics = 'metrics';
    const container: k8s.types.input.core.v1.Container = {
      name: APP,
      image: args.image ?? ETCD_IMAGE,
      imagePullPolicy: 'IfNotPresent',
      command: [ETCD_BINARY],
      args: topology.apply((t) => etcdArgs(t, { quotaBytes })),
      env: [{ name: ETCD_POD_NAME_ENV, valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
      ports: [
        { name: 'client', containerPort: ETCD_CLIENT_PORT, protocol: 'TCP' },
        { name: 'peer', containerPort: ETCD_PEER_PORT, protocol: 'TCP' },
        { name: metrics, containerPort: ETCD_METRICS_PORT, protocol: 'TCP' },
      ],
      // /readyz needs a quorum: the members start together (Parallel) and get four minutes to elect a leader.
      startupProbe: {
        httpGet: { path: '/readyz', port: metrics },
        periodSeconds: 5,
        failureThreshold: 48,
        timeoutSeconds: 5,
      },
      readinessProbe: {
        httpGet: { path: '/readyz', port: metrics },
        periodSeconds: 5,
        failureThreshold: 3,
        timeoutSeconds: 5,
      },
      livenessProbe: {
        httpGet: { path: '/livez', port: metrics },
        periodSeconds: 10,
        failureThreshold: 8,
        timeoutSeconds: 5,
      },
      resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '1', memory: '512Mi' } },
      securityContext: ETCD_CONTAINER_SECURITY_CONTEXT,
      volumeMounts: [
        { name: 'data', mountPath: ETCD_PATHS.dataMount },
        // Mounted whole (no subPath): etcd re-reads its certificate files on each handshake, so a renewal needs no restart.
        { name: 'peer-tls', mountPath: ETCD_PATHS.peerTlsDir, readOnly: true },
        { name: 'server-tls', mountPath: ETCD_PATHS.serverTlsDir, readOnly: true },
        { name: 'tmp', mountPath: ETCD_PATHS.tmpDir },
      ],
    };

    this.statefulSet = new k8s.apps.v1.StatefulSet(
      `${name}-sts`,
      {
        metadata: meta(ETCD_NAMES.statefulSet),
        spec: {
          serviceName: headless.metadata.name,
          replicas: members,
          // OrderedReady would deadlock: etcd-0 is not ready until a quorum of members runs.
          podManagementPolicy: 'Parallel',
          updateStrategy: { type: 'RollingUpdate' },
          // The PVCs hold kesd's sealed keys: never delete them with the StatefulSet.
          persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
          selector: { matchLabels: ETCD_SELECTOR },
          template: {
            metadata: { labels: labels(APP, COMPONENT) },
            spec: {
              automountServiceAccountToken: false,
              // A Service named etcd would otherwise inject ETCD_* variables, which etcd reads as flags.
              enableServiceLinks: false,
              securityContext: ETCD_POD_SECURITY_CONTEXT,
              topologySpreadConstraints: [
                {
                  maxSkew: 1,
                  topologyKey: 'kubernetes.io/hostname',
                  whenUnsatisfiable: 'ScheduleAnyway',
                  labelSelector: { matchLabels: ETCD_SELECTOR },
                },
              ],
              containers: [container],
              volumes: [
                { name: 'peer-tls', secret: { secretName: peerSecret.metadata.name, defaultMode: 0o440 } },
                { name: 'server-tls', secret: { secretName: serverSecret.metadata.name, defaultMode: 0o440 } },
                { name: 'tmp', emptyDir: { sizeLimit: '16Mi' } },
              ],
            },
          },
          volumeClaimTemplates: [dataClaimTemplate(labels(APP, COMPONENT), args.storageSize, args.storageClass)],
        },
      },
      k8sOpts,
    );

    // One member down at a time keeps a quorum (2 of 3).
    new k8s.policy.v1.PodDisruptionBudget(
      `${name}-pdb`,
      { metadata: meta(ETCD_NAMES.statefulSet), spec: onePodDownBudget(ETCD_SELECTOR) },
      k8sOpts,
    );

    // The metrics port (probes) is left out: kubelet probes come from the node, which policies do not filter.
    new k8s.networking.v1.NetworkPolicy(
      `${name}-netpol`,
      {
        metadata: meta(ETCD_NAMES.statefulSet),
        spec: ingressOnlyPolicy(ETCD_SELECTOR, [
          tcpIngressRule([podsLabelled(args.clientSelector)], ETCD_CLIENT_PORT),
          tcpIngressRule([podsLabelled(ETCD_SELECTOR)], ETCD_PEER_PORT),
        ]),
      },
      k8sOpts,
    );

    this.endpoints = topology.apply(etcdClientEndpoints);
    this.clientTlsSecretName = clientSecret.metadata.name;
    this.clientCertPem = client.certPem;
    this.serviceName = service.metadata.name;
    this.headlessServiceName = headless.metadata.name;

    this.registerOutputs({
      endpoints: this.endpoints,
      clientTlsSecretName: this.clientTlsSecretName,
      clientCertPem: this.clientCertPem,
      caCertPem: this.caCertPem,
      statefulSet: this.statefulSet,
      serviceName: this.serviceName,
      headlessServiceName: this.headlessServiceName,
    });
  }
}
