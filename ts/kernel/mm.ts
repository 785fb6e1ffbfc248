// Process memory: shmem-like backing objects filled from the page allocator on first touch, VMAs,
// pin_user_pages, and the per-page pin counts the selftests check (MD_CHECK_REFS).
//
// Page numbers are plain numbers (PFNs < 2^40, user page indices < 2^45): the hot paths (pinning
// 1 GiB, building a map batch) must not allocate a BigInt per page.
import type { PhysicalMemory } from '../hw/memory.js';
import { errno } from '../uapi/errno.js';
import { MAP_FIXED, MAP_FIXED_NOREPLACE, PROT_READ, PROT_WRITE } from '../uapi/mman.js';

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
/** Pages per PMD-sized folio (2 MiB). */
export const HPAGE_PAGES = 512;
const HPAGE_ORDER = 9;

const isNomem = (e: unknown): boolean => (e as { code?: string }).code === 'ERR_PHYSMEM_NOMEM';

/**
 * A growable list of physically contiguous runs (index, pfn, count) in typed arrays: how pages
 * travel on the pin and map paths without an object or closure per run.
 */
export class RunList {
  idx: Float64Array = EMPTY;
  pfn: Float64Array = EMPTY;
  len: Float64Array = EMPTY;
  count = 0;

  /** Appends a run, extending the last one when logically and physically contiguous. */
  push(idx: number, pfn: number, n: number): void {
    const k = this.count;
    if (k > 0 && this.idx[k - 1]! + this.len[k - 1]! === idx && this.pfn[k - 1]! + this.len[k - 1]! === pfn) {
      this.len[k - 1]! += n;
      return;
    }
    if (k === this.idx.length) this.reserve(Math.max(16, k * 2));
    this.idx[k] = idx;
    this.pfn[k] = pfn;
    this.len[k] = n;
    this.count = k + 1;
  }

  /** Appends a run as its own entry (no merging). */
  append(idx: number, pfn: number, n: number): void {
    const k = this.count;
    if (k === this.idx.length) this.reserve(Math.max(16, k * 2));
    this.idx[k] = idx;
    this.pfn[k] = pfn;
    this.len[k] = n;
    this.count = k + 1;
  }

  /** Makes room for `n` runs (one allocation for the three arrays). */
  reserve(n: number): void {
    if (n <= this.idx.length) return;
    const k = this.count;
    const buf = new Float64Array(3 * n);
    buf.set(this.idx.subarray(0, k), 0);
    buf.set(this.pfn.subarray(0, k), n);
    buf.set(this.len.subarray(0, k), 2 * n);
    this.idx = buf.subarray(0, n);
    this.pfn = buf.subarray(n, 2 * n);
    this.len = buf.subarray(2 * n, 3 * n);
  }
}

const EMPTY = new Float64Array(0);

/**
 * `struct page` pin counts, by PFN. A run covering a whole 2 MiB-aligned PFN chunk bumps one
 * counter; partial runs count per page. Frames whose owner went away while pinned are freed by
 * the last unpin ("pinned frames stay put").
 */
export class PageRefs {
  private readonly chunks = new Map<number, { whole: number; pins: Int32Array | null }>();
  /** Released while pinned: first pfn → its order and how to free it when the last pin goes. */
  private readonly orphans = new Map<number, { order: number; free: () => void }>();
  /** Sum of all pin counts (a page pinned twice counts twice). */
  total = 0;

  constructor(private readonly memory: PhysicalMemory) {}

  /** Pins `n` pages from `pfn`. */
  pin(pfn: number, n: number): void {
    this.total += n;
    this.walk(pfn, n, 1);
  }

  /** Unpins `n` pages from `pfn`; frees orphaned blocks that reach zero. */
  unpin(pfn: number, n: number): void {
    this.total -= n;
    this.walk(pfn, n, -1);
    if (this.orphans.size === 0) return;
    for (const [start, o] of [...this.orphans]) {
      const span = 1 << o.order;
      if (start < pfn + n && start + span > pfn && this.countRange(start, span) === 0) {
        this.orphans.delete(start);
        o.free();
      }
    }
  }

