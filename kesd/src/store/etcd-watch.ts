// Keeps one etcd watch on the store's prefix open, so a replica learns of every write the other replicas commit and
// can drop or reload what it holds in memory (run.ts hands the events to the state layer).
//
// Events are applied one response at a time, in revision order; `next` moves past a revision only once its events
// were applied. A watch that breaks (member restart, lost connection) is reopened from `next` after a short
// backoff, on whichever endpoint answers, so nothing is missed or applied out of order. When etcd no longer has
// the history from `next` (compacted), or applying an event failed, the follower reloads everything instead:
// it takes the current revision, has the state reloaded, and watches on from that revision + 1. Applying an event
// twice is harmless (a change only says what to reload), which is what makes the replay after a reload safe.
import type { IWatchResponse } from 'etcd3';
import type { EtcdStore, WatchStream } from './etcd.js';

export interface StoreEvent {
  readonly path: string;
  readonly deleted: boolean;
}

export interface FollowerHooks {
  /** Applies the events of one watch response, in order. A throw makes the follower reload everything. */
  apply(events: readonly StoreEvent[]): Promise<void>;
  /** Reloads all state from the store. */
  resync(): Promise<void>;
  /** A state change of the follower, for the error log (never record content). */
  log(message: string): void;
}

type Outcome = { readonly resync: boolean; readonly reason: string };

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2000;

const messageOf = (err: unknown) => (err as Error)?.message ?? String(err);

export class EtcdFollower {
  private next: bigint;
  private stream: WatchStream | undefined;
  private stopped = false;
  private wake: () => void = () => {};
  private readonly running: Promise<void>;

  /** Follows every change after revision `after` (the revision the state was loaded at, or before it). */
  constructor(
    private readonly store: EtcdStore,
    after: bigint,
    private readonly hooks: FollowerHooks,
  ) {
    this.next = after + 1n;
    this.running = this.run();
  }

  /** The first revision not applied yet. */
  get nextRevision(): bigint {
    return this.next;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stream?.cancel();
    this.wake();
    await this.running;
  }

  private async run(): Promise<void> {
    let backoff = MIN_BACKOFF_MS;
    let trouble: string | undefined;
    while (!this.stopped) {
      const outcome = await this.follow(() => {
        if (trouble !== undefined) this.hooks.log(`etcd watch resumed at revision ${this.next}`);
        trouble = undefined;
        backoff = MIN_BACKOFF_MS;
      });
      if (this.stopped) break;
      if (outcome.resync) {
        this.hooks.log(`etcd watch: ${outcome.reason}; reloading all state`);
        await this.resync();
        continue;
      }
      if (trouble === undefined) this.hooks.log(`etcd watch lost (${outcome.reason}); reconnecting`);
      trouble = outcome.reason;
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  /** Reloads until it succeeds (etcd may be without quorum right now), then watches on from that revision. */
  private async resync(): Promise<void> {
    for (let backoff = MIN_BACKOFF_MS; !this.stopped; backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)) {
      try {
        const revision = await this.store.revision();
        await this.hooks.resync();
        this.next = revision + 1n;
        this.hooks.log(`etcd watch: state reloaded at revision ${revision}`);
        return;
      } catch (err) {
        this.hooks.log(`etcd watch: reload failed (${messageOf(err)}); retrying`);
        await this.sleep(backoff);
      }
    }
  }

  /** One watch stream, until it ends (resolves how); responses are handled strictly one after another. */
  private async follow(connected: () => void): Promise<Outcome> {
    let stream: WatchStream;
    try {
      stream = await this.store.watch(this.next);
    } catch (err) {
      return { resync: false, reason: messageOf(err) };
    }
    this.stream = stream;
    if (this.stopped) stream.cancel();
    return new Promise<Outcome>((resolve) => {
      let queue = Promise.resolve();
      let ended = false;
      const end = (outcome: Outcome) => {
        if (ended) return;
        ended = true;
        stream.cancel();
        // Let the responses already queued finish first: `next` must not move under a newer stream.
        void queue.then(() => resolve(outcome));
      };
      stream.on('data', (res: IWatchResponse) => {
        queue = queue.then(async () => {
          if (ended) return;
          const outcome = await this.handle(res, connected);
          if (outcome !== undefined) end(outcome);
        });
      });
      stream.on('error', (err: Error) => end({ resync: false, reason: messageOf(err) }));
      stream.on('end', () => end({ resync: false, reason: 'the watch stream ended' }));
    });
  }

  private async handle(res: IWatchResponse, connected: () => void): Promise<Outcome | undefined> {
    if (res.compact_revision && res.compact_revision !== '0') {
      return { resync: true, reason: `history before revision ${res.compact_revision} was compacted` };
    }
    if (res.canceled)
      return { resync: false, reason: `etcd canceled the watch: ${res.cancel_reason || 'no reason given'}` };
    if (res.created) {
      connected();
      return undefined;
    }
    if (res.events.length === 0) {
      // A progress notification: every event up to the header's revision has been sent.
      const revision = BigInt(res.header.revision) + 1n;
      if (revision > this.next) this.next = revision;
      return undefined;
    }
    const events: StoreEvent[] = [];
    for (const ev of res.events) {
      const path = this.store.pathOf(ev.kv.key);
      if (path !== undefined) events.push({ path, deleted: ev.type === 'Delete' });
    }
    try {
      await this.hooks.apply(events);
    } catch (err) {
      return { resync: true, reason: `applying a change failed (${messageOf(err)})` };
    }
    // While catching up, the header's revision can be ahead of the events sent so far; the last event's is not.
    this.next = BigInt(res.events[res.events.length - 1]!.kv.mod_revision) + 1n;
    return undefined;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}
