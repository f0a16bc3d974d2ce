import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import { Secret } from 'kubernetes-models/v1';
import { Job } from 'kubernetes-models/batch/v1';
import {
  byType,
  lineage,
  recordLineage,
  setupMocks,
  unsecret,
  outputValue,
  type RecordedResource,
} from '../../harness/pulumi-mocks.ts';
import {
  bucketKeys,
  bucketNameProblem,
  bucketScript,
  BucketConfigError,
  MC_CONFIG_DIR,
  MC_IMAGE,
  RETRY_ATTEMPTS,
  type BucketsArgs,
  type BucketSpec,
} from '../../components/buckets.ts';
import type { MinioTenant } from '../../components/minio-tenant.ts';

const BUCKETS: BucketSpec[] = [
  { name: 'ml-datasets', key: 'ml-datasets-key' },
  { name: 'models.v1', key: 'ml-datasets-key' },
  { name: 'logs', key: 'logs_key' },
];

// A MinioTenant is accepted where Buckets wants a tenant (compile-time check).
const _tenantFits: (t: MinioTenant) => BucketsArgs['tenant'] = (t) => t;
void _tenantFits;

// ---- pure -------------------------------------------------------------------------------------------------------

test('bucketScript sets the alias from env, then creates and encrypts each bucket with its key, in order', () => {
  const lines = bucketScript(BUCKETS).split('\n');
  assert.equal(lines[0], 'set -eu');
  const commands = lines.filter((l) => l.startsWith('retry mc ')).map((l) => l.slice('retry '.length));
  assert.deepEqual(commands, [
    'mc alias set tenant "$S3_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" --api S3v4',
    "mc mb --ignore-existing 'tenant/ml-datasets'",
    "mc encrypt set sse-kms 'ml-datasets-key' 'tenant/ml-datasets'",
    "mc encrypt info 'tenant/ml-datasets'",
    "mc mb --ignore-existing 'tenant/models.v1'",
    "mc encrypt set sse-kms 'ml-datasets-key' 'tenant/models.v1'",
    "mc encrypt info 'tenant/models.v1'",
    "mc mb --ignore-existing 'tenant/logs'",
    "mc encrypt set sse-kms 'logs_key' 'tenant/logs'",
    "mc encrypt info 'tenant/logs'",
  ]);
});

test('bucketScript only uses idempotent commands: nothing removes, nothing fails on an existing bucket', () => {
  const script = bucketScript(BUCKETS);
  assert.ok(!/\bmc (rb|rm|admin)\b/.test(script));
  assert.ok(
    script
      .split('\n')
      .filter((l) => l.includes(' mc mb '))
      .every((l) => l.includes('--ignore-existing')),
  );
});

test('bucketScript is deterministic', () => {
  assert.equal(bucketScript(BUCKETS), bucketScript(BUCKETS.map((b) => ({ ...b }))));
});

test('bucket names follow the S3 rules, with a reason for each refusal', () => {
  for (const ok of ['abc', 'a'.repeat(63), 'a.b-c', 'ml-datasets', '1bucket'])
    assert.equal(bucketNameProblem(ok), undefined, ok);
  const refused: Record<string, RegExp> = {
    ab: /3-63 characters/,
    ['a'.repeat(64)]: /3-63 characters/,
    My_Bucket: /lowercase letters, digits, dots and hyphens/,
    'has space': /lowercase/,
    '-abc': /start and end with a letter or digit/,
    'abc.': /start and end/,
    'a..b': /'\.\.'/,
    'a.-b': /'\.-'/,
    '192.168.1.1': /IP address/,
    'xn--abc': /xn--/,
    'data-s3alias': /-s3alias/,
  };
  for (const [name, why] of Object.entries(refused)) assert.match(bucketNameProblem(name) ?? '', why, name);
});

