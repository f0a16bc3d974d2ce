// `kesd import kes-fs`: migrate off the deprecated KES without losing a single encrypted object.
import { join } from 'node:path';
import { openLmdbStore } from '../store/lmdb.js';
import { openSealedRootKey } from '../store/unseal.js';
import { System } from '../state/system.js';
import { importKesFsKeystore } from '../migrate/kes-fs.js';
import { STORE_FILE } from './server.js';
import { CliError, parse, positionals, type Command } from './command.js';

const usage = 'kesd import kes-fs [--enclave NAME] <kes-keystore-dir> <kesd-data-dir>';

const importKesFs: Command = {
  name: 'import kes-fs',
  summary: 'Import the keys of a KES filesystem keystore into a kesd data dir (key bytes and HMAC keys unchanged)',
  usage,
  async run(argv) {
    const { values, positionals: args } = parse(argv, { enclave: { type: 'string', short: 'e' } }, usage);
    const [source, dataDir] = positionals(args, 2, usage);
    const { root } = await openSealedRootKey(dataDir!, process.env);
    const store = await openLmdbStore(join(dataDir!, STORE_FILE));
    try {
      const system = await System.open(store, { key: root.key, sysadmin: root.sysadmin });
      const enclaveName = values.enclave ?? 'default';
      const enclave = system.enclaves.get(enclaveName);
      if (enclave === undefined) throw new CliError(`enclave '${enclaveName}' does not exist in ${dataDir}`);
      const report = await importKesFsKeystore(source!, enclave, root.sysadmin);
      console.log(`imported ${report.imported.length}, already present ${report.unchanged.length}, conflicts ${report.conflicts.length}, failed ${report.failed.length}`);
      for (const name of report.conflicts) console.error(`conflict: '${name}' exists in kesd with different key bytes; left unchanged`);
      for (const f of report.failed) console.error(`failed: '${f.name}': ${f.reason}`);
      return report.conflicts.length + report.failed.length === 0 ? 0 : 1;
    } finally {
      await store.close();
    }
  },
};

export const importCommands: readonly Command[] = [importKesFs];
