// Live update under `npm run bench`: the VMM's blackout across a kexec with KHO, against a VMM
// that replays its mappings into a fresh kernel. Run as `node --expose-gc bench/liveupdate.mjs`.
// Progress goes to stderr; stdout is ONE JSON object (times in ns).
//
// Blackout = from `write('1')` to /sys/kernel/kho/active to the VMM holding its restored iommufd
// with its device attached again: kexec_file_load + reboot(LINUX_REBOOT_CMD_KEXEC) (shutdown,
// scrub, the next kernel's boot, which adopts and verifies the handed-over domain), then in a new
// process: read /sys/kernel/iommufd_persisted/1/iommufd (claim), open vfio0, BIND_IOMMUFD,
// ATTACH_IOMMUFD_PT to the restored HWPT. Measured with N = 1k, 10k, 100k and 1M 4 KiB
// mappings: one IOAS_MAP of N × 4 KiB of a guestmemfs file into a persistent IOAS with
// IOMMU_OPTION HUGE_PAGES=0, so the domain holds N 4 KiB PTEs. Each update starts from the
// kernel the previous one booted (gen k → k+1); every update is checked (same pgd, same table
// pages, the restored HWPT is the one attached).
//
// DMA never stops: some updates run with a `host.dmaTraffic` generator over the whole window
// (small pagesPerStep, bursts between every lifecycle phase); its faults and mismatches are
// reported. The headline blackout is the median of the updates WITHOUT traffic (no traffic cost
// in the time); the with-traffic median is reported alongside.
//
// Replay baseline: a fresh host with the same guestmemfs file (pages allocated), then the VMM
// replays: open /dev/iommu, IOAS_ALLOC, HUGE_PAGES=0, open vfio0, BIND, ATTACH, and N separate
// IOAS_MAP ioctls of 4 KiB (FIXED_IOVA, consecutive IOVAs). It does not include a kexec or boot,
// which the KHO blackout does. At 1M that is ~20 s for one run, so: 100k three times, 1M once.
// For reference, also the replay as ONE IOAS_MAP of N × 4 KiB (what a VMM replaying one region
// would do).
//
// The upstream flow (LUO) beside it, interleaved update by update with the RFC flow at each size
// (same rounds, same traffic on/off, the order of the two swapped every round): a fresh Host.boot
// with `kho=on liveupdate=on`, guest RAM as a sealed memfd mapped with ONE IOMMU_IOAS_MAP_FILE into
// an IOAS with HUGE_PAGES=0 (set before the map; the memfd's 2 MiB folios would otherwise give
// 2 MiB IOPTEs), the device attached to a HWPT marked with IOMMU_HWPT_LU_SET_PRESERVE
// (createLuoVm). Per update, untimed preparation while the guest runs: preserveLuoVm (session,
// SET_PRESERVE, PRESERVE_FD of memfd, iommufd and device), reported on its own. LUO blackout = from
// kexec_file_load + reboot(LINUX_REBOOT_CMD_KEXEC) (liveupdate_reboot: serialise, freeze, KHO
// finalise; shutdown, scrub, the next kernel's boot, which re-attaches the preserved domain in
// early boot) until the VMM's new process has retrieved the session (memfd mapped again,
// iommufd, device), bound + attached the device to the restored HWPT and FINISHed. Every update is
// checked: same pgd and the same table pages, and device DMA written and read back through the
// retrieved memfd at the first, middle and last page.
//
// LUO host memory: BENCH_LUO_HOST_GIB (default 64, the RFC flow's host), so both flows run every
// size on the same host; a smaller host runs the largest multiple of 128 MiB of guest RAM it holds.
//
// Each blackout is also measured in process CPU time (process.cpuUsage: user + system), reported
// beside the wall time: on a shared machine the wall time also counts waiting for a core.
//
// BENCH_QUICK=1: fewer updates, no 1M replay (extrapolated ×10.49 from 100k, said in the row).
// BENCH_LIVEUPDATE_REPLAY_1M=0: skip the 1M replay run (same extrapolation).
import {
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  LINUX_REBOOT_CMD_KEXEC,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  claimPersistentIommufd,
  createGuestRam,
  createLuoVm,
  createPersistentVm,
  finishLuoVm,
  preserveLuoVm,
  reattachLuoVm,
  retrieveLuoVm,
} from '../dist/index.js';

