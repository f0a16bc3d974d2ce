// `kesd server --workers N`: N processes on node:cluster. The primary does what happens once per start (the
// declarations; config and unsealing happened before), then only coordinates. It forks N workers (worker.ts)
// that each open the store, load the System and accept connections on the one listening socket node:cluster
// shares; it restarts a worker that dies, and relays between the workers:
//   - state changes: a worker's mutation is answered only after every other worker has applied it;
//   - log-stream events, and only while some other worker has a /v1/log/* subscriber;
//   - metrics: the worker serving /v1/metrics sums every worker's registry;
//   - TLS reload on SIGHUP, and a graceful stop on SIGTERM/SIGINT.
// TLS: the primary reads and checks the certificate, key and CAs (at start and on SIGHUP) and hands the workers the
// checked bytes; a worker never reads the files. So a worker restarted after a failed reload (a broken file on
// disk) serves the certificate the others kept, and all workers always serve the same one.
//
// Messages (JSON over the IPC channel; the `kesd` field tells ours from node's and prom-client's):
//   worker → primary  {kesd:'hello'}                  its listener is ready (earlier messages would be lost);
//   primary → worker  {kesd:'start', options}         the answer: what to serve, and how (with the TLS bytes); the
//                                                     root key itself goes over the worker's key pipe (key-pipe.ts)
//   worker → primary  {kesd:'ask', id, ask}           answered by {kesd:'answer', id, data}
//   primary → worker  {kesd:'call', id, call}         answered by {kesd:'reply', id, data}
//   both ways         {kesd:'events', stream, events} log-stream [scope, line] pairs, no answer
// A change travels as ask → call to every other worker → their replies (the acks) → answer. A worker that
// does not reply within ACK_TIMEOUT_MS is killed: it restarts from the store, so the change holds there too.
//
// Port 0: node:cluster keys the shared listening handle by address, port and listen count, so workers that all
// listen on port 0 share the one port the first of them got. That handle closes with its last worker; a worker
// forked when none is left listens on the port the handle had.
//
// Connections: the primary accepts and hands each new connection to a worker in turn (node:cluster's round robin,
// the Linux default; it balances keep-alive pools, which the kernel's shared accept does not). A connection handed
// to a worker in the instant it crashes stays open in the primary until the client gives up; from the moment the
// primary sees the exit, new connections go to the live workers.
import cluster, { type Worker } from 'node:cluster';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Change } from '../state/changes.js';
import type { ServerConfig } from '../config/config.js';
import { wipe } from '../crypto/secret.js';
import { collectGarbage } from '../state/gc.js';
import { sendRootKey, WORKER_STDIO } from './key-pipe.js';
import { banner, declareInStore, holdSighup, type KesdOptions, type SighupHold } from './run.js';
import { parseAddress, STOP_GRACE_MS } from './server.js';
import type { Events } from '../log/stream.js';
import { loadServerTls } from '../identity/tls-files.js';

export type StreamName = 'audit' | 'error';
const STREAMS: readonly StreamName[] = ['audit', 'error'];

export interface StartOptions {
  readonly dir: string;
  readonly config: ServerConfig;
  /** The root key's bytes are not here: they come over the key pipe, unless sealed. */
  readonly root: { readonly sysadmin: string; readonly createdAt: string };
  readonly address: string;
  readonly auditStdout: boolean;
  readonly sealed: boolean;
  readonly startedAt: number;
  readonly workers: number;
  /** 1…N; a restarted worker keeps its slot (it labels the worker's metrics). */
  readonly slot: number;
  /** Which streams another worker subscribes to already. */
  readonly forward: Record<StreamName, boolean>;
  /** The TLS certificate, key and CAs to serve, checked by the primary. */
  readonly tls: TlsBytes;
}

/** TLS material as it crosses the IPC channel (JSON): base64. */
export interface TlsBytes {
  readonly cert: string;
  readonly key: string;
  readonly passphrase?: string;
  readonly ca?: string[];
}

