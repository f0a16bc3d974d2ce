// UnsealKey under Pulumi mocks: 32 random bytes (tls-mock.ts fills in random.RandomBytes as the provider would),
// held base64 in a Secret that stays secret, created through the cluster provider.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as k8s from '@pulumi/kubernetes';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  setupMocks,
  byType,
  outputValue,
  isSecret,
  unsecret,
  lineage,
  recordLineage,
} from '../../harness/pulumi-mocks.ts';
import { registerTlsMocks } from '../../harness/tls-mock.ts';
import { readUnsealKey } from '../../kesd/src/store/unseal.js';
import { UNSEAL_SECRET_KEY } from '../../components/contracts.ts';

await setupMocks();
registerTlsMocks();
const { UnsealKey, UNSEAL_KEY_BYTES } = await import('../../components/unseal-key.ts');

const SECRET_SIG = { '4dabf18193072939515e22adb298388d': '1b47061264138c4ac30d75fd1eb44270' };

describe('UnsealKey under mocks', () => {
  const provider = new k8s.Provider('kind', { kubeconfig: 'apiVersion: v1\nkind: Config\n' });
  const unseal = new UnsealKey('kesd-unseal', { namespace: 'kesd', provider }, { transformations: [recordLineage] });
  const secretOf = async () => {
    await outputValue(unseal.secretName);
    const secrets = byType('kubernetes:core/v1:Secret');
    assert.equal(secrets.length, 1);
    return secrets[0];
  };

  test('is an UnsealKeyRef: the Secret name and its key (Kesd mounts it as a file; there is no env var)', async () => {
    assert.equal(await outputValue(unseal.secretName), 'kesd-unseal');
    assert.equal(await isSecret(unseal.secretName), false);
    assert.equal(unseal.secretKey, UNSEAL_SECRET_KEY);
    assert.deepEqual(
      Object.keys(unseal).filter((k) => /env/i.test(k)),
      [],
    );
  });

  test('draws 32 random bytes once: no keepers that could regenerate the key', async () => {
    await secretOf();
    const bytes = byType('random:index/randomBytes:RandomBytes');
    assert.equal(bytes.length, 1);
    assert.equal(UNSEAL_KEY_BYTES, 32);
    assert.equal(bytes[0].inputs.length, 32);
    assert.equal(bytes[0].inputs.keepers, undefined);
  });

  test('the Secret holds only the base64 of 32 bytes, which kesd accepts as its unseal key', async () => {
    const secret = unsecret((await secretOf()).inputs);
    assert.equal(secret.metadata.namespace, 'kesd');
    assert.equal(secret.metadata.name, 'kesd-unseal');
    assert.equal(secret.type, 'Opaque');
    assert.deepEqual(Object.keys(secret.stringData), [UNSEAL_SECRET_KEY]);
    assert.equal(secret.data, undefined);
    const value: string = secret.stringData[UNSEAL_SECRET_KEY];
    assert.equal(Buffer.from(value, 'base64').length, 32);
    assert.equal(Buffer.from(value, 'base64').toString('base64'), value);
    // As the mounted file kesd reads (owner and group read only, as the kubelet leaves it with an fsGroup).
    const dir = mkdtempSync(join(tmpdir(), 'kesd-unseal-file-'));
    try {
      writeFileSync(join(dir, 'key'), value, { mode: 0o440 });
      assert.equal(readUnsealKey({ file: join(dir, 'key') }, {}).length, 32);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the Secret value reaches the engine only as a secret, never as plain text', async () => {
    const { stringData } = (await secretOf()).inputs;
    assert.deepEqual({ ...stringData, value: undefined }, { ...SECRET_SIG, value: undefined });
    assert.equal(stringData[UNSEAL_SECRET_KEY], undefined);
  });

  test('the Secret goes through the given cluster provider', async () => {
    const secret = await secretOf();
    assert.match(secret.provider, /::pulumi:providers:kubernetes::kind::/);
  });

  test('every child is parented to the component', async () => {
    await secretOf();
    assert.deepEqual(lineage.get('kesd-unseal-bytes')?.parent, 'kesd-unseal');
    assert.deepEqual(lineage.get('kesd-unseal-secret')?.parent, 'kesd-unseal');
  });
});
