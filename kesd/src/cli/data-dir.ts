// Data-dir tools beyond KES: `kesd rekey` (a new unseal key), `kesd backup`, `kesd restore` and `kesd check`.
import { resolve } from 'node:path';
import { rekeyDataDir } from '../boot/rekey.js';
import { describeUnsealSource, type UnsealSource } from '../store/unseal.js';
import { CliError, parse, positionals, type Command } from './command.js';

/** A key source from `--<which>-file PATH` or `--<which>-env NAME` (at most one of them). */
function sourceFlag(values: Record<string, unknown>, which: 'current' | 'new', usage: string): UnsealSource | undefined {
  const file = values[`${which}-file`] as string | undefined;
  const env = values[`${which}-env`] as string | undefined;
  if (file !== undefined && env !== undefined) throw new CliError(`give --${which}-file or --${which}-env, not both\nusage: ${usage}`, 2);
  if (file !== undefined) return { file: resolve(file) };
  if (env !== undefined) return { env };
  return undefined;
}

const rekeyUsage = 'kesd rekey (--new-file PATH | --new-env NAME) [--current-file PATH | --current-env NAME] <dir>';

const rekey: Command = {
  name: 'rekey',
  summary: 'Re-seal the root key under a new unseal key, atomically (the embedded store, or the etcd store .init names); the current key comes from where .unseal records it unless given',
  usage: rekeyUsage,
  async run(argv) {
    const flags = { 'new-file': { type: 'string' }, 'new-env': { type: 'string' }, 'current-file': { type: 'string' }, 'current-env': { type: 'string' } } as const;
    const { values, positionals: args } = parse(argv, flags, rekeyUsage);
    const [dir] = positionals(args, 1, rekeyUsage);
    const next = sourceFlag(values, 'new', rekeyUsage);
    if (next === undefined) throw new CliError(`no new unseal key: use --new-file PATH or --new-env NAME\nusage: ${rekeyUsage}`, 2);
    const current = sourceFlag(values, 'current', rekeyUsage);
    const outcome = await rekeyDataDir(dir!, { next, ...(current ? { current } : {}), env: process.env });
    console.log(outcome === 'rekeyed'
      ? `kesd: the root key of ${dir} is sealed under the unseal key from the ${describeUnsealSource(next)} now; the old key no longer opens it (backups made before still need the old key)`
      : `kesd: the root key of ${dir} is sealed under the unseal key from the ${describeUnsealSource(next)} already; nothing changed`);
    return 0;
  },
};

export const dataDirCommands: readonly Command[] = [rekey];
