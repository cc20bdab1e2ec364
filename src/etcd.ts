/**
 * etcd access: the client with portwire's settings, fenced transactions, paged
 * range reads and the server's txn-op limit. Errors leave this module as
 * portwire errors (see `errors.ts`).
 */
import { Etcd3, type IOptions, type IRequestOp, type ITxnResponse } from 'etcd3';
import { handleWhen, noop, retry } from 'cockatiel';
import { hostSkipPolicy } from './etcd-host-policy.ts';
import { fromEtcdError, NotLeaderError } from './errors.ts';

/** How portwire connects to etcd. */
export interface EtcdConnectionOptions {
  /**
   * Client URLs of the cluster members.
   * @default ['http://127.0.0.1:2379']
   */
  endpoints?: string[];
  /** User/password authentication. */
  auth?: { username: string; password: string };
  /** TLS: CA certificate, and optionally a client certificate and key (PEM). */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /**
   * Deadline of one etcd call, in milliseconds. A call past it is an unknown outcome.
   * @default 5000
   */
  callTimeoutMs?: number;
}

/** The compare that fences a write: the role's election key still has our create revision. */
export interface Fence {
  /** Full election key of the role. */
  key: string;
  /** Create revision of our election key (the leadership term's token). */
  token: string;
  /**
   * Mod revision of our election key when set (see {@link renewEpoch}): the
   * txn is then refused once the key was touched again, which a late txn of
   * an earlier epoch of the same term cannot survive.
   */
  epoch?: string;
}

/**
 * The name under the election directory of the key {@link probeMaxTxnOps}
 * reads (never written): `<prefix>/election/max-txn-ops-probe`, readable by
 * the controller's etcd role.
 */
export const TXN_OPS_PROBE = 'max-txn-ops-probe';

/** etcd's default `--max-txn-ops`. */
export const ETCD_DEFAULT_MAX_TXN_OPS = 128;

const isRecoverable = (err: Error): boolean => fromEtcdError(err).recoverable;

/**
 * Creates an etcd client: a large gRPC receive limit (catch-up watches and
 * pages must not loop on the 4 MiB default), a member skipped for 250 ms after
 * 3 failures in a row (see `etcd-host-policy.ts`: not cockatiel's circuit
 * breaker, which can hang for good under authentication) and one fail-over
 * retry across members (none with a single member).
 */
