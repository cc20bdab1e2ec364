/**
 * The `portwire` operator CLI. One table ({@link COMMANDS}) names every
 * command, its options and its handler; `main` finds the command, parses its
 * flags with `util.parseArgs` and maps failures to exit codes:
 * 0 success, 1 a portwire error (message printed), 2 a usage error.
 *
 * Run as `portwire <command>` (src/bin.mjs) or `tsx src/cli.ts <command>`.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createAgents } from './agents.ts';
import { DEMO_DEFAULTS, DEMO_MAX_PORTS, runDemo } from './demo.ts';
import { PortwireError, TimeoutError } from './errors.ts';
import { Journal, JOURNAL_FILE, type DeadLetter } from './journal.ts';
import { resolveOptions } from './options.ts';
import { RESYNC_ROLE, type ResyncReport } from './resync.ts';
import { createRuntime, type Runtime } from './runtime.ts';
import { machines } from '../machines/index.ts';
import { machineToJson, machineToMermaid } from './machine-export.ts';
import { agentRole, etcdctlCommands } from './etcd-roles.ts';

/** Where a command writes. */
export interface CliIo {
  stdout: { write(s: string): boolean };
  stderr: { write(s: string): boolean };
}

/** One flag of a command, as `util.parseArgs` takes it, plus its help text. */
interface Flag {
  type: 'string' | 'boolean';
  short?: string;
  /** Placeholder shown in help, e.g. `N`. */
  arg?: string;
  help: string;
}

type Values = Record<string, string | boolean | undefined>;

/** A command of the table. */
interface Command {
  /** One line for the command list. */
  summary: string;
  /** Positional arguments in the usage line, e.g. `[ID...]`; none accepted when absent. */
  positionals?: string;
  flags: Record<string, Flag>;
  run(values: Values, positionals: string[], io: CliIo): Promise<number>;
}

/** A wrong command line: printed with a hint, exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

const dataDirFlag: Flag = {
  type: 'string',
  arg: 'D',
  help: `journal directory (default ${resolveOptions().dataDir})`,
};

function int(values: Values, name: string, dflt: number, min: number, max: number): number {
  const raw = values[name];
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (typeof raw !== 'string' || !/^\d+$/.test(raw) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got '${String(raw)}'`);
  }
  return n;
}

function str(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

/**
 * The absolute `--data-dir` (or the default), which must hold a journal.
 * @throws PortwireError when it holds none (nothing is created)
 */
function journalDir(values: Values): string {
  const dir = resolve(str(values, 'data-dir') ?? resolveOptions().dataDir);
  if (!existsSync(join(dir, JOURNAL_FILE))) {
    throw new PortwireError(`no journal in ${dir} (see --data-dir)`);
  }
  return dir;
}

/** Opens the journal of `--data-dir` without creating one, runs `fn`, closes it. */
async function withJournal<T>(values: Values, fn: (j: Journal) => Promise<T> | T): Promise<T> {
  const journal = Journal.open(journalDir(values));
  try {
    return await fn(journal);
  } finally {
    await journal.close();
  }
}

/** `--etcd` as a list of URLs, else `$ETCD_ENDPOINTS`, else undefined (the runtime's default). */
function etcdFlag(values: Values, env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  const split = (s: string) => s.split(',').map((u) => u.trim()).filter(Boolean);
  const flag = str(values, 'etcd');
  if (flag !== undefined) {
    const list = split(flag);
    if (list.length === 0) throw new UsageError('--etcd needs at least one URL');
    return list;
  }
  const list = split(env.ETCD_ENDPOINTS ?? '');
  return list.length > 0 ? list : undefined;
}