const quick = process.env.BENCH_QUICK === '1';
const replay1M = !quick && process.env.BENCH_LIVEUPDATE_REPLAY_1M !== '0';
const hr = process.hrtime.bigint;
/** The process's CPU time (user + system) in ns: on a shared machine the wall time also counts waiting for a core. */
const cpuNs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
};
const log = (msg) => process.stderr.write(`[liveupdate] ${msg}\n`);
const gc = globalThis.gc ?? (() => {});

const KIB4 = 4096n;
const MIB2 = 2n << 20n;
const GIB = 1n << 30n;
const HOST_MEMORY = 64n * GIB;
const CMDLINE = 'guestmemfs=8G';
const BDF = '0000:01:00.0';
const IOVA = 1n << 32n;
const KHO_DT_MAX = 10 << 20;
const MAP_RW = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
const TRAFFIC_PAGES_PER_STEP = 4;
const LUO_CMDLINE = 'kho=on liveupdate=on';
const LUO_HOST_MEMORY = BigInt(process.env.BENCH_LUO_HOST_GIB ?? 64) * GIB;
/** The LUO size run at `n`: n, or the largest multiple of 128 MiB of guest RAM leaving 512 MiB of the LUO host. */
const luoSize = (n) => {
  const fit = Number((LUO_HOST_MEMORY - (512n << 20n)) / (128n << 20n)) * 32768;
  return Math.min(n, fit);
};
const started = hr();

