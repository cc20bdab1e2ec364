/**
 * Simulated compute agents: they behave toward etcd like networking-vpp agents,
 * for tests, demos and benchmarks. Each agent holds `state/<host>/alive` on its
 * own lease, rewrites `state/<host>/physnets/` and `state/<host>/ports/` at start,
 * then lists `nodes/<host>/ports/` at a revision R and watches from R+1,
 * confirming each bound port by writing `state/<host>/ports/<port>`. With a
 * `verifyKey`, every binding read must be a compact JWS signed with that key for
 * that key path (see `jws.ts`); any other value is rejected: reported, not acted on.
 *
 * stopped|killed ─start()─▶ starting ─(alive, physnets, ports/ cleared, listed)─▶ running
 * starting|running ─stop()─▶ stopping ─(lease revoked: alive gone at once)─▶ stopped
 * starting|running ─kill()─▶ stopping ─(lease left to expire after its TTL)─▶ killed
 * running: lease lost ─▶ new lease + alive; watch compacted ─▶ relist + re-watch; watch stream broken ─▶
 *          re-watch from the next revision (backoff);
 *          pause()/resume() hold and release due confirmations. A failed etcd call emits
 *          'error' and is retried with backoff; stop() or kill() interrupts the retries.
 */
import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { Etcd3, IRequestOp, Lease } from 'etcd3';
import type { Logger } from 'pino';
import { createEtcdClient, deadline, ETCD_DEFAULT_MAX_TXN_OPS, prefixEnd, readPrefixAt, type EtcdConnectionOptions } from './etcd.ts';
import { fromEtcdError, RuntimeStateError, ValidationError, type PortwireError, type SignatureRejection } from './errors.ts';
import { keyLayout, type KeyLayout } from './keys.ts';
import { watchRange, type ListWatch } from './list-watch.ts';
import { JwsVerifier } from './jws.ts';
import { roleLogger, silentLogger } from './logger.ts';
import { validateHost } from './validate.ts';

/** How an agent words its answer: networking-vpp interface props, or a calico-like status. */
export type AgentStyle = 'vpp' | 'calico';

/** Options of {@link createAgents} and {@link startAgents}. */
export interface AgentsOptions {
  /** How to reach etcd (one client is shared by all agents of one call). */
  etcd: EtcdConnectionOptions;
  /** Key prefix. @default '/networking-vpp' */
  prefix?: string;
  /** Host names, or a count N giving `compute-1`..`compute-N`. */
  hosts: number | string[];
  /** Physical networks every agent announces. @default ['physnet1'] */
  physnets?: string[];
  /** TTL of the lease holding `state/<host>/alive`, seconds (etcd's effective minimum is 2). @default 10 */
  aliveTtlSec?: number;
  /** Delay before a bound port is confirmed, ms. @default 0 */
  confirmDelayMs?: number;
  /** Plus a uniform random 0..jitterMs, ms. @default 0 */
  jitterMs?: number;
  /** Probability (0..1) that a binding is never confirmed ('failed' is emitted instead). @default 0 */
  failureRate?: number;
  /** Shape of the state value (see {@link portStateValue}). @default 'vpp' */
  style?: AgentStyle;
  /** Directory of vhost-user sockets, for the vpp `path`. @default '/tmp' */
  vhostUserDir?: string;
  /** Most state writes sent in one txn (the server's `--max-txn-ops`). @default 128 */
  maxTxnOps?: number;
  /** Root logger; each agent logs through a child `{ role: 'agent', host }`. @default silent */
  logger?: Logger;
  /** Clock for event timestamps and latencies. @default Date.now */
  now?: () => number;
  /** Random source in [0, 1) for failure draws and jitter. @default Math.random */
  random?: () => number;
  /**
   * The controller's Ed25519 public key (PEM or KeyObject): every binding read is
   * verified as a compact JWS signed with it (see `jws.ts`); a value that does not
   * verify is not acted on and is reported as `rejected`. @default off (values are plain JSON)
   */
  verifyKey?: string | KeyObject;
}

/** The vpp-style value of `state/<host>/ports/<port>`, keys in this order; `path` only for vhostuser. */
export interface VppPortState { bind_type: string; mac: string | null; iface_idx: number; path?: string }

