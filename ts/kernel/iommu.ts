// The IOMMU core (drivers/iommu/iommu.c, include/linux/iommu.h): what a driver implements
// (`iommu_ops`, `iommu_domain_ops`), and the object it registers with (`iommu_device_register`)
// that iommufd and VFIO call. Nothing above the core knows which driver it is: iommufd and VFIO
// reach the Intel driver only through here.
//
// The model has one IOMMU unit: the core holds the one driver that registered, and every device
// is behind it.
import { errno } from '../uapi/errno.js';
import type { IommuLiveupdate } from './iommu_liveupdate.js';

/** A reserved IOVA region of a device (`struct iommu_resv_region`). */
export interface ResvRegion {
  start: bigint;
  length: bigint;
  type: 'msi' | 'direct';
}

/** `IOMMU_READ` / `IOMMU_WRITE` of a mapping. */
export interface IommuProt {
  read: boolean;
  write: boolean;
}

/** `enum iommu_cap` as far as it is asked (`device_iommu_capable`). */
export type IommuCap = 'dirty-tracking' | 'pci-ats-supported';

/** What `ops->hw_info` returns: the driver's `iommu_hw_info_type` and its struct. */
export interface IommuHwInfo {
  type: number;
  data: Uint8Array;
}

/**
 * `struct iommu_domain` of a paging domain with its `iommu_domain_ops`. Allocated by the driver,
 * mapped by iommufd's io_pagetable, attached to devices through the core.
 */
export interface IommuDomain {
  /** `domain->geometry.aperture_start` / `aperture_end`. */
  readonly apertureStart: bigint;
  readonly apertureEnd: bigint;
  /** `domain->pgsize_bitmap`. */
  readonly pgsizeBitmap: bigint;
  /** Requester IDs attached to it. */
  readonly devices: ReadonlySet<number>;
  /** `domain->persistent_id` (RFC patch 04): the persistent iommufd it belongs to, or 0. */
  persistentId: number;
  /** `domain->iopf_handler` is set: its IO page faults go to an iommufd fault queue. */
  iopfHandler: boolean;
  /** Physical address of its top-level table (a persistent IOAS records it in guestmemfs). */
  readonly pgd: bigint;
  /**
   * `map_pages` for `n` physically contiguous runs (page numbers), then `iotlb_sync_map`; all or
   * nothing (ENOMEM).
   */
  mapRuns(iovaPfns: Float64Array, paPfns: Float64Array, counts: Float64Array, n: number, prot: IommuProt): void;
  /** `unmap_pages` of `[iova, iova + length)`, then `iotlb_sync` (the flush before tables are freed). */
  unmap(iova: bigint, length: bigint): void;
  /** `iova_to_phys`. */
  iovaToPhys(iova: bigint): bigint | null;
  /** `free`: blocks the devices still on it, then every table page goes. */
  free(): void;

  // ---- preservation (a domain the previous kernel handed over) -------------------------------

  /**
   * One walk of its tables: the first page of the runs (`prots[i]`: 1 read, 2 write, 3 both) it
   * does not map so, why the walk stopped (a table reached twice), a table page the previous
   * kernel did not hand over, and how many pages it maps.
   */
  verifyHandover(
    iovaPfns: Float64Array,
    paPfns: Float64Array,
    counts: Float64Array,
    prots: Uint8Array,
  ): { mismatch: bigint | null; corrupt: string | null; foreignTable: bigint | null; pages: number };
}

/**
 * `struct iommu_ops` of a driver (with its blocking domain's `attach_dev`), and the hooks the
 * live update adds: which domains are persistent, which were restored from the handover.
 */
