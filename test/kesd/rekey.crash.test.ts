// `kesd rekey` is atomic: a kill -9 at every point of it (not a sample) leaves a data dir that opens with exactly one
// of the two unseal keys, with every key record intact, and a rerun finishes the job. The points are the states a
// crash can leave (boot/rekey.ts: LMDB_REKEY_STEPS, ETCD_REKEY_STEPS); a run without a crash must pass exactly those,
// so a new write step cannot go untested. Embedded store (.unseal) and etcd (one transaction).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ETCD_REKEY_STEPS, LMDB_REKEY_STEPS } from '../../kesd/src/boot/rekey.js';
import { prepareServerStart } from '../../kesd/src/boot/server-start.js';
import { initDataDir, openStore } from '../../kesd/src/boot/data-dir.js';
import { parseInitConfig, readServerConfig } from '../../kesd/src/config/config.js';
import { generateDataKey } from '../../kesd/src/crypto/key.js';
import { System } from '../../kesd/src/state/system.js';
import { openRootKey } from '../../kesd/src/boot/root-key.js';
import { UnsealError } from '../../kesd/src/store/unseal.js';
import { ETCD_SKIP, etcdInitYml, startEtcd, type EtcdCluster } from '../../harness/etcd.ts';
import { makeIdentity, type TestIdentity } from './harness.js';

const CHILD = resolve(import.meta.dirname, 'rekey-child.ts');
const ENV = 'KESD_REKEY_TEST_KEY';
const OLD = randomBytes(32).toString('base64');
const NEW = randomBytes(32).toString('base64');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  steps: string[];
  outcome?: string;
  stderr: string;
}

function rekeyChild(dir: string, crashAt: string, newKeyFile: string): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, crashAt, newKeyFile], {
      env: { ...process.env, [ENV]: OLD },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let stderr = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code, signal) => {
      const lines = out.split('\n');
      res({
        code,
        signal,
        stderr,
        steps: lines.filter((l) => l.startsWith('step ')).map((l) => l.slice(5)),
        outcome: lines.find((l) => l.startsWith('outcome '))?.slice(8),
      });
    });
  });
}

/** Which of the two keys open the root key of `dir` (from the file holding it; the source recorded is not used). */
async function opensWith(dir: string, keyFiles: { old: string; new: string }): Promise<string[]> {
  const opened: string[] = [];
  for (const [which, file] of Object.entries(keyFiles)) {
    try {
      const root = await openRootKey(dir, (await readServerConfig(dir, {})).store, {}, { file });
      root.key.fill(0);
      opened.push(which);
    } catch (err) {
      if (!(err instanceof UnsealError && /unseal key is wrong/.test(err.message))) throw err;
    }
  }
  return opened;
}

/** Every key of the store opens under the root key `file` unseals, and the sample ciphertext decrypts. */
async function assertRecordsOpen(
  dir: string,
  file: string,
  sample: { ciphertext: Buffer; plaintext: Buffer },
): Promise<void> {
  const config = await readServerConfig(dir, {});
  const root = await openRootKey(dir, config.store, {}, { file });
  const store = await openStore(dir, config);
  const system = await System.open(store, root, { resumeSweeps: false });
  try {
    const enclave = system.enclaves.get('default')!;
    const key = await enclave.key('k1');
    assert.deepEqual(await enclave.decrypt(key, sample.ciphertext, undefined), sample.plaintext);
    await enclave.key('k2');
  } finally {
    system.release();
    root.key.fill(0);
    await store.close();
  }
}

async function sampleCiphertext(
  dir: string,
  source?: { file: string },
): Promise<{ ciphertext: Buffer; plaintext: Buffer }> {
  const config = await readServerConfig(dir, {});
  const root = await openRootKey(dir, config.store, { [ENV]: OLD }, source);
  const store = await openStore(dir, config);
  const system = await System.open(store, root, { resumeSweeps: false });
  try {
    const key = await system.enclaves.get('default')!.key('k1');
    return generateDataKey(key.secret);
  } finally {
    system.release();
    root.key.fill(0);
    await store.close();
  }
}