/** Reads and checks the configured TLS files (tls-check.ts); throws with a clear message if one is bad. */
function loadTlsBytes(config: ServerConfig): TlsBytes {
  const { cert, key, passphrase, ca } = loadServerTls({
    cert: config.tls.cert,
    key: config.tls.key,
    password: config.tls.password,
    ca: config.tls.ca,
  });
  return {
    cert: cert.toString('base64'),
    key: key.toString('base64'),
    passphrase,
    ca: ca?.map((b) => b.toString('base64')),
  };
}

export type Ask =
  | { what: 'change'; change: Change }
  | { what: 'subscribe'; stream: StreamName; on: boolean }
  | { what: 'metrics' };
export type Call =
  | { what: 'apply'; change: Change }
  | { what: 'forward'; stream: StreamName; on: boolean }
  | { what: 'metrics' }
  | { what: 'reload'; tls: TlsBytes };
export type Message =
  | { kesd: 'hello' }
  | { kesd: 'start'; options: StartOptions }
  | { kesd: 'ask'; id: number; ask: Ask }
  | { kesd: 'answer'; id: number; data?: unknown }
  | { kesd: 'call'; id: number; call: Call }
  | { kesd: 'reply'; id: number; data?: unknown }
  | { kesd: 'events'; stream: StreamName; events: Events };

const ACK_TIMEOUT_MS = 10_000;
// A worker's stop cuts idle connections after STOP_GRACE_MS (server.ts) but answers every request whose handler has
// started; a route's timeout (15 s) bounds those, and the stop then closes the store and flushes stdout (2 s at
// most). Killing a worker earlier would cut requests it may have applied. Kubernetes' default grace is 30 s.
const STOP_TIMEOUT_MS = STOP_GRACE_MS + 20_000;
const CRASH_WINDOW_MS = 60_000;
const MAX_CRASHES = 5;

interface Member {
  readonly worker: Worker;
  readonly slot: number;
  hello: boolean;
  listening: boolean;
  readonly subscribed: Record<StreamName, boolean>;
  readonly forwarding: Record<StreamName, boolean>;
}

interface PendingCall {
  readonly waiting: Set<Worker>;
  readonly replies: unknown[];
  readonly resolve: (replies: unknown[]) => void;
  readonly timer: NodeJS.Timeout;
}

/** Runs the primary until SIGTERM/SIGINT (0) or until workers cannot be kept running (1). */
export async function runCluster(opts: KesdOptions, workers: number): Promise<number> {
  // Applying init.yml can take a while; a SIGHUP meanwhile must not end the process (its default action).
  const sighup = holdSighup();
  try {
    await declareInStore(opts);
    return await new Primary(opts, workers, loadTlsBytes(opts.config), sighup).run();
  } finally {
    sighup.drop();
  }
}

/** worker.ts next to this file (worker.js when built, worker.ts under tsx). */
function workerEntry(): string {
  const self = fileURLToPath(import.meta.url);
  return join(dirname(self), `worker${extname(self)}`);
}

/** Node's options for the workers: the primary's, minus code it was given to run (-e, -p), which would run again. */
function workerExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (['-e', '--eval', '-p', '--print', '-pe', '--input-type'].includes(arg)) i++;
    else if (!/^--(eval|print|input-type)=/.test(arg)) out.push(arg);
  }
  return out;
}

function send(worker: Worker, message: Message): void {
  if (worker.isConnected()) worker.send(message, () => {}); // an error here shows as the worker's exit
}

class Primary {
  private readonly members = new Map<Worker, Member>();
  private readonly calls = new Map<number, PendingCall>();
  private readonly restarts = new Set<NodeJS.Timeout>();
  private readonly startedAt = Date.now();
  private nextCall = 0;
  private sealed = false;
  private listenPort: number;
  private boundPort = 0;
  private serving = false;
  private stopping = false;
  private exitCode = 0;
  private crashes: number[] = [];
  private done: (code: number) => void = () => {};

  /** tls: the checked bytes the workers serve; a worker started later gets the ones current then. */
  constructor(
    private readonly opts: KesdOptions,
    private readonly count: number,
    private tls: TlsBytes,
    private readonly sighup: SighupHold,
  ) {
    this.listenPort = parseAddress(opts.address).port;
  }