/** Payloads of the agent events (also re-emitted by {@link Agents}). */
export interface AgentEvents {
  started: [{ host: string; revision: string; ports: number }];
  stopped: [{ host: string; how: 'stop' | 'kill' }];
  /** The state key was written (etcd acknowledged it). */
  confirmed: [{ host: string; portId: string; key: string; value: unknown; latencyMs: number; at: number }];
  /** The state key of an unbound port was deleted. */
  removed: [{ host: string; portId: string; key: string; wasConfirmed: boolean }];
  /**
   * A binding value that failed verification (only with `verifyKey`): not acted on; a port
   * already bound keeps its last verified binding.
   */
  rejected: [{ host: string; portId: string; key: string; reason: SignatureRejection; detail: string }];
  /** A binding that will not be confirmed. */
  failed: [{ host: string; portId: string; reason: 'failure-draw' | 'invalid-binding' }];
  /** An etcd call failed and will be retried in `retryInMs` (always has a listener: never throws). */
  error: [{ host: string; op: string; error: PortwireError; attempt: number; retryInMs: number }];
}

/** Counters of one agent or of all. */
export interface AgentStats { confirmed: number; failed: number; removed: number; errors: number; rejected: number }

/** An agent's lifecycle state (see the header of `agents.ts`). */
export type AgentState = 'stopped' | 'starting' | 'running' | 'stopping' | 'killed';

interface Bound { seq: number; modRevision: string; binding: Record<string, unknown> | null; seenAt: number }
type WriteOp = { kind: 'put'; value: unknown; json: string; seenAt: number } | { kind: 'delete' };
type Resolved = Required<Omit<AgentsOptions, 'logger' | 'hosts' | 'verifyKey'>> & {
  hosts: string[]; logger: Logger; callTimeoutMs: number; verifier?: JwsVerifier;
};

const PAGE_SIZE = 5000;
const REVOKE_ATTEMPTS = 4;
const backoffMs = (attempt: number): number => Math.min(100 * 2 ** attempt, 5000);

/**
 * The value an agent writes for a confirmed port.
 * @example portStateValue('vpp', 'p1', { binding_type: 'tap', mac_address: 'fa:16:3e:00:00:01' }, 3)
 * // { bind_type: 'tap', mac: 'fa:16:3e:00:00:01', iface_idx: 3 }
 */
export function portStateValue(
  style: AgentStyle, portId: string, binding: Record<string, unknown>, ifaceIdx: number, vhostUserDir = '/tmp',
): VppPortState | { status: string } {
  if (style === 'calico') return { status: 'up' };
  const bindType = typeof binding.binding_type === 'string' ? binding.binding_type : 'vhostuser';
  const v: VppPortState = { bind_type: bindType, mac: typeof binding.mac_address === 'string' ? binding.mac_address : null, iface_idx: ifaceIdx };
  if (bindType === 'vhostuser') v.path = `${vhostUserDir.replace(/\/+$/, '')}/${portId}`;
  return v;
}

/** One simulated agent; created by {@link createAgents}. */
export class SimulatedAgent extends EventEmitter<AgentEvents> {
  private readonly keys: KeyLayout;
  private readonly log: Logger;
  private physnets: string[];
  private _state: AgentState = 'stopped';
  /** Bumped by every start/stop/kill: async work of an older epoch stops at its next step. */
  private epoch = 0;
  private lock: Promise<unknown> = Promise.resolve();
  private startPromise?: Promise<void>;
  private lease?: Lease;
  private watcher?: ListWatch;
  private paused = false;
  private seq = 0;
  private nextIface = 1;
  private readonly bound = new Map<string, Bound>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly held = new Map<string, number>();
  private readonly ifaces = new Map<string, number>();
  private readonly confirmedPorts = new Set<string>();
  private readonly queue = new Map<string, WriteOp>();
  private flushing?: Promise<void>;
  private readonly sleepers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();
  private readonly counters: AgentStats = { confirmed: 0, failed: 0, removed: 0, errors: 0, rejected: 0 };

  /** @internal use {@link createAgents} */
  constructor(readonly host: string, private readonly client: Etcd3, private readonly o: Resolved) {
    super();
    this.keys = keyLayout(o.prefix);
    this.physnets = [...o.physnets];
    this.log = roleLogger(o.logger, 'agent', { host });
    this.on('error', (e) => this.log.warn({ op: e.op, err: e.error, attempt: e.attempt, retryInMs: e.retryInMs }, 'etcd call failed'));
  }

