/**
 * Exports statecharts from their definitions, for docs, reviews and
 * `portwire machines --format mermaid|json`: states (nesting, parallel
 * regions, initial and final states), transitions with their events, guards
 * and delays, and the actors each state invokes.
 */
import type { AnyStateMachine } from 'xstate';

/** One state of an exported chart. */
export interface ExportedState {
  id: string;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  initial?: string;
  invokes: string[];
  transitions: { event: string; targets: string[]; guard?: string }[];
  states: Record<string, ExportedState>;
}

interface Node {
  id: string;
  key: string;
  type: ExportedState['type'];
  states: Record<string, Node>;
  initial?: { target: Node[] };
  transitions: Map<string, { eventType: string; target?: Node[]; guard?: unknown }[]>;
  always?: { target?: Node[]; guard?: unknown }[];
  invoke: { src: unknown; id: string }[];
}

/** A readable name for XState's internal event types. */
function eventName(type: string, actors: Map<string, string>): string {
  let m = /^xstate\.after\.(.+?)\./.exec(type);
  if (m) return `after ${m[1]}`;
  m = /^xstate\.done\.actor\.(.+)$/.exec(type);
  if (m) return `done: ${actors.get(m[1]) ?? m[1]}`;
  m = /^xstate\.error\.actor\.(.+)$/.exec(type);
  if (m) return `error: ${actors.get(m[1]) ?? m[1]}`;
  if (type.startsWith('xstate.done.state.')) return 'done';
  return type;
}

function guardName(guard: unknown): string | undefined {
  if (!guard) return undefined;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'object' && guard !== null && 'type' in guard) return String((guard as { type: unknown }).type);
  return 'guard';
}

const srcName = (i: { src: unknown; id: string }) => (typeof i.src === 'string' ? i.src : i.id);

function exportNode(node: Node): ExportedState {
  const actors = new Map(node.invoke.map((i) => [i.id, srcName(i)]));
  const transitions: ExportedState['transitions'] = [];
  for (const [, defs] of node.transitions) {
    for (const d of defs) {
      // a transition without a target acts in place (e.g. remembers a KICK): drawn as a self-loop
      const targets = d.target?.length ? d.target.map((t) => t.id) : [node.id];
      transitions.push({ event: eventName(d.eventType, actors), targets, guard: guardName(d.guard) });
    }
  }
  for (const d of node.always ?? []) {
    transitions.push({ event: 'always', targets: (d.target ?? []).map((t) => t.id), guard: guardName(d.guard) });
  }
  const states: Record<string, ExportedState> = {};
  for (const [k, child] of Object.entries(node.states)) states[k] = exportNode(child);
  return {
    id: node.id,
    type: node.type,
    initial: node.initial?.target[0]?.key,
    invokes: node.invoke.map(srcName),
    transitions,
    states,
  };
}

/** A machine's chart as plain data. */
export function machineToJson(machine: AnyStateMachine): ExportedState {
  return exportNode(machine.root as unknown as Node);
}

const mid = (id: string) => id.replace(/[^A-Za-z0-9_]/g, '_');

function mermaidState(s: ExportedState, lines: string[], indent: string): void {
  const children = Object.values(s.states);
  if (children.length > 0) {
    lines.push(`${indent}state ${mid(s.id)} {`);
    if (s.type === 'parallel') {
      children.forEach((c, i) => {
        if (i > 0) lines.push(`${indent}  --`);
        mermaidState(c, lines, `${indent}  `);
      });
    } else {
      if (s.initial) lines.push(`${indent}  [*] --> ${mid(`${s.id}.${s.initial}`)}`);
      for (const c of children) mermaidState(c, lines, `${indent}  `);
    }
    lines.push(`${indent}}`);
  } else {
    lines.push(`${indent}state "${s.id.split('.').pop()}" as ${mid(s.id)}`);
  }
  if (s.type === 'final') lines.push(`${indent}${mid(s.id)} --> [*]`);
  if (s.invokes.length > 0) lines.push(`${indent}note right of ${mid(s.id)} : invokes ${s.invokes.join(', ')}`);
}

function mermaidTransitions(s: ExportedState, lines: string[]): void {
  for (const t of s.transitions) {
    const label = t.guard ? `${t.event} [${t.guard}]` : t.event;
    for (const target of t.targets) lines.push(`  ${mid(s.id)} --> ${mid(target)} : ${label}`);
  }
  for (const c of Object.values(s.states)) mermaidTransitions(c, lines);
}

/** A machine's chart as a Mermaid `stateDiagram-v2`. */
export function machineToMermaid(machine: AnyStateMachine): string {
  const chart = machineToJson(machine);
  const lines = ['stateDiagram-v2'];
  mermaidState(chart, lines, '  ');
  mermaidTransitions(chart, lines);
  return lines.join('\n');
}
