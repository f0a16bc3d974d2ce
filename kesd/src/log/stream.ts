// Fan-out of NDJSON events to long-lived HTTP subscribers (/v1/log/audit, /v1/log/error).
// Each event carries the enclave it concerns (its scope); a subscriber scoped to an enclave gets that enclave's events
// only, and only the system admin's subscription (no scope) gets every event, server-level ones included.
// A slow subscriber never blocks requests: past a bounded buffer (per subscriber, and for all subscribers of the
// process together) its events are dropped and counted, per line.
// In cluster mode a relay carries events between the workers, so a subscriber sees every worker's events.

const MAX_BUFFERED_BYTES = 1 << 20;
/** What all subscribers of one stream in one process may hold unsent together (480 stalled ones held 280 MiB). */
export const MAX_TOTAL_BUFFERED_BYTES = 16 << 20;

/** The enclave an event concerns; null: the server as a whole (only the system admin sees those). */
export type Scope = string | null;
/** Events as they cross processes: [scope, line] pairs. */
export type Events = [Scope, string][];

/** What a subscriber's answer must do: api's Exchange is one (structurally; the log layer sits below api). */
export interface Subscriber {
  /** A long-lived answer: no idle timeout applies to it. */
  keepOpen(): void;
  start(status: number, headers: Record<string, string | number>): void;
  write(chunk: string): boolean;
  /** Bytes written but not yet flushed. */
  readonly buffered: number;
  readonly closed: boolean;
  onClose(listener: () => void): void;
}

/** Carries one stream's events between processes (cluster workers). */
export interface StreamRelay {
  /** True while another process has subscribers: then every event published here is forwarded. */
  readonly forwarding: boolean;
  forward(scope: Scope, line: string): void;
  /** Tells the other processes whether this one has subscribers; resolves once they forward accordingly. */
  subscribed(any: boolean): Promise<void>;
}

export class EventStream {
  /** Subscriber → its scope (undefined: every event). */
  private readonly subscribers = new Map<Subscriber, string | undefined>();
  private joining = 0;
  dropped = 0;
  relay: StreamRelay | undefined;

  /** Whether anyone, here or in another process, wants the events. */
  get hasSubscribers(): boolean {
    return this.subscribers.size > 0 || this.relay?.forwarding === true;
  }

  /**
   * Answers 200 once every process forwards its events here, so nothing after the headers is missed. scope: the
   * enclave whose events the subscriber may see; undefined for every event (the system admin).
   */
  async subscribe(exchange: Subscriber, scope: string | undefined): Promise<void> {
    exchange.keepOpen();
    this.joining++;
    try {
      await this.relay?.subscribed(true);
    } finally {
      this.joining--;
    }
    if (exchange.closed) return this.announce();
    exchange.start(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' });
    this.subscribers.set(exchange, scope);
    exchange.onClose(() => {
      if (this.subscribers.delete(exchange)) this.announce();
    });
  }

  private announce(): void {
    if (this.subscribers.size === 0 && this.joining === 0) void this.relay?.subscribed(false);
  }

  publish(scope: Scope, line: string): void {
    if (this.subscribers.size > 0) this.deliver([[scope, line]]);
    if (this.relay?.forwarding) this.relay.forward(scope, line);
  }

  /** Delivers events to the subscribers of this process only (one, or a batch another process forwarded). */
  deliver(events: Events): void {
    if (this.subscribers.size === 0) return;
    let total = 0;
    for (const exchange of this.subscribers.keys()) total += exchange.buffered;
    for (const [exchange, scope] of this.subscribers) {
      let text = '';
      let lines = 0;
      for (const [eventScope, line] of events) {
        if (scope !== undefined && scope !== eventScope) continue;
        text += line;
        lines++;
      }
      if (lines === 0) continue;
      // Past the total, only subscribers that keep up (nothing buffered) still get events.
      if (exchange.buffered > MAX_BUFFERED_BYTES || (total > MAX_TOTAL_BUFFERED_BYTES && exchange.buffered > 0)) {
        this.dropped += lines;
        continue;
      }
      exchange.write(text);
      total += text.length;
    }
  }
}
