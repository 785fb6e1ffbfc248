// The running kernel of a host: its drivers (VT-d, iommufd, vfio-pci), processes, the device
// nodes they open, page pin counts and the kernel log.
import type { IommuUnit } from '../hw/iommu.js';
import type { PhysicalMemory } from '../hw/memory.js';
import { DMAR_FAULT_REASONS } from '../hw/vtd-regs.js';
import { errno, KernelError, SyscallError } from '../uapi/errno.js';
import type { Dirent, Stat } from '../uapi/stat.js';
import { Chrdevs } from './chrdev.js';
import type { File } from './file.js';
import { Guestmemfs, memparse } from './guestmemfs/guestmemfs.js';
import { intelIommuInit, type IntelIommu } from './intel-iommu/iommu.js';
import { IommuCore } from './iommu.js';
import { iommufdInit, type Iommufd } from './iommufd/init.js';
import type { PersistedIommufds } from './iommufd/persist.js';
import type { IommufdCtx } from './iommufd/private.js';
import { Kho, type KhoNode } from './kho/kho.js';
import { PageRefs } from './mm.js';
import { Process, type SpawnOptions } from './process.js';
import type { KernelServices } from './services.js';
import { Sysfs } from './sysfs/sysfs.js';
import { vfioPciInit, type VfioDevice } from './vfio/device_cdev.js';

/** What a kernel boots on. */
export interface KernelHardware {
  memory: PhysicalMemory;
  iommu: IommuUnit;
  /** PCI devices handed to vfio-pci, in order: vfio0, vfio1, ... */
  devices: { bdf: string; sid: number; ats?: boolean; setBusMaster?: (on: boolean) => void }[];
  /** The kernel command line (`guestmemfs=16G`, ...). */
  cmdline?: string;
  /** Physical address of the KHO blob the previous kernel handed over (kexec with KHO). */
  khoBlob?: bigint | null;
  /** Which generation of kernel this is on the host (0 = cold boot). */
  generation?: number;
  /** Called after each lifecycle phase (the host runs device traffic there). */
  onPhase?: (phase: string) => void;
  /** `reboot(LINUX_REBOOT_CMD_KEXEC)`: the host jumps to the staged image. */
  onKexec?: (image: KexecImage) => void;
  /**
   * Why the machine cannot be entered right now (a phase observer is running, a kexec is in
   * progress), or null: syscalls answer EDEADLK then (see {@link Kernel.reentrancy}).
   */
  busy?: () => string | null;
}

/** `LINUX_REBOOT_CMD_KEXEC` (include/uapi/linux/reboot.h). */
export const LINUX_REBOOT_CMD_KEXEC = 0x45584543;

/** What `kexec_file_load` staged: the next kernel's command line. */
export interface KexecImage {
  cmdline: string;
}


/**
 * What a host keeps of each kernel that ran on it ({@link Host.generations}): its identity and
 * log. A kernel kexec replaced is nothing more (its drivers, processes and trees are gone).
 */
export interface KernelGeneration {
  readonly generation: number;
  readonly cmdline: string;
  /** Replaced by kexec: every call on its objects fails with ESRCH. */
  readonly dead: boolean;
  dmesg(): string[];
}

