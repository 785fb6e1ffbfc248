// Model-based property test of the iommufd IOAS commands. Random sequences of IOAS_MAP, IOAS_COPY,
// IOAS_UNMAP, IOAS_ALLOW_IOVAS, DESTROY and IOAS_ALLOC run through the syscall surface and, step by
// step, against a reference interval model written from the kernel (io_pagetable.c: iopt_alloc_iova,
// iopt_check_iova, iopt_insert_area, iopt_get_pages, iopt_unmap_iova_range; ioas.c check order;
// reference §4, §5, §7). Every returned iova / dst_iova / length and every errno must agree.
//
// Two variants: no device (alignment 1, odd lengths and offsets allowed, nothing pinned) and a
// VFIO device bound and attached to the first IOAS (alignment 4096, MSI window and everything past
// the 48-bit aperture reserved). With the device, every step also checks what the hardware sees:
// each mapped page DMA-reads the process's bytes, DMA writes land (or fault 0x5 on READABLE-only
// areas), unmapped IOVAs fault 0x6, and pin counts are exact (one pin per iopt_pages per page used
// by a filled area; COPY shares the source's pages).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DmaFault,
  ERRNO,
  Host,
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  SyscallError,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  type ErrnoCode,
  type Process,
} from 'iommu-liveupdate';
// The fuzzer's interval helpers and allocator, written from the same references.
import { PAGE, U64_MAX, ULONG_MAX, allocIova as allocIovaIn, byStart, holes, minB as min, overlaps, type Range } from '../ts/fuzz/intervals.js';

const BDF = '0000:01:00.0';
const MSI: Range = { start: 0xfee0_0000n, last: 0xfeef_ffffn };
const APERTURE_LAST = (1n << 48n) - 1n;
const R = IOMMU_IOAS_MAP_READABLE;
const W = IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;

/** Buffer A: 2 MiB of anonymous shared memory at a 2 MiB-aligned VA (one huge folio), read-write. */
const VA_A = 0x4000_0000n;
const PAGES_A = 512;
/** Buffer B: 16 pages of a memfd mapped PROT_READ only, at a VA aligned to 4 KiB only. */
const VA_B = 0x5001_3000n;
const PAGES_B = 16;
/** The process's mappings: a WRITEABLE map of B cannot be pinned, nor anything past either end. */
const VMAS = [
  { start: VA_A, end: VA_A + BigInt(PAGES_A) * PAGE, write: true },
  { start: VA_B, end: VA_B + BigInt(PAGES_B) * PAGE, write: false },
];

type Variant = 'none' | 'domain';
type Res = { ok: true; v: bigint | number } | { ok: false; code: ErrnoCode };
const ok = (v: bigint | number): Res => ({ ok: true, v });
const err = (code: ErrnoCode): Res => ({ ok: false, code });

// ---- the reference model ------------------------------------------------------------------------

/** One `iopt_pages`: what one MAP pinned (COPY shares it). */
interface MPages {
  id: number;
  writable: boolean;
}
/** One `iopt_area`: `[start, last]` maps the user VA `va` onwards through `pages`. */
interface MArea extends Range {
  va: bigint;
  pages: MPages;
  read: boolean;
  write: boolean;
}
interface MIoas {
  id: number;
  areas: MArea[];
  allowed: Range[];
  reserved: Range[];
  align: bigint;
  domain: boolean;
}
/** A piece of a map request (`struct iopt_pages_list`). */
interface Piece {
  pages: MPages;
  va: bigint;
  length: bigint;
}

/** `iopt_alloc_iova` over this IOAS's allowed ranges, reserved ranges and areas. */
function allocIova(io: MIoas, addr: bigint, length: bigint): Res {
  const got = allocIovaIn(addr, length, io.align, io.allowed, [...io.reserved, ...io.areas]);
  return typeof got === 'bigint' ? ok(got) : err(got);
}

const pageOf = (va: bigint) => Number(va / PAGE);

/** Whether pin_user_pages of the VA pages [first, last] succeeds (FOLL_WRITE if `write`). */
function gupOk(first: number, last: number, write: boolean): boolean {
  for (let pg = first; pg <= last; pg++) {
    const va = BigInt(pg) * PAGE;
    const vma = VMAS.find((v) => v.start <= va && va < v.end);
    if (!vma || (write && !vma.write)) return false;
  }
  return true;
}

class Model {
  readonly ioas = new Map<number, MIoas>();
  private nextPages = 1;

  constructor(readonly otherIds: number[]) {}

  newIoas(id: number): MIoas {
    const io: MIoas = { id, areas: [], allowed: [], reserved: [], align: 1n, domain: false };
    this.ioas.set(id, io);
    return io;
  }

