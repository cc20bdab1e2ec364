/**
 * Resync: reconciles etcd with the desired state while this process leads
 * the `resync` role.
 *
 * follower ──ELECTED──▶ leader.running ──done──▶ leader.waiting ──after interval / RUN──▶ leader.running
 *    ▲                        │ error                    ▲
 *    └──DEPOSED───────────────┴──▶ leader.waiting ───────┘
 *
 * A run starts on gaining leadership, then periodically (the provided
 * `interval` delay adds jitter), and on demand (RUN). A RUN while running is
 * remembered and runs again when the current run ends. The election is a
 * child (`election`); STOP resigns it and ends in `stopped`.
 */
import { assign, sendTo, setup, fromPromise } from 'xstate';
import { electionMachine, type ElectionInput, type ElectionNotice, type Term } from './election.ts';
import { errorText, isNotLeader, isRefusal, refusalInfo, type RefusalInfo } from './refusal.ts';

/** Input of the resync machine. */
export interface ResyncInput {
  election: ElectionInput;
  /** Period between runs. */
  intervalMs: number;
}

/** What one run reports (see `src/resync.ts`). */
export interface ResyncOutput {
  scanned: number;
  missing: number;
  extra: number;
  changed: number;
  repaired: number;
  conflicts: number;
}

export interface ResyncContext extends ResyncInput {
  term?: Term;
  pending: boolean;
  runs: number;
  lastReport?: ResyncOutput;
  lastError?: string;
  /** Why etcd refused the last run (credentials, certificate, permission); cleared by a run that succeeds. */
  error?: RefusalInfo;
}

export type ResyncEvent = ElectionNotice | { type: 'RUN' } | { type: 'STOP' };

export const resyncMachine = setup({
  types: {
    context: {} as ResyncContext,
    events: {} as ResyncEvent,
    input: {} as ResyncInput,
  },
  actors: {
    election: electionMachine,
    resync: fromPromise<ResyncOutput, { term: Term }>(() => {
      throw new Error("resync actor 'resync' not provided");
    }),
  },
  guards: {
    pending: ({ context }) => context.pending,
    notLeader: (_, params: { error: unknown }) => isNotLeader(params.error),
  },
  delays: {
    interval: ({ context }) => context.intervalMs,
  },
}).createMachine({
  id: 'resync',
  context: ({ input }) => ({ ...input, pending: false, runs: 0 }),
  invoke: {
    id: 'election',
    src: 'election',
    input: ({ context }) => context.election,
    onDone: '.stopped',
    onError: '.stopped',
  },
  initial: 'follower',
  states: {
    follower: {
      on: { ELECTED: { target: 'leader', actions: assign({ term: ({ event }) => event.term }) } },
    },
    leader: {
      initial: 'running',
      on: { DEPOSED: { target: 'follower', actions: assign({ term: undefined, pending: false }) } },
      states: {
        running: {
          entry: assign({ pending: false }),
          invoke: {
            src: 'resync',
            input: ({ context }) => ({ term: context.term! }),
            onDone: [
              {
                guard: 'pending',
                target: 'running',
                reenter: true,
                actions: assign({ runs: ({ context }) => context.runs + 1, lastReport: ({ event }) => event.output }),
              },
              {
                target: 'waiting',
                actions: assign({
                  runs: ({ context }) => context.runs + 1,
                  lastReport: ({ event }) => event.output,
                  error: undefined,
                }),
              },
            ],
            onError: [
              {
                guard: { type: 'notLeader', params: ({ event }) => ({ error: event.error }) },
                target: 'fenced',
              },
              {
                target: 'waiting',
                actions: assign({
                  lastError: ({ event }) => errorText(event.error),
                  error: ({ event }) => (isRefusal(event.error) ? refusalInfo(event.error) : undefined),
                }),
              },
            ],
          },
          on: { RUN: { actions: assign({ pending: true }) } },
        },
        waiting: {
          on: { RUN: 'running' },
          after: { interval: 'running' },
        },
        fenced: {
          entry: sendTo('election', { type: 'STEP_DOWN', reason: 'etcd refused the fence' }),
        },
      },
    },
    stopping: {},
    stopped: { type: 'final' },
  },
  on: {
    STOP: { target: '.stopping', actions: sendTo('election', { type: 'STOP' }) },
  },
});
