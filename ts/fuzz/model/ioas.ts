// The IOAS commands (reference §4): IOAS_MAP, MAP_FILE, COPY, UNMAP and ALLOW_IOVAS, each
// planned in the kernel's check order; an area's pages are pinned at once when the IOAS has a
// domain (io_pagetable.c, iopt_map_pages).
import { IOMMU_IOAS_ALLOW_IOVAS, IOMMU_IOAS_COPY, IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_FILE, IOMMU_IOAS_UNMAP } from '../../index.js';
import { allocIova, byStart, clampU64, minB, overlaps, PAGE, U64_MAX, ULONG_MAX, type Range } from '../intervals.js';
import type { IovaChoice, Op } from '../ops.js';
import { reapInodes } from './guestmemfs.js';
import { gmSegs, pageSpan, pinError, srcBase, syncPins } from './mm.js';
import {
  APERTURE_LAST,
  errs,
  FIXED,
  hex,
  MSI,
  okAny,
  okv,
  R,
  W,
  type Alt,
  type MArea,
  type MCtx,
  type MFile,
  type MInode,
  type MIoas,
  type ModelState,
  type MPages,
  type Outcome,
  type Plan,
  type Seg,
  type Sys,
} from './state.js';

/** IOVAs an operation may name outright: edges of the MSI window, the aperture, the address space. */
const ABS_BASES = [0n, 0x1000n, 0x10_0000n, 0x20_0000n, 0x1_0000_0000n, MSI.start - 0x2000n, MSI.last + 1n - 0x1000n, APERTURE_LAST + 1n - 0x2000n, ULONG_MAX - 0x1fffn, ULONG_MAX];
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

export function resolveIova(c: IovaChoice, ctx: MCtx, io: MIoas | null): bigint {
  let areas = io?.areas ?? [];
  if (!areas.length) areas = ctx.ioases().flatMap((x) => x.areas);
  const d = BigInt(c.dPg) * PAGE + BigInt(c.dB);
  if (c.kind === 0 || areas.length === 0) {
    const base = ABS_BASES[c.idx % ABS_BASES.length]!;
    return clampU64(base + (base === ULONG_MAX ? 0n : d));
  }
  const a = areas[c.idx % areas.length]!;
  return clampU64(c.kind === 1 ? a.start + d : a.last + 1n + d);
}

/**
 * `iopt_map_pages` into `io`: alignment, FIXED check or allocation, area insertion checks, and
 * the pin of every domain's pages (reference §4.1 step 7-8).
 */
export function mapPages(
  m: ModelState,
  ctx: MCtx,
  io: MIoas,
  pieces: { pages: MPages; off: bigint; len: bigint; segs: Seg[] | null }[],
  length: bigint,
  fixed: bigint | null,
  r: boolean,
  w: boolean,
  allocAddr: bigint,
): Outcome<bigint> | { errs: readonly string[] } {
  // iopt_map_pages: a preserved HWPT's IOAS is immutable.
  if (io.luFrozen) return { err: 'EBUSY' };
  const align = m.alignOf(ctx, io);
  if (length & (align - 1n) || length === 0n) return { err: 'EINVAL' };
  let dst: bigint;
  const reserved = m.reservedOf(ctx, io);
  if (fixed === null) {
    const got = allocIova(allocAddr, length, align, io.allowed, [...reserved, ...io.areas]);
    if (typeof got === 'string') return { err: got };
    dst = got;
  } else {
    if (fixed & (align - 1n)) return { err: 'EINVAL' };
    const last = fixed + length - 1n;
    if (last > ULONG_MAX) return { err: 'EOVERFLOW' };
    if (reserved.some((x) => overlaps(x, fixed, last))) return { err: 'EINVAL' };
    if (io.areas.some((a) => overlaps(a, fixed, last))) return { err: 'EEXIST' };
    dst = fixed;
  }
  for (const pc of pieces) {
    if (w && !pc.pages.writable) return { err: 'EPERM' };
    if (((pc.pages.base + pc.off) % PAGE) & (align - 1n)) return { err: 'EINVAL' };
  }
  if (m.hasDomain(ctx, io)) {
    const errs: string[] = [];
    let at = dst;
    for (const pc of pieces) {
      const [f, l] = pageSpan(pc.pages, pc.off, pc.len);
      const e = pinError(m, pc.pages, f, l);
      if (e) errs.push(...e);
      // Filling the domain maps each area on its own: iommu_map refuses an IOVA, address or
      // size that is not page aligned (__iommu_map: IS_ALIGNED(iova | paddr | size, pgsize)).
      if (at % PAGE || pc.len % PAGE) errs.push('EINVAL');
      at += pc.len;
    }
    if (errs.length) return { errs };
  }
  return {
    ok: dst,
    commit: () => {
      let at = dst;
      for (const pc of pieces) {
        const segs = pc.segs ? pc.segs.map((s) => ({ ...s, iova: s.iova - pc.segs![0]!.iova + at })) : null;
        io.areas.push({ start: at, last: at + pc.len - 1n, pages: pc.pages, off: pc.off, r, w, segs });
        at += pc.len;
      }
      io.areas.sort(byStart);
      syncPins(m);
    },
  };
}

