// `kesd import kes-fs`, `kesd import vault`, `kesd restore --from-upstream`: migrate off the deprecated KES without
// losing a single encrypted object, and rebuild a data dir's keys from its upstream.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readServerConfig, SERVER_CONFIG_FILE, type ServerConfig } from '../config/config.js';
import { parseVaultSection, type VaultConfig } from '../config/upstream.js';
import { Reader } from '../config/yaml-reader.js';
import { openLmdbStore } from '../store/lmdb.js';
import type { Store } from '../store/store.js';
import type { RootKeyInfo } from '../store/unseal.js';
import { System } from '../state/system.js';
import type { Enclave } from '../state/enclave.js';
import { wipe } from '../crypto/secret.js';
import { VaultKeystore } from '../upstream/vault-keystore.js';
import { importKesFsKeystore } from '../migrate/kes-fs.js';
import type { ImportReport } from '../migrate/import-keys.js';
import { importVaultKeys } from '../migrate/vault.js';
import { openStore, STORE_FILE } from '../boot/data-dir.js';
import { openRootKey } from '../boot/root-key.js';
import { CliError, parse, positionals, type Command } from './command.js';

/**
 * The store a data dir's .init names, unsealed as `kesd server` unseals it: the embedded store with <dir>/.unseal
 * (also for a dir without .init), or etcd with the root key kept there.
 */
async function openDataDir(
  dir: string,
  env: NodeJS.ProcessEnv,
): Promise<{ root: RootKeyInfo; store: Store; config?: ServerConfig }> {
  const config = existsSync(join(dir, SERVER_CONFIG_FILE)) ? await readServerConfig(dir, env) : undefined;
  const root = await openRootKey(dir, config?.store, env);
  const store = config !== undefined ? await openStore(dir, config) : await openLmdbStore(join(dir, STORE_FILE));
  return { root, store, config };
}

/**
 * Runs `fill` on an enclave of a data dir, prints the report, and exits 1 on any conflict or failure. A key imported
 * into the enclave an upstream mirrors is queued for it, as any key created there (state/sync-queue.ts).
 */
async function importInto(
  dataDir: string,
  enclaveOf: (config?: ServerConfig) => string,
  fill: (enclave: Enclave, sysadmin: string, config?: ServerConfig) => Promise<ImportReport>,
): Promise<number> {
  const { root, store, config } = await openDataDir(dataDir, process.env);
  let system: System | undefined;
  try {
    // No sweeps of deleted enclaves here: the running servers finish them, and this process ends soon.
    system = await System.open(
      store,
      { key: root.key, sysadmin: root.sysadmin },
      { resumeSweeps: false, upstreamEnclave: config?.upstream?.enclave },
    );
    const enclaveName = enclaveOf(config);
    const enclave = system.enclaves.get(enclaveName);
    if (enclave === undefined) throw new CliError(`enclave '${enclaveName}' does not exist in ${dataDir}`);
    const report = await fill(enclave, root.sysadmin, config);
    console.log(
      `imported ${report.imported.length}, already present ${report.unchanged.length}, conflicts ${report.conflicts.length}, failed ${report.failed.length}`,
    );
    for (const name of report.conflicts)
      console.error(`conflict: '${name}' exists in kesd with different key bytes; left unchanged`);
    for (const f of report.failed) console.error(`failed: '${f.name}': ${f.reason}`);
    return report.conflicts.length + report.failed.length === 0 ? 0 : 1;
  } finally {
    system?.release();
    wipe(root.key);
    await store.close();
  }
}

async function fromVault(vault: VaultConfig, enclave: Enclave, sysadmin: string): Promise<ImportReport> {
  const keystore = new VaultKeystore(vault);
  try {
    return await importVaultKeys(keystore, enclave, sysadmin);
  } finally {
    keystore.close();
  }
}

const kesFsUsage = 'kesd import kes-fs [--enclave NAME] <kes-keystore-dir> <kesd-data-dir>';

const importKesFs: Command = {
  name: 'import kes-fs',
  summary:
    'Import the keys of a KES filesystem keystore into a kesd data dir or the etcd store it names (key bytes and HMAC keys unchanged)',
  usage: kesFsUsage,
  async run(argv) {
    const { values, positionals: args } = parse(argv, { enclave: { type: 'string', short: 'e' } }, kesFsUsage);
    const [source, dataDir] = positionals(args, 2, kesFsUsage);
    return importInto(
      dataDir!,
      () => values.enclave ?? 'default',
      (enclave, sysadmin) => importKesFsKeystore(source!, enclave, sysadmin),
    );
  },
};

const vaultUsage = 'kesd import vault --kes-config <kes-config.yml> [--enclave NAME] <kesd-data-dir>';

/** The keystore.vault section of a KES server config (its other sections are not read). */
async function kesVaultConfig(file: string): Promise<VaultConfig> {
  const r = new Reader(`KES config '${file}'`, process.env);
  const top = r.obj(r.parse(await readFile(file, 'utf8')), '', []);
  const keystore = r.obj(top.get('keystore'), 'keystore', []);
  if (keystore.get('vault') === undefined)
    r.fail(`no 'keystore.vault' section: this KES does not keep its keys in Vault`);
  return parseVaultSection(r, keystore.get('vault'), 'keystore.vault');
}

const importVault: Command = {
  name: 'import vault',
  summary:
    "Import every key a KES server keeps in Vault (its config's keystore.vault: KV v1/v2, prefix, Transit, AppRole/Kubernetes auth) into a kesd data dir, key bytes and HMAC keys unchanged",
  usage: vaultUsage,
  async run(argv) {
    const { values, positionals: args } = parse(
      argv,
      { 'kes-config': { type: 'string' }, enclave: { type: 'string', short: 'e' } },
      vaultUsage,
    );
    const [dataDir] = positionals(args, 1, vaultUsage);
    if (values['kes-config'] === undefined)
      throw new CliError(`no KES config given: use --kes-config <config.yml>\nusage: ${vaultUsage}`, 2);
    const vault = await kesVaultConfig(values['kes-config']);
    return importInto(
      dataDir!,
      () => values.enclave ?? 'default',
      (enclave, sysadmin) => fromVault(vault, enclave, sysadmin),
    );
  },
};

const restoreUsage = 'kesd restore --from-upstream <kesd-data-dir>';

/** `kesd restore --from-upstream`: one mode of `kesd restore` (cli/data-dir.ts hands it over). */
export const restoreFromUpstream: Command = {
  name: 'restore',
  summary:
    "Rebuild a data dir's keys from its upstream (init.yml `upstream`): every key under the Vault prefix into the enclave it mirrors",
  usage: restoreUsage,
  async run(argv) {
    const { values, positionals: args } = parse(argv, { 'from-upstream': { type: 'boolean' } }, restoreUsage);
    const [dataDir] = positionals(args, 1, restoreUsage);
    if (!values['from-upstream']) throw new CliError(`say where from: --from-upstream\nusage: ${restoreUsage}`, 2);
    const upstreamOf = (config?: ServerConfig) => {
      if (config?.upstream === undefined)
        throw new CliError(`${dataDir} has no upstream: its init.yml needs an 'upstream' section`);
      return config.upstream;
    };
    return importInto(
      dataDir!,
      (config) => upstreamOf(config).enclave,
      (enclave, sysadmin, config) => fromVault(upstreamOf(config).vault, enclave, sysadmin),
    );
  },
};

export const importCommands: readonly Command[] = [importKesFs, importVault];
