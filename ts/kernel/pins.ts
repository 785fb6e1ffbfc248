// Pin and area bookkeeping in the native core (crates/iopt through NativePins): one per kernel,
// holding the `struct page` pin counts by PFN, the folio tables of its shmem objects (mm.ts) and
// the pinned runs of its iopt_pages (iommufd/pages.ts). Pinning a whole area (fault-in, pin
// counts, run list) is one call, whatever its size; so is building its map batch.
import type { PhysicalMemory } from '../hw/memory.js';
import { native, type NativePins } from '../native.js';
import { errno } from '../uapi/errno.js';

/** The errnos the native bookkeeping answers with (0: done). */
const STATUS = [
  ['EFAULT', 'beyond the end of the object (SIGBUS)'],
  ['ENOMEM', 'out of host memory'],
  ['EINVAL', 'misplaced folio (beyond the end, unaligned, or at a taken index)'],
] as const;

/** Throws the errno of a native status unless it is 0. */
export function checkStatus(status: number): void {
  if (status === 0) return;
  const [code, why] = STATUS[status - 1] ?? STATUS[2];
  errno(code, why);
}

/**
 * What an iopt_pages pins, piece by piece in index order, as `pagesPin` takes it: quadruples
 * (index, handle, start, n): `n` pages from page `start` of the shmem object `handle`, or with
 * handle -1 the PFNs `start` onwards (a guestmemfs file's blocks).
 */
export class Segments {
  buf = new Float64Array(64);
  count = 0;

  push(idx: number, handle: number, start: number, n: number): void {
    const k = this.count * 4;
    if (k + 4 > this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[k] = idx;
    this.buf[k + 1] = handle;
    this.buf[k + 2] = start;
    this.buf[k + 3] = n;
    this.count++;
  }

  view(): Float64Array {
    return this.buf.subarray(0, this.count * 4);
  }
}

/**
 * `struct page` pin counts, by PFN (a run covering a whole 2 MiB-aligned chunk is one counter).
 * Frames whose owner went away while pinned are freed by the last unpin ("pinned frames stay
 * put"). `native` is the kernel's whole bookkeeping, for mm.ts and iommufd's iopt_pages.
 */
export class PageRefs {
  readonly native: NativePins;
  /** Released while pinned: first pfn → its order and how to free it when the last pin goes. */
  private readonly orphans = new Map<number, { order: number; free: () => void }>();

  constructor(private readonly memory: PhysicalMemory) {
    this.native = new native.NativePins(memory.native);
  }

  /** Sum of all pin counts (a page pinned twice counts twice). */
  get total(): number {
    return this.native.total;
  }

  /** Pins `n` pages from `pfn`. */
  pin(pfn: number, n: number): void {
    this.native.pin(pfn, n);
  }

  /** Unpins `n` pages from `pfn`; frees orphaned blocks that reach zero. */
  unpin(pfn: number, n: number): void {
    this.native.unpin(pfn, n);
    this.reap();
  }

  /** Pin count of the page at `pfn`. */
  count(pfn: number): number {
    return this.native.count(pfn);
  }

  /** Whether any page of `[pfn, pfn + n)` is pinned. */
  pinned(pfn: number, n: number): boolean {
    return this.native.countRange(pfn, n) !== 0;
  }

  /**
   * Frees `[pfn, pfn + 2^order)` now if nothing pins it, else when the last pin goes; `free`
   * (default: back to the page allocator) says how. A pinned 4 KiB page of a 2 MiB block keeps
   * the whole block, as a compound page does.
   */
  release(pfn: number, order: number, free: () => void = () => this.memory.free(BigInt(pfn) << 12n, order)): void {
    if (!this.pinned(pfn, 1 << order)) free();
    else this.orphans.set(pfn, { order, free });
  }

  /** The (pfn, order) pairs a native release left pinned: freed when their last pin goes. */
  orphan(pairs: Float64Array): void {
    for (let i = 0; i < pairs.length; i += 2) {
      const pfn = pairs[i]!;
      const order = pairs[i + 1]!;
      this.orphans.set(pfn, { order, free: () => this.memory.free(BigInt(pfn) << 12n, order) });
    }
  }

  /** Frees the orphans nothing pins any more (after pins went, here or natively). */
  reap(): void {
    if (this.orphans.size === 0) return;
    for (const [start, o] of [...this.orphans]) {
      if (this.pinned(start, 1 << o.order)) continue;
      this.orphans.delete(start);
      o.free();
    }
  }
}
