// The whole dev stack under mocks: every object validates offline, uses the cluster's provider, keeps secrets
// secret, and renders deterministically; a kesd source change only changes the image and what follows from it.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { validateManifest } from './k8s-validate.ts';
import { countByKind, REPO, renderStack, type Render } from '../../harness/stack-render.ts';

let render: Render;
before(async () => {
  render = await renderStack({ stack: 'dev' });
});

test('the dev stack renders the expected objects: one kesd on its PVC, no etcd', () => {
  assert.deepEqual(countByKind(render), {
    'apps/v1/StatefulSet': 1,
    'batch/v1/Job': 1,
    'helm.sh/v4 Chart (remote)': 1,
    'minio.min.io/v2/Tenant': 1,
    'networking.k8s.io/v1/NetworkPolicy': 1,
    'policy/v1/PodDisruptionBudget': 1,
    'v1/ConfigMap': 1,
    'v1/Namespace': 3,
    'v1/Secret': 6,
    'v1/Service': 2,
  });
});

test('every object validates offline: built-in kinds with kubernetes-models, the Tenant against the operator CRD', () => {
  for (const m of render.manifests) assert.deepEqual(validateManifest(m), [], `${m.kind} ${m.metadata.name}`);
});

test('every Kubernetes object and the chart use the kind cluster provider', () => {
  const k8s = render.resources.filter(
    (r) => (r.type.startsWith('kubernetes:') && r.custom !== false) || r.type === 'kubernetes:helm.sh/v4:Chart',
  );
  assert.ok(k8s.length >= 18);
  for (const r of k8s) assert.match(r.provider, /pulumi:providers:kubernetes::kind-k8s::/, `${r.type} ${r.name}`);
});

test('secrets stay secret: kubeconfig, root password, admin key, and every Secret object', async () => {
  const { isSecret } = await import('../../harness/pulumi-mocks.ts');
  const program = await import(join(REPO, 'index.ts'));
  for (const name of ['kubeconfig', 'rootPassword', 'enclaveAdminKey'])
    assert.equal(await isSecret(program[name]), true, name);
  for (const name of ['kesdEndpoint', 's3Endpoint', 'kesdCaCert'])
    assert.equal(await isSecret(program[name]), false, name);
  const SECRET = '4dabf18193072939515e22adb298388d';
  for (const r of render.resources.filter((x) => x.type === 'kubernetes:core/v1:Secret')) {
    const payload = r.inputs.stringData ?? r.inputs.data;
    assert.ok(JSON.stringify(payload).includes(SECRET), `${r.name}: its data is not marked secret`);
  }
});

test('outputs for other stacks: endpoints, namespaces, identities', () => {
  const o = render.outputs as any;
  assert.equal(o.kesdEndpoint, 'https://kesd.kesd.svc.cluster.local:7373');
  assert.equal(o.s3Endpoint, 'https://minio.tenant-1.svc.cluster.local');
  assert.equal(o.kesdNamespace, 'kesd');
  assert.equal(o.kesdMinioEndpoint, 'https://kesd.kesd.svc.cluster.local:7373', 'one replica: the client Service');
  assert.deepEqual(o.etcdEndpoints, [], 'one replica: no etcd, an empty list');
  assert.equal(o.tenantNamespace, 'tenant-1');
  for (const id of Object.values(o.identitiesHex)) assert.match(id as string, /^[0-9a-f]{64}$/);
  assert.match(o.kesdCaCert, /BEGIN CERTIFICATE/);
});

/** Renders the stack of a copy of the repo in a child process (one Pulumi program per process). */
async function renderCopy(root: string, tlsCache: string): Promise<string> {
  const out = join(root, 'out');
  await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', join(root, 'scripts/render.mts'), '--out', out, '--tls-cache', tlsCache],
    { cwd: root },
  );
  const { readdir } = await import('node:fs/promises');
  const files = (await readdir(out)).sort();
  const text = (await Promise.all(files.map(async (f) => `# ${f}\n${await readFile(join(out, f), 'utf8')}`))).join('');
  await rm(out, { recursive: true, force: true });
  return text;
}

async function copyRepo(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'stack-copy-'));
  for (const p of [
    'index.ts',
    'components',
    'harness',
    'scripts',
    'test/components',
    'test/fixtures',
    'test/package.json',
    'kesd/src',
    'kesd/bin',
    'kesd/package.json',
    'kesd/tsconfig.json',
    'kesd/Dockerfile',
    'kesd/Dockerfile.dockerignore',
    'package.json',
    'package-lock.json',
    'tsconfig.json',
    'Pulumi.yaml',
    'Pulumi.dev.yaml',
    'Pulumi.ha.yaml',
  ]) {
    await cp(join(REPO, p), join(root, p), { recursive: true });
  }
  await symlink(join(REPO, 'node_modules'), join(root, 'node_modules'));
  return root;
}

test('determinism: two renders give identical objects; a kesd source change changes only the image', {
  timeout: 120_000,
}, async () => {
  const root = await copyRepo();
  try {
    const cache = join(root, 'tls-cache.json');
    const first = await renderCopy(root, cache);
    const second = await renderCopy(root, cache);
    assert.deepEqual(diffLines(first, second), [], 'two renders of the same config differ');
    await writeFile(
      join(root, 'kesd/src/version.ts'),
      (await readFile(join(root, 'kesd/src/version.ts'), 'utf8')) + '\n// changed\n',
    );
    const third = await renderCopy(root, cache);
    const changed = diffLines(first, third);
    assert.ok(changed.length > 0, 'the image tag must change');
    for (const line of changed)
      assert.match(line, /image: stateful-kes\/kesd:[0-9a-f]{12}/, `unexpected change: ${line}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

function diffLines(a: string, b: string): string[] {
  const left = a.split('\n');
  const right = b.split('\n');
  assert.equal(left.length, right.length, 'a source change added or removed lines');
  return right.filter((line, i) => line !== left[i]);
}
