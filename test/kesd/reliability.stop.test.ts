// A graceful stop (startServer().close(), what SIGTERM runs) must never cut a request whose handler has started:
// that handler may already have written to the store, and a client that sees its connection cut cannot tell.
// Issue 12, finding 7: the soak saw a create applied and its answer cut. These tests hold a create's handler at the
// exact point (in the store, before or after its commit), let the stop's grace run out (mocked timers: no waiting,
// no timing), release the handler, and require the answer to arrive and to match the store.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import https from 'node:https';
import { rm } from 'node:fs/promises';
import { readServerConfig } from '../../kesd/src/config/config.ts';
import { openSealedRootKey } from '../../kesd/src/store/unseal.ts';
import { startKesd } from '../../kesd/src/server/run.ts';
import { STOP_GRACE_MS } from '../../kesd/src/server/server.ts';
import type { Store } from '../../kesd/src/store/store.ts';
import { readReply, startTestServer, type Reply, type TestServer } from './harness.ts';
import { deadline } from './load.ts';

interface Gate {
  /** Resolves once the held write has reached the hold point. */
  readonly reached: Promise<void>;
  release(): void;
}

/** Holds the create of key `name` in the store, before its commit or after it (applied, not yet answered). */
function holdCreate(store: Store, name: string, when: 'before commit' | 'after commit'): Gate {
  let reached!: () => void;
  let release!: () => void;
  const reachedP = new Promise<void>((r) => (reached = r));
  const released = new Promise<void>((r) => (release = r));
  const putIfAbsent = store.putIfAbsent.bind(store);
  store.putIfAbsent = async (path, value) => {
    if (!path.endsWith(`/key/${name}`)) return putIfAbsent(path, value);
    if (when === 'before commit') {
      reached();
      await released;
      return putIfAbsent(path, value);
    }
    const created = await putIfAbsent(path, value);
    reached();
    await released;
    return created;
  };
  return { reached: reachedP, release };
}

type Outcome = { answered: Reply } | { cut: string };

function createOverHttp1(s: TestServer, name: string): Promise<Outcome> {
  const agent = new https.Agent({
    keepAlive: true,
    ca: s.server.cert,
    cert: s.admin.cert,
    key: s.admin.key,
    servername: 'localhost',
  });
  return new Promise<Outcome>((resolve) => {
    const req = https.request(
      { host: '127.0.0.1', port: s.port, method: 'POST', path: `/v1/key/create/${name}`, agent },
      (res) => {
        readReply(res).then(
          (answered) => resolve({ answered }),
          (err: Error) => resolve({ cut: err.message }),
        );
      },
    );
    req.on('error', (err) => resolve({ cut: err.message }));
    req.end();
  }).finally(() => agent.destroy());
}

function createOverHttp2(s: TestServer, name: string): Promise<Outcome> {
  const session = http2.connect(s.url, {
    ca: s.server.cert,
    cert: s.admin.cert,
    key: s.admin.key,
    servername: 'localhost',
  });
  session.on('error', () => {});
  return new Promise<Outcome>((resolve) => {
    const stream = session.request({ ':method': 'POST', ':path': `/v1/key/create/${name}` });
    let status = 0;
    let text = '';
    stream.setEncoding('utf8');
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (d: string) => (text += d));
    stream.on('end', () =>
      resolve(
        status === 0
          ? { cut: 'the stream ended without an answer' }
          : { answered: { status, headers: {}, text, json: () => JSON.parse(text) } },
      ),
    );
    stream.on('error', (err) => resolve({ cut: err.message }));
    stream.on('close', () => resolve({ cut: `stream closed, code ${stream.rstCode}` }));
    stream.end();
  }).finally(() => session.destroy());
}

/** Whether key `name` exists, asked of a new kesd on the same data dir (the stopped one closed its store). */
async function keyExists(s: TestServer, name: string): Promise<boolean> {
  const config = await readServerConfig(s.dataDir, s.env);
  const { root } = await openSealedRootKey(s.dataDir, s.env);
  const kesd = await startKesd({ dir: s.dataDir, config, root, address: '127.0.0.1:0', auditStdout: false });
  const agent = new https.Agent({ ca: s.server.cert, cert: s.admin.cert, key: s.admin.key, servername: 'localhost' });
  try {
    const status = await new Promise<number>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: kesd.port, path: `/v1/key/describe/${name}`, agent }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
        .on('error', reject);
    });
    assert.ok(status === 200 || status === 404, `describe ${name}: ${status}`);
    return status === 200;
  } finally {
    agent.destroy();
    await kesd.stop();
  }
}

