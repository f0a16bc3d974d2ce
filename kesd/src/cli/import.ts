// `kesd import kes-fs`: migrate off the deprecated KES without losing a single encrypted object.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readServerConfig, SERVER_CONFIG_FILE } from '../config/config.js';
import { openLmdbStore } from '../store/lmdb.js';
import type { Store } from '../store/store.js';
import type { RootKeyInfo } from '../store/unseal.js';
import { System } from '../state/system.js';
import { wipe } from '../crypto/secret.js';
import { importKesFsKeystore } from '../migrate/kes-fs.js';
import { openStore, STORE_FILE } from '../boot/data-dir.js';
import { openRootKey } from '../boot/root-key.js';
import { CliError, parse, positionals, type Command } from './command.js';

const usage = 'kesd import kes-fs [--enclave NAME] <kes-keystore-dir> <kesd-data-dir>';

/**
 * The store a data dir's .init names, unsealed as `kesd server` unseals it: the embedded store with <dir>/.unseal
 * (also for a dir without .init), or etcd with the root key kept there.
 */
async function openDataDir(dir: string, env: NodeJS.ProcessEnv): Promise<{ root: RootKeyInfo; store: Store }> {
  const config = existsSync(join(dir, SERVER_CONFIG_FILE)) ? await readServerConfig(dir, env) : undefined;
  const root = await openRootKey(dir, config?.store, env);
  const store = config !== undefined ? await openStore(dir, config) : await openLmdbStore(join(dir, STORE_FILE));
  return { root, store };
}

const importKesFs: Command = {
  name: 'import kes-fs',
  summary: 'Import the keys of a KES filesystem keystore into a kesd data dir or the etcd store it names (key bytes and HMAC keys unchanged)',
  usage,
  async run(argv) {
    const { values, positionals: args } = parse(argv, { enclave: { type: 'string', short: 'e' } }, usage);
    const [source, dataDir] = positionals(args, 2, usage);
    const { root, store } = await openDataDir(dataDir!, process.env);
    let system: System | undefined;
    try {
      // No sweeps of deleted enclaves here: the running servers finish them, and this process ends soon.
      system = await System.open(store, { key: root.key, sysadmin: root.sysadmin }, { resumeSweeps: false });
      const enclaveName = values.enclave ?? 'default';
      const enclave = system.enclaves.get(enclaveName);
      if (enclave === undefined) throw new CliError(`enclave '${enclaveName}' does not exist in ${dataDir}`);
      const report = await importKesFsKeystore(source!, enclave, root.sysadmin);
      console.log(`imported ${report.imported.length}, already present ${report.unchanged.length}, conflicts ${report.conflicts.length}, failed ${report.failed.length}`);
      for (const name of report.conflicts) console.error(`conflict: '${name}' exists in kesd with different key bytes; left unchanged`);
      for (const f of report.failed) console.error(`failed: '${f.name}': ${f.reason}`);
      return report.conflicts.length + report.failed.length === 0 ? 0 : 1;
    } finally {
      system?.release();
      wipe(root.key);
      await store.close();
    }
  },
};

export const importCommands: readonly Command[] = [importKesFs];
