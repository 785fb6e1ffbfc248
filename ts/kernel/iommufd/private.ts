// What every part of iommufd shares (iommufd_private.h): the object and command types, the ctx as
// handlers see it, the subsystem state a ctx reaches, and the structs that refer to each other
// (IOAS, paging HWPT, device). The handler modules (ioas, hw_pagetable, device, eventq, viommu)
// import this, never main.ts; main.ts implements the ctx and dispatches to them.
import type { KernelError } from '../../uapi/errno.js';
import type { StructFields, StructLayout } from '../../uapi/struct.js';
import type { Task, Uaccess } from '../file.js';
import type { Guestmemfs } from '../guestmemfs/guestmemfs.js';
import { pinOwner } from '../guestmemfs/pins.js';
import type { IommuDomain } from '../iommu.js';
import type { KernelServices } from '../services.js';
import { IoPagetable, ULONG_MAX } from './io_pagetable.js';
import type { AccountMode, PinAccount } from './pages.js';

/** Object types of `enum iommufd_object_type` (ACCESS and SELFTEST do not exist here). */
export type ObjType = 'IOAS' | 'HWPT_PAGING' | 'HWPT_NESTED' | 'DEVICE' | 'FAULT' | 'VIOMMU' | 'VDEVICE' | 'VEVENTQ' | 'HW_QUEUE';

/** `struct iommufd_object`. */
export abstract class IommufdObject {
  id = 0;
  /** `obj->users`: 1 for the object itself plus one per holder. */
  users = 1;
  abstract readonly type: ObjType;
  /** The type's `destroy` op. */
  abstract destroy(): void;
}

/** The decoded command an op executes on, and how it writes back (`struct iommufd_ucmd`). */
export interface Ucmd<L extends StructLayout = StructLayout> {
  task: Task;
  u: Uaccess;
  ubuffer: bigint;
  userSize: number;
  layout: L;
  /** The command's struct, copied in; outputs are set here before {@link IommufdCtx.respond}. */
  cmd: StructFields<L>;
}

/** An ioctl handler (`op->execute`); it returns or throws a KernelError for `return -EXXX`. */
export type IommufdHandler<L extends StructLayout = StructLayout> = (ictx: IommufdCtx, ucmd: Ucmd<L>) => void | KernelError;

/** The state of the iommufd subsystem of one kernel that its contexts reach. */
export interface IommufdSubsystem {
  readonly svc: KernelServices;
  /** Where long-term pins of persistent contexts are recorded (null without a carve-out). */
  readonly guestmemfs: Guestmemfs | null;
  /** Open contexts. */
  readonly ctxs: Set<IommufdCtx>;
  /** `persistent_iommufds`: persistent contexts by persistent id (1-based). */
  readonly persistent: Map<number, IommufdCtx>;
  /** Devices of claimed contexts still translating through their restored domain, by requester ID. */
  readonly restoredAttach: Map<number, RestoredAttach>;
  /** Whether a handed-over context waits to be claimed under persistent id `id`. */
  pendingId(id: number): boolean;
}

/** `struct iommufd_ctx` as the object code and the command handlers use it (main.ts implements it). */
export interface IommufdCtx {
  readonly iommufd: IommufdSubsystem;
  readonly objects: Map<number, IommufdObject>;
  /** `ictx->account_mode`: RLIMIT_MODE 0 = per user, 1 = per mm. */
  accountMode: 0 | 1;
  vfioIoas: Ioas | null;
  /** `ictx->persistent_id` (RFC): 0 unless IOMMU_OPTION_PERSISTENT marked it. */
  persistentId: number;
  /** `xa_alloc` with XA_FLAGS_ALLOC1: the lowest free id; the object is not findable yet. */
  reserve(obj: IommufdObject): void;
  /** Takes the lowest free id (reserved until finalized, or for good if nothing finalizes it). */
  reserveId(): number;
  /** `iommufd_object_finalize`. */
  finalize(obj: IommufdObject): void;
  /** `iommufd_object_abort_and_destroy`. */
  abort(obj: IommufdObject): void;
  /** `iommufd_get_object`: ENOENT for unknown, unfinalized or mistyped ids. */
  getObject<T extends IommufdObject>(id: number, type?: T['type']): T;
  /** `iommufd_object_remove`: EBUSY while anyone else holds it. */
  remove(id: number): void;
  /** Destroys an object whose last holder just left (`iommufd_object_put_and_try_destroy`). */
  tryDestroy(obj: IommufdObject): void;
  /** The charger of a new iopt_pages for `task` (in `mode`, by default the context's). */
  accounter(task: Task, mode?: AccountMode): PinAccount;
  /** `iommufd_ucmd_respond`: copies the whole struct back, up to the user's size. */
  respond<L extends StructLayout>(ucmd: Ucmd<L>): void;
  /** The IOAS `id` names (`iommufd_get_ioas`). */
  ioas(id: number): Ioas;
  /** {@link ioas}, its ENOENT returned. */
  findIoas(id: number): Ioas | KernelError;
  /** The file's reference count (`fget` / `fput` of the ctx's file). */
  get(): unknown;
  put(): void;
}

