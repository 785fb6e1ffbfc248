// The Intel VT-d driver in legacy mode (drivers/iommu/intel/iommu.c): root and context tables in
// host memory, domain IDs, paging domains over the unit's second-level page tables, and the cache
// invalidations Linux issues on attach, detach, map and unmap.
import type { HandoverAudit, IommuUnit, PageTable } from '../../hw/iommu.js';
import { Gather } from '../../hw/iommu.js';
import type { PhysicalMemory } from '../../hw/memory.js';
import { errno, KernelError } from '../../uapi/errno.js';
import {
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  iommu_hw_info_vtd,
} from '../../uapi/iommufd.js';
import type { IommuCap, IommuDomain, IommuHwInfo, IommuOps, IommuProt, ResvRegion } from '../iommu.js';
import type { KernelServices } from '../services.js';

/** `IOAPIC_RANGE_START`..`IOAPIC_RANGE_END`: reserved as IOMMU_RESV_MSI for every device. */
export const IOAPIC_RANGE_START = 0xfee0_0000n;
export const IOAPIC_RANGE_END = 0xfeef_ffffn;
/** Domain IDs 0 and 1 are reserved (`FLPT_DEFAULT_DID`, `IDA_START_DID`). */
export const IDA_START_DID = 2;

/** GSTS.TES. */
export const GSTS_TES = 1 << 31;
export const sidName = (sid: number): string =>
  `${(sid >> 8).toString(16).padStart(2, '0')}:${((sid >> 3) & 0x1f).toString(16).padStart(2, '0')}.${sid & 7}`;
const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;
const isNomem = (e: unknown): boolean => (e as { code?: string }).code === 'ERR_PHYSMEM_NOMEM';

/** One DRHD: the driver's state for an {@link IommuUnit}. */
export class IntelIommu implements IommuOps {
  rootEntry: bigint = 0n;
  readonly contextTables = new Map<number, bigint>();
  /** @internal */
  readonly domainIds = new Set<number>();
  readonly cap: bigint;
  readonly ecap: bigint;
  /** Which domain each requester is attached to. */
  readonly attached = new Map<number, DmarDomain>();
  /** Every live domain (persistent ones are serialised at KHO DUMP). */
  readonly domains = new Set<DmarDomain>();
  /** Requesters still attached to a domain the previous kernel handed over, not yet re-bound. */
  readonly restoredAttach = new Set<number>();
  /** Domains adopted from KHO, by their node index under /intel-iommu/domains. */
  readonly restored = new Map<number, DmarDomain>();
  /** `struct device_domain_info` of each probed requester, as far as modelled. */
  private readonly probed = new Map<number, { atsSupported: boolean }>();

  readonly memory: PhysicalMemory;

  /**
   * `adopt`: reads a handover (the RFC's `/intel-iommu` node, or the LUO FLB) and returns the root
   * table the unit still translates through, or null for none; a KernelError means the handover
   * is not trusted: everything it adopted is dropped and the unit starts afresh.
   */
  constructor(
    readonly svc: KernelServices,
    readonly unit: IommuUnit,
    adopt?: (intel: IntelIommu) => bigint | null,
  ) {
    const memory = (this.memory = svc.memory);
    const regs = unit.registers();
    this.cap = regs.cap;
    this.ecap = regs.ecap;
    this.cachingMode = bit(this.cap, 7);
    svc.log(`DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap ${this.cap.toString(16)} ecap ${this.ecap.toString(16)}`);
    let root: bigint | null = null;
    if (adopt) {
      try {
        root = adopt(this);
      } catch (e) {
        svc.log(`DMAR: KHO state not adopted: ${e instanceof KernelError ? e.detail : String(e)}`);
        this.restored.clear();
        this.attached.clear();
        this.domains.clear();
        this.domainIds.clear();
        this.contextTables.clear();
        this.restoredAttach.clear();
      }
    }
    if (root !== null) {
      this.rootEntry = root;
    } else {
      if (unit.registers().gsts & GSTS_TES) {
        // init_dmars: "Translation was enabled but we are not in kdump mode": off, then fresh tables.
        svc.log('DMAR: Translation was enabled for dmar0 but we are not in kdump mode');
        unit.enableTranslation(false);
      }
      this.rootEntry = memory.alloc(0, { zero: true });
      unit.setRootTable(this.rootEntry);
      // Without ESRTPS, SRTP does not flush: global context and IOTLB invalidation follow.
      if (!bit(this.cap, 63)) {
        unit.invalidateContext({ granularity: 'global' });
        unit.invalidateIotlb({ granularity: 'global' });
      }
      unit.enableTranslation(true);
    }
    svc.log('DMAR: Intel(R) Virtualization Technology for Directed I/O');
  }

