// `kesd server --init init.yml`: initialises an empty data dir, then applies init.yml at every start
// (the Kubernetes entrypoint), and `api.<path>.skip_auth` opens a probe route without a client cert.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeIdentity, request } from './harness.js';
import { fingerprint, kesd, startServer, stopServer } from './cli-process.js';

const ENV_SOURCE = '{ environment: { name: KESD_UNSEAL } }';

const initYml = (
  dir: string,
  ids: Record<string, string>,
  keys: string[],
  minio: string[],
  unseal = ENV_SOURCE,
) => `version: v1
address: 127.0.0.1:0
system: { admin: { identity: ${ids.sysadmin} } }
tls: { key: ${join(dir, 'server.key')}, cert: ${join(dir, 'server.crt')} }
unseal: ${unseal}
api:
  /v1/ready: { skip_auth: true }
enclave:
  default:
    admin: { identity: ${ids.admin} }
    policy:
      minio:
        allow: [/v1/key/generate/*, /v1/key/decrypt/*]
        identities: [${minio.join(', ')}]
    keys: [${keys.map((k) => `{ name: ${k} }`).join(', ')}]
`;

test('server --init initialises once, then applies new keys and assignments at the next start', {
  timeout: 60_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-init-'));
  const ids: Record<string, string> = {};
  for (const who of ['sysadmin', 'admin', 'minio']) ids[who] = (await makeIdentity(dir, who)).identity;
  const minio2 = await makeIdentity(dir, 'minio2');
  ids.minio2 = minio2.identity;
  await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  const env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 4).toString('base64') };
  const data = join(dir, 'pvc', 'data');
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    await writeFile(join(dir, 'init.yml'), initYml(dir, ids, ['minio-default'], [ids.minio!]));
    server = await startServer([data, '--init', join(dir, 'init.yml'), '--audit-log', 'off'], env);
    const anonymous = new https.Agent({ rejectUnauthorized: false });
    assert.equal(
      (await request(anonymous, server.port, 'GET', '/v1/ready')).status,
      200,
      '/v1/ready needs no certificate',
    );
    assert.equal((await request(anonymous, server.port, 'GET', '/v1/status')).status, 400, 'other routes still do');
    const as2 = new https.Agent({ rejectUnauthorized: false, cert: minio2.cert, key: minio2.key });
    assert.equal((await request(as2, server.port, 'POST', '/v1/key/generate/minio-default', {})).status, 403);
    await stopServer(server.child);

    await writeFile(join(dir, 'init.yml'), initYml(dir, ids, ['minio-default', 'bucket-a'], [ids.minio!, ids.minio2!]));
    server = await startServer([data, '--init', join(dir, 'init.yml'), '--audit-log', 'off'], env);
    assert.equal(
      (await request(as2, server.port, 'POST', '/v1/key/generate/bucket-a', {})).status,
      200,
      'new key and new assignment applied',
    );
    await stopServer(server.child);
    server = undefined;

    const other = await kesd(['server', data, '--init', join(dir, 'init.yml')], {
      env: { ...env, KESD_UNSEAL: Buffer.alloc(32, 5).toString('base64') },
    });
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /unseal key is wrong/);
  } finally {
    if (server) await stopServer(server.child);
    await rm(dir, { recursive: true, force: true });
  }
});

test('unseal.file: server --init moves a data dir from the variable to a key file; then no variable is needed', {
  timeout: 90_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-init-file-'));
  const ids: Record<string, string> = {};
  for (const who of ['sysadmin', 'admin', 'minio']) ids[who] = (await makeIdentity(dir, who)).identity;
  await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  const key = Buffer.alloc(32, 6).toString('base64');
  const keyFile = join(dir, 'unseal.key');
  await writeFile(keyFile, `${key}\n`, { mode: 0o400 });
  const { KESD_UNSEAL: _, ...withoutKey } = process.env;
  const data = join(dir, 'data');
  const fileYml = join(dir, 'init-file.yml');
  await writeFile(join(dir, 'init.yml'), initYml(dir, ids, ['minio-default'], [ids.minio!]));
  await writeFile(fileYml, initYml(dir, ids, ['minio-default'], [ids.minio!], `{ file: { path: ${keyFile} } }`));
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    server = await startServer([data, '--init', join(dir, 'init.yml'), '--audit-log', 'off'], {
      ...withoutKey,
      KESD_UNSEAL: key,
    });
    await stopServer(server.child);
    assert.equal(JSON.parse(await readFile(join(data, '.unseal'), 'utf8')).env, 'KESD_UNSEAL');

    // The deployment now mounts a key file instead: the same data dir opens without the variable.
    server = await startServer([data, '--init', fileYml, '--audit-log', 'off'], withoutKey);
    await stopServer(server.child);
    const unseal = JSON.parse(await readFile(join(data, '.unseal'), 'utf8'));
    assert.deepEqual(
      { version: unseal.version, file: unseal.file, env: unseal.env },
      { version: 2, file: keyFile, env: undefined },
    );
    assert.match(await readFile(join(data, '.init'), 'utf8'), new RegExp(`unseal:\\s+file:\\s+path: ${keyFile}`));
    server = await startServer([data, '--audit-log', 'off'], withoutKey);
    await stopServer(server.child);

    // A key file with the wrong key: refused, and nothing in the data dir changes.
    await rm(keyFile); // read-only: replaced, as a Secret volume replaces its files
    await writeFile(keyFile, Buffer.alloc(32, 7).toString('base64'), { mode: 0o400 });
    const before = await fingerprint(data);
    const wrong = await kesd(['server', data, '--init', fileYml], { env: withoutKey });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /unseal key is wrong/);
    assert.deepEqual(await fingerprint(data), before);

    // A fresh data dir from an init.yml with a key file.
    await rm(keyFile);
    await writeFile(keyFile, key, { mode: 0o400 });
    server = await startServer([join(dir, 'fresh'), '--init', fileYml, '--audit-log', 'off'], withoutKey);
    await stopServer(server.child);
    server = undefined;
    assert.equal(JSON.parse(await readFile(join(dir, 'fresh', '.unseal'), 'utf8')).file, keyFile);
  } finally {
    if (server) await stopServer(server.child);
    await rm(dir, { recursive: true, force: true });
  }
});
