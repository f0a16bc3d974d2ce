// The audit trail: one event per request, to /v1/log/audit subscribers and to stdout as JSON lines.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EventStream } from './stream.js';

export interface AuditEvent {
  time: string;
  request: { ip: string; enclave?: string; path: string; identity?: string };
  response: { code: number; time: number /* nanoseconds, as both client generations decode it */ };
}

export class AuditLog {
  readonly stream = new EventStream();
  events = 0;

  constructor(private readonly stdout: ((line: string) => void) | undefined) {}

  get dropped(): number {
    return this.stream.dropped;
  }

  subscribe(req: IncomingMessage, res: ServerResponse): Promise<void> {
    return this.stream.subscribe(req, res);
  }

  record(event: AuditEvent): void {
    this.events++;
    if (this.stdout === undefined && !this.stream.hasSubscribers) return;
    const line = JSON.stringify(event) + '\n';
    this.stdout?.(line);
    this.stream.publish(line);
  }
}
