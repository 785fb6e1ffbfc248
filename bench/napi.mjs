// JS-side measurements for `npm run bench`: the N-API batch and single-IOVA translation paths,
// the plain-JS walk (bench/ts-walk.ts) and map/unmap of 1 GiB through the facade, on exactly
// the scenarios of crates/vtd/benches/translate.rs (see bench/common.mjs).
// Progress goes to stderr; stdout is ONE JSON object (all times in ns).
import { Gather, IommuUnit } from '../dist/index.js';
import {
  BATCH,
  DID,
  GIB,
  IOVA,
  PA_2M,
  PA_4K,
  RW,
  SID,
  TRANSLATION_FAULTED,
  newMemory,
  scenarios,
} from './common.mjs';
import { snapshotTables, translateAll } from './ts-walk.ts';

const quick = process.env.BENCH_QUICK === '1';
const RUNS = quick ? 5 : 7;
const RUN_NS = BigInt(quick ? 100e6 : 200e6);
const WARM_NS = BigInt(quick ? 50e6 : 150e6);
const now = process.hrtime.bigint;
const log = (msg) => process.stderr.write(`[napi] ${msg}\n`);

let sink = 0n; // every measured result is folded in here and printed, so nothing is dead code

/**
 * Times `fn` (one iteration = one call): warm up for WARM_NS while calibrating, then RUNS runs
 * of enough iterations to last ~RUN_NS. Returns ns per iteration (median and best of the runs).
 */
function measure(name, fn) {
  let n = 0;
  const w0 = now();
  let elapsed = 0n;
  while (elapsed < WARM_NS || n < 3) {
    fn();
    n++;
    elapsed = now() - w0;
  }
  const iters = Math.max(1, Math.ceil(Number(RUN_NS) / (Number(elapsed) / n)));
  const samples = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = now();
    for (let i = 0; i < iters; i++) fn();
    samples.push(Number(now() - t0) / iters);
  }
  samples.sort((a, b) => a - b);
  const res = { median: samples[samples.length >> 1], best: samples[0], iters, runs: RUNS };
  log(`${name}: median ${(res.median / 1e3).toFixed(1)} µs/iter, best ${(res.best / 1e3).toFixed(1)} µs/iter (${iters} iters x ${RUNS})`);
  return res;
}

function fold(arr) {
  for (let i = 0; i < arr.length; i += 97) sink ^= arr[i];
}

function assertEqual(a, b, what) {
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      throw new Error(`${what}: entry ${i} differs: 0x${a[i].toString(16)} vs 0x${b[i].toString(16)}`);
    }
  }
}

const perElem = (m) => ({ ns: m.median / BATCH, best: m.best / BATCH, iters: m.iters, runs: m.runs });

log('setting up the four translate scenarios (1 TiB host, 1 GiB mapped as 4 KiB pages each)');
const sc = scenarios();
const results = { batch: {}, one: {}, tsWalk: {}, mapUnmap: {} };
const opts = { write: false };

// (1) N-API batch: one unit.translate of 4096 IOVAs per iteration, arrays reused.
const outs = {};
for (const [key, name] of [
  ['iotlbHit', 'iotlb_hit'],
  ['walk4', 'walk_4level'],
  ['walkPsc', 'walk_psc'],
  ['mixed', 'batch_4096_mixed'],
]) {
  const { rig, iovas } = sc[key];
  const out = new BigUint64Array(BATCH);
  outs[key] = out;
  const unit = rig.unit;
  let faults = 0;
  const m = measure(`batch ${name}`, () => {
    faults += unit.translate(SID, iovas, out, opts);
  });
  if (faults !== 0) throw new Error(`batch ${name}: ${faults} faults`);
  fold(out);
  results.batch[name] = perElem(m);
}

// (2) N-API single-IOVA calls: unit.translateOne(sid, iova), 4096 calls per iteration.
for (const [key, name] of [
  ['iotlbHit', 'iotlb_hit'],
  ['mixed', 'batch_4096_mixed'],
]) {
  const { rig, iovas } = sc[key];
  const list = Array.from(iovas); // BigInt values built once, not per call
  const res = new BigUint64Array(BATCH);
  const unit = rig.unit;
  const m = measure(`translateOne ${name}`, () => {
    for (let i = 0; i < list.length; i++) res[i] = unit.translateOne(SID, list[i]);
  });
  assertEqual(res, outs[key], `translateOne ${name} vs batch`);
  fold(res);
  results.one[name] = perElem(m);
}

