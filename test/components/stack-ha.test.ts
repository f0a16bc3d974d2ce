// The whole ha stack (Pulumi.ha.yaml: three kesd replicas on a three-member etcd) under mocks: every object validates
// offline, the pieces fit together (MinIO's endpoint, kesd's SANs, init.yml, the etcd Secrets and policies), secrets
// stay secret, and two renders are identical.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { validateManifest } from './k8s-validate.ts';
import { countByKind, REPO, renderStack, type Manifest, type Render } from '../../harness/stack-render.ts';

let render: Render;
before(async () => {
  render = await renderStack({ stack: 'ha' });
});

const find = (kind: string, name: string): any => {
  const found = render.manifests.filter((m) => m.kind === kind && m.metadata.name === name);
  assert.equal(found.length, 1, `one ${kind} ${name}`);
  return found[0] as Manifest;
};
const kesdSts = () => find('StatefulSet', 'kesd');
const initYml = () => parse(find('ConfigMap', 'kesd-init').data['init.yml']);
const tenantEnv = (): Record<string, string> =>
  Object.fromEntries(find('Tenant', 'myminio').spec.env.map((e: { name: string; value: string }) => [e.name, e.value]));
/** The hosts of MinIO's ellipsis syntax, e.g. https://kesd-{0...2}.x:7373 → kesd-0.x, kesd-1.x, kesd-2.x. */
const expandHosts = (endpoint: string): string[] => {
  const host = new URL(endpoint.replace(/\{(\d+)\.\.\.(\d+)\}/, 'ELLIPSIS')).hostname;
  const m = /\{(\d+)\.\.\.(\d+)\}/.exec(endpoint);
  if (!m) return [host];
  return Array.from({ length: Number(m[2]) - Number(m[1]) + 1 }, (_, i) =>
    host.replace('ellipsis', String(Number(m[1]) + i)),
  );
};

test('the ha stack renders kesd and etcd side by side', () => {
  assert.deepEqual(countByKind(render), {
    'apps/v1/StatefulSet': 2,
    'batch/v1/Job': 1,
    'helm.sh/v4 Chart (remote)': 1,
    'minio.min.io/v2/Tenant': 1,
    'networking.k8s.io/v1/NetworkPolicy': 2,
    'policy/v1/PodDisruptionBudget': 2,
    'v1/ConfigMap': 1,
    'v1/Namespace': 3,
    'v1/Secret': 9,
    'v1/Service': 4,
  });
  assert.equal(kesdSts().spec.replicas, 3);
  assert.equal(find('StatefulSet', 'etcd').spec.replicas, 3);
});

test('every object validates offline: built-in kinds with kubernetes-models, the Tenant against the operator CRD', () => {
  for (const m of render.manifests) assert.deepEqual(validateManifest(m), [], `${m.kind} ${m.metadata.name}`);
});

test('every Kubernetes object and the chart use the kind cluster provider', () => {
  const k8s = render.resources.filter(
    (r) => (r.type.startsWith('kubernetes:') && r.custom !== false) || r.type === 'kubernetes:helm.sh/v4:Chart',
  );
  assert.ok(k8s.length >= 25);
  for (const r of k8s) assert.match(r.provider, /pulumi:providers:kubernetes::kind-k8s::/, `${r.type} ${r.name}`);
});

test("MinIO dials every kesd pod in ellipsis syntax, and each such host is a SAN of kesd's server certificate", () => {
  const endpoint = tenantEnv().MINIO_KMS_KES_ENDPOINT!;
  assert.equal(endpoint, 'https://kesd-{0...2}.kesd-hl.kesd.svc.cluster.local:7373');
  assert.equal((render.outputs as any).kesdMinioEndpoint, endpoint);
  const cert = new X509Certificate(find('Secret', 'kesd-tls').stringData['tls.crt']);
  const hosts = expandHosts(endpoint);
  assert.deepEqual(hosts, [
    'kesd-0.kesd-hl.kesd.svc.cluster.local',
    'kesd-1.kesd-hl.kesd.svc.cluster.local',
    'kesd-2.kesd-hl.kesd.svc.cluster.local',
  ]);
  for (const host of [...hosts, 'kesd.kesd.svc.cluster.local'])
    assert.equal(cert.checkHost(host), host, `${host} in ${cert.subjectAltName}`);
  // Each pod name is what the StatefulSet and its headless Service give the pods.
  assert.equal(kesdSts().spec.serviceName, 'kesd-hl');
  assert.equal(find('Service', 'kesd-hl').spec.clusterIP, 'None');
});

