/**
 * The demo behind `npm start` / `portwire demo`: an etcd (managed unless one
 * is given), simulated agents for the H hosts, a runtime on a data directory
 * (a fresh temporary one unless given; with the inspector when asked), N
 * realistic port binds across the hosts with a progress bar, a wait for the
 * drain and for the agents' confirmations (bind → active latency, from the
 * bind call to the runtime's `portBound`), and a summary. Then it stays up
 * until SIGINT/SIGTERM (or stops at once with `exit`). With `secure`, the
 * managed etcd runs with TLS and authentication and every process connects as
 * its own least-privilege user (see `demo-secure.ts`); with `sign`, the
 * runtime signs every value and the agents verify them.
 *
 * starting ──▶ binding ──▶ draining ──▶ activating ──▶ summary ──▶ (idle until signal) ──▶ stopping ──▶ done
 *     └───────────── signal or error at any step ─────────────────────────────────────────▶ stopping
 *
 * Whatever was started is stopped on every path: runtime (and its inspector),
 * agents, managed etcd, temporary directory (data and PKI).
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { createAgents, type Agents } from './agents.ts';
import { startSecureDemoEtcd, type SecureDemoEtcd } from './demo-secure.ts';
import { TimeoutError, ValidationError } from './errors.ts';
import { createLogger } from './logger.ts';
import { startManagedEtcd, type ManagedEtcd } from './managed-etcd.ts';
import { createProgress, type Progress, type ProgressStream } from './progress.ts';
import { createRuntime, type Runtime } from './runtime.ts';
import type { PortBind, Segment } from './types.ts';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Ports to bind. @default 3000 */
  ports?: number;
  /** Compute hosts the ports are spread over. @default 20 */
  hosts?: number;
  /** Stop and return once the summary is printed, instead of waiting for a signal. @default false */
  exit?: boolean;
  /** etcd client URLs. @default `ETCD_ENDPOINTS`, else a managed etcd started (and stopped) here */
  etcd?: string[];
  /** Journal directory, kept afterwards. @default a fresh temporary directory, removed afterwards */
  dataDir?: string;
  /** Key prefix. @default '/networking-vpp' with a managed etcd, '/portwire-demo' with a given one */
  prefix?: string;
  /** Log at info instead of warn. @default false */
  verbose?: boolean;
  /** Bind calls in flight. @default 500 */
  inFlight?: number;
  /** Serve the inspector on 127.0.0.1 while the demo runs (its URL is printed). @default off */
  inspect?: {
    /** TCP port. @default 0 (any free port) */
    port?: number;
  };
  /** Where the progress bar and summary go. @default process.stdout */
  out?: ProgressStream;
  /**
   * Start the managed etcd with TLS (client certificates required) and
   * authentication, from a PKI in the temporary directory; the runtime and
   * each host's agent connect as users of their own with the least-privilege
   * roles. Always a managed etcd (`ETCD_ENDPOINTS` is ignored).
   * @default false
   */
  secure?: boolean;
  /** Sign every value with a fresh Ed25519 key; the agents verify them. @default false */
  sign?: boolean;
}

/** What the demo measured. */
export interface DemoSummary {
  operations: number;
  hosts: number;
  journalSeconds: number;
  journalOpsPerSecond: number;
  drainedKeys: number;
  drainSeconds: number;
  drainKeysPerSecond: number;
  journalDepth: number;
  /** This process's forwarder leadership; `electedSeconds` after `start()`. */
  leader: { holderId: string; token?: string; electedSeconds?: number } | null;
  deadLetters: number;
  /** Binds the runtime announced confirmed by their agent (`portBound`). */
  active: number;
  /** From each bind call to its `portBound`, in ms; null when none was announced. */
  bindToActiveMs: { p50: number; p99: number; max: number } | null;
  /** Hosts whose agent is alive (the return watcher's view). */
  hostsAlive: number;
  /** The inspector's URL, when it runs. */
  inspectorUrl?: string;
  etcd: { endpoints: string[]; managedPid?: number };
  /** With `secure`: TLS (client certificates required) and authentication on; the runtime's etcd user. */
  security?: { tls: true; auth: true; controllerUser: string };
  /** With `sign`: binding values the agents rejected (none unless someone else wrote one). */
  signing?: { rejected: number };
  dataDir: string;
}

/** How a demo ended. */
export interface DemoResult {
  /** Undefined when interrupted before the summary. */
  summary?: DemoSummary;
  /** True when a signal ended it. */
  interrupted: boolean;
}

