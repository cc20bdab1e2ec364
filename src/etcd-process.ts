/**
 * The process side of a managed etcd, shared by the single member
 * (`managed-etcd.ts`) and the loopback cluster (`managed-cluster.ts`):
 * locating the binary, free ports, one member's command line (TLS included),
 * spawning with a stderr tail, the ready check on a plain-http metrics port,
 * enabling authentication, and killing every child when this process exits.
 *
 * A {@link MemberProcess}: running ⇄ paused (pause/resume); running | paused
 * → exited (kill); exited → running (start). Nothing here is final: owners
 * decide when a member is stopped for good.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { rm } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { createEtcdClient, deadline, type EtcdConnectionOptions } from './etcd.ts';
import { EtcdStartError } from './errors.ts';

/** TLS of a managed etcd: client URLs become https, peers use the same files. */
export interface ManagedEtcdTls {
  /** CA certificate (PEM file) trusted for clients and peers. */
  caFile: string;
  /** Server certificate (PEM file): SAN 127.0.0.1, server and client auth (it is also the peer certificate). */
  certFile: string;
  /** Key of `certFile` (PEM file). */
  keyFile: string;
  /** `--client-cert-auth`: clients must present a certificate of the CA; its CN names the etcd user. @default false */
  clientCertAuth?: boolean;
}

/** Authentication of a managed etcd. */
export interface ManagedEtcdAuth {
  /** Password of the user `root` (role `root`), created before `auth enable`. */
  rootPassword: string;
}

/** Optional pino-like logger of the managed etcd helpers. */
export interface ManagedLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

const ETCD_CANDIDATES = ['/usr/bin/etcd', '/usr/sbin/etcd', '/usr/local/bin/etcd'];
const STDERR_TAIL_BYTES = 4096;
const READY_POLL_MS = 20;
/** Grace between SIGTERM and SIGKILL when stopping for good. */
const STOP_GRACE_MS = 5000;
/** How often a start is retried when a picked port was taken meanwhile. */
export const PORT_ATTEMPTS = 5;

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

/**
 * The etcd binary, or a start error saying how to get one.
 * @throws {EtcdStartError} when no binary is found
 */
export function requireEtcdBinary(): string {
  const bin = findEtcdBinary();
  if (!bin) throw new EtcdStartError('etcd binary not found: apt-get install etcd-server, or set ETCD_BIN or ETCD_ENDPOINTS', '');
  return bin;
}

