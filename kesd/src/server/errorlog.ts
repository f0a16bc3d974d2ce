// Server error messages: to stderr (via pino) and to /v1/log/error subscribers as {"message": …}.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { EventStream } from './stream.js';

export class ErrorLog {
  readonly stream = new EventStream();
  events = 0;

  constructor(private readonly logger: Logger | undefined) {}

  subscribe(req: IncomingMessage, res: ServerResponse): Promise<void> {
    return this.stream.subscribe(req, res);
  }

  log(message: string, err?: unknown): void {
    this.events++;
    const detail = err instanceof Error ? `${message}: ${err.message}` : message;
    this.logger?.error(err instanceof Error ? { err } : {}, message);
    this.stream.publish(JSON.stringify({ message: `${new Date().toISOString()} ${detail}` }) + '\n');
  }
}
