/**
 * Every error portwire raises. One base class, one class per failure, a
 * `recoverable` marker (retrying the same operation later may succeed) and a
 * predicate. Foreign errors (etcd3, gRPC, lmdb) are converted at the boundary
 * with {@link fromEtcdError}.
 */

import type { JournalUsage } from './journal.ts';

/** Base class of every portwire error. */
export class PortwireError extends Error {
  /** Stable machine-readable code. */
  readonly code: string = 'PORTWIRE';
  /** True when the same operation may succeed if retried later. */
  readonly recoverable: boolean = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An API input was refused; nothing was journaled. */
export class ValidationError extends PortwireError {
  override readonly code = 'INVALID_INPUT';
  /**
   * @param field dotted path of the offending field, e.g. `port.mac_address`
   * @param reason why it was refused
   */
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`invalid ${field}: ${reason}`);
  }
}

/**
 * The journal refused new entries: they would take it past its size limit
 * (`mapSize` less the reserve kept for draining). Nothing was written; appends
 * succeed again once the forwarder has drained room, or after a restart with
 * a larger `mapSize`.
 */
export class JournalFullError extends PortwireError {
  override readonly code = 'JOURNAL_FULL';
  override readonly recoverable = true;
  /** How full the journal was when it refused (bytes, entries), when known. */
  readonly usage?: JournalUsage;
  constructor(message: string, options?: { cause?: unknown; usage?: JournalFullError['usage'] }) {
    super(message, options);
    this.usage = options?.usage;
  }
}

/** The runtime was used before `start()` or after `stop()`. */
export class RuntimeStateError extends PortwireError {
  override readonly code = 'RUNTIME_STATE';
}

/** etcd could not be reached or did not answer in time: outcome unknown. */
export class EtcdUnavailableError extends PortwireError {
  override readonly code = 'ETCD_UNAVAILABLE';
  override readonly recoverable = true;
}

/** etcd refused a request for a reason of the request itself (size, permission…). */
export class EtcdRejectedError extends PortwireError {
  override readonly code = 'ETCD_REJECTED';
}

/** What an etcd permission covers, as named in {@link EtcdPermissionError}. */
export type EtcdAccess = 'read' | 'write';

/**
 * etcd refused the credentials: wrong user or password, a user that was
 * deleted, authentication required but none configured, or configured while
 * etcd has it off. Names the option `etcd.auth`. Not recoverable by retrying.
 */
export class EtcdAuthError extends PortwireError {
  override readonly code = 'ETCD_AUTH';
  readonly field = 'etcd.auth';
  /** @param reason what etcd refused, in words */
  constructor(
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`etcd.auth: ${reason}`, options);
  }
}

/**
 * The TLS handshake failed for a certificate: the server's is not trusted by
 * `etcd.tls.ca`, or the server rejected the client's (expired, untrusted,
 * missing). Names the option `etcd.tls`. Not recoverable by retrying.
 */
export class EtcdTlsError extends PortwireError {
  override readonly code = 'ETCD_TLS';
  readonly field = 'etcd.tls';
  /** @param reason what failed, in words */
  constructor(
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`etcd.tls: ${reason}`, options);
  }
}

/**
 * etcd's roles do not allow this identity an access it needs, e.g. `write
 * /networking-vpp/nodes/`. Not recoverable by retrying the same request (an
 * operator must grant it; roles retry slowly meanwhile).
 */
export class EtcdPermissionError extends PortwireError {
  override readonly code = 'ETCD_PERMISSION';
  /**
   * @param access the access refused
   * @param range the key or key range (a trailing `/` means the whole directory), when known
   */
  constructor(
    readonly access: EtcdAccess,
    readonly range: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(`etcd permission denied: ${access} ${range ?? '(key range not known here)'}`, options);
  }
}

/** True for the errors that mean etcd refused this identity (credentials, certificate, permission). */
export function isEtcdRefusal(err: unknown): boolean {
  return err instanceof EtcdAuthError || err instanceof EtcdTlsError || err instanceof EtcdPermissionError;
}

/** A fenced write was refused by etcd: this process no longer leads the role. */
export class NotLeaderError extends PortwireError {
  override readonly code = 'NOT_LEADER';
  override readonly recoverable = true;
}

/** A wait (e.g. `drained()`) ran out of time. */
export class TimeoutError extends PortwireError {
  override readonly code = 'TIMEOUT';
  override readonly recoverable = true;
}

/** True when retrying the operation later may succeed. */
export function isRecoverable(err: unknown): boolean {
  return err instanceof PortwireError && err.recoverable;
}

const TRANSIENT_NAMES = new Set([
  'GRPCUnavailableError',
  'GRPCDeadlineExceededError',
  'GRPCCancelledError',
  'GRPCConnectFailedError',
  'GRPCInternalError',
  'GRPCUnknownError',
  'ClientClosedError',
  'EtcdLeaseInvalidError',
  'EtcdWatchStreamEnded',
  // etcd3 re-authenticates on these; if one still surfaces, the next call gets a fresh token
  'EtcdInvalidAuthTokenError',
]);