/** The simulated Linux kernel. Everything here dies with a kexec. */
export class Kernel implements KernelGeneration {
  readonly memory: PhysicalMemory;
  readonly iommu: IommuUnit;
  /** `struct page` pin counts. */
  pageRefs!: PageRefs;
  /** The VT-d driver for the unit. */
  intel!: IntelIommu;
  /** Devices bound to vfio-pci. */
  vfioDevices!: VfioDevice[];
  /** Open iommufd contexts (the iommufd subsystem's). */
  iommufds!: Set<IommufdCtx>;
  /** The iommufd subsystem. */
  iommufd!: Iommufd;
  /** Device nodes under /dev. */
  readonly chrdevs = new Chrdevs();
  /** The IOMMU core the VT-d driver registers with. */
  readonly iommuCore = new IommuCore();
  /** `register_reboot_notifier`: run at `kernel_kexec`, in registration order. */
  private readonly shutdownHooks: ((handover: boolean) => void)[] = [];
  private readonly logBuf: string[] = [];
  private readonly bootTime = performance.now();
  private readonly processes = new Map<number, Process>();
  private nextPid = 1;
  private readonly users = new Map<number, { lockedVm: number }>();
  /** The kernel command line. */
  readonly cmdline: string;
  /** /sys. */
  readonly sysfs = new Sysfs();
  /** The guestmemfs carve-out, if `guestmemfs=` reserved one. */
  guestmemfs!: Guestmemfs | null;
  /** Persistent iommufd contexts by persistent id (`persistent_iommufds`, 1-based). */
  persistentIommufds!: Map<number, IommufdCtx>;
  /** Kexec HandOver. */
  kho!: Kho;
  /** What the previous kernel persisted for iommufd, waiting to be claimed through sysfs. */
  persisted!: PersistedIommufds;
  /** Generation on this host: 0 at cold boot, +1 per kexec. */
  readonly generation: number;
  /** Staged by `kexec_file_load`. */
  kexecImage: KexecImage | null = null;
  /** Set when this kernel kexec'd away: every call on its objects fails with ESRCH. */
  dead = false;
  private readonly hw: KernelHardware;

  /**
   * Creates the kernel; nothing runs until {@link boot}, so whoever holds the machine (the host)
   * can point at this generation before its boot phases start.
   */
  constructor(hw: KernelHardware) {
    this.memory = hw.memory;
    this.iommu = hw.iommu;
    this.cmdline = hw.cmdline ?? '';
    this.generation = hw.generation ?? 0;
    this.hw = hw;
  }

  /** `start_kernel`: early params, the IOMMU, vfio-pci, then what KHO handed over. */
  boot(): this {
    const hw = this.hw;
    this.log(`Linux version 6.12.0-iommu-liveupdate (simulated), generation ${this.generation}`);
    this.log(`Command line: ${this.cmdline}`);
    this.log(`Memory: ${hw.memory.size >> 10n}K`);
    this.kho = new Kho(this, hw.khoBlob ?? null);
    hw.onPhase?.('early-boot');
    const incoming = this.kho.incoming;
    // Early params run before any allocation: the carve-out comes out of memblock first, unless
    // the previous kernel handed one over.
    this.guestmemfs = this.restoreOr('guestmemfs', incoming?.child('guestmemfs'), (n) => Guestmemfs.restore(this, hw.memory, n), () => {
      const gm = /(?:^|\s)guestmemfs=(\S+)/.exec(this.cmdline);
      return gm ? Guestmemfs.carveOut(this, hw.memory, memparse(gm[1]!)) : null;
    });
    this.sysfs.mkdirs('/sys/kernel/iommufd_persisted');
    this.sysfs.attr('/sys/kernel/mm/transparent_hugepage/hpage_pmd_size', 0o444, { show: () => '2097152\n' });
    this.pageRefs = new PageRefs(hw.memory);
    const svc = this.services();
    this.intel = intelIommuInit(svc, hw.iommu, incoming?.child('intel-iommu'));
    hw.onPhase?.('iommu-init');
    this.vfioDevices = vfioPciInit(svc);
    this.iommufd = iommufdInit(svc, { guestmemfs: this.guestmemfs }, incoming?.child('iommufd'));
    ({ ctxs: this.iommufds, persistent: this.persistentIommufds, persisted: this.persisted } = this.iommufd);
    if (incoming) hw.onPhase?.('iommufd-restore');
    // KEXEC_KHO_DUMP runs in registration order: iommufd decides what is persistent, the Intel
    // driver serialises those domains, guestmemfs freezes last. ABORT runs in reverse.
    this.kho.notifiers.push(this.persisted, this.intel);
    if (this.guestmemfs) {
      const fs = this.guestmemfs;
      this.kho.notifiers.push({ dump: (w, kho) => fs.khoDump(w, kho), abort: () => fs.khoAbort() });
    }
    this.log(`Run /sbin/init as init process (generation ${this.generation} up)`);
    return this;
  }