let tmp: string;
let ids: { server: TestIdentity; sysadmin: TestIdentity; admin: TestIdentity };
let keyFiles: { old: string; new: string };
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'kesd-rekey-'));
  ids = {
    server: await makeIdentity(tmp, 'server', 'p256', { ips: ['127.0.0.1'] }),
    sysadmin: await makeIdentity(tmp, 'sysadmin'),
    admin: await makeIdentity(tmp, 'admin'),
  };
  keyFiles = { old: join(tmp, 'old.key'), new: join(tmp, 'new.key') };
  await writeFile(keyFiles.old, OLD, { mode: 0o600 });
  await writeFile(keyFiles.new, NEW, { mode: 0o600 });
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** The crash test for one store: `fresh()` makes a data dir sealed under OLD, `steps` are what a rekey passes. */
async function everyCrashPoint(
  fresh: () => Promise<string>,
  steps: readonly string[],
  swappedAt: string,
): Promise<void> {
  // A run without a crash passes exactly these points.
  const dir0 = await fresh();
  const full = await rekeyChild(dir0, 'none', keyFiles.new);
  assert.equal(full.code, 0, full.stderr);
  assert.deepEqual(full.steps, steps);
  assert.equal(full.outcome, 'rekeyed');
  assert.deepEqual(await opensWith(dir0, keyFiles), ['new']);

  for (const [i, step] of steps.entries()) {
    const dir = await fresh();
    const sample = await sampleCiphertext(dir);
    const crashed = await rekeyChild(dir, step, keyFiles.new);
    assert.equal(crashed.signal, 'SIGKILL', `killed at ${step}: ${crashed.stderr}`);
    assert.deepEqual(crashed.steps, steps.slice(0, i + 1));
    const expected = i >= steps.indexOf(swappedAt) ? 'new' : 'old';
    assert.deepEqual(
      await opensWith(dir, keyFiles),
      [expected],
      `killed at ${step}: exactly one key opens it, the ${expected} one`,
    );
    await assertRecordsOpen(dir, keyFiles[expected], sample);
    // A rerun finishes the rekey (or finds it done), and leaves no temp file behind.
    const rerun = await rekeyChild(dir, 'none', keyFiles.new);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal(rerun.outcome, expected === 'new' ? 'already' : 'rekeyed', `rerun after ${step}`);
    assert.deepEqual(await opensWith(dir, keyFiles), ['new']);
    await assertRecordsOpen(dir, keyFiles.new, sample);
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.endsWith('.tmp')),
      [],
      `after ${step}: no temp file left`,
    );
  }
}

test('embedded store: a kill -9 at every point of a rekey leaves .unseal opening with exactly one of the two keys', {
  timeout: 300_000,
}, async () => {
  const pristine = join(tmp, 'pristine');
  await initDataDir(pristine, parseInitConfig(initYml(), {}), { env: { [ENV]: OLD } });
  let n = 0;
  await everyCrashPoint(
    async () => {
      const dir = join(tmp, `lmdb-${n++}`);
      await cp(pristine, dir, { recursive: true });
      return dir;
    },
    LMDB_REKEY_STEPS,
    'renamed',
  );
});

describe('etcd store', { skip: ETCD_SKIP }, () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(1);
  });
  after(async () => {
    await etcd?.stop();
  });

  test('a kill -9 at every point of a rekey leaves the root key in etcd opening with exactly one of the two keys', {
    timeout: 300_000,
  }, async () => {
    let n = 0;
    await everyCrashPoint(
      async () => {
        const dir = join(tmp, `etcd-${n}`);
        const yml = etcdInitYml(etcd, {
          server: ids.server,
          sysadmin: ids.sysadmin,
          admin: ids.admin,
          unsealEnv: ENV,
          prefix: `rekey-${n++}/`,
          keys: ['k1', 'k2'],
        });
        await initDataDir(dir, parseInitConfig(yml, {}), { env: { [ENV]: OLD } });
        return dir;
      },
      ETCD_REKEY_STEPS,
      'swapped',
    );
  });

  test('replicas starting at once with unseal.previous: one swaps the root key, every one starts with the new key', {
    timeout: 120_000,
  }, async () => {
    const yml = (unseal: string) =>
      etcdInitYml(etcd, {
        server: ids.server,
        sysadmin: ids.sysadmin,
        admin: ids.admin,
        unsealEnv: ENV,
        prefix: 'replicas/',
        keys: ['k1', 'k2'],
      }).replace(/unseal:\n {2}environment:\n {4}name: \S+\n/, `unseal: ${unseal}\n`);
    const first = join(tmp, 'replica-first');
    await initDataDir(first, parseInitConfig(yml(`{ file: { path: ${keyFiles.old} } }`), {}), {});
    const sample = await sampleCiphertext(first, { file: keyFiles.old });
    const rotating = parseInitConfig(
      yml(`{ file: { path: ${keyFiles.new} }, previous: { file: { path: ${keyFiles.old} } } }`),
      {},
    );
    const logs: string[] = [];
    const starts = await Promise.all(
      [0, 1, 2, 3].map((i) =>
        prepareServerStart(join(tmp, `replica-${i}`), rotating, 'init.yml', {}, (line) => logs.push(line)),
      ),
    );
    for (const s of starts) s.root.key.fill(0);
    assert.equal(logs.filter((l) => /kesd: re-sealed the root key/.test(l)).length, 1, logs.join('\n'));
    assert.deepEqual(await opensWith(first, keyFiles), ['new']);
    await assertRecordsOpen(join(tmp, 'replica-0'), keyFiles.new, sample);
  });
});

function initYml(): string {
  return `version: v1
address: 127.0.0.1:0
system: { admin: { identity: ${ids.sysadmin.identity} } }
tls: { key: ${ids.server.keyFile}, cert: ${ids.server.certFile} }
unseal: { environment: { name: ${ENV} } }
enclave:
  default:
    admin: { identity: ${ids.admin.identity} }
    keys: [{ name: k1 }, { name: k2 }]
`;
}
