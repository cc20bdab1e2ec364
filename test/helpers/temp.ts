/**
 * Temporary directories for tests, removed when the test file ends (see
 * test/setup/temp-dirs.ts, a setup file of every test file).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dirs = new Set<string>();

/**
 * A fresh directory under the system's temp dir, e.g. `tempDir('pw-rw-')`.
 * @param prefix the start of its name
 */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

/** Removes every directory {@link tempDir} made in this test file. */
export function removeTempDirs(): void {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}
