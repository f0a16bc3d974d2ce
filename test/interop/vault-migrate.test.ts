// Migration off KES-on-Vault, the most common KES deployment: the real KES v0.24.0 keeps its keys in a real Vault
// (keystore.vault: AppRole, TLS with a CA, KV v2 with a prefix for MinIO, KV v1 without one for keys made with the
// kes CLI); MinIO writes encrypted objects through it. `kesd import vault --kes-config` takes every key with the same
// bytes, and MinIO pointed at kesd reads every object back bit for bit.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import https from 'node:https';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { parseKesStoredKey } from '../../kesd/src/kes/stored-key.js';
import { makeIdentity, request, type TestIdentity } from '../kesd/harness.js';
import { kesd, startServer, stopServer, type ServerProcess } from '../kesd/cli-process.js';
import { freePort, Mc, Minio, tail } from '../../harness/minio-stack.js';
import { appRole, enableKv, kvPolicy, startVault, type VaultServer } from '../../harness/vault.js';
import { kesCli, newKesApiKey, startKesServer, type KesServer } from '../../harness/kes-server.js';

const DEFAULT_KEY = 'minio-default-key';
const MINIO_POLICY = [
  '/v1/key/create/*',
  '/v1/key/generate/*',
  '/v1/key/decrypt/*',
  '/v1/key/describe/*',
  '/v1/key/list/*',
  '/v1/status',
  '/v1/api',
];

let dir: string;
let vault: VaultServer;
let tlsId: TestIdentity;
let minioId: TestIdentity;
let admin: { apiKey: string; identity: string };
let role: { roleId: string; secretId: string };
let minio: Minio;
let mc: Mc;
let kes: KesServer | undefined;
let kesdServer: ServerProcess | undefined;
const objects = new Map<string, string>();
/** Ciphertexts KES made with the kes CLI: key → [plaintext, ciphertext]. */
const sealedByKes = new Map<string, [string, string]>();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A KES config on the test Vault: keystore.vault as KES v0.24 reads it (AppRole, the Vault CA). */
const kesConfig = (engine: string, version: 'v1' | 'v2', prefix: string) => `admin:
  identity: ${admin.identity}
tls:
  key: ${tlsId.keyFile}
  cert: ${tlsId.certFile}
policy:
  minio:
    allow: [${MINIO_POLICY.join(', ')}]
    identities: [${minioId.identity}]
keystore:
  vault:
    endpoint: ${vault.addr}
    engine: ${engine}
    version: ${version}
    prefix: ${prefix}
    approle:
      id: ${role.roleId}
      secret: \${KES_VAULT_SECRET_ID}
    tls:
      ca: ${vault.caFile}
`;

async function readBack(path: string): Promise<string> {
  await mc.run(['cp', path, join(dir, 'readback')]);
  return sha256(await readFile(join(dir, 'readback')));
}

async function step(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    (err as Error).message +=
      `\n--- vault log ---\n${tail(vault.log, 20)}\n--- kes logs ---\n${tail(join(dir, 'kes-v2.log'), 15)}\n${tail(join(dir, 'kes-v1.log'), 15)}\n--- kesd ---\n${kesdServer?.output().split('\n').slice(-30).join('\n')}\n--- minio ---\n${minio ? tail(minio.log, 20) : ''}`;
    throw err;
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-vault-migrate-'));
  process.env.KES_VAULT_SECRET_ID = '';
  tlsId = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  minioId = await makeIdentity(dir, 'minio');
  admin = await newKesApiKey();
  vault = await startVault({ tls: true });
  await enableKv(vault, 'kv', 'v1');
  await enableKv(vault, 'kv2', 'v2');
  role = await appRole(vault, 'kes', kvPolicy('kv', '', 'v1') + kvPolicy('kv2', 'kes', 'v2'));
  process.env.KES_VAULT_SECRET_ID = role.secretId; // KES's ${VAR} and kesd's read the same variable
  mc = new Mc(join(dir, 'mc'));
});

