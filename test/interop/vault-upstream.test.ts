// kesd with a real Vault as its upstream (init.yml `upstream`: KV v2 under a prefix, AppRole, TLS with a CA), behind a
// real MinIO, kesd with two worker processes. One scenario, step by step:
//   1. write-through: keys made through kesd and MinIO land in Vault in KES's layout, byte for byte;
//   2. Vault stopped under S3 load: zero failed S3 requests and key creates; the backlog grows, in /v1/status (which
//      the kes CLIs and MinIO still parse) and /v1/metrics;
//   3. Vault back (under S3 reads): the backlog drains to zero and Vault holds exactly kesd's keys; the real KES v0.24
//      on the same Vault prefix decrypts what kesd encrypted;
//   4. kill -9 of kesd with a backlog: nothing queued is lost;
//   5. crash points of a sync, with the real Vault: killed before its Vault call, between Vault's answer and the
//      acknowledgement, after it; the restarted kesd converges;
//   6. disaster: the data dir wiped, `kesd init` takes every key back from Vault, every object written before reads back;
//   7. conflicts with the real Vault (a foreign key, a deleted version 1): left alone, reported, synced once cleared.
// Figures (backlog sizes, drain times, keys compared) are reported as test diagnostics, never asserted as timings.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { parseKesStoredKey } from '../../kesd/src/kes/stored-key.js';
import { openLmdbStore } from '../../kesd/src/store/lmdb.js';
import { openSealedRootKey } from '../../kesd/src/store/unseal.js';
import { System } from '../../kesd/src/state/system.js';
import { makeIdentity, type TestIdentity } from '../kesd/harness.js';
import { kesd as kesdCli } from '../kesd/cli-process.js';
import { agentFor, call, startKesd, type KesdProcess } from '../kesd/load.js';
import { freePort, Mc, Minio, sleep, tail } from '../../harness/minio-stack.js';
import { peer } from '../../harness/peers.js';
import { appRole, enableKv, kvPolicy, startVault, type VaultServer } from '../../harness/vault.js';
import { kesCli, newKesApiKey, startKesServer } from '../../harness/kes-server.js';
import { ensureS3load, runS3load, type S3LoadResult } from '../../bench/lib/e2e-s3load.mts';

const UNSEAL_ENV = 'KESD_UPSTREAM_UNSEAL';
const MINIO_POLICY = [
  '/v1/key/create/*',
  '/v1/key/generate/*',
  '/v1/key/decrypt/*',
  '/v1/key/describe/*',
  '/v1/key/list/*',
  '/v1/status',
  '/v1/api',
  '/v1/metrics',
];
const PREFIX = 'kesd';

let dir: string;
let data: string;
let vault: VaultServer;
let ids: Record<'server' | 'sysadmin' | 'admin' | 'minio', TestIdentity>;
let env: NodeJS.ProcessEnv;
let port: number;
let server: KesdProcess | undefined;
let minio: Minio;
let mc: Mc;
let s3load: string;
const objects = new Map<string, string>(); // path → sha256, outside the load bucket
let loadPayload = ''; // sha256 of every object of the load bucket (s3load writes the same bytes to each)

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function start(extraEnv: NodeJS.ProcessEnv = {}, workers = '2'): Promise<KesdProcess> {
  server = await startKesd(
    data,
    { ...env, ...extraEnv },
    ['--addr', `127.0.0.1:${port}`, '--audit-log', 'off', '--workers', workers],
    { startMs: 60_000 },
  );
  return server;
}

async function api(who: TestIdentity, method: string, path: string, body?: unknown) {
  const agent = agentFor(who);
  try {
    return await call(agent, port, method, path, body);
  } finally {
    agent.destroy();
  }
}

async function upstreamStatus(): Promise<{
  backlog: number;
  reachable: boolean;
  oldest_unsynced_seconds: number;
  conflicts: number;
}> {
  const reply = await api(ids.sysadmin, 'GET', '/v1/status');
  assert.equal(reply.status, 200, reply.text);
  return reply.json().upstream;
}

async function until(what: string, check: () => Promise<boolean>, ms = 180_000): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await sleep(200);
  }
  return Date.now() - t0;
}

/** Waits for an empty backlog with Vault reachable; resolves with how long it took. */
const drained = () =>
  until('the backlog to drain', async () => {
    const s = await upstreamStatus();
    return s.backlog === 0 && s.reachable;
  });

