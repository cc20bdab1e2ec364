/**
 * The data contract between the inspector (the live visualizer, see
 * `server.ts`) and whatever it shows: a runtime adapter in production, an
 * in-memory fake in tests. The server only reads through this interface and
 * never imports the runtime.
 *
 * Also small helpers an adapter may use: {@link EventHub} (the `subscribe`
 * half), {@link queryPorts} (filter + paginate any iterable of ports) and
 * {@link machineCharts} (the `machines()` half).
 *
 * A runtime adapter provides:
 * - `machines()`: `machineCharts(machines)` over machines/index.ts, computed once;
 * - `roles()`: one entry per role actor (supervisor, forwarder, resync,
 *   return watcher…) with its `snapshot.value`, its machine's key, and the
 *   leadership known from the election terms (`holder`: the leader's holder id);
 * - `portCounts()`: counts kept by the port registry as ports move (O(states));
 * - `ports(q)` / `port(id)`: the registry's ports in a stable order (insertion
 *   order of a Map is fine, with `queryPorts`), and per port its last
 *   transitions (a small ring, e.g. 20) and whatever facts it holds;
 * - `journal()`: depth, dead letters, and a cumulative applied-keys counter
 *   (summed from the runtime's `applied` events);
 * - `subscribe()`: a `role` event on every role actor snapshot whose value
 *   changed (with the event that caused it), `leader` on `leader`/`follower`,
 *   `port` on every port actor transition, `host` for host events
 *   (portBound, hostDead, …); emitted synchronously, never throwing.
 */
import type { AnyStateMachine } from 'xstate';
import { machineToJson, type ExportedState } from '../machine-export.ts';

/** One role actor (a leader-elected role, or the supervisor). */
export interface InspectorRole {
  /** Role name, e.g. `'forwarder' | 'resync' | 'return-watcher' | 'supervisor'`. */
  id: string;
  /** Key of the role's machine in {@link InspectorSource.machines}. */
  machine: string;
  /** The actor's `snapshot.value` (a string, or an object for nested/parallel states). */
  state: unknown;
  /** True when this process leads the role. */
  leader: boolean;
  /** Holder id of the current leader, when known. */
  holder?: string;
  /** Why etcd refuses this process what the role needs (the role or its election is `refused`). */
  error?: string;
}

/** One port actor, as listed. */
export interface InspectorPort {
  id: string;
  /** The port actor's state, e.g. `'wired'`, `'active'`. */
  state: string;
  /** The compute host the port is bound to. */
  host?: string;
}

/** One port actor in detail: what it knows and its recent transitions (oldest first). */
export interface InspectorPortDetail extends InspectorPort {
  facts?: unknown;
  transitions: { at: number; from: string; to: string; event: string }[];
}

/** The journal's figures now. */
export interface InspectorJournal {
  /** Entries waiting to be applied. */
  depth: number;
  /** Cumulative keys applied to etcd since start (the drain rate is its derivative). */
  appliedKeys: number;
  deadLetters: number;
}

/** Something that happened, pushed live to the page. `at` is epoch milliseconds. */
export type InspectorEvent =
  | { kind: 'role'; at: number; role: string; state: unknown; event: string; error?: string }
  | { kind: 'leader'; at: number; role: string; leader: boolean; holder?: string }
  | { kind: 'port'; at: number; port: string; from: string; to: string; host?: string; event: string }
  | { kind: 'host'; at: number; type: string; data: unknown };

/**
 * What the inspector reads. Every method is synchronous and called on the
 * event loop, so each must be cheap:
 * - `machines()` is called once per page load (the charts are static);
 * - `portCounts()` is called at most ~10 times a second while ports move:
 *   keep the counts incrementally, do not scan 100,000 ports each time;
 * - `ports(q)` is called on page load and when the user pages or filters;
 * - `subscribe` must deliver events synchronously or not at all, never throw,
 *   and return an unsubscribe function (called by `close()`).
 */
