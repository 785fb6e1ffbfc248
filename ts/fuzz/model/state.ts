// The fuzz model's state: the world's shape, what the model knows of each object (contexts,
// IOASes, HWPTs, devices, guestmemfs inodes, the VMM's memory), the plans every subsystem yields,
// and the queries they all make of the state. The lowest module of ts/fuzz/model/: it imports
// none of its siblings. (index.ts names the references the model is written from.)
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  PROT_READ,
  PROT_WRITE,
  type Host,
  type Process,
} from '../../index.js';
import { PAGE, ULONG_MAX, type Range } from '../intervals.js';

// ---- the world ---------------------------------------------------------------------------------

/** The fixed shape of every fuzzed host. */
export interface WorldConfig {
  /** Host RAM. */
  memory: bigint;
  /** guestmemfs carve-out in MiB (2 MiB blocks; block 0 holds the metadata). */
  guestmemfsMiB: number;
  /** PCI devices (vfio0, vfio1, ...). */
  devices: string[];
  /**
   * Which live-update flow the host boots: 'rfc' (the 2024 RFC: guestmemfs, persistent iommufds,
   * KHO activated by userspace; the default) or 'luo' (the same plus `kho=on liveupdate=on`: LUO
   * sessions and memfd preservation, model/luo.ts).
   */
  flow?: 'rfc' | 'luo';
}

export const DEFAULT_WORLD: WorldConfig = {
  memory: 4n << 30n,
  guestmemfsMiB: 32,
  devices: ['0000:01:00.0', '0000:02:00.0'],
};

export const MNT = '/mnt/guestmemfs';
export const CHUNK_PAGES = 512; // 2 MiB: a guestmemfs block, or a piece of anonymous / memfd memory
export const BLOCK = 2n << 20n;
export const MAX_FILE_BLOCKS = 8;
export const FILE_SLOTS = 3;
export const CTX_SLOTS = 3;
export const R = IOMMU_IOAS_MAP_READABLE;
export const W = IOMMU_IOAS_MAP_WRITEABLE;
export const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;
export const RWP = PROT_READ | PROT_WRITE;
export const APERTURE_LAST = (1n << 48n) - 1n;
export const MSI: Range = { start: 0xfee0_0000n, last: 0xfeef_ffffn };

/** The VMM's address space: fixed windows so that operations can name memory by source. */
export const VA_ANON = 0x4000_0000n;
export const ANON_PAGES = 1024;
export const VA_MEMFD = 0x5000_0000n;
export const MEMFD_PAGES = 512;
export const VA_HOLE = 0x6000_0000n;
/** guestmemfs file slot i is mapped at VA_FILE + i * 16 MiB, as long as the file is. */
export const VA_FILE = 0x10_0000_0000n;
export const FILE_STRIDE = BigInt(MAX_FILE_BLOCKS) * BLOCK;
export const pageOf = (va: bigint) => Number(va >> 12n);

// ---- model state -------------------------------------------------------------------------------

/** A file a MAP_FILE or a mapping can be backed by: a guestmemfs inode or the memfd. */
export interface MFile {
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

export class MMemfd implements MFile {
  readonly kind = 'memfd';
  constructor(readonly chunk: number) {}
  pageId(fp: number): number | null {
    return fp < MEMFD_PAGES ? this.chunk * CHUNK_PAGES + fp : null;
  }
}

export interface MVma {
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
  /** A LUO memfd's seals when it was mapped (IOMMU_IOAS_MAP_FILE records them for the live update). */
  mapSeals?: number;
}

/** A guestmemfs segment a persistent area maps (what is serialised and pinned). */
export interface Seg {
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
  /** The IOAS of an HWPT preserved by a preserved iommufd (`lu_map_immutable`): MAP, COPY into it, UNMAP are EBUSY. */
  luFrozen?: boolean;
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
  /** IOMMU_HWPT_LU_SET_PRESERVE's token: marked for the LUO live update. */
  luToken?: number;
  /** Not automatic (RETRIEVE_FD of a preserved iommufd makes user HWPTs): it outlives its last device. */
  manual?: boolean;
  /** Rebuilt by RETRIEVE_FD over a preserved domain, until its file finishes. */
  luRestored?: boolean;
}
export interface MDevObj {
  t: 'dev';
  id: number;
  dev: number;
}
export type MObj = MIoas | MHwpt | MDevObj;

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
export type Xlate = { k: 'hwpt'; h: MHwpt; ctx: MCtx } | { k: 'blocked' } | { k: 'busoff' } | { k: 'unknown' } | { k: 'rejected' };

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

export interface SnapCtx {
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
  /** Counted with its outcome in the run's coverage (the upstream flow's commands). */
  tag?: string;
}

/** The system under test: the host and the VMM process (replaced at exit and kexec). */
export interface Sys {
  host: Host;
  p: Process;
}

export const okv = (v: unknown, then?: (o: Obs) => void): Alt => ({ ok: v, then });
export const okAny = (then?: (o: Obs) => void): Alt => ({ okAny: true, then });
export const errs = (codes: readonly string[], then?: (o: Obs) => void): Alt => ({ err: codes, then });

/** A generic outcome computed without side effects: an errno, or success with a commit. */
export type Outcome<T> = { err: string } | { ok: T; commit: () => void };

export const hex = (v: bigint) => `0x${v.toString(16)}`;

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

// ---- the state ---------------------------------------------------------------------------------

/**
 * What the model knows, and the queries every subsystem makes of it. `Model` (index.ts) adds the
 * planner; the subsystems (mm, guestmemfs, iommufd, ioas, device, process, liveupdate, check) are
 * functions of this state. Fields without a word here are the subsystems' own bookkeeping.
 */
export class ModelState {
  readonly cfg: WorldConfig;
  generation = 0;
  khoActive = false;
  snapshot: SnapCtx[] | null = null;
  /** guestmemfs mounted in the running kernel. */
  mounted = false;
  readonly names = new Map<string, MInode>();
  /** Every inode that may still be alive (linked, or unlinked but open, mapped or pinned). */
  inodes = new Set<MInode>();
  nextInode = 1;
  nextChunk = 1;
  nextPages = 1;
  nextCtx = 1;
  /** Bytes written so far, per backing page (unwritten pages read as zeros). */
  readonly mem = new Map<number, Uint8Array>();
  readonly ctxs: MCtx[] = [];
  readonly devices: MDevice[];