export function createEtcdClient(options: EtcdConnectionOptions = {}): Etcd3 {
  const endpoints = options.endpoints ?? ['http://127.0.0.1:2379'];
  const hosts = endpoints.map((e) => e.replace(/^https?:\/\//, ''));
  const config: IOptions = {
    hosts,
    dialTimeout: options.callTimeoutMs ?? 5000,
    grpcOptions: {
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
    },
    faultHandling: {
      host: (host) => hostSkipPolicy({ host, failures: 3, skipMs: 250, isRecoverable }),
      global:
        hosts.length > 1 ? retry(handleWhen(isRecoverable), { maxAttempts: 1 }) : noop,
    },
  };
  // the password-to-token exchange has no deadline of its own: a paused member would hang every call
  if (options.auth) config.auth = { ...options.auth, callOptions: () => deadline(options.callTimeoutMs ?? 5000) };
  if (options.tls) {
    config.credentials = {
      rootCertificate: options.tls.ca,
      privateKey: options.tls.key,
      certChain: options.tls.cert,
    };
  }
  return new Etcd3(config);
}

/** Builds the deadline call option for one call. */
export function deadline(timeoutMs: number): { deadline: Date } {
  return { deadline: new Date(Date.now() + timeoutMs) };
}

/** The smallest key strictly after every key starting with `prefix`. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/**
 * Sends `ops` as one transaction guarded by `fence`. Resolves with the revision
 * the txn was applied at.
 * @throws NotLeaderError when etcd refused the compare (we no longer lead)
 * @throws EtcdUnavailableError on timeout or lost connection (unknown outcome)
 * @throws EtcdRejectedError when etcd refused the request itself (size, ops)
 * @throws EtcdPermissionError when this identity may not write one of the keys
 */
export async function fencedTxn(
  client: Etcd3,
  fence: Fence,
  ops: IRequestOp[],
  timeoutMs: number,
  onResponse?: (res: ITxnResponse) => void,
): Promise<string> {
  let res;
  try {
    res = await client.kv.txn(
      {
        compare: [
          fence.epoch === undefined
            ? { key: Buffer.from(fence.key), result: 'Equal', target: 'Create', create_revision: fence.token }
            : { key: Buffer.from(fence.key), result: 'Equal', target: 'Mod', mod_revision: fence.epoch },
        ],
        success: ops,
        failure: [],
      },
      deadline(timeoutMs),
    );
  } catch (err) {
    throw fromEtcdError(err, { access: 'write', range: opsRange(ops) });
  }
  if (!res.succeeded) throw new NotLeaderError(`fence ${fence.key}@${fence.token} lost`);
  onResponse?.(res);
  return res.header.revision;
}

/**
 * The key range a txn's ops write, for error messages: the longest common
 * directory (ending with `/`) of their keys.
 */
function opsRange(ops: IRequestOp[]): string | undefined {
  const keys: string[] = [];
  for (const op of ops) {
    const k = op.request_put?.key ?? op.request_delete_range?.key;
    if (k !== undefined) keys.push(k.toString());
  }
  if (keys.length === 0) return undefined;
  if (keys.length === 1) return keys[0];
  let common = keys[0];
  for (const k of keys) {
    let i = 0;
    while (i < common.length && i < k.length && common[i] === k[i]) i++;
    common = common.slice(0, i);
  }
  return common.slice(0, common.lastIndexOf('/') + 1);
}

/**
 * Starts a new epoch of a leadership term: touches the election key (same
 * value, same lease) so that its mod revision moves, and returns it. A txn
 * whose outcome was unknown (a timeout, a member paused while holding it) may
 * still land later; fenced on the old epoch, it is refused once the new one
 * exists, so it can never overwrite a newer value sent in the new epoch.
 * @throws NotLeaderError when the key is no longer ours
 * @throws EtcdUnavailableError on timeout or lost connection
 */
export async function renewEpoch(client: Etcd3, fence: Fence, timeoutMs: number): Promise<string> {
  const touch: IRequestOp = { request_put: { key: Buffer.from(fence.key), ignore_value: true, ignore_lease: true } };
  return fencedTxn(client, { key: fence.key, token: fence.token }, [touch], timeoutMs);
}

/**
 * Reads the server's txn-op limit (`--max-txn-ops`) without writing: sends
 * txns whose compare always fails carrying N read ops; etcd checks the op
 * count before evaluating the compare. Doubles, then bisects.
 * @param o.timeoutMs deadline of one txn, ms @default 5000
 * @param o.cap the largest limit looked for @default 4096
 * @param o.probeKey a key that is never written and that this identity may read
 *   (under etcd authentication: e.g. one under the prefix, see `etcd-roles.ts`)
 */
export async function probeMaxTxnOps(
  client: Etcd3,
  { timeoutMs = 5000, cap = 4096, probeKey = '\0portwire-probe-never' }: { timeoutMs?: number; cap?: number; probeKey?: string } = {},
): Promise<number> {
  const never = Buffer.from(probeKey);
  const fits = async (n: number): Promise<boolean> => {
    const op: IRequestOp = { request_range: { key: never } };
    try {
      await client.kv.txn(
        {
          compare: [{ key: never, result: 'Equal', target: 'Version', version: '1' }],
          success: new Array(n).fill(op),
          failure: [],
        },
        deadline(timeoutMs),
      );
      return true;
    } catch (err) {
      if (/too many operations/i.test(String((err as Error).message))) return false;
      throw fromEtcdError(err, { access: 'read', range: probeKey });
    }
  };
  let lo = 1;
  let hi = ETCD_DEFAULT_MAX_TXN_OPS;
  if (await fits(hi)) {
    lo = hi;
    while (lo < cap && (await fits(Math.min(cap, lo * 2)))) lo = Math.min(cap, lo * 2);
    if (lo >= cap) return cap;
    hi = lo * 2;
  }
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (await fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** One page of a range read. */
export interface KeyValue {
  key: string;
  value: Buffer;
  modRevision: string;
  createRevision: string;
}

/**
 * Reads every key under `prefix` at one revision, in pages.
 * @returns the revision read at and the keys in key order
 */
export async function readPrefixAt(
  client: Etcd3,
  prefix: string,
  options: { pageSize?: number; revision?: string; timeoutMs?: number } = {},
): Promise<{ revision: string; kvs: KeyValue[] }> {
  const pageSize = options.pageSize ?? 5000;
  const end = prefixEnd(Buffer.from(prefix));
  let start = Buffer.from(prefix);
  let revision = options.revision ?? '0';
  const kvs: KeyValue[] = [];
  for (;;) {
    let res;
    try {
      res = await client.kv.range(
        { key: start, range_end: end, limit: pageSize, revision },
        deadline(options.timeoutMs ?? 10_000),
      );
    } catch (err) {
      throw fromEtcdError(err, { access: 'read', range: prefix });
    }
    if (revision === '0') revision = res.header.revision;
    for (const kv of res.kvs) {
      kvs.push({
        key: kv.key.toString(),
        value: kv.value,
        modRevision: kv.mod_revision,
        createRevision: kv.create_revision,
      });
    }
    if (!res.more || res.kvs.length === 0) break;
    start = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
  }
  return { revision, kvs };
}
