/**
 * One port, level-triggered from what etcd holds for it: its bindings
 * (`nodes/<host>/ports/<port>`) and the agents' answers (`state/<host>/ports/<port>`).
 * Every FACTS event carries the port's whole current facts; `classify` names
 * them and the guards decide from that name alone.
 *
 *   init ──always, by classify(input facts)──▶ unbound | unwiring | wired | active | migrating
 *            (vanished: none while a binding is announced ──▶ gone)
 *
 *   unbound ──▶ wired ──after stall──▶ stalled ──confirmed──▶ active ──binding gone──▶ unwiring ──▶ gone
 *                 ▲                                             │
 *                 └──────── state key vanished (agent restart) ─┘
 *
 *   FACTS, by classify(event.facts):
 *   state     │ none   unwiring  wired            active                  migrating
 *   ──────────┼─────────────────────────────────────────────────────────────────────
 *   unbound   │ ·      unwiring  wired            active                  migrating
 *   wired     │ gone   unwiring  other: wired ↻   active                  migrating
 *   stalled   │ gone   unwiring  other: wired     active (same binding:   migrating
 *             │                                     + announceRecovered)
 *   active    │ gone   unwiring  wired            other: active ↻         migrating
 *             │                                   new status: · + announceStatus
 *   migrating │ gone   unwiring  wired            active                  ·
 *   unwiring  │ gone   ·         wired            active                  migrating
 *   (· stays, facts stored; ↻ re-entered; gone is final. The same waiting
 *   binding keeps the stall timer running; another one restarts it.)
 *
 * Announcements (implemented by the registry through `.provide()`):
 * - `announceBound` on entering `active` for a binding the host was not told
 *   of (`context.notified`); it carries the status, which then counts as
 *   reported. Exactly once per binding identity (host + create revision).
 * - `announceStatus` when the reported status of the announced binding changes.
 * - `announceStalled` on entering `stalled`; `announceRecovered` when that same
 *   binding is then confirmed.
 * - `announceUnbound` on entering `unwiring` or `gone` while a binding was
 *   announced: the announced binding is gone and no other one is left.
 *   Migration (source → source+destination → destination) never unbinds: the
 *   destination is announced bound when its agent confirms it.
 * An agent restart (its state key vanishes, then returns) goes active → wired
 * → active and announces nothing unless the stall timer fires meanwhile.
 *
 * The stall timer is a delayed event, not kept in snapshots: a re-hydrated
 * port (through `init`, with `notified`/`status` from a durable record) that
 * is still unconfirmed waits a full `stallMs` again — or `stallLeftMs`, when
 * the registry kept the deadline of the same waiting binding; leaving `wired`
 * drops it, so any later wait is a full `stallMs`.
 */
import { assign, enqueueActions, setup } from 'xstate';

/** What an agent reports for a port it wired. */
export type PortStatus = 'up' | 'down' | 'error';

/** A binding: which host, and its create revision. */
export interface BindingId {
  host: string;
  rev: number;
}

/** What etcd holds for one port (maintained by the return watcher). */
export interface PortFacts {
  /** nodes/<host>/ports/<port> keys: host and the key's CREATE revision (identity of a binding). */
  bindings: { host: string; rev: number }[];
  /** state/<host>/ports/<port> keys written by agents: host, the key's MOD revision, and the status the value reports. */
  states: { host: string; rev: number; status: PortStatus }[];
}

/** The name of a port's facts (see {@link classify}). */
export type PortClass =
  | { kind: 'none' }
  | { kind: 'unwiring' }
  | { kind: 'wired'; binding: BindingId }
  | { kind: 'active'; binding: BindingId; status: PortStatus }
  | { kind: 'migrating'; bindings: BindingId[] };

const NONE: PortClass = { kind: 'none' };
const UNWIRING: PortClass = { kind: 'unwiring' };