/** The PEM text of the key file named by `--<flag>`, or undefined when the flag is absent. */
function keyFileFlag(values: Values, flag: string): string | undefined {
  const file = str(values, flag);
  if (file === undefined) return undefined;
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--${flag}: cannot read ${file}: ${(err as Error).message}`);
  }
}

/** `--signing-key` and `--key-id` as the runtime's `signing` option. */
function signingFlags(values: Values): { privateKey: string; keyId?: string } | undefined {
  const privateKey = keyFileFlag(values, 'signing-key');
  const keyId = str(values, 'key-id');
  if (privateKey === undefined) {
    if (keyId !== undefined) throw new UsageError('--key-id needs --signing-key');
    return undefined;
  }
  return keyId === undefined ? { privateKey } : { privateKey, keyId };
}

function prefixFlag(values: Values): string | undefined {
  const prefix = str(values, 'prefix');
  if (prefix !== undefined && !prefix.startsWith('/')) throw new UsageError("--prefix must start with '/'");
  return prefix;
}

/** The one-line summary of a resync report. */
function resyncSummary(r: ResyncReport): string {
  const fields: [string, string | number][] = [
    ['revision', r.revision],
    ['scanned', r.scanned],
    ['missing', r.missing],
    ['extra', r.extra],
    ['changed', r.changed],
    ['repaired', r.repaired],
    ['skipped', r.skipped],
    ['conflicts', r.conflicts],
    ['emptied', r.emptied ? 'yes' : 'no'],
    ['duration', `${r.durationMs} ms`],
  ];
  return `resync${r.dryRun ? ' (dry run)' : ''}: ${fields.map(([k, v]) => `${k} ${v}`).join(', ')}`;
}

/** The differences of a report, one `kind  key` per line, and how many were left out. */
function resyncDifferences(r: ResyncReport): string[] {
  const lines = r.differences.map((d) => `${d.kind.padEnd(7)}  ${d.key}`);
  const more = r.missing + r.extra + r.changed - r.differences.length;
  if (more > 0) lines.push(`... and ${more} more`);
  return lines;
}

/** Resolves when `rt` leads the resync role; rejects with a TimeoutError after `timeoutMs`. */
function leadership(rt: Runtime, timeoutMs: number): { elected: Promise<void>; cancel(): void } {
  let cancel = (): void => {};
  const elected = new Promise<void>((res, rej) => {
    const onLeader = (e: { role: string }): void => {
      if (e.role !== RESYNC_ROLE) return;
      cancel();
      res();
    };
    const timer = setTimeout(() => {
      cancel();
      rej(new TimeoutError(`another process leads resync (not elected within ${timeoutMs} ms): run it there, or use --dry-run`));
    }, timeoutMs);
    cancel = () => {
      clearTimeout(timer);
      rt.off('leader', onLeader);
    };
    rt.on('leader', onLeader);
  });
  return { elected, cancel: () => cancel() };
}

function formatDead(letters: DeadLetter[]): string {
  const rows = letters.map((d) => [String(d.id), String(d.attempts), new Date(d.at).toISOString(), d.key, d.error]);
  const head = ['ID', 'ATTEMPTS', 'TIME', 'KEY', 'ERROR'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

function deadJson(d: DeadLetter): object {
  const valueBytes = d.value === null ? 0 : Buffer.byteLength(d.value);
  const { value: _value, ...rest } = d;
  return { ...rest, time: new Date(d.at).toISOString(), valueBytes };
}

/**
 * Every command. Later issues add theirs here (e.g. `agents`,
 * `machines export`): a key of one or two words, flags, and a handler.
 */
export const COMMANDS: Record<string, Command> = {
  agents: {
    summary: 'run simulated compute agents that answer port bindings in etcd, until Ctrl-C',
    flags: {
      hosts: { type: 'string', arg: 'N|a,b', help: "agents: a count (compute-1..compute-N) or host names (default 3)" },
      physnets: { type: 'string', arg: 'a,b', help: "physnets each agent announces (default 'physnet1')" },
      delay: { type: 'string', arg: 'MS', help: 'delay before a bound port is confirmed (default 0)' },
      jitter: { type: 'string', arg: 'MS', help: 'plus a uniform random 0..MS (default 0)' },
      'failure-rate': { type: 'string', arg: 'F', help: 'probability 0..1 that a port is never confirmed (default 0)' },
      style: { type: 'string', arg: 'vpp|calico', help: 'state value: interface props or {"status":"up"} (default vpp)' },
      ttl: { type: 'string', arg: 'S', help: 'TTL of the alive key\'s lease, seconds (default 10)' },
      etcd: { type: 'string', arg: 'URL,...', help: "etcd to use (default $ETCD_ENDPOINTS, else 'http://127.0.0.1:2379')" },
      prefix: { type: 'string', arg: 'P', help: "key prefix (default '/networking-vpp')" },
      'exit-after': { type: 'string', arg: 'MS', help: 'stop by itself after MS (default: run until SIGINT/SIGTERM)' },
      'verify-key': { type: 'string', arg: 'FILE', help: "controller's Ed25519 public key (PEM): reject bindings not signed with it (default: no check)" },
    },
    async run(values, _p, io) {
      const hostsRaw = str(values, 'hosts') ?? '3';
      const hosts = /^\d+$/.test(hostsRaw) ? int(values, 'hosts', 3, 1, 100_000) : hostsRaw.split(',').map((h) => h.trim()).filter(Boolean);
      const rateRaw = str(values, 'failure-rate');
      const failureRate = rateRaw === undefined ? 0 : Number(rateRaw);
      if (rateRaw !== undefined && (rateRaw.trim() === '' || !(failureRate >= 0 && failureRate <= 1))) {
        throw new UsageError(`--failure-rate must be a number from 0 to 1, got '${rateRaw}'`);
      }
      const style = str(values, 'style') ?? 'vpp';
      if (style !== 'vpp' && style !== 'calico') throw new UsageError('--style must be vpp or calico');
      const physnets = str(values, 'physnets')?.split(',').map((s) => s.trim()).filter(Boolean);
      const exitAfter = values['exit-after'] === undefined ? undefined : int(values, 'exit-after', 0, 0, 2 ** 31 - 1);
      const endpoints = etcdFlag(values);
      const agents = createAgents({
        etcd: endpoints ? { endpoints } : {},
        prefix: prefixFlag(values),
        hosts,
        physnets,
        confirmDelayMs: int(values, 'delay', 0, 0, 2 ** 31 - 1),
        jitterMs: int(values, 'jitter', 0, 0, 2 ** 31 - 1),
        failureRate,
        style,
        aliveTtlSec: int(values, 'ttl', 10, 1, 1_000_000),
        verifyKey: keyFileFlag(values, 'verify-key'),
      });
      agents.on('rejected', (e) => io.stderr.write(`portwire agents: ${e.host}: rejected ${e.key} (${e.reason}): ${e.detail}\n`));
      agents.on('error', (e) => io.stderr.write(`portwire agents: ${e.host}: ${e.op} failed, retrying in ${e.retryInMs} ms: ${e.error.message}\n`));
      let finish = (_why: string): void => {};
      const finished = new Promise<string>((res) => (finish = res));
      const onSignal = (sig: NodeJS.Signals): void => finish(sig);
      process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
      const timer = exitAfter === undefined ? undefined : setTimeout(() => finish('exit-after'), exitAfter);
      let started = false;
      try {
        started = await Promise.race([agents.start().then(() => true), finished.then(() => false)]);
        if (started) {
          const { hosts: names } = agents;
          const list = names.length > 3 ? `${names[0]}..${names[names.length - 1]}` : names.join(', ');
          io.stdout.write(`agents: ${names.length} running (${list}), style ${style}, prefix ${prefixFlag(values) ?? '/networking-vpp'}; press Ctrl-C to stop\n`);
        }
        await finished;
      } finally {
        clearTimeout(timer);
        process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
        await agents.stop();
      }
      const s = agents.stats();
      io.stdout.write(`agents stopped: confirmed ${s.confirmed}, failed ${s.failed}, removed ${s.removed}, errors ${s.errors}${values['verify-key'] === undefined ? '' : `, rejected ${s.rejected}`}\n`);
      if (!started) io.stderr.write('portwire: the agents stopped before they could start (is etcd reachable?)\n');
      return started ? 0 : 1;
    },
  },
  demo: {
    summary: 'start etcd, simulated agents and a runtime, bind ports with a progress bar, print a summary',
    flags: {
      ports: { type: 'string', arg: 'N', help: `ports to bind (default ${DEMO_DEFAULTS.ports})` },
      hosts: { type: 'string', arg: 'N', help: `compute hosts to spread them over (default ${DEMO_DEFAULTS.hosts})` },
      exit: { type: 'boolean', help: 'stop after the summary instead of waiting for Ctrl-C' },
      etcd: { type: 'string', arg: 'URL,...', help: 'use this etcd (default $ETCD_ENDPOINTS, else a managed etcd)' },
      'data-dir': { type: 'string', arg: 'D', help: 'journal directory, kept (default a temporary one, removed)' },
      prefix: { type: 'string', arg: 'P', help: "key prefix (default '/networking-vpp', '/portwire-demo' with --etcd)" },
      verbose: { type: 'boolean', short: 'v', help: 'log at info level (default warn)' },
      inspect: { type: 'boolean', help: 'serve the inspector (live visualizer) on 127.0.0.1 while the demo runs; prints its URL' },
      'inspect-port': { type: 'string', arg: 'N', help: 'TCP port of the inspector (default any free port; implies --inspect)' },
      secure: { type: 'boolean', help: 'managed etcd with TLS (client certificates) and auth; least-privilege users for the runtime and each agent' },
      sign: { type: 'boolean', help: 'sign every value with a fresh Ed25519 key; the agents verify them and report rejections' },
    },
    async run(values) {
      const etcd = str(values, 'etcd')?.split(',').map((s) => s.trim()).filter(Boolean);
      if (etcd && etcd.length === 0) throw new UsageError('--etcd needs at least one URL');
      if (values.secure === true && etcd) throw new UsageError('--secure cannot be combined with --etcd: the demo secures only the etcd it starts');
      const prefix = str(values, 'prefix');
      if (prefix !== undefined && !prefix.startsWith('/')) throw new UsageError("--prefix must start with '/'");
      const inspectPort = values['inspect-port'] === undefined ? undefined : int(values, 'inspect-port', 0, 0, 65535);
      await runDemo({
        ports: int(values, 'ports', DEMO_DEFAULTS.ports, 1, DEMO_MAX_PORTS),
        hosts: int(values, 'hosts', DEMO_DEFAULTS.hosts, 1, 1000),
        exit: values.exit === true,
        etcd,
        dataDir: str(values, 'data-dir'),
        prefix,
        verbose: values.verbose === true,
        inspect: values.inspect === true || inspectPort !== undefined ? { port: inspectPort } : undefined,
        secure: values.secure === true,
        sign: values.sign === true,
      });
      return 0;
    },
  },
  'journal dead': {
    summary: 'list the dead letters (entries that kept failing)',
    flags: { 'data-dir': dataDirFlag, json: { type: 'boolean', help: 'print a JSON array' } },
    async run(values, _p, io) {
      const letters = await withJournal(values, (j) => j.deadLetters());
      if (values.json) io.stdout.write(`${JSON.stringify(letters.map(deadJson), null, 2)}\n`);
      else if (letters.length === 0) io.stdout.write('no dead letters\n');
      else io.stdout.write(`${formatDead(letters)}\n`);
      return 0;
    },
  },
  'journal retry': {
    summary: 're-queue dead letters (all when no ID is given) with their keys\' current desired values',
    positionals: '[ID...]',
    flags: { 'data-dir': dataDirFlag },
    async run(values, positionals, io) {
      const ids = positionals.map((p) => {
        if (!/^\d+$/.test(p) || Number(p) < 1) throw new UsageError(`dead-letter id must be a positive integer, got '${p}'`);
        return Number(p);
      });
      return withJournal(values, async (j) => {
        const known = new Set(j.deadLetters().map((d) => d.id));
        const missing = ids.filter((id) => !known.has(id));
        const n = await j.retryDead(ids.length > 0 ? ids : undefined);
        // let the journal's kick (written on the next turn) wake a running forwarder before closing
        await new Promise((r) => setImmediate(r));
        io.stdout.write(`re-queued ${n} dead letter${n === 1 ? '' : 's'}\n`);
        if (missing.length > 0) {
          io.stderr.write(`portwire: no dead letter with id ${missing.join(', ')}\n`);
          return 1;
        }
        return 0;
      });
    },
  },
  'journal depth': {
    summary: 'print the number of entries waiting in the journal',
    flags: { 'data-dir': dataDirFlag },
    async run(values, _p, io) {
      io.stdout.write(`${await withJournal(values, (j) => j.depth())}\n`);
      return 0;
    },
  },
  'etcd-roles': {
    summary: 'print the etcdctl commands creating the least-privilege etcd roles and users',
    flags: {
      prefix: { type: 'string', arg: 'P', help: 'key prefix (default /networking-vpp)' },
      hosts: { type: 'string', arg: 'H,H…', help: 'agent hosts: one role and user each' },
      'controller-user': { type: 'string', arg: 'U', help: 'the controller user (default portwire)' },
    },
    async run(values, _p, io) {
      const hosts = (str(values, 'hosts') ?? '').split(',').map((h) => h.trim()).filter(Boolean);
      const lines = etcdctlCommands({
        prefix: prefixFlag(values),
        controller: { user: str(values, 'controller-user') ?? 'portwire', password: '' },
        agents: hosts.map((host) => ({ host, user: agentRole(host), password: '' })),
      });
      io.stdout.write(`${lines.join('\n')}\n`);
      return 0;
    },
  },
  machines: {
    summary: 'export every statechart (for docs and reviews)',
    positionals: '[NAME...]',
    flags: { format: { type: 'string', arg: 'mermaid|json', help: 'output format (default mermaid)' } },
    async run(values, positionals, io) {
      const format = str(values, 'format') ?? 'mermaid';
      if (format !== 'mermaid' && format !== 'json') throw new UsageError('--format must be mermaid or json');
      const names = positionals.length > 0 ? positionals : Object.keys(machines);
      for (const n of names) if (!(n in machines)) throw new UsageError(`unknown machine ${n} (known: ${Object.keys(machines).join(', ')})`);
      const list = names.map((n) => [n, machines[n as keyof typeof machines]] as const);
      if (format === 'json') {
        io.stdout.write(`${JSON.stringify(Object.fromEntries(list.map(([n, m]) => [n, machineToJson(m)])), null, 2)}\n`);
      } else {
        for (const [n, m] of list) io.stdout.write(`%% ${n}\n${machineToMermaid(m)}\n\n`);
      }
      return 0;
    },
  },
  resync: {
    summary: 'reconcile etcd with the journal\'s desired state (--dry-run: print the differences, write nothing)',
    flags: {
      'dry-run': { type: 'boolean', help: 'print the differences and write nothing (needs no leadership)' },
      etcd: { type: 'string', arg: 'URL,...', help: "etcd to reconcile (default $ETCD_ENDPOINTS, else 'http://127.0.0.1:2379')" },
      'data-dir': dataDirFlag,
      prefix: { type: 'string', arg: 'P', help: `key prefix (default '${resolveOptions().prefix}')` },
      json: { type: 'boolean', help: 'print the report as JSON' },
      'timeout-ms': { type: 'string', arg: 'N', help: 'how long to wait to lead the resync role (default 30000)' },
      'signing-key': { type: 'string', arg: 'FILE', help: 'Ed25519 private key (PEM) the controller signs with: compare and repair signed values' },
      'key-id': { type: 'string', arg: 'ID', help: 'the kid written with --signing-key (as configured in the controller)' },
    },
    async run(values, _p, io) {
      const dryRun = values['dry-run'] === true;
      const timeoutMs = int(values, 'timeout-ms', 30_000, 1, 3_600_000);
      const endpoints = etcdFlag(values);
      const prefix = prefixFlag(values);
      const dataDir = journalDir(values);
      const rt = createRuntime({
        dataDir,
        prefix,
        etcd: endpoints ? { endpoints } : undefined,
        forwarder: false,
        resync: { enabled: !dryRun, intervalMs: 24 * 3600 * 1000 },
        signing: signingFlags(values),
      });
      // listen before start(), so that an election won during it is not missed
      const lead = dryRun ? undefined : leadership(rt, timeoutMs);
      // a lost election must not surface as an unhandled rejection while start() runs
      lead?.elected.catch(() => {});
      try {
        await rt.start();
        let report: ResyncReport;
        if (lead) {
          await lead.elected;
          // gaining leadership starts a run; this one resolves with its report
          report = await rt.resync();
        } else {
          report = await rt.resync({ dryRun: true });
        }
        if (values.json) io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        else {
          const lines = dryRun ? resyncDifferences(report) : [];
          io.stdout.write(`${[...lines, resyncSummary(report)].join('\n')}\n`);
        }
        return 0;
      } finally {
        lead?.cancel();
        await rt.stop();
      }
    },
  },
};

const BIN = 'portwire';

function usageLine(name: string, cmd: Command): string {
  const flags = Object.entries(cmd.flags).map(([f, d]) => `[--${f}${d.type === 'string' ? ` ${d.arg ?? 'X'}` : ''}]`);
  return [BIN, name, ...flags, ...(cmd.positionals ? [cmd.positionals] : [])].join(' ');
}

function commandHelp(name: string, cmd: Command): string {
  const rows = Object.entries(cmd.flags).map(([f, d]) => {
    const left = `${d.short ? `-${d.short}, ` : '    '}--${f}${d.type === 'string' ? ` ${d.arg ?? 'X'}` : ''}`;
    return [left, d.help];
  });
  rows.push(['-h, --help', 'show this help']);
  const w = Math.max(...rows.map(([l]) => l.length));
  return [`usage: ${usageLine(name, cmd)}`, '', cmd.summary, '', ...rows.map(([l, h]) => `  ${l.padEnd(w)}  ${h}`), ''].join('\n');
}

function listHelp(group?: string): string {
  const names = Object.keys(COMMANDS).filter((n) => !group || n.startsWith(`${group} `));
  const w = Math.max(...names.map((n) => n.length));
  return [
    `usage: ${BIN} ${group ?? '<command>'}${group ? ' <subcommand>' : ''} [options]`,
    '',
    'commands:',
    ...names.map((n) => `  ${n.padEnd(w)}  ${COMMANDS[n].summary}`),
    '',
    `Run '${BIN} <command> --help' for a command's options.`,
    '',
  ].join('\n');
}

