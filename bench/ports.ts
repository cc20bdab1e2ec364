/**
 * The `ports` scenario (issue 4), on one private etcd:
 *
 * (a) latency: 20 simulated agents (`portwire agents`, a child process,
 *     confirm delay 0) and a runtime in this process; after a warm-up (a
 *     burst of 500 binds, then 3 s at the measured rate, whose latencies are
 *     reported apart), port binds are issued at a steady 1,000/s (paced by
 *     the clock, not by the answers) and each bind's latency is measured from the `bindPort` call
 *     to its `portBound` event: journal fsync, drain to etcd, the agent's
 *     watch and write, the return watch, the port actor. Also the journal
 *     call alone. Percentiles over every bind of the measured window, and
 *     the CPU this process, the agents, etcd and other processes used in it.
 * (b) memory: 100,000 bound and confirmed ports written straight into etcd
 *     (bindings, agents' state keys, 20 alive hosts), then a fresh child
 *     process (`ports-memory-child.ts`, `--expose-gc`) starts a runtime that
 *     lists and tracks them all, and reports its RSS and heap after a GC,
 *     against the same process with a runtime on an empty prefix; plus
 *     the heap of 20,000 port actors kept alive, to show what passivation saves.
 *
 * Targets: p99 bind → active < 50 ms; no port announced before its bindPort
 * call resolved; RSS of the whole process with 100,000 tracked ports < 400 MB.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { createEtcdClient } from '../src/etcd.ts';
import { keyLayout } from '../src/keys.ts';
import { startManagedEtcd } from '../src/managed-etcd.ts';
import { createRuntime } from '../src/runtime.ts';
import { formatTable } from './drain.ts';
import type { ScenarioReport, TargetCheck } from './index.ts';
import { bindArgs, HOSTS, keyValue } from './ports-data.ts';
import { machineBusyMs, procCpuMs } from './cpu.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const hostNames = Array.from({ length: HOSTS }, (_, i) => `compute-${String(i).padStart(3, '0')}`);

/** Options of {@link runPorts}. */
export interface PortsBenchOptions {
  quick?: boolean;
  flags?: Record<string, string | boolean | undefined>;
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const mb = (b: number): number => Math.round((b / 2 ** 20) * 10) / 10;

/** Starts `portwire agents` in a child process; resolves once it reports running. */
async function startAgentsProcess(endpoint: string, prefix: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(root, 'src/cli.ts'), 'agents', '--hosts', hostNames.join(','), '--etcd', endpoint, '--prefix', prefix],
    { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (/running/.test(out)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`agents exited with ${code}: ${out}`)));
  });
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/**
 * (a): binds at `rate`/s for `seconds`, latency from the call to `portBound`,
 * and the CPU each process used meanwhile (`etcdPid`: the server's, when known).
 */
