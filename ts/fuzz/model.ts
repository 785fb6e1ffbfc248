// The reference model of what user space and devices can observe of the simulated host, and the
// planner that turns a fuzzer operation into concrete system calls with their expected outcomes.
//
// Every rule here is written from the kernel's rules as the references state them, not from the
// simulator's code:
//   - /work/shared/reference/iommufd-uapi.md §4 (errno order of MAP, MAP_FILE, COPY, UNMAP,
//     ALLOW_IOVAS, IOVA_RANGES, DESTROY), §5 (automatic IOVA allocation), §6 (object ids, lowest
//     free per context; DESTROY is EBUSY while referenced, a bound device is always referenced by
//     its driver), §7 (areas, iopt_pages shared by COPY, pins per iopt_pages), §10 (checklist);
//   - drivers/iommu/iommufd/device.c (attach finds the IOAS's automatic HWPT or allocates one,
//     a second attach replaces, detach destroys an automatic HWPT with its last device, the MSI
//     window is reserved per attached device, the aperture per domain);
//   - VT-d (reference vtd.md): a PTE is present iff R or W, a read of a non-readable page faults
//     0x6 and a write of a non-writable one 0x5, beyond MGAW 0x4, no context entry 0x1/0x2;
//   - /work/shared/reference/persistence-rfc.md §1.4 (persistent ids: global, lowest free from 1,
//     SET on a context with objects is EFAULT), §1.8 (re-hydration through
//     /sys/kernel/iommufd_persisted/<id>/iommufd returns an fd of the reader; ids from 1), §1.9
//     (guestmemfs-only maps, file pins, unlink EBUSY), §2 (guestmemfs: 2 MiB blocks, ENOMEM when
//     full, EBUSY while serialised, a mappings block per file), §3.1 (KHO active/DUMP/ABORT), and
//     the project's completions listed at its end (every VMA checked, pins per area, claim once,
//     re-hydrated context stays persistent and bound to its domain, only persistent devices keep
//     translating through kexec, domains verified before adoption);
//   - README.md's statements of the simulated kernel's contract (freeze while KHO is active, a
//     restored area per file segment, restored HWPTs behave as automatic ones and are held by
//     each device still on them until it leaves (its MSI window with it; unbind blocks it), bus
//     mastering cleared at kexec for every device whose DMA is not handed over and set again by
//     VFIO bind; pins of the old kernel end with it, so what only they kept is free after the jump).
// Where the references leave an order or an outcome open, the model accepts each reading (an
// errno set, or "unknown" for a device's translation) instead of guessing the simulator's choice.
import {
  DmaFault,
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_PERSISTENT,
  LINUX_REBOOT_CMD_KEXEC,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_SHARED,
  O_CREAT,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  SyscallError,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  type Host,
  type Process,
} from '../index.js';
import { allocIova, byStart, clampU64, holes, minB, overlaps, PAGE, ULONG_MAX, U64_MAX, type Range } from './intervals.js';
import type { IovaChoice, Op } from './ops.js';

// ---- the world ---------------------------------------------------------------------------------

/** The fixed shape of every fuzzed host. */
export interface WorldConfig {
  /** Host RAM. */
  memory: bigint;
  /** guestmemfs carve-out in MiB (2 MiB blocks; block 0 holds the metadata). */
  guestmemfsMiB: number;
  /** PCI devices (vfio0, vfio1, ...). */
  devices: string[];
}

export const DEFAULT_WORLD: WorldConfig = {
  memory: 4n << 30n,
  guestmemfsMiB: 32,
  devices: ['0000:01:00.0', '0000:02:00.0'],
};

export const MNT = '/mnt/guestmemfs';
const CHUNK_PAGES = 512; // 2 MiB: a guestmemfs block, or a piece of anonymous / memfd memory
const BLOCK = 2n << 20n;
const MAX_FILE_BLOCKS = 8;
const FILE_SLOTS = 3;
const CTX_SLOTS = 3;
const R = IOMMU_IOAS_MAP_READABLE;
const W = IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;
const RWP = PROT_READ | PROT_WRITE;
const APERTURE_LAST = (1n << 48n) - 1n;
const MSI: Range = { start: 0xfee0_0000n, last: 0xfeef_ffffn };

/** The VMM's address space: fixed windows so that operations can name memory by source. */
export const VA_ANON = 0x4000_0000n;
const ANON_PAGES = 1024;
export const VA_MEMFD = 0x5000_0000n;
const MEMFD_PAGES = 512;
const VA_HOLE = 0x6000_0000n;
/** guestmemfs file slot i is mapped at VA_FILE + i * 16 MiB, as long as the file is. */
export const VA_FILE = 0x10_0000_0000n;
const FILE_STRIDE = BigInt(MAX_FILE_BLOCKS) * BLOCK;
const pageOf = (va: bigint) => Number(va >> 12n);

/** Where MAP / CPU operations take their user addresses: anon, memfd, file 0..2, a hole. */
function srcBase(src: number): bigint {
  if (src === 0) return VA_ANON;
  if (src === 1) return VA_MEMFD;
  if (src >= 2 && src <= 4) return VA_FILE + BigInt(src - 2) * FILE_STRIDE;
  return VA_HOLE;
}
function srcSpan(src: number): bigint {
  if (src === 0) return BigInt(ANON_PAGES) * PAGE;
  if (src === 1) return BigInt(MEMFD_PAGES) * PAGE;
  if (src >= 2 && src <= 4) return FILE_STRIDE;
  return BLOCK;
}

const ABS_BASES = [0n, 0x1000n, 0x10_0000n, 0x20_0000n, 0x1_0000_0000n, MSI.start - 0x2000n, MSI.last + 1n - 0x1000n, APERTURE_LAST + 1n - 0x2000n, ULONG_MAX - 0x1fffn, ULONG_MAX];
const ABS_DMA = [0n, 0x1000n, 0x20_0000n, 0x1_0000_0000n, MSI.start, APERTURE_LAST + 1n - 8n, APERTURE_LAST + 1n, 1n << 52n];
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


// ---- model state -------------------------------------------------------------------------------

/** A file a MAP_FILE or a mapping can be backed by: a guestmemfs inode or the memfd. */
interface MFile {
  kind: 'gm' | 'memfd';
  /** Backing page id of file page `fp`, or null past the end of the file. */
  pageId(fp: number): number | null;
}

export class MInode implements MFile {
  readonly kind = 'gm';
  linked = true;
  /** Chunk ids of its 2 MiB blocks, in file order. */
  blocks: number[] = [];
  /** The VMM holds an fd / a mapping of it. */
  fdHeld = true;
  vmaHeld = false;
  constructor(
    readonly id: number,
    readonly name: string,
  ) {}
  pageId(fp: number): number | null {
    const b = this.blocks[fp >> 9];
    return b === undefined ? null : b * CHUNK_PAGES + (fp & 511);
  }
}

class MMemfd implements MFile {
  readonly kind = 'memfd';
  constructor(readonly chunk: number) {}
  pageId(fp: number): number | null {
    return fp < MEMFD_PAGES ? this.chunk * CHUNK_PAGES + fp : null;
  }
}

interface MVma {
  startPg: number;
  npages: number;
  kind: 'anon' | 'memfd' | 'file';
  chunks: number[];
  file: MFile | null;
}

/** One `iopt_pages`: a user range or a file range; COPY shares it. */
export interface MPages {
  id: number;
  kind: 'user' | 'file';
  /** user: VA of byte 0; file: offset of byte 0 in `file`. */
  base: bigint;
  file: MFile | null;
  writable: boolean;
  /** Resolved (pinned) pages: page number (VA page or file page) → backing page id. */
  res: Map<number, number>;
}

/** A guestmemfs segment a persistent area maps (what is serialised and pinned). */
interface Seg {
  iova: bigint;
  inode: MInode;
  off: bigint;
  len: bigint;
}

export interface MArea extends Range {
  pages: MPages;
  /** Offset in `pages` of the area's first byte. */
  off: bigint;
  r: boolean;
  w: boolean;
  /** Persistent contexts only: the guestmemfs segments (each pins its file). */
  segs: Seg[] | null;
}

export interface MIoas {
  t: 'ioas';
  id: number;
  areas: MArea[];
  allowed: Range[];
}
export interface MHwpt {
  t: 'hwpt';
  id: number;
  ioas: MIoas;
  /** Devices attached through iommufd (ATTACH), by index. */
  devs: Set<number>;
  restored: boolean;
  /** Restored from a domain freed after the DUMP: whether the next kernel adopted it is learnt at the claim. */
  uncertain?: boolean;
  /** Not adopted: a number and a place, no object (MCtx.gone). */
  gone?: boolean;
}
interface MDevObj {
  t: 'dev';
  id: number;
  dev: number;
}
type MObj = MIoas | MHwpt | MDevObj;

export class MCtx {
  /** Persistent id (0: not persistent). */
  pid = 0;
  /** The VMM's fd and slot, while it holds one. */
  fd: number | null = null;
  slot: number | null = null;
  readonly objs = new Map<number, MObj>();
  /**
   * Restored HWPTs the kernel did not adopt: their ids stay unused (no object takes them), and
   * while the context is unclaimed a new handover keeps their places (ids in the same order).
   */
  readonly gone: MHwpt[] = [];
  /** Pins of a persisted context count only once it is claimed (a fresh ctx is "claimed"). */
  claimed = true;
  /** Serialised by the last KHO DUMP (frozen while KHO stays active). */
  serialised = false;
  /** Re-hydrated and claimed in this kernel (its sysfs entry exists; a second claim is EBUSY). */
  restoredHere = false;
  dead = false;
  constructor(readonly uid: number) {}
  ioases(): MIoas[] {
    return [...this.objs.values()].filter((o): o is MIoas => o.t === 'ioas').sort((a, b) => a.id - b.id);
  }
  hwpts(): MHwpt[] {
    return [...this.objs.values()].filter((o): o is MHwpt => o.t === 'hwpt').sort((a, b) => a.id - b.id);
  }
  lowestFreeId(): number {
    let id = 1;
    while (this.objs.has(id) || this.gone.some((h) => h.id === id)) id++;
    return id;
  }
}

/** What a device's DMA goes through. */
type Xlate = { k: 'hwpt'; h: MHwpt; ctx: MCtx } | { k: 'blocked' } | { k: 'busoff' } | { k: 'unknown' } | { k: 'rejected' };

export interface MDevice {
  bdf: string;
  /** The restored HWPT a device in an unspecified state may still be translating through. */
  maybe: { h: MHwpt; ctx: MCtx } | null;
  fd: number | null;
  bound: { ctx: MCtx; obj: MDevObj } | null;
  xlate: Xlate;
  /** Attached through ATTACH in the current kernel (not only translating through a restored domain). */
  attached: boolean;
  /** Listed in a serialised domain that it had left by the kexec. */
  staleRestore: boolean;
}

interface SnapCtx {
  ctx: MCtx;
  ioases: {
    ioas: MIoas;
    areas: { start: bigint; last: bigint; r: boolean; w: boolean; segs: Seg[] }[];
    hwpts: { hwpt: MHwpt; devs: number[] }[];
    /**
     * The domain maps exactly the serialised segments' guestmemfs pages (what the next kernel
     * verifies); 'maybe' for a domain freed after the DUMP with nothing serialised in its IOAS.
     */
    verified: boolean | 'maybe';
  }[];
}

