/**
 * The port machine's initial transition as a decision, remembered by the
 * shape of its input.
 *
 * The machine decides from its input only through host equality, host order
 * (migrating bindings are sorted by host) and revision order (a state key
 * confirms a binding when its revision is higher). So two inputs that differ
 * only by an order-preserving renaming of hosts and revisions get the same
 * decision, renamed. `decide` renames the input to a canonical one (hosts
 * `h000`, `h001`… in sorted order; revisions ranked 1, 2…), runs the machine's
 * own `getInitialSnapshot` once per canonical input, and maps the result back.
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

/** A renaming of an input's hosts and revisions, both ways. */
interface Renaming {
  host: Map<string, string>;
  rev: Map<number, number>;
  hostBack: string[];
  revBack: number[];
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
    const canonical: PortInput = {
      portId: '',
      stallMs: input.stallMs,
      facts: {
        bindings: input.facts.bindings.map((b) => ({ host: r.host.get(b.host)!, rev: r.rev.get(b.rev)! })),
        states: input.facts.states.map((s) => ({ host: r.host.get(s.host)!, rev: r.rev.get(s.rev)!, status: s.status })),
      },
      notified: input.notified && { host: r.host.get(input.notified.host)!, rev: r.rev.get(input.notified.rev)! },
      status: input.status,
    };
    const key = JSON.stringify([canonical.facts, canonical.notified ?? null, canonical.status ?? null, input.stallLeftMs ?? null]);
    let d = this.memo.get(key);
    if (!d) {
      d = this.direct(input.stallLeftMs === undefined ? canonical : { ...canonical, stallLeftMs: input.stallLeftMs });
      this.memo.set(key, d);
    }
    const back = (b: BindingId | undefined): BindingId | undefined =>
      b && { host: r.hostBack[Number(b.host.slice(1))], rev: r.revBack[b.rev - 1] };
    return {
      value: d.value,
      timer: d.timer,
      actions: d.actions.map((a) => ({ type: a.type, params: mapBindings(a.params, back) })),
      binding: back(d.binding),
      notified: back(d.notified),
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

/** Hosts in sorted order and revisions by rank, over everything the input names. */
function renaming(input: PortInput): Renaming {
  const hosts = new Set<string>();
  const revs = new Set<number>();
  const add = (x: { host: string; rev: number }) => {
    hosts.add(x.host);
    revs.add(x.rev);
  };
  input.facts.bindings.forEach(add);
  input.facts.states.forEach(add);
  if (input.notified) add(input.notified);
  const hostBack = [...hosts].sort();
  const revBack = [...revs].sort((a, b) => a - b);
  return {
    host: new Map(hostBack.map((h, i) => [h, `h${String(i).padStart(3, '0')}`])),
    rev: new Map(revBack.map((v, i) => [v, i + 1])),
    hostBack,
    revBack,
  };
}

/** `params` with every `{ host, rev }` in it mapped by `back` (announcement parameters are shallow). */
function mapBindings(params: unknown, back: (b: BindingId | undefined) => BindingId | undefined): unknown {
  if (params === null || typeof params !== 'object') return params;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    out[k] = v !== null && typeof v === 'object' && 'host' in v && 'rev' in v ? back(v as BindingId) : v;
  }
  return out;
}

