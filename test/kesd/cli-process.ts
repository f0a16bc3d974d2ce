// Runs the real `kesd` executable (kesd/bin/kesd.js over the built dist/) as a child process.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

export const KESD_BIN = resolve(import.meta.dirname, '../../kesd/bin/kesd.js');

export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function kesd(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [KESD_BIN, ...args], {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
  });
}

/** Starts `kesd server`, resolving with the port once it listens (or rejecting with its output if it exits). */
export interface ServerProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** What the server wrote so far to stderr (logs) and stdout (audit lines). */
  output(): string;
  stdout(): string;
}

export function startServer(args: string[], env: NodeJS.ProcessEnv): Promise<ServerProcess> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [KESD_BIN, 'server', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => {
      stderr += d;
      const m = /listening on \S+:(\d+)/.exec(stderr);
      if (m) res({ child, port: Number(m[1]), output: () => stderr, stdout: () => stdout });
    });
    child.on('exit', (code) => rej(new Error(`kesd server exited with ${code}: ${stderr}`)));
  });
}

export function stopServer(child: ChildProcess): Promise<void> {
  return new Promise((res) => {
    if (child.exitCode !== null) return res();
    child.once('exit', () => res());
    child.kill('SIGTERM');
  });
}

/** A fingerprint of every file under dir: path, size, mode, mtime and content hash. */
export async function fingerprint(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const s = await stat(path);
    const hash = entry.isFile()
      ? createHash('sha256')
          .update(await readFile(path))
          .digest('hex')
      : 'dir';
    out.push(`${path} ${s.size} ${s.mode} ${s.mtimeMs} ${hash}`);
  }
  return out.sort();
}