  /** A root or context table's 512 little-endian words, read in one go. */
  table(pa: bigint): bigint[] {
    const b = this.memory.read(pa, 4096);
    const v = new DataView(b.buffer, b.byteOffset, 4096);
    return Array.from({ length: 512 }, (_, i) => v.getBigUint64(8 * i, true));
  }

  preservedRange(pa: bigint, len: bigint): boolean {
    return pa % 4096n === 0n && len > 0n && pa + len <= this.memory.size && this.memory.isAllocated(pa, len);
  }

  /** Refuses a restored domain (failed verification): its devices are blocked, its tables freed. */
  reject(domain: DmarDomain, why: string): void {
    this.svc.log(`DMAR: persistent domain (persistent id ${domain.persistentId}, did ${domain.did}) not adopted: ${why}`);
    for (const sid of [...domain.devices]) this.blockDevice(sid);
    for (const [k, d] of this.restored) if (d === domain) this.restored.delete(k);
    // Its tables are not trusted: walking them to free "table pages" could free anything. They
    // stay allocated (leaked) rather than risk the next owner's memory.
    domain.abandon();
  }

  /** Whether `sid` is still attached to a handed-over domain nobody has re-bound. */
  isRestoredAttach(sid: number): boolean {
    return this.restoredAttach.has(sid);
  }

  /** The persistent domains, in the order KHO DUMP numbers them. */
  persistentDomains(): DmarDomain[] {
    return [...this.domains].filter((d) => d.persistentId !== 0).sort((a, b) => a.serial - b.serial);
  }

  /**
   * `intel_iommu_shutdown` at kexec. With a KHO handover translation stays on and every device
   * outside a persistent domain loses its context entry (RFC patch 03, with the flushes);
   * without, translation is turned off.
   */
  shutdown(handover: boolean): void {
    if (!handover) {
      this.unit.enableTranslation(false);
      this.svc.log('DMAR: translation disabled for kexec');
      return;
    }
    // Kept: devices of a persistent domain (RFC) and devices the iommu FLB preserved (LUO,
    // `__maybe_clean_unpreserved_context_entries`).
    const lu = this.svc.iommu.liveupdate;
    for (const [sid, d] of [...this.attached]) if (!d.persistentId && !lu?.isPreservedDevice(sid)) this.blockDevice(sid);
    // A context table allocated after DUMP (a first attach on a new bus) is handed over too: the
    // root table the next kernel adopts points at it.
    for (const ctx of this.contextTables.values()) if (!this.memory.isPreserved(ctx)) this.memory.preserve(ctx, 0);
    this.svc.log(`DMAR: kexec with KHO: translation stays on for ${this.attached.size} persistent devices`);
  }

  /** CAP.MGAW + 1. */
  get mgaw(): number {
    return Number((this.cap >> 16n) & 0x3fn) + 1;
  }

  /** `iommu->agaw` as paging levels: the deepest SAGAW depth within MGAW. */
  get levels(): number {
    const sagaw = Number((this.cap >> 8n) & 0x1fn);
    for (let agaw = 3; agaw >= 1; agaw--) {
      if (sagaw & (1 << agaw) && 30 + 9 * agaw <= Math.max(this.mgaw, 39)) return agaw + 2;
    }
    return errno('ENODEV', 'no supported SAGAW');
  }

  /** CAP.ND: number of domain IDs. */
  get ndoms(): number {
    return 1 << (4 + 2 * Number(this.cap & 7n));
  }

  /** CAP.CM, read once: every map of a domain asks (a bigint test per map would allocate). */
  readonly cachingMode: boolean;

  /**
   * `intel_iommu_probe_device`: records what the driver decides about a PCI function once, at
   * boot. ATS is supported when the unit has ECAP.DT and the function an ATS capability;
   * `dmar_ats_supported` holds for every device here (no ACPI tables are modelled: each device
   * counts as root-complex integrated or behind a port an ATSR with INCLUDE_ALL covers, the
   * table QEMU builds with device-iotlb=on). PASID and PRI need scalable mode: never.
   */
  probeDevice(sid: number, pci: { ats: boolean }): void {
    this.probed.set(sid, { atsSupported: bit(this.ecap, 2) && pci.ats });
    // The default domain the device is attached to at probe (not modelled: a device is blocked
    // here until VFIO binds it) allocates its bus's context table, and blocking it later clears
    // only its context entry. So a blocked device's DMA faults "context entry not present" (2),
    // as on the real unit, not "root entry not present" (1).
    this.contextAddr(sid >> 8, true);
  }