/** Every key of kesd's default enclave, read from its store (LMDB allows this process beside the server's). */
async function kesdKeys(): Promise<Map<string, { key: string; hmac: string }>> {
  const store = await openLmdbStore(join(data, 'db'));
  try {
    const { root } = await openSealedRootKey(data, env);
    const system = await System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false });
    const out = new Map<string, { key: string; hmac: string }>();
    for await (const { name, record } of system.enclaves.get('default')!.listKeys())
      out.set(name, { key: record.key, hmac: record.hmac });
    system.release();
    return out;
  } finally {
    await store.close();
  }
}

/** Every key under the prefix in Vault, read the way KES reads it (version 1 of kv2/data/<prefix>/<name>). */
async function vaultKeys(): Promise<Map<string, { key: string; hmac: string }>> {
  const listed = await vault.call('GET', `kv2/metadata/${PREFIX}?list=true`, undefined, [200, 404]);
  const out = new Map<string, { key: string; hmac: string }>();
  for (const name of (listed.body?.data?.keys ?? []) as string[]) {
    const entry = (await vault.call('GET', `kv2/data/${PREFIX}/${name}?version=1`)).body.data.data;
    const k = parseKesStoredKey(Buffer.from(entry[name]));
    out.set(name, { key: k.bytes.toString('base64'), hmac: k.hmac!.toString('base64') });
  }
  return out;
}

/** Vault holds exactly kesd's keys, same bytes and HMAC keys; resolves with how many were compared. */
async function assertVaultMatchesKesd(): Promise<number> {
  const [local, remote] = await Promise.all([kesdKeys(), vaultKeys()]);
  assert.deepEqual([...remote.keys()].sort(), [...local.keys()].sort(), 'the same key names');
  for (const [name, k] of local)
    assert.deepEqual(remote.get(name), k, `key '${name}': Vault holds other bytes than kesd`);
  return local.size;
}

async function step(t: TestContext, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    (err as Error).message +=
      `\n--- kesd ---\n${server?.output().split('\n').slice(-40).join('\n')}\n--- vault ---\n${tail(vault.log, 20)}\n--- minio ---\n${minio ? tail(minio.log, 20) : ''}`;
    throw err;
  }
  void t;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-upstream-'));
  data = join(dir, 'data');
  ids = {
    server: await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] }),
    sysadmin: await makeIdentity(dir, 'sysadmin'),
    admin: await makeIdentity(dir, 'admin'),
    minio: await makeIdentity(dir, 'minio'),
  };
  vault = await startVault({ tls: true });
  await enableKv(vault, 'kv2', 'v2');
  const role = await appRole(vault, 'kesd', kvPolicy('kv2', PREFIX, 'v2'));
  env = { ...process.env, [UNSEAL_ENV]: randomBytes(32).toString('base64'), KESD_VAULT_SECRET_ID: role.secretId };
  await writeFile(
    join(dir, 'init.yml'),
    stringify({
      version: 'v1',
      system: { admin: { identity: ids.sysadmin.identity } },
      tls: { key: ids.server.keyFile, cert: ids.server.certFile },
      unseal: { environment: { name: UNSEAL_ENV } },
      enclave: {
        default: {
          admin: { identity: ids.admin.identity },
          policy: { minio: { allow: MINIO_POLICY, identities: [ids.minio.identity] } },
          keys: [{ name: 'minio-default-key' }],
        },
      },
      upstream: {
        vault: {
          endpoint: vault.addr,
          engine: 'kv2',
          version: 'v2',
          prefix: PREFIX,
          approle: { id: role.roleId, secret: '${KESD_VAULT_SECRET_ID}' },
          tls: { ca: vault.caFile },
        },
      },
    }),
  );
  const init = await kesdCli(['init', '--config', join(dir, 'init.yml'), data], { env });
  assert.equal(init.code, 0, init.stdout + init.stderr);
  port = await freePort();
  await start();
  mc = new Mc(join(dir, 'mc'));
  minio = new Minio(dir, await freePort(), await freePort(), {
    endpoint: `https://127.0.0.1:${port}`,
    certFile: ids.minio.certFile,
    keyFile: ids.minio.keyFile,
    caFile: ids.server.certFile,
    defaultKey: 'minio-default-key',
  });
  await minio.start();
  await mc.alias(minio);
  s3load = ensureS3load(() => {});
});

