// A host machine: memory, one VT-d unit, PCI devices, and the kernel running on it.
import { invalidArgType, invalidArgValue } from './errors.js';
import { linuxInitcalls, type LinuxKernel } from './kernel/initcalls.js';
import { Kernel, type KernelGeneration } from './kernel/kernel.js';
import { checkPhaseWork, CostModel, DEFAULT_COSTS, PHASE_COSTS, type CostConstants, type PhaseWork } from './kernel/phase-cost.js';
import type { KernelConfig } from './kernel/services.js';
import { callbackError, invalidState } from './kernel/reentrancy.js';
import { IommuUnit, nativeUnitOptions, QEMU_7_2_INTEL_IOMMU, type IommuUnitOptions } from './hw/iommu.js';
import { memoryConfig, PhysicalMemory } from './hw/memory.js';
import { bool, given, obj, str, u16, u64 } from './native-kinds.js';
import { PciDevice, type PciDeviceOptions } from './hw/pci.js';
import { DmaTraffic, type DmaTrafficOptions } from './hw/traffic.js';
import { KernelError, SyscallError } from './uapi/errno.js';

/** Machines {@link HostConfig.machine} can imitate. */
export type Machine = 'qemu-7.2-q35';

/**
 * QEMU's `edu` device as the `'qemu-7.2-q35'` machine has it: the first device on the root bus of
 * `-machine q35 -device edu`, vendor 1234 device 11e8, conventional PCI, so no ATS capability.
 * It stands in for edu's requester ID only: DMA goes through `host.device(bdf).dma` as for any
 * device, not through edu's registers. The real edu clamps DMA addresses to its 28-bit dma_mask
 * and QEMU 7.2's edu aborts on a 4096-byte transfer, so a differential test uses IOVAs below
 * 2^28 and transfers of at most 2048 bytes.
 */
export const QEMU_EDU: Readonly<Required<PciDeviceOptions>> = Object.freeze({ bdf: '0000:00:01.0', ats: false, vendorId: 0x1234, deviceId: 0x11e8 });

/** What {@link Host.boot} builds. */
export interface HostConfig {
  /** Host RAM in bytes. */
  memory: bigint;
  /** Seed of the page allocator (default 0). */
  seed?: bigint | number;
  /**
   * Imitate a machine. `'qemu-7.2-q35'` is `qemu-system-x86_64 -machine q35,kernel-irqchip=split
   * -device intel-iommu,intremap=on,caching-mode=on -device edu` under TCG: the VT-d unit is
   * {@link QEMU_7_2_INTEL_IOMMU} (fields given in {@link iommu} override it one by one, and then
   * CAP/ECAP may no longer be QEMU's), and {@link QEMU_EDU} at 0000:00:01.0 is the first device,
   * `/dev/vfio/devices/vfio0`, bound to vfio-pci; {@link devices} follow it as vfio1, ... (a
   * device at 0000:00:01.0 among them is a duplicate and refused). Default: none, a generic
   * machine with exactly {@link iommu} and {@link devices}.
   */
  machine?: Machine;
  /** The VT-d unit. */
  iommu?: IommuUnitOptions;
  /** PCI devices bound to vfio-pci, in order: `/dev/vfio/devices/vfio0`, ... */
  devices?: PciDeviceOptions[];
  /** Kernel command line of the cold boot (`'guestmemfs=16G'`). */
  cmdline?: string;
  /** Shorthand for `guestmemfs=<bytes>` on the command line. */
  guestmemfs?: bigint;
  /**
   * Constants of the phase cost model to use instead of the defaults ({@link DEFAULT_COSTS}, ns
   * each): `{ jumpNs: 500e6 }` models an unoptimised kexec. Unknown names are
   * `ERR_INVALID_ARG_VALUE`, a negative or non-finite number `ERR_OUT_OF_RANGE`.
   */
  costModel?: Partial<CostConstants>;
  /** How every kernel booted on the host is built (default: the iommu live-update series in). */
  kconfig?: KernelConfig;
}

