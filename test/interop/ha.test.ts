// High availability end to end: the real MinIO with SSE-KMS on three kesd replicas that share a 3-member etcd
// cluster (Debian's etcd-server, client TLS). Under continuous PUT and GET load (bench/s3load, a Go S3 client),
// one kesd replica is killed with SIGKILL and restarted, then one etcd member, then another kesd replica.
// MinIO's KES client fails over between the endpoints, so not one S3 request may fail.
// Settings: KESD_HA_SECONDS (load duration, default 40; the faults are spread over it).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeIdentity, type TestIdentity } from '../kesd/harness.ts';
import { agentFor, call, envInt, sleep, startKesd, type KesdProcess } from '../kesd/load.ts';
import { ETCD_SKIP, etcdInitYml, startEtcd, type EtcdCluster } from '../../harness/etcd.ts';
import { ensureS3load, runS3load, type S3LoadResult } from '../../bench/lib/e2e-s3load.mts';
import { freePort, Mc, Minio, tail } from '../../harness/minio-stack.ts';

const SECONDS = envInt('KESD_HA_SECONDS', 40);
const UNSEAL_ENV = 'KESD_HA_UNSEAL';
const DEFAULT_KEY = 'minio-default-key';
const BUCKET = 'ha-bucket';
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
const REPLICAS = 3;

