/**
 * The inspector's view of a running {@link Runtime}: an {@link InspectorSource}
 * reading the runtime's status, its port registry and its supervisor actor,
 * and turning what happens into inspector events:
 * - `role`: an `@xstate.snapshot` inspection event of the supervisor, one of
 *   its role actors or a role's election child that changed the role's row:
 *   its state value or its refusal (`error`, the role's own or its
 *   election's, as in `status()`) (from {@link Runtime.onInspect});
 * - `leader`: the runtime's `leader`, `follower` and `leaderSeen` events;
 * - `port`: the registry's `portTransition` events (leader and followers alike);
 * - `host`: portBound, portStalled, portRecovered, portUnbound, portStatus,
 *   hostAlive, hostDead.
 *
 * open ──close()──▶ closed (every listener removed; reads still answer)
 *
 * Create it once the runtime has started (its registry exists from then on);
 * the runtime does so itself when given the `inspector` option.
 */
import type { AnyActorRef, InspectionEvent } from 'xstate';
import { roleRefusal, type RefusalInfo } from '../../machines/refusal.ts';
import { machines } from '../../machines/index.ts';
import { FORWARDER_ROLE } from '../forwarder.ts';
import { RESYNC_ROLE } from '../resync.ts';
import { RETURN_WATCHER_ROLE } from '../return-watcher.ts';
import type { Runtime, RuntimeEvents } from '../runtime.ts';
import {
  EventHub,
  machineCharts,
  queryPorts,
  type InspectorEvent,
  type InspectorJournal,
  type InspectorPortDetail,
  type InspectorRole,
  type InspectorSource,
} from './source.ts';

/** The supervisor's role children: child id, role name, machine key. */
const ROLES = [
  { child: 'forwarder', role: FORWARDER_ROLE, machine: 'forwarder' },
  { child: 'resync', role: RESYNC_ROLE, machine: 'resync' },
  { child: 'returnWatcher', role: RETURN_WATCHER_ROLE, machine: 'returnWatcher' },
] as const satisfies readonly { child: string; role: string; machine: keyof typeof machines }[];

const ROLE_OF_CHILD = new Map<string, string>(ROLES.map((r) => [r.child, r.role]));

/** Id of the election child of every role actor. */
const ELECTION_CHILD = 'election';

/** What the source reads of a role actor's (or its election's) snapshot. */
interface RoleSnapshot {
  value?: unknown;
  context?: { error?: RefusalInfo };
  children?: Record<string, AnyActorRef | undefined>;
}

/** A refusal as the inspector shows it. */
const refusalText = (error: RefusalInfo): string => `${error.code}: ${error.message}`;

/** Compares role rows: the state value and the refusal. */
const rowKey = (state: unknown, error: RefusalInfo | undefined): string =>
  JSON.stringify([state, error ? refusalText(error) : null]);

/** Runtime events passed on as `host` events. */
const HOST_EVENTS = ['portBound', 'portStalled', 'portRecovered', 'portUnbound', 'portStatus', 'hostAlive', 'hostDead'] as const;

/**
 * An inspector source over `rt` (see the module comment). Cheap to read:
 * port counts are the registry's own, ports are filtered in one pass over the
 * registry without copying it.
 * @returns the source, and `close()` which removes every listener it added (idempotent)
 * @example
 * const source = runtimeSource(rt);
 * const inspector = await startInspector({ source });
 * // …
 * await inspector.close();
 * source.close();
 */
