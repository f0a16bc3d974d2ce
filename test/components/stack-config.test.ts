import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse } from 'yaml';
import { declaredKeys, parseStackConfig, StackConfigError } from '../../components/stack-config.ts';

const stackFile = (stack: string) => {
  const doc = parse(readFileSync(resolve(import.meta.dirname, `../../Pulumi.${stack}.yaml`), 'utf8')) as {
    config: Record<string, unknown>;
  };
  return Object.fromEntries(Object.entries(doc.config).map(([k, v]) => [k.replace(/^stateful-kes:/, ''), v]));
};

const devStack = () => stackFile('dev');

test('the dev stack config is valid and gets defaults', () => {
  const c = parseStackConfig(devStack());
  assert.deepEqual(c.cluster, { mode: 'kind', name: 'stateful-kes', workers: 1, nodeImage: undefined });
  assert.equal(c.tenant.servers, 4);
  assert.equal(c.kesd.defaultKey, 'minio-default-key');
  assert.equal(c.kesd.replicas, 1, 'dev: one replica on the embedded store');
  assert.deepEqual(c.kesd.store, { kind: 'pvc', storageSize: '1Gi', storageClass: undefined });
  assert.deepEqual(declaredKeys(c), ['minio-default-key', 'ml-datasets-key']);
});

test('the ha stack config is valid: three kesd replicas, etcd storage', () => {
  const c = parseStackConfig(stackFile('ha'));
  assert.equal(c.kesd.replicas, 3);
  assert.equal(c.kesd.cpu, '1');
  assert.equal(c.kesd.workers, undefined, 'derived from the CPU limit by Kesd');
  assert.deepEqual(
    c.kesd.store,
    { kind: 'etcd', storageSize: '1Gi', storageClass: undefined },
    "the size of etcd's own volumes",
  );
});

test('kesd CPU and workers: a CPU limit as text or number, workers from 1 to 64 or unset', () => {
  assert.equal(parseStackConfig({}).kesd.cpu, '1');
  assert.equal(parseStackConfig({ kesd: { cpu: '500m' } }).kesd.cpu, '500m');
  assert.equal(parseStackConfig({ kesd: { cpu: 2 } }).kesd.cpu, '2');
  assert.equal(parseStackConfig({ kesd: { cpu: 1.5 } }).kesd.cpu, '1.5');
  assert.equal(parseStackConfig({ kesd: { workers: 4 } }).kesd.workers, 4);
  assert.equal(parseStackConfig({ kesd: { workers: '2' } }).kesd.workers, 2);
  assert.throws(
    () => parseStackConfig({ kesd: { cpu: '50m' } }),
    /stateful-kes:kesd.cpu: '50m' is not allowed: a CPU limit of at least 100m/,
  );
  assert.throws(() => parseStackConfig({ kesd: { cpu: 0 } }), /stateful-kes:kesd.cpu: 0 is not allowed/);
  assert.throws(() => parseStackConfig({ kesd: { cpu: '2 cores' } }), /kesd.cpu: '2 cores' is not allowed/);
  assert.throws(
    () => parseStackConfig({ kesd: { workers: 0 } }),
    /stateful-kes:kesd.workers: must be an integer from 1 to 64, got 0/,
  );
});

test('replicas > 1 refuses PVC settings (kesd keeps nothing on disk) and replicas 1 refuses etcd settings', () => {
  assert.equal(parseStackConfig({ kesd: { replicas: 2 } }).kesd.replicas, 2);
  assert.deepEqual(parseStackConfig({ kesd: { replicas: 2 } }).kesd.store, {
    kind: 'etcd',
    storageSize: '1Gi',
    storageClass: undefined,
  });
  assert.deepEqual(
    parseStackConfig({ kesd: { replicas: 2 }, etcd: { storageSize: '4Gi', storageClass: 'fast' } }).kesd.store,
    { kind: 'etcd', storageSize: '4Gi', storageClass: 'fast' },
  );
  assert.deepEqual(parseStackConfig({ kesd: { storageSize: '3Gi', storageClass: 'slow' } }).kesd.store, {
    kind: 'pvc',
    storageSize: '3Gi',
    storageClass: 'slow',
  });
  assert.throws(
    () => parseStackConfig({ kesd: { replicas: 3, storageSize: '2Gi', storageClass: 'fast' } }),
    (err: Error) =>
      err.message.includes(
        'stateful-kes:kesd.storageSize: not used with replicas > 1 (kesd keeps its keys in etcd): set etcd.storageSize instead',
      ) && err.message.includes('stateful-kes:kesd.storageClass: not used with replicas > 1'),
  );
  assert.throws(
    () => parseStackConfig({ etcd: { storageSize: '2Gi' } }),
    /stateful-kes:etcd: only used with kesd.replicas > 1/,
  );
  assert.throws(
    () => parseStackConfig({ kesd: { replicas: 3 }, etcd: { storageSize: '32Mi' } }),
    /stateful-kes:etcd.storageSize: storage size '32Mi' is too small: at least 64Mi/,
  );
  assert.throws(
    () => parseStackConfig({ kesd: { replicas: 3 }, etcd: { size: '2Gi' } }),
    /stateful-kes:etcd.size: unknown setting/,
  );
  assert.throws(
    () => parseStackConfig({ kesd: { replicas: 17 } }),
    /kesd.replicas: must be an integer from 1 to 16, got 17/,
  );
});

