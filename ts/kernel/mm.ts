// Process memory: shmem-like backing objects filled from the page allocator on first touch, VMAs,
// pin_user_pages; the per-page pin counts the selftests check (MD_CHECK_REFS) are in pins.ts.
// Folio tables live in the native core (pins.ts): faulting in and pinning a range is one call.
//
// Page numbers are plain numbers (PFNs < 2^40, user page indices < 2^45): the hot paths (pinning
// 1 GiB, building a map batch) must not allocate a BigInt per page.
import type { PhysicalMemory } from '../hw/memory.js';
import { errno } from '../uapi/errno.js';
import { MAP_FIXED, MAP_FIXED_NOREPLACE, PROT_READ, PROT_WRITE } from '../uapi/mman.js';
import { checkStatus, type PageRefs, type Segments } from './pins.js';

export { PageRefs, Segments } from './pins.js';

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
/** Pages per PMD-sized folio (2 MiB). */
export const HPAGE_PAGES = 512;

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
 * else 4 KiB pages. Freed when the last user (VMA, fd) lets go. The folio table is native
 * (`shmem`, a handle in the kernel's pin bookkeeping).
 */
export class MemObject implements Backing {
  /** Its folio table in `refs.native`. */
  readonly shmem: number;
  private users = 1;
  private size: number;
  /** i_size in bytes when it backs a memfd (ftruncate and write set it). */
  isize?: bigint;
  /** `shmem_inode_info.seals` (F_SEAL_*) when it backs a memfd. */
  seals = 0;
  /** `SHMEM_F_MAPPING_FROZEN`: LUO preserved it, its size cannot change. */
  frozen = false;
  /** `i_mmap_writable`: shared mappings that may write (F_SEAL_WRITE is EBUSY while any exist). */
  writableMaps = 0;

  constructor(
    _memory: PhysicalMemory,
    private readonly refs: PageRefs,
    /** Size in pages. */
    npages: number,
    readonly huge = true,
  ) {
    this.size = npages;
    this.shmem = refs.native.shmemCreate(npages, huge);
  }

  /** Size in pages; growing keeps every page ({@link MemObject.truncate} shrinks). */
  get npages(): number {
    return this.size;
  }

  set npages(n: number) {
    this.refs.native.shmemSetSize(this.shmem, n);
    this.size = n;
  }

  /** Pages currently allocated. */
  get resident(): number {
    return this.refs.native.shmemResident(this.shmem);
  }

  get(): this {
    this.users++;
    return this;
  }

  put(): void {
    if (--this.users > 0) return;
    this.refs.orphan(this.refs.native.shmemRelease(this.shmem));
  }

  /** PFN of object page `page`, allocating it (zeroed) when `alloc`; 0 if absent. */
  pfn(page: number, alloc: boolean): number {
    const r = this.refs.native.shmemPfn(this.shmem, page, alloc);
    if (r < 0) checkStatus(-r);
    return r;
  }

  /**
   * Appends the physically contiguous runs behind object pages `[page, page + n)` to `out`,
   * allocating what is absent; run indices are `base` + the offset in the range.
   */
  runs(page: number, n: number, out: RunList, base: number): void {
    const r = this.refs.native.shmemRuns(this.shmem, page, n, base);
    if (typeof r === 'number') return checkStatus(r);
    for (let i = 0; i < r.length; i += 3) out.push(r[i]!, r[i + 1]!, r[i + 2]!);
  }

  mapWritable(delta: number): void {
    this.writableMaps += delta;
  }

  /** Whether any resident page is pinned (`memfd_wait_for_pins` finds extra references). */
  anyPinned(): boolean {
    return this.refs.native.shmemAnyPinned(this.shmem);
  }

  /**
   * The folios behind pages `[0, npages)` in index order: a 2 MiB folio is one entry of order 9.
   * With `alloc` every page is allocated first (`memfd_pin_folios` fills the holes).
   */
  folios(alloc: boolean): { index: number; pfn: number; order: number }[] {
    const r = this.refs.native.shmemFolios(this.shmem, alloc);
    if (typeof r === 'number') {
      checkStatus(r);
      return [];
    }
    const out: { index: number; pfn: number; order: number }[] = [];
    for (let i = 0; i < r.length; i += 3) out.push({ index: r[i]!, pfn: r[i + 1]!, order: r[i + 2]! });
    return out;
  }

  /**
   * Puts folios the previous kernel preserved (allocated, owned by no one) at pages `index[i]`
   * (`shmem_add_to_page_cache` of each restored folio): 2^`order[i]` pages at `pfn[i]`, order 9
   * only at a 2 MiB-aligned index. One native call for them all; the first that cannot be
   * adopted throws (those before it stay).
   */
  adopt(index: Float64Array, pfn: Float64Array, order: Uint8Array): void {
    checkStatus(this.refs.native.shmemAdopt(this.shmem, index, pfn, order));
  }

  /**
   * Drops pages at and beyond `npages` (ftruncate down): shmem_undo_range, a huge folio split
   * first (a pinned one cannot split and keeps its pages, zeroed past the end), so growing the
   * file again does not show the old bytes.
   */
  truncate(npages: number): void {
    this.refs.orphan(this.refs.native.shmemTruncate(this.shmem, npages));
    this.size = npages;
  }
}

/**
 * Appends what pins object pages `[page, page + n)` of `obj` to `out` from index `base`: a
 * shmem range faults in natively; another object (a guestmemfs file) gives its PFN runs here.
 */
export function backingSegments(obj: Backing, page: number, n: number, out: Segments, base: number): void {
  if (obj instanceof MemObject) return out.push(base, obj.shmem, page, n);
  const runs = fileRuns;
  runs.count = 0;
  obj.runs(page, n, runs, base);
  for (let i = 0; i < runs.count; i++) out.push(runs.idx[i]!, -1, runs.pfn[i]!, runs.len[i]!);
}

/** Scratch for the runs of a non-shmem object. */
const fileRuns = new RunList();

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
   * `pin_user_pages`: what faults in and resolves `[page, page + n)`, appended to `out` (indices
   * `base` + offset) for the native pin. EFAULT if a page is unmapped, or not writable when
   * `write` (FOLL_WRITE), or not readable.
   */
  gup(page: number, n: number, write: boolean, out: Segments, base: number): void {
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
      backingSegments(v.obj, v.pgoff + (p - v.start), len, out, base + (p - page));
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
