import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  openSealedRootKey,
  readUnsealKey,
  UnsealError,
  writeSealedRootKey,
  type RootKeyInfo,
} from '../../kesd/src/store/unseal.js';

const SYSADMIN = 'a'.repeat(64);
const ENV = 'KES_UNSEAL_KEY';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'kesd-unseal-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function root(): RootKeyInfo {
  return { key: randomBytes(32), sysadmin: SYSADMIN, createdAt: '2024-05-01T10:00:00Z' };
}

/** Every entry of dir (recursive) with its content hash, size, mode and mtime, plus dir's own mtime. */
function snapshot(dir: string): string {
  const lines = [`. ${statSync(dir).mtimeMs}`];
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const p = join(dir, name);
    const st = statSync(p);
    const hash = st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex') : 'dir';
    lines.push(`${name} ${hash} ${st.size} ${st.mode} ${st.mtimeMs}`);
  }
  return lines.sort().join('\n');
}

async function rejectsWith(p: Promise<unknown>, message: string | RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof UnsealError, `expected UnsealError, got ${String(err)}`);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

test('readUnsealKey: a valid key, with surrounding whitespace tolerated', () => {
  const key = randomBytes(32);
  assert.deepEqual(readUnsealKey(ENV, { [ENV]: key.toString('base64') }), key);
  assert.deepEqual(readUnsealKey(ENV, { [ENV]: key.toString('base64') + '\n' }), key);
});

test('readUnsealKey: missing variable, bad base64 and wrong length give distinct messages', () => {
  const messages = new Set<string>();
  const fails = (value: string | undefined, expected: string) => {
    const env = value === undefined ? {} : { [ENV]: value };
    assert.throws(() => readUnsealKey(ENV, env), (err: unknown) => {
      assert.ok(err instanceof UnsealError);
      assert.equal(err.message, expected);
      messages.add(err.message);
      return true;
    });
  };
  fails(undefined, "unseal key: environment variable 'KES_UNSEAL_KEY' is not set");
  const badBase64 = "unseal key: environment variable 'KES_UNSEAL_KEY' is not valid base64";
  const valid = randomBytes(32).toString('base64');
  fails(valid.replace(/^./, '!'), badBase64); // character outside the alphabet
  fails(valid.replace(/=$/, ''), badBase64); // padding missing
  fails(valid + '=', badBase64); // too much padding
  fails(valid.slice(0, 10) + ' ' + valid.slice(10), badBase64); // inner whitespace
  fails(Buffer.alloc(32, 0xfb).toString('base64url'), badBase64); // URL alphabet
  fails('QR==', badBase64); // non-canonical trailing bits
  fails(randomBytes(31).toString('base64'), 'unseal key must be 32 bytes, got 31');
  fails(randomBytes(33).toString('base64'), 'unseal key must be 32 bytes, got 33');
  fails('', 'unseal key must be 32 bytes, got 0');
  assert.equal(messages.size, 5); // not set, not base64, and one per wrong length
});

test('seal and unseal round trip; the file is 0600 JSON naming the variable, no temp files remain', async (t) => {
  const dir = tempDir(t);
  const unsealKey = randomBytes(32);
  const info = root();
  await writeSealedRootKey(dir, 'MY_UNSEAL', unsealKey, info);

  assert.deepEqual(readdirSync(dir), ['.unseal']);
  assert.equal(statSync(join(dir, '.unseal')).mode & 0o777, 0o600);
  const file = JSON.parse(readFileSync(join(dir, '.unseal'), 'utf8'));
  assert.deepEqual(Object.keys(file).sort(), ['ciphertext', 'env', 'version']);
  assert.equal(file.version, 1);
  assert.equal(file.env, 'MY_UNSEAL');
  assert.ok(!readFileSync(join(dir, '.unseal'), 'utf8').includes(SYSADMIN), 'sysadmin is sealed, not in clear');

  // The variable named in the file is used, not some default name.
  const { root: got, envName } = await openSealedRootKey(dir, { MY_UNSEAL: unsealKey.toString('base64'), [ENV]: 'garbage' });
  assert.equal(envName, 'MY_UNSEAL');
  assert.deepEqual(got, info);
});

