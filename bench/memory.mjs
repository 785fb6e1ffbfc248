// Host memory of a 1 TiB simulated host with 4 GiB mapped as 4 KiB pages (1,048,576 PTEs).
// Run in a fresh process (`node --expose-gc bench/memory.mjs`): RSS is sampled after the addon
// is loaded and before the host exists, then once the mapping is in place. stdout: ONE JSON object.
import { IommuUnit, PhysicalMemory } from '../dist/index.js';

const GIB = 1n << 30n;
const SIZE = 4n * GIB;
const IOVA = GIB;
const PA = 8n * GIB + 0x1000n; // above the 4 GiB MMIO hole, misaligned to 2 MiB: 4 KiB leaves only
const SID = 0x0100;
const DID = 7n;

const gc = globalThis.gc ?? (() => {});
const rss = () => {
  gc();
  return process.memoryUsage().rss;
};

// Warm the addon and the facade on a throwaway host so their one-time costs are not counted.
{
  const m = new PhysicalMemory({ size: 1n << 30n, seed: 1n });
  const u = new IommuUnit(m);
  u.createPageTable(4).map(0n, 0n, 1n << 21n, { read: true });
  m.stats();
}
const rss0 = rss();

const mem = new PhysicalMemory({ size: 1n << 40n, seed: 1n });
const hostBytes0 = mem.stats().hostBytes;
// The driver owns the DMA target, as a real one would (dma_alloc / pinned pages).
mem.claim(PA, SIZE);
const unit = new IommuUnit(mem);
const pt = unit.createPageTable(4);
const t0 = process.hrtime.bigint();
pt.map(IOVA, PA, SIZE, { read: true, write: true });
const mapNs = Number(process.hrtime.bigint() - t0);
const root = mem.alloc(0, { zero: true });
const ctx = mem.alloc(0, { zero: true });
mem.writeU64(root + 16n * BigInt(SID >> 8), ctx | 1n);
mem.writeU64(ctx + 16n * BigInt(SID & 0xff), pt.pgd | 1n);
mem.writeU64(ctx + 16n * BigInt(SID & 0xff) + 8n, BigInt(pt.aw) | (DID << 8n));
unit.setRootTable(root);
unit.enableTranslation(true);
if (unit.translateOne(SID, IOVA + SIZE - 8n) !== PA + SIZE - 8n) throw new Error('memory bench: bad translation');

const rss1 = rss();
const stats = mem.stats();
const tablePages = pt.tablePages().length;
process.stdout.write(
  `${JSON.stringify({
    mappedBytes: Number(SIZE),
    mapNs,
    rssBefore: rss0,
    rssAfter: rss1,
    rssGrowth: rss1 - rss0,
    hostBytes: stats.hostBytes,
    hostBytesEmpty: hostBytes0,
    tablePages,
    tableBytes: tablePages * 4096,
    framesResident: stats.framesResident,
    residentBytes: stats.framesResident * 4096,
  })}\n`,
);
