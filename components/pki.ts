// A CA and the certificates it signs, as @pulumi/tls resources: kesd's PKI (KesIdentities) and etcd's (EtcdCluster)
// are both built with it, each with a CA of its own.
import * as pulumi from '@pulumi/pulumi';
import * as tls from '@pulumi/tls';

// The provider's allowed_uses names (terraform-provider-tls keyUsages/extendedKeyUsages). The SDK's doc comment
// lists camelCase names, but the provider validates the snake_case ones its own example uses.
export const CA_ALLOWED_USES = ['cert_signing', 'crl_signing', 'digital_signature'];

export const CA_VALIDITY_HOURS = 10 * 365 * 24;
export const LEAF_VALIDITY_HOURS = 365 * 24;
/** A `pulumi up` within the last 30 days of a leaf's validity re-issues it; the key (and so the identity) stays. */
export const LEAF_EARLY_RENEWAL_HOURS = 30 * 24;

export const ORGANIZATION = 'stateful-kes';

export type KeyAlgorithm = { algorithm: 'ECDSA'; ecdsaCurve: 'P256' } | { algorithm: 'ED25519' };
export const P256: KeyAlgorithm = { algorithm: 'ECDSA', ecdsaCurve: 'P256' };
export const ED25519: KeyAlgorithm = { algorithm: 'ED25519' };

export interface LeafArgs {
  commonName: string;
  allowedUses: string[];
  /** Defaults to P256. */
  key?: KeyAlgorithm;
  dnsNames?: pulumi.Input<string[]>;
  ipAddresses?: string[];
}

export interface IssuedCert {
  readonly certPem: pulumi.Output<string>;
  /** PKCS#8, secret. */
  readonly keyPem: pulumi.Output<string>;
}

export interface CertificateAuthority {
  readonly certPem: pulumi.Output<string>;
  /** A new key `<name>-<role>-key` and a certificate for it signed by this CA (`<name>-<role>-csr`, `-cert`). */
  issue(role: string, leaf: LeafArgs): IssuedCert;
}

/** A self-signed P-256 CA `<name>-ca` (key `<name>-ca-key`), its resources parented to `parent`. */
export function selfSignedCa(name: string, commonName: string, parent: pulumi.Resource): CertificateAuthority {
  const caKey = new tls.PrivateKey(`${name}-ca-key`, { ...P256 }, { parent });
  const ca = new tls.SelfSignedCert(
    `${name}-ca`,
    {
      privateKeyPem: caKey.privateKeyPem,
      subject: { commonName, organization: ORGANIZATION },
      isCaCertificate: true,
      allowedUses: CA_ALLOWED_USES,
      validityPeriodHours: CA_VALIDITY_HOURS,
    },
    { parent },
  );

  const issue = (role: string, leaf: LeafArgs): IssuedCert => {
    const key = new tls.PrivateKey(`${name}-${role}-key`, { ...(leaf.key ?? P256) }, { parent });
    const csr = new tls.CertRequest(
      `${name}-${role}-csr`,
      {
        privateKeyPem: key.privateKeyPem,
        subject: { commonName: leaf.commonName, organization: ORGANIZATION },
        dnsNames: leaf.dnsNames,
        ipAddresses: leaf.ipAddresses,
      },
      { parent },
    );
    const cert = new tls.LocallySignedCert(
      `${name}-${role}-cert`,
      {
        certRequestPem: csr.certRequestPem,
        caPrivateKeyPem: caKey.privateKeyPem,
        caCertPem: ca.certPem,
        allowedUses: leaf.allowedUses,
        validityPeriodHours: LEAF_VALIDITY_HOURS,
        earlyRenewalHours: LEAF_EARLY_RENEWAL_HOURS,
      },
      { parent },
    );
    return { certPem: cert.certPem, keyPem: pulumi.secret(key.privateKeyPemPkcs8) };
  };

  return { certPem: ca.certPem, issue };
}
