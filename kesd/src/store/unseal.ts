// The sealed root key file <dir>/.unseal (kes-protocol §9.2 step 6, §9.4 step 3), in kesd's own format:
//
//   {"version":1,"env":"<ENV VAR NAME>","ciphertext":"<base64>"}
//
// ciphertext = seal(AES256 unseal key, JSON {key, sysadmin, created_at}, AD 'kesd/unseal/v1'). As in KES,
// the sysadmin is stored only inside the sealed root key, so it cannot be swapped without the unseal key,
// and the env var name is stored in the file: `kesd server` reads the variable named there. With the etcd
// store the same text lives at `<prefix>unseal` in etcd instead (store/etcd.ts).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { open, seal } from '../crypto/key.js';
import { isValidIdentity } from '../state/names.js';
import { writeFileAtomic } from './atomic.js';

export interface RootKeyInfo {
  /** 32 bytes. */
  key: Buffer;
  /** The sysadmin identity (lowercase hex). */
  sysadmin: string;
  /** RFC 3339. */
  createdAt: string;
}

export class UnsealError extends Error {
  override name = 'UnsealError';
}

export const UNSEAL_FILE = '.unseal';
const AD = Buffer.from('kesd/unseal/v1');
const KEY_LEN = 32;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Strict standard base64: alphabet, length a multiple of 4, correct padding, canonical trailing bits. */
function decodeBase64Strict(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  const bytes = Buffer.from(s, 'base64');
  return bytes.toString('base64') === s ? bytes : undefined;
}

/** The 32-byte unseal key held (base64) in the environment variable `envName`. */
export function readUnsealKey(envName: string, env: NodeJS.ProcessEnv): Buffer {
  const value = env[envName];
  if (value === undefined) throw new UnsealError(`unseal key: environment variable '${envName}' is not set`);
  // Surrounding whitespace is tolerated: `export X=$(cat keyfile)` style values often end in a newline.
  const key = decodeBase64Strict(value.trim());
  if (!key) throw new UnsealError(`unseal key: environment variable '${envName}' is not valid base64`);
  if (key.length !== KEY_LEN) throw new UnsealError(`unseal key must be ${KEY_LEN} bytes, got ${key.length}`);
  return key;
}

/** Seals `root` with `unsealKey`: the text of <dir>/.unseal, which the etcd store keeps at `<prefix>unseal` too. */
export function sealRootKey(envName: string, unsealKey: Buffer, root: RootKeyInfo): string {
  if (!ENV_NAME.test(envName)) throw new UnsealError(`unseal: '${envName}' is not a valid environment variable name`);
  if (unsealKey.length !== KEY_LEN) throw new UnsealError(`unseal key must be ${KEY_LEN} bytes, got ${unsealKey.length}`);
  if (root.key.length !== KEY_LEN) throw new UnsealError(`root key must be ${KEY_LEN} bytes, got ${root.key.length}`);
  if (!isValidIdentity(root.sysadmin)) throw new UnsealError(`unseal: sysadmin '${root.sysadmin}' is not a valid identity`);
  const plaintext = Buffer.from(
    JSON.stringify({ key: root.key.toString('base64'), sysadmin: root.sysadmin, created_at: root.createdAt }),
  );
  try {
    const ciphertext = seal({ algorithm: 'AES256', bytes: unsealKey }, plaintext, AD);
    return JSON.stringify({ version: 1, env: envName, ciphertext: ciphertext.toString('base64') }) + '\n';
  } finally {
    plaintext.fill(0);
  }
}

/** Seals `root` with `unsealKey` and writes <dir>/.unseal atomically with mode 0600. */
export async function writeSealedRootKey(dir: string, envName: string, unsealKey: Buffer, root: RootKeyInfo): Promise<void> {
  await writeFileAtomic(join(dir, UNSEAL_FILE), sealRootKey(envName, unsealKey, root), 0o600);
}

/** Reads <dir>/.unseal and unseals the root key with the env var named in it. Never writes. */
export async function openSealedRootKey(dir: string, env: NodeJS.ProcessEnv): Promise<{ root: RootKeyInfo; envName: string }> {
  const path = join(dir, UNSEAL_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UnsealError(`unseal: '${path}' does not exist (was the directory initialized with 'kesd init'?)`);
    throw new UnsealError(`unseal: cannot read '${path}': ${(err as Error).message}`);
  }
  return unsealRootKey(text, `'${path}'`, env);
}

/**
 * Unseals a sealed root key (the text sealRootKey made) with the env var named in it. `where` names its source
 * in errors, e.g. a file path in quotes.
 */
export function unsealRootKey(text: string, where: string, env: NodeJS.ProcessEnv): { root: RootKeyInfo; envName: string } {
  const corrupt = (why: string) => new UnsealError(`unseal: ${where} is corrupt: ${why}`);

  let file: unknown;
  try {
    file = JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
  const { version, env: envName, ciphertext } = (file ?? {}) as Record<string, unknown>;
  if (version !== 1) throw corrupt(`unsupported version ${JSON.stringify(version)}`);
  if (typeof envName !== 'string' || !ENV_NAME.test(envName)) throw corrupt('no valid environment variable name');
  const sealed = typeof ciphertext === 'string' ? decodeBase64Strict(ciphertext) : undefined;
  if (!sealed || sealed.length === 0) throw corrupt('ciphertext is not valid base64');

  const unsealKey = readUnsealKey(envName, env);
  let plaintext: Buffer;
  try {
    plaintext = open({ algorithm: 'AES256', bytes: unsealKey }, sealed, AD);
  } catch {
    // Also what a tampered ciphertext gives: AES-GCM cannot tell the two apart.
    throw new UnsealError('unseal key is wrong: the root key is not authentic');
  } finally {
    unsealKey.fill(0);
  }
  try {
    return { root: parseRootKey(plaintext, corrupt), envName };
  } finally {
    plaintext.fill(0);
  }
}

function parseRootKey(plaintext: Buffer, corrupt: (why: string) => UnsealError): RootKeyInfo {
  let inner: Record<string, unknown>;
  try {
    inner = JSON.parse(plaintext.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw corrupt('sealed root key is not JSON');
  }
  const key = typeof inner?.key === 'string' ? decodeBase64Strict(inner.key) : undefined;
  if (!key || key.length !== KEY_LEN) throw corrupt(`sealed root key is not ${KEY_LEN} bytes`);
  if (typeof inner.sysadmin !== 'string' || !isValidIdentity(inner.sysadmin)) throw corrupt('sealed sysadmin identity is invalid');
  if (typeof inner.created_at !== 'string' || Number.isNaN(Date.parse(inner.created_at))) throw corrupt('sealed created_at is invalid');
  return { key, sysadmin: inner.sysadmin, createdAt: inner.created_at };
}
