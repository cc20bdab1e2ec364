/**
 * The root of a runtime: starts each enabled role and restarts a crashed one
 * with exponential backoff.
 *
 * per role: init ──enabled──▶ running.active ──STOP──▶ running.stopping ──role done──▶ done
 *             │ disabled        │ role crashed
 *             ▼                 ▼
 *            done           restarting ──after restartDelay──▶ running
 *
 * Roles added by later features get a region of their own beside these.
 */
import { assign, sendTo, setup } from 'xstate';
import { forwarderMachine, type ForwarderInput } from './forwarder.ts';
import { resyncMachine, type ResyncInput } from './resync.ts';
import { returnWatcherMachine, type ReturnWatcherInput } from './return-watcher.ts';

/** Input of the supervisor machine: the input of each enabled role. */
export interface SupervisorInput {
  forwarder?: ForwarderInput;
  resync?: ResyncInput;
  returnWatcher?: ReturnWatcherInput;
  /** First restart delay of a crashed role (doubles, up to restartMaxMs). */
  restartBaseMs: number;
  restartMaxMs: number;
}

type Role = 'forwarder' | 'resync' | 'returnWatcher';

export interface SupervisorContext extends SupervisorInput {
  restarts: Record<Role, number>;
  lastCrash?: string;
}

export type SupervisorEvent = { type: 'KICK' } | { type: 'RESYNC' } | { type: 'STOP' };

const delay = (context: SupervisorContext, role: Role) =>
  Math.min(context.restartMaxMs, context.restartBaseMs * 2 ** Math.max(0, context.restarts[role] - 1));

export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    input: {} as SupervisorInput,
  },
  actors: { forwarder: forwarderMachine, resync: resyncMachine, returnWatcher: returnWatcherMachine },
  actions: {
    recordCrash: assign(({ context, event }, params: { role: Role }) => ({
      restarts: { ...context.restarts, [params.role]: context.restarts[params.role] + 1 },
      lastCrash: String((event as { error?: Error }).error?.message ?? event.type),
    })),
  },
  guards: {
    forwarderEnabled: ({ context }) => context.forwarder !== undefined,
    resyncEnabled: ({ context }) => context.resync !== undefined,
    returnWatcherEnabled: ({ context }) => context.returnWatcher !== undefined,
  },
  delays: {
    forwarderRestart: ({ context }) => delay(context, 'forwarder'),
    resyncRestart: ({ context }) => delay(context, 'resync'),
    returnWatcherRestart: ({ context }) => delay(context, 'returnWatcher'),
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input }) => ({ ...input, restarts: { forwarder: 0, resync: 0, returnWatcher: 0 } }),
  type: 'parallel',
  states: {
    forwarder: {
      initial: 'init',
      states: {
        init: { always: [{ guard: 'forwarderEnabled', target: 'running' }, { target: 'done' }] },
        running: {
          invoke: {
            id: 'forwarder',
            src: 'forwarder',
            input: ({ context }) => context.forwarder!,
            onDone: 'done',
            onError: { target: 'restarting', actions: { type: 'recordCrash', params: { role: 'forwarder' } } },
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
          after: { forwarderRestart: 'running' },
          on: { STOP: 'done' },
        },
        done: { type: 'final' },
      },
    },
    resync: {
      initial: 'init',
      states: {
        init: { always: [{ guard: 'resyncEnabled', target: 'running' }, { target: 'done' }] },
        running: {
          invoke: {
            id: 'resync',
            src: 'resync',
            input: ({ context }) => context.resync!,
            onDone: 'done',
            onError: { target: 'restarting', actions: { type: 'recordCrash', params: { role: 'resync' } } },
          },
          initial: 'active',
          states: {
            active: {
              on: {
                RESYNC: { actions: sendTo('resync', { type: 'RUN' }) },
                STOP: { target: 'stopping', actions: sendTo('resync', { type: 'STOP' }) },
              },
            },
            stopping: {},
          },
        },
        restarting: {
          after: { resyncRestart: 'running' },
          on: { STOP: 'done' },
        },
        done: { type: 'final' },
      },
    },
    returnWatcher: {
      initial: 'init',
      states: {
        init: { always: [{ guard: 'returnWatcherEnabled', target: 'running' }, { target: 'done' }] },
        running: {
          invoke: {
            id: 'returnWatcher',
            src: 'returnWatcher',
            input: ({ context }) => context.returnWatcher!,
            onDone: 'done',
            onError: { target: 'restarting', actions: { type: 'recordCrash', params: { role: 'returnWatcher' } } },
          },
          initial: 'active',
          states: {
            active: {
              on: { STOP: { target: 'stopping', actions: sendTo('returnWatcher', { type: 'STOP' }) } },
            },
            stopping: {},
          },
        },
        restarting: {
          after: { returnWatcherRestart: 'running' },
          on: { STOP: 'done' },
        },
        done: { type: 'final' },
      },
    },
  },
});
