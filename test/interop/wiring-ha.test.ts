// Wiring proof of the HA shape (Pulumi.ha.yaml) without a cluster: the rendered etcd StatefulSet runs as three etcd
// members, the rendered kesd StatefulSet as three replicas on them, and the real MinIO with the rendered Tenant env,
// whose KES endpoint is the ellipsis https://kesd-{0...2}.kesd-hl.<ns>.svc.cluster.local:7373, expanded by MinIO.
// An SSE-KMS put/get works; after a SIGKILL of one replica, MinIO fails over and puts/gets keep working; after etcd
// loses its quorum every replica is unready (/v1/ready 504), yet MinIO still reaches them by their pod names (the
// headless Service publishes not-ready pods) and puts/gets work through the keys kesd has cached.
//
// Names resolve through a private /etc/hosts. Each kesd pod gets its own loopback address (a "pod IP") and listens
// on the rendered port, so MinIO dials the endpoint verbatim. The etcd members resolve to 127.0.0.1 on free ports
// instead: etcd checks a peer certificate's names against the connecting address, and on one host a connection
// always comes from 127.0.0.1 (test/components/etcd-cluster.test.ts); kesd's init.yml gets those ports.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KESD_BIN } from '../kesd/cli-process.js';
import { ETCD_BIN, ETCD_SKIP } from '../../harness/etcd.ts';
import { renderStack } from '../../harness/stack-render.ts';
import { Mc, tail, type Minio } from '../../harness/minio-stack.ts';
import {
  containerEnv,
  expandVars,
  layOutVolumes,
  PodProcess,
  podHostname,
  privateHosts,
  remapArgPath,
  remapInitPaths,
  Rendered,
  tenantMinio,
  until,
} from './wiring-pods.ts';

const KESD_PORT = 7373;
const ETCD_PORTS = [2379, 2380, 2381] as const;

