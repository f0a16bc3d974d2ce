// Nobody gets in without the unseal key, and a failed start changes nothing: the whole matrix for `kesd server`
// processes in one place. Each bad unseal key (wrong key, missing variable, bad base64, wrong length; and from a key
// file: missing, open to other users, not a file, bad content) exits non-zero with its own clear message and leaves
// the data dir byte-identical; /v1/sys/seal stops key operations
// (403 system is sealed) on every connection, and in every worker process, until a restart.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fingerprint } from './cli-process.js';
import {
  agentFor,
  call,
  groupPids,
  makeFixture,
  runKesd,
  sleep,
  startKesd,
  UNSEAL_ENV,
  type Fixture,
  type KesdProcess,
} from './load.js';

let fx: Fixture;
let ciphertext: string;
let plaintext: string;

before(async () => {
  fx = await makeFixture({ keys: ['minio-default'] });
  // Some state from a good start, so "unchanged" covers a used store too.
  const proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
  try {
    const admin = agentFor(fx.admin);
    assert.equal((await call(admin, proc.port, 'POST', '/v1/key/create/before-seal')).status, 200);
    ({ plaintext, ciphertext } = (await call(admin, proc.port, 'POST', '/v1/key/generate/before-seal', {})).json());
    admin.destroy();
  } finally {
    await proc.stop();
  }
});
after(async () => {
  await fx?.remove();
});

const withKey = (value: string | undefined): NodeJS.ProcessEnv => {
  const env = { ...fx.env };
  if (value === undefined) delete env[UNSEAL_ENV];
  else env[UNSEAL_ENV] = value;
  return env;
};

interface BadKey {
  readonly name: string;
  readonly value: () => string | undefined;
  readonly message: RegExp;
}

const BAD_KEYS: readonly BadKey[] = [
  {
    name: 'wrong key',
    value: () => Buffer.alloc(32, 0x33).toString('base64'),
    message: /unseal key is wrong: the root key is not authentic/,
  },
  {
    name: 'missing variable',
    value: () => undefined,
    message: new RegExp(`environment variable '${UNSEAL_ENV}' is not set`),
  },
  { name: 'empty variable', value: () => '', message: /unseal key must be 32 bytes, got 0/ },
  {
    name: 'bad base64',
    value: () => 'not base64 at all!',
    message: new RegExp(`environment variable '${UNSEAL_ENV}' is not valid base64`),
  },
  {
    name: 'unpadded base64',
    value: () => Buffer.alloc(32, 1).toString('base64').replace(/=+$/, ''),
    message: /is not valid base64/,
  },
  {
    name: 'base64url alphabet',
    value: () => Buffer.alloc(32, 0xfb).toString('base64url') + '=',
    message: /is not valid base64/,
  },
  {
    name: 'too short (16 bytes)',
    value: () => Buffer.alloc(16, 1).toString('base64'),
    message: /unseal key must be 32 bytes, got 16/,
  },
  {
    name: 'too long (64 bytes)',
    value: () => Buffer.alloc(64, 1).toString('base64'),
    message: /unseal key must be 32 bytes, got 64/,
  },
];

/** The message a failed start printed: its stderr without blank lines. */
const messageOf = (stderr: string) =>
  stderr
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '')
    .join(' | ');

