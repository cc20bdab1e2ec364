/**
 * The runtime a host process embeds: the host API (validate → decide →
 * journal durably → kick) and the roles (supervisor → forwarder → election),
 * started and stopped together.
 *
 * created ──start()──▶ running ──stop()──▶ stopped
 */
import { EventEmitter } from 'node:events';
import { createActor, type Actor, type InspectionEvent } from 'xstate';
import type { Etcd3 } from 'etcd3';
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import type { supervisorMachine } from '../machines/supervisor.ts';
import type { Term } from '../machines/election.ts';
import { roleRefusal, type RefusalInfo } from '../machines/refusal.ts';
import { createEtcdClient, deadline, probeMaxTxnOps, TXN_OPS_PROBE } from './etcd.ts';
import { checkEtcdAccess } from './etcd-preflight.ts';
import { buildRoles, type Roles } from './roles.ts';
import { resyncOnce, RESYNC_ROLE, type ResyncDeps, type ResyncReport } from './resync.ts';
import { fromEtcdError, NotLeaderError, RuntimeStateError, TimeoutError, ValidationError } from './errors.ts';
import { FORWARDER_ROLE } from './forwarder.ts';
import { HostCache } from './host-cache.ts';
import { runtimeSource } from './inspector/runtime-source.ts';
import { checkInspectorAddress, startInspector, type Inspector } from './inspector/server.ts';
import { PortRegistry, type PortEvents } from './port-registry.ts';
import { RETURN_WATCHER_ROLE } from './return-watcher.ts';
import type { PortStatus } from '../machines/port.ts';
import { Journal, type DeadLetter, type JournalUsage } from './journal.ts';
import { keyLayout, type KeyLayout } from './keys.ts';
import { roleLogger, silentLogger } from './logger.ts';
import {
  bindOps,
  bindPortDecision,
  checkSegment,
  deletePortOps,
  unbindOps,
  updatePortOps,
  vifType,
  type MechConfig,
} from './mech.ts';
import { resolveOptions, type ResolvedOptions, type RuntimeOptions } from './options.ts';
import { createPool } from './pool.ts';
import { SecurityGroups, type SecurityGroup } from './secgroups.ts';
import type { NeutronRule } from './translate.ts';
import type { DrainEvent } from './drainer.ts';
import type {
  BindDecision,
  JournalOp,
  PortBind,
  PortDelete,
  PortUnbind,
  PortUpdate,
  Port,
  Segment,
} from './types.ts';
import {
  validateBind,
  validateBindDecisionArgs,
  validateDelete,
  validateHost,
  validateId,
  validateSegment,
  validateUnbind,
  validateUpdate,
} from './validate.ts';

/** Events a runtime emits to its host. */
export interface RuntimeEvents {
  /** This process became the leader of a role. */
  leader: [{ role: string; token: string }];
  /** This process stopped leading a role. */
  follower: [{ role: string }];
  /** This process's campaign found a role led by another holder (its id, from the election key). */
  leaderSeen: [{ role: string; holder: string }];
  /** A batch reached etcd. */
  applied: [{ keys: number; entries: number; revision: string }];
  /** An entry failed for its own reasons and will be retried. */
  entryFailed: [{ key: string; attempts: number; error: string; retryInMs: number }];
  /** Acknowledged entries left the journal (their values are the applied state now). */
  recorded: [{ entries: number }];
  /** An entry moved to the dead letters. */
  deadLettered: [{ key: string; attempts: number; error: string }];
  /** A resync run finished (its report). */
  resync: [ResyncReport];
  /** A role machine crashed (it is restarted). */
  error: [Error];
  /** A host's agent announced itself (leader of the return watcher only). */
  hostAlive: [{ host: string }];
  /** A host's `alive` key was deleted or expired (leader of the return watcher only). */
  hostDead: [{ host: string }];
  /** Provisioning complete: the agent confirmed the binding; once per binding (leader of the return watcher only). */
  portBound: PortEvents['portBound'];
  /** The agent did not confirm a binding within `returnWatcher.stallMs`. */
  portStalled: PortEvents['portStalled'];
  /** A stalled port was confirmed after all. */
  portRecovered: PortEvents['portRecovered'];
  /** The binding the host was told about is gone from etcd. */
  portUnbound: PortEvents['portUnbound'];
  /** The agent reported a new status (`up`, `down`, `error`) for a bound port. */
  portStatus: PortEvents['portStatus'];
  /** The return watcher's stream ended and relists (compaction, broken or silent watch). */
  watchFault: [{ reason: string }];
}