export interface IommuOps {
  /** `probe_device`: what the driver decides about a PCI function, once, at boot. */
  probeDevice(sid: number, pci: { ats: boolean }): void;
  /** `capable`. */
  capable(sid: number, cap: IommuCap): boolean;
  /** `hw_info` of the type asked for (`IOMMU_HW_INFO_TYPE_DEFAULT` is the driver's own): EOPNOTSUPP for another. */
  hwInfo(sid: number, type: number): IommuHwInfo;
  /** `get_resv_regions`. */
  resvRegions(sid: number): ResvRegion[];
  /** `domain_alloc_paging_flags` (IOMMU_HWPT_ALLOC_* flags, whether user data came with it). */
  domainAllocPaging(sid: number, flags: number, userData: boolean): IommuDomain;
  /** `attach_dev` of a paging domain. */
  attachDevice(domain: IommuDomain, sid: number): void;
  /** `blocked_domain->ops->attach_dev`: the device translates nothing. */
  blockDevice(sid: number): void;
  /** The domain `sid` is attached to, if any. */
  domainOf(sid: number): IommuDomain | undefined;

  // ---- live update ---------------------------------------------------------------------------

  /** The persistent domains, in the order KHO DUMP numbers them. */
  persistentDomains(): IommuDomain[];
  /** Domains adopted from the handover, by their index in it. */
  readonly restored: ReadonlyMap<number, IommuDomain>;
  /** Whether `sid` still translates through a restored domain nobody has attached it to again. */
  isRestoredAttach(sid: number): boolean;
  /** Refuses a restored domain (it failed verification): its devices are blocked, its tables leaked. */
  reject(domain: IommuDomain, why: string): void;
}

/** The IOMMU core of one kernel: the registered driver, and the API the subsystems call. */
export class IommuCore {
  private driver: IommuOps | null = null;
  /** The live-update state (drivers/iommu/liveupdate.c), when LUO is on (iommu_liveupdate.ts). */
  liveupdate: IommuLiveupdate | null = null;

  /** `iommu_device_register`. */
  deviceRegister(ops: IommuOps): void {
    if (this.driver) throw new Error('iommu: the model has one IOMMU unit; a second driver registered');
    this.driver = ops;
  }

  /** `iommu_device_unregister`. */
  deviceUnregister(ops: IommuOps): void {
    if (this.driver === ops) this.driver = null;
  }

  private get ops(): IommuOps {
    if (!this.driver) return errno('ENODEV', 'no IOMMU driver registered');
    return this.driver;
  }

  /** `iommu_probe_device`. */
  probeDevice(sid: number, pci: { ats: boolean }): void {
    this.ops.probeDevice(sid, pci);
  }

  /** `device_iommu_capable`. */
  deviceCapable(sid: number, cap: IommuCap): boolean {
    return this.ops.capable(sid, cap);
  }

  /** `ops->hw_info` of the device's IOMMU. */
  hwInfo(sid: number, type: number): IommuHwInfo {
    return this.ops.hwInfo(sid, type);
  }

  /** `iommu_get_resv_regions`. */
  getResvRegions(sid: number): ResvRegion[] {
    return this.ops.resvRegions(sid);
  }

  /** `iommu_paging_domain_alloc_flags`. */
  pagingDomainAlloc(sid: number, flags = 0, userData = false): IommuDomain {
    return this.ops.domainAllocPaging(sid, flags, userData);
  }

  /** `iommu_attach_group` / `iommu_group_replace_domain`: `sid` translates through `domain`. */
  attachDevice(domain: IommuDomain, sid: number): void {
    this.ops.attachDevice(domain, sid);
  }

  /** `__iommu_group_set_blocking_domain`. */
  blockDevice(sid: number): void {
    this.ops.blockDevice(sid);
  }

  /** `iommu_get_domain_for_dev`. */
  getDomainForDev(sid: number): IommuDomain | undefined {
    return this.driver?.domainOf(sid);
  }

  /** The driver's persistent domains, in KHO DUMP order. */
  persistentDomains(): IommuDomain[] {
    return this.ops.persistentDomains();
  }

  /** Domains the driver adopted from the handover, by index. */
  restoredDomains(): ReadonlyMap<number, IommuDomain> {
    return this.driver?.restored ?? new Map();
  }

  /** Whether `sid` still translates through a restored domain. */
  isRestoredAttach(sid: number): boolean {
    return this.driver?.isRestoredAttach(sid) ?? false;
  }

  /** Refuses a restored domain. */
  rejectRestored(domain: IommuDomain, why: string): void {
    this.ops.reject(domain, why);
  }
}
