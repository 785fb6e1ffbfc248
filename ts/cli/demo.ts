// The main job until the `simulate` CLI lands: one device doing DMA through a VT-d unit whose
// tables live in a 1 TiB sparse host memory, with a remap that shows why the IOTLB flush matters.
import { Gather, IommuUnit, PhysicalMemory, TRANSLATION_FAULTED, type PageTable } from '../hw/index.js';

const SID = 0x0100; // 0000:01:00.0
const DID = 1;
const GiB = 1n << 30n;
const hex = (v: bigint | number) => `0x${v.toString(16)}`;

function attach(mem: PhysicalMemory, root: bigint, pt: PageTable): void {
  const ctx = mem.alloc(0, { zero: true });
  mem.writeU64(root + 16n * BigInt(SID >> 8), ctx | 1n); // root entry: CTP | P
  mem.writeU64(ctx + 16n * BigInt(SID & 0xff), pt.pgd | 1n); // context lo: SLPTPTR | TT=0 | P
  mem.writeU64(ctx + 16n * BigInt(SID & 0xff) + 8n, BigInt(pt.aw) | (BigInt(DID) << 8n)); // AW | DID
}

function main(): void {
  const t0 = performance.now();
  const mem = new PhysicalMemory({ size: 1n << 40n, seed: 2024 });
  const unit = new IommuUnit(mem, { addressWidth: 48, superpages: ['2M', '1G'], iotlbEntries: 512 });
  const pt = unit.createPageTable(4);
  const root = mem.alloc(0, { zero: true });
  attach(mem, root, pt);
  unit.setRootTable(root);
  unit.enableTranslation(true);

  // Guest RAM: 1 GiB backed by a 1 GiB superpage, 1 GiB by 2 MiB pages, 64 MiB by 4 KiB pages.
  const gather = new Gather();
  pt.map(0n, 4n * GiB, GiB, { read: true, write: true }, gather);
  pt.map(GiB, 8n * GiB + 0x20_0000n, GiB, { read: true, write: true }, gather);
  pt.map(2n * GiB, 16n * GiB + 0x1000n, 64n << 20n, { read: true, write: true }, gather);
  const tables = pt.tablePages().length;
  console.log(`host: 1 TiB sparse memory, VT-d unit CAP=${hex(unit.registers().cap)} ECAP=${hex(unit.registers().ecap)}`);
  console.log(`mapped 2.06 GiB for ${hex(SID)} in domain ${DID}: ${tables} page-table pages (${tables * 4} KiB)`);

  // DMA traffic: 256 bursts of 4096 reads at pseudo-random addresses, one N-API call per burst.
  const iovas = new BigUint64Array(4096);
  const out = new BigUint64Array(4096);
  const limit = 2n * GiB + (64n << 20n);
  let x = 0x9e3779b97f4a7c15n;
  let faults = 0;
  const t1 = performance.now();
  for (let burst = 0; burst < 256; burst++) {
    for (let i = 0; i < iovas.length; i++) {
      x = (x * 6364136223846793005n + 1442695040888963407n) & 0xffff_ffff_ffff_ffffn;
      iovas[i] = ((x >> 11n) % limit) & ~7n;
    }
    faults += unit.translate(SID, iovas, out, { write: false });
  }
  const ms = performance.now() - t1;
  const s = unit.stats();
  console.log(
    `translated ${256 * 4096} DMA reads in ${ms.toFixed(1)} ms (${((ms * 1e6) / (256 * 4096)).toFixed(0)} ns each, ` +
      `incl. generating IOVAs in JS): ${faults} faults, IOTLB ${s.iotlbHits} hits / ${s.iotlbMisses} misses, ` +
      `${s.pscHits} walks resumed from the paging-structure cache`,
  );

  // Remap one 4 KiB page without flushing: the device keeps using the old translation.
  const iova = 2n * GiB;
  const before = unit.translateOne(SID, iova);
  pt.unmap(iova, 0x1000n, gather);
  pt.map(iova, 32n * GiB, 0x1000n, { read: true, write: true }, gather);
  const stale = unit.translateOne(SID, iova);
  const granularity = unit.iotlbSync(DID, gather);
  const fresh = unit.translateOne(SID, iova);
  console.log(`remap ${hex(iova)}: before ${hex(before)}, unflushed ${hex(stale)} (stale IOTLB), after ${granularity}-selective flush ${hex(fresh)}`);

  // A write beyond what is mapped faults and is recorded.
  const probe = new BigUint64Array([limit + 0x1000n]);
  const reasons = new Uint8Array(1);
  unit.translate(SID, probe, out, { write: true, faults: reasons });
  const f = unit.faults()[0];
  console.log(`DMA write to ${hex(probe[0]!)}: ${out[0] === TRANSLATION_FAULTED ? 'blocked' : 'passed'}, fault reason ${hex(reasons[0]!)} recorded for ${f ? hex(f.sid) : '-'}`);
  const m = mem.stats();
  console.log(`memory model: ${m.framesResident} resident frames, ${(m.hostBytes / 2 ** 20).toFixed(1)} MiB host for a 1 TiB host; done in ${(performance.now() - t0).toFixed(0)} ms`);
}

main();
