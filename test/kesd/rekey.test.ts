// Changing the unseal key: `kesd rekey` (the CLI, its errors), and `kesd server --init` with init.yml's
// `unseal.previous`, which re-seals the root key under the configured key at start (the Kubernetes rotation).
// The crash points of both are in rekey.crash.test.ts (they share boot/rekey.ts).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, parseInitConfig, readServerConfig } from '../../kesd/src/config/config.js';
import { fingerprint, kesd, startServer, stopServer } from './cli-process.js';
import { makeIdentity, request, type TestIdentity } from './harness.js';

let dir: string;
let ids: Record<'sysadmin' | 'admin' | 'server', TestIdentity>;
const keyFile = async (name: string, key = randomBytes(32).toString('base64')) => {
  const path = join(dir, name);
  await writeFile(path, key + '\n', { mode: 0o600 });
  return path;
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kesd-rekeycli-'));
  ids = {
    sysadmin: await makeIdentity(dir, 'sysadmin'),
    admin: await makeIdentity(dir, 'admin'),
    server: await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'] }),
  };
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const initYml = (unseal: string) => `version: v1
address: 127.0.0.1:0
system: { admin: { identity: ${ids.sysadmin.identity} } }
tls: { key: ${ids.server.keyFile}, cert: ${ids.server.certFile} }
unseal: ${unseal}
enclave:
  default:
    admin: { identity: ${ids.admin.identity} }
    keys: [{ name: k }]
`;

async function generate(port: number): Promise<{ plaintext: string; ciphertext: string }> {
  const agent = new https.Agent({ cert: ids.admin.cert, key: ids.admin.key, rejectUnauthorized: false });
  const r = await request(agent, port, 'POST', '/v1/key/generate/k', {});
  assert.equal(r.status, 200, r.text);
  return r.json();
}

async function decrypts(port: number, dek: { plaintext: string; ciphertext: string }): Promise<void> {
  const agent = new https.Agent({ cert: ids.admin.cert, key: ids.admin.key, rejectUnauthorized: false });
  const r = await request(agent, port, 'POST', '/v1/key/decrypt/k', { ciphertext: dek.ciphertext });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json().plaintext, dek.plaintext);
}

test('kesd rekey: the new key opens the data dir, the old one no longer does; a rerun changes nothing', {
  timeout: 120_000,
}, async () => {
  const data = join(dir, 'cli-data');
  const oldKey = randomBytes(32).toString('base64');
  const env = { ...process.env, KESD_OLD: oldKey };
  await writeFile(join(dir, 'cli.yml'), initYml('{ environment: { name: KESD_OLD } }'));
  assert.equal((await kesd(['init', '--config', join(dir, 'cli.yml'), data], { env })).code, 0);
  let server = await startServer([data, '--audit-log', 'off'], env);
  const dek = await generate(server.port);
  await stopServer(server.child);

  const newFile = await keyFile('cli-new.key');
  const untouched = await fingerprint(data);
  for (const [args, message] of [
    [['rekey', data], /no new unseal key: use --new-file PATH or --new-env NAME/],
    [['rekey', '--new-file', newFile, '--new-env', 'X', data], /give --new-file or --new-env, not both/],
    [['rekey', '--new-file', newFile], /expected 1 argument/],
  ] as const) {
    const r = await kesd([...args], { env });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  const wrong = await kesd(['rekey', '--new-file', newFile, '--current-env', 'KESD_OTHER', data], {
    env: { ...env, KESD_OTHER: randomBytes(32).toString('base64') },
  });
  assert.equal(wrong.code, 1);
  assert.match(
    wrong.stderr,
    /neither the current unseal key \(environment variable KESD_OTHER\) nor the new one \(file .*cli-new\.key\) opens the root key/,
  );
  const loose = await keyFile('cli-loose.key');
  await import('node:fs/promises').then((fs) => fs.chmod(loose, 0o644));
  assert.match((await kesd(['rekey', '--new-file', loose, data], { env })).stderr, /accessible by other users/);
  assert.deepEqual(await fingerprint(data), untouched, 'a refused rekey writes nothing');

  const done = await kesd(['rekey', '--new-file', newFile, data], { env });
  assert.equal(done.code, 0, done.stderr);
  assert.match(
    done.stdout,
    /is sealed under the unseal key from the file .*cli-new\.key now; the old key no longer opens it/,
  );
  assert.doesNotMatch(
    done.stdout + done.stderr,
    new RegExp(oldKey.slice(0, 12).replace(/[+/]/g, '.')),
    'no key in the output',
  );
  assert.match(await readFile(join(data, '.unseal'), 'utf8'), /"version":2,"file":".*cli-new\.key"/);

  // The recorded source is the new file now: the server starts without the variable.
  const { KESD_OLD: _, ...withoutOld } = env;
  server = await startServer([data, '--audit-log', 'off'], withoutOld);
  await decrypts(server.port, dek);
  await stopServer(server.child);
  // The old key no longer opens it.
  await writeFile(join(dir, 'old.yml'), initYml('{ environment: { name: KESD_OLD } }'));
  const withOld = await kesd(['server', data, '--init', join(dir, 'old.yml')], { env });
  assert.notEqual(withOld.code, 0);
  assert.match(withOld.stderr, /unseal key is wrong/);

  const again = await kesd(['rekey', '--new-file', newFile, data], { env });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /already; nothing changed/);
});

