/**
 * The port machine's initial transition as a decision, remembered by the
 * shape of its input.
 *
 * The machine decides from its input only through host equality, host order
 * (migrating bindings are sorted by host) and revision order (a state key
 * confirms a binding when its revision is higher). So two inputs that differ
 * only by an order-preserving renaming of hosts and revisions get the same
 * decision, renamed. `decide` keys the memo by the input's shape (hosts by
 * sorted index, revisions by rank); the first time a shape is seen it renames
 * the input to a canonical one (hosts `h000`, `h001`… in sorted order;
 * revisions ranked 1, 2…) and runs the machine's own `getInitialSnapshot`
 * on it. The decision is mapped back to the input's hosts and revisions.
 * A settled port costs a map lookup instead of a macrostep (36 KB of garbage).
 */
import { createActor, type ActorScope, type ExecutableActionObject } from 'xstate';
import type { BindingId, PortInput, PortStatus, portMachine } from '../machines/port.ts';

/** What the initial transition from an input comes to. */
export interface PortDecision {
  /** The state the port lands in. */
  value: string;
  /** The announcements to make, in order, with their parameters. */
  actions: { type: string; params: unknown }[];
  /** True when the state runs a timer (the stall, in `wired`). */
  timer: boolean;
  /** The machine's context after the transition. */
  binding: BindingId | undefined;
  notified: BindingId | undefined;
  status: PortStatus | undefined;
}

/** The hosts an input names, sorted, and its revisions, ascending: a canonical host or revision is its index. */
interface Renaming {
  hosts: string[];
  revs: number[];
}

/** Makes and remembers decisions for one (provided) port machine. */
export class PortDecisions {
  private readonly memo = new Map<string, PortDecision>();
  private readonly collected: ExecutableActionObject[] = [];
  private scope?: ActorScope<never, never>;

  constructor(private readonly machine: typeof portMachine) {}

  /** Number of distinct input shapes seen. */
  get size(): number {
    return this.memo.size;
  }

  /** The decision for `input`, from the memo when its shape was seen before. */
  decide(input: PortInput): PortDecision {
    const r = renaming(input);
    const { facts, notified } = input;
    // the shape: hosts by sorted index, revisions by rank
    let key = '';
    for (const b of facts.bindings) key += `b${r.hosts.indexOf(b.host)}.${r.revs.indexOf(b.rev)};`;
    for (const x of facts.states) key += `s${r.hosts.indexOf(x.host)}.${r.revs.indexOf(x.rev)}.${x.status};`;
    if (notified) key += `n${r.hosts.indexOf(notified.host)}.${r.revs.indexOf(notified.rev)};`;
    key += input.status ?? '';
    let d = this.memo.get(key);
    if (!d) {
      d = this.direct(canonicalInput(input, r));
      this.memo.set(key, d);
    }
    return {
      value: d.value,
      timer: d.timer,
      actions: d.actions.map((a) => ({ type: a.type, params: mapBindings(a.params, r) })),
      binding: back(d.binding, r),
      notified: back(d.notified, r),
      status: d.status,
    };
  }

  /** The decision, computed by the machine for exactly this input (no memo). */
  direct(input: PortInput): PortDecision {
    this.collected.length = 0;
    const snap = this.machine.getInitialSnapshot(this.inertScope() as never, input);
    const actions = this.collected.splice(0);
    return {
      value: String(snap.value),
      timer: actions.some((a) => a.type === 'xstate.raise'),
      actions: actions.filter((a) => a.type !== 'xstate.raise').map((a) => ({ type: a.type, params: a.params })),
      binding: snap.context.binding,
      notified: snap.context.notified,
      status: snap.context.status,
    };
  }

  /**
   * What xstate's `initialTransition` does, with one scope for every call: an
   * actor that is never started, whose executor collects the actions instead
   * of running them. The port machine spawns no children, so nothing
   * registers in the scope's system.
   */
  private inertScope(): ActorScope<never, never> {
    if (this.scope) return this.scope;
    const self = createActor(this.machine, {
      input: { portId: '', facts: { bindings: [], states: [] }, stallMs: 0 },
    }) as unknown as ActorScope<never, never>['self'];
    this.scope = {
      self,
      id: '',
      sessionId: '',
      system: self.system,
      logger: () => {},
      defer: () => {},
      emit: () => {},
      stopChild: () => {},
      actionExecutor: (action) => void this.collected.push(action),
    } as ActorScope<never, never>;
    return this.scope;
  }
}

/** Hosts in sorted order and revisions by rank, over everything the input names (a few of each). */
function renaming(input: PortInput): Renaming {
  const hosts: string[] = [];
  const revs: number[] = [];
  for (const list of [input.facts.bindings, input.facts.states, input.notified ? [input.notified] : []]) {
    for (const x of list) {
      if (!hosts.includes(x.host)) hosts.push(x.host);
      if (!revs.includes(x.rev)) revs.push(x.rev);
    }
  }
  hosts.sort();
  revs.sort((a, b) => a - b);
  return { hosts, revs };
}

/**
 * The input renamed: hosts `h000`, `h001`… in sorted order, revisions ranked
 * 1, 2…; the port id and `stallLeftMs` left out (it only sets how long the
 * stall timer waits, which a decision does not hold).
 */
function canonicalInput(input: PortInput, r: Renaming): PortInput {
  const host = (h: string) => `h${String(r.hosts.indexOf(h)).padStart(3, '0')}`;
  const rev = (v: number) => r.revs.indexOf(v) + 1;
  return {
    portId: '',
    stallMs: input.stallMs,
    facts: {
      bindings: input.facts.bindings.map((b) => ({ host: host(b.host), rev: rev(b.rev) })),
      states: input.facts.states.map((x) => ({ host: host(x.host), rev: rev(x.rev), status: x.status })),
    },
    notified: input.notified && { host: host(input.notified.host), rev: rev(input.notified.rev) },
    status: input.status,
  };
}

/** A canonical binding mapped back to the input's host and revision. */
function back(b: BindingId | undefined, r: Renaming): BindingId | undefined {
  return b && { host: r.hosts[Number(b.host.slice(1))], rev: r.revs[b.rev - 1] };
}

/** `params` with every `{ host, rev }` in it mapped {@link back} (announcement parameters are shallow). */
function mapBindings(params: unknown, r: Renaming): unknown {
  if (params === null || typeof params !== 'object') return params;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    out[k] = v !== null && typeof v === 'object' && 'host' in v && 'rev' in v ? back(v as BindingId, r) : v;
  }
  return out;
}
