// Scenarios shared by the JS-side benchmarks. They mirror crates/vtd/benches/translate.rs
// exactly: same 1 TiB host (seed 1), same allocation order (so the same frames), same
// splitmix64 IOVA streams, same unit configurations.
import { IommuUnit, PhysicalMemory, TRANSLATION_FAULTED } from '../dist/index.js';

export const SID = 0x0100; // 01:00.0
export const DID = 7n;
export const GIB = 1n << 30n;
/** Mapped IOVA range: [IOVA, IOVA + 1 GiB). */
export const IOVA = GIB;
/** Target of the 4 KiB mappings: misaligned to 2 MiB so only 4 KiB leaves are chosen. */
export const PA_4K = GIB + 0x1000n;
/** Target of the 2 MiB mappings. */
export const PA_2M = GIB + 0x20_0000n;
export const BATCH = 4096;
export const HOT_PAGES = 64;
export const HOST_SIZE = 1n << 40n;
export const RW = { read: true, write: true };

const M64 = (x) => BigInt.asUintN(64, x);

/** splitmix64, bit-identical to the Rust bench's `Rng`. */
export class Rng {
  constructor(seed) {
    this.s = M64(BigInt(seed));
  }
  next() {
    this.s = M64(this.s + 0x9e37_79b9_7f4a_7c15n);
    let z = this.s;
    z = M64((z ^ (z >> 30n)) * 0xbf58_476d_1ce4_e5b9n);
    z = M64((z ^ (z >> 27n)) * 0x94d0_49bb_1331_11ebn);
    return z ^ (z >> 31n);
  }
  below(n) {
    return this.next() % n;
  }
}

export function newMemory() {
  return new PhysicalMemory({ size: HOST_SIZE, seed: 1n });
}

/**
 * `Rig::new`: a translating unit whose requester SID is attached to a 4-level domain DID with
 * [IOVA, IOVA + 1 GiB) mapped read/write as 262,144 4 KiB pages.
 */
export function rig(unitOptions = {}) {
  const mem = newMemory();
  const unit = new IommuUnit(mem, unitOptions);
  const pt = unit.createPageTable(4);
  pt.map(IOVA, PA_4K, GIB, RW);
  const root = mem.alloc(0, { zero: true });
  const ctx = mem.alloc(0, { zero: true });
  mem.writeU64(root + 16n * BigInt(SID >> 8), ctx | 1n);
  const ce = ctx + 16n * BigInt(SID & 0xff);
  mem.writeU64(ce, pt.pgd | 1n); // TT=0 (multi-level), P
  mem.writeU64(ce + 8n, BigInt(pt.aw) | (DID << 8n));
  unit.setRootTable(root);
  unit.enableTranslation(true);
  return { mem, unit, pt };
}

/**
 * `Rig::check`: translates `iovas` once, checks every result against the linear mapping and
 * returns the unit's (IOTLB misses, walks, PSC hits) for that pass.
 */
export function check({ unit }, iovas) {
  const before = unit.stats();
  const out = new BigUint64Array(iovas.length);
  const faulted = unit.translate(SID, iovas, out, { write: false });
  if (faulted !== 0) throw new Error(`check: ${faulted} translations faulted`);
  for (let i = 0; i < iovas.length; i++) {
    if (out[i] !== iovas[i] - IOVA + PA_4K) throw new Error(`check: iova 0x${iovas[i].toString(16)} -> 0x${out[i].toString(16)}`);
  }
  const after = unit.stats();
  return [after.iotlbMisses - before.iotlbMisses, after.walks - before.walks, after.pscHits - before.pscHits];
}

/** `random_iovas`: `n` random 8-byte-aligned IOVAs anywhere in the mapped GiB. */
export function randomIovas(seed, n) {
  const rng = new Rng(seed);
  const a = new BigUint64Array(n);
  for (let i = 0; i < n; i++) a[i] = (IOVA + rng.below(GIB)) & ~7n;
  return a;
}

/** The IOTLB-hit stream: BATCH accesses to 64 distinct pages (seed 0x1071b). */
export function hotIovas() {
  const rng = new Rng(0x1071bn);
  const pages = [];
  while (pages.length < HOT_PAGES) {
    const p = IOVA + (rng.below(GIB) & ~0xfffn);
    if (!pages.includes(p)) pages.push(p);
  }
  const a = new BigUint64Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    const page = pages[Number(rng.below(BigInt(HOT_PAGES)))];
    a[i] = page + (rng.below(0x1000n) & ~7n);
  }
  return a;
}

/** The four translate scenarios of the criterion group, set up and sanity-checked the same way. */
export function scenarios() {
  const iotlbHit = { rig: rig(), iovas: hotIovas() };
  if (check(iotlbHit.rig, iotlbHit.iovas)[0] !== HOT_PAGES) throw new Error('iotlb_hit: first pass must miss once per page');
  if (check(iotlbHit.rig, iotlbHit.iovas)[0] !== 0) throw new Error('iotlb_hit: second pass must hit every time');

  const walk4 = { rig: rig({ iotlbEntries: 0, pagingStructureCacheEntries: 0 }), iovas: randomIovas(0x3a1cn, BATCH) };
  check(walk4.rig, walk4.iovas);
  const [m, w, p] = check(walk4.rig, walk4.iovas);
  if (m !== BATCH || w !== BATCH || p !== 0) throw new Error(`walk_4level: expected ${BATCH} misses/walks and no PSC hit, got ${m}/${w}/${p}`);

  const walkPsc = { rig: rig({ iotlbEntries: 0 }), iovas: randomIovas(0x3a1cn, BATCH) };
  check(walkPsc.rig, walkPsc.iovas);
  if (check(walkPsc.rig, walkPsc.iovas)[1] !== BATCH) throw new Error('walk_psc: every translation must walk');

  const mixed = { rig: rig(), iovas: randomIovas(0x3a1cn, BATCH) };
  check(mixed.rig, mixed.iovas);
  check(mixed.rig, mixed.iovas);

  return { iotlbHit, walk4, walkPsc, mixed };
}

export { TRANSLATION_FAULTED };
