/**
 * Remembered decisions of the port machine's initial transition equal the
 * machine's own, for generated inputs: any hosts, revisions, statuses and
 * durable records, including inputs that share a shape with earlier ones.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { portMachine, type PortInput, type PortStatus } from '../machines/port.ts';
import { PortDecisions } from '../src/port-decisions.ts';

const host = fc.constantFrom('compute-1', 'compute-10', 'compute-2', 'a', 'z-host', 'compute-1.example');
const rev = fc.integer({ min: 1, max: 60 });
const status = fc.constantFrom<PortStatus>('up', 'down', 'error');
const binding = fc.record({ host, rev });
const input: fc.Arbitrary<PortInput> = fc.record(
  {
    portId: fc.constantFrom('p-1', 'p-2'),
    stallMs: fc.constant(30_000),
    stallLeftMs: fc.option(fc.integer({ min: 0, max: 30_000 }), { nil: undefined }),
    facts: fc.record({
      bindings: fc.array(binding, { maxLength: 3 }),
      states: fc.array(fc.record({ host, rev, status }), { maxLength: 3 }),
    }),
    notified: fc.option(binding, { nil: undefined }),
    status: fc.option(status, { nil: undefined }),
  },
  { requiredKeys: ['portId', 'stallMs', 'facts'] },
);

describe('port decisions', () => {
  it('remembered by shape, equal to what the machine decides for the exact input', () => {
    const memo = new PortDecisions(portMachine);
    const direct = new PortDecisions(portMachine);
    fc.assert(
      fc.property(input, (i) => {
        expect(memo.decide(i)).toEqual(direct.direct(i));
      }),
      { numRuns: 5000, seed: 7 },
    );
    // the point of it: far fewer shapes than inputs
    expect(memo.size).toBeGreaterThan(10);
    expect(memo.size).toBeLessThan(5000);
  });

  it('maps announcements back to the real hosts and revisions', () => {
    const memo = new PortDecisions(portMachine);
    const a = memo.decide({ portId: 'p', stallMs: 1000, facts: { bindings: [{ host: 'h-b', rev: 50 }], states: [{ host: 'h-b', rev: 70, status: 'down' }] } });
    const b = memo.decide({ portId: 'q', stallMs: 1000, facts: { bindings: [{ host: 'h-a', rev: 5 }], states: [{ host: 'h-a', rev: 9, status: 'down' }] } });
    expect(memo.size).toBe(1);
    expect(a.actions).toEqual([{ type: 'announceBound', params: { binding: { host: 'h-b', rev: 50 }, status: 'down' } }]);
    expect(b.actions).toEqual([{ type: 'announceBound', params: { binding: { host: 'h-a', rev: 5 }, status: 'down' } }]);
    expect(b).toMatchObject({ value: 'active', notified: { host: 'h-a', rev: 5 }, status: 'down' });
  });
});
