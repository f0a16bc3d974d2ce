// The Kubernetes API the engine suite deploys to: $KUBECONFIG when set (a user's cluster), else a local control
// plane on loopback: etcd, kube-apiserver, kube-controller-manager and kube-scheduler, plus kwok, which plays the
// kubelet for fake nodes (pods become Ready and Job pods complete, without containers), and static hostPath
// PersistentVolumes without a storage class so the StatefulSets' claims bind. Only processes started here are stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import * as net from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { clusterPki } from './pki.ts';
import { run, waitFor } from './run.ts';
import type { Toolchain } from './toolchain.ts';

export interface Cluster {
  readonly kubeconfig: string;
  /** Whether the suite started it (and may assume it is empty apart from what the suite makes). */
  readonly local: boolean;
  kubectl(args: string[], stdin?: string): Promise<string>;
  stop(): Promise<void>;
}

const NODES = 3;
const VOLUMES = 30;

async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((ok, fail) => {
          const s = net.createServer();
          s.once('error', fail).listen(0, '127.0.0.1', () => ok(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((ok) => s.close(ok))));
  return ports;
}

function kubectlFor(toolchain: Toolchain, kubeconfig: string, log: string) {
  return async (args: string[], stdin?: string): Promise<string> => {
    const r = await run(toolchain.kubectl, ['--kubeconfig', kubeconfig, ...args], { stdin, timeoutMs: 120_000, log });
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  };
}

export async function startCluster(toolchain: Toolchain, dir: string): Promise<Cluster> {
  const log = join(dir, 'kubectl.log');
  if ('kubeconfig' in toolchain.cluster) {
    const kubectl = kubectlFor(toolchain, toolchain.cluster.kubeconfig, log);
    await kubectl(['get', '--raw', '/readyz']);
    return { kubeconfig: toolchain.cluster.kubeconfig, local: false, kubectl, stop: async () => undefined };
  }
  const bin = toolchain.cluster.binaries;
  await mkdir(join(dir, 'pki'), { recursive: true });
  const pki = await clusterPki();
  const file = (name: string) => join(dir, 'pki', name);
  for (const [name, content] of Object.entries({
    'ca.crt': pki.caCert,
    'ca.key': pki.caKey,
    'apiserver.crt': pki.apiserverCert,
    'apiserver.key': pki.apiserverKey,
    'sa.key': pki.serviceAccountKey,
    'sa.pub': pki.serviceAccountPub,
  }))
    await writeFile(file(name), content, { mode: 0o600 });

  const [etcdClient, etcdPeer, api, controllerManager, scheduler, kwokServer, kwokNode] = await freePorts(7);
  const kubeconfig = join(dir, 'admin.kubeconfig');
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  await writeFile(
    kubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'engine',
      clusters: [
        {
          name: 'engine',
          cluster: { server: `https://127.0.0.1:${api}`, 'certificate-authority-data': b64(pki.caCert) },
        },
      ],
      users: [
        {
          name: 'admin',
          user: { 'client-certificate-data': b64(pki.adminCert), 'client-key-data': b64(pki.adminKey) },
        },
      ],
      contexts: [{ name: 'engine', context: { cluster: 'engine', user: 'admin' } }],
    }),
    { mode: 0o600 },
  );
  const kubectl = kubectlFor(toolchain, kubeconfig, log);

  const children: ChildProcess[] = [];
  const exited = new Map<string, string>();
  const start = (name: string, file: string, args: string[]) => {
    const out = createWriteStream(join(dir, `${name}.log`));
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.pipe(out, { end: false });
    child.stderr!.pipe(out, { end: false });
    child.once('exit', (code, signal) => {
      exited.set(name, `${code ?? signal}`);
      out.end();
    });
    children.push(child);
  };
  const alive = async () => {
    if (exited.size > 0)
      throw new Error(`exited: ${[...exited].map(([n, c]) => `${n} (${c}, see ${join(dir, `${n}.log`)})`).join(', ')}`);
  };
  const stop = async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((ok) => {
            if (child.exitCode !== null || child.signalCode !== null) return ok();
            const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
            child.once('exit', () => {
              clearTimeout(kill);
              ok();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
  };
  process.once('exit', () => children.forEach((c) => c.kill('SIGKILL')));

  try {
    start('etcd', bin.etcd, [
      '--name',
      'engine',
      '--data-dir',
      join(dir, 'etcd'),
      '--listen-client-urls',
      `http://127.0.0.1:${etcdClient}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${etcdClient}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${etcdPeer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${etcdPeer}`,
      '--initial-cluster',
      `engine=http://127.0.0.1:${etcdPeer}`,
      '--quota-backend-bytes',
      String(2 * 1024 ** 3),
    ]);
    start('kube-apiserver', bin['kube-apiserver'], [
      `--etcd-servers=http://127.0.0.1:${etcdClient}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${api}`,
      `--tls-cert-file=${file('apiserver.crt')}`,
      `--tls-private-key-file=${file('apiserver.key')}`,
      `--client-ca-file=${file('ca.crt')}`,
      `--service-account-key-file=${file('sa.pub')}`,
      `--service-account-signing-key-file=${file('sa.key')}`,
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      '--service-cluster-ip-range=10.96.0.0/16',
      '--authorization-mode=Node,RBAC',
      '--allow-privileged=true',
      '--endpoint-reconciler-type=none',
      '--enable-priority-and-fairness=false',
      // v1.34 serves watches from resourceVersion ""/"0" as streaming lists, which need etcd's watch-progress
      // requests; Debian's etcd 3.4 has none, such watches end at once and kwok reacts many seconds late.
      '--feature-gates=WatchList=false',
    ]);
    await waitFor(
      'kube-apiserver /readyz',
      90_000,
      async () => (await alive(), (await kubectl(['get', '--raw', '/readyz'])).trim() === 'ok' || undefined),
    );
    start('kube-controller-manager', bin['kube-controller-manager'], [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${controllerManager}`,
      '--leader-elect=false',
      '--use-service-account-credentials=false',
      `--service-account-private-key-file=${file('sa.key')}`,
      `--root-ca-file=${file('ca.crt')}`,
      `--cluster-signing-cert-file=${file('ca.crt')}`,
      `--cluster-signing-key-file=${file('ca.key')}`,
    ]);
    start('kube-scheduler', bin['kube-scheduler'], [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${scheduler}`,
      '--leader-elect=false',
      // A StatefulSet pod can reach the scheduler before its claim is bound; it must not then sit out the default 5 minutes.
      '--pod-max-in-unschedulable-pods-duration=15s',
    ]);
    await writeFile(
      join(dir, 'kwok.yaml'),
      stringify({
        apiVersion: 'config.kwok.x-k8s.io/v1alpha1',
        kind: 'KwokConfiguration',
        options: {
          cidr: '10.244.0.1/16',
          nodeIP: '127.0.0.1',
          manageNodesWithAnnotationSelector: 'kwok.x-k8s.io/node=fake',
          serverAddress: `127.0.0.1:${kwokServer}`,
          nodePort: kwokNode,
          nodeLeaseDurationSeconds: 40,
        },
      }),
    );
    start('kwok', bin.kwok, ['--kubeconfig', kubeconfig, '--config', join(dir, 'kwok.yaml')]);

    const resources = { cpu: '32', memory: '128Gi', pods: '110', 'ephemeral-storage': '500Gi' };
    const nodes = Array.from({ length: NODES }, (_, i) => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: `kwok-node-${i}`,
        annotations: { 'kwok.x-k8s.io/node': 'fake' },
        labels: {
          'kubernetes.io/arch': 'amd64',
          'kubernetes.io/os': 'linux',
          'kubernetes.io/hostname': `kwok-node-${i}`,
          'topology.kubernetes.io/zone': `zone-${i}`,
          type: 'kwok',
        },
      },
      status: {
        allocatable: resources,
        capacity: resources,
        nodeInfo: { architecture: 'amd64', operatingSystem: 'linux', kubeletVersion: 'v1.34.4' },
      },
    }));
    const volumes = Array.from({ length: VOLUMES }, (_, i) => ({
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: { name: `engine-pv-${i}`, labels: { 'engine.stateful-kes/static': 'true' } },
      spec: {
        capacity: { storage: '10Gi' },
        accessModes: ['ReadWriteOnce'],
        persistentVolumeReclaimPolicy: 'Retain',
        hostPath: { path: join(dir, 'pv', String(i)) },
      },
    }));
    await kubectl(['apply', '-f', '-'], nodes.map((n) => stringify(n)).join('---\n'));
    await waitFor(`${NODES} Ready nodes`, 90_000, async () => {
      await alive();
      const list = JSON.parse(await kubectl(['get', 'nodes', '-o', 'json'])) as {
        items: { status: { conditions?: { type: string; status: string }[] } }[];
      };
      return (
        list.items.filter((n) => n.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).length >=
          NODES || undefined
      );
    });
    await kubectl(['apply', '-f', '-'], volumes.map((v) => stringify(v)).join('---\n'));
    await waitFor(
      'the default ServiceAccount',
      60_000,
      async () => (
        await alive(),
        (await kubectl(['-n', 'default', 'get', 'serviceaccount', 'default', '-o', 'name'])).trim() !== '' || undefined
      ),
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { kubeconfig, local: true, kubectl, stop };
}