  /** Where the agent is in its lifecycle. */
  get state(): AgentState { return this._state; }
  /** This agent's counters, plus the ports it currently sees bound and has confirmed. */
  stats(): AgentStats & { bound: number; confirmedNow: number } {
    return { ...this.counters, bound: this.bound.size, confirmedNow: this.confirmedPorts.size };
  }

  /**
   * (Re)starts the agent: new lease with `alive`, physnets and `ports/` rewritten, bindings
   * listed and watched. Resolves once running (or when stopped meanwhile); retries failed calls.
   */
  start(): Promise<void> {
    if ((this._state === 'starting' || this._state === 'running') && this.startPromise) return this.startPromise;
    const e = ++this.epoch;
    this._state = 'starting';
    this.startPromise = this.serial(() => this.runStart(e));
    return this.startPromise;
  }

  /** Clean stop: revokes the lease (the alive key disappears at once), stops watching. */
  stop(): Promise<void> { return this.halt('stop'); }
  /** Crash: stops keepalives and watching without revoking; the alive key expires after the TTL. */
  kill(): Promise<void> { return this.halt('kill'); }

  /** Stops (cleanly, or as a crash with `kill`, @default false) and starts again, rewriting `ports/`. */
  async restart(options: { kill?: boolean } = {}): Promise<void> {
    await this.halt(options.kill ? 'kill' : 'stop');
    await this.start();
  }

  /** Holds confirmations that come due (bindings are still watched) until {@link resume}. */
  pause(): void { this.paused = true; }
  /** Confirms every held port now and stops holding. */
  resume(): void {
    this.paused = false;
    const held = [...this.held];
    this.held.clear();
    for (const [portId, seq] of held) this.due(portId, seq);
  }

  /**
   * Replaces the announced physnets; rewrites `state/<host>/physnets/` when the agent runs.
   * @throws {ValidationError} on a name that is empty or contains '/'
   * @throws {EtcdUnavailableError} / {EtcdRejectedError} when the write fails
   */
  async setPhysnets(names: string[]): Promise<void> {
    this.physnets = checkPhysnets(names);
    if (this._state === 'running' || this._state === 'starting') await this.writePhysnets().catch((err) => { throw fromEtcdError(err); });
  }

  /** Writes `{"status": status}` as a port's state (calico style; any string). @throws like {@link setState} */
  setStatus(portId: string, status: string): Promise<void> { return this.setState(portId, JSON.stringify({ status })); }

  /**
   * Writes `value` (raw) as the state of `portId`, after any state write in flight, and drops a
   * pending confirmation of that port. Lets tests write garbage.
   * @throws {EtcdUnavailableError} / {EtcdRejectedError} when the write fails
   */
  async setState(portId: string, value: string): Promise<void> {
    this.forget(portId);
    this.queue.delete(portId);
    await this.flushing;
    try {
      await this.client.kv.put({ key: Buffer.from(this.keys.statePort(this.host, portId)), value: Buffer.from(value) }, this.deadline());
    } catch (err) {
      throw fromEtcdError(err);
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.lock.then(fn);
    this.lock = p.catch(() => undefined);
    return p;
  }

  private deadline(): { deadline: Date } { return deadline(this.o.callTimeoutMs); }
  /** Drops a port's pending or held confirmation. */
  private forget(portId: string): void {
    clearTimeout(this.timers.get(portId));
    this.timers.delete(portId);
    this.held.delete(portId);
  }

  private halt(how: 'stop' | 'kill'): Promise<void> {
    if (this._state === 'stopped' || this._state === 'killed') return this.lock.then(() => undefined);
    const e = ++this.epoch;
    this._state = 'stopping';
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.held.clear();
    this.queue.clear();
    for (const s of this.sleepers) { clearTimeout(s.timer); s.wake(); }
    this.sleepers.clear();
    return this.serial(async () => {
      const { lease, watcher } = this;
      this.lease = this.watcher = undefined;
      if (lease && how === 'stop') await this.revoke(lease);
      else lease?.release();
      // ends our side of the stream, then cancels: not a member failure, calls in flight on the client go on
      watcher?.close();
      await this.flushing;
      if (e !== this.epoch) return;
      this._state = how === 'stop' ? 'stopped' : 'killed';
      this.log.info({ how }, 'agent stopped');
      this.emit('stopped', { host: this.host, how });
    });
  }

  /** Revokes `lease`, a few attempts (a breaker may be open); else its keys expire after the TTL. */
  private async revoke(lease: Lease): Promise<void> {
    for (let attempt = 0; attempt < REVOKE_ATTEMPTS; attempt++) {
      try {
        return await lease.revoke(this.deadline());
      } catch (err) {
        const wait = attempt + 1 < REVOKE_ATTEMPTS ? backoffMs(attempt) : 0;
        this.emitError('revoke', err, attempt + 1, wait);
        if (wait > 0) await this.sleep(wait);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      const s = { timer: setTimeout(() => { this.sleepers.delete(s); wake(); }, ms), wake };
      this.sleepers.add(s);
    });
  }

  private emitError(op: string, err: unknown, attempt: number, retryInMs: number): void {
    this.counters.errors++;
    this.emit('error', { host: this.host, op, error: fromEtcdError(err), attempt, retryInMs });
  }

  /** Runs `fn` until it succeeds; undefined when the epoch ended first. */
  private async retry<T>(e: number, op: string, fn: () => Promise<T>): Promise<T | undefined> {
    for (let attempt = 0; e === this.epoch; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (e !== this.epoch) return undefined;
        const wait = backoffMs(attempt);
        this.emitError(op, err, attempt + 1, wait);
        await this.sleep(wait);
      }
    }
    return undefined;
  }

