// UnsealKey's generations under Pulumi mocks: generation 0 keeps the names every stack started with; generation g
// holds the Secrets of g and g-1 (kesd mounts g-1 as init.yml's unseal.previous and re-seals under g), each with its
// own 32 random bytes; g-2 is gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as k8s from '@pulumi/kubernetes';
import { setupMocks, byType, outputValue, unsecret } from '../../harness/pulumi-mocks.ts';
import { registerTlsMocks } from '../../harness/tls-mock.ts';

await setupMocks();
registerTlsMocks();
const { UnsealKey, unsealKeyNames } = await import('../../components/unseal-key.ts');

test('generation 0 keeps the names from before rotation existed; later ones are suffixed', () => {
  assert.deepEqual(unsealKeyNames('kesd-unseal-key', 0), {
    bytes: 'kesd-unseal-key-bytes',
    secret: 'kesd-unseal-key-secret',
    objectName: 'kesd-unseal-key',
  });
  assert.deepEqual(unsealKeyNames('kesd-unseal-key', 2), {
    bytes: 'kesd-unseal-key-bytes-g2',
    secret: 'kesd-unseal-key-secret-g2',
    objectName: 'kesd-unseal-key-g2',
  });
  assert.throws(() => unsealKeyNames('k', -1), /whole number/);
});

test('generation 2: the Secrets of generations 2 and 1, each its own key; the previous one is named for Kesd', async () => {
  const provider = new k8s.Provider('kind', { kubeconfig: 'apiVersion: v1\nkind: Config\n' });
  const unseal = new UnsealKey('kesd-unseal', { namespace: 'kesd', provider, generation: 2 });
  assert.equal(await outputValue(unseal.secretName), 'kesd-unseal-g2');
  assert.equal(await outputValue(unseal.previousSecretName!), 'kesd-unseal-g1');
  assert.equal(unseal.generation, 2);
  const secrets = byType('kubernetes:core/v1:Secret').map((s) => unsecret(s.inputs));
  assert.deepEqual(secrets.map((s) => s.metadata.name).sort(), ['kesd-unseal-g1', 'kesd-unseal-g2']);
  const values = secrets.map((s) => s.stringData['unseal-key'] as string);
  for (const v of values) assert.equal(Buffer.from(v, 'base64').length, 32);
  assert.notEqual(values[0], values[1], 'a new generation is a new key');
  assert.deepEqual(
    byType('random:index/randomBytes:RandomBytes')
      .map((r) => r.name)
      .sort(),
    ['kesd-unseal-bytes-g1', 'kesd-unseal-bytes-g2'],
  );
});
