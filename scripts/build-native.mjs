// Builds the Rust N-API addon with plain cargo and copies it to native/iommu_liveupdate.node.
// Runs as the npm `install` script: the addon is always compiled from source, never downloaded.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, renameSync, statSync, utimesSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'native', 'iommu_liveupdate.node');
const log = (msg) => process.stderr.write(`[build-native] ${msg}\n`);

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

if (process.env.IOMMU_LIVEUPDATE_FORCE_BUILD !== '1' && mtime(out) > newestInput()) {
  log('native/iommu_liveupdate.node is up to date (set IOMMU_LIVEUPDATE_FORCE_BUILD=1 to rebuild)');
  process.exit(0);
}

const cargo = process.env.CARGO || 'cargo';
const started = new Date();
log(`${cargo} build --release -p iommu-liveupdate-binding`);
const res = spawnSync(cargo, ['build', '--release', '-p', 'iommu-liveupdate-binding'], { cwd: root, stdio: 'inherit' });
if (res.error) {
  if (res.error.code === 'ENOENT') {
    log(`error: Rust toolchain (cargo) is required to build the native addon from source ('${cargo}' not found; install it from https://rustup.rs)`);
  } else {
    log(`error: failed to run ${cargo}: ${res.error.message}`);
  }
  process.exit(1);
}
if (res.status !== 0) {
  log(`error: cargo build failed (${res.signal ?? `exit ${res.status}`})`);
  process.exit(1);
}

const lib = { darwin: 'libiommu_liveupdate_binding.dylib', win32: 'iommu_liveupdate_binding.dll' }[process.platform] ?? 'libiommu_liveupdate_binding.so';
const built = join(resolve(root, process.env.CARGO_TARGET_DIR || 'target'), 'release', lib);
mkdirSync(dirname(out), { recursive: true });
// Copy then rename: overwriting a .so in place would corrupt it for any process that has it mapped.
copyFileSync(built, `${out}.tmp`);
// Stamp with the build start time so sources edited during the build still count as newer next time.
utimesSync(`${out}.tmp`, started, started);
renameSync(`${out}.tmp`, out);
log(`copied ${built} -> ${out}`);
