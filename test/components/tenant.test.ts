import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import { Secret } from 'kubernetes-models/v1';
import { newIdentity } from '../../kesd/src/identity/certificate.js';
import {
  byType,
  isSecret,
  lineage,
  onResource,
  recordLineage,
  setupMocks,
  unsecret,
  outputValue,
  type RecordedResource,
} from '../../harness/pulumi-mocks.ts';
import { validateTenant } from './crd.ts';
import {
  configEnv,
  consoleEndpoint,
  KES_CA_FILE,
  KES_CLIENT_CERT_FILE,
  KES_CLIENT_KEY_FILE,
  MINIO_IMAGE,
  operatorCertMounts,
  s3Endpoint,
  tenantKmsEnv,
  tenantSpec,
  type TenantSpecOptions,
} from '../../components/tenant-config.ts';

const KESD_ENDPOINT = 'https://kesd-{0...2}.kesd-hl.kesd.svc.cluster.local:7373';
const specOptions: TenantSpecOptions = {
  servers: 4,
  volumesPerServer: 2,
  volumeSize: '2Gi',
  configSecret: 'myminio-config-env',
  clientCertSecret: 'myminio-kesd-client',
  caSecret: 'myminio-kesd-ca',
  kmsEndpoint: KESD_ENDPOINT,
  defaultKey: 'minio-default-key',
};
const tenantObject = (spec: unknown) => ({
  apiVersion: 'minio.min.io/v2',
  kind: 'Tenant',
  metadata: { name: 'myminio', namespace: 'tenant-1' },
  spec,
});
const envOf = (spec: Record<string, unknown>) =>
  Object.fromEntries((spec.env as { name: string; value: string }[]).map((e) => [e.name, e.value]));

// ---- pure -------------------------------------------------------------------------------------------------------

test('the KES env file paths are exactly where the operator mounts the referenced client cert and CA Secrets', () => {
  const spec = tenantSpec(specOptions) as Parameters<typeof operatorCertMounts>[0] & Record<string, unknown>;
  const mounted = new Map(operatorCertMounts(spec).map((m) => [m.path, m]));
  const env = envOf(spec);
  assert.deepEqual(mounted.get(env.MINIO_KMS_KES_CERT_FILE!), {
    secret: 'myminio-kesd-client',
    key: 'tls.crt',
    path: KES_CLIENT_CERT_FILE,
  });
  assert.deepEqual(mounted.get(env.MINIO_KMS_KES_KEY_FILE!), {
    secret: 'myminio-kesd-client',
    key: 'tls.key',
    path: KES_CLIENT_KEY_FILE,
  });
  assert.deepEqual(mounted.get(env.MINIO_KMS_KES_CAPATH!), {
    secret: 'myminio-kesd-ca',
    key: 'tls.crt',
    path: KES_CA_FILE,
  });
  assert.deepEqual(
    [KES_CLIENT_CERT_FILE, KES_CLIENT_KEY_FILE, KES_CA_FILE],
    ['/tmp/certs/client-0/client.crt', '/tmp/certs/client-0/client.key', '/tmp/certs/CAs/ca-0.crt'],
  );
});

test('operatorCertMounts follows the reference type: public.crt/private.key without a type, ca.crt for cert-manager', () => {
  assert.deepEqual(
    operatorCertMounts({
      externalClientCertSecrets: [{ name: 'a' }],
      externalCaCertSecret: [{ name: 'b' }, { name: 'c', type: 'cert-manager.io/v1' }],
    }),
    [
      { secret: 'a', key: 'public.crt', path: '/tmp/certs/client-0/client.crt' },
      { secret: 'a', key: 'private.key', path: '/tmp/certs/client-0/client.key' },
      { secret: 'b', key: 'public.crt', path: '/tmp/certs/CAs/ca-0.crt' },
      { secret: 'c', key: 'ca.crt', path: '/tmp/certs/CAs/ca-1.crt' },
    ],
  );
});

