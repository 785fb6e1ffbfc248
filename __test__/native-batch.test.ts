import { describe, expect, it } from 'vitest';
import { Gather, VTD_FR_ADDR_BEYOND_MGAW, VTD_FR_READ, VTD_FR_WRITE } from 'iommu-liveupdate';
import { rig } from './helpers.js';

const SID = 0x0100;
const DID = 6;
const f64 = (xs: number[]) => new Float64Array(xs);
const invalid = expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' });

describe('PageTable.mapRuns', () => {
  it('maps every run as map would, superpages per run', () => {
    const { unit, tables } = rig();
    const pt = unit.createPageTable(4);
    // 4 KiB at a misaligned PA, 2 MiB + 4 KiB aligned, a whole aligned GiB
    pt.mapRuns(f64([1, 0x4_0000, 0x10_0000]), f64([0x4_0005, 0x20_0000, 0x40_0000]), f64([3, 513, 0x4_0000]), { read: true, write: true });
    expect(pt.iovaToPhys(0x1008n)).toBe(0x4000_5008n);
    expect(pt.iovaToPhys(0x4000_0000n + 0x20_0010n)).toBe(0x2_0020_0010n);
    expect(pt.walk(0x4000_0000n).at(-1)!.level).toBe(2);
    expect(pt.walk(0x4020_0000n).at(-1)!.level).toBe(1);
    expect(pt.walk(0x1_0000_0000n).at(-1)!.level).toBe(3);
    tables.attach(SID, pt, DID);
    expect(unit.translateOne(SID, 0x1_3fff_fff8n, true)).toBe(0x4_3fff_fff8n);
    // empty arrays: nothing to do
    pt.mapRuns(f64([]), f64([]), f64([]), {});
  });

  it('is all or nothing and returns the table pages it took through the gather', () => {
    const { mem, unit, tables } = rig();
    const pt = unit.createPageTable(4);
    pt.map(0x8000_0000n, 0x1000_0000n, 0x1000n, { read: true });
    tables.attach(SID, pt, DID);
    const pages = [...pt.tablePages()];
    const frames = mem.stats().framesAllocated;
    const g = new Gather();
    // the third run collides with the existing mapping at 0x8000_0000
    expect(() =>
      pt.mapRuns(f64([0x1_0000, 0x2_0000, 0x8_0000, 0x9_0000]), f64([0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000]), f64([4, 600, 1, 1]), { read: true }, g),
    ).toThrow(expect.objectContaining({ code: 'ERR_VTD_ALREADY_MAPPED' }));
    expect([...pt.tablePages()]).toEqual(pages);
    expect(pt.iovaToPhys(0x1000_0000n)).toBeNull();
    expect(g.freelist.length).toBeGreaterThan(0);
    unit.iotlbSync(DID, g);
    expect(mem.stats().framesAllocated).toBe(frames);
    expect(pt.iovaToPhys(0x8000_0000n)).toBe(0x1000_0000n);
    // vtd errors of a run keep their codes
    expect(() => pt.mapRuns(f64([1, 2 ** 36]), f64([1, 1]), f64([1, 1]), { read: true })).toThrow(expect.objectContaining({ code: 'ERR_VTD_RANGE' }));
    expect(() => pt.mapRuns(f64([1]), f64([2 ** 24]), f64([1]), { read: true })).toThrow(expect.objectContaining({ code: 'ERR_PHYSMEM_RANGE' }));
    expect(() => pt.mapRuns(f64([1]), f64([1]), f64([1]), {})).toThrow(expect.objectContaining({ code: 'ERR_VTD_NO_PERMISSION' }));
    expect(pt.iovaToPhys(0x1000n)).toBeNull();
  });

  it('validates the arrays before mapping anything', () => {
    const { unit } = rig();
    const pt = unit.createPageTable(4);
    const rw = { read: true, write: true };
    const bad: [number[], number[], number[]][] = [
      [[1, 2], [1], [1, 1]], // lengths differ
      [[1], [1], [1, 1]],
      [[-1], [1], [1]], // negative
      [[1.5], [1], [1]], // not an integer
      [[NaN], [1], [1]],
      [[2 ** 52], [1], [1]], // IOVA page beyond 2^52
      [[1], [2 ** 40], [1]], // PA page beyond 2^40
      [[1], [1], [0]], // no pages
      [[1], [1], [Infinity]],
      [[2 ** 52 - 1], [1], [2]], // the run ends past page 2^52
    ];
    for (const [iovas, pas, n] of bad) {
      // a valid first run proves nothing is mapped when a later entry is invalid
      expect(() => pt.mapRuns(f64([0x100, ...iovas]), f64([0x100, ...pas]), f64([1, ...n]), rw)).toThrow(invalid);
    }
    expect(pt.iovaToPhys(0x10_0000n)).toBeNull();
  });
});