describe('the rendered HA shape: 3 etcd members, 3 kesd replicas, MinIO on the ellipsis endpoint', {
  skip: ETCD_SKIP,
  timeout: 120_000,
}, () => {
  let dir: string;
  let r: Rendered;
  let minio: Minio | undefined;
  let mc: Mc;
  let podIps: string[];
  const etcd: PodProcess[] = [];
  const replicas: PodProcess[] = [];
  let running = false;
  let victim = -1;
  const explain = () =>
    `${[...etcd, ...replicas].map((p) => p.tail(15)).join('\n')}${minio ? `\n--- minio ---\n${tail(minio.log, 30)}` : ''}`;
  const hash = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const first = randomBytes(256 * 1024);
  /** Writes `objects` through MinIO and reads them back, with the object written first; throws with the logs. */
  const roundTrip = async (name: string, objects: Buffer[]) => {
    try {
      const local = join(dir, name);
      await mkdir(local);
      for (const [i, data] of objects.entries()) await writeFile(join(local, `obj-${i}`), data);
      await mc.run(['cp', '--recursive', `${local}/`, `local/wired/${name}/`]);
      await mc.run(['cp', '--recursive', `local/wired/${name}/`, `${local}-back/`]);
      for (const [i, data] of objects.entries())
        assert.equal(hash(await readFile(join(`${local}-back`, `obj-${i}`))), hash(data), `${name}/obj-${i}`);
      await mc.run(['cp', 'local/wired/first', join(dir, `${name}-first`)]);
      assert.equal(hash(await readFile(join(dir, `${name}-first`))), hash(first), 'the object written first');
    } catch (err) {
      (err as Error).message += `\n${explain()}`;
      throw err;
    }
  };

  /** The rendered readiness probe against each pod: HTTPS GET, no client certificate, no server verification. */
  const readiness = (ips = podIps) => {
    const container = r.find('StatefulSet', 'kesd').spec.template.spec.containers[0];
    const probe = container.readinessProbe.httpGet;
    assert.equal(probe.scheme, 'HTTPS');
    assert.equal(container.ports.find((p: { name: string }) => p.name === probe.port).containerPort, KESD_PORT);
    return Promise.all(ips.map((ip) => getStatus(ip, KESD_PORT, probe.path).catch(() => 0)));
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kesd-wiring-ha-'));
    r = new Rendered((await renderStack({ stack: 'ha' })).manifests);
  });

  after(async () => {
    await minio?.stop();
    await Promise.all([...etcd, ...replicas].map((p) => p.stop('SIGKILL')));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('etcd and kesd start from the rendered StatefulSets; MinIO reaches kesd by the pod names in its endpoint; an SSE-KMS put/get works', async () => {
    const etcdSts = r.find('StatefulSet', 'etcd');
    const kesdSts = r.find('StatefulSet', 'kesd');
    const etcdHosts = Array.from({ length: etcdSts.spec.replicas }, (_, i) => podHostname(etcdSts, i));
    const kesdHosts = Array.from({ length: kesdSts.spec.replicas }, (_, i) => podHostname(kesdSts, i));
    assert.equal(kesdHosts.length, 3);
    const endpoint = r.find('Tenant').spec.env.find((e: { name: string }) => e.name === 'MINIO_KMS_KES_ENDPOINT')
      .value as string;
    assert.match(endpoint, /\{0\.\.\.2\}/, 'MinIO expands the pods itself');
    assert.equal(new URL(endpoint.replace('{0...2}', '0')).port, String(KESD_PORT));
    // MinIO verifies kesd by the name it dials: every pod name must be in the server certificate.
    const serverCert = new X509Certificate(r.secret('kesd-tls')['tls.crt']!);
    for (const host of kesdHosts)
      assert.equal(
        serverCert.checkHost(host),
        host,
        `${host} is not a SAN of kesd's certificate: ${serverCert.subjectAltName}`,
      );

    podIps = await podAddresses(kesdHosts.length, KESD_PORT);
    const launcher = await privateHosts(join(dir, 'hosts'), [
      ...etcdHosts.map((h) => ['127.0.0.1', h] as [string, string]),
      ...kesdHosts.map((h, i) => [podIps[i]!, h] as [string, string]),
    ]);

    // 1. etcd: each member's pod laid out, its args as the kubelet expands them, paths and ports remapped.
    const free = await distinctFreePorts(etcdHosts.length * ETCD_PORTS.length);
    const etcdPorts = etcdHosts.map(
      (_, m) =>
        Object.fromEntries(ETCD_PORTS.map((p, k) => [p, free[m * ETCD_PORTS.length + k]!])) as Record<number, number>,
    );
    /** A member's host:port (rendered port) → its free port, in etcd's args and kesd's init.yml. */
    const remapEtcdAddresses = (text: string) =>
      etcdHosts.reduce(
        (s, host, m) =>
          s.replace(
            new RegExp(`${host.replaceAll('.', '\\.')}:(${ETCD_PORTS.join('|')})\\b`, 'g'),
            (_, p: string) => `${host}:${etcdPorts[m]![Number(p)]}`,
          ),
        text,
      );
    const etcdContainer = etcdSts.spec.template.spec.containers[0];
    for (const [i, host] of etcdHosts.entries()) {
      const name = `${etcdSts.metadata.name}-${i}`;
      const root = join(dir, name);
      await layOutVolumes(r, etcdSts, root);
      const env = containerEnv(r, etcdContainer, name);
      const args = (etcdContainer.args as string[]).map((a) =>
        remapEtcdAddresses(remapArgPath(expandVars(a, env), root)).replace(
          /0\.0\.0\.0:(\d+)/g,
          (_, p: string) => `127.0.0.1:${etcdPorts[i]![Number(p)]}`,
        ),
      );
      assert.ok(
        args.some((a) => a.includes(host)),
        `${name} advertises its pod name`,
      );
      etcd.push(new PodProcess(name, [...launcher, ETCD_BIN!, ...args], process.env));
    }
    // The metrics port is plain HTTP; /health is true once the member sees a leader (etcd 3.4 has no /readyz).
    await until(
      'etcd did not elect a leader',
      30_000,
      async () => {
        const health = await Promise.all(
          etcdPorts.map((p) =>
            fetch(`http://127.0.0.1:${p[2381]}/health`).then((res) => res.json() as Promise<{ health?: string }>),
          ),
        );
        return health.every((h) => h.health === 'true');
      },
      explain,
    );

    // 2. kesd: three replicas started together (podManagementPolicy Parallel), each on its pod IP and its own data dir.
    const kesdContainer = kesdSts.spec.template.spec.containers[0];
    for (const [i, ip] of podIps.entries()) {
      const name = `${kesdSts.metadata.name}-${i}`;
      const root = join(dir, name);
      await layOutVolumes(r, kesdSts, root, (content) => remapEtcdAddresses(remapInitPaths(content, root)));
      const env = containerEnv(r, kesdContainer, name);
      const args = (kesdContainer.args as string[]).map((a) =>
        remapArgPath(expandVars(a, env), root).replace(/^0\.0\.0\.0:(\d+)$/, `${ip}:$1`),
      );
      replicas.push(
        new PodProcess(name, [...launcher, process.execPath, KESD_BIN, ...args], { ...process.env, ...env }),
      );
    }
    // Ready as the kubelet sees it: the rendered probe (HTTPS, no client certificate). /v1/ready needs the store.
    await until(
      'the kesd replicas did not become ready',
      60_000,
      async () => (await readiness()).every((s) => s === 200),
      explain,
    );

    // 3. MinIO with the Tenant's env as rendered: the ellipsis endpoint, the client certificate, the CA.
    const started = await tenantMinio(r, join(dir, 'minio'), launcher);
    minio = started.minio;
    mc = new Mc(join(dir, 'mc'));
    try {
      await minio.start();
      await mc.alias(minio);
      await mc.run(['mb', 'local/wired']);
      await mc.run(['encrypt', 'set', 'sse-kms', started.tenantEnv.MINIO_KMS_KES_KEY_NAME!, 'local/wired']);
      await writeFile(join(dir, 'first'), first);
      await mc.run(['cp', join(dir, 'first'), 'local/wired/first']);
      await mc.run(['cp', 'local/wired/first', join(dir, 'first-back')]);
      assert.equal(hash(await readFile(join(dir, 'first-back'))), hash(first));
      const [stat] = await mc.json(['stat', 'local/wired/first']);
      assert.equal(stat.metadata['X-Amz-Server-Side-Encryption'], 'aws:kms');
      running = true;
    } catch (err) {
      (err as Error).message += `\n${explain()}`;
      throw err;
    }
  });

  test('a SIGKILLed replica: MinIO fails over to the others, puts and gets keep working', async (t) => {
    assert.ok(running, 'the stack did not start');
    // The replica MinIO used most, with its process group (kesd and any worker), as a node loss would take it.
    const callsBefore = replicas.map(kmsCalls);
    assert.ok(callsBefore.reduce((a, b) => a + b) > 0, 'MinIO made no KMS call');
    victim = callsBefore.indexOf(Math.max(...callsBefore));
    await replicas[victim]!.stop('SIGKILL');
    t.diagnostic(`KMS calls per replica: ${callsBefore.join(', ')}; killed ${replicas[victim]!.name}`);

    // 12 puts and 13 gets: every KMS call picks an endpoint at random (kms-go), so all of them miss the dead pod with
    // a chance of (2/3)^25 only; a call that hits it must fail over, or mc reports the error.
    await roundTrip(
      'after-kill',
      Array.from({ length: 12 }, () => randomBytes(64 * 1024)),
    );
    const callsAfter = replicas.map(kmsCalls);
    t.diagnostic(`KMS calls per replica after the kill: ${callsAfter.join(', ')}`);
    const survivors = callsAfter.map((n, i) => n - callsBefore[i]!).filter((_, i) => i !== victim);
    assert.ok(survivors.reduce((a, b) => a + b) >= 12, `the survivors served the puts: ${survivors.join(', ')}`);
  });

  test('etcd loses its quorum: every replica turns unready, and MinIO still puts and gets through the keys kesd has cached', async (t) => {
    assert.ok(victim >= 0, 'the previous test did not run');
    // Cluster DNS keeps a pod's name while it is unready only because the headless Service publishes not-ready
    // addresses; the private hosts file, left as it is, stands in for that.
    assert.equal(r.find('Service', 'kesd-hl').spec.publishNotReadyAddresses, true);
    await Promise.all(etcd.slice(1).map((m) => m.stop('SIGKILL')));
    const live = podIps.filter((_, i) => i !== victim);
    await until(
      'the replicas stayed ready without etcd',
      20_000,
      async () => (await readiness(live)).every((s) => s === 504),
      explain,
    );
    const callsBefore = replicas.map(kmsCalls);
    await roundTrip(
      'no-quorum',
      Array.from({ length: 4 }, () => randomBytes(64 * 1024)),
    );
    t.diagnostic(
      `/v1/ready without quorum: ${(await readiness(live)).join(', ')}; KMS calls per replica meanwhile: ${replicas.map((p, i) => kmsCalls(p) - callsBefore[i]!).join(', ')}`,
    );
  });
});

/** Key API calls a replica served, from its audit log (JSON lines on stdout). */
function kmsCalls(replica: PodProcess): number {
  return replica.stdout.split('\n').filter((line) => line.includes('"/v1/key/')).length;
}

/** The status of a GET like the kubelet's HTTPS probe: no client certificate, the server certificate not verified. */
function getStatus(host: string, port: number, path: string): Promise<number> {
  return new Promise((res, rej) => {
    const req = https.get({ host, port, path, rejectUnauthorized: false, agent: false, timeout: 3_000 }, (r) => {
      r.resume();
      res(r.statusCode!);
    });
    req.on('timeout', () => req.destroy(new Error('timeout'))).on('error', rej);
  });
}

/** Distinct free loopback ports, all held open until every one is picked. */
async function distinctFreePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((res, rej) => {
          const s = createServer()
            .once('error', rej)
            .listen(0, '127.0.0.1', () => res(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((res) => s.close(res))));
  return ports;
}

/**
 * One loopback address per pod, all free on `port`: 127.X.Y.11, .12, … with X and Y random, so concurrent runs and
 * other listeners on 127.0.0.1 do not collide.
 */
async function podAddresses(count: number, port: number): Promise<string[]> {
  const free = (ip: string) =>
    new Promise<boolean>((res) => {
      const s = createServer()
        .once('error', () => res(false))
        .listen(port, ip, () => s.close(() => res(true)));
    });
  for (let attempt = 0; attempt < 5; attempt++) {
    const base = `127.${100 + Math.floor(Math.random() * 150)}.${Math.floor(Math.random() * 256)}`;
    const ips = Array.from({ length: count }, (_, i) => `${base}.${11 + i}`);
    if ((await Promise.all(ips.map(free))).every(Boolean)) return ips;
  }
  throw new Error(`port ${port} is taken on every loopback address tried: does a process listen on 0.0.0.0:${port}?`);
}