const TRANSIENT_MESSAGES = [
  /unavailable/i,
  /deadline/i,
  /timed? ?out/i,
  /ECONNREFUSED|ECONNRESET|EPIPE/,
  /leader changed|no leader|too many requests/i,
  /No connection established/i,
  /invalid auth token|revision of auth store is old/i,
];

/** Credential refusals, as etcd 3.4 words them (etcd3 passes the server's text on). */
const AUTH_MESSAGES: [RegExp, string][] = [
  [/authentication failed|invalid user ID or password/i, 'etcd refused the user name or password'],
  [/user name is empty/i, 'etcd requires authentication: configure a user and password'],
  [/authentication is not enabled/i, 'a user is configured but etcd has authentication off'],
];

/**
 * Certificate failures of the TLS handshake, as Node and gRPC word them (they
 * reach the caller as UNAVAILABLE). A socket closed mid-handshake stays
 * "unavailable": a member being restarted does that too.
 */
const TLS_MESSAGES: [RegExp, string][] = [
  [
    /unable to verify the first certificate|self[- ]signed certificate|unable to get (local )?issuer certificate|certificate signature failure/i,
    'the server certificate is not trusted by etcd.tls.ca',
  ],
  [/CERT_HAS_EXPIRED|certificate has expired/i, 'the server certificate has expired'],
  [/does not match certificate's altnames|ERR_TLS_CERT_ALTNAME_INVALID/i, 'the server certificate does not name this endpoint'],
  [
    /alert (bad certificate|certificate expired|certificate required|unknown ca|certificate unknown|certificate revoked|unsupported certificate)|SSL alert number (42|43|44|45|46|48|116)\b/i,
    'the server rejected the client certificate (expired, not signed by a CA it trusts, or missing)',
  ],
  [/wrong version number|packet length too long/i, 'the server did not answer TLS (does it serve plain http?)'],
];

/** What a caller knows about the request that failed, for the error's message. */
export interface EtcdRequestContext {
  /** The key or key range the request touched (a trailing `/` means the directory). */
  range?: string;
  /** The access it needed. @default 'write' */
  access?: EtcdAccess;
}

/**
 * Converts an error thrown by the etcd client into a portwire error:
 * refused credentials become {@link EtcdAuthError}, certificate failures
 * {@link EtcdTlsError}, refused permissions {@link EtcdPermissionError}
 * (named with `context`), transient conditions {@link EtcdUnavailableError},
 * the rest {@link EtcdRejectedError}.
 */
export function fromEtcdError(err: unknown, context: EtcdRequestContext = {}): PortwireError {
  if (err instanceof PortwireError) return err;
  const e = err as Error;
  const name = e?.constructor?.name ?? e?.name ?? '';
  const message = String(e?.message ?? err);
  const refusal = refusalOf(name, message, context, err);
  if (refusal) return refusal;
  if (TRANSIENT_NAMES.has(name) || TRANSIENT_MESSAGES.some((re) => re.test(message))) {
    return new EtcdUnavailableError(message, { cause: err });
  }
  return new EtcdRejectedError(message, { cause: err });
}

function refusalOf(name: string, message: string, context: EtcdRequestContext, cause: unknown): PortwireError | undefined {
  if (name === 'EtcdPermissionDeniedError' || /permission denied|PERMISSION_DENIED|PermissionDenied/.test(message)) {
    return new EtcdPermissionError(context.access ?? 'write', context.range, { cause });
  }
  if (name === 'EtcdAuthenticationFailedError') return new EtcdAuthError(AUTH_MESSAGES[0][1], { cause });
  for (const [re, reason] of AUTH_MESSAGES) if (re.test(message)) return new EtcdAuthError(reason, { cause });
  for (const [re, reason] of TLS_MESSAGES) if (re.test(message)) return new EtcdTlsError(reason, { cause });
  return undefined;
}

/** A managed etcd server could not be started (binary missing, died, or not ready in time). */
export class EtcdStartError extends PortwireError {
  override readonly code = 'ETCD_START';
  /**
   * @param message what went wrong
   * @param stderrTail the last few KB of etcd's stderr, appended to the message
   */
  constructor(
    message: string,
    readonly stderrTail: string,
    options?: { cause?: unknown },
  ) {
    super(stderrTail ? `${message}\n--- etcd stderr (tail) ---\n${stderrTail}` : message, options);
  }
}

/** Why a signed value was refused (see `jws.ts`). */
export type SignatureRejection = 'unsigned' | 'malformed' | 'algorithm' | 'path' | 'signature';

/** A value read from etcd is not signed with the expected key: it must not be acted on. */
export class SignatureError extends PortwireError {
  override readonly code = 'BAD_SIGNATURE';
  /**
   * @param key the etcd key the value was read under
   * @param reason the kind of rejection
   * @param detail what exactly was wrong
   */
  constructor(
    readonly key: string,
    readonly reason: SignatureRejection,
    detail: string,
  ) {
    super(`value of ${key} rejected (${reason}): ${detail}`);
  }
}
