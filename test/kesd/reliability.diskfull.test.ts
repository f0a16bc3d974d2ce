// A full disk: kesd's data dir on a small tmpfs, filled by key creates until they fail. Creates must then fail
// with 502 `failed to create key`, the server must keep running (no crash, no worker restart), reads, generate
// and decrypt of existing keys must keep working, a restart (still full) must find everything acknowledged,
// and once space is freed (a filler file placed on the same tmpfs before the start is deleted) creates work again.
//
// Needs root (mount -t tmpfs); skipped with a message when mounting fails. Settings: KESD_DISKFULL_FREE_KIB
// (free space left for the store, default 1536), KESD_DISKFULL_TMPFS_MIB (default 8).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, statfs, writeFile, unlink } from 'node:fs/promises';
import type https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  agentFor,
  call,
  envInt,
  groupPids,
  makeFixture,
  pool,
  startKesd,
  type Fixture,
  type KesdProcess,
} from './load.js';

const TMPFS_MIB = envInt('KESD_DISKFULL_TMPFS_MIB', 8);
const FREE_KIB = envInt('KESD_DISKFULL_FREE_KIB', 1536);
const MAX_CREATES = 200_000;
const FILL_DEADLINE_MS = 120_000;

/** A fresh tmpfs of `mib` MiB, unmounted when the test ends; undefined (test skipped) if mounting fails. */
async function tmpfs(t: TestContext, mib: number): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), 'kesd-diskfull-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    t.skip(
      `cannot mount a tmpfs (needs root / CAP_SYS_ADMIN): ${(err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message}`,
    );
    return undefined;
  }
  t.after(async () => {
    for (let i = 0; i < 20; i++) {
      try {
        execFileSync('umount', [dir], { stdio: 'pipe' });
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 250)); // a process still holding a file
        if (i === 19) execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
      }
    }
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

interface Ciphertext {
  key: string;
  plaintext: string;
  ciphertext: string;
}

/** Everything acknowledged is there: the listing has exactly `present`, none of `absent`; ciphertexts decrypt. */
async function assertAcknowledged(
  agent: https.Agent,
  port: number,
  present: Set<string>,
  absent: Set<string>,
  ciphertexts: Ciphertext[],
): Promise<void> {
  const list = await call(agent, port, 'GET', '/v1/key/list/*', undefined, { timeoutMs: 60_000 });
  assert.equal(list.status, 200, list.text);
  const lines = list.text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.filter((l) => l.error !== undefined),
    [],
    'the listing failed part way',
  );
  const listed = new Set(lines.map((l) => l.name as string));
  const missing = [...present].filter((k) => !listed.has(k));
  assert.deepEqual(missing.slice(0, 20), [], `${missing.length} acknowledged keys are missing`);
  const resurrected = [...absent].filter((k) => listed.has(k));
  assert.deepEqual(resurrected, [], 'keys whose delete was acknowledged are back');
  for (const ct of ciphertexts) {
    const r = await call(agent, port, 'POST', `/v1/key/decrypt/${ct.key}`, { ciphertext: ct.ciphertext });
    assert.equal(r.status, 200, `decrypt with ${ct.key}: ${r.status} ${r.text}`);
    assert.equal(r.json().plaintext, ct.plaintext);
  }
}

/** Describe + generate + decrypt on a key. */
async function assertWorks(agent: https.Agent, port: number, name: string): Promise<void> {
  const d = await call(agent, port, 'GET', `/v1/key/describe/${name}`);
  assert.equal(d.status, 200, `describe ${name}: ${d.status} ${d.text}`);
  const g = await call(agent, port, 'POST', `/v1/key/generate/${name}`, {});
  assert.equal(g.status, 200, `generate ${name}: ${g.status} ${g.text}`);
  const { plaintext, ciphertext } = g.json();
  const x = await call(agent, port, 'POST', `/v1/key/decrypt/${name}`, { ciphertext });
  assert.equal(x.status, 200, `decrypt ${name}: ${x.status} ${x.text}`);
  assert.equal(x.json().plaintext, plaintext);
}

