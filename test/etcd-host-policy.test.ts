/**
 * The etcd client's per-member policy: skip after failures in a row, one probe
 * at a time, doubling skips, no caller waiting for another's call (a re-entrant
 * call, as etcd3 makes after an invalid auth token, must not hang).
 */
import { circuitBreaker, ConsecutiveBreaker, handleAll } from 'cockatiel';
import { describe, expect, it } from 'vitest';
import { hostSkipPolicy } from '../src/etcd-host-policy.ts';
import { EtcdUnavailableError } from '../src/errors.ts';

class Transient extends Error {}
const isRecoverable = (err: Error) => err instanceof Transient;
const fail = () => Promise.reject(new Transient('down'));
const ok = () => Promise.resolve('ok');

function setup() {
  let t = 0;
  const clock = { now: () => t, advance: (ms: number) => void (t += ms) };
  const policy = hostSkipPolicy({ failures: 3, skipMs: 100, maxSkipMs: 400, isRecoverable, now: clock.now });
  return { policy, clock };
}

describe('hostSkipPolicy', () => {
  it('skips a member after 3 recoverable failures in a row, without calling it', async () => {
    const { policy } = setup();
    for (let i = 0; i < 3; i++) await expect(policy.execute(fail)).rejects.toBeInstanceOf(Transient);
    let called = false;
    await expect(policy.execute(() => ((called = true), ok()))).rejects.toBeInstanceOf(EtcdUnavailableError);
    expect(called).toBe(false);
  });

  it('does not count answers that are not transport failures', async () => {
    const { policy } = setup();
    for (let i = 0; i < 5; i++) {
      await expect(policy.execute(fail)).rejects.toThrow();
      await expect(policy.execute(() => Promise.reject(new Error('permission denied')))).rejects.toThrow('permission');
    }
    await expect(policy.execute(ok)).resolves.toBe('ok');
  });

  it('lets one probe through when the skip ends; a failed probe doubles the skip, a good one closes', async () => {
    const { policy, clock } = setup();
    for (let i = 0; i < 3; i++) await expect(policy.execute(fail)).rejects.toThrow();
    clock.advance(100);
    await expect(policy.execute(fail)).rejects.toBeInstanceOf(Transient); // the probe
    clock.advance(100);
    await expect(policy.execute(ok)).rejects.toBeInstanceOf(EtcdUnavailableError); // skipped for 200 now
    clock.advance(100);
    let release!: (v: string) => void;
    const probe = policy.execute(() => new Promise<string>((r) => (release = r)));
    await expect(policy.execute(ok)).rejects.toBeInstanceOf(EtcdUnavailableError); // a probe is running
    release('ok');
    await expect(probe).resolves.toBe('ok');
    await expect(policy.execute(ok)).resolves.toBe('ok');
  });

  it('never makes a call wait for another: a re-entrant call while probing moves on at once', async () => {
    const { policy, clock } = setup();
    for (let i = 0; i < 3; i++) await expect(policy.execute(fail)).rejects.toThrow();
    clock.advance(100);
    // the probe re-runs itself on the same member (etcd3 does so after an invalid auth token)
    const reentrant = policy.execute(() => policy.execute(ok).catch((err: unknown) => `moved on: ${(err as Error).name}`));
    await expect(reentrant).resolves.toBe('moved on: EtcdUnavailableError');
  });

  it("cockatiel's circuit breaker, by contrast, hangs on that re-entrant call", async () => {
    // halfOpenAfter 0: the call after the one that opened the circuit is the half-open test
    const breaker = circuitBreaker(handleAll, { halfOpenAfter: 0, breaker: new ConsecutiveBreaker(1) });
    await expect(breaker.execute(fail)).rejects.toThrow();
    // as in etcd3, the re-run starts after the first answer came back (an await later)
    const reentrant = breaker.execute(async () => {
      await Promise.resolve();
      return breaker.execute(ok);
    });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([reentrant, new Promise((r) => (timer = setTimeout(() => r('still waiting'), 200)))]);
    clearTimeout(timer);
    expect(outcome).toBe('still waiting');
  });

  it('a stream opened on a member is no evidence it works', async () => {
    const { policy, clock } = setup();
    for (let i = 0; i < 3; i++) await expect(policy.execute(fail)).rejects.toThrow();
    clock.advance(100);
    const stream = { on() {} };
    expect(await policy.execute(() => stream)).toBe(stream); // opening a stream as the probe…
    await expect(policy.execute(ok)).resolves.toBe('ok'); // …leaves the next call as the probe
  });
});
