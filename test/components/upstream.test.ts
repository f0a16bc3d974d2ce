// The optional upstream (a Vault mirroring kesd's keys): stack config, the init.yml section kesd reads, and the Kesd
// component's ServiceAccount, projected token and CA under Pulumi mocks. Off by default.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { ConfigMap, ServiceAccount } from 'kubernetes-models/v1';
import { parseInitConfig } from '../../kesd/src/config/config.js';
import { newIdentity } from '../../kesd/src/identity/certificate.js';
import { byType, onResource, setupMocks, unsecret, outputValue } from '../../harness/pulumi-mocks.ts';
import { UNSEAL_SECRET_KEY } from '../../components/contracts.ts';
import { KESD_NAMES, kesdInitYaml } from '../../components/kesd-config.ts';
import { parseStackConfig } from '../../components/stack-config.ts';
import { UPSTREAM_PATHS } from '../../components/upstream-config.ts';

const SYS = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);
const MINIO = 'c'.repeat(64);
const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

test('stack config: upstream is off by default; set, it gets defaults for everything but the address', () => {
  assert.equal(parseStackConfig({}).upstream, undefined);
  assert.deepEqual(parseStackConfig({ upstream: { vault: { address: 'https://vault.vault.svc:8200' } } }).upstream, {
    vault: {
      address: 'https://vault.vault.svc:8200',
      mount: 'kv',
      version: 'v2',
      prefix: 'kesd',
      role: 'kesd',
      authMount: 'kubernetes',
      audience: 'vault',
    },
  });
  const full = parseStackConfig({
    upstream: {
      vault: {
        address: 'https://v:8200/',
        mount: 'secret',
        version: 'v1',
        prefix: 'kes/keys',
        namespace: 'team',
        caCert: CA_PEM,
        role: 'r',
        authMount: 'k8s',
        audience: 'aud',
      },
    },
  });
  assert.equal(full.upstream!.vault.address, 'https://v:8200');
  assert.equal(full.upstream!.vault.caCert, CA_PEM);
});

test('stack config: a bad upstream is refused with messages that name the setting', () => {
  const problems = (raw: unknown) => {
    try {
      parseStackConfig({ upstream: raw });
    } catch (err) {
      return (err as Error).message;
    }
    return '';
  };
  assert.match(problems({ vault: {} }), /stateful-kes:upstream.vault.address: is required/);
  assert.match(
    problems({ vault: { address: 'http://vault:8200' } }),
    /upstream.vault.address: "http:\/\/vault:8200" is not allowed: an https:\/\/ URL/,
  );
  assert.match(
    problems({ vault: { address: 'https://v', version: 'v3' } }),
    /upstream.vault.version: "v3" is not allowed: v1 or v2/,
  );
  assert.match(problems({ vault: { address: 'https://v', prefix: '../x' } }), /upstream.vault.prefix/);
  assert.match(problems({ vault: { address: 'https://v', caCert: 'not pem' } }), /upstream.vault.caCert/);
  assert.match(problems({ vault: { address: 'https://v', token: 'x' } }), /upstream.vault.token: unknown setting/);
  assert.match(problems({ vaults: {} }), /upstream.vaults: unknown setting/);
});

test("init.yml: kesd's own strict reader takes the upstream section: Kubernetes auth with the projected token file, the CA file", () => {
  const upstream = parseStackConfig({
    upstream: { vault: { address: 'https://vault:8200', caCert: CA_PEM, namespace: 'team' } },
  }).upstream!;
  const yaml = kesdInitYaml({
    sysadmin: SYS,
    enclave: { name: 'default', admin: ADMIN },
    minioIdentity: MINIO,
    keys: ['k'],
    tlsDir: '/etc/kesd/tls',
    upstream,
  });
  const parsed = parseInitConfig(yaml, {}).upstream!;
  assert.deepEqual(parsed, {
    enclave: 'default',
    vault: {
      endpoint: 'https://vault:8200',
      engine: 'kv',
      version: 'v2',
      namespace: 'team',
      prefix: 'kesd',
      auth: {
        kind: 'kubernetes',
        engine: 'kubernetes',
        namespace: undefined,
        role: 'kesd',
        jwt: { value: UPSTREAM_PATHS.tokenFile },
      },
      tls: { ca: UPSTREAM_PATHS.caFile },
    },
  });
  const without = kesdInitYaml({
    sysadmin: SYS,
    enclave: { name: 'default', admin: ADMIN },
    minioIdentity: MINIO,
    keys: ['k'],
    tlsDir: '/etc/kesd/tls',
  });
  assert.doesNotMatch(without, /upstream/);
});

let provider: k8s.Provider;
let KesdClass: typeof import('../../components/kesd.ts').Kesd;