/** `config.devices` checked: an array of `{ bdf, ats?, vendorId?, deviceId? }`. */
function checkDevices(devices: unknown): PciDeviceOptions[] {
  if (devices === undefined) return [];
  if (!Array.isArray(devices)) throw invalidArgType('config.devices', 'an instance of Array', devices);
  return devices.map((d: unknown, i) => {
    const at = `config.devices[${i}]`;
    const o = obj.check(d, at) as Record<string, unknown>;
    const dev: PciDeviceOptions = { bdf: str.check(o.bdf, `${at}.bdf`), ats: given(bool, o.ats, `${at}.ats`, false) };
    const vendorId = given(u16, o.vendorId, `${at}.vendorId`, undefined), deviceId = given(u16, o.deviceId, `${at}.deviceId`, undefined);
    if (vendorId !== undefined) dev.vendorId = vendorId;
    if (deviceId !== undefined) dev.deviceId = deviceId;
    return dev;
  });
}

/** One entry of the live-update timeline. */
export interface TimelineEntry {
  generation: number;
  phase: string;
  /** Simulated time at the end of the phase, ns since cold boot (modelled phase costs). */
  simNs: bigint;
  /** What the phase cost on the simulated clock ({@link Host.costModel} applied to {@link work}). */
  costNs: bigint;
  /** The work the phase reported (empty for a phase that reports none). */
  work: Readonly<PhaseWork>;
  /** Wall-clock ms since cold boot (this simulator's own time). */
  wallMs: number;
}

/**
 * The fixed part of each named phase's cost under the default model (ns): what it costs with no
 * work. A phase's time is this plus its work at the model's per-unit constants
 * ({@link CostModel}, {@link PHASE_COSTS}); the simulator's own time is `wallMs`.
 */
export const PHASE_NS: Readonly<Record<string, bigint>> = Object.freeze(
  Object.fromEntries(Object.entries(PHASE_COSTS).map(([name, p]) => [name, BigInt(DEFAULT_COSTS[p.base])])),
);

/** A simulated host: the hardware persists, the kernel is whatever booted last. */
export class Host {
  readonly memory: PhysicalMemory;
  readonly iommu: IommuUnit;
  readonly devices: readonly PciDevice[];
  private _kernel!: LinuxKernel;
  /** Every kernel that ran here, oldest first: the last is {@link kernel}, the others are dead and keep their logs. */
  readonly generations: KernelGeneration[] = [];
  /** Lifecycle phases across every generation. */
  readonly timeline: TimelineEntry[] = [];
  /** Running traffic generators. */
  readonly traffic: DmaTraffic[] = [];
  /** What turns each phase's work into simulated time ({@link HostConfig.costModel}). */
  readonly costModel: CostModel;
  private simNs = 0n;
  private readonly wall0 = performance.now();
  /** The transition under way (cold boot, kexec), or null. */
  private transition: 'boot' | 'kexec' | null = null;
  /** The phase whose observers are running, innermost last. */
  private readonly observing: string[] = [];
  /** What observers threw during the current operation, rethrown once it completes. */
  private observerErrors: unknown[] = [];

  private readonly kconfig: KernelConfig | undefined;

  private constructor(config: HostConfig) {
    this.costModel = new CostModel(config.costModel === undefined ? {} : config.costModel);
    this.kconfig = config.kconfig;
    // Checked here, so that errors name `config.*` and not what the parts are built from.
    const { size, seed } = memoryConfig(config, 'config', 'memory');
    const machine = given(str, config.machine, 'config.machine', undefined);
    let iommu: object | undefined = given(obj, config.iommu, 'config.iommu', undefined);
    let devices = checkDevices(config.devices);
    given(str, config.cmdline, 'config.cmdline', '');
    given(u64, config.guestmemfs, 'config.guestmemfs', 0n);
    if (machine !== undefined) {
      if (machine !== 'qemu-7.2-q35') {
        throw invalidArgValue(`unknown machine ${JSON.stringify(machine)}`);
      }
      // A field given as undefined keeps the profile's value, not the generic default.
      iommu = { ...QEMU_7_2_INTEL_IOMMU, ...Object.fromEntries(Object.entries(iommu ?? {}).filter(([, v]) => v !== undefined)) };
      devices = [QEMU_EDU, ...devices];
    }
    nativeUnitOptions(iommu, 'config.iommu');
    this.memory = new PhysicalMemory({ size, seed });
    this.iommu = new IommuUnit(this.memory, iommu as IommuUnitOptions | undefined);
    const seen = new Set<string>();
    this.devices = devices.map(({ bdf, ...opts }) => {
      const dev = new PciDevice(bdf.toLowerCase(), this.iommu, (sid, iova, reason, write) => this._kernel.dmarFault(sid, iova, reason, write), opts);
      if (seen.has(dev.bdf)) throw invalidArgValue(`duplicate device ${bdf}`);
      seen.add(dev.bdf);
      return dev;
    });
  }