test('bucketScript reports every invalid bucket and key at once, naming the entry', () => {
  assert.throws(
    () =>
      bucketScript([
        { name: 'Bad_Bucket', key: 'ok' },
        { name: 'good-bucket', key: 'bad key' },
        { name: 'good-bucket', key: '-lead' },
        { name: 'other', key: 'k'.repeat(81) },
        { name: 'x', key: '_' },
      ]),
    (err: unknown) => {
      assert.ok(err instanceof BucketConfigError);
      assert.deepEqual(err.problems, [
        "buckets[0].name: 'Bad_Bucket' is not an S3 bucket name: it may hold only lowercase letters, digits, dots and hyphens",
        "buckets[1].key: 'bad key' is not a KES key name (1-80 of [0-9A-Za-z_-], '-' not first or last, not '_')",
        "buckets[2].key: '-lead' is not a KES key name (1-80 of [0-9A-Za-z_-], '-' not first or last, not '_')",
        "buckets[2].name: bucket 'good-bucket' is listed twice",
        `buckets[3].key: '${'k'.repeat(81)}' is not a KES key name (1-80 of [0-9A-Za-z_-], '-' not first or last, not '_')`,
        "buckets[4].name: 'x' is not an S3 bucket name: it must be 3-63 characters long",
        "buckets[4].key: '_' is not a KES key name (1-80 of [0-9A-Za-z_-], '-' not first or last, not '_')",
      ]);
      return true;
    },
  );
  assert.doesNotThrow(() =>
    bucketScript([
      { name: 'abc', key: 'K'.repeat(80) },
      { name: 'abd', key: '_a' },
    ]),
  );
});

test('bucketKeys lists each key once, in bucket order, for kesd to declare', () => {
  assert.deepEqual(bucketKeys(BUCKETS), ['ml-datasets-key', 'logs_key']);
  assert.deepEqual(bucketKeys([]), []);
});

