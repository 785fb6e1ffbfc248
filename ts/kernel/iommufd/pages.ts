// struct iopt_pages: the pages behind one MAP (or MAP_FILE), shared by refcount with the areas
// COPY makes. Pages are pinned lazily, per window of page indices in use by a filled area, and
// each page is pinned once however many areas and domains use it (pages.c).
import { errno } from '../../uapi/errno.js';
import type { File } from '../file.js';
import type { PinRecord } from '../guestmemfs/pins.js';
import { HPAGE_PAGES, PAGE_SIZE, RunList, type Backing, type Mm, type PageRefs } from '../mm.js';

const PAGE = BigInt(PAGE_SIZE);

/** `enum iopt_pages_account_mode`: NONE (CAP_IPC_LOCK), USER (the user's locked_vm), MM (the mm's). */
export type AccountMode = 'none' | 'user' | 'mm';

/**
 * Whom the pins of an iopt_pages are charged to (`account_mode`, `source_mm`, `source_user` and
 * `source_task`'s RLIMIT_MEMLOCK), as `iopt_pages_update_pinned` charges them: USER the user's
 * `locked_vm`, MM the mm's, each against the limit; every mode counts the mm's `pinned_vm`.
 */
export class PinAccount {
  constructor(
    readonly mode: AccountMode,
    readonly mm: Mm,
    readonly uid: number,
    private readonly user: { lockedVm: number },
    /** RLIMIT_MEMLOCK in pages. */
    private readonly limit: number,
  ) {}

  charge(n: number): void {
    if (this.mode === 'user') {
      if (this.user.lockedVm + n > this.limit) errno('ENOMEM', 'RLIMIT_MEMLOCK exceeded (user locked_vm)');
      this.user.lockedVm += n;
    } else if (this.mode === 'mm') {
      if (this.mm.lockedVm + n > this.limit) errno('ENOMEM', 'RLIMIT_MEMLOCK exceeded (mm locked_vm)');
      this.mm.lockedVm += n;
    }
    this.mm.pinnedVm += n;
  }

  uncharge(n: number): void {
    if (this.mode === 'user') this.user.lockedVm -= n;
    else if (this.mode === 'mm') this.mm.lockedVm -= n;
    this.mm.pinnedVm -= n;
  }
}

/** Where the pages come from. */
export type PagesSource =
  | { type: 'user'; mm: Mm; /** page number of ALIGN_DOWN(uptr) */ page: number }
  | {
      type: 'file';
      /** null: a file that is neither shmem nor guestmemfs */
      obj: Backing | null;
      /** first file page */
      page: number;
      /** The memfd mapped (`pages->file`, held), for the live-update checks; null for other files. */
      file?: File | null;
      /** `memfd_get_seals(file)` at map time (`pages->seals`, live-update series); 0 for other files. */
      seals?: number;
    };

/** A guestmemfs file as a persistent area pins it (`guestmemfs_pin_file`, with the pin's record). */
export interface PinnableFile {
  readonly ino: number;
  /** Takes a long-term pin on a piece of the file; returns its record's handle. */
  pin(rec: Omit<PinRecord, 'ino'>): number;
  unpin(handle: number): void;
}

/** A persistent file behind page indices `[first, last]` of an iopt_pages. */
export interface PagesFile {
  file: PinnableFile;
  first: number;
  last: number;
  /** The file page behind index `first` (a VMA maps a file linearly). */
  filePage: number;
}

/** A window of page indices pinned `users` times (one per filled area covering it). */
interface Span {
  first: number;
  last: number;
  users: number;
}

/** Scratch for pinning holes next to what is already pinned. */
const holeRuns = new RunList();

/** `struct iopt_pages`. */
export class IoptPages {
  private kref = 1;
  private spans: Span[] = [];
  /** Pinned physically contiguous runs, sorted by page index. */
  private runs = new RunList();
  /** Pages pinned by this object (`pages->npinned`). */
  npinned = 0;

  constructor(
    readonly source: PagesSource,
    /** Byte address (user VA or file offset) of page index 0, for IOVA alignment hints. */
    readonly base: bigint,
    readonly npages: number,
    readonly writable: boolean,
    private readonly refs: PageRefs,
    /** Charged and uncharged per pinned page; IOAS_CHANGE_PROCESS moves it to another process. */
    public account: PinAccount,
    /** guestmemfs files a persistent context maps through these pages, by page-index window. */
    readonly files: readonly PagesFile[] = [],
  ) {
    // A file map holds the file (`pages->file = get_file(file)`).
    if (source.type === 'file') {
      source.obj?.get();
      source.file?.get();
    }
  }

  get(): this {
    this.kref++;
    return this;
  }

  put(): void {
    if (--this.kref > 0) return;
    if (this.npinned !== 0) throw new Error('iopt_pages released while pinned');
    if (this.source.type === 'file') {
      this.source.obj?.put();
      this.source.file?.put();
    }
  }