test('rewriting replaces the file atomically', async (t) => {
  const dir = tempDir(t);
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);
  await writeSealedRootKey(dir, ENV, k1, root());
  const second = root();
  await writeSealedRootKey(dir, ENV, k2, second);
  assert.deepEqual(readdirSync(dir), ['.unseal']);
  assert.deepEqual((await openSealedRootKey(dir, { [ENV]: k2.toString('base64') })).root, second);
});

test('a wrong unseal key is rejected and the directory stays byte-identical', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, '.init'), 'version: "1"\n');
  await writeSealedRootKey(dir, ENV, randomBytes(32), root());
  const before = snapshot(dir);
  await new Promise((r) => setTimeout(r, 20)); // so that any rewrite would show in the mtimes
  await rejectsWith(openSealedRootKey(dir, { [ENV]: randomBytes(32).toString('base64') }), 'unseal key is wrong: the root key is not authentic');
  await rejectsWith(openSealedRootKey(dir, {}), "unseal key: environment variable 'KES_UNSEAL_KEY' is not set");
  await rejectsWith(openSealedRootKey(dir, { [ENV]: 'not base64!' }), /is not valid base64/);
  await rejectsWith(openSealedRootKey(dir, { [ENV]: randomBytes(31).toString('base64') }), 'unseal key must be 32 bytes, got 31');
  assert.equal(snapshot(dir), before);
});

test('a tampered ciphertext is not authentic', async (t) => {
  const dir = tempDir(t);
  const key = randomBytes(32);
  await writeSealedRootKey(dir, ENV, key, root());
  const path = join(dir, '.unseal');
  const file = JSON.parse(readFileSync(path, 'utf8'));
  const ct = Buffer.from(file.ciphertext, 'base64');
  ct[0]! ^= 1;
  writeFileSync(path, JSON.stringify({ ...file, ciphertext: ct.toString('base64') }));
  await rejectsWith(openSealedRootKey(dir, { [ENV]: key.toString('base64') }), 'unseal key is wrong: the root key is not authentic');
});

test('missing or corrupt .unseal files give clear errors', async (t) => {
  const dir = tempDir(t);
  const env = { [ENV]: randomBytes(32).toString('base64') };
  await rejectsWith(openSealedRootKey(dir, env), /\.unseal' does not exist/);
  const path = join(dir, '.unseal');
  const cases: [string, RegExp][] = [
    ['{not json', /is corrupt: not JSON/],
    ['null', /is corrupt: unsupported version/],
    [JSON.stringify({ version: 2, env: ENV, ciphertext: 'AAAA' }), /is corrupt: unsupported version 2/],
    [JSON.stringify({ version: 1, ciphertext: 'AAAA' }), /is corrupt: no valid environment variable name/],
    [JSON.stringify({ version: 1, env: ENV, ciphertext: '***' }), /is corrupt: ciphertext is not valid base64/],
    [JSON.stringify({ version: 1, env: ENV, ciphertext: '' }), /is corrupt: ciphertext is not valid base64/],
  ];
  for (const [content, message] of cases) {
    writeFileSync(path, content);
    await rejectsWith(openSealedRootKey(dir, env), message);
  }
});

test('writeSealedRootKey validates its inputs', async (t) => {
  const dir = tempDir(t);
  await rejectsWith(writeSealedRootKey(dir, ENV, randomBytes(31), root()), 'unseal key must be 32 bytes, got 31');
  await rejectsWith(writeSealedRootKey(dir, 'BAD-NAME', randomBytes(32), root()), /not a valid environment variable name/);
  await rejectsWith(writeSealedRootKey(dir, ENV, randomBytes(32), { ...root(), key: randomBytes(16) }), /root key must be 32 bytes/);
  await rejectsWith(writeSealedRootKey(dir, ENV, randomBytes(32), { ...root(), sysadmin: 'ABC' }), /sysadmin 'ABC'/);
  assert.deepEqual(readdirSync(dir), []);
});
