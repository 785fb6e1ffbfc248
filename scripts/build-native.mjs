// The package's npm `install` script, and the build step of `npm test` / `npm run build`: makes sure
// the generated loader (native/index.cjs) finds an addon for this platform.
// - A prebuilt platform package (`iommu-liveupdate-<platform>`, an optionalDependency of a release)
//   of this version is installed and nothing was built here: nothing to do, no toolchain needed.
// - Otherwise native/iommu-liveupdate.<platform>.node is built from source when missing or older
//   than Cargo.toml/Cargo.lock/crates/**: with `napi build` when @napi-rs/cli is installed (a clone,
//   where it also regenerates the loader and native/index.d.cts), else with plain cargo (the
//   package installed as a dependency on a platform with no prebuilt binary), whose target
//   directory is then a temporary one, removed afterwards, so node_modules keeps no 90 MB of it.
// IOMMU_LIVEUPDATE_FORCE_BUILD=1 builds from source whatever is installed.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const log = (msg) => process.stderr.write(`[build-native] ${msg}\n`);
const require = createRequire(join(root, 'package.json'));

/** napi-rs's platform name (`linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`), as the loader uses it. */
function platformArchAbi() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime;
    const abi = arch === 'arm' ? (glibc ? 'gnueabihf' : 'musleabihf') : glibc ? 'gnu' : 'musl';
    return `linux-${arch}-${abi}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

const platform = platformArchAbi();
const binary = `${pkg.napi.binaryName}.${platform}.node`;
const out = join(root, 'native', binary);
const prebuilt = `${pkg.napi.packageName}-${platform}`;

const mtime = (p) => {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -Infinity;
  }
};

// Newest mtime among the files cargo's output depends on: Cargo.toml/Cargo.lock and crates/**/{*.rs,Cargo.toml}.
function newestInput() {
  let newest = Math.max(mtime(join(root, 'Cargo.toml')), mtime(join(root, 'Cargo.lock')));
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'target' && !entry.name.startsWith('.')) walk(p);
      } else if (entry.name.endsWith('.rs') || entry.name === 'Cargo.toml') {
        newest = Math.max(newest, mtime(p));
      }
    }
  };
  walk(join(root, 'crates'));
  return newest;
}

function prebuiltVersion() {
  try {
    return JSON.parse(readFileSync(require.resolve(`${prebuilt}/package.json`), 'utf8')).version;
  } catch {
    return null;
  }
}

const force = process.env.IOMMU_LIVEUPDATE_FORCE_BUILD === '1';
if (!force && mtime(out) === -Infinity && prebuiltVersion() === pkg.version) {
  log(`using the prebuilt ${prebuilt}@${pkg.version}; nothing to build`);
  process.exit(0);
}
if (!force && mtime(out) > newestInput()) {
  log(`native/${binary} is up to date (set IOMMU_LIVEUPDATE_FORCE_BUILD=1 to rebuild)`);
  process.exit(0);
}

function run(cmd, args, env = process.env) {
  log([cmd, ...args].join(' '));
  const res = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env });
  if (res.error) {
    log(
      res.error.code === 'ENOENT'
        ? `error: '${cmd}' not found. There is no prebuilt binary for ${platform} (${prebuilt}), so the addon is built from source, which needs the Rust toolchain (https://rustup.rs)`
        : `error: failed to run ${cmd}: ${res.error.message}`,
    );
    process.exit(1);
  }
  if (res.status !== 0) {
    log(`error: ${cmd} failed (${res.signal ?? `exit ${res.status}`})`);
    process.exit(1);
  }
}

const started = new Date();
const installedAsDependency = root.split(sep).includes('node_modules');
let napiCli = null;
try {
  napiCli = installedAsDependency ? null : require.resolve('@napi-rs/cli/dist/cli.js');
} catch {}
const cargo = process.env.CARGO || 'cargo';
if (napiCli) {
  // Same flags as the `build:native` script; `napi build` writes the .node, the loader and the d.ts.
  run(process.execPath, [napiCli, 'build', '--platform', '--release', '--manifest-path', 'crates/binding/Cargo.toml',
    '--package', 'iommu-liveupdate-binding', '-o', 'native', '--js', 'index.cjs', '--dts', 'index.d.cts']);
  utimesSync(out, started, started);
} else {
  const target = process.env.CARGO_TARGET_DIR || (installedAsDependency ? mkdtempSync(join(tmpdir(), 'iommu-liveupdate-cargo-')) : join(root, 'target'));
  try {
    run(cargo, ['build', '--release', '-p', 'iommu-liveupdate-binding'], { ...process.env, CARGO_TARGET_DIR: target });
    const lib = { darwin: 'libiommu_liveupdate_binding.dylib', win32: 'iommu_liveupdate_binding.dll' }[process.platform] ?? 'libiommu_liveupdate_binding.so';
    mkdirSync(dirname(out), { recursive: true });
    // Copy then rename: overwriting a .so in place would corrupt it for any process that has it mapped.
    copyFileSync(join(target, 'release', lib), `${out}.tmp`);
    // Stamp with the build start time so sources edited during the build still count as newer next time.
    utimesSync(`${out}.tmp`, started, started);
    renameSync(`${out}.tmp`, out);
    log(`built native/${binary}`);
  } finally {
    if (installedAsDependency && !process.env.CARGO_TARGET_DIR) rmSync(target, { recursive: true, force: true });
  }
}
