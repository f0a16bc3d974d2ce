// The real MinIO server and `mc` against kesd: SSE-KMS and SSE-S3, restarts of both, and a kesd outage.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { makeIdentity, request, type TestIdentity } from '../kesd/harness.js';
import { startServer, stopServer, type ServerProcess } from '../kesd/cli-process.js';
import { freePort, Mc, Minio, tail } from '../../harness/minio-stack.js';
import https from 'node:https';

const DEFAULT_KEY = 'minio-default-key';
const MINIO_POLICY = [
  '/v1/key/create/*',
  '/v1/key/generate/*',
  '/v1/key/decrypt/*',
  '/v1/key/describe/*',
  '/v1/key/list/*',
  '/v1/key/hmac/*',
  '/v1/status',
  '/v1/api',
  '/v1/metrics',
];

let dir: string;
let kesdPort: number;
let kesd: ServerProcess | undefined;
let kesdEnv: NodeJS.ProcessEnv;
let admin: TestIdentity;
let minio: Minio;
let mc: Mc;
const objects = new Map<string, string>(); // mc path → sha256

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function startKesd(): Promise<void> {
  kesd = await startServer([join(dir, 'kesd-data'), '--addr', `127.0.0.1:${kesdPort}`, '--audit-log', 'off'], kesdEnv);
}

/** Runs a step; on failure the kesd and MinIO log tails are attached, so the cause shows in CI output. */
async function step(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    (err as Error).message +=
      `\n--- kesd log ---\n${kesd?.output().split('\n').slice(-30).join('\n')}\n--- minio log ---\n${tail(minio.log)}`;
    throw err;
  }
}

async function readBack(path: string): Promise<string> {
  const out = join(dir, 'readback');
  await mc.run(['cp', path, out]);
  return sha256(await readFile(out));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-minio-'));
  const server = await makeIdentity(dir, 'kesd', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  const sysadmin = await makeIdentity(dir, 'sysadmin');
  admin = await makeIdentity(dir, 'admin');
  const minioId = await makeIdentity(dir, 'minio');
  kesdEnv = { ...process.env, KESD_UNSEAL_KEY: randomBytes(32).toString('base64') };
  await initDataDir(
    join(dir, 'kesd-data'),
    {
      version: 'v1',
      address: '127.0.0.1:0',
      sysadmin: sysadmin.identity,
      unsealEnv: 'KESD_UNSEAL_KEY',
      tls: {
        key: server.keyFile,
        cert: server.certFile,
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
    { env: kesdEnv },
  );
  kesdPort = await freePort();
  await startKesd();
  minio = new Minio(dir, await freePort(), await freePort(), {
    endpoint: `https://127.0.0.1:${kesdPort}`,
    certFile: minioId.certFile,
    keyFile: minioId.keyFile,
    caFile: server.certFile,
    defaultKey: DEFAULT_KEY,
  });
  mc = new Mc(join(dir, 'mc'));
});

after(async () => {
  await minio?.stop();
  if (kesd) await stopServer(kesd.child);
  await rm(dir, { recursive: true, force: true });
});

const adminAgent = () => new https.Agent({ cert: admin.cert, key: admin.key, rejectUnauthorized: false });

test('MinIO starts against kesd and creates its default key through the 404 path', () =>
  step(async () => {
    const before = await request(adminAgent(), kesdPort, 'GET', `/v1/key/describe/${DEFAULT_KEY}`);
    assert.equal(before.status, 404, 'no default key before MinIO starts');
    await minio.start();
    await mc.alias(minio);
    const after = await request(adminAgent(), kesdPort, 'GET', `/v1/key/describe/${DEFAULT_KEY}`);
    assert.equal(after.status, 200, 'MinIO created its default key');
  }));

test('mc admin kms key create, list and status', () =>
  step(async () => {
    await mc.run(['admin', 'kms', 'key', 'create', 'local', 'bucket-key']);
    const list = await mc.run(['admin', 'kms', 'key', 'list', 'local']);
    assert.match(list, /bucket-key/);
    assert.match(list, new RegExp(DEFAULT_KEY));
    const status = await mc.json(['admin', 'kms', 'key', 'status', 'local', 'bucket-key']);
    assert.equal(status[0].status, 'success', JSON.stringify(status));
    assert.equal(status[0].encryptionError ?? '', '');
    assert.equal(status[0].decryptionError ?? '', '');
  }));

test('objects in an SSE-KMS and an SSE-S3 bucket, single-part and multipart, read back bit-identical', () =>
  step(async () => {
    await mc.run(['mb', 'local/kms-bucket']);
    await mc.run(['encrypt', 'set', 'sse-kms', 'bucket-key', 'local/kms-bucket']);
    await mc.run(['mb', 'local/s3-bucket']);
    await mc.run(['encrypt', 'set', 'sse-s3', 'local/s3-bucket']);
    const small = randomBytes(64 * 1024);
    const large = randomBytes(40 * 1024 * 1024); // above mc's 16 MiB part size: a multipart upload with 16 MiB parts
    await writeFile(join(dir, 'small'), small);
    await writeFile(join(dir, 'large'), large);
    for (const bucket of ['kms-bucket', 's3-bucket']) {
      await mc.run(['cp', join(dir, 'small'), `local/${bucket}/small`]);
      await mc.run(['cp', join(dir, 'large'), `local/${bucket}/large`]);
      objects.set(`local/${bucket}/small`, sha256(small));
      objects.set(`local/${bucket}/large`, sha256(large));
    }
    for (const [path, hash] of objects) assert.equal(await readBack(path), hash, path);
    const [stat] = await mc.json(['stat', 'local/kms-bucket/large']);
    assert.match(stat.etag, /-\d+$/, 'the large object was a multipart upload');
  }));

test('mc stat shows the encryption of each object', () =>
  step(async () => {
    const [kms] = await mc.json(['stat', 'local/kms-bucket/small']);
    const [s3] = await mc.json(['stat', 'local/s3-bucket/small']);
    assert.equal(kms.metadata['X-Amz-Server-Side-Encryption'], 'aws:kms', JSON.stringify(kms.metadata));
    assert.match(kms.metadata['X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id'] ?? '', /bucket-key/);
    assert.equal(s3.metadata['X-Amz-Server-Side-Encryption'], 'AES256', JSON.stringify(s3.metadata));
  }));

test('after a kesd restart (same dir, same unseal key) every object is still readable', () =>
  step(async () => {
    await stopServer(kesd!.child);
    await startKesd();
    for (const [path, hash] of objects) assert.equal(await readBack(path), hash, path);
  }));

test('after a MinIO restart its IAM and config decrypt and users created before are still there', () =>
  step(async () => {
    await mc.run(['admin', 'user', 'add', 'local', 'alice', 'alice-secret-123']);
    await minio.stop();
    await minio.start();
    const [info] = await mc.json(['admin', 'user', 'info', 'local', 'alice']);
    assert.equal(info.accessKey, 'alice', JSON.stringify(info));
    for (const [path, hash] of objects) assert.equal(await readBack(path), hash, path);
  }));

test('with kesd stopped, reads fail with a KMS error; they work again once kesd is back', () =>
  step(async () => {
    await stopServer(kesd!.child);
    kesd = undefined;
    await assert.rejects(readBack('local/kms-bucket/small'), /kms|KMS|key/);
    await startKesd();
    for (const [path, hash] of objects) assert.equal(await readBack(path), hash, path);
  }));
