// A real etcd cluster for tests: N members of the machine's `etcd` (Debian's etcd-server) on free loopback ports,
// each in its own temp data dir, optionally serving clients over TLS with client-certificate auth (a CA and
// certificates generated here). Members can be killed with SIGKILL and restarted on their data dir.
//
//   const etcd = await startEtcd(3, { tls: true });
//   etcd.endpoints            // ['https://127.0.0.1:PORT', …]
//   etcd.tls                  // { ca, cert, key } file paths, as kesd's store.etcd.tls wants them
//   etcdInitYml(etcd, { … })  // a kesd init.yml on this cluster
//   await etcd.kill(1); await etcd.restart(1); await etcd.waitHealthy();
//   await etcd.stop();        // kills every member and removes the temp dir
//
// Peers talk plain http on loopback; only the client side (what kesd sees) is TLS. Every wait is bounded.
import 'reflect-metadata';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { stringify } from 'yaml';

x509.cryptoProvider.set(webcrypto);

/** The etcd binary on PATH, or undefined. */
export const ETCD_BIN: string | undefined = (() => {
  const found = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' });
  return found.status === 0 && found.stdout.trim() !== '' ? found.stdout.trim() : undefined;
})();

/** Why etcd tests must skip, or undefined when etcd is installed. */
export const ETCD_SKIP: string | undefined =
  ETCD_BIN === undefined ? 'etcd is not installed (apt-get install -y etcd-server)' : undefined;

export interface EtcdTlsFiles {
  /** The CA that signed the member and client certificates. */
  readonly ca: string;
  /** A client certificate and key the members accept. */
  readonly cert: string;
  readonly key: string;
}

export interface EtcdCluster {
  readonly size: number;
  /** Client URLs, one per member (http:// or, with tls, https://). */
  readonly endpoints: readonly string[];
  readonly tls?: EtcdTlsFiles;
  /** The temp dir with the members' data dirs and logs (m<i>.log). */
  readonly dir: string;
  alive(i: number): boolean;
  /** kill -9 of member i; resolves once it has exited. */
  kill(i: number): Promise<void>;
  /** Starts member i again on its data dir; resolves once it accepts client connections (not: has a leader). */
  restart(i: number): Promise<void>;
  /** Resolves once every live member reports healthy (it has a leader and a quorum read works). */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** The log of member i so far. */
  log(i: number): string;
  stop(): Promise<void>;
}

export interface EtcdOptions {
  /** Clients over TLS with client-certificate auth. */
  readonly tls?: boolean;
}

export interface EtcdInitOptions {
  readonly server: { readonly keyFile: string; readonly certFile: string };
  readonly sysadmin: { readonly identity: string };
  /** Admin of the `default` enclave. */
  readonly admin: { readonly identity: string };
  /** The environment variable that holds the unseal key. */
  readonly unsealEnv: string;
  /** The store's key prefix (kesd's default when absent). */
  readonly prefix?: string;
  /** Policies of the `default` enclave: name → allowed paths and the identities assigned to it. */
  readonly policies?: Record<string, { allow: readonly string[]; identities: readonly string[] }>;
  /** Keys the `default` enclave starts with. */
  readonly keys: readonly string[];
}