  run(): Promise<number> {
    cluster.setupPrimary({ exec: workerEntry(), execArgv: workerExecArgv(), args: [], stdio: WORKER_STDIO });
    cluster.on('message', (worker, message: Message) => this.receive(worker, message));
    cluster.on('listening', (worker, address) => this.listening(worker, address.port));
    cluster.on('exit', (worker, code, signal) => this.exited(worker, code, signal));
    this.sighup.release(() => void this.reloadTls());
    process.once('SIGTERM', () => this.stop(0));
    process.once('SIGINT', () => this.stop(0));
    for (let slot = 1; slot <= this.count; slot++) this.fork(slot);
    return new Promise((resolve) => (this.done = resolve));
  }

  private fork(slot: number): void {
    if (this.members.size === 0 && this.boundPort !== 0) this.listenPort = this.boundPort;
    const worker = cluster.fork();
    const off = { audit: false, error: false };
    this.members.set(worker, {
      worker,
      slot,
      hello: false,
      listening: false,
      subscribed: { ...off },
      forwarding: { ...off },
    });
  }

  private startOptions(member: Member): StartOptions {
    const { opts } = this;
    for (const s of STREAMS) member.forwarding[s] = this.othersSubscribe(member, s);
    return {
      dir: opts.dir,
      config: opts.config,
      root: { sysadmin: opts.root.sysadmin, createdAt: opts.root.createdAt },
      address: opts.address.replace(/:\d+$/, `:${this.listenPort}`),
      auditStdout: opts.auditStdout,
      sealed: this.sealed,
      startedAt: this.startedAt,
      workers: this.count,
      slot: member.slot,
      forward: { ...member.forwarding },
      tls: this.tls,
    };
  }

  private receive(worker: Worker, message: Message): void {
    const member = this.members.get(worker);
    if (member === undefined || typeof message !== 'object' || message === null || !('kesd' in message)) return;
    switch (message.kesd) {
      case 'hello':
        member.hello = true;
        send(worker, { kesd: 'start', options: this.startOptions(member) });
        return sendRootKey(worker, this.sealed ? undefined : this.opts.root.key);
      case 'ask':
        return void this.answer(member, message.id, message.ask);
      case 'reply':
        return this.replied(worker, message.id, message.data);
      case 'events':
        for (const m of this.members.values())
          if (m !== member && m.subscribed[message.stream]) send(m.worker, message);
    }
  }

  private async answer(member: Member, id: number, ask: Ask): Promise<void> {
    let data: unknown;
    switch (ask.what) {
      case 'change':
        if (ask.change.kind === 'seal' && !this.sealed) {
          this.sealed = true; // workers forked from now on start sealed, without a key
          wipe(this.opts.root.key);
          collectGarbage();
        }
        await this.callAll({ what: 'apply', change: ask.change }, member);
        break;
      case 'subscribe':
        member.subscribed[ask.stream] = ask.on;
        await this.updateForwarding(ask.stream);
        break;
      case 'metrics':
        data = await this.callAll({ what: 'metrics' }, member);
        break;
    }
    send(member.worker, { kesd: 'answer', id, data });
  }

  private othersSubscribe(member: Member, stream: StreamName): boolean {
    for (const m of this.members.values()) if (m !== member && m.subscribed[stream]) return true;
    return false;
  }

  /** Tells each worker whether to forward its events of the stream; resolves once all that changed acked. */
  private async updateForwarding(stream: StreamName): Promise<void> {
    const changed: Promise<unknown>[] = [];
    for (const m of this.members.values()) {
      const on = this.othersSubscribe(m, stream);
      if (!m.hello || m.forwarding[stream] === on) continue;
      m.forwarding[stream] = on;
      changed.push(this.call([m.worker], { what: 'forward', stream, on }));
    }
    await Promise.all(changed);
  }

  private callAll(call: Call, except?: Member): Promise<unknown[]> {
    return this.call(
      [...this.members.values()].filter((m) => m.hello && m !== except).map((m) => m.worker),
      call,
    );
  }