  /**
   * Why this kernel cannot be entered right now, or null. The caller is inside a transition:
   * a KHO failure-injection hook or DUMP/ABORT of this kernel, or a phase observer of its host
   * (or a kexec is under way). Syscalls then fail with EDEADLK, KHO activate/deactivate too, and
   * `host.kexec()` with `ERR_INVALID_STATE`: like a notifier callback, such code may touch the
   * hardware but not re-enter the kernel or start another transition.
   */
  reentrancy(): string | null {
    const host = this.hw.busy?.() ?? null;
    // `kho` is unset only while the constructor builds it.
    return this.kho ? this.kho.reentrancy(host) : host;
  }

  /**
   * What the subsystems get of this kernel (until the initcalls build it). Every object of the
   * kernel is read through a getter, so a closure that outlives the kernel and still holds this
   * does not keep what {@link retire} lets go of.
   */
  private services(): KernelServices {
    const k = this;
    const pci = this.hw.devices.map((d) => ({ bdf: d.bdf, sid: d.sid, ats: d.ats ?? false, setBusMaster: d.setBusMaster ?? (() => {}) }));
    return {
      generation: k.generation,
      cmdline: k.cmdline,
      memory: k.memory,
      get pageRefs() {
        return k.pageRefs;
      },
      get sysfs() {
        return k.sysfs;
      },
      get kho() {
        return k.kho;
      },
      get chrdevs() {
        return k.chrdevs;
      },
      pci,
      get iommu() {
        return k.iommuCore;
      },
      get dead() {
        return k.dead;
      },
      log: (msg) => k.log(msg),
      phase: (name) => k.phase(name),
      reentrancy: () => k.reentrancy(),
      userAccount: (uid) => k.userAccount(uid),
      onShutdown: (fn) => void k.shutdownHooks.push(fn),
    };
  }

  /** @internal lifecycle hook (KHO dump/abort report through it). */
  phase(name: string): void {
    this.hw.onPhase?.(name);
  }

  /** @internal `kexec_file_load(..., cmdline, flags)`. */
  kexecLoad(proc: Process, cmdline: string | null): void {
    if (!proc.capable('CAP_SYS_BOOT')) errno('EPERM', 'kexec needs CAP_SYS_BOOT');
    this.kexecImage = cmdline === null ? null : { cmdline };
    this.log(cmdline === null ? 'kexec: image unloaded' : `kexec: loaded the next kernel, command line "${cmdline}"`);
  }

  /** @internal `reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, cmd, NULL)`. */
  reboot(proc: Process, cmd: number): void {
    if (!proc.capable('CAP_SYS_BOOT')) errno('EPERM', 'reboot needs CAP_SYS_BOOT');
    if (cmd !== LINUX_REBOOT_CMD_KEXEC) errno('EINVAL', 'only LINUX_REBOOT_CMD_KEXEC is modelled');
    if (!this.kexecImage) errno('EINVAL', 'no kexec image loaded');
    if (!this.hw.onKexec) errno('EINVAL', 'this kernel runs without a host');
    this.hw.onKexec(this.kexecImage);
  }

  /** Restores a subsystem from its KHO node, or (no node, or a bad one) boots it afresh. */
  private restoreOr<T>(what: string, node: KhoNode | undefined, restore: (n: KhoNode) => T, fresh: () => T): T {
    if (node) {
      try {
        return restore(node);
      } catch (e) {
        this.log(`KHO: ${what} not restored: ${e instanceof KernelError ? e.detail : String(e)}`);
      }
    }
    return fresh();
  }

