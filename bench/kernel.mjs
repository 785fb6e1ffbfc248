// The simulated kernel's syscall surface under `npm run bench`: iommufd IOAS_MAP / IOAS_UNMAP
// through the TypeScript layer (ts/kernel/**) against the native page-table builder doing the
// same PTE work, DMA through the device API, and the cost of one syscall (issue 19's sequence of
// small ioctls, failing ones included). Run as `node --expose-gc bench/kernel.mjs`.
// Progress goes to stderr; stdout is ONE JSON object (times in ns).
//
// Every TS-vs-native comparison is measured in this process with the two variants interleaved
// round by round (alternating which goes first), so a noisy neighbour hits both alike; the
// ratio is of the two medians.
//
// BENCH_QUICK=1: fewer rounds. BENCH_KERNEL_FULL_UNMAP=0: skip timing the single IOAS_UNMAP of
// all 262,144 4 KiB areas (it is linear in the areas; about a second).
// BENCH_KERNEL_BEFORE=<path of another tree's dist/index.js>: the MAP+UNMAP rows also run that
// tree's kernel (its own Host, same configuration) in the same rounds: before/after side by side.
// That tree loads the addon beside its dist (its ../native/), which must match its
// ts/native-check.ts table (its own build, or this addon with this tree's native-check.ts).
import {
  Gather,
  Host,
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  TRANSLATION_FAULTED,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
} from '../dist/index.js';
import { BATCH, Rng } from './common.mjs';

const quick = process.env.BENCH_QUICK === '1';
const beforeModule = process.env.BENCH_KERNEL_BEFORE ? await import(process.env.BENCH_KERNEL_BEFORE) : null;
const fullUnmap = process.env.BENCH_KERNEL_FULL_UNMAP !== '0';
const now = process.hrtime.bigint;
const log = (msg) => process.stderr.write(`[kernel] ${msg}\n`);
const gc = globalThis.gc ?? (() => {});

const KIB4 = 4096n;
const MIB2 = 2n << 20n;
const GIB = 1n << 30n;
const PAGES_1G = Number(GIB / KIB4); // 262,144
const HUGE_1G = Number(GIB / MIB2); // 512
const U64_MAX = 0xffff_ffff_ffff_ffffn;
/** IOVA of the 1 GiB maps: 2 MiB aligned but not 1 GiB aligned, so only 2 MiB superpages fit. */
const IOVA_1G = GIB + MIB2;
/** IOVA of the 64 MiB DMA window. */
const IOVA_DMA = 64n * GIB;
const DMA_SIZE = 64n << 20n;
const XFER = 1 << 20;
/** DIDs of the native baselines' page tables: unused by the driver (it allocates from 2 up). */
const DID_NATIVE_2M = 1000;
const DID_NATIVE_4K = 1001;
const MAP_RW = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

let sink = 0n;
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const fmtUs = (x) => `${(x / 1e3).toFixed(1)} µs`;
const fmtMs = (x) => `${(x / 1e6).toFixed(2)} ms`;

function check(cond, what) {
  if (!cond) throw new Error(`kernel bench: ${what}`);
}

const results = {};

// ---- (0) the syscall path: issue 19's sequence, errors included ----------------------------------

/**
 * open /dev/iommu, IOAS_ALLOC, IOAS_MAP of 64 KiB (no device), the same MAP again (EEXIST), a
 * partial UNMAP (ENOENT), UNMAP, DESTROY, close: `rounds` rounds of `perRound` sequences, each
 * call timed alone. Per kind, the median over rounds of: the round's mean without its slowest
 * 0.5% of calls (`mean`: the scheduler of a shared host preempts a call now and then for
 * milliseconds), its plain mean (`rawMean`), its median call (`median`). On its own host (1 GiB,
 * no device, as the issue's), first: the later sections leave a heap whose collections it would pay.
 */