test('tenantKmsEnv lists the five MINIO_KMS_KES_* variables with plain values', () => {
  assert.deepEqual(tenantKmsEnv({ endpoint: KESD_ENDPOINT, defaultKey: 'minio-default-key' }), [
    { name: 'MINIO_KMS_KES_ENDPOINT', value: KESD_ENDPOINT },
    { name: 'MINIO_KMS_KES_CERT_FILE', value: '/tmp/certs/client-0/client.crt' },
    { name: 'MINIO_KMS_KES_KEY_FILE', value: '/tmp/certs/client-0/client.key' },
    { name: 'MINIO_KMS_KES_CAPATH', value: '/tmp/certs/CAs/ca-0.crt' },
    { name: 'MINIO_KMS_KES_KEY_NAME', value: 'minio-default-key' },
  ]);
});

test('tenantKmsEnv rejects a non-https endpoint and a key name kesd would refuse', () => {
  assert.throws(
    () => tenantKmsEnv({ endpoint: 'http://kesd:7373', defaultKey: 'k' }),
    /must be one or more https:\/\/ URLs/,
  );
  assert.throws(() => tenantKmsEnv({ endpoint: '', defaultKey: 'k' }), /https:\/\//);
  assert.throws(
    () => tenantKmsEnv({ endpoint: 'https://kesd:7373', defaultKey: 'bad key' }),
    /'bad key' is not a KES key name/,
  );
  assert.throws(() => tenantKmsEnv({ endpoint: 'https://kesd:7373', defaultKey: '-lead' }), /not a KES key name/);
  assert.equal(
    tenantKmsEnv({ endpoint: 'https://a:7373, https://b:7373', defaultKey: 'k' })[0]!.value,
    'https://a:7373, https://b:7373',
  );
});

test('configEnv writes export lines MinIO and the operator parse literally', () => {
  assert.equal(
    configEnv({ rootUser: 'minio-admin', rootPassword: 'Abc123xyz' }),
    'export MINIO_ROOT_USER="minio-admin"\nexport MINIO_ROOT_PASSWORD="Abc123xyz"\n',
  );
  assert.equal(
    configEnv({ rootUser: 'minio-admin', rootPassword: "p@ss'word =#!%&*()", storageClass: 'EC:2' }),
    'export MINIO_ROOT_USER="minio-admin"\nexport MINIO_ROOT_PASSWORD="p@ss\'word =#!%&*()"\nexport MINIO_STORAGE_CLASS_STANDARD="EC:2"\n',
  );
});

test('configEnv refuses values it cannot carry: quotes, backslashes, $, backticks and control characters', () => {
  for (const bad of [
    'pa"ssword1',
    'pass\\word1',
    'pa$HOME12',
    'pa`id`123',
    'pass\nexport X=1',
    'pass\rword1',
    'pass\u0000word',
  ]) {
    assert.throws(
      () => configEnv({ rootUser: 'minio-admin', rootPassword: bad }),
      /config\.env: the value of MINIO_ROOT_PASSWORD contains .* which config\.env cannot carry/,
      JSON.stringify(bad),
    );
  }
  assert.throws(() => configEnv({ rootUser: 'mi"n', rootPassword: 'password123' }), /MINIO_ROOT_USER contains/);
  assert.throws(() => configEnv({ rootUser: 'minio-admin', rootPassword: 'short' }), /at least 8 characters/);
  assert.throws(
    () => configEnv({ rootUser: 'minio-admin', rootPassword: 'password123', storageClass: 'EC2' }),
    /EC:<parity>/,
  );
});

test('tenantSpec follows tenant-lite: pinned image, one pool-0, RWO data volumes, non-root uid 1000, TLS, Parallel', () => {
  const spec = tenantSpec(specOptions) as Record<string, any>;
  assert.equal(spec.image, MINIO_IMAGE);
  assert.equal(MINIO_IMAGE, 'quay.io/minio/minio:RELEASE.2025-04-08T15-41-24Z');
  assert.deepEqual(spec.configuration, { name: 'myminio-config-env' });
  assert.equal(spec.pools.length, 1);
  const pool = spec.pools[0];
  assert.equal(pool.name, 'pool-0');
  assert.equal(pool.servers, 4);
  assert.equal(pool.volumesPerServer, 2);
  assert.deepEqual(pool.volumeClaimTemplate, {
    metadata: { name: 'data' },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '2Gi' } } },
  });
  assert.deepEqual(pool.containerSecurityContext, {
    runAsUser: 1000,
    runAsGroup: 1000,
    runAsNonRoot: true,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  });
  assert.equal(spec.requestAutoCert, true);
  assert.equal(spec.mountPath, '/export');
  assert.equal(spec.podManagementPolicy, 'Parallel');
  assert.deepEqual(spec.features, { bucketDNS: false });
  assert.deepEqual(spec.externalClientCertSecrets, [{ name: 'myminio-kesd-client', type: 'kubernetes.io/tls' }]);
  assert.deepEqual(spec.externalCaCertSecret, [{ name: 'myminio-kesd-ca', type: 'kubernetes.io/tls' }]);
  assert.ok(
    spec.env.every((e: object) => Object.keys(e).join() === 'name,value'),
    'env uses plain value only (the operator drops valueFrom)',
  );
});

