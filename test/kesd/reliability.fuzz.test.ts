// Property-style fuzz over real TLS against a `kesd server` process, and a slow-client attack.
//
// Fuzz: a seeded PRNG builds raw HTTP/1.1 requests — every route prefix with random arguments (`..`, `%2F`,
// `%00`, unicode, > 16 KiB, double slashes), random methods, odd headers (huge, duplicated content-length,
// bogus transfer-encoding), and bodies (malformed or 10k-deep JSON, > 1 MiB chunked, bad base64, wrong types,
// nulls, arrays) — sent with no certificate, an unknown one, a policy-restricted one, the enclave admin and the
// system admin. Properties:
//   - a well-formed request always gets an answer, and never a 5xx;
//   - protocol-level garbage gets a 4xx or a closed connection, never a 2xx/3xx/5xx;
//   - nobody gets a 2xx where their identity gives them no access (no certificate / unknown: only /version);
//   - afterwards the same processes still run (no crash, no worker restart), /version and generate + decrypt
//     work, and the server's RSS stayed within a generous (gross) bound.
// Slow clients: slowloris connections sending a header byte per ~100 ms, slow bodies, and ~500 idle TLS
// connections, from a separate attacker process; meanwhile a normal client's generate requests must keep
// succeeding (latency reported). Stalled connections (no request, or a partial head and then silence) must be
// closed by the server within its headersTimeout plus Node's 30 s checking interval.
//
// The heap check runs the same fuzz against an in-process kesd (startTestServer) and compares its JS heap after
// a forced GC before and after; the process's RSS is compared too, with a gross bound.
//
// Settings: KESD_FUZZ_REQUESTS (CI 1500), KESD_FUZZ_HEAP_REQUESTS (CI 1000), KESD_FUZZ_SEED (replay),
// KESD_SOAK_SECONDS (attack length, CI 4), KESD_SLOWLORIS (CI 150 connections), KESD_IDLE_CONNECTIONS (CI 500),
// KESD_STALL_LIMIT_SECONDS (CI 45), KESD_RELIABILITY_WORKERS (pass --workers N; default: kesd's own default).
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import v8 from 'node:v8';
import vm from 'node:vm';
import { routes } from '../../kesd/src/api/routes.js';
import { makeIdentity, request as httpsRequest, startTestServer, type TestIdentity } from './harness.js';
import {
  agentFor,
  b64,
  call,
  deadline,
  envInt,
  groupPids,
  groupRss,
  makeFixture,
  MiB,
  percentile,
  pool,
  rng,
  seedFrom,
  sleep,
  startKesd,
  type Fixture,
  type KesdProcess,
  type Rng,
} from './load.js';

const REQUESTS = envInt('KESD_FUZZ_REQUESTS', 1500);
const SEED = seedFrom('KESD_FUZZ_SEED');
const ATTACK_SECONDS = envInt('KESD_SOAK_SECONDS', 4);
const SLOWLORIS = envInt('KESD_SLOWLORIS', 150);
const IDLE = envInt('KESD_IDLE_CONNECTIONS', 500);
const WORKERS = process.env.KESD_RELIABILITY_WORKERS ? ['--workers', process.env.KESD_RELIABILITY_WORKERS] : [];
const HEAP_REQUESTS = envInt('KESD_FUZZ_HEAP_REQUESTS', 1000);
/** Growth of the server's RSS (all its processes) over the fuzz that still counts as bounded: a gross check. */
const RSS_BOUND = 512 * MiB;
/** Growth of the in-process server's JS heap after GC: a precise one (created keys and enclaves are a few KiB). */
const HEAP_BOUND = 24 * MiB;

let fx: Fixture;
let proc: KesdProcess;
let pids: number[];
let canary: { plaintext: string; ciphertext: string };
let stalled: StallProbes;

before(async () => {
  fx = await makeFixture({
    extra: ['user', 'stranger'],
    keys: ['minio-default', 'canary'],
    policies: [{ name: 'app', allow: ['/v1/key/*', '/v1/status'], deny: ['/v1/key/delete/*'], identities: ['user'] }],
  });
  proc = await startKesd(fx.dataDir, fx.env, [...WORKERS], { stdout: 'ignore' }); // audit log on, discarded
  pids = await groupPids(proc.pid);
  const admin = agentFor(fx.admin);
  canary = (await call(admin, proc.port, 'POST', '/v1/key/generate/canary', { context: b64('ctx') })).json();
  admin.destroy();
  stalled = openStallProbes(proc.port); // checked by the last test, while the others run
});
after(async () => {
  stalled?.destroy();
  await proc?.stop();
  await fx?.remove();
});

// ---- raw exchanges -----------------------------------------------------------------------------------------

interface Outcome {
  /** The final (non-1xx) status, if a response head arrived. */
  readonly status?: number;
  readonly timedOut: boolean;
  readonly ms: number;
}