  private async runStart(e: number): Promise<void> {
    if (e !== this.epoch) return;
    this.bound.clear();
    this.ifaces.clear();
    this.confirmedPorts.clear();
    this.nextIface = 1;
    const stateDir = this.keys.statePort(this.host, '');
    const ok = (await this.retry(e, 'alive', () => this.grantAlive(e)))
      && (await this.retry(e, 'physnets', () => this.writePhysnets()))
      && (await this.retry(e, 'clear-ports', () => this.deleteDir(stateDir)));
    const revision = ok ? await this.retry(e, 'list', () => this.relist(e)) : undefined;
    if (revision === undefined || e !== this.epoch) return;
    this.watch(e, revision);
    this._state = 'running';
    this.log.info({ revision, ports: this.bound.size }, 'agent started');
    this.emit('started', { host: this.host, revision, ports: this.bound.size });
  }

  private async grantAlive(e: number): Promise<true> {
    const lease = this.client.lease(this.o.aliveTtlSec, this.deadline());
    // a lease that fails its own grant is lost too: that failure is this call's (retried with a backoff);
    // taken as a loss, it would start another grant at once, whose lease fails at once (etcd unreachable)…
    let held = false;
    lease.on('lost', (err) => held && this.onLeaseLost(lease, e, err));
    this.lease = lease;
    try {
      const id = await lease.grant();
      await this.client.kv.put({ key: Buffer.from(this.keys.stateAlive(this.host)), value: Buffer.from('1'), lease: id }, this.deadline());
      if (lease.revoked()) throw new Error('the alive lease was lost while its key was written');
      held = true;
      return true;
    } catch (err) {
      if (this.lease === lease) this.lease = undefined;
      lease.release();
      throw err;
    }
  }

  private onLeaseLost(lease: Lease, e: number, err: Error): void {
    if (e !== this.epoch || this.lease !== lease || this._state !== 'running') return;
    this.lease = undefined;
    this.emitError('lease', err, 0, 0);
    void this.retry(e, 'alive', () => this.grantAlive(e));
  }

  private async deleteDir(dir: string): Promise<true> {
    await this.client.kv.deleteRange({ key: Buffer.from(dir), range_end: prefixEnd(Buffer.from(dir)) }, this.deadline());
    return true;
  }

  private async writePhysnets(): Promise<true> {
    await this.deleteDir(this.keys.statePhysnet(this.host, ''));
    const ops: IRequestOp[] = this.physnets.map((p) => ({ request_put: { key: Buffer.from(this.keys.statePhysnet(this.host, p)), value: Buffer.from('1') } }));
    for (let i = 0; i < ops.length; i += this.o.maxTxnOps) {
      await this.client.kv.txn({ compare: [], success: ops.slice(i, i + this.o.maxTxnOps), failure: [] }, this.deadline());
    }
    return true;
  }