/** True when both name the same binding (same host, same create revision). */
export function sameBinding(a: BindingId | undefined, b: BindingId | undefined): boolean {
  return a !== undefined && b !== undefined && a.host === b.host && a.rev === b.rev;
}

/**
 * Names a port's facts: no key at all (`none`); only agents' state keys left
 * (`unwiring`); one binding not yet confirmed (`wired`) or confirmed (`active`);
 * bindings on two hosts or more (`migrating`). A binding is confirmed by a state
 * key on its host modified after the binding was created (`state.rev > binding.rev`):
 * a key left from an earlier binding of the port on that host does not count.
 * Pure: the machine's guards and the registry both decide from it.
 *
 * @example
 * classify({ bindings: [{ host: 'h1', rev: 10 }], states: [{ host: 'h1', rev: 12, status: 'up' }] })
 * // → { kind: 'active', binding: { host: 'h1', rev: 10 }, status: 'up' }
 */
export function classify(facts: PortFacts): PortClass {
  const { bindings, states } = facts;
  if (bindings.length === 0) return states.length === 0 ? NONE : UNWIRING;
  let binding: BindingId = bindings[0];
  for (let i = 1; i < bindings.length; i++) {
    const b = bindings[i];
    if (b.host !== binding.host) {
      // one key per host: keep each host's newest, oldest binding first
      const byHost = new Map<string, BindingId>();
      for (const x of bindings) if ((byHost.get(x.host)?.rev ?? -Infinity) < x.rev) byHost.set(x.host, x);
      const all = [...byHost.values()].map(({ host, rev }) => ({ host, rev }));
      return { kind: 'migrating', bindings: all.sort((x, y) => x.rev - y.rev || (x.host < y.host ? -1 : 1)) };
    }
    if (b.rev > binding.rev) binding = b;
  }
  let confirmedBy: PortFacts['states'][number] | undefined;
  for (const s of states) {
    if (s.host === binding.host && s.rev > binding.rev && (confirmedBy === undefined || s.rev > confirmedBy.rev)) confirmedBy = s;
  }
  const id = { host: binding.host, rev: binding.rev };
  return confirmedBy ? { kind: 'active', binding: id, status: confirmedBy.status } : { kind: 'wired', binding: id };
}

/** Input of the port machine. */
export interface PortInput {
  portId: string;
  facts: PortFacts;
  /** Time a binding may stay unconfirmed before `stalled`. */
  stallMs: number;
  /** What is left of the first wait in `wired` (a deadline kept while the port had no actor). */
  stallLeftMs?: number;
  /** Binding already announced to the host (from a durable record): never announced again. */
  notified?: BindingId;
  /** Status already reported to the host. */
  status?: PortStatus;
}

export interface PortContext {
  portId: string;
  stallMs: number;
  /** The first wait in `wired`, when shorter than `stallMs` (see {@link PortInput}). */
  stallLeftMs: number | undefined;
  /** The port's current facts (the last FACTS, or the input's). */
  facts: PortFacts;
  /** The single binding tracked in wired, stalled and active (the stall timer's binding in wired). */
  binding: BindingId | undefined;
  /** The binding the host was told is bound. */
  notified: BindingId | undefined;
  /** The status the host was last told. */
  status: PortStatus | undefined;
}

export type PortEvent = { type: 'FACTS'; facts: PortFacts };

/** The facts a guard decides on: the event's for FACTS, else the stored ones (`init`). */
const factsOf = (context: PortContext, event: { type: string }): PortFacts =>
  event.type === 'FACTS' ? (event as PortEvent).facts : context.facts;

const kind = (context: PortContext, event: { type: string }) => classify(factsOf(context, event));

/** The binding of a `wired` or `active` class. */
const bindingOf = (c: PortClass): BindingId | undefined =>
  c.kind === 'wired' || c.kind === 'active' ? c.binding : undefined;

type Announce = { binding: BindingId; status: PortStatus };