// ---- plans: a syscall and what may come back ---------------------------------------------------

/** What the system did. */
export type Obs = { t: 'ok'; v: unknown } | { t: 'err'; code: string; syscall: string } | { t: 'fault'; reason: number; iova: bigint; write: boolean };

/** One acceptable outcome and the model's transition for it. */
export interface Alt {
  /** Success with this value (deep-compared), or any success if `okAny`. */
  ok?: unknown;
  okAny?: boolean;
  /** Custom check of a successful value: an explanation when it does not fit. */
  okCheck?: (v: unknown) => string | null;
  /** One of these errnos. */
  err?: readonly string[];
  /** A DMA fault with one of these reasons at `iova` (write or not). */
  fault?: { reasons: readonly number[]; iova: bigint; write: boolean };
  /** Anything at all (a device in an unspecified state). */
  any?: boolean;
  then?: (obs: Obs) => void;
}

export interface Plan {
  what: string;
  run: (sys: Sys) => unknown;
  alts: Alt[];
}

/** The system under test: the host and the VMM process (replaced at exit and kexec). */
export interface Sys {
  host: Host;
  p: Process;
}

const okv = (v: unknown, then?: (o: Obs) => void): Alt => ({ ok: v, then });
const okAny = (then?: (o: Obs) => void): Alt => ({ okAny: true, then });
const errs = (codes: readonly string[], then?: (o: Obs) => void): Alt => ({ err: codes, then });

/** A generic outcome computed without side effects: an errno, or success with a commit. */
type Outcome<T> = { err: string } | { ok: T; commit: () => void };

const hex = (v: bigint) => `0x${v.toString(16)}`;

// ---- the model ---------------------------------------------------------------------------------

export class Model {
  readonly cfg: WorldConfig;
  generation = 0;
  khoActive = false;
  private snapshot: SnapCtx[] | null = null;
  /** guestmemfs mounted in the running kernel. */
  mounted = false;
  readonly names = new Map<string, MInode>();
  /** Every inode that may still be alive (linked, or unlinked but open, mapped or pinned). */
  private inodes = new Set<MInode>();
  private nextInode = 1;
  private nextChunk = 1;
  private nextPages = 1;
  private nextCtx = 1;
  /** Bytes written so far, per backing page (unwritten pages read as zeros). */
  private readonly mem = new Map<number, Uint8Array>();
  readonly ctxs: MCtx[] = [];
  readonly devices: MDevice[];

  // The VMM process.
  private fds = new Set<number>();
  slots: (MCtx | null)[] = [];
  fileFds: ({ fd: number; inode: MInode } | null)[] = [];
  private vmas: MVma[] = [];
  private memfd: { fd: number; obj: MMemfd } | null = null;

  /** PCI buses with a VT-d context table in the running kernel, and those the last DUMP preserved. */
  private ctxBuses = new Set<number>();
  private dumpedBuses = new Set<number>();
  /** Counters for reports. */
  kexecs = 0;
  /** A corrupted handover ran: what the next kernel kept is not modelled, nothing more is checked. */
  opaque = false;
  constructor(cfg: WorldConfig = DEFAULT_WORLD) {
    this.cfg = cfg;
    this.devices = cfg.devices.map((bdf) => ({ bdf, maybe: null, fd: null, bound: null, xlate: { k: 'blocked' }, attached: false, staleRestore: false }));
  }

  // ---- small helpers ----

  private chunk(): number {
    return this.nextChunk++;
  }
  private allocFd(): number {
    let fd = 3;
    while (this.fds.has(fd)) fd++;
    this.fds.add(fd);
    return fd;
  }
  private peekFd(skip?: number): number {
    let fd = 3;
    while (this.fds.has(fd) || fd === skip) fd++;
    return fd;
  }
  private freeFd(fd: number): void {
    this.fds.delete(fd);
  }
  liveCtxs(): MCtx[] {
    return this.ctxs.filter((c) => !c.dead);
  }
  /**
   * README ("Live update, completing the RFC"): while KHO is active a persistent iommufd is frozen.
   * That covers contexts made persistent after the DUMP too (they were not serialised, and having
   * no domain they hand nothing over).
   */
  frozen(ctx: MCtx): boolean {
    return this.khoActive && ctx.pid > 0;
  }
  private lowestFreePid(): number {
    const used = new Set(this.liveCtxs().map((c) => c.pid));
    let id = 1;
    while (used.has(id)) id++;
    return id;
  }
  hasDomain(ctx: MCtx, io: MIoas): boolean {
    for (const o of ctx.objs.values()) if (o.t === 'hwpt' && o.ioas === io) return true;
    return false;
  }
  alignOf(ctx: MCtx, io: MIoas): bigint {
    return this.hasDomain(ctx, io) ? PAGE : 1n;
  }
  /** Reserved ranges of an IOAS: the aperture's outside per domain, the MSI window per attached device. */
  reservedOf(ctx: MCtx, io: MIoas): Range[] {
    const out: Range[] = [];
    let domain = false;
    for (const o of ctx.objs.values()) if (o.t === 'hwpt' && o.ioas === io) domain = true;
    // The MSI window stays reserved for every device translating through a domain of the IOAS,
    // attached in this kernel or still on a restored domain.
    const msi = this.devices.some((d) => d.xlate.k === 'hwpt' && d.xlate.h.ioas === io);
    if (domain) out.push({ start: APERTURE_LAST + 1n, last: ULONG_MAX });
    if (msi) out.push({ ...MSI });
    return out;
  }
  private ctxOfSlot(c: number): MCtx | null {
    const ctx = this.slots[c] ?? null;
    return ctx && !ctx.dead ? ctx : null;
  }
  private ioasIdFor(ctx: MCtx, pick: number): number {
    if (pick >= 100) return pick - 100;
    const l = ctx.ioases();
    return l.length ? l[pick % l.length]!.id : 1;
  }
  private getIoas(ctx: MCtx, id: number): MIoas | null {
    const o = ctx.objs.get(id);
    return o && o.t === 'ioas' ? o : null;
  }

  // ---- memory ----

