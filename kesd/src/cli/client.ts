// `kesd key|policy|identity|enclave|secret|status|log|metric …`: the `kes` v0.22.3 client CLI, one table entry per command.
// Environment as in kes: KES_SERVER, KES_CLIENT_CERT, KES_CLIENT_KEY, KES_ENCLAVE; plus KES_CA for a private CA.
import { readFile } from 'node:fs/promises';
import type { ParseArgsConfig } from 'node:util';
import { clientFromEnv, KesApiError, type KesClient, type PolicyJson } from '../client/client.js';
import { CliError, parse, type Command } from './command.js';

type Options = NonNullable<ParseArgsConfig['options']>;

interface Context {
  client: KesClient;
  args: string[];
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  /** --json given (or, for the commands kes prints as JSON when piped, stdout is not a terminal). */
  json: boolean;
}

interface Spec {
  /** The canonical name first, then aliases: 'key ls', 'key list'. */
  names: readonly string[];
  args: string;
  summary: string;
  min: number;
  max: number;
  /** Adds -e/--enclave (key, secret, policy and identity commands). */
  enclave?: boolean;
  /** Adds --json; 'piped' also prints JSON when stdout is not a terminal, as kes does for encrypt/decrypt/dek. */
  json?: boolean | 'piped';
  options?: Options;
  run(ctx: Context): Promise<void>;
}

/** Where command output goes: process.stdout, swapped by in-process tests (the node:test runner reports over stdout). */
export const output = { write: (text: string): void => void process.stdout.write(text) };
const out = (text: string) => output.write(text.endsWith('\n') ? text : text + '\n');
const jsonLine = (value: unknown) => out(JSON.stringify(value));
const ndjson = (items: readonly unknown[]) => items.forEach(jsonLine);

const pad = (n: number) => String(n).padStart(2, '0');
/** "2024-01-12 10:39:20" in local time, as kes prints dates; "<unknown>" for a missing or zero time. */
function date(value: unknown): string {
  const d = typeof value === 'string' ? new Date(value) : undefined;
  if (d === undefined || Number.isNaN(d.getTime()) || d.getUTCFullYear() <= 1) return '<unknown>';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Label/value lines, labels padded like kes's `%-11s`; empty values are left out. */
function table(rows: [string, unknown][]): string {
  return rows
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${k.padEnd(11)} ${String(v)}`)
    .join('\n');
}

/** Policy rules from either shape: v0.22 arrays or newest `{pattern: {}}` maps. */
function rules(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  if (value !== null && typeof value === 'object') return Object.keys(value);
  return [];
}

function ruleLines(allow: unknown, deny: unknown): string[] {
  const lines: string[] = [];
  if (rules(allow).length > 0) lines.push('Allow', ...rules(allow).map((r) => `  · ${r}`));
  if (rules(deny).length > 0) lines.push('Deny', ...rules(deny).map((r) => `  · ${r}`));
  return lines;
}

function decodeBase64(text: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0)
    throw new CliError(`invalid ${what}: illegal base64 data`);
  return Buffer.from(text, 'base64');
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A policy file `{"allow":[…],"deny":[…]}`; keys match case-insensitively and maps are accepted, as the server does. */
export function parsePolicyFile(text: string, source: string): { allow: string[]; deny: string[] } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CliError(`failed to read policy '${source}': ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json))
    throw new CliError(`failed to read policy '${source}': not a JSON object`);
  const field = (name: string) => Object.entries(json as object).find(([k]) => k.toLowerCase() === name)?.[1];
  return { allow: rules(field('allow')), deny: rules(field('deny')) };
}

// A 32-byte key in base64 ends in '=', which no key name may contain: `key create <name> <key>` imports.
const KEY_NAME = /^[0-9A-Za-z_-]+$/;