/** Turns a generic outcome plus the persistent / frozen rules into the acceptable alternatives. */
export function outcomeAlts(o: Outcome<bigint> | { errs: readonly string[] }, extra: { frozen: boolean; persistErr: readonly string[] | null }): Alt[] {
  const genErrs: readonly string[] = 'errs' in o ? o.errs : 'err' in o ? [o.err] : [];
  if (extra.frozen) return [errs(['EBUSY', ...genErrs, ...(extra.persistErr ?? [])])];
  if (extra.persistErr) return [errs([...extra.persistErr, ...genErrs])];
  if ('ok' in o) return [okv(o.ok, o.commit)];
  return [errs(genErrs)];
}

export function* planMap(m: ModelState, op: Extract<Op, { k: 'map' }>): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(op.c);
  if (!ctx) return;
  const id = m.ioasIdFor(ctx, op.ioas);
  const io = m.getIoas(ctx, id);
  const va = srcBase(op.src) + BigInt(op.offPg) * PAGE + BigInt(op.offB);
  const length = BigInt(op.lenPg) * PAGE + BigInt(op.lenB);
  const flags = (op.r ? R : 0) | (op.w ? W : 0) | (op.fixed ? FIXED : 0);
  const iova = resolveIova(op.at, ctx, io);
  const o = ((): Outcome<bigint> | { errs: readonly string[] } => {
    if (iova >= ULONG_MAX || length >= ULONG_MAX) return { err: 'EOVERFLOW' };
    if (!(flags & (R | W))) return { err: 'EINVAL' };
    if (!io) return { err: 'ENOENT' };
    if (length === 0n || length > ULONG_MAX - PAGE) return { err: 'EINVAL' };
    const pages: MPages = { id: m.nextPages++, kind: 'user', base: va, file: null, writable: op.w, res: new Map() };
    const segs = ctx.pid ? gmSegs(m, va, length, 0n) : null;
    return mapPages(m, ctx, io, [{ pages, off: 0n, len: length, segs }], length, op.fixed ? iova : null, op.r, op.w, va);
  })();
  // persistence-rfc.md §1.9 + completion 1: every VMA of the range must be guestmemfs (EFAULT);
  // its place among the generic checks is not stated, so either error is accepted.
  let persistErr: readonly string[] | null = null;
  if (ctx.pid && io && length < ULONG_MAX && iova < ULONG_MAX && (length === 0n || !gmSegs(m, va, length, 0n))) persistErr = ['EFAULT'];
  yield {
    what: `IOMMU_IOAS_MAP ioas ${id} va ${hex(va)} len ${hex(length)} ${op.fixed ? `FIXED ${hex(iova)}` : 'auto'} ${op.r ? 'R' : ''}${op.w ? 'W' : ''}`,
    run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_MAP, { flags, ioas_id: id, user_va: va, length, iova }).iova,
    alts: outcomeAlts(o, { frozen: m.frozen(ctx), persistErr }),
    tag: io?.luFrozen ? 'IOAS_MAP frozen' : undefined,
  };
}

