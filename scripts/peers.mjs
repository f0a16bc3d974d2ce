#!/usr/bin/env node
// Builds the real interop peers (minio, mc, kes …) pinned in peers.json with `go install module@version`.
// Each peer+version gets its own directory under $KESD_PEERS_DIR or <repo>/.peers, so a version change
// rebuilds and an unchanged one is reused. Prints and writes <dir>/bin.json: name → absolute binary path.
//   node scripts/peers.mjs           build what is missing (sequentially), then print the map
//   node scripts/peers.mjs --check   exit 0 if every binary exists, else 1; never builds
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dir = resolve(process.env.KESD_PEERS_DIR || join(repo, '.peers'));
const peers = JSON.parse(readFileSync(join(repo, 'peers.json'), 'utf8'));
const check = process.argv.includes('--check');

const entries = Object.entries(peers).map(([name, { module, version }]) => {
  if (!module || !version) fail(`peers.json: "${name}" needs "module" and "version"`);
  const home = join(dir, `${name}@${version}`.replace(/[^\w.@-]/g, '_'));
  return { name, module, version, home, bin: join(home, name), built: join(home, module.split('/').pop()) };
});

function fail(message) {
  console.error(`peers: ${message}`);
  process.exit(1);
}

function elapsed(start) {
  const s = Math.round((Date.now() - start) / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

// `go install module@version` into peer.home, its output going to <home>/build.log; resolves to the exit code.
function goInstall(peer, log) {
  const env = {
    ...process.env,
    GOBIN: peer.home,
    GOFLAGS: `${process.env.GOFLAGS ?? ''} -trimpath`.trim(),
    CGO_ENABLED: '0',
  };
  const child = spawn('go', ['install', '-v', `${peer.module}@${peer.version}`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = createWriteStream(log);
  let lines = 0;
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (chunk) => {
      out.write(chunk);
      lines += chunk.toString().split('\n').length - 1;
    });
  }
  const start = Date.now();
  const beat = setInterval(() => console.log(`  … ${peer.name}: ${elapsed(start)}, ${lines} packages/lines so far`), 60_000);
  return new Promise((done) => {
    child.on('error', (err) => out.end(`\n${err.message}\n`, () => (clearInterval(beat), done(127))));
    child.on('close', (code) => out.end(() => (clearInterval(beat), done(code ?? 1))));
  });
}

const missing = entries.filter((p) => !existsSync(p.bin));
if (check) {
  for (const p of missing) console.error(`peers: missing ${p.name} (${p.module}@${p.version}) at ${p.bin}`);
  process.exit(missing.length ? 1 : 0);
}

mkdirSync(dir, { recursive: true });
for (const [i, p] of entries.entries()) {
  const tag = `[${i + 1}/${entries.length}] ${p.name} ${p.module}@${p.version}`;
  if (!missing.includes(p)) {
    console.log(`${tag}: reusing ${p.bin}`);
    continue;
  }
  console.log(`${tag}: building (go install; minio takes 10-25 min on 2 cores) …`);
  mkdirSync(p.home, { recursive: true });
  const log = join(p.home, 'build.log');
  const start = Date.now();
  const code = await goInstall(p, log);
  if (code !== 0 || !existsSync(p.built)) {
    const tail = readFileSync(log, 'utf8').trimEnd().split('\n').slice(-40).join('\n');
    console.error(tail);
    fail(`building ${p.name} (${p.module}@${p.version}) failed: ${code !== 0 ? `go install exited ${code}` : `no ${p.built} produced`}; full log: ${log}`);
  }
  if (p.built !== p.bin) {
    rmSync(p.bin, { force: true });
    renameSync(p.built, p.bin);
  }
  console.log(`${tag}: built in ${elapsed(start)} → ${p.bin}`);
}

const map = Object.fromEntries(entries.map((p) => [p.name, p.bin]));
const json = `${JSON.stringify(map, null, 2)}\n`;
writeFileSync(join(dir, 'bin.json'), json);
process.stdout.write(json);
