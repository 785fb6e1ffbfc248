// `npm run bench`: builds the addon and dist/, runs the criterion benches of the native core
// (crates/vtd/benches/translate.rs; its walk_4level tables also go to bench/walk_flat.c, a flat C
// walk over the same bytes, compiled with cc: the walk's floor), the JS-side measurements (bench/napi.mjs), the memory
// scenario (bench/memory.mjs, in a fresh process) and the simulated kernel's iommufd / VFIO
// syscall path against the native page-table builder, plus device DMA (bench/kernel.mjs, in a
// fresh process), the live update's blackout across kexec with KHO at 1k–1M 4 KiB mappings against
// a VMM replaying its mappings into a fresh kernel (bench/liveupdate.mjs, in a fresh process;
// about a minute, most of it the 1M-ioctl replay), then the FDT benches (crates/fdt/benches/fdt.rs under criterion, with vm-fdt
// as a baseline, and bench/fdt_libfdt.c compiled against Debian's libfdt-dev), then prints the
// markdown report of this run (the IOMMU, kernel, live-update and FDT tables) and writes it to
// bench/results/latest.{md,json}. A missed target prints `no` but does not fail the command;
// only a crash (build, bench or a result mismatch) exits non-zero.
// BENCH_QUICK=1: criterion `--quick`, shorter JS and libfdt runs (libfdt unique names: 5,000).
// BENCH_KERNEL_FULL_UNMAP=0: bench/kernel.mjs skips timing the one IOAS_UNMAP of 262,144 4 KiB
// areas (about a second; then only the 16,384- and 32,768-area unmaps are timed).
// BENCH_LIVEUPDATE_REPLAY_1M=0: bench/liveupdate.mjs skips the one replay of 1,048,576 IOAS_MAP
// ioctls (about 20 s; also skipped under BENCH_QUICK) and extrapolates it from 102,400 (the row says so).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { liveupdateReport } from '../bench/liveupdate-report.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const quick = process.env.BENCH_QUICK === '1';
const log = (msg) => process.stderr.write(`[bench] ${msg}\n`);

const USAGE = `usage: node scripts/bench.mjs [--only liveupdate]
  (no option)        the whole bench (addon + dist/ build, criterion, JS, memory, kernel, live update, FDT)
  --only liveupdate  only dist/ (tsc) and bench/liveupdate.mjs: prints the live-update section (the RFC and
                     LUO blackouts side by side) and writes bench/results/liveupdate.{md,json}
environment: BENCH_QUICK=1, BENCH_KERNEL_FULL_UNMAP=0, BENCH_LIVEUPDATE_REPLAY_1M=0, BENCH_LUO_HOST_GIB (default 64)`;
const argv = process.argv.slice(2);
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const onlyAt = argv.findIndex((a) => a === '--only' || a.startsWith('--only='));
const only = onlyAt < 0 ? null : argv[onlyAt].startsWith('--only=') ? argv[onlyAt].slice(7) : argv[onlyAt + 1];
if (only !== null && only !== 'liveupdate') {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}
const BATCH = 4096;
const MIB = 1024 * 1024;

function die(msg) {
  log(`error: ${msg}`);
  process.exit(1);
}

function run(cmd, args, { capture = false, env } = {}) {
  log(`$ ${[cmd, ...args].join(' ')}`);
  // Children's stdout goes to our stderr unless captured, so stdout carries only the table.
  const res = spawnSync(cmd, args, {
    cwd: root,
    stdio: ['ignore', capture ? 'pipe' : 2, 'inherit'],
    encoding: 'utf8',
    maxBuffer: 64 * MIB,
    env: env ?? process.env,
  });
  if (res.error) die(`cannot run ${cmd}: ${res.error.message}`);
  if (res.status !== 0) die(`${[cmd, ...args].join(' ')} failed (${res.signal ?? `exit ${res.status}`})`);
  return res.stdout;
}

function lastJson(stdout, what) {
  const line = stdout.trim().split('\n').pop();
  try {
    return JSON.parse(line);
  } catch {
    die(`${what} printed no JSON result`);
  }
}

// Digest of everything cargo builds from (Cargo.toml/lock, crates/**/{*.rs,Cargo.toml}): the
// addon and the criterion binary are separate builds, so an edit during the run would make the
// native and N-API rows measure different code. Checked at the end and flagged in the table.
function sourceDigest() {
  const h = createHash('sha256');
  const add = (p) => h.update(p).update('\0').update(readFileSync(p)).update('\0');
  for (const f of ['Cargo.toml', 'Cargo.lock']) add(join(root, f));
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'target' && !e.name.startsWith('.')) walk(p);
      } else if (e.name.endsWith('.rs') || e.name === 'Cargo.toml') add(p);
    }
  };
  walk(join(root, 'crates'));
  return h.digest('hex').slice(0, 16);
}

