import { describe, expect, it } from 'vitest';
import {
  DMA_GCMD_SRTP,
  DMA_GCMD_TE,
  DMA_GSTS_RTPS,
  DMA_GSTS_TES,
  DMAR_GCMD_REG,
  DMAR_GSTS_REG,
  DMAR_RTADDR_REG,
  DmarFaultError,
  Gather,
  IommuUnit,
  PhysicalMemory,
  TRANSLATION_FAULTED,
  VTD_FR_ADDR_BEYOND_MGAW,
  VTD_FR_CONTEXT_ENTRY_P,
  VTD_FR_READ,
  VTD_FR_WRITE,
} from 'iommu-liveupdate';
import { native } from '../ts/native.js';
import { rig } from './helpers.js';

const SID = 0x0100;

describe('IommuUnit registers', () => {
  it('advertises CAP/ECAP from the options', () => {
    const mem = new PhysicalMemory({ size: 1n << 40n });
    const unit = new IommuUnit(mem, { addressWidth: 48, superpages: ['2M', '1G'], iotlbEntries: 512 });
    const { cap, ecap, gsts, rtaddr } = unit.registers();
    expect((cap >> 8n) & 0x1fn).toBe(0b0110n); // SAGAW 39 | 48
    expect((cap >> 16n) & 0x3fn).toBe(47n); // MGAW - 1
    expect((cap >> 34n) & 0xfn).toBe(3n); // SLLPS 2M | 1G
    expect((cap >> 39n) & 1n).toBe(1n); // PSI
    expect((cap >> 48n) & 0x3fn).toBe(18n); // MAMV
    expect(ecap & 0xc1n).toBe(0xc1n); // C, PT, SC
    expect(gsts).toBe(0);
    expect(rtaddr).toBe(0n);
    expect(unit.cacheOccupancy().iotlbCapacity).toBe(512);
    const small = new IommuUnit(mem, { addressWidth: 39, superpages: [] });
    expect((small.registers().cap >> 34n) & 0xfn).toBe(0n);
    expect((small.registers().cap >> 8n) & 0x1fn).toBe(0b0010n);
  });

  it('programs the root table and TE through GCMD like the driver', () => {
    const mem = new PhysicalMemory({ size: 1n << 30n });
    const unit = new IommuUnit(mem);
    const root = mem.alloc(0, { zero: true });
    unit.writeRegister(DMAR_RTADDR_REG, 8, root);
    unit.writeRegister(DMAR_GCMD_REG, 4, BigInt(DMA_GCMD_SRTP >>> 0));
    expect(Number(unit.readRegister(DMAR_GSTS_REG, 4)) & DMA_GSTS_RTPS).toBe(DMA_GSTS_RTPS);
    unit.writeRegister(DMAR_GCMD_REG, 4, BigInt(DMA_GCMD_TE >>> 0));
    expect(unit.registers().gsts >>> 0).toBe((DMA_GSTS_TES | DMA_GSTS_RTPS) >>> 0);
    expect(unit.registers().rtaddr).toBe(root);
    // an empty root table: every device faults "root entry not present"
    expect(() => unit.translateOne(SID, 0n)).toThrow(DmarFaultError);
    expect(unit.faults()).toEqual([{ sid: SID, iova: 0n, reason: 1, write: false }]);
    expect(() => unit.readRegister(0x1000, 8)).toThrow(expect.objectContaining({ code: 'ERR_VTD_REGISTER' }));
  });
});

