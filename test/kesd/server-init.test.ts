// `kesd server --init init.yml`: initialises an empty data dir, then applies init.yml at every start
// (the Kubernetes entrypoint), and `api.<path>.skip_auth` opens a probe route without a client cert.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeIdentity, request } from './harness.js';
import { kesd, startServer, stopServer } from './cli-process.js';

const initYml = (dir: string, ids: Record<string, string>, keys: string[], minio: string[]) => `version: v1
address: 127.0.0.1:0
system: { admin: { identity: ${ids.sysadmin} } }
tls: { key: ${join(dir, 'server.key')}, cert: ${join(dir, 'server.crt')} }
unseal: { environment: { name: KESD_UNSEAL } }
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

test('server --init initialises once, then applies new keys and assignments at the next start', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-init-'));
  const ids: Record<string, string> = {};
  for (const who of ['sysadmin', 'admin', 'minio']) ids[who] = (await makeIdentity(dir, who)).identity;
  const minio2 = await makeIdentity(dir, 'minio2');
  ids.minio2 = minio2.identity;
  await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  const env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 4).toString('base64') };
  const data = join(dir, 'pvc', 'data');
  let server;
  try {
    await writeFile(join(dir, 'init.yml'), initYml(dir, ids, ['minio-default'], [ids.minio!]));
    server = await startServer([data, '--init', join(dir, 'init.yml'), '--audit-log', 'off'], env);
    const anonymous = new https.Agent({ rejectUnauthorized: false });
    assert.equal((await request(anonymous, server.port, 'GET', '/v1/ready')).status, 200, '/v1/ready needs no certificate');
    assert.equal((await request(anonymous, server.port, 'GET', '/v1/status')).status, 400, 'other routes still do');
    const as2 = new https.Agent({ rejectUnauthorized: false, cert: minio2.cert, key: minio2.key });
    assert.equal((await request(as2, server.port, 'POST', '/v1/key/generate/minio-default', {})).status, 403);
    await stopServer(server.child);

    await writeFile(join(dir, 'init.yml'), initYml(dir, ids, ['minio-default', 'bucket-a'], [ids.minio!, ids.minio2!]));
    server = await startServer([data, '--init', join(dir, 'init.yml'), '--audit-log', 'off'], env);
    assert.equal((await request(as2, server.port, 'POST', '/v1/key/generate/bucket-a', {})).status, 200, 'new key and new assignment applied');
    await stopServer(server.child);
    server = undefined;

    const other = await kesd(['server', data, '--init', join(dir, 'init.yml')], { env: { ...env, KESD_UNSEAL: Buffer.alloc(32, 5).toString('base64') } });
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /unseal key is wrong/);
  } finally {
    if (server) await stopServer(server.child);
    await rm(dir, { recursive: true, force: true });
  }
});
