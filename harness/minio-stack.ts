// A real MinIO (single node, temp disk) wired to a KES-compatible server, plus the real `mc`, all on loopback.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { peer } from './peers.js';

export function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The last lines of a log file, for failure output. */
export function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return `(no ${file})`;
  }
}

export interface KmsClient {
  readonly endpoint: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  readonly defaultKey: string;
}

export class Minio {
  private child: ChildProcess | undefined;
  readonly url: string;
  readonly log: string;
  user = 'kesd-interop';
  password = 'kesd-interop-secret-123';

  /**
   * `launcher` runs MinIO through another command (e.g. `unshare` for a private /etc/hosts); `env` replaces the KMS
   * env; `extraEnv` is added to it (e.g. GODEBUG).
   */
  constructor(
    readonly dir: string,
    readonly port: number,
    readonly consolePort: number,
    public kms: KmsClient,
    private readonly opts: { launcher?: string[]; env?: NodeJS.ProcessEnv; extraEnv?: NodeJS.ProcessEnv } = {},
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.log = join(dir, 'minio.log');
  }

  async start(): Promise<void> {
    await mkdir(join(this.dir, 'disk'), { recursive: true });
    const env = {
      ...(this.opts.env ?? {
        ...process.env,
        MINIO_ROOT_USER: this.user,
        MINIO_ROOT_PASSWORD: this.password,
        MINIO_BROWSER: 'off',
        MINIO_UPDATE: 'off',
        MINIO_KMS_KES_ENDPOINT: this.kms.endpoint,
        MINIO_KMS_KES_CERT_FILE: this.kms.certFile,
        MINIO_KMS_KES_KEY_FILE: this.kms.keyFile,
        MINIO_KMS_KES_CAPATH: this.kms.caFile,
        MINIO_KMS_KES_KEY_NAME: this.kms.defaultKey,
      }),
      ...this.opts.extraEnv,
    };
    const out = createWriteStream(this.log, { flags: 'a' });
    const [command, ...prefix] = [...(this.opts.launcher ?? []), peer('minio')];
    const child = spawn(
      command!,
      [
        ...prefix,
        'server',
        join(this.dir, 'disk'),
        '--address',
        `127.0.0.1:${this.port}`,
        '--console-address',
        `127.0.0.1:${this.consolePort}`,
        '--certs-dir',
        join(this.dir, 'certs'),
      ],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
    this.child = child;
    for (let i = 0; i < 600; i++) {
      if (child.exitCode !== null) throw new Error(`minio exited with ${child.exitCode}:\n${tail(this.log)}`);
      try {
        const res = await fetch(`${this.url}/minio/health/ready`);
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`minio did not become ready:\n${tail(this.log)}`);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((res) => {
      child.once('exit', () => res());
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
    });
  }
}

/** Runs the real `mc` with its own config dir; resolves with stdout, rejects with stdout+stderr. */
export class Mc {
  constructor(private readonly configDir: string) {}

  async alias(minio: Minio): Promise<void> {
    await this.run(['alias', 'set', 'local', minio.url, minio.user, minio.password]);
  }

  async run(args: string[]): Promise<string> {
    try {
      const { stdout } = await promisify(execFile)(
        peer('mc'),
        ['--config-dir', this.configDir, '--no-color', ...args],
        { maxBuffer: 64 << 20 },
      );
      return stdout;
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      throw Object.assign(new Error(`mc ${args.join(' ')} failed (${e.code}): ${e.stdout}${e.stderr}`), {
        stdout: e.stdout,
        stderr: e.stderr,
      });
    }
  }

  async json(args: string[]): Promise<any[]> {
    return (await this.run(['--json', ...args]))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
  }
}