/** MAP_FILE; `luo` names a LUO memfd of the VMM instead of op.file (its seals recorded in the area). */
export function* planMapFile(m: ModelState, op: Extract<Op, { k: 'mapFile' }>, luo?: { fd: number; file: MFile; seals: number }): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(op.c);
  if (!ctx) return;
  const id = m.ioasIdFor(ctx, op.ioas);
  const io = m.getIoas(ctx, id);
  let fd: number;
  let file: MFile | null = null;
  let other = false;
  if (luo) {
    fd = luo.fd;
    file = luo.file;
  } else if (op.file <= 2) {
    const s = m.fileFds[op.file];
    if (s) {
      fd = s.fd;
      file = s.inode;
    } else fd = m.peekFd();
  } else if (op.file === 3) {
    fd = m.memfd!.fd;
    file = m.memfd!.obj;
  } else if (op.file === 4) {
    fd = ctx.fd!;
    other = true;
  } else fd = m.peekFd();
  const start = BigInt(op.startPg) * PAGE;
  const length = BigInt(op.lenPg) * PAGE;
  const flags = (op.r ? R : 0) | (op.w ? W : 0) | (op.fixed ? FIXED : 0);
  const iova = resolveIova(op.at, ctx, io);
  const o = ((): Outcome<bigint> | { errs: readonly string[] } => {
    if (iova >= ULONG_MAX || length >= ULONG_MAX) return { err: 'EOVERFLOW' };
    if (!(flags & (R | W))) return { err: 'EINVAL' };
    if (!io) return { err: 'ENOENT' };
    // iopt_map_file_pages judges the length before it looks the fd up.
    if (length === 0n) return { err: 'EINVAL' };
    if (!file && !other) return { err: 'EBADF' };
    // Any other file maps like a file past its end: it fails (EINVAL) only when pinned.
    const pages: MPages = { id: m.nextPages++, kind: 'file', base: start, file, writable: op.w, res: new Map(), mapSeals: luo?.seals };
    const segs = ctx.pid && file?.kind === 'gm' ? [{ iova: 0n, inode: file as MInode, off: start, len: length }] : null;
    return mapPages(m, ctx, io, [{ pages, off: 0n, len: length, segs }], length, op.fixed ? iova : null, op.r, op.w, start);
  })();
  // persistence-rfc.md (project rule): IOAS_MAP_FILE in a persistent context takes guestmemfs fds only.
  let persistErr: readonly string[] | null = null;
  if (ctx.pid && io && (other || (file && file.kind !== 'gm'))) persistErr = ['EFAULT'];
  // A guestmemfs range past the file's end in a context without a domain is not pinned at map
  // time: the kernel may accept it (failing at the next attach) or refuse it at once.
  const lazyPastEof = io && file && !m.hasDomain(ctx, io) && length > 0n && file.pageId(Number((start + length - 1n) >> 12n)) === null;
  let alts = outcomeAlts(o, { frozen: m.frozen(ctx), persistErr });
  if (lazyPastEof && alts.some((a) => 'ok' in a)) alts = [...alts, errs(['EINVAL', 'EFAULT'])];
  yield {
    what: `IOMMU_IOAS_MAP_FILE ioas ${id} fd ${fd} start ${hex(start)} len ${hex(length)} ${op.fixed ? `FIXED ${hex(iova)}` : 'auto'} ${op.r ? 'R' : ''}${op.w ? 'W' : ''}`,
    run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_MAP_FILE, { flags, ioas_id: id, fd, start, length, iova }).iova,
    alts,
    tag: io?.luFrozen ? 'IOAS_MAP_FILE frozen' : undefined,
  };
}