  /** `xa_alloc` with XA_FLAGS_ALLOC1: the lowest id no object holds. */
  lowestFreeId(): number {
    let id = 1;
    while (this.ioas.has(id) || this.otherIds.includes(id)) id++;
    return id;
  }

  /** VA page → how many iopt_pages pin it (pages used by an area in an IOAS with a domain). */
  pins(): Map<number, number> {
    const perPages = new Map<number, Set<number>>();
    for (const io of this.ioas.values()) {
      if (!io.domain) continue;
      for (const a of io.areas) {
        let s = perPages.get(a.pages.id);
        if (!s) perPages.set(a.pages.id, (s = new Set()));
        for (let pg = pageOf(a.va); pg <= pageOf(a.va + (a.last - a.start)); pg++) s.add(pg);
      }
    }
    const out = new Map<number, number>();
    for (const s of perPages.values()) for (const pg of s) out.set(pg, (out.get(pg) ?? 0) + 1);
    return out;
  }

  private pinnedBy(pages: MPages): Set<number> {
    const s = new Set<number>();
    for (const io of this.ioas.values()) {
      if (!io.domain) continue;
      for (const a of io.areas) {
        if (a.pages !== pages) continue;
        for (let pg = pageOf(a.va); pg <= pageOf(a.va + (a.last - a.start)); pg++) s.add(pg);
      }
    }
    return s;
  }

  /** `iopt_map_pages`: alignment, FIXED check or allocation, area insertion, domain fill. */
  private mapPages(io: MIoas, pieces: Piece[], length: bigint, fixedIova: bigint | null, read: boolean, write: boolean): Res {
    if (length & (io.align - 1n) || length === 0n) return err('EINVAL');
    let dst: bigint;
    if (fixedIova === null) {
      const got = allocIova(io, pieces[0]!.va, length);
      if (!got.ok) return got;
      dst = got.v as bigint;
    } else {
      // iopt_check_iova
      if (fixedIova & (io.align - 1n)) return err('EINVAL');
      const last = fixedIova + length - 1n;
      if (last > ULONG_MAX) return err('EOVERFLOW');
      if (io.reserved.some((r) => overlaps(r, fixedIova, last))) return err('EINVAL');
      if (io.areas.some((a) => overlaps(a, fixedIova, last))) return err('EEXIST');
      dst = fixedIova;
    }
    // iopt_insert_area, piece by piece
    for (const pc of pieces) {
      if (write && !pc.pages.writable) return err('EPERM');
      if ((pc.va % PAGE) & (io.align - 1n)) return err('EINVAL');
    }
    // iopt_fill_domains_pages: pages not pinned yet are pinned from the mm
    if (io.domain) {
      for (const pc of pieces) {
        const pinned = this.pinnedBy(pc.pages);
        for (let pg = pageOf(pc.va); pg <= pageOf(pc.va + pc.length - 1n); pg++) {
          if (!pinned.has(pg) && !gupOk(pg, pg, pc.pages.writable)) return err('EFAULT');
        }
      }
    }
    let at = dst;
    for (const pc of pieces) {
      io.areas.push({ start: at, last: at + pc.length - 1n, va: pc.va, pages: pc.pages, read, write });
      at += pc.length;
    }
    io.areas.sort(byStart);
    return ok(dst);
  }

  /** IOMMU_IOAS_MAP (ioas.c iommufd_ioas_map → iopt_map_user_pages). */
  map(id: number, flags: number, va: bigint, length: bigint, iova: bigint): Res {
    if (flags & ~(FIXED | R | W)) return err('EOPNOTSUPP');
    if (iova >= ULONG_MAX || length >= ULONG_MAX) return err('EOVERFLOW');
    if (!(flags & (R | W))) return err('EINVAL');
    const io = this.ioas.get(id);
    if (!io) return err('ENOENT');
    // iopt_alloc_user_pages / iopt_alloc_pages
    if (length === 0n || length > ULONG_MAX - PAGE) return err('EINVAL');
    if (va + length > ULONG_MAX) return err('EOVERFLOW');
    const pages: MPages = { id: this.nextPages++, writable: !!(flags & W) };
    return this.mapPages(io, [{ pages, va, length }], length, flags & FIXED ? iova : null, !!(flags & R), !!(flags & W));
  }

