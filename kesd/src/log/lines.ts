// Whole JSON lines to a file descriptor that several processes share (stdout of the cluster workers).
// A pipe write of at most PIPE_BUF (4096) bytes is atomic, so every write carries whole lines and at most
// 4096 bytes, and a longer line goes alone: lines of different workers never interleave mid-line.
// A reader that does not keep up never blocks requests nor grows memory: at most MAX_QUEUED_BYTES wait, later
// lines are dropped and counted. A pipe or socket is written through a non-blocking libuv stream, so a stuck
// reader holds no thread (a blocked fs.write would keep even process.exit waiting); files and TTYs through fs.
import { fstatSync, write, type Stats } from 'node:fs';
import net from 'node:net';

const PIPE_BUF = 4096;
const MAX_QUEUED_BYTES = 1 << 20;
const RETRY_MS = 10;
/** How long drain() waits for a reader before it drops the rest: a stuck reader must not hold up a stop. */
const DRAIN_TIMEOUT_MS = 2000;

type Send = (buf: Buffer, done: (err: Error | null) => void) => void;

export class LineWriter {
  private readonly queue: string[] = [];
  private queuedBytes = 0;
  private busy = false;
  private broken = false;
  private idle: (() => void)[] = [];
  private readonly socket: net.Socket | undefined;
  private readonly send: Send;
  /** Lines never written: the queue was full, the reader went away, or drain() gave up. */
  dropped = 0;

  constructor(fd: number) {
    let stat: Stats | undefined;
    try {
      stat = fstatSync(fd);
    } catch {
      // not open: every line is dropped (and counted)
    }
    if (stat === undefined) {
      this.broken = true;
      this.send = (_, done) => done(new Error('closed'));
    } else if (stat.isFIFO() || stat.isSocket()) {
      const socket = new net.Socket({ fd, readable: false, writable: true });
      socket.unref();
      socket.on('error', () => this.fail()); // EPIPE: the reader is gone
      this.socket = socket;
      this.send = (buf, done) => void socket.write(buf, (err) => done(err ?? null));
    } else {
      this.send = (buf, done) => writeAll(fd, buf, done);
    }
  }

  /** Queues one line (ending in "\n"); returns how many lines this writer has dropped so far. */
  write(line: string): number {
    const bytes = Buffer.byteLength(line);
    if (this.broken || this.queuedBytes + bytes > MAX_QUEUED_BYTES) return ++this.dropped;
    this.queue.push(line);
    this.queuedBytes += bytes;
    if (!this.busy) {
      this.busy = true;
      setImmediate(() => this.next());
    }
    return this.dropped;
  }

  /**
   * Resolves once everything queued so far is written, or after DRAIN_TIMEOUT_MS; then what is left is
   * dropped and the descriptor let go, so a stuck reader cannot keep the process alive. Called at stop.
   */
  async drain(): Promise<void> {
    if (this.busy) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.idle.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, DRAIN_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
    }
    if (this.busy) this.fail();
    if (this.socket !== undefined) {
      this.broken = true;
      this.socket.destroy();
    }
  }

  private fail(): void {
    this.broken = true;
    this.dropped += this.queue.length;
    this.queue.length = 0;
    this.queuedBytes = 0;
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
    this.queuedBytes -= bytes;
    return Buffer.from(this.queue.splice(0, n).join(''));
  }

  private next(): void {
    if (this.queue.length === 0) {
      this.busy = false;
      for (const resolve of this.idle.splice(0)) resolve();
      return;
    }
    const buf = this.chunk();
    this.send(buf, (err) => {
      if (err) {
        this.dropped += countLines(buf);
        this.fail();
      }
      this.next();
    });
  }
}

/** fs.write until done; a non-blocking descriptor that is full (EAGAIN) is retried shortly. */
function writeAll(fd: number, buf: Buffer, done: (err: Error | null) => void): void {
  write(fd, buf, 0, buf.length, null, (err, written) => {
    if (err) {
      if ((err as NodeJS.ErrnoException).code === 'EAGAIN')
        return void setTimeout(() => writeAll(fd, buf, done), RETRY_MS);
      return done(err);
    }
    if (written < buf.length) return writeAll(fd, buf.subarray(written), done); // only for writes a pipe would not take atomically anyway
    done(null);
  });
}

function countLines(buf: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) n++;
  return n;
}