export function* planCopy(m: ModelState, op: Extract<Op, { k: 'copy' }>): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(op.c);
  if (!ctx) return;
  const srcId = m.ioasIdFor(ctx, op.src);
  const dstId = m.ioasIdFor(ctx, op.dst);
  const src = m.getIoas(ctx, srcId);
  const dst = m.getIoas(ctx, dstId);
  let areas = src?.areas ?? [];
  if (!areas.length) areas = ctx.ioases().flatMap((x) => x.areas);
  let srcIova: bigint;
  let length = BigInt(op.lenPg) * PAGE;
  if (areas.length) {
    const a = areas[op.pick % areas.length]!;
    const alen = a.last - a.start + 1n;
    const off = BigInt(op.offPg) * PAGE;
    srcIova = clampU64(a.start + (op.offPg < 4 ? off % alen : off));
    const next = areas.find((x) => x.start > a.last);
    if (op.lenMode === 1) length = a.last >= srcIova ? a.last - srcIova + 1n : 0n;
    if (op.lenMode === 2) length = clampU64((next ?? a).last - srcIova + 1n);
    if (op.lenMode === 3) length = PAGE;
  } else srcIova = ABS_BASES[op.pick % ABS_BASES.length]!;
  const flags = (op.r ? R : 0) | (op.w ? W : 0) | (op.fixed ? FIXED : 0);
  const dstIova = resolveIova(op.at, ctx, dst);
  const o = ((): Outcome<bigint> | { errs: readonly string[] } => {
    if (length >= ULONG_MAX || srcIova >= ULONG_MAX || dstIova >= ULONG_MAX) return { err: 'EOVERFLOW' };
    if (!(flags & (R | W))) return { err: 'EINVAL' };
    if (!src) return { err: 'ENOENT' };
    if (length === 0n) return { err: 'EINVAL' };
    const lastIova = srcIova + length - 1n;
    if (lastIova > ULONG_MAX) return { err: 'EOVERFLOW' };
    // iopt_get_pages: a contiguous run of areas covering [srcIova, lastIova].
    const pieces: { pages: MPages; off: bigint; len: bigint; segs: Seg[] | null }[] = [];
    let cur = srcIova;
    let area = src.areas.find((a) => a.start <= cur && cur <= a.last);
    while (area) {
      const last = minB(lastIova, area.last);
      const len = last - cur + 1n;
      const segs = ctx.pid ? sliceSegs(area.segs ?? [], cur, len) : null;
      pieces.push({ pages: area.pages, off: area.off + (cur - area.start), len, segs });
      if (last === lastIova) break;
      cur = last + 1n;
      area = src.areas.find((a) => a.start === cur);
    }
    if (!area) return { err: 'ENOENT' };
    if (!dst) return { err: 'ENOENT' };
    const p0 = pieces[0]!;
    return mapPages(m, ctx, dst, pieces, length, op.fixed ? dstIova : null, op.r, op.w, p0.pages.base + p0.off);
  })();
  yield {
    what: `IOMMU_IOAS_COPY ioas ${srcId} ${hex(srcIova)} len ${hex(length)} -> ioas ${dstId} ${op.fixed ? `FIXED ${hex(dstIova)}` : 'auto'} ${op.r ? 'R' : ''}${op.w ? 'W' : ''}`,
    run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_COPY, { flags, dst_ioas_id: dstId, src_ioas_id: srcId, src_iova: srcIova, length, dst_iova: dstIova }).dst_iova,
    alts: outcomeAlts(o, { frozen: m.frozen(ctx), persistErr: null }),
    tag: dst?.luFrozen ? 'IOAS_COPY frozen' : undefined,
  };
}

