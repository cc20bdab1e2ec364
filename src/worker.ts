/**
 * The pool worker entry. Each task names its handler by `kind`; handlers live in
 * their own modules and return plain data (errors do not cross the thread
 * boundary: a handler returns `{ ok: false, code }` rather than throwing).
 */
import type { PoolTask } from './pool.ts';

type Handler = (task: any) => unknown;

const tasks: Record<string, () => Promise<Handler>> = {
  echo: async () => (task: PoolTask) => task,
};

const loaded = new Map<string, Handler>();

export default async function run(task: PoolTask): Promise<unknown> {
  let handler = loaded.get(task.kind);
  if (!handler) {
    const load = tasks[task.kind];
    if (!load) return { ok: false, code: 'UNKNOWN_TASK', kind: task.kind };
    handler = await load();
    loaded.set(task.kind, handler);
  }
  return handler(task);
}
