// The KHO memory calls (kernel/liveupdate/kexec_handover.c, Linux 7.3): kho_alloc_preserve,
// kho_unpreserve_free, kho_restore_free, and the check every incoming address gets (LUO, the iommu
// core's live-update state). A preserved page is still allocated after the jump; nothing else is.
import type { PhysicalMemory } from '../../hw/memory.js';
import { errno } from '../../uapi/errno.js';

export const PAGE = 4096;

export const order = (size: number): number => {
  let o = 0;
  while (PAGE << o < size) o++;
  return o;
};

/** `kho_alloc_preserve(size)`: zeroed pages, preserved for the next kernel. */
export function khoAllocPreserve(mem: PhysicalMemory, size: number): bigint {
  const o = order(size);
  let pa: bigint;
  try {
    pa = mem.alloc(o, { zero: true });
  } catch {
    return errno('ENOMEM', 'no memory for LUO state');
  }
  mem.preserve(pa, o);
  return pa;
}

/** `kho_unpreserve_free`: the outgoing kernel takes it back. */
export function khoUnpreserveFree(mem: PhysicalMemory, pa: bigint, size: number): void {
  mem.unpreserve(pa, order(size));
  mem.free(pa, order(size));
}

/** `kho_restore_free`: the incoming kernel is done with what the previous one preserved. */
export function khoRestoreFree(mem: PhysicalMemory, pa: bigint, size: number): void {
  mem.free(pa, order(size));
  const l = ledger(mem);
  if (l.pages.size || l.huge.size) walk(Number(pa) / PAGE, Math.ceil(size / PAGE), (p) => void l.pages.delete(p), (b) => void l.huge.delete(b));
}

/** Pages in a 2 MiB block: a block restored whole (a folio) is one entry of the ledger. */
const HUGE = 512;

/**
 * The pages this kernel has restored (`kho_restore_folio` / `_pages`), by memory: KHO clears a
 * preserved page's magic as it restores it, so a second restore of the same page fails instead
 * of handing one page to two owners (a corrupted handover naming it twice). Kept per kernel
 * generation of the memory (a page restored and kept may be preserved again for the next one);
 * whole 2 MiB blocks are one entry each, `touched` the blocks holding a page restored alone.
 */
interface Ledger {
  generation: number;
  pages: Set<number>;
  huge: Set<number>;
  touched: Set<number>;
}
const ledgers = new WeakMap<PhysicalMemory, Ledger>();
function ledger(mem: PhysicalMemory): Ledger {
  let l = ledgers.get(mem);
  if (l === undefined || l.generation !== mem.generation) ledgers.set(mem, (l = { generation: mem.generation, pages: new Set(), huge: new Set(), touched: new Set() }));
  return l;
}

/** Each page of `[pfn, pfn + n)` given to `page`, except whole aligned 2 MiB blocks, given to `block`; stops at a true. */
function walk(pfn: number, n: number, page: (p: number) => boolean | void, block: (b: number) => boolean | void): boolean {
  for (let p = pfn; p < pfn + n; ) {
    if (p % HUGE === 0 && p + HUGE <= pfn + n) {
      if (block(p / HUGE)) return true;
      p += HUGE;
    } else if (page(p++)) return true;
  }
  return false;
}

/** Whether any page of 2 MiB block `b` was restored already (whole, or a page of it alone). */
const blockRestored = (l: Ledger, b: number): boolean => l.huge.has(b) || l.touched.has(b);

/** Whether a page of `[pfn, pfn + n)` was restored already. */
function restoredAlready(l: Ledger, pfn: number, n: number): boolean {
  if (!l.pages.size && !l.huge.size) return false;
  return walk(
    pfn,
    n,
    (p) => l.pages.has(p) || l.huge.has(Math.floor(p / HUGE)),
    (b) => blockRestored(l, b),
  );
}

function take(l: Ledger, pfn: number, n: number): void {
  walk(
    pfn,
    n,
    (p) => void (l.pages.add(p), l.touched.add(Math.floor(p / HUGE))),
    (b) => void l.huge.add(b),
  );
}