/** What a traffic generator's steps since a mark add up to, over `updates` updates with traffic. */
function trafficSummary(steps, updates) {
  return {
    updates,
    steps: steps.length,
    pagesWritten: steps.reduce((a, s) => a + s.pagesWritten, 0),
    pagesVerified: steps.reduce((a, s) => a + s.pagesVerified, 0),
    faults: steps.reduce((a, s) => a + s.faults.length, 0),
    mismatches: steps.reduce((a, s) => a + s.mismatches.length, 0),
  };
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length & 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmtMs = (ns) => `${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;

function check(cond, what) {
  if (!cond) throw new Error(`liveupdate bench: ${what}`);
}

/**
 * Sizes: mappings, untimed warm-up updates, timed updates without and with traffic (the two
 * kinds alternate so drift hits both).
 */
const SIZES = [
  { n: 1 << 10, warm: 3, plain: quick ? 5 : 9, traffic: quick ? 2 : 3 },
  { n: 10 << 10, warm: 1, plain: quick ? 5 : 9, traffic: quick ? 2 : 3 },
  { n: 100 << 10, warm: 1, plain: quick ? 3 : 5, traffic: quick ? 1 : 2 },
  { n: 1 << 20, warm: 0, plain: quick ? 1 : 5, traffic: quick ? 1 : 2 },
];

/** A host with a guestmemfs file of `n` 4 KiB pages, every 2 MiB of it touched (blocks allocated). */
function bootWithGuestRam(n) {
  const host = Host.boot({ memory: HOST_MEMORY, seed: 1n, cmdline: CMDLINE, devices: [{ bdf: BDF }] });
  const p = host.kernel.spawn();
  p.mount('guestmemfs', '/mnt/guestmemfs');
  const ram = createGuestRam(p, BigInt(n) * KIB4, '/mnt/guestmemfs/guest-ram');
  const one = Uint8Array.of(1);
  for (let off = 0n; off < ram.size; off += MIB2) p.memWrite(ram.va + off, one);
  return { host, p, ram, va: ram.va, len: ram.size };
}

/** Timeline deltas (wall ns) between consecutive entries named in `names`, for entries pushed since `from`. */
function phaseDeltas(host, from) {
  const tl = host.timeline.slice(from);
  const at = (phase) => {
    const e = tl.find((x) => x.phase === phase);
    check(e, `timeline has no ${phase} phase`);
    return e.wallMs * 1e6;
  };
  const kho = at('kho-dump');
  const shutdown = at('shutdown');
  const jump = at('jump');
  const early = at('early-boot');
  const iommu = at('iommu-init');
  const restore = at('iommufd-restore');
  const boot = at('boot');
  return {
    shutdown: shutdown - kho, // kexec_file_load, reboot, old kernel's shutdown (DMAR blocks non-persistent devices)
    scrub: jump - shutdown, // every unpreserved frame poisoned
    khoIngest: early - jump, // Kernel constructor start + decoding the handed-over blob
    iommuInit: iommu - early, // guestmemfs restore + Intel driver adopting root/context/domain
    iommufdRestore: restore - iommu, // parse /iommufd + verifyDomain + re-taking file pins
    bootRest: boot - restore,
  };
}

// ---- LUO: one world per size --------------------------------------------------------------------

/** A timeline entry's wall ns, or null if the phase is not in `tl`. */
const wallOf = (tl, phase) => {
  const e = tl.find((x) => x.phase === phase);
  return e ? e.wallMs * 1e6 : null;
};

/**
 * The upstream flow at `n` mappings on its own host: createLuoVm (sealed memfd, HUGE_PAGES=0,
 * one IOAS_MAP_FILE, HWPT marked), then `update(withDma)` per live update and `result()`.
 */
function luoWorld(n) {
  gc();
  const tSetup = hr();
  const host = Host.boot({ memory: LUO_HOST_MEMORY, seed: 1n, cmdline: LUO_CMDLINE, devices: [{ bdf: BDF }] });
  const len = BigInt(n) * KIB4;
  let vm = createLuoVm(host, { ram: len, iova: IOVA, hugePages: false });
  // Every 2 MiB of guest RAM touched through the VMM's mapping (the guest has run).
  const one = Uint8Array.of(1);
  for (let off = 0n; off < len; off += MIB2) vm.process.memWrite(vm.va + off, one);
  const sid = host.device(BDF).sid;
  const dom0 = host.kernel.intel.domainOf(sid);
  const pgd = dom0.pt.pgd;
  const pages0 = [...dom0.pt.tablePages()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  {
    const steps = dom0.pt.walk(IOVA + len - KIB4);
    check(steps[steps.length - 1].level === 1, 'LUO: HUGE_PAGES=0 must map 4 KiB PTEs');
  }
  const setupNs = Number(hr() - tSetup);
  log(`N=${n} (LUO, ${Number(LUO_HOST_MEMORY / GIB)} GiB host): setup ${fmtMs(setupNs)}; ${pages0.length} table pages`);
  const traffic = host.dmaTraffic({ bdf: BDF, iova: IOVA, length: len, pagesPerStep: TRAFFIC_PAGES_PER_STEP });
  traffic.stop();
  const stepsBefore = traffic.steps.length;
  const plain = [];
  const plainCpu = [];
  const withTraffic = [];
  const prepare = [];
  const phases = [];
  const probe = [0n, (len / 2n) & ~(KIB4 - 1n), len - KIB4];
  let k = 0;
  let dmaChecks = 0;

  const update = (withDma, r, total) => {
    traffic.stopped = !withDma;
    gc();
    // Preparation while the guest runs (not in the blackout).
    const tp0 = hr();
    const saved = preserveLuoVm(vm, `vm${k++}`);
    const tp1 = hr();
    const p = vm.process;
    const tl0 = host.timeline.length;
    gc();
    host.phase('vmm-reboot'); // a mark on the host's timeline where the blackout starts
    const c0 = cpuNs();
    const t0 = hr();
    p.kexecFileLoad({});
    p.reboot(LINUX_REBOOT_CMD_KEXEC);
    const t1 = hr();
    const got = retrieveLuoVm(host, saved, { reattach: false, finish: false });
    const t2 = hr();
    reattachLuoVm(got);
    const t3 = hr();
    finishLuoVm(got);
    const t4 = hr();
    const cpu = cpuNs() - c0;
    host.phase('vmm-reattach'); // DMA through the re-attached device (traffic, if on)
    vm = got;
    // The same tables, and the device's DMA lands in the retrieved memfd both ways.
    const dom = host.kernel.intel.domainOf(sid);
    check(dom && dom.pt.pgd === pgd, 'LUO: the device must be back on the preserved pgd');
    const pages = [...dom.pt.tablePages()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    check(pages.length === pages0.length && pages.every((x, i) => x === pages0[i]), 'LUO: the same page-table pages must come back');
    const dma = host.device(BDF).dma;
    for (const off of probe) {
      // The probe's bytes are put back after, so the traffic generator's own checks still hold.
      const orig = dma.read(IOVA + off, 4096);
      const tag = new TextEncoder().encode(`luo ${k} @${off}`);
      dma.write(IOVA + off, tag);
      const back = vm.process.memRead(vm.va + off, tag.length);
      check(back.every((x, i) => x === tag[i]), `LUO: DMA write at +0x${off.toString(16)} not seen through the retrieved memfd`);
      const cpu = new TextEncoder().encode(`cpu ${k} @${off}`);
      vm.process.memWrite(vm.va + off + 2048n, cpu);
      const dmaBack = dma.read(IOVA + off + 2048n, cpu.length);
      check(dmaBack.every((x, i) => x === cpu[i]), `LUO: DMA read at +0x${(off + 2048n).toString(16)} does not see the VMM's write`);
      dma.write(IOVA + off, orig);
      dmaChecks++;
    }
    const tl = host.timeline.slice(tl0);
    const mark = wallOf(tl, 'vmm-reboot');
    const khoDump = wallOf(tl, 'kho-dump');
    const shutdown = wallOf(tl, 'shutdown');
    const jump = wallOf(tl, 'jump');
    const early = wallOf(tl, 'early-boot');
    const iommu = wallOf(tl, 'iommu-init');
    const boot = wallOf(tl, 'boot');
    check(shutdown !== null && jump !== null && early !== null && iommu !== null && boot !== null, 'LUO: timeline lacks a kexec phase');
    const ph = {
      reboot: Number(t1 - t0), // kexec_file_load + reboot until the next kernel is up
      // kexec_file_load + liveupdate_reboot (serialise the sessions, freeze, KHO finalise: its DUMP)
      luoReboot: khoDump !== null ? khoDump - mark : shutdown - mark,
      shutdown: khoDump !== null ? shutdown - khoDump : 0, // the old kernel's shutdown (DMAR blocks the unpreserved devices)
      scrub: jump - shutdown,
      khoIngest: early - jump,
      iommuInit: iommu - early, // VT-d init + the preserved domain re-attached in early boot
      bootRest: boot - iommu, // the other initcalls (iommufd, vfio, ...) up to init
      retrieve: Number(t2 - t1), // new process: /dev/liveupdate, RETRIEVE_SESSION, RETRIEVE_FD x3, mmap of the memfd
      reattach: Number(t3 - t2), // BIND_IOMMUFD + ATTACH_IOMMUFD_PT to the restored HWPT
      finish: Number(t4 - t3),
    };
    const ns = Number(t4 - t0);
    if (r !== undefined) prepare.push(Number(tp1 - tp0));
    if (withDma) withTraffic.push(ns);
    else if (r !== undefined) {
      plain.push(ns);
      plainCpu.push(cpu);
      phases.push(ph);
    }
    if (r !== undefined)
      log(
        `N=${n} LUO update ${r + 1}/${total}${withDma ? ' (traffic)' : ''}: prepare ${fmtMs(Number(tp1 - tp0))}; blackout ${fmtMs(ns)} = reboot ${fmtMs(ph.reboot)} ` +
          `(liveupdate_reboot ${fmtMs(ph.luoReboot)}, shutdown ${fmtMs(ph.shutdown)}, scrub ${fmtMs(ph.scrub)}, iommu-init ${fmtMs(ph.iommuInit)}) + retrieve ${fmtMs(ph.retrieve)} + re-attach ${fmtMs(ph.reattach)} + finish ${fmtMs(ph.finish)}`,
      );
  };

  const result = () => {
    traffic.stop();
    const t = trafficSummary(traffic.steps.slice(stepsBefore), withTraffic.length);
    if (withTraffic.length) check(t.pagesVerified > 0, 'LUO: traffic verified no page');
    return {
      n,
      hostMemory: Number(LUO_HOST_MEMORY),
      cmdline: LUO_CMDLINE,
      mappedBytes: Number(len),
      tablePages: pages0.length,
      blackout: median(plain),
      blackoutBest: Math.min(...plain),
      blackoutCpu: median(plainCpu), // process CPU time: less sensitive to a shared machine than the wall time
      blackoutRuns: plain,
      blackoutTraffic: withTraffic.length ? median(withTraffic) : null,
      blackoutTrafficRuns: withTraffic,
      prepare: median(prepare),
      prepareRuns: prepare,
      phases: Object.fromEntries(Object.keys(phases[0]).map((key) => [key, median(phases.map((x) => x[key]))])),
      traffic: t,
      dmaChecks,
      generations: host.kernel.generation,
      setupNs,
    };
  };
  return { update, result };
}

