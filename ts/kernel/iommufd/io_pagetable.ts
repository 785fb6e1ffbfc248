// struct io_pagetable (io_pagetable.c): areas, reserved and allowed IOVA ranges, the domains
// every area is mirrored into, and the automatic IOVA allocator — with the kernel's check order.
import { errno, KernelError } from '../../uapi/errno.js';
import type { PinRecord } from '../guestmemfs/pins.js';
import type { IommuDomain } from '../iommu.js';
import { PAGE_SIZE, RunList } from '../mm.js';
import type { IoptPages, PinnableFile } from './pages.js';

export const ULONG_MAX = 0xffff_ffff_ffff_ffffn;
const PAGE = BigInt(PAGE_SIZE);
/** HPAGE_SIZE: the cap of the automatic IOVA alignment (THP enabled). */
const HPAGE_SIZE = 2n << 20n;

/** Inclusive IOVA interval. */
export interface IovaRange {
  start: bigint;
  last: bigint;
}

/** A long-term pin an area holds on the guestmemfs file behind one piece of it. */
export interface AreaPin {
  file: PinnableFile;
  handle: number;
  /** What the pin records (the piece as KHO serialises it). */
  rec: Omit<PinRecord, 'ino'> & { ino: number };
}

/** `struct iopt_area`. */
export class IoptArea {
  /** Whether its pages are pinned and mapped into every domain. */
  filled = false;
  /** Persistent contexts: one long-term pin per guestmemfs piece, lowest IOVA first. */
  pins: AreaPin[] = [];
  constructor(
    readonly start: bigint,
    readonly last: bigint,
    public pages: IoptPages | null,
    /** `area->page_offset`: the byte offset of `start` inside the first page. */
    readonly pageOffset: number,
    /** `pages_node`: the page indices of `pages` it covers. */
    readonly pagesFirst: number,
    readonly pagesLast: number,
    readonly prot: { read: boolean; write: boolean },
  ) {}

  get length(): bigint {
    return this.last - this.start + 1n;
  }

  /** `iopt_area_start_byte`: the byte of `pages` that `iova` maps. */
  startByte(iova: bigint): bigint {
    return iova - this.start + BigInt(this.pageOffset) + BigInt(this.pagesFirst) * PAGE;
  }
}

interface Reserved extends IovaRange {
  owner: object;
}

/** One piece of a map request (`struct iopt_pages_list`). */
export interface PagesListElm {
  pages: IoptPages;
  startByte: bigint;
  length: bigint;
}

const ffs64 = (x: bigint): bigint => {
  let b = 0n;
  while (((x >> b) & 1n) === 0n) b++;
  return b;
};
const roundupPow2 = (x: bigint): bigint => {
  let p = 1n;
  while (p < x) p <<= 1n;
  return p;
};
const overlaps = (r: IovaRange, start: bigint, last: bigint): boolean => r.start <= last && r.last >= start;

/** Scratch for building map batches without allocating per call. */
const scratch = new RunList();

/** `struct io_pagetable`. */
export class IoPagetable {
  constructor(
    /** The owner tag of the long-term file pins its areas take (a persistent IOAS's `pinOwner`). */
    private readonly pinOwner: () => bigint = () => 0n,
  ) {}

  /** Sorted by start, disjoint. */
  readonly areas: IoptArea[] = [];
  readonly reserved: Reserved[] = [];
  allowed: IovaRange[] = [];
  readonly domains: IommuDomain[] = [];
  iovaAlignment = 1n;
  disableLargePages = false;
  /**
   * `iopt->lu_map_immutable` (iommu live-update series, patch 11): set while a preserved HWPT of
   * a preserved iommufd holds this table; MAP, COPY into it and UNMAP are EBUSY meanwhile.
   */
  luMapImmutable = false;

  areaIterFirst(start: bigint, last: bigint): IoptArea | undefined {
    const i = this.firstAreaIndex(start);
    const a = this.areas[i];
    return a && a.start <= last ? a : undefined;
  }

