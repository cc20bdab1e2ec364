/**
 * Every port's facts (what etcd holds for it) in every process, and, in the
 * process leading the return watcher, one port actor per port in flux.
 *
 * per port (leader): no actor ──facts change──▶ live actor ──settles (active)──▶ passivated record
 *                                                         └─ gone ─▶ forgotten
 *
 * Settled ports cost a compact record, not an actor: a record is re-hydrated
 * into an actor (through the machine's `init` state, which announces nothing
 * already announced) when its facts change in a way that needs one.
 * Announcements are remembered durably (LMDB table `notified`, gathered for
 * {@link NOTIFIED_WRITE_MS} and written in one transaction, and at once when
 * the process stops leading or stops), so a restart or a new leader never
 * announces a binding twice.
 * A follower keeps the facts only (for `whenActive` and the inspector).
 */
import { EventEmitter } from 'node:events';
import { createActor, type Actor } from 'xstate';
import type { Database } from 'lmdb';
import type { Logger } from 'pino';
import {
  classify,
  portMachine,
  sameBinding,
  type BindingId,
  type PortFacts,
  type PortInput,
  type PortStatus,
} from '../machines/port.ts';
import { TimeoutError } from './errors.ts';
import { PortDecisions } from './port-decisions.ts';

/** Host events about ports. */
export interface PortEvents {
  /** Provisioning complete: the agent confirmed this binding (once per binding). */
  portBound: [{ port: string; host: string; status: PortStatus }];
  /** The agent did not confirm a binding within `stallMs`. */
  portStalled: [{ port: string; host: string }];
  /** A stalled port was confirmed after all. */
  portRecovered: [{ port: string; host: string }];
  /** The announced binding is gone from etcd. */
  portUnbound: [{ port: string; host: string }];
  /** The agent reported a new status for an announced binding. */
  portStatus: [{ port: string; host: string; status: PortStatus }];
  /** A port changed state (for the inspector). */
  portTransition: [{ port: string; from: string; to: string; host?: string; at: number }];
}

/** The durable record of what the host was told about a port: host, binding revision, status. */
type NotifiedRecord = [host: string, rev: number, status: PortStatus];

interface PortEntry {
  facts: PortFacts;
  state: string;
  actor?: Actor<typeof portMachine>;
  notified?: BindingId;
  status?: PortStatus;
  /** Recent transitions (live ports only; trimmed). */
  history?: { at: number; from: string; to: string; event: string }[];
  /** A wired record (no actor): when its stall timer fires, and for which binding. */
  stallAt?: number;
  stallFor?: BindingId;
}

/** Options of a {@link PortRegistry}. */
export interface PortRegistryOptions {
  /** Time a binding may wait for its agent before `portStalled`. */
  stallMs: number;
  /** Durable announcements (a table of the journal's environment). */
  notified: Database<NotifiedRecord, string>;
  log: Logger;
  now: () => number;
  /** How long announcement records are gathered before they are written, ms. @default {@link NOTIFIED_WRITE_MS} */
  notifiedWriteMs?: number;
}

type Announcement = 'announceBound' | 'announceStatus' | 'announceStalled' | 'announceRecovered' | 'announceUnbound';

/** `b`, as the facts' own binding object when it is the same binding (a settled record keeps no copy). */
const sharedBinding = (b: BindingId | undefined, facts: PortFacts): BindingId | undefined => {
  if (b === undefined) return undefined;
  return facts.bindings.find((x) => x.host === b.host && x.rev === b.rev) ?? b;
};

const EMPTY: PortFacts = { bindings: [], states: [] };
const SETTLED = new Set(['active', 'unbound', 'gone']);
const HISTORY = 20;
const SLICE = 1000;
/**
 * Announcement records are gathered for this long, ms, and written in one
 * LMDB transaction: one per announcement would double the write transactions
 * (and fsyncs) of a steady stream of binds.
 */
export const NOTIFIED_WRITE_MS = 10;

const sameFacts = (a: PortFacts, b: PortFacts): boolean =>
  a.bindings.length === b.bindings.length &&
  a.states.length === b.states.length &&
  a.bindings.every((x, i) => x.host === b.bindings[i].host && x.rev === b.bindings[i].rev) &&
  a.states.every((x, i) => x.host === b.states[i].host && x.rev === b.states[i].rev && x.status === b.states[i].status);

