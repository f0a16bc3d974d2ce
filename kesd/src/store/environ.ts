// Taking a secret out of this process's environment without leaving a copy behind.
//
// Reading process.env[NAME] makes a V8 string of the value, which cannot be wiped, and `delete process.env[NAME]`
// only unlinks the variable: the initial environment block that execve placed at the top of the stack (what
// /proc/<pid>/environ shows, and what a core dump holds) keeps the bytes for the life of the process, and Node
// has no API to overwrite it. On Linux this process can: it reads the value straight from that block through
// /proc/self/mem into a buffer, then overwrites the variable there with zeros and unsets it. Elsewhere, or when
// /proc is not usable, it falls back to process.env and says what stays behind.
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { secretBuffer, secretBytesOf, wipe } from '../crypto/secret.js';

export interface TakenVariable {
  /** The value's bytes in a secret buffer (wipe it when done); undefined if the variable is not set. */
  readonly value: Buffer | undefined;
  /** Why a copy may remain in this process (the initial block could not be scrubbed), if it may. */
  readonly residue?: string;
}

/** The initial environment block's address range, from /proc/self/stat (fields 50 and 51, Linux 3.5+). */
function environmentBlock(): { start: number; end: number } {
  const stat = readFileSync('/proc/self/stat', 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields[0] is field 3 (state)
  const start = Number(fields[50 - 3]);
  const end = Number(fields[51 - 3]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start <= 0 || end <= start)
    throw new Error('no environment block in /proc/self/stat');
  return { start, end };
}

/** Offsets of the entries `NAME=...` in a NUL-separated block. */
function entriesOf(block: Buffer, name: string): { at: number; end: number }[] {
  const prefix = Buffer.from(`${name}=`);
  const found: { at: number; end: number }[] = [];
  for (let at = block.indexOf(prefix); at !== -1; at = block.indexOf(prefix, at + 1)) {
    if (at > 0 && block[at - 1] !== 0) continue; // inside another entry's value
    const end = block.indexOf(0, at);
    found.push({ at, end: end === -1 ? block.length : end });
  }
  return found;
}

/**
 * Takes the variable `name` out of this process's environment: returns its value (the first entry, as getenv does)
 * and leaves no copy of it in the process, where Linux allows. Later child processes do not inherit it.
 */
export function takeVariable(name: string): TakenVariable {
  let value: Buffer | undefined;
  let residue: string | undefined;
  try {
    const { start, end } = environmentBlock();
    const fd = openSync('/proc/self/mem', 'r+');
    const block = secretBuffer(end - start);
    try {
      if (readSync(fd, block, 0, block.length, start) !== block.length)
        throw new Error('short read of the environment block');
      const entries = entriesOf(block, name);
      if (entries.length > 0) {
        const first = entries[0]!;
        value = secretBuffer(first.end - first.at - name.length - 1);
        block.copy(value, 0, first.at + name.length + 1, first.end);
      }
      for (const { at, end: entryEnd } of entries) {
        const zeros = secretBuffer(entryEnd - at);
        if (writeSync(fd, zeros, 0, zeros.length, start + at) !== zeros.length)
          throw new Error('short write to the environment block');
      }
    } finally {
      wipe(block);
      closeSync(fd);
    }
  } catch (err) {
    residue = `the initial environment block could not be scrubbed (${(err as Error).message})`;
  }
  // Not in the initial block: set by this process after it started (a test, an embedding program).
  if (value === undefined) {
    const fromEnv = process.env[name];
    if (fromEnv !== undefined) {
      value = secretBytesOf(fromEnv);
      residue ??= 'the value was set after start, and the V8 string process.env made of it cannot be wiped';
    }
  }
  delete process.env[name];
  return residue === undefined ? { value } : { value, residue };
}
