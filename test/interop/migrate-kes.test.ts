// Migration off KES: objects written by MinIO through the real KES (filesystem keystore) stay readable
// after `kesd import kes-fs` and pointing MinIO at kesd.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { makeIdentity, type TestIdentity } from '../kesd/harness.js';
import { kesd, startServer, stopServer, type ServerProcess } from '../kesd/cli-process.js';
import { peer } from '../../harness/peers.js';
import { freePort, Mc, Minio, sleep, tail } from '../../harness/minio-stack.js';

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
let tlsId: TestIdentity;
let minioId: TestIdentity;
let kes: ChildProcess | undefined;
let kesdServer: ServerProcess | undefined;
let minio: Minio;
let mc: Mc;
const objects = new Map<string, string>();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function readBack(path: string): Promise<string> {
  await mc.run(['cp', path, join(dir, 'readback')]);
  return sha256(await readFile(join(dir, 'readback')));
}

async function step(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    (err as Error).message +=
      `\n--- kes log ---\n${tail(join(dir, 'kes.log'))}\n--- kesd log ---\n${kesdServer?.output().split('\n').slice(-30).join('\n')}\n--- minio log ---\n${tail(minio.log)}`;
    throw err;
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-migrate-'));
  tlsId = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  minioId = await makeIdentity(dir, 'minio');
  mc = new Mc(join(dir, 'mc'));
});

after(async () => {
  await minio?.stop();
  kes?.kill('SIGKILL');
  if (kesdServer) await stopServer(kesdServer.child);
  await rm(dir, { recursive: true, force: true });
});

test('MinIO writes encrypted objects through the real KES with a filesystem keystore', () =>
  step(async () => {
    const kesPort = await freePort();
    await writeFile(
      join(dir, 'kes.yml'),
      `address: 127.0.0.1:${kesPort}
admin:
  identity: disabled
tls:
  key: ${tlsId.keyFile}
  cert: ${tlsId.certFile}
policy:
  minio:
    allow: [${MINIO_POLICY.join(', ')}]
    identities: [${minioId.identity}]
keystore:
  fs:
    path: ${join(dir, 'kes-keys')}
`,
    );
    const log = createWriteStream(join(dir, 'kes.log'));
    kes = spawn(peer('kes-latest'), ['server', '--config', join(dir, 'kes.yml')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    kes.stdout!.pipe(log);
    kes.stderr!.pipe(log);
    await sleep(1000);
    assert.equal(kes.exitCode, null, `kes exited: ${tail(join(dir, 'kes.log'))}`);
    minio = new Minio(dir, await freePort(), await freePort(), {
      endpoint: `https://127.0.0.1:${kesPort}`,
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
    for (const bucket of ['kms-bucket', 's3-bucket']) {
      const data = randomBytes(128 * 1024);
      await writeFile(join(dir, 'obj'), data);
      await mc.run(['cp', join(dir, 'obj'), `local/${bucket}/obj`]);
      objects.set(`local/${bucket}/obj`, sha256(data));
    }
    for (const [path, hash] of objects) assert.equal(await readBack(path), hash);
    await minio.stop();
    kes.kill('SIGTERM');
  }));

test('kesd import kes-fs, then MinIO pointed at kesd reads every old object, its IAM, and writes new ones', () =>
  step(async () => {
    const sysadmin = await makeIdentity(dir, 'sysadmin');
    const admin = await makeIdentity(dir, 'admin');
    const env = { ...process.env, KESD_UNSEAL_KEY: randomBytes(32).toString('base64') };
    await initDataDir(
      join(dir, 'kesd-data'),
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
            admin: admin.identity,
            policies: [{ name: 'minio', allow: MINIO_POLICY, deny: [], identities: [minioId.identity] }],
            keys: [],
          },
        ],
      },
      { env },
    );
    const imported = await kesd(['import', 'kes-fs', join(dir, 'kes-keys'), join(dir, 'kesd-data')], { env });
    assert.equal(imported.code, 0, imported.stdout + imported.stderr);
    assert.match(imported.stdout, /imported 2,/, 'the default key and bucket-key');
    kesdServer = await startServer([join(dir, 'kesd-data'), '--addr', '127.0.0.1:0', '--audit-log', 'off'], env);
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