  /**
   * `kernel_kexec` → `machine_shutdown`: the Intel driver keeps translating for persistent
   * domains when KHO is active (and blocks every other device), or turns translation off. Every
   * object of this kernel is dead afterwards. Returns the KHO blob address to hand over.
   */
  shutdown(): bigint | null {
    this.log('kexec_core: Starting new kernel');
    const handover = this.kho.active ? this.kho.blobPa : null;
    // The Intel driver, then vfio-pci's bus mastering (registration order).
    for (const fn of this.shutdownHooks) fn(handover !== null);
    this.dead = true;
    for (const p of this.processes.values()) p.kill();
    return handover;
  }

  /**
   * @internal The host calls this once the next kernel has booted: a dead kernel is only a
   * {@link KernelGeneration} from then on (its log, generation and command line). It lets go of
   * its processes, open files, iommufd contexts, drivers, KHO trees, sysfs and guestmemfs, so a
   * host's chain of generations does not keep every old kernel's page tables, trees and buffers
   * alive (what a dead process still reaches through `kernel` reads null there).
   */
  retire(): void {
    if (!this.dead) return;
    this.processes.clear();
    this.iommufds.clear();
    this.persistentIommufds.clear();
    for (const d of this.vfioDevices) d.boundBy = null;
    this.shutdownHooks.length = 0;
    const gone = this as unknown as Record<'intel' | 'kho' | 'persisted' | 'iommufd' | 'chrdevs' | 'iommuCore' | 'sysfs' | 'guestmemfs', null>;
    gone.intel = gone.kho = gone.persisted = gone.iommufd = gone.chrdevs = gone.iommuCore = gone.sysfs = gone.guestmemfs = null;
    // A line built by a template literal is a tree of its pieces; reading it makes V8 flatten it
    // (a third of what a dead kernel keeps otherwise).
    for (const line of this.logBuf) line.charCodeAt(0);
  }

  /** Starts a process (`fork` + `exec` of a fresh program). */
  spawn(opts: SpawnOptions = {}): Process {
    if (this.dead) throw new SyscallError('ESRCH', 'fork', undefined, 'this kernel was replaced by kexec');
    const p = new Process(this, this.nextPid++, opts);
    this.processes.set(p.pid, p);
    return p;
  }

  /** @internal */
  reap(p: Process): void {
    this.processes.delete(p.pid);
  }

  /** Appends a line to the kernel log (`printk`). */
  log(msg: string): void {
    const t = (performance.now() - this.bootTime) / 1000;
    const [s, us] = t.toFixed(6).split('.');
    this.logBuf.push(`[${s!.padStart(5)}.${us}] ${msg}`);
  }

  /** The kernel log, oldest first. */
  dmesg(): string[] {
    return [...this.logBuf];
  }

  /** Pages pinned right now, across every pin (a page pinned twice counts twice). */
  pinnedPages(): number {
    return this.pageRefs.total;
  }

  /** Pin count of the frame at `pa`. */
  pageRefCount(pa: bigint): number {
    return this.pageRefs.count(Number(pa >> 12n));
  }

  /** @internal per-uid `locked_vm`. */
  userAccount(uid: number): { lockedVm: number } {
    let u = this.users.get(uid);
    if (!u) this.users.set(uid, (u = { lockedVm: 0 }));
    return u;
  }

  /** Pages charged to `uid`'s `locked_vm` by iommufd (RLIMIT_MODE 0). */
  lockedVm(uid: number): number {
    return this.users.get(uid)?.lockedVm ?? 0;
  }

  /** @internal the DMAR fault interrupt: logs like `dmar_fault_do_one`. */
  dmarFault(sid: number, iova: bigint, reason: number, write: boolean): void {
    const bus = (sid >> 8).toString(16).padStart(2, '0');
    const dev = ((sid >> 3) & 0x1f).toString(16).padStart(2, '0');
    const fn = sid & 7;
    // dmar_fault_do_one: segment:bus:dev.fn, and the page address FRCD.FI holds.
    this.log(
      `DMAR: [DMA ${write ? 'Write' : 'Read'} NO_PASID] Request device [0000:${bus}:${dev}.${fn}] fault addr 0x${(iova & ~0xfffn).toString(16)} ` +
        `[fault reason 0x${reason.toString(16).padStart(2, '0')}] ${DMAR_FAULT_REASONS[reason] ?? 'Unknown'}`,
    );
  }

