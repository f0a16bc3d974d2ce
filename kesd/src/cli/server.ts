// `kesd init` and `kesd server`: the command lines over the data dir (boot/), as `kes init` / `kes server <dir>` of
// KES v0.22.
import os from 'node:os';
import { readFile } from 'node:fs/promises';
import { initDataDir } from '../boot/data-dir.js';
import { prepareServerStart } from '../boot/server-start.js';
import { runCluster } from '../server/cluster.js';
import { runServer } from '../server/run.js';
import { parseInitConfig, unsealSourceOf } from '../config/config.js';
import { describeUnsealSource } from '../store/unseal.js';
import { CliError, parse, positionals, type Command } from './command.js';

const initUsage = 'kesd init --config <init.yml> [--force] <dir>';

const init: Command = {
  name: 'init',
  summary: 'Initialise a stateful data dir from an init.yml (KES v0.22 format)',
  usage: initUsage,
  async run(argv) {
    const { values, positionals: args } = parse(
      argv,
      { config: { type: 'string', short: 'c' }, force: { type: 'boolean', short: 'f' } },
      initUsage,
    );
    const [dir] = positionals(args, 1, initUsage);
    if (values.config === undefined)
      throw new CliError(`no init config specified: use --config <init.yml>\nusage: ${initUsage}`, 2);
    const config = parseInitConfig(await readFile(values.config, 'utf8'), process.env);
    await initDataDir(dir!, config, { force: values.force });
    const enclaves = config.enclaves
      .map((e) => `${e.name} (${e.policies.length} policies, ${e.keys.length} keys)`)
      .join(', ');
    console.log(
      `Initialized kesd in ${dir}\n  Address:   ${config.address}\n  Sysadmin:  ${config.sysadmin}\n  Unseal:    ${describeUnsealSource(unsealSourceOf(config))}\n  Enclaves:  ${enclaves}`,
    );
    return 0;
  },
};

const serverUsage = 'kesd server [--addr HOST:PORT] [--init init.yml] [--audit-log on|off] [--workers N] <dir>';

const server: Command = {
  name: 'server',
  summary:
    'Serve the KES API from a data dir (unsealed by the key in the configured env var); with --init, initialise it first if needed and apply init.yml at every start; --workers N processes (default: one per CPU)',
  usage: serverUsage,
  async run(argv) {
    // A SIGHUP (certificate rotation) before the server holds its own handler must not kill it (the default action);
    // the certificate is read after this point anyway.
    process.on('SIGHUP', () => {});
    const { values, positionals: args } = parse(
      argv,
      {
        addr: { type: 'string' },
        init: { type: 'string' },
        'audit-log': { type: 'string' },
        workers: { type: 'string' },
      },
      serverUsage,
    );
    const [dir] = positionals(args, 1, serverUsage);
    const audit = values['audit-log'] ?? 'on';
    if (audit !== 'on' && audit !== 'off') throw new CliError(`--audit-log must be 'on' or 'off', got '${audit}'`, 2);
    const workers =
      values.workers === undefined
        ? os.availableParallelism()
        : /^\d+$/.test(values.workers)
          ? Number(values.workers)
          : NaN;
    if (!(workers >= 1 && workers <= 256))
      throw new CliError(`--workers must be a number from 1 to 256, got '${values.workers}'`, 2);
    const declared =
      values.init === undefined ? undefined : parseInitConfig(await readFile(values.init, 'utf8'), process.env);
    const { config, root } = await prepareServerStart(dir!, declared, values.init, process.env, (line) =>
      console.error(line),
    );
    const opts = {
      dir: dir!,
      config,
      root,
      address: values.addr ?? config.address,
      auditStdout: audit === 'on',
      declared,
    };
    // One worker is the plain single process; more run on node:cluster (server/cluster.ts).
    if (workers > 1) return runCluster(opts, workers);
    await runServer(opts);
    return 0;
  },
};

export const serverCommands: readonly Command[] = [init, server];
