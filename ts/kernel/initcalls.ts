// The initcall list: which subsystems this kernel has and the order they boot in. The kernel
// core knows none of them; the host boots a kernel with this list.
import type { KhoNode } from './kho/kho.js';
import { guestmemfsInit } from './guestmemfs/init.js';
import type { Guestmemfs } from './guestmemfs/guestmemfs.js';
import { IntelIommu } from './intel-iommu/iommu.js';
import { IommufdCtx } from './iommufd/main.js';
import { PersistedIommufds } from './iommufd/persist.js';
import type { Kernel, KernelHardware } from './kernel.js';
import type { Process } from './process.js';
import type { KernelServices } from './services.js';
import { VfioDeviceFile, type VfioDevice } from './vfio/device_cdev.js';

/** What the initcalls booted (a kernel exposes each as its own property). */
export interface Subsystems {
  /** The guestmemfs carve-out, if `guestmemfs=` reserved one or KHO handed one over. */
  guestmemfs: Guestmemfs | null;
  /** The VT-d driver for the unit. */
  intel: IntelIommu;
  /** Devices bound to vfio-pci. */
  vfioDevices: VfioDevice[];
  /** What the previous kernel persisted for iommufd, waiting to be claimed through sysfs. */
  persisted: PersistedIommufds;
}

/** A kernel after {@link linuxInitcalls} booted it. */
export type LinuxKernel = Kernel & Subsystems;

/** Boots the subsystems of this simulator's Linux, in the kernel's order. */
export function linuxInitcalls(kernel: Kernel): (svc: KernelServices, hw: KernelHardware, incoming: KhoNode | null) => Subsystems {
  return (svc, hw, incoming) => {
    // early_param("guestmemfs"): the carve-out comes out of memblock before any allocation.
    const guestmemfs = guestmemfsInit(svc, incoming?.child('guestmemfs'));
    kernel.guestmemfs = guestmemfs;
    svc.sysfs.mkdirs('/sys/kernel/iommufd_persisted');
    // hugepage_init
    svc.sysfs.attr('/sys/kernel/mm/transparent_hugepage/hpage_pmd_size', 0o444, { show: () => '2097152\n' });
    // intel_iommu_init, then iommu_probe_device for every PCI function.
    const intel = new IntelIommu(kernel, hw.iommu, hw.memory, incoming?.child('intel-iommu'));
    kernel.intel = intel;
    svc.phase('iommu-init');
    // vfio-pci binds every function; iommufd registers /dev/iommu.
    svc.chrdevs.register({
      path: '/dev/iommu',
      mode: 0o660,
      open: (task, flags) => {
        const ictx = new IommufdCtx(kernel, task as Process, flags);
        kernel.iommufds.add(ictx);
        return ictx;
      },
    });
    const vfioDevices: VfioDevice[] = svc.pci.map((d, i) => {
      intel.probeDevice(d.sid, { ats: d.ats });
      const dev: VfioDevice = { name: `vfio${i}`, bdf: d.bdf, sid: d.sid, boundBy: null, setBusMaster: (on) => d.setBusMaster(on) };
      svc.chrdevs.register({ path: `/dev/vfio/devices/vfio${i}`, mode: 0o600, open: (_task, flags) => new VfioDeviceFile(kernel, dev, flags) });
      svc.log(`vfio-pci ${d.bdf}: registered as /dev/vfio/devices/vfio${i}`);
      return dev;
    });
    kernel.vfioDevices = vfioDevices;
    const persisted = new PersistedIommufds(kernel, incoming?.child('iommufd'));
    kernel.persisted = persisted;
    if (incoming) svc.phase('iommufd-restore');
    // KEXEC_KHO_DUMP runs in registration order: iommufd decides what is persistent, the Intel
    // driver serialises those domains, guestmemfs freezes last. ABORT runs in reverse.
    svc.kho.notifiers.push(persisted, intel);
    if (guestmemfs) svc.kho.notifiers.push({ dump: (w, kho) => guestmemfs.khoDump(w, kho), abort: () => guestmemfs.khoAbort() });
    // kernel_kexec: the Intel driver keeps translating for persistent domains when KHO hands
    // over; pci_device_shutdown turns bus mastering off except for devices whose DMA is handed
    // over (still attached to a persistent domain).
    svc.onShutdown((handover) => {
      intel.shutdown(handover);
      for (const d of vfioDevices) if (!handover || !intel.domainOf(d.sid)?.persistentId) d.setBusMaster(false);
    });
    return { guestmemfs, intel, vfioDevices, persisted };
  };
}
