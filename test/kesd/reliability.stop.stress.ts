// Stress run (not part of `npm test`): many graceful restarts of a `kesd server` under write load, over HTTP/1.1 or
// h2, with 1 or more workers. Every request either gets an answer or fails at the connection level ("unanswered");
// an unanswered write is then looked up: a create whose key exists, or a delete whose key is gone, was applied
// without an answer. That count must be 0. Each loop owns its key names, so the model is exact.
//
//   npm run build && node_modules/.bin/node --import tsx test/kesd/reliability.stop.stress.ts
// Settings: KESD_STRESS_RESTARTS (50), KESD_STRESS_RESTART_EVERY_MS (1500), KESD_STRESS_LOOPS (8),
// KESD_STRESS_WORKERS (2), KESD_STRESS_PROTOCOL (h1 | h2, h1), KESD_STRESS_SEED.
import http2 from 'node:http2';
import {
  agentFor,
  call,
  deadline,
  envInt,
  groupPids,
  makeFixture,
  rng,
  seedFrom,
  sleep,
  startKesd,
  type Fixture,
  type KesdProcess,
  type Rng,
} from './load.js';
import type { TestIdentity } from './harness.js';

const RESTARTS = envInt('KESD_STRESS_RESTARTS', 50);
const RESTART_EVERY_MS = envInt('KESD_STRESS_RESTART_EVERY_MS', 1500);
const LOOPS = envInt('KESD_STRESS_LOOPS', 8);
const WORKERS = String(envInt('KESD_STRESS_WORKERS', 2));
const PROTOCOL = process.env.KESD_STRESS_PROTOCOL === 'h2' ? 'h2' : 'h1';
const SEED = seedFrom('KESD_STRESS_SEED');
const REQUEST_MS = 30_000;

interface Answer {
  readonly status: number;
  readonly text: string;
}

/** A request that got no answer: why (the client's error code). */
class Unanswered extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

interface Client {
  send(method: string, path: string, body?: unknown): Promise<Answer>;
  close(): void;
}

function h1Client(who: TestIdentity, port: () => number): Client {
  const agent = agentFor(who, { maxSockets: 1 });
  return {
    async send(method, path, body) {
      try {
        const reply = await call(agent, port(), method, path, body, { timeoutMs: REQUEST_MS });
        return { status: reply.status, text: reply.text };
      } catch (err) {
        throw new Unanswered((err as NodeJS.ErrnoException).code ?? String(err));
      }
    },
    close: () => agent.destroy(),
  };
}

function h2Client(who: TestIdentity, port: () => number): Client {
  let session: Promise<http2.ClientHttp2Session> | undefined;
  // A session that could not connect sent nothing: its requests were refused, not cut.
  const connect = () => {
    if (session !== undefined) return session;
    const current = new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      const s = http2.connect(`https://127.0.0.1:${port()}`, {
        cert: who.cert,
        key: who.key,
        rejectUnauthorized: false,
      });
      const forget = () => {
        if (session === current) session = undefined;
      };
      s.once('connect', () => resolve(s));
      s.once('error', (err: NodeJS.ErrnoException) => {
        forget();
        reject(new Unanswered(err.code ?? String(err)));
      });
      s.once('goaway', forget);
      s.once('close', forget);
    });
    session = current;
    return current;
  };
  return {
    async send(method, path, body) {
      let s: http2.ClientHttp2Session;
      try {
        s = await connect();
      } catch (err) {
        session = undefined;
        throw err;
      }
      return new Promise((resolve, reject) => {
        let stream: http2.ClientHttp2Stream;
        try {
          stream = s.request({ ':method': method, ':path': path }, { endStream: body === undefined });
        } catch (_err) {
          session = undefined;
          // The session was closing: the request never left.
          return reject(new Unanswered('ECONNREFUSED'));
        }
        let status = 0;
        let text = '';
        const timer = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), REQUEST_MS);
        stream.on('response', (headers) => (status = Number(headers[':status'])));
        stream.setEncoding('utf8');
        stream.on('data', (d: string) => (text += d));
        stream.on('end', () => {
          clearTimeout(timer);
          if (status === 0) reject(new Unanswered('no response'));
          else resolve({ status, text });
        });
        stream.on('error', (err: NodeJS.ErrnoException) => {
          clearTimeout(timer);
          reject(new Unanswered(`${err.code}${/REFUSED_STREAM/.test(err.message) ? ' REFUSED_STREAM' : ''}`));
        });
        stream.on('close', () => {
          clearTimeout(timer);
          if (status === 0) reject(new Unanswered(`closed rst=${stream.rstCode}`));
        });
        if (body !== undefined) stream.end(JSON.stringify(body));
      });
    },
    close: () =>
      void session?.then(
        (s) => s.destroy(),
        () => {},
      ),
  };
}

const counts = {
  requests: 0,
  answered: 0,
  refused: 0,
  unanswered: 0,
  unansweredWrites: 0,
  appliedUnanswered: 0,
  restarts: 0,
};
const unansweredBy: Record<string, number> = {};
const appliedUnanswered: string[] = [];

/** The request never reached a handler: nobody listening, or an h2 stream the server refused after its GOAWAY. */
const refused = (code: string) => code === 'ECONNREFUSED' || code.endsWith('REFUSED_STREAM');

class Loop {
  readonly live = new Set<string>();
  readonly gone = new Set<string>();
  /** Unanswered creates and deletes: looked up at the end. */
  readonly createdMaybe = new Set<string>();
  readonly deletedMaybe = new Set<string>();
  private serial = 0;

