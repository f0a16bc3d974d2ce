import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  ConfigError,
  parseInitConfig,
  readServerConfig,
  toServerConfig,
  unsealSourceOf,
  writeServerConfig,
  type ServerConfig,
} from '../../kesd/src/config/config.js';

const SYS = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);
const APP = 'c'.repeat(64);
const OPS = 'd'.repeat(64);
const DIGITS = '1234567890'.repeat(6) + '1234'; // all digits: YAML would make this a number

// The v0.22 init.yml sample of kes-protocol §9.1, filled in.
const SAMPLE = `
version: v1
address: 0.0.0.0:7373
system:
  admin:
    identity: ${SYS}
tls:
  key: ./private.key
  cert: ./public.crt
  password: ""
  proxy:
    identity: [${OPS}]
    header: { cert: X-Tls-Client-Cert }
  client:
    verify_cert: false
unseal:
  environment:
    name: KES_UNSEAL_KEY
enclave:
  tenant-1:
    admin:
      identity: ${ADMIN}
    policy:
      my-app:
        allow: [/v1/key/create/tenant-1*, /v1/key/generate/tenant-1*, /v1/key/decrypt/tenant-1*]
        deny:  [/v1/key/delete/*]
        identities: [${APP}]
      ops:
        allow: ["*"]
        identities:
          - ${DIGITS}
`;

type Obj = Record<string, any>;
const base = (): Obj => ({
  version: 'v1',
  system: { admin: { identity: SYS } },
  tls: { key: 'k.pem', cert: 'c.pem' },
  unseal: { environment: { name: 'KES_UNSEAL_KEY' } },
  enclave: { e1: { admin: { identity: ADMIN }, policy: { p: { allow: ['/v1/key/*'], identities: [APP] } } } },
});

/** Asserts that the config made by `edit` fails with a ConfigError matching `message`. */
function rejects(edit: (c: Obj) => void, message: string | RegExp, env: NodeJS.ProcessEnv = {}): void {
  const c = base();
  edit(c);
  assert.throws(
    () => parseInitConfig(stringify(c), env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      if (typeof message === 'string') assert.ok(err.message.includes(message), `'${err.message}' lacks '${message}'`);
      else assert.match(err.message, message);
      return true;
    },
  );
}

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the v0.22 sample parses', () => {
  const c = parseInitConfig(SAMPLE, {});
  assert.equal(c.version, 'v1');
  assert.equal(c.address, '0.0.0.0:7373');
  assert.equal(c.sysadmin, SYS);
  assert.deepEqual(c.tls, {
    key: './private.key',
    cert: './public.crt',
    password: '',
    verifyCert: false,
    proxy: { identities: [OPS], header: 'X-Tls-Client-Cert' },
  });
  assert.equal(c.unsealEnv, 'KES_UNSEAL_KEY');
  assert.deepEqual(c.enclaves, [
    {
      name: 'tenant-1',
      admin: ADMIN,
      policies: [
        {
          name: 'my-app',
          allow: ['/v1/key/create/tenant-1*', '/v1/key/generate/tenant-1*', '/v1/key/decrypt/tenant-1*'],
          deny: ['/v1/key/delete/*'],
          identities: [APP],
        },
        { name: 'ops', allow: ['*'], deny: [], identities: [DIGITS] },
      ],
      keys: [],
    },
  ]);
});

test('extensions: enclave keys and tls.ca; defaults for absent optional fields', () => {
  const c = base();
  c.enclave.e1.keys = [{ name: 'key-1' }, { name: 'key_2' }];
  c.tls.ca = './ca.pem';
  const cfg = parseInitConfig(stringify(c), {});
  assert.deepEqual(cfg.enclaves[0]!.keys, ['key-1', 'key_2']);
  assert.equal(cfg.tls.ca, './ca.pem');
  assert.equal(cfg.address, '0.0.0.0:7373');
  assert.equal(cfg.tls.verifyCert, false);
  assert.equal(cfg.tls.password, '');
});

test('verify_cert accepts on/true/off/false/"" in any case and nothing else', () => {
  for (const [v, want] of [
    ['on', true],
    ['TRUE', true],
    ['true', true],
    ['off', false],
    ['False', false],
    ['', false],
  ] as const) {
    const c = base();
    c.tls.client = { verify_cert: v };
    assert.equal(parseInitConfig(stringify(c), {}).tls.verifyCert, want, v);
  }
  const yaml = stringify(base()).replace('tls:\n', 'tls:\n  client:\n    verify_cert: true\n'); // a YAML bool
  assert.equal(parseInitConfig(yaml, {}).tls.verifyCert, true);
  rejects((c) => (c.tls.client = { verify_cert: 'yes' }), "'tls.client.verify_cert': 'yes' is not a boolean");
});

