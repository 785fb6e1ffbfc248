// The VT-d driver's live update (drivers/iommu/intel/liveupdate.c of the iommu live-update
// series, Khawaja, v1 3 Feb 2026 patches 05-07, v3 14 Jun 2026 patch 07): what the IOMMU core's
// FLB asks of it before the kexec. The unit (`intel_iommu_preserve`): the root table and every
// context table preserved, the token is the register base (`iommu->reg_phys`); a domain (the
// page-table `preserve` of iommupt): every table page preserved in place, the top table and its
// level recorded; a device (`intel_iommu_preserve_device`): the DID of its context entry.
//
// And the next kernel's side (v1 patch 07 "Restore IOMMU state and reclaimed domain ids", the
// iommupt `restore` of patch 05, and the early re-attach of the later patches): at init the
// driver reads the iommu FLB, adopts the root and context tables of its unit (token: the register
// base), each preserved domain's page table in place, reclaims the DIDs, leaves each preserved
// device attached through its context entry (no gap in its DMA) and blocks every other device.
import { errno } from '../../uapi/errno.js';
import { IOMMU_INTEL, type IommuIncoming, type IommuLiveupdate, type IommuLiveupdateOps } from '../iommu_liveupdate.js';
import { DmarDomain, GSTS_TES, IDA_START_DID, sidName, type IntelIommu } from './iommu.js';
import { adoptContextTables, adoptDevice, blockOthers } from './serialise.js';

/** `iommu->reg_phys` of the one DRHD (DMAR: dmar0: reg_base_addr fed90000). */
export const DMAR_REG_BASE = 0xfed9_0000n;

/** The driver's hooks for the IOMMU core's live-update state. */
export function intelLiveupdateOps(intel: IntelIommu): IommuLiveupdateOps {
  const mem = intel.memory;
  const tables = () => [intel.rootEntry, ...intel.contextTables.values()];
  const preserved = new Map<DmarDomain, BigUint64Array>();
  return {
    preserveHw() {
      for (const t of tables()) if (!mem.isPreserved(t)) mem.preserve(t, 0);
      return { token: DMAR_REG_BASE, type: IOMMU_INTEL, rootTable: intel.rootEntry };
    },
    unpreserveHw() {
      for (const t of tables()) if (mem.isPreserved(t)) mem.unpreserve(t, 0);
    },
    preserveDomain(domain: object) {
      const d = domain as DmarDomain;
      if (!intel.domains.has(d)) errno('EOPNOTSUPP', 'not a VT-d paging domain');
      // One call for every table page (all or nothing), not one per page.
      const pages = d.pt.tablePages();
      mem.preserveMany(pages, 0);
      preserved.set(d, pages);
      return { top: d.pt.pgd, level: d.pt.levels, vasz: Number(d.apertureEnd.toString(2).length) };
    },
    unpreserveDomain(domain: object) {
      const d = domain as DmarDomain;
      for (const p of preserved.get(d) ?? []) mem.unpreserve(p, 0);
      preserved.delete(d);
    },
    preserveDevice(sid: number, domain: object) {
      const d = domain as DmarDomain;
      if (intel.domainOf(sid) !== d || !d.did) errno('EINVAL', 'the device is not attached to the domain');
      return d.did;
    },
  };
}

/**
 * `intel_iommu_liveupdate_restore_root_table` and the domains' and devices' restore, from what
 * the FLB says (`inc`). Returns the root table the unit keeps translating through, or null when
 * the previous kernel preserved no state of this unit (its domains, if any, are still adopted).
 * A KernelError: the state is not to be trusted (the caller drops all of it).
 */
export function intelLiveupdateRestore(intel: IntelIommu, lu: IommuLiveupdate, inc: IommuIncoming): bigint | null {
  const mem = intel.memory;
  const byPa = new Map<bigint, DmarDomain>();
  const tops = new Map<DmarDomain, bigint>();
  for (const d of inc.domains) {
    if (d.level !== intel.levels) errno('EINVAL', `preserved domain at 0x${d.pa.toString(16)}: level ${d.level} is not the unit's ${intel.levels}`);
    if (!intel.preservedRange(d.top, 4096n)) errno('EINVAL', `preserved domain: top table 0x${d.top.toString(16)} was not preserved`);
    const domain = new DmarDomain(intel, intel.unit.adoptPageTable(d.top, d.level));
    const pages = domain.pt.tablePages();
    if (!mem.isAllocatedMany(pages, 4096n)) errno('EINVAL', `preserved domain at 0x${d.pa.toString(16)}: a table page was not preserved`);
    domain.handedOverPages = pages;
    byPa.set(d.pa, domain);
    tops.set(domain, d.top);
  }
  const hw = inc.hws.find((h) => h.token === DMAR_REG_BASE && h.type === IOMMU_INTEL);
  let root: bigint | null = null;
  const keep = new Set<number>();
  if (hw) {
    root = hw.rootTable;
    const regs = intel.unit.registers();
    if (!(regs.gsts & GSTS_TES) || (regs.rtaddr & ~0xfffn) !== root) errno('EINVAL', 'the unit does not translate through the preserved root table');
    if (!intel.preservedRange(root, 4096n)) errno('EINVAL', 'the preserved root table was not preserved');
    adoptContextTables(intel, root);
    for (const dev of inc.devices) {
      if (dev.hwPa !== hw.pa) continue;
      const domain = byPa.get(dev.domainPa) ?? errno('EINVAL', `${sidName(dev.sid)}: its preserved domain is not in the FLB`);
      const did = dev.did;
      const owner = [...byPa.values()].find((d) => d !== domain && d.did === did);
      if (did < IDA_START_DID || did >= intel.ndoms || owner || (domain.did && domain.did !== did)) errno('EINVAL', `${sidName(dev.sid)}: bad did ${did}`);
      if (!adoptDevice(intel, domain, dev.sid, tops.get(domain)!, did)) {
        intel.svc.log(`DMAR: ${sidName(dev.sid)}: its context entry does not point at its preserved domain; left blocked`);
        continue;
      }
      intel.domainIds.add(did); // ida_alloc_range(&iommu->domain_ida, did, did)
      lu.claimed.set(dev.sid, null);
      keep.add(dev.sid);
    }
    intel.rootEntry = root;
    blockOthers(intel, keep);
  }
  for (const [pa, d] of byPa) lu.restored.set(pa, d);
  intel.svc.log(`DMAR: liveupdate: restored ${byPa.size} preserved domains, ${keep.size} devices still attached${hw ? '' : ' (no unit state preserved)'}`);
  return root;
}
