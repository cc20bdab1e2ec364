/**
 * Helpers for tests against the shared etcd started by test/setup/global-etcd.ts.
 * Each test works under its own {@link uniquePrefix}, so files running in parallel
 * never see each other's keys.
 */
import { randomBytes } from 'node:crypto';
import { Etcd3, Range, type IOptions } from 'etcd3';
import { inject } from 'vitest';
import { TimeoutError } from '../../src/errors.ts';

const PAGE_SIZE = 5000;

/** Client URLs of the shared test etcd. */
export function etcdEndpoints(): string[] {
  return inject('etcdEndpoints');
}

/**
 * A fresh key prefix, e.g. `/pw-test-forwarder-3f9a0c1d`.
 * @param name short label naming the test or file
 */
export function uniquePrefix(name: string): string {
  return `/pw-test-${name}-${randomBytes(4).toString('hex')}`;
}

/**
 * An etcd3 client with a 64 MiB gRPC receive limit (see DESIGN.md pitfalls).
 * @param endpoints @default the shared test etcd
 * @param options more client options, merged over the defaults
 */
export function newClient(endpoints: string[] = etcdEndpoints(), options: Partial<IOptions> = {}): Etcd3 {
  return new Etcd3({
    ...options,
    hosts: endpoints,
    grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024, ...options.grpcOptions },
  });
}

/**
 * Every key and value under `prefix`, read in pages of 5,000 at one revision.
 * @returns key → value (utf-8), in key order
 */
export async function readPrefix(client: Etcd3, prefix: string): Promise<Map<string, string>> {
  const range = Range.prefix(prefix);
  const out = new Map<string, string>();
  let key = range.start;
  let revision: string | undefined;
  for (;;) {
    const res = await client.kv.range({ key, range_end: range.end, limit: PAGE_SIZE, revision });
    revision ??= res.header.revision;
    for (const kv of res.kvs) out.set(kv.key.toString(), kv.value.toString());
    if (!res.more || res.kvs.length === 0) return out;
    key = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
  }
}

/** `T` without its falsy members. */
export type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** @default 10000 */
  timeoutMs?: number;
  /** @default 20 */
  intervalMs?: number;
  /** What was awaited, for the timeout message. */
  what?: string;
}

/**
 * Polls `predicate` until it returns a truthy value (a throw counts as "not yet"),
 * and returns that value. The only polling allowed in tests: bounded, on a condition.
 * @throws {TimeoutError} after `timeoutMs`, with the last thrown error as cause
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 20, what = 'condition' }: WaitForOptions = {},
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value as Truthy<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) throw new TimeoutError(`waitFor: ${what} not met within ${timeoutMs} ms`, { cause: lastError });
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
