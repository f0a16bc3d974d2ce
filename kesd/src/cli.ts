// `kesd`: the server, its data-dir tools, and a client that mirrors the `kes` v0.22.3 CLI.
import { clientCommands } from './cli/client.js';
import { CliError, type Command } from './cli/command.js';
import { dataDirCommands } from './cli/data-dir.js';
import { identityCommands } from './cli/identity.js';
import { importCommands } from './cli/import.js';
import { serverCommands } from './cli/server.js';
import { VERSION } from './version.js';

const commands: readonly Command[] = [
  ...serverCommands,
  ...dataDirCommands,
  ...identityCommands,
  ...importCommands,
  ...clientCommands,
];

function help(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'usage: kesd <command> [options]',
    '',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '-h' || argv[0] === '--help' || argv[0] === 'help') {
    console.log(help());
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version' || argv[0] === 'version') {
    console.log(`kesd ${VERSION.version}`);
    return 0;
  }
  const two = `${argv[0]} ${argv[1] ?? ''}`;
  const command = commands.find((c) => c.name === two) ?? commands.find((c) => c.name === argv[0]);
  if (command === undefined) {
    console.error(`kesd: unknown command '${argv.slice(0, 2).join(' ')}'\n\n${help()}`);
    return 2;
  }
  const rest = argv.slice(command.name.split(' ').length);
  if (rest.includes('-h') || rest.includes('--help')) {
    console.log(`usage: ${command.usage}\n\n${command.summary}`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof CliError) {
      console.error(`kesd: ${err.message}`);
      return err.exitCode;
    }
    console.error(`kesd: ${(err as Error).message ?? err}`);
    return 1;
  }
}