const isHelp = (a: string | undefined): boolean => a === '--help' || a === '-h' || a === 'help';

/** Finds the command named by the first one or two words of `argv`. */
function findCommand(argv: string[], io: CliIo): { name: string; cmd: Command; rest: string[] } | number {
  const [first, second] = argv;
  if (first === undefined) {
    io.stderr.write(listHelp());
    return 2;
  }
  if (isHelp(first)) {
    const target = argv.slice(1);
    if (target.length === 0) {
      io.stdout.write(listHelp());
      return 0;
    }
    return findCommand([...target, '--help'], io);
  }
  for (const name of [`${first} ${second}`, first]) {
    const cmd = COMMANDS[name];
    if (cmd) return { name, cmd, rest: argv.slice(name.split(' ').length) };
  }
  const isGroup = Object.keys(COMMANDS).some((n) => n.startsWith(`${first} `));
  if (isGroup && (second === undefined || isHelp(second))) {
    (second === undefined ? io.stderr : io.stdout).write(listHelp(first));
    return second === undefined ? 2 : 0;
  }
  const what = isGroup ? `unknown ${first} command '${second}'` : `unknown command '${first}'`;
  throw new UsageError(what, isGroup ? first : undefined);
}

/**
 * Runs the CLI on `argv` (without the node and script paths).
 * @returns the exit code: 0 ok, 1 portwire error, 2 usage error
 * @example
 * process.exitCode = await main(['journal', 'dead', '--data-dir', '/var/lib/portwire']);
 */
