import { describe, expect, it } from 'vitest';
import { IommuUnit, PhysicalMemory } from 'iommu-liveupdate';

const f64 = (xs: number[]) => new Float64Array(xs);
const u64 = (xs: bigint[]) => new BigUint64Array(xs);
const code = (c: string) => expect.objectContaining({ code: c });
const RW = { read: true, write: true };

function setup() {
  const mem = new PhysicalMemory({ size: 64n << 30n, seed: 5 });
  const unit = new IommuUnit(mem);
  const pt = unit.createPageTable(4);
  return { mem, unit, pt };
}

// 4 KiB at a misaligned PA, two full L1 tables of scattered pages, 2 MiB + 4 KiB, a whole GiB
const RUNS = { iova: [1, 0x200, 0x400, 0x4_0000, 0x10_0000], pa: [0x4_0005, 0x12_3401, 0x7_7701, 0x20_0000, 0x40_0000], n: [3, 512, 512, 513, 0x4_0000] };
const PAGES = RUNS.n.reduce((a, b) => a + b, 0);

function mapped(prot = RW) {
  const r = setup();
  r.pt.mapRuns(f64(RUNS.iova), f64(RUNS.pa), f64(RUNS.n), prot);
  return r;
}

describe('PageTable.verifyRuns', () => {
  it('is null when every page translates exactly, whatever the leaf sizes', () => {
    const { pt } = mapped();
    expect(pt.verifyRuns(f64(RUNS.iova), f64(RUNS.pa), f64(RUNS.n), RW)).toBeNull();
    expect(pt.verifyRuns(f64(RUNS.iova), f64(RUNS.pa), f64(RUNS.n), { ...RW, snoop: true })).toBeNull();
    // the 2 MiB and 1 GiB leaves checked as 4 KiB runs
    const iova = [0x4_0000, 0x4_0001, 0x10_0000 + 77, 0x13_ffff];
    const pa = [0x20_0000, 0x20_0001, 0x40_0000 + 77, 0x43_ffff];
    expect(pt.verifyRuns(f64(iova), f64(pa), f64([1, 511, 1000, 1]), RW)).toBeNull();
    expect(pt.verifyRuns(f64([]), f64([]), f64([]), RW)).toBeNull();
  });

  it('returns the IOVA of the first page that does not match', () => {
    const { mem, pt } = mapped();
    const args = [f64(RUNS.iova), f64(RUNS.pa), f64(RUNS.n)] as const;
    // permissions: exactly R and W
    expect(pt.verifyRuns(...args, { read: true })).toBe(0x1000n);
    // one wrong PA in a leaf
    const at = 0x400n + 100n;
    const leaf = pt.walk(at << 12n).at(-1)!;
    expect(leaf.level).toBe(1);
    mem.writeU64(leaf.ptePa, leaf.pte + 0x1000n);
    expect(pt.verifyRuns(...args, RW)).toBe(at << 12n);
    // a missing page
    mem.writeU64(leaf.ptePa, 0n);
    expect(pt.verifyRuns(...args, RW)).toBe(at << 12n);
    mem.writeU64(leaf.ptePa, leaf.pte);
    expect(pt.verifyRuns(...args, RW)).toBeNull();
    // a run longer than mapped
    expect(pt.verifyRuns(f64([0x200]), f64([0x12_3401]), f64([513]), RW)).toBe(0x400n << 12n);
    // garbage: a table pointer beyond memory, reserved bits
    const l3 = pt.walk(0x4000_0000n)[1]!;
    mem.writeU64(l3.ptePa, (1n << 40n) | 3n);
    expect(pt.verifyRuns(...args, RW)).toBe(0x4000_0000n);
    mem.writeU64(l3.ptePa, l3.pte | (1n << 50n));
    expect(pt.verifyRuns(...args, RW)).toBe(0x4000_0000n);
  });

  it('checks its arguments as mapRuns does', () => {
    const { pt } = mapped();
    const invalid = code('ERR_INVALID_ARG_VALUE');
    expect(() => pt.verifyRuns(f64([1, 2]), f64([1]), f64([1, 1]), RW)).toThrow(invalid);
    expect(() => pt.verifyRuns(f64([1.5]), f64([1]), f64([1]), RW)).toThrow(invalid);
    expect(() => pt.verifyRuns(f64([1]), f64([2 ** 40]), f64([1]), RW)).toThrow(invalid);
    expect(() => pt.verifyRuns(f64([1]), f64([1]), f64([0]), RW)).toThrow(invalid);
    expect(() => pt.verifyRuns(f64([1]), f64([1]), f64([1]), {})).toThrow(code('ERR_VTD_NO_PERMISSION'));
  });
});