/** The announcements `report` and `release` may enqueue. */
type Announcement =
  | { type: 'announceBound'; params: Announce }
  | { type: 'announceStatus'; params: Announce }
  | { type: 'announceUnbound'; params: { binding: BindingId } };

/** enqueueActions typed with the named announcements (setup cannot infer its own actions). */
const decide = (collect: Parameters<typeof enqueueActions<PortContext, PortEvent, undefined, PortEvent, never, Announcement, never, never>>[0]) =>
  enqueueActions<PortContext, PortEvent, undefined, PortEvent, never, Announcement, never, never>(collect);

export const portMachine = setup({
  types: {
    context: {} as PortContext,
    events: {} as PortEvent,
    input: {} as PortInput,
  },
  actions: {
    /** The port is bound on `binding`'s host (provisioning complete), reporting `status`. */
    announceBound: (_, _params: Announce) => {},
    /** The bound port's status changed. */
    announceStatus: (_, _params: Announce) => {},
    /** The agent did not confirm `binding` within stallMs. */
    announceStalled: (_, _params: { binding: BindingId }) => {},
    /** The stalled `binding` was confirmed after all. */
    announceRecovered: (_, _params: { binding: BindingId }) => {},
    /** The announced `binding` is gone and the port is bound nowhere. */
    announceUnbound: (_, _params: { binding: BindingId }) => {},
    storeFacts: assign({ facts: ({ event }) => event.facts }),
    track: assign({ binding: ({ context }) => bindingOf(classify(context.facts)) }),
    /** In active: announce a binding the host was not told of, else a status it was not told. */
    report: decide(({ context, enqueue }) => {
      const c = classify(context.facts);
      if (c.kind !== 'active') return;
      const params = { binding: c.binding, status: c.status };
      if (!sameBinding(context.notified, c.binding)) {
        enqueue({ type: 'announceBound', params });
        enqueue.assign({ notified: c.binding, status: c.status });
      } else if (context.status !== c.status) {
        enqueue({ type: 'announceStatus', params });
        enqueue.assign({ status: c.status });
      }
    }),
    /** On entering unwiring or gone: the announced binding, if any, is gone. */
    release: decide(({ context, enqueue }) => {
      if (context.notified === undefined) return;
      enqueue({ type: 'announceUnbound', params: { binding: context.notified } });
      enqueue.assign({ notified: undefined, status: undefined });
    }),
  },
  guards: {
    none: ({ context, event }) => kind(context, event).kind === 'none',
    unwiring: ({ context, event }) => kind(context, event).kind === 'unwiring',
    wired: ({ context, event }) => kind(context, event).kind === 'wired',
    /** Wired on another binding than the tracked one. */
    wiredOther: ({ context, event }) => {
      const c = kind(context, event);
      return c.kind === 'wired' && !sameBinding(c.binding, context.binding);
    },
    active: ({ context, event }) => kind(context, event).kind === 'active',
    /** Confirmed, on the tracked binding. */
    activeSame: ({ context, event }) => {
      const c = kind(context, event);
      return c.kind === 'active' && sameBinding(c.binding, context.binding);
    },
    /** Confirmed, on another binding than the tracked one. */
    activeOther: ({ context, event }) => {
      const c = kind(context, event);
      return c.kind === 'active' && !sameBinding(c.binding, context.binding);
    },
    /** Confirmed on the tracked binding with a status the host was not told. */
    statusChanged: ({ context, event }) => {
      const c = kind(context, event);
      return c.kind === 'active' && sameBinding(c.binding, context.binding) && c.status !== context.status;
    },
    migrating: ({ context, event }) => kind(context, event).kind === 'migrating',
    /** Nothing left in etcd, though the host was told the port is bound (re-hydration). */
    vanished: ({ context, event }) => context.notified !== undefined && kind(context, event).kind === 'none',
  },
  delays: {
    stall: ({ context }) => context.stallLeftMs ?? context.stallMs,
  },
}).createMachine({
  id: 'port',
  context: ({ input }) => ({
    portId: input.portId,
    stallMs: input.stallMs,
    stallLeftMs: input.stallLeftMs,
    facts: input.facts,
    binding: undefined,
    notified: input.notified,
    status: input.status,
  }),
  initial: 'init',
  // FACTS that change no state (same class, same binding, same status) are only stored
  on: { FACTS: { actions: 'storeFacts' } },
  states: {
    init: {
      always: [
        { guard: 'vanished', target: 'gone' },
        { guard: 'none', target: 'unbound' },
        { guard: 'unwiring', target: 'unwiring' },
        { guard: 'wired', target: 'wired' },
        { guard: 'active', target: 'active' },
        { guard: 'migrating', target: 'migrating' },
      ],
    },
    unbound: {
      on: {
        FACTS: [
          { guard: 'unwiring', target: 'unwiring', actions: 'storeFacts' },
          { guard: 'wired', target: 'wired', actions: 'storeFacts' },
          { guard: 'active', target: 'active', actions: 'storeFacts' },
          { guard: 'migrating', target: 'migrating', actions: 'storeFacts' },
        ],
      },
    },
    wired: {
      entry: 'track',
      exit: assign({ stallLeftMs: undefined }),
      after: { stall: 'stalled' },
      on: {
        FACTS: [
          { guard: 'none', target: 'gone', actions: 'storeFacts' },
          { guard: 'unwiring', target: 'unwiring', actions: 'storeFacts' },
          { guard: 'wiredOther', target: 'wired', reenter: true, actions: 'storeFacts' },
          { guard: 'active', target: 'active', actions: 'storeFacts' },
          { guard: 'migrating', target: 'migrating', actions: 'storeFacts' },
        ],
      },
    },
    stalled: {
      entry: { type: 'announceStalled', params: ({ context }) => ({ binding: context.binding! }) },
      on: {
        FACTS: [
          { guard: 'none', target: 'gone', actions: 'storeFacts' },
          { guard: 'unwiring', target: 'unwiring', actions: 'storeFacts' },
          { guard: 'wiredOther', target: 'wired', actions: 'storeFacts' },
          {
            guard: 'activeSame',
            target: 'active',
            actions: ['storeFacts', { type: 'announceRecovered', params: ({ context }) => ({ binding: context.binding! }) }],
          },
          { guard: 'active', target: 'active', actions: 'storeFacts' },
          { guard: 'migrating', target: 'migrating', actions: 'storeFacts' },
        ],
      },
    },
    active: {
      entry: ['track', 'report'],
      on: {
        FACTS: [
          { guard: 'none', target: 'gone', actions: 'storeFacts' },
          { guard: 'unwiring', target: 'unwiring', actions: 'storeFacts' },
          { guard: 'wired', target: 'wired', actions: 'storeFacts' },
          { guard: 'activeOther', target: 'active', reenter: true, actions: 'storeFacts' },
          { guard: 'statusChanged', actions: ['storeFacts', 'report'] },
          { guard: 'migrating', target: 'migrating', actions: 'storeFacts' },
        ],
      },
    },
    migrating: {
      on: {
        FACTS: [
          { guard: 'none', target: 'gone', actions: 'storeFacts' },
          { guard: 'unwiring', target: 'unwiring', actions: 'storeFacts' },
          { guard: 'wired', target: 'wired', actions: 'storeFacts' },
          { guard: 'active', target: 'active', actions: 'storeFacts' },
        ],
      },
    },
    unwiring: {
      entry: 'release',
      on: {
        FACTS: [
          { guard: 'none', target: 'gone', actions: 'storeFacts' },
          { guard: 'wired', target: 'wired', actions: 'storeFacts' },
          { guard: 'active', target: 'active', actions: 'storeFacts' },
          { guard: 'migrating', target: 'migrating', actions: 'storeFacts' },
        ],
      },
    },
    gone: {
      type: 'final',
      entry: 'release',
    },
  },
});
