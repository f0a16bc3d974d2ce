// `kesd identity new|of`: local identity tools, as in `kes identity new/of`.
import { readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { newIdentity, parseDuration, type KeyType } from '../identity/certificate.js';
import { identityOfPem } from '../identity/spki.js';
import { CliError, parse, positionals, type Command } from './command.js';

const newUsage =
  'kesd identity new [--key FILE] [--cert FILE] [--ip IP]... [--dns NAME]... [--expiry DURATION] [--p256] [--force] <subject>';

const identityNew: Command = {
  name: 'identity new',
  summary: 'Create a self-signed certificate and private key for TLS server and client auth, and print its identity',
  usage: newUsage,
  async run(argv) {
    const { values, positionals: args } = parse(
      argv,
      {
        key: { type: 'string' },
        cert: { type: 'string' },
        ip: { type: 'string', multiple: true },
        dns: { type: 'string', multiple: true },
        expiry: { type: 'string' },
        p256: { type: 'boolean' },
        force: { type: 'boolean', short: 'f' },
      },
      newUsage,
    );
    const [subject] = positionals(args, 1, newUsage);
    const keyType: KeyType = values.p256 ? 'p256' : 'ed25519';
    const expiryMs = parseDuration(values.expiry ?? '720h'); // the kes CLI's default
    const id = await newIdentity({ subject: subject!, keyType, ips: values.ip, dnsNames: values.dns, expiryMs });
    const keyFile = values.key ?? 'private.key';
    const certFile = values.cert ?? 'public.crt';
    for (const f of [keyFile, certFile]) {
      if (existsSync(f) && !values.force) throw new CliError(`'${f}' already exists; use --force to overwrite`);
    }
    await writeFile(keyFile, id.keyPem, { mode: 0o600 });
    await writeFile(certFile, id.certPem, { mode: 0o644 });
    process.stdout.write(`Private key: ${keyFile}\nCertificate: ${certFile}\nIdentity:    ${id.identity}\n`);
    return 0;
  },
};

const ofUsage = 'kesd identity of <certificate file | kes:v1: API key>';

const identityOf: Command = {
  name: 'identity of',
  summary: 'Print the identity of a certificate (or of an API key)',
  usage: ofUsage,
  async run(argv) {
    const { positionals: args } = parse(argv, {}, ofUsage);
    const [source] = positionals(args, 1, ofUsage);
    const text = source!.startsWith('kes:v1:') ? source! : await readFile(source!, 'utf8');
    console.log(identityOfPem(text));
    return 0;
  },
};

export const identityCommands: readonly Command[] = [identityNew, identityOf];