function syscallSequence(rounds, perRound, warm) {
  const kinds = ['open', 'alloc', 'map', 'eexist', 'enoent', 'unmap', 'destroy', 'close'];
  const p = Host.boot({ memory: GIB, devices: [] }).kernel.spawn();
  const va = 0x10000000n;
  const len = 0x10000n;
  p.mmap(va, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
  const flags = MAP_RW;
  const t = kinds.map(() => new Float64Array(perRound));
  const one = (i) => {
    let a = now();
    let b;
    const fd = p.open('/dev/iommu', O_RDWR);
    b = now();
    t[0][i] = Number(b - a);
    a = b;
    const id = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
    b = now();
    t[1][i] = Number(b - a);
    a = b;
    const iova = p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: id, flags, user_va: va, length: len, iova: 0x100000n }).iova;
    b = now();
    t[2][i] = Number(b - a);
    a = b;
    let code = null;
    try {
      p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: id, flags, user_va: va, length: len, iova: 0x100000n });
    } catch (e) {
      code = e.code;
    }
    b = now();
    t[3][i] = Number(b - a);
    a = b;
    check(code === 'EEXIST', `MAP again: ${code}, expected EEXIST`);
    code = null;
    try {
      p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: id, iova: 0x101000n, length: 0x1000n });
    } catch (e) {
      code = e.code;
    }
    b = now();
    t[4][i] = Number(b - a);
    a = b;
    check(code === 'ENOENT', `partial UNMAP: ${code}, expected ENOENT`);
    p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: id, iova, length: len });
    b = now();
    t[5][i] = Number(b - a);
    a = b;
    p.ioctl(fd, IOMMU_DESTROY, { id });
    b = now();
    t[6][i] = Number(b - a);
    a = b;
    p.close(fd);
    b = now();
    t[7][i] = Number(b - a);
  };
  for (let i = 0; i < warm; i++) one(i % perRound);
  const means = kinds.map(() => []);
  const rawMeans = kinds.map(() => []);
  const medians = kinds.map(() => []);
  const keep = perRound - Math.ceil(perRound * 0.005);
  const t0 = now();
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < perRound; i++) one(i);
    kinds.forEach((_, k) => {
      const sorted = Float64Array.from(t[k]).sort();
      means[k].push(sorted.subarray(0, keep).reduce((x, y) => x + y, 0) / keep);
      rawMeans[k].push(sorted.reduce((x, y) => x + y, 0) / perRound);
      medians[k].push(sorted[perRound >> 1]);
    });
  }
  const wallNs = Number(now() - t0);
  p.exit();
  const perKind = Object.fromEntries(kinds.map((k, i) => [k, { mean: median(means[i]), rawMean: median(rawMeans[i]), median: median(medians[i]) }]));
  const ioctls = kinds.slice(1, 7);
  const perIoctl = ioctls.reduce((s, k) => s + perKind[k].mean, 0) / ioctls.length;
  const perIoctlMedian = ioctls.reduce((s, k) => s + perKind[k].median, 0) / ioctls.length;
  const perIoctlRawMean = ioctls.reduce((s, k) => s + perKind[k].rawMean, 0) / ioctls.length;
  const res = {
    rounds,
    perRound,
    perKind,
    /** ns per ioctl, mean over the 6 ioctls (open and close are not ioctls). */
    perIoctl,
    perIoctlMedian,
    perIoctlRawMean,
    ioctlsPerSec: 1e9 / perIoctl,
    /** Each failing ioctl ÷ its success. */
    eexistOverMap: perKind.eexist.mean / perKind.map.mean,
    enoentOverUnmap: perKind.enoent.mean / perKind.unmap.mean,
    /** The real Linux 7.3 under QEMU TCG on the same sequence (issue 19): ns per ioctl. */
    tcgNsPerIoctl: 5500,
    wallNs,
  };
  log(
    `syscall sequence: ${fmtUs(perIoctl)} per ioctl (${Math.round(res.ioctlsPerSec).toLocaleString('en-US')} ioctls/s; median ${fmtUs(perIoctlMedian)}, untrimmed mean ${fmtUs(perIoctlRawMean)}); ` +
      kinds.map((k) => `${k} ${(perKind[k].mean / 1e3).toFixed(2)}`).join(', ') +
      ` µs; EEXIST ÷ MAP ${res.eexistOverMap.toFixed(2)}, ENOENT ÷ UNMAP ${res.enoentOverUnmap.toFixed(2)}`,
  );
  return res;
}
results.syscall = syscallSequence(quick ? 5 : 15, 1000, 3000);