  /**
   * `intel_iommu_capable` for a probed device: IOMMU_CAP_DIRTY_TRACKING needs second-stage A/D
   * (`ssads_supported`, scalable mode only), so never; IOMMU_CAP_PCI_ATS_SUPPORTED is
   * `info->ats_supported`.
   */
  capable(sid: number, cap: IommuCap): boolean {
    if (cap === 'dirty-tracking') return false;
    return this.probed.get(sid)?.atsSupported ?? false;
  }

  /**
   * `intel_iommu_hw_info`: `struct iommu_hw_info_vtd` — flags, always
   * IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 (the driver sets it for every unit and leaves the
   * decision to userspace), then CAP and ECAP as read at boot. Of another type than the default
   * or its own: EOPNOTSUPP.
   */
  hwInfo(_sid: number, type: number): IommuHwInfo {
    if (type !== IOMMU_HW_INFO_TYPE_DEFAULT && type !== IOMMU_HW_INFO_TYPE_INTEL_VTD) errno('EOPNOTSUPP', `no hw info of type ${type}`);
    const data = new Uint8Array(iommu_hw_info_vtd.size);
    const v = new DataView(data.buffer);
    v.setUint32(0, IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, true);
    v.setBigUint64(8, this.cap, true);
    v.setBigUint64(16, this.ecap, true);
    return { type: IOMMU_HW_INFO_TYPE_INTEL_VTD, data };
  }

  /** `intel_iommu_get_resv_regions`: no RMRRs here, the IOAPIC/MSI window always. */
  resvRegions(_sid: number): ResvRegion[] {
    return [{ start: IOAPIC_RANGE_START, length: IOAPIC_RANGE_END - IOAPIC_RANGE_START + 1n, type: 'msi' }];
  }

  /**
   * `intel_iommu_domain_alloc_paging_flags`: no user data; in legacy mode only the second-stage
   * allocator, which takes ALLOC_PASID (the HWPT's pasid_compat, which only PASID attaches look
   * at, and VFIO refuses those here) but not NEST_PARENT without nesting support.
   */
  domainAllocPaging(_sid: number, flags = 0, userData = false): DmarDomain {
    if (userData) errno('EOPNOTSUPP', 'no driver data for a paging domain');
    if (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) errno('EOPNOTSUPP', 'no nesting in legacy mode');
    let pt: PageTable;
    try {
      pt = this.unit.createPageTable(this.levels);
    } catch (e) {
      if (isNomem(e)) errno('ENOMEM', 'page-table allocation');
      throw e;
    }
    return new DmarDomain(this, pt);
  }

  /** The domain `sid` is attached to, if any. */
  domainOf(sid: number): DmarDomain | undefined {
    return this.attached.get(sid);
  }

  /** `intel_iommu_attach_device`: blocks the old attachment first, then programs the context entry. */
  attachDevice(domain: DmarDomain, sid: number): void {
    if (this.attached.get(sid) === domain) {
      this.restoredAttach.delete(sid); // re-bound by its VMM: an ordinary attachment from now on
      return;
    }
    if (this.attached.has(sid)) this.blockDevice(sid);
    // iopf_for_domain_set → intel_iommu_enable_iopf: IO page faults need PRI, which this driver
    // enables in scalable mode only. The device stays blocked (no revert of the failed device).
    if (domain.iopfHandler) errno('ENODEV', 'IO page faults need PRI, off in legacy mode');
    const did = domain.attachIommu();
    const ce = this.contextAddr(sid >> 8, true)! + 16n * BigInt(sid & 0xff);
    // context_clear_entry, set DID/AW/SLPTPTR, TT=0 (multi-level), FPD=0, P=1.
    this.memory.writeU64(ce + 8n, BigInt(domain.pt.aw) | (BigInt(did) << 8n));
    this.memory.writeU64(ce, domain.pt.pgd | 1n);
    // Non-present to present: with CM the hardware may cache non-present entries (in DID 0).
    if (this.cachingMode) {
      this.unit.invalidateContext({ granularity: 'device', did: 0, sid, fm: 0 });
      this.unit.invalidateIotlb({ granularity: 'domain', did });
    }
    domain.devices.add(sid);
    this.attached.set(sid, domain);
  }

