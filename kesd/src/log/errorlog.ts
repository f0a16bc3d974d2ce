// Server error messages: to stderr (via pino) and to /v1/log/error subscribers as {"message": …}.
// stderr is rate-limited (a flood of failing requests must not fill a disk or a log pipeline): past the budget,
// messages are counted, and the count is written with the next message that gets through.
import type { Logger } from 'pino';
import { EventStream, type Subscriber } from './stream.js';

/** Messages stderr takes at once, and per second after that. */
export const STDERR_BURST = 100;
export const STDERR_PER_SECOND = 10;

export class ErrorLog {
  readonly stream = new EventStream();
  events = 0;
  /** Messages not written to stderr (over the rate limit). */
  suppressed = 0;
  private unreported = 0;
  private tokens = STDERR_BURST;
  private last = performance.now();

  constructor(private readonly logger: Logger | undefined) {}

  /** scope: the enclave whose errors the subscriber may see; undefined for all (the system admin). */
  subscribe(subscriber: Subscriber, scope: string | undefined): Promise<void> {
    return this.stream.subscribe(subscriber, scope);
  }

  /** enclave: the enclave the failed request addressed, if any (its subscribers see the message). */
  log(message: string, err?: unknown, enclave?: string): void {
    this.events++;
    const detail = err instanceof Error ? `${message}: ${err.message}` : message;
    this.toStderr(message, err);
    this.stream.publish(enclave ?? null, JSON.stringify({ message: `${new Date().toISOString()} ${detail}` }) + '\n');
  }

  private toStderr(message: string, err: unknown): void {
    if (this.logger === undefined) return;
    const now = performance.now();
    this.tokens = Math.min(STDERR_BURST, this.tokens + ((now - this.last) / 1000) * STDERR_PER_SECOND);
    this.last = now;
    if (this.tokens < 1) {
      this.suppressed++;
      this.unreported++;
      return;
    }
    this.tokens--;
    const fields: Record<string, unknown> = err instanceof Error ? { err } : {};
    if (this.unreported > 0) fields.suppressed = this.unreported;
    this.unreported = 0;
    this.logger.error(fields, message);
  }
}