test('${VAR} replaces a whole scalar; a missing variable is an error naming it', () => {
  const c = base();
  c.system.admin.identity = '${SYS_ID}';
  c.tls.password = ' ${KEY_PW} ';
  c.tls.client = { verify_cert: '${VERIFY}' };
  c.enclave.e1.policy.p.identities = ['${APP_ID}'];
  c.tls.cert = 'certs/${NOT_WHOLE}.pem';
  const cfg = parseInitConfig(stringify(c), { SYS_ID: SYS, KEY_PW: 's3cret', VERIFY: 'on', APP_ID: APP });
  assert.equal(cfg.sysadmin, SYS);
  assert.equal(cfg.tls.password, 's3cret');
  assert.equal(cfg.tls.passwordEnv, 'KEY_PW');
  assert.equal(cfg.tls.verifyCert, true);
  assert.deepEqual(cfg.enclaves[0]!.policies[0]!.identities, [APP]);
  assert.equal(cfg.tls.cert, 'certs/${NOT_WHOLE}.pem');
  rejects(
    (c) => (c.system.admin.identity = '${NOPE}'),
    "'system.admin.identity': environment variable 'NOPE' is not set",
  );
});

test('version, required fields and identities', () => {
  rejects((c) => delete c.version, "'version' is required");
  rejects((c) => (c.version = 'v2'), "version 'v2' is not supported");
  rejects((c) => delete c.system, "'system.admin.identity' is required");
  rejects(
    (c) => (c.system.admin.identity = SYS.toUpperCase()),
    `identity '${SYS.toUpperCase()}' is not 64 lowercase hex`,
  );
  rejects((c) => (c.system.admin.identity = 'abc'), "'system.admin.identity': identity 'abc'");
  rejects((c) => delete c.tls.key, "'tls.key' is required");
  rejects((c) => delete c.tls, "'tls.key' is required");
  rejects((c) => delete c.unseal, "'unseal.environment.name' is required");
  rejects((c) => (c.unseal.environment.name = 'A-B'), "'A-B' is not a valid environment variable name");
  rejects((c) => delete c.enclave.e1.admin, "'enclave.e1.admin.identity' is required");
  rejects((c) => (c.tls.proxy = { identity: ['xyz'] }), "'tls.proxy.identity[0]': identity 'xyz'");
  rejects((c) => (c.address = 'localhost'), "'address': 'localhost' is not a host:port address");
  rejects((c) => (c.tls = 'oops'), "'tls' must be a mapping");
});

test('unknown fields are rejected with their path', () => {
  rejects((c) => (c.foo = 1), "unknown field 'foo'");
  rejects((c) => (c.tls.client = { verify: true }), "unknown field 'tls.client.verify'");
  rejects((c) => (c.enclave.e1.policy.p.alow = []), "unknown field 'enclave.e1.policy.p.alow'");
  rejects(
    (c) => (c.enclave.e1.keys = [{ name: 'k', algorithm: 'AES256' }]),
    "unknown field 'enclave.e1.keys[0].algorithm'",
  );
  rejects((c) => (c.system.admin.identities = []), "unknown field 'system.admin.identities'");
});

test('names of enclaves, policies and keys follow KES validName', () => {
  for (const bad of ['-lead', 'trail-', '_', 'a.b', 'a/b', 'x'.repeat(81), 'ü']) {
    rejects(
      (c) => (c.enclave = { [bad]: c.enclave.e1 }),
      `enclave name '${bad}' is empty, too long or contains invalid characters`,
    );
    rejects((c) => (c.enclave.e1.policy = { [bad]: c.enclave.e1.policy.p }), `enclave 'e1': policy name '${bad}'`);
    rejects((c) => (c.enclave.e1.keys = [{ name: bad }]), `enclave 'e1': key name '${bad}'`);
  }
  rejects((c) => (c.enclave.e1.keys = [{ name: 'k' }, { name: 'k' }]), "enclave 'e1': key 'k' is listed twice");
  const ok = base();
  ok.enclave = { ['x'.repeat(80)]: ok.enclave.e1, 'a-b_c': ok.enclave.e1, __: ok.enclave.e1 };
  assert.equal(parseInitConfig(stringify(ok), {}).enclaves.length, 3);
});