// ---- KHO: blackout at each N -------------------------------------------------------------------

const sizes = [];
const trafficTotals = { updates: 0, pagesWritten: 0, pagesVerified: 0, faults: 0, mismatches: 0 };

for (const cfg of SIZES) {
  const { n } = cfg;
  gc();
  const tSetup = hr();
  const { host, p: p0, ram, len } = bootWithGuestRam(n);
  let p = p0;
  // The device first, so the one IOAS_MAP of N x 4 KiB (HUGE_PAGES=0) pins and maps at once.
  const vm = createPersistentVm(p, { ram, hugePages: false, attachFirst: true, maps: [{ iova: IOVA }] });
  let fd = vm.iommufd;
  const ioas = vm.ioasId;
  const sid = host.device(BDF).sid;
  const dom0 = host.kernel.intel.domainOf(sid);
  const pgd = dom0.pt.pgd;
  const tablePages = dom0.pt.tablePages().length;
  {
    const steps = dom0.pt.walk(IOVA + len - KIB4);
    check(steps[steps.length - 1].level === 1, 'HUGE_PAGES=0 must map 4 KiB PTEs');
  }
  const gm = host.kernel.guestmemfs;
  const carveLo = gm.base;
  const carveHi = gm.base + BigInt(gm.nblocks) * MIB2;

  // What KHO hands over, inspected once: activate, read the blob and the preservation marks, abort.
  let blobBytes;
  let preservedPages = 0;
  let preservedCarveoutPages = 0;
  {
    p.write(p.open('/sys/kernel/kho/active', O_WRONLY), '1');
    const blob = p.read(p.open('/sys/kernel/kho/dt', O_RDONLY), KHO_DT_MAX);
    blobBytes = blob.length;
    for (const { pa, order } of host.memory.preserved()) {
      const pages = 1 << order;
      if (pa >= carveLo && pa < carveHi) {
        check(pa + BigInt(pages) * KIB4 <= carveHi, 'a preserved block straddles the carve-out');
        preservedCarveoutPages += pages;
      } else preservedPages += pages;
    }
    p.write(p.open('/sys/kernel/kho/active', O_WRONLY), '0');
  }
  const setupNs = Number(hr() - tSetup);
  log(
    `N=${n}: setup ${fmtMs(setupNs)}; ${tablePages} table pages; blob ${blobBytes} B; preserved ${preservedPages} pages outside the carve-out ` +
      `(+ ${preservedCarveoutPages} in it = ${(Number(carveHi - carveLo) / 4096) | 0})`,
  );

  const traffic = host.dmaTraffic({ bdf: BDF, iova: IOVA, length: len, pagesPerStep: TRAFFIC_PAGES_PER_STEP });
  const stepsBefore = traffic.steps.length;
  traffic.stop();
  let hwptId = null;
  const plain = [];
  const plainCpu = [];
  const withTraffic = [];
  const phases = [];

  /** One live update, timed. Returns [blackout ns, phase ns]. */
  const update = (withDma) => {
    traffic.stopped = !withDma;
    const active = p.open('/sys/kernel/kho/active', O_WRONLY);
    gc();
    const tl0 = host.timeline.length;
    const c0 = cpuNs();
    const t0 = hr();
    p.write(active, '1');
    const t1 = hr();
    p.kexecFileLoad({});
    p.reboot(LINUX_REBOOT_CMD_KEXEC);
    const t2 = hr();
    p = host.kernel.spawn();
    fd = claimPersistentIommufd(p, 1);
    const t3 = hr();
    const d = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    p.ioctl(d, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    const got = p.ioctl(d, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwptId ?? ioas }).pt_id;
    const t4 = hr();
    const cpu = cpuNs() - c0;
    // The kept tables are the ones attached: same pgd, same pages, and the restored HWPT.
    const dom = host.kernel.intel.domainOf(sid);
    check(dom && dom.pt.pgd === pgd && dom.pt.tablePages().length === tablePages, 'the device must be back on the handed-over page table');
    if (hwptId === null) hwptId = got; // first update: attaching to the IOAS resolves to its restored auto HWPT
    check(got === hwptId, `ATTACH answered pt_id ${got}, the restored HWPT is ${hwptId}`);
    host.phase('vmm-reattach'); // DMA through the re-attached device (traffic, if on)
    const ph = { kho: Number(t1 - t0), kexec: Number(t2 - t1), claim: Number(t3 - t2), rebind: Number(t4 - t3), ...phaseDeltas(host, tl0) };
    return [Number(t4 - t0), ph, cpu];
  };

  // ---- The LUO world at this size (its own host), updated in the same rounds -----------------
  const luo = luoWorld(luoSize(n));

  for (let r = 0; r < cfg.warm; r++) {
    update(false);
    luo.update(false);
  }
  // Alternate plain / traffic while both have runs left, then the rest plain. Each round updates
  // both flows, the RFC first on even rounds and LUO first on odd ones.
  const total = cfg.plain + cfg.traffic;
  let nPlain = 0;
  let nTraffic = 0;
  for (let r = 0; r < total; r++) {
    const withDma = nTraffic < cfg.traffic && (r & 1 || nPlain >= cfg.plain);
    if (r & 1) luo.update(withDma, r, total);
    const [ns, ph, cpu] = update(withDma);
    if (!(r & 1)) luo.update(withDma, r, total);
    if (withDma) {
      withTraffic.push(ns);
      nTraffic++;
    } else {
      plain.push(ns);
      plainCpu.push(cpu);
      phases.push(ph);
      nPlain++;
    }
    log(
      `N=${n} update ${r + 1}/${total}${withDma ? ' (traffic)' : ''}: ${fmtMs(ns)} = kho ${fmtMs(ph.kho)} + kexec ${fmtMs(ph.kexec)} ` +
        `(scrub ${fmtMs(ph.scrub)}, iommu-init ${fmtMs(ph.iommuInit)}, iommufd-restore ${fmtMs(ph.iommufdRestore)}) + claim ${fmtMs(ph.claim)} + re-bind ${fmtMs(ph.rebind)}`,
    );
  }
  traffic.stop();
  const t = trafficSummary(traffic.steps.slice(stepsBefore), cfg.traffic);
  check(t.pagesVerified > 0, 'traffic verified no page');
  for (const k of ['updates', 'pagesWritten', 'pagesVerified', 'faults', 'mismatches']) trafficTotals[k] += t[k];
  const phaseMedians = Object.fromEntries(Object.keys(phases[0]).map((k) => [k, median(phases.map((x) => x[k]))]));
  const res = {
    n,
    mappedBytes: Number(len),
    tablePages,
    blobBytes,
    preservedPages,
    preservedCarveoutPages,
    preservedPagesPerGiB: preservedPages / (Number(len) / Number(GIB)),
    blackout: median(plain),
    blackoutBest: Math.min(...plain),
    blackoutCpu: median(plainCpu),
    blackoutRuns: plain,
    blackoutTraffic: median(withTraffic),
    blackoutTrafficRuns: withTraffic,
    phases: phaseMedians,
    traffic: t,
    generations: host.kernel.generation,
    setupNs,
    luo: luo.result(),
  };
  log(
    `N=${n}: blackout median ${fmtMs(res.blackout)} (${plain.length} runs, best ${fmtMs(res.blackoutBest)}); with traffic ${fmtMs(res.blackoutTraffic)} ` +
      `(${withTraffic.length} runs: ${t.pagesWritten} pages written, ${t.pagesVerified} verified, ${t.faults} faults, ${t.mismatches} mismatches)`,
  );
  log(
    `N=${n}: LUO (N=${res.luo.n}) blackout median ${fmtMs(res.luo.blackout)} (${res.luo.blackoutRuns.length} runs, best ${fmtMs(res.luo.blackoutBest)}), ` +
      `preparation ${fmtMs(res.luo.prepare)}; with traffic ${fmtMs(res.luo.blackoutTraffic)}; LUO ÷ RFC ${(res.luo.blackout / res.blackout).toFixed(2)}`,
  );
  sizes.push(res);
}

