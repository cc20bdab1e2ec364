/**
 * The per-member fault policy of the etcd client: after `failures`
 * consecutive recoverable failures on a member, calls skip it (the client
 * moves on to the next member) for `skipMs`, doubling up to `maxSkipMs` while
 * the member keeps failing. When the skip ends, one call goes through as a
 * probe; while it runs the others still skip the member. The probe's success
 * (or an answer that is not a transport failure) closes it again. Opening a
 * stream proves nothing: a stream's failures are reported later by etcd3.
 *
 * closed ──failures in a row──▶ skipping ──skip elapsed──▶ probing ──ok──▶ closed
 *                                  ▲                          │ failed
 *                                  └──── skip × 2 ◀───────────┘
 *
 * Unlike cockatiel's circuit breaker, no caller ever waits for another's
 * call. etcd3 re-runs a call that met an invalid auth token *inside* the
 * member's policy; when that re-run lands on the same member while its
 * breaker is half-open, it waits for the test call, which is itself: every
 * later call to that member then hangs for good (seen after members of an
 * authenticated cluster restarted).
 */
import { noop, type IDefaultPolicyContext, type IPolicy } from 'cockatiel';
import { EtcdUnavailableError } from './errors.ts';

/** Options of {@link hostSkipPolicy}. */
export interface HostSkipOptions {
  /** Consecutive recoverable failures that make the member skipped. @default 3 */
  failures?: number;
  /** First skip, in ms. @default 250 */
  skipMs?: number;
  /** Longest skip, in ms. @default 5000 */
  maxSkipMs?: number;
  /** Which failures count (others are answers: they close the policy). */
  isRecoverable: (err: Error) => boolean;
  /** Member name, for the error message. */
  host?: string;
  /** @default Date.now */
  now?: () => number;
}

const isThenable = <T>(v: PromiseLike<T> | T): v is PromiseLike<T> =>
  typeof (v as { then?: unknown } | null)?.then === 'function';

/**
 * Builds the policy for one member.
 * @throws {EtcdUnavailableError} from `execute` while the member is skipped (without calling it)
 */
export function hostSkipPolicy(options: HostSkipOptions): IPolicy<IDefaultPolicyContext> {
  const { failures = 3, skipMs = 250, maxSkipMs = 5000, isRecoverable, host = 'etcd member', now = Date.now } = options;
  let consecutive = 0;
  let skip = 0; // current skip length; 0 while closed
  let skipUntil = 0;
  let probing = false;
  const open = () => {
    skip = skip === 0 ? skipMs : Math.min(maxSkipMs, skip * 2);
    skipUntil = now() + skip;
    consecutive = 0;
  };
  const policy = {
    onSuccess: noop.onSuccess,
    onFailure: noop.onFailure,
    async execute<T>(fn: (context: IDefaultPolicyContext) => PromiseLike<T> | T, signal = new AbortController().signal): Promise<T> {
      if (skip > 0 && (probing || now() < skipUntil)) throw new EtcdUnavailableError(`${host} skipped: it failed recently`);
      const probe = skip > 0;
      if (probe) probing = true;
      try {
        const pending = fn({ signal });
        // a stream (watch, keepalive) is no evidence yet: its failures come later, through etcd3's markFailed
        if (!isThenable(pending)) return pending;
        const result = await pending;
        consecutive = 0;
        skip = 0;
        return result;
      } catch (err) {
        if (!(err instanceof Error) || !isRecoverable(err)) {
          consecutive = 0;
          skip = 0;
        } else if (probe || ++consecutive >= failures) {
          open();
        }
        throw err;
      } finally {
        if (probe) probing = false;
      }
    },
  };
  return policy as unknown as IPolicy<IDefaultPolicyContext>;
}