after(async () => {
  await minio?.stop();
  await server?.stop();
  await vault?.remove();
  await rm(dir, { recursive: true, force: true });
});

const s3 = () => ({ url: minio.url, user: minio.user, password: minio.password });
const failed = (r: S3LoadResult) => Object.values(r.errors).reduce((a, b) => a + b, 0);

test('1. write-through: keys made through kesd and MinIO reach Vault in KES layout, byte for byte', (t) =>
  step(t, async () => {
    await mc.run(['admin', 'kms', 'key', 'create', 'local', 'load-key']);
    await mc.run(['mb', 'local/load']);
    await mc.run(['encrypt', 'set', 'sse-kms', 'load-key', 'local/load']);
    await drained();
    const compared = await assertVaultMatchesKesd();
    assert.equal(compared, 2, 'minio-default-key and load-key');
    t.diagnostic(`keys compared: ${compared}`);
  }));

test('2. Vault stopped under S3 load: zero failed S3 requests and key creates; the backlog grows in status and metrics', (t) =>
  step(t, async () => {
    const load = runS3load(s3load, s3(), {
      op: 'put',
      bucket: 'load',
      size: 16 * 1024,
      conns: 4,
      durationS: 25,
      warmupS: 0,
      seed: 18,
      pids: {},
    });
    await sleep(3000);
    await vault.stop();
    for (let i = 0; i < 10; i++) {
      const reply = await api(ids.admin, 'POST', `/v1/key/create/outage-${i}`);
      assert.equal(reply.status, 200, `create outage-${i} while Vault is down: ${reply.text}`);
    }
    await mc.run(['admin', 'kms', 'key', 'create', 'local', 'outage-mc']);
    await mc.run(['mb', 'local/outage-bucket']);
    await mc.run(['encrypt', 'set', 'sse-kms', 'outage-mc', 'local/outage-bucket']);
    const body = randomBytes(300 * 1024);
    await writeFile(join(dir, 'obj'), body);
    await mc.run(['cp', join(dir, 'obj'), 'local/outage-bucket/during-outage']);
    objects.set('local/outage-bucket/during-outage', sha256(body));
    assert.equal((await api(ids.admin, 'DELETE', '/v1/key/delete/outage-9')).status, 200);

    // outage-0…9 (the delete of outage-9 coalesces with its create) and outage-mc.
    await until('the sync loop to notice', async () => !(await upstreamStatus()).reachable, 30_000);
    const status = await upstreamStatus();
    assert.equal(status.backlog, 11);
    assert.equal(status.conflicts, 0);
    await until('the oldest change to age', async () => (await upstreamStatus()).oldest_unsynced_seconds >= 1, 30_000);
    const metrics = (await api(ids.sysadmin, 'GET', '/v1/metrics')).text;
    assert.match(metrics, /^kesd_upstream_backlog 11$/m);
    assert.match(metrics, /^kesd_upstream_reachable 0$/m);

    // The status extension does not break its clients: both kes CLIs, and MinIO's KMS status.
    const latest = await promisify(execFile)(peer('kes-latest'), ['status', '-k', '--json'], {
      env: {
        ...process.env,
        MINIO_KES_SERVER: `127.0.0.1:${port}`,
        MINIO_KES_CERT_FILE: ids.sysadmin.certFile,
        MINIO_KES_KEY_FILE: ids.sysadmin.keyFile,
      },
    });
    assert.ok(JSON.parse(latest.stdout), latest.stdout);
    const old = await promisify(execFile)(peer('kes-v0.22'), ['status', '-k', '--json'], {
      env: {
        ...process.env,
        KES_SERVER: `https://127.0.0.1:${port}`,
        KES_CLIENT_CERT: ids.sysadmin.certFile,
        KES_CLIENT_KEY: ids.sysadmin.keyFile,
      },
    });
    assert.ok(JSON.parse(old.stdout), old.stdout);
    const info = await mc.run(['admin', 'info', 'local', '--json']);
    assert.match(
      info,
      new RegExp(`127\\.0\\.0\\.1:${port}[^}]*"online"|"online"[^}]*127\\.0\\.0\\.1:${port}`),
      `MinIO sees kesd online: ${info.slice(0, 2000)}`,
    );

    const result = await load;
    assert.equal(
      failed(result),
      0,
      `S3 requests failed while Vault was down: ${JSON.stringify(result.errors)} ${JSON.stringify(result.error_sample ?? {})}`,
    );
    assert.ok(result.total_ok > 0);
    await mc.run(['cp', 'local/load/obj-00000000', join(dir, 'first')]);
    loadPayload = sha256(await readFile(join(dir, 'first')));
    t.diagnostic(
      `S3 PUTs while Vault was down: ${result.total_ok} ok, ${failed(result)} failed; key creates: 11 ok, 0 failed; backlog ${status.backlog}`,
    );
  }));

