// A host machine: memory, one VT-d unit, PCI devices, and the kernel running on it.
import { Kernel } from '../kernel/kernel.js';
import { IommuUnit, type IommuUnitOptions } from './iommu.js';
import { PhysicalMemory } from './memory.js';
import { PciDevice } from './pci.js';
import { DmaTraffic, type DmaTrafficOptions } from './traffic.js';

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

/** One entry of the live-update timeline. */
export interface TimelineEntry {
  generation: number;
  phase: string;
  /** Simulated time at the end of the phase, ns since cold boot (modelled phase costs). */
  simNs: bigint;
  /** Wall-clock ms since cold boot (this simulator's own time). */
  wallMs: number;
}

/**
 * Modelled durations of the phases (simulated time): what a 2-socket host typically spends,
 * for ordering and downtime arithmetic only; the simulator's own time is `wallMs`.
 */
export const PHASE_NS: Readonly<Record<string, bigint>> = {
  'kho-dump': 5_000_000n,
  shutdown: 30_000_000n,
  jump: 2_000_000n,
  'early-boot': 150_000_000n,
  'iommu-init': 10_000_000n,
  'iommufd-restore': 5_000_000n,
  boot: 800_000_000n,
  'kho-abort': 1_000_000n,
};

/** A simulated host: the hardware persists, the kernel is whatever booted last. */
export class Host {
  readonly memory: PhysicalMemory;
  readonly iommu: IommuUnit;
  readonly devices: readonly PciDevice[];
  private _kernel!: Kernel;
  /** Every kernel that ran here, oldest first (their logs stay readable). */
  readonly generations: Kernel[] = [];
  /** Lifecycle phases across every generation. */
  readonly timeline: TimelineEntry[] = [];
  /** Running traffic generators. */
  readonly traffic: DmaTraffic[] = [];
  private simNs = 0n;
  private readonly wall0 = performance.now();

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
    host.bootKernel(cmdline, null, 0);
    return host;
  }

  private bootKernel(cmdline: string, khoBlob: bigint | null, generation: number): void {
    this._kernel = new Kernel({
      memory: this.memory,
      iommu: this.iommu,
      devices: this.devices.map((d) => ({ bdf: d.bdf, sid: d.sid, setBusMaster: (on: boolean) => (d.busMaster = on) })),
      cmdline,
      khoBlob,
      generation,
      onPhase: (phase) => this.phase(phase, generation),
      onKexec: (image) => this.jump(image.cmdline),
    });
    this.generations.push(this._kernel);
    this.phase('boot', generation);
  }

  /**
   * Records a lifecycle phase and lets every traffic generator run a burst right after it: DMA
   * never waits for the kernel.
   */
  phase(phase: string, generation = this._kernel?.generation ?? 0): void {
    this.simNs += PHASE_NS[phase] ?? 1_000_000n;
    const entry = { generation, phase, simNs: this.simNs, wallMs: performance.now() - this.wall0 };
    this.timeline.push(entry);
    for (const t of this.traffic) if (!t.stopped) t.step(phase, generation, this.timeline.length - 1, this.simNs);
    for (const cb of this.phaseObservers) cb(entry);
  }

  private readonly phaseObservers: ((e: TimelineEntry) => void)[] = [];

  /** Calls `cb` after every lifecycle phase (after the traffic of that phase ran). */
  onPhase(cb: (e: TimelineEntry) => void): void {
    this.phaseObservers.push(cb);
  }

  /**
   * `kexec_file_load` + `reboot(LINUX_REBOOT_CMD_KEXEC)` in one call (with the running kernel's
   * command line unless given). It does not activate KHO: userspace does that first
   * (`/sys/kernel/kho/active`); without it nothing persists.
   */
  kexec(opts: { cmdline?: string } = {}): Kernel {
    this.jump(opts.cmdline ?? this._kernel.cmdline);
    return this._kernel;
  }

  /** The jump: shutdown, scrub of everything not preserved, the next kernel's boot. */
  private jump(cmdline: string): void {
    const old = this._kernel;
    const blob = old.shutdown();
    this.phase('shutdown', old.generation);
    this.memory.scrub();
    this.phase('jump', old.generation + 1);
    this.bootKernel(cmdline, blob, old.generation + 1);
    // The old kernel stays in `generations` for its log only.
    old.retire();
  }

  /** Starts a device's continuous, self-verifying DMA (see {@link DmaTraffic}). */
  dmaTraffic(opts: DmaTrafficOptions): DmaTraffic {
    const t = new DmaTraffic(this.device(opts.bdf), { pagesPerStep: 16, readOnly: false, ...opts });
    this.traffic.push(t);
    return t;
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