  // The VMM process.
  fds = new Set<number>();
  slots: (MCtx | null)[] = [];
  fileFds: ({ fd: number; inode: MInode } | null)[] = [];
  vmas: MVma[] = [];
  memfd: { fd: number; obj: MMemfd } | null = null;

  /** PCI buses with a VT-d context table in the running kernel, and those the last DUMP preserved. */
  ctxBuses = new Set<number>();
  dumpedBuses = new Set<number>();
  /** Counters for reports. */
  kexecs = 0;
  /** A corrupted handover ran: what the next kernel kept is not modelled, nothing more is checked. */
  opaque = false;
  /** Chunk ids that are guestmemfs blocks (anonymous / memfd chunks are not in the carve-out). */
  gmChunks = new Set<number>();
  /** What other models do when the VMM exits (after its fds are gone) and at the jump of a kexec. */
  readonly exitHooks: (() => void)[] = [];
  /** What other models do when the VMM exits, before its devices and contexts go (LUO's sessions: finish reads them). */
  readonly exitFirstHooks: (() => void)[] = [];
  readonly jumpHooks: (() => void)[] = [];
  /**
   * Whether LUO holds this iommufd or VFIO device file preserved in an outgoing session (model/luo.ts
   * sets it): the generator then neither closes nor unbinds it (what LUO's reference keeps alive is
   * not modelled on the RFC side).
   */
  luoHolds: (o: MCtx | MDevice) => boolean = () => false;
  /**
   * Whether device `d`'s attachment must stay as it is (model/luo.ts): preserved by VFIO in an
   * outgoing session (the IOMMU state it serialised would no longer be its context entry's). The
   * generator then neither attaches, detaches nor unbinds it.
   */
  luoPinned: (d: MDevice) => boolean = () => false;
  /** Whether a preserved iommufd holds HWPT `h` (it outlives its last device; IOMMU_DESTROY is EBUSY). */
  luoHoldsHwpt: (h: MHwpt) => boolean = () => false;
  /** The errno of opening device `i`'s node (EBUSY while the previous kernel's PCI FLB holds it). */
  luoOpenErr: (i: number) => string | null = () => null;
  /** The errno of binding device `i` to `ctx` (EBUSY while a restored iommufd owns it). */
  luoBindErr: (i: number, ctx: MCtx) => string | null = () => null;
  /**
   * Whether LUO holds IOMMU state (a preserved domain or device) in an outgoing session: the RFC's
   * KHO activation then is not generated (both preserve the VT-d root and context tables, and
   * LUO's unpreserve would take them from the RFC's handover; the simulator keeps one owner).
   */
  luoIommuState: () => boolean = () => false;
  /** Whether the VMM's exit would leave state the model does not follow (model/luo.ts). */
  luoExitBlocked: () => boolean = () => false;
  constructor(cfg: WorldConfig = DEFAULT_WORLD) {
    this.cfg = cfg;
    this.devices = cfg.devices.map((bdf) => ({ bdf, maybe: null, fd: null, bound: null, xlate: { k: 'blocked' }, attached: false, staleRestore: false }));
  }

  // ---- queries ----

  chunk(): number {
    return this.nextChunk++;
  }
  allocFd(): number {
    let fd = 3;
    while (this.fds.has(fd)) fd++;
    this.fds.add(fd);
    return fd;
  }
  peekFd(skip?: number): number {
    let fd = 3;
    while (this.fds.has(fd) || fd === skip) fd++;
    return fd;
  }
  freeFd(fd: number): void {
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
  lowestFreePid(): number {
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
  ctxOfSlot(c: number): MCtx | null {
    const ctx = this.slots[c] ?? null;
    return ctx && !ctx.dead ? ctx : null;
  }
  ioasIdFor(ctx: MCtx, pick: number): number {
    if (pick >= 100) return pick - 100;
    const l = ctx.ioases();
    return l.length ? l[pick % l.length]!.id : 1;
  }
  getIoas(ctx: MCtx, id: number): MIoas | null {
    const o = ctx.objs.get(id);
    return o && o.t === 'ioas' ? o : null;
  }
  /** The IOAS a device translates through, with its context. */
  devIoas(d: MDevice): { ctx: MCtx; io: MIoas } | null {
    return d.xlate.k === 'hwpt' ? { ctx: d.xlate.ctx, io: d.xlate.h.ioas } : null;
  }
}
