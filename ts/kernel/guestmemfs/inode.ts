// guestmemfs inodes and open files: the in-memory inode is a view of its slot in the carve-out
// plus the references that keep an unlinked file until the last close or munmap; mmap is the only
// way to its data (no read/write: the data is not in the direct map).
import { errno } from '../../uapi/errno.js';
import { MAP_SHARED, MAP_TYPE } from '../../uapi/mman.js';
import { File, type Task } from '../file.js';
import { HPAGE_PAGES, type Backing, type RunList } from '../mm.js';
import type { PinRecord, PinTable } from './pins.js';

/** What an inode uses of its superblock (the carve-out's metadata). */
export interface GuestmemfsSuper {
  readonly pinTable: PinTable;
  size(slot: number): bigint;
  u32(slot: number, off: number): number;
  setU32(slot: number, off: number, v: number): void;
  blockPfn(slot: number, i: number): number;
  truncate(inode: GuestmemfsInode, length: bigint): void;
  lastClose(inode: GuestmemfsInode): void;
  maybeFree(slot: number): void;
}

/**
 * The in-memory inode of an open or mapped file: a view of its slot in the carve-out, plus the
 * references that keep an unlinked file's blocks until the last close or munmap.
 */
export class GuestmemfsInode implements Backing {
  private refs = 0;
  constructor(
    readonly fs: GuestmemfsSuper,
    readonly slot: number,
  ) {}

  get guestmemfs(): GuestmemfsInode {
    return this;
  }
  get ino(): number {
    return this.slot + 2;
  }
  get npages(): number {
    return Number((this.fs.size(this.slot) + 4095n) / 4096n);
  }
  /** Long-term pins by persistent iommufd mappings (`guestmemfs_pin_file`). */
  get pins(): number {
    return this.fs.u32(this.slot, 40);
  }

  /** Whether an open file or a mapping still holds it. */
  get referenced(): boolean {
    return this.refs > 0;
  }

  get(): this {
    this.refs++;
    return this;
  }

  put(): void {
    if (--this.refs === 0) this.fs.lastClose(this);
  }

  pfn(page: number, _alloc: boolean): number {
    if (page >= this.npages) errno('EFAULT', 'beyond the end of the file (SIGBUS)');
    return this.fs.blockPfn(this.slot, Math.floor(page / HPAGE_PAGES)) + (page % HPAGE_PAGES);
  }

  runs(page: number, n: number, out: RunList, base: number): void {
    // The size is read from the inode once, not once per block.
    if (page + n > this.npages) errno('EFAULT', 'beyond the end of the file (SIGBUS)');
    for (let off = 0; off < n; ) {
      const p = page + off;
      const len = Math.min(n - off, HPAGE_PAGES - (p % HPAGE_PAGES));
      out.push(base + off, this.fs.blockPfn(this.slot, Math.floor(p / HPAGE_PAGES)) + (p % HPAGE_PAGES), len);
      off += len;
    }
  }

  /**
   * `guestmemfs_pin_file`: a piece of a persistent iommufd area maps this file. The pin is
   * recorded with its owner and geometry (pins.ts); returns the record's handle. ENOMEM when the
   * pin table is full.
   */
  pin(rec: Omit<PinRecord, 'ino'>): number {
    const h = this.fs.pinTable.add({ ...rec, ino: this.ino });
    this.fs.setU32(this.slot, 40, this.pins + 1);
    return h;
  }

  /** `guestmemfs_unpin_file`; the last pin of an unlinked, closed file frees it. */
  unpin(handle: number): void {
    if (this.pins === 0 || this.fs.pinTable.get(handle)?.ino !== this.ino) throw new Error(`guestmemfs: unbalanced unpin of inode ${this.ino}`);
    this.fs.pinTable.remove(handle);
    this.fs.setU32(this.slot, 40, this.pins - 1);
    if (this.pins === 0) this.fs.maybeFree(this.slot);
  }
}

/** An open guestmemfs file (or its root directory). */
export class GuestmemfsFile extends File {
  constructor(
    readonly inode: GuestmemfsInode | null,
    flags: number,
    path: string,
  ) {
    super(flags, path);
    inode?.get();
  }

  read(): Uint8Array {
    // The data is not in the direct map: mmap is the only way in.
    return errno(this.inode ? 'EINVAL' : 'EISDIR', 'guestmemfs has no read()');
  }

  write(): number {
    return errno('EINVAL', 'guestmemfs has no write()');
  }

  truncate(_task: Task, length: bigint): void {
    if (!this.inode) errno('EISDIR', 'a directory');
    this.inode.fs.truncate(this.inode, length);
  }

  mmapObject(_task: Task, _pgoff: number, _npages: number, flags: number): Backing {
    if (!this.inode) return errno('ENODEV', 'a directory');
    if ((flags & MAP_TYPE) !== MAP_SHARED) errno('EINVAL', 'guestmemfs maps MAP_SHARED only');
    return this.inode;
  }

  mapFileObject(): Backing | undefined {
    return this.inode ?? undefined;
  }

  protected release(): void {
    this.inode?.put();
  }
}
