/**
 * A private single-member etcd server on loopback ports, for tests, demos and
 * benchmarks, optionally with TLS and authentication. States of a
 * {@link ManagedEtcd}: running ⇄ (killed | paused via pause/resume); killed →
 * running via restart(); any → stopped via stop() (final). Every child is
 * registered and killed synchronously when this process exits or receives
 * SIGINT/SIGTERM.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EtcdConnectionOptions } from './etcd.ts';
import { RuntimeStateError } from './errors.ts';
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

export { findEtcdBinary, type ManagedEtcdAuth, type ManagedEtcdTls } from './etcd-process.ts';

/** Options of {@link startManagedEtcd}. */
export interface ManagedEtcdOptions {
  /** Data directory. @default a fresh private temp dir, removed by `stop()` */
  dataDir?: string;
  /** Member name. @default 'portwire' */
  name?: string;
  /** Use `--heartbeat-interval 10 --election-timeout 100` (ready in ~0.1 s). @default true */
  fastElection?: boolean;
  /** More etcd command-line arguments, appended last. @default [] */
  extraArgs?: string[];
  /** How long to wait for `/health` to report true. @default 15000 */
  readyTimeoutMs?: number;
  /** TLS on client and peer URLs (client URLs become `https://`). @default off */
  tls?: ManagedEtcdTls;
  /**
   * Authentication: user `root` (role `root`) with this password, then `auth enable`,
   * once the server is ready. Auth state lives in the data dir: a restart keeps it.
   * @default off
   */
  auth?: ManagedEtcdAuth;
  /** Optional pino-like logger. */
  logger?: ManagedLogger;
}

/** A running (or stopped) managed etcd server. */
export interface ManagedEtcd {
  /** Client URLs, e.g. `['http://127.0.0.1:40123']` (`https://` with TLS). */
  readonly endpoints: string[];
  /**
   * Connection options with full rights: endpoints, the CA (plus the server
   * certificate as client certificate under `clientCertAuth`) and root's
   * credentials when auth is on.
   * @example const client = createEtcdClient(etcd.connection());
   */
  connection(): EtcdConnectionOptions;
  /** Process id of the current etcd child (changes on restart). */
  readonly pid: number;
  readonly dataDir: string;
  /** True while the child process is alive (paused counts as alive). */
  readonly running: boolean;
  /** SIGTERM, SIGKILL after 5 s, await exit, remove a private data dir. Idempotent and final. */
  stop(): Promise<void>;
  /** Sends a terminating `signal` (SIGKILL simulates a crash) and awaits the exit; the data dir stays. @default 'SIGKILL' */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Freezes the server (SIGSTOP): connections stay open, nothing is answered. */
  pause(): void;
  /** Thaws a paused server (SIGCONT). */
  resume(): void;
  /** Starts again on the same ports and data dir and waits until ready. */
  restart(): Promise<void>;
}

/**
 * Starts a single-member etcd on free loopback ports and waits until it is
 * healthy (and, with `auth`, until authentication is on).
 * @throws {EtcdStartError} when no binary is found, etcd dies or is not ready in time, or
 *   auth is already on in `dataDir` with another root password
 * @example
 * const etcd = await startManagedEtcd();
 * const client = new Etcd3({ hosts: etcd.endpoints });
 * // …
 * await etcd.stop();
 */
export async function startManagedEtcd(options: ManagedEtcdOptions = {}): Promise<ManagedEtcd> {
  const { name = 'portwire', fastElection = true, extraArgs = [], readyTimeoutMs = 15_000, tls, auth, logger } = options;
  const bin = requireEtcdBinary();
  installExitHooks();
  const privateDir = options.dataDir ? undefined : await mkdtemp(join(tmpdir(), 'portwire-etcd-'));
  if (privateDir) trackPrivateDir(privateDir);
  const dataDir = options.dataDir ?? (privateDir as string);
  const removeOwnDir = async (): Promise<void> => {
    if (privateDir) await removePrivateDir(privateDir);
  };

  let member: MemberProcess | undefined;
  try {
    for (let attempt = 1; ; attempt++) {
      const [client, peer, metrics] = await freePorts(3);
      const ports = { client, peer, metrics };
      const spec = { name, dataDir, ports, initialCluster: `${name}=${peerUrl(ports, tls)}`, fastElection, tls, extraArgs };
      const candidate = new MemberProcess(bin, spec, readyTimeoutMs, logger);
      try {
        await candidate.start();
        member = candidate;
        break;
      } catch (err) {
        if (!isPortClash(err) || attempt >= PORT_ATTEMPTS) throw err;
        logger?.warn({ attempt, ...ports }, 'etcd port clash, retrying');
      }
    }
    if (auth) await enableAuth([member.endpoint], tls, auth);
  } catch (err) {
    await member?.kill('SIGKILL');
    await removeOwnDir();
    throw err;
  }

  const m = member;
  let stopping: Promise<void> | undefined;
  const endpoints = [m.endpoint];

  return {
    endpoints,
    dataDir,
    connection: () => adminConnection(endpoints, tls, auth),
    get pid() {
      return m.pid;
    },
    get running() {
      return m.running;
    },
    kill: (sig = 'SIGKILL') => m.kill(sig),
    pause: () => m.pause(),
    resume: () => m.resume(),
    async restart() {
      if (stopping) throw new RuntimeStateError('managed etcd was stopped');
      await m.kill('SIGTERM');
      await m.start();
    },
    stop() {
      stopping ??= (async () => {
        const pid = m.pid;
        await m.terminate();
        await removeOwnDir();
        logger?.info({ pid }, 'etcd stopped');
      })();
      return stopping;
    },
  };
}