  /** IOMMU_IOAS_COPY (ioas.c iommufd_ioas_copy → iopt_get_pages + iopt_map_pages). */
  copy(dstId: number, srcId: number, flags: number, srcIova: bigint, length: bigint, dstIova: bigint): Res {
    if (flags & ~(FIXED | R | W)) return err('EOPNOTSUPP');
    if (length >= ULONG_MAX || srcIova >= ULONG_MAX || dstIova >= ULONG_MAX) return err('EOVERFLOW');
    if (!(flags & (R | W))) return err('EINVAL');
    const src = this.ioas.get(srcId);
    if (!src) return err('ENOENT');
    if (length === 0n) return err('EINVAL');
    const lastIova = srcIova + length - 1n;
    if (lastIova > ULONG_MAX) return err('EOVERFLOW');
    // iopt_for_each_contig_area
    const pieces: Piece[] = [];
    let cur = srcIova;
    let area = src.areas.find((a) => a.start <= cur && cur <= a.last);
    while (area) {
      const last = min(lastIova, area.last);
      pieces.push({ pages: area.pages, va: area.va + (cur - area.start), length: last - cur + 1n });
      if (last === lastIova) break;
      cur = last + 1n;
      area = src.areas.find((a) => a.start === cur);
    }
    if (!area) return err('ENOENT');
    const dst = this.ioas.get(dstId);
    if (!dst) return err('ENOENT');
    return this.mapPages(dst, pieces, length, flags & FIXED ? dstIova : null, !!(flags & R), !!(flags & W));
  }

  /** IOMMU_IOAS_UNMAP (ioas.c iommufd_ioas_unmap → iopt_unmap_iova / iopt_unmap_all). */
  unmap(id: number, iova: bigint, length: bigint): Res {
    const io = this.ioas.get(id);
    if (!io) return err('ENOENT');
    let start = 0n;
    let last = ULONG_MAX;
    const all = iova === 0n && length === U64_MAX;
    if (!all) {
      if (iova >= ULONG_MAX || length >= ULONG_MAX) return err('EOVERFLOW');
      if (length === 0n) return err('EINVAL');
      if (iova + length - 1n > ULONG_MAX) return err('EOVERFLOW');
      start = iova;
      last = iova + length - 1n;
    }
    // iopt_unmap_iova_range: lowest intersecting area first; not atomic
    let unmapped = 0n;
    for (;;) {
      const i = io.areas.findIndex((a) => overlaps(a, start, last));
      if (i < 0) break;
      const a = io.areas[i]!;
      if (a.start < start || a.last > last) return err('ENOENT');
      io.areas.splice(i, 1);
      unmapped += a.last - a.start + 1n;
    }
    if (!all && unmapped === 0n) return err('ENOENT');
    return ok(unmapped);
  }

  /** IOMMU_IOAS_ALLOW_IOVAS (iommufd_ioas_load_iovas + iopt_set_allow_iova). */
  allow(id: number, ranges: Range[]): Res {
    const io = this.ioas.get(id);
    if (!io) return err('ENOENT');
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i]!;
      if (r.start >= r.last) return err('EINVAL');
      if (ranges.slice(0, i).some((o) => overlaps(o, r.start, r.last))) return err('EINVAL');
    }
    if (ranges.some((r) => io.reserved.some((x) => overlaps(x, r.start, r.last)))) return err('EADDRINUSE');
    io.allowed = ranges.map((r) => ({ ...r }));
    return ok(0);
  }

  /** IOMMU_DESTROY of an IOAS: EBUSY while an HWPT holds it. */
  destroy(id: number): Res {
    const io = this.ioas.get(id);
    if (!io) return err(this.otherIds.includes(id) ? 'EBUSY' : 'ENOENT');
    if (io.domain) return err('EBUSY');
    this.ioas.delete(id);
    return ok(0);
  }

  /** IOMMU_IOAS_IOVA_RANGES: the holes of the reserved ranges. */
  iovaRanges(io: MIoas): Range[] {
    return holes(io.reserved, 0n, ULONG_MAX);
  }
}

// ---- commands -----------------------------------------------------------------------------------

/** Where a FIXED (or ignored) iova comes from: an absolute base, or next to an existing area. */
interface IovaChoice {
  kind: 'abs' | 'near' | 'after';
  idx: number;
  dPg: number;
  dB: number;
}
type Op =
  | { k: 'map'; slot: number; buf: number; offPg: number; offB: number; lenPg: number; lenB: number; fixed: boolean; at: IovaChoice; r: boolean; w: boolean; badFlag: boolean }
  | { k: 'copy'; src: number; dst: number; pick: number; offPg: number; offB: number; lenMode: number; lenPg: number; lenB: number; fixed: boolean; at: IovaChoice; r: boolean; w: boolean }
  | { k: 'unmap'; slot: number; shape: number; pick: number; pick2: number; dPg: number; dB: number; lenPg: number; lenB: number; at: IovaChoice }
  | { k: 'allow'; slot: number; idxs: number[] }
  | { k: 'destroy'; slot: number }
  | { k: 'alloc'; slot: number };

