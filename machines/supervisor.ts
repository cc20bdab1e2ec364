/**
 * The root of a runtime: starts each role and restarts a crashed one with
 * exponential backoff.
 *
 * roles.forwarder: running.active ──STOP──▶ running.stopping ──role done──▶ done
 *                     │ role crashed
 *                     ▼
 *                  restarting ──after restartDelay──▶ running
 *
 * Roles added by later features (return watcher, resync) get a region of
 * their own beside `forwarder`.
 */
import { assign, sendTo, setup } from 'xstate';
import { forwarderMachine, type ForwarderInput } from './forwarder.ts';

/** Input of the supervisor machine. */
export interface SupervisorInput {
  forwarder: ForwarderInput;
  /** First restart delay of a crashed role (doubles, up to restartMaxMs). */
  restartBaseMs: number;
  restartMaxMs: number;
}

export interface SupervisorContext extends SupervisorInput {
  restarts: { forwarder: number };
  lastCrash?: string;
}

export type SupervisorEvent = { type: 'KICK' } | { type: 'STOP' };

export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    input: {} as SupervisorInput,
  },
  actors: { forwarder: forwarderMachine },
  delays: {
    restartDelay: ({ context }) =>
      Math.min(context.restartMaxMs, context.restartBaseMs * 2 ** Math.max(0, context.restarts.forwarder - 1)),
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input }) => ({ ...input, restarts: { forwarder: 0 } }),
  type: 'parallel',
  states: {
    forwarder: {
      initial: 'running',
      states: {
        running: {
          invoke: {
            id: 'forwarder',
            src: 'forwarder',
            input: ({ context }) => context.forwarder,
            onDone: 'done',
            onError: {
              target: 'restarting',
              actions: assign({
                restarts: ({ context }) => ({ forwarder: context.restarts.forwarder + 1 }),
                lastCrash: ({ event }) => String((event.error as Error)?.message ?? event.error),
              }),
            },
          },
          initial: 'active',
          states: {
            active: {
              on: {
                KICK: { actions: sendTo('forwarder', { type: 'KICK' }) },
                STOP: { target: 'stopping', actions: sendTo('forwarder', { type: 'STOP' }) },
              },
            },
            stopping: {},
          },
        },
        restarting: {
          after: { restartDelay: 'running' },
          on: { STOP: 'done' },
        },
        done: { type: 'final' },
      },
    },
  },
});