export async function latency(endpoint: string, rate: number, seconds: number, warmup: number, warmSeconds: number, etcdPid?: number) {
  const prefix = '/pw-bench-ports-latency';
  const dataDir = mkdtempSync(join(tmpdir(), 'pw-bench-ports-'));
  const agents = await startAgentsProcess(endpoint, prefix);
  const rt = createRuntime({ etcd: { endpoints: [endpoint] }, prefix, dataDir, resync: { enabled: false } });
  const started = new Map<string, number>();
  const latencies: number[] = [];
  /** ports bound in the paced warm-up, and their latencies (reported, not counted) */
  const warmPorts = new Set<string>();
  const warmLatencies: number[] = [];
  const callMs: number[] = [];
  const seenMs: number[] = [];
  const confirmMs: number[] = [];
  const wiredAt = new Map<string, number>();
  let measuring = false;
  let announced = 0;
  /** ports whose bindPort call resolved, and how many were announced before theirs did */
  const resolved = new Set<string>();
  let beforeResolved = 0;
  const waiters = new Map<string, () => void>();
  rt.on('portBound', (e) => {
    const t0 = started.get(e.port);
    announced++;
    if (!resolved.has(e.port)) beforeResolved++;
    if (t0 !== undefined && warmPorts.has(e.port)) warmLatencies.push(performance.now() - t0);
    else if (t0 !== undefined && measuring) {
      const now = performance.now();
      latencies.push(now - t0);
      const w = wiredAt.get(e.port);
      if (w !== undefined) {
        seenMs.push(w - t0);
        confirmMs.push(now - w);
      }
    }
    waiters.get(e.port)?.();
  });
  try {
    await rt.start();
    rt.ports!.on('portTransition', (t) => {
      if (t.to === 'wired' && started.has(t.port)) wiredAt.set(t.port, performance.now());
    });
    await new Promise<void>((resolve) => {
      const check = () => (rt.aliveHosts().length >= HOSTS ? resolve() : setTimeout(check, 50));
      check();
    });
    const bind = async (i: number, phase: 'burst' | 'warm' | 'measured') => {
      const args = bindArgs(i);
      const t0 = performance.now();
      if (phase !== 'burst') started.set(args.port.id, t0);
      if (phase === 'warm') warmPorts.add(args.port.id);
      await rt.bindPort(args);
      resolved.add(args.port.id);
      if (phase === 'measured') callMs.push(performance.now() - t0);
    };
    // warm-up: pool, election, agents' watches
    await Promise.all(Array.from({ length: warmup }, (_, i) => bind(i, 'burst')));
    await new Promise<void>((resolve) => {
      const check = () => (announced >= warmup ? resolve() : setTimeout(check, 20));
      check();
    });
    // paced binds `from` .. `from + count`, at `rate`/s by the clock
    const calls: Promise<void>[] = [];
    const paced = (from: number, count: number, each: (i: number) => Promise<void>) =>
      new Promise<void>((resolve) => {
        const t0 = performance.now();
        let issued = 0;
        const tick = () => {
          const due = Math.min(count, Math.floor(((performance.now() - t0) / 1000) * rate));
          while (issued < due) calls.push(each(from + issued++));
          if (issued >= count) resolve();
          else setTimeout(tick, 2);
        };
        tick();
      });
    // then a warm-up at the measured rate (the JIT settles on the steady path): reported, not counted
    const warmCount = Math.round(rate * warmSeconds);
    await paced(warmup, warmCount, (i) => bind(i, 'warm'));
    measuring = true;
    const total = rate * seconds;
    const t0 = performance.now();
    const cpu0 = { own: process.cpuUsage(), agents: procCpuMs(agents.pid!), etcd: etcdPid ? procCpuMs(etcdPid) : NaN, machine: machineBusyMs() };
    await paced(warmup + warmCount, total, (i) => bind(i, 'measured'));
    const issueSeconds = (performance.now() - t0) / 1000;
    // CPU over the measured window, in cores (ms of CPU per ms of wall time)
    const wallMs = performance.now() - t0;
    const own = process.cpuUsage(cpu0.own);
    const ownMs = (own.user + own.system) / 1000;
    const agentsMs = procCpuMs(agents.pid!) - cpu0.agents;
    const etcdMs = etcdPid ? procCpuMs(etcdPid) - cpu0.etcd : NaN;
    const cores = {
      runtime: ownMs / wallMs,
      agents: agentsMs / wallMs,
      etcd: etcdMs / wallMs,
      others: Math.max(0, machineBusyMs() - cpu0.machine - ownMs - agentsMs - (etcdMs || 0)) / wallMs,
    };
    await Promise.all(calls);
    await new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 60_000;
      const check = () => {
        if (latencies.length >= total) resolve();
        else if (Date.now() > deadline) reject(new Error(`only ${latencies.length}/${total} ports announced`));
        else setTimeout(check, 20);
      };
      check();
    });
    latencies.sort((a, b) => a - b);
    warmLatencies.sort((a, b) => a - b);
    callMs.sort((a, b) => a - b);
    seenMs.sort((a, b) => a - b);
    confirmMs.sort((a, b) => a - b);
    return {
      binds: total,
      achievedRate: Math.round(total / issueSeconds),
      p50: pct(latencies, 50),
      p90: pct(latencies, 90),
      p99: pct(latencies, 99),
      max: latencies[latencies.length - 1],
      callP50: pct(callMs, 50),
      callP99: pct(callMs, 99),
      bindingSeenP50: pct(seenMs, 50),
      bindingSeenP99: pct(seenMs, 99),
      confirmP50: pct(confirmMs, 50),
      confirmP99: pct(confirmMs, 99),
      warmSeconds,
      warmP50: pct(warmLatencies, 50),
      warmP99: pct(warmLatencies, 99),
      cores,
      /** every bind of the run, the warm-up's included */
      announcedBeforeCallResolved: beforeResolved,
    };
  } finally {
    await rt.stop();
    await stopProcess(agents);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Writes `n` bound and confirmed ports (and the hosts' alive keys) straight into etcd. */
async function populate(endpoint: string, prefix: string, n: number): Promise<void> {
  const client = createEtcdClient({ endpoints: [endpoint] });
  const keys = keyLayout(prefix);
  try {
    for (const h of hostNames) {
      await client.put(keys.stateAlive(h)).value('1');
      await client.put(keys.statePhysnet(h, 'physnet1')).value('1');
    }
    // bindings first, then the agents' answers: a state key confirms only a binding created before it
    for (const phase of ['nodes', 'state'] as const) {
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < n) {
            const from = next;
            next += 128;
            const ops = [];
            for (let i = from; i < Math.min(n, from + 128); i++) {
              const a = bindArgs(i);
              if (phase === 'nodes') {
                const { key, value } = keyValue(prefix, i);
                ops.push({ request_put: { key: Buffer.from(key), value: Buffer.from(JSON.stringify(value)) } });
              } else {
                const state = { bind_type: 'vhostuser', mac: a.port.mac_address, iface_idx: i + 1, path: `/tmp/${a.port.id}` };
                ops.push({ request_put: { key: Buffer.from(keys.statePort(a.host, a.port.id)), value: Buffer.from(JSON.stringify(state)) } });
              }
            }
            await client.kv.txn({ compare: [], success: ops, failure: [] });
          }
        }),
      );
    }
  } finally {
    client.close();
  }
}

