/**
 * The access check a runtime makes before its roles start: it proves,
 * without writing anything, that the connection works (TLS), that etcd
 * accepts the credentials, and that the identity may read and write what the
 * enabled roles need (see `etcd-roles.ts`).
 *
 * Reads are checked with a one-key, keys-only range read. Writes are checked
 * with a txn whose compare can never hold (a version below 0) and whose
 * success branch holds a delete of the whole range: etcd checks the
 * permissions of every op of both branches before it evaluates the compare,
 * so a refusal comes back and nothing is ever applied.
 *
 * etcd merely unreachable (refused or timed-out connection, a member down) is
 * not a refusal: the check reports it and the roles back off and retry. gRPC
 * reports a handshake the server refused as UNAVAILABLE too, and its message
 * does not always carry the reason; so with TLS configured an unavailable
 * etcd is probed with a raw TLS handshake ({@link probeTls}) before it is
 * called unreachable.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Etcd3, IRequestOp } from 'etcd3';
import { deadline, prefixEnd, TXN_OPS_PROBE } from './etcd.ts';
import { EtcdTlsError, EtcdUnavailableError, fromEtcdError, type EtcdAccess } from './errors.ts';
import type { KeyLayout } from './keys.ts';

/** Options of {@link checkEtcdAccess}. */
export interface EtcdAccessOptions {
  /** Deadline of each etcd call, ms. @default 5000 */
  callTimeoutMs?: number;
  /** Roles whose election keys this process writes (campaign, release). @default [] */
  roles?: string[];
  /** Check write on `nodes/` and `global/` (a forwarder or resync runs here). @default true */
  write?: boolean;
  /** Check read of `nodes/` … `state/`, the return watcher's list and watch; else of `state/` only. @default true */
  watch?: boolean;
  /** The configured client certificate (PEM), to tell an expired one from an untrusted one. @default `tls.cert` */
  clientCert?: Buffer;
  /** The client URLs, probed with a raw TLS handshake when `tls` is set and etcd seems unavailable. */
  endpoints?: string[];
  /** The connection's TLS options (`etcd.tls`). @default none: no probe */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** Clock for the certificate's validity. @default Date.now */
  now?: () => number;
}

/** What {@link checkEtcdAccess} found when etcd did not refuse anything. */
export type EtcdAccessResult =
  | { reachable: true; checks: number }
  | { reachable: false; error: EtcdUnavailableError };

interface Check {
  access: EtcdAccess;
  /** The range as named in errors (a trailing `/`: the directory). */
  range: string;
  run(client: Etcd3, timeoutMs: number): Promise<unknown>;
}

const dir = (key: string): string => `${key}/`;

function readCheck(key: string, end: Buffer, range: string): Check {
  return {
    access: 'read',
    range,
    run: (client, timeoutMs) =>
      client.kv.range({ key: Buffer.from(key), range_end: end, limit: 1, keys_only: true }, deadline(timeoutMs)),
  };
}

/** A txn that can never apply: compare a key's version below 0; `ops` in the success branch. */
function neverTxn(compareKey: string, ops: IRequestOp[]) {
  return {
    compare: [{ key: Buffer.from(compareKey), result: 'Less' as const, target: 'Version' as const, version: '0' }],
    success: ops,
    failure: [],
  };
}

function writeDirCheck(directory: string): Check {
  const key = Buffer.from(directory);
  return {
    access: 'write',
    range: directory,
    run: (client, timeoutMs) =>
      client.kv.txn(neverTxn(directory, [{ request_delete_range: { key, range_end: prefixEnd(key) } }]), deadline(timeoutMs)),
  };
}

function electionCheck(keys: KeyLayout, roles: string[]): Check {
  const probe = keys.electionKey(TXN_OPS_PROBE);
  const puts: IRequestOp[] = roles.map((r) => ({
    request_put: { key: Buffer.from(keys.electionKey(r)), value: Buffer.alloc(0) },
  }));
  return {
    access: 'write',
    range: roles.length === 1 ? keys.electionKey(roles[0]) : dir(keys.election),
    // the compare reads the probe key; the puts need write on each role's election key
    run: (client, timeoutMs) => client.kv.txn(neverTxn(probe, puts), deadline(timeoutMs)),
  };
}