const started = Date.now();
const load = os.loadavg();
const digestBefore = sourceDigest();

if (only === 'liveupdate') {
  run('npx', ['--no', '--', 'tsc', '-p', 'tsconfig.build.json']);
  const lu = lastJson(run(process.execPath, ['--expose-gc', 'bench/liveupdate.mjs'], { capture: true }), 'bench/liveupdate.mjs');
  const rep = liveupdateReport(lu);
  const when = new Date(started).toISOString();
  const md = [
    `# iommu-liveupdate bench (live update only) — ${when}`,
    '',
    `node ${process.version} · ${os.cpus()[0]?.model ?? 'unknown'} · nproc ${os.availableParallelism?.() ?? os.cpus().length} · load avg at start ${load.map((x) => x.toFixed(2)).join(' ')}${quick ? ' · BENCH_QUICK' : ''} · ${Math.round((Date.now() - started) / 1000)} s`,
    '',
    rep.md,
    '',
  ].join('\n');
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  writeFileSync(join(root, 'bench', 'results', 'liveupdate.md'), md);
  writeFileSync(join(root, 'bench', 'results', 'liveupdate.json'), `${JSON.stringify({ date: when, quick, loadavgAtStart: load, liveupdate: lu, sideBySide: rep.sideBySide }, null, 2)}\n`);
  process.stdout.write(`\n${md}`);
  process.exit(0);
}

// (a) Fresh addon and dist/.
run(process.execPath, ['scripts/build-native.mjs']);
run('npx', ['--no', '--', 'tsc', '-p', 'tsconfig.build.json']);