/** Sends raw bytes over a fresh TLS connection and reads the first final response head (or the close). */
function exchange(
  port: number,
  who: TestIdentity | undefined,
  payload: readonly (string | Buffer)[],
  opts: { end?: boolean; timeoutMs?: number } = {},
): Promise<Outcome> {
  const start = performance.now();
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, cert: who?.cert, key: who?.key });
    let head = '';
    let settled = false;
    const done = (status: number | undefined, timedOut = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ status, timedOut, ms: performance.now() - start });
    };
    const timer = setTimeout(() => done(undefined, true), opts.timeoutMs ?? 15_000);
    socket.on('secureConnect', () => {
      for (const p of payload) socket.write(p);
      if (opts.end) socket.end();
    });
    socket.on('data', (d: Buffer) => {
      head = (head + d.toString('latin1')).slice(0, 65536);
      for (;;) {
        const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n/.exec(head);
        const end = head.indexOf('\r\n\r\n');
        if (!m || end < 0) return;
        const status = Number(m[1]);
        if (status >= 200 || status < 100) return done(status);
        head = head.slice(end + 4); // 100 Continue: the final answer follows
      }
    });
    socket.on('error', () => done(undefined));
    socket.on('close', () => done(undefined));
  });
}

// ---- the generator -------------------------------------------------------------------------------------------

type Who = 'none' | 'stranger' | 'user' | 'admin' | 'sysadmin';
/** http: must be answered, < 500. lenient: as http, but a close is fine too (the server may cut an oversized
 * upload short; HTTP/0.9-style lines). protocol: 4xx or a close. */
type Kind = 'http' | 'lenient' | 'protocol';

interface Input {
  readonly kind: Kind;
  readonly who: Who;
  readonly label: string;
  readonly rawPath: string;
  readonly payload: (string | Buffer)[];
  readonly end?: boolean;
}

/** The server under test: who is who, and a ciphertext of its key 'canary' (context 'ctx'). */
interface Target {
  readonly ids: Record<Who, TestIdentity | undefined>;
  readonly canary: { plaintext: string; ciphertext: string };
}
let target: Target;

const PREFIXES = [...new Set(routes.map((r) => r.path))];
const NAMES = ['fuzz-a', 'fuzz-b', 'minio-default', 'f0', 'A_b-9'];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE'];

function randomName(r: Rng): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-';
  return 'z' + Array.from({ length: r.range(1, 20) }, () => r.pick([...alphabet])).join('');
}

function randomArg(r: Rng): string {
  const pct = (b: Buffer) => [...b].map((x) => '%' + x.toString(16).padStart(2, '0')).join('');
  return r.pick<() => string>([
    () => r.pick(NAMES),
    () => randomName(r),
    () => '',
    () => '*',
    () => r.pick(NAMES) + '*',
    () => '..',
    () => '../..',
    () => '..%2F..%2Fenclave%2Fcreate%2Fx',
    () => '%2F',
    () => '%2e%2e%2f%2e%2e',
    () => '%00',
    () => 'a%00b',
    () => '%',
    () => '%zz',
    () => '%C3%A9t%C3%A9',
    () => '%ED%A0%80', // a lone surrogate: decodeURIComponent throws
    () => '%F0%9F%94%91',
    () => pct(r.bytes(r.range(1, 40))),
    () => 'x'.repeat(81),
    () => 'k'.repeat(r.range(200, 6000)),
    () => '-a',
    () => 'a-',
    () => '_',
    () => 'a/b',
    () => 'a//b',
    () => r.bytes(32).toString('hex'),
    () => r.pick([target.ids.admin!.identity, target.ids.sysadmin!.identity, target.ids.user!.identity]),
    () => encodeURIComponent(String.fromCharCode(...Array.from({ length: r.range(1, 12) }, () => r.range(32, 126)))),
  ])();
}

function randomQuery(r: Rng): string {
  return r.pick<() => string>([
    () => '',
    () => '',
    () => `?enclave=${r.pick(['default', 'nope', '..', '%00', 'x'.repeat(100), '', 'tenant%2F2', '%ED%A0%80'])}`,
    () => '?enclave=nope&enclave=default',
    () => `?${encodeURIComponent(r.bytes(8).toString('latin1'))}=${randomName(r)}`,
    () => '?&&==&',
  ])();
}

const deep = (n: number, open: string, close: string) => open.repeat(n) + close.repeat(n);