  /** Pins page indices `[first, last]` for one more user. All or nothing (EFAULT, ENOMEM). */
  pin(first: number, last: number): void {
    if (this.spans.length === 0) return this.pinFresh(first, last);
    // Pin the holes of [first, last] nobody pins yet, before touching any count.
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
    const got = holeRuns;
    got.count = 0;
    let charged = 0;
    try {
      for (const [a, b] of holes) {
        this.account.charge(b - a + 1);
        charged += b - a + 1;
        this.resolve(a, b - a + 1, got);
      }
    } catch (e) {
      if (charged) this.account.uncharge(charged);
      throw e;
    }
    for (let i = 0; i < got.count; i++) {
      this.refs.pin(got.pfn[i]!, got.len[i]!);
      this.insertRun(got.idx[i]!, got.pfn[i]!, got.len[i]!);
    }
    this.npinned += charged;
    this.addSpan(first, last);
  }

  /** `pin` when nothing is pinned yet: runs land in order straight in the run list. */
  private pinFresh(first: number, last: number): void {
    const n = last - first + 1;
    this.account.charge(n);
    const runs = this.runs;
    runs.reserve(Math.min(n, Math.ceil(n / HPAGE_PAGES) + 2));
    try {
      this.resolve(first, n, runs);
    } catch (e) {
      runs.count = 0;
      this.account.uncharge(n);
      throw e;
    }
    for (let i = 0; i < runs.count; i++) this.refs.pin(runs.pfn[i]!, runs.len[i]!);
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
    this.spans = this.merge(keep);
  }

  /**
   * Appends the map batch of page indices `[first, last]` (which must be pinned), placed at IOVA
   * page `iovaPfn` onwards, to `out`: one entry per run, or per page when `small`.
   */
  batch(first: number, last: number, iovaPfn: number, small: boolean, out: RunList): void {
    const { idx, pfn, len } = this.runs;
    let lo = 0;
    let hi = this.runs.count;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (idx[mid]! + len[mid]! <= first) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.runs.count && idx[i]! <= last; i++) {
      const a = idx[i]! > first ? idx[i]! : first;
      const end = idx[i]! + len[i]! - 1;
      const b = end < last ? end : last;
      const p = pfn[i]! + (a - idx[i]!);
      const at = iovaPfn + (a - first);
      if (small) for (let k = 0; k <= b - a; k++) out.append(at + k, p + k, 1);
      else out.append(at, p, b - a + 1);
    }
  }

  private resolve(first: number, n: number, out: RunList): void {
    const s = this.source;
    if (s.type === 'user') s.mm.gup(s.page + first, n, this.writable, out, first);
    else {
      // memfd_pin_folios: EINVAL for a file that is not shmem (or hugetlbfs), and unless the last
      // byte of the last page pinned lies below i_size (a partial last page does not do).
      if (!s.obj) errno('EINVAL', 'not a shmem file');
      const end = s.page + first + n;
      if ((s.obj.isize !== undefined && BigInt(end) * PAGE > s.obj.isize) || end > s.obj.npages) errno('EINVAL', 'beyond the end of the file');
      s.obj.runs(s.page + first, n, out, first);
    }
  }

  /** Inserts a run at its place by index (pins next to existing ones). */
  private insertRun(idx: number, pfn: number, n: number): void {
    const r = this.runs;
    const k = r.count;
    if (k === 0 || r.idx[k - 1]! < idx) return r.push(idx, pfn, n);
    let lo = 0;
    let hi = k;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (r.idx[mid]! < idx) lo = mid + 1;
      else hi = mid;
    }
    r.reserve(k + 1);
    r.idx.copyWithin(lo + 1, lo, k);
    r.pfn.copyWithin(lo + 1, lo, k);
    r.len.copyWithin(lo + 1, lo, k);
    r.idx[lo] = idx;
    r.pfn[lo] = pfn;
    r.len[lo] = n;
    r.count = k + 1;
  }

  /** Unpins and forgets the runs inside `[first, last]`, splitting runs at the edges. */
  private dropRuns(first: number, last: number): void {
    const r = this.runs;
    const k = r.count;
    let dropped = 0;
    if (k && first <= r.idx[0]! && last >= r.idx[k - 1]! + r.len[k - 1]! - 1) {
      // Everything goes: no splitting, no copies.
      for (let i = 0; i < k; i++) {
        this.refs.unpin(r.pfn[i]!, r.len[i]!);
        dropped += r.len[i]!;
      }
      r.count = 0;
    } else {
      const next = new RunList();
      next.reserve(k + 1);
      for (let i = 0; i < k; i++) {
        const a = r.idx[i]!;
        const b = a + r.len[i]! - 1;
        const p = r.pfn[i]!;
        if (b < first || a > last) {
          next.push(a, p, b - a + 1);
          continue;
        }
        const lo = Math.max(a, first);
        const hi = Math.min(b, last);
        this.refs.unpin(p + (lo - a), hi - lo + 1);
        dropped += hi - lo + 1;
        if (a < lo) next.push(a, p, lo - a);
        if (hi < b) next.push(hi + 1, p + (hi + 1 - a), b - hi);
      }
      this.runs = next;
    }
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
    this.spans = this.merge(out);
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
