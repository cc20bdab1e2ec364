/**
 * vitest global setup: one etcd shared by every test file. Uses `ETCD_ENDPOINTS`
 * (comma-separated) when set, else starts a managed etcd and stops it at teardown.
 * Tests read the endpoints with `inject('etcdEndpoints')` (see test/helpers/etcd.ts).
 */
import type { TestProject } from 'vitest/node';
import { startManagedEtcd } from '../../src/managed-etcd.ts';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const external = (process.env.ETCD_ENDPOINTS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (external.length > 0) {
    project.provide('etcdEndpoints', external);
    return async () => {};
  }
  const etcd = await startManagedEtcd();
  project.provide('etcdEndpoints', etcd.endpoints);
  return () => etcd.stop();
}