test('an empty config takes the defaults', () => {
  const c = parseStackConfig({});
  assert.equal(c.namespaces.kesd, 'kesd');
  assert.equal(c.kesd.replicas, 1);
  assert.deepEqual(c.buckets, []);
});

test('every problem is reported at once, naming the key and the allowed values', () => {
  try {
    parseStackConfig({
      cluster: { mode: 'minikube' },
      namespaces: { kesd: 'Kesd_NS' },
      tenant: { servers: 'four', volumeSize: '2GB', colour: 'blue' },
      kesd: { replicas: 0 },
      keys: ['ok-key', 'bad key', '-lead', '_'],
      buckets: [{ name: 'B', key: 'k' }, { name: 'good-bucket' }],
      extra: true,
    });
    assert.fail('expected a StackConfigError');
  } catch (err) {
    assert.ok(err instanceof StackConfigError);
    const text = err.message;
    for (const expected of [
      "stateful-kes:cluster.mode: 'minikube' is not allowed: one of kind | existing",
      "stateful-kes:namespaces.kesd: 'Kesd_NS' is not allowed",
      'stateful-kes:tenant.servers: must be an integer from 1 to 32, got "four"',
      "stateful-kes:tenant.volumeSize: '2GB' is not allowed: a size such as 2Gi",
      'stateful-kes:tenant.colour: unknown setting',
      'stateful-kes:kesd.replicas: must be an integer from 1 to 16, got 0',
      'stateful-kes:keys[1]: "bad key" is not a KES key name',
      'stateful-kes:keys[2]: "-lead" is not a KES key name',
      'stateful-kes:keys[3]: "_" is not a KES key name',
      "stateful-kes:buckets[0].name: 'B' is not allowed",
      'stateful-kes:extra: unknown setting',
    ])
      assert.ok(text.includes(expected), `missing: ${expected}\n${text}`);
  }
});

test("every KES key name setting states the same rule, '_' alone included", () => {
  const rule = "1-80 of [0-9A-Za-z_-], '-' not first or last, not '_'";
  assert.throws(
    () => parseStackConfig({ kesd: { defaultKey: '_' } }),
    (err: Error) => err.message.includes(`stateful-kes:kesd.defaultKey: '_' is not allowed: a KES key name (${rule})`),
  );
  assert.throws(
    () => parseStackConfig({ keys: ['a-'] }),
    (err: Error) => err.message.includes(`stateful-kes:keys[0]: "a-" is not a KES key name (${rule})`),
  );
  assert.throws(
    () => parseStackConfig({ buckets: [{ name: 'data', key: 'k'.repeat(81) }] }),
    (err: Error) =>
      err.message.includes(`stateful-kes:buckets[0].key: '${'k'.repeat(81)}' is not allowed: a KES key name (${rule})`),
  );
});

test('existing-cluster mode takes a kubeconfig and context', () => {
  const c = parseStackConfig({ cluster: { mode: 'existing', kubeconfig: '~/.kube/config', context: 'prod' } });
  assert.deepEqual(c.cluster, { mode: 'existing', kubeconfig: '~/.kube/config', context: 'prod' });
});

test('declared keys are deduplicated: default key, extra keys, bucket keys', () => {
  const c = parseStackConfig({
    keys: ['a', 'minio-default-key'],
    buckets: [
      { name: 'bucket-1', key: 'a' },
      { name: 'bucket-2', key: 'b' },
    ],
  });
  assert.deepEqual(declaredKeys(c), ['minio-default-key', 'a', 'b']);
});

