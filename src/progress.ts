/**
 * A progress indicator for the CLI, with no dependency. On a TTY it redraws
 * one line with `\r` (at most every {@link ProgressOptions.redrawMs}); on
 * anything else it prints one line per 10 % step, so logs and CI output stay
 * readable.
 *
 * running ──update()*──▶ running ──done()──▶ finished (further calls ignored)
 */

/** The stream a {@link Progress} writes to: a writable with an optional TTY flag and width. */
export interface ProgressStream {
  write(chunk: string): boolean;
  isTTY?: boolean;
  columns?: number;
}

/** Options of {@link createProgress}. */
export interface ProgressOptions {
  /** Number of units of the whole task. */
  total: number;
  /** Shown before the bar, e.g. `binding ports`. */
  label: string;
  /** @default process.stdout */
  stream?: ProgressStream;
  /** Draw the `\r` bar. @default stream.isTTY */
  tty?: boolean;
  /** Smallest interval between two redraws of the bar, in ms. @default 80 */
  redrawMs?: number;
  /** Clock. @default performance.now */
  now?: () => number;
}

/** A running progress indicator; see {@link createProgress}. */
export interface Progress {
  /** Reports that `done` of `total` units are complete. */
  update(done: number): void;
  /** Draws the final state and ends the line. Idempotent. */
  done(): void;
}

const BAR_WIDTH = 30;
const STEP_PERCENT = 10;

/** Renders `[#####-----]  50%  1500/3000` (exported for tests). */
export function renderBar(done: number, total: number, width = BAR_WIDTH): string {
  const ratio = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(ratio * width);
  const pct = String(Math.floor(ratio * 100)).padStart(3);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${pct}%  ${done}/${total}`;
}

/**
 * Creates a progress indicator.
 * @example
 * const bar = createProgress({ total: 3000, label: 'binding ports' });
 * bar.update(1500);
 * bar.done();
 */
export function createProgress(options: ProgressOptions): Progress {
  const stream = options.stream ?? process.stdout;
  const tty = options.tty ?? stream.isTTY === true;
  const redrawMs = options.redrawMs ?? 80;
  const now = options.now ?? (() => performance.now());
  const { total, label } = options;
  let current = 0;
  let lastDraw = -Infinity;
  let nextStep = STEP_PERCENT;
  let finished = false;

  const draw = (): void => {
    const line = `${label} ${renderBar(current, total)}`;
    const width = stream.columns || 120;
    stream.write(`\r${line.slice(0, Math.max(10, width - 1))}`);
    lastDraw = now();
  };

  const printSteps = (): void => {
    const pct = total > 0 ? Math.min(100, Math.floor((current / total) * 100)) : 100;
    if (pct < nextStep) return;
    const step = pct - (pct % STEP_PERCENT);
    stream.write(`${label}: ${step}% (${Math.min(current, total)}/${total})\n`);
    nextStep = step + STEP_PERCENT;
  };

  return {
    update(done) {
      if (finished) return;
      current = done;
      if (!tty) return printSteps();
      if (now() - lastDraw >= redrawMs) draw();
    },
    done() {
      if (finished) return;
      if (tty) {
        draw();
        stream.write('\n');
      } else {
        printSteps();
      }
      finished = true;
    },
  };
}
