// Whole JSON lines to a file descriptor that several processes share (stdout of the cluster workers).
// A pipe write of at most PIPE_BUF (4096) bytes is atomic, so every write carries whole lines and at most
// 4096 bytes, and a longer line goes alone: lines of different workers never interleave mid-line.
// Writes are asynchronous (libuv's thread pool), batched per event-loop turn, one in flight at a time.
import { write } from 'node:fs';

const PIPE_BUF = 4096;
const RETRY_MS = 10;

export class LineWriter {
  private readonly queue: string[] = [];
  private busy = false;
  private idle: (() => void)[] = [];

  constructor(private readonly fd: number) {}

  /** Queues one line (ending in "\n"). */
  write(line: string): void {
    this.queue.push(line);
    if (!this.busy) {
      this.busy = true;
      setImmediate(() => this.next());
    }
  }

  /** Resolves once everything queued so far is written (or failed). */
  drain(): Promise<void> {
    return this.busy ? new Promise((resolve) => this.idle.push(resolve)) : Promise.resolve();
  }

  /** Takes whole lines from the queue, up to PIPE_BUF bytes (at least one line). */
  private chunk(): Buffer {
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length) {
      const size = Buffer.byteLength(this.queue[n]!);
      if (n > 0 && bytes + size > PIPE_BUF) break;
      bytes += size;
      n++;
    }
    return Buffer.from(this.queue.splice(0, n).join(''));
  }

  private next(): void {
    if (this.queue.length === 0) {
      this.busy = false;
      for (const resolve of this.idle.splice(0)) resolve();
      return;
    }
    this.send(this.chunk());
  }

  private send(buf: Buffer): void {
    write(this.fd, buf, 0, buf.length, null, (err, written) => {
      if (err) {
        // A full non-blocking pipe: try again shortly. Anything else (the reader went away): drop what is queued.
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return void setTimeout(() => this.send(buf), RETRY_MS);
        this.queue.length = 0;
      } else if (written < buf.length) {
        return this.send(buf.subarray(written)); // only possible for writes a pipe would not take atomically anyway
      }
      this.next();
    });
  }
}
