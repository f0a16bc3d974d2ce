// MinIO's KES client failing a call over from one kesd replica to another, with the fault put at the exact point.
//
// kms-go (MinIO's KES client) retries a call that a replica answered with a 5xx (or lost after sending it) on the next
// replica, but with the body reader the failed attempt had already read to the end: the next replica gets the request
// with an empty body (docs/ha.md, "MinIO's failover"). Here replica A (127.0.0.1, which kms-go always tries first) has
// never loaded the bucket's key, B (127.0.0.2) has it cached, and etcd is down: A's cache miss fails with 502, MinIO
// moves the call to B, and B must still answer it with the caller's body. Without kesd's REFUSED_STREAM for an
// announced-but-empty body, the GET fails with kms:DecryptionFailed and the PUT stores a data key sealed without its
// context, which no GET can open.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeIdentity, type TestIdentity } from '../kesd/harness.ts';
import { agentFor, call, sleep, startKesd, type KesdProcess } from '../kesd/load.ts';
import { ETCD_SKIP, etcdInitYml, startEtcd, type EtcdCluster } from '../../harness/etcd.ts';
import { freePort, Mc, Minio } from '../../harness/minio-stack.ts';

const UNSEAL_ENV = 'KESD_FAILOVER_UNSEAL';
const DEFAULT_KEY = 'minio-default-key';
const BUCKET_KEY = 'failover-key';
const BUCKET = 'failover-bucket';
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

interface AuditLine {
  request: { path: string };
  response: { code: number };
}