interface MemoryReport {
  ports: number;
  rssRightAfterList: number;
  tracked: number;
  active: number;
  liveActors: number;
  listMs: number;
  baseRss: number;
  baseHeap: number;
  rss: number;
  heap: number;
  actorHeapPerActor: number;
}

/** (b): a fresh process tracks the `n` ports of `prefix` with `dataDir`; returns its report. */
async function memoryRun(endpoint: string, prefix: string, n: number, dataDir: string): Promise<MemoryReport> {
  const child = spawn(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', join(root, 'bench/ports-memory-child.ts'), endpoint, prefix, String(n), dataDir],
    { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise((r) => child.once('exit', r));
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (code !== 0 || !line) throw new Error(`memory child failed (${code}): ${out}`);
  return JSON.parse(line) as MemoryReport;
}

/**
 * (b) twice: a first leader that announces all `n` ports, then a restart on
 * the same data directory (every announcement recorded: no port actor needed).
 */
async function memory(endpoint: string, n: number): Promise<{ first: MemoryReport; restart: MemoryReport }> {
  const prefix = '/pw-bench-ports-memory';
  await populate(endpoint, prefix, n);
  const dataDir = mkdtempSync(join(tmpdir(), 'pw-bench-ports-mem-'));
  try {
    const first = await memoryRun(endpoint, prefix, n, dataDir);
    const restart = await memoryRun(endpoint, prefix, n, dataDir);
    return { first, restart };
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Seconds of binds at the measured rate before the measured window (the JIT settles on the steady path). */
const WARM_SECONDS = 3;

/** Runs the scenario. */
export async function runPorts(options: PortsBenchOptions = {}): Promise<ScenarioReport> {
  // `--memory-only`: skip (a); `--latency-only`: skip (b)
  const quick = options.quick ?? false;
  const seconds = quick ? 3 : 10;
  const n = quick ? 20_000 : 100_000;
  const etcd = await startManagedEtcd({ fastElection: false });
  try {
    console.log(`ports: load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const skipLatency = options.flags?.['memory-only'] === true;
    const latencyOnly = options.flags?.['latency-only'] === true;
    const lat = skipLatency
      ? { binds: 0, achievedRate: 0, p50: NaN, p90: NaN, p99: NaN, max: NaN, callP50: NaN, callP99: NaN, bindingSeenP50: NaN, bindingSeenP99: NaN, confirmP50: NaN, confirmP99: NaN, warmSeconds: 0, warmP50: NaN, warmP99: NaN, cores: { runtime: NaN, agents: NaN, etcd: NaN, others: NaN }, announcedBeforeCallResolved: NaN }
      : await latency(etcd.endpoints[0], 1000, seconds, 500, WARM_SECONDS, etcd.pid);
    console.log(
      formatTable([
        ['bind → active at 1,000 binds/s, 20 agents', 'ms'],
        ['p50', lat.p50.toFixed(1)],
        ['p90', lat.p90.toFixed(1)],
        ['p99', lat.p99.toFixed(1)],
        ['max', lat.max.toFixed(1)],
        ['bindPort call (journal fsync) p50 / p99', `${lat.callP50.toFixed(1)} / ${lat.callP99.toFixed(1)}`],
        ['  of which call → binding seen by the return watch, p50 / p99', `${lat.bindingSeenP50.toFixed(1)} / ${lat.bindingSeenP99.toFixed(1)}`],
        ['  of which binding seen → agent confirmation seen, p50 / p99', `${lat.confirmP50.toFixed(1)} / ${lat.confirmP99.toFixed(1)}`],
        ['achieved bind rate /s', String(lat.achievedRate)],
        ['ports announced before their bindPort call resolved (all binds)', String(lat.announcedBeforeCallResolved)],
        ['CPU meanwhile, cores: runtime (and this driver) / agents / etcd', `${lat.cores.runtime.toFixed(2)} / ${lat.cores.agents.toFixed(2)} / ${lat.cores.etcd.toFixed(2)}`],
        ['CPU of other processes meanwhile, cores (0 on a quiet machine)', lat.cores.others.toFixed(2)],
        [`before it: ${lat.warmSeconds} s warm-up at the same rate (not counted), p50 / p99`, `${lat.warmP50.toFixed(1)} / ${lat.warmP99.toFixed(1)}`],
      ]),
    );
    if (latencyOnly) {
      return {
        params: { rate: 1000, seconds, warmSeconds: WARM_SECONDS, hosts: HOSTS, agentDelayMs: 0, quick, latencyOnly },
        figures: { latency: lat },
        targets: [
          { name: 'p99 bind → active (ms)', value: lat.p99, target: '< 50', pass: lat.p99 < 50 },
      { name: 'ports announced before their bindPort call resolved', value: lat.announcedBeforeCallResolved, target: '0', pass: lat.announcedBeforeCallResolved === 0 },
        ],
      };
    }
    const { first: mem, restart } = await memory(etcd.endpoints[0], n);
    const perPortHeap = (mem.heap - mem.baseHeap) / mem.ports;
    const perPortRss = (mem.rss - mem.baseRss) / mem.ports;
    console.log(
      formatTable([
        [`${mem.ports.toLocaleString('en')} tracked ports`, 'value'],
        ['RSS total at steady state (10 s after the list), MiB', String(mb(mem.rss))],
        ['RSS total right after the first list (all announced), MiB', String(mb(mem.rssRightAfterList))],
        ['RSS total after a restart: right after the list / steady, MiB', `${mb(restart.rssRightAfterList)} / ${mb(restart.rss)}`],
        ['RSS of the same process, empty prefix, MiB', String(mb(mem.baseRss))],
        ['RSS per port, bytes', String(Math.round(perPortRss))],
        ['heap per port, bytes', String(Math.round(perPortHeap))],
        ['heap per live port actor (for comparison), bytes', String(Math.round(mem.actorHeapPerActor))],
        ['live actors / passivated', `${mem.liveActors} / ${mem.tracked - mem.liveActors}`],
        ['initial list and tracking, first leader / restart, ms', `${Math.round(mem.listMs)} / ${Math.round(restart.listMs)}`],
      ]),
    );
    const targets: TargetCheck[] = [
      { name: 'p99 bind → active (ms)', value: lat.p99, target: '< 50', pass: lat.p99 < 50 },
      { name: 'ports announced before their bindPort call resolved', value: lat.announcedBeforeCallResolved, target: '0', pass: lat.announcedBeforeCallResolved === 0 },
    ];
    if (!quick) {
      const peak = Math.max(mem.rss, mem.rssRightAfterList, restart.rss, restart.rssRightAfterList);
      targets.push({ name: 'RSS with 100,000 ports, highest of the four samples (MB)', value: Math.round(peak / 1e6), target: '< 400', pass: peak < 400e6 });
    }
    return {
      params: { rate: 1000, seconds, warmSeconds: WARM_SECONDS, hosts: HOSTS, agentDelayMs: 0, ports: n, quick },
      figures: { latency: lat, memory: { ...mem, perPortHeap, perPortRss }, restart },
      targets,
    };
  } finally {
    await etcd.stop();
  }
}
