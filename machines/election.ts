/**
 * Leader election for one role, on an etcd lease.
 *
 * campaigning ──won──▶ leading ──keepalive missed past renewDeadline / LOST / STEP_DOWN──▶ releasing ─▶ waiting ─▶ campaigning
 *      │ error                │ STOP
 *      ▼                      ▼
 *   waiting               resigning ─▶ stopped
 *      │ etcd refused this identity (credentials, certificate, permission)
 *      ▼
 *   refused ──after refusedRetryMs (slow)──▶ campaigning        (`error` says why)
 *
 * While leading, a watchdog expects a successful keepalive (KEEPALIVE_OK from
 * the `keepalive` actor) within `renewDeadlineMs`, shorter than the lease TTL:
 * the leader steps down before etcd can expire its key and elect another.
 * Every write made under leadership is fenced by the term's token (the create
 * revision of the election key), so a leader that steps down late is still
 * refused by etcd.
 */
import { assign, sendParent, setup, fromPromise, fromCallback, type EventObject } from 'xstate';
import { errorText, isRefusal, refusalInfo, REFUSED_RETRY_MS, type RefusalInfo } from './refusal.ts';

/** A leadership term: the election key's create revision (the fence token) and its lease. */
export interface Term {
  token: string;
  leaseId: string;
}

/** Input of the election machine. */
export interface ElectionInput {
  role: string;
  /** Step down when no keepalive succeeded for this long (must be < the lease TTL). */
  renewDeadlineMs: number;
  /** Wait before campaigning again after a failure or a loss. */
  retryMs: number;
  /** Wait before campaigning again after etcd refused this identity. @default 5000 */
  refusedRetryMs?: number;
}

export interface ElectionContext extends ElectionInput {
  term?: Term;
  failures: number;
  lastError?: string;
  /** Why etcd refused this identity, while `refused`. */
  error?: RefusalInfo;
}

export type ElectionEvent =
  | { type: 'KEEPALIVE_OK' }
  | { type: 'LOST'; reason: string }
  | { type: 'STEP_DOWN'; reason: string }
  | { type: 'STOP' };

/** Events the election sends to its parent role. */
export type ElectionNotice =
  | { type: 'ELECTED'; term: Term }
  | { type: 'DEPOSED'; reason: string };

const notProvided = (name: string) => () => {
  throw new Error(`election actor '${name}' not provided`);
};

export const electionMachine = setup({
  types: {
    context: {} as ElectionContext,
    events: {} as ElectionEvent,
    input: {} as ElectionInput,
  },
  actors: {
    campaign: fromPromise<Term, { role: string }>(notProvided('campaign')),
    keepalive: fromCallback<EventObject, { role: string; term: Term }>(notProvided('keepalive')),
    release: fromPromise<void, { role: string; term?: Term }>(notProvided('release')),
  },
  actions: {
    announceElected: sendParent(({ context }): ElectionNotice => ({ type: 'ELECTED', term: context.term! })),
    announceDeposed: sendParent(
      (_, params: { reason: string }): ElectionNotice => ({ type: 'DEPOSED', reason: params.reason }),
    ),
  },
  guards: {
    refused: (_, params: { error: unknown }) => isRefusal(params.error),
  },
  delays: {
    renewDeadline: ({ context }) => context.renewDeadlineMs,
    retryDelay: ({ context }) => context.retryMs,
    refusedRetryDelay: ({ context }) => context.refusedRetryMs ?? REFUSED_RETRY_MS,
  },
}).createMachine({
  id: 'election',
  context: ({ input }) => ({ ...input, failures: 0 }),
  initial: 'campaigning',
  states: {
    campaigning: {
      invoke: {
        src: 'campaign',
        input: ({ context }) => ({ role: context.role }),
        onDone: {
          target: 'leading',
          actions: assign({ term: ({ event }) => event.output, failures: 0, lastError: undefined, error: undefined }),
        },
        onError: [
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
            target: 'waiting',
            actions: assign({
              failures: ({ context }) => context.failures + 1,
              lastError: ({ event }) => errorText(event.error),
              error: undefined,
            }),
          },
        ],
      },
      on: { STOP: 'stopped' },
    },
    waiting: {
      after: { retryDelay: 'campaigning' },
      on: { STOP: 'stopped' },
    },
    refused: {
      after: { refusedRetryDelay: 'campaigning' },
      on: { STOP: 'stopped' },
    },
    leading: {
      entry: 'announceElected',
      invoke: {
        src: 'keepalive',
        input: ({ context }) => ({ role: context.role, term: context.term! }),
      },
      initial: 'renewed',
      states: {
        renewed: {
          after: { renewDeadline: '#election.releasing.missedKeepalive' },
          on: { KEEPALIVE_OK: { target: 'renewed', reenter: true } },
        },
      },
      on: {
        LOST: {
          target: 'releasing',
          actions: assign({ lastError: ({ event }) => event.reason }),
        },
        STEP_DOWN: {
          target: 'releasing',
          actions: assign({ lastError: ({ event }) => event.reason }),
        },
        STOP: 'resigning',
      },
    },
    releasing: {
      initial: 'requested',
      states: {
        requested: { entry: { type: 'announceDeposed', params: ({ context }) => ({ reason: context.lastError ?? 'lost' }) } },
        missedKeepalive: {
          entry: [
            assign({ lastError: 'no keepalive within the renew deadline' }),
            { type: 'announceDeposed', params: { reason: 'no keepalive within the renew deadline' } },
          ],
        },
      },
      invoke: {
        src: 'release',
        input: ({ context }) => ({ role: context.role, term: context.term }),
        onDone: { target: 'waiting', actions: assign({ term: undefined }) },
        onError: { target: 'waiting', actions: assign({ term: undefined }) },
      },
      on: { STOP: 'stopped' },
    },
    resigning: {
      entry: { type: 'announceDeposed', params: { reason: 'stopping' } },
      invoke: {
        src: 'release',
        input: ({ context }) => ({ role: context.role, term: context.term }),
        onDone: { target: 'stopped', actions: assign({ term: undefined }) },
        onError: { target: 'stopped', actions: assign({ term: undefined }) },
      },
    },
    stopped: { type: 'final' },
  },
});
