// A real Kubernetes API server for the Kubernetes auth method of Vault: etcd (the machine's) and kube-apiserver on
// loopback, with a generated PKI, RBAC, and ServiceAccount tokens it signs and reviews itself (TokenRequest and
// TokenReview are served by the API server alone: no controller manager, no nodes). The binary is not an interop peer
// (k8s.io/kubernetes does not build from one module): it is found at $KESD_KUBE_APISERVER or in the engine cache
// (/work/shared/tools/pulumi-engine builds it), else KUBE_APISERVER_SKIP says why a test cannot run.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { ETCD_BIN } from './etcd.js';
import { freePort, sleep, tail } from './minio-stack.js';
import { newTestCa } from './test-ca.js';

export const KUBE_APISERVER_BIN =
  process.env.KESD_KUBE_APISERVER ||
  join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'stateful-kes', 'engine', 'bin', 'kube-apiserver');

export const KUBE_APISERVER_SKIP: string | undefined = !existsSync(KUBE_APISERVER_BIN)
  ? `no kube-apiserver at ${KUBE_APISERVER_BIN} (set KESD_KUBE_APISERVER; /work/shared/tools/pulumi-engine/recipes.sh kube builds one)`
  : ETCD_BIN === undefined
    ? 'etcd is not installed (apt-get install -y etcd-server)'
    : undefined;

const ISSUER = 'https://kubernetes.default.svc.cluster.local';

export interface KubeApiServer {
  readonly url: string;
  /** The ServiceAccount token issuer, also the API server's own audience. */
  readonly issuer: string;
  readonly caPem: string;
  /** A call as the cluster admin (a system:masters client certificate). */
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** A token of a ServiceAccount (created if missing, with its namespace) for the audience, by TokenRequest. */
  serviceAccountToken(namespace: string, name: string, audience: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startKubeApiServer(): Promise<KubeApiServer> {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-kube-'));
  const [etcdPort, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
  const ca = await newTestCa('kesd test Kubernetes CA');
  const serving = await ca.issue('kube-apiserver', { ips: ['127.0.0.1'], dnsNames: ['localhost', 'kubernetes'] });
  // The test acts as the cluster admin with a static token in group system:masters (--token-auth-file).
  const adminToken = `admin-${Math.random().toString(36).slice(2)}`;
  const sa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const files = {
    ca: join(dir, 'ca.crt'),
    cert: join(dir, 'apiserver.crt'),
    key: join(dir, 'apiserver.key'),
    saKey: join(dir, 'sa.key'),
    saPub: join(dir, 'sa.pub'),
    tokens: join(dir, 'tokens.csv'),
  };
  await writeFile(files.ca, ca.certPem);
  await writeFile(files.cert, serving.certPem);
  await writeFile(files.key, serving.keyPem, { mode: 0o600 });
  await writeFile(files.saKey, sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await writeFile(files.saPub, sa.publicKey.export({ type: 'spki', format: 'pem' }));
  await writeFile(files.tokens, `${adminToken},kubernetes-admin,admin-uid,"system:masters"\n`, { mode: 0o600 });

  const children: ChildProcess[] = [];
  const launch = (name: string, bin: string, args: string[]) => {
    const out = createWriteStream(join(dir, `${name}.log`));
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
    children.push(child);
    return child;
  };
  launch('etcd', ETCD_BIN!, [
    '--name',
    'kube',
    '--data-dir',
    join(dir, 'etcd'),
    '--listen-client-urls',
    `http://127.0.0.1:${etcdPort}`,
    '--advertise-client-urls',
    `http://127.0.0.1:${etcdPort}`,
    '--listen-peer-urls',
    `http://127.0.0.1:${etcdPeer}`,
    '--initial-advertise-peer-urls',
    `http://127.0.0.1:${etcdPeer}`,
    '--initial-cluster',
    `kube=http://127.0.0.1:${etcdPeer}`,
  ]);
  const api = launch('kube-apiserver', KUBE_APISERVER_BIN, [
    `--etcd-servers=http://127.0.0.1:${etcdPort}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${apiPort}`,
    `--tls-cert-file=${files.cert}`,
    `--tls-private-key-file=${files.key}`,
    `--token-auth-file=${files.tokens}`,
    `--service-account-key-file=${files.saPub}`,
    `--service-account-signing-key-file=${files.saKey}`,
    `--service-account-issuer=${ISSUER}`,
    '--service-cluster-ip-range=10.96.0.0/16',
    '--authorization-mode=RBAC',
    '--endpoint-reconciler-type=none',
    '--enable-priority-and-fairness=false',
    '--feature-gates=WatchList=false',
  ]);
  const agent = new https.Agent({ ca: ca.certPem, keepAlive: true });
  const url = `https://127.0.0.1:${apiPort}`;
  const call = (method: string, path: string, body?: unknown) =>
    new Promise<{ status: number; body: any }>((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = https.request(
        {
          host: '127.0.0.1',
          port: apiPort,
          method,
          path,
          agent,
          headers: {
            authorization: `Bearer ${adminToken}`,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              // not JSON (readyz says "ok")
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  const stop = async () => {
    agent.destroy();
    for (const c of children.reverse()) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([gone, sleep(10_000).then(() => c.kill('SIGKILL'))]);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; ; i++) {
      if (api.exitCode !== null)
        throw new Error(`kube-apiserver exited with ${api.exitCode}:\n${tail(join(dir, 'kube-apiserver.log'))}`);
      const ready = await call('GET', '/readyz').catch(() => undefined);
      if (ready?.status === 200) break;
      if (i > 900) throw new Error(`kube-apiserver did not become ready:\n${tail(join(dir, 'kube-apiserver.log'))}`);
      await sleep(200);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const ensure = async (path: string, object: unknown) => {
    const r = await call('POST', path, object);
    if (r.status !== 201 && r.status !== 409) throw new Error(`POST ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  };
  return {
    url,
    issuer: ISSUER,
    caPem: ca.certPem,
    call,
    async serviceAccountToken(namespace, name, audience) {
      await ensure('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
      await ensure(`/api/v1/namespaces/${namespace}/serviceaccounts`, {
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name },
      });
      const r = await call('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { audiences: [audience], expirationSeconds: 3600 },
      });
      if (r.status !== 201)
        throw new Error(`TokenRequest for ${namespace}/${name}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.status.token as string;
    },
    stop,
  };
}
