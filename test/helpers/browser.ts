/**
 * Headless Chromium for the browser tests, through playwright-core and the
 * system's Chromium (Debian's `chromium` package, installed by
 * src/bootstrap.mjs before `npm test` when running as root with apt). No
 * browser is ever downloaded.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';

const NAMES = ['chromium', 'chromium-browser'];
const FALLBACKS = ['/usr/bin/chromium', '/usr/lib/chromium/chromium'];

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * The Chromium executable: `$CHROMIUM_BIN`, else `chromium` (or
 * `chromium-browser`) on `PATH`, else Debian's usual paths; undefined when none.
 */
export function chromiumPath(): string | undefined {
  if (process.env.CHROMIUM_BIN) return executable(process.env.CHROMIUM_BIN) ? process.env.CHROMIUM_BIN : undefined;
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  const candidates = [...NAMES.flatMap((n) => dirs.map((d) => join(d, n))), ...FALLBACKS];
  return candidates.find(executable);
}

/** Why the browser tests cannot run here, or undefined when they can. */
export function chromiumMissing(): string | undefined {
  if (chromiumPath()) return undefined;
  return (
    'no Chromium found (looked for $CHROMIUM_BIN, chromium on PATH, /usr/bin/chromium): ' +
    'install it with `apt-get install chromium` (npm test does so when run as root with apt)'
  );
}

/**
 * Launches headless Chromium. The caller closes it (in `afterAll`).
 * @throws Error naming what to install when no Chromium is found
 * @example
 * const browser = await launchChromium();
 * afterAll(() => browser.close());
 */
export async function launchChromium(): Promise<Browser> {
  const executablePath = chromiumPath();
  if (!executablePath) throw new Error(chromiumMissing());
  return chromium.launch({
    executablePath,
    headless: true,
    // root in a container: no user namespaces for the sandbox, a small /dev/shm
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 30_000,
  });
}
