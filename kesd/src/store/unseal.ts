// The sealed root key file <dir>/.unseal (kes-protocol §9.2 step 6, §9.4 step 3), in kesd's own format:
//
//   {"version":1,"env":"<ENV VAR NAME>","ciphertext":"<base64>"}     the unseal key is in an environment variable
//   {"version":2,"file":"<absolute path>","ciphertext":"<base64>"}   the unseal key is in a file (kesd's extension)
//
// ciphertext = seal(AES256 unseal key, JSON {key, sysadmin, created_at}, AD 'kesd/unseal/v1'), the same in both
// versions. As in KES, the sysadmin is stored only inside the sealed root key, so it cannot be swapped without the
// unseal key, and where the unseal key comes from is stored in the file: `kesd server` reads the key from there
// (or from the source its --init file names). A key from an environment variable keeps version 1, which kesd
// releases before the file source read too; only the file source needs version 2, which they refuse by its version.
// With the etcd store the same text lives at `<prefix>unseal` in etcd instead (store/etcd.ts).
//
// The root key never becomes a JS string: the sealed JSON is read and written byte by byte around the key's base64
// (crypto/secret.ts), and every buffer that held it is wiped.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { open, seal } from '../crypto/key.js';
import { base64Length, decodeBase64, encodeBase64Into, secretBuffer, wipe } from '../crypto/secret.js';
import { isValidIdentity } from '../kes/names.js';
import { writeFileAtomic, type AtomicWriteStep } from '../fs/atomic.js';
import {
  ENV_NAME,
  RootKeyMissingError,
  takeUnsealKey,
  UNSEAL_KEY_LEN,
  UnsealError,
  WrongUnsealKeyError,
  type UnsealSource,
} from './unseal-key.js';

export {
  readUnsealKey,
  RootKeyMissingError,
  takeUnsealKey,
  UnsealError,
  WrongUnsealKeyError,
  describeUnsealSource,
  sameUnsealSource,
  type UnsealSource,
} from './unseal-key.js';

export interface RootKeyInfo {
  /** 32 bytes, in a buffer of their own (crypto/secret.ts). */
  key: Buffer;
  /** The sysadmin identity (lowercase hex). */
  sysadmin: string;
  /** RFC 3339. */
  createdAt: string;
}

/** A parsed .unseal text: where its unseal key comes from, and the sealed root key. */
export interface SealedRootKey {
  readonly source: UnsealSource;
  readonly ciphertext: Buffer;
  /** Names where the text came from in errors, e.g. a file path in quotes. */
  readonly where: string;
  /** The text as read (a rekey on etcd swaps it only if it is still this). */
  readonly text: string;
}

export const UNSEAL_FILE = '.unseal';
const AD = Buffer.from('kesd/unseal/v1');
const KEY_LEN = 32;

function checkSource(source: UnsealSource): void {
  if ('env' in source) {
    if (!ENV_NAME.test(source.env))
      throw new UnsealError(`unseal: '${source.env}' is not a valid environment variable name`);
  } else if (!source.file.startsWith('/') || source.file.includes('\0')) {
    throw new UnsealError(`unseal: the key file '${source.file}' must be an absolute path`);
  }
}

/** The .unseal text for a sealed root key and its unseal key's source. */
export function formatSealedRootKey(source: UnsealSource, ciphertext: Uint8Array): string {
  checkSource(source);
  const where = 'env' in source ? { version: 1, env: source.env } : { version: 2, file: source.file };
  return JSON.stringify({ ...where, ciphertext: Buffer.from(ciphertext).toString('base64') }) + '\n';
}