test('operator.chart: the public repository by default, another http(s) Helm repository, or a local .tgz', () => {
  assert.deepEqual(parseStackConfig({}).operator, {
    install: true,
    replicas: 1,
    chart: { repo: 'https://operator.min.io' },
  });
  assert.deepEqual(parseStackConfig({ operator: { chart: 'http://127.0.0.1:8080' } }).operator, {
    install: true,
    replicas: 1,
    chart: { repo: 'http://127.0.0.1:8080' },
  });
  assert.deepEqual(parseStackConfig({ operator: { chart: 'https://charts.example.com/minio/' } }).operator, {
    install: true,
    replicas: 1,
    chart: { repo: 'https://charts.example.com/minio/' },
  });
  assert.deepEqual(parseStackConfig({ operator: { chart: 'charts/operator-7.1.1.tgz' } }).operator, {
    install: true,
    replicas: 1,
    chart: { path: 'charts/operator-7.1.1.tgz' },
  });
  assert.deepEqual(parseStackConfig({ operator: { chart: '/srv/charts/operator-7.1.1.tgz', replicas: 2 } }).operator, {
    install: true,
    replicas: 2,
    chart: { path: '/srv/charts/operator-7.1.1.tgz' },
  });
});

test('operator.chart refuses what is neither, naming the key and both allowed forms', () => {
  const allowed =
    'an http:// or https:// Helm repository URL serving the operator chart (default https://operator.min.io), or the path of a chart archive ending in .tgz';
  for (const bad of [
    'oci://quay.io/minio/operator',
    'ftp://mirror/operator-7.1.1.tgz',
    'operator.min.io',
    'charts/operator',
    'https://',
    'https://x/index.yaml?token=1',
    'https://bad host',
  ]) {
    assert.throws(
      () => parseStackConfig({ operator: { chart: bad } }),
      (err: Error) => err.message.includes(`stateful-kes:operator.chart: '${bad}' is not allowed: ${allowed}`),
      bad,
    );
  }
  assert.throws(
    () => parseStackConfig({ operator: { chart: 7 } }),
    /stateful-kes:operator.chart: must be a string \(an http/,
  );
});

test('operator.install false: a second stack uses the operator already on the cluster, and refuses operator settings it would ignore', () => {
  assert.deepEqual(parseStackConfig({ operator: { install: false } }).operator, { install: false });
  assert.deepEqual(parseStackConfig({ operator: { install: 'false' } }).operator, { install: false });
  assert.throws(
    () =>
      parseStackConfig({ operator: { install: false, replicas: 2, chart: 'x.tgz' }, namespaces: { operator: 'ops' } }),
    (err: Error) =>
      ['operator.replicas', 'operator.chart', 'namespaces.operator'].every((k) =>
        err.message.includes(
          `stateful-kes:${k}: not used with operator.install false (the operator already on the cluster is used)`,
        ),
      ),
  );
  assert.throws(
    () => parseStackConfig({ operator: { install: 'no' } }),
    /stateful-kes:operator.install: must be true or false, got "no"/,
  );
});

test('kesd.unsealKeyGeneration (default 0) and kesd.backup (off unless set; one replica only)', () => {
  assert.equal(parseStackConfig({}).kesd.unsealKeyGeneration, 0);
  assert.equal(parseStackConfig({}).kesd.backup, undefined, 'no backups by default');
  assert.equal(parseStackConfig({ kesd: { unsealKeyGeneration: 3 } }).kesd.unsealKeyGeneration, 3);
  assert.deepEqual(parseStackConfig({ kesd: { backup: {} } }).kesd.backup, {
    schedule: '0 3 * * *',
    keep: 7,
    storageSize: '1Gi',
    storageClass: undefined,
  });
  assert.deepEqual(
    parseStackConfig({
      kesd: { backup: { schedule: '*/30 * * * *', keep: 48, storageSize: '5Gi', storageClass: 'fast' } },
    }).kesd.backup,
    { schedule: '*/30 * * * *', keep: 48, storageSize: '5Gi', storageClass: 'fast' },
  );
  for (const [kesd, message] of [
    [{ unsealKeyGeneration: -1 }, /stateful-kes:kesd.unsealKeyGeneration: must be an integer from 0/],
    [
      { backup: { schedule: 'daily' } },
      /stateful-kes:kesd.backup.schedule: 'daily' is not allowed: a five-field cron schedule/,
    ],
    [{ backup: { keep: 0 } }, /stateful-kes:kesd.backup.keep: must be an integer from 1 to 9999/],
    [{ backup: { every: 'day' } }, /stateful-kes:kesd.backup.every: unknown setting/],
    [{ backup: 'yes' }, /stateful-kes:kesd.backup: must be an object/],
    [
      { replicas: 3, backup: {} },
      /stateful-kes:kesd.backup: only with replicas = 1 \(on etcd, back up etcd with an etcd snapshot/,
    ],
  ] as const) {
    assert.throws(
      () => parseStackConfig({ kesd }),
      (err: Error) => err instanceof StackConfigError && message.test(err.message),
      JSON.stringify(kesd),
    );
  }
});
