/**
 * The statechart export (`portwire machines`): every state and transition of
 * every machine appears, with valid targets, in both formats.
 */
import { describe, expect, it } from 'vitest';
import type { AnyStateMachine } from 'xstate';
import { machines } from '../machines/index.ts';
import { machineToJson, machineToMermaid, type ExportedState } from '../src/machine-export.ts';

/** Every state id of a machine, from XState's own definition. */
function stateIds(machine: AnyStateMachine): string[] {
  const out: string[] = [];
  const walk = (node: { id: string; states: Record<string, unknown> }) => {
    out.push(node.id);
    for (const child of Object.values(node.states)) walk(child as typeof node);
  };
  walk(machine.root as unknown as { id: string; states: Record<string, unknown> });
  return out;
}

function flatten(s: ExportedState): ExportedState[] {
  return [s, ...Object.values(s.states).flatMap(flatten)];
}

describe.each(Object.entries(machines))('%s machine export', (_name, machine) => {
  const json = machineToJson(machine);
  const all = flatten(json);

  it('has every state of the definition, and only those', () => {
    expect(all.map((s) => s.id).sort()).toEqual(stateIds(machine).sort());
  });

  it('has every event the definition handles, with targets that exist', () => {
    const ids = new Set(all.map((s) => s.id));
    const events = new Set(all.flatMap((s) => s.transitions.map((t) => t.event)));
    for (const t of all.flatMap((s) => s.transitions)) for (const target of t.targets) expect(ids.has(target), target).toBe(true);
    for (const type of machine.events) {
      if (type.startsWith('xstate.')) continue;
      expect(events.has(type), type).toBe(true);
    }
  });

  it('draws every state and transition in Mermaid', () => {
    const mermaid = machineToMermaid(machine);
    expect(mermaid.startsWith('stateDiagram-v2')).toBe(true);
    for (const s of all) expect(mermaid).toContain(s.id.replace(/[^A-Za-z0-9_]/g, '_'));
    const edges = all.flatMap((s) => s.transitions.flatMap((t) => t.targets)).length;
    expect(mermaid.split('\n').filter((l) => l.includes(' --> ') && !l.includes('[*]')).length).toBe(edges);
  });
});
