// `kesd server --workers 2`: two processes behind one port must behave as one server. Every request here
// that says "fresh" opens a new TLS connection; node:cluster hands new connections to the workers in turn.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { newIdentity } from '../../kesd/src/identity/certificate.js';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { makeIdentity, request, type Reply, type TestIdentity } from './harness.js';
import { fingerprint, kesd, startServer, stopServer, type ServerProcess } from './cli-process.js';

let dir: string;
let data: string;
let env: NodeJS.ProcessEnv;
let sysadmin: TestIdentity;
let admin: TestIdentity;
let user: TestIdentity;
let server: ServerProcess;
const ROUNDS = 8;

const start = () => startServer([data, '--workers', '2', '--addr', '127.0.0.1:0'], env);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-cluster-'));
  const tls = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] });
  sysadmin = await makeIdentity(dir, 'sysadmin');
  admin = await makeIdentity(dir, 'admin');
  user = await makeIdentity(dir, 'user');
  env = { ...process.env, KESD_UNSEAL: Buffer.alloc(32, 5).toString('base64') };
  data = join(dir, 'data');
  await initDataDir(
    data,
    {
      version: 'v1',
      address: '127.0.0.1:0',
      sysadmin: sysadmin.identity,
      unsealEnv: 'KESD_UNSEAL',
      tls: {
        key: tls.keyFile,
        cert: tls.certFile,
        password: '',
        verifyCert: false,
        proxy: { identities: [], header: '' },
      },
      enclaves: [
        {
          name: 'default',
          admin: admin.identity,
          policies: [{ name: 'app', allow: ['/v1/key/generate/*'], deny: [], identities: [user.identity] }],
          keys: ['k1'],
        },
      ],
    },
    { env },
  );
  server = await start();
});

after(async () => {
  await stopServer(server.child);
  await rm(dir, { recursive: true, force: true });
});

const agentFor = (who: TestIdentity, keepAlive: boolean) =>
  new https.Agent({ keepAlive, maxSockets: 1, cert: who.cert, key: who.key, rejectUnauthorized: false });

