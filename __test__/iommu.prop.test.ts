// Random map/unmap/invalidate sequences through the addon agree with a plain page map, for every
// translated IOVA, on 3-, 4- and 5-level tables.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Gather, TRANSLATION_FAULTED, VTD_FR_READ, VTD_FR_WRITE } from 'iommu-liveupdate';
import { rig } from './helpers.js';

const SID = 0x0300;
const DID = 11;
const K4 = 0x1000n;
const M2 = 0x20_0000n;
const G1 = 0x4000_0000n;

type Op =
  | { kind: 'map'; slot: number; offset: number; size: 'small' | '2M' | '1G'; pages: number; aligned: boolean; r: boolean; w: boolean }
  | { kind: 'unmap'; pick: number }
  | { kind: 'unmapPart'; pick: number; from: number; pages: number }
  | { kind: 'flushAll' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('map' as const),
      slot: fc.integer({ min: 0, max: 3 }),
      offset: fc.integer({ min: 0, max: 1023 }),
      size: fc.constantFrom('small' as const, '2M' as const, '1G' as const),
      pages: fc.integer({ min: 1, max: 24 }),
      aligned: fc.boolean(),
      r: fc.boolean(),
      w: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('unmap' as const), pick: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('unmapPart' as const), pick: fc.nat(), from: fc.nat({ max: 16 }), pages: fc.integer({ min: 1, max: 8 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'flushAll' as const }) },
);

interface Mapping {
  iova: bigint;
  size: bigint;
  smallOnly: boolean;
}

function run(levels: number, ops: Op[]): void {
  const { unit, tables } = rig({ addressWidth: 57, iotlbEntries: 64, pagingStructureCacheEntries: 16 });
  const pt = unit.createPageTable(levels);
  tables.attach(SID, pt, DID);
  const width = 12n + 9n * BigInt(levels);
  // slot 3 sits just below the top of the address space, exercising the top-level index
  const slotBase = (s: number) => (s === 3 ? (1n << width) - 4n * G1 : BigInt(s) * 2n * G1);
  const model = new Model();
  const mappings: Mapping[] = [];
  let nextPa = 0x1_0000_0000n;
  const gather = new Gather();

  for (const op of ops) {
    if (op.kind === 'map') {
      if (!op.r && !op.w) continue;
      const unit4k = op.size === 'small' ? K4 : op.size === '2M' ? M2 : G1;
      const size = op.size === 'small' ? BigInt(op.pages) * K4 : unit4k * BigInt(1 + (op.pages % 2));
      const iova = slotBase(op.slot) + (op.size === 'small' ? BigInt(op.offset) * K4 : BigInt(op.offset % 2) * unit4k);
      nextPa = ((nextPa + G1 - 1n) / G1) * G1 + (op.aligned ? 0n : K4);
      const pa = nextPa;
      const clash = model.overlaps(iova, size);
      let threw: unknown;
      try {
        pt.map(iova, pa, size, { read: op.r, write: op.w }, gather);
      } catch (e) {
        threw = e;
      }
      if (clash) {
        expect((threw as { code?: string }).code).toBe('ERR_VTD_ALREADY_MAPPED');
        continue;
      }
      expect(threw).toBeUndefined();
      model.add({ iova, size, pa, r: op.r, w: op.w });
      mappings.push({ iova, size, smallOnly: !op.aligned || op.size === 'small' && (iova | pa) % M2 !== 0n });
      nextPa += size;
    } else if (op.kind === 'unmap' && mappings.length > 0) {
      const [m] = mappings.splice(op.pick % mappings.length, 1);
      pt.unmap(m!.iova, m!.size, gather);
      model.remove(m!.iova, m!.size);
      unit.iotlbSync(DID, gather);
    } else if (op.kind === 'unmapPart' && mappings.length > 0) {
      const m = mappings[op.pick % mappings.length]!;
      if (!m.smallOnly) continue;
      const start = m.iova + BigInt(op.from) * K4;
      const size = BigInt(op.pages) * K4;
      if (start + size > m.iova + m.size) continue;
      expect(pt.unmap(start, size, gather)).toBe(size);
      model.remove(start, size);
      unit.iotlbSync(DID, gather);
    } else if (op.kind === 'flushAll') {
      unit.invalidateIotlb({ granularity: 'domain', did: DID });
    }
    check();
  }

  function check(): void {
    const probes: bigint[] = [];
    for (const e of model.extents) probes.push(e.iova + 0x18n, e.iova - 8n, e.iova + e.size / 2n, e.iova + e.size - 8n, e.iova + e.size);
    for (let s = 0; s < 4; s++) probes.push(slotBase(s), slotBase(s) + G1 - 8n);
    const iovas = BigUint64Array.from(probes.filter((p) => p >= 0n && p < 1n << width));
    const out = new BigUint64Array(iovas.length);
    const faults = new Uint8Array(iovas.length);
    for (const write of [false, true]) {
      unit.translate(SID, iovas, out, { write, faults });
      iovas.forEach((iova, i) => {
        const leaf = model.find(iova);
        const allowed = leaf && (write ? leaf.w : leaf.r);
        const want = allowed ? leaf.pa + (iova - leaf.iova) : TRANSLATION_FAULTED;
        expect({ iova, pa: out[i] }).toEqual({ iova, pa: want });
        expect(faults[i]).toBe(allowed ? 0 : write ? VTD_FR_WRITE : VTD_FR_READ);
        if (!write) expect(pt.iovaToPhys(iova)).toBe(leaf ? leaf.pa + (iova - leaf.iova) : null);
      });
    }
  }
}

interface Extent {
  iova: bigint;
  size: bigint;
  pa: bigint;
  r: boolean;
  w: boolean;
}

/** The reference: disjoint mapped extents (superpages stay one extent, so 1 GiB costs nothing). */
class Model {
  extents: Extent[] = [];
  overlaps(iova: bigint, size: bigint): boolean {
    return this.extents.some((e) => e.iova < iova + size && iova < e.iova + e.size);
  }
  add(e: Extent): void {
    this.extents.push(e);
  }
  find(iova: bigint): Extent | undefined {
    return this.extents.find((e) => e.iova <= iova && iova < e.iova + e.size);
  }
  remove(iova: bigint, size: bigint): void {
    const end = iova + size;
    this.extents = this.extents.flatMap((e) => {
      const eEnd = e.iova + e.size;
      if (eEnd <= iova || end <= e.iova) return [e];
      const keep: Extent[] = [];
      if (e.iova < iova) keep.push({ ...e, size: iova - e.iova });
      if (end < eEnd) keep.push({ ...e, iova: end, size: eEnd - end, pa: e.pa + (end - e.iova) });
      return keep;
    });
  }
}

describe('page tables and translation agree with a reference page map', () => {
  for (const levels of [3, 4, 5]) {
    it(`${levels}-level tables`, () => {
      fc.assert(fc.property(fc.array(opArb, { maxLength: 24 }), (ops) => run(levels, ops)), { numRuns: 40, seed: 20261124 + levels });
    });
  }
});