describe('PageTable.mappedPages', () => {
  it('counts leaf pages and lists every table, top first', () => {
    const { pt } = mapped();
    const s = pt.mappedPages(100);
    expect(s.pages).toBe(PAGES);
    expect(s.tables).toBeInstanceOf(BigUint64Array);
    expect(s.tables[0]).toBe(pt.pgd);
    expect([...s.tables].sort()).toEqual([...pt.tablePages()].sort());
    expect(pt.mappedPages(s.tables.length).pages).toBe(PAGES);
    expect(() => pt.mappedPages(s.tables.length - 1)).toThrow(code('ERR_VTD_CORRUPT'));
    expect(() => pt.mappedPages(-1)).toThrow(code('ERR_OUT_OF_RANGE'));
    expect(() => pt.mappedPages(1.5)).toThrow(code('ERR_OUT_OF_RANGE'));
  });

  it('refuses a cycle or a shared table', () => {
    const { mem, pt } = mapped();
    const l2 = pt.walk(0x20_0000n)[2]!;
    const spare = (l2.ptePa & ~0xfffn) + 8n * 300n;
    expect(mem.readU64(spare)).toBe(0n);
    mem.writeU64(spare, pt.pgd | 3n); // back to the top
    expect(() => pt.mappedPages(10_000)).toThrow(code('ERR_VTD_CORRUPT'));
    mem.writeU64(spare, l2.pte); // a second entry for the same L1 table
    expect(() => pt.mappedPages(10_000)).toThrow(code('ERR_VTD_CORRUPT'));
    mem.writeU64(spare, 0n);
    expect(pt.mappedPages(10_000).pages).toBe(PAGES);
  });
});

describe('PageTable.verifyHandover', () => {
  const prots = (p: number) => new Uint8Array(RUNS.n.length).fill(p);
  const verify = (pt: ReturnType<typeof setup>['pt'], handed: BigUint64Array, p = 3) => pt.verifyHandover(f64(RUNS.iova), f64(RUNS.pa), f64(RUNS.n), prots(p), handed);

  it('one walk: an exact table passes and is counted as mappedPages counts it', () => {
    const { pt } = mapped();
    const s = pt.mappedPages(100);
    expect(verify(pt, s.tables)).toEqual({ mismatch: null, corrupt: null, foreignTable: null, pages: PAGES, tables: s.tables.length });
    // read-only expected of a read-write table: the first page
    expect(verify(pt, s.tables, 1).mismatch).toBe(0x1000n);
  });

  it('a table not handed over is not entered; a cycle stops the walk', () => {
    const { mem, pt } = mapped();
    const tables = pt.mappedPages(100).tables;
    const l1 = pt.walk(0x200n << 12n).at(-1)!.ptePa & ~0xfffn;
    const a = verify(pt, tables.filter((t) => t !== l1));
    expect(a.foreignTable).toBe(l1);
    expect(a.mismatch).toBe(0x200n << 12n);
    expect(a.pages).toBe(PAGES - 512);
    const l2 = pt.walk(0x20_0000n)[2]!;
    mem.writeU64((l2.ptePa & ~0xfffn) + 8n * 300n, pt.pgd | 3n);
    expect(verify(pt, tables).corrupt).toMatch(/corrupt page table: table 0x[0-9a-f]+ is reached twice/);
  });

  it('refuses bad arrays before reading a table', () => {
    const { pt } = mapped();
    const invalid = code('ERR_INVALID_ARG_VALUE');
    expect(() => pt.verifyHandover(f64([1]), f64([1]), f64([1]), new Uint8Array([0]), u64([]))).toThrow(invalid);
    expect(() => pt.verifyHandover(f64([1]), f64([1]), f64([1]), new Uint8Array([4]), u64([]))).toThrow(invalid);
    expect(() => pt.verifyHandover(f64([1]), f64([1]), f64([1]), new Uint8Array([1, 1]), u64([]))).toThrow(invalid);
    expect(() => pt.verifyHandover(f64([1.5]), f64([1]), f64([1]), new Uint8Array([1]), u64([]))).toThrow(invalid);
  });
});

describe('PhysicalMemory.preserveMany / isAllocatedMany', () => {
  it('marks every block or none', () => {
    const { mem } = setup();
    const pas = u64(Array.from({ length: 6 }, () => mem.alloc(0)));
    mem.preserveMany(pas.subarray(0, 2));
    expect(mem.preserved()).toHaveLength(2);
    // the third block is already marked: the first two of this call are unmarked again
    expect(() => mem.preserveMany(u64([pas[2]!, pas[3]!, pas[0]!, pas[4]!]))).toThrow(code('ERR_PHYSMEM_PRESERVED'));
    expect(mem.preserved().map((b) => b.pa)).toEqual([pas[0], pas[1]].sort((a, b) => (a! < b! ? -1 : 1)));
    const free = mem.alloc(0);
    mem.free(free);
    expect(() => mem.preserveMany(u64([pas[2]!, free]))).toThrow(code('ERR_PHYSMEM_NOT_ALLOCATED'));
    expect(() => mem.preserveMany(u64([pas[2]!]), 99)).toThrow(code('ERR_OUT_OF_RANGE'));
    expect(mem.isPreserved(pas[2]!)).toBe(false);
    mem.preserveMany(pas.subarray(2));
    expect(mem.stats().framesPreserved).toBe(6);
    mem.preserveMany(u64([]));
  });

  it('checks every range', () => {
    const { mem } = setup();
    const pas = u64(Array.from({ length: 4 }, () => mem.alloc(1)));
    expect(mem.isAllocatedMany(pas)).toBe(true);
    expect(mem.isAllocatedMany(pas, 0x2000n)).toBe(true);
    expect(mem.isAllocatedMany(pas, 0x4000n)).toBe(pas.every((pa) => mem.isAllocated(pa, 0x4000n)));
    expect(mem.isAllocatedMany(u64([]))).toBe(true);
    mem.free(pas[1]!, 1);
    expect(mem.isAllocatedMany(pas)).toBe(false);
    expect(mem.isAllocatedMany(u64([0n]))).toBe(false); // reserved low memory
    expect(() => mem.isAllocatedMany(pas, -1n)).toThrow(code('ERR_OUT_OF_RANGE'));
  });
});