// ---- Replay baseline: a fresh kernel re-creating the mappings -----------------------------------

/**
 * Fresh host, guest RAM already there; timed: open /dev/iommu, IOAS_ALLOC, HUGE_PAGES=0, open
 * vfio0, BIND, ATTACH, then the mappings: `perPage` = n IOAS_MAPs of 4 KiB, else one of n × 4 KiB.
 */
function replay(n, perPage) {
  gc();
  const { host, p, va, len } = bootWithGuestRam(n);
  gc();
  const t0 = hr();
  const fd = p.open('/dev/iommu', O_RDWR);
  const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
  p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: ioas, val64: 0n });
  const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
  p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
  if (perPage) {
    const arg = { flags: MAP_RW, ioas_id: ioas, user_va: 0n, length: KIB4, iova: 0n };
    for (let i = 0; i < n; i++) {
      const off = BigInt(i) << 12n;
      arg.user_va = va + off;
      arg.iova = IOVA + off;
      p.ioctl(fd, IOMMU_IOAS_MAP, arg);
    }
  } else {
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: MAP_RW, ioas_id: ioas, user_va: va, length: len, iova: IOVA });
  }
  const ns = Number(hr() - t0);
  const dom = host.kernel.intel.domainOf(host.device(BDF).sid);
  const last = dom.pt.walk(IOVA + len - KIB4);
  check(last[last.length - 1].level === 1 && dom.iovaToPhys(IOVA + len - 8n) !== null, 'replay: the last page must be mapped as a 4 KiB PTE');
  log(`replay N=${n} as ${perPage ? `${n} × 4 KiB IOAS_MAP` : `one IOAS_MAP of ${n} × 4 KiB`}: ${fmtMs(ns)}${perPage ? ` (${((ns / n) / 1e3).toFixed(1)} µs per ioctl)` : ''}`);
  return ns;
}

