// EtcdCluster under Pulumi mocks (real certificates from tls-mock.ts, standing in for the tls provider plugin), and
// the rendered members run for real: three etcd processes with the StatefulSet's args and the rendered Secrets.
import 'reflect-metadata';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@pulumi/kubernetes';
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { Secret, Service } from 'kubernetes-models/v1';
import {
  byType,
  isSecret,
  lineage,
  recordLineage,
  setupMocks,
  unsecret,
  outputValue,
  type RecordedResource,
} from '../../harness/pulumi-mocks.ts';
import { registerTlsMocks } from '../../harness/tls-mock.ts';
import {
  ETCD_CONTAINER_SECURITY_CONTEXT,
  ETCD_IMAGE,
  ETCD_PATHS,
  ETCD_POD_SECURITY_CONTEXT,
  etcdArgs,
  etcdClientEndpoints,
  etcdMemberHosts,
  etcdPeerDnsNames,
  etcdQuotaBytes,
  etcdServerDnsNames,
} from '../../components/etcd-config.ts';

await setupMocks();
registerTlsMocks();
const { EtcdCluster, ETCD_SELECTOR } = await import('../../components/etcd-cluster.ts');

const CLIENTS = { 'app.kubernetes.io/name': 'kesd', 'app.kubernetes.io/component': 'key-server' };
const topology = { namespace: 'kesd', members: 3 };
const EKU = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' };
const K8S = {
  sts: 'kubernetes:apps/v1:StatefulSet',
  svc: 'kubernetes:core/v1:Service',
  secret: 'kubernetes:core/v1:Secret',
  pdb: 'kubernetes:policy/v1:PodDisruptionBudget',
  netpol: 'kubernetes:networking.k8s.io/v1:NetworkPolicy',
};

let etcd: InstanceType<typeof EtcdCluster>;
before(async () => {
  const provider = new k8s.Provider('kind', { kubeconfig: 'kind-kubeconfig' });
  etcd = new EtcdCluster(
    'etcd',
    { namespace: 'kesd', storageSize: '2Gi', storageClass: 'standard', clientSelector: CLIENTS, provider },
    { transformations: [recordLineage] },
  );
  await Promise.all([outputValue(etcd.statefulSet.id), outputValue(etcd.endpoints), outputValue(etcd.clientCertPem)]);
  for (let i = 0; i < 200 && (byType(K8S.netpol).length < 1 || byType(K8S.secret).length < 3); i++)
    await new Promise((r) => setTimeout(r, 20));
});

const of = (type: string): RecordedResource[] => byType(type).filter((r) => r.name.startsWith('etcd-'));
const secretData = (name: string): Record<string, string> =>
  unsecret(of(K8S.secret).find((s) => s.inputs.metadata.name === name)!.inputs).stringData;
const sts = () => unsecret(of(K8S.sts)[0]!.inputs);
const container = () => sts().spec.template.spec.containers[0];

test('children: three TLS Secrets, two Services, a StatefulSet, a PDB and a NetworkPolicy, all with the passed provider and parented', () => {
  const children = Object.values(K8S).flatMap(of);
  assert.equal(children.length, 8);
  for (const c of children) assert.match(c.provider, /::pulumi:providers:kubernetes::kind::/, c.name);
  for (const c of children) assert.equal(unsecret(c.inputs).metadata.namespace, 'kesd', c.name);
  assert.deepEqual(
    of(K8S.secret)
      .map((s) => s.inputs.metadata.name)
      .sort(),
    ['etcd-client-kesd', 'etcd-peer-tls', 'etcd-server-tls'],
  );
  assert.deepEqual(
    of(K8S.svc)
      .map((s) => s.inputs.metadata.name)
      .sort(),
    ['etcd', 'etcd-hl'],
  );
  for (const name of [
    'etcd-ca-key',
    'etcd-ca',
    'etcd-peer-cert',
    'etcd-server-cert',
    'etcd-client-cert',
    'etcd-sts',
    'etcd-pdb',
    'etcd-netpol',
  ]) {
    assert.equal(lineage.get(name)?.parent, 'etcd', name);
  }
});

