// The unseal key and where it comes from: an environment variable (init.yml `unseal.environment.name`, as in KES
// v0.22) or a file (`unseal.file.path`, kesd's extension: a Kubernetes Secret mounted as a volume). Either holds the
// base64 of 32 bytes, with surrounding whitespace tolerated. The key is decoded from bytes to bytes into a buffer of
// its own (crypto/secret.ts), so no JS string ever holds it; the caller wipes it once the root key is unsealed.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { decodeBase64, secretBuffer, secretBytesOf, trimmed, wipe } from '../crypto/secret.js';
import type { UnsealSource } from '../config/unseal-source.js';
import { takeVariable } from './environ.js';

export { describeUnsealSource, ENV_NAME, sameUnsealSource, type UnsealSource } from '../config/unseal-source.js';

export class UnsealError extends Error {
  override name = 'UnsealError';
}

/** There is no sealed root key (the data dir or the etcd store was never initialised). */
export class RootKeyMissingError extends UnsealError {
  override name = 'RootKeyMissingError';
}

/** The unseal key was read but does not open the sealed root key (or the sealed root key was tampered with). */
export class WrongUnsealKeyError extends UnsealError {
  override name = 'WrongUnsealKeyError';
}

export const UNSEAL_KEY_LEN = 32;
/** Far more than the 44 characters of a key: a larger file is not a key file. */
const MAX_KEY_FILE = 4096;

export interface TakenUnsealKey {
  /** 32 bytes in a buffer of their own: wipe it when done. */
  readonly key: Buffer;
  /** Set when a copy of the key may remain in this process (see store/environ.ts). */
  readonly residue?: string;
}

/**
 * Reads the unseal key from its source. From this process's own environment (env === process.env) the variable is
 * taken out: read from the initial environment block, which is then zeroed, and unset, so workers forked later do
 * not inherit it. From any other env object (tests, `npm start`) it is only read.
 */
export function takeUnsealKey(source: UnsealSource | string, env: NodeJS.ProcessEnv = process.env): TakenUnsealKey {
  const from: UnsealSource = typeof source === 'string' ? { env: source } : source;
  if ('file' in from) return { key: readKeyFile(from.file) };
  const name = from.env;
  const taken =
    env === process.env
      ? takeVariable(name)
      : { value: env[name] === undefined ? undefined : secretBytesOf(env[name]!) };
  if (taken.value === undefined) throw new UnsealError(`unseal key: environment variable '${name}' is not set`);
  try {
    const key = decodeKey(taken.value, `environment variable '${name}'`);
    return taken.residue === undefined ? { key } : { key, residue: taken.residue };
  } finally {
    wipe(taken.value);
  }
}

/** takeUnsealKey without the note on what may remain. */
export function readUnsealKey(source: UnsealSource | string, env: NodeJS.ProcessEnv = process.env): Buffer {
  return takeUnsealKey(source, env).key;
}

/** The base64 text in `text` (whitespace around it tolerated), decoded and checked to be 32 bytes. */
function decodeKey(text: Uint8Array, what: string): Buffer {
  const [start, end] = trimmed(text);
  const key = decodeBase64(text, start, end);
  if (key === undefined) throw new UnsealError(`unseal key: ${what} is not valid base64`);
  if (key.length !== UNSEAL_KEY_LEN) {
    wipe(key);
    throw new UnsealError(`unseal key must be ${UNSEAL_KEY_LEN} bytes, got ${key.length}`);
  }
  return key;
}

/**
 * The key file: a regular file (a symlink to one, as in a Kubernetes Secret volume, is followed) that no other user
 * may read or write, and no group may write. Group read is allowed: the kubelet makes a Secret's files readable by
 * the pod's fsGroup (0440, owned by root) whatever the volume's defaultMode.
 */
function readKeyFile(path: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UnsealError(`unseal key: file '${path}' does not exist`);
    throw new UnsealError(`unseal key: cannot read file '${path}': ${code ?? (err as Error).message}`);
  }
  let text: Buffer | undefined;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UnsealError(`unseal key: '${path}' is not a regular file`);
    if ((st.mode & 0o027) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new UnsealError(
        `unseal key: file '${path}' is accessible by other users (mode ${mode}): let only its owner (and group) read it, e.g. chmod 600`,
      );
    }
    if (st.size > MAX_KEY_FILE)
      throw new UnsealError(`unseal key: file '${path}' is too large (${st.size} bytes) to hold a base64 key`);
    text = secretBuffer(st.size);
    let got = 0;
    for (let n: number; got < text.length && (n = readSync(fd, text, got, text.length - got, got)) > 0; ) got += n;
    return decodeKey(text.subarray(0, got), `file '${path}'`);
  } catch (err) {
    if (err instanceof UnsealError) throw err;
    throw new UnsealError(
      `unseal key: cannot read file '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  } finally {
    wipe(text);
    closeSync(fd);
  }
}