describe('MinIO fails a KMS call over from a replica that answered 502 to one that has the key', {
  skip: ETCD_SKIP,
  timeout: 300_000,
}, () => {
  let dir: string;
  let etcd: EtcdCluster;
  let minio: Minio;
  let mc: Mc;
  let admin: TestIdentity;
  let env: NodeJS.ProcessEnv;
  let initYml: string;
  let passed = false;
  // A on 127.0.0.1, B on 127.0.0.2: kms-go puts a 127.0.0.1 endpoint first and tries it first on every call.
  const hosts = ['127.0.0.1', '127.0.0.2'] as const;
  const ports: number[] = [];
  const kesd: (KesdProcess | undefined)[] = [];
  const auditFile = (i: number) => join(dir, `kesd-${i}.audit.jsonl`);
  const startReplica = async (i: number) => {
    kesd[i] = await startKesd(
      join(dir, `kesd-${i}`),
      env,
      ['--init', initYml, '--addr', `${hosts[i]}:${ports[i]}`, '--audit-log', 'on', '--workers', '1'],
      { startMs: 60_000, stdoutFile: auditFile(i) },
    );
  };
  /** The audit lines of replica i for `path`, as "code" strings, oldest first. */
  const codes = (i: number, path: string) =>
    readFileSync(auditFile(i), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as AuditLine)
      .filter((e) => e.request.path === path)
      .map((e) => e.response.code);
  /**
   * Replica i's audit codes for `path` once `ok` holds for them, or as they are after 10 s: an audit line is written
   * after its answer went out, so it may trail the S3 reply that depended on it.
   */
  const codesOnce = async (i: number, path: string, ok: (codes: number[]) => boolean): Promise<number[]> => {
    for (let waited = 0; ; waited += 50) {
      const now = codes(i, path);
      if (ok(now) || waited >= 10_000) return now;
      await sleep(50);
    }
  };
  /** Replica i's stderr once it matches `pattern`, or as it is after 10 s. */
  const stderrOnce = async (i: number, pattern: RegExp): Promise<string> => {
    for (let waited = 0; ; waited += 50) {
      const now = kesd[i]!.output();
      if (pattern.test(now) || waited >= 10_000) return now;
      await sleep(50);
    }
  };
  const answered = (c: number[]) => c.some((code) => code !== 499); // 499: the stream kesd refused
  const restartMinio = async () => {
    await minio.stop();
    await minio.start();
  };
  /**
   * One S3 request, signed by curl (SigV4), never retried: mc (minio-go) retries a 500, and its second try would go
   * straight to B (A sits out its 30 s penalty) and hide the failure. Resolves with the status and the body.
   */
  const s3 = async (method: 'GET' | 'PUT', name: string, body?: Buffer): Promise<{ status: number; body: Buffer }> => {
    const out = join(dir, `${name}.${method}.out`);
    const args = [
      '-sS',
      '--aws-sigv4',
      'aws:amz:us-east-1:s3',
      '--user',
      `${minio.user}:${minio.password}`,
      '-o',
      out,
      '-w',
      '%{http_code}',
    ];
    if (body !== undefined) {
      const file = join(dir, `${name}.${method}.in`);
      await writeFile(file, body);
      // MinIO wants the payload hash that curl does not send by itself.
      args.push('-T', file, '-H', `x-amz-content-sha256: ${createHash('sha256').update(body).digest('hex')}`);
    } else {
      args.push('-H', `x-amz-content-sha256: ${createHash('sha256').update('').digest('hex')}`);
    }
    const { stdout } = await promisify(execFile)('curl', [...args, `${minio.url}/${BUCKET}/${name}`]);
    return { status: Number(stdout), body: readFileSync(out) };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kesd-failover-'));
    etcd = await startEtcd(1, { tls: true });
    const server = await makeIdentity(dir, 'kesd', 'p256', { ips: [...hosts], dnsNames: ['localhost'] });
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
        keys: [DEFAULT_KEY, BUCKET_KEY],
      }),
    );
    env = { ...process.env, [UNSEAL_ENV]: randomBytes(32).toString('base64') };
    for (let i = 0; i < hosts.length; i++) ports.push(await freePort());
    await Promise.all(hosts.map((_, i) => startReplica(i)));
    minio = new Minio(
      dir,
      await freePort(),
      await freePort(),
      {
        endpoint: hosts.map((h, i) => `https://${h}:${ports[i]}`).join(','),
        certFile: minioId.certFile,
        keyFile: minioId.keyFile,
        caFile: server.certFile,
        defaultKey: DEFAULT_KEY,
      },
      { extraEnv: { GODEBUG: 'http2debug=1' } },
    ); // MinIO's KMS client logs its connections and failed round trips
    await minio.start();
    mc = new Mc(join(dir, 'mc'));
    await mc.alias(minio);
    await mc.run(['mb', `local/${BUCKET}`]);
    await mc.run(['encrypt', 'set', 'sse-kms', BUCKET_KEY, `local/${BUCKET}`]);
  });

  after(async () => {
    await minio?.stop();
    await Promise.all(kesd.map((k) => k?.stop()));
    await etcd?.stop();
    // A failed run keeps its logs (audit lines, minio.log) for a look after the fact.
    if (dir && passed) await rm(dir, { recursive: true, force: true });
    else if (dir) console.error(`ha-failover.test: logs kept in ${dir}`);
  });

  test('GET and PUT succeed when the first replica fails the call with 502 and the second has the key', async () => {
    const generate = `/v1/key/generate/${BUCKET_KEY}`;
    const decrypt = `/v1/key/decrypt/${BUCKET_KEY}`;
    const before = randomBytes(4096);
    await writeFile(join(dir, 'before'), before);
    await mc.run(['cp', join(dir, 'before'), `local/${BUCKET}/before`]);
    assert.equal(
      (await codesOnce(0, generate, (c) => c.length > 0)).at(-1),
      200,
      'MinIO did not send its calls to A (127.0.0.1) first',
    );
    assert.deepEqual(codes(1, generate), [], 'MinIO sent a call to B (127.0.0.2) while A answered');

    // A forgets every key (a restart: nothing is cached until first use), MinIO forgets that anything failed.
    await minio.stop();
    await kesd[0]!.stop();
    await startReplica(0);
    await minio.start();
    const agent = agentFor(admin);
    try {
      // B holds the bucket key; A holds MinIO's default key (MinIO checks it every 10 s), but not the bucket key.
      assert.equal((await call(agent, ports[1]!, 'POST', generate, {}, { host: hosts[1] })).status, 200);
      assert.equal((await call(agent, ports[0]!, 'POST', `/v1/key/generate/${DEFAULT_KEY}`, {})).status, 200);
    } finally {
      agent.destroy();
    }
    await etcd.kill(0);

    // The decrypt of a GET: A cannot load the key (502), MinIO moves the call to B.
    const got = await s3('GET', 'before');
    const aDecrypts = await codesOnce(0, decrypt, (c) => c.length > 0);
    const bDecrypts = await codesOnce(1, decrypt, answered);
    assert.equal(aDecrypts.at(-1), 502, 'A did not fail the decrypt: the fault was not injected');
    assert.equal(
      got.status,
      200,
      `GET through the failover (decrypt replies A: ${aDecrypts}; B: ${bDecrypts}): ${got.body.toString('utf8', 0, 400)}`,
    );
    assert.ok(got.body.equals(before), 'GET through the failover: other bytes');
    assert.equal(bDecrypts.at(-1), 200);
    // The call reached B without its body first (kms-go's failover), and B had it sent again.
    const refusedDecrypt = new RegExp(`REFUSED_STREAM on stream \\d+ ${decrypt}`);
    assert.match(await stderrOnce(1, refusedDecrypt), refusedDecrypt);

    // The generate of a PUT, with A tried first again (a new MinIO has no endpoint in its 30 s penalty).
    await etcd.restart(0);
    await etcd.waitHealthy();
    await restartMinio();
    await etcd.kill(0);
    const [aGenerated, bGenerated] = [codes(0, generate).length, codes(1, generate).length];
    const during = randomBytes(4096);
    const put = await s3('PUT', 'during', during);
    const aGenerates = (await codesOnce(0, generate, (c) => c.length > aGenerated)).slice(aGenerated);
    const bGenerates = (await codesOnce(1, generate, (c) => answered(c.slice(bGenerated)))).slice(bGenerated);
    assert.equal(
      put.status,
      200,
      `PUT through the failover (generate replies A: ${aGenerates}; B: ${bGenerates}): ${put.body.toString('utf8', 0, 400)}`,
    );
    assert.equal(aGenerates.at(-1), 502, 'A did not fail the generate: the fault was not injected');
    assert.equal(bGenerates.at(-1), 200);
    const refusedGenerate = new RegExp(`REFUSED_STREAM on stream \\d+ ${generate}`);
    assert.match(await stderrOnce(1, refusedGenerate), refusedGenerate);
    // Its data key must be bound to the object (MinIO's context): B answers the GET's decrypt.
    const back = await s3('GET', 'during');
    assert.equal(
      back.status,
      200,
      `GET of the object PUT through the failover (generate replies A: ${aGenerates}; B: ${bGenerates}): ${back.body.toString('utf8', 0, 400)}`,
    );
    assert.ok(back.body.equals(during), 'GET of the object PUT through the failover: other bytes');
    passed = true;
  });
});