/** Seals `root` with `unsealKey`: the text of <dir>/.unseal, which the etcd store keeps at `<prefix>unseal` too. */
export function sealRootKey(source: UnsealSource | string, unsealKey: Buffer, root: RootKeyInfo): string {
  const from: UnsealSource = typeof source === 'string' ? { env: source } : source;
  checkSource(from);
  if (unsealKey.length !== UNSEAL_KEY_LEN)
    throw new UnsealError(`unseal key must be ${UNSEAL_KEY_LEN} bytes, got ${unsealKey.length}`);
  if (root.key.length !== KEY_LEN) throw new UnsealError(`root key must be ${KEY_LEN} bytes, got ${root.key.length}`);
  if (!isValidIdentity(root.sysadmin))
    throw new UnsealError(`unseal: sysadmin '${root.sysadmin}' is not a valid identity`);
  // {"key":"<base64>","sysadmin":...,"created_at":...}, the key's base64 written straight into the buffer.
  const head = Buffer.from('{"key":"');
  const tail = Buffer.from(`",${JSON.stringify({ sysadmin: root.sysadmin, created_at: root.createdAt }).slice(1)}`);
  const plaintext = secretBuffer(head.length + base64Length(KEY_LEN) + tail.length);
  head.copy(plaintext, 0);
  tail.copy(plaintext, encodeBase64Into(root.key, plaintext, head.length));
  try {
    return formatSealedRootKey(from, seal({ algorithm: 'AES256', bytes: unsealKey }, plaintext, AD));
  } finally {
    wipe(plaintext);
  }
}

/** Seals `root` with `unsealKey` and writes <dir>/.unseal atomically with mode 0600. */
export async function writeSealedRootKey(
  dir: string,
  source: UnsealSource | string,
  unsealKey: Buffer,
  root: RootKeyInfo,
): Promise<void> {
  await writeFileAtomic(join(dir, UNSEAL_FILE), sealRootKey(source, unsealKey, root), 0o600);
}

/** Replaces <dir>/.unseal with `text` (sealRootKey's) atomically, mode 0600; `onStep` sees each state a crash can leave. */
export async function replaceSealedRootKey(
  dir: string,
  text: string,
  onStep?: (step: AtomicWriteStep) => void,
): Promise<void> {
  await writeFileAtomic(join(dir, UNSEAL_FILE), text, 0o600, onStep);
}

/** Writes <dir>/.unseal atomically with mode 0600: the same sealed root key, with its unseal key's new source. */
export async function rewriteUnsealSource(dir: string, sealed: SealedRootKey, source: UnsealSource): Promise<void> {
  await writeFileAtomic(join(dir, UNSEAL_FILE), formatSealedRootKey(source, sealed.ciphertext), 0o600);
}

/** Reads and parses <dir>/.unseal. Never writes. */
export async function readSealedRootKey(dir: string): Promise<SealedRootKey> {
  const path = join(dir, UNSEAL_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new RootKeyMissingError(
        `unseal: '${path}' does not exist (was the directory initialized with 'kesd init'?)`,
      );
    throw new UnsealError(`unseal: cannot read '${path}': ${(err as Error).message}`);
  }
  return parseSealedRootKey(text, `'${path}'`);
}