/** Operations available inside {@link Runtime.transaction}. */
export interface TransactionOps {
  bindPort(args: PortBind): void;
  unbindPort(args: PortUnbind): void;
  updatePort(ctx: PortUpdate): { provisioningBlock: boolean };
  deletePort(ctx: PortDelete): void;
}

/** What {@link Runtime.status} reports. */
export interface RuntimeStatus {
  running: boolean;
  holderId: string;
  journalDepth: number;
  deadLetters: number;
  /** How full the journal is against its `mapSize` limit (absent unless running). */
  journal?: JournalUsage;
  /**
   * Per role: its actor's state, whether this process leads it, the leader's
   * holder id when known, and `error` while etcd refuses this identity what
   * the role needs (the role or its election is then in state `refused`).
   */
  roles: Record<string, { state: unknown; leader: boolean; token?: string; holder?: string; error?: RefusalInfo }>;
  /** Ports tracked by the return watcher, per state, and how many have a live actor. */
  ports: { total: number; states: Record<string, number>; liveActors: number };
}

/** A runtime; see {@link createRuntime}. */
export class Runtime extends EventEmitter<RuntimeEvents> {
  readonly options: ResolvedOptions;
  readonly keys: KeyLayout;
  readonly log: Logger;
  private readonly mech: MechConfig;
  private journal?: Journal;
  private pool?: Piscina;
  private secgroups?: SecurityGroups;
  private client?: Etcd3;
  private hostCache = new HostCache();
  private registry?: PortRegistry;
  private supervisor?: Actor<typeof supervisorMachine>;
  private unwatchKick?: () => void;
  private terms = new Map<string, Term>();
  /** Holder id of each role's leader, as last known (own id while leading). */
  private holders = new Map<string, string>();
  private readonly inspectListeners = new Set<(e: InspectionEvent) => void>();
  private inspector?: Inspector;
  private kickPending = false;
  private forwarder?: Roles['forwarder'];
  private state: 'created' | 'running' | 'stopping' | 'stopped' = 'created';

  constructor(options: RuntimeOptions = {}) {
    super();
    this.options = resolveOptions(options);
    this.keys = keyLayout(this.options.prefix);
    this.log = (this.options.logger ?? silentLogger()).child({ holder: this.options.holderId });
    this.mech = {
      keys: this.keys,
      vhostUserDir: this.options.vhostUserDir,
      allowedNetworkTypes: this.options.networkTypes,
    };
  }

  /** Opens the journal, the pool and etcd, and starts the roles. */
  async start(): Promise<void> {
    if (this.state !== 'created') throw new RuntimeStateError(`cannot start a ${this.state} runtime`);
    const o = this.options;
    if (o.inspector) checkInspectorAddress(o.inspector);
    this.journal = Journal.open(o.dataDir, { mapSize: o.mapSize, now: o.now });
    this.client = createEtcdClient(o.etcd);
    this.pool = createPool({ size: o.poolSize });
    this.secgroups = new SecurityGroups(this.journal, this.pool, this.keys);
    await this.warmPool(this.pool, this.journal);
    this.registry = new PortRegistry({
      stallMs: o.returnWatcher.stallMs,
      notified: this.journal.table('notified'),
      log: roleLogger(this.log, 'ports'),
      now: o.now,
    });
    for (const type of ['portBound', 'portStalled', 'portRecovered', 'portUnbound', 'portStatus'] as const) {
      (this.registry.on as (t: string, fn: (e: unknown) => void) => void)(type, (e) =>
        (this.emit as (t: string, d: unknown) => boolean)(type, e),
      );
    }
    for (const type of ['hostAlive', 'hostDead'] as const) {
      this.hostCache.on(type, (e) => {
        if (this.terms.has(RETURN_WATCHER_ROLE)) this.emit(type, e);
      });
    }
    this.state = 'running';
    // the inspector first: when it cannot listen, no role has campaigned yet
    if (o.inspector) {
      const source = runtimeSource(this);
      try {
        const inspector = await startInspector({ ...o.inspector, source, logger: this.log, now: o.now });
        const close = inspector.close;
        this.inspector = { ...inspector, close: () => close().finally(() => source.close()) };
      } catch (err) {
        source.close();
        await this.stop();
        throw err;
      }
    }
    await this.checkAccess();
    if (o.forwarder || o.resync.enabled || o.returnWatcher.enabled) this.startRoles();
  }