  private vmaAt(pg: number): MVma | undefined {
    for (const v of this.vmas) if (pg >= v.startPg && pg < v.startPg + v.npages) return v;
    return undefined;
  }
  /** The backing page behind a user VA page, as the process sees it now (null: EFAULT). */
  private vaPageId(pg: number): number | null {
    const v = this.vmaAt(pg);
    if (!v) return null;
    const i = pg - v.startPg;
    if (v.kind === 'file') return v.file!.pageId(i);
    return v.chunks[i >> 9]! * CHUNK_PAGES + (i & 511);
  }
  private readPage(id: number, off: number, n: number): Uint8Array {
    const p = this.mem.get(id);
    return p ? p.slice(off, off + n) : new Uint8Array(n);
  }
  private writePage(id: number, off: number, bytes: Uint8Array): void {
    let p = this.mem.get(id);
    if (!p) this.mem.set(id, (p = new Uint8Array(4096)));
    p.set(bytes, off);
  }
  /** The guestmemfs segments of [va, va + len) if every byte is a guestmemfs mapping within its file. */
  private gmSegs(va: bigint, len: bigint, iova: bigint): Seg[] | null {
    const segs: Seg[] = [];
    let cur = va;
    const end = va + len;
    while (cur < end) {
      const v = this.vmaAt(pageOf(cur));
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

  private pagesNo(p: MPages, byte: bigint): number {
    return Number((p.base + byte) >> 12n);
  }
  /** The page numbers of `pages` that area-range [off, off + len) uses. */
  private pageSpan(p: MPages, off: bigint, len: bigint): [number, number] {
    return [this.pagesNo(p, off), this.pagesNo(p, off + len - 1n)];
  }
  private resolve(p: MPages, pg: number): number | null {
    // A file that is not a memfd or guestmemfs file (`file` null) never resolves.
    return p.kind === 'user' ? this.vaPageId(pg) : p.file ? p.file.pageId(pg) : null;
  }
  /**
   * Whether the pages [first, last] of `p` can be pinned now: already pinned, or resolvable.
   * Returns the errno of a failed pin: EFAULT (no mapping), or EFAULT/EINVAL past a file's end.
   */
  private pinError(p: MPages, first: number, last: number): readonly string[] | null {
    for (let pg = first; pg <= last; pg++) {
      if (p.res.has(pg)) continue;
      if (this.resolve(p, pg) === null) return p.kind === 'user' ? ['EFAULT'] : ['EFAULT', 'EINVAL'];
    }
    return null;
  }
  /**
   * Brings every iopt_pages' pinned set in line with the areas of IOASes that have a domain:
   * newly needed pages are resolved now (and stay as they were while pinned), unneeded ones dropped.
   */
  private syncPins(): void {
    const need = new Map<MPages, [number, number][]>();
    for (const ctx of this.liveCtxs()) {
      for (const o of ctx.objs.values()) {
        if (o.t !== 'ioas' || !this.hasDomain(ctx, o)) continue;
        for (const a of o.areas) {
          let l = need.get(a.pages);
          if (!l) need.set(a.pages, (l = []));
          l.push(this.pageSpan(a.pages, a.off, a.last - a.start + 1n));
        }
      }
    }
    for (const p of this.allPages()) {
      const spans = need.get(p);
      if (!spans) {
        p.res.clear();
        continue;
      }
      for (const pg of [...p.res.keys()]) if (!spans.some(([f, l]) => pg >= f && pg <= l)) p.res.delete(pg);
      for (const [f, l] of spans) {
        for (let pg = f; pg <= l; pg++) {
          if (p.res.has(pg)) continue;
          const id = this.resolve(p, pg);
          if (id === null) throw new Error(`model: pinning unresolvable page ${pg} of iopt_pages ${p.id}`);
          p.res.set(pg, id);
        }
      }
    }
  }
  private allPages(): Set<MPages> {
    const s = new Set<MPages>();
    for (const ctx of this.liveCtxs()) for (const o of ctx.objs.values()) if (o.t === 'ioas') for (const a of o.areas) s.add(a.pages);
    return s;
  }
  /** host.kernel.pinnedPages(): every pinned page of every iopt_pages of a claimed context. */
  pinnedPages(): number {
    let n = 0;
    const seen = new Set<MPages>();
    for (const ctx of this.liveCtxs()) {
      if (!ctx.claimed) continue;
      for (const o of ctx.objs.values()) {
        if (o.t !== 'ioas') continue;
        for (const a of o.areas) {
          if (seen.has(a.pages)) continue;
          seen.add(a.pages);
          n += a.pages.res.size;
        }
      }
    }
    return n;
  }
  /** Pin count of one backing page (p.pinCount). */
  pinCountOf(pageId: number): number {
    let n = 0;
    const seen = new Set<MPages>();
    for (const ctx of this.liveCtxs()) {
      if (!ctx.claimed) continue;
      for (const o of ctx.objs.values()) {
        if (o.t !== 'ioas') continue;
        for (const a of o.areas) {
          if (seen.has(a.pages)) continue;
          seen.add(a.pages);
          for (const v of a.pages.res.values()) if (v === pageId) n++;
        }
      }
    }
    return n;
  }

  // ---- guestmemfs accounting ----

  /** Long-term pins of an inode: one per persistent area segment mapping it. */
  private ltPins(inode: MInode): number {
    let n = 0;
    for (const ctx of this.liveCtxs()) {
      if (!ctx.pid) continue;
      for (const o of ctx.objs.values()) if (o.t === 'ioas') for (const a of o.areas) if (a.segs) for (const s of a.segs) if (s.inode === inode) n++;
    }
    return n;
  }
  /** An IOAS_MAP_FILE iopt_pages holds a reference on its file (iopt_alloc_file_pages: get_file). */
  private fileRefs(inode: MInode): boolean {
    for (const p of this.allPages()) if (p.kind === 'file' && p.file === inode) return true;
    return false;
  }
  private inodeAlive(i: MInode): boolean {
    return i.linked || i.fdHeld || i.vmaHeld || this.ltPins(i) > 0 || this.fileRefs(i);
  }
  /** Drops inodes nobody reaches any more. */
  private reapInodes(): void {
    for (const i of [...this.inodes]) if (!this.inodeAlive(i)) this.inodes.delete(i);
  }
  /** Free blocks: the carve-out minus metadata, files (with their mappings block) and pinned orphans. */
  gmFreeBlocks(): number {
    const total = this.cfg.guestmemfsMiB / 2;
    let used = 1;
    const held = new Set<number>();
    for (const i of this.inodes) {
      if (!this.inodeAlive(i)) continue;
      if (i.blocks.length) used += i.blocks.length + 1;
      for (const b of i.blocks) held.add(b);
    }
    // Blocks no file holds any more but a domain still maps.
    const gmChunks = this.gmChunks;
    for (const p of this.allPages()) for (const id of p.res.values()) {
      const c = Math.floor(id / CHUNK_PAGES);
      if (gmChunks.has(c) && !held.has(c)) {
        held.add(c);
        used++;
      }
    }
    return total - used;
  }
  /** Chunk ids that are guestmemfs blocks (anonymous / memfd chunks are not in the carve-out). */
  private gmChunks = new Set<number>();

  // ---- devices ----

  /** The IOAS a device translates through, with its context. */
  devIoas(d: MDevice): { ctx: MCtx; io: MIoas } | null {
    return d.xlate.k === 'hwpt' ? { ctx: d.xlate.ctx, io: d.xlate.h.ioas } : null;
  }

  /** Expected outcome of a DMA of `n` bytes at `iova` (fault or bytes), page by page as the engine does. */
  private dmaExpect(d: MDevice, iova: bigint, n: number, write: boolean, data?: Uint8Array): Alt {
    const x = d.xlate;
    if (x.k === 'unknown') return { any: true };
    if (x.k === 'busoff') return { fault: { reasons: [0], iova, write } };
    if (x.k === 'blocked') return { fault: { reasons: [1, 2], iova, write } };
    // Handed over, then refused by the next kernel: blocked, with or without bus mastering.
    if (x.k === 'rejected') return { fault: { reasons: [0, 1, 2], iova, write } };
    const io = x.h.ioas;
    const pieces: { id: number; off: number; n: number; at: number }[] = [];
    let cur = iova;
    let done = 0;
    while (done < n) {
      const pageEnd = (cur | 0xfffn) + 1n;
      const k = Number(minB(pageEnd - cur, BigInt(n - done)));
      let reason = 0;
      let id = -1;
      if (cur > APERTURE_LAST) reason = 0x4;
      else {
        const a = io.areas.find((ar) => ar.start <= cur && cur <= ar.last);
        if (!a || (write ? !a.w : !a.r)) reason = write ? 0x5 : 0x6;
        else {
          const pb = a.off + (cur - a.start);
          const pg = this.pagesNo(a.pages, pb);
          const got = a.pages.res.get(pg);
          if (got === undefined) throw new Error(`model: DMA through an unpinned page ${pg} of iopt_pages ${a.pages.id}`);
          id = got;
        }
      }
      if (reason) {
        const faultAt = cur;
        const before = pieces.slice();
        return {
          fault: { reasons: [reason], iova: faultAt, write },
          then: () => {
            if (write && data) for (const p of before) this.writePage(p.id, p.off, data.subarray(p.at, p.at + p.n));
          },
        };
      }
      pieces.push({ id, off: Number(cur & 0xfffn), n: k, at: done });
      done += k;
      cur += BigInt(k);
    }
    if (write) return okAny(() => { for (const p of pieces) this.writePage(p.id, p.off, data!.subarray(p.at, p.at + p.n)); });
    const want = new Uint8Array(n);
    for (const p of pieces) want.set(this.readPage(p.id, p.off, p.n), p.at);
    return okv(want);
  }

  /** A device whose translation the references leave open: remember what it might still use. */
  private unspecified(d: MDevice): void {
    if (d.xlate.k === 'hwpt') d.maybe = { h: d.xlate.h, ctx: d.xlate.ctx };
    d.xlate = { k: 'unknown' };
  }

  /**
   * Resolves devices in an unspecified state by asking the IOMMU itself (a translation request,
   * independent of bus mastering): no context entry (0x1/0x2) means blocked; a translation or a
   * page-walk fault means it still goes through the domain it might still use.
   */
  private *planProbes(): Generator<Plan, void, void> {
    for (const d of this.devices) {
      if (d.xlate.k !== 'unknown') continue;
      const bdf = d.bdf;
      yield {
        what: `IOMMU verdict for ${bdf} (resolving an unspecified state)`,
        run: (s) => {
          const out = new BigUint64Array(1);
          const faults = new Uint8Array(1);
          s.host.device(bdf).dma.translate(new BigUint64Array([0x1000n]), out, { write: false, faults });
          return faults[0];
        },
        alts: [{ any: true, then: (o) => {
          const reason = o.t === 'ok' ? (o.v as number) : -1;
          const m = d.maybe && !d.maybe.ctx.dead && d.maybe.ctx.objs.get(d.maybe.h.id) === d.maybe.h ? d.maybe : null;
          if (reason === 1 || reason === 2) d.xlate = { k: 'blocked' };
          else if (m) d.xlate = { k: 'hwpt', h: m.h, ctx: m.ctx };
          d.maybe = null;
          if (d.xlate.k === 'blocked' || d.xlate.k === 'hwpt') return;
          d.xlate = { k: 'unknown' };
        } }],
      };
    }
  }

  /**
   * Whether a (pinned) area's pages are the guestmemfs pages its segments name: what the next
   * kernel checks before adopting a domain (persistence-rfc.md, completion 9). A lazily mapped
   * user range pinned after its VMA was replaced by another file fails it.
   */
  private mapsItsSegs(a: MArea): boolean {
    if (!a.segs) return true;
    for (let x = a.start; x <= a.last; x += PAGE) {
      const got = a.pages.res.get(this.pagesNo(a.pages, a.off + (x - a.start)));
      if (got === undefined) return true; // not pinned: no domain maps it
      const sg = a.segs.find((z) => z.iova <= x && x < z.iova + z.len);
      if (!sg || got !== sg.inode.pageId(Number((sg.off + (x - sg.iova)) >> 12n))) return false;
    }
    return true;
  }

  // ---- snapshots and kexec ----

  private takeSnapshot(): void {
    this.snapshot = [];
    for (const ctx of this.liveCtxs()) {
      ctx.serialised = ctx.pid > 0;
      if (!ctx.serialised) continue;
      this.snapshot.push({
        ctx,
        ioases: ctx.ioases().map((io) => ({
          ioas: io,
          areas: io.areas.map((a) => ({ start: a.start, last: a.last, r: a.r, w: a.w, segs: (a.segs ?? []).map((s) => ({ ...s })) })),
          // An unclaimed context hands over the places of the HWPTs it lost too (DOMAIN_GONE).
          hwpts: [...ctx.hwpts(), ...(ctx.claimed ? [] : ctx.gone)]
            .filter((h) => h.ioas === io)
            .sort((a, b) => a.id - b.id)
            .map((h) => ({ hwpt: h, devs: this.devices.map((_, i) => i).filter((i) => { const x = this.devices[i]!.xlate; return x.k === 'hwpt' && x.h === h; }) })),
          verified: !io.areas.every((a) => this.mapsItsSegs(a)) ? false : ctx.hwpts().some((h) => h.ioas === io && h.uncertain) ? 'maybe' : true,
        })),
      });
    }
  }

  /**
   * Before a live update (KHO active): each context the DUMP serialised with the devices still
   * translating through one of its HWPTs, and the IOAS each goes back to, numbered as the next
   * kernel will (1..n in the order of the ids the DUMP saw: an IOAS allocated since is not in the
   * handover); and the IOVAs worth probing (every area's edges and middle, and next to them).
   */
  handoverPlan(): { vmms: { pid: number; devices: { bdf: string; vfio: string; ptId: number }[] }[]; probes: BigUint64Array } {
    const vmms: { pid: number; devices: { bdf: string; vfio: string; ptId: number }[] }[] = [];
    for (const sc of this.snapshot ?? []) {
      const devices: { bdf: string; vfio: string; ptId: number }[] = [];
      sc.ioases.forEach((si, k) => {
        // A domain that does not map its own areas (a user-VA MAP whose VMA was replaced before a
        // domain pinned it) is refused even from an intact blob, and re-attaching maps the areas as
        // MAP recorded them, not what the device had: such devices stay out of the comparison.
        if (si.verified === false) return;
        for (const sh of si.hwpts) {
          for (const i of sh.devs) {
            const x = this.devices[i]!.xlate;
            if (x.k === 'hwpt' && x.h === sh.hwpt) devices.push({ bdf: this.devices[i]!.bdf, vfio: `/dev/vfio/devices/vfio${i}`, ptId: k + 1 });
          }
        }
      });
      vmms.push({ pid: sc.ctx.pid, devices });
    }
    const probes = new Set<bigint>();
    for (const ctx of this.liveCtxs()) {
      for (const io of ctx.ioases()) {
        for (const a of io.areas) {
          const first = a.start & ~(PAGE - 1n);
          const last = a.last & ~(PAGE - 1n);
          for (const x of [first - PAGE, first, first + PAGE, first + ((last - first) / 2n & ~(PAGE - 1n)), last, last + PAGE]) if (x >= 0n && x < 1n << 63n) probes.add(x);
        }
      }
    }
    return { vmms, probes: BigUint64Array.from([...probes].sort((a, b) => (a < b ? -1 : 1))) };
  }

  // =============================================================================================
  // Planning: each operation yields concrete syscalls with their acceptable outcomes.
  // =============================================================================================

  /** The plans of one operation (empty when it does not apply to the current state). */
  *plan(op: Op): Generator<Plan, void, void> {
    switch (op.k) {
      case 'open':
        return yield* this.planOpen(op.c, op.persist);
      case 'close':
        return yield* this.planClose(op.c);
      case 'optSet':
        return yield* this.planOptSet(op.c);
      case 'optGet': {
        const ctx = this.ctxOfSlot(op.c);
        if (!ctx) return;
        yield { what: `IOMMU_OPTION(PERSISTENT, GET) fd ${ctx.fd}`, run: (s) => s.p.ioctl(ctx.fd!, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64, alts: [okv(BigInt(ctx.pid))] };
        return;
      }
      case 'ioasAlloc': {
        const ctx = this.ctxOfSlot(op.c);
        if (!ctx) return;
        const id = ctx.lowestFreeId();
        yield {
          what: `IOMMU_IOAS_ALLOC fd ${ctx.fd}`,
          run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_ALLOC, {}).out_ioas_id,
          alts: [okv(id, () => ctx.objs.set(id, { t: 'ioas', id, areas: [], allowed: [] }))],
        };
        return;
      }
      case 'map':
        return yield* this.planMap(op);
      case 'mapFile':
        return yield* this.planMapFile(op);
      case 'copy':
        return yield* this.planCopy(op);
      case 'unmap':
        return yield* this.planUnmap(op);
      case 'allow':
        return yield* this.planAllow(op);
      case 'destroy':
        return yield* this.planDestroy(op.c, op.id);
      case 'bind':
        return yield* this.planBind(op.d, op.c);
      case 'attach':
        return yield* this.planAttach(op.d, op.mode, op.pick);
      case 'detach':
        return yield* this.planDetach(op.d);
      case 'unbind':
        return yield* this.planUnbind(op.d);
      case 'dmaRead':
      case 'dmaWrite':
        return yield* this.planDma(op);
      case 'cpuWrite':
      case 'cpuRead':
        return yield* this.planCpu(op);
      case 'gmCreate':
        return yield* this.planGmCreate(op.f);
      case 'gmTruncate':
        return yield* this.planGmTruncate(op.f, op.blocks);
      case 'gmUnlink':
        return yield* this.planGmUnlink(op.f);
      case 'kho':
        return yield* this.planKho(op.on);
      case 'kexec':
        return yield* this.planKexec(op.kho, op.rehydrate, op.viaHwpt);
      case 'claim':
        return yield* this.planClaimPick(op.pick);
      case 'corruptKexec':
        // The Rig runs the update itself (fuzz/handover.ts); here only KHO's activation is modelled.
        if (!this.khoActive) yield* this.planKho(true);
        return;
      case 'exit':
        return yield* this.planExit();
      case 'vm':
        return yield* this.planVm(op);
      case 'check':
        return yield* this.planCheck();
    }
  }

  private *planVm(op: Extract<Op, { k: 'vm' }>): Generator<Plan, void, void> {
    if (!this.ctxOfSlot(op.c)) yield* this.planOpen(op.c, op.persist);
    const ctx = this.ctxOfSlot(op.c);
    if (!ctx) return;
    if (!ctx.ioases().length) yield* this.plan({ k: 'ioasAlloc', c: op.c });
    const io = ctx.ioases()[0];
    if (!io) return;
    if (!this.names.has(`f${op.f}`)) yield* this.planGmCreate(op.f);
    if (this.fileFds[op.f] && this.fileFds[op.f]!.inode.blocks.length === 0) yield* this.planGmTruncate(op.f, op.blocks);
    const slot = this.fileFds[op.f];
    if (slot && slot.inode.blocks.length) {
      yield* this.planMap({ k: 'map', c: op.c, ioas: ctx.ioases().indexOf(io), src: 2 + op.f, offPg: 0, offB: 0, lenPg: slot.inode.blocks.length * CHUNK_PAGES, lenB: 0, fixed: false, at: { kind: 0, idx: 0, dPg: 0, dB: 0 }, r: true, w: true });
    }
    const d = this.devices[op.d];
    if (!d) return;
    if (!d.bound) yield* this.planBind(op.d, op.c);
    if (d.bound?.ctx === ctx && !(d.attached && d.xlate.k === 'hwpt' && d.xlate.h.ioas === io)) yield* this.planAttachTo(op.d, io.id);
  }

  // ---- the VMM's set-up (boot, after exit, after kexec) ----

  *planSetup(): Generator<Plan, void, void> {
    if (!this.mounted) {
      yield { what: `mount guestmemfs ${MNT}`, run: (s) => s.p.mount('guestmemfs', MNT), alts: [okAny(() => (this.mounted = true))] };
    }
    const mfd = this.peekFd();
    yield { what: 'memfd_create', run: (s) => s.p.memfd_create('fuzz-memfd'), alts: [okv(mfd, () => { this.allocFd(); this.memfd = { fd: mfd, obj: new MMemfd(this.chunk()) }; })] };
    yield { what: 'ftruncate memfd 2 MiB', run: (s) => s.p.ftruncate(mfd, BigInt(MEMFD_PAGES) * PAGE), alts: [okAny()] };
    yield {
      what: `mmap memfd at ${hex(VA_MEMFD)}`,
      run: (s) => s.p.mmap(VA_MEMFD, BigInt(MEMFD_PAGES) * PAGE, RWP, MAP_SHARED | MAP_FIXED, mfd),
      alts: [okv(VA_MEMFD, () => this.vmas.push({ startPg: pageOf(VA_MEMFD), npages: MEMFD_PAGES, kind: 'memfd', chunks: [this.memfd!.obj.chunk], file: this.memfd!.obj }))],
    };
    yield {
      what: `mmap anonymous at ${hex(VA_ANON)}`,
      run: (s) => s.p.mmap(VA_ANON, BigInt(ANON_PAGES) * PAGE, RWP, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED),
      alts: [okv(VA_ANON, () => this.vmas.push({ startPg: pageOf(VA_ANON), npages: ANON_PAGES, kind: 'anon', chunks: [this.chunk(), this.chunk()], file: null }))],
    };
    for (let f = 0; f < FILE_SLOTS; f++) {
      const inode = this.names.get(`f${f}`);
      if (!inode) continue;
      const fd = this.peekFd();
      yield {
        what: `open ${MNT}/f${f}`,
        run: (s) => s.p.open(`${MNT}/f${f}`, O_RDWR),
        alts: [okv(fd, () => { this.allocFd(); inode.fdHeld = true; this.fileFds[f] = { fd, inode }; })],
      };
      if (inode.blocks.length) yield* this.planMmapFile(f);
    }
  }

  private *planMmapFile(f: number): Generator<Plan, void, void> {
    const slot = this.fileFds[f]!;
    const va = VA_FILE + BigInt(f) * FILE_STRIDE;
    const len = BigInt(slot.inode.blocks.length) * BLOCK;
    yield {
      what: `mmap ${slot.inode.name} (${len >> 20n} MiB) at ${hex(va)}`,
      run: (s) => s.p.mmap(va, len, RWP, MAP_SHARED | MAP_FIXED, slot.fd),
      alts: [okv(va, () => {
        this.vmas.push({ startPg: pageOf(va), npages: Number(len / PAGE), kind: 'file', chunks: [], file: slot.inode });
        slot.inode.vmaHeld = true;
      })],
    };
  }

  private *planMunmapFile(f: number): Generator<Plan, void, void> {
    const va = VA_FILE + BigInt(f) * FILE_STRIDE;
    const i = this.vmas.findIndex((v) => v.startPg === pageOf(va));
    if (i < 0) return;
    const v = this.vmas[i]!;
    yield {
      what: `munmap ${hex(va)}`,
      run: (s) => s.p.munmap(va, BigInt(v.npages) * PAGE),
      alts: [okAny(() => {
        this.vmas.splice(i, 1);
        if (v.file instanceof MInode) {
          v.file.vmaHeld = this.vmas.some((x) => x.file === v.file);
          this.reapInodes();
        }
      })],
    };
  }

  // ---- contexts ----

  private *planOpen(c: number, persist: boolean): Generator<Plan, void, void> {
    if (this.ctxOfSlot(c)) return;
    const fd = this.peekFd();
    const ctx = new MCtx(this.nextCtx++);
    yield {
      what: 'open /dev/iommu',
      run: (s) => s.p.open('/dev/iommu', O_RDWR),
      alts: [okv(fd, () => {
        this.allocFd();
        ctx.fd = fd;
        ctx.slot = c;
        this.ctxs.push(ctx);
        this.slots[c] = ctx;
      })],
    };
    if (persist) yield* this.planOptSet(c);
  }

  private *planOptSet(c: number): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(c);
    if (!ctx) return;
    const run = (s: Sys) => s.p.ioctl(ctx.fd!, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET, val64: 1n }).val64;
    const what = `IOMMU_OPTION(PERSISTENT, SET) fd ${ctx.fd}`;
    if (ctx.pid) {
      // persistence-rfc.md (project completion): a second SET returns the same id. With objects
      // present the EFAULT rule may be checked first: either answer.
      yield { what, run, alts: ctx.objs.size ? [okv(BigInt(ctx.pid)), errs(['EFAULT'])] : [okv(BigInt(ctx.pid))] };
      return;
    }
    if (ctx.objs.size) {
      yield { what, run, alts: [errs(['EFAULT'])] };
      return;
    }
    const id = this.lowestFreePid();
    yield { what, run, alts: [okv(BigInt(id), () => (ctx.pid = id))] };
  }

