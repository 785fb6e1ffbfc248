// `npm run setup`: the system tools `npm test` needs besides Node and Rust, installed with apt-get
// when missing (as root, or through passwordless `sudo -n`), after one `apt-get update`.
//   dtc       (device-tree-compiler)  the FDT tests decompile and recompile our blobs with it
//   libfdt    (libfdt-dev, and a C compiler)  they compile tools/fdt-check.c against it
//   chromium  (chromium)  the HTML report test renders the report in /usr/bin/chromium
// `--check` only reports (exit 1 when something is missing); tool names as arguments limit the
// check to those (what __test__/host-tools.ts asks). Tools named in IOMMU_LIVEUPDATE_SKIP_TOOLS
// (comma-separated, or `all`) are neither checked nor installed: the tests needing them are skipped.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = '/usr/bin/chromium';
const SKIP_ENV = 'IOMMU_LIVEUPDATE_SKIP_TOOLS';
// One line for every case: apt-get skips what is already installed.
const PACKAGES = ['device-tree-compiler', 'libfdt-dev', 'chromium'];

const ok = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return !r.error && r.status === 0;
};

/** Each check returns null when the tool works, else why not (and, if more than `packages`, what to install). */
const TOOLS = [
  {
    name: 'dtc',
    packages: ['device-tree-compiler'],
    why: 'the FDT tests decompile and recompile our blobs with dtc',
    check: () => (ok('dtc', ['--version']) ? null : 'dtc is not on PATH'),
  },
  {
    name: 'libfdt',
    packages: ['libfdt-dev'],
    why: 'the FDT tests compile tools/fdt-check.c against libfdt',
    check() {
      if (!ok('cc', ['--version'])) return { problem: 'no C compiler (cc) to build tools/fdt-check.c', packages: ['libfdt-dev', 'build-essential'] };
      // The tests' own build of the checker is the only test that counts (headers and -lfdt).
      const dir = mkdtempSync(join(tmpdir(), 'iommu-liveupdate-setup-'));
      try {
        const r = spawnSync('cc', ['-O2', join(root, 'tools/fdt-check.c'), '-lfdt', '-o', join(dir, 'fdt-check')], { encoding: 'utf8' });
        return r.status === 0 ? null : `cc cannot build tools/fdt-check.c against libfdt: ${(r.stderr ?? '').trim().split('\n')[0]}`;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
  {
    name: 'chromium',
    packages: ['chromium'],
    why: `the HTML report test renders the report in ${CHROMIUM}`,
    check() {
      try {
        accessSync(CHROMIUM, constants.X_OK);
        return null;
      } catch {
        return `${CHROMIUM} is not installed`;
      }
    },
  },
];
const NAMES = TOOLS.map((t) => t.name);

const say = (line) => process.stdout.write(`setup: ${line}\n`);
const fail = (line, code = 1) => {
  process.stderr.write(`setup: ${line}\n`);
  process.exit(code);
};

const args = process.argv.slice(2);
const checkOnly = args.includes('--check');
const wanted = args.filter((a) => a !== '--check');
const skipped = (process.env[SKIP_ENV] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
for (const n of [...wanted, ...skipped.filter((s) => s !== 'all')]) {
  if (!NAMES.includes(n)) fail(`unknown tool ${JSON.stringify(n)}: the tools are ${NAMES.join(', ')} (${SKIP_ENV} also takes all)`, 2);
}
const isSkipped = (t) => skipped.includes(t.name) || skipped.includes('all');
const tools = TOOLS.filter((t) => (wanted.length === 0 || wanted.includes(t.name)) && !isSkipped(t));
const off = TOOLS.filter(isSkipped).map((t) => t.name);
const offNote = off.length ? ` (${off.join(', ')} skipped by ${SKIP_ENV})` : '';

const missingOf = () =>
  tools.flatMap((t) => {
    const r = t.check();
    if (r === null) return [];
    return [typeof r === 'string' ? { tool: t, problem: r, packages: t.packages } : { tool: t, ...r }];
  });
let missing = missingOf();
if (missing.length === 0) {
  say(`${tools.map((t) => t.name).join(', ') || 'nothing'} present, nothing to install${offNote}`);
  process.exit(0);
}

const pkgs = [...new Set(missing.flatMap((m) => m.packages))];
const line = `sudo apt-get install -y ${[...new Set([...PACKAGES, ...pkgs])].join(' ')}`;
const report = missing.map((m) => `  ${m.tool.name} (${m.packages.join(', ')}): ${m.problem}; ${m.tool.why}`);
process.stderr.write(`setup: the tests need what is missing here:\n${report.join('\n')}\n`);
const manual = `install with:\n  ${line}\nor set ${SKIP_ENV}=${missing.map((m) => m.tool.name).join(',')} to skip the tests that need them`;
if (checkOnly) fail(manual);

// As root apt-get runs directly; otherwise only through sudo that asks no password.
let sudo = null;
if (!ok('apt-get', ['--version'])) fail(`no apt-get here (setup knows Debian's packages only); on Debian, ${manual}`);
else if (process.getuid?.() === 0) sudo = [];
else if (ok('sudo', ['-n', 'true'])) sudo = ['sudo', '-n'];
else fail(`cannot install (not root, and no sudo that runs without a password); ${manual}`);

const apt = (...aptArgs) => {
  const cmd = [...sudo, 'env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', ...aptArgs];
  say(cmd.join(' '));
  const r = spawnSync(cmd[0], cmd.slice(1), { stdio: 'inherit' });
  if (r.status !== 0) fail(`${cmd.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}); ${manual}`);
};
say(`installing ${pkgs.join(' ')} (a fresh Debian needs the package lists first)`);
apt('update');
apt('install', '-y', '--no-install-recommends', ...pkgs);

missing = missingOf();
if (missing.length) fail(`still missing after apt-get: ${missing.map((m) => `${m.tool.name} (${m.problem})`).join('; ')}`);
say(`installed ${pkgs.join(' ')}; ${tools.map((t) => t.name).join(', ')} present${offNote}`);
