// Fan-out of NDJSON events to long-lived HTTP subscribers (/v1/log/audit, /v1/log/error).
// A slow subscriber never blocks requests: past a bounded buffer its events are dropped and counted.
import type { IncomingMessage, ServerResponse } from 'node:http';

const MAX_BUFFERED_BYTES = 1 << 20;

export class EventStream {
  private readonly subscribers = new Set<ServerResponse>();
  dropped = 0;

  get hasSubscribers(): boolean {
    return this.subscribers.size > 0;
  }

  subscribe(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
    res.flushHeaders();
    req.socket.setTimeout(0);
    this.subscribers.add(res);
    const drop = () => this.subscribers.delete(res);
    res.on('close', drop);
    res.on('error', drop);
  }

  publish(line: string): void {
    for (const res of this.subscribers) {
      if (res.writableLength > MAX_BUFFERED_BYTES) this.dropped++;
      else res.write(line);
    }
  }
}
