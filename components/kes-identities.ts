// The PKI of a kesd deployment: a CA, the kesd server certificate, and the client identities kesd authorises.
import * as pulumi from '@pulumi/pulumi';
import * as tls from '@pulumi/tls';
import type { TlsIdentity } from './contracts';
import { kesdServerDnsNames, kesIdentity } from './kes-identity';

export interface KesIdentitiesArgs {
  namespace: pulumi.Input<string>;
  serviceName: string;
  headlessServiceName: string;
  statefulSetName: string;
  replicas: number;
  /** Defaults to cluster.local, as in kesdServerDnsNames. */
  clusterDomain?: string;
}

// The provider's allowed_uses names (terraform-provider-tls keyUsages/extendedKeyUsages). The SDK's doc comment
// lists camelCase names, but the provider validates the snake_case ones its own example uses.
export const CA_ALLOWED_USES = ['cert_signing', 'crl_signing', 'digital_signature'];
export const SERVER_ALLOWED_USES = ['digital_signature', 'key_encipherment', 'server_auth', 'client_auth'];
export const CLIENT_ALLOWED_USES = ['client_auth', 'digital_signature'];

export const CA_VALIDITY_HOURS = 10 * 365 * 24;
export const LEAF_VALIDITY_HOURS = 365 * 24;
/** A `pulumi up` within the last 30 days of a leaf's validity re-issues it; the key (and so the identity) stays. */
export const LEAF_EARLY_RENEWAL_HOURS = 30 * 24;

/** Subject CNs of the client identities. */
export const CLIENT_NAMES = { sysadmin: 'sysadmin', enclaveAdmin: 'enclave-admin', minio: 'minio' } as const;

const ORGANIZATION = 'stateful-kes';

export class KesIdentities extends pulumi.ComponentResource {
  readonly caCertPem: pulumi.Output<string>;
  readonly server: TlsIdentity;
  readonly serverDnsNames: pulumi.Output<string[]>;
  readonly sysadmin: TlsIdentity;
  readonly enclaveAdmin: TlsIdentity;
  readonly minio: TlsIdentity;

  constructor(name: string, args: KesIdentitiesArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:KesIdentities', name, {}, opts);

    const caKey = new tls.PrivateKey(`${name}-ca-key`, { algorithm: 'ECDSA', ecdsaCurve: 'P256' }, { parent: this });
    const ca = new tls.SelfSignedCert(
      `${name}-ca`,
      {
        privateKeyPem: caKey.privateKeyPem,
        subject: { commonName: `${ORGANIZATION} CA`, organization: ORGANIZATION },
        isCaCertificate: true,
        allowedUses: CA_ALLOWED_USES,
        validityPeriodHours: CA_VALIDITY_HOURS,
      },
      { parent: this },
    );
    this.caCertPem = ca.certPem;

    const issue = (role: string, key: tls.PrivateKey, commonName: string, allowedUses: string[], dnsNames?: pulumi.Input<string[]>): TlsIdentity => {
      const csr = new tls.CertRequest(
        `${name}-${role}-csr`,
        { privateKeyPem: key.privateKeyPem, subject: { commonName, organization: ORGANIZATION }, dnsNames },
        { parent: this },
      );
      const cert = new tls.LocallySignedCert(
        `${name}-${role}-cert`,
        {
          certRequestPem: csr.certRequestPem,
          caPrivateKeyPem: caKey.privateKeyPem,
          caCertPem: ca.certPem,
          allowedUses,
          validityPeriodHours: LEAF_VALIDITY_HOURS,
          earlyRenewalHours: LEAF_EARLY_RENEWAL_HOURS,
        },
        { parent: this },
      );
      return { certPem: cert.certPem, keyPem: pulumi.secret(key.privateKeyPemPkcs8), identity: cert.certPem.apply(kesIdentity) };
    };

    // ECDSA P-256 for the server: the safest key type for a Node/OpenSSL TLS server talking to Go clients.
    const serverKey = new tls.PrivateKey(`${name}-server-key`, { algorithm: 'ECDSA', ecdsaCurve: 'P256' }, { parent: this });
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
    this.server = issue('server', serverKey, args.serviceName, SERVER_ALLOWED_USES, this.serverDnsNames);

    // Ed25519 clients, like KES API keys and the operator's MinIO→KES certificate.
    const client = (role: keyof typeof CLIENT_NAMES): TlsIdentity => {
      const cn = CLIENT_NAMES[role];
      const key = new tls.PrivateKey(`${name}-${cn}-key`, { algorithm: 'ED25519' }, { parent: this });
      return issue(cn, key, cn, CLIENT_ALLOWED_USES);
    };
    this.sysadmin = client('sysadmin');
    this.enclaveAdmin = client('enclaveAdmin');
    this.minio = client('minio');

    this.registerOutputs({
      caCertPem: this.caCertPem,
      server: this.server,
      serverDnsNames: this.serverDnsNames,
      sysadmin: this.sysadmin,
      enclaveAdmin: this.enclaveAdmin,
      minio: this.minio,
    });
  }
}
