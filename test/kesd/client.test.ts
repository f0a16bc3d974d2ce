import 'reflect-metadata';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import {
  clientFromEnv,
  isEnclaveScoped,
  KesApiError,
  KesClient,
  parseErrorResponse,
  parseListResponse,
  parseNdjson,
  pathEscape,
} from '../../kesd/src/client/client.js';
import { newIdentity } from '../../kesd/src/identity/certificate.js';
import { main } from '../../kesd/src/cli.js';
import { clientCommands, output } from '../../kesd/src/cli/client.js';
import { makeIdentity, startTestServer, type TestIdentity, type TestServer } from './harness.js';

describe('client: pure parts', () => {
  test('pathEscape escapes like Go url.PathEscape', () => {
    const cases: [string, string][] = [
      ['my-key_1.x~', 'my-key_1.x~'],
      ['*', '%2A'],
      ['my-key*', 'my-key%2A'],
      ['a b/c', 'a%20b%2Fc'],
      ['$&+:=@', '$&+:=@'],
      ["?#%,;!'()", '%3F%23%25%2C%3B%21%27%28%29'],
      ['ü', '%C3%BC'],
      ['', ''],
    ];
    for (const [input, want] of cases) assert.equal(pathEscape(input), want, input);
  });

  test('only key, secret, policy and identity routes are enclave-scoped', () => {
    for (const p of ['/v1/key/create/a', '/v1/secret/list/*', '/v1/policy/read/p', '/v1/identity/self/describe'])
      assert.ok(isEnclaveScoped(p), p);
    for (const p of [
      '/v1/enclave/create/a',
      '/v1/status',
      '/v1/metrics',
      '/v1/api',
      '/version',
      '/v1/log/audit',
      '/v1/sys/seal',
    ])
      assert.ok(!isEnclaveScoped(p), p);
  });

  test('parseNdjson reads one object per line and skips blank lines', () => {
    assert.deepEqual(parseNdjson('{"name":"a"}\n\n{"name":"b","id":"x"}\n'), [{ name: 'a' }, { name: 'b', id: 'x' }]);
    assert.deepEqual(parseNdjson(''), []);
  });

  test('parseNdjson throws the message of an error line', () => {
    assert.throws(() => parseNdjson('{"name":"a"}\n{"error":"failed to list keys"}\n'), {
      message: 'failed to list keys',
    });
  });

  test('parseListResponse understands NDJSON, a bare empty reply and the newest {names} object', () => {
    const reply = (contentType: string | undefined, text: string) => ({
      status: 200,
      headers: contentType ? { 'content-type': contentType } : {},
      body: Buffer.from(text),
    });
    assert.deepEqual(parseListResponse(reply('application/x-ndjson', '{"name":"k1"}\n'), 'name'), [{ name: 'k1' }]);
    assert.deepEqual(parseListResponse(reply(undefined, ''), 'name'), []);
    assert.deepEqual(parseListResponse(reply('application/json', '{"names":["a","b"],"continue_at":""}'), 'name'), [
      { name: 'a' },
      { name: 'b' },
    ]);
    assert.deepEqual(parseListResponse(reply('application/json', '{"identities":["ab"]}'), 'identity'), [
      { identity: 'ab' },
    ]);
  });

  test('parseErrorResponse: JSON message, JSON error first, raw text otherwise', () => {
    const json = { 'content-type': 'application/json; charset=utf-8' };
    const e1 = parseErrorResponse(404, json, Buffer.from('{"message":"key does not exist"}\n'));
    assert.ok(e1 instanceof KesApiError);
    assert.equal(e1.status, 404);
    assert.equal(e1.message, 'key does not exist');
    assert.equal(parseErrorResponse(400, json, Buffer.from('{"message":"m","error":"e"}')).message, 'e');
    assert.equal(
      parseErrorResponse(503, { 'content-type': 'text/plain' }, Buffer.from('{"message":"request timeout exceeded"}'))
        .message,
      '{"message":"request timeout exceeded"}',
    );
    assert.equal(parseErrorResponse(404, {}, Buffer.from('404 page not found\n')).message, '404 page not found');
    assert.equal(parseErrorResponse(500, json, Buffer.from('not json')).message, 'not json');
    assert.equal(parseErrorResponse(501, {}, Buffer.alloc(0)).message, 'HTTP 501');
  });

  test('client command names are unique, cover the kes aliases and leave identity new/of alone', () => {
    const names = clientCommands.map((c) => c.name);
    assert.equal(new Set(names).size, names.length);
    for (const n of [
      'key create',
      'key import',
      'key info',
      'key ls',
      'key rm',
      'key dek',
      'key encrypt',
      'key decrypt',
      'policy create',
      'policy assign',
      'policy show',
      'policy info',
      'policy ls',
      'policy rm',
      'identity info',
      'identity ls',
      'identity rm',
      'enclave create',
      'enclave rm',
      'status',
      'log',
      'metric',
    ]) {
      assert.ok(names.includes(n), n);
    }
    assert.ok(!names.includes('identity new') && !names.includes('identity of'));
  });

  test('clientFromEnv uses the kes defaults and lets -e override KES_ENCLAVE', () => {
    const c1 = clientFromEnv({}, {});
    assert.equal(c1.endpoint.origin, 'https://127.0.0.1:7373');
    assert.equal(c1.enclave, undefined);
    c1.close();
    const c2 = clientFromEnv(
      { enclave: 'tenant-1' },
      { KES_SERVER: 'kes.example:7000,other:1', KES_ENCLAVE: 'default' },
    );
    assert.equal(c2.endpoint.origin, 'https://kes.example:7000');
    assert.equal(c2.enclave, 'tenant-1');
    c2.close();
    const c3 = clientFromEnv({}, { KES_ENCLAVE: 'tenant-2' });
    assert.equal(c3.enclave, 'tenant-2');
    c3.close();
  });
});