test('tenantSpec sets storageClassName only when a StorageClass is given', () => {
  const spec = tenantSpec({ ...specOptions, storageClass: 'fast' }) as Record<string, any>;
  assert.equal(spec.pools[0].volumeClaimTemplate.spec.storageClassName, 'fast');
  assert.ok(!('storageClassName' in (tenantSpec(specOptions) as any).pools[0].volumeClaimTemplate.spec));
});

test('tenantSpec rejects impossible pools, naming every problem', () => {
  assert.throws(
    () => tenantSpec({ ...specOptions, servers: 0, volumesPerServer: 1.5, volumeSize: '2GB', caSecret: 'Bad_Name' }),
    (err: Error) =>
      [
        'servers must be a positive integer, got 0',
        'volumesPerServer must be a positive integer, got 1.5',
        "volumeSize '2GB'",
        "caSecret 'Bad_Name'",
      ].every((p) => err.message.includes(p)),
  );
});

test('s3Endpoint and consoleEndpoint are the operator Services in the tenant namespace', () => {
  assert.equal(s3Endpoint('tenant-1'), 'https://minio.tenant-1.svc.cluster.local');
  assert.equal(consoleEndpoint('tenant-1', 'myminio'), 'https://myminio-console.tenant-1.svc.cluster.local:9443');
});

test('the rendered Tenant validates against the operator v7.1.1 CRD', () => {
  assert.deepEqual(validateTenant(tenantObject(tenantSpec(specOptions))), []);
  assert.deepEqual(validateTenant(tenantObject(tenantSpec({ ...specOptions, storageClass: 'standard' }))), []);
});

test('a broken Tenant fails CRD validation: string servers, missing pool name, unknown field', () => {
  const spec = tenantSpec(specOptions) as Record<string, any>;
  const { name: _dropped, ...poolWithoutName } = spec.pools[0];
  const errors = validateTenant(
    tenantObject({ ...spec, requestAutocert: true, pools: [{ ...poolWithoutName, servers: '4' }] }),
  );
  assert.ok(errors.includes('/spec/pools/0/servers: must be integer'), errors.join('\n'));
  assert.ok(errors.includes("/spec/pools/0: must have required property 'name'"), errors.join('\n'));
  assert.ok(errors.includes("/spec: unknown field 'requestAutocert'"), errors.join('\n'));
  assert.ok(validateTenant(tenantObject({})).includes("/spec: must have required property 'pools'"));
});

// ---- mocks ------------------------------------------------------------------------------------------------------

