// guestmemfs: guest RAM that survives kexec. A contiguous carve-out taken at cold boot, handed out
// in 2 MiB blocks; the superblock, inode table, block bitmap and per-file block maps live in the
// carve-out itself, so handing the region over (KHO) hands the whole filesystem over.
//
// Layout of block 0 (metadata), all little-endian:
//   0x0000 superblock   magic u64 "GMEMFS01", version u32 (2), flags u32 (bit 0: serialised),
//                       base u64, nblocks u64, max_inodes u32, inode_size u32,
//                       inode_table u64 (offset), bitmap u64 (offset),
//                       pin_table u64 (offset) @56, pin_used u32 @64, pin_slots u32 @68
//   0x1000 inode table  max_inodes × 256 B: flags u32 (bit 0: in use) @0, mode u32 @4,
//                       ino u64 @8, size u64 @16, map_block u64 @24, nblocks u64 @32,
//                       long_term_pins u32 @40, nlink u32 @44, uid u32 @48, gid u32 @52,
//                       name (NUL-terminated, ≤ 191 B) @64
//   bitmap              one bit per block (block 0 = this metadata block)
//   pin table           the rest of block 0, from the next 4 KiB boundary: long-term pin
//                       records (pins.ts)
// A file's map block (a data-sized block) holds its data blocks' indices, u64 each.
import { invalidArgValue } from '../../errors.js';
import type { PhysicalMemory } from '../../hw/memory.js';
import { errno } from '../../uapi/errno.js';
import { DT_DIR, DT_REG, S_IFDIR, S_IFREG, type Dirent, type Stat } from '../../uapi/stat.js';
import { O_ACCMODE, O_RDONLY } from '../../uapi/mman.js';
import { permitted } from '../cred.js';
import type { File, Task } from '../file.js';
import type { SuperBlock } from '../fs.js';
import { HPAGE_PAGES } from '../mm.js';
import type { KernelServices } from '../services.js';
import type { FdtWriter } from '../../fdt/index.js';
import { le, type Kho, type KhoNode } from '../kho/kho.js';
import { GuestmemfsFile, GuestmemfsInode, type GuestmemfsSuper } from './inode.js';
import { PIN_RECORD_SIZE, PinTable } from './pins.js';

export { GuestmemfsInode } from './inode.js';

export const GUESTMEMFS_BLOCK = 2n << 20n;
const BLOCK_PAGES = HPAGE_PAGES;
const MAGIC = 0x3130_5346_4d45_4d47n; // "GMEMFS01"
/** Version 2 added the long-term pin table. */
const VERSION = 2n;
const MAX_INODES = 1024;
const INODE_SIZE = 256;
const INODE_TABLE = 0x1000;
const BITMAP = INODE_TABLE + MAX_INODES * INODE_SIZE;
const NAME_OFF = 64;
const NAME_MAX = INODE_SIZE - NAME_OFF - 1;
/** Inode numbers: the root directory is 1, slot i is i + 2. */
const ROOT_INO = 1;
/** Block indices one map block holds: the largest file is this many 2 MiB blocks. */
const MAP_ENTRIES = Number(GUESTMEMFS_BLOCK / 8n);
/** The pin table starts after the bitmap and keeps at least this many records. */
const MIN_PIN_SLOTS = 1024;
const pinTableOffset = (nblocks: number): number => Math.ceil((BITMAP + Math.ceil(nblocks / 8)) / 4096) * 4096;
const pinSlots = (nblocks: number): number => (Number(GUESTMEMFS_BLOCK) - pinTableOffset(nblocks)) / PIN_RECORD_SIZE;
/** Superblock fields of the pin table: its offset (u64), then slots used (u32) and slots (u32). */
const SB_PIN_TABLE = 56n;
const SB_PIN_COUNTS = 64n;
/** The largest carve-out: its bitmap and the smallest pin table fit in block 0. */
const MAX_BLOCKS = (Number(GUESTMEMFS_BLOCK) - MIN_PIN_SLOTS * PIN_RECORD_SIZE - BITMAP - 4096) * 8;

