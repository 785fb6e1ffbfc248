// struct iopt_pages: the pages behind one MAP (or MAP_FILE), shared by refcount with the areas
// COPY makes. Pages are pinned lazily, per window of page indices in use by a filled area, and
// each page is pinned once however many areas and domains use it (pages.c).
import { errno } from '../../uapi/errno.js';
import { HPAGE_PAGES, type MemObject, type Mm, type PageRefs } from '../mm.js';

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
  /** Pinned physically contiguous runs, sorted by index: index, pfn, count (first `nruns`). */
  private runIdx = new Float64Array(16);
  private runPfn = new Float64Array(16);
  private runLen = new Float64Array(16);
  private nruns = 0;
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
    if (this.spans.length === 0) return this.pinFresh(first, last);
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
    if (this.spans.length === 0) this.spans.push({ first, last, users: 1 });
    else this.addSpan(first, last);
  }

  /** `pin` when nothing is pinned yet: runs are appended in order, no intermediate lists. */
  private pinFresh(first: number, last: number): void {
    const n = last - first + 1;
    this.account.charge(n);
    this.ensureRoom(Math.min(n, Math.ceil(n / HPAGE_PAGES) + 2));
    try {
      this.resolve(first, n, (off, pfn, count) => {
        this.refs.pin(pfn, count);
        this.insertRun(first + off, pfn, count);
      });
    } catch (e) {
      for (let i = 0; i < this.nruns; i++) this.refs.unpin(this.runPfn[i]!, this.runLen[i]!);
      this.nruns = 0;
      this.account.uncharge(n);
      throw e;
    }
    this.npinned += n;
    this.spans.push({ first, last, users: 1 });
  }

  /** Drops one user of `[first, last]`; pages nobody uses any more are unpinned. */
  unpin(first: number, last: number): void {
    const only = this.spans.length === 1 ? this.spans[0]! : undefined;
    if (only && only.first === first && only.last === last && only.users === 1) {
      // The common case: the one area using these pages goes away.
      this.spans.length = 0;
      this.dropRuns(first, last);
      return;
    }
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
    const len = this.runLen;
    let lo = 0;
    let hi = this.nruns;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (idx[mid]! + len[mid]! <= first) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.nruns && idx[i]! <= last; i++) {
      const a = Math.max(idx[i]!, first);
      const b = Math.min(idx[i]! + len[i]! - 1, last);
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
    const k = this.nruns;
    let i = k;
    if (k > 0 && this.runIdx[k - 1]! > idx) {
      let lo = 0;
      let hi = k;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.runIdx[mid]! < idx) lo = mid + 1;
        else hi = mid;
      }
      i = lo;
    }
    // Extend the previous run when physically and logically contiguous.
    if (i > 0 && this.runIdx[i - 1]! + this.runLen[i - 1]! === idx && this.runPfn[i - 1]! + this.runLen[i - 1]! === pfn) {
      this.runLen[i - 1]! += n;
      return;
    }
    this.ensureRoom(k + 1);
    if (i < k) {
      this.runIdx.copyWithin(i + 1, i, k);
      this.runPfn.copyWithin(i + 1, i, k);
      this.runLen.copyWithin(i + 1, i, k);
    }
    this.runIdx[i] = idx;
    this.runPfn[i] = pfn;
    this.runLen[i] = n;
    this.nruns = k + 1;
  }

  private ensureRoom(n: number): void {
    if (n <= this.runIdx.length) return;
    const grow = (a: Float64Array) => {
      const b = new Float64Array(Math.max(n, a.length * 2));
      b.set(a);
      return b;
    };
    this.runIdx = grow(this.runIdx);
    this.runPfn = grow(this.runPfn);
    this.runLen = grow(this.runLen);
  }

  /** Unpins and forgets the runs inside `[first, last]`, splitting runs at the edges. */
  private dropRuns(first: number, last: number): void {
    const k = this.nruns;
    if (k && first <= this.runIdx[0]! && last >= this.runIdx[k - 1]! + this.runLen[k - 1]! - 1) {
      // Everything goes: no splitting, no copies.
      let dropped = 0;
      for (let i = 0; i < k; i++) {
        this.refs.unpin(this.runPfn[i]!, this.runLen[i]!);
        dropped += this.runLen[i]!;
      }
      this.nruns = 0;
      this.npinned -= dropped;
      this.account.uncharge(dropped);
      return;
    }
    this.ensureRoom(k + 1); // a run split in two needs one more slot
    const idx = this.runIdx.slice(0, k);
    const pfn = this.runPfn.slice(0, k);
    const len = this.runLen.slice(0, k);
    let w = 0;
    const keep = (a: number, p: number, n: number) => {
      this.runIdx[w] = a;
      this.runPfn[w] = p;
      this.runLen[w] = n;
      w++;
    };
    let dropped = 0;
    for (let i = 0; i < k; i++) {
      const a = idx[i]!;
      const b = a + len[i]! - 1;
      const p = pfn[i]!;
      if (b < first || a > last) {
        keep(a, p, b - a + 1);
        continue;
      }
      const lo = Math.max(a, first);
      const hi = Math.min(b, last);
      this.refs.unpin(p + (lo - a), hi - lo + 1);
      dropped += hi - lo + 1;
      if (a < lo) keep(a, p, lo - a);
      if (hi < b) keep(hi + 1, p + (hi + 1 - a), b - hi);
    }
    this.nruns = w;
    this.npinned -= dropped;
    if (dropped) this.account.uncharge(dropped);
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
