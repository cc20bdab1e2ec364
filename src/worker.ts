/**
 * The pool worker entry. Each task names its handler by `kind`; handlers live in
 * their own modules and return plain data (errors do not cross the thread
 * boundary: a handler returns `{ ok: false, code }` rather than throwing).
 * Handlers are imported statically: a dynamic import of a `.ts` module is not
 * resolved inside worker threads.
 */
import type { PoolTask } from './pool.ts';
import drainWindow from './drain-window.ts';
import applied from './apply-applied.ts';
import resyncDiff from './resync-diff.ts';
import translateGroups from './translate-task.ts';

type Handler = (task: any) => unknown;

const tasks: Record<string, Handler> = {
  echo: (task: PoolTask) => task,
  drainWindow,
  applied,
  resyncDiff,
  translateGroups,
};

export default function run(task: PoolTask): unknown {
  const handler = tasks[task.kind];
  if (!handler) return { ok: false, code: 'UNKNOWN_TASK', kind: task.kind };
  return handler(task);
}
