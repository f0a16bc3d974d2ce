import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse } from 'yaml';
import { declaredKeys, parseStackConfig, StackConfigError } from '../../components/stack-config.ts';

const devStack = () => {
  const doc = parse(readFileSync(resolve(import.meta.dirname, '../../Pulumi.dev.yaml'), 'utf8')) as { config: Record<string, unknown> };
  return Object.fromEntries(Object.entries(doc.config).map(([k, v]) => [k.replace(/^stateful-kes:/, ''), v]));
};

test('the dev stack config is valid and gets defaults', () => {
  const c = parseStackConfig(devStack());
  assert.deepEqual(c.cluster, { mode: 'kind', name: 'stateful-kes', workers: 1, nodeImage: undefined });
  assert.equal(c.tenant.servers, 4);
  assert.equal(c.kesd.defaultKey, 'minio-default-key');
  assert.deepEqual(declaredKeys(c), ['minio-default-key', 'ml-datasets-key']);
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
      kesd: { replicas: 3 },
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
      'stateful-kes:kesd.replicas: must be an integer from 1 to 1, got 3',
      'stateful-kes:keys[1]: "bad key" is not a KES key name',
      'stateful-kes:keys[2]: "-lead" is not a KES key name',
      'stateful-kes:keys[3]: "_" is not a KES key name',
      "stateful-kes:buckets[0].name: 'B' is not allowed",
      'stateful-kes:extra: unknown setting',
    ]) assert.ok(text.includes(expected), `missing: ${expected}\n${text}`);
  }
});

test('existing-cluster mode takes a kubeconfig and context', () => {
  const c = parseStackConfig({ cluster: { mode: 'existing', kubeconfig: '~/.kube/config', context: 'prod' } });
  assert.deepEqual(c.cluster, { mode: 'existing', kubeconfig: '~/.kube/config', context: 'prod' });
});

test('declared keys are deduplicated: default key, extra keys, bucket keys', () => {
  const c = parseStackConfig({ keys: ['a', 'minio-default-key'], buckets: [{ name: 'bucket-1', key: 'a' }, { name: 'bucket-2', key: 'b' }] });
  assert.deepEqual(declaredKeys(c), ['minio-default-key', 'a', 'b']);
});