  /** Pin count of the page at `pfn`. */
  count(pfn: number): number {
    const c = this.chunks.get(Math.floor(pfn / HPAGE_PAGES));
    if (!c) return 0;
    return c.whole + (c.pins ? c.pins[pfn % HPAGE_PAGES]! : 0);
  }

  /**
   * Frees `[pfn, pfn + 2^order)` now if nothing pins it, else when the last pin goes; `free`
   * (default: back to the page allocator) says how. A pinned 4 KiB page of a 2 MiB block keeps
   * the whole block, as a compound page does.
   */
  release(pfn: number, order: number, free: () => void = () => this.memory.free(BigInt(pfn) << 12n, order)): void {
    if (this.countRange(pfn, 1 << order) === 0) free();
    else this.orphans.set(pfn, { order, free });
  }

  /** Whether any page of `[pfn, pfn + n)` is pinned. */
  pinned(pfn: number, n: number): boolean {
    return this.countRange(pfn, n) !== 0;
  }

  private countRange(pfn: number, n: number): number {
    let sum = 0;
    for (let p = pfn; p < pfn + n; p++) {
      const c = this.chunks.get(Math.floor(p / HPAGE_PAGES));
      if (!c) {
        p += HPAGE_PAGES - 1 - (p % HPAGE_PAGES);
        continue;
      }
      sum += this.count(p);
    }
    return sum;
  }

  private walk(pfn: number, n: number, delta: number): void {
    let p = pfn;
    const end = pfn + n;
    while (p < end) {
      const ci = Math.floor(p / HPAGE_PAGES);
      const off = p - ci * HPAGE_PAGES;
      const len = Math.min(end - p, HPAGE_PAGES - off);
      let c = this.chunks.get(ci);
      if (!c) {
        c = { whole: 0, pins: null };
        this.chunks.set(ci, c);
      }
      // Entries stay once created: pin counts are hot, the map only grows with pinned memory.
      if (len === HPAGE_PAGES) c.whole += delta;
      else {
        c.pins ??= new Int32Array(HPAGE_PAGES);
        for (let i = off; i < off + len; i++) c.pins[i]! += delta;
      }
      p += len;
    }
  }
}

/** One 2 MiB slice of a backing object: a huge folio, or up to 512 small pages. */
interface Chunk {
  /** PFN of the huge folio, or -1. */
  huge: number;
  /** PFNs of small pages (0 = not present; PFN 0 is never allocated). */
  pfns: Float64Array | null;
}

/** What a VMA or an iopt_pages maps: the pages of a shmem object or a guestmemfs file. */
export interface Backing {
  /** Size in pages; pages at or past it are beyond EOF (SIGBUS: EFAULT). */
  readonly npages: number;
  get(): Backing;
  put(): void;
  /** PFN of page `page`, allocating it when `alloc` (0 if absent and not allocated). */
  pfn(page: number, alloc: boolean): number;
  /** Appends the physically contiguous runs of pages `[page, page + n)` to `out` from index `base`. */
  runs(page: number, n: number, out: RunList, base: number): void;
  /** The guestmemfs inode behind it, if any. */
  readonly guestmemfs?: object;
  /** A memfd's i_size in bytes (`npages` is it rounded up); absent for other objects. */
  readonly isize?: bigint;
  /** `mapping_map_writable` / `mapping_unmap_writable`: a shared mapping that may write came or went. */
  mapWritable?(delta: number): void;
}

/**
 * The pages behind a shared mapping (shmem / memfd inode): allocated on first touch, zeroed,
 * as 2 MiB folios where a whole aligned 2 MiB of the object exists (shmem `huge=within_size`),
 * else 4 KiB pages. Freed when the last user (VMA, fd) lets go.
 */