test('every object passes kubernetes-models validation', () => {
  assert.doesNotThrow(() => new StatefulSet(sts()).validate());
  for (const s of of(K8S.svc)) assert.doesNotThrow(() => new Service(unsecret(s.inputs)).validate(), s.name);
  for (const s of of(K8S.secret)) assert.doesNotThrow(() => new Secret(unsecret(s.inputs)).validate(), s.name);
  assert.doesNotThrow(() => new PodDisruptionBudget(unsecret(of(K8S.pdb)[0]!.inputs)).validate());
  assert.doesNotThrow(() => new NetworkPolicy(unsecret(of(K8S.netpol)[0]!.inputs)).validate());
});

test("certificates: one etcd CA; the peer cert for every member, both ways; the client-port cert adds the Services and loopback; kesd's for client auth", () => {
  const ca = new X509Certificate(secretData('etcd-peer-tls')['ca.crt']!);
  assert.equal(ca.ca, true);
  const leaf = (name: string) => {
    const data = secretData(name);
    assert.equal(data['ca.crt'], ca.toString(), `${name} carries the etcd CA`);
    const cert = new X509Certificate(data['tls.crt']!);
    assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), name);
    assert.ok(cert.checkPrivateKey(createPrivateKey(data['tls.key']!)), `${name}: key matches`);
    return cert;
  };
  const sans = (c: X509Certificate) => (c.subjectAltName ?? '').split(', ').filter(Boolean);
  const peer = leaf('etcd-peer-tls');
  assert.match(peer.subject, /CN=etcd-peer/);
  assert.deepEqual(
    sans(peer),
    etcdPeerDnsNames(topology).map((n) => `DNS:${n}`),
  );
  assert.deepEqual(peer.keyUsage?.sort(), [EKU.serverAuth, EKU.clientAuth].sort());
  const server = leaf('etcd-server-tls');
  assert.deepEqual(sans(server), [...etcdServerDnsNames(topology).map((n) => `DNS:${n}`), 'IP Address:127.0.0.1']);
  assert.deepEqual(
    server.keyUsage?.sort(),
    [EKU.serverAuth, EKU.clientAuth].sort(),
    "etcd's gateway presents it to its own client port",
  );
  const client = leaf('etcd-client-kesd');
  assert.match(client.subject, /CN=kesd/);
  assert.deepEqual(client.keyUsage, [EKU.clientAuth]);
  assert.equal(sans(client).length, 0);
});

test('private keys reach the provider as secrets; endpoints and certificates are plain outputs', async () => {
  const wrapped = (v: unknown) => JSON.stringify(v).includes('4dabf18193072939515e22adb298388d');
  for (const s of of(K8S.secret)) assert.ok(wrapped(s.inputs.stringData), `${s.name}: tls.key is secret`);
  assert.equal(await isSecret(etcd.endpoints), false);
  assert.equal(await isSecret(etcd.clientCertPem), false);
  assert.equal(await isSecret(etcd.clientTlsSecretName), false);
});