const ABS_BASES = [
  0n,
  0x1000n,
  0x10_0000n,
  0x20_0000n,
  0x1_0000_0000n,
  MSI.start - 0x2000n,
  MSI.last + 1n - 0x1000n,
  APERTURE_LAST + 1n - 0x2000n,
  ULONG_MAX - 0x1fffn,
  ULONG_MAX,
];

/** Candidate allowed ranges: plain, adjacent, overlapping, reserved-intersecting, degenerate. */
const ALLOW_CANDIDATES: Range[] = [
  { start: 0x1000n, last: 0xf_ffffn },
  { start: 0x3000n, last: 0x4fffn },
  { start: 0x10_0000n, last: 0x1f_ffffn },
  { start: 0x20_0000n, last: 0x7fff_ffffn },
  { start: 0x1_0000_0000n, last: 0x1_ffff_ffffn },
  { start: 0x18_0000n, last: 0x2f_ffffn },
  { start: 0xfe00_0000n, last: 0xfeff_ffffn },
  { start: 0n, last: 0xfffn },
  { start: 0x5000n, last: 0x5000n },
  { start: 0x6000n, last: 0x5000n },
  { start: APERTURE_LAST + 1n, last: (1n << 49n) - 1n },
  { start: 0n, last: ULONG_MAX },
];

function opArb(variant: Variant): fc.Arbitrary<Op> {
  // With a domain, sizes and offsets are mostly page multiples (anything else is a plain EINVAL).
  const odd = variant === 'domain' ? 6 : 1;
  const bytes = fc.oneof({ weight: odd, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4095 }) });
  const lenPg = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 4 }) },
    { weight: 3, arbitrary: fc.integer({ min: 5, max: 40 }) },
    { weight: 1, arbitrary: fc.constant(PAGES_A) },
  );
  const offPg = fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 0, max: 17 }) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: PAGES_A + 1 }) });
  const at: fc.Arbitrary<IovaChoice> = fc.record({
    kind: fc.constantFrom('abs' as const, 'near' as const, 'after' as const),
    idx: fc.nat({ max: 99 }),
    dPg: fc.integer({ min: -2, max: 8 }),
    dB: bytes,
  });
  const slot = fc.oneof({ weight: variant === 'domain' ? 4 : 3, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constant(1) });
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        k: fc.constant('map' as const),
        slot,
        buf: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constant(1) }),
        offPg,
        offB: bytes,
        lenPg,
        lenB: bytes,
        fixed: fc.boolean(),
        at,
        r: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
        w: fc.boolean(),
        badFlag: fc.oneof({ weight: 20, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        k: fc.constant('copy' as const),
        src: slot,
        dst: slot,
        pick: fc.nat({ max: 99 }),
        offPg: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: 1, max: 6 }) }),
        offB: bytes,
        lenMode: fc.integer({ min: 0, max: 3 }),
        lenPg,
        lenB: bytes,
        fixed: fc.boolean(),
        at,
        r: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
        w: fc.boolean(),
      }),
    },
    {
      weight: 5,
      arbitrary: fc.record({
        k: fc.constant('unmap' as const),
        slot,
        shape: fc.integer({ min: 0, max: 7 }),
        pick: fc.nat({ max: 99 }),
        pick2: fc.nat({ max: 99 }),
        dPg: fc.integer({ min: 0, max: 3 }),
        dB: bytes,
        lenPg,
        lenB: bytes,
        at,
      }),
    },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('allow' as const), slot, idxs: fc.array(fc.nat({ max: ALLOW_CANDIDATES.length - 1 }), { maxLength: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('destroy' as const), slot: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 4, arbitrary: fc.constant(1) }) }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('alloc' as const), slot }) },
  );
}

const clampU64 = (v: bigint) => (v < 0n ? 0n : v > ULONG_MAX ? ULONG_MAX : v);
const span = (start: bigint, last: bigint) => ({ iova: clampU64(start), length: last >= start ? clampU64(last - start + 1n) : 0n });

/** Every area of every IOAS, for choices that name "an existing area". */
function allAreas(m: Model, preferred: MIoas | undefined): MArea[] {
  if (preferred && preferred.areas.length) return preferred.areas;
  return [...m.ioas.values()].flatMap((io) => io.areas);
}

function resolveIova(c: IovaChoice, m: Model, io: MIoas | undefined): bigint {
  const areas = allAreas(m, io);
  const d = BigInt(c.dPg) * PAGE + BigInt(c.dB);
  if (c.kind === 'abs' || areas.length === 0) {
    const base = ABS_BASES[c.idx % ABS_BASES.length]!;
    return clampU64(base + (base === ULONG_MAX ? 0n : d));
  }
  const a = areas[c.idx % areas.length]!;
  return clampU64(c.kind === 'near' ? a.start + d : a.last + 1n + d);
}