export class MemObject implements Backing {
  private readonly chunks: (Chunk | undefined)[] = [];
  private users = 1;
  /** Pages currently allocated. */
  resident = 0;
  /** i_size in bytes when it backs a memfd (ftruncate and write set it). */
  isize?: bigint;
  /** `shmem_inode_info.seals` (F_SEAL_*) when it backs a memfd. */
  seals = 0;
  /** `SHMEM_F_MAPPING_FROZEN`: LUO preserved it, its size cannot change. */
  frozen = false;
  /** `i_mmap_writable`: shared mappings that may write (F_SEAL_WRITE is EBUSY while any exist). */
  writableMaps = 0;

  constructor(
    private readonly memory: PhysicalMemory,
    private readonly refs: PageRefs,
    /** Size in pages. */
    public npages: number,
    readonly huge = true,
  ) {}

  get(): this {
    this.users++;
    return this;
  }

  put(): void {
    if (--this.users > 0) return;
    for (let ci = 0; ci < this.chunks.length; ci++) this.freeChunk(ci);
    this.chunks.length = 0;
  }

  /** PFN of object page `page`, allocating it (zeroed) when `alloc`; 0 if absent. */
  pfn(page: number, alloc: boolean): number {
    if (page >= this.npages) errno('EFAULT', 'beyond the end of the object (SIGBUS)');
    const ci = Math.floor(page / HPAGE_PAGES);
    let c = this.chunks[ci];
    if (!c) {
      if (!alloc) return 0;
      c = this.populate(ci);
    }
    if (c.huge >= 0) return c.huge + (page % HPAGE_PAGES);
    const i = page % HPAGE_PAGES;
    let pfn = c.pfns![i]!;
    if (pfn === 0 && alloc) {
      pfn = this.allocPage(0);
      c.pfns![i] = pfn;
      this.resident++;
    }
    return pfn;
  }

  /**
   * Appends the physically contiguous runs behind object pages `[page, page + n)` to `out`,
   * allocating what is absent; run indices are `base` + the offset in the range.
   */
  runs(page: number, n: number, out: RunList, base: number): void {
    if (page + n > this.npages) errno('EFAULT', 'beyond the end of the object (SIGBUS)');
    let off = 0;
    while (off < n) {
      const p = page + off;
      const ci = Math.floor(p / HPAGE_PAGES);
      const c = this.chunks[ci] ?? this.populate(ci);
      const inChunk = p - ci * HPAGE_PAGES;
      const len = Math.min(n - off, HPAGE_PAGES - inChunk);
      if (c.huge >= 0) out.push(base + off, c.huge + inChunk, len);
      else for (let k = 0; k < len; k++) out.push(base + off + k, this.pfn(p + k, true), 1);
      off += len;
    }
  }

  mapWritable(delta: number): void {
    this.writableMaps += delta;
  }

  /** Whether any resident page is pinned (`memfd_wait_for_pins` finds extra references). */
  anyPinned(): boolean {
    for (const f of this.folios(false)) if (this.refs.pinned(f.pfn, 1 << f.order)) return true;
    return false;
  }

  /**
   * The folios behind pages `[0, npages)` in index order: a 2 MiB folio is one entry of order 9.
   * With `alloc` every page is allocated first (`memfd_pin_folios` fills the holes).
   */
  folios(alloc: boolean): { index: number; pfn: number; order: number }[] {
    const out: { index: number; pfn: number; order: number }[] = [];
    for (let ci = 0; ci * HPAGE_PAGES < this.npages; ci++) {
      let c = this.chunks[ci];
      if (!c) {
        if (!alloc) continue;
        c = this.populate(ci);
      }
      if (c.huge >= 0) {
        out.push({ index: ci * HPAGE_PAGES, pfn: c.huge, order: HPAGE_ORDER });
        continue;
      }
      const end = Math.min(HPAGE_PAGES, this.npages - ci * HPAGE_PAGES);
      for (let i = 0; i < end; i++) {
        let pfn = c.pfns![i]!;
        if (pfn === 0 && alloc) {
          pfn = this.allocPage(0);
          c.pfns![i] = pfn;
          this.resident++;
        }
        if (pfn !== 0) out.push({ index: ci * HPAGE_PAGES + i, pfn, order: 0 });
      }
    }
    return out;
  }

