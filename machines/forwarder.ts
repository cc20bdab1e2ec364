/**
 * The forwarder: carries the journal into etcd while it leads its role.
 *
 * follower ──ELECTED──▶ leader.draining ──done──▶ leader.idle ──KICK / poll / retry due──▶ leader.draining
 *    ▲                        │ etcd unavailable            ▲
 *    │                        ▼                             │
 *    └──DEPOSED──────── leader.backoff ──after backoff──────┘
 *                  leader.fenced (etcd refused the fence: asks the election to step down)
 *                  leader.refused (etcd refused this identity: `error` says why; drains again
 *                                  after refusedRetryMs, slow and bounded; KICKs wait for it)
 *
 * A KICK while draining is remembered and drains again at once. The election
 * is a child (`election`); STOP resigns it and ends in `stopped`.
 */
import { assign, sendTo, setup, fromPromise } from 'xstate';
import { electionMachine, type ElectionInput, type ElectionNotice, type Term } from './election.ts';
import { errorText, isNotLeader, isRefusal, refusalInfo, REFUSED_RETRY_MS, type RefusalInfo } from './refusal.ts';

/** Input of the forwarder machine. */
export interface ForwarderInput {
  election: ElectionInput;
  /** Safety-net poll while idle, in case a kick was lost. */
  pollIntervalMs: number;
  /** First backoff after etcd was unavailable (doubles, up to backoffMaxMs). */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Wait before draining again after etcd refused this identity. @default 5000 */
  refusedRetryMs?: number;
}

/** What one drain reports (see `src/drainer.ts`). */
export interface DrainOutput {
  keys: number;
  entries: number;
  retryInMs?: number;
}

export interface ForwarderContext extends ForwarderInput {
  term?: Term;
  kicked: boolean;
  failures: number;
  retryInMs?: number;
  lastError?: string;
  drains: number;
  keys: number;
  /** Why etcd refused the last drain, while `leader.refused`. */
  error?: RefusalInfo;
}

export type ForwarderEvent = ElectionNotice | { type: 'KICK' } | { type: 'STOP' };

export const forwarderMachine = setup({
  types: {
    context: {} as ForwarderContext,
    events: {} as ForwarderEvent,
    input: {} as ForwarderInput,
  },
  actors: {
    election: electionMachine,
    drain: fromPromise<DrainOutput, { term: Term }>(() => {
      throw new Error("forwarder actor 'drain' not provided");
    }),
  },
  guards: {
    kicked: ({ context }) => context.kicked,
    notLeader: (_, params: { error: unknown }) => isNotLeader(params.error),
    refused: (_, params: { error: unknown }) => isRefusal(params.error),
  },
  delays: {
    idleDelay: ({ context }) => Math.min(context.pollIntervalMs, context.retryInMs ?? Infinity),
    backoffDelay: ({ context }) =>
      Math.min(context.backoffMaxMs, context.backoffBaseMs * 2 ** Math.max(0, context.failures - 1)),
    refusedRetryDelay: ({ context }) => context.refusedRetryMs ?? REFUSED_RETRY_MS,
  },
}).createMachine({
  id: 'forwarder',
  context: ({ input }) => ({ ...input, kicked: false, failures: 0, drains: 0, keys: 0 }),
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
      on: {
        ELECTED: { target: 'leader', actions: assign({ term: ({ event }) => event.term, failures: 0 }) },
      },
    },
    leader: {
      initial: 'draining',
      on: {
        DEPOSED: { target: 'follower', actions: assign({ term: undefined, kicked: false }) },
      },
      states: {
        draining: {
          entry: assign({ kicked: false }),
          invoke: {
            src: 'drain',
            input: ({ context }) => ({ term: context.term! }),
            onDone: [
              {
                guard: 'kicked',
                target: 'draining',
                reenter: true,
                actions: assign({
                  failures: 0,
                  error: undefined,
                  drains: ({ context }) => context.drains + 1,
                  keys: ({ context, event }) => context.keys + event.output.keys,
                }),
              },
              {
                target: 'idle',
                actions: assign({
                  failures: 0,
                  error: undefined,
                  retryInMs: ({ event }) => event.output.retryInMs,
                  drains: ({ context }) => context.drains + 1,
                  keys: ({ context, event }) => context.keys + event.output.keys,
                }),
              },
            ],
            onError: [
              {
                guard: { type: 'notLeader', params: ({ event }) => ({ error: event.error }) },
                target: 'fenced',
              },
              {
                guard: { type: 'refused', params: ({ event }) => ({ error: event.error }) },
                target: 'refused',
                actions: assign({
                  failures: ({ context }) => context.failures + 1,
                  lastError: ({ event }) => errorText(event.error),
                  error: ({ event }) => refusalInfo(event.error),
                }),
              },
              {
                target: 'backoff',
                actions: assign({
                  failures: ({ context }) => context.failures + 1,
                  lastError: ({ event }) => errorText(event.error),
                }),
              },
            ],
          },
          on: { KICK: { actions: assign({ kicked: true }) } },
        },
        idle: {
          on: { KICK: 'draining' },
          after: { idleDelay: 'draining' },
        },
        backoff: {
          after: { backoffDelay: 'draining' },
        },
        refused: {
          after: { refusedRetryDelay: 'draining' },
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