  private portOf(key: string): string | undefined {
    const dir = this.keys.port(this.host, '');
    const id = key.startsWith(dir) ? key.slice(dir.length) : '';
    return id && !id.includes('/') ? id : undefined;
  }

  /** Lists the bindings at one revision and reconciles with what is known; returns the revision. */
  private async relist(e: number): Promise<string | undefined> {
    const { revision, kvs } = await readPrefixAt(this.client, this.keys.port(this.host, ''), { pageSize: PAGE_SIZE, timeoutMs: this.o.callTimeoutMs });
    if (e !== this.epoch) return undefined;
    const seen = new Set<string>();
    for (const kv of kvs) {
      const portId = this.portOf(kv.key);
      if (!portId) continue;
      seen.add(portId);
      if (this.bound.get(portId)?.modRevision !== kv.modRevision) this.onBind(portId, kv.key, kv.value, kv.modRevision);
    }
    for (const portId of [...this.bound.keys()]) if (!seen.has(portId)) this.onUnbind(portId);
    return revision;
  }

  /**
   * Watches from `revision`+1 on a raw watch stream of its own (`watchRange`): closing it ends our
   * side before cancelling, where etcd3's `Watcher.cancel()` makes etcd3 count a member failure and
   * close every gRPC client of the member under the calls in flight. A broken stream (etcd
   * restarted, connection lost) is watched again from the next revision after a backoff (`attempt`
   * counts the breaks without a change in between); a compacted or cancelled watch relists first.
   */
  private watch(e: number, revision: string, attempt = 0): void {
    const dir = this.keys.port(this.host, '');
    let next = BigInt(revision) + 1n; // the first revision not seen yet
    let heard = false;
    const mine = (): boolean => this.watcher === w && e === this.epoch;
    const w = watchRange(
      this.client,
      { key: dir, end: prefixEnd(Buffer.from(dir)), startRevision: Number(next) },
      {
        onChanges: (changes) => {
          if (!mine()) return;
          heard = true;
          for (const c of changes) {
            next = BigInt(c.modRevision) + 1n;
            const portId = this.portOf(c.key);
            if (!portId) continue;
            if (c.type === 'put') this.onBind(portId, c.key, c.value, String(c.modRevision));
            else this.onUnbind(portId);
          }
        },
        onEnd: (reason) => {
          if (!mine()) return;
          this.watcher = undefined;
          if (reason === 'compacted' || reason === 'canceled' || reason === 'reset') {
            this.emitError('watch', new Error(`watch of ${dir} ${reason}`), 0, 0);
            void this.retry(e, 'list', () => this.relist(e)).then((rev) => {
              if (rev !== undefined && e === this.epoch) this.watch(e, rev);
            });
            return;
          }
          const breaks = heard ? 0 : attempt + 1;
          this.log.debug({ reason, breaks }, 'watch disconnected');
          void this.sleep(backoffMs(breaks - 1)).then(() => {
            if (e === this.epoch && this.watcher === undefined) this.watch(e, String(next - 1n), breaks);
          });
        },
      },
    );
    this.watcher = w;
  }

  private onBind(portId: string, key: string, value: Buffer, modRevision: string): void {
    let raw = value;
    if (this.o.verifier) {
      const v = this.o.verifier.verify(key, value);
      if (!v.ok) {
        this.counters.rejected++;
        this.log.warn({ key, portId, reason: v.reason, detail: v.detail }, 'binding rejected: signature check failed');
        this.emit('rejected', { host: this.host, portId, key, reason: v.reason, detail: v.detail });
        return;
      }
      raw = v.payload;
    }
    this.forget(portId);
    const seq = ++this.seq;
    let binding: Record<string, unknown> | null = null;
    try {
      const v: unknown = JSON.parse(raw.toString());
      if (v && typeof v === 'object' && !Array.isArray(v)) binding = v as Record<string, unknown>;
    } catch { /* invalid: reported below */ }
    this.bound.set(portId, { seq, modRevision, binding, seenAt: this.o.now() });
    const reason = !binding ? 'invalid-binding' : this.o.failureRate > 0 && this.o.random() < this.o.failureRate ? 'failure-draw' : undefined;
    if (reason) {
      this.counters.failed++;
      this.emit('failed', { host: this.host, portId, reason });
      return;
    }
    const delay = this.o.confirmDelayMs + (this.o.jitterMs > 0 ? this.o.random() * this.o.jitterMs : 0);
    if (delay <= 0) return this.due(portId, seq);
    this.timers.set(portId, setTimeout(() => { this.timers.delete(portId); this.due(portId, seq); }, delay));
  }