test('a bad unseal key: non-zero exit, a distinct clear message, the data dir byte-identical', {
  timeout: 120_000,
}, async (t) => {
  const messages = new Map<string, string>();
  for (const bad of BAD_KEYS) {
    const before = await fingerprint(fx.dataDir);
    const value = bad.value();
    const run = await runKesd(['server', fx.dataDir, '--audit-log', 'off'], withKey(value), 20_000);
    const after = await fingerprint(fx.dataDir);
    assert.equal(run.timedOut, false, `${bad.name}: kesd server kept running: ${run.stderr}`);
    assert.doesNotMatch(run.stderr, /listening on/, `${bad.name}: the server started`);
    assert.notEqual(run.code, 0, `${bad.name}: exit code 0`);
    assert.equal(run.signal, null, `${bad.name}: died of ${run.signal} instead of exiting`);
    assert.match(run.stderr, bad.message, `${bad.name}: unexpected message`);
    assert.doesNotMatch(run.stderr, /^\s+at /m, `${bad.name}: a stack trace instead of a message`);
    if (value !== undefined && value.length >= 8)
      assert.ok(!run.stderr.includes(value), `${bad.name}: the key value is echoed`);
    assert.ok(!run.stderr.includes(fx.unsealKey), `${bad.name}: the right unseal key is echoed`);
    assert.deepEqual(after, before, `${bad.name}: the data dir changed`);
    messages.set(bad.name, messageOf(run.stderr));
    t.diagnostic(`${bad.name}: exit ${run.code}: ${messageOf(run.stderr)}`);
  }
  // Wrong key, missing, bad base64 and wrong length: four kinds of mistake, four different messages.
  const kinds = ['wrong key', 'missing variable', 'bad base64', 'too short (16 bytes)'].map((k) => messages.get(k));
  assert.equal(new Set(kinds).size, 4, `messages are not distinct: ${JSON.stringify(kinds)}`);

  // The right key still opens the very same data dir, with everything in it.
  const proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
  try {
    const admin = agentFor(fx.admin);
    const r = await call(admin, proc.port, 'POST', '/v1/key/decrypt/before-seal', { ciphertext });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json().plaintext, plaintext);
    admin.destroy();
  } finally {
    await proc.stop();
  }
});

