/**
 * The runtime's options, their documented defaults, and the one place they
 * are merged ({@link resolveOptions}).
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { EtcdConnectionOptions } from './etcd.ts';
import type { DesiredSource } from './resync.ts';
import { resolveSigning, type SigningMaterial, type SigningOptions } from './jws.ts';

/** Options of `createRuntime`. Every field is optional. */
export interface RuntimeOptions {
  /** How to reach etcd. @default endpoints ['http://127.0.0.1:2379'], callTimeoutMs 5000 */
  etcd?: EtcdConnectionOptions;
  /** Key prefix shared with the agents. @default '/networking-vpp' */
  prefix?: string;
  /** Directory of the LMDB journal; processes sharing it share one journal. @default './.portwire' */
  dataDir?: string;
  /**
   * Size limit of the journal in bytes (at least 1 MiB). Appends that would take it past
   * `mapSize` less a reserve kept for draining (1/8, within 256 KiB..64 MiB) fail with
   * JournalFullError until drained; restart with a larger value to raise it. @default 2 GiB
   */
  mapSize?: number;
  /** Election lease TTL in ms (rounded up to whole seconds, at least 2 s). @default 10000 */
  electionTtlMs?: number;
  /** Step down when no keepalive succeeded within this many ms. @default 2/3 of the TTL */
  renewDeadlineMs?: number;
  /** Keepalive period in ms. @default 1/5 of the TTL */
  keepaliveIntervalMs?: number;
  /** Batching of the drain. */
  batch?: {
    /** Ops per txn. @default read from the server (etcd's --max-txn-ops) */
    maxTxnOps?: number;
    /** Bytes of keys and values per txn. @default 1 MiB */
    maxTxnBytes?: number;
    /** Largest request etcd accepts (its --max-request-bytes). @default 1.5 MiB */
    maxRequestBytes?: number;
    /** Journal entries per drain window. @default 8192 */
    windowEntries?: number;
    /** Txns in flight. @default 16 */
    inFlight?: number;
    /**
     * How long a drain run that found the journal drained waits for another
     * append before it ends, ms: a steady trickle of binds is drained by one
     * run, not a run per bind. @default 5
     */
    lingerMs?: number;
  };
  /** Retry of an entry that fails for its own reasons. */
  retry?: {
    /** Attempts before the entry is dead-lettered. @default 6 */
    maxAttempts?: number;
    /** First retry delay in ms (doubles, with jitter). @default 200 */
    baseMs?: number;
    /** Largest retry delay in ms. @default 30000 */
    maxMs?: number;
  };
  /** Idle forwarder's safety-net poll in ms. @default 1000 */
  pollIntervalMs?: number;
  /** Backoff while etcd is unavailable: first and largest delay in ms. @default 100 / 5000 */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /**
   * While etcd refuses this identity (credentials, certificate, permission), a
   * role retries this often, in ms, showing `refused` and the error meanwhile.
   * @default 5000
   */
  refusedRetryMs?: number;
  /** Worker threads of the pool. @default 2 */
  poolSize?: number;
  /** Resync: reconcile etcd with the desired state. */
  resync?: {
    /** Run the resync role in this process. @default true */
    enabled?: boolean;
    /** Period between runs while leading, in ms (±20% jitter). @default 300000 */
    intervalMs?: number;
    /** An authoritative desired state (e.g. from the Neutron DB) replacing the journal's. */
    source?: DesiredSource;
  };
  /** The return watcher: agents' answers, port actors, host liveness. */
  returnWatcher?: {
    /** Run the return-watcher role in this process (it also feeds `canBind`). @default true */
    enabled?: boolean;
    /** Time an agent may take to confirm a binding before `portStalled`, in ms. @default 30000 */
    stallMs?: number;
    /** How often the watch asks etcd for a progress report, in ms. @default 2000 */
    progressIntervalMs?: number;
    /** A watch silent for this long is relisted, in ms. @default 3 × progressIntervalMs */
    silentMs?: number;
    /** First relist delay after a watch fault, doubling up to 5 s, in ms. @default 100 */
    backoffBaseMs?: number;
  };
  /**
   * The inspector (live visualizer, see `src/inspector/server.ts`): served by
   * `start()` once the roles run, at `rt.inspectorUrl`; closed first by `stop()`.
   * @default off (absent); when given: host '127.0.0.1', port 0 (any free port), allowPublic false
   */
  inspector?: {
    /** TCP port; 0 picks a free one. @default 0 */
    port?: number;
    /** Address to listen on; must be a loopback address unless `allowPublic`. @default '127.0.0.1' */
    host?: string;
    /** Allow a non-loopback `host` (the inspector has no authentication). @default false */
    allowPublic?: boolean;
  };
  /**
   * Sign every value written under `nodes/` and `global/` (drain and resync) as a
   * compact JWS with this Ed25519 key, so that agents holding the public key can
   * tell these writes from anyone else's (see `jws.ts`).
   * @default off (absent)
   * @throws {ValidationError} from `createRuntime` when the key is not an Ed25519 private key
   */
  signing?: SigningOptions;
  /** Run a forwarder in this process (processes that only append may set false). @default true */
  forwarder?: boolean;
  /** Directory of vhost-user sockets in VIF details. @default '/tmp' */
  vhostUserDir?: string;
  /** Network types this driver binds. @default ['vlan', 'flat', 'gpe'] */
  networkTypes?: string[];
  /**
   * Segment check's physnet test. @default reads `state/<host>/alive` and
   * `state/<host>/physnets/<physnet>` from etcd, as the reference does
   */
  physnetKnown?: (host: string, physnet: string) => boolean | Promise<boolean>;
  /** A pino logger; roles log through child loggers of it. @default silent */
  logger?: Logger;
  /** Identity written in election keys. @default `<hostname>:<pid>:<random>` */
  holderId?: string;
  /** Clock. @default Date.now */
  now?: () => number;
  /** Random source for jitter. @default Math.random */
  random?: () => number;
}

