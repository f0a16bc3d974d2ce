// The original stateful-KES guide, replayed with `kesd` in place of `kes` (real processes, real mTLS).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fingerprint, kesd, startServer, stopServer } from './cli-process.js';

const INIT_YML = `version: v1
address: 127.0.0.1:0
system:
  admin:
    identity: \${SYS_ADMIN_ID}
tls:
  key: ./private.key
  cert: ./public.crt
  client:
    verify_cert: off
unseal:
  environment:
    name: KES_UNSEAL_KEY
enclave:
  tenant-1:
    admin:
      identity: \${TENANT_1_ADMIN_ID}
    policy:
      minio:
        allow:
        - /v1/api
        - /v1/log/error
        - /v1/log/audit
        - /v1/key/create/*
        - /v1/key/generate/*
        - /v1/key/decrypt/*
        - /v1/key/bulk/decrypt/*
        - /v1/key/list/*
        - /v1/status
        - /v1/metrics
        deny:
        - /v1/key/generate/my-app-internal*
`;

test('the original guide works with kesd in place of kes', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-guide-'));
  const run = async (args: string[], env: NodeJS.ProcessEnv = process.env) => {
    const r = await kesd(args, { env, cwd: dir });
    assert.equal(r.code, 0, `kesd ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  const identityIn = (out: string) => /Identity:\s+([0-9a-f]{64})/.exec(out)![1]!;
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    // 1. Four identities: the server, the system admin, the enclave admin and MinIO.
    await run([
      'identity',
      'new',
      '--key',
      'private.key',
      '--cert',
      'public.crt',
      '--ip',
      '127.0.0.1',
      '--dns',
      'localhost',
      'localhost',
    ]);
    const sysAdmin = identityIn(
      await run(['identity', 'new', '--key', 'sys-admin.key', '--cert', 'sys-admin.crt', 'sys-admin']),
    );
    const tenantAdmin = identityIn(
      await run(['identity', 'new', '--key', 'tenant-1-admin.key', '--cert', 'tenant-1-admin.crt', 'tenant-1-admin']),
    );
    const minio = identityIn(await run(['identity', 'new', '--key', 'minio.key', '--cert', 'minio.crt', 'MinIO']));
    assert.equal((await run(['identity', 'of', 'minio.crt'])).trim(), minio);

    // 2–3. The guide's init.yml, `kesd init`, then `kesd server`.
    await writeFile(join(dir, 'init.yml'), INIT_YML);
    const unsealKey = Buffer.alloc(32, 1).toString('base64');
    const env = { ...process.env, SYS_ADMIN_ID: sysAdmin, TENANT_1_ADMIN_ID: tenantAdmin, KES_UNSEAL_KEY: unsealKey };
    await run(['init', '--config', 'init.yml', join(dir, 'kes-data')], env);
    server = await startServer([join(dir, 'kes-data'), '--audit-log', 'off'], env);
    const as = (who: string) => ({
      ...process.env,
      KES_SERVER: `https://127.0.0.1:${server!.port}`,
      KES_CLIENT_CERT: join(dir, `${who}.crt`),
      KES_CLIENT_KEY: join(dir, `${who}.key`),
      KES_ENCLAVE: 'tenant-1',
    });

    // 4. The enclave admin assigns MinIO to the policy.
    await run(['policy', 'assign', '-k', 'minio', minio], as('tenant-1-admin'));

    // 5. MinIO creates a key, generates a data key and decrypts it.
    await run(['key', 'create', '-k', 'minio-key'], as('minio'));
    const dek = JSON.parse(await run(['key', 'dek', '-k', 'minio-key'], as('minio')));
    const plain = JSON.parse(await run(['key', 'decrypt', '-k', 'minio-key', dek.ciphertext], as('minio')));
    assert.equal(plain.plaintext, dek.plaintext);
    const denied = await kesd(['key', 'dek', '-k', 'my-app-internal-1'], { env: as('minio'), cwd: dir });
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /not authorized: insufficient permissions/);

    // 6. Restart with the same unseal key: keys and policies are still there.
    await stopServer(server.child);
    server = await startServer(
      [join(dir, 'kes-data'), '--addr', `127.0.0.1:${server.port}`, '--audit-log', 'off'],
      env,
    );
    assert.match(await run(['key', 'ls', '-k'], as('minio')), /minio-key/);
    const again = JSON.parse(await run(['key', 'decrypt', '-k', 'minio-key', dek.ciphertext], as('minio')));
    assert.equal(again.plaintext, dek.plaintext);
    assert.match(await run(['policy', 'show', '-k', 'minio'], as('tenant-1-admin')), /\/v1\/key\/generate\/\*/);
    await stopServer(server.child);
    server = undefined;

    // 7. Restart with a different unseal key: refused, and the data dir is byte-identical.
    const before = await fingerprint(join(dir, 'kes-data'));
    const wrong = await kesd(['server', join(dir, 'kes-data')], {
      env: { ...env, KES_UNSEAL_KEY: Buffer.alloc(32, 2).toString('base64') },
      cwd: dir,
    });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /unseal key is wrong/);
    assert.deepEqual(await fingerprint(join(dir, 'kes-data')), before);
  } finally {
    if (server) await stopServer(server.child);
    await rm(dir, { recursive: true, force: true });
  }
});