  /** Cold boot: builds the machine and boots a kernel on it. */
  static boot(config: HostConfig): Host {
    const host = new Host(config);
    const cmdline = [config.cmdline ?? '', config.guestmemfs !== undefined ? `guestmemfs=${config.guestmemfs}` : ''].filter(Boolean).join(' ');
    host.transition = 'boot';
    try {
      host.bootKernel(cmdline, null, 0);
    } finally {
      host.transition = null;
    }
    return host;
  }

  /**
   * Why the machine cannot start a transition or take a syscall right now, or null: a phase
   * observer is running (the caller is inside it), or a boot or kexec is under way.
   */
  private busy(): string | null {
    if (this.observing.length) return `called from a phase observer (phase ${this.observing[this.observing.length - 1]})`;
    if (this.transition) return `a ${this.transition} is in progress`;
    return null;
  }

  private bootKernel(cmdline: string, khoBlob: bigint | null, generation: number): void {
    const kernel = new Kernel({
      memory: this.memory,
      iommu: this.iommu,
      devices: this.devices.map((d) => ({ bdf: d.bdf, sid: d.sid, ats: d.ats, setBusMaster: (on: boolean) => (d.busMaster = on) })),
      cmdline,
      kconfig: this.kconfig,
      khoBlob,
      generation,
      onPhase: (phase, work) => this.phase(phase, generation, work),
      onKexec: (image) => this.jump(image.cmdline),
      busy: () => this.busy(),
    });
    // The host points at the new generation before it boots: what happens during its boot
    // phases (a DMA fault during iommu-init) is this generation's.
    this._kernel = kernel as LinuxKernel;
    this.generations.push(kernel);
    kernel.boot(linuxInitcalls);
    this.phase('boot', generation);
  }

  /**
   * Records a lifecycle phase and lets every traffic generator run a burst right after it: DMA
   * never waits for the kernel. Then the observers run (see {@link onPhase}). The phase advances
   * the simulated clock by what {@link costModel} makes of `work` (checked: known fields, finite
   * numbers >= 0).
   */
  phase(phase: string, generation = this._kernel?.generation ?? 0, work: PhaseWork = {}): void {
    const w = Object.freeze({ ...checkPhaseWork(work) });
    const costNs = this.costModel.phaseNs(phase, w);
    this.simNs += costNs;
    const entry = { generation, phase, simNs: this.simNs, costNs, work: w, wallMs: performance.now() - this.wall0 };
    this.timeline.push(entry);
    for (const t of this.traffic) if (!t.stopped) t.step(phase, generation, this.timeline.length - 1, this.simNs);
    this.observing.push(phase);
    try {
      for (const cb of this.phaseObservers) {
        try {
          cb(entry);
        } catch (e) {
          this.observerErrors.push(callbackError(e));
        }
      }
    } finally {
      this.observing.pop();
    }
    if (!this.transition && !this.observing.length) this.rethrowObserverErrors();
  }

  /** Throws what observers threw (the first, or an AggregateError of all), once the operation is complete. */
  private rethrowObserverErrors(): void {
    const errors = this.observerErrors;
    if (!errors.length) return;
    this.observerErrors = [];
    if (errors.length === 1) throw errors[0];
    throw callbackError(new AggregateError(errors, `${errors.length} phase observers threw`));
  }

  private readonly phaseObservers: ((e: TimelineEntry) => void)[] = [];

