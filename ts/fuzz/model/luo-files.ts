// The LUO model's preserved files: a memfd's inode as the model knows it, sessions, what an fd is
// to PRESERVE_FD, the interface of a file handler's model (`struct liveupdate_file_handler`) and
// what it sees of the world (LuoEnv, the next kernel's FLBs), and memfd's (mm/memfd_luo.c,
// "memfd-v2"). The iommu live-update series' handlers are in luo-iommu.ts, which lists them all
// (LUO_FILE_MODELS).
import { CHUNK_PAGES, type MCtx, type MDevice, type MFile, type MHwpt, type ModelState } from './state.js';

/** Session names an operation picks: three good ones, the longest good one, empty, 64 bytes without a NUL. */
export const LUO_NAMES: readonly (string | Uint8Array)[] = ['vm-a', 'vm-b', 'vm-c', 'L'.repeat(63), '', new Uint8Array(64).fill(0x78)];
export const LUO_TOKENS: readonly bigint[] = [1n, 2n, 3n, 0xffff_ffff_ffff_ffffn];

/**
 * A memfd's shmem inode: what every fd and mapping of it sees. Its bytes are the model's memory
 * (ModelState.mem) under page ids `base + page`, so that an IOAS mapping it (MAP_FILE) and a
 * device's DMA see the same bytes as the VMM's loads and stores.
 */
export class MShmem implements MFile {
  readonly kind = 'memfd';
  /** The outgoing session preserving it (size frozen, every page pinned). */
  preservedIn: MSession | null = null;
  /** Shared mappings that may write (`i_mmap_writable`). */
  writableMaps = 0;
  constructor(
    /** Page id of page 0 (two 2 MiB chunks: room for the largest LUO_SIZES). */
    readonly base: number,
    public seals: number,
    public npages: number,
  ) {}
  pageId(fp: number): number | null {
    return fp < this.npages ? this.base + fp : null;
  }
}

/** A new memfd inode in the model's memory. */
export function newShmem(m: ModelState, seals: number, npages = 0): MShmem {
  const c = m.chunk();
  m.chunk();
  return new MShmem(c * CHUNK_PAGES, seals, npages);
}

/** A preserved file: outgoing, the live object; incoming, what crossed and, once retrieved, the new object. */
export interface MLuoFile {
  token: bigint;
  handler: LuoFileModel;
  obj: unknown;
  /** Incoming: what the handler serialised. */
  ser?: unknown;
  retrieved?: unknown;
}

export interface MSession {
  name: string;
  incoming: boolean;
  /** An incoming session that RETRIEVE_SESSION returned (it stays so until closed). */
  retrieved: boolean;
  files: MLuoFile[];
}

/** What an fd of the VMM is, as PRESERVE_FD sees it. */
export type FdTarget = { kind: 'memfd'; obj: MShmem } | { kind: 'iommufd'; obj: MCtx } | { kind: 'vfio'; obj: MDevice } | { kind: 'session' } | { kind: 'luodev' } | { kind: 'pipe' } | { kind: 'other' } | { kind: 'none' };

/** What a handler model sees of the world beside its own file (model/luo.ts provides it). */
export interface LuoEnv {
  readonly m: ModelState;
  /** The next kernel's view of the previous one's FLBs (PCI functions, IOMMU state). */
  readonly flb: LuoFlbs;
  /** `liveupdate_get_token_outgoing`: whether `id` (a handler's id) is preserved in session `s`. */
  preservedIn(id: unknown, s: MSession): boolean;
  /** The outgoing preserved file whose id is `id`, if any. */
  outgoingFile(id: unknown): MLuoFile | undefined;
  /** At the jump: what the file preserved under `id` serialised (files serialise in preservation order). */
  serOf(id: unknown): unknown;
}