/** The checks for `options`, the first one also proving the connection and the credentials. */
function checksFor(keys: KeyLayout, o: EtcdAccessOptions): Check[] {
  const state = dir(keys.state);
  const checks = [readCheck(state, prefixEnd(Buffer.from(state)), state)];
  if (o.watch ?? true) {
    const nodes = dir(keys.nodes);
    checks.push(readCheck(nodes, prefixEnd(Buffer.from(state)), `${nodes} … ${state}`));
  }
  if (o.write ?? true) checks.push(writeDirCheck(dir(keys.nodes)), writeDirCheck(`${keys.prefix}/global/`));
  if (o.roles?.length) checks.push(electionCheck(keys, o.roles));
  return checks;
}

/** Adds what the local certificate says to a refused client certificate. */
function explainTls(err: EtcdTlsError, cert: Buffer | undefined, now: number): EtcdTlsError {
  if (!/client certificate/.test(err.reason)) return err;
  if (!cert) {
    return new EtcdTlsError('the server requires a client certificate and none is configured (etcd.tls.cert, etcd.tls.key)', { cause: err });
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch {
    return new EtcdTlsError('the client certificate (etcd.tls.cert) is not a PEM certificate', { cause: err });
  }
  if (Date.parse(x509.validTo) < now) {
    return new EtcdTlsError(`the server rejected the client certificate: it expired on ${x509.validTo}`, { cause: err });
  }
  if (Date.parse(x509.validFrom) > now) {
    return new EtcdTlsError(`the server rejected the client certificate: it is not valid before ${x509.validFrom}`, { cause: err });
  }
  return err;
}

/** What a raw TLS handshake with one endpoint showed (see {@link probeTls}). */
export type TlsProbeResult =
  | { outcome: 'accepted' }
  | { outcome: 'refused'; error: EtcdTlsError }
  | { outcome: 'unreachable'; detail: string };

/** The HTTP/2 connection preface and an empty SETTINGS frame; a server that accepted the handshake answers with its SETTINGS. */
const H2_PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

/** Codes of Node's TLS layer and of certificate verification: the handshake failed, not the network. */
const TLS_CODE = /^(ERR_SSL_|ERR_TLS_CERT|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH|INVALID_CA|INVALID_PURPOSE)/;

function tlsFailure(err: NodeJS.ErrnoException): EtcdTlsError | undefined {
  const code = err.code ?? '';
  const known = fromEtcdError(new Error(`${code} ${err.message}`));
  if (known instanceof EtcdTlsError) return known;
  return TLS_CODE.test(code) ? new EtcdTlsError(`the TLS handshake failed: ${err.message}`, { cause: err }) : undefined;
}

/**
 * Opens a TLS connection to `endpoint` with the client's CA, certificate and
 * key (ALPN h2), sends the HTTP/2 preface and waits for the server's first
 * bytes: under TLS 1.3 a server rejects the client certificate only after
 * the client considers the handshake done. Never throws.
 * @param endpoint a client URL (`https://127.0.0.1:2379`) or `host:port`
 * @returns `accepted` when the server answered; `refused` with an
 *   {@link EtcdTlsError} when the handshake failed on a certificate (an alert
 *   from the server, a server certificate that does not verify, not TLS at
 *   all); `unreachable` on a refused, reset or closed connection or no answer
 *   within `timeoutMs`
 * @example
 * const r = await probeTls('https://127.0.0.1:2379', { ca }, 2000);
 * if (r.outcome === 'refused') throw r.error;
 */
export function probeTls(endpoint: string, tls: { ca: Buffer; cert?: Buffer; key?: Buffer }, timeoutMs = 5000): Promise<TlsProbeResult> {
  const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint) ? endpoint : `https://${endpoint}`);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(url.port || 2379);
  return new Promise((resolve) => {
    let done = false;
    let socket: TLSSocket;
    try {
      socket = tlsConnect({
        host,
        port,
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        ALPNProtocols: ['h2'],
        ...(isIP(host) ? {} : { servername: host }),
      });
    } catch (err) {
      // a CA, certificate or key Node cannot load
      resolve({ outcome: 'refused', error: new EtcdTlsError(`cannot use the TLS options: ${(err as Error).message}`, { cause: err }) });
      return;
    }
    const finish = (r: TlsProbeResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ outcome: 'unreachable', detail: `no answer within ${timeoutMs} ms` }), timeoutMs);
    socket.once('secureConnect', () => socket.write(H2_PREFACE));
    socket.once('data', () => finish({ outcome: 'accepted' }));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const refused = tlsFailure(err);
      finish(refused ? { outcome: 'refused', error: refused } : { outcome: 'unreachable', detail: err.message });
    });
    socket.once('close', () => finish({ outcome: 'unreachable', detail: 'the connection was closed' }));
  });
}

