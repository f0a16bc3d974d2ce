// A real kesd for tests: a fresh data dir, generated identities, real mTLS on a free loopback port.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newIdentity, type KeyType } from '../../kesd/src/identity/certificate.js';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { readServerConfig, type InitConfig } from '../../kesd/src/config/config.js';
import { openSealedRootKey } from '../../kesd/src/store/unseal.js';
import { startKesd, type Kesd } from '../../kesd/src/server/run.js';

export interface TestIdentity {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
  readonly identity: string;
}

export const UNSEAL_ENV = 'KESD_TEST_UNSEAL_KEY';

export async function makeIdentity(
  dir: string,
  name: string,
  keyType: KeyType = 'ed25519',
  san: { ips?: string[]; dnsNames?: string[] } = {},
): Promise<TestIdentity> {
  const id = await newIdentity({ subject: name, keyType, ...san });
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await writeFile(certFile, id.certPem);
  await writeFile(keyFile, id.keyPem, { mode: 0o600 });
  return { certFile, keyFile, cert: id.certPem, key: id.keyPem, identity: id.identity };
}

export interface TestServer {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  readonly dataDir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly server: TestIdentity;
  readonly caFile: string;
  readonly sysadmin: TestIdentity;
  readonly admin: TestIdentity;
  readonly user: TestIdentity;
  readonly kesd: Kesd;
  /** A keep-alive agent presenting the given identity (or none). */
  agent(who?: TestIdentity): https.Agent;
  request(who: TestIdentity | undefined, method: string, path: string, body?: unknown): Promise<Reply>;
  restart(): Promise<TestServer>;
  stop(): Promise<void>;
}

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  json(): any;
}

export interface TestServerOptions {
  /** Extra init.yml content for the 'default' enclave. */
  readonly keys?: string[];
  readonly userPolicy?: { allow: string[]; deny: string[] };
  readonly verifyCert?: boolean;
  /** Make this identity (e.g. of an API key) the 'default' enclave's admin instead of the generated one. */
  readonly adminIdentity?: string;
}

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-test-'));
  const server = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  const sysadmin = await makeIdentity(dir, 'sysadmin');
  const admin = await makeIdentity(dir, 'admin');
  const user = await makeIdentity(dir, 'user', 'p256');
  const env = { ...process.env, [UNSEAL_ENV]: Buffer.alloc(32, 7).toString('base64') };
  const init: InitConfig = {
    version: 'v1',
    address: '127.0.0.1:0',
    sysadmin: sysadmin.identity,
    tls: {
      key: server.keyFile,
      cert: server.certFile,
      password: '',
      verifyCert: opts.verifyCert ?? false,
      proxy: { identities: [], header: '' },
    },
    unsealEnv: UNSEAL_ENV,
    enclaves: [
      {
        name: 'default',
        admin: opts.adminIdentity ?? admin.identity,
        policies: [
          {
            name: 'app',
            ...(opts.userPolicy ?? { allow: ['/v1/key/*', '/v1/status'], deny: ['/v1/key/delete/*'] }),
            identities: [user.identity],
          },
        ],
        keys: opts.keys ?? ['minio-default'],
      },
    ],
  };
  const dataDir = join(dir, 'data');
  await initDataDir(dataDir, init, { env });
  return boot({ dir, dataDir, env, server, sysadmin, admin, user, caFile: server.certFile });
}

async function boot(
  base: Pick<TestServer, 'dir' | 'dataDir' | 'env' | 'server' | 'sysadmin' | 'admin' | 'user' | 'caFile'>,
  port = 0,
): Promise<TestServer> {
  const config = await readServerConfig(base.dataDir, base.env);
  const { root } = await openSealedRootKey(base.dataDir, base.env);
  const kesd = await startKesd({ dir: base.dataDir, config, root, address: `127.0.0.1:${port}`, auditStdout: false });
  const agents = new Map<TestIdentity | undefined, https.Agent>();
  const agent = (who?: TestIdentity) => {
    let a = agents.get(who);
    if (a === undefined) {
      a = new https.Agent({
        keepAlive: true,
        ca: base.server.cert,
        cert: who?.cert,
        key: who?.key,
        servername: 'localhost',
      });
      agents.set(who, a);
    }
    return a;
  };
  const stopServer = async () => {
    for (const a of agents.values()) a.destroy();
    await kesd.stop();
  };
  const self: TestServer = {
    ...base,
    url: `https://127.0.0.1:${kesd.port}`,
    port: kesd.port,
    kesd,
    agent,
    request: (who, method, path, body) => request(agent(who), kesd.port, method, path, body),
    async restart() {
      await stopServer();
      return boot(base, kesd.port);
    },
    async stop() {
      await stopServer();
      await rm(base.dir, { recursive: true, force: true });
    },
  };
  return self;
}

export function request(
  agent: https.Agent,
  port: number,
  method: string,
  path: string,
  body?: unknown,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload =
      body === undefined
        ? undefined
        : Buffer.isBuffer(body)
          ? body
          : typeof body === 'string'
            ? Buffer.from(body)
            : Buffer.from(JSON.stringify(body));
    const req = https.request(
      { host: '127.0.0.1', port, method, path, agent, headers: payload ? { 'content-length': payload.length } : {} },
      (res) => {
        readReply(res).then(resolve, reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Collects a whole response. */
export function readReply(res: IncomingMessage): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
    });
    res.on('error', reject);
  });
}
