#!/usr/bin/env node
// Checks .github/workflows with actionlint, pinned below and built once from the Go module proxy into
// ~/.cache/stateful-kes/tools/actionlint@<version> (outside the clone, so fresh clones reuse it). Needs Go for the
// first build. Exits with actionlint's status (1 when it reports a problem).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const VERSION = 'v1.7.12';
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const home = join(
  process.env.XDG_CACHE_HOME || join(homedir(), '.cache'),
  'stateful-kes',
  'tools',
  `actionlint@${VERSION}`,
);
const bin = join(home, 'actionlint');

if (!existsSync(bin)) {
  mkdirSync(home, { recursive: true });
  console.log(`actionlint: building github.com/rhysd/actionlint ${VERSION} into ${home}`);
  const built = spawnSync('go', ['install', `github.com/rhysd/actionlint/cmd/actionlint@${VERSION}`], {
    stdio: 'inherit',
    env: { ...process.env, GOBIN: home, CGO_ENABLED: '0', GOFLAGS: `${process.env.GOFLAGS ?? ''} -trimpath`.trim() },
  });
  if (built.error || built.status !== 0) {
    console.error(
      `actionlint: the build failed (${built.error?.message ?? `exit ${built.status}`}); it needs Go and the Go module proxy`,
    );
    process.exit(1);
  }
}
const run = spawnSync(bin, ['-verbose'], { cwd: repo, stdio: 'inherit' });
process.exit(run.status ?? 1);
