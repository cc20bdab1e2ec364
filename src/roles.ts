/**
 * The wiring of the roles: each enabled role's machine provided with its
 * implementation (etcd, the journal, the pool, the registry), and the
 * supervisor's input. The runtime starts the result (see `runtime.ts`).
 */
import type { Etcd3 } from 'etcd3';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { supervisorMachine, type SupervisorInput } from '../machines/supervisor.ts';
import type { Term } from '../machines/election.ts';
import type { DrainEvent } from './drainer.ts';
import { ETCD_DEFAULT_MAX_TXN_OPS } from './etcd.ts';
import { etcdForwarder, FORWARDER_ROLE } from './forwarder.ts';
import type { HostCache } from './host-cache.ts';
import type { Journal } from './journal.ts';
import type { KeyLayout } from './keys.ts';
import type { WatchFault } from './list-watch.ts';
import { roleLogger } from './logger.ts';
import type { ResolvedOptions } from './options.ts';
import type { PortRegistry } from './port-registry.ts';
import { etcdResync, RESYNC_ROLE, type ResyncDeps, type ResyncReport } from './resync.ts';
import { etcdReturnWatcher, RETURN_WATCHER_ROLE } from './return-watcher.ts';

/** What the roles are built from. */
export interface RolesDeps {
  options: ResolvedOptions;
  journal: Journal;
  pool: Piscina;
  client: Etcd3;
  registry: PortRegistry;
  hostCache: HostCache;
  keys: KeyLayout;
  /** The runtime's logger; each role logs through a child of its own. */
  log: Logger;
  resyncDeps: (log: Logger) => ResyncDeps;
  onTerm: (role: string, term: Term | undefined) => void;
  onHolder: (role: string, holder: string) => void;
  onDrainEvent: (e: DrainEvent) => void;
  onResyncReport: (report: ResyncReport) => void;
  onWatchFault: (fault: WatchFault) => void;
}

/** The roles, ready to start. */
export interface Roles {
  /** The supervisor, provided with every enabled role. */
  machine: ReturnType<typeof supervisorMachine.provide>;
  input: SupervisorInput;
  /** When the forwarder runs: see {@link etcdForwarder}. */
  forwarder?: Pick<ReturnType<typeof etcdForwarder>, 'settled' | 'takesAppends'>;
}

/** Builds the enabled roles and the supervisor that runs them. */
export function buildRoles(d: RolesDeps): Roles {
  const o = d.options;
  const { journal, pool, client, registry } = d;
  const electionDeps = (log: Logger) => ({
    client,
    keys: d.keys,
    holderId: o.holderId,
    ttlMs: o.electionTtlMs,
    keepaliveIntervalMs: o.keepaliveIntervalMs,
    callTimeoutMs: o.etcd.callTimeoutMs,
    log,
    onTerm: d.onTerm,
    onHolder: d.onHolder,
  });
  const electionInput = (role: string) => ({
    role,
    renewDeadlineMs: o.renewDeadlineMs,
    retryMs: Math.min(1000, o.electionTtlMs / 4),
    refusedRetryMs: o.refusedRetryMs,
  });
  const actors: Record<string, unknown> = {};
  const input: SupervisorInput = { restartBaseMs: 200, restartMaxMs: 10_000 };
  let forwarderHandle: Roles['forwarder'];
  if (o.forwarder) {
    const log = roleLogger(d.log, FORWARDER_ROLE);
    const forwarder = etcdForwarder({
      log,
      random: o.random,
      maxTxnOps: o.batch.maxTxnOps,
      election: electionDeps(log),
      drainer: {
        journal,
        pool,
        client,
        now: o.now,
        random: o.random,
        onEvent: d.onDrainEvent,
        signing: o.signing,
        limits: {
          maxOps: o.batch.maxTxnOps ?? ETCD_DEFAULT_MAX_TXN_OPS,
          maxTxnBytes: o.batch.maxTxnBytes,
          maxRequestBytes: o.batch.maxRequestBytes,
          windowEntries: o.batch.windowEntries,
          inFlight: o.batch.inFlight,
          lingerMs: o.batch.lingerMs,
          callTimeoutMs: o.etcd.callTimeoutMs,
          maxAttempts: o.retry.maxAttempts,
          retryBaseMs: o.retry.baseMs,
          retryMaxMs: o.retry.maxMs,
        },
      },
    });
    forwarderHandle = forwarder;
    actors.forwarder = forwarder.machine;
    input.forwarder = {
      pollIntervalMs: o.pollIntervalMs,
      backoffBaseMs: o.backoffBaseMs,
      backoffMaxMs: o.backoffMaxMs,
      refusedRetryMs: o.refusedRetryMs,
      election: electionInput(FORWARDER_ROLE),
    };
  }
  if (o.resync.enabled) {
    const log = roleLogger(d.log, RESYNC_ROLE);
    actors.resync = etcdResync({
      ...d.resyncDeps(log),
      election: electionDeps(log),
      random: o.random,
      onReport: d.onResyncReport,
    });
    input.resync = { intervalMs: o.resync.intervalMs, election: electionInput(RESYNC_ROLE) };
  }
  if (o.returnWatcher.enabled) {
    const log = roleLogger(d.log, RETURN_WATCHER_ROLE);
    actors.returnWatcher = etcdReturnWatcher({
      client,
      keys: d.keys,
      hosts: d.hostCache,
      ports: registry,
      election: electionDeps(log),
      log,
      callTimeoutMs: o.etcd.callTimeoutMs,
      progressIntervalMs: o.returnWatcher.progressIntervalMs,
      silentMs: o.returnWatcher.silentMs,
      onFault: d.onWatchFault,
    });
    input.returnWatcher = {
      backoffBaseMs: o.returnWatcher.backoffBaseMs,
      backoffMaxMs: 5000,
      refusedRetryMs: o.refusedRetryMs,
      election: electionInput(RETURN_WATCHER_ROLE),
    };
  }
  return { machine: supervisorMachine.provide({ actors: actors as never }), input, forwarder: forwarderHandle };
}