const keyCommands: Spec[] = [
  {
    names: ['key create'],
    args: '<name>... | <name> <base64 key>',
    summary: 'Create crypto keys (or import one: kes v0.22 <name> <key>)',
    min: 1,
    max: Infinity,
    enclave: true,
    async run({ client, args }) {
      if (args.length === 2 && !KEY_NAME.test(args[1]!))
        return client.importKey(args[0]!, decodeBase64(args[1]!, 'key'));
      for (const name of args) await client.createKey(name);
    },
  },
  {
    names: ['key import'],
    args: '<name> <base64 key>',
    summary: 'Import a 32-byte crypto key',
    min: 2,
    max: 2,
    enclave: true,
    options: { cipher: { type: 'string' } },
    async run({ client, args, values }) {
      await client.importKey(
        args[0]!,
        decodeBase64(args[1]!, 'key'),
        (values.cipher as string | undefined) ?? 'AES256',
      );
    },
  },
  {
    names: ['key info', 'key describe'],
    args: '<name>',
    summary: 'Get information about a crypto key',
    min: 1,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const info = await client.describeKey(args[0]!);
      if (json) return jsonLine(info);
      out(
        table([
          ['Name', info.name],
          ['ID', info.id],
          ['Algorithm', info.algorithm],
          ['Created At', date(info.created_at)],
          ['Created By', info.created_by || '<unknown>'],
        ]),
      );
      // kesd's key versions, newest first (a KES server sends none).
      if (info.versions !== undefined && info.versions.length > 0) {
        out(
          [
            'Versions',
            ...info.versions.map(
              (v) =>
                `  ${v.version.padStart(4)}  ${date(v.created_at)}  ${v.id ?? ''}${v.version === info.version ? '  (newest: encrypts)' : ''}`,
            ),
          ].join('\n'),
        );
      }
    },
  },
  {
    names: ['key rotate'],
    args: '<name>...',
    summary: 'Add a new version to crypto keys: new data keys use it, older versions still decrypt (kesd)',
    min: 1,
    max: Infinity,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      for (const name of args) {
        const rotated = await client.rotateKey(name);
        out(json ? JSON.stringify(rotated) : `${rotated.name}: version ${rotated.version}`);
      }
    },
  },
  {
    names: ['key delete-version'],
    args: '<name> <version>...',
    summary: 'Delete versions of a crypto key: what they encrypted no longer decrypts (kesd)',
    min: 2,
    max: Infinity,
    enclave: true,
    async run({ client, args: [name, ...versions] }) {
      for (const version of versions) await client.deleteKeyVersion(name!, version);
    },
  },
  {
    names: ['key ls', 'key list'],
    args: '[<pattern>]',
    summary: 'List crypto keys',
    min: 0,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const keys = (await client.listKeys(args[0] ?? '*')).sort((a, b) =>
        a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
      );
      if (json) return ndjson(keys);
      if (keys.length === 0) return;
      out(
        [`${'Date Created'.padEnd(19)} Key`, ...keys.map((k) => `${date(k.created_at).padEnd(19)} ${k.name}`)].join(
          '\n',
        ),
      );
    },
  },
  {
    names: ['key rm', 'key delete'],
    args: '<name>...',
    summary: 'Delete crypto keys',
    min: 1,
    max: Infinity,
    enclave: true,
    async run({ client, args }) {
      for (const name of args) await client.deleteKey(name);
    },
  },
  {
    names: ['key encrypt'],
    args: '<name> <message> [<base64 context>]',
    summary: 'Encrypt a (plain text) message',
    min: 2,
    max: 3,
    enclave: true,
    json: 'piped',
    async run({ client, args, json }) {
      const context = args[2] === undefined ? undefined : decodeBase64(args[2], 'context');
      const ciphertext = (await client.encrypt(args[0]!, Buffer.from(args[1]!, 'utf8'), context)).toString('base64');
      out(json ? JSON.stringify({ ciphertext }) : `\nciphertext: ${ciphertext}`);
    },
  },
  {
    names: ['key decrypt'],
    args: '<name> <base64 ciphertext> [<base64 context>]',
    summary: 'Decrypt an encrypted message',
    min: 2,
    max: 3,
    enclave: true,
    json: 'piped',
    async run({ client, args, json }) {
      const context = args[2] === undefined ? undefined : decodeBase64(args[2], 'context');
      const plaintext = (await client.decrypt(args[0]!, decodeBase64(args[1]!, 'ciphertext'), context)).toString(
        'base64',
      );
      out(json ? JSON.stringify({ plaintext }) : `\nplaintext: ${plaintext}`);
    },
  },
  {
    names: ['key dek', 'key generate'],
    args: '<name> [<base64 context>]',
    summary: 'Generate a new data encryption key',
    min: 1,
    max: 2,
    enclave: true,
    json: 'piped',
    async run({ client, args, json }) {
      const context = args[1] === undefined ? undefined : decodeBase64(args[1], 'context');
      const dek = await client.generateKey(args[0]!, context);
      const [plaintext, ciphertext] = [dek.plaintext.toString('base64'), dek.ciphertext.toString('base64')];
      out(json ? JSON.stringify({ plaintext, ciphertext }) : `\nplaintext:  ${plaintext}\nciphertext: ${ciphertext}`);
    },
  },
];