  /**
   * Puts a folio the previous kernel preserved (allocated, owned by no one) at page `index`
   * (`shmem_add_to_page_cache` of a restored folio): order 9 only at a 2 MiB-aligned index.
   */
  adopt(index: number, pfn: number, order: 0 | 9): void {
    if (index + (1 << order) > this.npages) errno('EINVAL', 'folio beyond the end of the object');
    const ci = Math.floor(index / HPAGE_PAGES);
    if (order === HPAGE_ORDER) {
      if (index % HPAGE_PAGES !== 0 || this.chunks[ci]) errno('EINVAL', 'misplaced huge folio');
      this.chunks[ci] = { huge: pfn, pfns: null };
      this.resident += HPAGE_PAGES;
      return;
    }
    let c = this.chunks[ci];
    if (!c) this.chunks[ci] = c = { huge: -1, pfns: new Float64Array(HPAGE_PAGES) };
    if (c.huge >= 0 || c.pfns![index % HPAGE_PAGES] !== 0) errno('EINVAL', 'two folios at one index');
    c.pfns![index % HPAGE_PAGES] = pfn;
    this.resident++;
  }

  /** Drops pages at and beyond `npages` (ftruncate down). */
  truncate(npages: number): void {
    const keep = Math.ceil(npages / HPAGE_PAGES);
    for (let ci = keep; ci < this.chunks.length; ci++) this.freeChunk(ci);
    this.chunks.length = Math.min(this.chunks.length, keep);
    // shmem_undo_range: the pages past the new end in the last chunk go too, a huge folio split
    // first (truncate_inode_partial_folio; a pinned one cannot split and keeps its pages, zeroed).
    // Otherwise growing the file again would show the old bytes.
    const tail = npages % HPAGE_PAGES;
    const c = tail ? this.chunks[keep - 1] : undefined;
    if (c && c.huge >= 0) {
      if (this.refs.pinned(c.huge, HPAGE_PAGES)) {
        this.memory.write(BigInt(c.huge + tail) << 12n, new Uint8Array((HPAGE_PAGES - tail) * PAGE_SIZE));
      } else {
        const pfns = new Float64Array(HPAGE_PAGES);
        for (let i = 0; i < tail; i++) pfns[i] = c.huge + i;
        this.memory.freeRange(BigInt(c.huge + tail) << 12n, BigInt(HPAGE_PAGES - tail) << 12n);
        this.resident -= HPAGE_PAGES - tail;
        this.chunks[keep - 1] = { huge: -1, pfns };
      }
    } else if (c) {
      for (let i = tail; i < HPAGE_PAGES; i++) {
        const pfn = c.pfns![i]!;
        if (pfn === 0) continue;
        this.refs.release(pfn, 0);
        c.pfns![i] = 0;
        this.resident--;
      }
    }
    this.npages = npages;
  }

  private populate(ci: number): Chunk {
    let c: Chunk;
    if (this.huge && (ci + 1) * HPAGE_PAGES <= this.npages) {
      try {
        c = { huge: this.allocPage(HPAGE_ORDER), pfns: null };
        this.resident += HPAGE_PAGES;
      } catch (e) {
        if (!isNomem(e)) throw e;
        c = { huge: -1, pfns: new Float64Array(HPAGE_PAGES) };
      }
    } else {
      c = { huge: -1, pfns: new Float64Array(HPAGE_PAGES) };
    }
    this.chunks[ci] = c;
    return c;
  }

  private allocPage(order: number): number {
    try {
      return Number(this.memory.alloc(order, { zero: true }) >> 12n);
    } catch (e) {
      if (isNomem(e)) errno('ENOMEM', 'out of host memory');
      throw e;
    }
  }

  private freeChunk(ci: number): void {
    const c = this.chunks[ci];
    if (!c) return;
    this.chunks[ci] = undefined;
    if (c.huge >= 0) {
      this.resident -= HPAGE_PAGES;
      this.refs.release(c.huge, HPAGE_ORDER);
      return;
    }
    for (const pfn of c.pfns!) {
      if (pfn === 0) continue;
      this.resident--;
      this.refs.release(pfn, 0);
    }
  }
}