test("readiness: MinIO's pod names stay published while kesd is unready (etcd down); the client Service and the PDB count Ready pods (/v1/ready)", () => {
  const hosts = expandHosts(tenantEnv().MINIO_KMS_KES_ENDPOINT!);
  const headless = find('Service', 'kesd-hl');
  // Pod DNS names live under the StatefulSet's governing Service: the one MinIO's hosts name.
  assert.ok(
    hosts.every((h) => h.split('.')[1] === headless.metadata.name && h.split('.')[2] === headless.metadata.namespace),
  );
  assert.equal(kesdSts().spec.serviceName, headless.metadata.name);
  assert.equal(headless.spec.publishNotReadyAddresses, true);
  assert.equal(find('Service', 'kesd').spec.publishNotReadyAddresses, undefined);
  const c = kesdSts().spec.template.spec.containers[0];
  assert.equal(c.readinessProbe.httpGet.path, '/v1/ready');
  assert.ok(initYml().api['/v1/ready'].skip_auth, 'the kubelet sends no client certificate');
  assert.equal(c.livenessProbe.httpGet, undefined, 'liveness must not depend on etcd');
  assert.equal(c.startupProbe.httpGet, undefined, 'startup must not depend on etcd');
  assert.deepEqual(find('PodDisruptionBudget', 'kesd').spec.selector.matchLabels, kesdSts().spec.selector.matchLabels);
});

test('kesd on etcd: init.yml names every member, the mounted client Secret exists beside it, and the data dir is an emptyDir', () => {
  const store = initYml().store.etcd;
  assert.deepEqual(
    store.endpoints,
    [0, 1, 2].map((i) => `https://etcd-${i}.etcd-hl.kesd.svc.cluster.local:2379`),
  );
  assert.deepEqual((render.outputs as any).etcdEndpoints, store.endpoints);
  assert.equal(store.prefix, 'kesd/');
  const pod = kesdSts().spec.template.spec;
  const etcdVolume = pod.volumes.find((v: { name: string }) => v.name === 'etcd-tls');
  const mount = pod.containers[0].volumeMounts.find((m: { name: string }) => m.name === 'etcd-tls');
  const secret = find('Secret', etcdVolume.secret.secretName);
  assert.equal(
    secret.metadata.namespace,
    kesdSts().metadata.namespace,
    'a pod can only mount Secrets of its own namespace',
  );
  for (const [key, file] of Object.entries(store.tls as Record<string, string>)) {
    assert.equal(file, `${mount.mountPath}/${key === 'ca' ? 'ca.crt' : `tls.${key === 'cert' ? 'crt' : 'key'}`}`);
  }
  assert.deepEqual(Object.keys(secret.stringData).sort(), ['ca.crt', 'tls.crt', 'tls.key']);
  assert.deepEqual(
    pod.volumes.find((v: { name: string }) => v.name === 'data'),
    { name: 'data', emptyDir: { sizeLimit: '16Mi' } },
  );
  assert.equal(kesdSts().spec.volumeClaimTemplates, undefined);
  assert.ok(find('StatefulSet', 'etcd').spec.volumeClaimTemplates.length === 1, 'the keys live on the etcd PVCs');
});