/** One request on a new connection. */
async function fresh(who: TestIdentity, method: string, path: string, body?: unknown): Promise<Reply> {
  const agent = agentFor(who, false);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${method} ${path}: no answer within 5 s\n${server.output()}`)), 5000);
  });
  try {
    return await Promise.race([request(agent, server.port, method, path, body), timeout]);
  } finally {
    clearTimeout(timer);
    agent.destroy();
  }
}

/** The same request on `n` new connections, one after another (so they alternate between the workers). */
async function statuses(n: number, who: TestIdentity, method: string, path: string, body?: unknown): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await fresh(who, method, path, body)).status);
  return out;
}

/** Requests served per worker, from the aggregated /v1/metrics. */
async function perWorker(): Promise<Map<string, number>> {
  const reply = await fresh(sysadmin, 'GET', '/v1/metrics');
  assert.equal(reply.status, 200);
  return new Map(
    [...reply.text.matchAll(/^kesd_worker_requests\{worker="(\d+)"\} (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])]),
  );
}

function workerPids(): number[] {
  const ppid = server.child.pid;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const until = async (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${server.output()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

test('requests over separate connections are served by both workers, and /v1/metrics counts them all', async () => {
  assert.equal(workerPids().length, 2);
  const before = await perWorker();
  const success = async () =>
    Number(
      /^kes_http_request_success\{code="200"\} (\d+)$/m.exec((await fresh(sysadmin, 'GET', '/v1/metrics')).text)?.[1] ??
        0,
    );
  const ok0 = await success();
  assert.deepEqual(await statuses(20, admin, 'POST', '/v1/key/generate/k1', {}), Array(20).fill(200));
  const ok1 = await success();
  assert.ok(ok1 - ok0 >= 21, `the sum over workers counts all 20 generates and a metrics call: ${ok0} → ${ok1}`);
  const after = await perWorker();
  assert.deepEqual([...after.keys()].sort(), ['1', '2']);
  for (const [worker, n] of after)
    assert.ok(n - (before.get(worker) ?? 0) >= 5, `worker ${worker} served ${n - (before.get(worker) ?? 0)} of 20+`);
  const status = (await fresh(sysadmin, 'GET', '/v1/status')).json();
  assert.equal(status.num_cpu_used, 2);
  assert.match((await fresh(sysadmin, 'GET', '/v1/metrics')).text, /^kes_system_num_cpu_used 2$/m);
});

test('a key deleted through one connection is 404 on every other connection right after the 200', async () => {
  // Keep-alive connections stay on their worker, with the key cached there.
  const pinned = Array.from({ length: 4 }, () => agentFor(admin, true));
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const name = `doomed-${round}`;
      assert.equal((await fresh(admin, 'POST', `/v1/key/create/${name}`)).status, 200);
      for (const agent of pinned)
        assert.equal((await request(agent, server.port, 'POST', `/v1/key/generate/${name}`, {})).status, 200);
      assert.deepEqual(await statuses(4, admin, 'POST', `/v1/key/generate/${name}`, {}), [200, 200, 200, 200]);
      assert.equal((await fresh(admin, 'DELETE', `/v1/key/delete/${name}`)).status, 200);
      const pinnedAfter = await Promise.all(
        pinned.map((agent) => request(agent, server.port, 'POST', `/v1/key/generate/${name}`, {})),
      );
      assert.deepEqual(
        pinnedAfter.map((r) => r.status),
        [404, 404, 404, 404],
        `round ${round}`,
      );
      assert.deepEqual(
        await statuses(4, admin, 'POST', `/v1/key/generate/${name}`, {}),
        [404, 404, 404, 404],
        `round ${round}`,
      );
      // Created again (fresh material), it is found everywhere at once: no worker cached its absence.
      assert.equal((await fresh(admin, 'POST', `/v1/key/create/${name}`)).status, 200);
      assert.deepEqual(await statuses(4, admin, 'POST', `/v1/key/generate/${name}`, {}), [200, 200, 200, 200]);
    }
  } finally {
    for (const agent of pinned) agent.destroy();
  }
});

test('a key rotated through one connection: every worker generates with the new version right after the 200', async () => {
  const pinned = Array.from({ length: 4 }, () => agentFor(admin, true));
  const version = async (agent: https.Agent) =>
    (await request(agent, server.port, 'POST', '/v1/key/generate/turning', {})).json().version;
  try {
    assert.equal((await fresh(admin, 'POST', '/v1/key/create/turning')).status, 200);
    for (let round = 0; round < ROUNDS; round++) {
      // Cached on both workers (keep-alive connections stay on theirs), then rotated through another connection.
      assert.deepEqual(await Promise.all(pinned.map(version)), Array(4).fill(String(round + 1)));
      const rotated = await fresh(admin, 'POST', '/v1/key/rotate/turning');
      assert.equal(rotated.json().version, String(round + 2), rotated.text);
      assert.deepEqual(await Promise.all(pinned.map(version)), Array(4).fill(String(round + 2)), `round ${round}`);
    }
  } finally {
    for (const agent of pinned) agent.destroy();
  }
});

test('a policy change, an identity deletion and an enclave deletion apply on every worker before the 200', async () => {
  const generate = () => statuses(4, user, 'POST', '/v1/key/generate/k1', {});
  for (let round = 0; round < 3; round++) {
    assert.deepEqual(await generate(), [200, 200, 200, 200]);
    assert.equal(
      (await fresh(admin, 'POST', '/v1/policy/write/app', { allow: ['/v1/key/decrypt/*'], deny: [] })).status,
      200,
    );
    assert.deepEqual(await generate(), [403, 403, 403, 403], `round ${round}: the narrowed policy`);
    assert.equal(
      (await fresh(admin, 'POST', '/v1/policy/write/app', { allow: ['/v1/key/generate/*'], deny: [] })).status,
      200,
    );
    assert.deepEqual(await generate(), [200, 200, 200, 200], `round ${round}: the widened policy`);
    assert.equal((await fresh(admin, 'DELETE', `/v1/identity/delete/${user.identity}`)).status, 200);
    assert.deepEqual(await generate(), [403, 403, 403, 403], `round ${round}: the deleted identity`);
    assert.equal((await fresh(admin, 'POST', '/v1/policy/assign/app', { identity: user.identity })).status, 200);
  }
  for (let round = 0; round < 3; round++) {
    const name = `tenant-${round}`;
    assert.equal((await fresh(sysadmin, 'POST', `/v1/enclave/create/${name}`, { admin: admin.identity })).status, 200);
    assert.deepEqual(
      await statuses(4, admin, 'POST', `/v1/key/create/k-${round}?enclave=${name}`).then((s) => s.slice(0, 1)),
      [200],
    );
    assert.deepEqual(
      await statuses(4, admin, 'POST', `/v1/key/generate/k-${round}?enclave=${name}`, {}),
      [200, 200, 200, 200],
    );
    assert.equal((await fresh(sysadmin, 'DELETE', `/v1/enclave/delete/${name}`)).status, 200);
    assert.deepEqual(
      await statuses(4, admin, 'POST', `/v1/key/generate/k-${round}?enclave=${name}`, {}),
      [403, 403, 403, 403],
    ); // the enclave is gone: 403 to all but the sysadmin (finding 6)
  }
});

interface Stream {
  readonly lines: any[];
  close(): void;
}

/** Subscribes on a connection of its own; resolves once the 200 came (every worker forwards from then on). */
function subscribe(path: string): Promise<Stream> {
  const agent = agentFor(sysadmin, false);
  return new Promise((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port: server.port, path, agent }, (res) => {
        assert.equal(res.statusCode, 200);
        const lines: any[] = [];
        let buffered = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          const parts = buffered.split('\n');
          buffered = parts.pop()!;
          for (const line of parts) lines.push(JSON.parse(line));
        });
        res.on('error', () => undefined);
        resolve({ lines, close: () => agent.destroy() });
      })
      .on('error', reject);
  });
}

test('the audit stream on one worker sees every request of both workers, exactly once', async () => {
  const stream = await subscribe('/v1/log/audit');
  try {
    const before = await perWorker();
    const paths = Array.from({ length: 20 }, (_, i) => `/v1/key/describe/probe-${i}`);
    for (const path of paths) assert.equal((await fresh(admin, 'GET', path)).status, 404);
    const after = await perWorker();
    for (const [worker, n] of after)
      assert.ok(n - (before.get(worker) ?? 0) >= 5, `worker ${worker} served some probes`);
    const probes = () => stream.lines.filter((e) => e.request.path.startsWith('/v1/key/describe/probe-'));
    await until('every probe in the audit stream', () => probes().length >= paths.length);
    await new Promise((r) => setTimeout(r, 300)); // no duplicates trickle in
    assert.deepEqual(
      probes()
        .map((e) => e.request.path)
        .sort(),
      [...paths].sort(),
    );
    for (const e of probes()) assert.equal(e.response.code, 404);
  } finally {
    stream.close();
  }
});

test('stdout carries every audit line whole, from both workers', async () => {
  const paths = Array.from({ length: 40 }, (_, i) => `/v1/key/describe/stdout-${i}`);
  await Promise.all(paths.map((path) => fresh(admin, 'GET', path)));
  await until('the audit lines on stdout', () => paths.every((p) => server.stdout().includes(`"path":"${p}"`)));
  const lines = server
    .stdout()
    .split('\n')
    .filter((l) => l !== '');
  for (const line of lines) JSON.parse(line); // throws on a line that another one cut
  assert.equal(lines.filter((l) => /"path":"\/v1\/key\/describe\/stdout-/.test(l)).length, paths.length);
});

test('SIGHUP reloads the certificate in every worker', async () => {
  const next = await newIdentity({ subject: 'server-2', keyType: 'p256', ips: ['127.0.0.1'] });
  await writeFile(join(dir, 'server.crt'), next.certPem);
  await writeFile(join(dir, 'server.key'), next.keyPem);
  server.child.kill('SIGHUP');
  await until('the reload', () => /TLS certificate reloaded/.test(server.output()));
  const expected = new X509Certificate(next.certPem).fingerprint256;
  for (let i = 0; i < 6; i++) {
    const seen = await new Promise<string>((resolve, reject) => {
      https
        .get(
          { host: '127.0.0.1', port: server.port, path: '/version', agent: false, rejectUnauthorized: false },
          (res) => {
            const fp = (res.socket as TLSSocket).getPeerX509Certificate()!.fingerprint256;
            res.resume();
            res.on('end', () => resolve(fp));
          },
        )
        .on('error', reject);
    });
    assert.equal(seen, expected, `connection ${i}`);
  }
});

test('a worker killed with SIGKILL is restarted, and requests keep working meanwhile', async () => {
  await statuses(10, admin, 'POST', '/v1/key/generate/k1', {});
  const before = await perWorker();
  const [victim] = workerPids();
  process.kill(victim!, 'SIGKILL');
  // A connection node:cluster hands to the worker in the instant it dies is lost (see server/cluster.ts); once
  // the primary has seen the exit, the other worker serves every new connection until the restarted one listens.
  await until('the exit', () => /exited \(SIGKILL\); restarting/.test(server.output()));
  assert.deepEqual(await statuses(6, admin, 'POST', '/v1/key/generate/k1', {}), Array(6).fill(200));
  await until('the restart', () => workerPids().length === 2 && !workerPids().includes(victim!));
  // The restarted worker counts from zero again: once it serves, its count is below what it was.
  await until('the restarted worker to serve', async () => {
    await fresh(admin, 'POST', '/v1/key/generate/k1', {});
    const now = await perWorker();
    return [...now].some(([worker, n]) => n > 0 && n < before.get(worker)!);
  });
  assert.deepEqual(await statuses(6, admin, 'POST', '/v1/key/generate/k1', {}), Array(6).fill(200));
});

test('sealing through one worker seals every worker before the 200; the error stream sees it once', async () => {
  const errors = await subscribe('/v1/log/error');
  try {
    assert.deepEqual(await statuses(4, admin, 'POST', '/v1/key/generate/k1', {}), [200, 200, 200, 200]);
    assert.equal((await fresh(sysadmin, 'POST', '/v1/sys/seal')).status, 200);
    const after = await Promise.all(Array.from({ length: 6 }, () => fresh(admin, 'POST', '/v1/key/generate/k1', {})));
    for (const reply of after) assert.equal(reply.status, 403, reply.text);
    await until('the seal message', () => errors.lines.some((l) => /system sealed/.test(l.message)));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(errors.lines.filter((l) => /system sealed/.test(l.message)).length, 1);
  } finally {
    errors.close();
  }
  // A worker restarted after the seal starts sealed.
  const [victim] = workerPids();
  process.kill(victim!, 'SIGKILL');
  await until('the restart', () => workerPids().length === 2 && !workerPids().includes(victim!));
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(await statuses(4, admin, 'POST', '/v1/key/generate/k1', {}), [403, 403, 403, 403]);
});

test('SIGTERM stops both workers and the primary with code 0', async () => {
  const pids = workerPids();
  const exited = new Promise<number | null>((resolve) => server.child.once('exit', (code) => resolve(code)));
  server.child.kill('SIGTERM');
  assert.equal(await exited, 0);
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/);
});

test('a wrong unseal key with --workers 2 exits non-zero and leaves the data dir byte-identical', async () => {
  const before = await fingerprint(data);
  const run = await kesd(['server', data, '--workers', '2', '--addr', '127.0.0.1:0'], {
    env: { ...env, KESD_UNSEAL: Buffer.alloc(32, 6).toString('base64') },
  });
  assert.notEqual(run.code, 0);
  assert.doesNotMatch(run.stderr, /listening on/);
  assert.deepEqual(await fingerprint(data), before);
});

test('--workers must be a positive number', async () => {
  for (const bad of ['0', 'two', '1.5']) {
    const run = await kesd(['server', data, '--workers', bad], { env });
    assert.equal(run.code, 2, bad);
    assert.match(run.stderr, /--workers must be a number/);
  }
});

test('workers that keep crashing stop the server with a non-zero code', async () => {
  server = await start();
  const exited = new Promise<number | null>((resolve) => server.child.once('exit', (code) => resolve(code)));
  const killed: number[] = [];
  for (let i = 0; i < 6; i++) {
    await until('two live workers', () => workerPids().filter((p) => !killed.includes(p)).length === 2);
    const [victim] = workerPids().filter((p) => !killed.includes(p));
    killed.push(victim!);
    process.kill(victim!, 'SIGKILL');
  }
  assert.equal(await exited, 1);
  assert.match(server.output(), /workers exited 6 times within 60 s; stopping/);
});

test('--workers 1 is a single process', async () => {
  server = await startServer([data, '--workers', '1', '--addr', '127.0.0.1:0'], env);
  assert.deepEqual(workerPids(), []);
  assert.doesNotMatch(server.output(), /worker processes/);
  assert.equal((await fresh(sysadmin, 'GET', '/v1/status')).json().num_cpu_used, 1);
  await stopServer(server.child);
});