  /** `device_block_translation`: clears the context entry and flushes what the old DID cached. */
  blockDevice(sid: number): void {
    const domain = this.attached.get(sid);
    if (!domain) return;
    this.clearContext(sid);
    domain.devices.delete(sid);
    this.attached.delete(sid);
    this.restoredAttach.delete(sid);
    domain.detachIommu();
  }

  /** `domain_context_clear_one` + `intel_context_flush_no_pasid`. */
  clearContext(sid: number): void {
    const ctx = this.contextAddr(sid >> 8, false);
    if (ctx === undefined) return;
    const ce = ctx + 16n * BigInt(sid & 0xff);
    const didOld = Number((this.memory.readU64(ce + 8n) >> 8n) & 0xffffn);
    this.memory.writeU64(ce, 0n);
    this.memory.writeU64(ce + 8n, 0n);
    this.unit.invalidateContext({ granularity: 'device', did: didOld, sid, fm: 0 });
    this.unit.invalidateIotlb({ granularity: 'domain', did: didOld });
  }

  /** `iommu_context_addr`: the context table of `bus`, allocated on demand. */
  private contextAddr(bus: number, alloc: boolean): bigint | undefined {
    let ctx = this.contextTables.get(bus);
    if (ctx === undefined && alloc) {
      ctx = this.memory.alloc(0, { zero: true });
      this.contextTables.set(bus, ctx);
      this.memory.writeU64(this.rootEntry + 16n * BigInt(bus), ctx | 1n);
    }
    return ctx;
  }

  /** `ida_alloc_range(&iommu->domain_ida, IDA_START_DID, cap_ndoms - 1)`. */
  allocDid(): number {
    for (let did = IDA_START_DID; did < this.ndoms; did++) {
      if (!this.domainIds.has(did)) {
        this.domainIds.add(did);
        return did;
      }
    }
    return errno('ENOSPC', 'no free domain ID');
  }

  freeDid(did: number): void {
    this.domainIds.delete(did);
  }

  /** `calculate_psi_aligned_address`: PSI base and address mask covering `[start, end]`. */
  psiFor(start: bigint, end: bigint): { addr: bigint; am: number } {
    const pfn = start >> 12n;
    const pages = ((end | 0xfffn) - (start & ~0xfffn) + 1n) >> 12n;
    let aligned = 1n;
    while (aligned < pages) aligned <<= 1n;
    const bitmask = aligned - 1n;
    let mask = 0;
    while (1n << BigInt(mask) < aligned) mask++;
    if (bitmask & pfn) {
      const endPfn = pfn + pages - 1n;
      const shared = ~(pfn ^ endPfn) & ~bitmask & 0xffff_ffff_ffff_ffffn;
      mask = 64;
      for (let b = 0; b < 64; b++) {
        if ((shared >> BigInt(b)) & 1n) {
          mask = b;
          break;
        }
      }
    }
    return { addr: mask >= 52 ? 0n : start & ~((4096n << BigInt(mask)) - 1n), am: mask };
  }
}

/** `struct dmar_domain`: a second-level page table and the DID it has on the unit. */
export class DmarDomain implements IommuDomain {
  readonly devices = new Set<number>();
  /** The table pages the previous kernel listed for it (restored domains only). */
  handedOverPages: BigUint64Array = new BigUint64Array(0);
  /** `domain->persistent_id` (RFC patch 04): the persistent iommufd it belongs to, or 0. */
  persistentId = 0;
  /** `domain->iopf_handler` is set: iommufd delivers its IO page faults to a fault queue. */
  iopfHandler = false;
  /** DID while attached to at least one device of the unit (`domain_attach_iommu`). */
  did = 0;
  private iommuRefs = 0;
  readonly apertureStart = 0n;
  readonly apertureEnd: bigint;
  readonly pgsizeBitmap: bigint;
  /** `set_pte_snp`: leaves get SNP when the unit supports snoop control (enforce_cache_coherency). */
  readonly snoop: boolean;
  private freed = false;
  /** What a map displaces (empty tables under a new superpage) or an unmap frees, until synced. */
  private mapGather = new Gather();

  private static serials = 0;
  /** Creation order (KHO numbers persistent domains by it). */
  readonly serial = DmarDomain.serials++;

  constructor(
    readonly iommu: IntelIommu,
    readonly pt: PageTable,
  ) {
    iommu.domains.add(this);
    const gaw = Math.min(30 + 9 * (pt.levels - 2), iommu.mgaw);
    this.apertureEnd = (1n << BigInt(gaw)) - 1n;
    const sllps = Number((iommu.cap >> 34n) & 0xfn);
    this.pgsizeBitmap = (1n << 12n) | (sllps & 1 ? 1n << 21n : 0n) | (sllps & 2 ? 1n << 30n : 0n);
    this.snoop = bit(iommu.ecap, 7);
  }