// ---- the system under test ----------------------------------------------------------------------

function sys(fn: () => bigint | number): Res {
  try {
    return ok(fn());
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    expect(e.errno).toBe(-ERRNO[e.code]);
    expect(e.syscall).toBe('ioctl');
    return err(e.code);
  }
}

function expectFault(fn: () => unknown, what: string, iova: bigint, reason: number, write: boolean): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof DmaFault)) throw e;
    expect({ what, iova: e.iova, reason: e.reason, write: e.write }).toEqual({ what, iova, reason, write });
    return;
  }
  expect.fail(`${what}: DMA ${write ? 'write' : 'read'} at 0x${iova.toString(16)} did not fault`);
}

function sameBytes(got: Uint8Array, want: Uint8Array, what: string): void {
  if (Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(want.buffer, want.byteOffset, want.length))) return;
  let i = 0;
  while (i < got.length && got[i] === want[i]) i++;
  expect.fail(`${what}: byte ${i} is ${got[i]}, the process has ${want[i]} (lengths ${got.length}/${want.length})`);
}

/** Fills `n` bytes with a pattern unique to each 8-byte word of `va` onwards. */
function pattern(va: bigint, n: number, salt: bigint): Uint8Array {
  const out = new Uint8Array(n);
  const dv = new DataView(out.buffer);
  for (let i = 0; i + 8 <= n; i += 8) dv.setBigUint64(i, ((va + BigInt(i)) * 0x9e37_79b9_7f4a_7c15n + salt) & ULONG_MAX, true);
  return out;
}

interface Rig {
  host: Host;
  p: Process;
  fd: number;
  dfd: number | null;
  model: Model;
  slots: number[];
}

function boot(variant: Variant): Rig {
  const host = Host.boot({ memory: 1n << 30n, devices: [{ bdf: BDF }] });
  const p = host.kernel.spawn();
  p.mmap(VA_A, BigInt(PAGES_A) * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
  p.memWrite(VA_A, pattern(VA_A, PAGES_A * 4096, 0xa5n));
  const mfd = p.memfd_create('bufB');
  p.ftruncate(mfd, BigInt(PAGES_B) * PAGE);
  p.write(mfd, pattern(VA_B, PAGES_B * 4096, 0x5an));
  p.mmap(VA_B, BigInt(PAGES_B) * PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, mfd, 0n);
  p.close(mfd);

  const fd = p.open('/dev/iommu', O_RDWR);
  const first = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  let dfd: number | null = null;
  const others: number[] = [];
  if (variant === 'domain') {
    dfd = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    const devid = p.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fd }).out_devid as number;
    const hwpt = p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: first }).pt_id as number;
    others.push(devid, hwpt);
  }
  const second = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  const model = new Model(others);
  const io0 = model.newIoas(first);
  model.newIoas(second);
  expect([first, ...others, second]).toEqual(variant === 'domain' ? [1, 2, 3, 4] : [1, 2]);
  if (variant === 'domain') {
    io0.domain = true;
    io0.align = PAGE;
    io0.reserved = [{ ...MSI }, { start: APERTURE_LAST + 1n, last: ULONG_MAX }];
  }
  return { host, p, fd, dfd, model, slots: [first, second] };
}

