/**
 * Every error portwire raises. One base class, one class per failure, a
 * `recoverable` marker (retrying the same operation later may succeed) and a
 * predicate. Foreign errors (etcd3, gRPC, lmdb) are converted at the boundary
 * with {@link fromEtcdError}.
 */

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

/** The journal cannot take more entries (LMDB map full) until drained or resized. */
export class JournalFullError extends PortwireError {
  override readonly code = 'JOURNAL_FULL';
  override readonly recoverable = true;
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
]);

const TRANSIENT_MESSAGES = [
  /unavailable/i,
  /deadline/i,
  /timed? ?out/i,
  /ECONNREFUSED|ECONNRESET|EPIPE/,
  /leader changed|no leader|too many requests/i,
  /No connection established/i,
];

/**
 * Converts an error thrown by the etcd client into a portwire error: transient
 * conditions become {@link EtcdUnavailableError}, the rest {@link EtcdRejectedError}.
 */
export function fromEtcdError(err: unknown): PortwireError {
  if (err instanceof PortwireError) return err;
  const e = err as Error;
  const name = e?.constructor?.name ?? e?.name ?? '';
  const message = String(e?.message ?? err);
  if (TRANSIENT_NAMES.has(name) || TRANSIENT_MESSAGES.some((re) => re.test(message))) {
    return new EtcdUnavailableError(message, { cause: err });
  }
  return new EtcdRejectedError(message, { cause: err });
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