test('the StatefulSet: three members started together, the pinned image with the computed args, a PVC each kept on delete', () => {
  const s = sts();
  assert.equal(s.metadata.name, 'etcd');
  assert.equal(s.spec.serviceName, 'etcd-hl');
  assert.equal(s.spec.replicas, 3);
  assert.equal(s.spec.podManagementPolicy, 'Parallel');
  assert.deepEqual(s.spec.persistentVolumeClaimRetentionPolicy, { whenDeleted: 'Retain', whenScaled: 'Retain' });
  assert.deepEqual(s.spec.volumeClaimTemplates[0].spec, {
    accessModes: ['ReadWriteOnce'],
    storageClassName: 'standard',
    resources: { requests: { storage: '2Gi' } },
  });
  const c = container();
  assert.equal(c.image, ETCD_IMAGE);
  assert.deepEqual(c.command, ['/usr/local/bin/etcd']);
  assert.deepEqual(c.args, etcdArgs(topology, { quotaBytes: etcdQuotaBytes('2Gi') }));
  assert.deepEqual(c.env, [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }]);
  const mounts = Object.fromEntries(c.volumeMounts.map((m: { mountPath: string }) => [m.mountPath, m]));
  assert.equal(mounts[ETCD_PATHS.dataMount].name, 'data');
  assert.equal(mounts[ETCD_PATHS.peerTlsDir].readOnly, true);
  const volumes = Object.fromEntries(s.spec.template.spec.volumes.map((v: { name: string }) => [v.name, v]));
  assert.equal(volumes['peer-tls'].secret.secretName, 'etcd-peer-tls');
  assert.equal(volumes['server-tls'].secret.secretName, 'etcd-server-tls');
  assert.equal(s.spec.template.spec.enableServiceLinks, false, 'a Service named etcd would inject ETCD_* variables');
});

test('probes use the plain metrics port: /readyz for startup and readiness, /livez for liveness', () => {
  const c = container();
  assert.deepEqual(c.startupProbe.httpGet, { path: '/readyz', port: 'metrics' });
  assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'metrics' });
  assert.deepEqual(c.livenessProbe.httpGet, { path: '/livez', port: 'metrics' });
  assert.ok(
    c.ports.some((p: { name: string; containerPort: number }) => p.name === 'metrics' && p.containerPort === 2381),
  );
  assert.ok(c.args.includes('--listen-metrics-urls=http://0.0.0.0:2381'));
});

