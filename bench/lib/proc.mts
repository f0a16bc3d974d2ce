// Small process and HTTP helpers for the benchmark: spawning, waiting for a port, descendants, free ports.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Children we started, so an error or ^C never leaves a server behind. Killed one by one, by pid. */
const started = new Set<ChildProcess>();
export function track(child: ChildProcess): ChildProcess {
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}
export function killAll(): void {
  for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.once('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** Spawns a long-running process with stdout+stderr going to a log file (and kept in memory, last 64 KiB). */
export function spawnLogged(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; log: string; cwd?: string },
): { child: ChildProcess; output: () => string } {
  const child = track(
    spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] }),
  );
  const log = createWriteStream(opts.log);
  let buf = '';
  const take = (d: Buffer) => {
    log.write(d);
    buf = (buf + d.toString()).slice(-65536);
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  child.once('exit', () => log.end());
  return { child, output: () => buf };
}

/** Runs a command to completion, returning its output; throws on a non-zero exit. */
export function runSync(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

export function stop(child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  return new Promise((res) => {
    if (child.exitCode !== null || child.signalCode !== null) return res();
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      res();
    });
    child.kill('SIGTERM');
  });
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => res(port));
    });
  });
}

export interface Reply {
  status: number;
  body: string;
}

/** One HTTPS request with a client certificate (server certificate not verified: only used for set-up checks). */
export function request(
  port: number,
  method: string,
  path: string,
  tls: { cert?: string; key?: string },
  body?: string,
): Promise<Reply> {
  return new Promise((res, rej) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        rejectUnauthorized: false,
        cert: tls.cert,
        key: tls.key,
        timeout: 5000,
        headers:
          body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (r) => {
        let text = '';
        r.on('data', (d) => (text += d));
        r.on('end', () => res({ status: r.statusCode ?? 0, body: text }));
        r.on('error', rej);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
    req.end(body);
  });
}

/** Polls GET /version (with the given client certificate: KES requires one on every connection) until it answers 200, or the process exits, or the time is up. */
export async function waitReady(
  name: string,
  port: number,
  child: ChildProcess,
  output: () => string,
  tls: { cert?: string; key?: string } = {},
  timeoutMs = 60_000,
): Promise<void> {
  const tail = () => output().split('\n').slice(-30).join('\n');
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${tail()}`);
    try {
      const r = await request(port, 'GET', '/version', tls);
      if (r.status === 200) return;
      last = `HTTP ${r.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`${name} was not ready on port ${port} after ${timeoutMs} ms (${last}):\n${tail()}`);
}

/** All live descendants of a pid (children of every thread, recursively). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number) => {
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const t of tasks) {
      let kids = '';
      try {
        kids = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.split(/\s+/).filter(Boolean).map(Number)) {
        out.push(k);
        walk(k);
      }
    }
  };
  walk(pid);
  return out;
}

export function exeOf(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return `?${pid}`;
  }
}

function cpuTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((x, y) => x + y, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

/** Machine-wide busy CPU (in cores) over the next `ms` milliseconds. */
export async function busyCores(ms: number): Promise<number> {
  const a = cpuTicks();
  await sleep(ms);
  const b = cpuTicks();
  return (b.busy - a.busy) / 100 / (ms / 1000);
}

/** Waits (at most maxS seconds) until the machine is quiet: busy below `threshold` cores over one second. */
export async function waitQuiet(maxS: number, threshold: number, log: (s: string) => void): Promise<void> {
  if (maxS <= 0) return;
  const until = Date.now() + maxS * 1000;
  let busy = await busyCores(1000);
  if (busy <= threshold) return;
  const t0 = Date.now();
  while (busy > threshold && Date.now() < until) busy = await busyCores(1000);
  log(
    `  waited ${Math.round((Date.now() - t0) / 1000) + 1} s for other load to drop: ${busy.toFixed(2)} cores busy now${busy > threshold ? ' (gave up)' : ''}`,
  );
}
