/**
 * Refusals: etcd refused this identity (credentials, certificate,
 * permission). Shared by the role machines (their `refused` guards and
 * states, and the `error` they keep in context), their providers and what
 * reads their snapshots (status, the inspector). Pure.
 */

/** Codes of the errors that mean etcd refused this identity (see `src/errors.ts`). */
export const REFUSAL_CODES: readonly string[] = ['ETCD_AUTH', 'ETCD_TLS', 'ETCD_PERMISSION'];

/** Default wait before trying again after etcd refused this identity, ms (`refusedRetryMs`). */
export const REFUSED_RETRY_MS = 5000;

/** True when `code` is a refusal's code. */
export const isRefusalCode = (code?: string): boolean => REFUSAL_CODES.includes(code ?? '');

/** True when `error` is a refusal: retrying at once would be refused again. */
export const isRefusal = (error: unknown): boolean => isRefusalCode((error as { code?: string })?.code);

/** A refusal, as kept in a machine's context (for status and the inspector). */
export interface RefusalInfo {
  code: string;
  message: string;
}

/** An error's message, or the thrown value as text (for `lastError` in the roles' contexts). */
export const errorText = (error: unknown): string => String((error as Error)?.message ?? error);

/** True for the error a fenced txn raises when etcd refused the fence. */
export const isNotLeader = (error: unknown): boolean => (error as { code?: string })?.code === 'NOT_LEADER';

/** The context form of a refusal error. */
export const refusalInfo = (error: unknown): RefusalInfo => ({
  code: String((error as { code?: string })?.code),
  message: errorText(error),
});

/** What {@link roleRefusal} reads of a role actor's or its election's snapshot. */
export interface RefusalSnapshot {
  context?: { error?: RefusalInfo };
  children?: Record<string, { getSnapshot(): unknown } | undefined>;
}

/**
 * A role's refusal: the role's own (`error` in its context), else its
 * election child's. `election`, when given, is the election's snapshot to
 * read instead of the child's current one.
 */
export function roleRefusal(role: RefusalSnapshot | undefined, election?: RefusalSnapshot): RefusalInfo | undefined {
  const child = election ?? (role?.children?.election?.getSnapshot() as RefusalSnapshot | undefined);
  return role?.context?.error ?? child?.context?.error;
}
