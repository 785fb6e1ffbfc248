// The VMM's memory as the model sees it (VMAs over anonymous, memfd and guestmemfs pages, the
// bytes written so far), the pins iopt_pages take on it (mm/gup.c: held while an IOAS with a
// domain maps them), and the VMM's own reads and writes of it.
import { minB, PAGE } from '../intervals.js';
import type { Op } from '../ops.js';
import {
  ANON_PAGES,
  BLOCK,
  CHUNK_PAGES,
  FILE_STRIDE,
  MEMFD_PAGES,
  VA_ANON,
  VA_FILE,
  VA_HOLE,
  VA_MEMFD,
  errs,
  hex,
  okAny,
  okv,
  pageOf,
  pattern,
  type MInode,
  type MPages,
  type MVma,
  type ModelState,
  type Plan,
  type Seg,
} from './state.js';

/** Where MAP / CPU operations take their user addresses: anon, memfd, file 0..2, a hole. */
export function srcBase(src: number): bigint {
  if (src === 0) return VA_ANON;
  if (src === 1) return VA_MEMFD;
  if (src >= 2 && src <= 4) return VA_FILE + BigInt(src - 2) * FILE_STRIDE;
  return VA_HOLE;
}
export function srcSpan(src: number): bigint {
  if (src === 0) return BigInt(ANON_PAGES) * PAGE;
  if (src === 1) return BigInt(MEMFD_PAGES) * PAGE;
  if (src >= 2 && src <= 4) return FILE_STRIDE;
  return BLOCK;
}

// ---- memory ----

export function vmaAt(m: ModelState, pg: number): MVma | undefined {
  for (const v of m.vmas) if (pg >= v.startPg && pg < v.startPg + v.npages) return v;
  return undefined;
}

/** The backing page behind a user VA page, as the process sees it now (null: EFAULT). */
export function vaPageId(m: ModelState, pg: number): number | null {
  const v = vmaAt(m, pg);
  if (!v) return null;
  const i = pg - v.startPg;
  if (v.kind === 'file') return v.file!.pageId(i);
  return v.chunks[i >> 9]! * CHUNK_PAGES + (i & 511);
}

export function readPage(m: ModelState, id: number, off: number, n: number): Uint8Array {
  const p = m.mem.get(id);
  return p ? p.slice(off, off + n) : new Uint8Array(n);
}

export function writePage(m: ModelState, id: number, off: number, bytes: Uint8Array): void {
  let p = m.mem.get(id);
  if (!p) m.mem.set(id, (p = new Uint8Array(4096)));
  p.set(bytes, off);
}

/** The guestmemfs segments of [va, va + len) if every byte is a guestmemfs mapping within its file. */
export function gmSegs(m: ModelState, va: bigint, len: bigint, iova: bigint): Seg[] | null {
  const segs: Seg[] = [];
  let cur = va;
  const end = va + len;
  while (cur < end) {
    const v = vmaAt(m, pageOf(cur));
    if (!v || v.kind !== 'file' || v.file!.kind !== 'gm') return null;
    const inode = v.file as MInode;
    const vend = BigInt(v.startPg + v.npages) * PAGE;
    const fileEnd = BigInt(v.startPg) * PAGE + BigInt(inode.blocks.length) * BLOCK;
    const stop = minB(end, minB(vend, fileEnd));
    if (stop <= cur) return null;
    const off = cur - BigInt(v.startPg) * PAGE;
    const prev = segs[segs.length - 1];
    if (prev && prev.inode === inode && prev.off + prev.len === off) prev.len += stop - cur;
    else segs.push({ iova: iova + (cur - va), inode, off, len: stop - cur });
    cur = stop;
  }
  return segs;
}

// ---- pins ----

export function pagesNo(p: MPages, byte: bigint): number {
  return Number((p.base + byte) >> 12n);
}

/** The page numbers of `pages` that area-range [off, off + len) uses. */
export function pageSpan(p: MPages, off: bigint, len: bigint): [number, number] {
  return [pagesNo(p, off), pagesNo(p, off + len - 1n)];
}

export function resolve(m: ModelState, p: MPages, pg: number): number | null {
  // A file that is not a memfd or guestmemfs file (`file` null) never resolves.
  return p.kind === 'user' ? vaPageId(m, pg) : p.file ? p.file.pageId(pg) : null;
}

