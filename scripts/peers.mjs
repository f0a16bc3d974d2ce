#!/usr/bin/env node
// Builds the real interop peers (minio, mc, kes, vault …) pinned in peers.json with `go install module@version`, or,
// for a module whose go.mod has replace directives (`go install` refuses those; peers.json lists the non-local ones
// under "replace" as old[@v]=new@v), from a throwaway main module that requires it with those replaces.
// Each peer+version gets its own directory under $KESD_PEERS_DIR or ~/.cache/stateful-kes/peers (outside the
// clone, so fresh clones on the same machine reuse the builds), so a version change
// rebuilds and an unchanged one is reused. Prints and writes <dir>/bin.json: name → absolute binary path.
//   node scripts/peers.mjs           build what is missing (sequentially), then print the map
//   node scripts/peers.mjs --check   exit 0 if every binary exists, else 1; never builds
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { homedir } from 'node:os';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dir = resolve(
  process.env.KESD_PEERS_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'stateful-kes', 'peers'),
);
const peers = JSON.parse(readFileSync(join(repo, 'peers.json'), 'utf8'));
const check = process.argv.includes('--check');

const entries = Object.entries(peers).map(([name, { module, version, replace = [] }]) => {
  if (!module || !version) fail(`peers.json: "${name}" needs "module" and "version"`);
  if (!Array.isArray(replace) || replace.some((r) => typeof r !== 'string' || !/^[^=\s]+=[^=\s]+@[^=\s]+$/.test(r))) {
    fail(`peers.json: "${name}".replace must be a list of "old[@version]=new@version"`);
  }
  const home = join(dir, `${name}@${version}`.replace(/[^\w.@-]/g, '_'));
  return { name, module, version, replace, home, bin: join(home, name), built: join(home, module.split('/').pop()) };
});

function fail(message) {
  console.error(`peers: ${message}`);
  process.exit(1);
}

function elapsed(start) {
  const s = Math.round((Date.now() - start) / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

const goEnv = { ...process.env, GOFLAGS: `${process.env.GOFLAGS ?? ''} -trimpath`.trim(), CGO_ENABLED: '0' };

// Runs `go args…` in cwd with its output appended to log; resolves to the exit code.
function go(args, { cwd, log, env = goEnv }) {
  const out = createWriteStream(log, { flags: 'a' });
  out.write(`$ go ${args.join(' ')}\n`);
  const child = spawn('go', args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(out, { end: false });
  child.stderr.pipe(out, { end: false });
  return new Promise((done) => {
    child.on('error', (err) => out.end(`${err.message}\n`, () => done(127)));
    child.on('close', (code) => out.end(() => done(code ?? 1)));
  });
}

// `go install module@version` with GOBIN=peer.home. The proxy here refuses the version list of some
// modules (github.com/minio/kes: 403), which `go install` needs for its deprecation check; then the same
// build list is built from a throwaway module instead. A module with replaces goes that way at once.
async function build(peer, log) {
  if (peer.replace.length > 0) return buildInModule(peer, log);
  const code = await go(['install', '-v', `${peer.module}@${peer.version}`], {
    cwd: peer.home,
    log,
    env: { ...goEnv, GOBIN: peer.home },
  });
  if (code === 0 || !/loading deprecation for .*@v\/list: 403/s.test(readFileSync(log, 'utf8'))) return code;
  console.log(
    `  ${peer.name}: the proxy refuses the module's version list, so go install can't run; building via a throwaway module`,
  );
  return buildInModule(peer, log);
}

// A throwaway main module that requires the peer (`go get`), with the peer's non-local replaces (a dependency's own
// replaces are ignored), and the GODEBUG defaults `go install` would use (those of the module's own go line).
async function buildInModule(peer, log) {
  const cwd = join(peer.home, 'mod');
  rmSync(cwd, { recursive: true, force: true });
  mkdirSync(cwd);
  const steps = [
    ['mod', 'init', 'peers-build'],
    ...peer.replace.map((r) => ['mod', 'edit', `-replace=${r}`]),
    ['get', `${peer.module}@${peer.version}`],
  ];
  for (const args of steps) {
    const step = await go(args, { cwd, log });
    if (step !== 0) return step;
  }
  const moduleGo = spawnSync('go', ['list', '-f', '{{.Module.GoVersion}}', peer.module], {
    cwd,
    env: goEnv,
    encoding: 'utf8',
  }).stdout.trim();
  const step = await go(['mod', 'edit', `-godebug=default=go${moduleGo || '1.20'}`], { cwd, log });
  return step || go(['build', '-v', '-o', peer.built, peer.module], { cwd, log });
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
  console.log(`${tag}: building (go install; minio and vault take 10-25 min each on 2 cores) …`);
  mkdirSync(p.home, { recursive: true });
  const log = join(p.home, 'build.log');
  rmSync(log, { force: true });
  const start = Date.now();
  const lastLine = () => readFileSync(log, 'utf8').trimEnd().split('\n').pop();
  const beat = setInterval(() => console.log(`  … ${p.name}: ${elapsed(start)}, at ${lastLine()}`), 60_000);
  const code = await build(p, log);
  clearInterval(beat);
  if (code !== 0 || !existsSync(p.built)) {
    const tail = readFileSync(log, 'utf8').trimEnd().split('\n').slice(-40).join('\n');
    console.error(tail);
    fail(
      `building ${p.name} (${p.module}@${p.version}) failed: ${code !== 0 ? `go exited ${code}` : `no ${p.built} produced`}; full log: ${log}`,
    );
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