  private due(portId: string, seq: number): void {
    const b = this.bound.get(portId);
    if (!b?.binding || b.seq !== seq || this._state === 'stopping') return;
    if (this.paused) { this.held.set(portId, seq); return; }
    let idx = this.ifaces.get(portId);
    if (idx === undefined) this.ifaces.set(portId, (idx = this.nextIface++));
    const value = portStateValue(this.o.style, portId, b.binding, idx, this.o.vhostUserDir);
    this.enqueue(portId, { kind: 'put', value, json: JSON.stringify(value), seenAt: b.seenAt });
  }

  private onUnbind(portId: string): void {
    this.forget(portId);
    this.bound.delete(portId);
    this.ifaces.delete(portId);
    this.enqueue(portId, { kind: 'delete' });
  }

  private enqueue(portId: string, op: WriteOp): void {
    this.queue.delete(portId);
    this.queue.set(portId, op);
    this.kick(this.epoch);
  }

  private kick(e: number): void {
    if (this.flushing || e !== this.epoch) return;
    this.flushing = this.flush(e).finally(() => {
      this.flushing = undefined;
      if (this.queue.size > 0) this.kick(this.epoch);
    });
  }

  /** Sends the queued state writes, one txn in flight; per port only the last op is sent. */
  private async flush(e: number): Promise<void> {
    for (let attempt = 0; this.queue.size > 0 && e === this.epoch;) {
      const batch = [...this.queue].slice(0, this.o.maxTxnOps);
      for (const [portId] of batch) this.queue.delete(portId);
      const ops: IRequestOp[] = batch.map(([portId, op]) => {
        const key = Buffer.from(this.keys.statePort(this.host, portId));
        return op.kind === 'put' ? { request_put: { key, value: Buffer.from(op.json) } } : { request_delete_range: { key } };
      });
      try {
        await this.client.kv.txn({ compare: [], success: ops, failure: [] }, this.deadline());
      } catch (err) {
        for (const [portId, op] of batch) if (!this.queue.has(portId)) this.queue.set(portId, op);
        if (e !== this.epoch) return;
        const wait = backoffMs(attempt++);
        this.emitError('write-state', err, attempt, wait);
        await this.sleep(wait);
        continue;
      }
      attempt = 0;
      const at = this.o.now();
      for (const [portId, op] of batch) this.settled(portId, op, at);
    }
  }

  private settled(portId: string, op: WriteOp, at: number): void {
    const key = this.keys.statePort(this.host, portId);
    if (op.kind === 'put') {
      this.confirmedPorts.add(portId);
      this.counters.confirmed++;
      this.emit('confirmed', { host: this.host, portId, key, value: op.value, latencyMs: at - op.seenAt, at });
    } else {
      const wasConfirmed = this.confirmedPorts.delete(portId);
      this.counters.removed++;
      this.emit('removed', { host: this.host, portId, key, wasConfirmed });
    }
  }
}

function checkPhysnets(names: unknown): string[] {
  if (!Array.isArray(names)) throw new ValidationError('physnets', 'must be an array of names');
  names.forEach((n, i) => {
    if (typeof n !== 'string' || n === '' || n.includes('/')) throw new ValidationError(`physnets[${i}]`, "must be a non-empty name without '/'");
  });
  return [...new Set(names as string[])];
}

function num(v: unknown, field: string, dflt: number, min: number, max: number, integer = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new ValidationError(field, `must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}`);
  }
  return v;
}