function randomBody(r: Rng): { body?: Buffer; chunked?: boolean; large?: boolean } {
  const json = (v: unknown) => ({ body: Buffer.from(JSON.stringify(v)) });
  const text = (s: string) => ({ body: Buffer.from(s) });
  return r.pick<() => { body?: Buffer; chunked?: boolean; large?: boolean }>([
    () => ({}),
    () => ({}),
    () => text('{'),
    () => text('{"a":'),
    () => text('null'),
    () => text('[]'),
    () => text('""'),
    () => text('1e999'),
    () => text('true'),
    () => text('\u0000\u0001'),
    () => ({ body: r.bytes(r.range(1, 2048)) }),
    () => text(deep(10_000, '[', ']')),
    () => text(deep(10_000, '{"a":', '}').replace(/}$/, '1}')),
    () => text(`{"ciphertext":${deep(10_000, '[', ']')}}`),
    () => json({ ciphertext: '!!!' }),
    () => json({ ciphertext: null }),
    () => json({ ciphertext: 123 }),
    () => json({ ciphertext: ['YQ=='] }),
    () => json({ ciphertext: target.canary.ciphertext }), // right ciphertext, missing context
    () => json({ ciphertext: target.canary.ciphertext, context: 'bad base64' }),
    () => json({ ciphertext: target.canary.ciphertext.slice(0, -8) + 'AAAAAAA=', context: b64('ctx') }),
    () => json({ CipherText: b64(r.bytes(r.range(0, 100))) }),
    () => json({ plaintext: 'a' }),
    () => json({ plaintext: b64(r.bytes(r.range(0, 64))), context: '====' }),
    () => json({ message: {} }),
    () => json({ message: null }),
    () => json({ allow: 'x' }),
    () => json({ allow: [1, 2] }),
    () => json({ allow: ['/v1/*?'], deny: [null] }),
    () => json({ allow: [''.padEnd(r.range(1, 5000), '*')] }),
    () => json({ identity: null }),
    () => json({ identity: r.bytes(32).toString('hex') }),
    () => json({ identity: 'ZZ' }),
    () => json({ admin: 'zz' }),
    () => json({ admin: r.bytes(32).toString('hex').toUpperCase() }),
    () => json({ bytes: b64('x'), type: 'weird' }),
    () => json({ bytes: 5 }),
    () => json({ key: b64(r.bytes(31)), cipher: 'AES256' }),
    () => json({ key: b64(r.bytes(32)), cipher: r.pick(['ChaCha20', 'AES256', 'rot13', '']) }),
    () => json(Array.from({ length: r.pick([1, 1001]) }, () => ({ ciphertext: b64(r.bytes(40)) }))),
    () => json([null, 1, 'a']),
    () => text('{"__proto__":{"admin":true,"allow":["*"]}}'),
    () => text('{"constructor":{"prototype":{"isAdmin":true}}}'),
    () => json({ plaintext: b64(Buffer.alloc(r.range(100_000, 900_000), 7)) }),
    () => ({ body: Buffer.alloc(r.range(1, 3) * MiB + r.int(1000), 0x41), chunked: true, large: true }),
    () => ({ body: Buffer.from(JSON.stringify({ context: b64('x') })), chunked: true }),
  ])();
}

function chunkedEncoding(body: Buffer, r: Rng): Buffer[] {
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; ) {
    const n = Math.min(body.length - i, r.range(1, 64 * 1024));
    parts.push(Buffer.from(n.toString(16) + '\r\n'), body.subarray(i, i + n), Buffer.from('\r\n'));
    i += n;
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return parts;
}

function randomHeaders(r: Rng): string[] {
  const headers: string[] = [];
  const n = r.range(0, 3);
  for (let i = 0; i < n; i++) {
    headers.push(
      r.pick<() => string>([
        () => `Content-Type: ${r.pick(['application/json', 'text/plain', 'multipart/form-data; boundary=x', '\t'])}`,
        () => `Kes-Enclave: ${r.pick(['default', 'nope', '..', 'x'.repeat(90), '%00'])}`,
        () => 'Kes-Enclave: default\r\nKes-Enclave: nope',
        () =>
          `X-Tls-Client-Cert: ${encodeURIComponent('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----')}`,
        () => `X-Big: ${'b'.repeat(r.range(1000, 8000))}`,
        () => `X-Forwarded-For: ${r.pick(['127.0.0.1', '::1', 'x'.repeat(300)])}`,
        () => 'Accept-Encoding: gzip, deflate, br, zstd',
        () => `Authorization: Bearer ${randomName(r)}`,
        () => 'Expect: 100-continue',
      ])(),
    );
  }
  return headers;
}

/** The identities that may get a 2xx on a raw path (before '?'). A 2xx elsewhere is a hole. */
function mayPass(who: Who, rawPath: string): boolean {
  if (rawPath === '/version') return true;
  const serverRoute = ['/v1/status', '/v1/metrics', '/v1/api', '/v1/ready', '/v1/log/error', '/v1/log/audit'].includes(
    rawPath,
  );
  const sysadminRoute =
    rawPath.startsWith('/v1/enclave/') ||
    rawPath === '/v1/enclave' ||
    rawPath === '/v1/sys/seal' ||
    rawPath === '/v1/sys/backup';
  const self = rawPath === '/v1/identity/self/describe';
  switch (who) {
    case 'none':
    case 'stranger':
      return false;
    case 'user':
      return (
        self ||
        rawPath === '/v1/status' ||
        ((rawPath.startsWith('/v1/key/') || rawPath === '/v1/key/list') &&
          !rawPath.startsWith('/v1/key/delete/') &&
          rawPath !== '/v1/key/delete')
      );
    case 'admin':
      return !sysadminRoute;
    case 'sysadmin':
      return sysadminRoute || serverRoute || self;
  }
}

