// A cluster worker (forked by cluster.ts, whose header describes the protocol): serves the API as a single kesd
// process would, and keeps in step with the other workers through the primary. This file is the entry point.
import cluster from 'node:cluster';
import { AggregatorRegistry, Counter } from 'prom-client';
import type { ServerContext } from '../api/context.js';
import type { Change, ChangeBus } from '../state/changes.js';
import type { Ask, Call, Message, StartOptions, StreamName, TlsBytes } from './cluster.js';
import { closeKeyPipe, receiveRootKey } from './key-pipe.js';
import { startKesd, type Kesd } from './run.js';
import type { TlsMaterial } from './server.js';
import type { Events, Scope, StreamRelay } from '../log/stream.js';

/** The IPC channel to the primary. */
class Link {
  private nextAsk = 0;
  private readonly asks = new Map<number, (data: unknown) => void>();
  readonly start: Promise<StartOptions>;

  constructor(handle: { call(call: Call): Promise<unknown>; events(stream: StreamName, events: Events): void }) {
    let started: (options: StartOptions) => void = () => {};
    this.start = new Promise((resolve) => (started = resolve));
    process.on('message', (message: Message) => {
      switch (message?.kesd) {
        case 'start':
          return started(message.options);
        case 'answer': {
          const resolve = this.asks.get(message.id);
          this.asks.delete(message.id);
          return resolve?.(message.data);
        }
        case 'call':
          return void handle.call(message.call).then((data) => this.send({ kesd: 'reply', id: message.id, data }));
        case 'events':
          return handle.events(message.stream, message.events);
      }
    });
    this.send({ kesd: 'hello' });
  }

  send(message: Message): void {
    process.send!(message, undefined, {}, () => {}); // without the primary this process exits anyway (node:cluster)
  }

  ask(ask: Ask): Promise<unknown> {
    const id = ++this.nextAsk;
    return new Promise((resolve) => {
      this.asks.set(id, resolve);
      this.send({ kesd: 'ask', id, ask });
    });
  }
}

/** One log stream's link to the other workers: forwards this worker's events, batched per event-loop turn. */
class Relay implements StreamRelay {
  private announced = false;
  private last: Promise<void> = Promise.resolve();
  private batch: Events = [];

  constructor(
    private readonly stream: StreamName,
    private readonly link: Link,
    public forwarding: boolean,
  ) {}

  forward(scope: Scope, line: string): void {
    if (this.batch.length === 0) setImmediate(() => this.flush());
    this.batch.push([scope, line]);
  }

  private flush(): void {
    const events = this.batch;
    this.batch = [];
    this.link.send({ kesd: 'events', stream: this.stream, events });
  }

  subscribed(any: boolean): Promise<void> {
    if (any !== this.announced) {
      this.announced = any;
      this.last = this.link.ask({ what: 'subscribe', stream: this.stream, on: any }).then(() => undefined);
    }
    return this.last;
  }
}

function tlsMaterialOf(tls: TlsBytes): TlsMaterial {
  return {
    cert: Buffer.from(tls.cert, 'base64'),
    key: Buffer.from(tls.key, 'base64'),
    passphrase: tls.passphrase,
    ca: tls.ca?.map((b) => Buffer.from(b, 'base64')),
  };
}

let attached: (ctx: ServerContext) => void = () => {};
const served = new Promise<ServerContext>((resolve) => (attached = resolve));
let running: Promise<Kesd> | undefined;
let stopping = false;
const relays = {} as Record<StreamName, Relay>;

async function handle(call: Call): Promise<unknown> {
  if (call.what === 'forward') {
    relays[call.stream].forwarding = call.on;
    return undefined;
  }
  const ctx = await served;
  switch (call.what) {
    case 'apply':
      try {
        return await ctx.system.apply(call.change);
      } catch (err) {
        // The change is in the store; a fresh start reads it from there.
        console.error(`kesd: worker could not apply a change (${(err as Error).message}); exiting to restart`);
        return process.exit(1);
      }
    case 'metrics':
      return ctx.metrics.registry.getMetricsAsJSON();
    case 'reload':
      try {
        // The primary read and checked the files; the worker installs exactly those bytes.
        (await running!).reloadTls(tlsMaterialOf(call.tls));
        return null;
      } catch (err) {
        return (err as Error).message;
      }
  }
}

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  const kesd = await running?.catch(() => undefined);
  await kesd?.stop();
  process.exit(0);
}

// The primary coordinates: it reloads TLS on SIGHUP and stops the workers on SIGINT/SIGTERM (sent to it, or to
// the whole process group, as a terminal does); a SIGTERM to this worker alone stops it too (it is restarted).
process.on('SIGHUP', () => {});
// Without its primary (kill -9, the OOM killer) node:cluster calls process.exit here; a native module's exit
// cleanup could then wait forever for an LMDB write transaction whose callback needs this very thread (both workers
// were found hung so, holding LMDB's write lock). An orphan has nothing to finish and must not serve: it dies at
// once, as it would have with its primary (the kernel releases the lock; nothing unacknowledged is owed).
process.prependOnceListener('disconnect', () => {
  if (!stopping && !cluster.worker?.exitedAfterDisconnect) process.kill(process.pid, 'SIGKILL');
});
process.on('SIGINT', () => {});
process.on('SIGTERM', () => void stop());

const link = new Link({
  call: handle,
  events: (stream, events) =>
    void served.then((ctx) => (stream === 'audit' ? ctx.audit : ctx.errors).stream.deliver(events)),
});
const options = await link.start;
for (const s of ['audit', 'error'] as const) relays[s] = new Relay(s, link, options.forward[s]);
const bus: ChangeBus = { publish: (change: Change) => link.ask({ what: 'change', change }).then(() => undefined) };

running = startKesd({
  dir: options.dir,
  config: options.config,
  // Sealed, the system loads nothing and needs no key (a zero-length buffer says so).
  root: { ...options.root, key: options.sealed ? (closeKeyPipe(), Buffer.alloc(0)) : receiveRootKey() },
  address: options.address,
  auditStdout: options.auditStdout,
  tls: tlsMaterialOf(options.tls),
  worker: {
    bus,
    sealed: options.sealed,
    startedAt: options.startedAt,
    workers: options.workers,
    attach(ctx) {
      ctx.audit.stream.relay = relays.audit;
      ctx.errors.stream.relay = relays.error;
      const { audit, metrics } = ctx;
      new Counter({
        name: 'kesd_worker_requests',
        help: 'Requests served by each worker process',
        labelNames: ['worker'],
        registers: [metrics.registry],
        collect() {
          this.reset();
          this.labels(String(options.slot)).inc(audit.events);
        },
      });
      metrics.gather = async () => {
        const others = (await link.ask({ what: 'metrics' })) as object[];
        return AggregatorRegistry.aggregate([await metrics.registry.getMetricsAsJSON(), ...others]).metrics();
      };
      attached(ctx);
    },
  },
});
running.catch((err: Error) => {
  console.error(`kesd: worker ${options.slot}: ${err.message}`);
  process.exit(1);
});
