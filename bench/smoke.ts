import { createRuntime } from '../src/runtime.ts';
import { createLogger } from '../src/logger.ts';
import { rmSync } from 'node:fs';
rmSync('/tmp/smoke-data', { recursive: true, force: true });
const rt = createRuntime({ etcd: { endpoints: ['http://127.0.0.1:23790'] }, dataDir: '/tmp/smoke-data', prefix: '/smoke', logger: createLogger({ level: 'info' }), electionTtlMs: 3000 });
await rt.start();
rt.on('leader', (e) => console.log('leader', e));
const N = Number(process.argv[2] ?? 10000);
const t0 = performance.now();
const ps = [];
for (let i = 0; i < N; i++) {
  ps.push(rt.bindPort({ port: { id: `p${i}`, mac_address: '12:34:56:78:9a:bc', fixed_ips: [{ subnet_id: 's1', ip_address: '10.0.0.1' }], security_groups: [] }, segment: { id: 'seg', network_type: 'vlan', physical_network: 'physnet1', segmentation_id: 100 }, host: `h${i % 20}` }));
  if (ps.length >= 1000) { await Promise.all(ps); ps.length = 0; }
}
await Promise.all(ps);
const t1 = performance.now();
console.log('journaled', N, 'ops/s', Math.round(N / ((t1 - t0) / 1000)), 'depth', rt.status().journalDepth);
await rt.drained();
const t2 = performance.now();
console.log('drained keys/s', Math.round(N / ((t2 - t1) / 1000)), rt.status());
await rt.stop();
