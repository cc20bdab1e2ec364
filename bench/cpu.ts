/**
 * CPU time of processes and of the whole machine, from /proc (Linux; NaN
 * elsewhere): what the benchmarks use to explain their rates on a machine
 * whose cores the measured processes share with each other and with others.
 */
import { readFileSync } from 'node:fs';

const CLOCK_TICKS = 100;

/** CPU ms (user + system) of process `pid`, all its threads. */
export function procCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** Busy CPU ms of the whole machine (all but idle and iowait). */
export function machineBusyMs(): number {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return ((user + nice + system + irq + softirq + steal) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