  /** Sends a call to the workers; resolves with their replies, once each replied or exited. */
  private call(workers: Worker[], call: Call): Promise<unknown[]> {
    const waiting = new Set(workers.filter((w) => w.isConnected()));
    if (waiting.size === 0) return Promise.resolve([]);
    const id = ++this.nextCall;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        for (const w of waiting) {
          console.error(
            `kesd: worker ${this.members.get(w)?.slot} did not answer within ${ACK_TIMEOUT_MS / 1000} s; killing it`,
          );
          w.process.kill('SIGKILL');
        }
      }, ACK_TIMEOUT_MS);
      this.calls.set(id, { waiting, replies: [], resolve, timer });
      for (const w of waiting) send(w, { kesd: 'call', id, call });
    });
  }

  private replied(worker: Worker, id: number, data: unknown): void {
    const pending = this.calls.get(id);
    if (pending === undefined || !pending.waiting.delete(worker)) return;
    pending.replies.push(data);
    if (pending.waiting.size === 0) this.settle(id, pending);
  }

  private settle(id: number, pending: PendingCall): void {
    clearTimeout(pending.timer);
    this.calls.delete(id);
    pending.resolve(pending.replies);
  }

  private listening(worker: Worker, port: number): void {
    const member = this.members.get(worker);
    if (member === undefined) return;
    member.listening = true;
    this.boundPort = port;
    if (this.serving || [...this.members.values()].filter((m) => m.listening).length < this.count) return;
    this.serving = true;
    console.error(banner(this.opts, port, this.count));
  }

  private exited(worker: Worker, code: number | null, signal: string | null): void {
    const member = this.members.get(worker);
    if (member === undefined) return;
    this.members.delete(worker);
    for (const [id, pending] of this.calls)
      if (pending.waiting.delete(worker) && pending.waiting.size === 0) this.settle(id, pending);
    for (const s of STREAMS) if (member.subscribed[s]) void this.updateForwarding(s);
    if (this.stopping) {
      if (this.members.size === 0) this.done(this.exitCode);
      return;
    }
    const how = signal ?? `code ${code}`;
    if (!this.serving) {
      console.error(`kesd: worker ${member.slot} exited (${how}) before the server was up`);
      return this.stop(1);
    }
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => now - t < CRASH_WINDOW_MS).concat(now);
    if (this.crashes.length > MAX_CRASHES) {
      console.error(`kesd: workers exited ${this.crashes.length} times within ${CRASH_WINDOW_MS / 1000} s; stopping`);
      return this.stop(1);
    }
    const delay = Math.min(100 * 2 ** (this.crashes.length - 1), 5000);
    console.error(
      `kesd: worker ${member.slot} (pid ${worker.process.pid}) exited (${how}); restarting it in ${delay} ms`,
    );
    const timer = setTimeout(() => {
      this.restarts.delete(timer);
      this.fork(member.slot);
    }, delay);
    this.restarts.add(timer);
  }

  private async reloadTls(): Promise<void> {
    let tls: TlsBytes;
    try {
      tls = loadTlsBytes(this.opts.config);
    } catch (err) {
      console.error(`kesd: TLS reload failed, keeping the old certificate: ${(err as Error).message}`);
      return;
    }
    this.tls = tls;
    const replies = await this.callAll({ what: 'reload', tls });
    const failures = replies.filter((r): r is string => typeof r === 'string');
    if (failures.length === 0) console.error('kesd: TLS certificate reloaded');
    else
      console.error(
        `kesd: TLS reload failed in ${failures.length} of ${replies.length} workers, keeping the old certificate: ${failures[0]}`,
      );
  }

  /** Stops every worker (SIGTERM: each closes its server and store), then resolves run() with code. */
  private stop(code: number): void {
    if (this.stopping) return;
    this.stopping = true;
    this.exitCode = code;
    for (const timer of this.restarts) clearTimeout(timer);
    if (this.members.size === 0) return this.done(code);
    for (const m of this.members.values()) m.worker.process.kill('SIGTERM');
    setTimeout(() => {
      for (const m of this.members.values()) m.worker.process.kill('SIGKILL');
    }, STOP_TIMEOUT_MS).unref();
  }
}
