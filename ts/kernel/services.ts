// What a subsystem gets from the kernel it runs in: the services it uses, never the kernel.
// The kernel builds one of these at boot and hands it to every initcall.
import type { PhysicalMemory } from '../hw/memory.js';
import type { Chrdevs } from './chrdev.js';
import type { FailFunction } from './fail_function.js';
import type { FileSystemType } from './fs.js';
import type { IommuCore } from './iommu.js';
import type { Kho } from './kho/kho.js';
import type { Liveupdate } from './luo.js';
import type { PageRefs } from './mm.js';
import type { PhaseWork } from './phase-cost.js';
import type { Sysfs } from './sysfs/sysfs.js';

/** A PCI function the kernel enumerated (the host's devices, in order). */
export interface PciFunction {
  readonly bdf: string;
  /** Requester ID (bus << 8 | devfn). */
  readonly sid: number;
  readonly ats: boolean;
  /** PCI_COMMAND.MASTER. */
  setBusMaster(on: boolean): void;
}

/**
 * How the kernel was built, as far as the model varies it. `IOMMU_LIVEUPDATE` (default true): the
 * iommu live-update series is in (IOMMU_HWPT_LU_SET_PRESERVE, the iommufd and VFIO cdev LUO
 * handlers, the IOMMU core's FLB); false is plain Linux 7.3, as the oracle lab's kernel is.
 */
export interface KernelConfig {
  IOMMU_LIVEUPDATE?: boolean;
}

/** Services of one kernel generation. */
export interface KernelServices {
  /** 0 at cold boot, +1 per kexec. */
  readonly generation: number;
  readonly cmdline: string;
  /** The build options the model varies. */
  readonly kconfig: Readonly<Required<KernelConfig>>;
  readonly memory: PhysicalMemory;
  /** `struct page` pin counts. */
  readonly pageRefs: PageRefs;
  readonly sysfs: Sysfs;
  readonly kho: Kho;
  /** Device nodes under /dev (`misc_register`). */
  readonly chrdevs: Chrdevs;
  /** The PCI functions on the bus. */
  readonly pci: readonly PciFunction[];
  /** The IOMMU core: drivers register with it, iommufd and VFIO call it. */
  readonly iommu: IommuCore;
  /** The Live Update Orchestrator's seam: file handlers and FLBs register here. */
  readonly liveupdate: Liveupdate;
  /** Function error injection (`/sys/kernel/debug/fail_function`): a failure site asks it at entry. */
  readonly failFunction: FailFunction;
  /** Replaced by kexec. */
  readonly dead: boolean;
  /** `printk`. */
  log(msg: string): void;
  /** Reports a lifecycle phase, with the work it did (its simulated cost scales with it), to whoever runs the machine. */
  phase(name: string, work?: PhaseWork): void;
  /** Why the kernel cannot be entered now (inside a transition), or null. */
  reentrancy(): string | null;
  /** Per-uid `locked_vm`. */
  userAccount(uid: number): { lockedVm: number };
  /** `register_filesystem`. */
  registerFilesystem(fs: FileSystemType): void;
  /** `register_reboot_notifier`: runs at `kernel_kexec`, `handover` when KHO hands state over. */
  onShutdown(fn: (handover: boolean) => void): void;
}
