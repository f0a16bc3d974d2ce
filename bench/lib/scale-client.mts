// The scale benchmark's client side: a streaming list reader (counts lines, never holds the body) and sequential
// latency samples on one keep-alive connection.
import https from 'node:https';

export interface Tls {
  cert: string;
  key: string;
  ca: string;
}

export interface ListRun {
  pattern: string;
  lines: number;
  bytes: number;
  seconds: number;
  /** Request sent → first body byte. */
  firstByteMs: number;
  linesPerS: number;
  mibPerS: number;
  /** The response ended properly (final chunk); false if the server or the network cut it off. */
  complete: boolean;
  /** Lines of the form {"error":…} (KES's way to fail a listing that has started). */
  errorLines: number;
  status: number;
  problem?: string;
}

/** GET /v1/key/list/<pattern>, read as a stream. */
export function listKeys(port: number, tls: Tls, pattern: string, timeoutMs = 600_000): Promise<ListRun> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let firstByteMs = NaN;
    let lines = 0;
    let bytes = 0;
    let errorLines = 0;
    let status = 0;
    let settled = false;
    let tail = '';
    const done = (complete: boolean, problem?: string) => {
      if (settled) return;
      settled = true;
      const seconds = (performance.now() - t0) / 1000;
      resolve({
        pattern,
        lines,
        bytes,
        seconds,
        firstByteMs,
        linesPerS: lines / seconds,
        mibPerS: bytes / 1048576 / seconds,
        complete,
        errorLines,
        status,
        problem,
      });
    };
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method: 'GET',
        path: `/v1/key/list/${pattern}`,
        agent: false,
        ...tls,
        timeout: timeoutMs,
      },
      (res) => {
        status = res.statusCode ?? 0;
        res.on('data', (chunk: Buffer) => {
          if (bytes === 0) firstByteMs = performance.now() - t0;
          bytes += chunk.length;
          for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
          // Error lines are short and come last: look only at the end of the stream.
          tail = (tail + chunk.subarray(Math.max(0, chunk.length - 256)).toString('latin1')).slice(-512);
        });
        res.on('end', () => {
          errorLines = (tail.match(/\{"error":/g) ?? []).length;
          done(status === 200, status === 200 ? undefined : `HTTP ${status}`);
        });
        res.on('error', (err) => done(false, err.message));
        res.on('close', () => done(false, 'the connection closed before the response ended'));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no progress for ${timeoutMs} ms`)));
    req.on('error', (err) => done(false, err.message));
    req.end();
  });
}

export interface Latency {
  samples: number;
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function latencyStats(ms: number[], errors: number): Latency {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => (s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!);
  return {
    samples: s.length,
    errors,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: s.length ? s[s.length - 1]! : NaN,
    mean: s.reduce((a, b) => a + b, 0) / (s.length || 1),
  };
}

/** One request on the agent's single connection; resolves with its status and the time to the last byte. */
function timed(
  agent: https.Agent,
  port: number,
  tls: Tls,
  method: string,
  path: string,
  body: string,
): Promise<{ status: number; ms: number; text: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = https.request(
      { host: '127.0.0.1', port, method, path, agent, ...tls, headers: { 'content-length': Buffer.byteLength(body) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0, text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export interface ColdWarm {
  /** Latency of each successful request, in ms: first use of each key since the start, then the same keys again. */
  coldMs: number[];
  warmMs: number[];
  errors: number;
  firstError?: string;
}

/**
 * Generates a data key with each named key in turn, one request at a time on one keep-alive connection (so every
 * request reaches the same kesd worker): first pass cold (the keys were never used since the start), second pass
 * warm (now cached). The connection is opened and warmed by one request on `warmKey` (not among `names`) first.
 */
export async function generateColdWarm(
  port: number,
  tls: Tls,
  names: readonly string[],
  warmKey: string,
): Promise<ColdWarm> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const out: ColdWarm = { coldMs: [], warmMs: [], errors: 0 };
  const pass = async (into: number[]) => {
    for (const name of names) {
      const r = await timed(agent, port, tls, 'POST', `/v1/key/generate/${name}`, '{}');
      if (r.status === 200) into.push(r.ms);
      else {
        out.errors++;
        out.firstError ??= `HTTP ${r.status} ${r.text.trim()}`;
      }
    }
  };
  try {
    const warmup = await timed(agent, port, tls, 'POST', `/v1/key/generate/${warmKey}`, '{}');
    if (warmup.status !== 200) throw new Error(`generate on ${warmKey} answered ${warmup.status}: ${warmup.text}`);
    await pass(out.coldMs);
    await pass(out.warmMs);
    return out;
  } finally {
    agent.destroy();
  }
}