export function* planUnmap(m: ModelState, op: Extract<Op, { k: 'unmap' }>): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(op.c);
  if (!ctx) return;
  const id = m.ioasIdFor(ctx, op.ioas);
  const io = m.getIoas(ctx, id);
  const areas = io?.areas ?? [];
  const d = BigInt(op.dPg) * PAGE;
  const len = BigInt(op.lenPg) * PAGE;
  const a = areas[op.pick % Math.max(1, areas.length)];
  const b = areas[op.pick2 % Math.max(1, areas.length)];
  const span = (s: bigint, l: bigint) => ({ iova: clampU64(s), length: l >= s ? clampU64(l - s + 1n) : 0n });
  let r: { iova: bigint; length: bigint };
  if (op.shape === 5) r = { iova: 0n, length: U64_MAX };
  else if (op.shape === 7) r = { iova: 0n, length: ULONG_MAX - 1n };
  else if (a && b && op.shape === 0) r = span(a.start, a.last);
  else if (a && b && op.shape === 1) r = a.start <= b.start ? span(a.start, b.last) : span(b.start, a.last);
  else if (a && op.shape === 2) r = span(a.start + d + PAGE, a.last);
  else if (a && op.shape === 3) r = span(a.start, a.last - d - PAGE);
  else if (a && op.shape === 4) r = { iova: clampU64(a.last + 1n), length: len };
  else r = { iova: resolveIova({ ...op.at, kind: 0 }, ctx, io), length: len };
  const what = `IOMMU_IOAS_UNMAP ioas ${id} iova ${hex(r.iova)} len ${hex(r.length)}`;
  const run = (s: Sys) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_UNMAP, { ioas_id: id, iova: r.iova, length: r.length }).length;
  // Reference §4.2.
  const alts = ((): Alt[] => {
    if (!io) return [errs(['ENOENT'])];
    if (io.luFrozen) return [errs(['EBUSY'])];
    const all = r.iova === 0n && r.length === U64_MAX;
    let start = 0n;
    let last = ULONG_MAX;
    if (!all) {
      if (r.iova >= ULONG_MAX || r.length >= ULONG_MAX) return [errs(['EOVERFLOW'])];
      if (r.length === 0n) return [errs(['EINVAL'])];
      if (r.iova + r.length - 1n > ULONG_MAX) return [errs(['EOVERFLOW'])];
      start = r.iova;
      last = r.iova + r.length - 1n;
    }
    // iopt_unmap_iova_range: lowest intersecting area first; not atomic.
    const removed: MArea[] = [];
    let unmapped = 0n;
    let fail: string | null = null;
    for (const x of [...io.areas].sort(byStart)) {
      if (!overlaps(x, start, last)) continue;
      if (x.start < start || x.last > last) {
        fail = 'ENOENT';
        break;
      }
      removed.push(x);
      unmapped += x.last - x.start + 1n;
    }
    const commit = () => {
      io.areas = io.areas.filter((x) => !removed.includes(x));
      syncPins(m);
      reapInodes(m);
    };
    if (fail) return [errs([fail], commit)];
    if (!all && unmapped === 0n) return [errs(['ENOENT'])];
    return [okv(unmapped, commit)];
  })();
  yield { what, run, alts: m.frozen(ctx) ? [errs(['EBUSY', ...alts.flatMap((x) => x.err ?? [])])] : alts, tag: io?.luFrozen ? 'IOAS_UNMAP frozen' : undefined };
}

export function* planAllow(m: ModelState, op: Extract<Op, { k: 'allow' }>): Generator<Plan, void, void> {
  const ctx = m.ctxOfSlot(op.c);
  if (!ctx) return;
  const id = m.ioasIdFor(ctx, op.ioas);
  const io = m.getIoas(ctx, id);
  const ranges = op.idxs.map((i) => ({ ...ALLOW_CANDIDATES[i % ALLOW_CANDIDATES.length]! }));
  // Reference §4.5.
  const alt = ((): Alt => {
    if (!io) return errs(['ENOENT']);
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i]!;
      if (r.start >= r.last) return errs(['EINVAL']);
      if (ranges.slice(0, i).some((o) => overlaps(o, r.start, r.last))) return errs(['EINVAL']);
    }
    const reserved = m.reservedOf(ctx, io);
    if (ranges.some((r) => reserved.some((x) => overlaps(x, r.start, r.last)))) return errs(['EADDRINUSE']);
    return okAny(() => (io.allowed = ranges.map((r) => ({ ...r }))));
  })();
  yield {
    what: `IOMMU_IOAS_ALLOW_IOVAS ioas ${id} [${ranges.map((r) => `${hex(r.start)}-${hex(r.last)}`).join(', ')}]`,
    run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: id, allowed_iovas: ranges.map((r) => ({ ...r })) }) && 0,
    alts: [alt],
  };
}

/** The part of `segs` covering area-IOVA range [iova, iova + len). */
function sliceSegs(segs: Seg[], iova: bigint, len: bigint): Seg[] {
  const out: Seg[] = [];
  const end = iova + len;
  for (const s of segs) {
    const s0 = s.iova > iova ? s.iova : iova;
    const s1 = s.iova + s.len < end ? s.iova + s.len : end;
    if (s1 <= s0) continue;
    out.push({ iova: s0, inode: s.inode, off: s.off + (s0 - s.iova), len: s1 - s0 });
  }
  return out;
}