const policyCommands: Spec[] = [
  {
    names: ['policy create', 'policy add', 'policy write'],
    args: '<name> [<file.json>]',
    summary: 'Create or replace a policy from a JSON file (or stdin)',
    min: 1,
    max: 2,
    enclave: true,
    async run({ client, args }) {
      if (args.length === 1 && process.stdin.isTTY) throw new CliError('no policy file specified', 2);
      const source = args[1] ?? '<stdin>';
      let text: string;
      try {
        text = args[1] === undefined ? (await readStdin()).toString('utf8') : await readFile(args[1], 'utf8');
      } catch (err) {
        throw new CliError(`failed to read policy '${source}': ${(err as Error).message}`);
      }
      await client.writePolicy(args[0]!, parsePolicyFile(text, source));
    },
  },
  {
    names: ['policy assign'],
    args: '<policy> <identity>...',
    summary: 'Assign a policy to identities',
    min: 2,
    max: Infinity,
    enclave: true,
    async run({ client, args: [policy, ...identities] }) {
      for (const identity of identities) await client.assignPolicy(policy!, identity);
    },
  },
  {
    names: ['policy show', 'policy read'],
    args: '<name>',
    summary: 'Display a policy',
    min: 1,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const policy: PolicyJson = await client.readPolicy(args[0]!);
      if (json) return jsonLine(policy);
      out(
        [
          table([['Name', args[0]]]),
          ...ruleLines(policy.allow, policy.deny),
          table([
            ['Created At', date(policy.created_at)],
            ['Created By', policy.created_by || '<unknown>'],
          ]),
        ].join('\n'),
      );
    },
  },
  {
    names: ['policy info', 'policy describe'],
    args: '<name>',
    summary: 'Get information about a policy',
    min: 1,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const info = await client.describePolicy(args[0]!);
      if (json) return jsonLine(info);
      out(
        table([
          ['Name', info.name ?? args[0]],
          ['Date', date(info.created_at)],
          ['Owner', info.created_by || '<unknown>'],
        ]),
      );
    },
  },
  {
    names: ['policy ls', 'policy list'],
    args: '[<pattern>]',
    summary: 'List policies',
    min: 0,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const policies = await client.listPolicies(args[0] ?? '*');
      if (json) return ndjson(policies);
      if (policies.length > 0)
        out(
          policies
            .map((p) => p.name)
            .sort()
            .join('\n'),
        );
    },
  },
  {
    names: ['policy rm', 'policy delete'],
    args: '<name>...',
    summary: 'Delete policies',
    min: 1,
    max: Infinity,
    enclave: true,
    async run({ client, args }) {
      for (const name of args) await client.deletePolicy(name);
    },
  },
];

async function describeSelf({ client, json }: Context): Promise<void> {
  const self = await client.describeSelf();
  if (json) return jsonLine(self);
  // kms-go shape: `policy` names it and allow/deny sit at the top; v0.22: `policy_name` plus a nested policy object.
  const nested = typeof self.policy === 'object' && self.policy !== null ? self.policy : undefined;
  const policyName = typeof self.policy === 'string' ? self.policy : self.policy_name;
  out(
    [
      table([
        ['Identity', self.identity],
        ['Role', self.admin ? 'Admin' : 'User'],
        ['Created At', date(self.created_at)],
        ['Created By', self.created_by],
        ['Policy', policyName],
      ]),
      ...ruleLines(nested?.allow ?? self.allow, nested?.deny ?? self.deny),
    ].join('\n'),
  );
}