  /**
   * Calls `cb` after every lifecycle phase (after the traffic of that phase ran).
   *
   * An observer runs inside the transition it observes, like a notifier callback in the kernel:
   * it may act on the hardware — read and write `host.memory` (corrupt it between shutdown and
   * boot), do DMA through `host.device(bdf).dma`, read `host.timeline` or a kernel's `dmesg()`,
   * spawn a process — but it may not re-enter the kernel or start another transition. From an
   * observer, `host.kexec()` throws `ERR_INVALID_STATE`, and every syscall (`reboot` too) and
   * KHO activate/deactivate fails with EDEADLK (ESRCH in a process of the kernel being replaced);
   * nothing changes. An exception thrown by an observer does not stop the machine mid-way: the
   * operation it observed (a kexec, a KHO write) runs to completion, then the exception (an
   * `AggregateError` if several observers threw) is rethrown to whoever started it.
   */
  onPhase(cb: (e: TimelineEntry) => void): void {
    this.phaseObservers.push(cb);
  }

  /**
   * `kexec_file_load` + `reboot(LINUX_REBOOT_CMD_KEXEC)` in one call (with the running kernel's
   * command line unless given). It does not activate KHO: userspace does that first
   * (`/sys/kernel/kho/active`); without it nothing persists.
   *
   * Not re-entrant: from a phase observer, a KHO failure-injection hook or while a KHO DUMP/ABORT
   * runs, it throws an `Error` with code `ERR_INVALID_STATE` and nothing happens — one kexec at a
   * time, as `kexec_trylock()` makes it in the kernel, so there is never more than one live kernel.
   */
  kexec(opts: { cmdline?: string } = {}): LinuxKernel {
    const busy = this._kernel.reentrancy();
    if (busy !== null) throw invalidState(`kexec refused: ${busy}; one kexec at a time, started outside any observer or hook`);
    // kernel_kexec: with LUO on, liveupdate_reboot() first; its failure fails the reboot.
    try {
      this._kernel.kexecPrepare();
    } catch (e) {
      if (e instanceof KernelError) throw new SyscallError(e.code, 'reboot', undefined, e.detail);
      throw e;
    }
    this.jump(opts.cmdline ?? this._kernel.cmdline);
    return this._kernel;
  }

  /**
   * The jump: shutdown, scrub of everything not preserved, the next kernel's boot. Refused (the
   * machine unchanged) while the caller is inside a transition; see {@link kexec}.
   */
  private jump(cmdline: string): void {
    const old = this._kernel;
    // host.kexec() is refused here; reboot(2) reaches here only after its syscall entry refused
    // the same cases with EDEADLK, so from there this is an assertion.
    const busy = old.reentrancy();
    if (busy !== null) throw invalidState(`kexec refused: ${busy}; one kexec at a time, started outside any observer or hook`);
    this.transition = 'kexec';
    let done = false;
    try {
      const blob = old.shutdown();
      this.phase('shutdown', old.generation, this.shutdownWork());
      this.memory.scrub();
      this.phase('jump', old.generation + 1);
      this.bootKernel(cmdline, blob, old.generation + 1);
      // The old kernel stays in `generations` for its log only.
      old.retire();
      done = true;
    } finally {
      this.transition = null;
      // A simulator bug is on its way out: observers' exceptions must not surface later instead.
      if (!done) this.observerErrors = [];
    }
    this.rethrowObserverErrors();
  }

  /** What `shutdown` did to the devices: the ones still mastering the bus were kept, the rest shut down. */
  private shutdownWork(): PhaseWork {
    const kept = this.devices.filter((d) => d.busMaster).length;
    return { devicesShutDown: this.devices.length - kept, devicesKept: kept };
  }

  /** Starts a device's continuous, self-verifying DMA (see {@link DmaTraffic}). */
  dmaTraffic(opts: DmaTrafficOptions): DmaTraffic {
    const t = new DmaTraffic(this.device(opts.bdf), { pagesPerStep: 16, readOnly: false, ...opts });
    this.traffic.push(t);
    return t;
  }

  /** The running kernel. */
  get kernel(): LinuxKernel {
    return this._kernel;
  }

  /** The device at `bdf` (`0000:01:00.0`). */
  device(bdf: string): PciDevice {
    const d = this.devices.find((x) => x.bdf === bdf.toLowerCase());
    if (!d) throw invalidArgValue(`no device ${bdf}`);
    return d;
  }
}
