/**
 * The benchmark harness: `npm run bench -- [scenario...] [--flags]`
 * (`tsx bench/index.ts drain --quick`). With no scenario every registered one
 * runs, in table order.
 *
 * A scenario is `run(options) → ScenarioReport`: it prints its own human
 * table and returns its figures; this file writes them to
 * `bench/results/<scenario>.json` with the date, the Node version and the
 * machine. A scenario that returns nothing is assumed to have written its own
 * results. Flags are passed to every scenario (unknown ones are ignored).
 *
 * To add a scenario, add one row to {@link SCENARIOS} (or, for a file that may
 * not exist yet, to {@link OPTIONAL_SCENARIOS}).
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, type as osType, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runDrain } from './drain.ts';

/** Command-line options, as every scenario receives them. */
export interface BenchOptions {
  /** `--quick`: a smaller run, for a smoke test. */
  quick: boolean;
  /** `--ports N` (drain: port binds journaled and drained). */
  ports?: number;
  /** `--strict`: exit with status 1 when a target fails. */
  strict: boolean;
  /** Every flag as given, for scenario-specific ones. */
  flags: Record<string, string | boolean | undefined>;
}

/** A target a scenario checks: printed with PASS/FAIL. */
export interface TargetCheck {
  name: string;
  value: number;
  /** e.g. `>= 0.8` or `< 20` */
  target: string;
  pass: boolean;
}

/** What a scenario returns. */
export interface ScenarioReport {
  /** Every measured figure (written to the JSON file). */
  figures: Record<string, unknown>;
  /** The targets and whether they pass. */
  targets?: TargetCheck[];
  /** How the run was parameterised. */
  params?: Record<string, unknown>;
}

type Runner = (options: BenchOptions) => Promise<ScenarioReport | void>;

interface Scenario {
  name: string;
  about: string;
  run: Runner;
}

const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));

/** Scenarios always present. */
const SCENARIOS: Scenario[] = [
  {
    name: 'drain',
    about: 'raw etcd txns vs journal + drain vs one put at a time (issue 2)',
    run: (o) => runDrain({ ports: o.ports, quick: o.quick, sign: o.flags.sign === true }),
  },
];

/**
 * Scenarios living in files other engineers write: registered only when the
 * file exists and exports the function. Add `resync` and `ports` here.
 */
const OPTIONAL_SCENARIOS: { name: string; about: string; file: string; exportName: string }[] = [
  { name: 'translate', about: 'security-group rule translation (issue 3)', file: './translate.ts', exportName: 'runTranslate' },
  { name: 'resync', about: 'resync of 100,000 desired keys with 1% drift (issue 5)', file: './resync.ts', exportName: 'runResync' },
  { name: 'ports', about: 'bind → active latency and memory per port (issue 4)', file: './ports.ts', exportName: 'runPorts' },
];

async function registry(): Promise<Scenario[]> {
  const all = [...SCENARIOS];
  for (const s of OPTIONAL_SCENARIOS) {
    if (!existsSync(here(s.file))) continue;
    const mod = (await import(s.file)) as Record<string, unknown>;
    const fn = mod[s.exportName];
    if (typeof fn !== 'function') {
      console.warn(`bench: ${s.file} does not export ${s.exportName}; '${s.name}' skipped`);
      continue;
    }
    all.push({ name: s.name, about: s.about, run: fn as Runner });
  }
  return all;
}

/** Date, Node version and machine, stamped on every result file. */
export function machineInfo(): Record<string, unknown> {
  const c = cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    machine: {
      cpus: c.length,
      model: c[0]?.model ?? 'unknown',
      os: `${osType()} ${release()}`,
      memoryBytes: totalmem(),
    },
  };
}

function writeResult(name: string, report: ScenarioReport): string {
  const dir = here('./results/');
  mkdirSync(dir, { recursive: true });
  const file = `${dir}${name}.json`;
  writeFileSync(file, `${JSON.stringify({ scenario: name, ...machineInfo(), ...report }, null, 2)}\n`);
  return file;
}

function parse(argv: string[]): { names: string[]; options: BenchOptions } {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: false,
    allowPositionals: true,
    options: {
      quick: { type: 'boolean' },
      strict: { type: 'boolean' },
      ports: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  let ports: number | undefined;
  if (values.ports !== undefined) {
    ports = Number(values.ports);
    if (!Number.isInteger(ports) || ports <= 0) throw new Error(`--ports must be a positive integer, got ${String(values.ports)}`);
  }
  return {
    names: positionals,
    options: { quick: values.quick === true, strict: values.strict === true, ports, flags: values },
  };
}

async function main(): Promise<void> {
  const { names, options } = parse(process.argv.slice(2));
  const all = await registry();
  if (options.flags.help) {
    console.log('usage: npm run bench -- [scenario...] [--quick] [--strict] [--ports N]\n\nscenarios:');
    for (const s of all) console.log(`  ${s.name.padEnd(10)} ${s.about}`);
    return;
  }
  const unknown = names.filter((n) => !all.some((s) => s.name === n));
  if (unknown.length) {
    throw new Error(`unknown scenario(s): ${unknown.join(', ')}; known: ${all.map((s) => s.name).join(', ')}`);
  }
  const chosen = names.length ? all.filter((s) => names.includes(s.name)) : all;
  let failedTargets = 0;
  for (const s of chosen) {
    console.log(`\n=== ${s.name}: ${s.about}${options.quick ? ' (quick)' : ''}`);
    const report = await s.run(options);
    if (!report) continue;
    failedTargets += (report.targets ?? []).filter((t) => !t.pass).length;
    console.log(`results: ${writeResult(s.name, report)}`);
  }
  if (failedTargets > 0) {
    console.log(`\n${failedTargets} target(s) FAILED`);
    if (options.strict) process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
