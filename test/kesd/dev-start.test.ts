// `npm start` on a fresh checkout: it creates .kesd-dev, prints a curl example, and that example returns 200.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const DEV = resolve(import.meta.dirname, '../../kesd/dist/dev.js');

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

test('npm start prints a curl example that returns 200', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-dev-'));
  const port = await freePort();
  const child = spawn(process.execPath, [DEV], {
    cwd: dir,
    env: { ...process.env, KESD_DEV_ADDR: `127.0.0.1:${port}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    let out = '';
    let err = '';
    await new Promise<void>((res, rej) => {
      const ready = () => /listening/.test(err) && /^\s*curl /m.test(out) && res();
      child.stdout.on('data', (d) => ((out += d), ready()));
      child.stderr.on('data', (d) => ((err += d), ready()));
      child.on('exit', (code) => rej(new Error(`npm start exited ${code}: ${out}${err}`)));
    });
    const line = /^\s*(curl .*)$/m.exec(out)![1]!;
    assert.match(line, /--cert \.kesd-dev\/admin\.crt/);
    const args = line
      .split(/\s+/)
      .slice(1)
      .map((a) => a.replace(/^'(.*)'$/, '$1'));
    const { stdout } = await promisify(execFile)('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...args], {
      cwd: dir,
    });
    assert.equal(stdout, '200');
  } finally {
    child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
});
