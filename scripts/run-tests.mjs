#!/usr/bin/env node
// Runs node:test over the given globs with tsx, and fails when no test ran (Node's runner exits 0 on zero tests).
import { spawnSync } from 'node:child_process';
import { globSync } from 'node:fs';

const patterns = process.argv.slice(2);
const files = patterns.flatMap((p) => globSync(p)).sort();
if (files.length === 0) {
  console.error(`run-tests: no test files match ${patterns.join(' ')}`);
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=2', ...files],
  { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 },
);
process.stdout.write(result.stdout);
const ran = /^ℹ tests (\d+)$/m.exec(result.stdout);
if (result.status === 0 && (!ran || Number(ran[1]) === 0)) {
  console.error('run-tests: the runner reported zero tests');
  process.exit(1);
}
process.exit(result.status ?? 1);