const METHODS_OF = new Map(routes.map((route) => [route.path, route.methods]));

function randomRequest(r: Rng, who: Who): Input {
  let method = r.pick(METHODS);
  let rawPath: string;
  if (r.chance(0.9)) {
    const prefix = r.pick(PREFIXES);
    if (r.chance(0.75)) method = r.pick(METHODS_OF.get(prefix)!); // mostly past the method check, into the handlers
    rawPath = prefix.endsWith('/')
      ? prefix + (r.chance(0.1) ? randomArg(r) + '/' + randomArg(r) : randomArg(r))
      : prefix + (r.chance(0.1) ? '/' + randomArg(r) : '');
    if (r.chance(0.05)) rawPath = rawPath.replace(/^\//, '//');
    if (r.chance(0.05)) rawPath = rawPath.replaceAll('/', '//');
    if (r.chance(0.03) && prefix.endsWith('/')) rawPath = prefix.slice(0, -1);
  } else {
    rawPath = r.pick([
      '/',
      '/v1',
      '/v1/',
      '/v2/key/create/x',
      '/V1/KEY/LIST/*',
      '/v1/key',
      '/v1/key/',
      '*',
      '/version/',
      '/versions',
      '/.well-known/x',
      '/v1/%6Bey/list/*',
    ]);
  }
  // Never seal the shared server or delete its enclave: the properties are checked on a live one afterwards.
  let decodedPath = '';
  try {
    decodedPath = decodeURIComponent(rawPath);
  } catch {
    // not decodable: the server answers 400
  }
  if (
    who === 'sysadmin' &&
    (/^\/+v1\/+sys\/+seal/.test(rawPath) || /^\/+v1\/+enclave\/+delete\/+default\/*$/.test(decodedPath))
  )
    method = 'GET';
  const target = rawPath + randomQuery(r);
  const { body, chunked, large } = (method === 'GET' || method === 'HEAD') && r.chance(0.7) ? {} : randomBody(r);
  const headers = ['Host: 127.0.0.1', 'Connection: close', ...randomHeaders(r)];
  const payload: (string | Buffer)[] = [];
  if (body !== undefined && chunked) {
    headers.push('Transfer-Encoding: chunked');
    payload.push(`${method} ${target} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`, ...chunkedEncoding(body, r));
  } else {
    if (body !== undefined) headers.push(`Content-Length: ${body.length}`);
    payload.push(`${method} ${target} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`);
    if (body !== undefined) payload.push(body);
  }
  const bytes = payload.reduce((n, p) => n + p.length, 0);
  const kind: Kind = large || bytes > 16 * 1024 ? 'lenient' : 'http';
  return {
    kind,
    who,
    rawPath,
    payload,
    label: `${who} ${method} ${target.slice(0, 120)}${target.length > 120 ? '…' : ''} (${bytes} bytes)`,
  };
}

function garbage(r: Rng, who: Who): Input {
  const line = (s: string) => `${s}\r\nHost: 127.0.0.1\r\nConnection: close\r\n`;
  const [label, payload] = r.pick<() => [string, (string | Buffer)[]]>([
    () => [
      'duplicate content-length',
      [line('POST /version HTTP/1.1') + 'Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
    ],
    () => [
      'bogus transfer-encoding',
      [line('POST /v1/key/generate/canary HTTP/1.1') + 'Transfer-Encoding: bogus\r\n\r\n{}'],
    ],
    () => [
      'transfer-encoding and content-length',
      [
        line('POST /v1/key/generate/canary HTTP/1.1') +
          'Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
      ],
    ],
    () => [
      'chunked, identity',
      [
        line('POST /v1/key/generate/canary HTTP/1.1') +
          'Transfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
      ],
    ],
    () => [
      'bad chunk size',
      [line('POST /v1/key/generate/canary HTTP/1.1') + 'Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'],
    ],
    () => ['random bytes', [r.bytes(r.range(1, 4096))]],
    () => ['HTTP/9.9', [line('GET /version HTTP/9.9') + '\r\n']],
    () => ['lowercase method', [line('get /version HTTP/1.1') + '\r\n']],
    () => ['CONNECT', [line('CONNECT 127.0.0.1:1 HTTP/1.1') + '\r\n']],
    () => ['header without colon', [line('GET /version HTTP/1.1') + 'NoColonHere\r\n\r\n']],
    () => ['space before colon', [line('GET /version HTTP/1.1') + 'X-A : b\r\n\r\n']],
    () => ['NUL in header value', [line('GET /version HTTP/1.1') + 'X-A: a\u0000b\r\n\r\n']],
    () => ['obsolete line folding', [line('GET /version HTTP/1.1') + 'X-A: a\r\n  folded\r\n\r\n']],
    () => [
      'header > 16 KiB',
      [line('GET /version HTTP/1.1') + `X-Huge: ${'h'.repeat(r.range(17, 64) * 1024)}\r\n\r\n`],
    ],
    () => [
      '3000 headers',
      [line('GET /version HTTP/1.1') + Array.from({ length: 3000 }, (_, i) => `X-${i}: v`).join('\r\n') + '\r\n\r\n'],
    ],
    () => ['path > 16 KiB', [line(`GET /v1/key/describe/${'p'.repeat(r.range(17, 64) * 1024)} HTTP/1.1`) + '\r\n']],
    () => ['HTTP/2 preface', ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n']],
    () => ['bare CRLFs', ['\r\n\r\n\r\n']],
    () => ['truncated request line', ['GET /ver']],
    () => ['truncated headers', [line('GET /version HTTP/1.1') + 'X-A: b']],
    () => ['negative content-length', [line('POST /version HTTP/1.1') + 'Content-Length: -1\r\n\r\n']],
    () => [
      'huge content-length',
      [line('POST /v1/key/generate/canary HTTP/1.1') + 'Content-Length: 99999999999999999999\r\n\r\n{}'],
    ],
    () => ['raw unicode in the path', [line('GET /v1/key/describe/ключ HTTP/1.1') + '\r\n']],
    () => ['control characters in the path', [line('GET /v1/key/describe/a\u0001b HTTP/1.1') + '\r\n']],
  ])();
  return { kind: 'protocol', who, rawPath: '', payload, end: true, label: `${who} ${label}` };
}

/** A request line without a version: Node's parser takes it as HTTP/0.9-style and may answer it. */
function http09(r: Rng, who: Who): Input {
  const rawPath = r.pick(['/version', '/v1/status', '/v1/key/list/*', '/v1/enclave/describe/default']);
  return {
    kind: 'lenient',
    who,
    rawPath,
    payload: [`GET ${rawPath}\r\n\r\n`],
    end: true,
    label: `${who} HTTP/0.9-style GET ${rawPath}`,
  };
}

// ---- the fuzz -----------------------------------------------------------------------------------------------

/** One random input: mostly requests, some protocol garbage, a few HTTP/0.9-style lines. */
function randomInput(r: Rng): Input {
  const who = r.pick<Who>(['none', 'stranger', 'user', 'admin', 'admin', 'sysadmin']);
  const roll = r.next();
  return roll < 0.14 ? garbage(r, who) : roll < 0.15 ? http09(r, who) : randomRequest(r, who);
}

interface FuzzResult {
  readonly failures: string[];
  readonly byKind: Map<string, Map<string, number>>;
  readonly ms: number;
}

/** Sends `count` inputs (generated one at a time, nothing retained), 4 connections at a time, checking each. */
async function fuzz(port: number, r: Rng, count: number): Promise<FuzzResult> {
  const byKind = new Map<string, Map<string, number>>();
  const failures: string[] = [];
  const started = Date.now();
  await pool(
    Array.from({ length: count }, () => 0),
    4,
    async () => {
      const input = randomInput(r);
      const out = await exchange(port, target.ids[input.who], input.payload, { end: input.end });
      const outcome = out.timedOut ? 'timeout' : out.status === undefined ? 'closed' : String(out.status);
      const dist = byKind.get(input.kind) ?? new Map<string, number>();
      byKind.set(input.kind, dist.set(outcome, (dist.get(outcome) ?? 0) + 1));
      const fail = (why: string): void => void (failures.length < 50 && failures.push(`${why}: ${input.label}`));
      if (out.timedOut) return fail('no answer within 15 s');
      if (out.status !== undefined && out.status >= 500) return fail(`${out.status}`);
      if (input.kind === 'protocol') {
        if (out.status !== undefined && out.status < 400) fail(`protocol garbage accepted with ${out.status}`);
        return;
      }
      if (out.status === undefined) {
        if (input.kind === 'http') fail('closed without an answer');
        return;
      }
      if (out.status >= 200 && out.status < 300 && !mayPass(input.who, input.rawPath))
        return fail(`${out.status} without access`);
    },
  );
  return { failures, byKind, ms: Date.now() - started };
}

function report(t: TestContext, result: FuzzResult): void {
  for (const [kind, dist] of [...result.byKind].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const sorted = [...dist].sort(([a], [b]) => (a < b ? -1 : 1));
    t.diagnostic(
      `${kind}: ${sorted.reduce((n, [, c]) => n + c, 0)} inputs → ${sorted.map(([st, c]) => `${st}×${c}`).join(' ')}`,
    );
  }
}

async function serverStillServes(): Promise<void> {
  assert.ok(proc.alive(), `kesd exited: ${proc.output().slice(-3000)}`);
  assert.deepEqual(
    await groupPids(proc.pid),
    pids,
    `kesd processes changed (a crash and a restart?): ${proc.output().slice(-3000)}`,
  );
  const anonymous = agentFor(undefined);
  const admin = agentFor(fx.admin);
  try {
    assert.equal((await call(anonymous, proc.port, 'GET', '/version')).status, 200);
    const g = await call(admin, proc.port, 'POST', '/v1/key/generate/canary', {});
    assert.equal(g.status, 200, g.text);
    const d = await call(admin, proc.port, 'POST', '/v1/key/decrypt/canary', { ciphertext: g.json().ciphertext });
    assert.equal(d.json().plaintext, g.json().plaintext);
    const old = await call(admin, proc.port, 'POST', '/v1/key/decrypt/canary', {
      ciphertext: canary.ciphertext,
      context: b64('ctx'),
    });
    assert.equal(old.status, 200, old.text);
    assert.equal(old.json().plaintext, canary.plaintext);
  } finally {
    anonymous.destroy();
    admin.destroy();
  }
}

test(`fuzz a kesd process: ${REQUESTS} random inputs, never a 5xx, never a crash, no 2xx without access (seed ${SEED})`, {
  timeout: 300_000 + REQUESTS * 100,
}, async (t) => {
  t.diagnostic(`seed ${SEED} (replay: KESD_FUZZ_SEED=${SEED})`);
  target = {
    ids: { none: undefined, stranger: fx.ids.stranger, user: fx.ids.user, admin: fx.admin, sysadmin: fx.sysadmin },
    canary,
  };
  // Warm up (TLS, JIT, buffers, a large body) so the RSS baseline is a steady state.
  const admin = agentFor(fx.admin);
  for (let i = 0; i < 100; i++) await call(admin, proc.port, 'POST', '/v1/key/generate/canary', {});
  await call(admin, proc.port, 'POST', '/v1/key/generate/canary', Buffer.alloc(MiB + 1, 0x20)).catch(() => undefined);
  admin.destroy();
  await sleep(500);
  const rssBefore = await groupRss(proc.pid);
  const result = await fuzz(proc.port, rng(SEED), REQUESTS);
  await sleep(1000);
  const rssAfter = await groupRss(proc.pid);
  report(t, result);
  t.diagnostic(
    `${REQUESTS} inputs in ${(result.ms / 1000).toFixed(1)} s; server RSS ${(rssBefore / MiB).toFixed(0)} → ${(rssAfter / MiB).toFixed(0)} MiB (${pids.length} processes)`,
  );
  assert.deepEqual(result.failures, [], 'every input was answered properly');
  await serverStillServes();
  // A gross bound only (RSS includes V8 heap headroom and allocator slack); the heap test below is the precise one.
  assert.ok(rssAfter - rssBefore < RSS_BOUND, `server RSS grew by ${((rssAfter - rssBefore) / MiB).toFixed(0)} MiB`);
});

test(`fuzz an in-process kesd: its JS heap after GC stays flat over ${HEAP_REQUESTS} inputs (seed ${SEED + 1})`, {
  timeout: 300_000 + HEAP_REQUESTS * 100,
}, async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const heapAfterGc = async () => {
    for (let i = 0; i < 4; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    return process.memoryUsage().heapUsed;
  };
  const s = await startTestServer({ keys: ['minio-default', 'canary'] });
  try {
    const stranger = await makeIdentity(s.dir, 'stranger');
    const admin = s.agent(s.admin);
    const generated = await httpsRequest(admin, s.port, 'POST', '/v1/key/generate/canary', { context: b64('ctx') });
    target = {
      ids: { none: undefined, stranger, user: s.user, admin: s.admin, sysadmin: s.sysadmin },
      canary: generated.json(),
    };
    const r = rng(SEED + 1);
    const warm = await fuzz(s.port, r, Math.min(500, HEAP_REQUESTS)); // JIT, TLS and parser state
    assert.deepEqual(warm.failures, []);
    const before = await heapAfterGc();
    const result = await fuzz(s.port, r, HEAP_REQUESTS);
    await sleep(500);
    const afterHeap = await heapAfterGc();
    report(t, result);
    t.diagnostic(
      `heap after GC ${(before / MiB).toFixed(1)} → ${(afterHeap / MiB).toFixed(1)} MiB over ${HEAP_REQUESTS} inputs (${(result.ms / 1000).toFixed(1)} s)`,
    );
    assert.deepEqual(result.failures, [], 'every input was answered properly');
    assert.equal((await httpsRequest(admin, s.port, 'POST', '/v1/key/generate/canary', {})).status, 200);
    assert.ok(afterHeap - before < HEAP_BOUND, `the heap grew by ${((afterHeap - before) / MiB).toFixed(1)} MiB`);
  } finally {
    await s.stop();
  }
});

// ---- slow clients ------------------------------------------------------------------------------------------

// The attacker runs in its own process: opening hundreds of TLS connections would otherwise stall the event loop
// of the very client whose latency is measured. It prints "ready" once every connection was started, and its
// counts as JSON when it ends. Every socket reads, so a close by the server is seen.
const ATTACKER = `
import tls from 'node:tls';
const cfg = JSON.parse(process.env.KESD_ATTACK);
const stats = { opened: 0, closedByServer: { slowloris: 0, slowBody: 0, idle: 0 }, openAtEnd: 0 };
const sockets = new Set();
const until = Date.now() + cfg.seconds * 1000;
let stopped = false;
function open(kind, who, first, drip, reopen) {
  if (stopped || Date.now() > until) return;
  const s = tls.connect({ host: '127.0.0.1', port: cfg.port, rejectUnauthorized: false, cert: who?.cert, key: who?.key });
  stats.opened++;
  sockets.add(s);
  let i = 0;
  let timer;
  s.on('secureConnect', () => {
    if (first !== '') s.write(first);
    if (drip !== undefined) timer = setInterval(() => { if (!s.destroyed) s.write(drip[i++ % drip.length]); }, 90 + Math.random() * 20);
  });
  s.on('data', () => {});
  s.on('error', () => {});
  s.on('close', () => {
    clearInterval(timer);
    sockets.delete(s);
    if (stopped) return;
    stats.closedByServer[kind]++;
    if (reopen) setTimeout(() => open(kind, who, first, drip, reopen), 50);
  });
}
// Slowloris: a request head, one byte per ~100 ms, never finished; reconnects when the server cuts it.
for (let i = 0; i < cfg.slowloris; i++) setTimeout(() => open('slowloris', i % 2 ? cfg.stranger : undefined, 'GET /version HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n', 'X-Slow-' + i + ': aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\r\\n', true), i * 5);
// Slow bodies: a generate request whose declared 100 kB body arrives one byte per ~100 ms.
for (let i = 0; i < cfg.slowBodies; i++) setTimeout(() => open('slowBody', cfg.admin, 'POST /v1/key/generate/canary HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Length: 100000\\r\\n\\r\\n{"context":"', 'A', true), i * 20);
// Idle: TLS connections that never send a byte (not reopened).
for (let i = 0; i < cfg.idle; i++) setTimeout(() => open('idle', i % 3 === 0 ? cfg.stranger : undefined, '', undefined, false), i * 4);
setTimeout(() => console.log('ready'), Math.max(cfg.slowloris * 5, cfg.idle * 4) + 1000);
setTimeout(() => {
  stats.openAtEnd = sockets.size;
  stopped = true;
  for (const s of sockets) s.destroy();
  console.log(JSON.stringify(stats));
  process.exit(0);
}, cfg.seconds * 1000);
`;

interface AttackStats {
  readonly opened: number;
  readonly closedByServer: { slowloris: number; slowBody: number; idle: number };
  readonly openAtEnd: number;
}

/** Starts the attacker; resolves once its connections are up, with a promise of its final counts. */
async function startAttacker(port: number, seconds: number): Promise<{ pid: number; done: Promise<AttackStats> }> {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-attack-'));
  const script = join(dir, 'attack.mjs');
  await writeFile(script, ATTACKER);
  const pem = (id: TestIdentity) => ({ cert: id.cert, key: id.key });
  const cfg = {
    port,
    seconds,
    slowloris: SLOWLORIS,
    slowBodies: 10,
    idle: IDLE,
    stranger: pem(fx.ids.stranger!),
    admin: pem(fx.admin),
  };
  const child = spawn(process.execPath, [script], {
    env: { ...process.env, KESD_ATTACK: JSON.stringify(cfg) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  const done = new Promise<AttackStats>((resolve, reject) => {
    child.on('exit', (code) => {
      void rm(dir, { recursive: true, force: true });
      const last = out.trim().split('\n').pop() ?? '';
      if (code === 0 && last.startsWith('{')) resolve(JSON.parse(last));
      else reject(new Error(`attacker exited with ${code}: ${out}`));
    });
  });
  done.catch(() => undefined);
  const ready = new Promise<void>((resolve) =>
    child.stdout!.on('data', (d) => {
      out += d;
      if (/^ready$/m.test(out)) resolve();
    }),
  );
  await deadline(Promise.race([ready, done.then(() => undefined)]), 60_000, 'the attacker to open its connections');
  return { pid: child.pid!, done };
}

/** Sequential generate requests until `until`: keep-alive, and every 10th on a fresh connection. */
async function normalClient(
  port: number,
  until: number,
  maxRequests: number,
): Promise<{ keepAlive: number[]; fresh: number[]; failures: string[] }> {
  const agent = agentFor(fx.admin, { maxSockets: 1 });
  const keepAlive: number[] = [];
  const fresh: number[] = [];
  const failures: string[] = [];
  try {
    for (let i = 0; i < maxRequests && Date.now() < until; i++) {
      const isFresh = i % 10 === 9;
      const a = isFresh ? agentFor(fx.admin, { keepAlive: false }) : agent;
      const start = performance.now();
      try {
        const reply = await call(a, port, 'POST', '/v1/key/generate/canary', {}, { timeoutMs: 10_000 });
        if (reply.status !== 200) failures.push(`${reply.status} ${reply.text}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
      (isFresh ? fresh : keepAlive).push(performance.now() - start);
      if (isFresh) a.destroy();
    }
  } finally {
    agent.destroy();
  }
  return { keepAlive, fresh, failures };
}

const fmt = (xs: number[]) =>
  `p50 ${percentile(xs, 50).toFixed(1)} ms, p99 ${percentile(xs, 99).toFixed(1)} ms (n=${xs.length})`;

test(`slow clients: ${SLOWLORIS} slowloris, 10 slow bodies, ${IDLE} idle TLS connections for ${ATTACK_SECONDS} s; a normal client keeps working`, {
  timeout: 120_000 + ATTACK_SECONDS * 3000,
}, async (t) => {
  const baseline = await normalClient(proc.port, Date.now() + 1500, 3000);
  assert.deepEqual(baseline.failures, []);
  const rssBefore = await groupRss(proc.pid);

  const attacker = await startAttacker(proc.port, ATTACK_SECONDS + 5);
  let peak = 0;
  let during: Awaited<ReturnType<typeof normalClient>>;
  try {
    const sampler = setInterval(() => void groupRss(proc.pid).then((rss) => (peak = Math.max(peak, rss))), 500);
    during = await normalClient(proc.port, Date.now() + ATTACK_SECONDS * 1000, 1_000_000);
    clearInterval(sampler);
  } finally {
    const stats = await deadline(attacker.done, 30_000, 'the attacker to finish').catch((err) => {
      process.kill(attacker.pid, 'SIGKILL');
      throw err;
    });
    t.diagnostic(
      `attack: ${stats.opened} connections opened, ${stats.openAtEnd} still open at the end; closed by the server: ${JSON.stringify(stats.closedByServer)}`,
    );
  }
  t.diagnostic(`before the attack: keep-alive ${fmt(baseline.keepAlive)}; new connection ${fmt(baseline.fresh)}`);
  t.diagnostic(`during the attack: keep-alive ${fmt(during.keepAlive)}; new connection ${fmt(during.fresh)}`);
  t.diagnostic(
    `server RSS ${(rssBefore / MiB).toFixed(0)} MiB before, ${(peak / MiB).toFixed(0)} MiB peak during the attack`,
  );
  assert.ok(proc.alive(), `kesd died during the attack: ${proc.output().slice(-3000)}`);
  assert.deepEqual(during.failures, [], 'every generate request during the attack succeeded');
  // How many and how fast depend on the machine's load (the diagnostics above report them): no timing is asserted.
  assert.ok(during.keepAlive.length >= 1, 'no request on a kept-alive connection got through during the attack');
  assert.ok(during.fresh.length >= 1, 'no new connection got through during the attack');
  await sleep(500);
  await serverStillServes();
});

// ---- stalled connections -------------------------------------------------------------------------------------

/** How long a connection that never completes a request head may stay open: kesd's headersTimeout (10 s) plus
 * Node's connectionsCheckingInterval (30 s), plus slack. */
const STALL_LIMIT_S = envInt('KESD_STALL_LIMIT_SECONDS', 45);

interface StallProbes {
  readonly openedAt: number;
  /** Seconds after openedAt at which the server closed each probe (undefined: still open). */
  readonly closedAfter: Record<string, number | undefined>;
  destroy(): void;
}

/** Three connections that stall before a request head is complete; they stay open until the server closes them. */
function openStallProbes(port: number): StallProbes {
  const openedAt = Date.now();
  const closedAfter: Record<string, number | undefined> = {};
  const sockets: tls.TLSSocket[] = [];
  let destroyed = false;
  const probe = (name: string, first: string | undefined) => {
    closedAfter[name] = undefined;
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      if (first !== undefined) socket.write(first);
    });
    socket.on('data', () => {}); // a 408 or whatever the server says on its way out
    socket.on('error', () => {});
    socket.on('close', () => {
      if (!destroyed) closedAfter[name] = (Date.now() - openedAt) / 1000;
    });
    sockets.push(socket);
  };
  probe('TLS handshake, then nothing', undefined);
  probe('a partial request head, then nothing', 'GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  probe('a request line, then nothing', 'POST /v1/key/generate/canary HTTP/1.1\r\n');
  return {
    openedAt,
    closedAfter,
    destroy() {
      destroyed = true;
      for (const socket of sockets) socket.destroy();
    },
  };
}

test(`stalled connections (no request, or a partial head and then silence) are closed within ${STALL_LIMIT_S} s`, {
  timeout: (STALL_LIMIT_S + 30) * 1000,
}, async (t) => {
  const deadlineAt = stalled.openedAt + STALL_LIMIT_S * 1000;
  while (Date.now() < deadlineAt && Object.values(stalled.closedAfter).some((v) => v === undefined)) await sleep(250);
  for (const [name, after] of Object.entries(stalled.closedAfter))
    t.diagnostic(
      `${name}: ${after === undefined ? `still open after ${STALL_LIMIT_S} s` : `closed by the server after ${after.toFixed(1)} s`}`,
    );
  const open = Object.entries(stalled.closedAfter)
    .filter(([, v]) => v === undefined)
    .map(([name]) => name);
  assert.deepEqual(open, [], `still open after ${STALL_LIMIT_S} s`);
});