/** The default `--ports` and `--hosts`. */
export const DEMO_DEFAULTS = { ports: 3000, hosts: 20, inFlight: 500 } as const;
/** Largest `--ports` (fixed IPs are drawn from 8 /16 subnets). */
export const DEMO_MAX_PORTS = 500_000;

const NETWORKS = 8;
const DRAIN_SLICE_MS = 250;
const DRAIN_TIMEOUT_MS = 10 * 60_000;
const STALL_WARN_MS = 10_000;
const ACTIVE_TIMEOUT_MS = 60_000;
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

/** The segment of demo network `net`: a VLAN on physnet1. */
function segmentOf(net: number): Segment {
  return {
    id: `5e600000-0000-4000-8000-${hex(net, 12)}`,
    network_type: 'vlan',
    physical_network: 'physnet1',
    segmentation_id: 100 + net,
  };
}

/** The name of demo host `h`, e.g. `compute-007`. */
const hostName = (h: number): string => `compute-${String(h).padStart(3, '0')}`;

/**
 * The bind call of demo port `i` (deterministic: a rerun rewrites the same keys).
 * @example demoBind(0, 20).host // 'compute-000'
 */
export function demoBind(i: number, hosts: number): PortBind {
  const net = i % NETWORKS;
  const n = Math.floor(i / NETWORKS) + 2;
  const host = hostName(i % hosts);
  const mac = `fa:16:3e:${hex((i >> 16) & 0xff, 2)}:${hex((i >> 8) & 0xff, 2)}:${hex(i & 0xff, 2)}`;
  return {
    host,
    segment: segmentOf(net),
    port: {
      id: `00000000-0000-4000-8000-${hex(i, 12)}`,
      mac_address: mac,
      device_owner: 'compute:nova',
      device_id: `1a570000-0000-4000-8000-${hex(Math.floor(i / 2), 12)}`,
      status: 'DOWN',
      fixed_ips: [{ subnet_id: `5b000000-0000-4000-8000-${hex(net, 12)}`, ip_address: `10.${net}.${n >> 8}.${n & 0xff}` }],
      security_groups: [],
      allowed_address_pairs: [],
      port_security_enabled: true,
      'binding:vnic_type': 'normal',
      'binding:host_id': host,
      'binding:profile': {},
    },
  };
}

/** Resolves on the first SIGINT/SIGTERM; a second one exits at once (after sync cleanup). */
function watchSignals(log: Logger, onForce: () => void): { stopped: Promise<NodeJS.Signals>; dispose(): void } {
  let resolve!: (s: NodeJS.Signals) => void;
  const stopped = new Promise<NodeJS.Signals>((r) => (resolve = r));
  let seen = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (seen) {
      log.warn({ signal }, 'second signal, exiting without a clean stop');
      onForce();
      process.exit(130);
    }
    seen = true;
    resolve(signal);
  };
  for (const s of SIGNALS) process.on(s, handler);
  return { stopped, dispose: () => SIGNALS.forEach((s) => process.off(s, handler)) };
}

/**
 * Binds `total` ports with `inFlight` calls outstanding; stops early when
 * `halt()` says so. `onCall` is told of each bind as it is called.
 */
async function bindAll(
  rt: Runtime,
  total: number,
  hosts: number,
  inFlight: number,
  halt: () => boolean,
  onProgress: (done: number) => void,
  onCall: (bind: PortBind) => void,
): Promise<number> {
  let next = 0;
  let done = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && !halt() && next < total) {
      const i = next++;
      try {
        const bind = demoBind(i, hosts);
        onCall(bind);
        await rt.bindPort(bind);
      } catch (err) {
        failed = true;
        throw err;
      }
      onProgress(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, total) }, worker));
  return done;
}

/** What {@link waitDrained} reports to. */
interface DrainWatch {
  halted(): boolean;
  /** Entries the drain is expected to carry (for the bar). */
  total: number;
  out: ProgressStream;
  log: Logger;
}

/**
 * `drained()` in short slices, so that a signal is noticed within one slice
 * (a pending `drained()` must not outlive the runtime). Shows a bar when the
 * drain outlasts the first slice, and warns when the depth stops moving.
 * @returns false when halted before the journal drained
 */