gc();

// ---- the host: two devices, each attached to its own IOAS --------------------------------------

log('booting: 16 GiB host, 0000:01:00.0 on IOAS A (huge pages), 0000:02:00.0 on IOAS B (HUGE_PAGES=0)');
const host = Host.boot({ memory: 16n * GIB, seed: 1n, devices: [{ bdf: '0000:01:00.0' }, { bdf: '0000:02:00.0' }] });
const proc = host.kernel.spawn(); // uid 0: CAP_IPC_LOCK, no RLIMIT_MEMLOCK
const iommufd = proc.open('/dev/iommu', O_RDWR);

function attachedIoas(bdfIndex, hugePages) {
  const dev = proc.open(`/dev/vfio/devices/vfio${bdfIndex}`, O_RDWR);
  proc.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { flags: 0, iommufd });
  const ioas = proc.ioctl(iommufd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
  if (!hugePages) proc.ioctl(iommufd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: ioas, val64: 0n });
  proc.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { flags: 0, pt_id: ioas });
  return ioas;
}
const ioasA = attachedIoas(0, true);
const ioasB = attachedIoas(1, false);
const devA = host.devices[0];
const devB = host.devices[1];
const domA = host.kernel.intel.domainOf(devA.sid);
const domB = host.kernel.intel.domainOf(devB.sid);
check(domA && domB && domA !== domB, 'each device must have its own VT-d domain');