describe('client: against a local https server', () => {
  interface Seen {
    method: string;
    url: string;
    contentType?: string;
    body: string;
    peer: boolean;
  }
  const seen: Seen[] = [];
  let handler: (req: IncomingMessage, res: ServerResponse, body: string) => void = () => {};
  let server: https.Server;
  let dir: string;
  let client: KesClient;
  const logStreams = new Set<ServerResponse>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kesd-client-'));
    const srv = await newIdentity({ subject: 'localhost', keyType: 'p256', ips: ['127.0.0.1'] });
    const cli = await newIdentity({ subject: 'client' });
    await writeFile(join(dir, 'ca.crt'), srv.certPem);
    await writeFile(join(dir, 'client.crt'), cli.certPem);
    await writeFile(join(dir, 'client.key'), cli.keyPem);
    server = https.createServer(
      { cert: srv.certPem, key: srv.keyPem, requestCert: true, rejectUnauthorized: false },
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          const peer = (req.socket as TLSSocket).getPeerCertificate().raw !== undefined;
          seen.push({ method: req.method!, url: req.url!, contentType: req.headers['content-type'], body, peer });
          handler(req, res, body);
        });
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    client = new KesClient({
      endpoint: `https://127.0.0.1:${port}`,
      certFile: join(dir, 'client.crt'),
      keyFile: join(dir, 'client.key'),
      caFile: join(dir, 'ca.crt'),
      enclave: 'tenant-1',
    });
  });

  after(async () => {
    client.close();
    for (const res of logStreams) res.destroy();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  const reset = (h: typeof handler) => {
    seen.length = 0;
    handler = h;
  };
  const reply = (res: ServerResponse, status: number, body: unknown, contentType = 'application/json') => {
    const text = typeof body === 'string' ? body : JSON.stringify(body) + '\n';
    res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  test('escapes the argument, adds ?enclave= to key routes, sends JSON and a client certificate', async () => {
    reset((_req, res) =>
      reply(res, 200, {
        plaintext: Buffer.alloc(32, 1).toString('base64'),
        ciphertext: Buffer.from('ct').toString('base64'),
      }),
    );
    const dek = await client.generateKey('my key*', Buffer.from('ctx'));
    assert.deepEqual(dek.plaintext, Buffer.alloc(32, 1));
    assert.equal(dek.ciphertext.toString(), 'ct');
    assert.equal(seen[0]!.method, 'POST');
    assert.equal(seen[0]!.url, '/v1/key/generate/my%20key%2A?enclave=tenant-1');
    assert.equal(seen[0]!.contentType, 'application/json');
    assert.deepEqual(JSON.parse(seen[0]!.body), { context: Buffer.from('ctx').toString('base64') });
    assert.ok(seen[0]!.peer, 'client certificate presented');
  });

  test('enclave, status and log routes go without ?enclave=', async () => {
    reset((_req, res) => reply(res, 200, { version: 'v', uptime: 1 }));
    await client.status();
    await client.describeEnclave('tenant-1');
    assert.deepEqual(
      seen.map((s) => s.url),
      ['/v1/status', '/v1/enclave/describe/tenant-1'],
    );
  });

  test('an error reply throws KesApiError with the exact status and message', async () => {
    reset((_req, res) => reply(res, 404, { message: 'key does not exist' }));
    await assert.rejects(
      client.describeKey('missing'),
      (err: unknown) => err instanceof KesApiError && err.status === 404 && err.message === 'key does not exist',
    );
    reset((_req, res) => reply(res, 501, 'not implemented', 'text/plain'));
    await assert.rejects(client.deletePolicy('p'), { status: 501, message: 'not implemented' });
  });

  test('listKeys parses NDJSON and fails on an error line', async () => {
    reset((_req, res) =>
      reply(res, 200, '{"name":"a","algorithm":"AES256-GCM_SHA256"}\n{"name":"b"}\n', 'application/x-ndjson'),
    );
    assert.deepEqual(
      (await client.listKeys()).map((k) => k.name),
      ['a', 'b'],
    );
    assert.equal(seen[0]!.url, '/v1/key/list/%2A?enclave=tenant-1');
    reset((_req, res) => reply(res, 200, '{"name":"a"}\n{"error":"failed to list keys"}\n', 'application/x-ndjson'));
    await assert.rejects(client.listKeys('a*'), { message: 'failed to list keys' });
  });

  test('importKey sends both the newest and the v0.22 body shape', async () => {
    reset((_req, res) => reply(res, 200, ''));
    const key = Buffer.alloc(32, 9);
    await client.importKey('k', key);
    assert.deepEqual(JSON.parse(seen[0]!.body), {
      key: key.toString('base64'),
      cipher: 'AES256',
      bytes: key.toString('base64'),
    });
  });

  test('streamLog delivers lines until aborted', async () => {
    reset((_req, res) => {
      logStreams.add(res);
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write('{"message":"one"}\n{"mess');
      setTimeout(() => res.write('age":"two"}\n'), 20);
    });
    const lines: string[] = [];
    let gotTwo!: () => void;
    const two = new Promise<void>((resolve) => (gotTwo = resolve));
    const stream = client.streamLog('error', (line) => {
      lines.push(line);
      if (lines.length === 2) gotTwo();
    });
    await two;
    stream();
    await stream.done;
    assert.deepEqual(lines, ['{"message":"one"}', '{"message":"two"}']);
    assert.equal(seen[0]!.url, '/v1/log/error');
  });

  test('streamLog rejects done with the server error', async () => {
    reset((_req, res) => reply(res, 403, { message: 'not authorized: insufficient permissions' }));
    const stream = client.streamLog('audit', () => assert.fail('no lines expected'));
    await assert.rejects(stream.done, { status: 403, message: 'not authorized: insufficient permissions' });
  });

  test('a server certificate from an unknown CA is rejected unless insecure', async () => {
    reset((_req, res) => reply(res, 200, { version: 'v0' }));
    const port = (server.address() as AddressInfo).port;
    const strict = new KesClient({ endpoint: `https://127.0.0.1:${port}` });
    await assert.rejects(strict.version(), (err: Error & { code?: string }) =>
      /self[- ]signed|unable to verify/i.test(err.message),
    );
    strict.close();
    const insecure = new KesClient({ endpoint: `https://127.0.0.1:${port}`, insecure: true });
    assert.equal((await insecure.version()).version, 'v0');
    insecure.close();
  });
});

describe('kesd CLI against a test server', () => {
  let kes: TestServer;
  let dir: string;

  before(async () => {
    kes = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), 'kesd-cli-'));
  });
  after(async () => {
    await kes?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs `kesd <argv>` in-process as `who`, capturing stdout and stderr. */
  async function kesd(
    who: TestIdentity,
    argv: string[],
    env: Record<string, string> = {},
    onStdout?: (chunk: string) => void,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const vars: Record<string, string> = {
      KES_SERVER: kes.url,
      KES_CLIENT_CERT: who.certFile,
      KES_CLIENT_KEY: who.keyFile,
      KES_CA: kes.caFile,
      ...env,
    };
    const saved = Object.fromEntries(
      ['KES_SERVER', 'KES_CLIENT_CERT', 'KES_CLIENT_KEY', 'KES_CA', 'KES_ENCLAVE'].map((k) => [k, process.env[k]]),
    );
    // Command output goes through `output`; process.stdout carries the test runner's own reports.
    const writes = { stdout: output.write, stderr: process.stderr.write };
    let stdout = '';
    let stderr = '';
    delete process.env.KES_ENCLAVE;
    Object.assign(process.env, vars);
    output.write = (text: string) => {
      stdout += text;
      onStdout?.(text);
    };
    process.stderr.write = ((chunk: string | Uint8Array) => (
      (stderr += chunk.toString()), true
    )) as typeof process.stderr.write;
    try {
      const code = await main(argv);
      return { code, stdout, stderr };
    } finally {
      output.write = writes.stdout;
      process.stderr.write = writes.stderr;
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  }

  const ok = async (who: TestIdentity, argv: string[], env?: Record<string, string>) => {
    const r = await kesd(who, argv, env);
    assert.equal(r.code, 0, `kesd ${argv.join(' ')} failed: ${r.stderr}`);
    return r.stdout;
  };

  test('key create, ls, info, dek, decrypt and rm round-trip', async () => {
    await ok(kes.admin, ['key', 'create', 'cli-key-1', 'cli-key-2']);
    const ls = await ok(kes.admin, ['key', 'ls', 'cli-key*']);
    assert.match(ls, /cli-key-1\n/);
    assert.match(ls, /cli-key-2\n/);
    assert.doesNotMatch(ls, /minio-default/);
    const lsJson = (await ok(kes.admin, ['key', 'list', '--json']))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { name: string });
    assert.ok(lsJson.some((k) => k.name === 'minio-default'));

    const info = await ok(kes.admin, ['key', 'info', 'cli-key-1']);
    assert.match(info, /^Name\s+cli-key-1$/m);
    assert.match(info, new RegExp(`^Created By\\s+${kes.admin.identity}$`, 'm'));
    const infoJson = JSON.parse(await ok(kes.admin, ['key', 'describe', '--json', 'cli-key-1']));
    assert.equal(infoJson.name, 'cli-key-1');

    const context = Buffer.from('{"bucket":"obj"}').toString('base64');
    const dek = JSON.parse(await ok(kes.admin, ['key', 'dek', 'cli-key-1', context])) as {
      plaintext: string;
      ciphertext: string;
    };
    assert.equal(Buffer.from(dek.plaintext, 'base64').length, 32);
    const dec = JSON.parse(await ok(kes.admin, ['key', 'decrypt', 'cli-key-1', dek.ciphertext, context]));
    assert.equal(dec.plaintext, dek.plaintext);
    const wrongContext = await kesd(kes.admin, ['key', 'decrypt', 'cli-key-1', dek.ciphertext]);
    assert.equal(wrongContext.code, 1);
    assert.equal(wrongContext.stderr, 'kesd: decryption failed: ciphertext is not authentic\n');

    await ok(kes.admin, ['key', 'rm', 'cli-key-1', 'cli-key-2']);
    assert.doesNotMatch(await ok(kes.admin, ['key', 'ls']), /cli-key/);
  });

  test('key create <name> <key> imports, and encrypt/decrypt round-trip a plain text message', async () => {
    const key = Buffer.alloc(32, 0x42).toString('base64');
    await ok(kes.admin, ['key', 'create', 'cli-imported', key]);
    await ok(kes.admin, ['key', 'import', 'cli-imported-2', key]);
    const { ciphertext } = JSON.parse(await ok(kes.admin, ['key', 'encrypt', 'cli-imported', 'Hello World']));
    // Same key material under another name decrypts it: the import really used the given bytes.
    const { plaintext } = JSON.parse(await ok(kes.admin, ['key', 'decrypt', 'cli-imported-2', ciphertext]));
    assert.equal(Buffer.from(plaintext, 'base64').toString(), 'Hello World');
    await ok(kes.admin, ['key', 'delete', 'cli-imported', 'cli-imported-2']);
  });

  test('describing a missing key exits 1 with the server message', async () => {
    const r = await kesd(kes.admin, ['key', 'info', 'no-such-key']);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, 'kesd: key does not exist\n');
  });

  test('a wrong argument count is a usage error (exit 2)', async () => {
    const r = await kesd(kes.admin, ['key', 'info']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage: kesd key info/);
  });

  test('policy create from a file, assign, show, info, ls; the user is then bound by it', async () => {
    const file = join(dir, 'policy.json');
    await writeFile(
      file,
      JSON.stringify({
        allow: ['/v1/key/create/cli-*', '/v1/key/describe/cli-*', '/v1/status'],
        deny: ['/v1/key/delete/*'],
      }),
    );
    const user2 = await makeIdentity(dir, 'user2');
    await ok(kes.admin, ['policy', 'add', 'cli-policy', file]);
    await ok(kes.admin, ['policy', 'assign', 'cli-policy', user2.identity]);

    const show = await ok(kes.admin, ['policy', 'show', 'cli-policy']);
    assert.match(show, /^Allow\n {2}· \/v1\/key\/create\/cli-\*$/m);
    assert.match(show, /^Deny\n {2}· \/v1\/key\/delete\/\*$/m);
    const read = JSON.parse(await ok(kes.admin, ['policy', 'read', '--json', 'cli-policy']));
    assert.ok('/v1/status' in read.allow || (Array.isArray(read.allow) && read.allow.includes('/v1/status')));
    assert.match(
      await ok(kes.admin, ['policy', 'info', 'cli-policy']),
      new RegExp(`^Owner\\s+${kes.admin.identity}$`, 'm'),
    );
    assert.match(await ok(kes.admin, ['policy', 'ls']), /^cli-policy$/m);

    const self = await ok(user2, ['identity', 'self']);
    assert.match(self, new RegExp(`^Identity\\s+${user2.identity}$`, 'm'));
    assert.match(self, /^Policy\s+cli-policy$/m);
    assert.match(self, /· \/v1\/key\/create\/cli-\*/);
    const described = await ok(kes.admin, ['identity', 'info', user2.identity]);
    assert.match(described, /^Policy\s+cli-policy$/m);
    assert.match(await ok(kes.admin, ['identity', 'ls']), new RegExp(`^${user2.identity}\\s+cli-policy$`, 'm'));

    await ok(user2, ['key', 'create', 'cli-user-key']);
    const denied = await kesd(user2, ['key', 'rm', 'cli-user-key']);
    assert.equal(denied.code, 1);
    assert.equal(denied.stderr, 'kesd: not authorized: insufficient permissions\n');

    await ok(kes.admin, ['identity', 'rm', user2.identity]);
    await ok(kes.admin, ['policy', 'rm', 'cli-policy']);
    await ok(kes.admin, ['key', 'rm', 'cli-user-key']);
    const gone = await kesd(kes.admin, ['policy', 'info', 'cli-policy']);
    assert.equal(gone.stderr, 'kesd: policy does not exist\n');
  });

  test('identity info without an argument describes the caller', async () => {
    const self = JSON.parse(await ok(kes.admin, ['identity', 'info', '--json']));
    assert.equal(self.identity, kes.admin.identity);
    assert.equal(self.admin, true);
  });

  test('enclave create, info and rm as sysadmin; -e selects the new enclave', async () => {
    const tenant = await makeIdentity(dir, 'tenant-admin');
    await ok(kes.sysadmin, ['enclave', 'create', 'tenant-1', tenant.identity]);
    const info = await ok(kes.sysadmin, ['enclave', 'info', 'tenant-1']);
    assert.match(info, /^Name\s+tenant-1$/m);
    assert.match(info, new RegExp(`^Created By\\s+${kes.sysadmin.identity}$`, 'm'));

    await ok(tenant, ['key', 'create', '-e', 'tenant-1', 'tenant-key']);
    assert.match(await ok(tenant, ['key', 'ls', '--enclave', 'tenant-1']), /tenant-key/);
    assert.match(await ok(tenant, ['key', 'ls'], { KES_ENCLAVE: 'tenant-1' }), /tenant-key/);
    assert.doesNotMatch(await ok(kes.admin, ['key', 'ls']), /tenant-key/);

    const notSysadmin = await kesd(kes.admin, ['enclave', 'info', 'tenant-1']);
    assert.equal(notSysadmin.stderr, 'kesd: not authorized: insufficient permissions\n');

    await ok(kes.sysadmin, ['enclave', 'rm', 'tenant-1']);
    const gone = await kesd(kes.sysadmin, ['enclave', 'describe', 'tenant-1']);
    assert.equal(gone.code, 1);
    assert.equal(gone.stderr, 'kesd: enclave does not exist\n');
  });

  test('secret create, show, ls and rm', async () => {
    await ok(kes.admin, ['secret', 'create', 'cli-secret', 'password123']);
    assert.equal(await ok(kes.admin, ['secret', 'show', '-p', 'cli-secret']), 'password123\n');
    assert.match(await ok(kes.admin, ['secret', 'ls']), /cli-secret/);
    await ok(kes.admin, ['secret', 'rm', 'cli-secret']);
    assert.equal((await kesd(kes.admin, ['secret', 'info', 'cli-secret'])).stderr, 'kesd: secret does not exist\n');
  });

  test('status prints the server version, --json the server reply', async () => {
    const human = await ok(kes.admin, ['status']);
    assert.match(human, new RegExp(`^Endpoint\\s+${kes.url.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(human, /^Version\s+\S+/m);
    const json = JSON.parse(await ok(kes.user, ['status', '--json']));
    assert.equal(typeof json.version, 'string');
    assert.equal(typeof json.uptime, 'number');
  });

  test('metric and api print the server replies', async () => {
    assert.match(await ok(kes.admin, ['metric']), /kes_http_request_active/);
    const routes = JSON.parse(await ok(kes.admin, ['api', '--json'])) as { path: string }[];
    assert.ok(routes.some((r) => r.path === '/v1/key/create/'));
  });

  test('log --json streams audit events until SIGINT', async () => {
    let captured = '';
    const running = kesd(kes.admin, ['log', '--json'], {}, (chunk) => (captured += chunk));
    // Keep making requests until one shows up in the stream (the subscription is set up asynchronously).
    const deadline = Date.now() + 5000;
    while (!captured.includes('/v1/key/describe/minio-default') && Date.now() < deadline) {
      await kes.request(kes.admin, 'GET', '/v1/key/describe/minio-default');
      await new Promise((r) => setTimeout(r, 50));
    }
    process.emit('SIGINT');
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    const events = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.ok(
      events.some((e) => e.request?.path === '/v1/key/describe/minio-default' && e.response?.code === 200),
      r.stdout,
    );
  });

  test('an untrusted server certificate fails with a hint, and -k skips verification', async () => {
    const r = await kesd(kes.admin, ['key', 'ls'], { KES_CA: '' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^kesd: tls: cannot verify the server certificate \(\w+\): set KES_CA/);
    assert.match(await ok(kes.admin, ['key', 'ls', '-k'], { KES_CA: '' }), /minio-default/);
  });

  test('no client certificate: the server refuses and the CLI reports it', async () => {
    const r = await kesd(kes.admin, ['key', 'ls'], { KES_CLIENT_CERT: '', KES_CLIENT_KEY: '' });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'kesd: tls: client certificate is required\n');
  });
});