/** Parses a sealed root key text (what sealRootKey made); `where` names its source in errors. */
export function parseSealedRootKey(text: string, where: string): SealedRootKey {
  const corrupt = (why: string) => new UnsealError(`unseal: ${where} is corrupt: ${why}`);
  let file: unknown;
  try {
    file = JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
  const { version, env, file: keyFile, ciphertext } = (file ?? {}) as Record<string, unknown>;
  let source: UnsealSource;
  if (version === 1) {
    if (typeof env !== 'string' || !ENV_NAME.test(env)) throw corrupt('no valid environment variable name');
    source = { env };
  } else if (version === 2) {
    if (typeof keyFile !== 'string' || !keyFile.startsWith('/') || keyFile.includes('\0') || env !== undefined)
      throw corrupt('no valid key file path');
    source = { file: keyFile };
  } else {
    throw corrupt(`unsupported version ${JSON.stringify(version)}`);
  }
  const sealed = typeof ciphertext === 'string' ? Buffer.from(ciphertext, 'base64') : undefined;
  if (!sealed || sealed.length === 0 || sealed.toString('base64') !== ciphertext)
    throw corrupt('ciphertext is not valid base64');
  return { source, ciphertext: sealed, where, text };
}

/** Opens the sealed root key with the unseal key (which the caller wipes). */
export function openRootKey(sealed: SealedRootKey, unsealKey: Buffer): RootKeyInfo {
  let plaintext: Buffer;
  try {
    plaintext = open({ algorithm: 'AES256', bytes: unsealKey }, sealed.ciphertext, AD);
  } catch {
    // Also what a tampered ciphertext gives: AES-GCM cannot tell the two apart.
    throw new WrongUnsealKeyError('unseal key is wrong: the root key is not authentic');
  }
  try {
    return parseRootKey(plaintext, (why) => new UnsealError(`unseal: ${sealed.where} is corrupt: ${why}`));
  } finally {
    wipe(plaintext);
  }
}

/**
 * Unseals a sealed root key text with the unseal key from `source` (default: the source recorded in the text).
 * The unseal key is wiped before this returns.
 */
export function unsealRootKey(
  text: string,
  where: string,
  env: NodeJS.ProcessEnv,
  source?: UnsealSource,
): { root: RootKeyInfo; source: UnsealSource } {
  const sealed = parseSealedRootKey(text, where);
  return unsealWith(sealed, env, source);
}

/** Reads <dir>/.unseal and unseals the root key with the key from `source` (default: the recorded one). Never writes. */
export async function openSealedRootKey(
  dir: string,
  env: NodeJS.ProcessEnv,
  source?: UnsealSource,
): Promise<{ root: RootKeyInfo; source: UnsealSource }> {
  return unsealWith(await readSealedRootKey(dir), env, source);
}

function unsealWith(
  sealed: SealedRootKey,
  env: NodeJS.ProcessEnv,
  source = sealed.source,
): { root: RootKeyInfo; source: UnsealSource } {
  const unsealKey = takeUnsealKey(source, env).key;
  try {
    return { root: openRootKey(sealed, unsealKey), source };
  } finally {
    wipe(unsealKey);
  }
}

/**
 * The root key JSON {key, sysadmin, created_at} without a string of the key: the base64 after `"key":"` is decoded
 * from the bytes, then masked, and only the masked copy is parsed as JSON. The mask must be what JSON.parse finds
 * as `key`, so a `"key"` met anywhere else is refused.
 */
function parseRootKey(plaintext: Buffer, corrupt: (why: string) => UnsealError): RootKeyInfo {
  const masked = secretBuffer(plaintext.length);
  plaintext.copy(masked);
  let key: Buffer | undefined;
  try {
    const span = keyValueSpan(masked);
    if (span === undefined) throw corrupt(`sealed root key is not ${KEY_LEN} bytes`);
    key = decodeBase64(masked, span.start, span.end);
    if (key === undefined || key.length !== KEY_LEN) throw corrupt(`sealed root key is not ${KEY_LEN} bytes`);
    masked.fill(0x41, span.start, span.end); // 'A'
    let inner: Record<string, unknown>;
    try {
      inner = JSON.parse(masked.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw corrupt('sealed root key is not JSON');
    }
    if (inner?.key !== 'A'.repeat(span.end - span.start)) throw corrupt(`sealed root key is not ${KEY_LEN} bytes`);
    if (typeof inner.sysadmin !== 'string' || !isValidIdentity(inner.sysadmin))
      throw corrupt('sealed sysadmin identity is invalid');
    if (typeof inner.created_at !== 'string' || Number.isNaN(Date.parse(inner.created_at)))
      throw corrupt('sealed created_at is invalid');
    const root = { key, sysadmin: inner.sysadmin, createdAt: inner.created_at };
    key = undefined;
    return root;
  } finally {
    wipe(masked, key);
  }
}

/** Where the string value of the first `"key"` member lies: between `"key"`, optional spaces, `:`, spaces, `"` and `"`. */
function keyValueSpan(b: Buffer): { start: number; end: number } | undefined {
  const name = b.indexOf('"key"');
  if (name === -1) return undefined;
  let i = name + 5;
  while (i < b.length && (b[i] === 0x20 || b[i] === 0x0a || b[i] === 0x0d || b[i] === 0x09)) i++;
  if (b[i++] !== 0x3a) return undefined; // ':'
  while (i < b.length && (b[i] === 0x20 || b[i] === 0x0a || b[i] === 0x0d || b[i] === 0x09)) i++;
  if (b[i++] !== 0x22) return undefined; // '"'
  const end = b.indexOf(0x22, i);
  return end === -1 ? undefined : { start: i, end };
}
