import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeKesStoredKey, parseKesStoredKey } from '../../kesd/src/kes/stored-key.js';
import { seal } from '../../kesd/src/crypto/key.js';
import { initDataDir } from '../../kesd/src/boot/data-dir.js';
import { makeIdentity, startTestServer } from './harness.js';
import { kesd } from './cli-process.js';
import { agentFor, call, startKesd } from './load.js';
import { ETCD_SKIP, startEtcd } from '../../harness/etcd.js';

// kes-protocol §8.7 vectors.
const PROTOBUF_KEY =
  'CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy';
const JSON_KEY =
  '{"bytes":"J8qmOyEV2ce2yoAC+5t0Y7CSP/hTMppL7XHpAnyc+0E=","algorithm":"AES256-GCM_SHA256","created_at":"2009-11-10T23:00:00Z","created_by":"40235905b7b83e0537a002db523cd019d6709b899adc249c957860cd00fa9f78"}';

test('a KES protobuf-encoded key parses to its secret key, HMAC key, creation time and creator', () => {
  const k = parseKesStoredKey(Buffer.from(PROTOBUF_KEY));
  assert.equal(k.algorithm, 'AES256');
  assert.equal(k.bytes.toString('base64'), 'yIcbtes33gW7BuUkmivh/t/qtuoCXsPCwtqIijLPQPY=');
  assert.equal(k.hmac?.toString('base64'), 'nLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9Hg=');
  assert.equal(k.createdAt, '2024-01-12T10:39:20.886816Z');
  assert.equal(k.createdBy, '3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22');
});

test('a key encoded as KES v0.24 stores it is byte for byte the KES vector, and parses back', () => {
  const k = parseKesStoredKey(Buffer.from(PROTOBUF_KEY));
  const encoded = encodeKesStoredKey({
    algorithm: k.algorithm,
    bytes: k.bytes,
    hmac: k.hmac!,
    createdAt: k.createdAt!,
    createdBy: k.createdBy!,
  });
  assert.equal(encoded, PROTOBUF_KEY);
  const chacha = {
    algorithm: 'ChaCha20' as const,
    bytes: Buffer.alloc(32, 1),
    hmac: Buffer.alloc(32, 2),
    createdAt: '1970-01-01T00:00:00Z',
    createdBy: '',
  };
  const back = parseKesStoredKey(Buffer.from(encodeKesStoredKey(chacha)));
  assert.deepEqual(
    { ...back, bytes: Buffer.from(back.bytes), hmac: Buffer.from(back.hmac!) },
    { ...chacha, createdBy: undefined },
  );
  assert.throws(() => encodeKesStoredKey({ ...chacha, createdAt: 'yesterday' }), /not an RFC 3339 time/);
  assert.throws(() => encodeKesStoredKey({ ...chacha, hmac: Buffer.alloc(3) }), /32 bytes/);
});

test('a KES JSON-encoded key parses to its key bytes and has no HMAC key', () => {
  const k = parseKesStoredKey(Buffer.from(JSON_KEY));
  assert.equal(k.bytes.toString('hex'), '27caa63b2115d9c7b6ca8002fb9b7463b0923ff853329a4bed71e9027c9cfb41');
  assert.equal(k.algorithm, 'AES256');
  assert.equal(k.hmac, undefined);
  assert.equal(k.createdAt, '2009-11-10T23:00:00Z');
});

test('malformed KES keys are rejected with a reason', () => {
  assert.throws(() => parseKesStoredKey(Buffer.from('{"bytes":"AAAA"}')), /3 bytes, expected 32/);
  assert.throws(() => parseKesStoredKey(Buffer.from('CgQ=')), /truncated|lacks/);
  assert.throws(
    () => parseKesStoredKey(Buffer.from('{"bytes":"' + Buffer.alloc(32).toString('base64') + '","algorithm":"DES"}')),
    /unknown algorithm/,
  );
});

