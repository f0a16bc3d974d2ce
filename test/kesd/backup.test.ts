// Backup and restore of the embedded store (store/backup.ts, boot/backup.ts): `kesd backup` of a running server's
// data dir (locally, and over GET /v1/sys/backup with --server), the file's format and what it holds (sealed: no key
// in it), `kesd restore` (checked in full, atomic, --force), `kesd check`, and what a restore loses: keys created
// after the backup.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseInitConfig, toServerConfig } from '../../kesd/src/config/config.js';
import { fingerprint, kesd, KESD_BIN } from './cli-process.js';
import { makeIdentity } from './harness.js';
import { agentFor, call, makeFixture, sleep, startKesd, UNSEAL_ENV, type Fixture, type KesdProcess } from './load.js';

let fx: Fixture;
let server: KesdProcess;
const admin = () => agentFor(fx.admin);
const sysadminEnv = () => ({ ...fx.env, KES_CLIENT_CERT: fx.sysadmin.certFile, KES_CLIENT_KEY: fx.sysadmin.keyFile });
const KNOWN_KEY = randomBytes(32);

before(async () => {
  fx = await makeFixture({ keys: ['minio-default'] });
  server = await startKesd(fx.dataDir, fx.env, ['--workers', '2', '--audit-log', 'off']);
  const a = admin();
  assert.equal(
    (await call(a, server.port, 'POST', '/v1/key/import/known', { key: KNOWN_KEY.toString('base64') })).status,
    200,
  );
  for (let i = 0; i < 200; i++)
    assert.equal((await call(a, server.port, 'POST', `/v1/key/create/before-${i}`)).status, 200);
  assert.equal((await call(a, server.port, 'POST', '/v1/key/rotate/before-0')).status, 200);
  a.destroy();
});
after(async () => {
  await server?.stop();
  await fx?.remove();
});

async function generate(port: number, key: string): Promise<{ plaintext: string; ciphertext: string }> {
  const a = admin();
  try {
    const r = await call(a, port, 'POST', `/v1/key/generate/${key}`, {});
    assert.equal(r.status, 200, r.text);
    return r.json();
  } finally {
    a.destroy();
  }
}