const identityCommands: Spec[] = [
  {
    names: ['identity info', 'identity describe'],
    args: '[<identity>]',
    summary: 'Get information about an identity (default: your own)',
    min: 0,
    max: 1,
    enclave: true,
    json: true,
    async run(ctx) {
      if (ctx.args.length === 0) return describeSelf(ctx);
      const info = await ctx.client.describeIdentity(ctx.args[0]!);
      if (ctx.json) return jsonLine(info);
      out(
        table([
          ['Identity', ctx.args[0]],
          ['Policy', info.policy],
          ['Role', info.admin ? 'Admin' : 'User'],
          ['Created At', date(info.created_at)],
          ['Created By', info.created_by],
        ]),
      );
    },
  },
  {
    names: ['identity self', 'whoami'],
    args: '',
    summary: 'Get information about your own identity',
    min: 0,
    max: 0,
    enclave: true,
    json: true,
    run: describeSelf,
  },
  {
    names: ['identity ls', 'identity list'],
    args: '[<pattern>]',
    summary: 'List identities',
    min: 0,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const ids = await client.listIdentities(args[0] ?? '*');
      if (json) return ndjson(ids);
      if (ids.length === 0) return;
      out(
        [
          `${'Identity'.padEnd(64)} Policy`,
          ...ids.map((i) => `${String(i.identity).padEnd(64)} ${i.admin ? '<admin>' : (i.policy ?? '')}`),
        ].join('\n'),
      );
    },
  },
  {
    names: ['identity rm', 'identity delete'],
    args: '<identity>...',
    summary: 'Delete identities',
    min: 1,
    max: Infinity,
    enclave: true,
    async run({ client, args }) {
      for (const id of args) await client.deleteIdentity(id);
    },
  },
];

const enclaveCommands: Spec[] = [
  {
    names: ['enclave create'],
    args: '<name> <admin identity>',
    summary: 'Create an enclave (system admin only)',
    min: 2,
    max: 2,
    async run({ client, args }) {
      await client.createEnclave(args[0]!, args[1]!);
    },
  },
  {
    names: ['enclave info', 'enclave describe'],
    args: '<name>',
    summary: 'Get information about an enclave (system admin only)',
    min: 1,
    max: 1,
    json: true,
    async run({ client, args, json }) {
      const info = await client.describeEnclave(args[0]!);
      if (json) return jsonLine(info);
      out(
        table([
          ['Name', info.name],
          ['Created At', date(info.created_at)],
          ['Created By', info.created_by || '<unknown>'],
        ]),
      );
    },
  },
  {
    names: ['enclave rm', 'enclave delete'],
    args: '<name>...',
    summary: 'Delete enclaves (system admin only)',
    min: 1,
    max: Infinity,
    async run({ client, args }) {
      for (const name of args) await client.deleteEnclave(name);
    },
  },
];

const secretCommands: Spec[] = [
  {
    names: ['secret create'],
    args: '<name> [<value>]',
    summary: 'Create a secret from a value, --file, or stdin',
    min: 1,
    max: 2,
    enclave: true,
    options: { file: { type: 'string' } },
    async run({ client, args, values }) {
      const file = values.file as string | undefined;
      if (args.length === 2 && file !== undefined)
        throw new CliError(`cannot read from '${file}' when a secret value is specified`, 2);
      let value: Buffer;
      if (args.length === 2) value = Buffer.from(args[1]!, 'utf8');
      else if (file !== undefined)
        value = await readFile(file).catch((err: Error) => {
          throw new CliError(`failed to read '${file}': ${err.message}`);
        });
      else if (!process.stdin.isTTY) value = await readStdin();
      else throw new CliError('no secret value specified', 2);
      await client.createSecret(args[0]!, value);
    },
  },
  {
    names: ['secret info', 'secret describe'],
    args: '<name>',
    summary: 'Get information about a secret',
    min: 1,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const info = await client.describeSecret(args[0]!);
      if (json) return jsonLine(info);
      out(
        table([
          ['Name', args[0]],
          ['Type', info.type],
          ['Created At', date(info.created_at)],
          ['Created By', info.created_by || '<unknown>'],
        ]),
      );
    },
  },
  {
    names: ['secret show', 'secret read'],
    args: '<name>',
    summary: 'Display a secret',
    min: 1,
    max: 1,
    enclave: true,
    json: true,
    options: { plain: { type: 'boolean', short: 'p' } },
    async run({ client, args, json, values }) {
      const secret = await client.readSecret(args[0]!);
      if (values.plain) return out(secret.bytes.toString('utf8'));
      if (json) return jsonLine({ ...secret, bytes: secret.bytes.toString('base64'), name: args[0] });
      out(
        table([
          ['Name', args[0]],
          ['Type', secret.type],
          ['Created At', date(secret.created_at)],
          ['Created By', secret.created_by || '<unknown>'],
          ['Value', secret.bytes.toString('utf8')],
        ]),
      );
    },
  },
  {
    names: ['secret ls', 'secret list'],
    args: '[<pattern>]',
    summary: 'List secrets',
    min: 0,
    max: 1,
    enclave: true,
    json: true,
    async run({ client, args, json }) {
      const secrets = await client.listSecrets(args[0] ?? '*');
      if (json) return ndjson(secrets);
      if (secrets.length === 0) return;
      out(
        [
          `${'Date Created'.padEnd(19)} Secret`,
          ...secrets.map((s) => `${date(s.created_at).padEnd(19)} ${s.name}`),
        ].join('\n'),
      );
    },
  },
  {
    names: ['secret rm', 'secret delete'],
    args: '<name>...',
    summary: 'Delete secrets',
    min: 1,
    max: Infinity,
    enclave: true,
    async run({ client, args }) {
      for (const name of args) await client.deleteSecret(name);
    },
  },
];

