// Buffers for key material, and base64 from bytes to bytes, so that a secret never becomes a JS string (a string
// cannot be wiped: its copies stay in the V8 heap until reused) and every copy of it can be zeroed.
//
// A secret buffer has an ArrayBuffer of its own: never a slice of Node's shared 8 KiB pool (Buffer.from(small),
// Buffer.allocUnsafe(small): zeroing the slice is possible, but the slab also holds other data and lives on), and
// never on the V8 heap, where the garbage collector moves small typed arrays and leaves the old copy behind. An
// ArrayBuffer's backing store stays where it is until freed, so fill(0) reaches the only copy.

/** n zero bytes in memory of their own, for key material: zero it with wipe() when done. */
export function secretBuffer(n: number): Buffer {
  return Buffer.from(new ArrayBuffer(n));
}

/** Overwrites each buffer with zeros. */
export function wipe(...buffers: (Uint8Array | undefined)[]): void {
  for (const b of buffers) b?.fill(0);
}

const ALPHABET = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/');
/** Byte → 6-bit value, or 64 for every byte outside the standard alphabet. */
const VALUE = new Uint8Array(256).fill(64);
ALPHABET.forEach((c, i) => (VALUE[c] = i));
const PAD = 0x3d; // '='

/** Whitespace a key file or variable may carry around its value (`echo`, editors, CRLF files). */
export function isAsciiSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

/** [start, end) of src without leading and trailing ASCII whitespace. */
export function trimmed(src: Uint8Array, start = 0, end = src.length): [number, number] {
  while (start < end && isAsciiSpace(src[start]!)) start++;
  while (end > start && isAsciiSpace(src[end - 1]!)) end--;
  return [start, end];
}

/**
 * Strict standard base64 (RFC 4648 §4) of src[start, end), decoded into a secret buffer: the alphabet only, a length
 * that is a multiple of 4, '=' only as the padding of the last group, and zero unused bits (the one canonical
 * encoding). Undefined if src is not that. No string is made, and no other copy of the bytes.
 */
export function decodeBase64(src: Uint8Array, start = 0, end = src.length): Buffer | undefined {
  const n = end - start;
  if (n % 4 !== 0) return undefined;
  const pad = n === 0 ? 0 : src[end - 1] !== PAD ? 0 : src[end - 2] === PAD ? 2 : 1;
  const out = secretBuffer((n / 4) * 3 - pad);
  let o = 0;
  for (let i = start; i < end; i += 4) {
    const last = i + 4 === end;
    const a = VALUE[src[i]!]!;
    const b = VALUE[src[i + 1]!]!;
    const c = last && pad === 2 ? 0 : VALUE[src[i + 2]!]!;
    const d = last && pad >= 1 ? 0 : VALUE[src[i + 3]!]!;
    if ((a | b | c | d) > 63 || (last && pad === 2 && (b & 0x0f) !== 0) || (last && pad === 1 && (c & 0x03) !== 0)) {
      wipe(out);
      return undefined;
    }
    const group = (a << 18) | (b << 12) | (c << 6) | d;
    out[o++] = group >> 16;
    if (o < out.length) out[o++] = (group >> 8) & 0xff;
    if (o < out.length) out[o++] = group & 0xff;
  }
  return out;
}

/** Length of the standard base64 of n bytes. */
export const base64Length = (n: number): number => Math.ceil(n / 3) * 4;

/** Writes the standard base64 of src into dst at `at` (base64Length(src.length) bytes); returns the end offset. */
export function encodeBase64Into(src: Uint8Array, dst: Uint8Array, at: number): number {
  let o = at;
  for (let i = 0; i < src.length; i += 3) {
    const rest = src.length - i;
    const group = (src[i]! << 16) | ((rest > 1 ? src[i + 1]! : 0) << 8) | (rest > 2 ? src[i + 2]! : 0);
    dst[o++] = ALPHABET[group >> 18]!;
    dst[o++] = ALPHABET[(group >> 12) & 63]!;
    dst[o++] = rest > 1 ? ALPHABET[(group >> 6) & 63]! : PAD;
    dst[o++] = rest > 2 ? ALPHABET[group & 63]! : PAD;
  }
  return o;
}

/** The bytes of a string that holds a secret (a variable given as a JS object), in a secret buffer. */
export function secretBytesOf(value: string): Buffer {
  const out = secretBuffer(Buffer.byteLength(value, 'utf8'));
  out.write(value, 'utf8');
  return out;
}
