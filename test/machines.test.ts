/**
 * The role machines without I/O: their etcd/pool actors are swapped with
 * `.provide()` and time is driven by XState's SimulatedClock.
 */
import { describe, expect, it } from 'vitest';
import {
  createActor,
  createMachine,
  fromCallback,
  fromPromise,
  SimulatedClock,
  type AnyActorRef,
  type EventObject,
} from 'xstate';
import { electionMachine, type Term } from '../machines/election.ts';
import { forwarderMachine, type DrainOutput } from '../machines/forwarder.ts';
import { resyncMachine } from '../machines/resync.ts';

const term: Term = { token: '42', leaseId: '7' };

/** An election whose campaign wins at once and whose keepalive the test drives. */
function testElection(opts: { campaign?: () => Promise<Term> } = {}) {
  const keepalives: { send: (e: EventObject & Record<string, unknown>) => void }[] = [];
  const released: (Term | undefined)[] = [];
  const machine = electionMachine.provide({
    actors: {
      campaign: fromPromise(opts.campaign ?? (async () => term)),
      keepalive: fromCallback(({ sendBack }) => {
        keepalives.push({ send: sendBack });
      }),
      release: fromPromise(async ({ input }) => {
        released.push(input.term);
      }),
    },
  });
  return { machine, keepalives, released };
}

