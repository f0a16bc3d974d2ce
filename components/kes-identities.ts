// The PKI of a kesd deployment: a CA, the kesd server certificate, and the client identities kesd authorises.
import * as pulumi from '@pulumi/pulumi';
import type { TlsIdentity } from './contracts';
import { kesdServerDnsNames, kesIdentity } from './kes-identity';
import { ED25519, ORGANIZATION, P256, selfSignedCa, type LeafArgs } from './pki';

export { CA_ALLOWED_USES, CA_VALIDITY_HOURS, LEAF_EARLY_RENEWAL_HOURS, LEAF_VALIDITY_HOURS } from './pki';

export interface KesIdentitiesArgs {
  namespace: pulumi.Input<string>;
  serviceName: string;
  headlessServiceName: string;
  statefulSetName: string;
  replicas: number;
  /** Defaults to cluster.local, as in kesdServerDnsNames. */
  clusterDomain?: string;
  /** Also an identity for the backup CronJob (it may take backups and nothing else). */
  backupClient?: boolean;
}

// The provider's snake_case allowed_uses names (see CA_ALLOWED_USES in pki.ts).
export const SERVER_ALLOWED_USES = ['digital_signature', 'key_encipherment', 'server_auth', 'client_auth'];
export const CLIENT_ALLOWED_USES = ['client_auth', 'digital_signature'];

/** Subject CNs of the client identities. */
export const CLIENT_NAMES = {
  sysadmin: 'sysadmin',
  enclaveAdmin: 'enclave-admin',
  minio: 'minio',
  backup: 'kesd-backup',
} as const;

export class KesIdentities extends pulumi.ComponentResource {
  readonly caCertPem: pulumi.Output<string>;
  readonly server: TlsIdentity;
  readonly serverDnsNames: pulumi.Output<string[]>;
  readonly sysadmin: TlsIdentity;
  readonly enclaveAdmin: TlsIdentity;
  readonly minio: TlsIdentity;
  readonly backup: TlsIdentity | undefined;

  constructor(name: string, args: KesIdentitiesArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:KesIdentities', name, {}, opts);

    const ca = selfSignedCa(name, `${ORGANIZATION} CA`, this);
    this.caCertPem = ca.certPem;
    const issue = (role: string, leaf: LeafArgs): TlsIdentity => {
      const { certPem, keyPem } = ca.issue(role, leaf);
      return { certPem, keyPem, identity: certPem.apply(kesIdentity) };
    };

    this.serverDnsNames = pulumi.output(args.namespace).apply((namespace) =>
      kesdServerDnsNames({
        namespace,
        service: args.serviceName,
        headlessService: args.headlessServiceName,
        statefulSet: args.statefulSetName,
        replicas: args.replicas,
        clusterDomain: args.clusterDomain,
      }),
    );
    // ECDSA P-256 for the server: the safest key type for a Node/OpenSSL TLS server talking to Go clients.
    this.server = issue('server', {
      commonName: args.serviceName,
      allowedUses: SERVER_ALLOWED_USES,
      key: P256,
      dnsNames: this.serverDnsNames,
    });

    // Ed25519 clients, like KES API keys and the operator's MinIO→KES certificate.
    const client = (role: keyof typeof CLIENT_NAMES): TlsIdentity => {
      const cn = CLIENT_NAMES[role];
      return issue(cn, { commonName: cn, allowedUses: CLIENT_ALLOWED_USES, key: ED25519 });
    };
    this.sysadmin = client('sysadmin');
    this.enclaveAdmin = client('enclaveAdmin');
    this.minio = client('minio');
    this.backup = args.backupClient ? client('backup') : undefined;

    this.registerOutputs({
      backup: this.backup,
      caCertPem: this.caCertPem,
      server: this.server,
      serverDnsNames: this.serverDnsNames,
      sysadmin: this.sysadmin,
      enclaveAdmin: this.enclaveAdmin,
      minio: this.minio,
    });
  }
}
