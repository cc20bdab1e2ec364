/**
 * Every statechart of portwire, for the visualizer, the graph tests and
 * `portwire machines`.
 */
import { electionMachine } from './election.ts';
import { forwarderMachine } from './forwarder.ts';
import { supervisorMachine } from './supervisor.ts';
import { resyncMachine } from './resync.ts';
import { portMachine } from './port.ts';
import { returnWatcherMachine } from './return-watcher.ts';

export { electionMachine, forwarderMachine, resyncMachine, returnWatcherMachine, supervisorMachine };

/** All machines by name. */
export const machines = {
  supervisor: supervisorMachine,
  forwarder: forwarderMachine,
  resync: resyncMachine,
  returnWatcher: returnWatcherMachine,
  election: electionMachine,
  port: portMachine,
} as const;