before(async () => {
  await setupMocks();
  onResource('docker-build:index:Image', () => ({ digest: `sha256:${'d'.repeat(64)}` }));
  KesdClass = (await import('../../components/kesd.ts')).Kesd;
  provider = new k8s.Provider('kind', { kubeconfig: 'kind-kubeconfig' });
  const [server, ca, sysadmin, admin, minio] = await Promise.all(
    ['kesd', 'ca', 'sysadmin', 'admin', 'minio'].map((subject) => newIdentity({ subject, keyType: 'p256' })),
  );
  const tls = (id: { certPem: string; keyPem: string; identity: string }) => ({
    certPem: pulumi.output(id.certPem),
    keyPem: pulumi.secret(id.keyPem),
    identity: pulumi.output(id.identity),
  });
  const args = (upstream?: ReturnType<typeof parseStackConfig>['upstream']) => ({
    namespace: 'kesd',
    store: { kind: 'pvc', storageSize: '1Gi' } as const,
    image: { ref: 'registry.example/kesd:0.1.0' },
    identities: {
      server: tls(server!),
      caCertPem: pulumi.output(ca!.certPem),
      sysadmin: tls(sysadmin!),
      enclaveAdmin: tls(admin!),
      minio: tls(minio!),
    },
    unsealKey: { secretName: pulumi.output('unseal'), secretKey: UNSEAL_SECRET_KEY },
    keys: ['minio-default-key'],
    tenantNamespace: 'tenant-1',
    provider,
    ...(upstream ? { upstream } : {}),
  });
  const up = new KesdClass(
    'up',
    args(parseStackConfig({ upstream: { vault: { address: 'https://vault:8200', caCert: CA_PEM } } }).upstream),
  );
  const off = new KesdClass('off', args());
  await Promise.all([up, off].map((k) => outputValue(k.statefulSet.id)));
  for (let i = 0; i < 100 && byType('kubernetes:core/v1:ServiceAccount').length < 1; i++)
    await new Promise((r) => setTimeout(r, 20));
});

const sts = (owner: string) =>
  unsecret(byType('kubernetes:apps/v1:StatefulSet').find((r) => r.name === `${owner}-sts`)!.inputs);

test("Kesd with an upstream: its own ServiceAccount, a token projected for Vault's audience only, the Vault CA; no API token", () => {
  const account = byType('kubernetes:core/v1:ServiceAccount').filter((r) => r.name.startsWith('up-'));
  assert.equal(account.length, 1);
  const sa = unsecret(account[0]!.inputs);
  assert.equal(sa.metadata.name, KESD_NAMES.serviceAccount);
  assert.equal(sa.automountServiceAccountToken, false);
  assert.doesNotThrow(() => new ServiceAccount(sa).validate());
  const spec = sts('up').spec.template.spec;
  assert.equal(spec.serviceAccountName, KESD_NAMES.serviceAccount);
  assert.equal(spec.automountServiceAccountToken, false, 'no token for the Kubernetes API');
  const token = spec.volumes.find((v: { name: string }) => v.name === 'vault-token');
  assert.deepEqual(token.projected.sources, [
    { serviceAccountToken: { audience: 'vault', expirationSeconds: 3600, path: 'token' } },
  ]);
  const mounts = spec.containers[0].volumeMounts;
  assert.deepEqual(
    mounts.find((m: { name: string }) => m.name === 'vault-token'),
    { name: 'vault-token', mountPath: UPSTREAM_PATHS.tokenDir, readOnly: true },
  );
  assert.deepEqual(
    mounts.find((m: { name: string }) => m.name === 'vault-ca'),
    { name: 'vault-ca', mountPath: UPSTREAM_PATHS.caDir, readOnly: true },
  );
  const ca = unsecret(byType('kubernetes:core/v1:ConfigMap').find((r) => r.name === 'up-vault-ca')!.inputs);
  assert.equal(ca.data['ca.crt'], CA_PEM);
  assert.doesNotThrow(() => new ConfigMap(ca).validate());
  assert.doesNotThrow(() => new StatefulSet(sts('up')).validate());
  const initYml = unsecret(byType('kubernetes:core/v1:ConfigMap').find((r) => r.name === 'up-init')!.inputs).data[
    'init.yml'
  ];
  assert.match(initYml, /upstream:/);
});

test('Kesd without an upstream: no ServiceAccount, no token volume, nothing about Vault', () => {
  assert.equal(byType('kubernetes:core/v1:ServiceAccount').filter((r) => r.name.startsWith('off-')).length, 0);
  const spec = sts('off').spec.template.spec;
  assert.equal(spec.serviceAccountName, undefined);
  assert.ok(!spec.volumes.some((v: { name: string }) => v.name.startsWith('vault')));
});