/** An mmap of `size` MAP_SHARED|MAP_ANONYMOUS, 2 MiB aligned, every 2 MiB touched so its folio exists. */
function touchedBuffer(size) {
  const va = proc.mmap(null, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  check(va % MIB2 === 0n, 'mmap of >= 2 MiB must be 2 MiB aligned');
  const one = Uint8Array.of(1);
  for (let off = 0n; off < size; off += MIB2) proc.memWrite(va + off, one);
  return va;
}
const buf1g = touchedBuffer(GIB);

const ioasMap = (ioas_id, user_va, iova, length) => proc.ioctl(iommufd, IOMMU_IOAS_MAP, { flags: MAP_RW, ioas_id, user_va, length, iova });
const ioasUnmap = (ioas_id, iova, length) => proc.ioctl(iommufd, IOMMU_IOAS_UNMAP, { ioas_id, iova, length }).length;
const main = { map: ioasMap, unmap: ioasUnmap, buf1g };

/**
 * The before tree's world (BENCH_KERNEL_BEFORE): its own 16 GiB host with the same two devices,
 * IOASes and touched 1 GiB buffer, through that tree's uAPI (same constants, same calls).
 */
function beforeWorld(m) {
  const h = m.Host.boot({ memory: 16n * GIB, seed: 1n, devices: [{ bdf: '0000:01:00.0' }, { bdf: '0000:02:00.0' }] });
  const p = h.kernel.spawn();
  const fd = p.open('/dev/iommu', m.O_RDWR);
  const attach = (i, huge) => {
    const dev = p.open(`/dev/vfio/devices/vfio${i}`, m.O_RDWR);
    p.ioctl(dev, m.VFIO_DEVICE_BIND_IOMMUFD, { flags: 0, iommufd: fd });
    const ioas = p.ioctl(fd, m.IOMMU_IOAS_ALLOC, {}).out_ioas_id;
    if (!huge) p.ioctl(fd, m.IOMMU_OPTION, { option_id: m.IOMMU_OPTION_HUGE_PAGES, op: m.IOMMU_OPTION_OP_SET, object_id: ioas, val64: 0n });
    p.ioctl(dev, m.VFIO_DEVICE_ATTACH_IOMMUFD_PT, { flags: 0, pt_id: ioas });
    return ioas;
  };
  const ioasA = attach(0, true);
  const ioasB = attach(1, false);
  const va = p.mmap(null, GIB, m.PROT_READ | m.PROT_WRITE, m.MAP_SHARED | m.MAP_ANONYMOUS);
  for (let off = 0n; off < GIB; off += MIB2) p.memWrite(va + off, Uint8Array.of(1));
  const map = (ioas_id, user_va, iova, length) => p.ioctl(fd, m.IOMMU_IOAS_MAP, { flags: MAP_RW, ioas_id, user_va, length, iova });
  const unmap = (ioas_id, iova, length) => p.ioctl(fd, m.IOMMU_IOAS_UNMAP, { ioas_id, iova, length }).length;
  return { map, unmap, buf1g: va, ioasA, ioasB };
}
const before = beforeModule && beforeWorld(beforeModule);
if (before) log(`before tree: ${process.env.BENCH_KERNEL_BEFORE}`);

/** The leaf level `pt` maps `iova` with (2 = 2 MiB superpage, 1 = 4 KiB PTE). */
const leafLevel = (pt, iova) => {
  const steps = pt.walk(iova);
  return steps[steps.length - 1].level;
};

/**
 * Native baseline: `pt.mapRuns` of exactly the runs the TS layer mapped, `pt.unmap` of the GiB,
 * `unit.iotlbSync`. Returns [map ns, unmap+sync ns].
 */
function nativeMapUnmap(pt, runs, did, prot) {
  const gather = new Gather();
  let t0 = now();
  pt.mapRuns(runs.iova, runs.pa, runs.n, prot);
  const tMap = Number(now() - t0);
  t0 = now();
  const size = pt.unmap(IOVA_1G, GIB, gather);
  host.iommu.iotlbSync(did, gather);
  const tUnmap = Number(now() - t0);
  sink ^= size;
  return [tMap, tUnmap];
}

function tsMapUnmap(ioas, w = main) {
  let t0 = now();
  w.map(ioas, w.buf1g, IOVA_1G, GIB);
  const tMap = Number(now() - t0);
  t0 = now();
  const len = w.unmap(ioas, IOVA_1G, GIB);
  const tUnmap = Number(now() - t0);
  sink ^= len;
  return [tMap, tUnmap];
}

/**
 * Runs `rounds` rounds of TS then native (or native then TS, alternating), after `warm` rounds
 * that are not kept. Returns per-variant medians of map, unmap and map+unmap. With `beforeFn`
 * (BENCH_KERNEL_BEFORE) the before tree's kernel runs in every round too, the three in rotating
 * order, and `before` holds its medians.
 */
function interleave(name, rounds, warm, tsFn, nativeFn, beforeFn = null) {
  const ts = { map: [], unmap: [], total: [] };
  const nat = { map: [], unmap: [], total: [] };
  const bef = { map: [], unmap: [], total: [] };
  const keep = (acc, [m, u]) => {
    acc.map.push(m);
    acc.unmap.push(u);
    acc.total.push(m + u);
  };
  const variants = beforeFn ? [[ts, tsFn], [nat, nativeFn], [bef, beforeFn]] : [[ts, tsFn], [nat, nativeFn]];
  const t0 = now();
  for (let r = 0; r < warm + rounds; r++) {
    for (let k = 0; k < variants.length; k++) {
      const [acc, fn] = variants[(r + k) % variants.length];
      const got = fn();
      if (r >= warm) keep(acc, got);
    }
  }
  const med = (acc) => ({ map: median(acc.map), unmap: median(acc.unmap), total: median(acc.total), best: Math.min(...acc.total) });
  const res = { ts: med(ts), native: med(nat), rounds, warm, wallNs: Number(now() - t0) };
  res.ratio = res.ts.total / res.native.total;
  // Per-round ratios too: robust to drift within the run.
  res.ratioRoundMedian = median(ts.total.map((x, i) => x / nat.total[i]));
  log(
    `${name}: TS ${fmtUs(res.ts.total)} (map ${fmtUs(res.ts.map)}, unmap ${fmtUs(res.ts.unmap)}) vs native ${fmtUs(res.native.total)} ` +
      `(map ${fmtUs(res.native.map)}, unmap+sync ${fmtUs(res.native.unmap)}): ${res.ratio.toFixed(2)}× (${rounds} rounds, ${(res.wallNs / 1e9).toFixed(1)} s)`,
  );
  if (beforeFn) {
    res.before = med(bef);
    res.beforeRatio = res.before.total / res.native.total;
    log(`${name}: before tree ${fmtUs(res.before.total)} (map ${fmtUs(res.before.map)}, unmap ${fmtUs(res.before.unmap)}): ${res.beforeRatio.toFixed(2)}× native`);
  }
  return res;
}


// ---- (1) 1 GiB in 2 MiB superpages ---------------------------------------------------------------

{
  // One TS map first: the PAs the kernel pinned are the baseline's runs.
  ioasMap(ioasA, buf1g, IOVA_1G, GIB);
  const runs = { iova: new Float64Array(HUGE_1G), pa: new Float64Array(HUGE_1G), n: new Float64Array(HUGE_1G).fill(512) };
  for (let k = 0; k < HUGE_1G; k++) {
    const iova = IOVA_1G + BigInt(k) * MIB2;
    const pa = domA.iovaToPhys(iova);
    check(pa !== null && pa % MIB2 === 0n, `IOVA 0x${iova.toString(16)}: not mapped to a 2 MiB-aligned PA`);
    check(leafLevel(domA.pt, iova) === 2, 'TS map must use 2 MiB superpages');
    runs.iova[k] = Number(iova >> 12n);
    runs.pa[k] = Number(pa >> 12n);
  }
  let contiguous = 0;
  for (let k = 1; k < HUGE_1G; k++) if (runs.pa[k] === runs.pa[k - 1] + 512) contiguous++;
  const nativePt = host.iommu.createPageTable(domA.pt.levels);
  const prot = { read: true, write: true, snoop: domA.snoop };
  nativePt.mapRuns(runs.iova, runs.pa, runs.n, prot);
  check(nativePt.tablePages().length === domA.pt.tablePages().length, 'native and TS tables must have as many pages');
  for (let k = 0; k < HUGE_1G; k += 37) {
    const iova = IOVA_1G + BigInt(k) * MIB2 + 0x1234n;
    check(nativePt.iovaToPhys(iova) === domA.iovaToPhys(iova), 'native and TS tables must translate alike');
    check(leafLevel(nativePt, iova) === 2, 'native baseline must use 2 MiB superpages');
  }
  const g = new Gather();
  nativePt.unmap(IOVA_1G, GIB, g);
  host.iommu.iotlbSync(DID_NATIVE_2M, g);
  check(ioasUnmap(ioasA, IOVA_1G, GIB) === GIB, 'unmap 1 GiB');
  log(`2 MiB: ${HUGE_1G} runs, ${contiguous} physically adjacent pairs, ${nativePt.tablePages().length} table pages each`);

  gc();
  results.huge = interleave(
    'IOAS_MAP+UNMAP 1 GiB (2 MiB)',
    quick ? 100 : 400,
    50,
    () => tsMapUnmap(ioasA),
    () => nativeMapUnmap(nativePt, runs, DID_NATIVE_2M, prot),
    before && (() => tsMapUnmap(before.ioasA, before)),
  );
  results.huge.runs = HUGE_1G;
  results.huge.adjacentPairs = contiguous;
}

// ---- (2a) 1 GiB as 4 KiB PTEs in one IOAS_MAP (HUGE_PAGES=0) ---------------------------------

const runs4k = { iova: new Float64Array(PAGES_1G), pa: new Float64Array(PAGES_1G), n: new Float64Array(PAGES_1G).fill(1) };
let nativePt4k;
const prot4k = { read: true, write: true, snoop: domB.snoop };
{
  ioasMap(ioasB, buf1g, IOVA_1G, GIB);
  // The folios are 2 MiB: each 2 MiB of IOVA is 512 consecutive PAs, checked at both ends.
  const base = Number(IOVA_1G >> 12n);
  for (let k = 0; k < HUGE_1G; k++) {
    const iova = IOVA_1G + BigInt(k) * MIB2;
    const pa = domB.iovaToPhys(iova);
    check(pa !== null && domB.iovaToPhys(iova + MIB2 - KIB4) === pa + MIB2 - KIB4, 'a 2 MiB folio must be physically contiguous');
    check(leafLevel(domB.pt, iova) === 1 && leafLevel(domB.pt, iova + MIB2 - KIB4) === 1, 'HUGE_PAGES=0 must map 4 KiB PTEs');
    const paPfn = Number(pa >> 12n);
    for (let j = 0; j < 512; j++) {
      runs4k.iova[k * 512 + j] = base + k * 512 + j;
      runs4k.pa[k * 512 + j] = paPfn + j;
    }
  }
  nativePt4k = host.iommu.createPageTable(domB.pt.levels);
  nativePt4k.mapRuns(runs4k.iova, runs4k.pa, runs4k.n, prot4k);
  check(nativePt4k.tablePages().length === domB.pt.tablePages().length, 'native and TS 4 KiB tables must have as many pages');
  const rng = new Rng(0x4b1dn);
  for (let i = 0; i < 256; i++) {
    const iova = IOVA_1G + (rng.below(GIB) & ~7n);
    check(nativePt4k.iovaToPhys(iova) === domB.iovaToPhys(iova), 'native and TS 4 KiB tables must translate alike');
  }
  const tablePages = nativePt4k.tablePages().length;
  const g = new Gather();
  nativePt4k.unmap(IOVA_1G, GIB, g);
  host.iommu.iotlbSync(DID_NATIVE_4K, g);
  check(ioasUnmap(ioasB, IOVA_1G, GIB) === GIB, 'unmap 1 GiB');
  log(`4 KiB: ${PAGES_1G} runs of one page, ${tablePages} table pages each while mapped`);

  gc();
  results.small = interleave(
    'IOAS_MAP+UNMAP 1 GiB (4 KiB, HUGE_PAGES=0)',
    quick ? 7 : 21,
    3,
    () => tsMapUnmap(ioasB),
    () => nativeMapUnmap(nativePt4k, runs4k, DID_NATIVE_4K, prot4k),
    before && (() => tsMapUnmap(before.ioasB, before)),
  );
  results.small.runs = PAGES_1G;
}

// ---- (2b) 262,144 separate IOAS_MAP ioctls of 4 KiB, then one IOAS_UNMAP of everything --------

/** `n` IOAS_MAPs of 4 KiB at consecutive IOVAs (one argument object, as a caller's loop would). */
function mapPages4k(n) {
  const arg = { flags: MAP_RW, ioas_id: ioasB, user_va: 0n, length: KIB4, iova: 0n };
  const t0 = now();
  for (let i = 0; i < n; i++) {
    const off = BigInt(i) << 12n;
    arg.user_va = buf1g + off;
    arg.iova = IOVA_1G + off;
    proc.ioctl(iommufd, IOMMU_IOAS_MAP, arg);
  }
  return Number(now() - t0);
}
function unmapAll(expect) {
  const t0 = now();
  const len = ioasUnmap(ioasB, 0n, U64_MAX);
  const ns = Number(now() - t0);
  check(len === BigInt(expect) * KIB4, `unmap-all: ${len} bytes, expected ${expect} pages`);
  return ns;
}
{
  // The unmap-all is timed at two smaller counts too, to show how it scales (×2 per doubling is
  // linear), then at the full 262,144 areas. The map ioctls are timed at the full count.
  const scaling = [];
  // A first 4,096 (not kept) warms the ioctl path up; below ~10,000 areas the JIT dominates.
  for (const n of [4096, 16384, 32768]) {
    gc();
    const mapNs = mapPages4k(n);
    const unmapNs = unmapAll(n);
    // The same n runs natively, back to back with the TS run.
    const sub = { iova: runs4k.iova.subarray(0, n), pa: runs4k.pa.subarray(0, n), n: runs4k.n.subarray(0, n) };
    const g = new Gather();
    let t0 = now();
    nativePt4k.mapRuns(sub.iova, sub.pa, sub.n, prot4k);
    const nMap = Number(now() - t0);
    t0 = now();
    nativePt4k.unmap(IOVA_1G, BigInt(n) * KIB4, g);
    host.iommu.iotlbSync(DID_NATIVE_4K, g);
    const nUnmap = Number(now() - t0);
    if (n !== 4096) scaling.push({ areas: n, mapNs, unmapAllNs: unmapNs, nativeMapNs: nMap, nativeUnmapNs: nUnmap });
    log(`${n} × IOAS_MAP 4 KiB: ${fmtMs(mapNs)} (${Math.round(mapNs / n)} ns/ioctl), unmap-all ${fmtMs(unmapNs)}; native ${fmtMs(nMap)} + ${fmtMs(nUnmap)}`);
  }
  // The full count. The native baseline right before and after it (its median is the reference).
  gc();
  const nat = [nativeMapUnmap(nativePt4k, runs4k, DID_NATIVE_4K, prot4k)];
  const mapNs = mapPages4k(PAGES_1G);
  nat.push(nativeMapUnmap(nativePt4k, runs4k, DID_NATIVE_4K, prot4k));
  check(domB.iovaToPhys(IOVA_1G + GIB - 8n) === (BigInt(runs4k.pa[PAGES_1G - 1]) << 12n) + 0xff8n, '262,144 maps: last page');
  let unmapNs = null;
  if (fullUnmap) {
    log('timing the unmap-all of 262,144 areas...');
    unmapNs = unmapAll(PAGES_1G);
  }
  nat.push(nativeMapUnmap(nativePt4k, runs4k, DID_NATIVE_4K, prot4k));
  const nativeMap = median(nat.map((x) => x[0]));
  const nativeTotal = median(nat.map((x) => x[0] + x[1]));
  // How the unmap-all grows from 16,384 to 32,768 areas (x2 per doubling is linear).
  const [s1, s2] = scaling;
  const perDoubling = s2.unmapAllNs / s1.unmapAllNs;
  results.perIoctl = {
    ioctls: PAGES_1G,
    mapNs,
    nsPerIoctl: mapNs / PAGES_1G,
    nativeMapNs: nativeMap,
    nativeTotalNs: nativeTotal,
    mapRatio: mapNs / nativeMap,
    unmapAllNs: unmapNs,
    totalRatio: unmapNs === null ? null : (mapNs + unmapNs) / nativeTotal,
    scaling,
    unmapPerDoubling: perDoubling,
  };
  log(
    `${PAGES_1G} × IOAS_MAP 4 KiB: ${fmtMs(mapNs)} (${Math.round(mapNs / PAGES_1G)} ns/ioctl) vs native mapRuns ${fmtMs(nativeMap)}; ` +
      `unmap-all ${unmapNs === null ? 'not timed' : fmtMs(unmapNs)} (×${perDoubling.toFixed(1)} from ${s1.areas} to ${s2.areas} areas)`,
  );
  // B is not used again; the process exits when done.
}

// ---- (3) DMA through the device API over a mapped 64 MiB -------------------------------------

const RUNS = quick ? 5 : 7;
const RUN_NS = quick ? 50e6 : 100e6;
const WARM_NS = quick ? 30e6 : 80e6;

/** As bench/napi.mjs: warm up while calibrating, then RUNS runs of ~RUN_NS. ns per call. */
function measure(name, fn) {
  let n = 0;
  const w0 = now();
  let elapsed = 0;
  while (elapsed < WARM_NS || n < 3) {
    fn();
    n++;
    elapsed = Number(now() - w0);
  }
  const iters = Math.max(1, Math.ceil(RUN_NS / (elapsed / n)));
  const samples = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = now();
    for (let i = 0; i < iters; i++) fn();
    samples.push(Number(now() - t0) / iters);
  }
  const res = { median: median(samples), best: Math.min(...samples), iters, runs: RUNS };
  log(`${name}: median ${fmtUs(res.median)}/call, best ${fmtUs(res.best)} (${iters} calls × ${RUNS})`);
  return res;
}

