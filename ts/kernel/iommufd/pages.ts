// struct iopt_pages: the pages behind one MAP (or MAP_FILE), shared by refcount with the areas
// COPY makes. Pages are pinned lazily, per window of page indices in use by a filled area, and
// each page is pinned once however many areas and domains use it (pages.c).
import { errno } from '../../uapi/errno.js';
import type { MemObject, Mm, PageRefs } from '../mm.js';

/** Where the pages come from. */
export type PagesSource =
  | { type: 'user'; mm: Mm; /** page number of ALIGN_DOWN(uptr) */ page: number }
  | { type: 'file'; obj: MemObject; /** first file page */ page: number };

/** A window of page indices pinned `users` times (one per filled area covering it). */
interface Span {
  first: number;
  last: number;
  users: number;
}

/** `struct iopt_pages`. */
export class IoptPages {
  private kref = 1;
  private readonly spans: Span[] = [];
  /** Pinned physically contiguous runs, sorted by index: index, pfn, count. */
  private runIdx: number[] = [];
  private runPfn: number[] = [];
  private runLen: number[] = [];
  /** Pages pinned by this object (`pages->npinned`). */
  npinned = 0;

  constructor(
    readonly source: PagesSource,
    /** Byte address (user VA or file offset) of page index 0, for IOVA alignment hints. */
    readonly base: bigint,
    readonly npages: number,
    readonly writable: boolean,
    private readonly refs: PageRefs,
    /** Charged and uncharged per pinned page (RLIMIT_MEMLOCK accounting). */
    private readonly account: { charge(n: number): void; uncharge(n: number): void },
  ) {}

  get(): this {
    this.kref++;
    return this;
  }

  put(): void {
    if (--this.kref === 0 && this.npinned !== 0) throw new Error('iopt_pages released while pinned');
  }

  /** Pins page indices `[first, last]` for one more user. All or nothing (EFAULT, ENOMEM). */
  pin(first: number, last: number): void {
    // Find the holes of [first, last] nobody pins yet; pin them before touching any count.
    const holes: [number, number][] = [];
    let cur = first;
    for (const s of this.spans) {
      if (s.last < cur) continue;
      if (s.first > last) break;
      if (s.first > cur) holes.push([cur, s.first - 1]);
      cur = s.last + 1;
      if (cur > last) break;
    }
    if (cur <= last) holes.push([cur, last]);
    const got: { idx: number; pfn: number; n: number }[] = [];
    let charged = 0;
    try {
      for (const [a, b] of holes) {
        this.account.charge(b - a + 1);
        charged += b - a + 1;
        this.resolve(a, b - a + 1, (off, pfn, n) => {
          this.refs.pin(pfn, n);
          got.push({ idx: a + off, pfn, n });
        });
      }
    } catch (e) {
      for (const r of got) this.refs.unpin(r.pfn, r.n);
      if (charged) this.account.uncharge(charged);
      throw e;
    }
    for (const r of got) this.insertRun(r.idx, r.pfn, r.n);
    this.npinned += charged;
    this.addSpan(first, last);
  }

  /** Drops one user of `[first, last]`; pages nobody uses any more are unpinned. */
  unpin(first: number, last: number): void {
    this.split(first);
    this.split(last + 1);
    const keep: Span[] = [];
    for (const s of this.spans) {
      if (s.first >= first && s.last <= last && --s.users === 0) {
        this.dropRuns(s.first, s.last);
        continue;
      }
      keep.push(s);
    }
    this.spans.length = 0;
    this.spans.push(...this.merge(keep));
  }

  /** Visits the pinned runs of `[first, last]` (which must be pinned): `fn(index, pfn, count)`. */
  forRuns(first: number, last: number, fn: (idx: number, pfn: number, n: number) => void): void {
    const idx = this.runIdx;
    let lo = 0;
    let hi = idx.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (idx[mid]! + this.runLen[mid]! <= first) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < idx.length && idx[i]! <= last; i++) {
      const a = Math.max(idx[i]!, first);
      const b = Math.min(idx[i]! + this.runLen[i]! - 1, last);
      fn(a, this.runPfn[i]! + (a - idx[i]!), b - a + 1);
    }
  }

  /** PFN backing page index `i` if pinned, else 0. */
  pinnedPfn(i: number): number {
    let pfn = 0;
    this.forRuns(i, i, (_a, p) => (pfn = p));
    return pfn;
  }

  private resolve(first: number, n: number, fn: (off: number, pfn: number, n: number) => void): void {
    const s = this.source;
    if (s.type === 'user') s.mm.gup(s.page + first, n, this.writable, fn);
    else {
      if (s.page + first + n > s.obj.npages) errno('EFAULT', 'beyond the end of the file');
      s.obj.runs(s.page + first, n, fn);
    }
  }

  private insertRun(idx: number, pfn: number, n: number): void {
    let i = this.runIdx.length;
    while (i > 0 && this.runIdx[i - 1]! > idx) i--;
    // Extend the previous run when physically and logically contiguous.
    if (i > 0 && this.runIdx[i - 1]! + this.runLen[i - 1]! === idx && this.runPfn[i - 1]! + this.runLen[i - 1]! === pfn) {
      this.runLen[i - 1]! += n;
      return;
    }
    this.runIdx.splice(i, 0, idx);
    this.runPfn.splice(i, 0, pfn);
    this.runLen.splice(i, 0, n);
  }

  private dropRuns(first: number, last: number): void {
    const idx: number[] = [];
    const pfn: number[] = [];
    const len: number[] = [];
    for (let i = 0; i < this.runIdx.length; i++) {
      const a = this.runIdx[i]!;
      const b = a + this.runLen[i]! - 1;
      const p = this.runPfn[i]!;
      if (b < first || a > last) {
        idx.push(a), pfn.push(p), len.push(b - a + 1);
        continue;
      }
      const lo = Math.max(a, first);
      const hi = Math.min(b, last);
      this.refs.unpin(p + (lo - a), hi - lo + 1);
      this.npinned -= hi - lo + 1;
      this.account.uncharge(hi - lo + 1);
      if (a < lo) idx.push(a), pfn.push(p), len.push(lo - a);
      if (hi < b) idx.push(hi + 1), pfn.push(p + (hi + 1 - a)), len.push(b - hi);
    }
    this.runIdx = idx;
    this.runPfn = pfn;
    this.runLen = len;
  }

  private addSpan(first: number, last: number): void {
    this.split(first);
    this.split(last + 1);
    const out: Span[] = [];
    let cur = first;
    for (const s of this.spans) {
      if (s.last < first || s.first > last) {
        out.push(s);
        continue;
      }
      if (s.first > cur) out.push({ first: cur, last: s.first - 1, users: 1 });
      s.users++;
      out.push(s);
      cur = s.last + 1;
    }
    if (cur <= last) out.push({ first: cur, last, users: 1 });
    out.sort((x, y) => x.first - y.first);
    this.spans.length = 0;
    this.spans.push(...this.merge(out));
  }

  private split(at: number): void {
    for (let i = 0; i < this.spans.length; i++) {
      const s = this.spans[i]!;
      if (s.first < at && at <= s.last) {
        this.spans.splice(i, 1, { first: s.first, last: at - 1, users: s.users }, { first: at, last: s.last, users: s.users });
        return;
      }
    }
  }

  private merge(spans: Span[]): Span[] {
    const out: Span[] = [];
    for (const s of spans) {
      const prev = out[out.length - 1];
      if (prev && prev.last + 1 === s.first && prev.users === s.users) prev.last = s.last;
      else out.push({ ...s });
    }
    return out;
  }
}
