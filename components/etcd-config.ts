// Pure functions behind EtcdCluster: member names and URLs, the etcd command line, certificate SANs, the endpoints
// kesd dials, and the backend quota. The component (etcd-cluster.ts) only wires these into resources.

/** The official image (distroless: no shell, so the command line uses Kubernetes' $(VAR) expansion, not sh). */
export const ETCD_IMAGE = 'gcr.io/etcd-development/etcd:v3.5.21';
export const ETCD_BINARY = '/usr/local/bin/etcd';

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;
/** Plain HTTP, /metrics, /livez and /readyz only (etcd ≥ 3.5.11): probes need no client certificate. */
export const ETCD_METRICS_PORT = 2381;

/** Members of the cluster: tolerates one member down. */
export const ETCD_MEMBERS = 3;

/** Fixed object names (in kesd's namespace), so SANs and endpoints are known before the objects exist. */
export const ETCD_NAMES = {
  statefulSet: 'etcd',
  headlessService: 'etcd-hl',
  service: 'etcd',
  peerTlsSecret: 'etcd-peer-tls',
  serverTlsSecret: 'etcd-server-tls',
  clientTlsSecret: 'etcd-client-kesd',
} as const;

export const ETCD_PATHS = {
  /** The PVC; the data dir is below it so etcd creates it with mode 0700 itself. */
  dataMount: '/var/lib/etcd',
  dataDir: '/var/lib/etcd/data',
  peerTlsDir: '/etc/etcd/peer',
  serverTlsDir: '/etc/etcd/server',
  tmpDir: '/tmp',
} as const;

/** The pod's own name, from the downward API; the args refer to it as $(POD_NAME). */
export const ETCD_POD_NAME_ENV = 'POD_NAME';

/** The CN peers present: the peer port refuses other certificates of the same CA (kesd's client certificate). */
export const ETCD_PEER_CN = 'etcd-peer';
export const ETCD_SERVER_CN = 'etcd';
export const ETCD_CLIENT_CN = 'kesd';