  private *planClose(c: number): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(c);
    if (!ctx) return;
    // Closing a serialised persistent iommufd while KHO is active cannot fail: the handover still
    // describes it (what was serialised), and a domain freed after the DUMP is not adopted (see
    // domainFreed).
    if (this.releaseExcluded(ctx) && !this.devices.some((d) => d.bound?.ctx === ctx)) return;
    const fd = ctx.fd!;
    yield {
      what: `close iommufd ${fd}`,
      run: (s) => s.p.close(fd),
      alts: [okAny(() => {
        this.freeFd(fd);
        this.slots[c] = null;
        ctx.fd = null;
        ctx.slot = null;
        this.maybeDestroyCtx(ctx);
      })],
    };
  }

  /**
   * A domain torn down while KHO is active (its context closed, or its last device gone): the blob
   * still lists it and its tables were handed over. Whether the next kernel adopts such a domain is
   * not fixed by the references (it verifies what it finds: tables left as handed over match, tables
   * unmapped first do not), so the model accepts both and learns which at the claim ('maybe'). Its
   * devices left it before the jump: they stay blocked either way.
   */
  private domainFreed(h: MHwpt): void {
    if (!this.khoActive) return;
    for (const sc of this.snapshot ?? []) for (const si of sc.ioases) if (si.hwpts.some((x) => x.hwpt === h) && si.verified !== false) si.verified = 'maybe';
  }

  /**
   * Whether the VMM must not release `ctx` now. Releasing a frozen persistent context (exit, close,
   * unbind of its last device while KHO is active) cannot fail and is planned: the next kernel
   * finds what was serialised (the areas, the files they pin, the domain's tables; see
   * domainFreed). Nothing is excluded any more; kept as the one place to exclude such releases.
   */
  private releaseExcluded(_ctx: MCtx | null | undefined): boolean {
    return false;
  }

  /** A context goes when nothing holds it: no fd and no bound device (persisted ones wait to be claimed). */
  private maybeDestroyCtx(ctx: MCtx): void {
    if (ctx.dead || ctx.fd !== null || !ctx.claimed) return;
    if (this.devices.some((d) => d.bound?.ctx === ctx)) return;
    ctx.dead = true;
    for (const d of this.devices) if (d.xlate.k === 'hwpt' && d.xlate.ctx === ctx) d.xlate = { k: 'blocked' };
    for (const h of ctx.hwpts()) this.domainFreed(h);
    ctx.objs.clear();
    this.syncPins();
    this.reapInodes();
  }

  // ---- IOAS_MAP / MAP_FILE / COPY ----

  private resolveIova(c: IovaChoice, ctx: MCtx, io: MIoas | null): bigint {
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
  private mapPages(
    ctx: MCtx,
    io: MIoas,
    pieces: { pages: MPages; off: bigint; len: bigint; segs: Seg[] | null }[],
    length: bigint,
    fixed: bigint | null,
    r: boolean,
    w: boolean,
    allocAddr: bigint,
  ): Outcome<bigint> | { errs: readonly string[] } {
    const align = this.alignOf(ctx, io);
    if (length & (align - 1n) || length === 0n) return { err: 'EINVAL' };
    let dst: bigint;
    const reserved = this.reservedOf(ctx, io);
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
    if (this.hasDomain(ctx, io)) {
      const errs: string[] = [];
      let at = dst;
      for (const pc of pieces) {
        const [f, l] = this.pageSpan(pc.pages, pc.off, pc.len);
        const e = this.pinError(pc.pages, f, l);
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
        this.syncPins();
      },
    };
  }

  /** Turns a generic outcome plus the persistent / frozen rules into the acceptable alternatives. */
  private outcomeAlts(o: Outcome<bigint> | { errs: readonly string[] }, extra: { frozen: boolean; persistErr: readonly string[] | null }): Alt[] {
    const genErrs: readonly string[] = 'errs' in o ? o.errs : 'err' in o ? [o.err] : [];
    if (extra.frozen) return [errs(['EBUSY', ...genErrs, ...(extra.persistErr ?? [])])];
    if (extra.persistErr) return [errs([...extra.persistErr, ...genErrs])];
    if ('ok' in o) return [okv(o.ok, o.commit)];
    return [errs(genErrs)];
  }

  private *planMap(op: Extract<Op, { k: 'map' }>): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(op.c);
    if (!ctx) return;
    const id = this.ioasIdFor(ctx, op.ioas);
    const io = this.getIoas(ctx, id);
    const va = srcBase(op.src) + BigInt(op.offPg) * PAGE + BigInt(op.offB);
    const length = BigInt(op.lenPg) * PAGE + BigInt(op.lenB);
    const flags = (op.r ? R : 0) | (op.w ? W : 0) | (op.fixed ? FIXED : 0);
    const iova = this.resolveIova(op.at, ctx, io);
    const o = ((): Outcome<bigint> | { errs: readonly string[] } => {
      if (iova >= ULONG_MAX || length >= ULONG_MAX) return { err: 'EOVERFLOW' };
      if (!(flags & (R | W))) return { err: 'EINVAL' };
      if (!io) return { err: 'ENOENT' };
      if (length === 0n || length > ULONG_MAX - PAGE) return { err: 'EINVAL' };
      const pages: MPages = { id: this.nextPages++, kind: 'user', base: va, file: null, writable: op.w, res: new Map() };
      const segs = ctx.pid ? this.gmSegs(va, length, 0n) : null;
      return this.mapPages(ctx, io, [{ pages, off: 0n, len: length, segs }], length, op.fixed ? iova : null, op.r, op.w, va);
    })();
    // persistence-rfc.md §1.9 + completion 1: every VMA of the range must be guestmemfs (EFAULT);
    // its place among the generic checks is not stated, so either error is accepted.
    let persistErr: readonly string[] | null = null;
    if (ctx.pid && io && length < ULONG_MAX && iova < ULONG_MAX && (length === 0n || !this.gmSegs(va, length, 0n))) persistErr = ['EFAULT'];
    yield {
      what: `IOMMU_IOAS_MAP ioas ${id} va ${hex(va)} len ${hex(length)} ${op.fixed ? `FIXED ${hex(iova)}` : 'auto'} ${op.r ? 'R' : ''}${op.w ? 'W' : ''}`,
      run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_MAP, { flags, ioas_id: id, user_va: va, length, iova }).iova,
      alts: this.outcomeAlts(o, { frozen: this.frozen(ctx), persistErr }),
    };
  }

  private *planMapFile(op: Extract<Op, { k: 'mapFile' }>): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(op.c);
    if (!ctx) return;
    const id = this.ioasIdFor(ctx, op.ioas);
    const io = this.getIoas(ctx, id);
    let fd: number;
    let file: MFile | null = null;
    let other = false;
    if (op.file <= 2) {
      const s = this.fileFds[op.file];
      if (s) {
        fd = s.fd;
        file = s.inode;
      } else fd = this.peekFd();
    } else if (op.file === 3) {
      fd = this.memfd!.fd;
      file = this.memfd!.obj;
    } else if (op.file === 4) {
      fd = ctx.fd!;
      other = true;
    } else fd = this.peekFd();
    const start = BigInt(op.startPg) * PAGE;
    const length = BigInt(op.lenPg) * PAGE;
    const flags = (op.r ? R : 0) | (op.w ? W : 0) | (op.fixed ? FIXED : 0);
    const iova = this.resolveIova(op.at, ctx, io);
    const o = ((): Outcome<bigint> | { errs: readonly string[] } => {
      if (iova >= ULONG_MAX || length >= ULONG_MAX) return { err: 'EOVERFLOW' };
      if (!(flags & (R | W))) return { err: 'EINVAL' };
      if (!io) return { err: 'ENOENT' };
      // iopt_map_file_pages judges the length before it looks the fd up.
      if (length === 0n) return { err: 'EINVAL' };
      if (!file && !other) return { err: 'EBADF' };
      // Any other file maps like a file past its end: it fails (EINVAL) only when pinned.
      const pages: MPages = { id: this.nextPages++, kind: 'file', base: start, file, writable: op.w, res: new Map() };
      const segs = ctx.pid && file?.kind === 'gm' ? [{ iova: 0n, inode: file as MInode, off: start, len: length }] : null;
      return this.mapPages(ctx, io, [{ pages, off: 0n, len: length, segs }], length, op.fixed ? iova : null, op.r, op.w, start);
    })();
    // persistence-rfc.md (project rule): IOAS_MAP_FILE in a persistent context takes guestmemfs fds only.
    let persistErr: readonly string[] | null = null;
    if (ctx.pid && io && (other || (file && file.kind !== 'gm'))) persistErr = ['EFAULT'];
    // A guestmemfs range past the file's end in a context without a domain is not pinned at map
    // time: the kernel may accept it (failing at the next attach) or refuse it at once.
    const lazyPastEof = io && file && !this.hasDomain(ctx, io) && length > 0n && file.pageId(Number((start + length - 1n) >> 12n)) === null;
    let alts = this.outcomeAlts(o, { frozen: this.frozen(ctx), persistErr });
    if (lazyPastEof && alts.some((a) => 'ok' in a)) alts = [...alts, errs(['EINVAL', 'EFAULT'])];
    yield {
      what: `IOMMU_IOAS_MAP_FILE ioas ${id} fd ${fd} start ${hex(start)} len ${hex(length)} ${op.fixed ? `FIXED ${hex(iova)}` : 'auto'} ${op.r ? 'R' : ''}${op.w ? 'W' : ''}`,
      run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_MAP_FILE, { flags, ioas_id: id, fd, start, length, iova }).iova,
      alts,
    };
  }

  private *planCopy(op: Extract<Op, { k: 'copy' }>): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(op.c);
    if (!ctx) return;
    const srcId = this.ioasIdFor(ctx, op.src);
    const dstId = this.ioasIdFor(ctx, op.dst);
    const src = this.getIoas(ctx, srcId);
    const dst = this.getIoas(ctx, dstId);
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
    const dstIova = this.resolveIova(op.at, ctx, dst);
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
      return this.mapPages(ctx, dst, pieces, length, op.fixed ? dstIova : null, op.r, op.w, p0.pages.base + p0.off);
    })();
    yield {
      what: `IOMMU_IOAS_COPY ioas ${srcId} ${hex(srcIova)} len ${hex(length)} -> ioas ${dstId} ${op.fixed ? `FIXED ${hex(dstIova)}` : 'auto'} ${op.r ? 'R' : ''}${op.w ? 'W' : ''}`,
      run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_COPY, { flags, dst_ioas_id: dstId, src_ioas_id: srcId, src_iova: srcIova, length, dst_iova: dstIova }).dst_iova,
      alts: this.outcomeAlts(o, { frozen: this.frozen(ctx), persistErr: null }),
    };
  }

  private *planUnmap(op: Extract<Op, { k: 'unmap' }>): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(op.c);
    if (!ctx) return;
    const id = this.ioasIdFor(ctx, op.ioas);
    const io = this.getIoas(ctx, id);
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
    else r = { iova: this.resolveIova({ ...op.at, kind: 0 }, ctx, io), length: len };
    const what = `IOMMU_IOAS_UNMAP ioas ${id} iova ${hex(r.iova)} len ${hex(r.length)}`;
    const run = (s: Sys) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_UNMAP, { ioas_id: id, iova: r.iova, length: r.length }).length;
    // Reference §4.2.
    const alts = ((): Alt[] => {
      if (!io) return [errs(['ENOENT'])];
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
        this.syncPins();
        this.reapInodes();
      };
      if (fail) return [errs([fail], commit)];
      if (!all && unmapped === 0n) return [errs(['ENOENT'])];
      return [okv(unmapped, commit)];
    })();
    yield { what, run, alts: this.frozen(ctx) ? [errs(['EBUSY', ...alts.flatMap((x) => x.err ?? [])])] : alts };
  }

  private *planAllow(op: Extract<Op, { k: 'allow' }>): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(op.c);
    if (!ctx) return;
    const id = this.ioasIdFor(ctx, op.ioas);
    const io = this.getIoas(ctx, id);
    const ranges = op.idxs.map((i) => ({ ...ALLOW_CANDIDATES[i % ALLOW_CANDIDATES.length]! }));
    // Reference §4.5.
    const alt = ((): Alt => {
      if (!io) return errs(['ENOENT']);
      for (let i = 0; i < ranges.length; i++) {
        const r = ranges[i]!;
        if (r.start >= r.last) return errs(['EINVAL']);
        if (ranges.slice(0, i).some((o) => overlaps(o, r.start, r.last))) return errs(['EINVAL']);
      }
      const reserved = this.reservedOf(ctx, io);
      if (ranges.some((r) => reserved.some((x) => overlaps(x, r.start, r.last)))) return errs(['EADDRINUSE']);
      return okAny(() => (io.allowed = ranges.map((r) => ({ ...r }))));
    })();
    yield {
      what: `IOMMU_IOAS_ALLOW_IOVAS ioas ${id} [${ranges.map((r) => `${hex(r.start)}-${hex(r.last)}`).join(', ')}]`,
      run: (s) => s.p.ioctl(ctx.fd!, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: id, allowed_iovas: ranges.map((r) => ({ ...r })) }) && 0,
      alts: [alt],
    };
  }

  private *planDestroy(c: number, id: number): Generator<Plan, void, void> {
    const ctx = this.ctxOfSlot(c);
    if (!ctx) return;
    const o = ctx.objs.get(id);
    // Reference §4.7 and §6.
    const alts = ((): Alt[] => {
      if (!o) return [errs(['ENOENT'])];
      if (o.t === 'dev') return [errs(['EBUSY'])];
      if (o.t === 'ioas') {
        if (ctx.hwpts().some((h) => h.ioas === o)) return [errs(['EBUSY'])];
        return [okAny(() => {
          ctx.objs.delete(id);
          this.syncPins();
          this.reapInodes();
        })];
      }
      // A device attached here, or still on the restored domain behind it, holds the HWPT.
      if (o.devs.size || this.devices.some((d) => d.xlate.k === 'hwpt' && d.xlate.h === o)) return [errs(['EBUSY'])];
      return [okAny(() => {
        ctx.objs.delete(id);
        this.domainFreed(o);
        this.syncPins();
      })];
    })();
    yield {
      what: `IOMMU_DESTROY id ${id}`,
      run: (s) => s.p.ioctl(ctx.fd!, IOMMU_DESTROY, { id }) && 0,
      alts: this.frozen(ctx) ? [errs(['EBUSY', ...alts.flatMap((x) => x.err ?? [])])] : alts,
    };
  }

  // ---- devices ----

  private *planOpenDev(i: number): Generator<Plan, void, void> {
    const d = this.devices[i]!;
    if (d.fd !== null) return;
    const fd = this.peekFd();
    yield {
      what: `open /dev/vfio/devices/vfio${i}`,
      run: (s) => s.p.open(`/dev/vfio/devices/vfio${i}`, O_RDWR),
      alts: [okv(fd, () => {
        this.allocFd();
        d.fd = fd;
      })],
    };
  }

  private *planBind(i: number, c: number): Generator<Plan, void, void> {
    const d = this.devices[i];
    const ctx = this.ctxOfSlot(c);
    if (!d || !ctx) return;
    yield* this.planOpenDev(i);
    const what = `VFIO_DEVICE_BIND_IOMMUFD vfio${i} iommufd ${ctx.fd}`;
    const run = (s: Sys) => s.p.ioctl(d.fd!, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: ctx.fd! }).out_devid;
    if (d.bound) {
      yield { what, run, alts: [errs(['EINVAL'])] };
      return;
    }
    const id = ctx.lowestFreeId();
    yield {
      what,
      run,
      alts: [okv(id, () => {
        const obj: MDevObj = { t: 'dev', id, dev: i };
        ctx.objs.set(id, obj);
        d.bound = { ctx, obj };
        // VFIO bind sets bus mastering again. A device translating through a restored domain keeps
        // it (the special domain stays attached until the VMM attaches: persistence-rfc.md §1.10).
        if (d.xlate.k === 'busoff' || d.xlate.k === 'rejected') d.xlate = d.staleRestore ? { k: 'unknown' } : { k: 'blocked' };
      })],
    };
    yield* this.planProbes();
  }

  /** Removes device `i` from the HWPT it is attached to (automatic HWPTs go with their last device). */
  private detachEffects(i: number): void {
    const d = this.devices[i]!;
    if (d.xlate.k === 'hwpt' && d.attached) {
      const { h, ctx } = d.xlate;
      h.devs.delete(i);
      // Automatic (and restored) HWPTs are destroyed with their last device, unless another device
      // still translates through the restored domain (it holds a reference).
      const others = this.devices.some((o, j) => j !== i && o.xlate.k === 'hwpt' && o.xlate.h === h);
      if (h.devs.size === 0 && !others) {
        ctx.objs.delete(h.id);
        this.domainFreed(h);
      }
    }
    d.attached = false;
    d.xlate = { k: 'blocked' };
  }

  private *planAttach(i: number, mode: number, pick: number): Generator<Plan, void, void> {
    const d = this.devices[i];
    if (!d || d.fd === null) return;
    const what0 = `VFIO_DEVICE_ATTACH_IOMMUFD_PT vfio${i}`;
    if (!d.bound) {
      yield { what: what0, run: (s) => s.p.ioctl(d.fd!, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 }).pt_id, alts: [errs(['EINVAL'])] };
      return;
    }
    const ctx = d.bound.ctx;
    let id: number;
    if (mode === 0) id = this.ioasIdFor(ctx, pick);
    else if (mode === 1) {
      const hs = ctx.hwpts();
      id = hs.length ? hs[pick % hs.length]!.id : pick;
    } else id = pick;
    yield* this.planAttachTo(i, id);
  }

  private *planAttachTo(i: number, id: number, want?: number): Generator<Plan, void, void> {
    const d = this.devices[i]!;
    const ctx = d.bound!.ctx;
    const o = ctx.objs.get(id);
    const alts = ((): Alt[] => {
      if (!o) return [errs(['ENOENT'])];
      if (o.t === 'dev') return [errs(['EINVAL'])];
      let target: MHwpt | null = o.t === 'hwpt' ? o : null;
      const io = o.t === 'hwpt' ? o.ioas : o;
      if (!target) target = ctx.hwpts().find((h) => h.ioas === io) ?? null; // the IOAS's automatic HWPT
      const cur = d.xlate.k === 'hwpt' && d.attached ? d.xlate.h : null;
      if (target && cur === target) return [okv(target.id)];
      // Reservations the attach makes in the IOAS (device.c, io_pagetable.c; reference §4.6).
      const errsSet: string[] = [];
      const sameIoas = cur && cur.ioas === io;
      if (!sameIoas && (io.areas.some((a) => overlaps(a, MSI.start, MSI.last)) || io.allowed.some((a) => overlaps(a, MSI.start, MSI.last)))) errsSet.push('EADDRINUSE');
      if (!target) {
        // A new domain: the aperture's outside reserved, alignment raised to 4 KiB, every area pinned.
        const ap = { start: APERTURE_LAST + 1n, last: ULONG_MAX };
        if (io.areas.some((a) => overlaps(a, ap.start, ap.last)) || io.allowed.some((a) => overlaps(a, ap.start, ap.last))) errsSet.push('EADDRINUSE');
        if (io.areas.some((a) => a.start % PAGE || (a.last + 1n) % PAGE || (a.pages.base + a.off) % PAGE)) errsSet.push('EADDRINUSE');
        for (const a of io.areas) {
          const [f, l] = this.pageSpan(a.pages, a.off, a.last - a.start + 1n);
          const e = this.pinError(a.pages, f, l);
          if (e) errsSet.push(...e);
        }
      }
      if (errsSet.length) return [errs(errsSet)];
      const newId = target ? target.id : ctx.lowestFreeId();
      if (want !== undefined && newId !== want) throw new Error(`model: re-attach expected HWPT ${want}, computed ${newId}`);
      return [okv(newId, () => {
        let h = target;
        if (!h) {
          h = { t: 'hwpt', id: newId, ioas: io, devs: new Set(), restored: false };
          ctx.objs.set(newId, h);
        }
        if (d.attached) this.detachEffects(i);
        this.ctxBuses.add(busOf(d.bdf));
        h.devs.add(i);
        d.attached = true;
        d.xlate = { k: 'hwpt', h, ctx };
        d.staleRestore = false;
        this.syncPins();
        this.reapInodes();
      })];
    })();
    // A device still translating through a frozen (serialised) restored domain: refusing keeps the
    // blob true; moving it is the other reading (the blob then lists a device that left).
    const frozenXlate = !d.attached && d.xlate.k === 'hwpt' && this.frozen(d.xlate.ctx);
    let final = this.frozen(ctx) ? [errs(['EBUSY', ...alts.flatMap((x) => x.err ?? [])])] : frozenXlate ? [errs(['EBUSY']), ...alts] : alts;
    // A first attach that fails after moving the device (iommufd_hwpt_paging_alloc attaches, then
    // adds the domain to the IOAS, and detaches to blocked on failure) may leave a device that was
    // still on a restored domain blocked; or the attach fails before touching it.
    if (!d.attached && d.xlate.k === 'hwpt') final = final.map((a) => (a.err && !a.then ? { ...a, then: () => this.unspecified(d) } : a));
    yield {
      what: `VFIO_DEVICE_ATTACH_IOMMUFD_PT vfio${i} pt_id ${id}`,
      run: (s) => s.p.ioctl(d.fd!, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: id }).pt_id,
      alts: final,
    };
    yield* this.planProbes();
  }

  private *planDetach(i: number): Generator<Plan, void, void> {
    const d = this.devices[i];
    if (!d || d.fd === null) return;
    const what = `VFIO_DEVICE_DETACH_IOMMUFD_PT vfio${i}`;
    const run = (s: Sys) => s.p.ioctl(d.fd!, VFIO_DEVICE_DETACH_IOMMUFD_PT, {}) && 0;
    if (!d.bound) {
      yield { what, run, alts: [errs(['EINVAL'])] };
      return;
    }
    const ctx = d.bound.ctx;
    let alts: Alt[];
    if (d.attached) {
      alts = [okAny(() => {
        this.detachEffects(i);
        this.syncPins();
        this.reapInodes();
      })];
    } else if (d.xlate.k === 'hwpt') {
      // Translating through a restored domain without an attach in this kernel: vfio's detach is
      // a no-op (vfio_iommufd_physical_detach_ioas) or blocks the device; not specified.
      alts = [okAny(() => this.unspecified(d))];
    } else alts = [okAny()];
    const frozen = this.frozen(ctx) || (d.xlate.k === 'hwpt' && this.frozen(d.xlate.ctx));
    yield { what, run, alts: frozen ? [errs(['EBUSY']), ...(d.attached ? [] : alts)] : alts };
    yield* this.planProbes();
  }

  private *planUnbind(i: number): Generator<Plan, void, void> {
    const d = this.devices[i];
    if (!d || d.fd === null) return;
    if (d.bound && this.releaseExcluded(d.bound.ctx)) return;
    const fd = d.fd;
    yield {
      what: `close vfio${i} (unbind)`,
      run: (s) => s.p.close(fd),
      alts: [okAny(() => this.unbindEffects(i))],
    };
    yield* this.planProbes();
  }

  private unbindEffects(i: number): void {
    const d = this.devices[i]!;
    this.freeFd(d.fd!);
    d.fd = null;
    const b = d.bound;
    if (!b) return;
    // iommufd_device_unbind releases DMA ownership: the device leaves any domain, restored or not.
    if (d.attached || d.xlate.k === 'hwpt') this.detachEffects(i);
    b.ctx.objs.delete(b.obj.id);
    d.bound = null;
    this.syncPins();
    this.maybeDestroyCtx(b.ctx);
    this.reapInodes();
  }

  private dmaIova(d: MDevice, where: number, idx: number, off: number, n: number): bigint {
    const di = this.devIoas(d);
    let areas = di?.io.areas ?? [];
    if (!areas.length) areas = this.liveCtxs().flatMap((c) => c.ioases().flatMap((x) => x.areas));
    if (where === 1 || !areas.length) return ABS_DMA[idx % ABS_DMA.length]!;
    const a = areas[idx % areas.length]!;
    const len = a.last - a.start + 1n;
    const lim = (v: bigint) => (v > ULONG_MAX - 0xfffn ? ULONG_MAX - 0xfffn : v);
    if (where === 2) return lim(a.last + 1n + BigInt(off % 3) * PAGE);
    if (where === 3) return lim((a.last + 1n - BigInt(8 * Math.min(n, 2))) & ~7n);
    return lim(a.start + ((BigInt(off) % len) & ~7n));
  }

  private *planDma(op: Extract<Op, { k: 'dmaRead' | 'dmaWrite' }>): Generator<Plan, void, void> {
    const d = this.devices[op.d];
    if (!d) return;
    const n = op.words * 8;
    const iova = this.dmaIova(d, op.where, op.idx, op.off, op.words);
    const bdf = d.bdf;
    if (op.k === 'dmaRead') {
      yield { what: `DMA read ${bdf} ${hex(iova)} +${n}`, run: (s) => s.host.device(bdf).dma.read(iova, n), alts: [this.dmaExpect(d, iova, n, false)] };
      return;
    }
    // A device in an unspecified state writes nowhere the model could follow: no writes then.
    if (d.xlate.k === 'unknown') return;
    const data = pattern(op.val, n);
    yield { what: `DMA write ${bdf} ${hex(iova)} +${n}`, run: (s) => s.host.device(bdf).dma.write(iova, data), alts: [this.dmaExpect(d, iova, n, true, data)] };
  }

  private *planCpu(op: Extract<Op, { k: 'cpuWrite' | 'cpuRead' }>): Generator<Plan, void, void> {
    const n = op.words * 8;
    // Within one page: the access either works or faults as a whole.
    const off = BigInt(op.off) % srcSpan(op.src);
    const inPage = Number(off & 0xfffn) & ~7;
    const va = srcBase(op.src) + (off & ~0xfffn) + BigInt(Math.min(inPage, 4096 - n));
    const id = this.vaPageId(pageOf(va));
    const po = Number(va & 0xfffn);
    if (op.k === 'cpuRead') {
      yield { what: `memRead ${hex(va)} +${n}`, run: (s) => s.p.memRead(va, n), alts: [id === null ? errs(['EFAULT']) : okv(this.readPage(id, po, n))] };
      return;
    }
    const data = pattern(op.val, n);
    yield { what: `memWrite ${hex(va)} +${n}`, run: (s) => s.p.memWrite(va, data), alts: [id === null ? errs(['EFAULT']) : okAny(() => this.writePage(id, po, data))] };
  }

  // ---- guestmemfs ----

  private *planGmCreate(f: number): Generator<Plan, void, void> {
    const name = `f${f}`;
    if (this.names.has(name)) return; // O_CREAT of an existing name just opens it: not exercised
    if (this.fileFds[f]) yield* this.planCloseFile(f);
    const fd = this.peekFd();
    const path = `${MNT}/${name}`;
    yield {
      what: `open ${path} O_CREAT`,
      run: (s) => s.p.open(path, O_CREAT | O_RDWR, 0o600),
      alts: this.khoActive
        ? [errs(['EBUSY'])]
        : [okv(fd, () => {
            this.allocFd();
            const inode = new MInode(this.nextInode++, name);
            this.names.set(name, inode);
            this.inodes.add(inode);
            this.fileFds[f] = { fd, inode };
          })],
    };
  }

  /** The VMM unmaps and closes the file it holds in slot `f`. */
  private *planCloseFile(f: number): Generator<Plan, void, void> {
    const old = this.fileFds[f];
    if (!old) return;
    yield* this.planMunmapFile(f);
    yield {
      what: `close ${old.inode.name} fd ${old.fd}`,
      run: (s) => s.p.close(old.fd),
      alts: [okAny(() => {
        this.freeFd(old.fd);
        old.inode.fdHeld = false;
        this.fileFds[f] = null;
        this.reapInodes();
      })],
    };
  }

  private *planGmTruncate(f: number, blocks: number): Generator<Plan, void, void> {
    const slot = this.fileFds[f];
    if (!slot) return;
    const inode = slot.inode;
    const cur = inode.blocks.length;
    const size = BigInt(blocks) * BLOCK;
    const alts = ((): Alt[] => {
      if (this.khoActive) return blocks === cur ? [errs(['EBUSY']), okAny()] : [errs(['EBUSY'])];
      if (blocks === cur) return [okAny()];
      if (blocks < cur && this.ltPins(inode) > 0) return [errs(['EBUSY'])];
      if (blocks > cur) {
        const need = blocks - cur + (cur === 0 ? 1 : 0);
        if (need > this.gmFreeBlocks()) return [errs(['ENOMEM'])];
      }
      return [okAny(() => {
        if (blocks > cur) for (let b = cur; b < blocks; b++) {
          const c = this.chunk();
          this.gmChunks.add(c);
          inode.blocks.push(c);
        }
        else inode.blocks.length = blocks;
      })];
    })();
    let changed = false as boolean;
    yield {
      what: `ftruncate ${inode.name} to ${blocks} blocks`,
      run: (s) => s.p.ftruncate(slot.fd, size),
      alts: alts.map((a) => ({ ...a, then: (o: Obs) => { a.then?.(o); changed = o.t === 'ok' && blocks !== cur; } })),
    };
    if (!changed) return;
    // The VMM maps the file as long as it is.
    yield* this.planMunmapFile(f);
    if (blocks > 0) yield* this.planMmapFile(f);
  }

  private *planGmUnlink(f: number): Generator<Plan, void, void> {
    const name = `f${f}`;
    const inode = this.names.get(name);
    const path = `${MNT}/${name}`;
    const alts = ((): Alt[] => {
      if (!inode) return this.khoActive ? [errs(['ENOENT', 'EBUSY'])] : [errs(['ENOENT'])];
      if (this.khoActive) return [errs(['EBUSY'])];
      if (this.ltPins(inode) > 0) return [errs(['EBUSY'])];
      return [okAny(() => {
        inode.linked = false;
        this.names.delete(name);
        this.reapInodes();
      })];
    })();
    yield { what: `unlink ${path}`, run: (s) => s.p.unlink(path), alts };
  }

  // ---- KHO, kexec, claim, exit ----

  private *planKho(on: boolean): Generator<Plan, void, void> {
    if (on && this.khoActive) return; // a second '1' while active: not specified, not exercised
    const fd = this.peekFd();
    yield { what: 'open /sys/kernel/kho/active', run: (s) => s.p.open('/sys/kernel/kho/active', O_WRONLY), alts: [okv(fd, () => this.allocFd())] };
    yield {
      what: `write '${on ? 1 : 0}' > /sys/kernel/kho/active`,
      run: (s) => s.p.write(fd, on ? '1' : '0'),
      alts: [okv(1, () => {
        if (on) {
          this.khoActive = true;
          this.dumpedBuses = new Set(this.ctxBuses);
          this.takeSnapshot();
        } else {
          this.khoActive = false;
          this.snapshot = null;
          for (const c of this.ctxs) c.serialised = false;
        }
      })],
    };
    yield { what: `close ${fd}`, run: (s) => s.p.close(fd), alts: [okAny(() => this.freeFd(fd))] };
  }

  private *planKexec(kho: boolean, rehydrate: number, viaHwpt: boolean): Generator<Plan, void, void> {
    if (kho && !this.khoActive) yield* this.planKho(true);
    yield { what: 'kexec_file_load', run: (s) => s.p.kexecFileLoad({}), alts: [okAny()] };
    yield { what: 'reboot(LINUX_REBOOT_CMD_KEXEC)', run: (s) => s.p.reboot(LINUX_REBOOT_CMD_KEXEC), alts: [okAny(() => this.jump())] };
    yield { what: 'spawn the VMM', run: (s) => void (s.p = s.host.kernel.spawn()), alts: [okAny()] };
    yield* this.planSetup();
    if (rehydrate === 0) return;
    for (const ctx of this.liveCtxs().filter((c) => !c.claimed).sort((a, b) => a.pid - b.pid)) yield* this.planClaim(ctx.pid);
    if (rehydrate < 2) return;
    for (let i = 0; i < this.devices.length; i++) {
      const d = this.devices[i]!;
      if (d.xlate.k !== 'hwpt' || d.attached || d.xlate.ctx.slot === null) continue;
      const { h, ctx } = d.xlate;
      yield* this.planBind(i, ctx.slot!);
      if (d.bound?.ctx !== ctx) continue;
      yield* this.planAttachTo(i, viaHwpt ? h.id : h.ioas.id, h.id);
    }
  }

  /** The jump: what the next kernel finds (persistence-rfc.md §1, README "Live update"). */
  private jump(): void {
    this.kexecs++;
    this.generation++;
    const snap0 = this.khoActive ? this.snapshot : null;
    // A context whose serialised areas name bytes past the end of their file (a lazy MAP_FILE past
    // EOF) cannot be re-hydrated; the next kernel refuses it whole (its domains too).
    const fits = (sc: SnapCtx) => sc.ioases.every((si) => si.areas.every((a) => a.segs.every((sg) => sg.off + sg.len <= BigInt(sg.inode.blocks.length) * BLOCK)));
    const snap = snap0 ? snap0.filter(fits) : null;
    const refused = new Set<number>();
    for (const sc of snap0 ?? []) {
      if (fits(sc)) continue;
      for (const si of sc.ioases) for (const sh of si.hwpts) for (const i of sh.devs) refused.add(i);
    }
    // Devices keep translating only through a serialised domain they are still attached to.
    const keep = new Map<number, MHwpt>();
    if (snap) {
      for (const sc of snap) for (const si of sc.ioases) for (const sh of si.hwpts) for (const i of sh.devs) {
        const x = this.devices[i]!.xlate;
        if (x.k === 'hwpt' && x.h === sh.hwpt) keep.set(i, sh.hwpt);
      }
    }
    const stale = new Set<number>();
    if (snap) for (const sc of snap) for (const si of sc.ioases) for (const sh of si.hwpts) for (const i of sh.devs) if (!keep.has(i)) stale.add(i);
    // guestmemfs: handed over with KHO (linked files, and unlinked ones a serialised area pins);
    // a fresh, empty filesystem without.
    const keepInodes = new Set<MInode>();
    if (snap) {
      for (const i of this.names.values()) keepInodes.add(i);
      for (const sc of snap) for (const si of sc.ioases) for (const a of si.areas) for (const s of a.segs) keepInodes.add(s.inode);
    } else this.names.clear();
    this.inodes = keepInodes;
    for (const i of keepInodes) {
      i.fdHeld = false;
      i.vmaHeld = false;
    }
    if (!snap) this.gmChunks = new Set();
    // Every context of the old kernel is gone; the serialised ones come back, unclaimed.
    const restored: MCtx[] = [];
    const hwptMap = new Map<MHwpt, MHwpt>();
    for (const sc of snap ?? []) {
      const ctx = new MCtx(this.nextCtx++);
      ctx.pid = sc.ctx.pid;
      ctx.claimed = false;
      // persistence-rfc.md §1.8 (and README): IOASes numbered afresh 1..n in their old order; the
      // restored HWPTs follow, in the same order.
      let next = 1;
      const ios: MIoas[] = [];
      for (const si of sc.ioases) {
        const io: MIoas = { t: 'ioas', id: next++, areas: [], allowed: [] };
        ctx.objs.set(io.id, io);
        ios.push(io);
      }
      for (const [k, si] of sc.ioases.entries()) {
        const io = ios[k]!;
        for (const a of si.areas) {
          // One file-backed area per guestmemfs segment.
          for (const s of a.segs) {
            const pages: MPages = { id: this.nextPages++, kind: 'file', base: s.off, file: s.inode, writable: a.w, res: new Map() };
            io.areas.push({ start: s.iova, last: s.iova + s.len - 1n, pages, off: 0n, r: a.r, w: a.w, segs: [{ ...s }] });
          }
        }
        io.areas.sort(byStart);
        // A domain that does not map exactly its serialised areas is not adopted; its devices are
        // blocked, and its HWPT's number stays unused, as does a place the handover marks gone.
        if (si.verified === false) for (const sh of si.hwpts) for (const i of sh.devs) refused.add(i);
        for (const sh of si.hwpts) {
          const h: MHwpt = { t: 'hwpt', id: next++, ioas: io, devs: new Set(), restored: true, uncertain: si.verified === 'maybe' };
          if (si.verified === false || sh.hwpt.gone) {
            h.gone = true;
            ctx.gone.push(h);
            continue;
          }
          ctx.objs.set(h.id, h);
          hwptMap.set(sh.hwpt, h);
        }
      }
      restored.push(ctx);
    }
    for (const c of this.ctxs) c.dead = true;
    this.ctxs.length = 0;
    this.ctxs.push(...restored);
    for (let i = 0; i < this.devices.length; i++) {
      const d = this.devices[i]!;
      const h = keep.get(i);
      const nh = h ? hwptMap.get(h) : undefined;
      const ctx = nh ? restored.find((c) => c.objs.get(nh.id) === nh) : undefined;
      d.fd = null;
      d.bound = null;
      d.attached = false;
      d.staleRestore = stale.has(i);
      d.xlate = nh && ctx ? { k: 'hwpt', h: nh, ctx } : refused.has(i) ? { k: 'rejected' } : { k: 'busoff' };
      d.maybe = null;
      if (d.staleRestore) {
        // It may come back on the domain the blob still lists it in.
        for (const sc of snap ?? []) for (const si of sc.ioases) for (const sh of si.hwpts) {
          if (!sh.devs.includes(i)) continue;
          const rh = hwptMap.get(sh.hwpt);
          const rc = rh ? restored.find((c) => c.objs.get(rh.id) === rh) : undefined;
          if (rh && rc) d.maybe = { h: rh, ctx: rc };
        }
      }
    }
    this.ctxBuses = snap ? new Set(this.dumpedBuses) : new Set();
    this.khoActive = false;
    this.snapshot = null;
    this.mounted = false;
    // The VMM died with its kernel.
    this.fds = new Set();
    this.slots = [];
    this.fileFds = [];
    this.vmas = [];
    this.memfd = null;
    this.syncPins();
  }

  private *planClaimPick(pick: number): Generator<Plan, void, void> {
    const pids = this.liveCtxs().filter((c) => c.pid && (!c.claimed || c.restoredHere)).map((c) => c.pid).sort((a, b) => a - b);
    yield* this.planClaim(pick < pids.length ? pids[pick]! : 99);
  }

  private *planClaim(pid: number): Generator<Plan, void, void> {
    const ctx = this.liveCtxs().find((c) => c.pid === pid && (!c.claimed || c.restoredHere));
    const slot = this.slots.findIndex((s, i) => i < CTX_SLOTS && (!s || s.dead));
    const freeSlot = slot >= 0 ? slot : this.slots.length < CTX_SLOTS ? this.slots.length : -1;
    if (ctx && !ctx.claimed && freeSlot < 0) return;
    const path = `/sys/kernel/iommufd_persisted/${pid}/iommufd`;
    if (!ctx) {
      yield { what: `open ${path}`, run: (s) => s.p.open(path, O_RDONLY), alts: [errs(['ENOENT'])] };
      return;
    }
    const fd = this.peekFd();
    yield { what: `open ${path}`, run: (s) => s.p.open(path, O_RDONLY), alts: [okv(fd, () => this.allocFd())] };
    if (ctx.claimed) {
      yield { what: `read ${path} (claimed before)`, run: (s) => s.p.read(fd, 64), alts: [errs(['EBUSY'])] };
    } else {
      const nfd = this.peekFd();
      yield {
        what: `read ${path}`,
        run: (s) => new TextDecoder().decode(s.p.read(fd, 64)),
        alts: [okv(`${nfd}\n`, () => {
          this.allocFd();
          ctx.claimed = true;
          ctx.restoredHere = true;
          ctx.fd = nfd;
          ctx.slot = freeSlot;
          this.slots[freeSlot] = ctx;
          this.syncPins();
        })],
      };
    }
    yield { what: `close ${fd}`, run: (s) => s.p.close(fd), alts: [okAny(() => this.freeFd(fd))] };
    // Learn whether a domain freed after the DUMP was adopted: its IOAS has the domain's alignment.
    for (const h of ctx.hwpts()) {
      if (!h.uncertain || !ctx.claimed || ctx.fd === null) continue;
      const cfd = ctx.fd;
      const ioasId = h.ioas.id;
      yield {
        what: `IOMMU_IOAS_IOVA_RANGES ioas ${ioasId} (was the freed domain adopted?)`,
        run: (s) => s.p.ioctl(cfd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: ioasId, num_iovas: 8, allowed_iovas: [] }).out_iova_alignment,
        alts: [{ any: true, then: (o) => {
          if (o.t === 'ok' && o.v === PAGE) {
            h.uncertain = false;
            return;
          }
          // Not adopted: the HWPT does not exist, and its number stays unused.
          ctx.objs.delete(h.id);
          h.gone = true;
          ctx.gone.push(h);
          this.syncPins();
        } }],
      };
    }
  }

  private *planExit(): Generator<Plan, void, void> {
    if (this.slots.some((c) => c && !c.dead && this.releaseExcluded(c)) || this.devices.some((d) => d.fd !== null && this.releaseExcluded(d.bound?.ctx))) return;
    yield {
      what: 'exit the VMM',
      run: (s) => s.p.exit(),
      alts: [okAny(() => {
        for (let i = 0; i < this.devices.length; i++) if (this.devices[i]!.fd !== null) this.unbindEffects(i);
        for (const ctx of this.slots) {
          if (!ctx || ctx.dead) continue;
          ctx.fd = null;
          ctx.slot = null;
          this.maybeDestroyCtx(ctx);
        }
        this.slots = [];
        for (const s of this.fileFds) if (s) s.inode.fdHeld = false;
        this.fileFds = [];
        for (const v of this.vmas) if (v.file instanceof MInode) v.file.vmaHeld = false;
        this.vmas = [];
        this.memfd = null;
        this.fds = new Set();
        this.syncPins();
        this.reapInodes();
      })],
    };
    yield { what: 'spawn the VMM', run: (s) => void (s.p = s.host.kernel.spawn()), alts: [okAny()] };
    yield* this.planSetup();
  }

  // ---- the deep check ----

  private *planCheck(): Generator<Plan, void, void> {
    for (const ctx of this.slots) {
      if (!ctx || ctx.dead) continue;
      const fd = ctx.fd!;
      yield { what: `IOMMU_OPTION(PERSISTENT, GET) fd ${fd}`, run: (s) => s.p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64, alts: [okv(BigInt(ctx.pid))] };
      for (const io of ctx.ioases()) {
        const want = { ranges: holes(this.reservedOf(ctx, io), 0n, ULONG_MAX), align: this.alignOf(ctx, io) };
        yield {
          what: `IOMMU_IOAS_IOVA_RANGES ioas ${io.id}`,
          run: (s) => {
            const arr: ({ start: bigint; last: bigint } | undefined)[] = new Array(8).fill(undefined);
            const r = s.p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: io.id, num_iovas: 8, allowed_iovas: arr });
            return { ranges: arr.slice(0, r.num_iovas as number), align: r.out_iova_alignment };
          },
          alts: [okv(want)],
        };
      }
    }
    // Pin counts of the pages user mappings and files back.
    const vas: bigint[] = [VA_ANON, VA_MEMFD];
    for (const ctx of this.liveCtxs()) for (const io of ctx.ioases()) for (const a of io.areas) if (a.pages.kind === 'user') vas.push(a.pages.base + a.off, a.pages.base + a.off + (a.last - a.start));
    for (const va of vas.slice(0, 16)) {
      const id = this.vaPageId(pageOf(va));
      yield { what: `pinCount ${hex(va)}`, run: (s) => s.p.pinCount(va), alts: [okv(id === null ? 0 : this.pinCountOf(id))] };
    }
    const names = [...this.names.keys()].sort();
    yield {
      what: `readdir ${MNT}`,
      run: (s) => s.p.readdir(MNT).map((d) => d.d_name).filter((n) => n !== '.' && n !== '..').sort(),
      alts: [okv(names)],
    };
    for (const n of names) {
      const size = BigInt(this.names.get(n)!.blocks.length) * BLOCK;
      yield { what: `stat ${MNT}/${n}`, run: (s) => s.p.stat(`${MNT}/${n}`).st_size, alts: [okv(size)] };
    }
    // KHO: the attribute reads back its state; the blob exists only while active.
    const kfd = this.peekFd();
    yield { what: 'open /sys/kernel/kho/active', run: (s) => s.p.open('/sys/kernel/kho/active', O_RDONLY), alts: [okv(kfd, () => this.allocFd())] };
    yield { what: 'read /sys/kernel/kho/active', run: (s) => new TextDecoder().decode(s.p.read(kfd, 16)), alts: [okv(this.khoActive ? '1\n' : '0\n')] };
    yield { what: `close ${kfd}`, run: (s) => s.p.close(kfd), alts: [okAny(() => this.freeFd(kfd))] };
    yield { what: 'stat /sys/kernel/kho/dt', run: (s) => s.p.stat('/sys/kernel/kho/dt').st_mode & 0o777, alts: [this.khoActive ? okv(0o400) : errs(['ENOENT'])] };
    const waiting = this.liveCtxs().filter((c) => !c.claimed).map((c) => String(c.pid));
    yield {
      what: 'readdir /sys/kernel/iommufd_persisted',
      run: (s) => s.p.readdir('/sys/kernel/iommufd_persisted').map((d) => d.d_name),
      alts: [{ okCheck: (v) => (waiting.every((w) => (v as string[]).includes(w)) ? null : `unclaimed persisted ids ${waiting.join(',')} not all listed`) }],
    };
  }
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

/** PCI bus number of `dddd:bb:dd.f`. */
function busOf(bdf: string): number {
  return parseInt(bdf.slice(5, 7), 16);
}

/** Deterministic bytes for a DMA or CPU write of `n` bytes from seed `val`. */
export function pattern(val: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  const dv = new DataView(out.buffer);
  for (let i = 0; i + 8 <= n; i += 8) {
    const w = (val + Math.imul(i + 1, 0x9e37_79b1)) >>> 0;
    dv.setUint32(i, w, true);
    dv.setUint32(i + 4, (w ^ 0xa5a5_a5a5) >>> 0, true);
  }
  return out;
}

/** Runs one plan's syscall and classifies what happened. */
export function observe(sys: Sys, plan: Plan): Obs {
  try {
    return { t: 'ok', v: plan.run(sys) };
  } catch (e) {
    if (e instanceof SyscallError) return { t: 'err', code: e.code, syscall: e.syscall };
    if (e instanceof DmaFault) return { t: 'fault', reason: e.reason, iova: e.iova, write: e.write };
    throw e;
  }
}