async function stopWhileHeld(
  t: TestContext,
  protocol: 'HTTP/1.1' | 'h2',
  when: 'before commit' | 'after commit',
): Promise<void> {
  const s = await startTestServer();
  try {
    const name = 'held-by-the-test';
    const gate = holdCreate(s.kesd.system.records.store, name, when);
    const outcome = (protocol === 'h2' ? createOverHttp2 : createOverHttp1)(s, name);
    await deadline(gate.reached, 10_000, 'the create to reach the store');
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    const stopped = s.kesd.stop();
    t.mock.timers.tick(STOP_GRACE_MS); // the grace runs out while the handler is held
    gate.release();
    t.mock.timers.reset();
    const result = await deadline(outcome, 10_000, 'the create to be answered or cut');
    await deadline(stopped, 10_000, 'the stop to end');
    const exists = await keyExists(s, name);
    assert.ok(
      'answered' in result,
      `the create was cut (${'cut' in result ? result.cut : ''}); the key ${exists ? 'was' : 'was not'} created`,
    );
    assert.equal(result.answered.status, 200, result.answered.text);
    assert.equal(exists, true, 'answered 200, but the key is not there');
  } finally {
    t.mock.timers.reset();
    await rm(s.dir, { recursive: true, force: true });
  }
}

test('a stop whose grace runs out while a create has committed and is not yet answered still answers it (HTTP/1.1)', (t) =>
  stopWhileHeld(t, 'HTTP/1.1', 'after commit'));

test('a stop whose grace runs out while a create has committed and is not yet answered still answers it (h2)', (t) =>
  stopWhileHeld(t, 'h2', 'after commit'));

test('a stop whose grace runs out while a create waits for the store still carries it out and answers it (HTTP/1.1)', (t) =>
  stopWhileHeld(t, 'HTTP/1.1', 'before commit'));

test('a stop whose grace runs out while a create waits for the store still carries it out and answers it (h2)', (t) =>
  stopWhileHeld(t, 'h2', 'before commit'));

// A handler keeps running when its client leaves; closing the store under it (as the stop did once its last connection
// was gone) fails its write, or races it.
test('a stop keeps the store open until the handler of a request whose client left has ended', async () => {
  const s = await startTestServer();
  try {
    const name = 'held-by-the-test';
    const store = s.kesd.system.records.store;
    const gate = holdCreate(store, name, 'before commit');
    const agent = new https.Agent({ ca: s.server.cert, cert: s.admin.cert, key: s.admin.key, servername: 'localhost' });
    const req = https.request({
      host: '127.0.0.1',
      port: s.port,
      method: 'POST',
      path: `/v1/key/create/${name}`,
      agent,
    });
    req.on('error', () => {});
    req.end();
    await deadline(gate.reached, 10_000, 'the create to reach the store');
    req.destroy(); // the client leaves
    agent.destroy();
    const closed = once(s.kesd.server, 'close');
    const stopped = s.kesd.stop();
    await deadline(closed, 10_000, 'the listener to close');
    await new Promise((resolve) => setImmediate(resolve)); // what the stop does next has happened
    await assert.doesNotReject(store.status(), 'the store was closed while a handler was still running');
    gate.release();
    await deadline(stopped, 10_000, 'the stop to end');
    assert.equal(
      await keyExists(s, name),
      true,
      'the create, held in the store when the stop began, was not carried out',
    );
  } finally {
    await rm(s.dir, { recursive: true, force: true });
  }
});

// An answer in flight when a stop begins says `connection: close`, so its client opens no further request on that
// connection (one sent there near the end of the grace would be in flight when it ran out).
test('an HTTP/1.1 answer in flight when a stop begins says connection: close', async () => {
  const s = await startTestServer();
  try {
    const name = 'held-by-the-test';
    const gate = holdCreate(s.kesd.system.records.store, name, 'after commit');
    const outcome = createOverHttp1(s, name);
    await deadline(gate.reached, 10_000, 'the create to reach the store');
    const stopped = s.kesd.stop();
    gate.release();
    const result = await deadline(outcome, 10_000, 'the create to be answered');
    await deadline(stopped, 10_000, 'the stop to end');
    assert.ok('answered' in result, `the create was cut (${'cut' in result ? result.cut : ''})`);
    assert.equal(result.answered.status, 200);
    assert.equal(result.answered.headers.connection, 'close');
  } finally {
    await rm(s.dir, { recursive: true, force: true });
  }
});