after(async () => {
  await minio?.stop();
  await kes?.stop();
  if (kesdServer) await stopServer(kesdServer.child);
  await vault?.remove();
  await rm(dir, { recursive: true, force: true });
});

test('MinIO writes encrypted objects through the real KES v0.24 keeping its keys in the real Vault (KV v2, prefix, AppRole, TLS)', () =>
  step(async () => {
    kes = await startKesServer(dir, 'kes-v2', kesConfig('kv2', 'v2', 'kes'));
    minio = new Minio(dir, await freePort(), await freePort(), {
      endpoint: kes.endpoint,
      certFile: minioId.certFile,
      keyFile: minioId.keyFile,
      caFile: tlsId.certFile,
      defaultKey: DEFAULT_KEY,
    });
    await minio.start();
    await mc.alias(minio);
    await mc.run(['admin', 'kms', 'key', 'create', 'local', 'bucket-key']);
    await mc.run(['mb', 'local/kms-bucket']);
    await mc.run(['encrypt', 'set', 'sse-kms', 'bucket-key', 'local/kms-bucket']);
    await mc.run(['mb', 'local/s3-bucket']);
    await mc.run(['encrypt', 'set', 'sse-s3', 'local/s3-bucket']);
    await mc.run(['admin', 'user', 'add', 'local', 'bob', 'bob-secret-12345']);
    for (const [bucket, size] of [
      ['kms-bucket', 128 * 1024],
      ['kms-bucket', 7 * 1024 * 1024],
      ['s3-bucket', 64 * 1024],
    ] as const) {
      const data = randomBytes(size);
      const path = `local/${bucket}/obj-${size}`;
      await writeFile(join(dir, 'obj'), data);
      await mc.run(['cp', join(dir, 'obj'), path]);
      objects.set(path, sha256(data));
    }
    for (const [path, hash] of objects) assert.equal(await readBack(path), hash);
    const enc = JSON.parse(await kesCli(kes, admin.apiKey, ['key', 'encrypt', 'bucket-key', 'sealed by KES on KV v2']));
    sealedByKes.set('bucket-key', ['sealed by KES on KV v2', enc.ciphertext]);
    // KES's layout, as kesd reads it: <engine>/data/<prefix>/<name> holding {"<name>": base64(protobuf KeyVersion)}.
    const entry = (await vault.call('GET', 'kv2/data/kes/bucket-key')).body.data.data;
    assert.deepEqual(Object.keys(entry), ['bucket-key']);
    assert.equal(parseKesStoredKey(Buffer.from(entry['bucket-key'])).bytes.length, 32);
    await minio.stop();
    await kes.stop();
  }));

test('the real KES v0.24 on KV v1 without a prefix: keys made and used with the kes CLI', () =>
  step(async () => {
    kes = await startKesServer(dir, 'kes-v1', kesConfig('kv', 'v1', ''));
    for (const name of ['app-key-1', 'app-key-2']) {
      await kesCli(kes, admin.apiKey, ['key', 'create', name]);
      const plaintext = `sealed by KES on KV v1 with ${name}`;
      sealedByKes.set(name, [
        plaintext,
        JSON.parse(await kesCli(kes, admin.apiKey, ['key', 'encrypt', name, plaintext])).ciphertext,
      ]);
    }
    assert.deepEqual(Object.keys((await vault.call('GET', 'kv/app-key-1')).body.data), ['app-key-1']);
    await kes.stop();
  }));