/** `struct iommufd_ioas`. */
export class Ioas extends IommufdObject {
  readonly type = 'IOAS';
  /** Long-term pins on guestmemfs files are tagged with the persistent id and this IOAS's id. */
  readonly iopt = new IoPagetable(() => pinOwner(this.ictx.persistentId, this.id));
  /** `ioas->hwpt_list`. */
  readonly hwpts: HwptPaging[] = [];
  /** A persistent IOAS's holder record in guestmemfs's pin table (its id and domains). */
  private holder: number | null = null;

  constructor(readonly ictx: IommufdCtx) {
    super();
  }

  /**
   * Once it has its id: in a persistent context, guestmemfs records it as a holder of long-term
   * pins, with its domains, so the next kernel knows which IOASes the context had (ENOMEM when
   * the pin table is full).
   */
  register(): void {
    const gm = this.ictx.iommufd.guestmemfs;
    if (!this.ictx.persistentId || !gm) return;
    this.holder = gm.pinTable.add({ owner: pinOwner(this.ictx.persistentId, this.id), domains: 0, pgds: [] });
    this.recordDomains();
  }

  /** Its domains changed (an HWPT came or went): the holder record follows, in list order. */
  recordDomains(): void {
    if (this.holder !== null) this.ictx.iommufd.guestmemfs!.pinTable.setHolder(this.holder, this.hwpts.map((h) => h.domain.pgd));
  }

  destroy(): void {
    this.iopt.unmapRange(0n, ULONG_MAX);
    if (this.ictx.vfioIoas === this) this.ictx.vfioIoas = null;
    if (this.holder !== null) this.ictx.iommufd.guestmemfs!.pinTable.remove(this.holder);
    this.holder = null;
  }
}

/** `struct iommufd_hwpt_paging`. */
export class HwptPaging extends IommufdObject {
  readonly type = 'HWPT_PAGING';
  /** Created by attaching a device to an IOAS (destroyed with its last device). */
  autoDomain = false;
  inIopt = false;
  /** Whether destroying it frees the domain (not for a restored domain a failed claim drops). */
  ownsDomain = true;
  /** `hwpt->fault`: the queue its IO page faults go to (IOMMU_HWPT_FAULT_ID_VALID). */
  fault: IommufdObject | null = null;
  /** `hwpt->pasid_compat` (IOMMU_HWPT_ALLOC_PASID): it may serve PASID attachments. */
  pasidCompat = false;
  /** `hwpt->lu_preserve` / `lu_token`: IOMMU_HWPT_LU_SET_PRESERVE marked it for the live update. */
  luPreserve = false;
  luToken = 0;
  /** Rebuilt by RETRIEVE_FD of a preserved iommufd over the domain the previous kernel preserved. */
  luRestored = false;

  constructor(
    readonly ioas: Ioas,
    readonly domain: IommuDomain,
    readonly nestParent: boolean,
  ) {
    super();
    ioas.users++;
  }

  destroy(): void {
    if (this.inIopt) this.ioas.iopt.removeDomain(this.domain);
    const i = this.ioas.hwpts.indexOf(this);
    if (i >= 0) {
      this.ioas.hwpts.splice(i, 1);
      this.ioas.recordDomains();
    }
    if (this.ownsDomain) this.domain.free();
    if (this.fault) this.fault.users--;
    this.ioas.users--;
  }
}

/**
 * A device the previous kernel left translating through a restored domain, from the claim until
 * it leaves that domain (attached in this kernel, attached elsewhere, unbound). It holds a
 * reference on the restored HWPT, so the HWPT outlives the devices attached to it in this kernel,
 * and owns the device's reserved regions (the MSI window) in the IOAS. Leaving is not a detach:
 * the HWPT stays until IOMMU_DESTROY, or until a device attached in this kernel detaches last.
 */
export class RestoredAttach {
  constructor(
    readonly sid: number,
    readonly hwpt: HwptPaging,
  ) {}
}

/** `struct iommufd_device`: a bound device (one device per iommu_group here). */
export class IommufdDevice extends IommufdObject {
  readonly type = 'DEVICE';
  /** `igroup->hwpt`: the attachment without PASID. */
  hwpt: HwptPaging | null = null;
  /** `igroup->pasid_attach` for every PASID but IOMMU_NO_PASID. */
  readonly pasidHwpts = new Map<number, HwptPaging>();

  constructor(
    readonly ictx: IommufdCtx,
    /** PCI requester ID (bus << 8 | devfn). */
    readonly sid: number,
    readonly name: string,
  ) {
    super();
  }

  destroy(): void {
    // Unbind: the caller detached first; the group returns to its (blocking) default.
  }
}

/**
 * A context half-built over restored domains is dropped without touching them: each HWPT lets go
 * of its domain (no unmap, no free), so the domains keep translating for whoever adopts them next.
 */
export function abandonRestoredHwpts(ictx: IommufdCtx): void {
  for (const obj of ictx.objects.values()) {
    if (obj instanceof HwptPaging) {
      obj.ioas.iopt.forgetDomain(obj.domain);
      obj.inIopt = false;
      obj.ownsDomain = false;
    }
  }
}
