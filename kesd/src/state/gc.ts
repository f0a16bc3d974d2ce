// A full garbage collection on demand, for the moment key material is dropped (a seal). Node frees a KeyObject's or
// cipher context's OpenSSL memory (and OpenSSL clears it) only when the JS object is collected, which may otherwise
// be long after the last reference went. Without --expose-gc, the flag is set at run time and `gc` is taken from a
// fresh context, where V8 then installs it.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | undefined;

/** Runs a full GC; best effort (a no-op if the runtime refuses). */
export function collectGarbage(): void {
  try {
    if (gc === undefined) {
      const exposed = (globalThis as { gc?: () => void }).gc;
      if (exposed !== undefined) gc = exposed;
      else {
        setFlagsFromString('--expose-gc');
        gc = runInNewContext('gc') as () => void;
      }
    }
    gc();
  } catch {
    gc = () => {};
  }
}
