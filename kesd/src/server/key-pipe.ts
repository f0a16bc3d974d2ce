// The root key from the cluster primary to a worker: its 32 raw bytes over a pipe of their own, fd 4 in the worker,
// never in a JSON message on the IPC channel (that would make base64 strings of it in both processes, which cannot
// be wiped). The primary writes the bytes from its own buffer and closes its end; the worker reads them straight
// into a secret buffer (crypto/secret.ts). A worker started after a seal gets no key: its pipe is closed unread.
// The unseal key never reaches a worker at all: the primary took it out of its environment before forking.
import type { Worker } from 'node:cluster';
import { closeSync, readSync } from 'node:fs';
import { secretBuffer, wipe } from '../crypto/secret.js';

/** The worker's fd of the key pipe. */
export const KEY_PIPE_FD = 4;
/** The workers' stdio: node:cluster's default (inherit 0-2, the IPC channel) plus the key pipe. */
export const WORKER_STDIO: ['inherit', 'inherit', 'inherit', 'ipc', 'pipe'] = [
  'inherit',
  'inherit',
  'inherit',
  'ipc',
  'pipe',
];

const KEY_LEN = 32;

/** Primary: hands the worker the root key (or nothing, if sealed) and closes the pipe. */
export function sendRootKey(worker: Worker, key: Buffer | undefined): void {
  const pipe = worker.process.stdio[KEY_PIPE_FD] as (NodeJS.WritableStream & { destroy(): void }) | null | undefined;
  if (pipe == null) return; // the worker failed to spawn; its exit is handled as any other
  pipe.on('error', () => {}); // a worker that dies first: its exit is what matters
  if (key === undefined) return pipe.destroy();
  // The buffer itself goes to the socket (no copy); it is the primary's root key, wiped only at a seal.
  pipe.write(key, () => pipe.destroy());
}

/** Worker: blocks until the primary's 32 bytes are read, then closes the pipe. */
export function receiveRootKey(): Buffer {
  const key = secretBuffer(KEY_LEN);
  try {
    for (let got = 0; got < KEY_LEN; ) {
      let n: number;
      try {
        n = readSync(KEY_PIPE_FD, key, got, KEY_LEN - got, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5); // not readable yet: wait a moment
        continue;
      }
      if (n === 0) throw new Error(`the primary closed the key pipe after ${got} of ${KEY_LEN} bytes`);
      got += n;
    }
    return key;
  } catch (err) {
    wipe(key);
    throw err;
  } finally {
    closeKeyPipe();
  }
}

/** Worker: closes the key pipe (a sealed start reads nothing from it). */
export function closeKeyPipe(): void {
  try {
    closeSync(KEY_PIPE_FD);
  } catch {
    // closed already
  }
}
