// Wiring proof without a cluster: the objects the Pulumi program renders (kesd's StatefulSet, ConfigMap and Secrets;
// the Tenant's env and its cert Secrets) run for real. kesd starts with the container's own args, MinIO with the
// Tenant's env and mounted files, and an SSE-KMS put/get works. Only paths and the port are remapped; the kesd
// Service hostname resolves to loopback inside a private mount namespace (unshare + a bind-mounted /etc/hosts).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { KESD_BIN } from '../kesd/cli-process.js';
import { renderStack, type Manifest } from '../components/stack-render.ts';
import { freePort, Mc, Minio, sleep, tail } from './stack.js';

let dir: string;
let kesd: ChildProcess | undefined;
let kesdLog = '';
let minio: Minio;
const find = (manifests: Manifest[], kind: string, name?: string) => manifests.find((m) => m.kind === kind && (name === undefined || m.metadata.name === name))!;

/** Maps an absolute path inside a container to the temp dir. */
const remap = (root: string, path: string) => join(root, path);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-wiring-'));
});

after(async () => {
  await minio?.stop();
  kesd?.kill('SIGTERM');
  await rm(dir, { recursive: true, force: true });
});

test('the rendered kesd and Tenant fit together: MinIO starts and an SSE-KMS put/get works', { timeout: 180_000 }, async () => {
  const { manifests } = await renderStack({ stack: 'dev' });
  const sts = find(manifests, 'StatefulSet') as any;
  const tenant = find(manifests, 'Tenant') as any;
  const secretData = (name: string) => (find(manifests, 'Secret', name) as any).stringData as Record<string, string>;
  const podRoot = join(dir, 'kesd-pod');

  // 1. Lay out kesd's pod: every volume at its mount path, then start the container's command with its args.
  const container = sts.spec.template.spec.containers[0];
  const volumes = new Map<string, any>(sts.spec.template.spec.volumes.map((v: any) => [v.name, v]));
  for (const mount of container.volumeMounts) {
    const target = remap(podRoot, mount.mountPath);
    const volume = volumes.get(mount.name);
    const files: Record<string, string> | undefined = volume?.secret ? secretData(volume.secret.secretName) : volume?.configMap ? (find(manifests, 'ConfigMap', volume.configMap.name) as any).data : undefined;
    if (files === undefined) {
      await mkdir(target, { recursive: true }); // a volumeClaimTemplate or an emptyDir
      continue;
    }
    for (const [key, content] of Object.entries(files)) {
      if (mount.subPath !== undefined && mount.subPath !== key) continue;
      const file = mount.subPath !== undefined ? target : join(target, key);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, remapInit(content, podRoot), { mode: 0o600 });
    }
  }
  const kesdPort = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const e of container.env) env[e.name] = e.value ?? secretData(e.valueFrom.secretKeyRef.name)[e.valueFrom.secretKeyRef.key];
  const args = (container.args as string[]).map((a) => (a.startsWith('/') ? remap(podRoot, a) : a.replace(/^0\.0\.0\.0:\d+$/, `127.0.0.1:${kesdPort}`)));
  kesd = spawn(process.execPath, [KESD_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  kesd.stdout!.resume();
  kesd.stderr!.on('data', (d) => (kesdLog += d));
  for (let i = 0; i < 100 && !/listening/.test(kesdLog); i++) await sleep(100);
  assert.match(kesdLog, /listening/, `kesd did not start: ${kesdLog}`);

  // 2. MinIO with the Tenant's env and the files the operator would mount from its cert Secrets.
  const certs = join(dir, 'minio-certs');
  const client = secretData(tenant.spec.externalClientCertSecrets[0].name);
  const ca = secretData(tenant.spec.externalCaCertSecret[0].name);
  const mounted: Record<string, string> = {
    '/tmp/certs/client-0/client.crt': client['tls.crt']!,
    '/tmp/certs/client-0/client.key': client['tls.key']!,
    '/tmp/certs/CAs/ca-0.crt': ca['tls.crt']!,
  };
  for (const [path, content] of Object.entries(mounted)) {
    await mkdir(dirname(join(certs, path)), { recursive: true });
    await writeFile(join(certs, path), content, { mode: 0o600 });
  }
  const tenantEnv = Object.fromEntries((tenant.spec.env as { name: string; value: string }[]).map((e) => [e.name, e.value]));
  const endpoint = new URL(tenantEnv.MINIO_KMS_KES_ENDPOINT!);
  const rootEnv = Object.fromEntries([...secretData(tenant.spec.configuration.name)['config.env']!.matchAll(/^export (\w+)="(.*)"$/gm)].map((m) => [m[1]!, m[2]!]));
  const hosts = join(dir, 'hosts');
  await writeFile(hosts, `${await readFile('/etc/hosts', 'utf8')}\n127.0.0.1 ${endpoint.hostname}\n`);
  const minioEnv: NodeJS.ProcessEnv = {
    ...process.env,
    ...rootEnv,
    ...Object.fromEntries(Object.entries(tenantEnv).map(([k, v]) => [k, v.startsWith('/tmp/certs/') ? join(certs, v) : v])),
    MINIO_KMS_KES_ENDPOINT: `https://${endpoint.hostname}:${kesdPort}`,
    MINIO_BROWSER: 'off',
  };
  minio = new Minio(dir, await freePort(), await freePort(), { endpoint: '', certFile: '', keyFile: '', caFile: '', defaultKey: '' }, {
    env: minioEnv,
    launcher: ['unshare', '-m', 'sh', '-c', `mount --bind ${hosts} /etc/hosts && exec "$0" "$@"`],
  });
  minio.user = rootEnv.MINIO_ROOT_USER!;
  minio.password = rootEnv.MINIO_ROOT_PASSWORD!;
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
    (err as Error).message += `\n--- kesd log ---\n${kesdLog.split('\n').slice(-30).join('\n')}\n--- minio log ---\n${tail(minio.log)}`;
    throw err;
  }
});

/** init.yml names container paths (TLS files): point them into the laid-out pod. */
function remapInit(content: string, podRoot: string): string {
  return content.replace(/(^\s*(?:key|cert|ca): )(\/\S+)$/gm, (_, prefix: string, path: string) => `${prefix}${join(podRoot, path)}`);
}
