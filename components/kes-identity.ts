// Pure functions behind KesIdentities: the KES identity of a certificate and the DNS names the kesd server cert covers.
import { createHash, X509Certificate } from 'node:crypto';

/** KES identity (kes-protocol §2.1): lowercase hex SHA-256 of the certificate's DER SubjectPublicKeyInfo. */
export function kesIdentity(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

export interface KesdServerNames {
  namespace: string;
  /** The client Service (ClusterIP) MinIO connects to. */
  service: string;
  /** The headless Service that gives each StatefulSet pod a stable DNS name. */
  headlessService: string;
  statefulSet: string;
  replicas: number;
  clusterDomain?: string;
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function checkLabel(what: string, value: string): void {
  if (!DNS_LABEL.test(value)) throw new Error(`kesd server names: ${what} '${value}' is not an RFC 1123 DNS label`);
}

/**
 * Every name MinIO (or a probe) may dial kesd by: the client Service in all its search-path forms, the headless
 * Service and each pod's stable FQDN. Never a pod IP: pod IPs change on every restart.
 */
export function kesdServerDnsNames(names: KesdServerNames): string[] {
  const { namespace: ns, service, headlessService, statefulSet, replicas, clusterDomain = 'cluster.local' } = names;
  checkLabel('namespace', ns);
  checkLabel('service', service);
  checkLabel('headless service', headlessService);
  if (!Number.isInteger(replicas) || replicas < 1)
    throw new Error(`kesd server names: replicas must be a positive integer, got ${replicas}`);
  checkLabel('pod name', `${statefulSet}-${replicas - 1}`);
  for (const label of clusterDomain.split('.')) checkLabel('cluster domain label', label);

  const headless = `${headlessService}.${ns}.svc.${clusterDomain}`;
  const pods = Array.from({ length: replicas }, (_, i) => `${statefulSet}-${i}.${headless}`);
  const all = [
    service,
    `${service}.${ns}`,
    `${service}.${ns}.svc`,
    `${service}.${ns}.svc.${clusterDomain}`,
    headless,
    ...pods,
  ];
  return [...new Set(all)];
}
