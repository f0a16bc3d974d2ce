// The CLI's shape: `kesd <group> [<sub>] [flags] [args]`, each command a small module with its own flags.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export interface Command {
  /** "server", "key create", … */
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  run(argv: string[]): Promise<number>;
}

/** An error whose message is the whole story: printed without a stack, exit code 1 (2 for usage). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, usage: string) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new CliError(`${(err as Error).message}\nusage: ${usage}`, 2);
  }
}

export function positionals(list: string[], count: number, usage: string): string[] {
  if (list.length !== count)
    throw new CliError(`expected ${count} argument(s), got ${list.length}\nusage: ${usage}`, 2);
  return list;
}
