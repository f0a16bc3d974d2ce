// The bench's Go programs (bench/loadgen, bench/s3load: each its own module, stdlib only) are built into a cache
// dir outside the clone, keyed by a hash of their sources and the Go version, so a run rebuilds one only when
// either changed.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { runSync } from './proc.mts';
import { REPO } from './targets.mts';

// The Go on PATH, never one it would download; no cgo and no GOFLAGS from the caller, so the build is the same
// everywhere.
const GO_ENV = { GOTOOLCHAIN: 'local', CGO_ENABLED: '0', GOFLAGS: '' };

export function cacheDir(): string {
  return (
    process.env.KESD_BENCH_CACHE ||
    join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'stateful-kes', 'bench')
  );
}

export function goVersion(): string {
  return runSync('go', ['version'], { env: { ...process.env, GOTOOLCHAIN: GO_ENV.GOTOOLCHAIN } }).trim();
}

/** The binary of bench/<name>, built (as <cache>/<name>-<hash>) only when its sources or the Go toolchain changed. */
export function ensureGoTool(name: string, description: string, log: (s: string) => void): string {
  const src = join(REPO, 'bench', name);
  const files = readdirSync(src)
    .filter((f) => f.endsWith('.go') || f === 'go.mod' || f === 'go.sum')
    .sort();
  const h = createHash('sha256');
  for (const f of files)
    h.update(f)
      .update('\0')
      .update(readFileSync(join(src, f)))
      .update('\0');
  const go = goVersion();
  const dir = cacheDir();
  const bin = join(dir, `${name}-${h.update(go).digest('hex').slice(0, 16)}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  log(`building ${description} (${go}) → ${bin}`);
  // Built under a temporary name and renamed, so a concurrent or interrupted run never sees half a binary.
  const tmp = `${bin}.tmp-${process.pid}`;
  try {
    runSync('go', ['build', '-trimpath', '-buildvcs=false', '-o', tmp, '.'], {
      cwd: src,
      env: { ...process.env, ...GO_ENV },
    });
    renameSync(tmp, bin);
  } finally {
    rmSync(tmp, { force: true });
  }
  return bin;
}