// (b) Native core under criterion; read back median ns per iteration of this run.
const cargo = process.env.CARGO || 'cargo';
const criterionStart = Date.now();
// The walk_4level scenario also dumps its table pages and IOVAs for the flat C walk (bench/walk_flat.c).
const walkDir = mkdtempSync(join(os.tmpdir(), 'walk-bench-'));
// Each translate scenario also as the median of single timed passes over its batch: the statistic
// of the flat C walk, so the walk's ratio compares like with like.
const walkRounds = quick ? 200 : 2000;
run(cargo, ['bench', '-p', 'vtd', '--bench', 'translate', '--', '--noplot', ...(quick ? ['--quick'] : [])], {
  env: { ...process.env, VTD_WALK_DUMP: join(walkDir, 'walk.bin'), VTD_BENCH_ROUNDS: String(walkRounds), VTD_BENCH_ROUNDS_OUT: join(walkDir, 'rounds.jsonl') },
});
const rounds = Object.fromEntries(
  readFileSync(join(walkDir, 'rounds.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .map((r) => [r.id, r.medianNs]),
);
const criterionDir = join(resolve(root, process.env.CARGO_TARGET_DIR || 'target'), 'criterion');
function readEstimates(id) {
  const file = join(criterionDir, id, 'new', 'estimates.json');
  let mtime;
  try {
    mtime = statSync(file).mtimeMs;
  } catch {
    die(`criterion wrote no ${file}`);
  }
  if (mtime < criterionStart - 1000) die(`${file} is stale (not written by this run)`);
  const est = JSON.parse(readFileSync(file, 'utf8'));
  // The median, like the N-API rows: on a shared machine the mean takes every outlier in full.
  return { mean: est.median.point_estimate, lower: est.median.confidence_interval.lower_bound, upper: est.median.confidence_interval.upper_bound };
}
const native = {};
for (const id of [
  'translate/iotlb_hit',
  'translate/walk_4level',
  'translate/walk_psc',
  'translate/batch_4096_mixed',
  'map/1g_4k',
  'unmap/1g_4k',
  'map/1g_2m',
  'unmap/1g_2m',
]) {
  native[id] = readEstimates(id);
}

// The floor: a flat C walk over the same table bytes, run right after criterion.
const walkFlat = (() => {
  const bin = join(walkDir, 'walk_flat');
  const cmd = ['cc', '-O2', 'bench/walk_flat.c', '-o', bin];
  log(`$ ${cmd.join(' ')}`);
  const res = spawnSync(cmd[0], cmd.slice(1), { cwd: root, stdio: ['ignore', 2, 'pipe'], encoding: 'utf8' });
  if (res.error || res.status !== 0) die(`cc bench/walk_flat.c failed (it needs a C compiler: apt-get install -y build-essential): ${res.error?.message ?? res.stderr}`);
  const out = lastJson(run(bin, [join(walkDir, 'walk.bin'), quick ? '200' : '2000'], { capture: true }), 'bench/walk_flat.c');
  rmSync(walkDir, { recursive: true, force: true });
  return out;
})();

// (b2) FDT: our encoder / checker / decoder and vm-fdt under criterion (crates/fdt/benches/fdt.rs),
// then Debian's libfdt on the same trees (bench/fdt_libfdt.c, our C harness linking -lfdt).
const fdtDump = mkdtempSync(join(os.tmpdir(), 'fdt-bench-'));
run(cargo, ['bench', '-p', 'fdt', '--bench', 'fdt', '--', '--noplot', ...(quick ? ['--quick'] : [])], {
  env: { ...process.env, FDT_BENCH_DUMP_DIR: fdtDump },
});
const fdtNative = {};
for (const id of [
  'fdt_encode/ours_libfdt_1k',
  'fdt_encode/ours_libfdt_100k',
  'fdt_encode/ours_dtc_100k',
  'fdt_encode/vmfdt_1k',
  'fdt_encode/vmfdt_100k',
  'fdt_encode/ours_unique_20k',
  'fdt_encode/vmfdt_unique_20k',
  'fdt_check/ours_100k',
  'fdt_decode/ours_100k',
]) {
  const est = readEstimates(id);
  let bytes;
  try {
    bytes = JSON.parse(readFileSync(join(criterionDir, id, 'new', 'benchmark.json'), 'utf8')).throughput.Bytes;
  } catch {
    die(`criterion wrote no byte throughput for ${id}`);
  }
  fdtNative[id] = { ...est, bytes };
}
const libfdtBin = join(fdtDump, 'fdt_libfdt');
{
  const cmd = ['cc', '-O2', 'bench/fdt_libfdt.c', '-lfdt', '-o', libfdtBin];
  log(`$ ${cmd.join(' ')}`);
  const res = spawnSync(cmd[0], cmd.slice(1), { cwd: root, stdio: ['ignore', 2, 'pipe'], encoding: 'utf8' });
  const hint =
    'the libfdt baseline needs a C compiler and libfdt-dev; run the apt-get line of .ci/run ' +
    '(apt-get update && apt-get install -y build-essential libfdt-dev device-tree-compiler)';
  if (res.error) die(`cannot run cc (${res.error.message}): ${hint}`);
  if (res.status !== 0) {
    process.stderr.write(res.stderr);
    die(`cc bench/fdt_libfdt.c -lfdt failed${/libfdt\.h|-lfdt/.test(res.stderr) ? ' (libfdt missing)' : ''}: ${hint}`);
  }
}
// libfdt's name dedup is quadratic in the strings block (2–11 s for 20,000 unique names): one run
// of the 20,000-name case, or one of 5,000 names under BENCH_QUICK.
const libfdtUniqueN = quick ? 5000 : 20000;
const libfdt = lastJson(run(libfdtBin, [fdtDump, String(libfdtUniqueN), '1', quick ? '1' : '0'], { capture: true }), 'bench/fdt_libfdt.c');
const sameBytes = (a, b) => {
  try {
    return readFileSync(join(fdtDump, a)).equals(readFileSync(join(fdtDump, b)));
  } catch (e) {
    die(`cannot compare ${a} and ${b}: ${e.message}`);
  }
};
const identLibfdt = sameBytes('ours_libfdt_1k.dtb', 'libfdt_1k.dtb');
const identVmfdt = sameBytes('ours_dtc_1k.dtb', 'vmfdt_1k.dtb');
if (!identLibfdt) log(`WARNING: our Layout::Libfdt 1k blob differs from libfdt's (kept in ${fdtDump})`);
else rmSync(fdtDump, { recursive: true, force: true });

// (c) JS side: N-API batch / single calls, plain-TS walk, facade map/unmap.
const napi = lastJson(run(process.execPath, ['--expose-gc', '--import', 'tsx', 'bench/napi.mjs'], { capture: true }), 'bench/napi.mjs');
// Memory in its own fresh process, so the RSS delta is this scenario's alone.
const memory = lastJson(run(process.execPath, ['--expose-gc', 'bench/memory.mjs'], { capture: true }), 'bench/memory.mjs');
// The kernel layer (Host.boot + iommufd + VFIO cdev) vs the native builder, and device DMA.
const kernel = lastJson(run(process.execPath, ['--expose-gc', 'bench/kernel.mjs'], { capture: true }), 'bench/kernel.mjs');
// Live update (Host.boot + KHO + kexec): the VMM's blackout, and the replay baseline.
const liveupdate = lastJson(run(process.execPath, ['--expose-gc', 'bench/liveupdate.mjs'], { capture: true }), 'bench/liveupdate.mjs');

const digestAfter = sourceDigest();
const sourcesChanged = digestBefore !== digestAfter;
if (sourcesChanged) log('WARNING: crates/ sources changed during the run; native and N-API rows may come from different builds');

// (d) The table.
const sig2 = (x) => (Number.isFinite(x) ? String(Number(x.toPrecision(2))) : 'n/a');
const ratio = (x) => `${sig2(x)}×`;
const group3 = (x) => Math.round(x).toLocaleString('en-US');
function ns(x) {
  if (x < 10) return x.toFixed(2);
  if (x < 100) return x.toFixed(1);
  return group3(x);
}
const nsMs = (x) => `${group3(x)} (${(x / 1e6).toFixed(x < 1e6 ? 3 : 2)} ms)`;
const mib = (b) => `${(b / MIB).toFixed(1)} MiB`;
const met = (ok) => (ok ? 'yes' : 'no');

const per = (id) => native[id].mean / BATCH;
const hit = per('translate/iotlb_hit');
const w4 = per('translate/walk_4level');
const w4Rounds = rounds['translate/walk_4level'];
if (!(w4Rounds > 0)) die('the translate bench wrote no median of timed passes for walk_4level');
const psc = per('translate/walk_psc');
const mixed = per('translate/batch_4096_mixed');
const nb = napi.batch;
const one = napi.one;
const ts = napi.tsWalk.ns;
const mu = napi.mapUnmap;

// Ideal host footprint: every frame the model had to materialise. framesResident already counts
// the table pages (they are written), so the touched frames beyond them are added, not all of it.
const otherTouched = Math.max(0, memory.framesResident - memory.tablePages) * 4096;
const ideal = memory.tableBytes + otherTouched;
const memLimit = 1.2 * ideal + 20 * MIB;
const cWalk = walkFlat.median_ns_per_walk;

const rows = [
  ['native IOTLB-hit translation (translate/iotlb_hit ÷ 4096)', ns(hit), '—', '≤ 4 ns', met(hit <= 4)],
  [`native 4-level walk on a miss, IOTLB+PSC off (translate/walk_4level ÷ 4096); ratio = the median of ${walkRounds} timed passes over the batch (${ns(w4Rounds)} ns) ÷ a flat C walk over the same ${walkFlat.tablePages} table pages, the median of as many passes (bench/walk_flat.c, cc -O2: ${ns(cWalk)} ns)`, ns(w4), ratio(w4Rounds / cWalk), '≤ 2× the C walk', met(w4Rounds / cWalk <= 2)],
  ['native walk with PSC, IOTLB off (translate/walk_psc ÷ 4096); ratio = walk_4level ÷ this', ns(psc), ratio(w4 / psc), 'info', '—'],
  ['native mixed batch 4096, default unit (translate/batch_4096_mixed ÷ 4096)', ns(mixed), '—', 'info (N-API baseline)', '—'],
  ['N-API batch 4096 `unit.translate`, IOTLB-hit; ratio = native ÷ N-API', ns(nb.iotlb_hit.ns), ratio(hit / nb.iotlb_hit.ns), '≥ 0.9× native', met(hit / nb.iotlb_hit.ns >= 0.9)],
  ['N-API batch 4096 `unit.translate`, mixed; ratio = native ÷ N-API', ns(nb.batch_4096_mixed.ns), ratio(mixed / nb.batch_4096_mixed.ns), '≥ 0.9× native', met(mixed / nb.batch_4096_mixed.ns >= 0.9)],
  ['N-API batch 4096 `unit.translate`, walk_4level; ratio = native ÷ N-API', ns(nb.walk_4level.ns), ratio(w4 / nb.walk_4level.ns), 'info', '—'],
  ['N-API `unit.translateOne` per call, IOTLB-hit IOVAs; ratio = ÷ N-API batch per element', ns(one.iotlb_hit.ns), ratio(one.iotlb_hit.ns / nb.iotlb_hit.ns), 'info', '—'],
  ['N-API `unit.translateOne` per call, mixed IOVAs; ratio = ÷ N-API batch per element', ns(one.batch_4096_mixed.ns), ratio(one.batch_4096_mixed.ns / nb.batch_4096_mixed.ns), 'info', '—'],
  ['plain TS walk (DataView + BigInt), walk_4level IOVAs; ratio = JS ÷ native walk', ns(ts), ratio(ts / w4), 'native ≥ 20× faster', met(ts / w4 >= 20)],
  ['plain TS walk vs N-API batch walk_4level; ratio = JS ÷ N-API', ns(ts), ratio(ts / nb.walk_4level.ns), 'info', '—'],
  ['native map 1 GiB as 262,144 4K PTEs (map/1g_4k)', nsMs(native['map/1g_4k'].mean), '—', '≤ 10 ms', met(native['map/1g_4k'].mean <= 10e6)],
  ['native unmap 1 GiB of 4K PTEs + iotlb_sync (unmap/1g_4k)', nsMs(native['unmap/1g_4k'].mean), '—', 'info', '—'],
  ['native map 1 GiB as 512 2M pages (map/1g_2m)', nsMs(native['map/1g_2m'].mean), '—', 'info', '—'],
  ['native unmap 1 GiB of 2M pages + iotlb_sync (unmap/1g_2m)', nsMs(native['unmap/1g_2m'].mean), '—', 'info', '—'],
  ['N-API `pt.map` 1 GiB as 4K PTEs; ratio = native ÷ N-API', nsMs(mu['1g_4k'].map), ratio(native['map/1g_4k'].mean / mu['1g_4k'].map), 'info', '—'],
  ['N-API `pt.unmap` + `iotlbSync` 1 GiB of 4K PTEs; ratio = native ÷ N-API', nsMs(mu['1g_4k'].unmap), ratio(native['unmap/1g_4k'].mean / mu['1g_4k'].unmap), 'info', '—'],
  [`memory, 1 TiB host + 4 GiB as 4K: ideal = ${memory.tablePages} table pages + ${Math.round(otherTouched / 4096)} other touched frames`, mib(ideal), '—', 'info', '—'],
  ['memory: host RSS growth (fresh process); ratio = ÷ ideal', mib(memory.rssGrowth), ratio(memory.rssGrowth / ideal), `≤ 1.2 × ideal + 20 MiB (${mib(memLimit)})`, met(memory.rssGrowth <= memLimit)],
  ['memory: `mem.stats().hostBytes`; ratio = ÷ ideal', mib(memory.hostBytes), ratio(memory.hostBytes / ideal), `≤ 1.2 × ideal + 20 MiB (${mib(memLimit)})`, met(memory.hostBytes <= memLimit)],
];

// Kernel rows: TS layer and native baseline interleaved round by round in one process (bench/kernel.mjs);
// medians; ratio = TS ÷ native unless the row says otherwise.
const us = (x) => `${x < 1e4 ? (x / 1e3).toFixed(1) : group3(x / 1e3)} µs`;
const msec = (x) => `${x < 1e7 ? (x / 1e6).toFixed(2) : x < 1e8 ? (x / 1e6).toFixed(1) : group3(x / 1e6)} ms`;
const kh = kernel.huge;
const ks = kernel.small;
const kp = kernel.perIoctl;
const kd = kernel.dma;
const kLast = kp.scaling[kp.scaling.length - 1];
const kScale = kp.scaling.slice(0, -1);
const kUnmapRow =
  kp.unmapAllNs !== null
    ? [
        `then one IOAS_UNMAP of all ${group3(kp.ioctls)} areas (iova 0, length 2^64−1), 1 run; ratio = TS (${group3(kp.ioctls)} maps + this) ÷ native mapRuns + unmap + iotlbSync of the same runs (${msec(kp.nativeTotalNs)})`,
        msec(kp.unmapAllNs),
        ratio(kp.totalRatio),
        'info',
        '—',
      ]
    : [
        `then one IOAS_UNMAP of all areas (iova 0, length 2^64−1), timed after ${group3(kLast.areas)} 4 KiB maps (${kScale.map((x) => group3(x.areas)).join(' / ')} areas: ${kScale
          .map((x) => msec(x.unmapAllNs).replace(' ms', ''))
          .join(' / ')} ms; ×${kp.unmapPerDoubling.toFixed(1)} per doubling of the areas; the full ${group3(kp.ioctls)} was skipped with BENCH_KERNEL_FULL_UNMAP=0); ratio = ÷ native unmap + iotlbSync of those ${group3(kLast.areas)} pages (${msec(kLast.nativeUnmapNs)})`,
        msec(kLast.unmapAllNs),
        ratio(kLast.unmapAllNs / kLast.nativeUnmapNs),
        'info',
        '—',
      ];
const hitNs = per('translate/iotlb_hit');
const kernelRows = [
  [
    `IOAS_MAP+UNMAP 1 GiB, 2 MiB-aligned (512 superpages): TS layer vs native builder (mapRuns of the same 512 runs + unmap + iotlbSync: ${us(kh.native.total)}); TS map ${us(kh.ts.map)} + unmap ${us(kh.ts.unmap)}; ratio = TS ÷ native`,
    us(kh.ts.total),
    ratio(kh.ratio),
    '≤ 1.5×',
    met(kh.ratio <= 1.5),
  ],
  [
    `IOAS_MAP+UNMAP 1 GiB as 262,144 4 KiB PTEs (IOMMU_OPTION HUGE_PAGES=0): TS layer vs native builder (mapRuns of the same 262,144 one-page runs + unmap + iotlbSync: ${msec(ks.native.total)}); TS map ${msec(ks.ts.map)} + unmap ${msec(ks.ts.unmap)}; ratio = TS ÷ native`,
    msec(ks.ts.total),
    ratio(ks.ratio),
    '≤ 1.5×',
    met(ks.ratio <= 1.5),
  ],
  [
    `${group3(kp.ioctls)} × IOAS_MAP of 4 KiB (FIXED_IOVA, consecutive IOVAs; 1 run): ${group3(kp.nsPerIoctl)} ns per ioctl; ratio = TS ÷ native mapRuns of the same ${group3(kp.ioctls)} runs (${msec(kp.nativeMapNs)})`,
    msec(kp.mapNs),
    ratio(kp.mapRatio),
    'info',
    '—',
  ],
  kUnmapRow,
  [
    `DMA read \`host.device(bdf).dma.readInto\` of 1 MiB, 64 MiB window mapped as 2 MiB superpages, IOTLB warm (${ns(kd.read.nsPerPage)} ns per 4 KiB page)`,
    `${group3(kd.read.mbs)} MB/s`,
    '—',
    'info',
    '—',
  ],
  [`DMA write \`dma.write\` of 1 MiB, same window (${ns(kd.write.nsPerPage)} ns per 4 KiB page)`, `${group3(kd.write.mbs)} MB/s`, '—', 'info', '—'],
  [
    `\`dma.translate\` batch of 4096 random page IOVAs of the window (${kd.translate.missesPerPass} IOTLB misses per batch), ns per translation; ratio = ÷ native IOTLB hit (translate/iotlb_hit ÷ 4096, ${ns(hitNs)} ns; N-API \`unit.translate\` hit: ${ns(nb.iotlb_hit.ns)} ns)`,
    ns(kd.translate.ns),
    ratio(kd.translate.ns / hitNs),
    'info',
    '—',
  ],
  ...syscallRows(kernel.syscall),
];

/**
 * The syscall path (bench/kernel.mjs (0), issue 19's sequence): µs per ioctl, mean over the
 * six ioctls (the median over rounds of 1,000 sequences of each round's trimmed mean), against the real
 * Linux 7.3 under QEMU TCG on the same sequence (5.5 µs per ioctl, issue 19); then per kind, and
 * what a failing ioctl costs against its success.
 */
function syscallRows(ks) {
  const k = ks.perKind;
  const u2 = (x) => (x / 1e3).toFixed(2);
  const worst = Math.max(ks.eexistOverMap, ks.enoentOverUnmap);
  return [
    [
      `syscall path: open /dev/iommu, IOAS_ALLOC, IOAS_MAP 64 KiB (no device), MAP again (EEXIST), partial UNMAP (ENOENT), UNMAP, DESTROY, close; µs per ioctl, mean over the 6 ioctls, each kind's slowest 0.5% of calls dropped (${group3(ks.ioctlsPerSec)} ioctls/s; median ${u2(ks.perIoctlMedian)} µs, untrimmed mean ${u2(ks.perIoctlRawMean)} µs); ratio = ÷ the real Linux 7.3 under QEMU TCG on the same sequence (${u2(ks.tcgNsPerIoctl)} µs per ioctl, issue 19)`,
      `${u2(ks.perIoctl)} µs`,
      ratio(ks.perIoctl / ks.tcgNsPerIoctl),
      '≤ 2 µs',
      met(ks.perIoctl <= 2000),
    ],
    [
      `syscall path per call, µs (mean): open ${u2(k.open.mean)}, IOAS_ALLOC ${u2(k.alloc.mean)}, IOAS_MAP ${u2(k.map.mean)}, MAP → EEXIST ${u2(k.eexist.mean)}, UNMAP → ENOENT ${u2(k.enoent.mean)}, UNMAP ${u2(k.unmap.mean)}, DESTROY ${u2(k.destroy.mean)}, close ${u2(k.close.mean)}; ratio = the worst failing ioctl ÷ its success (EEXIST ÷ MAP ${sig2(ks.eexistOverMap)}, ENOENT ÷ UNMAP ${sig2(ks.enoentOverUnmap)})`,
      `EEXIST ${u2(k.eexist.mean)} µs, ENOENT ${u2(k.enoent.mean)} µs`,
      ratio(worst),
      '≤ 1.5×',
      met(worst <= 1.5),
    ],
  ];
}

// Live-update rows and the RFC / LUO side-by-side table: bench/liveupdate-report.mjs.
const luReport = liveupdateReport(liveupdate);
const luRows = luReport.rows;

// FDT rows. MB/s = 10^6 bytes per second of the blob's totalsize; ours and vm-fdt: criterion
// median; libfdt: median of the C harness's clock_gettime runs.
const mbs = (bytes, nsPer) => (bytes / nsPer) * 1e3;
const fmtMbs = (x) => `${group3(x)} MB/s`;
const fmtMs = (nsPer) => (nsPer >= 1e8 ? `${group3(nsPer / 1e6)} ms` : `${(nsPer / 1e6).toFixed(nsPer < 1e7 ? 2 : 1)} ms`);
const fN = (id) => fdtNative[id];
const ourMbs = (id) => mbs(fN(id).bytes, fN(id).mean);
const libMbs = (k) => mbs(libfdt[k].bytes, libfdt[k].median_ns);
const enc1k = ourMbs('fdt_encode/ours_libfdt_1k');
const enc100k = ourMbs('fdt_encode/ours_libfdt_100k');
const dtc100k = ourMbs('fdt_encode/ours_dtc_100k');
const vm1k = ourMbs('fdt_encode/vmfdt_1k');
const vm100k = ourMbs('fdt_encode/vmfdt_100k');
const lib1k = libMbs('encode_1k');
const lib100k = libMbs('encode_100k');
const libNd100k = libMbs('encode_100k_nodedup');
const chkOurs = ourMbs('fdt_check/ours_100k');
const chkLib = libMbs('check_full_100k');
const decOurs = ourMbs('fdt_decode/ours_100k');
const uqOurs = fN('fdt_encode/ours_unique_20k').mean;
const uqVm = fN('fdt_encode/vmfdt_unique_20k').mean;
const uqLib = libfdt.unique.median_ns;
const kb = (b) => `${group3(b / 1000)} kB`;
const fdtRows = [
  [`byte identity: ours (Layout::Libfdt) = libfdt fdt_sw, 1k-node tree (${kb(libfdt.encode_1k.bytes)})`, identLibfdt ? 'identical' : '**WARNING: differs**', '—', 'identical', met(identLibfdt)],
  ['byte identity: ours (Layout::Dtc) = vm-fdt 0.3, 1k-node tree', identVmfdt ? 'identical' : 'differs', '—', 'info', '—'],
  [`encode 1k nodes (${kb(fN('fdt_encode/ours_libfdt_1k').bytes)}), ours Layout::Libfdt vs libfdt fdt_sw ${fmtMbs(lib1k)}; ratio = ours ÷ libfdt`, fmtMbs(enc1k), ratio(enc1k / lib1k), '≥ 1.2×', met(enc1k / lib1k >= 1.2)],
  [`encode 100k nodes (${kb(fN('fdt_encode/ours_libfdt_100k').bytes)}), ours Layout::Libfdt vs libfdt fdt_sw ${fmtMbs(lib100k)}; ratio = ours ÷ libfdt`, fmtMbs(enc100k), ratio(enc100k / lib100k), '≥ 1.2×', met(enc100k / lib100k >= 1.2)],
  [`encode 1k nodes, ours Layout::Libfdt vs vm-fdt 0.3 ${fmtMbs(vm1k)}; ratio = ours ÷ vm-fdt`, fmtMbs(enc1k), ratio(enc1k / vm1k), '≥ 1.0×', met(enc1k / vm1k >= 1.0)],
  [`encode 100k nodes, ours Layout::Libfdt vs vm-fdt 0.3 ${fmtMbs(vm100k)}; ratio = ours ÷ vm-fdt`, fmtMbs(enc100k), ratio(enc100k / vm100k), '≥ 1.0×', met(enc100k / vm100k >= 1.0)],
  [`encode 100k nodes, ours Layout::Dtc (vm-fdt's layout) vs vm-fdt ${fmtMbs(vm100k)}; ratio = ours ÷ vm-fdt`, fmtMbs(dtc100k), ratio(dtc100k / vm100k), 'info', '—'],
  [`encode 100k nodes, libfdt FDT_CREATE_FLAG_NO_NAME_DEDUP (${kb(libfdt.encode_100k_nodedup.bytes)}); ratio = ours (dedup) ÷ this`, fmtMbs(libNd100k), ratio(enc100k / libNd100k), 'info', '—'],
  ['encode 20,000 unique property names, ours Layout::Libfdt', fmtMs(uqOurs), '—', '≤ 50 ms', met(uqOurs <= 50e6)],
  ['encode 20,000 unique property names, vm-fdt 0.3; ratio = vm-fdt ÷ ours', fmtMs(uqVm), ratio(uqVm / uqOurs), 'info', '—'],
  [`encode ${group3(libfdtUniqueN)} unique property names, libfdt fdt_sw (1 run; quadratic dedup${libfdtUniqueN !== 20000 ? '; BENCH_QUICK: 5,000 names, not comparable' : ''}); ratio = libfdt ÷ ours`, fmtMs(uqLib), libfdtUniqueN === 20000 ? ratio(uqLib / uqOurs) : 'n/a', 'info', '—'],
  [`check 100k-node blob, ours check(Validation::Structural) vs libfdt fdt_check_full ${fmtMbs(chkLib)}; ratio = ours ÷ libfdt`, fmtMbs(chkOurs), ratio(chkOurs / chkLib), '≥ 0.8×', met(chkOurs / chkLib >= 0.8)],
  [`decode 100k-node blob to a Node tree, ours decode(Validation::Structural) (${fmtMs(fN('fdt_decode/ours_100k').mean)}, drop excluded)`, fmtMbs(decOurs), '—', 'info', '—'],
];

const meta = {
  date: new Date(started).toISOString(),
  node: process.version,
  cpu: os.cpus()[0]?.model ?? 'unknown',
  nproc: os.availableParallelism?.() ?? os.cpus().length,
  quick,
  sourceDigest: digestBefore,
  sourcesChanged,
  loadavgAtStart: load.map((x) => Number(x.toFixed(2))),
  durationS: 0,
};
meta.durationS = Math.round((Date.now() - started) / 1000);

const header = ['benchmark', 'ns/op', 'ratio', 'target', 'met?'];
const fdtHeader = ['benchmark', 'value', 'ratio', 'target', 'met?'];
const md = [
  `# iommu-liveupdate bench — ${meta.date}`,
  '',
  `node ${meta.node} · ${meta.cpu} · nproc ${meta.nproc} · load avg at start ${meta.loadavgAtStart.join(' ')}${quick ? ' · BENCH_QUICK' : ''} · ${meta.durationS} s`,
  ...(sourcesChanged
    ? ['', '**WARNING: crates/ sources changed during this run: the addon and the criterion binary may be different builds; rerun.**']
    : []),
  '',
  'Native rows: criterion median of this run. N-API / plain-TS rows: median of timed runs (process.hrtime.bigint) on the same scenarios. ns/op is per translation unless a unit is given.',
  '',
  `| ${header.join(' | ')} |`,
  `| ${header.map((h, i) => (i === 1 || i === 2 ? '---:' : '---')).join(' | ')} |`,
  ...rows.map((r) => `| ${r.join(' | ')} |`),
  '',
  '## Kernel: iommufd + VFIO cdev through the TS layer',
  '',
  'bench/kernel.mjs, one process: Host.boot (16 GiB, two devices bound to iommufd and attached to their own IOAS, so each IOAS has a VT-d domain and IOAS_MAP pins and programs PTEs); the buffer is a 1 GiB MAP_SHARED|MAP_ANONYMOUS mmap, 2 MiB aligned, every 2 MiB touched first (2 MiB folios). The native baseline is `PageTable.mapRuns` of exactly the runs the kernel mapped (PAs read back with `iovaToPhys`), `unmap` and `iotlbSync`, on its own page table of the same unit. TS and native alternate round by round; values are medians, ratios TS ÷ native of this run. MB/s = 10^6 bytes per second.',
  '',
  `| ${fdtHeader.join(' | ')} |`,
  `| ${fdtHeader.map((h, i) => (i === 1 || i === 2 ? '---:' : '---')).join(' | ')} |`,
  ...kernelRows.map((r) => `| ${r.join(' | ')} |`),
  '',
  luReport.md,
  '',
  '## FDT',
  '',
  'KHO-like tree: root {compatible, preserved-memory-map} + N children `node<i>` {iova-start, iova-len, iommu-prot}, little-endian values; names formatted before timing. Ours and vm-fdt: criterion median of this run (crates/fdt/benches/fdt.rs); libfdt: Debian libfdt, bench/fdt_libfdt.c built with cc -O2, median of its clock_gettime runs. MB/s = 10^6 bytes of blob per second.',
  '',
  `| ${fdtHeader.join(' | ')} |`,
  `| ${fdtHeader.map((h, i) => (i === 1 || i === 2 ? '---:' : '---')).join(' | ')} |`,
  ...fdtRows.map((r) => `| ${r.join(' | ')} |`),
  '',
].join('\n');

mkdirSync(join(root, 'bench', 'results'), { recursive: true });
writeFileSync(join(root, 'bench', 'results', 'latest.md'), md);
writeFileSync(
  join(root, 'bench', 'results', 'latest.json'),
  `${JSON.stringify(
    {
      ...meta,
      native,
      napi,
      memory: { ...memory, idealBytes: ideal, limitBytes: memLimit },
      kernel: { ...kernel, rows: kernelRows.map(([benchmark, value, r, target, ok]) => ({ benchmark, value, ratio: r, target, met: ok })) },
      liveupdate: { ...liveupdate, sideBySide: luReport.sideBySide, luoRows: luReport.luoRows.map(([benchmark, value, r, target, ok]) => ({ benchmark, value, ratio: r, target, met: ok })), rows: luRows.map(([benchmark, value, r, target, ok]) => ({ benchmark, value, ratio: r, target, met: ok })) },
      rows: rows.map(([benchmark, value, r, target, ok]) => ({ benchmark, value, ratio: r, target, met: ok })),
      fdt: {
        criterion: fdtNative,
        libfdt: { ...libfdt, uniqueRuns: 1 },
        identical: { oursLibfdtVsLibfdt1k: identLibfdt, oursDtcVsVmfdt1k: identVmfdt },
        rows: fdtRows.map(([benchmark, value, r, target, ok]) => ({ benchmark, value, ratio: r, target, met: ok })),
      },
    },
    null,
    2,
  )}\n`,
);
process.stdout.write(`\n${md}`);