/** The previous kernel's FLBs as the next kernel holds them (vfio/liveupdate.ts, iommu_liveupdate.ts). */
export interface LuoFlbs {
  /** PCI FLB: devices (by index) reachable through RETRIEVE_FD only, and its files left to finish. */
  pciHeld: Set<number>;
  pciFiles: number;
  /** iommu FLB: its iommufd files left to finish; devices a restored iommufd owns (null: not retrieved yet). */
  iommuFiles: number;
  claimed: Map<number, MCtx | null>;
  /** The domains the driver restored: each preserved HWPT, and the HWPT and context RETRIEVE_FD builds over it. */
  domains: Map<MHwpt, { h: MHwpt; ctx: MCtx }>;
}

/**
 * One handler's model (`struct liveupdate_file_handler`): which files it takes, the identity that
 * makes a second preservation EBUSY, and its lifecycle (preserve, unpreserve, what crosses the
 * reboot, RETRIEVE_FD, can_finish and finish).
 */
export interface LuoFileModel {
  readonly compatible: string;
  canPreserve(t: FdTarget): boolean;
  /** `get_id` of a file, of what PRESERVE_FD made of one, and of a retrieved object. */
  id(t: FdTarget): unknown;
  preservedId(preserved: unknown): unknown;
  retrievedId(retrieved: unknown): unknown;
  /** The handler's own `preserve` refusing the file (after LUO's checks), or null. */
  preserveErr?(t: FdTarget, s: MSession, env: LuoEnv): string | null;
  /** PRESERVE_FD succeeded: what LUO now holds. */
  preserve(t: FdTarget, s: MSession, env: LuoEnv): unknown;
  unpreserve(obj: unknown, env: LuoEnv): void;
  /** Pages it pins while preserved (host.kernel.pinnedPages()). */
  pinned(obj: unknown): number;
  /** At the jump (the previous kernel's objects are dead, its devices reset): what the next kernel gets. */
  serialize(obj: unknown, file: MLuoFile, env: LuoEnv): unknown;
  /** Whether the generator may RETRIEVE_FD it now (iommufd and VFIO files: once, with a free slot). */
  retrievable?(file: MLuoFile, env: LuoEnv): boolean;
  /** RETRIEVE_FD the first time: the new object. */
  retrieve(ser: unknown, s: MSession, env: LuoEnv): unknown;
  /** The VMM holds `fd` of the retrieved object now. */
  install(obj: unknown, fd: number, env: LuoEnv): void;
  /** `can_finish` (absent: always). */
  canFinish?(file: MLuoFile, env: LuoEnv): boolean;
  /** `finish`, and the FLBs' when it is their last file. */
  finish?(file: MLuoFile, env: LuoEnv): void;
}

const memfdModel: LuoFileModel = {
  compatible: 'memfd-v2',
  canPreserve: (t) => t.kind === 'memfd',
  id: (t) => (t as { obj: MShmem }).obj,
  preservedId: (p) => (p as { obj: MShmem }).obj,
  retrievedId: (obj) => obj,
  preserve(t, s) {
    const obj = (t as { obj: MShmem }).obj;
    obj.preservedIn = s;
    // memfd_luo_ser.seals: the seals at PRESERVE_FD.
    return { obj, seals: obj.seals };
  },
  unpreserve(p) {
    (p as { obj: MShmem }).obj.preservedIn = null;
  },
  pinned: (p) => (p as { obj: MShmem }).obj.npages,
  /** The next kernel's inode, made now: its folios are the preserved ones (the bytes at the reboot). */
  serialize(p, _f, env): MShmem {
    const { obj, seals } = p as { obj: MShmem; seals: number };
    const next = newShmem(env.m, seals, obj.npages);
    for (let pg = 0; pg < obj.npages; pg++) {
      const b = env.m.mem.get(obj.base + pg);
      if (b) env.m.mem.set(next.base + pg, b.slice());
    }
    return next;
  },
  retrieve: (ser) => ser,
  // planRetrieveFd adds the VMM's memfd fd.
  install() {},
};

/** The memfd handler model (the iommufd and VFIO ones are in luo-iommu.ts). */
export const MEMFD_MODEL: LuoFileModel = memfdModel;