test('identity rules inside an enclave', () => {
  rejects((c) => (c.enclave.e1.admin.identity = SYS), "enclave 'e1': the enclave admin must not be the system admin");
  rejects(
    (c) => (c.enclave.e1.policy.p.identities = [SYS]),
    `enclave 'e1': policy 'p': identity '${SYS}' is the system admin`,
  );
  rejects(
    (c) => (c.enclave.e1.policy.p.identities = [ADMIN]),
    `enclave 'e1': policy 'p': identity '${ADMIN}' is the enclave admin`,
  );
  rejects(
    (c) => (c.enclave.e1.policy.q = { allow: ['/v1/key/list/*'], identities: [APP] }),
    `enclave 'e1': policy 'q': identity '${APP}' is already assigned to policy 'p'`,
  );
  // The same identity in two different enclaves is fine: identities are per enclave.
  const c = base();
  c.enclave.e2 = structuredClone(c.enclave.e1);
  assert.equal(parseInitConfig(stringify(c), {}).enclaves.length, 2);
});

test('policy patterns: exact paths and a trailing * only', () => {
  const c = base();
  c.enclave.e1.policy.p.allow = ['*', '/v1/key/*', '/v1/key/create/my-app*', '/v1/status'];
  c.enclave.e1.policy.p.deny = ['/v1/key/delete/secret'];
  assert.deepEqual(parseInitConfig(stringify(c), {}).enclaves[0]!.policies[0]!.allow, c.enclave.e1.policy.p.allow);
  for (const bad of ['/v1/key/*/x', '/v1/key/?', '/v1/key/[ab]', '/v1/key/\\*', '**', '/v1/*/create*']) {
    rejects(
      (c) => (c.enclave.e1.policy.p.allow = [bad]),
      `policy 'p': pattern '${bad}' uses glob syntax that kesd does not support; only a trailing '*' is a wildcard`,
    );
  }
  rejects((c) => (c.enclave.e1.policy.p.deny = ['/x?']), "policy 'p': pattern '/x?' uses glob syntax");
  rejects((c) => (c.enclave.e1.policy.p.allow = ['']), "enclave 'e1': policy 'p': empty pattern");
});

test('no enclaves, malformed YAML and duplicate keys', () => {
  rejects((c) => delete c.enclave, 'no enclave configuration specified');
  rejects((c) => (c.enclave = {}), 'no enclave configuration specified');
  assert.throws(() => parseInitConfig('version: v1\nversion: v1\n', {}), /init config: invalid YAML: .*unique/);
  assert.throws(() => parseInitConfig('tls: [unclosed\n', {}), /init config: invalid YAML/);
  assert.throws(() => parseInitConfig('- a list\n', {}), /the document must be a YAML mapping/);
});

test('server config: toServerConfig makes TLS paths absolute; write/read round trip, 0600, atomic', async (t) => {
  const dir = tempDir(t);
  const c = base();
  c.tls = {
    key: './k.pem',
    cert: 'certs/c.pem',
    ca: '/etc/ca.pem',
    password: '${KEY_PW}',
    client: { verify_cert: 'on' },
  };
  const init = parseInitConfig(stringify(c), { KEY_PW: 'pw' });
  const cfg = toServerConfig(init, '/srv/kes');
  assert.deepEqual(cfg, {
    version: '1',
    address: '0.0.0.0:7373',
    tls: {
      key: '/srv/kes/k.pem',
      cert: '/srv/kes/certs/c.pem',
      password: '${KEY_PW}',
      ca: '/etc/ca.pem',
      verifyCert: true,
    },
    unsealEnv: 'KES_UNSEAL_KEY',
  });
  await writeServerConfig(dir, cfg);
  assert.deepEqual(readdirSync(dir), ['.init']);
  assert.equal(statSync(join(dir, '.init')).mode & 0o777, 0o600);
  assert.ok(
    !readFileSync(join(dir, '.init'), 'utf8').includes('pw\n'),
    'the password reference is stored, not the secret',
  );
  const back = await readServerConfig(dir, { KEY_PW: 'pw' });
  assert.deepEqual(back, { ...cfg, tls: { ...cfg.tls, password: 'pw' } });
  await assert.rejects(readServerConfig(dir, {}), /'tls.password': environment variable 'KEY_PW' is not set/);

  const plain: ServerConfig = {
    version: '1',
    address: '127.0.0.1:7373',
    tls: { key: '/k', cert: '/c', verifyCert: false },
    unsealEnv: 'U',
  };
  await writeServerConfig(dir, plain);
  assert.deepEqual(await readServerConfig(dir, {}), plain);
  assert.deepEqual(readdirSync(dir), ['.init']);
});