/** A certificate refusal a raw handshake finds on any endpoint, once etcd seemed unavailable. */
async function probeRefusal(o: EtcdAccessOptions, timeoutMs: number, now: number): Promise<EtcdTlsError | undefined> {
  const tls = o.tls;
  if (!tls || !o.endpoints?.length) return undefined;
  const results = await Promise.all(o.endpoints.map((e) => probeTls(e, tls, timeoutMs)));
  const refused = results.find((r) => r.outcome === 'refused');
  return refused && explainTls(refused.error, o.clientCert ?? tls.cert, now);
}

/**
 * Proves that etcd accepts this client and lets it do what the enabled roles
 * need, without writing anything.
 * @returns `reachable: false` (and the error) when etcd could not be reached:
 *   not a refusal, the roles retry
 * @throws EtcdTlsError naming `etcd.tls` when a certificate was refused (with
 *   `tls` and `endpoints` given, also when gRPC only said "unavailable" and a
 *   raw handshake shows the refusal)
 * @throws EtcdAuthError naming `etcd.auth` when the credentials were refused
 * @throws EtcdPermissionError naming the first range and access refused
 * @throws EtcdRejectedError when etcd refused a check for another reason
 * @example
 * const access = await checkEtcdAccess(client, keyLayout('/networking-vpp'), { roles: ['forwarder'] });
 * if (!access.reachable) log.warn({ err: access.error }, 'etcd unreachable');
 */
export async function checkEtcdAccess(client: Etcd3, keys: KeyLayout, options: EtcdAccessOptions = {}): Promise<EtcdAccessResult> {
  const timeoutMs = options.callTimeoutMs ?? 5000;
  const now = (options.now ?? Date.now)();
  const checks = checksFor(keys, options);
  const attempt = async (c: Check): Promise<Error | undefined> => {
    try {
      await c.run(client, timeoutMs);
      return undefined;
    } catch (err) {
      const e = fromEtcdError(err, { access: c.access, range: c.range });
      return e instanceof EtcdTlsError ? explainTls(e, options.clientCert ?? options.tls?.cert, now) : e;
    }
  };
  // the first check alone: an unreachable etcd or refused credentials fail it, and only it
  const first = await attempt(checks[0]);
  if (first instanceof EtcdUnavailableError) {
    // gRPC says UNAVAILABLE for a refused handshake too: a certificate problem must not pass for an outage
    const refused = await probeRefusal(options, timeoutMs, now);
    if (refused) throw refused;
    return { reachable: false, error: first };
  }
  if (first) throw first;
  const results = await Promise.all(checks.slice(1).map(attempt));
  const refused = results.find((e) => e !== undefined && !(e instanceof EtcdUnavailableError));
  if (refused) throw refused;
  const unavailable = results.find((e) => e instanceof EtcdUnavailableError);
  if (unavailable) return { reachable: false, error: unavailable };
  return { reachable: true, checks: checks.length };
}