  /** Every area intersecting `[start, last]`, lowest first. */
  areasIn(start: bigint, last: bigint): IoptArea[] {
    const out: IoptArea[] = [];
    for (let i = this.firstAreaIndex(start); i < this.areas.length && this.areas[i]!.start <= last; i++) out.push(this.areas[i]!);
    return out;
  }

  reservedIterFirst(start: bigint, last: bigint): Reserved | undefined {
    return this.reserved.find((r) => overlaps(r, start, last));
  }

  private firstAreaIndex(start: bigint): number {
    const a = this.areas;
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (a[mid]!.last < start) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** `iopt_check_iova` (FIXED_IOVA): its error returned. */
  checkIova(iova: bigint, length: bigint): KernelError | null {
    if (iova & (this.iovaAlignment - 1n)) return new KernelError('EINVAL', 'iova not aligned to iova_alignment');
    const last = iova + length - 1n;
    if (last > ULONG_MAX) return new KernelError('EOVERFLOW', 'iova + length overflows');
    if (this.reservedIterFirst(iova, last)) return new KernelError('EINVAL', 'range intersects a reserved IOVA range');
    if (this.areaIterFirst(iova, last)) return new KernelError('EEXIST', 'range is already mapped');
    return null;
  }

  /** `iopt_alloc_iova`: first fit, lowest address, keeping `addr`'s alignment. */
  allocIova(addr: bigint, length: bigint): bigint {
    const pageOffset = addr % PAGE;
    if (length === 0n || length >= ULONG_MAX / 2n) errno('EOVERFLOW', 'length too large for automatic IOVA');
    let align = addr === 0n ? roundupPow2(length) : [roundupPow2(length), 1n << ffs64(addr)].reduce((x, y) => (x < y ? x : y));
    if (align >= HPAGE_SIZE) align = HPAGE_SIZE;
    if (align < this.iovaAlignment) errno('EINVAL', 'computed IOVA alignment below iova_alignment');

    const lo = PAGE;
    const hi = ULONG_MAX - PAGE;
    const windows = this.allowed.length === 0 ? [{ start: lo, last: hi }] : this.unionSpans(this.allowed, lo, hi);
    const used = this.unionSpans([...this.reserved, ...this.areas], 0n, ULONG_MAX);
    for (const w of windows) {
      // __alloc_iova_check_used stores the aligned start back: the hole search begins there.
      const from = checkRange(w.start, w.last, length, align, pageOffset);
      if (from === null) continue;
      let cur = from;
      for (const u of [...used.filter((u) => overlaps(u, from, w.last)), null]) {
        const holeLast = u === null ? w.last : u.start - 1n;
        if (u === null || u.start > cur) {
          const got = checkRange(cur, holeLast, length, align, pageOffset);
          if (got !== null) return got;
        }
        if (u === null) break;
        cur = u.last + 1n;
        if (cur > w.last) break;
      }
    }
    return errno('ENOSPC', 'no IOVA hole fits');
  }

  /** Merged intervals of `ranges` clipped to `[lo, hi]`, ascending. */
  private unionSpans(ranges: IovaRange[], lo: bigint, hi: bigint): IovaRange[] {
    const sorted = ranges
      .filter((r) => r.last >= lo && r.start <= hi)
      .map((r) => ({ start: r.start < lo ? lo : r.start, last: r.last > hi ? hi : r.last }))
      .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    const out: IovaRange[] = [];
    for (const r of sorted) {
      const prev = out[out.length - 1];
      if (prev && r.start <= prev.last + 1n) {
        if (r.last > prev.last) prev.last = r.last;
      } else out.push({ ...r });
    }
    return out;
  }

  /**
   * `iopt_alloc_area_pages` + `iopt_fill_domains_pages`: reserves the IOVA (automatic when
   * `iova` is null), inserts one area per element, then pins and maps them into every domain.
   * Returns the IOVA.
   */
  mapPages(list: PagesListElm[], length: bigint, iova: bigint | null, prot: { read: boolean; write: boolean }): bigint {
    const first = list[0]!;
    const dst = this.mapIova(length, iova, first.startByte + first.pages.base);
    if (dst instanceof KernelError) throw dst;
    return this.mapPagesAt(list, dst, prot);
  }

  /**
   * The checks of `iopt_alloc_area_pages` that come before any area exists: the IOVA a map of
   * `length` bytes gets (automatic when `iova` is null, aligned like the user address `addr`).
   * Nothing changes, so a caller may run them before it builds the pages (a failing MAP then
   * unwinds nothing). Their error is returned.
   */
  mapIova(length: bigint, iova: bigint | null, addr: bigint): bigint | KernelError {
    if (this.luMapImmutable) return new KernelError('EBUSY', 'the IOAS of a preserved HWPT is immutable');
    if (length & (this.iovaAlignment - 1n) || length === 0n) return new KernelError('EINVAL', 'length not aligned to iova_alignment');
    if (iova === null) return this.allocIova(addr, length);
    return this.checkIova(iova, length) ?? iova;
  }

  /** {@link mapPages} at `dst`, which {@link mapIova} gave with nothing changed since. */
  mapPagesAt(list: PagesListElm[], dst: bigint, prot: { read: boolean; write: boolean }): bigint {
    const created: IoptArea[] = [];
    try {
      let at = dst;
      for (const elm of list) {
        if (prot.write && !elm.pages.writable) errno('EPERM', 'pages are not writable');
        const pageOffset = Number(elm.startByte % PAGE);
        if (BigInt(pageOffset) & (this.iovaAlignment - 1n)) errno('EINVAL', 'user address offset not aligned to iova_alignment');
        const last = at + elm.length - 1n;
        if (last > ULONG_MAX) errno('EOVERFLOW', 'iova + length overflows');
        // A piece after an unaligned one starts unaligned: iommu_map() refuses it (EINVAL).
        if (this.domains.length && at & (this.iovaAlignment - 1n)) errno('EINVAL', 'a piece starts at an IOVA the domains cannot map');
        const pagesFirst = Number(elm.startByte / PAGE);
        const pagesLast = Number((elm.startByte + elm.length - 1n) / PAGE);
        const area = new IoptArea(at, last, null, pageOffset, pagesFirst, pagesLast, prot);
        this.insertArea(area);
        created.push(area);
        at = last + 1n;
      }
      // The IOVA is reserved; now give the areas their pages and fill the domains.
      for (let i = 0; i < list.length; i++) {
        this.areaTake(created[i]!, list[i]!.pages);
        this.fillArea(created[i]!);
      }
    } catch (e) {
      for (const a of created) {
        if (a.filled) this.unfillArea(a);
        this.areaRelease(a);
        this.removeArea(a);
      }
      throw e;
    }
    return dst;
  }

  /**
   * An area takes its pages: a reference, and one long-term pin (with its record) on the
   * guestmemfs file behind each piece of it, so COPY and several files per IOAS count exactly.
   * All or nothing (ENOMEM when guestmemfs's pin table is full).
   */
  private areaTake(area: IoptArea, pages: IoptPages): void {
    const pins: AreaPin[] = [];
    try {
      for (const seg of fileSegments(area, pages)) {
        const rec = { owner: this.pinOwner(), iova: seg.iova, offset: seg.offset, len: seg.len, access: (area.prot.read ? 1 : 0) | (area.prot.write ? 2 : 0) };
        pins.push({ file: seg.file, handle: seg.file.pin(rec), rec: { ...rec, ino: seg.file.ino } });
      }
    } catch (e) {
      for (const p of pins) p.file.unpin(p.handle);
      throw e;
    }
    area.pins = pins;
    area.pages = pages.get();
  }

  /** The area gives its pages and file pins back. */
  private areaRelease(area: IoptArea): void {
    for (const p of area.pins) p.file.unpin(p.handle);
    area.pins = [];
    area.pages?.put();
    area.pages = null;
  }

  private insertArea(area: IoptArea): void {
    this.areas.splice(this.firstAreaIndex(area.start), 0, area);
  }

  private removeArea(area: IoptArea): void {
    const i = this.areas.indexOf(area);
    if (i >= 0) this.areas.splice(i, 1);
  }

  /** Pins the area's pages and maps them into every domain; nothing changes on failure. */
  fillArea(area: IoptArea, only?: IommuDomain): void {
    const domains = only ? [only] : this.domains;
    if (domains.length === 0) return;
    const pinHere = !area.filled;
    if (pinHere) area.pages!.pin(area.pagesFirst, area.pagesLast);
    const done: IommuDomain[] = [];
    try {
      for (const d of domains) {
        this.mapArea(area, d);
        done.push(d);
      }
    } catch (e) {
      for (const d of done) d.unmap(area.start, area.length);
      if (pinHere) area.pages!.unpin(area.pagesFirst, area.pagesLast);
      throw e;
    }
    area.filled = true;
  }

  /** Unmaps the area from every domain (or one) and unpins when no domain is left. */
  unfillArea(area: IoptArea, only?: IommuDomain): void {
    if (!area.filled) return;
    for (const d of only ? [only] : this.domains) d.unmap(area.start, area.length);
    if (!only || this.domains.length === 1) {
      area.pages!.unpin(area.pagesFirst, area.pagesLast);
      area.filled = false;
    }
  }

  private mapArea(area: IoptArea, domain: IommuDomain): void {
    const batch = scratch;
    batch.count = 0;
    area.pages!.batch(area.pagesFirst, area.pagesLast, Number(area.start / PAGE), this.disableLargePages, batch);
    domain.mapRuns(batch.idx, batch.pfn, batch.len, batch.count, area.prot);
  }

  /**
   * `iopt_unmap_iova_range`: removes whole areas inside `[start, last]`, lowest first. A
   * partially covered area stops it with ENOENT; what was removed before stays removed.
   */
  unmapRange(start: bigint, last: bigint): { unmapped: bigint; error?: 'ENOENT' | 'EBUSY' } {
    let unmapped = 0n;
    let error: 'ENOENT' | 'EBUSY' | undefined;
    const first = this.firstAreaIndex(start);
    let i = first;
    for (; i < this.areas.length; i++) {
      const area = this.areas[i]!;
      if (area.start > last) break;
      if (!area.pages) {
        error = 'EBUSY';
        break;
      }
      if (area.start < start || area.last > last) {
        error = 'ENOENT';
        break;
      }
      unmapped += area.length;
      this.unfillArea(area);
      this.areaRelease(area);
    }
    // One splice for the whole run of removed areas: unmap-all of many areas stays linear.
    this.areas.splice(first, i - first);
    return error ? { unmapped, error } : { unmapped };
  }

  /** `iopt_get_pages`: the pages behind a contiguous covered `[iova, iova + length)`. */
  getPages(iova: bigint, length: bigint): PagesListElm[] {
    if (length === 0n) errno('EINVAL', 'zero length');
    const lastIova = iova + length - 1n;
    if (lastIova > ULONG_MAX) errno('EOVERFLOW', 'iova + length overflows');
    const list: PagesListElm[] = [];
    let cur = iova;
    for (const area of this.areasIn(iova, lastIova)) {
      if (area.start > cur || !area.pages) break;
      const last = lastIova < area.last ? lastIova : area.last;
      list.push({ pages: area.pages, startByte: area.startByte(cur), length: last - cur + 1n });
      cur = last + 1n;
      if (last === lastIova) break;
    }
    if (cur <= lastIova) errno('ENOENT', 'source range is not fully mapped');
    return list;
  }

  /** `iopt_set_allow_iova`: swaps in the new list unless it intersects a reserved range. */
  setAllowIova(ranges: IovaRange[]): void {
    for (const r of ranges) if (this.reservedIterFirst(r.start, r.last)) errno('EADDRINUSE', 'allowed range intersects a reserved range');
    this.allowed = [...ranges].sort((a, b) => (a.start < b.start ? -1 : 1));
  }

  /** `iopt_reserve_iova`. */
  reserveIova(start: bigint, last: bigint, owner: object): void {
    if (this.areaIterFirst(start, last)) errno('EADDRINUSE', 'reserved range intersects a mapping');
    if (this.allowed.some((r) => overlaps(r, start, last))) errno('EADDRINUSE', 'reserved range intersects an allowed range');
    this.reserved.push({ start, last, owner });
    this.reserved.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  /** `iopt_remove_reserved_iova`. */
  removeReserved(owner: object): void {
    for (let i = this.reserved.length - 1; i >= 0; i--) if (this.reserved[i]!.owner === owner) this.reserved.splice(i, 1);
  }

  /** The complement of the reserved ranges over `[0, ULONG_MAX]` (IOVA_RANGES). */
  allowedHoles(): IovaRange[] {
    const holes: IovaRange[] = [];
    let cur = 0n;
    for (const r of this.unionSpans(this.reserved, 0n, ULONG_MAX)) {
      if (r.start > cur) holes.push({ start: cur, last: r.start - 1n });
      if (r.last === ULONG_MAX) return holes;
      cur = r.last + 1n;
    }
    holes.push({ start: cur, last: ULONG_MAX });
    return holes;
  }

  /** `iopt_check_iova_alignment`. */
  private checkAlignment(align: bigint): void {
    const mask = align - 1n;
    for (const a of this.areas) {
      if (a.start & mask || a.length & mask || BigInt(a.pageOffset) & mask) errno('EADDRINUSE', 'an area is not aligned to the new iova_alignment');
    }
  }

  /** `iopt_calculate_iova_alignment`. */
  calculateAlignment(extra: IommuDomain[] = []): bigint {
    let align = this.disableLargePages ? PAGE : 1n;
    for (const d of [...this.domains, ...extra]) {
      const a = 1n << ffs64(d.pgsizeBitmap);
      if (a > align) align = a;
    }
    return align;
  }

  private applyAlignment(): void {
    const align = this.calculateAlignment();
    if (align > this.iovaAlignment) this.checkAlignment(align);
    this.iovaAlignment = align;
  }

  /** `iopt_disable_large_pages`. */
  disableLarge(): void {
    if (this.disableLargePages) return;
    if (this.domains.length && this.areas.length) errno('EINVAL', 'domains already have mappings');
    this.disableLargePages = true;
    try {
      this.applyAlignment();
    } catch (e) {
      this.disableLargePages = false;
      throw e;
    }
  }

  /** `iopt_enable_large_pages`. */
  enableLarge(): void {
    this.disableLargePages = false;
    this.applyAlignment();
  }

  /** `iopt_table_add_domain`: aperture reserved, alignment raised, every area mapped. */
  addDomain(domain: IommuDomain): void {
    const align = this.calculateAlignment([domain]) > this.iovaAlignment ? this.calculateAlignment([domain]) : this.iovaAlignment;
    if (align > PAGE) errno('EINVAL', 'domain page size above PAGE_SIZE');
    if (align !== this.iovaAlignment) this.checkAlignment(align);
    try {
      if (domain.apertureStart) this.reserveIova(0n, domain.apertureStart - 1n, domain);
      if (domain.apertureEnd !== ULONG_MAX) this.reserveIova(domain.apertureEnd + 1n, ULONG_MAX, domain);
      const filled: IoptArea[] = [];
      try {
        for (const area of this.areas) {
          this.fillArea(area, domain);
          filled.push(area);
        }
      } catch (e) {
        for (const area of filled) {
          domain.unmap(area.start, area.length);
          if (this.domains.length === 0) {
            area.pages!.unpin(area.pagesFirst, area.pagesLast);
            area.filled = false;
          }
        }
        throw e;
      }
    } catch (e) {
      this.removeReserved(domain);
      throw e;
    }
    this.iovaAlignment = align;
    this.domains.push(domain);
  }

  /**
   * Re-hydration: a handed-over domain that already maps every area joins with nothing mapped
   * again (the caller verified it); it must come before any area.
   */
  adoptDomain(domain: IommuDomain): void {
    if (this.areas.length) throw new Error('adoptDomain with areas present');
    if (domain.apertureStart) this.reserveIova(0n, domain.apertureStart - 1n, domain);
    if (domain.apertureEnd !== ULONG_MAX) this.reserveIova(domain.apertureEnd + 1n, ULONG_MAX, domain);
    const align = this.calculateAlignment([domain]);
    if (align > this.iovaAlignment) this.iovaAlignment = align;
    this.domains.push(domain);
  }

  /**
   * Re-hydration: an area the adopted domains already map. Its pages are pinned, not mapped.
   * `pages` is consumed (its reference becomes the area's).
   */
  adoptArea(iova: bigint, pages: IoptPages, startByte: bigint, length: bigint, prot: { read: boolean; write: boolean }): IoptArea {
    const bad = this.checkIova(iova, length);
    if (bad) throw bad;
    const pagesFirst = Number(startByte / PAGE);
    const pagesLast = Number((startByte + length - 1n) / PAGE);
    const area = new IoptArea(iova, iova + length - 1n, null, Number(startByte % PAGE), pagesFirst, pagesLast, prot);
    this.insertArea(area);
    try {
      this.areaTake(area, pages);
    } catch (e) {
      this.removeArea(area);
      throw e;
    } finally {
      pages.put();
    }
    if (this.domains.length) {
      try {
        area.pages!.pin(pagesFirst, pagesLast);
      } catch (e) {
        this.areaRelease(area);
        this.removeArea(area);
        throw e;
      }
      area.filled = true;
    }
    return area;
  }

  /** Drops a domain from this table without unmapping anything from it (a failed adoption). */
  forgetDomain(domain: IommuDomain): void {
    const i = this.domains.indexOf(domain);
    if (i >= 0) this.domains.splice(i, 1);
    this.removeReserved(domain);
    if (this.domains.length === 0) {
      for (const area of this.areas) {
        if (!area.filled) continue;
        area.pages!.unpin(area.pagesFirst, area.pagesLast);
        area.filled = false;
      }
    }
    this.iovaAlignment = this.calculateAlignment();
  }

  /** `iopt_table_remove_domain`: unmaps every area, unpins with the last domain. */
  removeDomain(domain: IommuDomain): void {
    for (const area of this.areas) this.unfillArea(area, domain);
    this.domains.splice(this.domains.indexOf(domain), 1);
    this.removeReserved(domain);
    this.iovaAlignment = this.calculateAlignment();
  }
}

/** `__alloc_iova_check_range`: the aligned start inside `[start, last]`, or null. */
function checkRange(start: bigint, last: bigint, length: bigint, align: bigint, pageOffset: bigint): bigint | null {
  const up = start + align - 1n;
  if (up > ULONG_MAX) return null;
  const aligned = (up & ~(align - 1n)) | pageOffset;
  if (aligned >= last || last - aligned < length - 1n) return null;
  return aligned;
}

/** The pieces of `area` each guestmemfs file behind `pages` backs, lowest IOVA first (byte-exact). */
function fileSegments(area: IoptArea, pages: IoptPages): { file: PinnableFile; iova: bigint; offset: bigint; len: bigint }[] {
  const segs: { file: PinnableFile; iova: bigint; offset: bigint; len: bigint }[] = [];
  const off = BigInt(area.pageOffset);
  for (const f of pages.files) {
    const a = Math.max(f.first, area.pagesFirst);
    const b = Math.min(f.last, area.pagesLast);
    if (a > b) continue;
    const start = a === area.pagesFirst ? area.start : area.start + BigInt(a - area.pagesFirst) * PAGE - off;
    const end = b === area.pagesLast ? area.last : area.start + BigInt(b + 1 - area.pagesFirst) * PAGE - off - 1n;
    const offset = BigInt(f.filePage + (a - f.first)) * PAGE + (a === area.pagesFirst ? off : 0n);
    segs.push({ file: f.file, iova: start, offset, len: end - start + 1n });
  }
  return segs.sort((x, y) => (x.iova < y.iova ? -1 : 1));
}