// The script under the machine's POSIX sh (dash), with a fake `mc` (no MinIO here) and an instant `sleep`.
function runScript(opts: { failAliasTimes: number }): {
  status: number | null;
  stdout: string;
  stderr: string;
  calls: string[];
} {
  const dir = mkdtempSync(join(tmpdir(), 'buckets-script-'));
  try {
    writeFileSync(
      join(dir, 'mc'),
      [
        '#!/bin/sh',
        `echo "$*" >> '${dir}/calls'`,
        `if [ "$1" = alias ]; then n=$(cat '${dir}/alias-count' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '${dir}/alias-count';`,
        `  if [ $n -le ${opts.failAliasTimes} ]; then echo "mc: <ERROR> Unable to initialize new alias" >&2; exit 1; fi; fi`,
        'exit 0',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'sleep'), '#!/bin/sh\nexit 0\n');
    chmodSync(join(dir, 'mc'), 0o755);
    chmodSync(join(dir, 'sleep'), 0o755);
    const r = spawnSync('/bin/sh', ['-c', bucketScript(BUCKETS)], {
      encoding: 'utf8',
      env: {
        PATH: `${dir}:${process.env.PATH}`,
        S3_ENDPOINT: 'https://minio.tenant-1.svc.cluster.local',
        MINIO_ROOT_USER: 'minio-admin',
        MINIO_ROOT_PASSWORD: 'TopSecret0Password1',
      },
    });
    const calls = readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n');
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, calls };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the script runs under sh and passes the credentials to mc from the env', () => {
  const r = runScript({ failAliasTimes: 0 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(
    r.calls[0],
    'alias set tenant https://minio.tenant-1.svc.cluster.local minio-admin TopSecret0Password1 --api S3v4',
  );
  assert.deepEqual(r.calls.slice(1, 3), [
    'mb --ignore-existing tenant/ml-datasets',
    'encrypt set sse-kms ml-datasets-key tenant/ml-datasets',
  ]);
  assert.equal(r.calls.length, 1 + 3 * BUCKETS.length);
  assert.match(r.stdout, /3 bucket\(s\) ready with SSE-KMS/);
});

test('the script retries while MinIO is not up yet', () => {
  const r = runScript({ failAliasTimes: 3 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.calls.filter((c) => c.startsWith('alias set')).length, 4);
});

test('the script gives up after the retry budget, naming the step but never the password', () => {
  const r = runScript({ failAliasTimes: 1000 });
  assert.notEqual(r.status, 0);
  assert.equal(r.calls.length, RETRY_ATTEMPTS);
  assert.match(r.stderr, new RegExp(`giving up on 'mc alias set' after ${RETRY_ATTEMPTS} attempts`));
  assert.ok(!r.stderr.includes('TopSecret0Password1') && !r.stdout.includes('TopSecret0Password1'));
});

// ---- mocks ------------------------------------------------------------------------------------------------------

let buckets: import('../../components/buckets.ts').Buckets;
let empty: import('../../components/buckets.ts').Buckets;
let tenantCr: k8s.apiextensions.CustomResource;
const PASSWORD = 'Mock0Root1Password2Of3Length4Thirty5';

before(async () => {
  await setupMocks();
  const { Buckets } = await import('../../components/buckets.ts');
  const provider = new k8s.Provider('kind', { kubeconfig: '{}' });
  tenantCr = new k8s.apiextensions.CustomResource(
    'tenant',
    { apiVersion: 'minio.min.io/v2', kind: 'Tenant', metadata: { name: 'myminio', namespace: 'tenant-1' }, spec: {} },
    { provider },
  );
  const tenant = {
    s3Endpoint: pulumi.output('https://minio.tenant-1.svc.cluster.local'),
    rootUser: pulumi.output('minio-admin'),
    rootPassword: pulumi.secret(PASSWORD),
  };
  buckets = new Buckets(
    'buckets',
    { namespace: 'tenant-1', tenant, buckets: BUCKETS, provider, dependsOn: [tenantCr] },
    { transformations: [recordLineage] },
  );
  empty = new Buckets(
    'no-buckets',
    { namespace: 'tenant-1', tenant, buckets: [], provider },
    { transformations: [recordLineage] },
  );
  await Promise.all([outputValue(buckets.jobName), outputValue(empty.bucketNames)]);
});

const job = (): RecordedResource => {
  const jobs = byType('kubernetes:batch/v1:Job');
  assert.equal(jobs.length, 1, 'one Job (none for an empty bucket list)');
  return jobs[0]!;
};
const credentials = (): RecordedResource =>
  byType('kubernetes:core/v1:Secret').find((r) => r.name === 'buckets-credentials')!;

test('the Job and the credentials Secret are valid Kubernetes objects', () => {
  assert.doesNotThrow(() => new Job(unsecret(job().inputs)).validate());
  assert.doesNotThrow(() => new Secret(unsecret(credentials().inputs)).validate());
  assert.equal(unsecret(job().inputs).metadata.namespace, 'tenant-1');
});

test('the Job runs the pinned mc image with the rendered script', () => {
  const c = unsecret(job().inputs).spec.template.spec.containers[0];
  assert.equal(c.image, MC_IMAGE);
  assert.match(MC_IMAGE, /^quay\.io\/minio\/mc:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ$/);
  assert.deepEqual(c.command, ['/bin/sh', '-c', bucketScript(BUCKETS)]);
});

test('credentials reach the Job only through a Secret (valueFrom), and the password is secret', () => {
  const inputs = job().inputs;
  assert.ok(!JSON.stringify(unsecret(inputs)).includes(PASSWORD), 'no password in the Job');
  const env = Object.fromEntries(
    (unsecret(inputs).spec.template.spec.containers[0].env as { name: string }[]).map((e) => [e.name, e]),
  );
  const secretName = 'buckets-credentials'; // the provider auto-names it; the mocks use the resource name
  assert.deepEqual(env.MINIO_ROOT_USER, {
    name: 'MINIO_ROOT_USER',
    valueFrom: { secretKeyRef: { name: secretName, key: 'root-user' } },
  });
  assert.deepEqual(env.MINIO_ROOT_PASSWORD, {
    name: 'MINIO_ROOT_PASSWORD',
    valueFrom: { secretKeyRef: { name: secretName, key: 'root-password' } },
  });
  assert.deepEqual(env.S3_ENDPOINT, { name: 'S3_ENDPOINT', value: 'https://minio.tenant-1.svc.cluster.local' });
  const stringData = credentials().inputs.stringData;
  assert.equal(
    stringData['4dabf18193072939515e22adb298388d'],
    '1b47061264138c4ac30d75fd1eb44270',
    'stringData is secret',
  );
  assert.deepEqual(unsecret(stringData), { 'root-user': 'minio-admin', 'root-password': PASSWORD });
});

test('the Job trusts the cluster CA (kube-root-ca.crt in mc certs/CAs) instead of --insecure', () => {
  const spec = unsecret(job().inputs).spec.template.spec;
  assert.ok(!spec.containers[0].command[2].includes('--insecure'));
  const volume = spec.volumes.find((v: { name: string }) => v.name === 'cluster-ca');
  assert.deepEqual(volume.configMap, { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'cluster-ca.crt' }] });
  const mount = spec.containers[0].volumeMounts.find((m: { name: string }) => m.name === 'cluster-ca');
  assert.equal(mount.mountPath, `${MC_CONFIG_DIR}/certs/CAs`);
  const writable = spec.containers[0].volumeMounts.find((m: { mountPath: string }) => m.mountPath === MC_CONFIG_DIR);
  assert.ok(
    spec.volumes.find((v: { name: string }) => v.name === writable?.name)?.emptyDir,
    'the mc config dir is a writable emptyDir',
  );
  assert.ok(
    spec.containers[0].env.some(
      (e: { name: string; value?: string }) => e.name === 'MC_CONFIG_DIR' && e.value === MC_CONFIG_DIR,
    ),
  );
});

