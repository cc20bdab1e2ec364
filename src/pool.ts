/**
 * The Piscina worker pool that runs portwire's hot work off the main thread:
 * journal windows (read, coalesce, encode) and security-group translation.
 * One worker entry (`worker.ts`) dispatches on the task's `kind`.
 */
import { Piscina } from 'piscina';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

/** Options of {@link createPool}. */
export interface PoolOptions {
  /**
   * Number of worker threads.
   * @default 2
   */
  size?: number;
  /**
   * Milliseconds an idle worker is kept before it exits.
   * @default 30000
   */
  idleTimeout?: number;
}

/** A task accepted by the pool worker: `kind` selects the handler in `worker.ts`. */
export interface PoolTask {
  kind: string;
  [field: string]: unknown;
}

/** Resolves the worker entry: the compiled `.js` when shipped, else the `.ts` run through tsx. */
function workerEntry(): { filename: string; execArgv: string[] } {
  const js = fileURLToPath(new URL('./worker.js', import.meta.url));
  if (existsSync(js)) return { filename: js, execArgv: [] };
  return {
    filename: fileURLToPath(new URL('./worker.ts', import.meta.url)),
    execArgv: ['--import', 'tsx'],
  };
}

/**
 * Starts the worker pool. Call `await pool.destroy()` to stop it.
 * @example
 * const pool = createPool({ size: 2 });
 * const out = await pool.run({ kind: 'drainWindow', path, afterSeq: 0 });
 */
export function createPool(options: PoolOptions = {}): Piscina {
  const size = options.size ?? 2;
  const { filename, execArgv } = workerEntry();
  return new Piscina({
    filename,
    execArgv,
    minThreads: size,
    maxThreads: size,
    idleTimeout: options.idleTimeout ?? 30_000,
    atomics: 'disabled',
  });
}