describe('IommuUnit.dmaRead / dmaWrite', () => {
  function dmaRig() {
    const r = rig();
    const pt = r.unit.createPageTable(4);
    // three scattered pages at 0x10_0000: RW, RW, read-only; then a write-only page
    pt.map(0x10_0000n, 0x4000_0000n, 0x1000n, { read: true, write: true });
    pt.map(0x10_1000n, 0x2000_5000n, 0x1000n, { read: true, write: true });
    pt.map(0x10_2000n, 0x3000_9000n, 0x1000n, { read: true });
    pt.map(0x10_3000n, 0x3100_0000n, 0x1000n, { write: true });
    r.tables.attach(SID, pt, DID);
    return r;
  }

  it('moves bytes across page boundaries, one translation per page', () => {
    const { mem, unit } = dmaRig();
    const data = Uint8Array.from({ length: 0x1400 }, (_, i) => (i * 13 + 5) & 0xff);
    expect(unit.dmaWrite(SID, 0x10_0c00n, data)).toBe(0);
    expect(mem.read(0x4000_0c00n, 0x400)).toEqual(data.subarray(0, 0x400));
    expect(mem.read(0x2000_5000n, 0x1000)).toEqual(data.subarray(0x400, 0x1400));
    expect(unit.stats().iotlbMisses).toBe(2);
    const back = new Uint8Array(data.length + 8).subarray(8); // a view at an offset
    expect(unit.dmaRead(SID, 0x10_0c00n, back)).toBe(0);
    expect(back).toEqual(data);
    expect(unit.stats().iotlbHits).toBe(2);
  });

  it('stops at the first faulting page and records the fault', () => {
    const { mem, unit } = dmaRig();
    const before = mem.read(0x3000_9000n, 16);
    expect(unit.dmaWrite(SID, 0x10_1ff0n, new Uint8Array(0x20).fill(0x77))).toBe(VTD_FR_WRITE);
    expect(unit.lastFaultIova).toBe(0x10_2000n);
    expect(mem.read(0x2000_5ff0n, 16)).toEqual(new Uint8Array(16).fill(0x77));
    expect(mem.read(0x3000_9000n, 16)).toEqual(before);
    expect(unit.faults()).toEqual([{ sid: SID, iova: 0x10_2000n, reason: VTD_FR_WRITE, write: true }]);
    unit.clearFaults();
    const buf = new Uint8Array(0x10).fill(0xaa);
    expect(unit.dmaRead(SID, 0x10_3008n, buf)).toBe(VTD_FR_READ);
    expect(unit.lastFaultIova).toBe(0x10_3008n); // byte-exact on the first page
    expect(buf).toEqual(new Uint8Array(0x10).fill(0xaa));
    expect(unit.faults()).toEqual([{ sid: SID, iova: 0x10_3000n, reason: VTD_FR_READ, write: false }]);
    expect(unit.dmaRead(SID, 1n << 50n, buf)).toBe(VTD_FR_ADDR_BEYOND_MGAW);
    expect(unit.dmaRead(SID, 0x10_0000n, buf)).toBe(0);
    expect(unit.lastFaultIova).toBe(0n);
  });

  it('rejects transfers whose end overflows 64 bits and bad requester ids', () => {
    const { unit } = dmaRig();
    expect(() => unit.dmaRead(SID, 2n ** 64n - 8n, new Uint8Array(16))).toThrow(invalid);
    expect(() => unit.dmaWrite(SID, 2n ** 64n - 1n, new Uint8Array(2))).toThrow(invalid);
    expect(() => unit.dmaRead(SID, 2n ** 64n, new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => unit.dmaRead(0x1_0000, 0n, new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(unit.dmaRead(SID, 2n ** 64n - 8n, new Uint8Array(0))).toBe(0);
    expect(unit.stats().faults).toBe(0);
  });
});
