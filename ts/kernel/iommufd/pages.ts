// struct iopt_pages: the pages behind one MAP (or MAP_FILE), shared by refcount with the areas
// COPY makes. Pages are pinned lazily, per window of page indices in use by a filled area, and
// each page is pinned once however many areas and domains use it (pages.c). The run list and the
// windows are native (pins.ts): pinning an area is one call (after the accounting and the VMA
// checks here), and so is its map batch.
import { errno } from '../../uapi/errno.js';
import type { File } from '../file.js';
import type { PinRecord } from '../guestmemfs/pins.js';
import { backingSegments, PAGE_SIZE, Segments, type Backing, type Mm, type PageRefs, type RunList } from '../mm.js';
import { checkStatus } from '../pins.js';

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

/** Scratch for what one pin resolves. */
const segs = new Segments();

/** `struct iopt_pages`. */
export class IoptPages {
  private kref = 1;
  /** Its run list and windows in `refs.native` while anything is pinned, else -1. */
  private handle = -1;
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

  /**
   * Pins page indices `[first, last]` for one more user: the pages nobody pins yet are charged,
   * resolved and pinned. All or nothing (EFAULT, ENOMEM).
   */
  pin(first: number, last: number): void {
    segs.count = 0;
    let charged = 0;
    try {
      if (this.npinned === 0) {
        // Nothing pinned yet: the whole window is the one hole.
        this.account.charge(last - first + 1);
        charged = last - first + 1;
        this.resolve(first, last - first + 1, segs);
      } else {
        const holes = this.refs.native.pagesHoles(this.handle, first, last);
        for (let i = 0; i < holes.length; i += 2) {
          const n = holes[i + 1]! - holes[i]! + 1;
          this.account.charge(n);
          charged += n;
          this.resolve(holes[i]!, n, segs);
        }
      }
      const h = this.refs.native.pagesPin(this.handle, first, last, segs.view());
      if (h < 0) checkStatus(-h);
      this.handle = h;
    } catch (e) {
      if (charged) this.account.uncharge(charged);
      throw e;
    }
    this.npinned += charged;
  }

  /** Drops one user of `[first, last]`; pages nobody uses any more are unpinned. */
  unpin(first: number, last: number): void {
    if (this.handle < 0) return; // never pinned
    const dropped = this.refs.native.pagesUnpin(this.handle, first, last);
    if (dropped === 0) return;
    this.npinned -= dropped;
    // Nothing pinned: the native side forgot the run list.
    if (this.npinned === 0) this.handle = -1;
    this.account.uncharge(dropped);
    this.refs.reap();
  }

  /**
   * Fills `out` with the map batch of page indices `[first, last]` (which must be pinned), placed
   * at IOVA page `iovaPfn` onwards: one entry per run, or per page when `small`.
   */
  batch(first: number, last: number, iovaPfn: number, small: boolean, out: RunList): void {
    const pins = this.refs.native;
    if (this.handle < 0) {
      out.count = 0;
      return;
    }
    let n = pins.pagesBatch(this.handle, first, last, iovaPfn, small, out.idx, out.pfn, out.len);
    if (n > out.idx.length) {
      out.count = 0;
      out.reserve(n);
      n = pins.pagesBatch(this.handle, first, last, iovaPfn, small, out.idx, out.pfn, out.len);
    }
    out.count = n;
  }

  /** Appends what pins page indices `[first, first + n)` to `out`. */
  private resolve(first: number, n: number, out: Segments): void {
    const s = this.source;
    if (s.type === 'user') s.mm.gup(s.page + first, n, this.writable, out, first);
    else {
      // memfd_pin_folios: EINVAL for a file that is not shmem (or hugetlbfs), and unless the last
      // byte of the last page pinned lies below i_size (a partial last page does not do).
      if (!s.obj) errno('EINVAL', 'not a shmem file');
      const end = s.page + first + n;
      if ((s.obj.isize !== undefined && BigInt(end) * PAGE > s.obj.isize) || end > s.obj.npages) errno('EINVAL', 'beyond the end of the file');
      backingSegments(s.obj, s.page + first, n, out, first);
    }
  }
}