/** A kesd init.yml on this cluster (its endpoints, prefix and client TLS files), with one `default` enclave. */
export function etcdInitYml(etcd: Pick<EtcdCluster, 'endpoints' | 'tls'>, opts: EtcdInitOptions): string {
  return stringify({
    version: 'v1',
    address: '127.0.0.1:0',
    system: { admin: { identity: opts.sysadmin.identity } },
    tls: { key: opts.server.keyFile, cert: opts.server.certFile },
    unseal: { environment: { name: opts.unsealEnv } },
    store: {
      etcd: {
        endpoints: etcd.endpoints,
        ...(opts.prefix === undefined ? {} : { prefix: opts.prefix }),
        ...(etcd.tls ? { tls: { ca: etcd.tls.ca, cert: etcd.tls.cert, key: etcd.tls.key } } : {}),
      },
    },
    enclave: {
      default: {
        admin: { identity: opts.admin.identity },
        ...(opts.policies ? { policy: opts.policies } : {}),
        keys: opts.keys.map((name) => ({ name })),
      },
    },
  });
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Distinct free loopback ports (all held open until every one is picked, so none repeats). */
async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
      servers.push(server);
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startEtcd(size = 1, opts: EtcdOptions = {}): Promise<EtcdCluster> {
  if (ETCD_BIN === undefined) throw new Error(ETCD_SKIP);
  const dir = await mkdtemp(join(tmpdir(), 'kesd-etcd-'));
  const ports = await freePorts(size * 2);
  const scheme = opts.tls ? 'https' : 'http';
  const clientPort = (i: number) => ports[i * 2]!;
  const peerUrl = (i: number) => `http://127.0.0.1:${ports[i * 2 + 1]}`;
  const endpoints = Array.from({ length: size }, (_, i) => `${scheme}://127.0.0.1:${clientPort(i)}`);
  const certs = opts.tls ? await writeCertificates(dir) : undefined;
  const initialCluster = Array.from({ length: size }, (_, i) => `m${i}=${peerUrl(i)}`).join(',');
  const token = `kesd-test-${Math.random().toString(36).slice(2)}`;
  const members: (ChildProcess | undefined)[] = new Array(size).fill(undefined);
  const logs: string[] = new Array(size).fill('');
  const killing = new Set<ChildProcess>();
  /** Members that exited without being killed here: etcd gave up (bad flags, a port taken, a corrupt data dir). */
  const crashed = new Map<number, string>();

  const args = (i: number) => [
    '--name',
    `m${i}`,
    '--data-dir',
    join(dir, `m${i}`),
    '--listen-client-urls',
    endpoints[i]!,
    '--advertise-client-urls',
    endpoints[i]!,
    '--listen-peer-urls',
    peerUrl(i),
    '--initial-advertise-peer-urls',
    peerUrl(i),
    '--initial-cluster',
    initialCluster,
    '--initial-cluster-state',
    'new',
    '--initial-cluster-token',
    token,
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
    ...(certs
      ? [
          '--cert-file',
          certs.serverCert,
          '--key-file',
          certs.serverKey,
          '--trusted-ca-file',
          certs.ca,
          '--client-cert-auth',
        ]
      : []),
  ];

  const launch = (i: number) => {
    const child = spawn(ETCD_BIN!, args(i), { stdio: ['ignore', 'pipe', 'pipe'] });
    const file = createWriteStream(join(dir, `m${i}.log`), { flags: 'a' });
    const keep = (d: Buffer) => {
      logs[i] = (logs[i] + d.toString()).slice(-65536);
      file.write(d);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    child.once('exit', (code, signal) => {
      live.delete(child);
      file.end();
      if (!killing.has(child)) crashed.set(i, `etcd member ${i} exited (${code ?? signal}):\n${logs[i]!.slice(-4000)}`);
    });
    live.add(child);
    members[i] = child;
  };

  const agent = certs
    ? new https.Agent({ ca: certs.caPem, cert: certs.clientCertPem, key: certs.clientKeyPem, keepAlive: false })
    : new http.Agent({ keepAlive: false });

  const healthy = (i: number) =>
    new Promise<boolean>((resolve) => {
      const get = certs ? https.get : http.get;
      const req = get(`${endpoints[i]}/health`, { agent, timeout: 2000 }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(res.statusCode === 200 && /"health":\s*"true"/.test(body)));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
    });

  const alive = (i: number) => {
    const child = members[i];
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  };

  const cluster: EtcdCluster = {
    size,
    endpoints,
    ...(certs ? { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } } : {}),
    dir,
    alive,
    async kill(i) {
      const child = members[i];
      if (child === undefined || !alive(i)) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      killing.add(child);
      child.kill('SIGKILL');
      await exited;
    },
    async restart(i) {
      if (alive(i)) throw new Error(`etcd member ${i} is running`);
      crashed.delete(i);
      launch(i);
      for (const started = Date.now(); ; await sleep(50)) {
        if (!alive(i)) throw new Error(`etcd member ${i} exited on restart:\n${logs[i]!.slice(-4000)}`);
        if (await connects(clientPort(i))) return;
        if (Date.now() - started > 20_000)
          throw new Error(`etcd member ${i} did not listen within 20 s:\n${logs[i]!.slice(-4000)}`);
      }
    },
    async waitHealthy(timeoutMs = 30_000) {
      for (const started = Date.now(); ; await sleep(100)) {
        const failure = crashed.values().next().value;
        if (failure !== undefined) throw new Error(failure);
        const up = members.map((_, i) => i).filter(alive);
        if (up.length > 0 && (await Promise.all(up.map(healthy))).every(Boolean)) return;
        if (Date.now() - started > timeoutMs)
          throw new Error(
            `etcd did not become healthy within ${timeoutMs} ms:\n${logs.map((l, i) => `--- m${i}\n${l.slice(-2000)}`).join('\n')}`,
          );
      }
    },
    log: (i) => logs[i]!,
    async stop() {
      await Promise.all(members.map((_, i) => cluster.kill(i)));
      agent.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };

  for (let i = 0; i < size; i++) launch(i);
  try {
    await cluster.waitHealthy();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

// ---- certificates ----------------------------------------------------------------------------------------

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

function keyPem(pkcs8: ArrayBuffer): string {
  return `-----BEGIN PRIVATE KEY-----\n${Buffer.from(pkcs8)
    .toString('base64')
    .replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
}

/** A P-256 CA, a member certificate for 127.0.0.1/localhost, and a client certificate, written into dir. */
async function writeCertificates(dir: string) {
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 24 * 3600_000);
  const caKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=kesd test etcd CA',
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const leaf = async (serial: string, cn: string, usages: x509.ExtendedKeyUsage[], sans: x509.JsonGeneralName[]) => {
    const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: `CN=${cn}`,
      issuer: ca.subject,
      notBefore,
      notAfter,
      signingKey: caKeys.privateKey,
      publicKey: keys.publicKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(usages),
        await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
        ...(sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      ],
    });
    return {
      cert: cert.toString('pem') + '\n',
      key: keyPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    };
  };
  // etcd's own gRPC gateway dials the member with the member certificate, so it needs clientAuth too.
  const server = await leaf(
    '02',
    'etcd member',
    [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
    [
      { type: 'ip', value: '127.0.0.1' },
      { type: 'dns', value: 'localhost' },
    ],
  );
  const client = await leaf('03', 'kesd', [x509.ExtendedKeyUsage.clientAuth], []);
  const files = {
    ca: join(dir, 'ca.crt'),
    serverCert: join(dir, 'member.crt'),
    serverKey: join(dir, 'member.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
  const caPem = ca.toString('pem') + '\n';
  await writeFile(files.ca, caPem);
  await writeFile(files.serverCert, server.cert);
  await writeFile(files.serverKey, server.key, { mode: 0o600 });
  await writeFile(files.clientCert, client.cert);
  await writeFile(files.clientKey, client.key, { mode: 0o600 });
  return { ...files, caPem, clientCertPem: client.cert, clientKeyPem: client.key };
}