async function waitDrained(rt: Runtime, w: DrainWatch, timeoutMs = DRAIN_TIMEOUT_MS): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  let bar: Progress | undefined;
  let lastDepth = -1;
  let since = performance.now();
  try {
    for (;;) {
      try {
        await rt.drained({ timeoutMs: DRAIN_SLICE_MS });
        bar?.update(w.total);
        return true;
      } catch (err) {
        if (!(err instanceof TimeoutError)) throw err;
      }
      if (w.halted()) return false;
      const { journalDepth: depth, roles } = rt.status();
      bar ??= createProgress({ total: w.total, label: 'draining to etcd', stream: w.out });
      bar.update(Math.max(0, w.total - depth));
      const now = performance.now();
      if (depth !== lastDepth) {
        lastDepth = depth;
        since = now;
      } else if (now - since > STALL_WARN_MS) {
        w.log.warn({ depth, leader: roles.forwarder?.leader ?? false }, 'drain stalled; is etcd reachable?');
        since = now;
      }
      if (now > deadline) throw new TimeoutError(`journal not drained within ${timeoutMs} ms (depth ${depth})`);
    }
  } finally {
    bar?.done();
  }
}

/**
 * Waits until this process leads the forwarder role, so that the rates
 * measure the journal and the drain rather than the first election.
 * @returns false when halted or out of time (the demo goes on regardless)
 */
async function waitLeader(rt: Runtime, halted: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!rt.status().roles.forwarder?.leader) {
    if (halted() || performance.now() > deadline) return false;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        rt.off('leader', done);
        resolve();
      };
      const timer = setTimeout(done, DRAIN_SLICE_MS);
      rt.once('leader', done);
    });
  }
  return true;
}

/**
 * Resolves once no bound port awaits its `portBound` (`pending` empties as
 * they come, checked on each one), or every slice finds the pending ones
 * active already (announced before this run, or by another process leading
 * the return watcher); or when halted or out of time.
 * @returns whether every port is active
 */
async function waitActive(rt: Runtime, pending: ReadonlyMap<string, number>, halted: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  const allActive = () => [...pending.keys()].every((id) => rt.ports?.port(id)?.state === 'active');
  return new Promise<boolean>((resolve) => {
    const finish = (active: boolean): void => {
      clearInterval(timer);
      rt.off('portBound', onBound);
      resolve(active);
    };
    const onBound = (): void => {
      if (pending.size === 0) finish(true);
    };
    const timer = setInterval(() => {
      if (pending.size === 0 || allActive()) finish(true);
      else if (halted() || performance.now() > deadline) finish(false);
    }, DRAIN_SLICE_MS);
    rt.on('portBound', onBound);
    onBound();
  });
}

/**
 * The median, 99th percentile (nearest rank) and maximum of `ms`; null when empty.
 * @example latencySummary([3, 1, 2]) // { p50: 2, p99: 3, max: 3 }
 */
export function latencySummary(ms: readonly number[]): { p50: number; p99: number; max: number } | null {
  if (ms.length === 0) return null;
  const sorted = Float64Array.from(ms).sort();
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
  return { p50: rank(0.5), p99: rank(0.99), max: sorted[sorted.length - 1] };
}