function killAllSync(): void {
  for (const child of live) {
    try {
      if (child.signalCode === null) child.kill('SIGCONT');
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
  for (const dir of privateDirs) rmSync(dir, { recursive: true, force: true });
  privateDirs.clear();
}

/** Kills every etcd child and removes every private data dir on exit, SIGINT and SIGTERM (once per process). */
export function installExitHooks(): void {
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

/** Registers a private data dir to remove on exit (and forgets it with `forget`). */
export function trackPrivateDir(dir: string, forget = false): void {
  if (forget) privateDirs.delete(dir);
  else privateDirs.add(dir);
}

/** Removes a private data dir now and forgets it (see {@link trackPrivateDir}). */
export async function removePrivateDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  trackPrivateDir(dir, true);
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
}

/** `n` distinct free loopback ports (all held open while picking). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(servers.map(listen));
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
}

/** Resolves when `child` has exited (at once if it already has). */
function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** True while `child` has not exited (a stopped child counts as alive). */
function isAlive(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

/** Where one member listens. */
export interface MemberPorts {
  client: number;
  peer: number;
  /** Plain-http `--listen-metrics-urls` port: `/health` for the ready check, whatever TLS and auth say. */
  metrics: number;
}

/** One member of a managed etcd. */
export interface MemberSpec {
  name: string;
  dataDir: string;
  ports: MemberPorts;
  /** `name=peerURL,…` of every member, this one included. */
  initialCluster: string;
  /** `--initial-cluster-token`, unique per cluster so members of different clusters never join. */
  clusterToken?: string;
  fastElection: boolean;
  tls?: ManagedEtcdTls;
  extraArgs: string[];
}

const scheme = (tls: ManagedEtcdTls | undefined): string => (tls ? 'https' : 'http');

/** The client URL of a member. */
const clientUrl = (ports: MemberPorts, tls?: ManagedEtcdTls): string => `${scheme(tls)}://127.0.0.1:${ports.client}`;

/** The peer URL of a member. */
export const peerUrl = (ports: MemberPorts, tls?: ManagedEtcdTls): string => `${scheme(tls)}://127.0.0.1:${ports.peer}`;

/** The election timing of `fastElection`. */
const FAST_ELECTION = { heartbeatMs: 10, electionTimeoutMs: 100 } as const;

/** etcd's command line for `spec`. */
function memberArgs(spec: MemberSpec): string[] {
  const { tls, ports } = spec;
  const client = clientUrl(ports, tls);
  const peer = peerUrl(ports, tls);
  const tlsArgs = tls
    ? [
        '--cert-file', tls.certFile, '--key-file', tls.keyFile, '--trusted-ca-file', tls.caFile,
        ...(tls.clientCertAuth ? ['--client-cert-auth'] : []),
        '--peer-cert-file', tls.certFile, '--peer-key-file', tls.keyFile, '--peer-trusted-ca-file', tls.caFile,
        '--peer-client-cert-auth',
      ]
    : [];
  return [
    '--name', spec.name, '--data-dir', spec.dataDir,
    '--listen-client-urls', client, '--advertise-client-urls', client,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
    '--listen-metrics-urls', `http://127.0.0.1:${ports.metrics}`,
    '--initial-cluster', spec.initialCluster, '--initial-cluster-state', 'new',
    ...(spec.clusterToken ? ['--initial-cluster-token', spec.clusterToken] : []),
    '--logger', 'zap', '--log-level', 'error',
    ...(spec.fastElection
      ? ['--heartbeat-interval', String(FAST_ELECTION.heartbeatMs), '--election-timeout', String(FAST_ELECTION.electionTimeoutMs)]
      : []),
    ...tlsArgs,
    ...spec.extraArgs,
  ];
}

/** A spawned etcd child and the tail of its stderr. */
interface Spawned {
  child: ChildProcess;
  tail: () => string;
}

/** Spawns etcd, registered for the exit hooks. */
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

/** Resolves when the member's `/health` (metrics port) says true; rejects if the child dies or time runs out. */
async function waitReady(spawned: Spawned, metricsPort: number, timeoutMs: number): Promise<void> {
  const { child, tail } = spawned;
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));
  const url = `http://127.0.0.1:${metricsPort}/health`;
  const deadlineAt = Date.now() + timeoutMs;
  while (Date.now() < deadlineAt) {
    if (spawnError) throw new EtcdStartError(`etcd could not be spawned: ${spawnError.message}`, '', { cause: spawnError });
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new EtcdStartError(`etcd exited during startup (code ${child.exitCode}, signal ${child.signalCode})`, tail());
    }
    if (await healthy(url)) return;
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
  child.kill('SIGKILL');
  await exited(child);
  throw new EtcdStartError(`etcd not ready after ${timeoutMs} ms`, tail());
}

/** True when a start failed because a picked port was taken meanwhile. */
export const isPortClash = (err: unknown): boolean =>
  err instanceof EtcdStartError && /address already in use/i.test(err.stderrTail);

/**
 * One member process: spawned, signalled, respawned on the same ports and
 * data dir. The owner decides when it is stopped for good.
 */
export class MemberProcess {
  private child: ChildProcess | undefined;
  private isPaused = false;

  constructor(
    private readonly bin: string,
    readonly spec: MemberSpec,
    private readonly readyTimeoutMs: number,
    private readonly logger?: ManagedLogger,
  ) {}

  /** The member's client URL. */
  get endpoint(): string {
    return clientUrl(this.spec.ports, this.spec.tls);
  }

  /** Process id of the current child, -1 before the first start. */
  get pid(): number {
    return this.child?.pid ?? -1;
  }

  /** True while the child has not exited (paused counts as alive). */
  get running(): boolean {
    return isAlive(this.child);
  }

  /** True between pause() and resume(), kill() or start(). */
  get paused(): boolean {
    return this.isPaused;
  }

  /**
   * Spawns the child at once (synchronously) and resolves once `/health` says
   * true, so that starting every member of a cluster before awaiting any works.
   */
  async start(): Promise<void> {
    const t0 = performance.now();
    const spawned = spawnEtcd(this.bin, memberArgs(this.spec));
    this.child = spawned.child;
    this.isPaused = false;
    await waitReady(spawned, this.spec.ports.metrics, this.readyTimeoutMs);
    this.logger?.info({ name: this.spec.name, pid: spawned.child.pid, clientPort: this.spec.ports.client, readyMs: Math.round(performance.now() - t0) }, 'etcd ready');
  }

  /** Sends a terminating signal and awaits the exit (a paused child is continued so SIGTERM can act). */
  async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    const wasPaused = this.isPaused;
    this.isPaused = false;
    if (!isAlive(c)) return;
    c.kill(sig);
    if (wasPaused && sig !== 'SIGKILL' && sig !== 'SIGCONT') c.kill('SIGCONT');
    await exited(c);
  }

  /** SIGTERM, SIGKILL after {@link STOP_GRACE_MS}, await the exit. */
  async terminate(): Promise<void> {
    const c = this.child;
    if (!isAlive(c)) return;
    const timer = setTimeout(() => c.kill('SIGKILL'), STOP_GRACE_MS);
    await this.kill('SIGTERM');
    clearTimeout(timer);
  }

  /** Freezes the child (SIGSTOP). */
  pause(): void {
    if (isAlive(this.child)) this.child.kill('SIGSTOP');
    this.isPaused = true;
  }

  /** Thaws the child (SIGCONT). */
  resume(): void {
    if (isAlive(this.child)) this.child.kill('SIGCONT');
    this.isPaused = false;
  }
}