  /**
   * Proves etcd accepts this identity for what the enabled roles need (see
   * `etcd-preflight.ts`); a refusal stops the runtime and rejects `start()`,
   * an unreachable etcd is only logged (the roles retry).
   */
  private async checkAccess(): Promise<void> {
    const o = this.options;
    const roles = [
      ...(o.forwarder ? [FORWARDER_ROLE] : []),
      ...(o.resync.enabled ? [RESYNC_ROLE] : []),
      ...(o.returnWatcher.enabled ? [RETURN_WATCHER_ROLE] : []),
    ];
    try {
      const access = await checkEtcdAccess(this.client!, this.keys, {
        callTimeoutMs: o.etcd.callTimeoutMs,
        roles,
        write: o.forwarder || o.resync.enabled,
        watch: o.returnWatcher.enabled,
        clientCert: o.etcd.tls?.cert,
        endpoints: o.etcd.endpoints,
        tls: o.etcd.tls,
        now: o.now,
      });
      if (!access.reachable) this.log.warn({ err: access.error.message }, 'etcd unreachable at start; the roles will retry');
    } catch (err) {
      this.log.error({ err }, 'etcd refused access');
      await this.stop();
      throw err;
    }
  }

  /** Starts the supervisor with the enabled roles. */
  private startRoles(): void {
    const roles = buildRoles({
      options: this.options,
      journal: this.journal!,
      pool: this.pool!,
      client: this.client!,
      registry: this.registry!,
      hostCache: this.hostCache,
      keys: this.keys,
      log: this.log,
      resyncDeps: (log) => this.resyncDeps(log),
      onTerm: (role, term) => this.onTerm(role, term),
      onHolder: (role, holder) => this.onHolder(role, holder),
      onDrainEvent: (e) => this.onDrainEvent(e),
      onResyncReport: (report) => this.emit('resync', report),
      onWatchFault: (fault) => this.emit('watchFault', { reason: fault.reason }),
    });
    this.forwarder = roles.forwarder;
    this.supervisor = createActor(roles.machine, { input: roles.input, inspect: (e) => this.onInspection(e) });
    this.supervisor.subscribe({
      error: (err) => {
        this.log.error({ err }, 'supervisor crashed');
        this.emit('error', err as Error);
      },
    });
    this.supervisor.start();
    this.unwatchKick = this.journal!.onKick(() => this.kick());
  }

  /** Starts the pool's threads and opens the journal in them, so the first drain does not wait for it. */
  private async warmPool(pool: Piscina, journal: Journal): Promise<void> {
    const task = { kind: 'drainWindow', path: journal.path, afterSeq: 0, maxEntries: 0, maxOps: 1, maxBytes: 1, maxOpBytes: 1 };
    await Promise.all(Array.from({ length: this.options.poolSize }, () => pool.run(task)));
  }

  /** The root actor (for the inspector and tests). */
  get actor(): Actor<typeof supervisorMachine> | undefined {
    return this.supervisor;
  }

  /** The inspector's page URL while it runs (option `inspector`), else undefined. */
  get inspectorUrl(): string | undefined {
    return this.inspector?.url;
  }

  /**
   * Calls `listener` with every XState inspection event of the supervisor's
   * actor system (the supervisor, its role actors and their children) from
   * now on. A listener that throws is logged and ignored.
   * @returns the unsubscribe function
   * @example
   * const off = rt.onInspect((e) => { if (e.type === '@xstate.snapshot') console.log(e.actorRef.id); });
   */
  onInspect(listener: (e: InspectionEvent) => void): () => void {
    const wrapped = (e: InspectionEvent) => listener(e);
    this.inspectListeners.add(wrapped);
    return () => void this.inspectListeners.delete(wrapped);
  }

