// The `upstream` section of init.yml and .init (config/upstream.ts): KES's keystore.vault fields, kesd's token, the
// one-auth-method rule, and secrets that stay `${VAR}` references in .init.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  ConfigError,
  parseInitConfig,
  readServerConfig,
  toServerConfig,
  writeServerConfig,
} from '../../kesd/src/config/config.js';

const SYS = 'a'.repeat(64);
const ADMIN = 'b'.repeat(64);
type Obj = Record<string, any>;

const base = (
  vault: Obj = { endpoint: 'https://vault.example:8200', approle: { id: 'role-id', secret: '${SECRET_ID}' } },
): Obj => ({
  version: 'v1',
  system: { admin: { identity: SYS } },
  tls: { key: 'k.pem', cert: 'c.pem' },
  unseal: { environment: { name: 'KES_UNSEAL_KEY' } },
  enclave: { default: { admin: { identity: ADMIN } } },
  upstream: { vault },
});
const ENV = { SECRET_ID: 'the-secret-id', VAULT_TOKEN: 'hvs.token' };

function rejects(doc: Obj, message: string, env: NodeJS.ProcessEnv = ENV): void {
  assert.throws(
    () => parseInitConfig(stringify(doc), env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
      assert.ok(err.message.includes(message), `'${err.message}' lacks '${message}'`);
      return true;
    },
  );
}

test("upstream: KES's keystore.vault defaults (engine kv, version v1, no prefix) and the default enclave", () => {
  const u = parseInitConfig(stringify(base()), ENV).upstream!;
  assert.deepEqual(u, {
    enclave: 'default',
    vault: {
      endpoint: 'https://vault.example:8200',
      engine: 'kv',
      version: 'v1',
      prefix: '',
      auth: {
        kind: 'approle',
        engine: 'approle',
        namespace: undefined,
        id: { value: 'role-id' },
        secret: { value: 'the-secret-id', env: 'SECRET_ID' },
      },
    },
  });
  assert.equal(parseInitConfig(stringify({ ...base(), upstream: undefined }), ENV).upstream, undefined);
});

test('upstream: every field, each auth method, and the KES transit and status blocks', () => {
  const full = base({
    endpoint: 'https://vault:8200/',
    engine: '/secret/',
    version: 'v2',
    namespace: 'ns1',
    prefix: 'kes/keys/',
    transit: { key: 'wrap' },
    kubernetes: { role: 'kesd', jwt: '/var/run/secrets/tokens/vault' },
    tls: { ca: 'ca.pem', cert: 'c.pem', key: 'k.pem' },
    status: { ping: '10s' },
  });
  const u = parseInitConfig(stringify(full), ENV).upstream!;
  assert.equal(u.vault.endpoint, 'https://vault:8200');
  assert.equal(u.vault.engine, 'secret');
  assert.equal(u.vault.prefix, 'kes/keys');
  assert.equal(u.vault.namespace, 'ns1');
  assert.deepEqual(u.vault.transit, { engine: 'transit', key: 'wrap' });
  assert.deepEqual(u.vault.auth, {
    kind: 'kubernetes',
    engine: 'kubernetes',
    namespace: undefined,
    role: 'kesd',
    jwt: { value: '/var/run/secrets/tokens/vault' },
  });
  assert.deepEqual(u.vault.tls, { ca: 'ca.pem', cert: 'c.pem', key: 'k.pem' });
  assert.deepEqual(
    parseInitConfig(stringify(base({ endpoint: 'http://127.0.0.1:8200', token: '${VAULT_TOKEN}' })), ENV).upstream!
      .vault.auth,
    { kind: 'token', token: { value: 'hvs.token', env: 'VAULT_TOKEN' } },
  );
  assert.deepEqual(
    parseInitConfig(stringify(base({ endpoint: 'http://127.0.0.1:8200', token_file: './token' })), ENV).upstream!.vault
      .auth,
    { kind: 'token-file', file: './token' },
  );
});

test('upstream: bad sections get errors that name the field', () => {
  rejects(
    base({ endpoint: 'vault:8200', token: 't' }),
    "'upstream.vault.endpoint': 'vault:8200' is not an http:// or https:// URL",
  );
  rejects(base({ endpoint: 'https://vault:8200/v1/secret', token: 't' }), 'is not an http:// or https:// URL');
  rejects(base({ endpoint: 'https://vault:8200' }), "'upstream.vault': no authentication method");
  rejects(
    base({ endpoint: 'https://vault:8200', token: 't', approle: { id: 'a', secret: 'b' } }),
    'more than one authentication method (token, approle)',
  );
  rejects(
    base({ endpoint: 'https://vault:8200', approle: { id: 'a' } }),
    "'upstream.vault.approle.secret' is required",
  );
  rejects(
    base({ endpoint: 'https://vault:8200', kubernetes: { jwt: 'x' } }),
    "'upstream.vault.kubernetes.role' is required",
  );
  rejects(
    base({ endpoint: 'https://vault:8200', token: 't', version: 'v3' }),
    "'upstream.vault.version': 'v3' is not a KV engine version",
  );
  rejects(
    base({ endpoint: 'https://vault:8200', token: 't', prefix: 'a/../b' }),
    "'upstream.vault.prefix': 'a/../b' is not a Vault path",
  );
  rejects(
    base({ endpoint: 'https://vault:8200', token: 't', tls: { cert: 'c.pem' } }),
    'cert and key must be given together',
  );
  rejects(base({ endpoint: 'http://vault:8200', token: 't', tls: { ca: 'ca.pem' } }), 'the endpoint uses http://');
  rejects(
    base({ endpoint: 'https://vault:8200', token: 't', transit: {} }),
    "'upstream.vault.transit.key' is required",
  );
  rejects(base({ endpoint: 'https://vault:8200', token: 't', tokens: 'x' }), "unknown field 'upstream.vault.tokens'");
  rejects(base({ endpoint: 'https://vault:8200', token: '${NOPE}' }), "environment variable 'NOPE' is not set");
  rejects(
    { ...base(), upstream: { enclave: 'tenant-9', vault: { endpoint: 'https://v:1', token: 't' } } },
    "enclave 'tenant-9' is not declared",
  );
  rejects({ ...base(), upstream: { vault: undefined } }, "'upstream.vault' is required");
});

test('upstream in .init: paths made absolute, `${VAR}` secrets kept as references, literal ones kept; read back expands them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-upstream-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const init = parseInitConfig(
    stringify(
      base({
        endpoint: 'https://vault:8200',
        approle: { id: 'role-id', secret: '${SECRET_ID}' },
        tls: { ca: 'ca.pem' },
      }),
    ),
    ENV,
  );
  await writeServerConfig(dir, toServerConfig(init, '/etc/kesd'));
  const text = readFileSync(join(dir, '.init'), 'utf8');
  assert.match(text, /secret: \$\{SECRET_ID\}/);
  assert.doesNotMatch(text, /the-secret-id/);
  assert.match(text, /id: role-id/);
  assert.match(text, /ca: \/etc\/kesd\/ca\.pem/);
  const back = await readServerConfig(dir, { SECRET_ID: 'rotated-secret' });
  assert.deepEqual(back.upstream!.vault.auth, {
    kind: 'approle',
    engine: 'approle',
    namespace: undefined,
    id: { value: 'role-id' },
    secret: { value: 'rotated-secret', env: 'SECRET_ID' },
  });
  await assert.rejects(readServerConfig(dir, {}), /environment variable 'SECRET_ID' is not set/);
});
