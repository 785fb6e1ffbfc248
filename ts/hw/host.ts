// A host machine: memory, one VT-d unit, PCI devices, and the kernel running on it.
import { Kernel } from '../kernel/kernel.js';
import { IommuUnit, type IommuUnitOptions } from './iommu.js';
import { PhysicalMemory } from './memory.js';
import { PciDevice } from './pci.js';

/** What {@link Host.boot} builds. */
export interface HostConfig {
  /** Host RAM in bytes. */
  memory: bigint;
  /** Seed of the page allocator (default 0). */
  seed?: bigint | number;
  /** The VT-d unit. */
  iommu?: IommuUnitOptions;
  /** PCI devices bound to vfio-pci, in order: `/dev/vfio/devices/vfio0`, ... */
  devices?: { bdf: string }[];
  /** Kernel command line of the cold boot (`'guestmemfs=16G'`). */
  cmdline?: string;
  /** Shorthand for `guestmemfs=<bytes>` on the command line. */
  guestmemfs?: bigint;
}

/** A simulated host: the hardware persists, the kernel is whatever booted last. */
export class Host {
  readonly memory: PhysicalMemory;
  readonly iommu: IommuUnit;
  readonly devices: readonly PciDevice[];
  private _kernel!: Kernel;

  private constructor(config: HostConfig) {
    this.memory = new PhysicalMemory({ size: config.memory, seed: config.seed });
    this.iommu = new IommuUnit(this.memory, config.iommu);
    const seen = new Set<string>();
    this.devices = (config.devices ?? []).map(({ bdf }) => {
      const dev = new PciDevice(bdf.toLowerCase(), this.iommu, (sid, iova, reason, write) => this._kernel.dmarFault(sid, iova, reason, write));
      if (seen.has(dev.bdf)) throw Object.assign(new RangeError(`duplicate device ${bdf}`), { code: 'ERR_INVALID_ARG_VALUE' });
      seen.add(dev.bdf);
      return dev;
    });
  }

  /** Cold boot: builds the machine and boots a kernel on it. */
  static boot(config: HostConfig): Host {
    const host = new Host(config);
    const cmdline = [config.cmdline ?? '', config.guestmemfs !== undefined ? `guestmemfs=${config.guestmemfs}` : ''].filter(Boolean).join(' ');
    host._kernel = new Kernel({ memory: host.memory, iommu: host.iommu, devices: host.devices.map((d) => ({ bdf: d.bdf, sid: d.sid })), cmdline });
    return host;
  }

  /** The running kernel. */
  get kernel(): Kernel {
    return this._kernel;
  }

  /** The device at `bdf` (`0000:01:00.0`). */
  device(bdf: string): PciDevice {
    const d = this.devices.find((x) => x.bdf === bdf.toLowerCase());
    if (!d) throw Object.assign(new RangeError(`no device ${bdf}`), { code: 'ERR_INVALID_ARG_VALUE' });
    return d;
  }
}