  constructor(
    readonly id: number,
    readonly client: Client,
    private readonly r: Rng,
  ) {}

  private async send(method: string, path: string, write: boolean): Promise<Answer | undefined> {
    for (;;) {
      counts.requests++;
      try {
        const answer = await this.client.send(
          method,
          path,
          method === 'POST' && path.includes('/generate/') ? {} : undefined,
        );
        counts.answered++;
        return answer;
      } catch (err) {
        if (!(err instanceof Unanswered)) throw err;
        if (refused(err.code)) {
          counts.refused++;
          await sleep(20);
          continue;
        }
        counts.unanswered++;
        if (write) counts.unansweredWrites++;
        unansweredBy[err.code] = (unansweredBy[err.code] ?? 0) + 1;
        if (process.env.KESD_STRESS_VERBOSE)
          console.error(`${new Date().toISOString()} unanswered ${method} ${path}: ${err.code}`);
        return undefined;
      }
    }
  }

  async step(): Promise<void> {
    const roll = this.r.next();
    if (roll < 0.45 || this.live.size === 0) {
      const name = `g-${this.id}-${this.serial++}`;
      const answer = await this.send('POST', `/v1/key/create/${name}`, true);
      if (answer === undefined) return void this.createdMaybe.add(name);
      if (answer.status !== 200) throw new Error(`create ${name}: ${answer.status} ${answer.text}`);
      this.live.add(name);
    } else if (roll < 0.7) {
      const name = this.r.pick([...this.live]);
      this.live.delete(name);
      const answer = await this.send('DELETE', `/v1/key/delete/${name}`, true);
      if (answer === undefined) return void this.deletedMaybe.add(name);
      if (answer.status !== 200) throw new Error(`delete ${name}: ${answer.status} ${answer.text}`);
      this.gone.add(name);
    } else {
      const name = this.r.pick([...this.live]);
      const answer = await this.send('POST', `/v1/key/generate/${name}`, false);
      if (answer !== undefined && answer.status !== 200)
        throw new Error(`generate ${name}: ${answer.status} ${answer.text}`);
    }
  }

  /** Every answered write holds; every unanswered one that was applied is counted. */
  async verify(client: Client): Promise<void> {
    const exists = async (name: string) => {
      const a = await client.send('GET', `/v1/key/describe/${name}`);
      if (a.status !== 200 && a.status !== 404) throw new Error(`describe ${name}: ${a.status} ${a.text}`);
      return a.status === 200;
    };
    for (const name of this.live) if (!(await exists(name))) throw new Error(`acknowledged key ${name} is missing`);
    for (const name of this.gone) if (await exists(name)) throw new Error(`deleted key ${name} is back`);
    for (const name of this.createdMaybe) if (await exists(name)) appliedUnanswered.push(`create ${name}`);
    for (const name of this.deletedMaybe) if (!(await exists(name))) appliedUnanswered.push(`delete ${name}`);
  }
}

async function main(): Promise<void> {
  const fx: Fixture = await makeFixture({ keys: [] });
  const env = { ...fx.env };
  let proc: KesdProcess = await startKesd(fx.dataDir, env, ['--workers', WORKERS], { stdout: 'ignore' });
  const port = proc.port;
  const args = ['--workers', WORKERS, '--addr', `127.0.0.1:${port}`];
  const newClient = () => (PROTOCOL === 'h2' ? h2Client(fx.admin, () => port) : h1Client(fx.admin, () => port));
  const seeds = rng(SEED);
  const loops = Array.from({ length: LOOPS }, (_, i) => new Loop(i, newClient(), rng(seeds.int(2 ** 32))));
  let running = true;
  const errors: string[] = [];
  const load = Promise.all(
    loops.map(async (loop) => {
      try {
        while (running) await loop.step();
      } catch (err) {
        errors.push(`loop ${loop.id}: ${(err as Error).message}`);
        running = false;
      }
    }),
  );
  const t0 = Date.now();
  const stops: number[] = [];
  try {
    for (let i = 0; i < RESTARTS && running; i++) {
      await sleep(RESTART_EVERY_MS);
      const old = proc;
      const stopAt = Date.now();
      process.kill(old.pid, 'SIGTERM');
      const exit = await deadline(old.exited, 30_000, 'kesd to exit after SIGTERM');
      stops.push(Date.now() - stopAt);
      if (exit.code !== 0)
        throw new Error(`graceful stop exited ${JSON.stringify(exit)}: ${old.output().slice(-2000)}`);
      if ((await groupPids(old.pid)).length > 0) throw new Error('a worker outlived the primary');
      await old.stop();
      proc = await startKesd(fx.dataDir, env, args, { stdout: 'ignore' });
      counts.restarts++;
    }
  } finally {
    running = false;
    await load;
  }
  const verifier = newClient();
  for (const loop of loops) await loop.verify(verifier);
  verifier.close();
  for (const loop of loops) loop.client.close();
  await proc.stop();
  await fx.remove();
  counts.appliedUnanswered = appliedUnanswered.length;
  const sorted = [...stops].sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      protocol: PROTOCOL,
      workers: Number(WORKERS),
      loops: LOOPS,
      seed: SEED,
      seconds: Math.round((Date.now() - t0) / 1000),
      ...counts,
      unansweredBy,
      appliedUnanswered,
      errors,
      stopMs: { median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] },
    }),
  );
  if (errors.length > 0 || appliedUnanswered.length > 0) process.exitCode = 1;
}

await main();