const ROOT_PASSWORD = 'Mock0Root1Password2Of3Length4Thirty5';
let tenant: import('../../components/minio-tenant.ts').MinioTenant;
let kesdStatefulSet: k8s.apps.v1.StatefulSet;
let client: { certPem: string; keyPem: string; identity: string };
let caPem: string;

before(async () => {
  onResource('random:index/randomPassword:RandomPassword', (a) => ({
    result: ROOT_PASSWORD.slice(0, a.inputs.length),
  }));
  await setupMocks();
  const { MinioTenant } = await import('../../components/minio-tenant.ts');
  client = await newIdentity({ subject: 'minio' });
  caPem = (await newIdentity({ subject: 'kesd CA', keyType: 'p256' })).certPem;
  const provider = new k8s.Provider('kind', { kubeconfig: '{}' });
  kesdStatefulSet = new k8s.apps.v1.StatefulSet(
    'kesd',
    {
      metadata: { name: 'kesd', namespace: 'kesd' },
      spec: {
        serviceName: 'kesd-hl',
        selector: { matchLabels: { app: 'kesd' } },
        template: {
          metadata: { labels: { app: 'kesd' } },
          spec: { containers: [{ name: 'kesd', image: 'kesd:test' }] },
        },
      },
    },
    { provider },
  );
  tenant = new MinioTenant(
    'tenant',
    {
      namespace: 'tenant-1',
      name: 'myminio',
      servers: 4,
      volumesPerServer: 2,
      volumeSize: '2Gi',
      storageClass: 'standard',
      kesd: {
        serviceUrl: pulumi.output('https://kesd.kesd.svc.cluster.local:7373'),
        minioEndpoint: pulumi.output(KESD_ENDPOINT),
      },
      kesdCaCertPem: pulumi.output(caPem),
      minioClient: {
        certPem: pulumi.output(client.certPem),
        keyPem: pulumi.secret(client.keyPem),
        identity: pulumi.output(client.identity),
      },
      defaultKey: 'minio-default-key',
      provider,
      dependsOn: [kesdStatefulSet],
    },
    { transformations: [recordLineage] },
  );
  await Promise.all([
    outputValue(tenant.tenantName),
    outputValue(tenant.consoleEndpoint),
    outputValue(tenant.rootPassword),
  ]);
});

const tenantResource = () => byType('kubernetes:minio.min.io/v2:Tenant')[0]!;
const secretNamed = (name: string): RecordedResource => {
  const found = byType('kubernetes:core/v1:Secret').find((r) => r.name === name);
  assert.ok(found, `no Secret ${name}`);
  return found;
};

test('the Tenant custom resource validates against the CRD and names the three Secrets', () => {
  const t = tenantResource();
  assert.ok(t, 'a Tenant was registered');
  const obj = unsecret(t.inputs);
  assert.deepEqual(validateTenant(obj), []);
  assert.equal(obj.apiVersion, 'minio.min.io/v2');
  assert.equal(obj.kind, 'Tenant');
  assert.equal(obj.metadata.name, 'myminio');
  assert.equal(obj.metadata.namespace, 'tenant-1');
  assert.equal(obj.spec.configuration.name, 'myminio-config-env');
  assert.equal(obj.spec.externalClientCertSecrets[0].name, 'myminio-kesd-client');
  assert.equal(obj.spec.externalCaCertSecret[0].name, 'myminio-kesd-ca');
  assert.equal(obj.spec.pools[0].volumeClaimTemplate.spec.storageClassName, 'standard');
  assert.deepEqual(obj.spec.env, tenantKmsEnv({ endpoint: KESD_ENDPOINT, defaultKey: 'minio-default-key' }));
});

test('the Tenant carries no secret material (no private key, no root password), so its spec stays readable in diffs', () => {
  const inputs = tenantResource().inputs;
  assert.equal(JSON.stringify(inputs), JSON.stringify(unsecret(inputs)), 'no part of the Tenant is marked secret');
  const text = JSON.stringify(inputs);
  assert.ok(!text.includes('PRIVATE KEY'));
  assert.ok(!text.includes(ROOT_PASSWORD));
});