test('a backup of a serving data dir under load: a sealed tar of .init, .unseal and a store snapshot; restored, everything acknowledged before it is there', {
  timeout: 180_000,
}, async () => {
  const out = join(fx.dir, 'backups');
  await mkdir(out);
  const dek = await generate(server.port, 'before-0');
  // Writes go on while the backup runs; the ones acknowledged before it started must all be in it.
  let stop = false;
  const created: string[] = [];
  const a = admin();
  const load = (async () => {
    for (let i = 0; !stop; i++) {
      const r = await call(a, server.port, 'POST', `/v1/key/create/during-${i}`);
      assert.equal(r.status, 200, r.text);
      created.push(`during-${i}`);
    }
  })();
  await sleep(100);
  const ackedBefore = created.length;
  const run = await kesd(['backup', fx.dataDir, out], { env: fx.env });
  stop = true;
  await load;
  a.destroy();
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /kesd: wrote .*kesd-backup-\d{8}T\d{6}Z\.tar .*it is sealed/);
  const [name, ...others] = await readdir(out);
  assert.deepEqual(others, [], 'one file, no temp file or staging dir left');
  const file = join(out, name!);
  assert.equal((await stat(file)).mode & 0o777, 0o600);

  // The format: a plain tar, manifest first.
  assert.deepEqual(execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n'), [
    'kesd-backup.json',
    '.init',
    '.unseal',
    'db',
  ]);
  const manifest = JSON.parse(execFileSync('tar', ['-xOf', file, 'kesd-backup.json'], { encoding: 'utf8' }));
  assert.equal(manifest.format, 'kesd-backup');
  assert.equal(manifest.version, 1);
  assert.deepEqual(
    manifest.files.map((f: { name: string }) => f.name),
    ['.init', '.unseal', 'db'],
  );
  for (const f of manifest.files) assert.match(f.sha256, /^[0-9a-f]{64}$/);
  // Sealed: neither a key nor the unseal key is in it, raw or as base64.
  const bytes = await readFile(file);
  for (const secret of [KNOWN_KEY, Buffer.from(fx.unsealKey, 'base64')]) {
    assert.equal(bytes.indexOf(secret), -1);
    assert.equal(bytes.indexOf(Buffer.from(secret.toString('base64'))), -1);
  }

  // Restored into a new dir: it opens, and a server on it has every key acknowledged before the backup.
  const restored = join(fx.dir, 'restored');
  const r = await kesd(['restore', file, restored], { env: fx.env });
  assert.equal(r.code, 0, r.stderr);
  const check = await kesd(['check', restored], { env: fx.env });
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /opens: 1 enclaves, (\d+) keys \((\d+) key versions\)/);
  const keys = Number(/, (\d+) keys/.exec(check.stdout)![1]);
  assert.ok(keys >= 202 + ackedBefore, `${keys} keys restored, ${202 + ackedBefore} acknowledged before the backup`);
  const second = await startKesd(restored, fx.env, ['--workers', '1', '--audit-log', 'off']);
  try {
    const a2 = admin();
    for (const k of ['known', 'before-199', ...created.slice(0, ackedBefore)])
      assert.equal((await call(a2, second.port, 'GET', `/v1/key/describe/${k}`)).status, 200, k);
    const opened = await call(a2, second.port, 'POST', '/v1/key/decrypt/before-0', { ciphertext: dek.ciphertext });
    assert.equal(opened.json().plaintext, dek.plaintext, 'a data key of the rotated key decrypts');
    // What a restore loses: keys created after the backup are gone.
    const last = created[created.length - 1]!;
    const lastHere = await call(a2, second.port, 'GET', `/v1/key/describe/${last}`);
    assert.ok(lastHere.status === 404 || created.length - ackedBefore < 3, `${last}: ${lastHere.status}`);
    a2.destroy();
  } finally {
    await second.stop();
  }
});

test('kesd backup --server: the system admin streams a backup (GET /v1/sys/backup); anyone else gets 403 and no file', {
  timeout: 120_000,
}, async () => {
  const out = join(fx.dir, 'remote');
  await mkdir(out);
  const url = `https://127.0.0.1:${server.port}`;
  for (let i = 0; i < 3; i++) {
    const r = await kesd(['backup', '--server', url, '-k', '--keep', '2', out], { env: sysadminEnv() });
    assert.equal(r.code, 0, r.stderr);
    await sleep(1100); // a new name per second
  }
  const files = (await readdir(out)).sort();
  assert.equal(files.length, 2, `--keep 2: ${files.join(', ')}`);
  const restored = join(fx.dir, 'remote-restored');
  assert.equal((await kesd(['restore', join(out, files[1]!), restored], { env: fx.env })).code, 0);
  const check = await kesd(['check', restored], { env: fx.env });
  assert.equal(check.code, 0, check.stderr);

  const denied = await kesd(['backup', '--server', url, '-k', join(out, 'denied.tar')], {
    env: { ...fx.env, KES_CLIENT_CERT: fx.admin.certFile, KES_CLIENT_KEY: fx.admin.keyFile },
  });
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /not authorized: insufficient permissions/);
  assert.deepEqual((await readdir(out)).sort(), files, 'nothing written for a refused backup');
  // The server staged nothing that stays.
  assert.deepEqual(
    (await readdir(fx.dataDir)).filter((n) => n.startsWith('.backup-')),
    [],
  );
});