function step(rig: Rig, op: Op): { got: Res; want: Res } | null {
  const { p, fd, model, slots } = rig;
  switch (op.k) {
    case 'map': {
      const id = slots[op.slot]!;
      const io = model.ioas.get(id);
      const va = (op.buf ? VA_B : VA_A) + BigInt(op.offPg % ((op.buf ? PAGES_B : PAGES_A) + 2)) * PAGE + BigInt(op.offB);
      const length = BigInt(op.lenPg) * PAGE + BigInt(op.lenB);
      const flags = (op.r ? R : 0) | (op.w ? W : 0) | (op.fixed ? FIXED : 0) | (op.badFlag ? 1 << 3 : 0);
      const iova = resolveIova(op.at, model, io);
      const got = sys(() => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: id, flags, user_va: va, length, iova }).iova as bigint);
      return { got, want: model.map(id, flags, va, length, iova) };
    }
    case 'copy': {
      const srcId = slots[op.src]!;
      const dstId = slots[op.dst]!;
      const src = model.ioas.get(srcId);
      const areas = allAreas(model, src);
      let srcIova: bigint;
      let length = BigInt(op.lenPg) * PAGE + BigInt(op.lenB);
      if (areas.length) {
        // Mostly inside one area (offset modulo its length); modes: as generated, to the area's end,
        // through the next area (contiguous or not), one page.
        const a = areas[op.pick % areas.length]!;
        const alen = a.last - a.start + 1n;
        const off = BigInt(op.offPg) * PAGE + BigInt(op.offB);
        srcIova = clampU64(a.start + (op.offPg < 4 ? off % alen : off));
        const next = areas.find((x) => x.start > a.last);
        if (op.lenMode === 1) length = a.last >= srcIova ? a.last - srcIova + 1n : 0n;
        if (op.lenMode === 2) length = clampU64((next ?? a).last - srcIova + 1n);
        if (op.lenMode === 3) length = PAGE + BigInt(op.lenB);
      } else {
        srcIova = ABS_BASES[op.pick % ABS_BASES.length]!;
      }
      const flags = (op.r ? R : 0) | (op.w ? W : 0) | (op.fixed ? FIXED : 0);
      const dstIova = resolveIova(op.at, model, model.ioas.get(dstId));
      const got = sys(
        () =>
          p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: dstId, src_ioas_id: srcId, flags, src_iova: srcIova, length, dst_iova: dstIova }).dst_iova as bigint,
      );
      return { got, want: model.copy(dstId, srcId, flags, srcIova, length, dstIova) };
    }
    case 'unmap': {
      const id = slots[op.slot]!;
      const io = model.ioas.get(id);
      const areas = io?.areas ?? [];
      const d = BigInt(op.dPg) * PAGE + BigInt(op.dB);
      const len = BigInt(op.lenPg) * PAGE + BigInt(op.lenB);
      let r: { iova: bigint; length: bigint };
      const a = areas[op.pick % Math.max(1, areas.length)];
      const b = areas[op.pick2 % Math.max(1, areas.length)];
      if (op.shape === 5) r = { iova: 0n, length: U64_MAX };
      else if (op.shape === 7) r = { iova: 0n, length: ULONG_MAX - 1n };
      else if (a && b && op.shape === 0) r = span(a.start, a.last);
      else if (a && b && op.shape === 1) r = a.start <= b.start ? span(a.start, b.last) : span(b.start, a.last);
      else if (a && op.shape === 2) r = span(a.start + d + 1n, a.last);
      else if (a && op.shape === 3) r = span(a.start, a.last - d - 1n);
      else if (a && op.shape === 4) r = { iova: clampU64(a.last + 1n), length: len };
      else r = { iova: resolveIova({ ...op.at, kind: 'abs' }, model, io), length: len };
      const got = sys(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: id, iova: r.iova, length: r.length }).length as bigint);
      return { got, want: model.unmap(id, r.iova, r.length) };
    }
    case 'allow': {
      const id = slots[op.slot]!;
      const ranges = op.idxs.map((i) => ({ ...ALLOW_CANDIDATES[i]! }));
      const got = sys(() => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: id, allowed_iovas: ranges.map((r) => ({ ...r })) }) && 0);
      return { got, want: model.allow(id, ranges) };
    }
    case 'destroy': {
      const id = slots[op.slot]!;
      const got = sys(() => p.ioctl(fd, IOMMU_DESTROY, { id }) && 0);
      return { got, want: model.destroy(id) };
    }
    case 'alloc': {
      if (model.ioas.has(slots[op.slot]!)) return null;
      const want = model.lowestFreeId();
      const got = sys(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number);
      if (got.ok) {
        slots[op.slot] = got.v as number;
        model.newIoas(got.v as number);
      }
      return { got, want: ok(want) };
    }
  }
}