/** A mapping of a process address space (`struct vm_area_struct`), in pages. */
export interface Vma {
  start: number;
  end: number;
  prot: number;
  flags: number;
  obj: Backing;
  /** Object page mapped at `start`. */
  pgoff: number;
  /** What backs it, for /proc-style listings: 'anon', 'memfd:name', a path. */
  name: string;
  /** Shared and may write (VM_SHARED | VM_MAYWRITE): counted in its object's `i_mmap_writable`. */
  sharedWrite?: boolean;
}

/** `vma_link` / `remove_vma` of a shared writable mapping: its object counts it. */
function accountWritable(v: Vma, delta: number): void {
  if (v.sharedWrite) v.obj.mapWritable?.(delta);
}

/** `TASK_SIZE` of x86-64 with 4-level paging, in pages, and where top-down mmap starts. */
const TASK_PAGES = 2 ** 47 / PAGE_SIZE - 1;
const MMAP_BASE = 0x7f00_0000_0000 / PAGE_SIZE;

/** A process address space (`struct mm_struct`). */
export class Mm {
  /** Sorted, disjoint. */
  readonly vmas: Vma[] = [];
  /** Pages pinned through this mm (`mm->pinned_vm`). */
  pinnedVm = 0;
  /** Pages charged to this mm's `locked_vm` (iommufd RLIMIT_MODE 1). */
  lockedVm = 0;
  /** False once the process exited: GUP on it fails with EFAULT. */
  alive = true;

