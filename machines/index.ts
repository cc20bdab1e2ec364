/**
 * Every statechart of portwire, for the visualizer, the graph tests and
 * `portwire machines`.
 */
import { electionMachine } from './election.ts';
import { forwarderMachine } from './forwarder.ts';
import { supervisorMachine } from './supervisor.ts';

export { electionMachine, forwarderMachine, supervisorMachine };

/** All machines by name. */
export const machines = {
  supervisor: supervisorMachine,
  forwarder: forwarderMachine,
  election: electionMachine,
} as const;
