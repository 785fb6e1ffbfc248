import { describe, expect, it } from 'vitest';
import { PhysicalMemory, POISON } from 'iommu-liveupdate';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('PhysicalMemory', () => {
  it('is sparse: a 1 TiB and a 4 PiB host cost what is touched', () => {
    const tib = new PhysicalMemory({ size: 1n << 40n });
    expect(tib.size).toBe(1n << 40n);
    expect(tib.stats().hostBytes).toBeLessThan(1 << 20);
    const pib = new PhysicalMemory({ size: 1n << 52n });
    pib.writeU64((1n << 52n) - 8n, 0x1234n);
    expect(pib.readU64((1n << 52n) - 8n)).toBe(0x1234n);
    expect(pib.stats().framesResident).toBe(1);
    expect(pib.stats().hostBytes).toBeLessThan(1 << 20);
  });

  it('reads and writes bytes and little-endian words', () => {
    const mem = new PhysicalMemory({ size: 1n << 30n });
    mem.write(0x1ffcn, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    expect([...mem.read(0x1ffcn, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    mem.writeU64(0x3000n, 0x0102030405060708n);
    expect([...mem.read(0x3000n, 8)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(mem.readU64(0x3000n)).toBe(0x0102030405060708n);
    expect([...mem.read(0x40000000n - 4n, 4)]).toEqual([0, 0, 0, 0]);
  });

  it('rejects bad input with stable codes and loses nothing', () => {
    const mem = new PhysicalMemory({ size: 1n << 30n });
    mem.writeU64(0x1000n, 7n);
    expect(code(() => new PhysicalMemory({ size: 4095n }))).toBe('ERR_PHYSMEM_SIZE');
    expect(code(() => new PhysicalMemory({ size: (1n << 52n) + 4096n }))).toBe('ERR_PHYSMEM_SIZE');
    expect(code(() => mem.readU64(0x1001n))).toBe('ERR_PHYSMEM_ALIGN');
    expect(code(() => mem.read(1n << 30n, 1))).toBe('ERR_PHYSMEM_RANGE');
    expect(code(() => mem.write((1n << 30n) - 2n, new Uint8Array(4)))).toBe('ERR_PHYSMEM_RANGE');
    expect(code(() => mem.readU64(-8n))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => mem.writeU64(0x1000n, 1n << 64n))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => mem.alloc(19))).toBe('ERR_OUT_OF_RANGE');
    expect(mem.readU64(0x1000n)).toBe(7n);
  });

  it('allocates deterministically per seed, frees with poison, and accounts', () => {
    const a = new PhysicalMemory({ size: 8n << 30n, seed: 5 });
    const b = new PhysicalMemory({ size: 8n << 30n, seed: 5 });
    const pa = [0, 1, 9, 0].map((o) => a.alloc(o));
    expect([0, 1, 9, 0].map((o) => b.alloc(o))).toEqual(pa);
    expect(pa[2]! % (4096n << 9n)).toBe(0n);
    a.writeU64(pa[0]!, 99n);
    a.free(pa[0]!);
    expect(a.readU64(pa[0]!)).toBe(0x6b6b6b6b6b6b6b6bn);
    expect(POISON).toBe(0x6b);
    expect(code(() => a.free(pa[0]!))).toBe('ERR_PHYSMEM_NOT_ALLOCATED');
    expect(a.stats().framesAllocated).toBe(2 + 512 + 1);
  });

  it('scrub keeps preserved blocks and poisons the rest', () => {
    const mem = new PhysicalMemory({ size: 1n << 40n, seed: 1 });
    const kept = mem.alloc(2, { zero: true });
    const lost = mem.alloc(0);
    mem.write(kept + 4096n, new TextEncoder().encode('survives kexec'));
    mem.writeU64(lost, 1n);
    mem.preserve(kept, 2);
    expect(code(() => mem.preserve(kept + 4096n, 0))).toBe('ERR_PHYSMEM_PRESERVED');
    expect(mem.preserved()).toEqual([{ pa: kept, order: 2 }]);
    const report = mem.scrub();
    expect(report.preservedFrames).toBe(4);
    expect(report.poisonedFrames).toBe(1);
    expect(new TextDecoder().decode(mem.read(kept + 4096n, 14))).toBe('survives kexec');
    expect(mem.readU64(kept)).toBe(0n);
    expect(mem.readU64(lost)).toBe(0x6b6b6b6b6b6b6b6bn);
    expect(mem.isAllocated(kept, 4n * 4096n)).toBe(true);
    expect(mem.isAllocated(lost)).toBe(false);
    expect(mem.preserved()).toEqual([]);
  });
});