test('the Job is restricted: non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root', () => {
  const spec = unsecret(job().inputs).spec.template.spec;
  assert.equal(spec.securityContext.runAsNonRoot, true);
  assert.equal(spec.securityContext.seccompProfile.type, 'RuntimeDefault');
  assert.equal(spec.automountServiceAccountToken, false);
  const sc = spec.containers[0].securityContext;
  assert.deepEqual(sc, {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
  });
});

test('the Job stays after finishing (no TTL) and retries a bounded number of times', () => {
  const spec = unsecret(job().inputs).spec;
  assert.equal(spec.ttlSecondsAfterFinished, undefined);
  assert.ok(Number.isInteger(spec.backoffLimit) && spec.backoffLimit > 0);
  assert.ok(spec.activeDeadlineSeconds > 0);
  assert.equal(spec.template.spec.restartPolicy, 'Never');
});

test('the Job depends on the tenant, every child is parented by the component and uses the passed provider', () => {
  const deps = lineage.get('buckets-job')?.dependsOn;
  assert.ok(Array.isArray(deps) && deps.includes(tenantCr));
  for (const name of ['buckets-credentials', 'buckets-job']) assert.equal(lineage.get(name)?.parent, 'buckets', name);
  for (const r of [job(), credentials()]) assert.match(r.provider, /::pulumi:providers:kubernetes::kind::/, r.name);
});

test('outputs: bucket names and the keys kesd must hold; an empty list creates nothing', async () => {
  assert.deepEqual(await outputValue(buckets.bucketNames), ['ml-datasets', 'models.v1', 'logs']);
  assert.deepEqual(await outputValue(buckets.keys), ['ml-datasets-key', 'logs_key']);
  assert.equal(await outputValue(buckets.jobName), 'buckets-job');
  assert.deepEqual(await outputValue(empty.bucketNames), []);
  assert.equal(await outputValue(empty.jobName), undefined);
  assert.ok(!byType('kubernetes:core/v1:Secret').some((r) => r.name.startsWith('no-buckets')));
});