function formatRate(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

const formatMs = (n: number): string => `${Math.round(n).toLocaleString('en-US')} ms`;

/** The summary as printed lines (the first one is `portwire demo summary`). */
export function formatSummary(s: DemoSummary): string[] {
  const elected = s.leader?.electedSeconds !== undefined ? `, elected in ${s.leader.electedSeconds.toFixed(2)} s` : '';
  const leader = s.leader ? `${s.leader.holderId} (term token ${s.leader.token ?? '?'}${elected})` : 'none (not leading)';
  const etcd = s.etcd.managedPid !== undefined
    ? `managed, pid ${s.etcd.managedPid}, ${s.etcd.endpoints.join(',')}`
    : s.etcd.endpoints.join(',');
  const l = s.bindToActiveMs;
  const latency = l ? `p50 ${formatMs(l.p50)}, p99 ${formatMs(l.p99)}, max ${formatMs(l.max)}` : 'none announced';
  return [
    'portwire demo summary',
    `  operations       ${s.operations} port binds on ${s.hosts} hosts`,
    `  journal ops/s    ${formatRate(s.journalOpsPerSecond)} (${s.operations} durable appends in ${s.journalSeconds.toFixed(2)} s)`,
    `  drain keys/s     ${formatRate(s.drainKeysPerSecond)} (${s.drainedKeys} keys in etcd ${s.drainSeconds.toFixed(2)} s after the first call)`,
    `  ports active     ${s.active} of ${s.operations} (confirmed by their agent, announced portBound)`,
    `  bind → active    ${latency}`,
    `  journal depth    ${s.journalDepth}`,
    `  leader           ${leader}`,
    `  hosts alive      ${s.hostsAlive} (simulated agents)`,
    `  dead letters     ${s.deadLetters}`,
    ...(s.inspectorUrl ? [`  inspector        ${s.inspectorUrl}`] : []),
    `  etcd             ${etcd}`,
    ...(s.security
      ? [`  etcd security    TLS (client certificates required), auth on; controller user ${s.security.controllerUser}, one agent user per host`]
      : []),
    ...(s.signing ? [`  signed values    Ed25519; agents rejected ${s.signing.rejected}`] : []),
    `  data dir         ${s.dataDir}`,
  ];
}

/** Default endpoints: the `ETCD_ENDPOINTS` environment variable, comma-separated. */
function envEndpoints(): string[] | undefined {
  const list = (process.env.ETCD_ENDPOINTS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return list.length > 0 ? list : undefined;
}

/**
 * Runs the demo (see the module comment). Resolves once everything it
 * started is stopped.
 * @throws whatever failed (etcd start, a bind, the drain), after cleaning up
 * @example
 * const { summary } = await runDemo({ ports: 300, exit: true });
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const total = options.ports ?? DEMO_DEFAULTS.ports;
  const hosts = options.hosts ?? DEMO_DEFAULTS.hosts;
  const out = options.out ?? process.stdout;
  if (options.secure && options.etcd) {
    throw new ValidationError('secure', 'cannot be combined with etcd: the demo secures only an etcd it starts');
  }
  const log = createLogger({ pretty: true, level: options.verbose ? 'info' : 'warn' });
  const given = options.secure ? undefined : (options.etcd ?? envEndpoints());
  const hostNames = Array.from({ length: hosts }, (_, h) => hostName(h));
  const keys = options.sign ? generateKeyPairSync('ed25519') : undefined;
  let tempDir: string | undefined;
  let etcd: ManagedEtcd | undefined;
  let secure: SecureDemoEtcd | undefined;
  const agents: Agents[] = [];
  let rt: Runtime | undefined;
  const signals = watchSignals(log, () => tempDir && rmSync(tempDir, { recursive: true, force: true }));
  let interrupted = false;
  const stop = signals.stopped.then((signal) => {
    interrupted = true;
    log.info({ signal }, 'stopping');
  });

  try {
    tempDir = options.dataDir && !options.secure ? undefined : await mkdtemp(join(tmpdir(), 'portwire-demo-'));
    const dataDir = options.dataDir ?? (tempDir as string);
    const prefix = options.prefix ?? (given ? '/portwire-demo' : '/networking-vpp');
    if (options.secure) {
      const pkiDir = join(tempDir as string, 'etcd-pki');
      // a signal kills the managed etcd under the setup: its failure is then no error
      secure = await startSecureDemoEtcd({ pkiDir, hosts: hostNames, prefix, logger: log }).catch((err: unknown) => {
        if (interrupted) return undefined;
        throw err;
      });
      etcd = secure?.etcd;
    } else if (!given) etcd = await startManagedEtcd({ logger: log.child({ role: 'etcd' }) });
    if (interrupted) return { interrupted };
    const endpoints = given ?? (etcd as ManagedEtcd).endpoints;
    const verifyKey: KeyObject | undefined = keys?.publicKey;
    // with auth, one agent set (one client, one identity) per host
    for (const group of secure ? hostNames.map((h) => [h]) : [hostNames]) {
      const conn = secure ? secure.agent(group[0]) : { endpoints };
      agents.push(createAgents({ etcd: conn, prefix, hosts: group, logger: log, verifyKey }));
    }
    await Promise.race([Promise.all(agents.map((a) => a.start())), stop]);
    if (interrupted) return { interrupted };
    rt = createRuntime({
      etcd: secure ? secure.controller : { endpoints },
      dataDir,
      prefix,
      logger: log,
      inspector: options.inspect ? { port: options.inspect.port ?? 0 } : undefined,
      signing: keys ? { privateKey: keys.privateKey } : undefined,
    });
    rt.on('error', (err) => log.error({ err }, 'role crashed, restarting'));
    // bind → active: from each bind call to the runtime's portBound for that port
    const calledAt = new Map<string, number>();
    const latencies: number[] = [];
    rt.on('portBound', ({ port }) => {
      const t = calledAt.get(port);
      if (t === undefined) return;
      calledAt.delete(port);
      latencies.push(performance.now() - t);
    });
    await rt.start();
    if (rt.inspectorUrl) out.write(`inspector: ${rt.inspectorUrl} (running until the demo stops)\n`);
    const tStart = performance.now();
    const deadBefore = rt.status().deadLetters;
    const led = await waitLeader(rt, () => interrupted, 2 * rt.options.electionTtlMs);
    if (interrupted) return { interrupted };
    if (!led) log.warn({ waitedMs: 2 * rt.options.electionTtlMs }, 'not leading the forwarder role yet; binding anyway');
    const electedSeconds = led ? (performance.now() - tStart) / 1000 : undefined;

    const bar = createProgress({ total, label: 'binding ports', stream: out });
    const t0 = performance.now();
    const done = await bindAll(rt, total, hosts, options.inFlight ?? DEMO_DEFAULTS.inFlight, () => interrupted, (n) => bar.update(n), (b) =>
      calledAt.set(b.port.id, performance.now()),
    );
    const tJournaled = performance.now();
    bar.done();
    if (interrupted) return { interrupted };
    if (!(await waitDrained(rt, { halted: () => interrupted, total: done, out, log }))) return { interrupted };
    const tDrained = performance.now();
    if (!(await waitActive(rt, calledAt, () => interrupted, ACTIVE_TIMEOUT_MS)) && !interrupted) {
      log.warn({ active: latencies.length, bound: done }, 'not every port became active in time');
    }
    if (interrupted) return { interrupted };

    const status = rt.status();
    const fwd = status.roles.forwarder;
    const journalSeconds = (tJournaled - t0) / 1000;
    const drainSeconds = (tDrained - t0) / 1000;
    // one key per bind (no security groups yet); 'applied' events may trail drained()
    const drainedKeys = done - (status.deadLetters - deadBefore);
    const summary: DemoSummary = {
      operations: done,
      hosts,
      journalSeconds,
      journalOpsPerSecond: done / Math.max(journalSeconds, 1e-6),
      drainedKeys,
      drainSeconds,
      drainKeysPerSecond: drainedKeys / Math.max(drainSeconds, 1e-6),
      journalDepth: status.journalDepth,
      leader: fwd?.leader ? { holderId: status.holderId, token: fwd.token, electedSeconds } : null,
      deadLetters: status.deadLetters,
      active: latencies.length,
      bindToActiveMs: latencySummary(latencies),
      hostsAlive: rt.aliveHosts().length,
      inspectorUrl: rt.inspectorUrl,
      etcd: { endpoints, managedPid: etcd?.pid },
      security: secure ? { tls: true, auth: true, controllerUser: secure.controllerUser } : undefined,
      signing: keys ? { rejected: agents.reduce((n, a) => n + a.stats().rejected, 0) } : undefined,
      dataDir: tempDir && !options.dataDir ? `${dataDir} (temporary, removed on stop)` : dataDir,
    };
    out.write(`${formatSummary(summary).join('\n')}\n`);
    if (!options.exit) {
      out.write('running; press Ctrl-C to stop\n');
      await stop;
    }
    return { summary, interrupted };
  } finally {
    if (etcd && interrupted && !options.verbose) {
      // managed-etcd kills its children on the signal itself: the runtime cannot resign, and need not
      log.level = 'error';
    }
    // a managed etcd is gone after a signal: agents then stop without revoking their leases
    await cleanup(log, { rt, agents, etcd, tempDir, etcdGone: etcd !== undefined && interrupted });
    signals.dispose();
  }
}

/** What {@link cleanup} stops. */
interface Started {
  rt?: Runtime;
  agents: Agents[];
  etcd?: ManagedEtcd;
  tempDir?: string;
  etcdGone: boolean;
}

/** Kills every agent (no lease revoke: etcd is gone), then closes their client. */
async function killAgents(agents: Agents): Promise<void> {
  await Promise.all(agents.hosts.map((h) => agents.agent(h).kill()));
  await agents.stop();
}

/** Stops what was started, in reverse order; every step runs even if one fails. */
async function cleanup(log: Logger, { rt, agents, etcd, tempDir, etcdGone }: Started): Promise<void> {
  const steps: [string, (() => Promise<unknown>) | undefined][] = [
    ['runtime', rt && (() => rt.stop())],
    ['agents', agents.length > 0 ? () => Promise.all(agents.map((a) => (etcdGone ? killAgents(a) : a.stop()))) : undefined],
    ['etcd', etcd && (() => etcd.stop())],
    ['data dir', tempDir ? () => rm(tempDir, { recursive: true, force: true }) : undefined],
  ];
  for (const [what, step] of steps) {
    if (!step) continue;
    try {
      await step();
    } catch (err) {
      log.error({ err, what }, 'cleanup step failed');
    }
  }
}
