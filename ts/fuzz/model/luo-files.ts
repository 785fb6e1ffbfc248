// The LUO model's preserved files: a memfd's inode as the model knows it, sessions, what an fd is
// to PRESERVE_FD, and one model per file handler (`struct liveupdate_file_handler`), looked up in
// LUO_FILE_MODELS as LUO looks its handlers up: memfd (mm/memfd_luo.c, "memfd-v2"), and the iommu
// live-update series' iommufd ("iommufd-v1", kernel/iommufd/liveupdate.ts) and VFIO cdev
// ("vfio-pci-v1", kernel/vfio/liveupdate.ts) handlers as far as PRESERVE_FD and unpreserve go.
// The generator never reboots with an iommufd or VFIO file preserved (LuoModel.planReboot), so
// their serialize / retrieve are not modelled (they throw), and it never closes or unbinds one
// while it is preserved (ModelState.luoHolds).
import type { MCtx, MDevice } from './state.js';

/** A memfd's shmem inode: what every fd and mapping of it sees. */
export interface MShmem {
  seals: number;
  npages: number;
  /** Bytes written, by page (absent pages read as zeros). */
  data: Map<number, Uint8Array>;
  /** The outgoing session preserving it (size frozen, every page pinned). */
  preservedIn: MSession | null;
  /** Shared mappings that may write (`i_mmap_writable`). */
  writableMaps: number;
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

/**
 * One handler's model (`struct liveupdate_file_handler`): which files it takes, the identity that
 * makes a second preservation EBUSY, and its lifecycle. iommufd and VFIO cdev handlers go here.
 */
export interface LuoFileModel {
  readonly compatible: string;
  canPreserve(t: FdTarget): boolean;
  /** `get_id` of a file, of what PRESERVE_FD made of one, and of a retrieved object. */
  id(t: FdTarget): unknown;
  preservedId(preserved: unknown): unknown;
  retrievedId(retrieved: unknown): unknown;
  /** The handler's own `preserve` refusing the file (after LUO's checks), or null. */
  preserveErr?(t: FdTarget): string | null;
  /** PRESERVE_FD succeeded: what LUO now holds. */
  preserve(t: FdTarget, s: MSession): unknown;
  unpreserve(obj: unknown): void;
  /** Pages it pins while preserved (host.kernel.pinnedPages()). */
  pinned(obj: unknown): number;
  /** At the reboot: what the next kernel gets. */
  serialize(obj: unknown, file: MLuoFile): unknown;
  /** RETRIEVE_FD the first time: the new object, which the VMM then holds an fd of. */
  retrieve(ser: unknown, s: MSession): unknown;
  /** The fd target of a retrieved object (for the VMM's fd table). */
  target(obj: unknown): FdTarget;
}

interface MemfdSer {
  seals: number;
  npages: number;
  data: Map<number, Uint8Array>;
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
  serialize(p): MemfdSer {
    const { obj, seals } = p as { obj: MShmem; seals: number };
    return { seals, npages: obj.npages, data: new Map([...obj.data].map(([k, v]) => [k, v.slice()])) };
  },
  retrieve(ser): MShmem {
    const z = ser as MemfdSer;
    return { seals: z.seals, npages: z.npages, data: new Map([...z.data].map(([k, v]) => [k, v.slice()])), preservedIn: null, writableMaps: 0 };
  },
  target: (obj) => ({ kind: 'memfd', obj: obj as MShmem }),
};

const notModelled = (what: string) => (): never => {
  throw new Error(`the LUO model does not carry a preserved ${what} across the reboot (the generator never reboots with one)`);
};

/**
 * "iommufd-v1" (`iommufd_liveupdate_register_lufs`), PRESERVE_FD only. No `get_id`: the file is
 * the identity (the context). Its preserve walks the HWPTs marked by IOMMU_HWPT_LU_SET_PRESERVE;
 * the fuzzer never marks one, so it preserves nothing (no domain, no area) and cannot fail, and
 * unpreserve has nothing to undo (no IOAS made immutable, nothing pinned).
 */
const iommufdModel: LuoFileModel = {
  compatible: 'iommufd-v1',
  canPreserve: (t) => t.kind === 'iommufd',
  id: (t) => (t as { obj: MCtx }).obj,
  preservedId: (p) => (p as { obj: MCtx }).obj,
  retrievedId: (obj) => obj,
  preserve: (t) => ({ obj: (t as { obj: MCtx }).obj }),
  unpreserve() {},
  pinned: () => 0,
  serialize: notModelled('iommufd'),
  retrieve: notModelled('iommufd'),
  target: notModelled('iommufd'),
};

/**
 * "vfio-pci-v1" (`vfio_pci_liveupdate_init`), PRESERVE_FD only. `get_id` is the device (a second
 * file of it would be EBUSY too). The previous kernel never preserved a device here (no reboot
 * with one preserved), so the "still owned by the previous kernel" EBUSY cannot happen; an
 * attached device goes through `iommufd_device_preserve`, whose HWPT is never marked: EINVAL. An
 * unbound or bound-but-unattached device preserves without IOMMU state.
 */
const vfioModel: LuoFileModel = {
  compatible: 'vfio-pci-v1',
  canPreserve: (t) => t.kind === 'vfio',
  id: (t) => (t as { obj: MDevice }).obj,
  preservedId: (p) => (p as { obj: MDevice }).obj,
  retrievedId: (obj) => obj,
  preserveErr: (t) => ((t as { obj: MDevice }).obj.attached ? 'EINVAL' : null),
  preserve: (t) => ({ obj: (t as { obj: MDevice }).obj }),
  unpreserve() {},
  pinned: () => 0,
  serialize: notModelled('VFIO device file'),
  retrieve: notModelled('VFIO device file'),
  target: notModelled('VFIO device file'),
};

/** Whether a handler model carries its files across the reboot (the generator reboots only then). */
export const crossesReboot = (h: LuoFileModel): boolean => h === memfdModel;

/** The handlers, in registration order (`luo_register_file_handler`): the first that takes a file preserves it. */
export const LUO_FILE_MODELS: LuoFileModel[] = [memfdModel, iommufdModel, vfioModel];