const stateOfFacts = (facts: PortFacts): string => {
  const c = classify(facts);
  return c.kind === 'none' ? 'unbound' : c.kind;
};


/** The ports' facts and actors; see the module comment. */
export class PortRegistry extends EventEmitter<PortEvents> {
  private entries = new Map<string, PortEntry>();
  private counts = new Map<string, number>();
  private waiters = new Map<string, Set<() => void>>();
  private leading = false;
  private live = 0;
  /** Set while a bulk operation (relist, gaining leadership) runs: applies wait here. */
  private pending?: Map<string, PortFacts>;
  private bulk: Promise<void> = Promise.resolve();
  private readonly machine;
  /**
   * The stall deadlines of wired records, in the order they were set (one
   * `stallMs` after now, so in time order), checked lazily against the entry;
   * one timer for the earliest.
   */
  private stalls: { id: string; at: number }[] = [];
  private stallHead = 0;
  private stallTimer?: ReturnType<typeof setTimeout>;
  /** The machine's initial transitions, remembered by input shape (see `port-decisions.ts`). */
  private readonly decisions: PortDecisions;
  /** The announcements, by action name: the machine's implementations and the record path's. */
  private readonly announce: Record<Announcement, (port: string, p: { binding: BindingId; status: PortStatus }) => void>;
  /** Announcement records not written yet (null: removed), and the timer that writes them. */
  private readonly unwritten = new Map<string, NotifiedRecord | null>();
  private writeTimer?: ReturnType<typeof setTimeout>;

  constructor(private readonly o: PortRegistryOptions) {
    super();
    const record = (port: string, host: string, rev: number, status: PortStatus) => {
      this.remember(port, [host, rev, status]);
    };
    this.announce = {
      announceBound: (port, p) => {
        record(port, p.binding.host, p.binding.rev, p.status);
        this.emit('portBound', { port, host: p.binding.host, status: p.status });
      },
      announceStatus: (port, p) => {
        record(port, p.binding.host, p.binding.rev, p.status);
        this.emit('portStatus', { port, host: p.binding.host, status: p.status });
      },
      announceStalled: (port, p) => {
        this.emit('portStalled', { port, host: p.binding.host });
        // the stall timer moved the actor without a call from here
        const entry = this.entries.get(port);
        if (entry) queueMicrotask(() => this.observe(port, entry, 'stall'));
      },
      announceRecovered: (port, p) => this.emit('portRecovered', { port, host: p.binding.host }),
      announceUnbound: (port, p) => {
        this.remember(port, null);
        this.emit('portUnbound', { port, host: p.binding.host });
      },
    };
    const a = this.announce;
    this.machine = portMachine.provide({
      actions: {
        announceBound: ({ context }, p) => a.announceBound(context.portId, p),
        announceStatus: ({ context }, p) => a.announceStatus(context.portId, p),
        announceStalled: ({ context }, p) => a.announceStalled(context.portId, p as never),
        announceRecovered: ({ context }, p) => a.announceRecovered(context.portId, p as never),
        announceUnbound: ({ context }, p) => a.announceUnbound(context.portId, p as never),
      },
    });
    this.decisions = new PortDecisions(this.machine);
  }

  /** Number of ports tracked. */
  get size(): number {
    return this.entries.size;
  }

  /** Ports per state, over every port. */
  stateCounts(): Record<string, number> {
    return Object.fromEntries([...this.counts].filter(([, n]) => n > 0));
  }

  /** How many ports have a live actor (the rest are compact records). */
  liveActors(): number {
    return this.live;
  }