test('server --init with unseal.previous re-seals under the configured key at start; neither key: refused, nothing written', {
  timeout: 120_000,
}, async () => {
  const data = join(dir, 'prev-data');
  const keyA = await keyFile('a.key');
  const keyB = await keyFile('b.key');
  const keyC = await keyFile('c.key');
  const yml = join(dir, 'prev.yml');
  await writeFile(yml, initYml(`{ file: { path: ${keyA} } }`));
  let server = await startServer([data, '--init', yml, '--audit-log', 'off'], process.env);
  const dek = await generate(server.port);
  await stopServer(server.child);

  // Neither the configured key nor the previous one opens it: refused, the data dir untouched.
  await writeFile(yml, initYml(`{ file: { path: ${keyB} }, previous: { file: { path: ${keyC} } } }`));
  const before = await fingerprint(data);
  const refused = await kesd(['server', data, '--init', yml], { env: process.env });
  assert.notEqual(refused.code, 0);
  assert.match(
    refused.stderr,
    /unseal key is wrong: the key from the file .*b\.key does not open the root key, and the previous key \(unseal\.previous, file .*c\.key\) does not open it either/,
  );
  assert.deepEqual(await fingerprint(data), before);
  await writeFile(
    yml,
    initYml(`{ file: { path: ${keyB} }, previous: { file: { path: ${join(dir, 'missing.key')} } } }`),
  );
  assert.match(
    (await kesd(['server', data, '--init', yml], { env: process.env })).stderr,
    /previous key \(unseal\.previous, file .*missing\.key\) cannot be used: unseal key: file .* does not exist/,
  );
  assert.deepEqual(await fingerprint(data), before);

  // The rotation: B configured, A previous.
  await writeFile(yml, initYml(`{ file: { path: ${keyB} }, previous: { file: { path: ${keyA} } } }`));
  server = await startServer([data, '--init', yml, '--audit-log', 'off'], process.env);
  assert.match(
    server.output(),
    /re-sealed the root key under the unseal key from the file .*b\.key \(it was sealed under the previous one, from the file .*a\.key\)/,
  );
  await decrypts(server.port, dek);
  await stopServer(server.child);
  assert.match(await readFile(join(data, '.unseal'), 'utf8'), /b\.key/);
  // Started again with the same init.yml: B opens it, nothing to re-seal.
  server = await startServer([data, '--init', yml, '--audit-log', 'off'], process.env);
  assert.doesNotMatch(server.output(), /re-sealed/);
  await stopServer(server.child);
  // A alone no longer opens it.
  await writeFile(yml, initYml(`{ file: { path: ${keyA} } }`));
  assert.match((await kesd(['server', data, '--init', yml], { env: process.env })).stderr, /unseal key is wrong/);
});

test('init.yml unseal.previous: the same shapes as unseal, not the same source, not in .init', () => {
  const base = (unseal: string) => initYml(unseal);
  const parsed = parseInitConfig(base('{ file: { path: /k/new }, previous: { environment: { name: OLD_KEY } } }'), {});
  assert.deepEqual(parsed.unsealPrevious, { env: 'OLD_KEY' });
  assert.deepEqual(
    parseInitConfig(base('{ environment: { name: K }, previous: { file: { path: rel/old } } }'), {}, '/cwd')
      .unsealPrevious,
    { file: '/cwd/rel/old' },
  );
  assert.equal(parseInitConfig(base('{ file: { path: /k/new } }'), {}).unsealPrevious, undefined);
  for (const [unseal, message] of [
    [
      '{ file: { path: /k/a }, previous: { file: { path: /k/a } } }',
      /'unseal.previous' names the same key source as 'unseal'/,
    ],
    [
      '{ file: { path: /k/a }, previous: { file: { path: /k/b }, environment: { name: X } } }',
      /'unseal.previous': set either 'environment'/,
    ],
    ['{ file: { path: /k/a }, previous: { other: {} } }', /unknown field 'unseal.previous.other'/],
    [
      '{ file: { path: /k/a }, previous: { environment: { name: 1X } } }',
      /'unseal.previous.environment.name': '1X' is not a valid/,
    ],
  ] as const) {
    assert.throws(
      () => parseInitConfig(base(unseal), {}),
      (err: Error) => err instanceof ConfigError && message.test(err.message),
      unseal,
    );
  }
});

test(".init has no unseal.previous: it is init.yml's, for the start that rotates", async () => {
  const d = join(dir, 'dotinit');
  await import('node:fs/promises').then((fs) => fs.mkdir(d));
  await writeFile(
    join(d, '.init'),
    `version: "1"\naddress: 127.0.0.1:0\ntls: { key: /k, cert: /c, client: { verify_cert: false } }\nunseal: { file: { path: /k/a }, previous: { file: { path: /k/b } } }\n`,
  );
  await assert.rejects(readServerConfig(d, {}), /unknown field 'unseal.previous'/);
});
