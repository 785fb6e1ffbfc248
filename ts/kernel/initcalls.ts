// The initcall list: which subsystems this kernel has and the order they boot in. The kernel
// core knows none of them; the host boots a kernel with this list.
import { guestmemfsInit } from './guestmemfs/init.js';
import type { Guestmemfs } from './guestmemfs/guestmemfs.js';
import { intelIommuInit } from './intel-iommu/init.js';
import type { DmarDomain, IntelIommu } from './intel-iommu/iommu.js';
import { intelKhoNotifier } from './intel-iommu/serialise.js';
import { IommuLiveupdate } from './iommu_liveupdate.js';
import { iommufdLiveupdateInit } from './iommufd/liveupdate.js';
import { iommufdInit, type Iommufd } from './iommufd/init.js';
import type { PersistedIommufds } from './iommufd/persist.js';
import type { IommufdCtx } from './iommufd/private.js';
import type { Initcalls, Kernel } from './kernel.js';
import { liveupdateEarlyInit, liveupdateLateInit, type Luo } from './liveupdate/luo_core.js';
import { memfdLuoInit } from './liveupdate/memfd_luo.js';
import type { PhaseWork } from './phase-cost.js';
import { vfioPciInit, type VfioDevice } from './vfio/device_cdev.js';
import { vfioPciLiveupdateInit } from './vfio/liveupdate.js';

/** What the initcalls booted (a kernel exposes each as its own property). */
export interface Subsystems {
  /** The guestmemfs carve-out, if `guestmemfs=` reserved one or KHO handed one over. */
  guestmemfs: Guestmemfs | null;
  /** The VT-d driver for the unit, registered with the iommu core. */
  intel: IntelIommu;
  /** Devices bound to vfio-pci (`/dev/vfio/devices/vfioN`). */
  vfioDevices: VfioDevice[];
  /** The iommufd subsystem (`/dev/iommu`). */
  iommufd: Iommufd;
  /** Open iommufd contexts. */
  iommufds: Set<IommufdCtx>;
  /** Persistent iommufd contexts by persistent id (`persistent_iommufds`, 1-based). */
  persistentIommufds: Map<number, IommufdCtx>;
  /** What the previous kernel persisted for iommufd, waiting to be claimed through sysfs. */
  persisted: PersistedIommufds;
  /** The Live Update Orchestrator (/dev/liveupdate), when `kho=on liveupdate=on` enabled it. */
  luo: Luo | null;
}

/** A kernel after {@link linuxInitcalls} booted it. */
export type LinuxKernel = Kernel & Subsystems;

/** What the Intel driver adopted from the handover: domains, their table pages, the devices still on them. */
function adopted(intel: IntelIommu): PhaseWork {
  const lu = intel.svc.iommu.liveupdate;
  // The RFC's domains, and those the iommu FLB preserved (LUO).
  const domains = [...intel.restored.values(), ...((lu ? [...lu.restored.values()] : []) as DmarDomain[])];
  return { domains: domains.length, tablePages: domains.reduce((n, d) => n + d.handedOverPages.length, 0), devicesAttached: domains.reduce((n, d) => n + d.devices.size, 0) };
}

/** IOAS areas iommufd verified and offers for claiming. */
function restoredAreas(persisted: PersistedIommufds): number {
  return [...persisted.pending.values()].reduce((n, c) => n + c.ioases.reduce((k, i) => k + i.areas.length, 0), 0);
}

/** Boots the subsystems of this simulator's Linux, in the kernel's order. */
export const linuxInitcalls: Initcalls<Subsystems> = (svc, hw, incoming) => {
  // early_param("guestmemfs"): the carve-out comes out of memblock before any allocation.
  const guestmemfs = guestmemfsInit(svc, incoming?.child('guestmemfs'));
  svc.sysfs.mkdirs('/sys/kernel/iommufd_persisted');
  // hugepage_init
  svc.sysfs.attr('/sys/kernel/mm/transparent_hugepage/hpage_pmd_size', 0o444, { show: () => '2097152\n' });
  // early: LUO reads what the previous kernel handed over (liveupdate_early_init), so the IOMMU
  // core's live-update state is there before the driver starts.
  const luo = liveupdateEarlyInit(svc, incoming?.child('LUO'));
  // The IOMMU core's live-update state (with the VT-d driver's preservation hooks once it registers).
  if (luo && svc.kconfig.IOMMU_LIVEUPDATE) svc.iommu.liveupdate = new IommuLiveupdate(svc.memory, svc.liveupdate, (m) => svc.log(m));
  // intel_iommu_init registers the driver with the iommu core (adopting the FLB's or the RFC's tables).
  const intel = intelIommuInit(svc, hw.iommu, incoming?.child('intel-iommu'), svc.iommu.liveupdate);
  svc.phase('iommu-init', adopted(intel));
  // vfio-pci binds every function (iommu_probe_device first); iommufd registers /dev/iommu and
  // offers what the previous kernel persisted.
  const vfioDevices = vfioPciInit(svc);
  vfioPciLiveupdateInit(svc, vfioDevices);
  const iommufd = iommufdInit(svc, { guestmemfs }, incoming?.child('iommufd'));
  if (incoming) svc.phase('iommufd-restore', { mappings: restoredAreas(iommufd.persisted), tablePages: adopted(intel).tablePages });
  // KEXEC_KHO_DUMP runs in registration order: iommufd decides what is persistent, the Intel
  // driver serialises those domains, guestmemfs freezes last. ABORT runs in reverse.
  svc.kho.notifiers.push(iommufd.persisted, intelKhoNotifier(intel));
  if (guestmemfs) svc.kho.notifiers.push({ dump: (w, kho) => guestmemfs.khoDump(w, kho), abort: () => guestmemfs.khoAbort() });
  // late_initcall: LUO (its KHO subtree and /dev/liveupdate), then the file handlers.
  if (luo) liveupdateLateInit(svc, svc.kho, luo);
  memfdLuoInit(svc);
  iommufdLiveupdateInit(iommufd);
  return { guestmemfs, intel, vfioDevices, iommufd, iommufds: iommufd.ctxs, persistentIommufds: iommufd.persistent, persisted: iommufd.persisted, luo };
};