  private onInspection(e: InspectionEvent): void {
    for (const l of this.inspectListeners) {
      try {
        l(e);
      } catch (err) {
        this.log.warn({ err }, 'inspection listener failed');
      }
    }
  }

  private onTerm(role: string, term: Term | undefined): void {
    const had = this.terms.get(role);
    if (role === FORWARDER_ROLE) this.journal?.setDrainsLocally(term !== undefined);
    if (term) {
      this.terms.set(role, term);
      this.holders.set(role, this.options.holderId);
      this.emit('leader', { role, token: term.token });
    } else if (had) {
      this.terms.delete(role);
      this.holders.delete(role);
      this.emit('follower', { role });
    }
  }

  private onHolder(role: string, holder: string): void {
    if (this.holders.get(role) === holder || this.terms.has(role)) return;
    this.holders.set(role, holder);
    this.emit('leaderSeen', { role, holder });
  }

  private onDrainEvent(e: DrainEvent): void {
    const { type, ...data } = e;
    (this.emit as (t: string, d: unknown) => boolean)(type, data);
  }

  private running(): Journal {
    if (this.state !== 'running' || !this.journal) {
      throw new RuntimeStateError(`runtime is ${this.state}: call start() first`);
    }
    return this.journal;
  }

  private async append(ops: JournalOp[]): Promise<number> {
    const seq = await this.running().append(ops);
    this.kick();
    return seq;
  }

  /**
   * Wakes the local forwarder, at most once per event-loop turn, unless a
   * drain run in progress takes the appends (a machine event per append
   * costs more than the append).
   */
  private kick(): void {
    if (this.kickPending) return;
    this.kickPending = true;
    setImmediate(() => {
      this.kickPending = false;
      // a wake-up that lands while stopping has no forwarder left to wake
      if (this.state !== 'running' || this.forwarder?.takesAppends()) return;
      this.supervisor?.send({ type: 'KICK' });
    });
  }

  /**
   * Journals the binding of a port on a host (the reference's `bind`): the
   * port key and one remote-group key per security group.
   * @throws ValidationError naming the field; nothing is journaled
   * @returns the journal sequence number, once durable
   */
  async bindPort(args: PortBind): Promise<number> {
    this.running();
    return this.append(this.opsOfBind(validateBind(args)));
  }

  /**
   * Journals the unbinding of a port from a host (deletes its keys).
   * @throws ValidationError naming the field; nothing is journaled
   */
  async unbindPort(args: PortUnbind): Promise<number> {
    this.running();
    const a = validateUnbind(args);
    return this.append(unbindOps(this.mech, a.port, a.host, a.segment ?? undefined));
  }

  /**
   * The reference's `update_port_precommit`: unbind from a previous host,
   * leave remote groups, bind on the current host, live migration.
   * @returns whether the host must insert a provisioning block
   * @throws ValidationError naming the field; nothing is journaled
   */
  async updatePort(ctx: PortUpdate): Promise<{ provisioningBlock: boolean; seq: number }> {
    this.running();
    const { ops, provisioningBlock } = updatePortOps(this.mech, validateUpdate(ctx));
    return { provisioningBlock, seq: await this.append(ops) };
  }

  /**
   * The reference's `delete_port_precommit`: unbind when bound.
   * @throws ValidationError naming the field; nothing is journaled
   */
  async deletePort(ctx: PortDelete): Promise<number> {
    this.running();
    return this.append(deletePortOps(this.mech, validateDelete(ctx)));
  }

  /**
   * The reference's `bind_port`: the first segment that passes the segment
   * check, with VIF type and details; null when none can be bound.
   * @throws ValidationError naming the field
   */
  async bindPortDecision(args: { port: Port; segments: Segment[]; host: string }): Promise<BindDecision | null> {
    const a = validateBindDecisionArgs(args);
    const known = new Map<string, boolean>();
    for (const s of a.segments) {
      if (s.physical_network && !known.has(s.physical_network)) {
        known.set(s.physical_network, await this.physnetKnown(a.host, s.physical_network));
      }
    }
    return bindPortDecision(this.mech, a.port, a.segments, a.host, (_h, p) => known.get(p) ?? false);
  }

