// The latest real `kes` CLI (kms-go client, as in current MinIO) against kesd: API-key and certificate auth.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { identityOfApiKey } from '../../kesd/src/identity/spki.js';
import { startTestServer, type TestServer } from '../kesd/harness.js';
import { peer } from '../../harness/peers.js';

const KES = peer('kes-latest');
let s: TestServer;
let apiKey: string;

async function kes(auth: 'api-key' | 'cert', args: string[]): Promise<string> {
  const env: NodeJS.ProcessEnv = { ...process.env, MINIO_KES_SERVER: `127.0.0.1:${s.port}` };
  if (auth === 'api-key') env.MINIO_KES_API_KEY = apiKey;
  else Object.assign(env, { MINIO_KES_CERT_FILE: s.user.certFile, MINIO_KES_KEY_FILE: s.user.keyFile });
  try {
    return (await promisify(execFile)(KES, args, { env })).stdout;
  } catch (err) {
    const e = err as { stdout: string; stderr: string };
    throw new Error(`kes ${args.join(' ')} (${auth}) failed: ${e.stdout}${e.stderr}`);
  }
}

before(async () => {
  const out = (await promisify(execFile)(KES, ['identity', 'new'])).stdout;
  apiKey = /(kes:v1:\S+)/.exec(out)![1]!;
  const identity = /Your Identity:\s+([0-9a-f]{64})/.exec(out)![1]!;
  assert.equal(identityOfApiKey(apiKey), identity, 'kesd derives the same identity from the API key as kes');
  s = await startTestServer({
    adminIdentity: identity,
    keys: [],
    userPolicy: { allow: ['/v1/key/*', '/v1/status', '/v1/metrics'], deny: ['/v1/key/delete/*'] },
  });
});

after(() => s.stop());

for (const auth of ['api-key', 'cert'] as const) {
  test(`key create, ls, info, dek, encrypt and decrypt with ${auth} auth`, async () => {
    const name = `latest-${auth}`;
    await kes(auth, ['key', 'create', '-k', name]);
    assert.match(await kes(auth, ['key', 'ls', '-k', '--json']), new RegExp(name));
    assert.match(await kes(auth, ['key', 'info', '-k', '--json', name]), new RegExp(name));
    const dek = JSON.parse(await kes(auth, ['key', 'dek', '-k', name]));
    assert.equal(Buffer.from(dek.plaintext, 'base64').length, 32);
    const plain = JSON.parse(await kes(auth, ['key', 'decrypt', '-k', name, dek.ciphertext]));
    assert.equal(plain.plaintext, dek.plaintext);
    const enc = JSON.parse(await kes(auth, ['key', 'encrypt', '-k', name, 'hello kesd']));
    const dec = JSON.parse(await kes(auth, ['key', 'decrypt', '-k', name, enc.ciphertext]));
    assert.equal(Buffer.from(dec.plaintext, 'base64').toString(), 'hello kesd');
  });
}

test('key rm by the admin (API key); the policy denies it to the certificate user', async () => {
  await kes('api-key', ['key', 'create', '-k', 'doomed']);
  await assert.rejects(kes('cert', ['key', 'rm', '-k', 'doomed']), /not authorized: insufficient permissions/);
  await kes('api-key', ['key', 'rm', '-k', 'doomed']);
  await assert.rejects(kes('api-key', ['key', 'info', '-k', 'doomed']), /key does not exist/);
});

test('kes status reports the server and a reachable keystore', async () => {
  const status = JSON.parse(await kes('cert', ['status', '-k', '--json']));
  assert.ok(status, 'status decoded');
  const text = await kes('api-key', ['status', '-k']);
  assert.doesNotMatch(text, /unreachable/i);
});

test('kes metric reads the Prometheus metrics', async () => {
  const env = { ...process.env, MINIO_KES_SERVER: `127.0.0.1:${s.port}`, MINIO_KES_API_KEY: apiKey };
  const child = spawn(KES, ['metric', '-k', '--rate', '1s'], { env });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  for (let i = 0; i < 60 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 100));
  child.kill();
  assert.doesNotMatch(err, /error|failed/i, err);
  const metrics = JSON.parse(out.split('\n')[0]!); // not a terminal: one JSON object per scrape
  assert.ok(metrics.kes_http_request_success > 0, out);
  assert.equal(metrics.kes_system_num_cpu > 0, true);
});