/** Parses `16G`, `512M`, `1048576` (memparse). */
export function memparse(s: string): bigint {
  const m = /^(\d+)([KMGTP]?)$/i.exec(s.trim());
  if (!m) throw invalidArgValue(`bad size ${JSON.stringify(s)}`);
  const shift = { '': 0n, K: 10n, M: 20n, G: 30n, T: 40n, P: 50n }[m[2]!.toUpperCase()]!;
  return BigInt(m[1]!) << shift;
}

/** The filesystem over the carve-out (one instance, one mount). */
export class Guestmemfs implements GuestmemfsSuper, SuperBlock {
  private readonly inodes = new Map<number, GuestmemfsInode>();
  /** Where it is mounted, or null. */
  mountpoint: string | null = null;
  /** @internal long-term pins with their owners (in block 0). */
  readonly pinTable: PinTable;
  /** Restored from the previous kernel (not formatted at this boot). */
  private readonly handedOver: boolean;

  private constructor(
    private readonly svc: Pick<KernelServices, 'log' | 'pageRefs'>,
    readonly memory: PhysicalMemory,
    /** Physical base of the carve-out. */
    readonly base: bigint,
    readonly nblocks: number,
    pinTable?: PinTable,
  ) {
    this.pinTable = pinTable ?? new PinTable(memory, base + BigInt(pinTableOffset(nblocks)), pinSlots(nblocks), base + SB_PIN_COUNTS);
    this.handedOver = pinTable !== undefined;
  }

  /**
   * Cold boot: takes `size` (rounded down to 2 MiB blocks) from the top of memory, out of the
   * page allocator, and writes an empty filesystem into its first block.
   */
  static carveOut(svc: Pick<KernelServices, 'log' | 'pageRefs'>, memory: PhysicalMemory, size: bigint): Guestmemfs | null {
    const nblocks = Number(size / GUESTMEMFS_BLOCK);
    if (nblocks < 2) {
      svc.log(`guestmemfs: ${size} bytes is less than two 2 MiB blocks; not reserved`);
      return null;
    }
    if (nblocks > MAX_BLOCKS) {
      svc.log(`guestmemfs: ${size} bytes is more than ${MAX_BLOCKS} blocks of 2 MiB; not reserved`);
      return null;
    }
    const len = BigInt(nblocks) * GUESTMEMFS_BLOCK;
    // memblock allocates top-down: the highest aligned range the allocator still has free.
    for (let base = ((memory.size - len) / GUESTMEMFS_BLOCK) * GUESTMEMFS_BLOCK; base >= 0n; base -= GUESTMEMFS_BLOCK) {
      try {
        memory.claim(base, len);
      } catch {
        if (base < memory.size - len - (1n << 34n)) break; // give up after 16 GiB of attempts
        continue;
      }
      const fs = new Guestmemfs(svc, memory, base, nblocks);
      fs.format();
      svc.log(`guestmemfs: reserved ${len >> 20n} MiB at 0x${base.toString(16)} (${nblocks} blocks of 2 MiB)`);
      return fs;
    }
    svc.log(`guestmemfs: cannot reserve ${len >> 20n} MiB of contiguous memory`);
    return null;
  }

  private format(): void {
    this.memory.fill(this.base, GUESTMEMFS_BLOCK, 0);
    const sb = this.base;
    this.memory.writeU64(sb, MAGIC);
    this.memory.writeU64(sb + 8n, VERSION); // flags 0
    this.memory.writeU64(sb + 16n, this.base);
    this.memory.writeU64(sb + 24n, BigInt(this.nblocks));
    this.memory.writeU64(sb + 32n, BigInt(MAX_INODES) | (BigInt(INODE_SIZE) << 32n));
    this.memory.writeU64(sb + 40n, BigInt(INODE_TABLE));
    this.memory.writeU64(sb + 48n, BigInt(BITMAP));
    this.memory.writeU64(sb + SB_PIN_TABLE, BigInt(pinTableOffset(this.nblocks)));
    this.memory.writeU64(sb + SB_PIN_COUNTS, BigInt(this.pinTable.slots) << 32n); // none used yet
    this.setBit(0, true);
  }

