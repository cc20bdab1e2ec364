/**
 * A private etcd cluster of several members on loopback ports, for fault
 * tests: kill, pause or restart any member and ask who leads. Optionally with
 * TLS (client and peer) and authentication. Every child is killed when this
 * process exits, as with the single managed member.
 *
 * Each member: running ⇄ paused (pause/resume); running | paused → killed
 * (kill); killed → running (restart). The cluster: running → stopped via
 * stop() (final, idempotent).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { createEtcdClient, deadline, type EtcdConnectionOptions } from './etcd.ts';
import { RuntimeStateError, TimeoutError } from './errors.ts';
import {
  adminConnection,
  enableAuth,
  freePorts,
  installExitHooks,
  isPortClash,
  MemberProcess,
  peerUrl,
  PORT_ATTEMPTS,
  removePrivateDir,
  requireEtcdBinary,
  trackPrivateDir,
  type ManagedEtcdAuth,
  type ManagedEtcdTls,
  type ManagedLogger,
} from './etcd-process.ts';

/** Options of {@link startManagedCluster}. */
export interface ManagedClusterOptions {
  /** Number of members. @default 3 */
  size?: number;
  /** TLS on client and peer URLs, the same files for every member. @default off */
  tls?: ManagedEtcdTls;
  /** User `root` with this password, then `auth enable`, once the cluster is ready. @default off */
  auth?: ManagedEtcdAuth;
  /** `--heartbeat-interval 10 --election-timeout 100` on every member. @default true */
  fastElection?: boolean;
  /** More etcd arguments for every member, appended last. @default [] */
  extraArgs?: string[];
  /** How long to wait for a member's `/health`. @default 15000 */
  readyTimeoutMs?: number;
  /** Optional pino-like logger. */
  logger?: ManagedLogger;
}

/** One member of a {@link ManagedCluster}. */
export interface ClusterMember {
  /** Member name, `m0`, `m1`, … */
  readonly name: string;
  /** Client URL of this member alone. */
  readonly endpoint: string;
  /** Process id of the current child (changes on restart). */
  readonly pid: number;
  /** True while the child process is alive (paused counts as alive). */
  readonly running: boolean;
  /** True between pause() and resume() (or kill). */
  readonly paused: boolean;
  /** Sends a terminating `signal` and awaits the exit; the data dir stays. @default 'SIGKILL' */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts again (after SIGTERM if still alive) on the same ports and data dir; resolves when healthy. */
  restart(): Promise<void>;
  /** Freezes the member (SIGSTOP). */
  pause(): void;
  /** Thaws it (SIGCONT). */
  resume(): void;
}

/** A running (or stopped) managed cluster. */
export interface ManagedCluster {
  /** Client URLs of every member. */
  readonly endpoints: string[];
  readonly members: ClusterMember[];
  /**
   * The member the running, unpaused members agree leads, asked through the
   * maintenance status API; waits (bounded) while an election is under way.
   * @throws {TimeoutError} when no reachable member names a leader in time
   */
  leader(options?: { timeoutMs?: number }): Promise<ClusterMember>;
  /** Connection options with full rights on every member (see `ManagedEtcd.connection`). */
  connection(): EtcdConnectionOptions;
  /** Kills every member (SIGKILL: the data is thrown away) and removes the data dirs. Idempotent and final. */
  stop(): Promise<void>;
}

const STATUS_TIMEOUT_MS = 500;
const LEADER_POLL_MS = 20;

/**
 * Starts `size` members on free loopback ports, waits until each is healthy
 * (a leader is elected) and, with `auth`, turns authentication on.
 * @throws {EtcdStartError} when no binary is found or a member dies or is not ready in time
 * @example
 * const cluster = await startManagedCluster({ size: 3 });
 * const leader = await cluster.leader();
 * await leader.kill();
 * await cluster.stop();
 */
