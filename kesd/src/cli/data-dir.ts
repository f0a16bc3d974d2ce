// Data-dir tools beyond KES: `kesd rekey` (a new unseal key), `kesd backup`, `kesd restore` and `kesd check`.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { backupDataDir, checkDataDir, restoreDataDir } from '../boot/backup.js';
import { rekeyDataDir } from '../boot/rekey.js';
import { clientFromEnv, KesApiError } from '../client/client.js';
import { backupFileName, pruneBackups, verifyBackup, writeFileFrom, type BackupManifest } from '../store/backup.js';
import { describeUnsealSource, type UnsealSource } from '../store/unseal.js';
import { CliError, parse, positionals, type Command } from './command.js';
import { restoreFromUpstream } from './import.js';

/** A key source from `--<which>-file PATH` or `--<which>-env NAME` (at most one of them). */
function sourceFlag(
  values: Record<string, unknown>,
  which: 'current' | 'new' | 'unseal',
  usage: string,
): UnsealSource | undefined {
  const file = values[`${which}-file`] as string | undefined;
  const env = values[`${which}-env`] as string | undefined;
  if (file !== undefined && env !== undefined)
    throw new CliError(`give --${which}-file or --${which}-env, not both\nusage: ${usage}`, 2);
  if (file !== undefined) return { file: resolve(file) };
  if (env !== undefined) return { env };
  return undefined;
}

const rekeyUsage = 'kesd rekey (--new-file PATH | --new-env NAME) [--current-file PATH | --current-env NAME] <dir>';

const rekey: Command = {
  name: 'rekey',
  summary:
    'Re-seal the root key under a new unseal key, atomically (the embedded store, or the etcd store .init names); the current key comes from where .unseal records it unless given',
  usage: rekeyUsage,
  async run(argv) {
    const flags = {
      'new-file': { type: 'string' },
      'new-env': { type: 'string' },
      'current-file': { type: 'string' },
      'current-env': { type: 'string' },
    } as const;
    const { values, positionals: args } = parse(argv, flags, rekeyUsage);
    const [dir] = positionals(args, 1, rekeyUsage);
    const next = sourceFlag(values, 'new', rekeyUsage);
    if (next === undefined)
      throw new CliError(`no new unseal key: use --new-file PATH or --new-env NAME\nusage: ${rekeyUsage}`, 2);
    const current = sourceFlag(values, 'current', rekeyUsage);
    const outcome = await rekeyDataDir(dir!, { next, ...(current ? { current } : {}), env: process.env });
    console.log(
      outcome === 'rekeyed'
        ? `kesd: the root key of ${dir} is sealed under the unseal key from the ${describeUnsealSource(next)} now; the old key no longer opens it (backups made before still need the old key)`
        : `kesd: the root key of ${dir} is sealed under the unseal key from the ${describeUnsealSource(next)} already; nothing changed`,
    );
    return 0;
  },
};

const backupUsage =
  'kesd backup [--keep N] <data dir> <file | directory>\n       kesd backup --server https://HOST:PORT [-k] [--keep N] <file | directory>';

/** Where a backup goes: into a directory under a timestamped name, or to the file named. */
function backupTarget(target: string, keep: number | undefined): { file: string; dir: string | undefined } {
  const isDir = existsSync(target) && statSync(target).isDirectory();
  if (keep !== undefined && !isDir)
    throw new CliError(
      `--keep needs a directory to keep backups in, and '${target}' is not one\nusage: ${backupUsage}`,
      2,
    );
  return isDir ? { file: join(target, backupFileName()), dir: target } : { file: resolve(target), dir: undefined };
}