test('3. Vault back, under S3 reads: the backlog drains to zero, Vault holds exactly kesd keys, and the real KES v0.24 reads them', (t) =>
  step(t, async () => {
    const reads = runS3load(s3load, s3(), {
      op: 'get',
      bucket: 'load',
      size: 16 * 1024,
      conns: 4,
      durationS: 12,
      warmupS: 0,
      seed: 18,
      objects: 50,
      pids: {},
    });
    await sleep(1000);
    await vault.start();
    const ms = await drained();
    const compared = await assertVaultMatchesKesd();
    assert.ok(!(await vaultKeys()).has('outage-9'), 'the key deleted while Vault was down is gone from Vault');
    const result = await reads;
    assert.equal(failed(result), 0, JSON.stringify(result.errors));
    t.diagnostic(
      `drained 11 changes in ${ms} ms after Vault answered; keys compared: ${compared}; S3 GETs meanwhile: ${result.total_ok} ok, 0 failed`,
    );

    // Either server can read it: KES v0.24 on the same Vault prefix decrypts what kesd encrypted under a key made while
    // Vault was down.
    const { apiKey, identity } = await newKesApiKey();
    const kesRole = await appRole(vault, 'kes-reader', kvPolicy('kv2', PREFIX, 'v2'));
    const kes = await startKesServer(
      dir,
      'kes',
      `admin:\n  identity: ${identity}\ntls:\n  key: ${ids.server.keyFile}\n  cert: ${ids.server.certFile}\nkeystore:\n  vault:\n    endpoint: ${vault.addr}\n    engine: kv2\n    version: v2\n    prefix: ${PREFIX}\n    approle:\n      id: ${kesRole.roleId}\n      secret: ${kesRole.secretId}\n    tls:\n      ca: ${vault.caFile}\n`,
    );
    try {
      const sealed = await api(ids.admin, 'POST', '/v1/key/encrypt/outage-3', {
        plaintext: Buffer.from('kesd wrote this').toString('base64'),
      });
      assert.equal(sealed.status, 200, sealed.text);
      const opened = JSON.parse(await kesCli(kes, apiKey, ['key', 'decrypt', 'outage-3', sealed.json().ciphertext]));
      assert.equal(Buffer.from(opened.plaintext, 'base64').toString(), 'kesd wrote this');
      assert.match(await kesCli(kes, apiKey, ['key', 'ls', '--json']), /outage-mc/);
    } finally {
      await kes.stop();
    }
  }));

test('4. kill -9 of kesd with a backlog: nothing queued is lost', (t) =>
  step(t, async () => {
    await vault.stop();
    for (let i = 0; i < 20; i++) assert.equal((await api(ids.admin, 'POST', `/v1/key/create/kill-${i}`)).status, 200);
    for (const name of ['outage-0', 'outage-1'])
      assert.equal((await api(ids.admin, 'DELETE', `/v1/key/delete/${name}`)).status, 200);
    const before = (await upstreamStatus()).backlog;
    assert.equal(before, 22);
    await server!.kill9();
    await start();
    assert.equal((await upstreamStatus()).backlog, before, 'the same backlog after kill -9');
    await vault.start();
    const ms = await drained();
    const compared = await assertVaultMatchesKesd();
    t.diagnostic(
      `backlog ${before} survived kill -9 of the primary and its workers; drained in ${ms} ms after Vault answered (a killed holder's lease is taken over after 15 s); keys compared: ${compared}`,
    );
  }));