function formatBytes(n: unknown): string | undefined {
  if (typeof n !== 'number') return undefined;
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) [v, i] = [v / 1024, i + 1];
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** kesd and the newest KES send seconds, v0.22 a Go Duration in nanoseconds; no server has been up for 31 years. */
function formatUptime(uptime: number): string {
  let s = Math.floor(uptime >= 1e9 ? uptime / 1e9 : uptime);
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (s >= size) parts.push(`${Math.floor(s / size)}${unit}`);
    s %= size;
  }
  return [...parts, `${s}s`].join(' ');
}

function formatAuditLine(line: string): string {
  try {
    const e = JSON.parse(line) as {
      time?: string;
      request?: { ip?: string; path?: string; identity?: string; enclave?: string };
      response?: { code?: number; time?: number };
    };
    const t = e.time ? new Date(e.time) : undefined;
    const clock =
      t && !Number.isNaN(t.getTime())
        ? `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`
        : '--:--:--';
    const ns = e.response?.time ?? 0;
    const latency =
      ns >= 1e9 ? `${(ns / 1e9).toFixed(1)}s` : ns >= 1e6 ? `${(ns / 1e6).toFixed(1)}ms` : `${(ns / 1e3).toFixed(0)}µs`;
    const identity = (e.request?.identity ?? '<unknown>').slice(0, 16);
    return `${clock}  ${String(e.response?.code ?? '').padEnd(3)}  ${identity.padEnd(16)}  ${(e.request?.ip ?? '<unknown>').padEnd(15)}  ${(e.request?.path ?? '').padEnd(30)}  ${latency}`;
  } catch {
    return line;
  }
}

function formatErrorLine(line: string): string {
  try {
    const e = JSON.parse(line) as { message?: unknown };
    return typeof e.message === 'string' ? e.message : line;
  } catch {
    return line;
  }
}

