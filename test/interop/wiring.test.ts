// Wiring proof without a cluster: the objects the Pulumi program renders (kesd's StatefulSet, ConfigMap and Secrets;
// the Tenant's env and its cert Secrets) run for real. kesd starts with the container's own args, MinIO with the
// Tenant's env and mounted files, and an SSE-KMS put/get works. Only paths and the port are remapped; the kesd
// Service hostname resolves to loopback inside a private mount namespace (unshare + a bind-mounted /etc/hosts).
// The HA shape (etcd, three replicas, MinIO failing over) is wiring-ha.test.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KESD_BIN } from '../kesd/cli-process.js';
import { renderStack } from '../../harness/stack-render.ts';
import { freePort, Mc, tail, type Minio } from '../../harness/minio-stack.js';
import {
  containerEnv,
  layOutVolumes,
  PodProcess,
  privateHosts,
  remapArgPath,
  remapInitPaths,
  Rendered,
  tenantMinio,
  until,
} from './wiring-pods.ts';

let dir: string;
let kesd: PodProcess | undefined;
let minio: Minio | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-wiring-'));
});

after(async () => {
  await minio?.stop();
  await kesd?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('the rendered kesd and Tenant fit together: MinIO starts and an SSE-KMS put/get works', {
  timeout: 180_000,
}, async () => {
  const r = new Rendered((await renderStack({ stack: 'dev' })).manifests);
  const sts = r.find('StatefulSet');
  const podRoot = join(dir, 'kesd-pod');

  // 1. Lay out kesd's pod: every volume at its mount path, then start the container's command with its args.
  await layOutVolumes(r, sts, podRoot, (content) => remapInitPaths(content, podRoot));
  const container = sts.spec.template.spec.containers[0];
  const kesdPort = await freePort();
  const args = (container.args as string[]).map((a) =>
    remapArgPath(a, podRoot).replace(/^0\.0\.0\.0:\d+$/, `127.0.0.1:${kesdPort}`),
  );
  kesd = new PodProcess('kesd', [process.execPath, KESD_BIN, ...args], {
    ...process.env,
    ...containerEnv(r, container, `${sts.metadata.name}-0`),
  });
  await until(
    'kesd did not start',
    10_000,
    async () => /listening/.test(kesd!.stderr),
    () => kesd!.tail(),
  );

  // 2. MinIO with the Tenant's env and the files the operator would mount from its cert Secrets; the endpoint keeps
  // the rendered Service hostname, on kesd's remapped port.
  const rendered = new URL(
    r.find('Tenant').spec.env.find((e: { name: string }) => e.name === 'MINIO_KMS_KES_ENDPOINT').value,
  );
  const launcher = await privateHosts(join(dir, 'hosts'), [['127.0.0.1', rendered.hostname]]);
  const started = await tenantMinio(r, dir, launcher, `https://${rendered.hostname}:${kesdPort}`);
  minio = started.minio;
  const { tenantEnv } = started;
  try {
    await minio.start();

    // 3. An SSE-KMS put and get through MinIO's default key.
    const mc = new Mc(join(dir, 'mc'));
    await mc.alias(minio);
    await mc.run(['mb', 'local/wired']);
    await mc.run(['encrypt', 'set', 'sse-kms', tenantEnv.MINIO_KMS_KES_KEY_NAME!, 'local/wired']);
    const data = randomBytes(256 * 1024);
    await writeFile(join(dir, 'obj'), data);
    await mc.run(['cp', join(dir, 'obj'), 'local/wired/obj']);
    await mc.run(['cp', 'local/wired/obj', join(dir, 'back')]);
    const hash = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    assert.equal(hash(await readFile(join(dir, 'back'))), hash(data));
    const [stat] = await mc.json(['stat', 'local/wired/obj']);
    assert.equal(stat.metadata['X-Amz-Server-Side-Encryption'], 'aws:kms');
  } catch (err) {
    (err as Error).message += `\n${kesd.tail(30)}\n--- minio log ---\n${tail(minio.log)}`;
    throw err;
  }
});