export interface EtcdTopology {
  namespace: string;
  /** An odd number from 3 to 7. */
  members: number;
  /** Defaults to cluster.local. */
  clusterDomain?: string;
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Throws unless the member count is 3, 5 or 7. */
export function checkEtcdMembers(members: number): void {
  // An even count adds no fault tolerance over the odd count below it; one member has none.
  if (!Number.isInteger(members) || members < 3 || members > 7 || members % 2 === 0) {
    throw new Error(`etcd: members must be 3, 5 or 7, got ${members}`);
  }
}

/** Checks the topology and returns it with the cluster domain filled in. */
function checked(t: EtcdTopology): Required<EtcdTopology> {
  const clusterDomain = t.clusterDomain ?? 'cluster.local';
  if (!DNS_LABEL.test(t.namespace)) throw new Error(`etcd: namespace '${t.namespace}' is not an RFC 1123 DNS label`);
  for (const label of clusterDomain.split('.')) {
    if (!DNS_LABEL.test(label)) throw new Error(`etcd: cluster domain '${clusterDomain}' is not a DNS name`);
  }
  checkEtcdMembers(t.members);
  return { namespace: t.namespace, members: t.members, clusterDomain };
}

/** The headless Service's domain, under which every member has a stable name. */
export function etcdPeerDomain(t: EtcdTopology): string {
  const { namespace, clusterDomain } = checked(t);
  return `${ETCD_NAMES.headlessService}.${namespace}.svc.${clusterDomain}`;
}

/** Member (pod) names: etcd-0, etcd-1, … */
export function etcdMemberNames(t: EtcdTopology): string[] {
  return Array.from({ length: checked(t).members }, (_, i) => `${ETCD_NAMES.statefulSet}-${i}`);
}

/** Each member's stable FQDN through the headless Service. */
export function etcdMemberHosts(t: EtcdTopology): string[] {
  const domain = etcdPeerDomain(t);
  return etcdMemberNames(t).map((m) => `${m}.${domain}`);
}

/** What kesd's init.yml lists under store.etcd.endpoints: every member's client URL. */
export function etcdClientEndpoints(t: EtcdTopology): string[] {
  return etcdMemberHosts(t).map((h) => `https://${h}:${ETCD_CLIENT_PORT}`);
}

/** --initial-cluster: every member's name and peer URL. */
export function etcdInitialCluster(t: EtcdTopology): string {
  const names = etcdMemberNames(t);
  return etcdMemberHosts(t)
    .map((h, i) => `${names[i]}=https://${h}:${ETCD_PEER_PORT}`)
    .join(',');
}

/** SANs of the peer certificate (one for all members: it is both server and client on the peer port). */
export function etcdPeerDnsNames(t: EtcdTopology): string[] {
  return etcdMemberHosts(t);
}

/** SANs of the client-port certificate: every member, the client Service in its search-path forms, and localhost. */
export function etcdServerDnsNames(t: EtcdTopology): string[] {
  const { namespace, clusterDomain } = checked(t);
  const svc = ETCD_NAMES.service;
  return [
    ...etcdMemberHosts(t),
    svc,
    `${svc}.${namespace}`,
    `${svc}.${namespace}.svc`,
    `${svc}.${namespace}.svc.${clusterDomain}`,
    'localhost',
  ];
}

/** IP SANs of the client-port certificate: loopback, for etcdctl inside a member's pod. */
export const ETCD_SERVER_IPS = ['127.0.0.1'];

const BINARY_UNITS: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
/** etcd's own recommended maximum backend size. */
const MAX_QUOTA_BYTES = 8 * 2 ** 30;

/**
 * --quota-backend-bytes: 80% of the PVC, at most 8 GiB. Past the quota etcd raises a NOSPACE alarm and refuses writes
 * but keeps serving reads (kesd keeps decrypting); a full disk would stop the member instead.
 */
export function etcdQuotaBytes(storageSize: string): number {
  const m = /^([1-9][0-9]*)(Ki|Mi|Gi|Ti)$/.exec(storageSize);
  if (!m) throw new Error(`etcd: storage size '${storageSize}' is not a size such as 1Gi`);
  const bytes = Number(m[1]) * BINARY_UNITS[m[2]!]!;
  if (bytes < 64 * 2 ** 20) throw new Error(`etcd: storage size '${storageSize}' is too small: at least 64Mi`);
  return Math.min(Math.floor(bytes * 0.8), MAX_QUOTA_BYTES);
}

/** The etcd container's args. $(POD_NAME) is expanded by the kubelet from the env var of that name. */
export function etcdArgs(t: EtcdTopology, opts: { quotaBytes: number }): string[] {
  const { namespace } = checked(t);
  if (!Number.isInteger(opts.quotaBytes) || opts.quotaBytes <= 0)
    throw new Error(`etcd: quotaBytes must be a positive integer, got ${opts.quotaBytes}`);
  const self = `$(${ETCD_POD_NAME_ENV}).${etcdPeerDomain(t)}`;
  const peer = ETCD_PATHS.peerTlsDir;
  const server = ETCD_PATHS.serverTlsDir;
  return [
    `--name=$(${ETCD_POD_NAME_ENV})`,
    `--data-dir=${ETCD_PATHS.dataDir}`,
    `--listen-peer-urls=https://0.0.0.0:${ETCD_PEER_PORT}`,
    `--listen-client-urls=https://0.0.0.0:${ETCD_CLIENT_PORT}`,
    `--listen-metrics-urls=http://0.0.0.0:${ETCD_METRICS_PORT}`,
    `--initial-advertise-peer-urls=https://${self}:${ETCD_PEER_PORT}`,
    `--advertise-client-urls=https://${self}:${ETCD_CLIENT_PORT}`,
    `--initial-cluster=${etcdInitialCluster(t)}`,
    // Ignored once the data dir exists: a restarted member rejoins with what it stored.
    '--initial-cluster-state=new',
    `--initial-cluster-token=${ETCD_NAMES.statefulSet}-${namespace}`,
    '--client-cert-auth=true',
    `--trusted-ca-file=${server}/ca.crt`,
    `--cert-file=${server}/tls.crt`,
    `--key-file=${server}/tls.key`,
    '--peer-client-cert-auth=true',
    `--peer-trusted-ca-file=${peer}/ca.crt`,
    `--peer-cert-file=${peer}/tls.crt`,
    `--peer-key-file=${peer}/tls.key`,
    `--peer-cert-allowed-cn=${ETCD_PEER_CN}`,
    // kesd overwrites few keys; keep an hour of history, then let the space be reused.
    '--auto-compaction-mode=periodic',
    '--auto-compaction-retention=1h',
    `--quota-backend-bytes=${opts.quotaBytes}`,
  ];
}

/** The uid/gid etcd runs as: distroless' `nonroot` (the image sets no USER); fsGroup makes the PVC writable. */
export const ETCD_UID = 65532;

/** Pod-level security context: the Pod Security Standards "restricted" profile. */
export const ETCD_POD_SECURITY_CONTEXT = {
  runAsNonRoot: true,
  runAsUser: ETCD_UID,
  runAsGroup: ETCD_UID,
  fsGroup: ETCD_UID,
  fsGroupChangePolicy: 'OnRootMismatch',
  seccompProfile: { type: 'RuntimeDefault' },
};

/** Container-level security context: restricted, read-only root filesystem (etcd writes only to its PVC). */
export const ETCD_CONTAINER_SECURITY_CONTEXT = {
  runAsNonRoot: true,
  runAsUser: ETCD_UID,
  runAsGroup: ETCD_UID,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  privileged: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};