/**
 * Connection options with full rights on a managed etcd: its endpoints, the
 * CA, the server certificate (which also carries client auth) as client
 * certificate — etcd 3.4 asks every client for one as soon as a trusted CA is
 * set, `--client-cert-auth` or not — and root's credentials.
 */
export function adminConnection(endpoints: string[], tls?: ManagedEtcdTls, auth?: ManagedEtcdAuth): EtcdConnectionOptions {
  const options: EtcdConnectionOptions = { endpoints };
  if (tls) {
    options.tls = { ca: readFileSync(tls.caFile), cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) };
  }
  if (auth) options.auth = { username: 'root', password: auth.rootPassword };
  return options;
}

const AUTH_CALL_MS = 5000;

/**
 * Creates user `root` with role `root` and enables authentication, unless it
 * is already enabled (auth state lives in the data dir and survives restarts),
 * in which case root's password is checked.
 * @throws {EtcdStartError} when auth is on and root's password is not `auth.rootPassword`
 */
export async function enableAuth(endpoints: string[], tls: ManagedEtcdTls | undefined, auth: ManagedEtcdAuth): Promise<void> {
  const client = createEtcdClient({ ...adminConnection(endpoints, tls), callTimeoutMs: AUTH_CALL_MS });
  const call = { ...deadline(AUTH_CALL_MS) };
  const tolerate = (re: RegExp) => (err: unknown) => {
    if (!re.test(String((err as Error)?.message))) throw err;
  };
  try {
    try {
      await client.auth.authenticate({ name: 'root', password: auth.rootPassword }, deadline(AUTH_CALL_MS));
      return; // enabled already, and the password is right
    } catch (err) {
      const message = String((err as Error)?.message);
      if (!/authentication is not enabled/i.test(message)) {
        throw new EtcdStartError(`etcd has authentication on, and root's password is not the one given: ${message}`, '', { cause: err });
      }
    }
    await client.auth.roleAdd({ name: 'root' }, call).catch(tolerate(/role name already exists/i));
    await client.auth
      .userAdd({ name: 'root', password: auth.rootPassword }, deadline(AUTH_CALL_MS))
      .catch(tolerate(/user name already exists/i));
    await client.auth.userChangePassword({ name: 'root', password: auth.rootPassword }, deadline(AUTH_CALL_MS));
    await client.auth.userGrantRole({ user: 'root', role: 'root' }, deadline(AUTH_CALL_MS));
    await client.auth.authEnable(deadline(AUTH_CALL_MS));
  } finally {
    client.close();
  }
}
