// The real KES (`kes-latest`, v0.24.0) as a server for tests, and its CLI: `kes server --config`, ready once it accepts
// connections (KES logs in to its keystore before it listens; it wants a client certificate even for /version).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, sleep, tail } from './minio-stack.js';
import { peer } from './peers.js';

export interface KesServer {
  readonly port: number;
  readonly endpoint: string;
  readonly log: string;
  stop(): Promise<void>;
}

/** Writes `config` (a KES config.yml without `address`) and starts `kes server` on a free port. */
export async function startKesServer(dir: string, name: string, config: string): Promise<KesServer> {
  const port = await freePort();
  const file = join(dir, `${name}.yml`);
  await writeFile(file, `address: 127.0.0.1:${port}\n${config}`);
  const log = join(dir, `${name}.log`);
  const out = createWriteStream(log);
  const child: ChildProcess = spawn(peer('kes-latest'), ['server', '--config', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  const stop = () =>
    new Promise<void>((res) => {
      if (child.exitCode !== null || child.signalCode !== null) return res();
      child.once('exit', () => res());
      child.kill('SIGTERM');
    });
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`kes exited with ${child.exitCode}:\n${tail(log)}`);
      const up = await new Promise<boolean>((res) => {
        const socket = net.connect(port, '127.0.0.1', () => (socket.destroy(), res(true)));
        socket.on('error', () => res(false));
      });
      if (up) break;
      if (i > 600) throw new Error(`kes did not listen on ${port}:\n${tail(log)}`);
      await sleep(100);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, endpoint: `https://127.0.0.1:${port}`, log, stop };
}

/** The `kes` CLI (v0.24.0) against a server with an API key; resolves with stdout. */
export async function kesCli(server: { port: number }, apiKey: string, args: string[]): Promise<string> {
  const env = { ...process.env, MINIO_KES_SERVER: `127.0.0.1:${server.port}`, MINIO_KES_API_KEY: apiKey };
  try {
    return (await promisify(execFile)(peer('kes-latest'), [...args.slice(0, 2), '-k', ...args.slice(2)], { env }))
      .stdout;
  } catch (err) {
    const e = err as { stdout: string; stderr: string };
    throw new Error(`kes ${args.join(' ')} failed: ${e.stdout}${e.stderr}`);
  }
}

/** A fresh KES API key (`kes identity new`): the key and its identity. */
export async function newKesApiKey(): Promise<{ apiKey: string; identity: string }> {
  const out = (await promisify(execFile)(peer('kes-latest'), ['identity', 'new'])).stdout;
  return { apiKey: /(kes:v1:\S+)/.exec(out)![1]!, identity: /Your Identity:\s+([0-9a-f]{64})/.exec(out)![1]! };
}