const replayRes = {};
{
  const n100k = 100 << 10;
  replay(1 << 10, true); // warm the ioctl path (not kept)
  const runs100k = [];
  for (let r = 0; r < (quick ? 1 : 3); r++) runs100k.push(replay(n100k, true));
  replayRes.perPage100k = { n: n100k, runs: runs100k, median: median(runs100k) };
  const n1m = 1 << 20;
  replayRes.perPage1M = replay1M ? { n: n1m, runs: [replay(n1m, true)], extrapolated: false } : { n: n1m, runs: [], extrapolated: true };
  replayRes.perPage1M.value = replay1M ? replayRes.perPage1M.runs[0] : (replayRes.perPage100k.median * n1m) / n100k;
  const single = [];
  for (let r = 0; r < (quick ? 1 : 3); r++) single.push(replay(n1m, false));
  replayRes.single1M = { n: n1m, runs: single, median: median(single) };
}

const byN = new Map(sizes.map((s) => [s.n, s]));
const results = {
  hostMemory: Number(HOST_MEMORY),
  cmdline: CMDLINE,
  trafficPagesPerStep: TRAFFIC_PAGES_PER_STEP,
  sizes,
  traffic: trafficTotals,
  replay: replayRes,
  ratio1Mto1k: byN.get(1 << 20).blackout / byN.get(1 << 10).blackout,
  luo: {
    hostMemory: Number(LUO_HOST_MEMORY),
    largestN: byN.get(1 << 20).luo.n,
    ratioLargestTo1k: byN.get(1 << 20).luo.blackout / byN.get(1 << 10).luo.blackout,
    traffic: Object.fromEntries(['updates', 'pagesWritten', 'pagesVerified', 'faults', 'mismatches'].map((key) => [key, sizes.reduce((a, x) => a + x.luo.traffic[key], 0)])),
  },
  speedupVsReplay1M: replayRes.perPage1M.value / byN.get(1 << 20).blackout,
  wallNs: Number(hr() - started),
};
log(
  `blackout 1M / 1k = ${results.ratio1Mto1k.toFixed(1)}×; replay (${replayRes.perPage1M.extrapolated ? 'extrapolated' : 'measured'}) ${fmtMs(replayRes.perPage1M.value)} ÷ KHO ${fmtMs(byN.get(1 << 20).blackout)} = ${results.speedupVsReplay1M.toFixed(1)}×; this bench took ${(results.wallNs / 1e9).toFixed(0)} s`,
);
process.stdout.write(`${JSON.stringify(results)}\n`);