  /** One port's state, facts and recent transitions. */
  port(id: string): { id: string; state: string; host?: string; facts: PortFacts; history: PortEntry['history'] } | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    return { id, state: e.state, host: e.facts.bindings[0]?.host, facts: e.facts, history: e.history ?? [] };
  }

  /** Iterates ports as (id, state, host). */
  *list(): Generator<{ id: string; state: string; host?: string }> {
    for (const [id, e] of this.entries) yield { id, state: e.state, host: e.facts.bindings[0]?.host };
  }

  /** The current facts of a port (including changes waiting for a bulk operation). */
  facts(id: string): PortFacts {
    return this.pending?.get(id) ?? this.entries.get(id)?.facts ?? EMPTY;
  }

  /**
   * Replaces every port's facts after a relist (ports not listed have none
   * left), in slices that yield to the event loop.
   */
  reset(next: Map<string, PortFacts>): Promise<void> {
    return this.exclusive(async () => {
      await this.sliced([...this.entries.keys()], (id) => next.has(id) || this.applyNow(id, EMPTY));
      await this.sliced(next.keys(), (id) => this.applyNow(id, next.get(id)!));
    });
  }

  /** Sets one port's facts and lets its actor (if leading) decide. */
  apply(id: string, facts: PortFacts): void {
    if (this.pending) this.pending.set(id, facts);
    else this.applyNow(id, facts);
  }

  /**
   * Runs bulk work after the previous one; single changes arriving meanwhile
   * wait (last one per port wins) and are applied when it ends.
   */
  private exclusive(work: () => Promise<void>): Promise<void> {
    const run = async () => {
      this.pending ??= new Map();
      try {
        await work();
      } finally {
        const waiting = this.pending;
        this.pending = undefined;
        for (const [id, facts] of waiting ?? []) this.applyNow(id, facts);
      }
    };
    this.bulk = this.bulk.then(run, run);
    return this.bulk;
  }

  /** Calls `fn` for each id, yielding every {@link SLICE} (GC and LMDB commits run between slices). */
  private async sliced(ids: Iterable<string>, fn: (id: string) => unknown): Promise<void> {
    let n = 0;
    for (const id of ids) {
      fn(id);
      if (++n % SLICE === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  private applyNow(id: string, facts: PortFacts): void {
    let entry = this.entries.get(id);
    if (entry && sameFacts(entry.facts, facts)) return;
    if (!entry) {
      if (facts.bindings.length === 0 && facts.states.length === 0) return;
      entry = { facts: EMPTY, state: 'unbound' };
      this.entries.set(id, entry);
      this.count('unbound', 1);
      if (this.leading) this.loadNotified(id, entry);
    }
    if (this.leading) this.drive(id, entry, facts);
    else {
      entry.facts = facts;
      this.setState(id, entry, stateOfFacts(facts), 'facts');
      if (entry.state === 'unbound') this.forget(id, entry);
    }
    this.wake(id);
  }

  /**
   * Starts announcing: each port is checked against its durable record, and
   * gets an actor when something is in flux or unannounced (in slices).
   */
  lead(): Promise<void> {
    if (this.leading) return this.bulk;
    this.leading = true;
    return this.exclusive(async () => {
      await this.sliced([...this.entries.keys()], (id) => {
        const entry = this.entries.get(id);
        if (!this.leading || !entry || entry.actor) return;
        entry.notified = undefined;
        entry.status = undefined;
        this.loadNotified(id, entry);
        this.drive(id, entry, entry.facts);
      });
    });
  }

  /** Stops announcing: actors stop, facts stay. */
  follow(): void {
    if (!this.leading) return;
    this.leading = false;
    // the next leader may be another process on this data directory
    this.writeRemembered();
    this.dropStalls();
    for (const [id, entry] of this.entries) {
      this.release(entry);
      entry.stallAt = entry.stallFor = undefined;
      this.setState(id, entry, stateOfFacts(entry.facts), 'follow');
    }
  }

  /** Forgets every port (the watch ended for good). */
  clear(): void {
    this.dropStalls();
    for (const e of this.entries.values()) this.release(e);
    this.entries.clear();
    this.counts.clear();
  }

  /**
   * Resolves when the port is bound and confirmed by its agent.
   * @throws TimeoutError after `timeoutMs`
   */
  whenActive(id: string, timeoutMs: number): Promise<{ host: string; status: PortStatus }> {
    const check = () => {
      const c = classify(this.facts(id));
      return c.kind === 'active' ? { host: c.binding.host, status: c.status } : undefined;
    };
    const now = check();
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      let set = this.waiters.get(id);
      if (!set) this.waiters.set(id, (set = new Set()));
      const waiter = () => {
        const r = check();
        if (!r) return;
        done();
        resolve(r);
      };
      const timer = setTimeout(() => {
        done();
        reject(new TimeoutError(`port ${id} not active within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        set.delete(waiter);
        if (set.size === 0) this.waiters.delete(id);
      };
      set.add(waiter);
    });
  }

  /** Writes the announcement records gathered so far and waits until they are on disk. */
  async flush(): Promise<void> {
    this.writeRemembered();
    await this.o.notified.flushed;
  }

  /** Gathers an announcement record (null: the port's record goes) for the next write. */
  private remember(port: string, record: NotifiedRecord | null): void {
    this.unwritten.set(port, record);
    this.writeTimer ??= setTimeout(() => this.writeRemembered(), this.o.notifiedWriteMs ?? NOTIFIED_WRITE_MS);
  }

  /** Writes the gathered records; lmdb-js commits the puts of one event-loop turn in one transaction. */
  private writeRemembered(): void {
    clearTimeout(this.writeTimer);
    this.writeTimer = undefined;
    for (const [port, record] of this.unwritten) {
      if (record) void this.o.notified.put(port, record);
      else void this.o.notified.remove(port);
    }
    this.unwritten.clear();
  }

  private wake(id: string): void {
    const set = this.waiters.get(id);
    if (set) for (const w of [...set]) w();
  }

  private loadNotified(id: string, entry: PortEntry): void {
    const r = this.unwritten.has(id) ? this.unwritten.get(id) : this.o.notified.get(id);
    if (r) {
      entry.notified = { host: r[0], rev: r[1] };
      entry.status = r[2];
    }
  }

  /** Leader: moves the port to `facts`, through an actor unless the record can take it as is. */
  private drive(id: string, entry: PortEntry, facts: PortFacts): void {
    if (!entry.actor) {
      const c = classify(facts);
      if (
        c.kind === 'active' &&
        entry.notified?.host === c.binding.host &&
        entry.notified.rev === c.binding.rev &&
        entry.status === c.status
      ) {
        entry.facts = facts;
        this.setState(id, entry, 'active', 'facts');
        return;
      }
      // level-triggered: the new facts are the input; `init` announces only what the record lacks
      entry.facts = facts;
      if (this.settleWithoutActor(id, entry)) return;
      entry.actor = this.hydrate(id, entry);
    } else {
      entry.facts = facts;
      entry.actor.send({ type: 'FACTS', facts });
    }
    this.observe(id, entry, 'facts');
  }

  private input(id: string, entry: PortEntry): PortInput {
    return { portId: id, facts: entry.facts, stallMs: this.o.stallMs, notified: entry.notified, status: entry.status };
  }

  /**
   * The machine's own pure initial transition from the record: when it lands
   * in a settled state with no timer to run, its announcements are made and
   * the port stays a record (no actor is ever created for it). When it lands
   * in `wired`, whose only timer is the stall, the record keeps the deadline
   * instead (the same binding keeps it, another one restarts it): the port
   * gets an actor only if the deadline passes unconfirmed.
   */
  private settleWithoutActor(id: string, entry: PortEntry): boolean {
    const d = this.decisions.decide(this.input(id, entry));
    const value = d.value;
    const wired = value === 'wired';
    if (!wired && (!SETTLED.has(value) || d.timer)) return false;
    if (d.actions.some((x) => !(x.type in this.announce))) return false;
    // an announcement's listener may settle another port: the decision is ours alone
    for (const x of d.actions) this.announce[x.type as Announcement](id, x.params as { binding: BindingId; status: PortStatus });
    let restarted = false;
    if (wired) {
      if (entry.state !== 'wired' || entry.stallAt === undefined || !sameBinding(entry.stallFor, d.binding)) {
        entry.stallFor = sharedBinding(d.binding, entry.facts);
        entry.stallAt = this.o.now() + this.o.stallMs;
        restarted = true;
      }
    } else {
      entry.stallAt = entry.stallFor = undefined;
    }
    this.setState(id, entry, value, 'facts');
    entry.notified = sharedBinding(d.notified, entry.facts);
    entry.status = d.status;
    if (restarted) this.queueStall(id, entry.stallAt!);
    if (value !== 'active' && !wired) this.forget(id, entry);
    return true;
  }

  private queueStall(id: string, at: number): void {
    this.stalls.push({ id, at });
    this.armStall();
  }

  /** Arms the one timer for the earliest deadline still standing. */
  private armStall(): void {
    if (this.stallTimer) return;
    while (this.stallHead < this.stalls.length && !this.stallStands(this.stalls[this.stallHead])) this.stallHead++;
    if (this.stallHead >= this.stalls.length) {
      this.stalls = [];
      this.stallHead = 0;
      return;
    }
    const head = this.stalls[this.stallHead];
    this.stallTimer = setTimeout(() => this.fireStalls(), Math.max(0, head.at - this.o.now()));
  }

  private stallStands(s: { id: string; at: number }): boolean {
    const entry = this.entries.get(s.id);
    return entry !== undefined && !entry.actor && entry.state === 'wired' && entry.stallAt === s.at;
  }

  /** Wired records whose deadline passed get an actor, whose stall timer then fires at once. */
  private fireStalls(): void {
    this.stallTimer = undefined;
    const now = this.o.now();
    while (this.stallHead < this.stalls.length && this.stalls[this.stallHead].at <= now) {
      const s = this.stalls[this.stallHead++];
      if (!this.leading || !this.stallStands(s)) continue;
      const entry = this.entries.get(s.id)!;
      entry.actor = this.hydrate(s.id, entry, 0);
      // the actor starts in `wired` (as the record), its stall due at once: `announceStalled` observes it
      entry.stallAt = entry.stallFor = undefined;
    }
    if (this.stallHead > 4096 && this.stallHead * 2 > this.stalls.length) {
      this.stalls = this.stalls.slice(this.stallHead);
      this.stallHead = 0;
    }
    this.armStall();
  }

  private dropStalls(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    this.stalls = [];
    this.stallHead = 0;
  }

  /** @param stallLeftMs what is left of a wired record's deadline */
  private hydrate(id: string, entry: PortEntry, stallLeftMs?: number): Actor<typeof portMachine> {
    const input = this.input(id, entry);
    if (stallLeftMs !== undefined) input.stallLeftMs = stallLeftMs;
    const actor = createActor(this.machine, { input });
    actor.subscribe({ error: (err) => this.o.log.error({ err, port: id }, 'port actor failed') });
    actor.start();
    this.live++;
    return actor;
  }

  /** Reads a live actor's state; passivates or forgets it once settled. */
  private observe(id: string, entry: PortEntry, event: string): void {
    const actor = entry.actor;
    if (!actor) return;
    const snap = actor.getSnapshot();
    this.setState(id, entry, String(snap.value), event);
    if (!SETTLED.has(entry.state)) return;
    // a settled port keeps a compact record: no history, the binding object shared with its facts
    entry.notified = sharedBinding(snap.context.notified, entry.facts);
    entry.status = snap.context.status;
    entry.history = undefined;
    this.release(entry);
    if (entry.state !== 'active') this.forget(id, entry);
  }

  /** Stops a port's actor, if it has one. */
  private release(entry: PortEntry): void {
    if (!entry.actor) return;
    entry.actor.stop();
    entry.actor = undefined;
    this.live--;
  }

  /** Drops a port with nothing left in etcd (its record went with `announceUnbound`). */
  private forget(id: string, entry: PortEntry): void {
    this.count(entry.state, -1);
    this.entries.delete(id);
  }

  private setState(id: string, entry: PortEntry, state: string, event: string): void {
    if (entry.state === state) return;
    const at = this.o.now();
    const from = entry.state;
    this.count(from, -1);
    this.count(state, 1);
    entry.state = state;
    if (entry.actor) {
      const h = (entry.history ??= []);
      h.push({ at, from, to: state, event });
      if (h.length > HISTORY) h.shift();
    }
    this.emit('portTransition', { port: id, from, to: state, host: entry.facts.bindings[0]?.host, at });
  }

  private count(state: string, d: number): void {
    this.counts.set(state, (this.counts.get(state) ?? 0) + d);
  }
}
