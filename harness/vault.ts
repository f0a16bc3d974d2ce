// A real HashiCorp Vault for tests (the `vault` peer, peers.json), on a free loopback port:
//   startVault({ dev: true })   dev mode: in memory, root token 'root', KV v2 at secret/ (gone when it stops)
//   startVault({ tls: true })   a real server: file storage in a temp dir, initialised with one unseal key share and
//                               unsealed, a TLS listener with a certificate from a test CA (caFile); it can be
//                               stopped (SIGTERM), killed (SIGKILL) and started again on the same storage.
// Set-up calls go through kesd's own Vault client (kesd/src/upstream/vault-http.ts) with the root token.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VaultHttp, type VaultReply } from '../kesd/src/upstream/vault-http.js';
import { freePort, sleep, tail } from './minio-stack.js';
import { peer } from './peers.js';
import { newTestCa } from './test-ca.js';

export interface VaultServer {
  /** http(s)://127.0.0.1:PORT */
  readonly addr: string;
  readonly port: number;
  /** The CA of the listener's certificate (TLS servers only). */
  readonly caFile?: string;
  readonly rootToken: string;
  readonly dir: string;
  readonly log: string;
  /** The server process's pid (it changes when the server is started again). */
  pid(): number;
  running(): boolean;
  /** A call with the root token; throws unless Vault answers with one of `ok` (default: any 2xx). */
  call(method: string, path: string, body?: unknown, ok?: number[]): Promise<VaultReply>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>;
  /** Starts it again on the same storage and unseals it (not for dev servers: their data is gone). */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  remove(): Promise<void>;
}

export interface VaultOptions {
  readonly dev?: boolean;
  readonly tls?: boolean;
}