export async function startManagedCluster(options: ManagedClusterOptions = {}): Promise<ManagedCluster> {
  const { size = 3, tls, auth, fastElection = true, extraArgs = [], readyTimeoutMs = 15_000, logger } = options;
  const bin = requireEtcdBinary();
  installExitHooks();
  const root = await mkdtemp(join(tmpdir(), 'portwire-cluster-'));
  trackPrivateDir(root);

  let procs: MemberProcess[] = [];
  const killAll = () => Promise.all(procs.map((p) => p.kill('SIGKILL')));
  try {
    for (let attempt = 1; ; attempt++) {
      const ports = await freePorts(3 * size);
      const names = Array.from({ length: size }, (_, i) => `m${i}`);
      const memberPorts = names.map((_, i) => ({ client: ports[3 * i], peer: ports[3 * i + 1], metrics: ports[3 * i + 2] }));
      const initialCluster = names.map((n, i) => `${n}=${peerUrl(memberPorts[i], tls)}`).join(',');
      const clusterToken = `portwire-${randomBytes(6).toString('hex')}`;
      await rm(root, { recursive: true, force: true });
      procs = names.map(
        (name, i) =>
          new MemberProcess(
            bin,
            { name, dataDir: join(root, name), ports: memberPorts[i], initialCluster, clusterToken, fastElection, tls, extraArgs },
            readyTimeoutMs,
            logger,
          ),
      );
      const started = await Promise.allSettled(procs.map((p) => p.start()));
      const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (!failed) break;
      await killAll();
      if (!started.some((r) => r.status === 'rejected' && isPortClash(r.reason)) || attempt >= PORT_ATTEMPTS) throw failed.reason;
      logger?.warn({ attempt }, 'etcd port clash, retrying');
    }
    if (auth) await enableAuth(procs.map((p) => p.endpoint), tls, auth);
  } catch (err) {
    await killAll();
    await removePrivateDir(root);
    throw err;
  }

  const endpoints = procs.map((p) => p.endpoint);
  let stopping: Promise<void> | undefined;
  const statusClients = new Map<MemberProcess, Etcd3>();
  const statusClient = (p: MemberProcess): Etcd3 => {
    let c = statusClients.get(p);
    if (!c) {
      c = createEtcdClient({ ...adminConnection([p.endpoint], tls, auth), callTimeoutMs: STATUS_TIMEOUT_MS });
      statusClients.set(p, c);
    }
    return c;
  };
  const guard = () => {
    if (stopping) throw new RuntimeStateError('managed cluster was stopped');
  };

  const members: ClusterMember[] = procs.map((p) => ({
    name: p.spec.name,
    endpoint: p.endpoint,
    get pid() {
      return p.pid;
    },
    get running() {
      return p.running;
    },
    get paused() {
      return p.paused;
    },
    kill: (sig: NodeJS.Signals = 'SIGKILL') => p.kill(sig),
    async restart() {
      guard();
      await p.kill('SIGTERM');
      await p.start();
    },
    pause: () => p.pause(),
    resume: () => p.resume(),
  }));

  /** The member id of each reachable member and the leader id it names. */
  const ask = async (p: MemberProcess): Promise<{ p: MemberProcess; id: string; leader: string } | undefined> => {
    if (!p.running || p.paused) return undefined;
    try {
      const s = await statusClient(p).maintenance.status(deadline(STATUS_TIMEOUT_MS));
      return { p, id: s.header.member_id, leader: s.leader };
    } catch {
      return undefined;
    }
  };

  return {
    endpoints,
    members,
    connection: () => adminConnection(endpoints, tls, auth),
    async leader({ timeoutMs = 10_000 } = {}) {
      guard();
      const until = Date.now() + timeoutMs;
      for (;;) {
        const answers = (await Promise.all(procs.map(ask))).filter((a) => a !== undefined);
        const named = answers.filter((a) => a.leader !== '0').map((a) => a.leader);
        const agreed = named.length > 0 && named.every((id) => id === named[0]) ? named[0] : undefined;
        const leader = answers.find((a) => a.id === agreed);
        if (leader) return members[procs.indexOf(leader.p)];
        if (Date.now() >= until) throw new TimeoutError(`no etcd leader agreed on within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, LEADER_POLL_MS));
      }
    },
    stop() {
      stopping ??= (async () => {
        for (const c of statusClients.values()) c.close();
        statusClients.clear();
        await killAll(); // throwaway data: a graceful shutdown only waits for peers already gone
        await removePrivateDir(root);
        logger?.info({ size }, 'etcd cluster stopped');
      })();
      return stopping;
    },
  };
}