  /** @internal `mount(source, target, fstype)`. */
  mount(proc: Process, fstype: string, path: string): void {
    if (!proc.capable('CAP_SYS_ADMIN')) errno('EPERM', 'mount needs CAP_SYS_ADMIN');
    if (!path.startsWith('/')) errno('EINVAL', 'mount point must be absolute');
    if (fstype !== 'guestmemfs') errno('ENODEV', `unknown filesystem type ${fstype}`);
    const fs = this.guestmemfs;
    if (!fs) errno('ENOMEM', 'no guestmemfs= carve-out at boot');
    if (fs.mountpoint) errno('EBUSY', `guestmemfs is already mounted on ${fs.mountpoint}`);
    fs.mountpoint = path.replace(/\/+$/, '') || '/';
    // Mounting the restored superblock ends the handover: writable again.
    if (fs.serialised && !this.kho.active) fs.khoAbort();
    this.log(`guestmemfs: mounted on ${fs.mountpoint}`);
  }

  /** Which filesystem `path` is in. */
  private resolve(path: string): { fs: 'guestmemfs'; name: string } | { fs: 'sysfs' } | { fs: 'dev' } {
    if (!path.startsWith('/')) errno('ENOENT', 'relative paths are not modelled');
    const name = this.guestmemfs?.relative(path);
    if (name !== null && name !== undefined) return { fs: 'guestmemfs', name };
    if (path === '/sys' || path.startsWith('/sys/')) return { fs: 'sysfs' };
    return { fs: 'dev' };
  }

  /** @internal `stat(path)`. */
  stat(path: string): Stat {
    const r = this.resolve(path);
    if (r.fs === 'guestmemfs') return this.guestmemfs!.stat(r.name);
    if (r.fs === 'sysfs') return this.sysfs.stat(path);
    return this.chrdevs.stat(path);
  }

  /** @internal `getdents64` of `path`. */
  readdir(path: string): Dirent[] {
    const r = this.resolve(path);
    if (r.fs === 'guestmemfs') return this.guestmemfs!.readdir(r.name);
    if (r.fs === 'sysfs') return this.sysfs.readdir(path);
    return errno('ENOENT', 'no such directory');
  }

  /** @internal `unlink(path)`. */
  unlink(proc: Process, path: string): void {
    const r = this.resolve(path);
    if (r.fs === 'guestmemfs') {
      if (proc.uid !== 0 && !proc.capable('CAP_DAC_OVERRIDE')) errno('EACCES', 'the guestmemfs root is 0755 root');
      return this.guestmemfs!.unlink(r.name);
    }
    if (r.fs === 'sysfs') errno('EPERM', 'sysfs entries cannot be unlinked');
    errno(this.stat(path) ? 'EPERM' : 'ENOENT', 'device nodes are not unlinked here');
  }

  /** @internal `open` of a path. */
  openPath(proc: Process, path: string, flags: number, mode: number): File {
    const fdLink = /^\/proc\/self\/fd\/(\d+)$/.exec(path);
    if (fdLink) {
      let f: File;
      try {
        f = proc.fget(Number(fdLink[1]));
      } catch {
        return errno('ENOENT', 'no such fd link');
      }
      try {
        return f.reopen ? f.reopen(flags) : this.openPath(proc, f.path, flags, mode);
      } finally {
        f.put();
      }
    }
    const r = this.resolve(path);
    if (r.fs === 'guestmemfs') {
      if (r.name !== '' && flags & 0o100 && proc.uid !== 0 && !proc.capable('CAP_DAC_OVERRIDE')) errno('EACCES', 'the guestmemfs root is 0755 root');
      return this.guestmemfs!.open(proc, r.name, flags, mode, path);
    }
    if (r.fs === 'sysfs') return this.sysfs.open(proc, path, flags);
    return this.chrdevs.open(proc, path, flags);
  }
}