export interface InspectorSource {
  /** Machine name → `machineToJson(machine)` output. */
  machines(): Record<string, unknown>;
  roles(): InspectorRole[];
  /** State → count, over ALL ports (may be 100,000+). */
  portCounts(): Record<string, number>;
  /**
   * One page of ports, in a stable order.
   * @param q.state only ports in this state
   * @param q.filter only ports whose id or host contains this substring
   */
  ports(q: { state?: string; filter?: string; offset: number; limit: number }): { total: number; items: InspectorPort[] };
  /** One port's detail, or undefined when unknown. */
  port(id: string): InspectorPortDetail | undefined;
  journal(): InspectorJournal;
  /** Calls `listener` with every event from now on; returns the unsubscribe function. */
  subscribe(listener: (e: InspectorEvent) => void): () => void;
}

/** A query of {@link InspectorSource.ports}. */
export type PortQuery = Parameters<InspectorSource['ports']>[0];

/**
 * The `machines()` half of a source: every machine of a map as its chart.
 * @example machineCharts(machines) // { forwarder: { id: 'forwarder', … }, … }
 */
export function machineCharts(map: Record<string, AnyStateMachine>): Record<string, ExportedState> {
  return Object.fromEntries(Object.entries(map).map(([name, m]) => [name, machineToJson(m)]));
}

/**
 * The `subscribe` half of a source: a set of listeners. A listener that
 * throws is isolated (reported to `onError`, the others still get the event).
 *
 * @example
 * const hub = new EventHub<InspectorEvent>();
 * const source = { …, subscribe: (l) => hub.subscribe(l) };
 * hub.emit({ kind: 'leader', at: Date.now(), role: 'forwarder', leader: true });
 */
export class EventHub<E> {
  private readonly listeners = new Set<(e: E) => void>();

  /** @param onError called with what a listener threw @default ignore it */
  constructor(private readonly onError: (err: unknown) => void = () => {}) {}

  /** Adds a listener; returns its unsubscribe function (idempotent). */
  subscribe(listener: (e: E) => void): () => void {
    // wrap, so that one function subscribed twice is two subscriptions
    const wrapped = (e: E) => listener(e);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  /** Calls every listener with `e`. */
  emit(e: E): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  /** How many listeners are subscribed. */
  get size(): number {
    return this.listeners.size;
  }
}

/**
 * Filters and paginates ports in one pass, in iteration order: the `ports()`
 * half of a source that keeps its ports in a Map or an array. O(n) per call
 * (~2–5 ms for 100,000 ports), which is fine for user-driven queries.
 *
 * @param ports every port, in a stable order
 * @param q `state` exact match; `filter` a case-insensitive substring of the id or host
 * @example queryPorts(registry.values(), { filter: 'compute-007', offset: 0, limit: 50 })
 */
export function queryPorts(ports: Iterable<InspectorPort>, q: PortQuery): { total: number; items: InspectorPort[] } {
  const needle = q.filter ? q.filter.toLowerCase() : '';
  const items: InspectorPort[] = [];
  let total = 0;
  for (const p of ports) {
    if (q.state !== undefined && q.state !== '' && p.state !== q.state) continue;
    if (needle && !p.id.toLowerCase().includes(needle) && !(p.host?.toLowerCase().includes(needle) ?? false)) continue;
    if (total >= q.offset && items.length < q.limit) items.push({ id: p.id, state: p.state, host: p.host });
    total++;
  }
  return { total, items };
}

/**
 * The state paths a `snapshot.value` is in, relative to the machine's root:
 * `{ leader: 'idle' }` → `['leader', 'leader.idle']`; parallel regions give
 * every active path. Used by the page to highlight states.
 * @example activePaths({ a: { b: 'c' }, d: 'e' }) // ['a', 'a.b', 'a.b.c', 'd', 'd.e']
 */
export function activePaths(value: unknown, prefix = ''): string[] {
  const join = (k: string) => (prefix ? `${prefix}.${k}` : k);
  if (typeof value === 'string') return [join(value)];
  if (value === null || typeof value !== 'object') return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out.push(join(k));
    out.push(...activePaths(v, join(k)));
  }
  return out;
}