test('restore checks the whole file first and never half-writes; a non-empty dir needs --force', {
  timeout: 120_000,
}, async () => {
  const file = join(fx.dir, 'one.tar');
  assert.equal((await kesd(['backup', fx.dataDir, file], { env: fx.env })).code, 0);
  const good = await readFile(file);
  const target = join(fx.dir, 'target');
  await mkdir(target);
  await writeFile(join(target, 'keep-me'), 'x');
  const before = await fingerprint(target);

  const damaged = Buffer.from(good);
  damaged[damaged.length - 2048] ^= 0x01; // inside the store snapshot, the last file
  const cases: [string, Buffer, RegExp][] = [
    ['a flipped bit', damaged, /'db' does not match its SHA-256 in the manifest/],
    ['truncated', good.subarray(0, good.length - 4096), /truncated/],
    ['not a tar', randomBytes(4096), /not a kesd backup, or it is damaged/],
    ['empty', Buffer.alloc(0), /truncated/],
  ];
  for (const [what, bytes, message] of cases) {
    await writeFile(join(fx.dir, 'bad.tar'), bytes);
    const r = await kesd(['restore', '--force', join(fx.dir, 'bad.tar'), target], { env: fx.env });
    assert.equal(r.code, 1, what);
    assert.match(r.stderr, message, what);
    assert.deepEqual(await fingerprint(target), before, `${what}: the target is untouched`);
  }
  assert.deepEqual(
    (await readdir(fx.dir)).filter((n) => n.includes('.restore-')),
    [],
    'no staging left',
  );

  const refused = await kesd(['restore', file, target], { env: fx.env });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /is not empty: use --force to replace it/);
  assert.deepEqual(await fingerprint(target), before);
  const forced = await kesd(['restore', '--force', file, target], { env: fx.env });
  assert.equal(forced.code, 0, forced.stderr);
  assert.deepEqual((await readdir(target)).sort(), ['.init', '.unseal', 'db']);
  assert.equal((await stat(target)).mode & 0o777, 0o700);
  assert.equal((await kesd(['check', target], { env: fx.env })).code, 0);
  // check with a wrong key: refused, nothing written.
  const wrong = join(fx.dir, 'wrong.key');
  await writeFile(wrong, randomBytes(32).toString('base64'), { mode: 0o600 });
  const snapshot = await fingerprint(target);
  const bad = await kesd(['check', '--unseal-file', wrong, target], { env: fx.env });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /unseal key is wrong/);
  assert.deepEqual(await fingerprint(target), snapshot);
});

