// Fan-out of NDJSON events to long-lived HTTP subscribers (/v1/log/audit, /v1/log/error).
// A slow subscriber never blocks requests: past a bounded buffer (per subscriber) its events are dropped and
// counted, per line.
// In cluster mode a relay carries events between the workers, so a subscriber sees every worker's events.
import type { IncomingMessage, ServerResponse } from 'node:http';

const MAX_BUFFERED_BYTES = 1 << 20;

/** Carries one stream's events between processes (cluster workers). */
export interface StreamRelay {
  /** True while another process has subscribers: then every event published here is forwarded. */
  readonly forwarding: boolean;
  forward(line: string): void;
  /** Tells the other processes whether this one has subscribers; resolves once they forward accordingly. */
  subscribed(any: boolean): Promise<void>;
}

export class EventStream {
  private readonly subscribers = new Set<ServerResponse>();
  private joining = 0;
  dropped = 0;
  relay: StreamRelay | undefined;

  /** Whether anyone, here or in another process, wants the events. */
  get hasSubscribers(): boolean {
    return this.subscribers.size > 0 || this.relay?.forwarding === true;
  }

  /** Answers 200 once every process forwards its events here, so nothing after the headers is missed. */
  async subscribe(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.socket.setTimeout(0);
    this.joining++;
    try {
      await this.relay?.subscribed(true);
    } finally {
      this.joining--;
    }
    if (res.destroyed || req.socket.destroyed) return this.announce();
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
    res.flushHeaders();
    this.subscribers.add(res);
    const drop = () => {
      if (this.subscribers.delete(res)) this.announce();
    };
    res.on('close', drop);
    res.on('error', drop);
  }

  private announce(): void {
    if (this.subscribers.size === 0 && this.joining === 0) void this.relay?.subscribed(false);
  }

  publish(line: string): void {
    this.deliver(line);
    if (this.relay?.forwarding) this.relay.forward(line);
  }

  /** Delivers lines to the subscribers of this process only (one line, or a batch another process forwarded). */
  deliver(lines: string): void {
    for (const res of this.subscribers) {
      if (res.writableLength > MAX_BUFFERED_BYTES) this.dropped += countLines(lines);
      else res.write(lines);
    }
  }
}

function countLines(lines: string): number {
  let n = 0;
  for (let i = lines.indexOf('\n'); i >= 0; i = lines.indexOf('\n', i + 1)) n++;
  return n;
}
