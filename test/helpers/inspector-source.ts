/**
 * A synthetic, in-memory {@link InspectorSource} for the inspector tests: a
 * small fake port registry (100,000 ports by default, counts kept
 * incrementally), roles on the real machines of machines/index.ts, a journal
 * whose figures the test sets, and drivers that emit events the way a
 * runtime adapter would (`movePort`, `setRole`, `setLeader`, `hostEvent`).
 */
import { machines } from '../../machines/index.ts';
import {
  EventHub,
  machineCharts,
  queryPorts,
  type InspectorEvent,
  type InspectorJournal,
  type InspectorPort,
  type InspectorPortDetail,
  type InspectorRole,
  type InspectorSource,
  type PortQuery,
} from '../../src/inspector/source.ts';

/** Port states of the fake registry, in lifecycle order. */
export const FAKE_PORT_STATES = ['binding', 'wired', 'active', 'down'] as const;

const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');

/** The id of fake port `i`, e.g. `00000000-0000-4000-8000-00000000002a`. */
export const fakePortId = (i: number) => `00000000-0000-4000-8000-${hex(i, 12)}`;

/** The host of fake port `i` among `hosts`, e.g. `compute-007`. */
export const fakeHost = (i: number, hosts: number) => `compute-${String(i % hosts).padStart(3, '0')}`;

/** The initial state of fake port `i`: 70% active, 10% each of wired, binding, down. */
function initialState(i: number): string {
  const r = i % 10;
  return r === 1 ? 'wired' : r === 2 ? 'binding' : r === 3 ? 'down' : 'active';
}

interface FakePort extends InspectorPort {
  transitions?: InspectorPortDetail['transitions'];
}

/** Options of {@link FakeInspectorSource}. */
export interface FakeSourceOptions {
  /** @default 100_000 */
  ports?: number;
  /** @default 20 */
  hosts?: number;
  /** Clock of the events. @default Date.now */
  now?: () => number;
}

/** See the file comment. */
export class FakeInspectorSource implements InspectorSource {
  readonly hub = new EventHub<InspectorEvent>();
  /** The journal's figures; tests change them (or replace `journal`). */
  journalFigures: InspectorJournal = { depth: 0, appliedKeys: 0, deadLetters: 0 };
  private readonly list: FakePort[] = [];
  private readonly byId = new Map<string, FakePort>();
  private readonly counts = new Map<string, number>();
  private readonly roleMap = new Map<string, InspectorRole>();
  private readonly now: () => number;

  constructor(o: FakeSourceOptions = {}) {
    const n = o.ports ?? 100_000;
    const hosts = o.hosts ?? 20;
    this.now = o.now ?? Date.now;
    for (const s of FAKE_PORT_STATES) this.counts.set(s, 0);
    for (let i = 0; i < n; i++) {
      const p: FakePort = { id: fakePortId(i), state: initialState(i), host: fakeHost(i, hosts) };
      this.list.push(p);
      this.byId.set(p.id, p);
      this.counts.set(p.state, (this.counts.get(p.state) ?? 0) + 1);
    }
    const roles: InspectorRole[] = [
      { id: 'supervisor', machine: 'supervisor', state: { forwarder: { running: 'active' }, resync: { running: 'active' } }, leader: false },
      { id: 'forwarder', machine: 'forwarder', state: { leader: 'idle' }, leader: true, holder: 'host-a' },
      { id: 'resync', machine: 'resync', state: 'follower', leader: false, holder: 'host-b' },
    ];
    for (const r of roles) this.roleMap.set(r.id, r);
  }

  machines(): Record<string, unknown> {
    return machineCharts(machines);
  }

  roles(): InspectorRole[] {
    return [...this.roleMap.values()].map((r) => ({ ...r }));
  }

  portCounts(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }

  ports(q: PortQuery): { total: number; items: InspectorPort[] } {
    return queryPorts(this.list, q);
  }

  port(id: string): InspectorPortDetail | undefined {
    const p = this.byId.get(id);
    if (!p) return undefined;
    return { id: p.id, state: p.state, host: p.host, facts: { mac: 'fa:16:3e:00:00:01' }, transitions: [...(p.transitions ?? [])] };
  }

  journal(): InspectorJournal {
    return { ...this.journalFigures };
  }

  subscribe(listener: (e: InspectorEvent) => void): () => void {
    return this.hub.subscribe(listener);
  }

  // ---- drivers

  /** Fake port `i`'s record (for assertions). */
  portAt(i: number): InspectorPort {
    const p = this.list[i];
    return { id: p.id, state: p.state, host: p.host };
  }

  /** Moves a port to `to` and emits the port event. */
  movePort(id: string, to: string, event = 'AGENT_STATE', host?: string): void {
    const p = this.byId.get(id);
    if (!p) throw new Error(`no port ${id}`);
    const from = p.state;
    const at = this.now();
    this.counts.set(from, (this.counts.get(from) ?? 1) - 1);
    this.counts.set(to, (this.counts.get(to) ?? 0) + 1);
    p.state = to;
    if (host !== undefined) p.host = host;
    p.transitions ??= [];
    p.transitions.push({ at, from, to, event });
    if (p.transitions.length > 20) p.transitions.shift();
    this.hub.emit({ kind: 'port', at, port: id, from, to, host: p.host, event });
  }

  /** Sets a role's state and emits the role event. */
  setRole(role: string, state: unknown, event: string): void {
    const r = this.roleMap.get(role);
    if (!r) throw new Error(`no role ${role}`);
    r.state = state;
    this.hub.emit({ kind: 'role', at: this.now(), role, state, event });
  }

  /** Sets a role's leadership and emits the leader event. */
  setLeader(role: string, leader: boolean, holder?: string): void {
    const r = this.roleMap.get(role);
    if (!r) throw new Error(`no role ${role}`);
    r.leader = leader;
    r.holder = holder;
    this.hub.emit({ kind: 'leader', at: this.now(), role, leader, holder });
  }

  /** Emits a host event. */
  hostEvent(type: string, data: unknown): void {
    this.hub.emit({ kind: 'host', at: this.now(), type, data });
  }

  /** Listeners subscribed now. */
  get subscribers(): number {
    return this.hub.size;
  }
}
