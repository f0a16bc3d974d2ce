// Requests whose handler has started, for a graceful stop (server.ts). From its handler's start a request may have
// changed state (a key created, a policy written), and its client cannot tell whether it did unless it gets the
// answer: so a stop never cuts it before its answer is out, and keeps the store open until its handler has ended.
// A request whose handler has not started (still arriving, or never parsed) changed nothing and may be cut.
import type { Exchange } from '../api/exchange.js';

export interface Handling {
  /** The handler has returned its reply; a streamed one (a list, a log stream) applies nothing from here on. */
  replied(streamed: boolean): void;
  /** The handler and the writing of its answer are over (also if they failed or the client left). */
  ended(): void;
}

export class InFlight {
  private readonly unanswered = new Set<Exchange>();
  private handlers = 0;
  private idleWaiters: (() => void)[] = [];

  /** The handler of `exchange` starts now. */
  start(exchange: Exchange): Handling {
    this.handlers++;
    this.unanswered.add(exchange);
    // onClose: once the answer's last byte was handed to the transport, or when the client is gone.
    const answered = () => void this.unanswered.delete(exchange);
    exchange.onClose(answered);
    let ended = false;
    return {
      replied: (streamed) => {
        if (streamed) answered();
      },
      ended: () => {
        if (ended) return;
        ended = true;
        if (--this.handlers > 0) return;
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const resolve of waiters) resolve();
      },
    };
  }

  /** Requests whose handler has started and whose answer is not out yet: their connections must not be cut. */
  requests(): ReadonlySet<Exchange> {
    return this.unanswered;
  }

  /** Resolves once no handler is running (they may still use the store). */
  idle(): Promise<void> {
    return this.handlers === 0 ? Promise.resolve() : new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