  // ---- metadata accessors (all reads and writes go to the carve-out) ---------------------------

  private inodeAddr(slot: number): bigint {
    return this.base + BigInt(INODE_TABLE + slot * INODE_SIZE);
  }
  /** @internal */
  u32(slot: number, off: number): number {
    const a = this.inodeAddr(slot) + BigInt(off);
    const w = this.memory.readU64(a & ~7n);
    return Number((a & 7n ? w >> 32n : w) & 0xffff_ffffn);
  }
  /** @internal */
  setU32(slot: number, off: number, v: number): void {
    const a = this.inodeAddr(slot) + BigInt(off);
    const w = this.memory.readU64(a & ~7n);
    const nw = a & 7n ? (w & 0xffff_ffffn) | (BigInt(v) << 32n) : (w & ~0xffff_ffffn) | BigInt(v);
    this.memory.writeU64(a & ~7n, nw);
  }
  private u64(slot: number, off: number): bigint {
    return this.memory.readU64(this.inodeAddr(slot) + BigInt(off));
  }
  private setU64(slot: number, off: number, v: bigint): void {
    this.memory.writeU64(this.inodeAddr(slot) + BigInt(off), v);
  }
  /** @internal file size in bytes */
  size(slot: number): bigint {
    return this.u64(slot, 16);
  }
  private inUse(slot: number): boolean {
    return (this.u32(slot, 0) & 1) === 1;
  }
  private nlink(slot: number): number {
    return this.u32(slot, 44);
  }
  private fileBlocks(slot: number): number {
    return Number(this.u64(slot, 32));
  }
  private mapBlock(slot: number): number {
    return Number(this.u64(slot, 24));
  }
  private blockAddr(block: number): bigint {
    return this.base + BigInt(block) * GUESTMEMFS_BLOCK;
  }
  /**
   * Block index → first PFN, per slot: read from the file's block map in one go and dropped
   * whenever the map changes (the map in memory stays the truth).
   */
  private readonly maps = new Map<number, Float64Array>();

  /** @internal PFN of the first page of the file's `i`th data block. */
  blockPfn(slot: number, i: number): number {
    let map = this.maps.get(slot);
    if (!map) {
      map = this.dataBlocks(slot);
      // Block b's first PFN, in plain numbers (the region's PFN plus 512 a block).
      const basePfn = Number(this.base >> 12n);
      for (let k = 0; k < map.length; k++) map[k] = basePfn + map[k]! * BLOCK_PAGES;
      this.maps.set(slot, map);
    }
    return map[i]!;
  }

