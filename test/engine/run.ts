// Runs a command asynchronously (the suite's own servers, e.g. the Helm repository, keep answering meanwhile),
// with a timeout, appending the command and its output to a log file.
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  readonly stdin?: string;
  readonly timeoutMs?: number;
  readonly log?: string;
}

export async function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  const child = spawn(file, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => undefined);
  child.stdin.end(opts.stdin ?? '');
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
  }, opts.timeoutMs ?? 600_000);
  const code = await new Promise<number | null>((ok) => {
    child.on('error', (err) => {
      stderr += `\n${err.message}`;
      ok(127);
    });
    child.on('close', (c) => ok(c));
  });
  clearTimeout(timer);
  if (timedOut) stderr += `\n(killed after ${opts.timeoutMs ?? 600_000} ms)`;
  const ms = Date.now() - started;
  if (opts.log)
    appendFileSync(
      opts.log,
      `\n$ ${file} ${args.join(' ')}  [exit ${code}, ${ms} ms]\n${stdout}${stderr ? `--- stderr\n${stderr}` : ''}`,
    );
  return { code, stdout, stderr, ms };
}

/** Polls until check returns a value other than undefined, or throws with what the last attempt said. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined>,
  everyMs = 500,
): Promise<T> {
  const started = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() - started > timeoutMs)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