/** What user space and the device can observe must match the model. */
function check(rig: Rig, variant: Variant, label: string): void {
  const { host, p, fd, model } = rig;
  for (const io of model.ioas.values()) {
    const arr: ({ start: bigint; last: bigint } | undefined)[] = [undefined, undefined, undefined, undefined];
    const r = p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: io.id, num_iovas: 4, allowed_iovas: arr });
    expect({ label, ioas: io.id, ranges: arr.slice(0, r.num_iovas as number), align: r.out_iova_alignment }).toEqual({
      label,
      ioas: io.id,
      ranges: model.iovaRanges(io),
      align: io.align,
    });
    if (io.domain) continue;
    // The area set of an IOAS without a domain, without changing it: a COPY of each area onto itself
    // finds the source fully covered and then collides (EEXIST); a byte on either side is not mapped.
    for (const a of io.areas) {
      const probe = (src: bigint, length: bigint) =>
        sys(() => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: io.id, src_ioas_id: io.id, flags: R | FIXED, src_iova: src, length, dst_iova: src }).dst_iova as bigint);
      expect({ label, ioas: io.id, area: [a.start, a.last], res: probe(a.start, a.last - a.start + 1n) }).toEqual({
        label,
        ioas: io.id,
        area: [a.start, a.last],
        res: err('EEXIST'),
      });
      for (const x of [a.start - 1n, a.last + 1n]) {
        if (x < 0n || x >= ULONG_MAX || io.areas.some((o) => o.start <= x && x <= o.last)) continue;
        expect({ label, ioas: io.id, unmapped: x, res: probe(x, 1n) }).toEqual({ label, ioas: io.id, unmapped: x, res: err('ENOENT') });
      }
    }
  }

  const pins = model.pins();
  for (const [base, n] of [
    [VA_A, PAGES_A + 2],
    [VA_B, PAGES_B + 2],
  ] as const) {
    for (let i = 0; i < n; i++) {
      const va = base + BigInt(i) * PAGE;
      const got = p.pinCount(va);
      const want = pins.get(pageOf(va)) ?? 0;
      if (got !== want) expect({ label, va: `0x${va.toString(16)}`, pins: got }).toEqual({ label, va: `0x${va.toString(16)}`, pins: want });
    }
  }
  expect(host.kernel.pinnedPages()).toBe([...pins.values()].reduce((s, x) => s + x, 0));
  if (variant === 'none') return;

  // The device's view of the IOAS with the domain.
  const dev = host.device(BDF);
  const io = [...model.ioas.values()].find((x) => x.domain)!;
  for (const a of io.areas) {
    const len = Number(a.last - a.start + 1n);
    const what = `${label}: area [0x${a.start.toString(16)}, 0x${a.last.toString(16)}]`;
    if (a.read) sameBytes(dev.dma.read(a.start, len), p.memRead(a.va, len), what);
    else expectFault(() => dev.dma.read(a.start, 8), what, a.start, 0x6, false);
    const off = BigInt(Math.floor(len / 2)) & ~7n;
    const marker = pattern(a.start + off, 8, 0x77n);
    const before = p.memRead(a.va + off, 8);
    if (a.write) {
      dev.dma.write(a.start + off, marker);
      sameBytes(p.memRead(a.va + off, 8), marker, `${what} DMA write`);
      p.memWrite(a.va + off, before);
    } else {
      expectFault(() => dev.dma.write(a.start + off, marker), what, a.start + off, 0x5, true);
      sameBytes(p.memRead(a.va + off, 8), before, `${what} after a faulted write`);
    }
  }
  const probes = [0n, 0x1000n, 0x20_0000n, 0x1_0000_0000n, ...io.areas.flatMap((a) => [a.start - 1n, a.last + 1n])];
  for (const x of probes) {
    if (x < 0n || x > APERTURE_LAST || io.reserved.some((r) => overlaps(r, x, x)) || io.areas.some((a) => overlaps(a, x, x))) continue;
    expectFault(() => dev.dma.read(x, 1), `${label}: unmapped`, x, 0x6, false);
  }
}

function run(variant: Variant, ops: Op[]): void {
  const rig = boot(variant);
  const { host, p, fd, model } = rig;
  check(rig, variant, 'initial');
  ops.forEach((op, i) => {
    const r = step(rig, op);
    if (!r) return;
    expect({ step: i, op, res: r.got }).toEqual({ step: i, op, res: r.want });
    check(rig, variant, `after step ${i} (${op.k})`);
  });
  // Teardown: either unmap everything (its length is a last probe of the area sets) or close with
  // everything still mapped; either way nothing may stay pinned.
  if (ops.length % 2 === 0) {
    for (const io of [...model.ioas.values()]) {
      const total = io.areas.reduce((s, a) => s + (a.last - a.start + 1n), 0n);
      expect({ ioas: io.id, unmapped: p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: io.id, iova: 0n, length: U64_MAX }).length }).toEqual({ ioas: io.id, unmapped: total });
      io.areas.length = 0;
    }
    check(rig, variant, 'after unmap-all');
  }
  if (rig.dfd !== null) p.close(rig.dfd);
  p.close(fd);
  expect(host.kernel.pinnedPages()).toBe(0);
  expect(host.kernel.iommufds.size).toBe(0);
  for (let i = 0; i < PAGES_A; i += 37) expect(p.pinCount(VA_A + BigInt(i) * PAGE)).toBe(0);
  p.exit();
}

