// The little of POSIX ustar a backup needs: regular files with plain names, written as a stream of 512-byte blocks,
// read back block by block from a file (never whole into memory). `tar -tvf`/`tar -xf` read what this writes.
import type { FileHandle } from 'node:fs/promises';

const BLOCK = 512;
const NAME = /^[A-Za-z0-9._-]{1,100}$/;

export class TarError extends Error {
  override name = 'TarError';
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** The header block of a regular file. */
export function tarHeader(name: string, size: number, mode = 0o600, mtime = Math.floor(Date.now() / 1000)): Buffer {
  if (!NAME.test(name) || name === '.' || name === '..') throw new TarError(`tar: '${name}' is not a plain file name`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 'ascii');
  h.write(octal(mode, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii'); // uid
  h.write(octal(0, 8), 116, 'ascii'); // gid
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(mtime, 12), 136, 'ascii');
  h.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  h.write('0', 156, 'ascii'); // a regular file
  h.write('ustar\0' + '00', 257, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

/** Zero bytes that pad a file's data to a whole block. */
export const tarPadding = (size: number): Buffer => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** The two zero blocks that end an archive. */
export const tarEnd = (): Buffer => Buffer.alloc(2 * BLOCK);

export interface TarEntry {
  readonly name: string;
  readonly size: number;
  /** Where its data starts in the file. */
  readonly offset: number;
}

function field(h: Buffer, at: number, width: number): number {
  const text = h
    .toString('ascii', at, at + width)
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]+$/.test(text)) throw new TarError(`tar: a header field is not an octal number`);
  return parseInt(text, 8);
}

/** The entries of a tar file: regular files with plain names only, every header checksum right. */
export async function* tarEntries(fh: FileHandle, fileSize: number): AsyncGenerator<TarEntry> {
  const h = Buffer.alloc(BLOCK);
  let at = 0;
  for (;;) {
    if (at + BLOCK > fileSize) throw new TarError('tar: the archive is truncated');
    const { bytesRead } = await fh.read(h, 0, BLOCK, at);
    if (bytesRead !== BLOCK) throw new TarError('tar: the archive is truncated');
    if (h.every((b) => b === 0)) return; // the end
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (field(h, 148, 8) !== sum) throw new TarError('tar: a header checksum is wrong (not a tar file, or damaged)');
    const name = h.toString('ascii', 0, 100).replace(/\0.*$/s, '');
    const type = h.toString('ascii', 156, 157);
    if (type !== '0' && type !== '\0') throw new TarError(`tar: '${name}' is not a regular file`);
    if (!NAME.test(name) || name === '.' || name === '..')
      throw new TarError(`tar: '${name}' is not a plain file name`);
    const size = field(h, 124, 12);
    const offset = at + BLOCK;
    if (offset + size > fileSize) throw new TarError(`tar: '${name}' is truncated`);
    yield { name, size, offset };
    at = offset + size + tarPadding(size).length;
  }
}