// (3) Plain-JS walk over a byte snapshot of the walk_4level scenario's tables.
{
  const { rig, iovas } = sc.walk4;
  const { mem, pt, unit } = rig;
  const t0 = now();
  const tables = snapshotTables(mem, pt);
  const snapshotNs = Number(now() - t0);
  const pgd = pt.pgd;
  const levels = pt.levels;
  const tsOut = new BigUint64Array(BATCH);
  const nativeOut = new BigUint64Array(BATCH);

  // Same results as the native unit, on the timed IOVAs and on a few that must fault.
  translateAll(tables, pgd, levels, iovas, tsOut, TRANSLATION_FAULTED);
  unit.translate(SID, iovas, nativeOut, opts);
  assertEqual(tsOut, nativeOut, 'plain-JS walk vs native translate (walk_4level IOVAs)');
  const edge = BigUint64Array.of(0n, IOVA - 8n, IOVA, IOVA + GIB - 8n, IOVA + GIB, 1n << 47n, (1n << 48n) - 8n);
  const tsEdge = new BigUint64Array(edge.length);
  const nativeEdge = new BigUint64Array(edge.length);
  const tsFaults = translateAll(tables, pgd, levels, edge, tsEdge, TRANSLATION_FAULTED);
  const nativeFaults = unit.translate(SID, edge, nativeEdge, opts);
  unit.clearFaults();
  assertEqual(tsEdge, nativeEdge, 'plain-JS walk vs native translate (edge IOVAs)');
  if (tsFaults !== nativeFaults || tsFaults !== 5) throw new Error(`edge IOVAs: ${tsFaults} JS faults, ${nativeFaults} native, expected 5`);
  log(`plain-JS walk matches the native unit on ${BATCH + edge.length} IOVAs (${tables.size} table pages snapshotted in ${(snapshotNs / 1e6).toFixed(1)} ms)`);

  let faults = 0;
  const m = measure('plain-JS walk walk_4level', () => {
    faults += translateAll(tables, pgd, levels, iovas, tsOut, TRANSLATION_FAULTED);
  });
  if (faults !== 0) throw new Error(`plain-JS walk: ${faults} faults`);
  assertEqual(tsOut, nativeOut, 'plain-JS walk (after timing)');
  fold(tsOut);
  results.tsWalk = { ...perElem(m), tablePages: tables.size, snapshotNs };
}

// (4) map/unmap of 1 GiB through the facade: one pt.map / pt.unmap + iotlbSync per sample,
// each on a fresh 1 TiB memory (criterion's map/* and unmap/*).
for (const [name, pa] of [
  ['1g_4k', PA_4K],
  ['1g_2m', PA_2M],
]) {
  const reps = quick ? 5 : 9;
  const map = [];
  const unmap = [];
  for (let r = 0; r <= reps; r++) {
    // Drop the previous sample's host first (criterion drops it outside the timed part too), so
    // this one reuses freed heap instead of faulting in fresh pages. Needs --expose-gc.
    globalThis.gc?.();
    const mem = newMemory();
    const unit = new IommuUnit(mem);
    const pt = unit.createPageTable(4);
    const gather = new Gather();
    let t0 = now();
    pt.map(IOVA, pa, GIB, RW, gather);
    const tMap = Number(now() - t0);
    t0 = now();
    const size = pt.unmap(IOVA, GIB, gather);
    unit.iotlbSync(Number(DID), gather);
    const tUnmap = Number(now() - t0);
    if (size !== GIB) throw new Error(`unmap ${name}: unmapped ${size}`);
    sink ^= size;
    if (r > 0) {
      // r = 0 is the warm-up
      map.push(tMap);
      unmap.push(tUnmap);
    }
  }
  const med = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  results.mapUnmap[name] = { map: med(map), unmap: med(unmap), mapBest: Math.min(...map), unmapBest: Math.min(...unmap), reps };
  log(`map ${name}: ${(med(map) / 1e6).toFixed(2)} ms, unmap ${(med(unmap) / 1e6).toFixed(3)} ms (median of ${reps})`);
}

results.sink = `0x${sink.toString(16)}`;
process.stdout.write(`${JSON.stringify(results)}\n`);
