// Key lifecycle with the real MinIO and mc (issue 16): key rotation through kesd restarts, a deleted key version, an
// unseal key rotation, and a restore drill (write, back up, write more, destroy the data dir, restore, read back).
// Each object is tracked with the key version it was written under, and read back bit-identical or expected to fail.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import https from 'node:https';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { makeIdentity, request, type TestIdentity } from '../kesd/harness.js';
import { kesd, startServer, stopServer, type ServerProcess } from '../kesd/cli-process.js';
import { freePort, Mc, Minio, tail } from '../../harness/minio-stack.js';

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
const DECRYPT_ERROR = 'decryption failed: ciphertext is not authentic';

let dir: string;
let data: string;
let kesdPort: number;
let kesdProc: ServerProcess | undefined;
let kesdEnv: NodeJS.ProcessEnv;
let admin: TestIdentity;
let sysadmin: TestIdentity;
let minio: Minio;
let mc: Mc;
/** mc path → what it must read back as (sha256), or that it must fail to. */
const objects = new Map<string, { sha: string; readable: boolean; note: string }>();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const startKesd = async () => {
  kesdProc = await startServer([data, '--addr', `127.0.0.1:${kesdPort}`, '--audit-log', 'off'], kesdEnv);
};
const restartKesd = async () => {
  await stopServer(kesdProc!.child);
  await startKesd();
};
const cliEnv = (who: TestIdentity) => ({
  ...kesdEnv,
  KES_SERVER: `https://127.0.0.1:${kesdPort}`,
  KES_CLIENT_CERT: who.certFile,
  KES_CLIENT_KEY: who.keyFile,
});
async function cli(who: TestIdentity, args: string[]): Promise<string> {
  const r = await kesd([...args], { env: cliEnv(who) });
  assert.equal(r.code, 0, `kesd ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const adminAgent = () => new https.Agent({ cert: admin.cert, key: admin.key, rejectUnauthorized: false });

async function step(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    (err as Error).message +=
      `\n--- kesd log ---\n${kesdProc?.output().split('\n').slice(-30).join('\n')}\n--- minio log ---\n${tail(minio.log)}`;
    throw err;
  }
}

async function put(path: string, note: string, size = 64 * 1024): Promise<void> {
  const body = randomBytes(size);
  await writeFile(join(dir, 'upload'), body);
  await mc.run(['cp', join(dir, 'upload'), path]);
  objects.set(path, { sha: sha256(body), readable: true, note });
}

/** Every object reads back bit-identical, or fails if it must; returns the failures' messages. */
async function readAll(): Promise<Map<string, string>> {
  const failures = new Map<string, string>();
  for (const [path, o] of objects) {
    const out = join(dir, 'readback');
    await rm(out, { force: true });
    try {
      await mc.run(['cp', path, out]);
    } catch (err) {
      failures.set(path, (err as Error).message);
      assert.equal(o.readable, false, `${path} (${o.note}) must read back: ${(err as Error).message}`);
      continue;
    }
    assert.equal(o.readable, true, `${path} (${o.note}) must not read back`);
    assert.equal(sha256(await readFile(out)), o.sha, `${path} (${o.note}): bit-identical`);
  }
  return failures;
}

async function keyStatus(key: string): Promise<void> {
  const [status] = await mc.json(['admin', 'kms', 'key', 'status', 'local', key]);
  assert.equal(status.status, 'success', JSON.stringify(status));
  assert.equal(status.encryptionError ?? '', '');
  assert.equal(status.decryptionError ?? '', '');
}

const versionsOf = async (key: string): Promise<string[]> =>
  JSON.parse(await cli(admin, ['key', 'info', '--json', key])).versions.map((v: { version: string }) => v.version);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-lifecycle-'));
  data = join(dir, 'kesd-data');
  const server = await makeIdentity(dir, 'kesd', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  sysadmin = await makeIdentity(dir, 'sysadmin');
  admin = await makeIdentity(dir, 'admin');
  const minioId = await makeIdentity(dir, 'minio');
  kesdEnv = { ...process.env, KESD_UNSEAL_KEY: randomBytes(32).toString('base64'), KES_CA: server.certFile };
  await initDataDir(
    data,
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
  await minio.start();
  await mc.alias(minio);
  await mc.run(['admin', 'kms', 'key', 'create', 'local', 'bucket-key']);
  await mc.run(['mb', 'local/kms-bucket']);
  await mc.run(['encrypt', 'set', 'sse-kms', 'bucket-key', 'local/kms-bucket']);
  await mc.run(['mb', 'local/s3-bucket']);
  await mc.run(['encrypt', 'set', 'sse-s3', 'local/s3-bucket']); // under MinIO's default key
});

after(async () => {
  await minio?.stop();
  if (kesdProc) await stopServer(kesdProc.child);
  await rm(dir, { recursive: true, force: true });
});

test(
  'rotation: objects written before and after rotations read back bit-identical through kesd restarts; key status passes',
  { timeout: 300_000 },
  () =>
    step(async () => {
      await put('local/kms-bucket/v1-a', 'bucket-key v1');
      await put('local/kms-bucket/v1-multipart', 'bucket-key v1, multipart', 20 * 1024 * 1024);
      await put('local/s3-bucket/v1-a', 'default key v1');
      assert.match(
        await cli(admin, ['key', 'rotate', 'bucket-key', DEFAULT_KEY]),
        /bucket-key: version 2\nminio-default-key: version 2/,
      );
      await put('local/kms-bucket/v2-a', 'bucket-key v2');
      await put('local/s3-bucket/v2-a', 'default key v2');
      await restartKesd();
      await readAll();
      await keyStatus('bucket-key');
      await keyStatus(DEFAULT_KEY);
      // MinIO restarts too: its IAM and config, sealed under the default key before and after the rotation, decrypt.
      await mc.run(['admin', 'user', 'add', 'local', 'alice', 'alice-secret-123']);
      await minio.stop();
      await minio.start();
      assert.equal((await mc.json(['admin', 'user', 'info', 'local', 'alice']))[0].accessKey, 'alice');
      await readAll();
    }),
);

test(
  'a deleted version: its objects fail with the KES decrypt error (never another plaintext); the others read back',
  { timeout: 300_000 },
  () =>
    step(async () => {
      // A data key sealed under version 2, to ask kesd itself after the deletion.
      const agent = adminAgent();
      const dek = (await request(agent, kesdPort, 'POST', '/v1/key/generate/bucket-key', {})).json();
      assert.equal(dek.version, '2');
      await cli(admin, ['key', 'rotate', 'bucket-key']);
      await put('local/kms-bucket/v3-a', 'bucket-key v3');
      await cli(admin, ['key', 'delete-version', 'bucket-key', '2']);
      objects.get('local/kms-bucket/v2-a')!.readable = false;
      objects.get('local/kms-bucket/v2-a')!.note += ' (deleted)';
      assert.deepEqual(await versionsOf('bucket-key'), ['3', '1']);
      const failures = await readAll();
      assert.deepEqual([...failures.keys()], ['local/kms-bucket/v2-a']);
      const decrypt = await request(agent, kesdPort, 'POST', '/v1/key/decrypt/bucket-key', {
        ciphertext: dek.ciphertext,
      });
      assert.equal(decrypt.status, 400);
      assert.equal(decrypt.json().message, DECRYPT_ERROR);
      agent.destroy();
      await restartKesd();
      await readAll();
      await keyStatus('bucket-key');
      console.log(
        `deleted version: MinIO's answer for an object under it: ${
          failures
            .get('local/kms-bucket/v2-a')
            ?.split('\n')
            .find((l) => /rror|decrypt/i.test(l)) ?? failures.get('local/kms-bucket/v2-a')
        }`,
      );
    }),
);

test('an unseal key rotation (kesd rekey) while MinIO keeps its objects', { timeout: 300_000 }, () =>
  step(async () => {
    const newKey = join(dir, 'unseal-2.key');
    await writeFile(newKey, randomBytes(32).toString('base64'), { mode: 0o600 });
    await stopServer(kesdProc!.child);
    const r = await kesd(['rekey', '--new-file', newKey, data], { env: kesdEnv });
    assert.equal(r.code, 0, r.stderr);
    // The recorded source is the new file: the old variable no longer matters.
    await startKesd();
    await readAll();
    await keyStatus('bucket-key');
  }),
);

test('restore drill: write, back up, write more, destroy the data dir, restore, read back', { timeout: 300_000 }, () =>
  step(async () => {
    await put('local/kms-bucket/before-backup', 'bucket-key v3, before the backup');
    const backupFile = join(dir, 'drill.tar');
    const b = await kesd(['backup', '--server', `https://127.0.0.1:${kesdPort}`, backupFile], {
      env: cliEnv(sysadmin),
    });
    assert.equal(b.code, 0, b.stderr);

    // After the backup: an object under a key the backup has, a new key, and a new version.
    await put('local/kms-bucket/after-backup-same-key', 'bucket-key v3, after the backup: its key is in the backup');
    await mc.run(['admin', 'kms', 'key', 'create', 'local', 'late-key']);
    await mc.run(['mb', 'local/late-bucket']);
    await mc.run(['encrypt', 'set', 'sse-kms', 'late-key', 'local/late-bucket']);
    await put('local/late-bucket/after-backup-new-key', 'late-key, created after the backup');
    await cli(admin, ['key', 'rotate', 'bucket-key']);
    await put('local/kms-bucket/after-backup-new-version', 'bucket-key v4, created after the backup');
    await readAll();

    // Disaster: the data dir is gone. Restore the backup and start kesd on it.
    await stopServer(kesdProc!.child);
    kesdProc = undefined;
    await rm(data, { recursive: true, force: true });
    const restored = await kesd(['restore', backupFile, data], { env: kesdEnv });
    assert.equal(restored.code, 0, restored.stderr);
    const check = await kesd(['check', data], { env: kesdEnv });
    assert.equal(check.code, 0, check.stderr);
    await startKesd();
    for (const lost of ['local/late-bucket/after-backup-new-key', 'local/kms-bucket/after-backup-new-version']) {
      objects.get(lost)!.readable = false;
      objects.get(lost)!.note += ' (its key or version is not in the backup)';
    }
    const failures = await readAll();
    assert.deepEqual([...failures.keys()].sort(), [
      'local/kms-bucket/after-backup-new-version',
      'local/kms-bucket/v2-a',
      'local/late-bucket/after-backup-new-key',
    ]);
    assert.deepEqual(await versionsOf('bucket-key'), ['3', '1'], 'the versions of the backup');
    await keyStatus('bucket-key');

    // A rotation after the restore makes a new version 4: the lost version 4's objects still fail, never decrypt
    // under the new one.
    await cli(admin, ['key', 'rotate', 'bucket-key']);
    await put('local/kms-bucket/after-restore', 'bucket-key v4 (new material)');
    const last = await readAll();
    const why = (path: string) =>
      last
        .get(path)
        ?.split('\n')
        .find((l) => /<ERROR>/.test(l))
        ?.replace(/^.*`\. /, '') ?? '';
    console.log(
      'restore drill:\n' +
        [...objects]
          .map(
            ([path, o]) => `  ${path}: ${o.readable ? 'read back bit-identical' : `fails: ${why(path)}`} (${o.note})`,
          )
          .join('\n'),
    );
  }),
);