/** Options with every default applied. */
export type ResolvedOptions = Required<
  Omit<RuntimeOptions, 'physnetKnown' | 'logger' | 'batch' | 'retry' | 'etcd' | 'resync' | 'returnWatcher' | 'inspector' | 'signing'>
> & {
  etcd: EtcdConnectionOptions & { endpoints: string[]; callTimeoutMs: number };
  batch: { maxTxnOps?: number; maxTxnBytes: number; maxRequestBytes: number; windowEntries: number; inFlight: number; lingerMs: number };
  retry: Required<NonNullable<RuntimeOptions['retry']>>;
  resync: { enabled: boolean; intervalMs: number; source?: DesiredSource };
  returnWatcher: Required<NonNullable<RuntimeOptions['returnWatcher']>>;
  /** Undefined when the inspector is off. */
  inspector?: Required<NonNullable<RuntimeOptions['inspector']>>;
  physnetKnown?: RuntimeOptions['physnetKnown'];
  logger?: Logger;
  /** The signing key as PEM for the pool workers; undefined when signing is off. */
  signing?: SigningMaterial;
};

/** Merges `options` with the defaults. */
export function resolveOptions(options: RuntimeOptions = {}): ResolvedOptions {
  const ttl = Math.max(2000, Math.ceil((options.electionTtlMs ?? 10_000) / 1000) * 1000);
  return {
    etcd: {
      ...options.etcd,
      endpoints: options.etcd?.endpoints ?? ['http://127.0.0.1:2379'],
      callTimeoutMs: options.etcd?.callTimeoutMs ?? 5000,
    },
    prefix: options.prefix ?? '/networking-vpp',
    dataDir: options.dataDir ?? './.portwire',
    mapSize: options.mapSize ?? 2 * 1024 ** 3,
    electionTtlMs: ttl,
    renewDeadlineMs: options.renewDeadlineMs ?? Math.floor((ttl * 2) / 3),
    keepaliveIntervalMs: options.keepaliveIntervalMs ?? Math.floor(ttl / 5),
    batch: {
      maxTxnOps: options.batch?.maxTxnOps,
      maxTxnBytes: options.batch?.maxTxnBytes ?? 1024 * 1024,
      maxRequestBytes: options.batch?.maxRequestBytes ?? 1.5 * 1024 * 1024,
      windowEntries: options.batch?.windowEntries ?? 8192,
      inFlight: options.batch?.inFlight ?? 16,
      lingerMs: options.batch?.lingerMs ?? 5,
    },
    retry: {
      maxAttempts: options.retry?.maxAttempts ?? 6,
      baseMs: options.retry?.baseMs ?? 200,
      maxMs: options.retry?.maxMs ?? 30_000,
    },
    resync: {
      enabled: options.resync?.enabled ?? true,
      intervalMs: options.resync?.intervalMs ?? 300_000,
      source: options.resync?.source,
    },
    returnWatcher: {
      enabled: options.returnWatcher?.enabled ?? true,
      stallMs: options.returnWatcher?.stallMs ?? 30_000,
      progressIntervalMs: options.returnWatcher?.progressIntervalMs ?? 2000,
      silentMs: options.returnWatcher?.silentMs ?? 3 * (options.returnWatcher?.progressIntervalMs ?? 2000),
      backoffBaseMs: options.returnWatcher?.backoffBaseMs ?? 100,
    },
    inspector: options.inspector && {
      port: options.inspector.port ?? 0,
      host: options.inspector.host ?? '127.0.0.1',
      allowPublic: options.inspector.allowPublic ?? false,
    },
    pollIntervalMs: options.pollIntervalMs ?? 1000,
    backoffBaseMs: options.backoffBaseMs ?? 100,
    backoffMaxMs: options.backoffMaxMs ?? 5000,
    refusedRetryMs: options.refusedRetryMs ?? 5000,
    poolSize: options.poolSize ?? 2,
    forwarder: options.forwarder ?? true,
    vhostUserDir: options.vhostUserDir ?? '/tmp',
    networkTypes: options.networkTypes ?? ['vlan', 'flat', 'gpe'],
    physnetKnown: options.physnetKnown,
    logger: options.logger,
    signing: resolveSigning(options.signing),
    holderId: options.holderId ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`,
    now: options.now ?? Date.now,
    random: options.random ?? Math.random,
  };
}
