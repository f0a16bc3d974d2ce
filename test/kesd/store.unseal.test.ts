import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  openRootKey,
  openSealedRootKey,
  readUnsealKey,
  UnsealError,
  writeSealedRootKey,
  type RootKeyInfo,
  type UnsealSource,
} from '../../kesd/src/store/unseal.js';
import { seal } from '../../kesd/src/crypto/key.js';
import { base64Length, decodeBase64, encodeBase64Into } from '../../kesd/src/crypto/secret.js';

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
    assert.throws(
      () => readUnsealKey(ENV, env),
      (err: unknown) => {
        assert.ok(err instanceof UnsealError);
        assert.equal(err.message, expected);
        messages.add(err.message);
        return true;
      },
    );
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
  const { root: got, source } = await openSealedRootKey(dir, {
    MY_UNSEAL: unsealKey.toString('base64'),
    [ENV]: 'garbage',
  });
  assert.deepEqual(source, { env: 'MY_UNSEAL' });
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
  await rejectsWith(
    openSealedRootKey(dir, { [ENV]: randomBytes(32).toString('base64') }),
    'unseal key is wrong: the root key is not authentic',
  );
  await rejectsWith(openSealedRootKey(dir, {}), "unseal key: environment variable 'KES_UNSEAL_KEY' is not set");
  await rejectsWith(openSealedRootKey(dir, { [ENV]: 'not base64!' }), /is not valid base64/);
  await rejectsWith(
    openSealedRootKey(dir, { [ENV]: randomBytes(31).toString('base64') }),
    'unseal key must be 32 bytes, got 31',
  );
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
  await rejectsWith(
    openSealedRootKey(dir, { [ENV]: key.toString('base64') }),
    'unseal key is wrong: the root key is not authentic',
  );
});