  private async physnetKnown(host: string, physnet: string): Promise<boolean> {
    if (this.options.physnetKnown) return this.options.physnetKnown(host, physnet);
    if (this.options.returnWatcher.enabled && (this.hostCache.synced || (await this.hostsSynced()))) {
      return this.hostCache.physnetKnown(host, physnet);
    }
    if (!this.client) throw new RuntimeStateError('runtime is not started');
    try {
      const [alive, net] = await Promise.all([
        this.client.kv.range({ key: Buffer.from(this.keys.stateAlive(host)) }, deadline(this.options.etcd.callTimeoutMs)),
        this.client.kv.range(
          { key: Buffer.from(this.keys.statePhysnet(host, physnet)) },
          deadline(this.options.etcd.callTimeoutMs),
        ),
      ]);
      return alive.kvs.length > 0 && net.kvs.length > 0;
    } catch (err) {
      throw fromEtcdError(err);
    }
  }

  /** Waits (up to the etcd call timeout) for the return watcher's first list. */
  private hostsSynced(): Promise<boolean> {
    if (this.hostCache.synced) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.hostCache.off('synced', done);
        resolve(this.hostCache.synced);
      };
      const timer = setTimeout(done, this.options.etcd.callTimeoutMs);
      this.hostCache.on('synced', done);
    });
  }

  /**
   * The segment check, answered from the return watcher's live cache of the
   * agents' `alive` and `physnets` keys (no etcd round trip): the network
   * type is one this driver binds, and for `flat` and `vlan` the host is
   * alive and can attach the segment's physical network.
   * @returns false as well before the first list has completed
   * @throws ValidationError naming the field
   */
  canBind(host: string, segment: Segment): boolean {
    const h = validateHost(host);
    const seg = validateSegment(segment);
    return checkSegment(this.mech, seg, h, (x, p) => this.hostCache.physnetKnown(x, p));
  }

  /** Hosts whose agent is alive, from the return watcher's cache. */
  aliveHosts(): string[] {
    return this.hostCache.aliveHosts();
  }

  /**
   * Resolves when the port is bound in etcd and confirmed by its agent, with
   * the host and the status the agent reports. Works in every process.
   * @throws TimeoutError after `timeoutMs` (default 60 s)
   * @throws ValidationError for a bad id
   */
  async whenActive(portId: string, options: { timeoutMs?: number } = {}): Promise<{ host: string; status: PortStatus }> {
    const id = validateId(portId, 'portId');
    this.running();
    return this.registry!.whenActive(id, options.timeoutMs ?? 60_000);
  }

  /** The port registry (for the inspector and tests). */
  get ports(): PortRegistry | undefined {
    return this.registry;
  }

  /**
   * Runs `fn` to collect several operations and journals them in one LMDB
   * transaction: all or nothing (a validation error in any of them journals none).
   * @throws ValidationError naming the field (`fn` when it is not a function); nothing is journaled
   * @throws JournalFullError when the journal is full; nothing is journaled
   * @example
   * await rt.transaction((tx) => { tx.unbindPort(a); tx.bindPort(b); });
   */
  async transaction(fn: (tx: TransactionOps) => void | Promise<void>): Promise<number> {
    this.running();
    if (typeof fn !== 'function') throw new ValidationError('fn', 'must be a function');
    const ops: JournalOp[] = [];
    const tx: TransactionOps = {
      bindPort: (args) => void ops.push(...this.opsOfBind(validateBind(args))),
      unbindPort: (args) => {
        const a = validateUnbind(args);
        ops.push(...unbindOps(this.mech, a.port, a.host, a.segment ?? undefined));
      },
      updatePort: (ctx) => {
        const r = updatePortOps(this.mech, validateUpdate(ctx));
        ops.push(...r.ops);
        return { provisioningBlock: r.provisioningBlock };
      },
      deletePort: (ctx) => void ops.push(...deletePortOps(this.mech, validateDelete(ctx))),
    };
    await fn(tx);
    return this.append(ops);
  }

  private opsOfBind(a: PortBind): JournalOp[] {
    return bindOps(this.mech, a.port, a.segment, a.host, a.binding_type ?? vifType(a.port));
  }

  private groups(): SecurityGroups {
    this.running();
    return this.secgroups!;
  }

  /**
   * Creates a security group with its rules (Neutron's default egress rules
   * when `security_group_rules` is absent): journals `global/secgroups/<id>`.
   * @throws ValidationError naming the field; nothing is journaled
   */
  async createSecurityGroup(sg: SecurityGroup): Promise<number> {
    return this.kicked(this.groups().create([sg]));
  }

  /**
   * Creates many security groups in one transaction; their values are
   * translated in the worker pool when the batch is large.
   * @throws ValidationError naming the field; nothing is journaled
   */
  async createSecurityGroups(sgs: SecurityGroup[]): Promise<number> {
    return this.kicked(this.groups().create(sgs));
  }

  /**
   * Deletes a security group: its key and its remote-group subtree.
   * @throws ValidationError for a bad id; nothing is journaled
   */
  async deleteSecurityGroup(sgId: string): Promise<number> {
    return this.kicked(this.groups().delete(sgId));
  }

  /**
   * Adds a rule to its (known) group and rewrites the whole group.
   * @throws ValidationError naming the field; nothing is journaled
   */
  async createRule(rule: NeutronRule): Promise<number> {
    return this.kicked(this.groups().createRule(rule));
  }

  /**
   * Removes a rule from its group and rewrites the whole group.
   * @throws ValidationError naming the field; nothing is journaled
   */
  async deleteRule(ruleId: string, sgId: string): Promise<number> {
    return this.kicked(this.groups().deleteRule(ruleId, sgId));
  }

  private async kicked(p: Promise<number>): Promise<number> {
    const seq = await p;
    this.kick();
    return seq;
  }

  /**
   * Resolves when every entry journaled before the call (by any process
   * sharing the data directory) has left the journal: applied to etcd, or
   * dead-lettered (see {@link deadLetters}).
   * @throws TimeoutError after `timeoutMs`
   */
  async drained(options: { timeoutMs?: number } = {}): Promise<void> {
    const journal = this.running();
    const target = journal.lastSeq();
    const timeoutMs = options.timeoutMs ?? 120_000;
    const done = () => {
      const first = journal.read(0, 1)[0];
      return !first || first.seq > target;
    };
    if (done()) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!done()) return;
        cleanup();
        resolve();
      };
      const interval = setInterval(check, 20);
      const timer = setTimeout(() => {
        cleanup();
        reject(new TimeoutError(`journal not drained within ${timeoutMs} ms (depth ${journal.depth()})`));
      }, timeoutMs);
      const cleanup = () => {
        clearInterval(interval);
        clearTimeout(timer);
        this.off('recorded', check);
        this.off('deadLettered', check);
      };
      this.on('recorded', check);
      this.on('deadLettered', check);
    });
  }

  private maxOpsProbe?: Promise<number>;

  private resyncDeps(log: Logger): ResyncDeps {
    const o = this.options;
    return {
      client: this.client!,
      journal: this.journal!,
      pool: this.pool!,
      keys: this.keys,
      log,
      callTimeoutMs: o.etcd.callTimeoutMs,
      maxOps: () => {
        if (o.batch.maxTxnOps !== undefined) return Promise.resolve(o.batch.maxTxnOps);
        this.maxOpsProbe ??= probeMaxTxnOps(this.client!, { timeoutMs: o.etcd.callTimeoutMs, probeKey: this.keys.electionKey(TXN_OPS_PROBE) }).catch((err: unknown) => {
          this.maxOpsProbe = undefined;
          throw err;
        });
        return this.maxOpsProbe;
      },
      maxTxnBytes: o.batch.maxTxnBytes,
      source: o.resync.source,
      now: o.now,
      signing: o.signing,
    };
  }

  /**
   * Reconciles etcd with the desired state now. A dry run (any process)
   * reports the differences without writing; a repair runs in the process
   * that leads the resync role and resolves with its report.
   * @throws NotLeaderError when another process leads resync (repairs only)
   * @throws TimeoutError when the run does not finish within `timeoutMs`
   */
  async resync(options: { dryRun?: boolean; timeoutMs?: number } = {}): Promise<ResyncReport> {
    this.running();
    if (options.dryRun) return resyncOnce(this.resyncDeps(roleLogger(this.log, RESYNC_ROLE)));
    if (!this.terms.has(RESYNC_ROLE)) throw new NotLeaderError('another process leads resync: run it there, or dry-run here');
    const timeoutMs = options.timeoutMs ?? 120_000;
    return new Promise<ResyncReport>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('resync', done);
        reject(new TimeoutError(`resync did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (report: ResyncReport) => {
        clearTimeout(timer);
        resolve(report);
      };
      this.once('resync', done);
      this.supervisor?.send({ type: 'RESYNC' });
    });
  }

  /** Entries that kept failing, for inspection (`portwire journal dead`). */
  deadLetters(): DeadLetter[] {
    return this.running().deadLetters();
  }

  /** Re-queues dead letters with the keys' current desired values (`portwire journal retry`). */
  async retryDeadLetters(ids?: number[]): Promise<number> {
    const n = await this.running().retryDead(ids);
    this.kick();
    return n;
  }

  /** A snapshot of the runtime's state. */
  status(): RuntimeStatus {
    const journal = this.state === 'running' ? this.journal : undefined;
    const usage = journal?.usage();
    const children = this.supervisor?.getSnapshot().children;
    const role = (name: string, child: 'forwarder' | 'resync' | 'returnWatcher') => {
      const snap = children?.[child]?.getSnapshot();
      const error = roleRefusal(snap);
      return {
        state: snap?.value ?? 'off',
        leader: this.terms.has(name),
        token: this.terms.get(name)?.token,
        holder: this.holders.get(name),
        ...(error ? { error } : {}),
      };
    };
    return {
      running: this.state === 'running',
      holderId: this.options.holderId,
      journalDepth: usage?.entries ?? 0,
      deadLetters: journal?.deadLetters().length ?? 0,
      ...(usage ? { journal: usage } : {}),
      roles: {
        [FORWARDER_ROLE]: role(FORWARDER_ROLE, 'forwarder'),
        [RESYNC_ROLE]: role(RESYNC_ROLE, 'resync'),
        [RETURN_WATCHER_ROLE]: role(RETURN_WATCHER_ROLE, 'returnWatcher'),
      },
      ports: {
        total: this.registry?.size ?? 0,
        states: this.registry?.stateCounts() ?? {},
        liveActors: this.registry?.liveActors() ?? 0,
      },
    };
  }

  /**
   * Closes the inspector, stops the roles (resigning leadership), then the
   * pool, etcd client and journal. Idempotent.
   */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    if (this.state === 'created') {
      this.state = 'stopped';
      return;
    }
    this.state = 'stopping';
    await this.inspector?.close();
    this.inspector = undefined;
    this.unwatchKick?.();
    const sup = this.supervisor;
    if (sup && sup.getSnapshot().status === 'active') {
      const finished = new Promise<void>((resolve) => {
        const sub = sup.subscribe({
          next: (s) => {
            if (s.status !== 'active') {
              sub.unsubscribe();
              resolve();
            }
          },
          error: () => resolve(),
          complete: () => resolve(),
        });
      });
      sup.send({ type: 'STOP' });
      const timer = setTimeout(() => sup.stop(), this.options.etcd.callTimeoutMs * 2);
      await finished;
      clearTimeout(timer);
    }
    sup?.stop();
    // an aborted drain finishes its in-flight txns and journal writes before the pool goes
    await this.forwarder?.settled();
    this.registry?.clear();
    await this.registry?.flush();
    await this.pool?.destroy();
    this.client?.close();
    await this.journal?.close();
    this.state = 'stopped';
  }
}

/**
 * Creates a runtime. Call `start()` before the operations and `stop()` when done.
 * @example
 * const rt = createRuntime({ etcd: { endpoints: ['http://127.0.0.1:2379'] }, dataDir: '/var/lib/portwire' });
 * await rt.start();
 * await rt.bindPort({ port, segment, host: 'compute-1' });
 * await rt.drained();
 * await rt.stop();
 */
export function createRuntime(options: RuntimeOptions = {}): Runtime {
  return new Runtime(options);
}