test('a backup killed with SIGKILL at any moment leaves no backup file, or a complete one', {
  timeout: 180_000,
}, async () => {
  const out = join(fx.dir, 'killed');
  await mkdir(out);
  const outcomes = { absent: 0, complete: 0 };
  for (let i = 0; i < 8; i++) {
    const file = join(out, `b-${i}.tar`);
    const child = spawn(process.execPath, [KESD_BIN, 'backup', fx.dataDir, file], { env: fx.env, stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    await sleep(100 + i * 300); // from before the snapshot to after the rename (a backup takes ~1.5 s here)
    child.kill('SIGKILL');
    await exited;
    const present = (await readdir(out)).includes(`b-${i}.tar`);
    if (present)
      assert.equal(
        (await kesd(['restore', file, join(out, `r-${i}`)], { env: fx.env })).code,
        0,
        `b-${i}.tar is complete`,
      );
    outcomes[present ? 'complete' : 'absent']++;
  }
  console.log(`backup killed: ${outcomes.absent} left no file, ${outcomes.complete} a complete one`);
  await rm(out, { recursive: true, force: true });
});

test('backups of data dirs whose keys are in etcd are refused with the way to do it', async () => {
  const dir = join(fx.dir, 'etcd-dir');
  await mkdir(dir);
  await writeFile(
    join(dir, '.init'),
    `version: "1"\naddress: 127.0.0.1:0\ntls: { key: /k, cert: /c, client: { verify_cert: false } }\nunseal: { environment: { name: X } }\nstore: { etcd: { endpoints: [http://127.0.0.1:1] } }\n`,
  );
  const r = await kesd(['backup', dir, join(fx.dir, 'x.tar')], { env: fx.env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /keeps its keys in etcd: back up etcd with an etcd snapshot/);
});

test("system.backup.identities: a backup job's identity may take backups and do nothing else", {
  timeout: 120_000,
}, async () => {
  const job = await makeIdentity(fx.dir, 'backup-job');
  const dir = join(fx.dir, 'with-job');
  const yml = join(fx.dir, 'with-job.yml');
  await writeFile(
    yml,
    `version: v1
address: 127.0.0.1:0
system:
  admin: { identity: ${fx.sysadmin.identity} }
  backup: { identities: [${job.identity}] }
tls: { key: ${fx.server.keyFile}, cert: ${fx.server.certFile} }
unseal: { environment: { name: ${UNSEAL_ENV} } }
enclave:
  default:
    admin: { identity: ${fx.admin.identity} }
    keys: [{ name: k }]
`,
  );
  const started = await startKesd(dir, fx.env, ['--init', yml, '--workers', '1', '--audit-log', 'off']);
  try {
    const out = join(fx.dir, 'job.tar');
    const r = await kesd(['backup', '--server', `https://127.0.0.1:${started.port}`, '-k', out], {
      env: { ...fx.env, KES_CLIENT_CERT: job.certFile, KES_CLIENT_KEY: job.keyFile },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await kesd(['restore', out, join(fx.dir, 'job-restored')], { env: fx.env })).code, 0);
    const a = agentFor(job);
    for (const [method, path] of [
      ['GET', '/v1/key/list/*'],
      ['POST', '/v1/key/generate/k'],
      ['GET', '/v1/enclave/describe/default'],
      ['POST', '/v1/sys/seal'],
      ['GET', '/v1/status'],
    ]) {
      assert.equal(
        (await call(a, started.port, method!, path!, method === 'POST' ? {} : undefined)).status,
        403,
        `${method} ${path}`,
      );
    }
    a.destroy();
  } finally {
    await started.stop();
  }
});

test('system.backup.identities in init.yml: identities, not the system admin, not twice; carried into .init', async () => {
  const yml = (backup: string) => `version: v1
system: { admin: { identity: ${'a'.repeat(64)} }, backup: ${backup} }
tls: { key: k, cert: c }
unseal: { environment: { name: K } }
enclave: { default: { admin: { identity: ${'b'.repeat(64)} } } }
`;
  const parsed = parseInitConfig(yml(`{ identities: [${'c'.repeat(64)}] }`), {});
  assert.deepEqual(parsed.backupIdentities, ['c'.repeat(64)]);
  assert.deepEqual(toServerConfig(parsed, '/').backupIdentities, ['c'.repeat(64)]);
  for (const [backup, message] of [
    [`{ identities: [${'a'.repeat(64)}] }`, /the system admin may take backups anyway/],
    [`{ identities: [${'c'.repeat(64)}, ${'c'.repeat(64)}] }`, /is listed twice/],
    ['{ identities: [nope] }', /system\.backup\.identities\[0\]/],
    ['{ who: [] }', /unknown field 'system.backup.who'/],
  ] as const) {
    assert.throws(() => parseInitConfig(yml(backup), {}), message, backup);
  }
});

test('kesd restore --from-upstream is the upstream restore, not the backup restore (one command, two sources)', async () => {
  // fx's data dir has no upstream: the upstream restore says so; the backup restore would refuse the flag instead.
  const r = await kesd(['restore', '--from-upstream', fx.dataDir], { env: fx.env });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /has no upstream: its init\.yml needs an 'upstream' section/);
  const help = await kesd(['help'], { env: fx.env });
  assert.equal(help.stdout.split('\n').filter((l) => /^\s+restore\b/.test(l)).length, 1, help.stdout);
});