test('the security context is restricted: non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp', () => {
  const pod = sts().spec.template.spec;
  assert.deepEqual(pod.securityContext, ETCD_POD_SECURITY_CONTEXT);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.deepEqual(container().securityContext, ETCD_CONTAINER_SECURITY_CONTEXT);
  assert.equal(container().securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(container().securityContext.capabilities, { drop: ['ALL'] });
  assert.equal(pod.automountServiceAccountToken, false);
});

test('Services, PDB and NetworkPolicy: members find each other before ready, quorum survives one disruption, only peers and kesd get in', () => {
  const svc = Object.fromEntries(of(K8S.svc).map((s) => [s.inputs.metadata.name, unsecret(s.inputs)]));
  assert.equal(svc['etcd-hl'].spec.clusterIP, 'None');
  assert.equal(svc['etcd-hl'].spec.publishNotReadyAddresses, true);
  assert.deepEqual(
    svc['etcd-hl'].spec.ports.map((p: { port: number }) => p.port),
    [2379, 2380],
  );
  assert.deepEqual(
    svc.etcd.spec.ports.map((p: { port: number }) => p.port),
    [2379],
  );
  for (const s of Object.values(svc) as { spec: { selector: unknown } }[])
    assert.deepEqual(s.spec.selector, ETCD_SELECTOR);
  assert.deepEqual(unsecret(of(K8S.pdb)[0]!.inputs).spec, {
    maxUnavailable: 1,
    selector: { matchLabels: ETCD_SELECTOR },
  });
  const np = unsecret(of(K8S.netpol)[0]!.inputs).spec;
  assert.deepEqual(np.podSelector.matchLabels, ETCD_SELECTOR);
  assert.deepEqual(np.policyTypes, ['Ingress']);
  assert.deepEqual(np.ingress, [
    { from: [{ podSelector: { matchLabels: CLIENTS } }], ports: [{ protocol: 'TCP', port: 2379 }] },
    { from: [{ podSelector: { matchLabels: ETCD_SELECTOR } }], ports: [{ protocol: 'TCP', port: 2380 }] },
  ]);
});

test("outputs: every member's client URL, the client Secret and certificate kesd needs", async () => {
  assert.deepEqual(await outputValue(etcd.endpoints), etcdClientEndpoints(topology));
  assert.equal(await outputValue(etcd.clientTlsSecretName), 'etcd-client-kesd');
  assert.equal(await outputValue(etcd.clientCertPem), secretData('etcd-client-kesd')['tls.crt']);
});

test('bad member counts and storage sizes fail at construction with a clear message', () => {
  const provider = new k8s.Provider('other', { kubeconfig: 'x' });
  assert.throws(
    () =>
      new EtcdCluster('two', { namespace: 'kesd', members: 2, storageSize: '1Gi', clientSelector: CLIENTS, provider }),
    /members must be 3, 5 or 7, got 2/,
  );
  assert.throws(
    () => new EtcdCluster('tiny', { namespace: 'kesd', storageSize: '8Mi', clientSelector: CLIENTS, provider }),
    /'8Mi' is too small/,
  );
});

// ---- the rendered members, run for real ---------------------------------------------------------------------------

// The member names resolve to 127.0.0.1 through a private /etc/hosts (unshare + bind mount, as
// test/interop/wiring.test.ts does), and each member gets its own free ports in place of 2379/2380/2381: etcd checks a
// peer certificate's DNS names against the connecting address, which on one host is always 127.0.0.1 (in the cluster,
// the sending pod's IP, which its name resolves to). The machine's etcd may be older than the image's: the flags used
// exist in 3.4 and 3.5; the probe paths (/livez, /readyz: 3.5.11+) are not exercised.
const ETCD_BIN = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).stdout.trim();
const canRun = ETCD_BIN !== '' && process.getuid?.() === 0 && spawnSync('unshare', ['-m', 'true']).status === 0;
const members: ChildProcess[] = [];
let dir: string | undefined;
after(async () => {
  // unshare and sh exec into etcd: each child is the etcd process itself.
  await Promise.all(
    members
      .filter((m) => m.exitCode === null)
      .map((m) => new Promise((resolve) => m.once('exit', resolve).kill('SIGTERM'))),
  );
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test("the rendered members form a TLS cluster; kesd's certificate reads and writes, and is refused on the peer port", {
  skip: !canRun && 'needs an etcd binary, root and unshare',
  timeout: 60_000,
}, async () => {
  dir = mkdtempSync(join(tmpdir(), 'etcd-members-'));
  const hosts = etcdMemberHosts(topology);
  const hostsFile = join(dir, 'hosts');
  writeFileSync(hostsFile, `${readFileSync('/etc/hosts', 'utf8')}\n${hosts.map((h) => `127.0.0.1 ${h}`).join('\n')}\n`);
  const ports = await Promise.all(
    hosts.map(async () => ({ 2379: await freePort(), 2380: await freePort(), 2381: await freePort() })),
  );
  const logs = hosts.map(() => '');
  hosts.forEach((_, i) => {
    // The pod's volumes under its own root, then its command line as the kubelet would run it ($(POD_NAME) expanded),
    // with container paths under the root and every member's ports remapped.
    const root = join(dir!, `etcd-${i}`);
    mkdirSync(join(root, ETCD_PATHS.dataMount), { recursive: true });
    for (const [secret, mount] of [
      ['etcd-peer-tls', ETCD_PATHS.peerTlsDir],
      ['etcd-server-tls', ETCD_PATHS.serverTlsDir],
    ] as const) {
      mkdirSync(join(root, mount), { recursive: true });
      for (const [file, content] of Object.entries(secretData(secret)))
        writeFileSync(join(root, mount, file), content, { mode: 0o600 });
    }
    const args = (container().args as string[]).map((a) =>
      a
        .replaceAll('$(POD_NAME)', `etcd-${i}`)
        .replace(/^(--[a-z-]+=)(\/.*)$/, (_, flag: string, path: string) => flag + join(root, path))
        .replace(/0\.0\.0\.0:(2379|2380|2381)/g, (_, port: '2379') => `127.0.0.1:${ports[i]![port]}`)
        .replace(
          /(etcd-(\d)\.[a-z0-9.-]+):(2379|2380)/g,
          (_, host: string, m: string, port: '2379') => `${host}:${ports[Number(m)]![port]}`,
        ),
    );
    const child = spawn(
      'unshare',
      ['-m', 'sh', '-c', `mount --bind ${hostsFile} /etc/hosts && exec "$0" "$@"`, ETCD_BIN, ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr!.on('data', (d) => (logs[i] += d));
    members.push(child);
  });

  const data = secretData('etcd-client-kesd');
  const kesdCert = { cert: data['tls.crt'], key: data['tls.key'] };
  const call = (
    i: number,
    path: string,
    body: unknown,
    port: 2379 | 2380 = 2379,
    identity: { cert?: string; key?: string } = kesdCert,
  ) =>
    new Promise<{ status: number; json: any }>((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port: ports[i]![port],
          path,
          method: 'POST',
          servername: hosts[i],
          ca: data['ca.crt'],
          ...identity,
          agent: false,
        },
        (res) => {
          let text = '';
          res
            .setEncoding('utf8')
            .on('data', (d) => (text += d))
            .on('end', () =>
              resolve({
                status: res.statusCode!,
                json: res.headers['content-type']?.includes('json') ? JSON.parse(text) : text,
              }),
            );
        },
      );
      req.setTimeout(2_000, () => req.destroy(new Error(`no answer from ${hosts[i]}:${port}${path}`)));
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  const b64 = (text: string) => Buffer.from(text).toString('base64');
  try {
    // A linearizable read through a member succeeds only once the cluster has a leader.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const ok = await Promise.all(
        hosts.map((_, m) =>
          call(m, '/v3/kv/range', { key: b64('probe') }).then(
            (r) => r.status === 200,
            () => false,
          ),
        ),
      );
      if (ok.every(Boolean)) break;
      if (Date.now() > deadline) throw new Error('no quorum after 30 s');
      await new Promise((r) => setTimeout(r, 200));
    }
    const list = (await call(0, '/v3/cluster/member/list', {})).json.members as {
      name: string;
      clientURLs: string[];
    }[];
    assert.deepEqual(list.map((m) => m.name).sort(), ['etcd-0', 'etcd-1', 'etcd-2']);
    assert.deepEqual(
      list.flatMap((m) => m.clientURLs.map((u) => new URL(u).hostname)).sort(),
      etcdClientEndpoints(topology).map((u) => new URL(u).hostname),
    );
    // A write through one member is read back through another.
    assert.equal((await call(0, '/v3/kv/put', { key: b64('kesd/probe'), value: b64('sealed') })).status, 200);
    const read = await call(2, '/v3/kv/range', { key: b64('kesd/probe') });
    assert.equal(Buffer.from(read.json.kvs[0].value, 'base64').toString(), 'sealed');
    // No client certificate: refused. kesd's certificate on the peer port: refused (its CN is not etcd-peer).
    const refused = /alert (bad certificate|certificate required)/;
    await assert.rejects(call(1, '/v3/kv/range', { key: b64('kesd/probe') }, 2379, {}), refused);
    await assert.rejects(call(1, '/members', {}, 2380), refused);
    const peer = secretData('etcd-peer-tls');
    assert.equal(
      (
        await call(1, '/members', {}, 2380, { cert: peer['tls.crt'], key: peer['tls.key'] }).catch((e) => ({
          status: String(e),
        }))
      ).status,
      405,
      'a peer gets through (POST is the wrong method: 405)',
    );
  } catch (err) {
    (err as Error).message += `\n--- etcd-0 log ---\n${logs[0]!.split('\n').slice(-20).join('\n')}`;
    throw err;
  }
});