test('5. crash points of a sync with the real Vault: killed before the Vault call, before and after the acknowledgement', (t) =>
  step(t, async () => {
    await server!.stop();
    for (const point of ['before-vault', 'before-ack', 'after-ack']) {
      const doomed = await start({ KESD_TEST_FAILPOINT: point }, '1');
      const name = `fp-${point}`;
      assert.equal((await api(ids.admin, 'POST', `/v1/key/create/${name}`)).status, 200);
      const exit = await Promise.race([doomed.exited, sleep(120_000).then(() => undefined)]);
      assert.equal(exit?.signal, 'SIGKILL', `${point}: the sync loop reached its failpoint`);
      const inVault = (await vaultKeys()).has(name);
      assert.equal(
        inVault,
        point !== 'before-vault',
        `${point}: Vault holds the key iff the crash came after the Vault call`,
      );
      await start({}, '1');
      const ms = await drained();
      await assertVaultMatchesKesd();
      t.diagnostic(`${point}: converged ${ms} ms after the restart`);
      await server!.stop();
    }
    await start();
  }));

test('6. disaster: the data dir is wiped, kesd init takes every key back from Vault, every object written before reads back', (t) =>
  step(t, async () => {
    const listing = (await mc.json(['ls', '--recursive', 'local/load'])).map((o) => o.key as string);
    assert.ok(listing.length > 10, `objects in the load bucket: ${listing.length}`);
    const before = await kesdKeys();
    await server!.stop();
    await rm(data, { recursive: true, force: true });
    const init = await kesdCli(['init', '--config', join(dir, 'init.yml'), data], { env });
    assert.equal(init.code, 0, init.stdout + init.stderr);
    const restored = await kesdKeys();
    assert.deepEqual(restored, before, 'every key back with its bytes and HMAC key');
    const again = await kesdCli(['restore', '--from-upstream', data], { env });
    assert.match(
      again.stdout,
      new RegExp(`imported 0, already present ${before.size}, conflicts 0, failed 0`),
      again.stdout + again.stderr,
    );
    await start();
    await mc.run(['mirror', '--quiet', 'local/load', join(dir, 'after')]);
    const files = await readdir(join(dir, 'after'));
    assert.equal(files.length, listing.length);
    for (const f of files) assert.equal(sha256(await readFile(join(dir, 'after', f))), loadPayload, f);
    for (const [path, hash] of objects) {
      await mc.run(['cp', path, join(dir, 'readback')]);
      assert.equal(sha256(await readFile(join(dir, 'readback'))), hash, path);
    }
    await drained();
    t.diagnostic(
      `restored ${restored.size} keys from Vault; ${files.length + objects.size} objects read back bit-identical`,
    );
  }));

test('7. conflicts with the real Vault: a foreign key and a deleted version 1 under names kesd uses are left alone, reported, and synced once cleared', (t) =>
  step(t, async () => {
    const foreign = (await vault.call('GET', `kv2/data/${PREFIX}/minio-default-key?version=1`)).body.data.data[
      'minio-default-key'
    ];
    await vault.call('PUT', `kv2/data/${PREFIX}/foreign`, { data: { foreign } }); // another key's bytes under the name
    await vault.call('PUT', `kv2/data/${PREFIX}/soft`, { data: { soft: foreign } });
    await vault.call('DELETE', `kv2/data/${PREFIX}/soft`); // version 1 deleted, its metadata kept
    for (const name of ['foreign', 'soft'])
      assert.equal((await api(ids.admin, 'POST', `/v1/key/create/${name}`)).status, 200);
    await until('two conflicts', async () => (await upstreamStatus()).conflicts === 2, 60_000);
    assert.equal((await upstreamStatus()).backlog, 2);
    assert.equal(
      (await vault.call('GET', `kv2/data/${PREFIX}/foreign?version=1`)).body.data.data.foreign,
      foreign,
      'the foreign key is untouched',
    );
    assert.match(server!.output(), /key 'foreign' stays queued: Vault holds a different key/);
    assert.match(server!.output(), /key 'soft' stays queued: Vault keeps metadata .* without a readable version 1/);
    for (const name of ['foreign', 'soft']) await vault.call('DELETE', `kv2/metadata/${PREFIX}/${name}`);
    const ms = await drained();
    assert.equal((await upstreamStatus()).conflicts, 0);
    const compared = await assertVaultMatchesKesd();
    t.diagnostic(
      `two conflicts reported and left alone; cleared in Vault, synced ${ms} ms later; keys compared: ${compared}`,
    );
  }));