test('a missing or corrupt .unseal file: non-zero exit and a clear message', { timeout: 60_000 }, async () => {
  const { readFile, writeFile, rm, cp } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const copy = `${fx.dataDir}-copy`;
  await cp(fx.dataDir, copy, { recursive: true });
  try {
    const unseal = join(copy, '.unseal');
    const original = await readFile(unseal, 'utf8');
    const cases: [string, string | undefined, RegExp][] = [
      ['missing .unseal', undefined, /does not exist/],
      ['not JSON', '{', /is corrupt: not JSON/],
      [
        'tampered ciphertext',
        original.replace(/"ciphertext":"(.)/, (_m, c: string) => `"ciphertext":"${c === 'A' ? 'B' : 'A'}`),
        /unseal key is wrong|is corrupt/,
      ],
    ];
    for (const [name, content, message] of cases) {
      if (content === undefined) await rm(unseal);
      else await writeFile(unseal, content);
      const before = await fingerprint(copy);
      const run = await runKesd(['server', copy, '--audit-log', 'off'], fx.env, 20_000);
      assert.equal(run.timedOut, false, `${name}: kesd server kept running`);
      assert.notEqual(run.code, 0, `${name}: exit code 0`);
      assert.match(run.stderr, message, `${name}: ${run.stderr}`);
      assert.deepEqual(await fingerprint(copy), before, `${name}: the data dir changed`);
      await writeFile(unseal, original);
    }
  } finally {
    await rm(copy, { recursive: true, force: true });
  }
});

test('a bad unseal key file (unseal.file): non-zero exit, a distinct clear message, the data dir byte-identical', {
  timeout: 120_000,
}, async (t) => {
  const { chmod, cp, mkdir, readFile, rm, writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const { formatSealedRootKey, parseSealedRootKey } = await import('../../kesd/src/store/unseal.js');
  const copy = `${fx.dataDir}-file`;
  const keyDir = `${fx.dataDir}-key`;
  const keyPath = join(keyDir, 'unseal.key');
  await cp(fx.dataDir, copy, { recursive: true });
  await mkdir(keyDir, { mode: 0o700 });
  try {
    // The same sealed root key, its unseal key now read from keyPath.
    const unsealPath = join(copy, '.unseal');
    const sealedRoot = parseSealedRootKey(await readFile(unsealPath, 'utf8'), '.unseal').ciphertext;
    await writeFile(unsealPath, formatSealedRootKey({ file: keyPath }, sealedRoot));
    const noVariable = withKey(undefined);
    const setKeyFile = async (content: string | undefined, mode = 0o600) => {
      await rm(keyPath, { recursive: true, force: true });
      if (content === undefined) return;
      if (content === 'DIRECTORY') return void (await mkdir(keyPath));
      await writeFile(keyPath, content);
      await chmod(keyPath, mode);
    };
    const cases: [string, string | undefined, number, RegExp][] = [
      ['missing file', undefined, 0o600, /unseal key: file '.*' does not exist/],
      ['a directory', 'DIRECTORY', 0o600, /unseal key: '.*' is not a regular file/],
      ['readable by others', `${fx.unsealKey}\n`, 0o644, /is accessible by other users \(mode 0644\)/],
      ['bad base64', 'not base64 at all!\n', 0o600, /unseal key: file '.*' is not valid base64/],
      ['too short (16 bytes)', Buffer.alloc(16, 1).toString('base64'), 0o600, /unseal key must be 32 bytes, got 16/],
      [
        'wrong key',
        Buffer.alloc(32, 0x33).toString('base64'),
        0o400,
        /unseal key is wrong: the root key is not authentic/,
      ],
    ];
    const messages = new Set<string>();
    for (const [name, content, mode, message] of cases) {
      await setKeyFile(content, mode);
      const before = await fingerprint(copy);
      const run = await runKesd(['server', copy, '--audit-log', 'off'], noVariable, 20_000);
      assert.equal(run.timedOut, false, `${name}: kesd server kept running: ${run.stderr}`);
      assert.notEqual(run.code, 0, `${name}: exit code 0`);
      assert.match(run.stderr, message, `${name}: unexpected message`);
      assert.doesNotMatch(run.stderr, /^\s+at /m, `${name}: a stack trace instead of a message`);
      assert.ok(!run.stderr.includes(fx.unsealKey), `${name}: the key is echoed`);
      assert.deepEqual(await fingerprint(copy), before, `${name}: the data dir changed`);
      messages.add(messageOf(run.stderr));
      t.diagnostic(`${name}: exit ${run.code}: ${messageOf(run.stderr)}`);
    }
    assert.equal(messages.size, cases.length, 'messages are not distinct');

    // The right key file (owner read-only, as a Secret volume mounts it) opens the same data dir, without a variable.
    await setKeyFile(`${fx.unsealKey}\n`, 0o400);
    const proc = await startKesd(copy, noVariable, ['--audit-log', 'off']);
    try {
      const admin = agentFor(fx.admin);
      const r = await call(admin, proc.port, 'POST', '/v1/key/decrypt/before-seal', { ciphertext });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json().plaintext, plaintext);
      admin.destroy();
    } finally {
      await proc.stop();
    }
  } finally {
    await rm(copy, { recursive: true, force: true });
    await rm(keyDir, { recursive: true, force: true });
  }
});

const SEALED = 'system is sealed';

/** Polls check every 50 ms until it holds; fails after 15 s. */
async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (const started = Date.now(); !(await check()); await sleep(50)) {
    if (Date.now() - started > 15_000) assert.fail(`${what}: not within 15 s`);
  }
}

/** Requests on `connections` fresh connections each (so, in cluster mode, they reach every worker). */
async function onFreshConnections(
  proc: KesdProcess,
  who: 'admin' | 'sysadmin',
  method: string,
  path: string,
  body: unknown,
  connections: number,
) {
  const replies = [];
  for (let i = 0; i < connections; i++) {
    const agent = agentFor(who === 'admin' ? fx.admin : fx.sysadmin, { keepAlive: false });
    replies.push(await call(agent, proc.port, method, path, body));
    agent.destroy();
  }
  return replies;
}

test('/v1/sys/seal stops every key operation with 403 system is sealed, on every connection, until a restart', {
  timeout: 120_000,
}, async (t) => {
  let proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
  try {
    const admin = agentFor(fx.admin);
    const sysadmin = agentFor(fx.sysadmin);
    // Warm every worker's key cache first: sealing must also drop cached key material.
    for (const r of await onFreshConnections(proc, 'admin', 'POST', '/v1/key/generate/before-seal', {}, 6))
      assert.equal(r.status, 200, r.text);

    assert.equal((await call(admin, proc.port, 'POST', '/v1/sys/seal')).status, 403, 'the enclave admin cannot seal');
    const sealed = await call(sysadmin, proc.port, 'POST', '/v1/sys/seal');
    assert.equal(sealed.status, 200, sealed.text);

    const keyOps: [string, string, unknown][] = [
      ['POST', '/v1/key/generate/before-seal', {}],
      ['POST', '/v1/key/decrypt/before-seal', { ciphertext }],
      ['POST', '/v1/key/encrypt/before-seal', { plaintext: 'YQ==' }],
      ['GET', '/v1/key/describe/before-seal', undefined],
      ['POST', '/v1/key/create/after-seal', undefined],
      ['DELETE', '/v1/key/delete/before-seal', undefined],
      ['GET', '/v1/key/list/*', undefined],
      ['POST', '/v1/key/hmac/before-seal', { message: 'YQ==' }],
      ['POST', '/v1/policy/write/sealed', { allow: ['/v1/key/*'] }],
      ['GET', '/v1/identity/list/*', undefined],
      ['GET', '/v1/identity/self/describe', undefined],
      ['POST', '/v1/secret/create/sealed', { bytes: 'YQ==' }],
    ];
    let checked = 0;
    for (const [method, path, body] of keyOps) {
      for (const r of await onFreshConnections(proc, 'admin', method, path, body, 4)) {
        assert.equal(r.status, 403, `${method} ${path} while sealed: ${r.status} ${r.text}`);
        assert.equal(r.json().message, SEALED, `${method} ${path}`);
        checked++;
      }
    }
    for (const [method, path, body] of [
      ['POST', '/v1/enclave/create/sealed', { admin: fx.admin.identity }],
      ['GET', '/v1/enclave/describe/default', undefined],
      ['POST', '/v1/sys/seal', undefined],
    ] as const) {
      for (const r of await onFreshConnections(proc, 'sysadmin', method, path, body, 4)) {
        assert.equal(r.status, 403, `sysadmin ${method} ${path} while sealed: ${r.status} ${r.text}`);
        assert.equal(r.json().message, SEALED);
        checked++;
      }
    }
    const status = await call(sysadmin, proc.port, 'GET', '/v1/status');
    assert.equal(status.status, 200, status.text);
    assert.equal(status.json().sealed, true);
    assert.equal((await call(sysadmin, proc.port, 'GET', '/v1/ready')).status, 503);

    // In cluster mode a worker that dies after the seal comes back sealed.
    const pids = await groupPids(proc.pid);
    const workers = pids.filter((p) => p !== proc.pid);
    if (workers.length > 0) {
      const killed = workers[0]!;
      process.kill(killed, 'SIGKILL');
      // A SIGKILL takes effect a moment later: wait for the primary to see the exit, then for a new worker in the
      // killed one's place, then for that worker to serve (its slot's request count in the summed metrics).
      const exitLine = new RegExp(`worker (\\d+) \\(pid ${killed}\\) exited \\(SIGKILL\\); restarting`);
      await until('the primary to see the killed worker exit', () => exitLine.test(proc.output()));
      const slot = exitLine.exec(proc.output())![1]!;
      await until('a new worker in its place', async () => {
        const now = await groupPids(proc.pid);
        return now.length === pids.length && !now.includes(killed);
      });
      await until(`the new worker ${slot} to serve`, async () => {
        const [r] = await onFreshConnections(proc, 'admin', 'POST', '/v1/key/generate/before-seal', {}, 1);
        assert.equal(r!.status, 403, `after a worker restart: ${r!.status} ${r!.text}`);
        const metrics = await call(sysadmin, proc.port, 'GET', '/v1/metrics');
        const served = new RegExp(`^kesd_worker_requests\\{worker="${slot}"\\} (\\d+)$`, 'm').exec(metrics.text);
        return Number(served?.[1] ?? 0) > 0;
      });
      for (const r of await onFreshConnections(proc, 'admin', 'POST', '/v1/key/generate/before-seal', {}, 8)) {
        assert.equal(r.status, 403, `after a worker restart: ${r.status} ${r.text}`);
        assert.equal(r.json().message, SEALED);
        checked++;
      }
    }
    t.diagnostic(`${checked} requests answered 403 system is sealed (${workers.length} worker processes)`);
    admin.destroy();
    sysadmin.destroy();

    // A restart with the unseal key ends the seal; nothing was lost.
    await proc.stop();
    proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
    for (const r of await onFreshConnections(proc, 'admin', 'POST', '/v1/key/decrypt/before-seal', { ciphertext }, 4)) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json().plaintext, plaintext);
    }
    const admin2 = agentFor(fx.admin);
    assert.equal((await call(admin2, proc.port, 'POST', '/v1/key/create/after-restart')).status, 200);
    assert.equal(
      (await call(admin2, proc.port, 'GET', '/v1/key/describe/after-seal')).status,
      404,
      'a create refused while sealed left nothing',
    );
    admin2.destroy();
  } finally {
    await proc.stop();
  }
});