export function runtimeSource(rt: Runtime): InspectorSource & { close(): void } {
  const hub = new EventHub<InspectorEvent>((err) => rt.log.warn({ err }, 'inspector listener failed'));
  const now = rt.options.now;
  const offs: (() => void)[] = [];
  let charts: Record<string, unknown> | undefined;
  let appliedKeys = 0;

  const on = <K extends keyof RuntimeEvents>(type: K, fn: (...args: RuntimeEvents[K]) => void): void => {
    const listener = fn as (...args: unknown[]) => void;
    (rt.on as (t: string, l: (...args: unknown[]) => void) => void)(type, listener);
    offs.push(() => (rt.off as (t: string, l: (...args: unknown[]) => void) => void)(type, listener));
  };

  // role actors: one event per change of a role's row (state value and refusal), from the rows now;
  // a role's election child is watched too: it can be refused while the role stays a follower
  const lastRow = new Map<string, string>();
  const root = rt.actor?.getSnapshot();
  if (root) {
    lastRow.set('supervisor', rowKey(root.value, undefined));
    for (const r of ROLES) {
      const child = root.children[r.child] as AnyActorRef | undefined;
      if (child) lastRow.set(r.role, rowKey(child.getSnapshot().value, roleRefusal(child.getSnapshot())));
    }
  }
  offs.push(
    rt.onInspect((e: InspectionEvent) => {
      if (e.type !== '@xstate.snapshot' || hub.size === 0) return;
      const root = rt.actor;
      if (!root) return;
      const ref = e.actorRef as AnyActorRef;
      const parent = ref._parent as AnyActorRef | undefined;
      let role: string | undefined;
      let snapshot: RoleSnapshot;
      if (ref === root) {
        role = 'supervisor';
        snapshot = e.snapshot as RoleSnapshot;
      } else if (parent === root) {
        role = ROLE_OF_CHILD.get(ref.id);
        snapshot = e.snapshot as RoleSnapshot;
      } else if (ref.id === ELECTION_CHILD && parent && parent._parent === root) {
        role = ROLE_OF_CHILD.get(parent.id);
        snapshot = parent.getSnapshot() as RoleSnapshot;
      } else return;
      if (role === undefined) return;
      const state = snapshot.value;
      const refusal = role === 'supervisor' ? undefined : roleRefusal(snapshot, ref.id === ELECTION_CHILD ? (e.snapshot as RoleSnapshot) : undefined);
      const key = rowKey(state, refusal);
      if (lastRow.get(role) === key) return;
      lastRow.set(role, key);
      hub.emit({ kind: 'role', at: now(), role, state, event: e.event.type, ...(refusal ? { error: refusalText(refusal) } : {}) });
    }),
  );

  on('leader', ({ role }) => hub.emit({ kind: 'leader', at: now(), role, leader: true, holder: rt.options.holderId }));
  on('follower', ({ role }) => hub.emit({ kind: 'leader', at: now(), role, leader: false }));
  on('leaderSeen', ({ role, holder }) => hub.emit({ kind: 'leader', at: now(), role, leader: false, holder }));
  on('applied', ({ keys }) => {
    appliedKeys += keys;
  });
  for (const type of HOST_EVENTS) {
    on(type, (data: unknown) => hub.emit({ kind: 'host', at: now(), type, data }));
  }

  const registry = rt.ports;
  if (registry) {
    const onTransition = (t: { port: string; from: string; to: string; host?: string; at: number }) =>
      hub.emit({ kind: 'port', at: t.at, port: t.port, from: t.from, to: t.to, host: t.host, event: t.to === 'stalled' ? 'stall' : 'facts' });
    registry.on('portTransition', onTransition);
    offs.push(() => registry.off('portTransition', onTransition));
  }

  return {
    machines: () => (charts ??= machineCharts(machines)),

    roles(): InspectorRole[] {
      const status = rt.status();
      const supervisor: InspectorRole = { id: 'supervisor', machine: 'supervisor', state: rt.actor?.getSnapshot().value ?? 'off', leader: false };
      return [
        supervisor,
        ...ROLES.map(({ role, machine }) => {
          const r = status.roles[role];
          const entry: InspectorRole = { id: role, machine, state: r?.state ?? 'off', leader: r?.leader ?? false, holder: r?.holder };
          if (r?.error) entry.error = refusalText(r.error);
          return entry;
        }),
      ];
    },

    portCounts: () => rt.ports?.stateCounts() ?? {},

    ports: (q) => (rt.ports ? queryPorts(rt.ports.list(), q) : { total: 0, items: [] }),

    port(id): InspectorPortDetail | undefined {
      const p = rt.ports?.port(id);
      if (!p) return undefined;
      return { id: p.id, state: p.state, host: p.host, facts: p.facts, transitions: [...(p.history ?? [])] };
    },

    journal(): InspectorJournal {
      const s = rt.status();
      return { depth: s.journalDepth, appliedKeys, deadLetters: s.deadLetters };
    },

    subscribe: (listener) => hub.subscribe(listener),

    close() {
      for (const off of offs.splice(0)) off();
    },
  };
}