const serverCommands: Spec[] = [
  {
    names: ['status'],
    args: '',
    summary: 'Print the status of the KES server',
    min: 0,
    max: 0,
    json: true,
    options: { short: { type: 'boolean', short: 's' } },
    async run({ client, json, values }) {
      const start = process.hrtime.bigint();
      const status = await client.status();
      const latencyMs = Number(process.hrtime.bigint() - start) / 1e6;
      if (json) return jsonLine(status);
      if (values.short) return out(`${client.endpoint.origin}  ${latencyMs.toFixed(1)}ms`);
      out(
        table([
          ['Endpoint', client.endpoint.origin],
          ['Latency', `${latencyMs.toFixed(1)}ms`],
          ['Version', status.version],
          ['OS/Arch', status.os && status.arch ? `${status.os}/${status.arch}` : undefined],
          ['Uptime', formatUptime(Number(status.uptime ?? 0))],
          ['CPUs', status.num_cpu === undefined ? undefined : `${status.num_cpu_used ?? '?'}/${status.num_cpu}`],
          ['Heap', formatBytes(status.mem_heap_used)],
          [
            'Keystore',
            status.keystore_unreachable
              ? 'unreachable'
              : status.keystore_latency !== undefined
                ? `${status.keystore_latency}ms`
                : undefined,
          ],
        ]),
      );
    },
  },
  {
    names: ['log'],
    args: '',
    summary: 'Stream the audit log (default, --audit) or the error log (--error) until Ctrl-C',
    min: 0,
    max: 0,
    json: true,
    options: { audit: { type: 'boolean' }, error: { type: 'boolean' } },
    async run({ client, json, values }) {
      if (values.audit && values.error) throw new CliError('cannot display audit and error logs at the same time', 2);
      const kind = values.error ? 'error' : 'audit';
      let header = !json && kind === 'audit';
      const stream = client.streamLog(kind, (line) => {
        if (header)
          out(`${'Time'.padEnd(8)}  Sta  ${'Identity'.padEnd(16)}  ${'IP'.padEnd(15)}  ${'API'.padEnd(30)}  Latency`);
        header = false;
        out(json ? line : kind === 'audit' ? formatAuditLine(line) : formatErrorLine(line));
      });
      const stop = () => stream();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      try {
        await stream.done;
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    },
  },
  {
    names: ['metric', 'metrics'],
    args: '',
    summary: 'Print the server metrics (Prometheus text)',
    min: 0,
    max: 0,
    async run({ client }) {
      out(await client.metrics());
    },
  },
  {
    names: ['api'],
    args: '',
    summary: 'List the server API endpoints',
    min: 0,
    max: 0,
    json: true,
    async run({ client, json }) {
      const routes = await client.api();
      if (json) return jsonLine(routes);
      out(
        [
          `${'Method'.padEnd(7)} ${'Path'.padEnd(28)} ${'Max Body'.padEnd(9)} Timeout`,
          ...routes.map(
            (r) =>
              `${r.method.padEnd(7)} ${r.path.padEnd(28)} ${String(r.max_body).padEnd(9)} ${r.timeout ? `${r.timeout}s` : '-'}`,
          ),
        ].join('\n'),
      );
    },
  },
];

const UNTRUSTED_SERVER_CERT = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_UNTRUSTED',
]);

function toCommands(spec: Spec): Command[] {
  const [canonical] = spec.names;
  const options: Options = {
    insecure: { type: 'boolean', short: 'k' },
    color: { type: 'string' }, // accepted for kes compatibility; output is never coloured
    ...(spec.enclave ? { enclave: { type: 'string', short: 'e' } } : {}),
    ...(spec.json ? { json: { type: 'boolean' } } : {}),
    ...spec.options,
  };
  const flags = [
    '-k',
    ...(spec.enclave ? ['-e <enclave>'] : []),
    ...(spec.json ? ['--json'] : []),
    ...Object.entries(spec.options ?? {}).map(([name, o]) =>
      o.type === 'string' ? `--${name} <${name}>` : `--${name}`,
    ),
  ];
  return spec.names.map((name) => {
    const usage = `kesd ${name} [${flags.join('] [')}]${spec.args ? ` ${spec.args}` : ''}`;
    return {
      name,
      summary: name === canonical ? spec.summary : `Same as '${canonical}'`,
      usage,
      async run(argv: string[]): Promise<number> {
        const { values, positionals: args } = parse(argv, options, usage);
        if (args.length < spec.min || args.length > spec.max) {
          const expected =
            spec.min === spec.max
              ? `${spec.min}`
              : spec.max === Infinity
                ? `at least ${spec.min}`
                : `${spec.min} to ${spec.max}`;
          throw new CliError(`expected ${expected} argument(s), got ${args.length}\nusage: ${usage}`, 2);
        }
        const json = values.json === true || (spec.json === 'piped' && !process.stdout.isTTY);
        let client: KesClient | undefined;
        try {
          client = clientFromEnv({ insecure: values.insecure === true, enclave: values.enclave as string | undefined });
          await spec.run({ client, args, values, json });
          return 0;
        } catch (err) {
          if (err instanceof CliError) throw err;
          if (err instanceof KesApiError) throw new CliError(err.message);
          const code = (err as { code?: unknown }).code;
          if (typeof code === 'string' && UNTRUSTED_SERVER_CERT.has(code)) {
            throw new CliError(
              `tls: cannot verify the server certificate (${code}): set KES_CA to its CA certificate file, or use -k/--insecure`,
            );
          }
          throw new CliError((err as Error).message ?? String(err));
        } finally {
          client?.close();
        }
      },
    };
  });
}

export const clientCommands: readonly Command[] = [
  ...keyCommands,
  ...policyCommands,
  ...identityCommands,
  ...enclaveCommands,
  ...secretCommands,
  ...serverCommands,
].flatMap(toCommands);
