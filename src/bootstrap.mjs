#!/usr/bin/env node
// Prepares a machine for `npm start` / `npm test`: Node version, npm dependencies, an etcd
// server, and for `npm test` (or `--test`) a Chromium for the inspector's browser tests.
// Node built-ins only (runs before `npm install`); silent when nothing is to be done.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIN_NODE = [20, 19];
const ETCD_CANDIDATES = ['/usr/bin/etcd', '/usr/sbin/etcd', '/usr/local/bin/etcd'];
// keep in step with test/helpers/browser.ts
const CHROMIUM_NAMES = ['chromium', 'chromium-browser'];
const CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/lib/chromium/chromium'];
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function fail(message) {
  console.error(`portwire bootstrap: ${message}`);
  process.exit(1);
}

/** Runs a command with inherited output and no stdin; exits on failure unless `tolerate`. */
function run(cmd, args, { env = process.env, tolerate = false } = {}) {
  const res = spawnSync(cmd, args, {
    cwd: root,
    env,
    stdio: ['ignore', 'inherit', 'inherit'],
    shell: process.platform === 'win32',
  });
  if (res.error) fail(`${cmd} ${args.join(' ')} could not run: ${res.error.message}`);
  if (res.status === 0) return true;
  if (!tolerate) fail(`${cmd} ${args.join(' ')} failed (exit ${res.status ?? res.signal})`);
  return false;
}

function checkNode() {
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < MIN_NODE[0] || (major === MIN_NODE[0] && minor < MIN_NODE[1])) {
    fail(`Node ${MIN_NODE.join('.')} or newer is required, this is ${process.versions.node}.`);
  }
}

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

function npm(args, options) {
  const cli = process.env.npm_execpath;
  if (cli && /\.c?js$/.test(cli)) return run(process.execPath, [cli, ...args], options);
  return run('npm', args, options);
}

function ensureDependencies() {
  const lock = mtime(join(root, 'package-lock.json'));
  const installed = mtime(join(root, 'node_modules', '.package-lock.json'));
  const missing = !existsSync(join(root, 'node_modules')) || installed === undefined;
  if (!missing && (lock === undefined || lock <= installed)) return;
  console.error(`portwire bootstrap: installing npm dependencies (${missing ? 'missing' : 'lockfile changed'})`);
  // `npm install` follows the lockfile; `npm ci` refuses it because npm 11 records only this
  // platform's optional packages of msgpackr-extract (an lmdb dependency)
  npm(['install', '--no-audit', '--no-fund']);
}

function isExecutable(path) {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function findEtcd() {
  if (process.env.ETCD_BIN) return isExecutable(process.env.ETCD_BIN) ? process.env.ETCD_BIN : undefined;
  const fromPath = (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'etcd'));
  return [...fromPath, ...ETCD_CANDIDATES].find(isExecutable);
}

function onPath(cmd) {
  return (process.env.PATH ?? '').split(delimiter).some((d) => d && isExecutable(join(d, cmd)));
}

const canApt = () => typeof process.getuid === 'function' && process.getuid() === 0 && onPath('apt-get');
let aptUpdated = false;

/** `apt-get install -y pkg` (after one `apt-get update`); false on failure when `tolerate`. */
function aptInstall(pkg, { tolerate = false } = {}) {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) aptUpdated = run('apt-get', ['update'], { env, tolerate });
  return run('apt-get', ['install', '-y', pkg], { env, tolerate });
}

function ensureEtcd() {
  if (process.env.ETCD_ENDPOINTS) return;
  if (findEtcd()) return;
  if (process.env.ETCD_BIN) fail(`ETCD_BIN=${process.env.ETCD_BIN} is not an executable file.`);
  if (canApt()) {
    console.error('portwire bootstrap: etcd not found, installing etcd-server with apt-get');
    aptInstall('etcd-server');
    if (findEtcd()) return;
    fail('apt-get installed etcd-server but no etcd binary was found.');
  }
  fail(
    'no etcd server found. Install one (Debian/Ubuntu: `sudo apt-get install etcd-server`), ' +
      'or set ETCD_BIN=/path/to/etcd, or point to a running server with ETCD_ENDPOINTS=http://host:2379.',
  );
}

function findChromium() {
  if (process.env.CHROMIUM_BIN) return isExecutable(process.env.CHROMIUM_BIN) ? process.env.CHROMIUM_BIN : undefined;
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  return [...CHROMIUM_NAMES.flatMap((n) => dirs.map((d) => join(d, n))), ...CHROMIUM_CANDIDATES].find(isExecutable);
}

/**
 * The inspector's browser tests drive the system's Chromium through playwright-core (which
 * never downloads a browser here): install Debian's `chromium` when missing, as root with apt.
 * Never fatal: without it the browser tests are skipped, or fail under CI=true.
 */
function ensureChromium() {
  if (findChromium()) return;
  const hint = "the inspector's browser tests need Chromium: install Debian's chromium package, or set CHROMIUM_BIN";
  if (process.env.CHROMIUM_BIN) {
    console.error(`portwire bootstrap: CHROMIUM_BIN=${process.env.CHROMIUM_BIN} is not an executable file; ${hint}`);
    return;
  }
  if (canApt()) {
    console.error('portwire bootstrap: chromium not found, installing chromium with apt-get (browser tests)');
    if (aptInstall('chromium', { tolerate: true }) && findChromium()) return;
    console.error(`portwire bootstrap: chromium could not be installed; ${hint}`);
    return;
  }
  console.error(`portwire bootstrap: no chromium found; ${hint}`);
}

const forTests = process.env.npm_lifecycle_event === 'pretest' || process.argv.includes('--test');

checkNode();
ensureDependencies();
ensureEtcd();
if (forTests) ensureChromium();