  attachIommu(): number {
    if (this.iommuRefs++ === 0) this.did = this.iommu.allocDid();
    return this.did;
  }

  /** A device the previous kernel left attached with `did` (re-hydration). */
  adoptDevice(sid: number, did: number): void {
    this.did = did;
    this.iommuRefs++;
    this.devices.add(sid);
  }

  detachIommu(): void {
    if (--this.iommuRefs === 0) {
      this.iommu.freeDid(this.did);
      this.did = 0;
    }
  }

  /** The top-level table. */
  get pgd(): bigint {
    return this.pt.pgd;
  }

  /** `intel_iommu_map_pages` for a batch, then `iotlb_sync_map` (PSI only in caching mode). */
  mapRuns(iovaPfns: Float64Array, paPfns: Float64Array, counts: Float64Array, n: number, prot: IommuProt): void {
    if (n === 0) return;
    try {
      this.pt.mapRuns(iovaPfns.subarray(0, n), paPfns.subarray(0, n), counts.subarray(0, n), { read: prot.read, write: prot.write, snoop: this.snoop }, this.mapGather);
    } catch (e) {
      if (this.mapGather.pending) this.sync(this.mapGather);
      if (isNomem(e)) errno('ENOMEM', 'page-table allocation');
      throw e;
    }
    // Tables a superpage replaced are freed only after the flush (switch_to_super_page).
    if (this.mapGather.pending) this.sync(this.mapGather);
    if (this.iommu.cachingMode && this.did) {
      for (let i = 0; i < n; i++) {
        const start = BigInt(iovaPfns[i]!) << 12n;
        const { addr, am } = this.iommu.psiFor(start, start + (BigInt(counts[i]!) << 12n) - 1n);
        this.iommu.unit.invalidateIotlb(am > 18 ? { granularity: 'domain', did: this.did } : { granularity: 'page', did: this.did, addr, am });
      }
    }
  }

  /** `intel_iommu_unmap_pages` + `intel_iommu_tlb_sync`: PSI/DSI flush, then table pages freed. */
  unmap(iova: bigint, length: bigint): void {
    // After KHO DUMP a persistent domain's tables belong to the handover: torn down with its
    // context they stay as serialised (its devices are blocked by free()), never freed here.
    if (this.persistentId && this.iommu.svc.kho.active) return;
    this.pt.unmap(iova, length, this.mapGather);
    this.sync(this.mapGather);
  }

  /** Flushes what `gather` collected, then frees its table pages. */
  private sync(gather: Gather): void {
    if (this.did) {
      this.iommu.unit.iotlbSync(this.did, gather);
      return;
    }
    // Not attached anywhere: no cache can hold it, nothing to flush.
    for (const pa of gather.freelist) this.iommu.memory.free(pa, 0);
    if (gather === this.mapGather) this.mapGather = new Gather();
  }

  /** `iova_to_phys`. */
  iovaToPhys(iova: bigint): bigint | null {
    return this.pt.iovaToPhys(iova);
  }

  /** Checked natively in one walk against {@link handedOverPages}. */
  verifyHandover(iovaPfns: Float64Array, paPfns: Float64Array, counts: Float64Array, prots: Uint8Array): HandoverAudit {
    return this.pt.verifyHandover(iovaPfns, paPfns, counts, prots, this.handedOverPages);
  }

  /** Forgets a domain whose tables are not trusted, freeing none of them. */
  abandon(): void {
    this.freed = true;
    this.iommu.domains.delete(this);
    if (this.did && this.iommuRefs) this.iommu.freeDid(this.did);
  }

  /** `intel_iommu_domain_free`: every table page back to the allocator. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    // A restored domain can still translate for devices nobody re-bound: block them first.
    for (const sid of [...this.devices]) this.iommu.blockDevice(sid);
    this.iommu.domains.delete(this);
    if (this.persistentId && this.iommu.svc.kho.active) {
      // Its tables are handed over already (preserved): they go with this kernel.
      this.iommu.svc.log(`DMAR: persistent domain ${this.persistentId} freed after KHO DUMP; its tables stay with the handover`);
      return;
    }
    const gather = new Gather();
    this.pt.destroy(gather);
    this.sync(gather);
  }
}