  /** The file's data block indices, read from its map block in one go (no bigint per block). */
  private dataBlocks(slot: number): Float64Array {
    const n = Math.min(this.fileBlocks(slot), MAP_ENTRIES);
    if (!n) return new Float64Array(0);
    const raw = this.memory.read(this.blockAddr(this.mapBlock(slot)), n * 8);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.length);
    const out = new Float64Array(n);
    for (let k = 0; k < n; k++) out[k] = dv.getUint32(k * 8, true) + dv.getUint32(k * 8 + 4, true) * 2 ** 32;
    return out;
  }

  private setBit(block: number, on: boolean): void {
    const a = this.base + BigInt(BITMAP) + BigInt(block >> 6) * 8n;
    const w = this.memory.readU64(a);
    const m = 1n << BigInt(block & 63);
    this.memory.writeU64(a, on ? w | m : w & ~m);
  }

  /** Whether KHO has serialised the filesystem (set by DUMP, cleared by ABORT). */
  get serialised(): boolean {
    return (this.memory.readU64(this.base + 8n) >> 32n & 1n) === 1n;
  }
  private setSerialised(on: boolean): void {
    const w = this.memory.readU64(this.base + 8n);
    this.memory.writeU64(this.base + 8n, on ? w | (1n << 32n) : w & ~(1n << 32n));
  }

  /**
   * KHO notifier, `KEXEC_KHO_DUMP`: the metadata is frozen from now on; with a writer, the
   * `/guestmemfs` node is written and the whole carve-out (metadata and data) preserved.
   */
  khoDump(w?: FdtWriter, kho?: Kho): void {
    this.setSerialised(true);
    this.pinTable.freeze();
    if (!w || !kho) return;
    const len = BigInt(this.nblocks) * GUESTMEMFS_BLOCK;
    kho.inject('guestmemfs:dump');
    w.beginNode('guestmemfs');
    w.propertyString('compatible', 'guestmemfs-v0');
    w.property('base', le.u64(this.base));
    w.property('nblocks', le.u64(BigInt(this.nblocks)));
    w.property('mem', le.mem([{ addr: this.base, len }]));
    w.endNode();
    kho.preserveRange(this.base, len);
  }

  /** KHO notifier, `KEXEC_KHO_ABORT`: writable again; inodes freed meanwhile go now. */
  khoAbort(): void {
    this.setSerialised(false);
    this.pinTable.thaw();
    for (const slot of [...this.index().used]) this.maybeFree(slot);
  }

  /**
   * The next kernel: adopts the region the `/guestmemfs` node names, after checking it is what
   * was handed over (allocated, the superblock's magic, base and size). The files, blocks and
   * bytes are the old ones; the serialised flag stays until the filesystem is mounted again.
   */
  static restore(svc: Pick<KernelServices, 'log' | 'pageRefs'>, memory: PhysicalMemory, node: KhoNode): Guestmemfs {
    if (node.string('compatible') !== 'guestmemfs-v0') errno('EINVAL', 'guestmemfs: unknown compatible');
    const base = node.u64('base');
    const nblocks = node.u64('nblocks');
    const mem = node.mem('mem');
    const len = nblocks * GUESTMEMFS_BLOCK;
    if (nblocks < 2n || nblocks > 1n << 31n || base % GUESTMEMFS_BLOCK !== 0n || base + len > memory.size) errno('EINVAL', 'guestmemfs: region out of range');
    if (mem.length !== 1 || mem[0]!.addr !== base || mem[0]!.len !== len) errno('EINVAL', 'guestmemfs: mem does not match the region');
    if (!memory.isAllocated(base, len)) errno('EINVAL', 'guestmemfs: the region was not preserved');
    if (memory.readU64(base) !== MAGIC || memory.readU64(base + 16n) !== base || memory.readU64(base + 24n) !== nblocks) {
      errno('EINVAL', 'guestmemfs: the superblock does not match');
    }
    if ((memory.readU64(base + 8n) & 0xffff_ffffn) !== VERSION) errno('EINVAL', `guestmemfs: superblock version ${memory.readU64(base + 8n) & 0xffff_ffffn}, want ${VERSION}`);
    // A superblock-looking block inside another filesystem's region is a file's data (a guest can
    // write anything into its RAM): only the lowest superblock of a preserved run is metadata.
    for (let at = base - GUESTMEMFS_BLOCK; at >= 0n && memory.isAllocated(at, GUESTMEMFS_BLOCK); at -= GUESTMEMFS_BLOCK) {
      if (memory.readU64(at) === MAGIC && memory.readU64(at + 16n) === at && at + memory.readU64(at + 24n) * GUESTMEMFS_BLOCK > base) {
        errno('EINVAL', `guestmemfs: 0x${base.toString(16)} lies inside the filesystem at 0x${at.toString(16)}`);
      }
    }
    const n = Number(nblocks);
    if (n > MAX_BLOCKS) errno('EINVAL', 'guestmemfs: region out of range');
    const off = pinTableOffset(n);
    const slots = pinSlots(n);
    if (memory.readU64(base + SB_PIN_TABLE) !== BigInt(off) || Number(memory.readU64(base + SB_PIN_COUNTS) >> 32n) !== slots) errno('EINVAL', 'guestmemfs: the pin table is not where the superblock says');
    const fs = new Guestmemfs(svc, memory, base, n, PinTable.load(memory, base + BigInt(off), slots, base + SB_PIN_COUNTS, MAX_INODES + 1));
    svc.log(`guestmemfs: restored ${len >> 20n} MiB at 0x${base.toString(16)} from KHO`);
    fs.reclaimOrphanBlocks();
    return fs;
  }

  /**
   * After a handover: a block the bitmap marks that no inode owns was waiting in the old kernel
   * for a device's pin to go (a truncated or freed file's block a domain still mapped). Those pins
   * died with that kernel; nothing here can reach the block, so it is free again.
   */
  private reclaimOrphanBlocks(): void {
    // One flag a block (a map naming a block past the region sets nothing).
    const owned = new Uint8Array(this.nblocks);
    owned[0] = 1;
    for (const slot of this.index().used) {
      const map = this.mapBlock(slot);
      if (!map) continue;
      owned[map] = 1;
      for (const b of this.dataBlocks(slot)) owned[b] = 1;
    }
    const bm = this.bitmap();
    let n = 0;
    for (let b = 0; b < this.nblocks; b++) {
      if (!((bm[b >> 3]! >> (b & 7)) & 1) || owned[b]) continue;
      this.setBit(b, false);
      n++;
    }
    if (n) this.svc.log(`guestmemfs: ${n} blocks no file owns were waiting for the previous kernel's DMA pins; free again`);
  }

  /**
   * After a handover: the records in `keep` (pins and their holders) are held again by the
   * handed-over contexts this kernel accepted; every other record was the old kernel's and goes,
   * and each file's pin count is recounted from what is left.
   */
  keepPins(keep: ReadonlySet<number>): void {
    if (!this.handedOver) return;
    const count = new Map<number, number>();
    let dropped = 0;
    for (const [h, rec] of [...this.pinTable.entries()]) {
      if (keep.has(h) && this.index().used.has(rec.ino - 2)) count.set(rec.ino - 2, (count.get(rec.ino - 2) ?? 0) + 1);
      else {
        this.pinTable.remove(h);
        dropped++;
      }
    }
    for (const slot of this.index().used) if (this.u32(slot, 40) !== (count.get(slot) ?? 0)) this.setU32(slot, 40, count.get(slot) ?? 0);
    for (const [h] of [...this.pinTable.holders()]) if (!keep.has(h)) this.pinTable.remove(h);
    if (dropped) this.svc.log(`guestmemfs: ${dropped} long-term pins of the previous kernel released (no accepted context holds them)`);
  }

  /** The inode of `ino` (for KHO restore of iommufd areas), if it exists. */
  inodeByIno(ino: number): GuestmemfsInode | undefined {
    const slot = ino - 2;
    if (slot < 0 || slot >= MAX_INODES || !this.index().used.has(slot)) return undefined;
    return this.inode(slot);
  }

  /** PFN behind byte `offset` of inode `ino`'s data, or -1 beyond its end. */
  filePfn(ino: number, page: number): number {
    const slot = ino - 2;
    if (page >= Number((this.size(slot) + 4095n) / 4096n)) return -1;
    return this.blockPfn(slot, Math.floor(page / BLOCK_PAGES)) + (page % BLOCK_PAGES);
  }

  /** The block bitmap, read in one go. */
  private bitmap(): Uint8Array {
    return this.memory.read(this.base + BigInt(BITMAP), Math.ceil(this.nblocks / 8));
  }

  /** Free 2 MiB data blocks. */
  freeBlocks(): number {
    const bm = this.bitmap();
    let n = 0;
    for (let b = 0; b < this.nblocks; b++) if (!((bm[b >> 3]! >> (b & 7)) & 1)) n++;
    return n;
  }

  /** `guestmemfs_alloc_block` × n, lowest first, all or nothing. */
  private allocBlocks(n: number): number[] {
    const bm = this.bitmap();
    const got: number[] = [];
    for (let b = 1; b < this.nblocks && got.length < n; b++) if (!((bm[b >> 3]! >> (b & 7)) & 1)) got.push(b);
    if (got.length < n) errno('ENOMEM', `guestmemfs: ${n} blocks wanted, ${got.length} free`);
    for (const b of got) {
      this.setBit(b, true);
      // New blocks read as zeros: a reused block never shows a deleted file's bytes.
      this.memory.fill(this.blockAddr(b), GUESTMEMFS_BLOCK, 0);
    }
    return got;
  }

  // ---- namespace ---------------------------------------------------------------------------------

  /**
   * Name → slot, derived from the inode table (which stays the truth in memory): built by one
   * scan of the table on first use, then kept in step by create, unlink and free.
   */
  private names: Map<string, number> | null = null;
  /** Slots in use, for the same reason. */
  private used: Set<number> | null = null;

  private index(): { names: Map<string, number>; used: Set<number> } {
    if (!this.names || !this.used) {
      const table = this.memory.read(this.base + BigInt(INODE_TABLE), MAX_INODES * INODE_SIZE);
      const dv = new DataView(table.buffer, table.byteOffset, table.length);
      this.names = new Map();
      this.used = new Set();
      for (let s = 0; s < MAX_INODES; s++) {
        const at = s * INODE_SIZE;
        if (!(dv.getUint32(at, true) & 1)) continue;
        this.used.add(s);
        if (dv.getUint32(at + 44, true) === 0) continue;
        const raw = table.subarray(at + NAME_OFF, at + INODE_SIZE);
        const end = raw.indexOf(0);
        this.names.set(new TextDecoder().decode(raw.subarray(0, end < 0 ? raw.length : end)), s);
      }
    }
    return { names: this.names, used: this.used };
  }

  private lookupSlot(name: string): number {
    return this.index().names.get(name) ?? -1;
  }

  private inode(slot: number): GuestmemfsInode {
    let i = this.inodes.get(slot);
    if (!i) this.inodes.set(slot, (i = new GuestmemfsInode(this, slot)));
    return i;
  }

  /** The name under the mount point, or null when `path` is not inside it. */
  relative(path: string): string | null {
    if (!this.mountpoint) return null;
    if (path === this.mountpoint || path === this.mountpoint + '/') return '';
    return path.startsWith(this.mountpoint + '/') ? path.slice(this.mountpoint.length + 1) : null;
  }

  /** `open` of `name` (relative to the mount; '' = the root directory). */
  open(task: Task, name: string, flags: number, mode: number, path: string): File {
    const O_CREAT = 0o100;
    const O_EXCL = 0o200;
    const O_TRUNC = 0o1000;
    if (name === '') {
      if ((flags & O_ACCMODE) !== O_RDONLY) errno('EISDIR', 'the root directory');
      return new GuestmemfsFile(null, flags, path);
    }
    if (name.includes('/')) errno('ENOENT', 'guestmemfs is one flat directory');
    let slot = this.lookupSlot(name);
    if (slot >= 0 && flags & O_CREAT && flags & O_EXCL) errno('EEXIST', `${name} exists`);
    if (slot < 0) {
      if (!(flags & O_CREAT)) errno('ENOENT', `no file ${name}`);
      slot = this.create(task, name, mode);
    } else {
      this.permission(task, slot, (flags & O_ACCMODE) === O_RDONLY ? 4 : (flags & O_ACCMODE) === 1 ? 2 : 6);
    }
    const file = new GuestmemfsFile(this.inode(slot), flags, path);
    if (flags & O_TRUNC && (flags & O_ACCMODE) !== O_RDONLY) {
      try {
        this.truncate(this.inode(slot), 0n);
      } catch (e) {
        file.put();
        throw e;
      }
    }
    return file;
  }

  /** `inode_permission`: EACCES unless `task` may access the file with `want` (4 r, 2 w). */
  permission(task: Task, slot: number, want: number): void {
    const m = this.u32(slot, 4);
    if (!permitted(task, m, this.u32(slot, 48), this.u32(slot, 52), want)) errno('EACCES', `inode ${slot + 2} is ${(m & 0o7777).toString(8)}`);
  }

  private create(task: Task, name: string, mode: number): number {
    if (this.serialised) errno('EBUSY', 'guestmemfs is serialised for KHO');
    if (new TextEncoder().encode(name).length > NAME_MAX) errno('ENAMETOOLONG', `names are at most ${NAME_MAX} bytes`);
    const { names, used } = this.index();
    let slot = 0;
    while (slot < MAX_INODES && used.has(slot)) slot++;
    if (slot === MAX_INODES) errno('ENOSPC', 'no free inode');
    this.memory.fill(this.inodeAddr(slot), BigInt(INODE_SIZE), 0);
    this.setU32(slot, 0, 1);
    this.setU32(slot, 4, S_IFREG | (mode & 0o7777));
    this.setU64(slot, 8, BigInt(slot + 2));
    this.setU32(slot, 48, task.uid);
    this.setU32(slot, 52, task.gid);
    this.setU32(slot, 44, 1);
    this.memory.write(this.inodeAddr(slot) + BigInt(NAME_OFF), new TextEncoder().encode(name));
    used.add(slot);
    names.set(name, slot);
    return slot;
  }

  /** `ftruncate`: whole 2 MiB blocks cover `[0, length)`; growing is all or nothing (ENOMEM). */
  truncate(inode: GuestmemfsInode, length: bigint): void {
    if (this.serialised) errno('EBUSY', 'guestmemfs is serialised for KHO');
    const slot = inode.slot;
    const have = this.fileBlocks(slot);
    const want = Number((length + GUESTMEMFS_BLOCK - 1n) / GUESTMEMFS_BLOCK);
    if (want > MAP_ENTRIES) errno('EFBIG', 'beyond the largest guestmemfs file');
    if (want < have && inode.pins > 0) errno('EBUSY', 'shrinking a file pinned for persistent DMA');
    if (want > have) {
      const needMap = this.mapBlock(slot) === 0 ? 1 : 0;
      const got = this.allocBlocks(want - have + needMap);
      if (needMap) this.setU64(slot, 24, BigInt(got.shift()!));
      const map = this.blockAddr(this.mapBlock(slot));
      got.forEach((b, i) => this.memory.writeU64(map + BigInt(have + i) * 8n, BigInt(b)));
    } else if (want < have) {
      const map = this.blockAddr(this.mapBlock(slot));
      for (let i = want; i < have; i++) {
        this.releaseBlock(Number(this.memory.readU64(map + BigInt(i) * 8n)));
        this.memory.writeU64(map + BigInt(i) * 8n, 0n);
      }
      if (want === 0) {
        this.setBit(this.mapBlock(slot), false);
        this.setU64(slot, 24, 0n);
      }
    }
    this.setU64(slot, 32, BigInt(want));
    this.maps.delete(slot);
    this.setU64(slot, 16, length);
  }

  /** `unlink`: EBUSY while pinned by a persistent iommufd (or while serialised). */
  unlink(name: string): void {
    if (name === '' || name.includes('/')) errno(name === '' ? 'EISDIR' : 'ENOENT', 'not a file of guestmemfs');
    const slot = this.lookupSlot(name);
    if (slot < 0) errno('ENOENT', `no file ${name}`);
    if (this.u32(slot, 40) > 0) errno('EBUSY', `${name} is pinned for persistent DMA`);
    if (this.serialised) errno('EBUSY', 'guestmemfs is serialised for KHO');
    this.setU32(slot, 44, 0);
    this.index().names.delete(name);
    this.maybeFree(slot);
  }

  /** @internal the last open file or mapping of an inode went away. */
  lastClose(inode: GuestmemfsInode): void {
    this.inodes.delete(inode.slot);
    this.maybeFree(inode.slot);
  }

  /** @internal frees an inode nothing names, opens, maps or pins any more. */
  maybeFree(slot: number): void {
    // Serialised metadata does not change: an inode that becomes free meanwhile goes at ABORT.
    if (this.serialised) return;
    // A cached inode nothing holds (looked up by ino for a KHO restore) does not keep it.
    if (this.inUse(slot) && this.nlink(slot) === 0 && !this.inodes.get(slot)?.referenced && this.u32(slot, 40) === 0) {
      this.inodes.delete(slot);
      this.freeSlot(slot);
    }
  }

  /**
   * Returns a data block to the bitmap, or, while a device still has pages of it pinned, when
   * the last pin goes: a block a domain maps is never handed to another file.
   */
  private releaseBlock(block: number): void {
    const pfn = Number(this.blockAddr(block) >> 12n);
    this.svc.pageRefs.release(pfn, 9, () => this.setBit(block, false));
  }

  private freeSlot(slot: number): void {
    const map = this.mapBlock(slot);
    if (map) {
      const addr = this.blockAddr(map);
      for (let i = 0; i < this.fileBlocks(slot); i++) this.releaseBlock(Number(this.memory.readU64(addr + BigInt(i) * 8n)));
      this.setBit(map, false);
    }
    this.memory.fill(this.inodeAddr(slot), BigInt(INODE_SIZE), 0);
    this.index().used.delete(slot);
    this.maps.delete(slot);
  }

  /** `stat` of `name` ('' = the root directory). */
  stat(name: string): Stat {
    if (name === '') {
      return { st_dev: 0x2d, st_ino: BigInt(ROOT_INO), st_mode: S_IFDIR | 0o755, st_nlink: 2, st_uid: 0, st_gid: 0, st_size: 0n, st_blksize: 4096, st_blocks: 0n };
    }
    const slot = name.includes('/') ? -1 : this.lookupSlot(name);
    if (slot < 0) errno('ENOENT', `no file ${name}`);
    return {
      st_dev: 0x2d,
      st_ino: this.u64(slot, 8),
      st_mode: this.u32(slot, 4),
      st_nlink: this.nlink(slot),
      st_uid: this.u32(slot, 48),
      st_gid: this.u32(slot, 52),
      st_size: this.size(slot),
      st_blksize: Number(GUESTMEMFS_BLOCK),
      st_blocks: (BigInt(this.fileBlocks(slot)) * GUESTMEMFS_BLOCK) / 512n,
    };
  }

  /** `getdents64` of the root directory. */
  readdir(name: string): Dirent[] {
    if (name !== '') errno(name.includes('/') || this.lookupSlot(name) < 0 ? 'ENOENT' : 'ENOTDIR', 'guestmemfs is one flat directory');
    const out: Dirent[] = [
      { d_ino: BigInt(ROOT_INO), d_type: DT_DIR, d_name: '.' },
      { d_ino: BigInt(ROOT_INO), d_type: DT_DIR, d_name: '..' },
    ];
    const bySlot = [...this.index().names].sort((a, b) => a[1] - b[1]);
    for (const [name, s] of bySlot) out.push({ d_ino: BigInt(s + 2), d_type: DT_REG, d_name: name });
    return out;
  }
}