  /** The VMA containing page `page`, or undefined. */
  find(page: number): Vma | undefined {
    const v = this.vmas;
    let lo = 0;
    let hi = v.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (v[mid]!.end <= page) lo = mid + 1;
      else hi = mid;
    }
    const vma = v[lo];
    return vma && vma.start <= page ? vma : undefined;
  }

  /** Chooses where an `npages` mapping goes (top-down; 2 MiB aligned when at least 2 MiB). */
  unmappedArea(npages: number): number {
    const align = npages >= HPAGE_PAGES ? HPAGE_PAGES : 1;
    let top = MMAP_BASE;
    for (let i = this.vmas.length - 1; i >= -1; i--) {
      const vma = this.vmas[i];
      const floor = vma ? vma.end : 16; // keep the low 64 KiB unmapped (mmap_min_addr)
      if (vma && vma.start >= top) continue;
      const start = Math.floor((top - npages) / align) * align;
      if (start >= floor) return start;
      if (!vma) break;
      top = vma.start;
    }
    return errno('ENOMEM', 'no room in the address space');
  }

  /** Inserts a mapping, replacing what it covers (MAP_FIXED semantics). */
  insert(vma: Vma): void {
    this.remove(vma.start, vma.end);
    accountWritable(vma, 1);
    let i = 0;
    while (i < this.vmas.length && this.vmas[i]!.start < vma.start) i++;
    this.vmas.splice(i, 0, vma);
  }

  /** Unmaps `[start, end)`: splits VMAs at the edges and drops object references. */
  remove(start: number, end: number): void {
    const out: Vma[] = [];
    for (const v of this.vmas) {
      if (v.end <= start || v.start >= end) {
        out.push(v);
        continue;
      }
      if (v.start < start) out.push({ ...v, end: start, obj: v.obj.get() });
      if (v.end > end) out.push({ ...v, start: end, pgoff: v.pgoff + (end - v.start), obj: v.obj.get() });
      // Each piece left is a mapping of its own; the one removed is gone.
      accountWritable(v, (v.start < start ? 1 : 0) + (v.end > end ? 1 : 0) - 1);
      v.obj.put();
    }
    this.vmas.length = 0;
    this.vmas.push(...out);
  }

  /** Tears the address space down (exit_mmap). */
  exit(): void {
    for (const v of this.vmas) {
      accountWritable(v, -1);
      v.obj.put();
    }
    this.vmas.length = 0;
    this.alive = false;
  }

  /** Whether every page of `[page, page + n)` is mapped. */
  covered(page: number, n: number): boolean {
    let p = page;
    while (p < page + n) {
      const v = this.find(p);
      if (!v) return false;
      p = v.end;
    }
    return true;
  }

  /**
   * `pin_user_pages`: faults in and resolves `[page, page + n)`, appending its physically
   * contiguous runs to `out` (indices `base` + offset). EFAULT if a page is unmapped, or not
   * writable when `write` (FOLL_WRITE), or not readable.
   */
  gup(page: number, n: number, write: boolean, out: RunList, base: number): void {
    if (!this.alive) errno('EFAULT', 'the mm is gone');
    // Check the whole range first so that a failure pins nothing.
    for (let p = page; p < page + n; ) {
      const v = this.find(p);
      if (!v) errno('EFAULT', `no mapping at 0x${(p * PAGE_SIZE).toString(16)}`);
      if (write ? !(v.prot & PROT_WRITE) : !(v.prot & PROT_READ)) errno('EFAULT', 'mapping lacks the access');
      p = v.end;
    }
    let p = page;
    while (p < page + n) {
      const v = this.find(p)!;
      const len = Math.min(v.end, page + n) - p;
      v.obj.runs(v.pgoff + (p - v.start), len, out, base + (p - page));
      p += len;
    }
  }

  /**
   * Copies between the address space and `buf` (memRead/memWrite, copy_{from,to}_user).
   * Reading never allocates: untouched pages read as zeros.
   */
  access(memory: PhysicalMemory, va: bigint, buf: Uint8Array, write: boolean, checkProt: boolean): void {
    if (buf.length === 0) return;
    if (va < 0n || va + BigInt(buf.length) > BigInt(TASK_PAGES) * BigInt(PAGE_SIZE)) errno('EFAULT', 'address out of range');
    const firstPage = Number(va >> 12n);
    const lastPage = Number((va + BigInt(buf.length) - 1n) >> 12n);
    for (let p = firstPage; p <= lastPage; ) {
      const v = this.find(p);
      if (!v) errno('EFAULT', `no mapping at 0x${(p * PAGE_SIZE).toString(16)}`);
      if (checkProt && (write ? !(v.prot & PROT_WRITE) : !(v.prot & PROT_READ))) errno('EFAULT', 'mapping lacks the access');
      p = v.end;
    }
    let done = 0;
    let addr = va;
    while (done < buf.length) {
      const page = Number(addr >> 12n);
      const inPage = Number(addr & 0xfffn);
      const len = Math.min(buf.length - done, PAGE_SIZE - inPage);
      const v = this.find(page)!;
      const pfn = v.obj.pfn(v.pgoff + (page - v.start), write);
      if (write) memory.write((BigInt(pfn) << 12n) + BigInt(inPage), buf.subarray(done, done + len));
      else if (pfn === 0) buf.fill(0, done, done + len);
      else buf.set(memory.read((BigInt(pfn) << 12n) + BigInt(inPage), len), done);
      done += len;
      addr += BigInt(len);
    }
  }
}

/** Validates `mmap` placement flags and picks the address (in pages). */
export function mmapPlace(mm: Mm, addr: bigint | null, npages: number, flags: number): number {
  if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
    if (addr === null || addr % BigInt(PAGE_SIZE) !== 0n) errno('EINVAL', 'MAP_FIXED address not page aligned');
    const start = Number(addr / BigInt(PAGE_SIZE));
    if (start + npages > TASK_PAGES) errno('ENOMEM', 'beyond TASK_SIZE');
    if (flags & MAP_FIXED_NOREPLACE && !(flags & MAP_FIXED)) {
      if (mm.vmas.some((v) => v.start < start + npages && v.end > start)) errno('EEXIST', 'MAP_FIXED_NOREPLACE over a mapping');
    }
    return start;
  }
  return mm.unmappedArea(npages);
}
