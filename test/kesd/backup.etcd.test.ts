// The etcd store's backup is etcd's own (docs/security.md): `etcdctl snapshot save`, then `etcdctl snapshot restore`
// (etcdutl in etcd 3.5+) into a new member's data dir. This drill runs that procedure against a real etcd and proves
// with `kesd check` and a data key that the restored store opens under the same unseal key, and that a key created
// after the snapshot is gone. Skips without etcd or etcdctl (apt-get install etcd-server etcd-client).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initDataDir, openStore } from '../../kesd/src/boot/data-dir.js';
import { openRootKey } from '../../kesd/src/boot/root-key.js';
import { parseInitConfig, readServerConfig } from '../../kesd/src/config/config.js';
import { generateDataKey } from '../../kesd/src/crypto/key.js';
import { System } from '../../kesd/src/state/system.js';
import { ETCD_BIN, ETCD_SKIP, etcdInitYml, startEtcd, type EtcdCluster } from '../../harness/etcd.ts';
import { freePort, sleep } from '../../harness/minio-stack.ts';
import { kesd } from './cli-process.js';
import { makeIdentity } from './harness.js';

const ETCDCTL = spawnSync('sh', ['-c', 'command -v etcdctl'], { encoding: 'utf8' }).stdout.trim() || undefined;
const SKIP =
  ETCD_SKIP ?? (ETCDCTL === undefined ? 'etcdctl is not installed (apt-get install etcd-client)' : undefined);
const ENV = 'KESD_ETCD_DRILL_KEY';
const env = { ...process.env, [ENV]: randomBytes(32).toString('base64'), ETCDCTL_API: '3' };

let tmp: string;
let etcd: EtcdCluster | undefined;
let restored: ChildProcess | undefined;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'kesd-etcd-drill-'));
});
after(async () => {
  restored?.kill('SIGKILL');
  await etcd?.stop();
  await rm(tmp, { recursive: true, force: true });
});

function etcdctl(args: string[]): string {
  const r = spawnSync(ETCDCTL!, args, { env, encoding: 'utf8' });
  assert.equal(r.status, 0, `etcdctl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Runs `use` on the System of the data dir `dir` (unsealed with the drill's key). */
async function withSystem<T>(dir: string, use: (system: System) => Promise<T>): Promise<T> {
  const config = await readServerConfig(dir, env);
  const root = await openRootKey(dir, config.store, env);
  const store = await openStore(dir, config);
  const system = await System.open(store, root, { resumeSweeps: false });
  try {
    return await use(system);
  } finally {
    system.release();
    root.key.fill(0);
    await store.close();
  }
}

test('etcd snapshot save, snapshot restore into a new member: kesd check passes, old data keys decrypt, later keys are gone', {
  skip: SKIP,
  timeout: 180_000,
}, async () => {
  etcd = await startEtcd(1);
  const ids = {
    server: await makeIdentity(tmp, 'server', 'p256', { ips: ['127.0.0.1'] }),
    sysadmin: await makeIdentity(tmp, 'sysadmin'),
    admin: await makeIdentity(tmp, 'admin'),
  };
  const dir = join(tmp, 'data');
  await initDataDir(dir, parseInitConfig(etcdInitYml(etcd, { ...ids, unsealEnv: ENV, keys: ['k1', 'k2'] }), env), {
    env: { ...env },
  });
  const dek = await withSystem(dir, async (s) => {
    const e = s.enclaves.get('default')!;
    await e.keys.rotate('k1', ids.admin.identity);
    return generateDataKey((await e.key('k1')).secret);
  });

  const snapshot = join(tmp, 'snapshot.db');
  etcdctl(['--endpoints', etcd.endpoints[0]!, 'snapshot', 'save', snapshot]);
  await withSystem(dir, (s) => s.enclaves.get('default')!.createKey('late', ids.admin.identity));

  // Restore into a fresh member on new ports (the procedure is the same on the old ones).
  const [client, peer] = [await freePort(), await freePort()];
  const peerUrl = `http://127.0.0.1:${peer}`;
  const clientUrl = `http://127.0.0.1:${client}`;
  const data = join(tmp, 'restored-etcd');
  etcdctl([
    'snapshot',
    'restore',
    snapshot,
    '--name',
    'r0',
    '--data-dir',
    data,
    '--initial-cluster',
    `r0=${peerUrl}`,
    '--initial-advertise-peer-urls',
    peerUrl,
  ]);
  restored = spawn(
    ETCD_BIN!,
    [
      '--name',
      'r0',
      '--data-dir',
      data,
      '--listen-client-urls',
      clientUrl,
      '--advertise-client-urls',
      clientUrl,
      '--listen-peer-urls',
      peerUrl,
    ],
    { stdio: 'ignore' },
  );
  for (let i = 0; ; i++) {
    if (spawnSync(ETCDCTL!, ['--endpoints', clientUrl, 'endpoint', 'health'], { env }).status === 0) break;
    assert.ok(i < 200, 'the restored etcd member became healthy');
    await sleep(100);
  }

  // A kesd data dir on the restored member: its .init names the new endpoint (on etcd the dir holds nothing else).
  const moved = join(tmp, 'moved');
  await mkdir(moved, { mode: 0o700 });
  await writeFile(
    join(moved, '.init'),
    (await readFile(join(dir, '.init'), 'utf8')).replace(etcd.endpoints[0]!, clientUrl),
    { mode: 0o600 },
  );
  const check = await kesd(['check', moved], { env });
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /opens: 1 enclaves, 2 keys \(3 key versions\)/);
  await withSystem(moved, async (s) => {
    const e = s.enclaves.get('default')!;
    assert.deepEqual(await e.decrypt(await e.key('k1'), dek.ciphertext, undefined), dek.plaintext);
    await assert.rejects(e.key('late'), { status: 404 }, 'a key created after the snapshot is gone');
  });
  // With another unseal key the restored store does not open.
  const wrong = await kesd(['check', moved], { env: { ...env, [ENV]: randomBytes(32).toString('base64') } });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /unseal key is wrong/);
});
