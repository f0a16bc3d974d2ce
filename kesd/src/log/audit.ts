// The audit trail: one event per request, to /v1/log/audit subscribers and to stdout as JSON lines.
// Best effort, as in KES: an audit sink that cannot keep up loses events (counted in /v1/metrics), and the
// request is served regardless; unlike Vault, where a failed audit write fails the request (docs/security.md).
import { EventStream, type Subscriber } from './stream.js';

export interface AuditEvent {
  time: string;
  request: { ip: string; enclave?: string; path: string; identity?: string };
  response: { code: number; time: number /* nanoseconds, as both client generations decode it */ };
}

export class AuditLog {
  readonly stream = new EventStream();
  events = 0;

  /** Lines stdout did not take (its reader too slow or gone), as its writer last reported. */
  stdoutDropped = 0;

  /** stdout: queues a line, returning how many lines it has dropped so far (server/lines.ts). */
  constructor(private readonly stdout: ((line: string) => number) | undefined) {}

  /** Events dropped for /v1/log/audit subscribers that did not keep up. */
  get dropped(): number {
    return this.stream.dropped;
  }

  /** scope: the enclave whose events the subscriber may see; undefined for all (the system admin). */
  subscribe(subscriber: Subscriber, scope: string | undefined): Promise<void> {
    return this.stream.subscribe(subscriber, scope);
  }

  record(event: AuditEvent): void {
    this.events++;
    if (this.stdout === undefined && !this.stream.hasSubscribers) return;
    const line = JSON.stringify(event) + '\n';
    if (this.stdout !== undefined) this.stdoutDropped = this.stdout(line);
    this.stream.publish(event.request.enclave ?? null, line);
  }
}