/** Runs `child` under a parent that records what the child sends to it. */
function underParent(child: typeof electionMachine, clock: SimulatedClock) {
  const notices: any[] = [];
  const parent = createMachine({
    invoke: {
      id: 'election',
      src: child,
      input: { role: 'forwarder', renewDeadlineMs: 2000, retryMs: 500 },
    },
    on: { '*': { actions: ({ event }) => void notices.push(event) } },
  });
  const actor = createActor(parent, { clock });
  actor.subscribe({ error: () => undefined });
  actor.start();
  const election = () => actor.getSnapshot().children.election as AnyActorRef;
  return { actor, notices, election };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('election machine', () => {
  it('leads after a won campaign and steps down when no keepalive succeeds within the renew deadline', async () => {
    const clock = new SimulatedClock();
    const { machine, keepalives, released } = testElection();
    const { notices, election } = underParent(machine, clock);
    await flush();
    expect(election().getSnapshot().value).toEqual({ leading: 'renewed' });
    expect(notices).toContainEqual({ type: 'ELECTED', term });

    // keepalives keep it leading past the first deadline (t = 2000)
    clock.increment(1500);
    keepalives[0].send({ type: 'KEEPALIVE_OK' });
    clock.increment(1000);
    expect(election().getSnapshot().value).toEqual({ leading: 'renewed' });

    // then silence: 2000 ms after the last success (t = 3500) it steps down, before a 3 s TTL could expire
    clock.increment(999);
    expect(election().getSnapshot().matches('leading')).toBe(true);
    clock.increment(1);
    await flush();
    expect(notices).toContainEqual({ type: 'DEPOSED', reason: 'no keepalive within the renew deadline' });
    expect(released).toEqual([term]);
    expect(election().getSnapshot().value).toBe('waiting');

    // re-campaigns after the retry delay
    clock.increment(500);
    await flush();
    expect(election().getSnapshot().value).toEqual({ leading: 'renewed' });
    expect(notices.filter((n) => n.type === 'ELECTED')).toHaveLength(2);
  });

  it('steps down at once when the lease is reported lost', async () => {
    const clock = new SimulatedClock();
    const { machine, keepalives } = testElection();
    const { notices, election } = underParent(machine, clock);
    await flush();
    keepalives[0].send({ type: 'LOST', reason: 'lease expired' });
    await flush();
    expect(notices).toContainEqual({ type: 'DEPOSED', reason: 'lease expired' });
    expect(election().getSnapshot().value).toBe('waiting');
  });

  it('retries a failed campaign after the retry delay', async () => {
    const clock = new SimulatedClock();
    let calls = 0;
    const { machine } = testElection({
      campaign: async () => {
        calls++;
        if (calls === 1) throw new Error('etcd unavailable');
        return term;
      },
    });
    const { election } = underParent(machine, clock);
    await flush();
    expect(election().getSnapshot().value).toBe('waiting');
    expect(election().getSnapshot().context.lastError).toBe('etcd unavailable');
    clock.increment(499);
    expect(calls).toBe(1);
    clock.increment(1);
    await flush();
    expect(calls).toBe(2);
    expect(election().getSnapshot().matches('leading')).toBe(true);
  });

  it('waits the slow refused delay, with the error in context, when etcd refuses this identity', async () => {
    const clock = new SimulatedClock();
    let calls = 0;
    const { machine } = testElection({
      campaign: async () => {
        calls++;
        if (calls <= 2) throw Object.assign(new Error('etcd permission denied: write /p/election/forwarder'), { code: 'ETCD_PERMISSION' });
        return term;
      },
    });
    const { election } = underParent(machine, clock);
    await flush();
    expect(election().getSnapshot().value).toBe('refused');
    expect(election().getSnapshot().context.error).toEqual({ code: 'ETCD_PERMISSION', message: 'etcd permission denied: write /p/election/forwarder' });
    // not the 500 ms retry of a failure: the refused delay (default 5 s)
    clock.increment(4999);
    await flush();
    expect(calls).toBe(1);
    clock.increment(1);
    await flush();
    expect(calls).toBe(2);
    expect(election().getSnapshot().value).toBe('refused');
    clock.increment(5000);
    await flush();
    expect(election().getSnapshot().matches('leading')).toBe(true);
    expect(election().getSnapshot().context.error).toBeUndefined();
  });

  it('resigns on STOP and ends', async () => {
    const clock = new SimulatedClock();
    const { machine, released } = testElection();
    const { election, notices } = underParent(machine, clock);
    await flush();
    election().send({ type: 'STOP' });
    await flush();
    expect(released).toEqual([term]);
    expect(notices).toContainEqual({ type: 'DEPOSED', reason: 'stopping' });
    expect(election().getSnapshot().status).toBe('done');
  });
});

/** A forwarder whose election wins at once and whose drain the test controls. */
function testForwarder(drain: (call: number) => Promise<DrainOutput>) {
  const clock = new SimulatedClock();
  const { machine: election } = testElection();
  let calls = 0;
  const machine = forwarderMachine.provide({
    actors: {
      election,
      drain: fromPromise(async () => drain(++calls)),
    },
  });
  const actor = createActor(machine, {
    clock,
    input: {
      election: { role: 'forwarder', renewDeadlineMs: 60_000, retryMs: 500 },
      pollIntervalMs: 1000,
      backoffBaseMs: 100,
      backoffMaxMs: 800,
    },
  });
  actor.subscribe({ error: () => undefined });
  actor.start();
  return { actor, clock, calls: () => calls };
}

const unavailable = () => Object.assign(new Error('etcd unavailable'), { code: 'ETCD_UNAVAILABLE' });

describe('forwarder machine', () => {
  it('drains when elected, idles, and drains again on a kick or the slow poll', async () => {
    const { actor, clock, calls } = testForwarder(async () => ({ keys: 1, entries: 1 }));
    await flush();
    expect(calls()).toBe(1);
    expect(actor.getSnapshot().value).toEqual({ leader: 'idle' });
    actor.send({ type: 'KICK' });
    await flush();
    expect(calls()).toBe(2);
    clock.increment(999);
    expect(calls()).toBe(2);
    clock.increment(1);
    await flush();
    expect(calls()).toBe(3);
  });

  it('remembers a kick that arrives during a drain and drains again at once', async () => {
    let release!: () => void;
    const { actor, calls } = testForwarder(
      (n) => (n === 1 ? new Promise((r) => (release = () => r({ keys: 0, entries: 0 }))) : Promise.resolve({ keys: 0, entries: 0 })),
    );
    await flush();
    expect(actor.getSnapshot().value).toEqual({ leader: 'draining' });
    actor.send({ type: 'KICK' });
    actor.send({ type: 'KICK' });
    release();
    await flush();
    await flush();
    expect(calls()).toBe(2);
    expect(actor.getSnapshot().value).toEqual({ leader: 'idle' });
  });

  it('backs off exponentially while etcd is unavailable, ignoring kicks, and resets on success', async () => {
    const failures = 4;
    const { actor, clock, calls } = testForwarder(async (n) => {
      if (n <= failures) throw unavailable();
      return { keys: 0, entries: 0 };
    });
    await flush();
    expect(actor.getSnapshot().value).toEqual({ leader: 'backoff' });
    const delays = [100, 200, 400, 800];
    for (const [i, d] of delays.entries()) {
      actor.send({ type: 'KICK' });
      await flush();
      expect(calls()).toBe(i + 1);
      clock.increment(d - 1);
      await flush();
      expect(calls()).toBe(i + 1);
      clock.increment(1);
      await flush();
      expect(calls()).toBe(i + 2);
    }
    expect(actor.getSnapshot().value).toEqual({ leader: 'idle' });
    expect(actor.getSnapshot().context.failures).toBe(0);
  });

  it('schedules the next drain when a deferred entry is due before the poll', async () => {
    const { clock, calls } = testForwarder(async (n) => ({ keys: 0, entries: 0, retryInMs: n === 1 ? 250 : undefined }));
    await flush();
    clock.increment(250);
    await flush();
    expect(calls()).toBe(2);
  });

  it('shows refused with the error while etcd refuses the identity, retries at the slow delay ignoring kicks, and recovers', async () => {
    const { actor, clock, calls } = testForwarder(async (n) => {
      if (n <= 3) throw Object.assign(new Error('etcd permission denied: write /p/nodes/'), { code: 'ETCD_PERMISSION' });
      return { keys: 1, entries: 1 };
    });
    await flush();
    expect(actor.getSnapshot().value).toEqual({ leader: 'refused' });
    expect(actor.getSnapshot().context.error).toEqual({ code: 'ETCD_PERMISSION', message: 'etcd permission denied: write /p/nodes/' });
    for (let i = 1; i <= 3; i++) {
      actor.send({ type: 'KICK' });
      clock.increment(4999);
      await flush();
      expect(calls()).toBe(i);
      clock.increment(1);
      await flush();
      expect(calls()).toBe(i + 1);
    }
    expect(actor.getSnapshot().value).toEqual({ leader: 'idle' });
    expect(actor.getSnapshot().context.error).toBeUndefined();
  });

  it('asks the election to step down when etcd refuses the fence, and follows', async () => {
    const { actor } = testForwarder(async () => {
      throw Object.assign(new Error('fence lost'), { code: 'NOT_LEADER' });
    });
    await flush();
    await flush();
    expect(actor.getSnapshot().value).toBe('follower');
    const election = actor.getSnapshot().children.election as AnyActorRef;
    expect(election.getSnapshot().value).toBe('waiting');
  });

  it('resigns and stops on STOP', async () => {
    const { actor } = testForwarder(async () => ({ keys: 0, entries: 0 }));
    await flush();
    actor.send({ type: 'STOP' });
    await flush();
    await flush();
    expect(actor.getSnapshot().status).toBe('done');
    expect(actor.getSnapshot().value).toBe('stopped');
  });
});

/** A resync role whose election wins at once and whose run the test controls. */
function testResync(run: (call: number) => Promise<{ scanned: number; missing: number; extra: number; changed: number; repaired: number; conflicts: number }>) {
  const clock = new SimulatedClock();
  const { machine: election } = testElection();
  let calls = 0;
  const machine = resyncMachine.provide({ actors: { election, resync: fromPromise(async () => run(++calls)) } });
  const actor = createActor(machine, {
    clock,
    input: { election: { role: 'resync', renewDeadlineMs: 60_000, retryMs: 500 }, intervalMs: 10_000 },
  });
  actor.subscribe({ error: () => undefined });
  actor.start();
  return { actor, clock, calls: () => calls };
}

const emptyReport = { scanned: 0, missing: 0, extra: 0, changed: 0, repaired: 0, conflicts: 0 };

describe('resync machine', () => {
  it('runs on gaining leadership, then every interval, and on demand', async () => {
    const { actor, clock, calls } = testResync(async () => emptyReport);
    await flush();
    expect(calls()).toBe(1);
    expect(actor.getSnapshot().value).toEqual({ leader: 'waiting' });
    clock.increment(9_999);
    expect(calls()).toBe(1);
    clock.increment(1);
    await flush();
    expect(calls()).toBe(2);
    actor.send({ type: 'RUN' });
    await flush();
    expect(calls()).toBe(3);
  });

  it('remembers a RUN that arrives during a run', async () => {
    let release!: () => void;
    const { actor, calls } = testResync((n) =>
      n === 1 ? new Promise((r) => (release = () => r(emptyReport))) : Promise.resolve(emptyReport),
    );
    await flush();
    actor.send({ type: 'RUN' });
    release();
    await flush();
    await flush();
    expect(calls()).toBe(2);
  });

  it('waits for the next interval after a failed run, and steps down when the fence is refused', async () => {
    const { actor, clock, calls } = testResync(async (n) => {
      if (n === 1) throw new Error('etcd unavailable');
      throw Object.assign(new Error('fence lost'), { code: 'NOT_LEADER' });
    });
    await flush();
    expect(actor.getSnapshot().value).toEqual({ leader: 'waiting' });
    expect(actor.getSnapshot().context.lastError).toBe('etcd unavailable');
    clock.increment(10_000);
    await flush();
    await flush();
    expect(calls()).toBe(2);
    expect(actor.getSnapshot().value).toBe('follower');
  });
});
