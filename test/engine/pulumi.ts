// The real `pulumi` CLI on a throwaway DIY backend and PULUMI_HOME (nothing of the user's is read or written), one
// project directory per instance. Each stack's config lives in the work dir and is passed with --config-file, so
// the repository gets no Pulumi.<stack>.yaml, ever.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { run, type RunResult } from './run.ts';
import type { Toolchain } from './toolchain.ts';

export const REPO = resolve(import.meta.dirname, '../..');

export class CommandError extends Error {
  constructor(
    readonly result: RunResult,
    args: string[],
  ) {
    super(
      `pulumi ${args.join(' ')}: exit ${result.code} after ${result.ms} ms\n${tail(result.stdout)}\n${tail(result.stderr)}`,
    );
  }
}

function tail(text: string, lines = 60): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** The engine's environment: Node 24 (the pinned devDependency) and the toolchain first on PATH. */
export function pulumiEnv(toolchain: Toolchain, work: string): NodeJS.ProcessEnv {
  mkdirSync(join(work, 'state'), { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: [...toolchain.path, join(REPO, 'node_modules', 'node', 'bin'), process.env.PATH ?? ''].join(delimiter),
    PULUMI_HOME: join(work, 'pulumi-home'),
    PULUMI_BACKEND_URL: `file://${join(work, 'state')}`,
    PULUMI_CONFIG_PASSPHRASE: 'engine-suite',
    PULUMI_SKIP_UPDATE_CHECK: 'true',
    PULUMI_DISABLE_CI_DETECTION: 'true',
  };
  // The test runner's own variables would change how the program's Node starts.
  delete env.NODE_OPTIONS;
  delete env.NODE_TEST_CONTEXT;
  return env;
}

export class Project {
  constructor(
    readonly dir: string,
    private readonly pulumi: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly work: string,
    private readonly log: string,
  ) {}

  configFile(stack: string): string {
    return join(this.work, `Pulumi.${stack}.yaml`);
  }

  /** Runs pulumi in the project; throws with its output on a non-zero exit unless `allowFailure`. */
  async cli(
    args: string[],
    opts: { stack?: string; timeoutMs?: number; allowFailure?: boolean; prependPath?: string; cwd?: string } = {},
  ): Promise<RunResult> {
    const stackArgs = opts.stack
      ? ['--stack', opts.stack, ...(takesConfigFile(args[0]!) ? ['--config-file', this.configFile(opts.stack)] : [])]
      : [];
    const all = [...args, ...stackArgs, '--non-interactive', '--color', 'never'];
    const env = opts.prependPath ? { ...this.env, PATH: `${opts.prependPath}${delimiter}${this.env.PATH}` } : this.env;
    const result = await run(this.pulumi, all, {
      cwd: opts.cwd ?? this.dir,
      env,
      timeoutMs: opts.timeoutMs ?? 900_000,
      log: this.log,
    });
    if (result.code !== 0 && !opts.allowFailure) throw new CommandError(result, all);
    return result;
  }

  /** Creates the stack with a config: `base` (a Pulumi.<stack>.yaml of the project, or none) merged with `config`. */
  async initStack(stack: string, config: Record<string, unknown>, base?: string): Promise<void> {
    // `stack init` writes the passphrase salt to Pulumi.<stack>.yaml beside Pulumi.yaml: run it beside a copy.
    const initDir = join(this.work, `init-${stack}`);
    mkdirSync(initDir, { recursive: true });
    copyFileSync(join(this.dir, 'Pulumi.yaml'), join(initDir, 'Pulumi.yaml'));
    await this.cli(['stack', 'init', stack, '--secrets-provider', 'passphrase'], { cwd: initDir });
    const salted = parse(readFileSync(join(initDir, `Pulumi.${stack}.yaml`), 'utf8')) as Record<string, unknown>;
    const doc = base ? (parse(readFileSync(join(this.dir, base), 'utf8')) as { config?: Record<string, unknown> }) : {};
    writeFileSync(this.configFile(stack), stringify({ ...salted, config: { ...(doc.config ?? {}), ...config } }));
  }

  /** Sets one config value (`--path` syntax) in the stack's config file. */
  async setConfig(stack: string, key: string, value: string): Promise<void> {
    await this.cli(['config', 'set', '--path', key, value], { stack });
  }

  /** `pulumi preview --json`: the steps the engine plans, with their diffs. */
  async preview(
    stack: string,
    extra: string[] = [],
    prependPath?: string,
  ): Promise<{ json: PreviewJson; result: RunResult }> {
    const result = await this.cli(['preview', '--json', ...extra], { stack, allowFailure: true, prependPath });
    let json: PreviewJson;
    try {
      json = JSON.parse(result.stdout) as PreviewJson;
    } catch {
      throw new CommandError(result, ['preview', '--json', ...extra]);
    }
    if (result.code !== 0) throw new CommandError(result, ['preview', '--json', ...extra]);
    return { json, result };
  }
}

function takesConfigFile(command: string): boolean {
  return ['config', 'preview', 'up', 'refresh', 'destroy'].includes(command);
}

export interface PreviewStep {
  readonly op: string;
  readonly urn: string;
  readonly diffReasons?: string[];
  readonly replaceReasons?: string[];
  readonly detailedDiff?: Record<string, { kind: string; inputDiff?: boolean }>;
  readonly newState?: { type: string; custom?: boolean; provider?: string; inputs?: Record<string, unknown> };
  readonly oldState?: { type: string; provider?: string };
}

export interface PreviewJson {
  readonly steps: PreviewStep[];
  readonly diagnostics?: { severity: string; message: string; urn?: string }[];
  readonly changeSummary?: Record<string, number>;
}

/** The last `::`-part of a URN: the resource's name. */
export const nameOf = (urn: string) => urn.split('::').pop()!;