describe('iommufd IOAS commands agree with a reference interval model', () => {
  it('no domain: alignment 1, odd lengths and offsets, lazy pages', () => {
    fc.assert(
      fc.property(fc.array(opArb('none'), { minLength: 1, maxLength: 30, size: 'max' }), (ops) => run('none', ops)),
      { numRuns: 60, seed: 20261124 },
    );
  });

  it('a VFIO device attached: alignment 4096, MSI and aperture reserved, DMA and pins checked', () => {
    fc.assert(
      fc.property(fc.array(opArb('domain'), { minLength: 1, maxLength: 30, size: 'max' }), (ops) => run('domain', ops)),
      { numRuns: 60, seed: 20261125 },
    );
  });

  // iopt_alloc_iova searches the holes from the window start as __alloc_iova_check_used left it,
  // ALIGN(start) | page_offset, not from the unaligned start: automatic maps of a few bytes at any
  // offset, where an area below that point would otherwise yield a different hole.
  it('no domain: automatic IOVA for user addresses that are not page aligned', () => {
    const autoMap: fc.Arbitrary<Op> = fc.record({
      k: fc.constant('map' as const),
      slot: fc.constant(0),
      buf: fc.integer({ min: 0, max: 1 }),
      offPg: fc.integer({ min: 0, max: 3 }),
      offB: fc.integer({ min: 0, max: 4095 }),
      lenPg: fc.constant(0),
      lenB: fc.integer({ min: 1, max: 4095 }),
      fixed: fc.constant(false),
      at: fc.constant({ kind: 'abs' as const, idx: 0, dPg: 0, dB: 0 }),
      r: fc.constant(true),
      w: fc.constant(false),
      badFlag: fc.constant(false),
    });
    fc.assert(
      fc.property(fc.array(autoMap, { minLength: 2, maxLength: 6 }), (ops) => run('none', ops)),
      { numRuns: 40, seed: 20261126 },
    );
  });

  // The concrete case: the window [0x1000, ...] becomes [0x1018, ...] for a 1-byte map at page
  // offset 0x18 (alignment 1), so the area at 0x1000 is not in the way and the answer is 0x1018
  // (searching from 0x1000 would find the hole at 0x1001 and return 0x1001 | 0x18 = 0x1019).
  it('automatic IOVA keeps the page offset from the aligned window start (1 byte at +0x18 after an area at 0x1000)', () => {
    const { p, fd, model } = boot('none');
    expect(model.map(2, R, VA_B, 1n, 0n)).toEqual(ok(0x1000n));
    expect(model.map(2, R, VA_A + 0x18n, 1n, 0n)).toEqual(ok(0x1018n));
    expect(p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: 2, flags: R, user_va: VA_B, length: 1n }).iova).toBe(0x1000n);
    expect(p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: 2, flags: R, user_va: VA_A + 0x18n, length: 1n }).iova).toBe(0x1018n);
  });
});

describe('pinned-page accounting', () => {
  function mapWithDevice(capabilities?: string[]) {
    const host = Host.boot({ memory: 1n << 30n, devices: [{ bdf: BDF }] });
    const p = host.kernel.spawn({ uid: 0, capabilities });
    p.mmap(VA_A, BigInt(PAGES_A) * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const dfd = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    p.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fd });
    p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: ioas });
    p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: ioas, flags: R | W, user_va: VA_A, length: 16n * PAGE });
    // A second MAP of the same pages is a second iopt_pages: pinned and charged again.
    p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: ioas, flags: R, user_va: VA_A, length: 4n * PAGE });
    return { host, p };
  }

  it('without CAP_IPC_LOCK every pinned page is charged to the user (RLIMIT_MODE 0)', () => {
    const { host, p } = mapWithDevice(['CAP_DAC_OVERRIDE', 'CAP_SYS_RESOURCE']);
    expect(p.pinCount(VA_A)).toBe(2);
    expect(p.pinCount(VA_A + 15n * PAGE)).toBe(1);
    expect(host.kernel.pinnedPages()).toBe(20);
    expect(host.kernel.lockedVm(0)).toBe(20);
  });

  // pages.c iopt_alloc_pages: account_mode is IOPT_PAGES_ACCOUNT_NONE when the caller is
  // capable(CAP_IPC_LOCK), and do_update_pinned then charges nothing to user->locked_vm.
  it('a CAP_IPC_LOCK process is not charged to locked_vm', () => {
    const { host } = mapWithDevice();
    expect(host.kernel.pinnedPages()).toBe(20);
    expect(host.kernel.lockedVm(0)).toBe(0);
  });

  // pages.c do_update_pinned adds every pinned page to source_mm->pinned_vm whatever the account mode.
  it('mm->pinned_vm counts the pins in RLIMIT_MODE 0 as well', () => {
    const { p } = mapWithDevice(['CAP_DAC_OVERRIDE', 'CAP_SYS_RESOURCE']);
    expect(p.mm.pinnedVm).toBe(20);
  });
});