async function fullDisk(t: TestContext, width: number): Promise<void> {
  const mnt = await tmpfs(t, TMPFS_MIB);
  if (mnt === undefined) return;
  let fx: Fixture | undefined;
  let proc: KesdProcess | undefined;
  let agent: https.Agent | undefined;
  try {
    fx = await makeFixture({ dataDir: join(mnt, 'data'), keys: ['minio-default'] });
    // The filler leaves FREE_KIB for the store; deleting it later is "the operator freed space".
    const filler = join(mnt, 'filler');
    const fillerSize = Math.max(0, (await freeBytes(mnt)) - FREE_KIB * 1024);
    await writeFile(filler, Buffer.alloc(fillerSize, 0xaa));
    t.diagnostic(
      `tmpfs ${TMPFS_MIB} MiB, filler ${(fillerSize / 2 ** 20).toFixed(2)} MiB, ${Math.round((await freeBytes(mnt)) / 1024)} KiB left for the store; ${width} create(s) in flight`,
    );

    proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
    const pids = await groupPids(proc.pid);
    agent = agentFor(fx.admin, { maxSockets: width });
    const port = proc.port;

    const present = new Set<string>(['minio-default']);
    const absent = new Set<string>();
    const ciphertexts: Ciphertext[] = [];
    for (let i = 0; i < 5; i++) {
      const name = `before-${i}`;
      assert.equal((await call(agent, port, 'POST', `/v1/key/create/${name}`)).status, 200);
      present.add(name);
      const { plaintext, ciphertext } = (await call(agent, port, 'POST', `/v1/key/generate/${name}`, {})).json();
      ciphertexts.push({ key: name, plaintext, ciphertext });
    }

    // Fill: creates until they fail, then keep trying a while (the failure must be stable and clean).
    const failures = new Map<string, number>();
    const connectionErrors: string[] = [];
    let next = 0;
    let failed = 0;
    const started = Date.now();
    await pool(Array.from({ length: width }), width, async () => {
      while (
        failed < 40 &&
        next < MAX_CREATES &&
        Date.now() - started < FILL_DEADLINE_MS &&
        connectionErrors.length < 5
      ) {
        const name = `fill-${next++}`;
        let status: number;
        let message: string;
        try {
          const r = await call(agent!, port, 'POST', `/v1/key/create/${name}`);
          status = r.status;
          message = status === 200 ? '' : r.text.trim();
        } catch (err) {
          connectionErrors.push(`${name}: ${(err as Error).message}`);
          continue;
        }
        if (status === 200) present.add(name);
        else {
          failed++;
          failures.set(`${status} ${message}`, (failures.get(`${status} ${message}`) ?? 0) + 1);
        }
      }
    });
    const fillMs = Date.now() - started;
    t.diagnostic(
      `${present.size - 6} fill keys acknowledged in ${fillMs} ms, then ${failed} failed creates: ${JSON.stringify(Object.fromEntries(failures))}`,
    );
    const said = () =>
      proc!
        .output()
        .split(/(?<=\n)|(?=Write error)/)
        .filter((l) => l.trim() !== '' && !l.startsWith('Write error') && !/^\s+at /.test(l))
        .slice(-8)
        .join('')
        .trim();
    assert.deepEqual(
      connectionErrors,
      [],
      `a create got no HTTP answer (the server or a worker died); kesd said:\n${said()}`,
    );
    assert.ok(failed > 0, `the disk never filled up (${present.size} keys in ${fillMs} ms)`);
    assert.deepEqual(
      [...failures.keys()],
      ['502 {"message":"failed to create key"}'],
      'every failed create is 502 failed to create key',
    );

    // Still the same processes: nothing crashed and was restarted behind our back.
    assert.ok(proc.alive(), `kesd exited: ${proc.output()}`);
    assert.deepEqual(await groupPids(proc.pid), pids, `kesd processes changed (a worker died?); kesd said:\n${said()}`);

    // Reads, generate and decrypt of existing keys keep working.
    for (const name of ['minio-default', 'before-0', 'fill-0', `fill-${Math.floor(present.size / 2)}`]) {
      if (present.has(name)) await assertWorks(agent, port, name);
    }
    let policyWritten = false;
    // Other writes fail as cleanly (or succeed, if the store finds room); either way, no other answer.
    for (const [method, path, body, what] of [
      ['POST', '/v1/policy/write/full', { allow: ['/v1/key/generate/*'] }, 'write policy'],
      ['DELETE', '/v1/key/delete/fill-1', undefined, 'delete key'],
      ['POST', '/v1/secret/create/full', { bytes: Buffer.alloc(4096).toString('base64') }, 'create secret'],
    ] as const) {
      const r = await call(agent, port, method, path, body);
      t.diagnostic(`${method} ${path} on the full disk: ${r.status} ${r.text.trim()}`);
      assert.ok(
        r.status === 200 || (r.status === 502 && r.json().message === `failed to ${what}`),
        `${method} ${path} on a full disk: ${r.status} ${r.text}`,
      );
      if (path === '/v1/policy/write/full' && r.status === 200) policyWritten = true;
      if (path === '/v1/key/delete/fill-1' && r.status === 200) {
        present.delete('fill-1');
        absent.add('fill-1');
      }
    }
    await assertAcknowledged(agent, port, present, absent, ciphertexts);
    assert.deepEqual(await groupPids(proc.pid), pids, 'kesd processes changed');

    // A restart while the disk is still full finds everything.
    agent.destroy();
    await proc.stop();
    proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
    agent = agentFor(fx.admin, { maxSockets: width });
    await assertAcknowledged(agent, proc.port, present, absent, ciphertexts);
    await assertWorks(agent, proc.port, 'before-1');
    if (policyWritten)
      assert.equal(
        (await call(agent, proc.port, 'GET', '/v1/policy/read/full')).status,
        200,
        'the policy written on the full disk is lost',
      );

    // Space freed: creates work again, and survive a restart.
    await unlink(filler);
    for (let i = 0; i < 20; i++) {
      const r = await call(agent, proc.port, 'POST', `/v1/key/create/after-${i}`);
      assert.equal(r.status, 200, `create after freeing space: ${r.status} ${r.text}`);
      present.add(`after-${i}`);
    }
    await assertWorks(agent, proc.port, 'after-0');
    agent.destroy();
    await proc.stop();
    proc = await startKesd(fx.dataDir, fx.env, ['--audit-log', 'off']);
    agent = agentFor(fx.admin);
    await assertAcknowledged(agent, proc.port, present, absent, ciphertexts);
    t.diagnostic(`${present.size} acknowledged keys and ${ciphertexts.length} ciphertexts intact after two restarts`);
  } finally {
    agent?.destroy();
    await proc?.stop();
    await fx?.remove();
  }
}

test(
  'a full disk, one create at a time: 502 failed to create key, still serving, nothing lost, recovers',
  { timeout: 240_000 },
  (t) => fullDisk(t, 1),
);

// Was a crash (lmdb-js heap corruption on a failed batched commit); kesd/src/store/lmdb.ts now writes one at a time
// near a full disk. store.lmdb.test.ts pins the same at the store level.
test(
  'a full disk, 8 creates in flight: 502 failed to create key, still serving, nothing lost, recovers',
  { timeout: 240_000 },
  (t) => fullDisk(t, 8),
);