test('kesd import vault takes every key of both layouts with the same bytes; MinIO on kesd reads every object, its IAM, and writes new ones', () =>
  step(async () => {
    const sysadmin = await makeIdentity(dir, 'sysadmin');
    const enclaveAdmin = await makeIdentity(dir, 'admin');
    const env = { ...process.env, KESD_UNSEAL_KEY: randomBytes(32).toString('base64') };
    const data = join(dir, 'kesd-data');
    await initDataDir(
      data,
      {
        version: 'v1',
        address: '127.0.0.1:0',
        sysadmin: sysadmin.identity,
        unsealEnv: 'KESD_UNSEAL_KEY',
        tls: {
          key: tlsId.keyFile,
          cert: tlsId.certFile,
          password: '',
          verifyCert: false,
          proxy: { identities: [], header: '' },
        },
        enclaves: [
          {
            name: 'default',
            admin: enclaveAdmin.identity,
            policies: [{ name: 'minio', allow: MINIO_POLICY, deny: [], identities: [minioId.identity] }],
            keys: [],
          },
          { name: 'apps', admin: enclaveAdmin.identity, policies: [], keys: [] },
        ],
      },
      { env },
    );

    const v2 = await kesd(['import', 'vault', '--kes-config', join(dir, 'kes-v2.yml'), data], { env });
    assert.equal(v2.code, 0, v2.stdout + v2.stderr);
    assert.match(v2.stdout, /imported 2, already present 0, conflicts 0, failed 0/, 'the default key and bucket-key');
    const v1 = await kesd(['import', 'vault', '--kes-config', join(dir, 'kes-v1.yml'), '--enclave', 'apps', data], {
      env,
    });
    assert.equal(v1.code, 0, v1.stdout + v1.stderr);
    assert.match(v1.stdout, /imported 2,/);
    const again = await kesd(['import', 'vault', '--kes-config', join(dir, 'kes-v2.yml'), data], { env });
    assert.match(
      again.stdout,
      /imported 0, already present 2, conflicts 0, failed 0/,
      'a second import changes nothing',
    );

    // Wrong credentials, or no Vault section: a clear error, exit 1, nothing imported.
    const badSecret = await kesd(
      ['import', 'vault', '--kes-config', join(dir, 'kes-v2.yml'), '--enclave', 'apps', data],
      { env: { ...env, KES_VAULT_SECRET_ID: 'not-the-secret' } },
    );
    assert.equal(badSecret.code, 1);
    assert.match(badSecret.stderr, /AppRole login at auth\/approle: invalid role or secret ID/);
    await writeFile(join(dir, 'kes-fs.yml'), 'keystore:\n  fs:\n    path: /tmp/x\n');
    const noVault = await kesd(['import', 'vault', '--kes-config', join(dir, 'kes-fs.yml'), data], { env });
    assert.equal(noVault.code, 1);
    assert.match(noVault.stderr, /no 'keystore.vault' section/);

    kesdServer = await startServer([data, '--addr', '127.0.0.1:0', '--audit-log', 'off'], env);
    // Ciphertexts the real KES made decrypt with kesd: the same key bytes, in both layouts.
    const agent = new https.Agent({ rejectUnauthorized: false, cert: enclaveAdmin.cert, key: enclaveAdmin.key });
    for (const [name, [plaintext, ciphertext]] of sealedByKes) {
      const enclave = name === 'bucket-key' ? 'default' : 'apps';
      const reply = await request(agent, kesdServer.port, 'POST', `/v1/key/decrypt/${name}?enclave=${enclave}`, {
        ciphertext,
      });
      assert.equal(reply.status, 200, `${name}: ${reply.text}`);
      assert.equal(Buffer.from(reply.json().plaintext, 'base64').toString(), plaintext);
    }
    agent.destroy();
    minio.kms = { ...minio.kms, endpoint: `https://127.0.0.1:${kesdServer.port}` };
    await minio.start();
    for (const [path, hash] of objects) assert.equal(await readBack(path), hash, path);
    const [bob] = await mc.json(['admin', 'user', 'info', 'local', 'bob']);
    assert.equal(bob.accessKey, 'bob');
    const fresh = randomBytes(32 * 1024);
    await writeFile(join(dir, 'fresh'), fresh);
    await mc.run(['cp', join(dir, 'fresh'), 'local/kms-bucket/fresh']);
    assert.equal(await readBack('local/kms-bucket/fresh'), sha256(fresh));
  }));
