/**
 * A private single-member etcd server on loopback ports, for tests, demos and
 * benchmarks. States of a {@link ManagedEtcd}: running ⇄ (killed | paused via
 * pause/resume); killed → running via restart(); any → stopped via stop()
 * (final). Every child is registered and killed synchronously when this
 * process exits or receives SIGINT/SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, rmSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { EtcdStartError, RuntimeStateError } from './errors.ts';

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
  /** Optional pino-like logger. */
  logger?: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}

/** A running (or stopped) managed etcd server. */
export interface ManagedEtcd {
  /** Client URLs, e.g. `['http://127.0.0.1:40123']`. */
  readonly endpoints: string[];
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

const ETCD_CANDIDATES = ['/usr/bin/etcd', '/usr/sbin/etcd', '/usr/local/bin/etcd'];
const STDERR_TAIL_BYTES = 4096;
const STOP_GRACE_MS = 5000;
const PORT_ATTEMPTS = 5;

/** Live etcd children, and private data dirs not yet removed: both cleaned up on exit. */
const live = new Set<ChildProcess>();
const privateDirs = new Set<string>();
let hooksInstalled = false;

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Locates the etcd binary: `$ETCD_BIN`, then `PATH`, then the usual system locations.
 * @returns the absolute path, or `undefined` when none is executable
 */
export function findEtcdBinary(): string | undefined {
  const fromEnv = process.env.ETCD_BIN;
  if (fromEnv) return isExecutable(fromEnv) ? fromEnv : undefined;
  const fromPath = (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'etcd'));
  return [...fromPath, ...ETCD_CANDIDATES].find(isExecutable);
}

function killAllSync(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
  for (const dir of privateDirs) rmSync(dir, { recursive: true, force: true });
  privateDirs.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllSync);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      killAllSync();
      if (process.listenerCount(sig) > 1) return; // someone else decides how to end
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
}

/** Two distinct free loopback ports (both held open while picking). */
async function freePorts(): Promise<[number, number]> {
  const servers = [createServer(), createServer()];
  try {
    const [a, b] = await Promise.all(servers.map(listen));
    return [a, b];
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function isAlive(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

interface Spawned {
  child: ChildProcess;
  tail: () => string;
}

function spawnEtcd(bin: string, args: string[]): Spawned {
  const child = spawn(bin, args, { detached: false, stdio: ['ignore', 'ignore', 'pipe'] });
  let buf = Buffer.alloc(0);
  child.stderr?.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    if (buf.length > STDERR_TAIL_BYTES) buf = buf.subarray(buf.length - STDERR_TAIL_BYTES);
  });
  child.once('error', () => live.delete(child));
  child.once('exit', () => live.delete(child));
  if (child.pid !== undefined) live.add(child);
  return { child, tail: () => buf.toString('utf8').trim() };
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

/** Resolves when `/health` says true; rejects if the child dies or time runs out. */
async function waitReady(spawned: Spawned, clientUrl: string, timeoutMs: number): Promise<void> {
  const { child, tail } = spawned;
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (spawnError) throw new EtcdStartError(`etcd could not be spawned: ${spawnError.message}`, '', { cause: spawnError });
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new EtcdStartError(`etcd exited during startup (code ${child.exitCode}, signal ${child.signalCode})`, tail());
    }
    if (await healthy(`${clientUrl}/health`)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await exited(child);
  throw new EtcdStartError(`etcd not ready after ${timeoutMs} ms`, tail());
}

/**
 * Starts a single-member etcd on free loopback ports and waits until it is healthy.
 * @throws {EtcdStartError} when no binary is found, or etcd dies or is not ready in time
 * @example
 * const etcd = await startManagedEtcd();
 * const client = new Etcd3({ hosts: etcd.endpoints });
 * // …
 * await etcd.stop();
 */
export async function startManagedEtcd(options: ManagedEtcdOptions = {}): Promise<ManagedEtcd> {
  const { name = 'portwire', fastElection = true, extraArgs = [], readyTimeoutMs = 15_000, logger } = options;
  const bin = findEtcdBinary();
  if (!bin) {
    throw new EtcdStartError('etcd binary not found: apt-get install etcd-server, or set ETCD_BIN or ETCD_ENDPOINTS', '');
  }
  installHooks();
  const privateDir = options.dataDir ? undefined : await mkdtemp(join(tmpdir(), 'portwire-etcd-'));
  if (privateDir) privateDirs.add(privateDir);
  const dataDir = options.dataDir ?? (privateDir as string);
  const removePrivateDir = async (): Promise<void> => {
    if (!privateDir) return;
    await rm(privateDir, { recursive: true, force: true });
    privateDirs.delete(privateDir);
  };

  let clientPort = 0;
  let peerPort = 0;
  const argsFor = (): string[] => {
    const client = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    return [
      '--name', name, '--data-dir', dataDir,
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `${name}=${peer}`, '--logger', 'zap', '--log-level', 'error',
      ...(fastElection ? ['--heartbeat-interval', '10', '--election-timeout', '100'] : []),
      ...extraArgs,
    ];
  };
  const launch = async (): Promise<ChildProcess> => {
    const t0 = performance.now();
    const spawned = spawnEtcd(bin, argsFor());
    await waitReady(spawned, `http://127.0.0.1:${clientPort}`, readyTimeoutMs);
    logger?.info({ pid: spawned.child.pid, clientPort, readyMs: Math.round(performance.now() - t0) }, 'etcd ready');
    return spawned.child;
  };

  let child: ChildProcess | undefined;
  try {
    for (let attempt = 1; ; attempt++) {
      [clientPort, peerPort] = await freePorts();
      try {
        child = await launch();
        break;
      } catch (err) {
        const clash = err instanceof EtcdStartError && /address already in use/i.test(err.stderrTail);
        if (!clash || attempt >= PORT_ATTEMPTS) throw err;
        logger?.warn({ attempt, clientPort, peerPort }, 'etcd port clash, retrying');
      }
    }
  } catch (err) {
    await removePrivateDir();
    throw err;
  }

  let paused = false;
  let stopping: Promise<void> | undefined;
  const endpoints = [`http://127.0.0.1:${clientPort}`];

  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    if (!isAlive(child)) return;
    const c = child;
    c.kill(sig);
    if (paused && sig !== 'SIGKILL' && sig !== 'SIGCONT') c.kill('SIGCONT');
    paused = false;
    await exited(c);
  };

  return {
    endpoints,
    dataDir,
    get pid() {
      return child?.pid ?? -1;
    },
    get running() {
      return isAlive(child);
    },
    kill: (sig = 'SIGKILL') => signal(sig),
    pause() {
      if (isAlive(child)) child.kill('SIGSTOP');
      paused = true;
    },
    resume() {
      if (isAlive(child)) child.kill('SIGCONT');
      paused = false;
    },
    async restart() {
      if (stopping) throw new RuntimeStateError('managed etcd was stopped');
      await signal('SIGTERM');
      child = await launch();
    },
    stop() {
      stopping ??= (async () => {
        const c = child;
        if (isAlive(c)) {
          const timer = setTimeout(() => c.kill('SIGKILL'), STOP_GRACE_MS);
          await signal('SIGTERM');
          clearTimeout(timer);
        }
        await removePrivateDir();
        logger?.info({ pid: c?.pid }, 'etcd stopped');
      })();
      return stopping;
    },
  };
}
