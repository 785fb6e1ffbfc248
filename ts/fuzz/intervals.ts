// Inclusive IOVA intervals and the kernel's automatic IOVA allocation, written from the uAPI
// reference (/work/shared/reference/iommufd-uapi.md §5 "Automatic IOVA allocation" and §7 "io_pagetable
// data model": iopt_alloc_iova, __alloc_iova_check_range, interval_tree_span_iter). Pure functions
// over bigints; no simulator code is used or imported.

export const PAGE = 4096n;
export const HPAGE = 2n << 20n;
export const ULONG_MAX = 0xffff_ffff_ffff_ffffn;
export const U64_MAX = ULONG_MAX;

/** `[start, last]`, both inclusive. */
export interface Range {
  start: bigint;
  last: bigint;
}

export const overlaps = (a: Range, start: bigint, last: bigint): boolean => a.start <= last && a.last >= start;
export const byStart = (a: Range, b: Range): number => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0);
export const minB = (a: bigint, b: bigint): bigint => (a < b ? a : b);
export const maxB = (a: bigint, b: bigint): bigint => (a > b ? a : b);
export const clampU64 = (v: bigint): bigint => (v < 0n ? 0n : v > ULONG_MAX ? ULONG_MAX : v);

export function roundupPow2(x: bigint): bigint {
  let p = 1n;
  while (p < x) p <<= 1n;
  return p;
}

/** `__ffs64`: index of the lowest set bit (x != 0). */
export function ffs(x: bigint): bigint {
  let b = 0n;
  while (((x >> b) & 1n) === 0n) b++;
  return b;
}

/** Union of `ranges` within [lo, hi]: overlapping or adjacent ranges merge (interval_tree_span_iter). */
export function usedSpans(ranges: readonly Range[], lo: bigint, hi: bigint): Range[] {
  const sel: Range[] = [];
  for (const r of ranges) if (r.last >= lo && r.start <= hi) sel.push(r);
  sel.sort(byStart);
  const out: Range[] = [];
  for (const r of sel) {
    const s = r.start < lo ? lo : r.start;
    const l = r.last > hi ? hi : r.last;
    const prev = out[out.length - 1];
    if (prev && s <= prev.last + 1n) {
      if (l > prev.last) prev.last = l;
    } else out.push({ start: s, last: l });
  }
  return out;
}

/** The holes of `ranges` within [lo, hi]. */
export function holes(ranges: readonly Range[], lo: bigint, hi: bigint): Range[] {
  const out: Range[] = [];
  let cur = lo;
  for (const u of usedSpans(ranges, lo, hi)) {
    if (u.start > cur) out.push({ start: cur, last: u.start - 1n });
    if (u.last >= hi) return out;
    cur = u.last + 1n;
  }
  out.push({ start: cur, last: hi });
  return out;
}

/** `__alloc_iova_check_range`: ALIGN(start) | page_offset, if `length` fits before `last`. */
function checkRange(start: bigint, last: bigint, length: bigint, align: bigint, pageOffset: bigint): bigint | null {
  if (start + align - 1n > ULONG_MAX) return null;
  const aligned = ((start + align - 1n) & ~(align - 1n)) | pageOffset;
  if (aligned >= last || last - aligned < length - 1n) return null;
  return aligned;
}

/**
 * `iopt_alloc_iova` (recent io_pagetable.c, THP enabled so the alignment is capped at HPAGE_SIZE):
 * first fit over the allowed spans (the whole window [PAGE_SIZE, ULONG_MAX - PAGE_SIZE] if none),
 * skipping reserved ranges and areas; the IOVA keeps `addr`'s offset in its page. Returns the
 * IOVA or an errno name.
 */
export function allocIova(
  addr: bigint,
  length: bigint,
  ioasAlign: bigint,
  allowed: readonly Range[],
  used: readonly Range[],
): bigint | 'EOVERFLOW' | 'EINVAL' | 'ENOSPC' {
  const pageOffset = addr % PAGE;
  if (length === 0n || length >= ULONG_MAX / 2n) return 'EOVERFLOW';
  let align = addr === 0n ? roundupPow2(length) : minB(roundupPow2(length), 1n << ffs(addr));
  if (align >= HPAGE) align = HPAGE;
  if (align < ioasAlign) return 'EINVAL';
  const windows = allowed.length === 0 ? [{ start: PAGE, last: ULONG_MAX - PAGE }] : usedSpans(allowed, PAGE, ULONG_MAX - PAGE);
  for (const w of windows) {
    const first = checkRange(w.start, w.last, length, align, pageOffset);
    if (first === null) continue;
    for (const h of holes(used, first, w.last)) {
      const got = checkRange(h.start, h.last, length, align, pageOffset);
      if (got !== null) return got;
    }
  }
  return 'ENOSPC';
}
