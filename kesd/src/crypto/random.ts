// Pooled CSPRNG. One randomFillSync call fills a 64 KiB pool; callers get COPIES of consecutive,
// never-before-used pool bytes. Consumed pool bytes are wiped at once, and the pool is refilled in
// place only when every byte of it has been consumed (or skipped), so no byte is ever handed out
// twice and no caller ever holds memory that a later refill overwrites.
import { randomFillSync } from 'node:crypto';

/** Size of the random pool in bytes. Exported for tests. */
export const POOL_SIZE = 64 * 1024;

/** Requests larger than this bypass the pool and are filled directly by the OS CSPRNG. */
const DIRECT_THRESHOLD = 4 * 1024;

const pool = Buffer.allocUnsafeSlow(POOL_SIZE);
let offset = POOL_SIZE; // empty: the first draw fills it

function checkLength(n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`random: invalid length ${n}`);
}

/** Copies `n` fresh pool bytes into `target[at, at+n)`. Synchronous; no allocation on the fast path. */
export function randomFill(target: Uint8Array, at = 0, n = target.length - at): void {
  checkLength(n);
  if (at < 0 || at + n > target.length) throw new RangeError('random: target range out of bounds');
  if (n > DIRECT_THRESHOLD) {
    randomFillSync(target, at, n);
    return;
  }
  if (POOL_SIZE - offset < n) {
    // Not enough left: drop the unused tail (never handed out) and refill the whole pool.
    randomFillSync(pool);
    offset = 0;
  }
  const start = offset;
  offset += n;
  pool.copy(target, at, start, offset);
  pool.fill(0, start, offset); // consumed: do not leave a copy of e.g. a data key in the pool
}

/** Returns `n` fresh random bytes in a new Buffer that shares no memory with the pool. */
export function randomBytes(n: number): Buffer {
  checkLength(n);
  const out = Buffer.allocUnsafe(n);
  randomFill(out, 0, n);
  return out;
}