test('missing or corrupt .unseal files give clear errors', async (t) => {
  const dir = tempDir(t);
  const env = { [ENV]: randomBytes(32).toString('base64') };
  await rejectsWith(openSealedRootKey(dir, env), /\.unseal' does not exist/);
  const path = join(dir, '.unseal');
  const cases: [string, RegExp][] = [
    ['{not json', /is corrupt: not JSON/],
    ['null', /is corrupt: unsupported version/],
    [JSON.stringify({ version: 3, env: ENV, ciphertext: 'AAAA' }), /is corrupt: unsupported version 3/],
    [JSON.stringify({ version: 2, env: ENV, ciphertext: 'AAAA' }), /is corrupt: no valid key file path/],
    [JSON.stringify({ version: 2, file: 'relative/key', ciphertext: 'AAAA' }), /is corrupt: no valid key file path/],
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
  await rejectsWith(
    writeSealedRootKey(dir, 'BAD-NAME', randomBytes(32), root()),
    /not a valid environment variable name/,
  );
  await rejectsWith(
    writeSealedRootKey(dir, ENV, randomBytes(32), { ...root(), key: randomBytes(16) }),
    /root key must be 32 bytes/,
  );
  await rejectsWith(writeSealedRootKey(dir, ENV, randomBytes(32), { ...root(), sysadmin: 'ABC' }), /sysadmin 'ABC'/);
  assert.deepEqual(readdirSync(dir), []);
});

// ---- the unseal key from a file (init.yml unseal.file.path, kesd's extension) -------------------------------

function keyFile(t: { after(fn: () => void): void }, content: string | Buffer, mode = 0o600): string {
  const path = join(tempDir(t), 'unseal.key');
  writeFileSync(path, content, { mode });
  chmodSync(path, mode);
  return path;
}

test('readUnsealKey from a file: base64 of 32 bytes, a trailing newline or CRLF tolerated', (t) => {
  const key = randomBytes(32);
  for (const content of [
    key.toString('base64'),
    key.toString('base64') + '\n',
    key.toString('base64') + '\r\n',
    ` ${key.toString('base64')}\t\n`,
  ]) {
    assert.deepEqual(readUnsealKey({ file: keyFile(t, content) }, {}), key);
  }
  assert.deepEqual(
    readUnsealKey({ file: keyFile(t, key.toString('base64'), 0o440) }, {}),
    key,
    'group read (a Kubernetes Secret volume with an fsGroup) is fine',
  );
  assert.deepEqual(readUnsealKey({ file: keyFile(t, key.toString('base64'), 0o400) }, {}), key);
});

test('readUnsealKey from a file: missing, unreadable, open to others, not a file, bad content: each its own message, never the content', (t) => {
  const key = randomBytes(32).toString('base64');
  const dir = tempDir(t);
  const cases: [string, UnsealSource, RegExp][] = [
    ['missing', { file: join(dir, 'nope') }, /^unseal key: file '.*nope' does not exist$/],
    ['a directory', { file: dir }, /^unseal key: '.*' is not a regular file$/],
    [
      'world-readable',
      { file: keyFile(t, key, 0o644) },
      /^unseal key: file '.*' is accessible by other users \(mode 0644\): let only its owner \(and group\) read it, e\.g\. chmod 600$/,
    ],
    ['group-writable', { file: keyFile(t, key, 0o660) }, /is accessible by other users \(mode 0660\)/],
    ['not base64', { file: keyFile(t, 'not base64 at all!\n') }, /^unseal key: file '.*' is not valid base64$/],
    ['inner whitespace', { file: keyFile(t, key.slice(0, 10) + '\n' + key.slice(10)) }, /is not valid base64$/],
    ['16 bytes', { file: keyFile(t, randomBytes(16).toString('base64')) }, /^unseal key must be 32 bytes, got 16$/],
    ['empty', { file: keyFile(t, '') }, /^unseal key must be 32 bytes, got 0$/],
    ['too large', { file: keyFile(t, Buffer.alloc(5000, 0x41)) }, /is too large \(5000 bytes\) to hold a base64 key$/],
  ];
  if (process.getuid?.() !== 0)
    cases.push(['unreadable', { file: keyFile(t, key, 0o000) }, /^unseal key: cannot read file '.*': EACCES$/]);
  for (const [name, source, message] of cases) {
    assert.throws(
      () => readUnsealKey(source, {}),
      (err: unknown) => {
        assert.ok(err instanceof UnsealError, `${name}: ${String(err)}`);
        assert.match(err.message, message, name);
        assert.ok(!err.message.includes(key.slice(0, 12)), `${name}: the content is echoed`);
        return true;
      },
      name,
    );
  }
});

test('a key file source: .unseal version 2 names the file; kesd opens it from there; a v1 file from the old code still opens', async (t) => {
  const dir = tempDir(t);
  const unsealKey = randomBytes(32);
  const file = keyFile(t, unsealKey.toString('base64') + '\n', 0o400);
  const info = root();
  await writeSealedRootKey(dir, { file }, unsealKey, info);
  const text = JSON.parse(readFileSync(join(dir, '.unseal'), 'utf8'));
  assert.deepEqual(Object.keys(text).sort(), ['ciphertext', 'file', 'version']);
  assert.equal(text.version, 2);
  assert.equal(text.file, file);
  const opened = await openSealedRootKey(dir, {});
  assert.deepEqual(opened, { root: info, source: { file } });
  // Another source given (init.yml's with `server --init`) wins over the recorded one.
  assert.deepEqual(
    (await openSealedRootKey(dir, { OTHER: unsealKey.toString('base64') }, { env: 'OTHER' })).root,
    info,
  );
  await rejectsWith(writeSealedRootKey(dir, { file: 'relative.key' }, unsealKey, info), /must be an absolute path/);

  // What 0e80d6e wrote: the root key as a base64 JSON string, sealed the same way; it must keep opening.
  const v1 = tempDir(t);
  const old = { key: info.key.toString('base64'), sysadmin: info.sysadmin, created_at: info.createdAt };
  const ciphertext = seal(
    { algorithm: 'AES256', bytes: unsealKey },
    Buffer.from(JSON.stringify(old)),
    Buffer.from('kesd/unseal/v1'),
  );
  writeFileSync(
    join(v1, '.unseal'),
    JSON.stringify({ version: 1, env: ENV, ciphertext: ciphertext.toString('base64') }) + '\n',
  );
  assert.deepEqual((await openSealedRootKey(v1, { [ENV]: unsealKey.toString('base64') })).root, info);
});

test('the sealed root key JSON is parsed without a string of the key: a "key" that is not the member is refused', () => {
  const unsealKey = randomBytes(32);
  const sealedOf = (inner: string) => ({
    source: { env: ENV },
    where: "'test'",
    text: '',
    ciphertext: seal({ algorithm: 'AES256', bytes: unsealKey }, Buffer.from(inner), Buffer.from('kesd/unseal/v1')),
  });
  const key = randomBytes(32).toString('base64');
  const good = `{"key":"${key}","sysadmin":"${SYSADMIN}","created_at":"2024-05-01T10:00:00Z"}`;
  assert.equal(openRootKey(sealedOf(good), unsealKey).key.toString('base64'), key);
  assert.equal(
    openRootKey(
      sealedOf(`{ "key" : "${key}", "sysadmin":"${SYSADMIN}", "created_at":"2024-05-01T10:00:00Z" }`),
      unsealKey,
    ).key.toString('base64'),
    key,
  );
  const bad: [string, RegExp][] = [
    [`{"sysadmin":"${SYSADMIN}","created_at":"2024-05-01T10:00:00Z"}`, /sealed root key is not 32 bytes/],
    [
      `{"decoy":{"key":"${randomBytes(32).toString('base64')}"},"key":"${key}","sysadmin":"${SYSADMIN}","created_at":"2024-05-01T10:00:00Z"}`,
      /sealed root key is not 32 bytes/,
    ],
    [
      `{"key":"${key.slice(4)}","sysadmin":"${SYSADMIN}","created_at":"2024-05-01T10:00:00Z"}`,
      /sealed root key is not 32 bytes/,
    ],
    [`{"key":"${key}","sysadmin":"nope","created_at":"2024-05-01T10:00:00Z"}`, /sealed sysadmin identity is invalid/],
    [`{"key":"${key}","sysadmin":"${SYSADMIN}","created_at":"yesterday"}`, /sealed created_at is invalid/],
    [`{"key":"${key}",`, /sealed root key is not JSON/],
  ];
  for (const [inner, message] of bad) assert.throws(() => openRootKey(sealedOf(inner), unsealKey), message, inner);
});

test('base64 from bytes to bytes: strict, canonical, round trips, and the output is memory of its own', () => {
  for (let n = 0; n < 70; n++) {
    const bytes = randomBytes(n);
    const text = Buffer.from(bytes.toString('base64'));
    const decoded = decodeBase64(text);
    assert.deepEqual(decoded, bytes, `n=${n}`);
    assert.equal(decoded!.byteOffset, 0);
    assert.equal(decoded!.buffer.byteLength, n, 'not a slice of a pool');
    const out = Buffer.alloc(base64Length(n) + 2);
    assert.equal(encodeBase64Into(bytes, out, 1), base64Length(n) + 1);
    assert.equal(out.subarray(1, -1).toString(), bytes.toString('base64'));
  }
  for (const bad of [
    'A',
    'AA',
    'AAB=',
    'QR==',
    'QUI=x',
    '====',
    'A===',
    '=AAA',
    'AB=A',
    'ab-_',
    'YQ==YQ==',
    'YWJj\n',
  ]) {
    assert.equal(decodeBase64(Buffer.from(bad)), undefined, bad);
  }
});

test('takeUnsealKey from this process: the variable leaves process.env, and its initial environment block entry is zeroed', async () => {
  const { spawnSync } = await import('node:child_process');
  const key = randomBytes(32).toString('base64');
  // A child process: the variable must be in its initial environment block, as in `kesd server`.
  const script = `
    import { takeUnsealKey } from ${JSON.stringify(new URL('../../kesd/src/store/unseal-key.ts', import.meta.url).href)};
    import { readFileSync } from 'node:fs';
    const { key, residue } = takeUnsealKey({ env: 'KESD_TAKE_ME' });
    process.stdout.write(JSON.stringify({
      key: key.toString('hex'), residue: residue ?? null, inEnv: 'KESD_TAKE_ME' in process.env,
      environ: readFileSync('/proc/self/environ').includes(${JSON.stringify(key)}),
      name: readFileSync('/proc/self/environ').includes('KESD_TAKE_ME='),
    }));`;
  const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, KESD_TAKE_ME: `${key}\n` },
    encoding: 'utf8',
  });
  assert.equal(run.status, 0, run.stderr);
  const got = JSON.parse(run.stdout);
  assert.equal(got.key, Buffer.from(key, 'base64').toString('hex'));
  assert.equal(got.residue, null, 'a copy may remain');
  assert.equal(got.inEnv, false, 'still in process.env');
  assert.equal(got.environ, false, '/proc/self/environ still holds the key');
  assert.equal(got.name, false, '/proc/self/environ still names the variable');
});