const backup: Command = {
  name: 'backup',
  summary:
    'Write a sealed backup of a data dir on the embedded store while kesd runs: locally, or from a server (--server, system admin identity from KES_CLIENT_CERT/KES_CLIENT_KEY)',
  usage: backupUsage,
  async run(argv) {
    const { values, positionals: args } = parse(
      argv,
      { server: { type: 'string' }, keep: { type: 'string' }, insecure: { type: 'boolean', short: 'k' } },
      backupUsage,
    );
    const keep = values.keep === undefined ? undefined : /^[1-9]\d{0,3}$/.test(values.keep) ? Number(values.keep) : NaN;
    if (Number.isNaN(keep)) throw new CliError(`--keep must be a number from 1 to 9999, got '${values.keep}'`, 2);
    let manifest: BackupManifest;
    let target: { file: string; dir: string | undefined };
    if (values.server !== undefined) {
      const [out] = positionals(args, 1, backupUsage);
      target = backupTarget(out!, keep);
      const client = clientFromEnv(
        { insecure: values.insecure === true },
        { ...process.env, KES_SERVER: values.server },
      );
      try {
        let checked: BackupManifest | undefined;
        await writeFileFrom(target.file, await client.backup(), async (tmp) => (checked = await verifyBackup(tmp)));
        manifest = checked!;
      } catch (err) {
        if (err instanceof KesApiError) throw new CliError(`backup: ${err.message}`);
        throw err;
      } finally {
        client.close();
      }
    } else {
      const [dir, out] = positionals(args, 2, backupUsage);
      target = backupTarget(out!, keep);
      manifest = await backupDataDir(dir!, target.file);
    }
    const bytes = manifest.files.reduce((n, f) => n + f.size, 0);
    console.log(
      `kesd: wrote ${target.file} (${bytes} bytes of data dir, taken ${manifest.created_at}); it is sealed: it opens only with the unseal key of that moment`,
    );
    if (keep !== undefined && target.dir !== undefined)
      for (const old of await pruneBackups(target.dir, keep)) console.log(`kesd: removed the older backup ${old}`);
    return 0;
  },
};

const restoreUsage = 'kesd restore [--force] <backup file> <dir>  |  kesd restore --from-upstream <dir>';

const restore: Command = {
  name: 'restore',
  summary:
    'Restore a data dir from a kesd backup (checked in full first; a non-empty dir only with --force, kesd stopped), or its keys from its upstream Vault (--from-upstream)',
  usage: restoreUsage,
  async run(argv) {
    // The other source: the keys of the Vault that mirrors the data dir's enclave (cli/import.ts).
    if (argv.includes('--from-upstream')) return restoreFromUpstream.run(argv);
    const { values, positionals: args } = parse(argv, { force: { type: 'boolean', short: 'f' } }, restoreUsage);
    const [file, dir] = positionals(args, 2, restoreUsage);
    const manifest = await restoreDataDir(file!, dir!, { force: values.force === true });
    console.log(
      `kesd: restored ${dir} from ${file} (taken ${manifest.created_at}); it opens with the unseal key of that moment: run 'kesd check ${dir}' to prove it`,
    );
    return 0;
  },
};

const checkUsage = 'kesd check [--unseal-file PATH | --unseal-env NAME] <dir>';

const check: Command = {
  name: 'check',
  summary:
    'Open a data dir (embedded store, or the etcd store .init names) as the server would and every record in it; writes nothing',
  usage: checkUsage,
  async run(argv) {
    const { values, positionals: args } = parse(
      argv,
      { 'unseal-file': { type: 'string' }, 'unseal-env': { type: 'string' } },
      checkUsage,
    );
    const [dir] = positionals(args, 1, checkUsage);
    const source = sourceFlag(values, 'unseal', checkUsage);
    const r = await checkDataDir(dir!, process.env, source);
    console.log(
      `kesd: ${dir} opens: ${r.enclaves} enclaves, ${r.keys} keys (${r.versions} key versions), ${r.policies} policies, ${r.identities} identity assignments, ${r.secrets} secrets`,
    );
    return 0;
  },
};

export const dataDirCommands: readonly Command[] = [rekey, backup, restore, check];