describe('MinIO on 3 kesd replicas over etcd: zero failed S3 requests through node loss', {
  skip: ETCD_SKIP,
  timeout: 600_000,
}, () => {
  let dir: string;
  let etcd: EtcdCluster;
  let minio: Minio;
  let mc: Mc;
  let admin: TestIdentity;
  let env: NodeJS.ProcessEnv;
  let initYml: string;
  let s3load: string;
  const ports: number[] = [];
  const kesd: (KesdProcess | undefined)[] = [];
  const log: string[] = [];
  let passed = false;
  const note = (s: string) => log.push(`${new Date().toISOString().slice(11, 23)} ${s}`);

  // Evidence: each replica's audit lines (every reply, its code and time) go to a file of its own; its stderr (the
  // error log: failures, and every stream reset and GOAWAY kesd sends) is kept across restarts.
  const auditFile = (i: number) => join(dir, `kesd-${i}.audit.jsonl`);
  const stderrOf: string[][] = [[], [], []];
  const startReplica = async (i: number) => {
    kesd[i] = await startKesd(
      join(dir, `kesd-${i}`),
      env,
      ['--init', initYml, '--addr', `127.0.0.1:${ports[i]}`, '--audit-log', 'on', '--workers', '1'],
      { startMs: 60_000, stdoutFile: auditFile(i) },
    );
  };
  const keepStderr = (i: number) => stderrOf[i]!.push(kesd[i]?.output() ?? '');
  const s3 = () => ({ url: minio.url, user: minio.user, password: minio.password });
  const explain = () =>
    `\n--- timeline ---\n${log.join('\n')}\n--- kesd replies other than 200 ---\n${notOk().join('\n')}` +
    `\n--- stream resets and GOAWAYs kesd sent ---\n${sentByKesd().join('\n')}` +
    `\n--- minio log (KMS client: GODEBUG=http2debug=1) ---\n${tail(minio.log, 60)}\n` +
    kesd
      .map(
        (k, i) =>
          `--- kesd ${i} stderr ---\n${[...stderrOf[i]!, k?.output() ?? '']
            .join('\n')
            .split('\n')
            .filter((l) => l !== '')
            .slice(-30)
            .join('\n')}`,
      )
      .join('\n');
  /** The error log lines of every replica about a stream reset or GOAWAY it sent (h2.ts reports them). */
  const sentByKesd = () =>
    stderrOf.flatMap((kept, i) =>
      [...kept, kesd[i]?.output() ?? '']
        .join('\n')
        .split('\n')
        .filter((l) => / h2 |"h2[ :]/.test(l))
        .map((l) => `kesd ${i} ${l}`),
    );
  /** Every audit line of every replica whose code is not 200, oldest first. */
  const notOk = () => {
    const lines: string[] = [];
    for (let i = 0; i < REPLICAS; i++) {
      let text = '';
      try {
        text = readFileSync(auditFile(i), 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n')) {
        if (line === '') continue;
        const e = JSON.parse(line) as {
          time: string;
          request: { path: string };
          response: { code: number; time: number };
        };
        if (e.response.code !== 200)
          lines.push(
            `${e.time.slice(11, 23)} kesd ${i} ${e.response.code} ${e.request.path} (${(e.response.time / 1e6).toFixed(1)} ms)`,
          );
      }
    }
    return lines.sort();
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kesd-ha-minio-'));
    etcd = await startEtcd(3, { tls: true });
    const server = await makeIdentity(dir, 'kesd', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
    const sysadmin = await makeIdentity(dir, 'sysadmin');
    admin = await makeIdentity(dir, 'admin');
    const minioId = await makeIdentity(dir, 'minio');
    initYml = join(dir, 'init.yml');
    await writeFile(
      initYml,
      etcdInitYml(etcd, {
        server,
        sysadmin,
        admin,
        unsealEnv: UNSEAL_ENV,
        policies: { minio: { allow: MINIO_POLICY, identities: [minioId.identity] } },
        keys: [DEFAULT_KEY],
      }),
    );
    env = { ...process.env, [UNSEAL_ENV]: randomBytes(32).toString('base64') };
    for (let i = 0; i < REPLICAS; i++) ports.push(await freePort());
    await Promise.all(ports.map((_, i) => startReplica(i)));
    minio = new Minio(
      dir,
      await freePort(),
      await freePort(),
      {
        endpoint: ports.map((p) => `https://127.0.0.1:${p}`).join(','),
        certFile: minioId.certFile,
        keyFile: minioId.keyFile,
        caFile: server.certFile,
        defaultKey: DEFAULT_KEY,
      },
      { extraEnv: { GODEBUG: 'http2debug=1' } },
    ); // MinIO's KMS client logs its connections, GOAWAYs and failed round trips
    await minio.start();
    mc = new Mc(join(dir, 'mc'));
    await mc.alias(minio);
    await mc.run(['mb', `local/${BUCKET}`]);
    await mc.run(['encrypt', 'set', 'sse-kms', DEFAULT_KEY, `local/${BUCKET}`]);
    s3load = ensureS3load(() => {});
  });

  after(async () => {
    await minio?.stop();
    await Promise.all(kesd.map((k) => k?.stop()));
    await etcd?.stop();
    // A failed run keeps its logs (audit lines, minio.log) for a look after the fact.
    if (dir && passed) await rm(dir, { recursive: true, force: true });
    else if (dir) console.error(`ha.test: logs kept in ${dir}`);
  });

  test('PUT and GET keep succeeding while a kesd replica, an etcd member and another replica die and come back', async (t) => {
    // Objects written before the faults, read back during them.
    const pre = await runS3load(s3load, s3(), {
      op: 'put',
      bucket: BUCKET,
      size: 4096,
      conns: 4,
      durationS: 3,
      warmupS: 0,
      seed: 7,
      pids: {},
    });
    assert.deepEqual(pre.errors, {}, 'preloading failed');
    const preloaded = pre.objects;
    const stat = await mc.json(['stat', `local/${BUCKET}/obj-00000000`]);
    assert.equal(
      stat[0]?.metadata?.['X-Amz-Server-Side-Encryption'],
      'aws:kms',
      `not SSE-KMS: ${JSON.stringify(stat[0])}`,
    );

    const load = Promise.all([
      runS3load(s3load, s3(), {
        op: 'put',
        bucket: BUCKET,
        size: 4096,
        conns: 4,
        durationS: SECONDS,
        warmupS: 0,
        seed: 7,
        start: preloaded,
        pids: {},
      }),
      runS3load(s3load, s3(), {
        op: 'get',
        bucket: BUCKET,
        size: 4096,
        conns: 4,
        durationS: SECONDS,
        warmupS: 0,
        seed: 7,
        objects: preloaded,
        pids: {},
      }),
    ]);
    const at = (fraction: number) => sleep(Math.max(0, start + fraction * SECONDS * 1000 - Date.now()));
    const start = Date.now();
    note('load started');
    const faults = (async () => {
      await at(0.1);
      await kesd[0]!.kill9();
      keepStderr(0);
      note('kesd 0 killed (SIGKILL)');
      await at(0.25);
      await startReplica(0);
      note('kesd 0 restarted');
      await at(0.4);
      await etcd.kill(1);
      note('etcd member 1 killed (SIGKILL)');
      await at(0.55);
      await etcd.restart(1);
      await etcd.waitHealthy();
      note('etcd member 1 restarted, cluster healthy');
      await at(0.7);
      await kesd[1]!.kill9();
      keepStderr(1);
      note('kesd 1 killed (SIGKILL)');
      await startReplica(1);
      note('kesd 1 restarted');
    })();
    let put: S3LoadResult, get: S3LoadResult;
    try {
      await faults;
      [put, get] = await load;
    } catch (err) {
      (err as Error).message += explain();
      throw err;
    }
    note(`load ended: ${put.total_ok} PUTs, ${get.total_ok} GETs`);
    t.diagnostic(log.join('\n'));
    t.diagnostic(`kesd replies other than 200:\n${notOk().join('\n')}`);
    t.diagnostic(`stream resets and GOAWAYs kesd sent:\n${sentByKesd().join('\n')}`);
    t.diagnostic(
      `PUT ${put.ops_per_s.toFixed(0)} ops/s p99 ${put.latency_ms.p99} ms max ${put.latency_ms.max} ms; GET ${get.ops_per_s.toFixed(0)} ops/s p99 ${get.latency_ms.p99} ms max ${get.latency_ms.max} ms`,
    );
    assert.deepEqual(put.errors, {}, `failed PUTs: ${JSON.stringify(put.error_sample)}${explain()}`);
    assert.deepEqual(get.errors, {}, `failed GETs: ${JSON.stringify(get.error_sample)}${explain()}`);
    assert.ok(put.total_ok > 0 && get.total_ok > 0, 'no load ran');

    // Every replica took part (MinIO spread its KMS calls, or failed over to it), and each still serves.
    const agent = agentFor(admin);
    try {
      for (let i = 0; i < REPLICAS; i++) {
        const r = await call(agent, ports[i]!, 'POST', `/v1/key/generate/${DEFAULT_KEY}`, {});
        assert.equal(r.status, 200, `kesd ${i} after the faults: ${r.text}`);
      }
    } finally {
      agent.destroy();
    }
    // Objects written during the faults read back (random ones for 3 s; s3load checks every body byte).
    const check = await runS3load(s3load, s3(), {
      op: 'get',
      bucket: BUCKET,
      size: 4096,
      conns: 4,
      durationS: 3,
      warmupS: 0,
      seed: 7,
      objects: put.objects,
      pids: {},
    });
    assert.deepEqual(
      check.errors,
      {},
      `objects written during the faults do not read back: ${JSON.stringify(check.error_sample)}`,
    );
    passed = true;
  });
});