test("kesd's etcd client certificate chains to the CA etcd trusts, and etcd's certificate covers every endpoint kesd dials", () => {
  const client = find('Secret', 'etcd-client-kesd').stringData;
  const server = find('Secret', 'etcd-server-tls').stringData;
  const ca = new X509Certificate(server['ca.crt']);
  assert.equal(client['ca.crt'], server['ca.crt']);
  const clientCert = new X509Certificate(client['tls.crt']);
  assert.ok(clientCert.checkIssued(ca) && clientCert.verify(ca.publicKey));
  const serverCert = new X509Certificate(server['tls.crt']);
  for (const url of initYml().store.etcd.endpoints) assert.ok(serverCert.checkHost(new URL(url).hostname), url);
  // kesd's CA and etcd's are different: neither certificate opens the other's door.
  assert.notEqual(find('Secret', 'kesd-tls').stringData['ca.crt'], server['ca.crt']);
});

test("the etcd NetworkPolicy admits exactly the kesd pods on the client port, and etcd's args fit its Services", () => {
  const np = find('NetworkPolicy', 'etcd').spec;
  const kesdLabels = kesdSts().spec.template.metadata.labels;
  const clientRule = np.ingress.find((r: { ports: { port: number }[] }) => r.ports[0]!.port === 2379);
  for (const [k, v] of Object.entries(clientRule.from[0].podSelector.matchLabels)) assert.equal(kesdLabels[k], v, k);
  assert.equal(find('NetworkPolicy', 'etcd').metadata.namespace, kesdSts().metadata.namespace);
  const etcdSts = find('StatefulSet', 'etcd');
  assert.equal(etcdSts.spec.serviceName, 'etcd-hl');
  const args: string[] = etcdSts.spec.template.spec.containers[0].args;
  assert.ok(
    args.includes(
      '--initial-cluster=' +
        [0, 1, 2].map((i) => `etcd-${i}=https://etcd-${i}.etcd-hl.kesd.svc.cluster.local:2380`).join(','),
    ),
  );
});

test("secrets stay secret: every Secret object's data, the stack's secret outputs; endpoints are plain", async () => {
  const { isSecret } = await import('../../harness/pulumi-mocks.ts');
  const program = await import(join(REPO, 'index.ts'));
  for (const name of ['kubeconfig', 'rootPassword', 'enclaveAdminKey'])
    assert.equal(await isSecret(program[name]), true, name);
  for (const name of ['kesdEndpoint', 'kesdMinioEndpoint', 'etcdEndpoints', 'kesdCaCert'])
    assert.equal(await isSecret(program[name]), false, name);
  const SECRET = '4dabf18193072939515e22adb298388d';
  const secrets = render.resources.filter((x) => x.type === 'kubernetes:core/v1:Secret');
  assert.equal(secrets.length, 9);
  for (const r of secrets)
    assert.ok(
      JSON.stringify(r.inputs.stringData ?? r.inputs.data).includes(SECRET),
      `${r.name}: its data is not marked secret`,
    );
  assert.ok(
    !JSON.stringify(render.manifests.filter((m) => m.kind !== 'Secret')).includes('PRIVATE KEY'),
    'no private key outside a Secret',
  );
});

test('determinism: two renders of the ha stack (fresh processes, one TLS cache) are identical', {
  timeout: 120_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stack-ha-'));
  try {
    const renderOnce = async (out: string) => {
      await promisify(execFile)(
        process.execPath,
        [
          '--import',
          'tsx',
          join(REPO, 'scripts/render.mts'),
          '--out',
          out,
          '--stack',
          'ha',
          '--tls-cache',
          join(dir, 'tls-cache.json'),
        ],
        { cwd: REPO },
      );
      const files = (await readdir(out)).sort();
      return (await Promise.all(files.map(async (f) => `# ${f}\n${await readFile(join(out, f), 'utf8')}`))).join('');
    };
    const first = await renderOnce(join(dir, 'a'));
    assert.match(first, /kesd--statefulset--etcd\.yaml/);
    assert.equal(await renderOnce(join(dir, 'b')), first);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