export async function startVault(opts: VaultOptions = {}): Promise<VaultServer> {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-vault-'));
  const port = await freePort();
  const scheme = opts.tls ? 'https' : 'http';
  const addr = `${scheme}://127.0.0.1:${port}`;
  const log = join(dir, 'vault.log');
  let caFile: string | undefined;
  let args: string[];
  if (opts.dev) {
    args = ['server', '-dev', '-dev-root-token-id=root', `-dev-listen-address=127.0.0.1:${port}`, '-log-level=warn'];
  } else {
    let listenerTls = 'tls_disable = true';
    if (opts.tls) {
      const ca = await newTestCa('kesd test Vault CA');
      const leaf = await ca.issue('vault', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
      caFile = join(dir, 'ca.crt');
      await writeFile(caFile, ca.certPem);
      await writeFile(join(dir, 'vault.crt'), leaf.certPem);
      await writeFile(join(dir, 'vault.key'), leaf.keyPem, { mode: 0o600 });
      listenerTls = `tls_cert_file = "${join(dir, 'vault.crt')}"\n  tls_key_file = "${join(dir, 'vault.key')}"`;
    }
    await writeFile(
      join(dir, 'vault.hcl'),
      `storage "file" {\n  path = "${join(dir, 'data')}"\n}\nlistener "tcp" {\n  address = "127.0.0.1:${port}"\n  ${listenerTls}\n}\napi_addr = "${addr}"\ndisable_mlock = true\nui = false\n`,
    );
    args = ['server', `-config=${join(dir, 'vault.hcl')}`, '-log-level=warn'];
  }
  const http = new VaultHttp(addr, caFile ? { ca: caFile } : {}, 10_000);
  let child: ChildProcess | undefined;
  let rootToken = opts.dev ? 'root' : '';
  let unsealKey = '';

  const waitListening = async () => {
    for (let i = 0; i < 600; i++) {
      if (child?.exitCode !== null) throw new Error(`vault exited with ${child?.exitCode}:\n${tail(log)}`);
      try {
        await http.request('GET', 'sys/health');
        return;
      } catch {
        await sleep(100);
      }
    }
    throw new Error(`vault did not listen on ${addr}:\n${tail(log)}`);
  };
  const waitActive = async () => {
    for (let i = 0; i < 600; i++) {
      if ((await http.request('GET', 'sys/health')).status === 200) return;
      await sleep(100);
    }
    throw new Error(`vault did not become active:\n${tail(log)}`);
  };
  const launch = async () => {
    const out = createWriteStream(log, { flags: 'a' });
    child = spawn(peer('vault'), args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, VAULT_ADDR: addr },
    });
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
    await waitListening();
    if (!opts.dev) {
      if (rootToken === '') {
        const init = await http.request('PUT', 'sys/init', { body: { secret_shares: 1, secret_threshold: 1 } });
        if (init.status !== 200) throw VaultHttp.failure('init', init);
        rootToken = init.body.root_token;
        unsealKey = init.body.keys_base64[0];
      }
      const unseal = await http.request('PUT', 'sys/unseal', { body: { key: unsealKey } });
      if (unseal.status !== 200) throw VaultHttp.failure('unseal', unseal);
    }
    await waitActive();
  };
  const exited = (signal: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    });

  await launch();
  const server: VaultServer = {
    addr,
    port,
    ...(caFile ? { caFile } : {}),
    get rootToken() {
      return rootToken;
    },
    dir,
    log,
    pid: () => child!.pid!,
    running: () => child !== undefined && child.exitCode === null && child.signalCode === null,
    async call(method, path, body, ok) {
      const reply = await http.request(method, path, { token: rootToken, body });
      const good = ok ? ok.includes(reply.status) : reply.status >= 200 && reply.status < 300;
      if (!good) throw VaultHttp.failure(`${method} ${path}`, reply);
      return reply;
    },
    stop: () => exited('SIGTERM'),
    kill: () => exited('SIGKILL'),
    async start() {
      if (opts.dev) throw new Error('a dev Vault keeps nothing to start again');
      await launch();
    },
    async remove() {
      await exited('SIGTERM');
      http.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/** Mounts a KV engine of the version at `mount`. */
export async function enableKv(vault: VaultServer, mount: string, version: 'v1' | 'v2'): Promise<void> {
  await vault.call('POST', `sys/mounts/${mount}`, { type: 'kv', options: { version: version === 'v2' ? '2' : '1' } });
  if (version === 'v2') {
    // A fresh KV v2 mount answers 'upgrading' for a moment; wait until a write goes through.
    for (let i = 0; i < 100; i++) {
      const probe = await vault.call('PUT', `${mount}/data/.probe`, { data: { x: '1' } }, [200, 204, 400, 503]);
      if (probe.status === 200 || probe.status === 204) break;
      await sleep(100);
    }
    await vault.call('DELETE', `${mount}/metadata/.probe`);
  }
}

/** A policy, and an AppRole role with it; resolves with the role ID and a fresh secret ID. */
export async function appRole(
  vault: VaultServer,
  role: string,
  policy: string,
): Promise<{ roleId: string; secretId: string }> {
  await vault.call('PUT', `sys/policy/${role}`, { policy });
  const mounts = (await vault.call('GET', 'sys/auth')).body;
  if (mounts['approle/'] === undefined) await vault.call('POST', 'sys/auth/approle', { type: 'approle' });
  await vault.call('POST', `auth/approle/role/${role}`, {
    token_policies: [role],
    token_ttl: '1h',
    token_max_ttl: '4h',
  });
  const roleId = (await vault.call('GET', `auth/approle/role/${role}/role-id`)).body.data.role_id;
  const secretId = (await vault.call('POST', `auth/approle/role/${role}/secret-id`, {})).body.data.secret_id;
  return { roleId, secretId };
}

/** The HCL of a policy that may manage keys under <mount>/<prefix> of a KV engine of the version (and nothing else). */
export function kvPolicy(mount: string, prefix: string, version: 'v1' | 'v2'): string {
  const at = (p: string) => [mount, p, prefix].filter(Boolean).join('/');
  const caps = '["create", "read", "update", "delete", "list"]';
  return version === 'v2'
    ? `path "${at('data')}/*" { capabilities = ${caps} }\npath "${at('metadata')}/*" { capabilities = ${caps} }\npath "${at('metadata')}" { capabilities = ["list"] }\n`
    : `path "${at('')}/*" { capabilities = ${caps} }\npath "${at('')}" { capabilities = ["list"] }\n`;
}