test('the Secrets are valid Kubernetes Secrets with the keys the operator reads', () => {
  for (const name of ['tenant-config-env', 'tenant-kesd-client', 'tenant-kesd-ca']) {
    const inputs = unsecret(secretNamed(name).inputs);
    assert.doesNotThrow(() => new Secret(inputs).validate(), name);
    assert.equal(inputs.metadata.namespace, 'tenant-1');
  }
  const configEnvSecret = unsecret(secretNamed('tenant-config-env').inputs);
  assert.equal(
    configEnvSecret.stringData['config.env'],
    `export MINIO_ROOT_USER="minio-admin"\nexport MINIO_ROOT_PASSWORD="${ROOT_PASSWORD.slice(0, 32)}"\n`,
  );
  const clientSecret = unsecret(secretNamed('tenant-kesd-client').inputs);
  assert.equal(clientSecret.type, 'kubernetes.io/tls');
  assert.deepEqual(clientSecret.stringData, { 'tls.crt': client.certPem, 'tls.key': client.keyPem });
  const caSecret = unsecret(secretNamed('tenant-kesd-ca').inputs);
  assert.equal(caSecret.type, 'Opaque', 'a kubernetes.io/tls Secret would need a tls.key');
  assert.deepEqual(caSecret.stringData, { 'tls.crt': caPem });
});

test('the root password is a secret output of at least 24 characters, and not the tenant-lite default', async () => {
  assert.equal(await isSecret(tenant.rootPassword), true);
  const password = await outputValue(tenant.rootPassword);
  assert.ok(password.length >= 24);
  assert.notEqual(password, 'minio123');
  assert.equal(await outputValue(tenant.rootUser), 'minio-admin');
  const random = byType('random:index/randomPassword:RandomPassword')[0]!;
  assert.ok(random.inputs.length >= 24);
  assert.equal(random.inputs.special, false, 'config.env and mc take the password unescaped');
});

test('the client key and config.env reach the provider as secrets', () => {
  const isWrapped = (v: unknown) =>
    (v as Record<string, unknown>)?.['4dabf18193072939515e22adb298388d'] === '1b47061264138c4ac30d75fd1eb44270';
  const keyInput = secretNamed('tenant-kesd-client').inputs.stringData;
  assert.ok(isWrapped(keyInput) || isWrapped(keyInput['tls.key']), 'tls.key is secret');
  const envInput = secretNamed('tenant-config-env').inputs.stringData;
  assert.ok(isWrapped(envInput) || isWrapped(envInput['config.env']), 'config.env is secret');
});

test('outputs: in-cluster S3 and console endpoints, tenant name', async () => {
  assert.equal(await outputValue(tenant.s3Endpoint), 'https://minio.tenant-1.svc.cluster.local');
  assert.equal(await outputValue(tenant.consoleEndpoint), 'https://myminio-console.tenant-1.svc.cluster.local:9443');
  assert.equal(await outputValue(tenant.tenantName), 'myminio');
});

test('the Tenant depends on the kesd StatefulSet, and every child is parented by the component', () => {
  const deps = lineage.get('tenant-tenant')?.dependsOn;
  assert.ok(Array.isArray(deps) && deps.includes(kesdStatefulSet), 'Tenant dependsOn the kesd StatefulSet');
  for (const child of [
    'tenant-root-password',
    'tenant-config-env',
    'tenant-kesd-client',
    'tenant-kesd-ca',
    'tenant-tenant',
  ]) {
    assert.equal(lineage.get(child)?.parent, 'tenant', child);
  }
});

test('every Kubernetes object uses the passed provider', () => {
  const objects = [tenantResource(), ...['tenant-config-env', 'tenant-kesd-client', 'tenant-kesd-ca'].map(secretNamed)];
  for (const o of objects) assert.match(o.provider, /::pulumi:providers:kubernetes::kind::/, o.name);
});
