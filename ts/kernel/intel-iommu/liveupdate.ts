// The VT-d driver's live update (drivers/iommu/intel/liveupdate.c of the iommu live-update
// series, Khawaja, v1 3 Feb 2026 patches 05-07, v3 14 Jun 2026 patch 07): what the IOMMU core's
// FLB asks of it before the kexec. The unit (`intel_iommu_preserve`): the root table and every
// context table preserved, the token is the register base (`iommu->reg_phys`); a domain (the
// page-table `preserve` of iommupt): every table page preserved in place, the top table and its
// level recorded; a device (`intel_iommu_preserve_device`): the DID of its context entry.
import { errno } from '../../uapi/errno.js';
import { IOMMU_INTEL, type IommuLiveupdateOps } from '../iommu_liveupdate.js';
import type { DmarDomain, IntelIommu } from './iommu.js';

/** `iommu->reg_phys` of the one DRHD (DMAR: dmar0: reg_base_addr fed90000). */
export const DMAR_REG_BASE = 0xfed9_0000n;

/** The driver's hooks for the IOMMU core's live-update state. */
export function intelLiveupdateOps(intel: IntelIommu): IommuLiveupdateOps {
  const mem = intel.memory;
  const tables = () => [intel.rootEntry, ...intel.contextTables.values()];
  const preserved = new Map<DmarDomain, bigint[]>();
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
      const pages = [...d.pt.tablePages()];
      for (const p of pages) mem.preserve(p, 0);
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