test('server config: declared enclave keys are carried from init.yml into .init', async (t) => {
  const dir = tempDir(t);
  const c = base();
  c.enclave.e1.keys = [{ name: 'k1' }, { name: 'k2' }];
  c.enclave.e2 = { admin: { identity: ADMIN } };
  const cfg = toServerConfig(parseInitConfig(stringify(c), {}), '/');
  assert.deepEqual(cfg.keys, { e1: ['k1', 'k2'] });
  await writeServerConfig(dir, cfg);
  assert.deepEqual((await readServerConfig(dir, {})).keys, { e1: ['k1', 'k2'] });
  writeFileSync(join(dir, '.init'), readFileSync(join(dir, '.init'), 'utf8').replace('- k2', '- "-k2"'));
  await assert.rejects(
    readServerConfig(dir, {}),
    /enclave 'e1': key name '-k2' is empty, too long or contains invalid characters/,
  );
});

test('server config: clear errors', async (t) => {
  const dir = tempDir(t);
  await assert.rejects(readServerConfig(dir, {}), /\.init' does not exist/);
  const path = join(dir, '.init');
  const cases: [string, RegExp][] = [
    ['version: "2"\n', /config version '2' is not supported/],
    ['version: v1\n', /config version 'v1' is not supported/],
    ['address: x:1\n', /'version' is required/],
    ['version: "1"\ntls: {key: /k, cert: /c}\nunseal: {environment: {name: U}}\nextra: 1\n', /unknown field 'extra'/],
    ['version: "1"\ntls: {cert: /c}\nunseal: {environment: {name: U}}\n', /'tls.key' is required/],
    ['version: "1"\ntls: {key: /k, cert: /c}\n', /'unseal.environment.name' is required/],
    ['version: "1\n', /invalid YAML/],
  ];
  for (const [content, message] of cases) {
    writeFileSync(path, content);
    await assert.rejects(readServerConfig(dir, {}), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^server config '.*\.init': /);
      assert.match(err.message, message);
      return true;
    });
  }
});

test('unseal.file (kesd extension): a key file instead of a variable; relative paths resolve like the TLS paths; .init round trip', async (t) => {
  const dir = tempDir(t);
  const c = base();
  c.unseal = { file: { path: 'secrets/unseal.key' } };
  const init = parseInitConfig(stringify(c), {});
  assert.equal(init.unsealFile, 'secrets/unseal.key');
  assert.equal(init.unsealEnv, undefined);
  assert.deepEqual(unsealSourceOf(init, '/srv/kes'), { file: '/srv/kes/secrets/unseal.key' });
  const cfg = toServerConfig(init, '/srv/kes');
  assert.equal(cfg.unsealFile, '/srv/kes/secrets/unseal.key');
  assert.ok(!('unsealEnv' in cfg));
  await writeServerConfig(dir, cfg);
  assert.match(
    readFileSync(join(dir, '.init'), 'utf8'),
    /unseal:\n\s+file:\n\s+path: \/srv\/kes\/secrets\/unseal.key\n/,
  );
  assert.deepEqual(await readServerConfig(dir, {}), cfg);
  assert.deepEqual(unsealSourceOf(parseInitConfig(stringify(base()), {})), { env: 'KES_UNSEAL_KEY' });

  rejects(
    (c) => (c.unseal.file = { path: '/k' }),
    "'unseal': set either 'environment' (a variable) or 'file' (a key file), not both",
  );
  rejects((c) => (c.unseal = { file: {} }), "'unseal.file.path' is required");
  rejects((c) => (c.unseal = { file: { path: '/k', mode: '0400' } }), "unknown field 'unseal.file.mode'");
  rejects((c) => (c.unseal = { vault: {} }), "unknown field 'unseal.vault'");
  writeFileSync(join(dir, '.init'), 'version: "1"\ntls: {key: /k, cert: /c}\nunseal: {file: {path: relative.key}}\n');
  await assert.rejects(readServerConfig(dir, {}), /'unseal.file.path': 'relative.key' must be an absolute path/);
});