/** `kho_restore_pages`: {@link checkIncoming}, then the pages are this kernel's (a second restore is EINVAL). */
export function khoRestore(mem: PhysicalMemory, pa: bigint, size: number, what: string): void {
  checkIncoming(mem, pa, size, what);
  take(ledger(mem), Number(pa) / PAGE, Math.ceil(size / PAGE));
}

/** {@link khoRestore} of blocks of 2^`orders[i]` pages at `pas[i]` ({@link checkIncomingBlocks} first). */
export function khoRestoreBlocks(mem: PhysicalMemory, pas: BigUint64Array, orders: Uint8Array, what: (i: number) => string): void {
  checkIncomingBlocks(mem, pas, orders, what);
  const l = ledger(mem);
  for (let i = 0; i < pas.length; i++) {
    const pfn = Number(pas[i]!) / PAGE;
    const n = 2 ** orders[i]!;
    if (n === HUGE && pfn % HUGE === 0) {
      // A whole 2 MiB block (a folio): one entry, tested and taken without a walk.
      const b = pfn / HUGE;
      if (!blockRestored(l, b)) {
        l.huge.add(b);
        continue;
      }
    }
    if (restoredAlready(l, pfn, n)) {
      for (let k = 0; k < i; k++) walk(Number(pas[k]!) / PAGE, 2 ** orders[k]!, (p) => void l.pages.delete(p), (b) => void l.huge.delete(b));
      errno('EINVAL', `${what(i)} at 0x${pas[i]!.toString(16)} was restored already`);
    }
    take(l, pfn, n);
  }
}

/** Memory sizes by memory: a machine's never changes, and asking the addon costs a call. */
const sizes = new WeakMap<PhysicalMemory, bigint>();
const sizeOf = (mem: PhysicalMemory): bigint => {
  let size = sizes.get(mem);
  if (size === undefined) sizes.set(mem, (size = mem.size));
  return size;
};

/**
 * That `[pa, pa + len)` is page-aligned memory still allocated (what a preserved page is after the
 * jump) and not restored yet ({@link khoRestore}).
 */
export function checkIncoming(mem: PhysicalMemory, pa: bigint, len: number, what: string): void {
  if (pa === 0n || pa % BigInt(PAGE) !== 0n || pa + BigInt(len) > sizeOf(mem) || !mem.isAllocated(pa, BigInt(Math.ceil(len / PAGE) * PAGE))) {
    errno('EINVAL', `${what} at 0x${pa.toString(16)} is not preserved memory`);
  }
  if (restoredAlready(ledger(mem), Number(pa) / PAGE, Math.ceil(len / PAGE))) errno('EINVAL', `${what} at 0x${pa.toString(16)} was restored already`);
}

/**
 * {@link checkIncoming} for blocks of 2^`orders[i]` pages at `pas[i]`, with one allocator query
 * per order instead of one per block; the error names the first block that fails (`what(i)`).
 */
export function checkIncomingBlocks(mem: PhysicalMemory, pas: BigUint64Array, orders: Uint8Array, what: (i: number) => string): void {
  // Plain numbers, no bigint a block: exact below 2^53, and any address above that is past the end anyway.
  const size = Number(sizeOf(mem));
  const count = new Uint32Array(256);
  const v = new DataView(pas.buffer, pas.byteOffset, pas.byteLength);
  for (let i = 0; i < pas.length; i++) {
    const pa = v.getUint32(8 * i, true) + v.getUint32(8 * i + 4, true) * 2 ** 32;
    if (pa === 0 || pa % PAGE !== 0 || pa + PAGE * 2 ** orders[i]! > size) errno('EINVAL', `${what(i)} at 0x${pas[i]!.toString(16)} is not preserved memory`);
    count[orders[i]!]!++;
  }
  for (let o = 0; o < 256; o++) {
    if (!count[o]) continue;
    const same = count[o] === pas.length ? pas : pas.filter((_, i) => orders[i] === o);
    if (mem.isAllocatedMany(same, BigInt(PAGE) << BigInt(o))) continue;
    // Which one: the first in order (the rare path walks them one by one).
    for (let i = 0; i < pas.length; i++) checkIncoming(mem, pas[i]!, PAGE * 2 ** orders[i]!, what(i));
  }
}