test('kesd import kes-fs moves keys into a data dir; ciphertexts made under them decrypt through kesd', {
  timeout: 60_000,
}, async () => {
  const s = await startTestServer({ keys: [] });
  const keystore = await mkdtemp(join(tmpdir(), 'kes-fs-'));
  try {
    await mkdir(keystore, { recursive: true });
    await writeFile(join(keystore, 'proto-key'), PROTOBUF_KEY);
    await writeFile(join(keystore, 'json-key'), JSON_KEY);
    await writeFile(join(keystore, 'bad.name'), JSON_KEY);
    const env = { ...s.env };
    const r = await kesd(['import', 'kes-fs', keystore, s.dataDir], { env });
    assert.equal(r.code, 1, 'the invalid file name makes the import report a failure');
    assert.match(r.stdout, /imported 2, already present 0, conflicts 0, failed 1/);
    // The running server loads imported keys on first use.
    const protoKey = {
      algorithm: 'AES256' as const,
      bytes: Buffer.from('yIcbtes33gW7BuUkmivh/t/qtuoCXsPCwtqIijLPQPY=', 'base64'),
    };
    const ciphertext = seal(protoKey, Buffer.alloc(32, 5), Buffer.from('{}')).toString('base64');
    const d = await s.request(s.admin, 'POST', '/v1/key/decrypt/proto-key', {
      ciphertext,
      context: Buffer.from('{}').toString('base64'),
    });
    assert.equal(d.status, 200, d.text);
    assert.equal(d.json().plaintext, Buffer.alloc(32, 5).toString('base64'));
    const h = await s.request(s.admin, 'PUT', '/v1/key/hmac/proto-key', {
      message: Buffer.from('root access key').toString('base64'),
    });
    const { createHmac } = await import('node:crypto');
    const expected = createHmac('sha256', Buffer.from('nLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9Hg=', 'base64'))
      .update('root access key')
      .digest('base64');
    assert.equal(h.json().hmac, expected, 'the HMAC key came along');
    const again = await kesd(['import', 'kes-fs', keystore, s.dataDir], { env });
    assert.match(again.stdout, /imported 0, already present 2/);
  } finally {
    await s.stop();
    await rm(keystore, { recursive: true, force: true });
  }
});

test('kesd import kes-fs into a data dir whose store is etcd: the keys land in etcd, a running replica serves them', {
  skip: ETCD_SKIP,
  timeout: 120_000,
}, async () => {
  const etcd = await startEtcd(1);
  const dir = await mkdtemp(join(tmpdir(), 'kes-fs-etcd-'));
  const agents: ReturnType<typeof agentFor>[] = [];
  let server: Awaited<ReturnType<typeof startKesd>> | undefined;
  try {
    const tls = await makeIdentity(dir, 'server', 'p256', { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
    const sysadmin = await makeIdentity(dir, 'sysadmin');
    const admin = await makeIdentity(dir, 'admin');
    const unsealEnv = 'KESD_IMPORT_UNSEAL';
    const env = { ...process.env, [unsealEnv]: Buffer.alloc(32, 9).toString('base64') };
    const dataDir = join(dir, 'data');
    await initDataDir(
      dataDir,
      {
        version: 'v1',
        address: '127.0.0.1:0',
        sysadmin: sysadmin.identity,
        tls: {
          key: tls.keyFile,
          cert: tls.certFile,
          password: '',
          verifyCert: false,
          proxy: { identities: [], header: '' },
        },
        unsealEnv,
        enclaves: [{ name: 'default', admin: admin.identity, policies: [], keys: [] }],
        store: { etcd: { endpoints: [...etcd.endpoints], prefix: 'import/' } },
      },
      { env },
    );
    assert.deepEqual(await readdir(dataDir), ['.init'], 'an etcd data dir holds only .init (no .unseal, no db)');
    server = await startKesd(dataDir, env, ['--audit-log', 'off', '--workers', '1']);

    const keystore = join(dir, 'keystore');
    await mkdir(keystore);
    await writeFile(join(keystore, 'proto-key'), PROTOBUF_KEY);
    await writeFile(join(keystore, 'json-key'), JSON_KEY);
    const r = await kesd(['import', 'kes-fs', keystore, dataDir], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /imported 2, already present 0, conflicts 0, failed 0/);
    assert.deepEqual(await readdir(dataDir), ['.init'], 'the import wrote nothing into the data dir');

    // The running replica loads the imported keys from etcd on first use: KES's ciphertexts decrypt.
    const agent = agentFor(admin);
    agents.push(agent);
    const protoKey = {
      algorithm: 'AES256' as const,
      bytes: Buffer.from('yIcbtes33gW7BuUkmivh/t/qtuoCXsPCwtqIijLPQPY=', 'base64'),
    };
    const ciphertext = seal(protoKey, Buffer.alloc(32, 5), Buffer.from('{}')).toString('base64');
    const d = await call(agent, server.port, 'POST', '/v1/key/decrypt/proto-key', {
      ciphertext,
      context: Buffer.from('{}').toString('base64'),
    });
    assert.equal(d.status, 200, d.text);
    assert.equal(d.json().plaintext, Buffer.alloc(32, 5).toString('base64'));
    assert.equal((await call(agent, server.port, 'GET', '/v1/key/describe/json-key')).status, 200);

    const again = await kesd(['import', 'kes-fs', keystore, dataDir], { env });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /imported 0, already present 2, conflicts 0, failed 0/);
    // The wrong unseal key is refused as by `kesd server`, before anything is imported.
    const wrong = await kesd(['import', 'kes-fs', keystore, dataDir], {
      env: { ...env, [unsealEnv]: Buffer.alloc(32, 8).toString('base64') },
    });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /unseal key is wrong/);
  } finally {
    for (const a of agents) a.destroy();
    await server?.stop();
    await etcd.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
