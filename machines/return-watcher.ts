/**
 * The return watcher: keeps every process's view of what agents report
 * (`state/`) and what is bound (`nodes/`), and, in the process that leads the
 * role, drives the port actors that notify the host.
 *
 * Two parallel regions:
 *
 *   role:    follower ──ELECTED──▶ leader ──DEPOSED──▶ follower
 *   stream:  syncing.listing ──LISTED──▶ syncing.watching
 *               ▲      │ FAULT                 │ FAULT
 *               │      ▼                       ▼
 *               └── backoff (after backoffDelay, growing with failures) ◀┘
 *               └── refused (a FAULT whose `code` is a refusal: etcd refused this
 *                   identity; `error` says why; after refusedRetryMs, slow and bounded)
 *
 * The stream is a consistent list at one revision, then a watch from the
 * next; a compacted, broken or silent watch ends it with FAULT and it lists
 * again (level-triggered: nothing is lost, actors see the same facts twice at
 * most). Entering `leader` runs `lead` (the registry starts the port actors),
 * leaving it runs `follow`. The election is a child (`election`); STOP resigns.
 */
import { assign, sendTo, setup, fromCallback, type EventObject } from 'xstate';
import { electionMachine, type ElectionInput, type ElectionNotice, type Term } from './election.ts';
import { isRefusalCode, REFUSED_RETRY_MS, type RefusalInfo } from './refusal.ts';

/** Input of the return-watcher machine. */
export interface ReturnWatcherInput {
  election: ElectionInput;
  /** First relist delay after a fault (doubles per consecutive fault, up to backoffMaxMs). */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Wait before listing again after etcd refused this identity. @default 5000 */
  refusedRetryMs?: number;
}

/** Why the last stream ended. */
export interface StreamFault {
  reason: string;
  detail?: string;
  /** The portwire error code of the failure, when known (e.g. `ETCD_PERMISSION`). */
  code?: string;
  /** Its message, when known. */
  error?: string;
}

export interface ReturnWatcherContext extends ReturnWatcherInput {
  term?: Term;
  /** Consecutive faults since the last successful list. */
  failures: number;
  lists: number;
  revision?: number;
  lastFault?: StreamFault;
  /** Why etcd refused the stream, while `stream.refused`. */
  error?: RefusalInfo;
}

export type ReturnWatcherEvent =
  | ElectionNotice
  | { type: 'LISTED'; revision: number }
  | { type: 'FAULT'; fault: StreamFault }
  | { type: 'STOP' };

export const returnWatcherMachine = setup({
  types: {
    context: {} as ReturnWatcherContext,
    events: {} as ReturnWatcherEvent,
    input: {} as ReturnWatcherInput,
  },
  actors: {
    election: electionMachine,
    /** Lists, then watches; sends LISTED once and FAULT when the stream ends. */
    stream: fromCallback<EventObject, { attempt: number }>(() => {
      throw new Error("return-watcher actor 'stream' not provided");
    }),
  },
  actions: {
    lead: (_, _params: { term: Term }) => undefined,
    follow: () => undefined,
  },
  guards: {
    refusedFault: (_, params: { fault: StreamFault }) => isRefusalCode(params.fault.code),
  },
  delays: {
    backoffDelay: ({ context }) =>
      Math.min(context.backoffMaxMs, context.backoffBaseMs * 2 ** Math.max(0, context.failures - 1)),
    refusedRetryDelay: ({ context }) => context.refusedRetryMs ?? REFUSED_RETRY_MS,
  },
}).createMachine({
  id: 'return-watcher',
  context: ({ input }) => ({ ...input, failures: 0, lists: 0 }),
  invoke: {
    id: 'election',
    src: 'election',
    input: ({ context }) => context.election,
    onDone: '.stopped',
    onError: '.stopped',
  },
  initial: 'running',
  states: {
    running: {
      type: 'parallel',
      states: {
        role: {
          initial: 'follower',
          states: {
            follower: {
              on: { ELECTED: { target: 'leader', actions: assign({ term: ({ event }) => event.term }) } },
            },
            leader: {
              entry: { type: 'lead', params: ({ context }) => ({ term: context.term! }) },
              exit: 'follow',
              on: { DEPOSED: { target: 'follower', actions: assign({ term: undefined }) } },
            },
          },
        },
        stream: {
          initial: 'syncing',
          states: {
            syncing: {
              invoke: { src: 'stream', input: ({ context }) => ({ attempt: context.lists + context.failures }) },
              initial: 'listing',
              states: {
                listing: {
                  on: {
                    LISTED: {
                      target: 'watching',
                      actions: assign({
                        failures: 0,
                        error: undefined,
                        lists: ({ context }) => context.lists + 1,
                        revision: ({ event }) => event.revision,
                      }),
                    },
                  },
                },
                watching: {},
              },
              on: {
                FAULT: [
                  {
                    guard: { type: 'refusedFault', params: ({ event }) => ({ fault: event.fault }) },
                    target: 'refused',
                    actions: assign({
                      failures: ({ context }) => context.failures + 1,
                      lastFault: ({ event }) => event.fault,
                      error: ({ event }) => ({ code: event.fault.code!, message: event.fault.error ?? event.fault.reason }),
                    }),
                  },
                  {
                    target: 'backoff',
                    actions: assign({
                      failures: ({ context }) => context.failures + 1,
                      lastFault: ({ event }) => event.fault,
                    }),
                  },
                ],
              },
            },
            backoff: {
              after: { backoffDelay: 'syncing' },
            },
            refused: {
              after: { refusedRetryDelay: 'syncing' },
            },
          },
        },
      },
      on: {
        STOP: { target: 'stopping', actions: sendTo('election', { type: 'STOP' }) },
      },
    },
    stopping: {},
    stopped: { type: 'final' },
  },
});