export async function main(argv: string[], io: CliIo = process): Promise<number> {
  let name: string | undefined;
  try {
    const found = findCommand(argv, io);
    if (typeof found === 'number') return found;
    name = found.name;
    const { cmd, rest } = found;
    const options = { ...cmd.flags, help: { type: 'boolean' as const, short: 'h' } };
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options, allowPositionals: cmd.positionals !== undefined, strict: true });
    } catch (err) {
      if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message, name);
      throw err;
    }
    if (parsed.values.help) {
      io.stdout.write(commandHelp(name, cmd));
      return 0;
    }
    return await cmd.run(parsed.values as Values, parsed.positionals, io);
  } catch (err) {
    if (err instanceof UsageError) {
      const topic = err.command ?? name;
      io.stderr.write(`${BIN}: ${err.message}\nRun '${BIN} ${topic ? `${topic} ` : ''}--help' for usage.\n`);
      return 2;
    }
    if (err instanceof PortwireError) {
      io.stderr.write(`${BIN}: ${err.message}\n`);
      return 1;
    }
    io.stderr.write(`${BIN}: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}

/** Runs `main` on the process's arguments and exits with its code once output is flushed. */
export async function run(): Promise<void> {
  const code = await main(process.argv.slice(2));
  process.stdout.write('', () => process.exit(code));
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === import.meta.url;
  } catch {
    return false;
  }
}

if (isEntryPoint()) await run();
