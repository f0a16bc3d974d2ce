// The real `kes` v0.22.3 CLI (the one the original guide used) against `kesd server`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { kesd, startServer, stopServer, type ServerProcess } from '../kesd/cli-process.js';
import { peer } from '../../harness/peers.js';

const KES = peer('kes-v0.22');
let dir: string;
let server: ServerProcess;
const ids: Record<string, string> = {};

async function kes(
  who: string,
  args: string[],
  enclave?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = {
    ...process.env,
    KES_SERVER: `https://127.0.0.1:${server.port}`,
    KES_CLIENT_CERT: join(dir, `${who}.crt`),
    KES_CLIENT_KEY: join(dir, `${who}.key`),
    ...(enclave ? { KES_ENCLAVE: enclave } : {}),
  };
  try {
    const { stdout, stderr } = await promisify(execFile)(KES, args, { env, cwd: dir });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function ok(who: string, args: string[], enclave?: string): Promise<string> {
  const r = await kes(who, args, enclave);
  assert.equal(r.code, 0, `kes ${args.join(' ')} as ${who}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kes022-'));
  const run = (args: string[]) => promisify(execFile)(KES, args, { cwd: dir });
  // Identities made by the real kes CLI; kesd must compute the same identity for each.
  await run(['identity', 'new', '--key', 'server.key', '--cert', 'server.crt', '--ip', '127.0.0.1', 'localhost']);
  for (const who of ['sysadmin', 'tenant-admin', 'minio', 'other-admin']) {
    await run(['identity', 'new', '--key', `${who}.key`, '--cert', `${who}.crt`, who]);
    ids[who] = (await run(['identity', 'of', `${who}.crt`])).stdout.trim();
    const ours = await kesd(['identity', 'of', join(dir, `${who}.crt`)]);
    assert.equal(ours.stdout.trim(), ids[who], `kesd and kes agree on the identity of ${who}`);
  }
  await writeFile(
    join(dir, 'init.yml'),
    `version: v1
address: 127.0.0.1:0
system:
  admin:
    identity: ${ids.sysadmin}
tls:
  key: server.key
  cert: server.crt
unseal:
  environment:
    name: KES_UNSEAL_KEY
enclave:
  tenant-1:
    admin:
      identity: ${ids['tenant-admin']}
    policy:
      minio:
        allow: [/v1/key/create/*, /v1/key/generate/*, /v1/key/decrypt/*, /v1/key/encrypt/*, /v1/key/list/*, /v1/key/describe/*, /v1/status]
        deny: [/v1/key/delete/*]
`,
  );
  const env = { ...process.env, KES_UNSEAL_KEY: Buffer.alloc(32, 3).toString('base64') };
  const init = await kesd(['init', '--config', 'init.yml', join(dir, 'data')], { env, cwd: dir });
  assert.equal(init.code, 0, init.stderr);
  server = await startServer([join(dir, 'data'), '--audit-log', 'off'], env);
});

after(async () => {
  if (server) await stopServer(server.child);
  await rm(dir, { recursive: true, force: true });
});

test('kes policy assign as the enclave admin, then MinIO creates, lists, describes and uses a key', async () => {
  await ok('tenant-admin', ['policy', 'assign', '-k', 'minio', ids.minio!], 'tenant-1');
  await ok('minio', ['key', 'create', '-k', 'minio-key'], 'tenant-1');
  const list = await ok('minio', ['key', 'ls', '-k', '--json'], 'tenant-1');
  assert.match(list, /"name":\s*"minio-key"/i);
  const info = await ok('minio', ['key', 'info', '-k', '--json', 'minio-key'], 'tenant-1');
  assert.match(info, /minio-key/);
  const dek = JSON.parse(await ok('minio', ['key', 'dek', '-k', 'minio-key'], 'tenant-1'));
  assert.equal(Buffer.from(dek.plaintext, 'base64').length, 32);
  const plain = JSON.parse(await ok('minio', ['key', 'decrypt', '-k', 'minio-key', dek.ciphertext], 'tenant-1'));
  assert.equal(plain.plaintext, dek.plaintext);
  const enc = JSON.parse(await ok('minio', ['key', 'encrypt', '-k', 'minio-key', 'hello kesd'], 'tenant-1'));
  const dec = JSON.parse(await ok('minio', ['key', 'decrypt', '-k', 'minio-key', enc.ciphertext], 'tenant-1'));
  assert.equal(Buffer.from(dec.plaintext, 'base64').toString(), 'hello kesd');
  const denied = await kes('minio', ['key', 'rm', '-k', 'minio-key'], 'tenant-1');
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /not authorized|insufficient permissions|prohibited/);
  await ok('tenant-admin', ['key', 'rm', '-k', 'minio-key'], 'tenant-1');
  const gone = await kes('minio', ['key', 'info', '-k', 'minio-key'], 'tenant-1');
  assert.match(gone.stderr, /key does not exist/);
});

test('kes enclave create, info and rm as the system admin', async () => {
  await ok('sysadmin', ['enclave', 'create', '-k', 'tenant-2', ids['other-admin']!]);
  assert.match(await ok('sysadmin', ['enclave', 'info', '-k', '--json', 'tenant-2']), /tenant-2/);
  await ok('other-admin', ['key', 'create', '-k', 'k2'], 'tenant-2');
  const cross = await kes('other-admin', ['key', 'info', '-k', 'k2'], 'tenant-1');
  assert.notEqual(cross.code, 0, 'another enclave admin cannot reach tenant-1');
  await ok('sysadmin', ['enclave', 'rm', '-k', 'tenant-2']);
  const after = await kes('sysadmin', ['enclave', 'info', '-k', 'tenant-2']);
  assert.match(after.stderr, /enclave does not exist/);
});

test('kes status as the system admin', async () => {
  const status = JSON.parse(await ok('sysadmin', ['status', '-k', '--json']));
  assert.ok(JSON.stringify(status).length > 2);
});

test('kes log --audit streams the requests', async () => {
  const env = {
    ...process.env,
    KES_SERVER: `https://127.0.0.1:${server.port}`,
    KES_CLIENT_CERT: join(dir, 'sysadmin.crt'),
    KES_CLIENT_KEY: join(dir, 'sysadmin.key'),
  };
  const log = spawn(KES, ['log', '--audit', '--json', '-k'], { env });
  let out = '';
  log.stdout.on('data', (d) => (out += d));
  try {
    await new Promise((r) => setTimeout(r, 500));
    await ok('tenant-admin', ['key', 'create', '-k', 'audited-key'], 'tenant-1');
    for (let i = 0; i < 100 && !out.includes('/v1/key/create/audited-key'); i++)
      await new Promise((r) => setTimeout(r, 50));
    const event = out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l))
      .find((e) => e.request?.path === '/v1/key/create/audited-key');
    assert.ok(event, `no audit event in: ${out}`);
    assert.equal(event.request.identity, ids['tenant-admin']);
    assert.equal(event.response.code, 200);
  } finally {
    log.kill();
  }
});
