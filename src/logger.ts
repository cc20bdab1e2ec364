/**
 * Logging: one pino root, one child logger per role with fixed fields.
 * Human-readable when `pretty` (the demo), JSON otherwise.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** @default process.env.PORTWIRE_LOG_LEVEL ?? 'info' */
  level?: string;
  /** Human-readable output (synchronous, for terminals). @default false */
  pretty?: boolean;
}

/** Creates the root logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.PORTWIRE_LOG_LEVEL ?? 'info';
  if (options.pretty) {
    return pino({ level }, pretty({ sync: true, colorize: process.stdout.isTTY, ignore: 'pid,hostname' }));
  }
  return pino({ level });
}

/** A logger that drops everything (the default when the host passes none). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** The child logger of one role. */
export function roleLogger(root: Logger, role: string, fields: Record<string, unknown> = {}): Logger {
  return root.child({ role, ...fields });
}
