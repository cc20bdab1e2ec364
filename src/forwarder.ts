/**
 * The forwarder machine provided with its implementations: the etcd election
 * and the drain (see `drainer.ts`). A new term starts the drain from the
 * journal's head; the first drain of a process reads etcd's txn-op limit
 * unless it was configured.
 */
import { fromPromise } from 'xstate';
import type { Logger } from 'pino';
import { forwarderMachine, type DrainOutput } from '../machines/forwarder.ts';
import type { Term } from '../machines/election.ts';
import { Drainer, type DrainerDeps } from './drainer.ts';
import { etcdElection, type ElectionDeps } from './election.ts';
import { probeMaxTxnOps, TXN_OPS_PROBE } from './etcd.ts';

/** The role name of the forwarder (its election key is `election/forwarder`). */
export const FORWARDER_ROLE = 'forwarder';

/** What the forwarder needs. */
export interface ForwarderDeps {
  election: ElectionDeps;
  drainer: Omit<DrainerDeps, 'log'>;
  /** ops per txn when configured; read from the server otherwise */
  maxTxnOps?: number;
  log: Logger;
  random: () => number;
}

/**
 * Builds the forwarder machine provided with etcd, the journal and the pool;
 * `settled()`, which resolves once the last drain started has finished (a
 * stopped actor abandons its promise; the pool must outlive it); and
 * `takesAppends()` (see {@link Drainer.takesAppends}).
 */
export function etcdForwarder(deps: ForwarderDeps) {
  const drainer = new Drainer({ ...deps.drainer, log: deps.log });
  let maxOps = deps.maxTxnOps;
  const probe = async (): Promise<number> => {
    const probeKey = deps.election.keys.electionKey(TXN_OPS_PROBE);
    const n = await probeMaxTxnOps(deps.drainer.client, { timeoutMs: deps.drainer.limits.callTimeoutMs, probeKey });
    deps.log.info({ maxTxnOps: n }, 'read txn op limit from etcd');
    return n;
  };
  // read the limit early, while the election runs; a failure is retried at the first drain
  let probing: Promise<number | undefined> | undefined =
    maxOps === undefined ? probe().catch(() => undefined) : undefined;
  const drain = fromPromise<DrainOutput, { term: Term }>(async ({ input, signal }) => {
    // one drain at a time: a stopped actor's drain may still be finishing
    await running;
    if (maxOps === undefined) {
      maxOps = (await probing) ?? (await probe());
      probing = undefined;
    }
    deps.drainer.limits.maxOps = maxOps;
    const run = drainer.drain({ key: deps.election.keys.electionKey(FORWARDER_ROLE), token: input.term.token }, signal);
    running = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  });
  let running: Promise<void> = Promise.resolve();
  const machine = forwarderMachine.provide({
    actors: {
      election: etcdElection({ ...deps.election, log: deps.log.child({ sub: 'election' }) }),
      drain,
    },
    delays: {
      backoffDelay: ({ context }) => {
        const base = Math.min(context.backoffMaxMs, context.backoffBaseMs * 2 ** Math.max(0, context.failures - 1));
        return Math.round(base / 2 + (deps.random() * base) / 2);
      },
    },
  });
  return { machine, settled: () => running.then(() => drainer.idle()), takesAppends: () => drainer.takesAppends() };
}
