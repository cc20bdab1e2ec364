/**
 * Bounded waits on events and callbacks: a test that waits for something that
 * never comes fails with a {@link TimeoutError} naming it, instead of hanging
 * until the test's own timeout.
 */
import type { EventEmitter } from 'node:events';
import { TimeoutError } from '../../src/errors.ts';

/** An event map as `EventEmitter<T>` takes it: event name to listener arguments. */
type EventMap<T> = Record<keyof T, unknown[]>;

/**
 * The first argument of the first `name` event for which `match` is true.
 * The listener is removed once it matched, threw, or the wait timed out.
 * TypeScript does not infer `T` from a subclass of `EventEmitter<T>`: pass it,
 * e.g. `nextEvent<AgentEvents, 'confirmed'>(agents, 'confirmed', match)`.
 * @param emitter a typed emitter, e.g. `Agents` or `Runtime`
 * @param name the event
 * @param match which event counts; by default the first one
 * @param timeoutMs how long to wait
 * @throws {TimeoutError} when no matching event came within `timeoutMs`
 */
export function nextEvent<T extends EventMap<T>, N extends keyof T & string>(
  emitter: EventEmitter<T>,
  name: N,
  match: (e: T[N][0]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<T[N][0]> {
  // EventEmitter<T>'s own listener types do not resolve for a generic T
  const target = emitter as unknown as EventEmitter;
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      target.off(name, on);
    };
    const timer = setTimeout(() => {
      done();
      reject(new TimeoutError(`no matching '${name}' event within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (e: T[N][0]): void => {
      let matched: boolean;
      try {
        matched = match(e);
      } catch (err) {
        done();
        reject(err);
        return;
      }
      if (!matched) return;
      done();
      resolve(e);
    };
    target.on(name, on);
  });
}

/**
 * `promise`, or a {@link TimeoutError} naming `what` if it has not settled
 * within `timeoutMs`. The timer is cleared when it settles.
 */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} not within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