/**
 * Whether the pages [first, last] of `p` can be pinned now: already pinned, or resolvable.
 * Returns the errno of a failed pin: EFAULT (no mapping), or EFAULT/EINVAL past a file's end.
 */
export function pinError(m: ModelState, p: MPages, first: number, last: number): readonly string[] | null {
  for (let pg = first; pg <= last; pg++) {
    if (p.res.has(pg)) continue;
    if (resolve(m, p, pg) === null) return p.kind === 'user' ? ['EFAULT'] : ['EFAULT', 'EINVAL'];
  }
  return null;
}

/**
 * Brings every iopt_pages' pinned set in line with the areas of IOASes that have a domain:
 * newly needed pages are resolved now (and stay as they were while pinned), unneeded ones dropped.
 */
export function syncPins(m: ModelState): void {
  const need = new Map<MPages, [number, number][]>();
  for (const ctx of m.liveCtxs()) {
    for (const o of ctx.objs.values()) {
      if (o.t !== 'ioas' || !m.hasDomain(ctx, o)) continue;
      for (const a of o.areas) {
        let l = need.get(a.pages);
        if (!l) need.set(a.pages, (l = []));
        l.push(pageSpan(a.pages, a.off, a.last - a.start + 1n));
      }
    }
  }
  for (const p of allPages(m)) {
    const spans = need.get(p);
    if (!spans) {
      p.res.clear();
      continue;
    }
    for (const pg of [...p.res.keys()]) if (!spans.some(([f, l]) => pg >= f && pg <= l)) p.res.delete(pg);
    for (const [f, l] of spans) {
      for (let pg = f; pg <= l; pg++) {
        if (p.res.has(pg)) continue;
        const id = resolve(m, p, pg);
        if (id === null) throw new Error(`model: pinning unresolvable page ${pg} of iopt_pages ${p.id}`);
        p.res.set(pg, id);
      }
    }
  }
}

export function allPages(m: ModelState): Set<MPages> {
  const s = new Set<MPages>();
  for (const ctx of m.liveCtxs()) for (const o of ctx.objs.values()) if (o.t === 'ioas') for (const a of o.areas) s.add(a.pages);
  return s;
}

/** Every iopt_pages of the IOASes of claimed contexts, once each (areas may share one). */
function* claimedPages(m: ModelState): Generator<MPages> {
  const seen = new Set<MPages>();
  for (const ctx of m.liveCtxs()) {
    if (!ctx.claimed) continue;
    for (const o of ctx.objs.values()) {
      if (o.t !== 'ioas') continue;
      for (const a of o.areas) {
        if (seen.has(a.pages)) continue;
        seen.add(a.pages);
        yield a.pages;
      }
    }
  }
}

/** host.kernel.pinnedPages(): every pinned page of every iopt_pages of a claimed context. */
export function pinnedPages(m: ModelState): number {
  let n = 0;
  for (const pages of claimedPages(m)) n += pages.res.size;
  return n;
}

/** Pin count of one backing page (p.pinCount). */
export function pinCountOf(m: ModelState, pageId: number): number {
  let n = 0;
  for (const pages of claimedPages(m)) for (const v of pages.res.values()) if (v === pageId) n++;
  return n;
}

// ---- CPU accesses ----

export function* planCpu(m: ModelState, op: Extract<Op, { k: 'cpuWrite' | 'cpuRead' }>): Generator<Plan, void, void> {
  const n = op.words * 8;
  // Within one page: the access either works or faults as a whole.
  const off = BigInt(op.off) % srcSpan(op.src);
  const inPage = Number(off & 0xfffn) & ~7;
  const va = srcBase(op.src) + (off & ~0xfffn) + BigInt(Math.min(inPage, 4096 - n));
  const id = vaPageId(m, pageOf(va));
  const po = Number(va & 0xfffn);
  if (op.k === 'cpuRead') {
    yield { what: `memRead ${hex(va)} +${n}`, run: (s) => s.p.memRead(va, n), alts: [id === null ? errs(['EFAULT']) : okv(readPage(m, id, po, n))] };
    return;
  }
  const data = pattern(op.val, n);
  yield { what: `memWrite ${hex(va)} +${n}`, run: (s) => s.p.memWrite(va, data), alts: [id === null ? errs(['EFAULT']) : okAny(() => writePage(m, id, po, data))] };
}