{
  const va = touchedBuffer(DMA_SIZE);
  // Real bytes behind every page, so DMA reads and writes copy resident frames.
  const fill = new Uint8Array(XFER);
  const rng = new Rng(0xd3a);
  for (let off = 0n; off < DMA_SIZE; off += BigInt(XFER)) {
    for (let i = 0; i < XFER; i += 8) fill[i] = Number(rng.next() & 0xffn);
    proc.memWrite(va + off, fill);
  }
  ioasMap(ioasA, va, IOVA_DMA, DMA_SIZE);
  check(leafLevel(domA.pt, IOVA_DMA) === 2, 'DMA window must be mapped with 2 MiB superpages');
  const dma = host.device(devA.bdf).dma;
  const slots = Number(DMA_SIZE) / XFER;

  // Correctness first: what the device reads is what the process sees, and back.
  const got = new Uint8Array(XFER);
  dma.readInto(IOVA_DMA + 5n * BigInt(XFER), got);
  check(Buffer.compare(got, proc.memRead(va + 5n * BigInt(XFER), XFER)) === 0, 'DMA read must see the process memory');
  const pattern = new Uint8Array(XFER).map((_, i) => (i * 31 + 7) & 0xff);
  dma.write(IOVA_DMA + 9n * BigInt(XFER), pattern);
  check(Buffer.compare(pattern, proc.memRead(va + 9n * BigInt(XFER), XFER)) === 0, 'DMA write must land in the process memory');

  const iovaOf = Array.from({ length: slots }, (_, i) => IOVA_DMA + BigInt(i) * BigInt(XFER));
  // Warm the IOTLB with the window's 32 2 MiB entries; timing must then miss nothing.
  for (const iova of iovaOf) dma.readInto(iova, got);
  let slot = 0;
  const statsBefore = host.iommu.stats();
  const read = measure('dma.readInto 1 MiB', () => {
    dma.readInto(iovaOf[slot], got);
    slot = (slot + 1) % slots;
  });
  sink ^= BigInt(got[4097]);
  const write = measure('dma.write 1 MiB', () => {
    dma.write(iovaOf[slot], pattern);
    slot = (slot + 1) % slots;
  });

  // Translation batches: 4096 random page IOVAs of the window, all IOTLB hits once warm
  // (32 2 MiB entries; the unit holds 512).
  const iovas = new BigUint64Array(BATCH);
  const trng = new Rng(0x7e57n);
  for (let i = 0; i < BATCH; i++) iovas[i] = IOVA_DMA + (trng.below(DMA_SIZE / KIB4) << 12n);
  const out = new BigUint64Array(BATCH);
  const opts = { write: false };
  check(dma.translate(iovas, out, opts) === 0, 'translate: no faults');
  for (let i = 0; i < BATCH; i += 61) check(out[i] === domA.iovaToPhys(iovas[i]) && out[i] !== TRANSLATION_FAULTED, 'translate must agree with the domain');
  const s0 = host.iommu.stats();
  dma.translate(iovas, out, opts);
  const s1 = host.iommu.stats();
  const missesPerPass = s1.iotlbMisses - s0.iotlbMisses;
  let faults = 0;
  const tr = measure('dma.translate 4096', () => {
    faults += dma.translate(iovas, out, opts);
  });
  check(faults === 0, 'translate: no faults while timing');
  for (let i = 0; i < BATCH; i += 97) sink ^= out[i];
  const statsAfter = host.iommu.stats();

  const mbs = (nsPerXfer) => (XFER / nsPerXfer) * 1e3;
  results.dma = {
    windowBytes: Number(DMA_SIZE),
    transferBytes: XFER,
    read: { ...read, mbs: mbs(read.median), nsPerPage: read.median / (XFER / 4096) },
    write: { ...write, mbs: mbs(write.median), nsPerPage: write.median / (XFER / 4096) },
    translate: { ...tr, ns: tr.median / BATCH, best: tr.best / BATCH, missesPerPass },
    iotlbMissesDuringTiming: statsAfter.iotlbMisses - statsBefore.iotlbMisses,
  };
  log(`DMA: read ${mbs(read.median).toFixed(0)} MB/s, write ${mbs(write.median).toFixed(0)} MB/s, translate ${(tr.median / BATCH).toFixed(2)} ns (${missesPerPass} IOTLB misses per pass)`);
}

results.sink = `0x${sink.toString(16)}`;
process.stdout.write(`${JSON.stringify(results)}\n`);