function resolve(o: AgentsOptions): Resolved {
  if (!o || typeof o.etcd !== 'object' || o.etcd === null) throw new ValidationError('etcd', 'is required');
  let hosts: string[];
  if (typeof o.hosts === 'number') {
    const n = num(o.hosts, 'hosts', 1, 1, 100_000, true);
    hosts = Array.from({ length: n }, (_, i) => `compute-${i + 1}`);
  } else if (Array.isArray(o.hosts) && o.hosts.length > 0) {
    hosts = o.hosts.map((h, i) => validateHost(h, `hosts[${i}]`));
    if (new Set(hosts).size !== hosts.length) throw new ValidationError('hosts', 'must not repeat a host');
  } else throw new ValidationError('hosts', 'must be a count or a non-empty list of host names');
  const style = o.style ?? 'vpp';
  if (style !== 'vpp' && style !== 'calico') throw new ValidationError('style', "must be 'vpp' or 'calico'");
  return {
    etcd: o.etcd, prefix: o.prefix ?? '/networking-vpp', hosts, style, physnets: checkPhysnets(o.physnets ?? ['physnet1']),
    aliveTtlSec: num(o.aliveTtlSec, 'aliveTtlSec', 10, 1, 1_000_000, true),
    confirmDelayMs: num(o.confirmDelayMs, 'confirmDelayMs', 0, 0, 2 ** 31 - 1),
    jitterMs: num(o.jitterMs, 'jitterMs', 0, 0, 2 ** 31 - 1),
    failureRate: num(o.failureRate, 'failureRate', 0, 0, 1),
    vhostUserDir: o.vhostUserDir ?? '/tmp',
    maxTxnOps: num(o.maxTxnOps, 'maxTxnOps', ETCD_DEFAULT_MAX_TXN_OPS, 1, 100_000, true),
    logger: o.logger ?? silentLogger(), now: o.now ?? Date.now, random: o.random ?? Math.random,
    callTimeoutMs: o.etcd.callTimeoutMs ?? 5000,
    verifier: o.verifyKey === undefined ? undefined : new JwsVerifier(o.verifyKey),
  };
}

const FORWARDED = ['started', 'stopped', 'confirmed', 'removed', 'failed', 'rejected', 'error'] as const;

/** A set of simulated agents sharing one etcd client; re-emits every agent's events. */
export class Agents extends EventEmitter<AgentEvents> {
  /** The agents' host names, in order. */
  readonly hosts: string[];
  private readonly client: Etcd3;
  private readonly byHost = new Map<string, SimulatedAgent>();
  private closed = false;

  /** @internal use {@link createAgents} */
  constructor(o: Resolved) {
    super();
    this.hosts = o.hosts;
    this.client = createEtcdClient(o.etcd);
    this.on('error', () => undefined); // each agent logs its own errors
    for (const host of o.hosts) {
      const agent = new SimulatedAgent(host, this.client, o);
      for (const name of FORWARDED) agent.on(name, (...args: unknown[]) => this.emit(name as 'error', ...(args as AgentEvents['error'])));
      this.byHost.set(host, agent);
    }
  }

  /** The agent of `host`. @throws {ValidationError} when no agent has that host name */
  agent(host: string): SimulatedAgent {
    const a = this.byHost.get(host);
    if (!a) throw new ValidationError('host', `no simulated agent named '${host}'`);
    return a;
  }

  /** Starts every agent; resolves once all run (or were stopped meanwhile). @throws {RuntimeStateError} after stop() */
  async start(): Promise<void> {
    if (this.closed) throw new RuntimeStateError('simulated agents were stopped');
    await Promise.all([...this.byHost.values()].map((a) => a.start()));
  }

  /** Counters summed over the agents. */
  stats(): AgentStats {
    const sum: AgentStats = { confirmed: 0, failed: 0, removed: 0, errors: 0, rejected: 0 };
    for (const s of [...this.byHost.values()].map((a) => a.stats())) for (const k of Object.keys(sum) as (keyof AgentStats)[]) sum[k] += s[k];
    return sum;
  }

  /** Stops every agent cleanly (killed ones stay killed) and closes the client. Idempotent. */
  async stop(): Promise<void> {
    await Promise.all([...this.byHost.values()].map((a) => a.stop()));
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}

/**
 * Creates the agents without touching etcd (call `start()`); handy when a caller must be able
 * to stop them before they have started.
 * @throws {ValidationError} naming the offending option
 */
export function createAgents(options: AgentsOptions): Agents {
  return new Agents(resolve(options));
}

/**
 * Creates and starts simulated agents. Stop them with `stop()`.
 * @throws {ValidationError} naming the offending option
 * @example
 * const agents = await startAgents({ etcd: { endpoints: ['http://127.0.0.1:2379'] }, hosts: 3, confirmDelayMs: 50 });
 * agents.on('confirmed', (e) => console.log(e.host, e.portId));
 * await agents.stop();
 */
export async function startAgents(options: AgentsOptions): Promise<Agents> {
  const agents = createAgents(options);
  await agents.start();
  return agents;
}