describe('translation through the addon', () => {
  it('batch and single calls agree, with per-entry fault reasons', () => {
    const { mem, unit, tables } = rig();
    const pt = unit.createPageTable(4);
    const g = new Gather();
    pt.map(0x20_0000n, 0x4000_0000n, 0x20_0000n, { read: true, write: true }, g);
    pt.map(0x40_0000n, 0x5000_0000n, 0x1000n, { read: true }, g);
    tables.attach(SID, pt, 9);
    const iovas = new BigUint64Array([0x20_0010n, 0x3f_fff8n, 0x40_0008n, 0x60_0000n, 1n << 50n]);
    const out = new BigUint64Array(iovas.length);
    const faults = new Uint8Array(iovas.length);
    expect(unit.translate(SID, iovas, out, { write: true, faults })).toBe(3);
    expect([...out]).toEqual([0x4000_0010n, 0x401f_fff8n, TRANSLATION_FAULTED, TRANSLATION_FAULTED, TRANSLATION_FAULTED]);
    expect([...faults]).toEqual([0, 0, VTD_FR_WRITE, VTD_FR_WRITE, VTD_FR_ADDR_BEYOND_MGAW]);
    expect(unit.translate(SID, iovas, out, { write: false, faults })).toBe(2);
    expect([...faults]).toEqual([0, 0, 0, VTD_FR_READ, VTD_FR_ADDR_BEYOND_MGAW]);
    for (let i = 0; i < iovas.length; i++) {
      if (faults[i] === 0) expect(unit.translateOne(SID, iovas[i]!)).toBe(out[i]);
      else expect(() => unit.translateOne(SID, iovas[i]!)).toThrow(expect.objectContaining({ code: 'ERR_DMAR_FAULT', reason: faults[i] }));
    }
    // one pending record per requester (collapse), with the page address and direction
    expect(unit.faults()).toEqual([{ sid: SID, iova: 0x40_0000n, reason: VTD_FR_WRITE, write: true }]);
    const s = unit.stats();
    expect(s.faults).toBe(3 + 2 + 2);
    expect(s.iotlbHits + s.iotlbMisses).toBeGreaterThan(0);
    expect(unit.clearFaults()).toBe(1);
    expect(unit.faults()).toEqual([]);
    expect(mem.isAllocated(pt.pgd)).toBe(true);
  });

  it('rejects short output arrays instead of writing past them', () => {
    const { unit } = rig();
    const iovas = new BigUint64Array(4);
    expect(() => unit.translate(SID, iovas, new BigUint64Array(3), { write: false })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    expect(() => unit.translate(SID, iovas, new BigUint64Array(4), { write: false, faults: new Uint8Array(2) })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    expect(() => unit.translate(0x1_0000, iovas, new BigUint64Array(4), { write: false })).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }),
    );
  });

  it('keeps translating the old way until the IOTLB is invalidated', () => {
    const { mem, unit, tables } = rig();
    const pt = unit.createPageTable();
    pt.map(0x1000n, 0x1000_0000n, 0x1000n, { read: true, write: true });
    tables.attach(SID, pt, 3);
    expect(unit.translateOne(SID, 0x1008n)).toBe(0x1000_0008n);
    const leaf = pt.walk(0x1000n).at(-1)!;
    expect(leaf.pte).toBe(0x1000_0003n);
    mem.writeU64(leaf.ptePa, 0x2000_0003n);
    expect(unit.translateOne(SID, 0x1008n)).toBe(0x1000_0008n);
    expect(unit.invalidateIotlb({ granularity: 'page', did: 3, addr: 0x1000n, ih: true })).toBe('page');
    expect(unit.translateOne(SID, 0x1008n)).toBe(0x2000_0008n);
  });

  it('keeps freed table pages allocated until iotlbSync, then flushes with IH=0', () => {
    const { mem, unit, tables } = rig();
    const pt = unit.createPageTable();
    pt.map(0n, 0x1000_0000n, 0x10_0000n, { read: true, write: true });
    tables.attach(SID, pt, 4);
    expect(unit.translateOne(SID, 0x5000n)).toBe(0x1000_5000n);
    const l1 = pt.walk(0n)[2]!.pte & ~0xfffn;
    const g = new Gather();
    expect(g.pending).toBe(false);
    expect(pt.unmap(0n, 0x20_0000n, g)).toBe(0x20_0000n);
    expect([...g.freelist]).toEqual([l1]);
    expect(g.range).toEqual({ start: 0n, end: 0x1f_ffffn });
    expect(g.pending).toBe(true);
    expect(mem.isAllocated(l1)).toBe(true);
    expect(unit.translateOne(SID, 0x5000n)).toBe(0x1000_5000n); // stale, as hardware would
    expect(unit.iotlbSync(4, g)).toBe('page');
    expect(mem.isAllocated(l1)).toBe(false);
    expect(g.freelist.length).toBe(0);
    expect(g.pending).toBe(false);
    expect(() => unit.translateOne(SID, 0x5000n)).toThrow(expect.objectContaining({ reason: VTD_FR_READ }));
  });

  it('maps errors to stable codes without changing the table', () => {
    const { unit } = rig();
    const pt = unit.createPageTable();
    pt.map(0x10_0000n, 0x1000_0000n, 0x2000n, { read: true });
    const cases: [() => void, string][] = [
      [() => pt.map(0x0f_f000n, 0n, 0x3000n, { read: true }), 'ERR_VTD_ALREADY_MAPPED'],
      [() => pt.map(0x1001n, 0n, 0x1000n, { read: true }), 'ERR_VTD_ALIGN'],
      [() => pt.map(0n, 0n, 0x1000n, {}), 'ERR_VTD_NO_PERMISSION'],
      [() => pt.map(1n << 48n, 0n, 0x1000n, { read: true }), 'ERR_VTD_RANGE'],
      [() => pt.map(0n, 64n << 30n, 0x1000n, { read: true }), 'ERR_PHYSMEM_RANGE'],
      [() => unit.createPageTable(5), 'ERR_VTD_LEVELS'],
      [() => unit.invalidateIotlb({ granularity: 'page', did: 1, addr: 0n, am: 19 }), 'ERR_VTD_ADDRESS_MASK'],
    ];
    for (const [fn, c] of cases) expect(fn).toThrow(expect.objectContaining({ code: c }));
    expect(pt.iovaToPhys(0x0f_f000n)).toBeNull();
    expect(pt.iovaToPhys(0x10_1004n)).toBe(0x1000_1004n);
  });

  it('context faults and device-selective context invalidation', () => {
    const { mem, unit, tables } = rig();
    const pt = unit.createPageTable();
    pt.map(0n, 0x1000_0000n, 0x1000n, { read: true });
    const ce = tables.attach(SID, pt, 2);
    expect(unit.translateOne(SID, 0n)).toBe(0x1000_0000n);
    mem.writeU64(ce, 0n);
    unit.invalidateIotlb({ granularity: 'global' });
    expect(unit.translateOne(SID, 0n)).toBe(0x1000_0000n); // cached context entry
    unit.invalidateContext({ granularity: 'device', did: 2, sid: SID });
    expect(() => unit.translateOne(SID, 0n)).toThrow(expect.objectContaining({ reason: VTD_FR_CONTEXT_ENTRY_P }));
  });

  it('a Rust panic becomes a JavaScript exception and the process lives on', () => {
    expect(() => native.nativePanicForTest()).toThrow(/deliberate panic/);
    expect(new PhysicalMemory({ size: 1n << 20n }).size).toBe(1n << 20n);
  });
});
