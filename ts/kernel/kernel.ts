// The running kernel of a host: its core (processes, the VFS with registered device nodes and
// filesystems, sysfs, KHO, page pin counts, the log) and the subsystems its initcalls booted.
import type { IommuUnit } from '../hw/iommu.js';
import type { FdtNode } from '../fdt/index.js';
import type { PhysicalMemory } from '../hw/memory.js';
import { DMAR_FAULT_REASONS } from '../hw/vtd-regs.js';
import { errno, SyscallError } from '../uapi/errno.js';
import { O_CREAT } from '../uapi/mman.js';
import type { Dirent, Stat } from '../uapi/stat.js';
import { Chrdevs } from './chrdev.js';
import { FailFunction } from './fail_function.js';
import { permitted } from './cred.js';
import type { File, Task } from './file.js';
import type { FileSystemType, SuperBlock } from './fs.js';
import { IommuCore } from './iommu.js';
import { Kho, type KhoNode } from './kho/kho.js';
import { Liveupdate } from './luo.js';
import { PageRefs } from './mm.js';
import type { PhaseWork } from './phase-cost.js';
import { Process, type SpawnOptions, type SyscallKernel } from './process.js';
import type { KernelConfig, KernelServices } from './services.js';
import { tmpfsType } from './tmpfs.js';
import { Sysfs } from './sysfs/sysfs.js';

/** What a kernel boots on. */
export interface KernelHardware {
  memory: PhysicalMemory;
  iommu: IommuUnit;
  /** PCI devices handed to vfio-pci, in order: vfio0, vfio1, ... */
  devices: { bdf: string; sid: number; ats?: boolean; setBusMaster?: (on: boolean) => void }[];
  /** The kernel command line (`guestmemfs=16G`, ...). */
  cmdline?: string;
  /** How the kernel is built (services.ts {@link KernelConfig}). */
  kconfig?: KernelConfig;
  /** Physical address of the KHO blob the previous kernel handed over (kexec with KHO). */
  khoBlob?: bigint | null;
  /** Which generation of kernel this is on the host (0 = cold boot). */
  generation?: number;
  /** Called after each lifecycle phase, with the work it did (the host runs device traffic there). */
  onPhase?: (phase: string, work?: PhaseWork) => void;
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

/**
 * `do_initcalls`: boots the subsystems in order on a kernel's services and the hardware, and
 * returns them (the kernel exposes them as its own properties, for introspection).
 */
export type Initcalls<S extends object> = (svc: KernelServices, hw: KernelHardware, incoming: KhoNode | null) => S;

/** The simulated Linux kernel. Everything here dies with a kexec. */
export class Kernel implements KernelGeneration, SyscallKernel {
  readonly memory: PhysicalMemory;
  readonly iommu: IommuUnit;
  /** `struct page` pin counts. */
  readonly pageRefs: PageRefs;
  /** Device nodes under /dev. */
  readonly chrdevs = new Chrdevs();
  /** /sys. */
  readonly sysfs = new Sysfs();
  /** Kexec HandOver. */
  kho!: Kho;
  /** What subsystems get of this kernel. */
  readonly services: KernelServices;
  /** The IOMMU core: drivers register with it, iommufd and VFIO call it. */
  readonly iommuCore = new IommuCore();
  /** The Live Update Orchestrator's seam (kernel/liveupdate attaches to it when enabled). */
  readonly liveupdate = new Liveupdate();
  /** Function error injection (/sys/kernel/debug/fail_function): the live update's failure sites. */
  readonly failFunction: FailFunction;
  private readonly logBuf: string[] = [];
  private readonly bootTime = performance.now();
  private readonly processes = new Map<number, Process>();
  private nextPid = 1;
  private readonly users = new Map<number, { lockedVm: number }>();
  private readonly filesystems = new Map<string, FileSystemType>();
  private readonly mounts: SuperBlock[] = [];
  private readonly shutdownHooks: ((handover: boolean) => void)[] = [];
  /** Names of the properties the initcalls set. */
  private subsystems: string[] = [];
  /** The kernel command line. */
  readonly cmdline: string;
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
    this.pageRefs = new PageRefs(hw.memory);
    this.failFunction = new FailFunction(this.sysfs, (msg) => this.log(msg));
    const k = this;
    const pci = hw.devices.map((d) => ({ bdf: d.bdf, sid: d.sid, ats: d.ats ?? false, setBusMaster: d.setBusMaster ?? (() => {}) }));
    this.services = {
      generation: this.generation,
      cmdline: this.cmdline,
      kconfig: { IOMMU_LIVEUPDATE: hw.kconfig?.IOMMU_LIVEUPDATE ?? true },
      memory: this.memory,
      pageRefs: this.pageRefs,
      sysfs: this.sysfs,
      chrdevs: this.chrdevs,
      iommu: this.iommuCore,
      liveupdate: this.liveupdate,
      failFunction: this.failFunction,
      pci,
      get kho() {
        return k.kho;
      },
      get dead() {
        return k.dead;
      },
      log: (msg) => this.log(msg),
      phase: (name, work) => this.phase(name, work),
      reentrancy: () => this.reentrancy(),
      userAccount: (uid) => this.userAccount(uid),
      registerFilesystem: (fs) => {
        if (this.filesystems.has(fs.name)) throw new Error(`filesystem ${fs.name} registered twice`);
        this.filesystems.set(fs.name, fs);
      },
      onShutdown: (fn) => void this.shutdownHooks.push(fn),
    };
    // shmem_init: tmpfs is part of mm, there in every kernel.
    this.filesystems.set('tmpfs', tmpfsType(hw.memory, this.pageRefs));
  }

  /**
   * `start_kernel`: KHO ingests what the previous kernel handed over, then the initcalls boot
   * the subsystems in order (they register their device nodes, filesystems, sysfs attributes
   * and KHO notifiers through {@link services}). What they return is this kernel's view of them.
   */
  boot<S extends object>(initcalls: Initcalls<S>): this & S {
    const hw = this.hw;
    this.log(`Linux version 6.12.0-iommu-liveupdate (simulated), generation ${this.generation}`);
    this.log(`Command line: ${this.cmdline}`);
    this.log(`Memory: ${hw.memory.size >> 10n}K`);
    this.kho = new Kho(this.services, hw.khoBlob ?? null);
    hw.onPhase?.('early-boot', this.earlyBootWork());
    const subsystems = initcalls(this.services, hw, this.kho.incoming);
    this.subsystems = Object.keys(subsystems);
    Object.assign(this, subsystems);
    this.log(`Run /sbin/init as init process (generation ${this.generation} up)`);
    return this as this & S;
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
    // `kho` is unset until boot() builds it.
    return this.kho ? this.kho.reentrancy(host) : host;
  }

  /** @internal lifecycle hook (KHO dump/abort report through it). */
  phase(name: string, work?: PhaseWork): void {
    this.hw.onPhase?.(name, work);
  }

  /**
   * What early boot did before the initcalls: the memory found free is reclaimed (its struct
   * pages initialised, handed to the buddy allocator; after a kexec, what the jump scrubbed),
   * and the handover, if read, was parsed and each preserved range it lists reserved (the RFC's
   * KHO lists them as `mem` properties).
   */
  private earlyBootWork(): PhaseWork {
    const st = this.memory.stats();
    const work: PhaseWork = { scrubbedBytes: st.framesFree * 4096 };
    const incoming = this.kho.incoming;
    if (incoming && this.hw.khoBlob != null) {
      const ranges = (n: FdtNode): number => n.properties.reduce((k, p) => k + (p.name === 'mem' ? Math.floor(p.value.length / 16) : 0), 0) + n.children.reduce((k, c) => k + ranges(c), 0);
      work.preservedBlocks = ranges(incoming.node);
      work.preservedBytes = st.framesAllocated * 4096;
      work.fdtBytes = new DataView(this.memory.read(this.hw.khoBlob + 4n, 4).buffer).getUint32(0);
    }
    return work;
  }

  /** @internal `kexec_file_load(..., cmdline, flags)`. */
  kexecLoad(task: Task, cmdline: string | null): void {
    if (!task.capable('CAP_SYS_BOOT')) errno('EPERM', 'kexec needs CAP_SYS_BOOT');
    this.kexecImage = cmdline === null ? null : { cmdline };
    this.log(cmdline === null ? 'kexec: image unloaded' : `kexec: loaded the next kernel, command line "${cmdline}"`);
  }

  /** @internal `reboot(LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, cmd, NULL)`. */
  reboot(task: Task, cmd: number): void {
    if (!task.capable('CAP_SYS_BOOT')) errno('EPERM', 'reboot needs CAP_SYS_BOOT');
    if (cmd !== LINUX_REBOOT_CMD_KEXEC) errno('EINVAL', 'only LINUX_REBOOT_CMD_KEXEC is modelled');
    if (!this.kexecImage) errno('EINVAL', 'no kexec image loaded');
    if (!this.hw.onKexec) errno('EINVAL', 'this kernel runs without a host');
    this.kexecPrepare();
    this.hw.onKexec(this.kexecImage);
  }

  /**
   * @internal `kernel_kexec` before the jump: `liveupdate_reboot()` serialises the LUO sessions
   * and freezes their files (KernelError on failure: the reboot fails, nothing changed). A no-op
   * unless the command line enabled LUO. `host.kexec()` runs it too.
   */
  kexecPrepare(): void {
    if (this.dead) errno('ESRCH', 'this kernel was replaced by kexec');
    this.liveupdate.reboot();
  }

  /**
   * `kernel_kexec` → `machine_shutdown`: the Intel driver keeps translating for persistent
   * domains when KHO is active (and blocks every other device), or turns translation off. Every
   * object of this kernel is dead afterwards. Returns the KHO blob address to hand over.
   */
  shutdown(): bigint | null {
    this.log('kexec_core: Starting new kernel');
    const handover = this.kho.active ? this.kho.blobPa : null;
    for (const hook of this.shutdownHooks) hook(handover !== null);
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
    // What the subsystems registered holds them: device nodes, filesystems, shutdown hooks.
    this.filesystems.clear();
    this.mounts.length = 0;
    this.shutdownHooks.length = 0;
    const gone = this as unknown as Record<string, null>;
    for (const name of ['kho', 'sysfs', 'chrdevs', 'iommuCore', 'liveupdate', 'failFunction', 'services', ...this.subsystems]) gone[name] = null;
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
  mount(task: Task, fstype: string, path: string): void {
    if (!task.capable('CAP_SYS_ADMIN')) errno('EPERM', 'mount needs CAP_SYS_ADMIN');
    if (!path.startsWith('/')) errno('EINVAL', 'mount point must be absolute');
    const type = this.filesystems.get(fstype);
    if (!type) return errno('ENODEV', `unknown filesystem type ${fstype}`);
    const sb = type.mount(path.replace(/\/+$/, '') || '/');
    if (!this.mounts.includes(sb)) this.mounts.push(sb);
  }

  /** Path walk: the mounted filesystem and the name in it, /sys, or a device node. */
  private resolve(path: string): { fs: SuperBlock; name: string } | { fs: 'sysfs' } | { fs: 'dev' } {
    if (!path.startsWith('/')) errno('ENOENT', 'relative paths are not modelled');
    for (const fs of this.mounts) {
      const name = fs.relative(path);
      if (name !== null) return { fs, name };
    }
    if (path === '/sys' || path.startsWith('/sys/')) return { fs: 'sysfs' };
    return { fs: 'dev' };
  }

  /** `may_create` / `may_delete` in a filesystem's root directory. */
  private mayWriteDir(task: Task, fs: SuperBlock): void {
    const dir = fs.stat('');
    if (!permitted(task, dir.st_mode & 0o7777, dir.st_uid, dir.st_gid, 3)) errno('EACCES', `the directory is 0${(dir.st_mode & 0o7777).toString(8)} ${dir.st_uid}:${dir.st_gid}`);
  }

  /** @internal `stat(path)`. */
  stat(path: string): Stat {
    const r = this.resolve(path);
    if (r.fs === 'sysfs') return this.sysfs.stat(path);
    if (r.fs === 'dev') return this.chrdevs.stat(path);
    return r.fs.stat(r.name);
  }

  /** @internal `getdents64` of `path`. */
  readdir(path: string): Dirent[] {
    const r = this.resolve(path);
    if (r.fs === 'sysfs') return this.sysfs.readdir(path);
    if (r.fs === 'dev') return errno('ENOENT', 'no such directory');
    return r.fs.readdir(r.name);
  }

  /** @internal `unlink(path)`. */
  unlink(task: Task, path: string): void {
    const r = this.resolve(path);
    if (r.fs === 'sysfs') errno('EPERM', 'sysfs entries cannot be unlinked');
    if (r.fs === 'dev') errno(this.chrdevs.has(path) ? 'EPERM' : 'ENOENT', 'device nodes are not unlinked here');
    this.mayWriteDir(task, r.fs);
    return r.fs.unlink(r.name);
  }

  /** @internal `open` of a path. */
  openPath(task: Task, path: string, flags: number, mode: number): File {
    const fdLink = /^\/proc\/self\/fd\/(\d+)$/.exec(path);
    if (fdLink) {
      let f: File;
      try {
        f = task.fget(Number(fdLink[1]));
      } catch {
        return errno('ENOENT', 'no such fd link');
      }
      try {
        return f.reopen ? f.reopen(flags) : this.openPath(task, f.path, flags, mode);
      } finally {
        f.put();
      }
    }
    const r = this.resolve(path);
    if (r.fs === 'sysfs') return this.sysfs.open(task, path, flags);
    if (r.fs === 'dev') return this.chrdevs.open(task, path, flags);
    if (r.name !== '' && flags & O_CREAT) this.mayWriteDir(task, r.fs);
    return r.fs.open(task, r.name, flags, mode, path);
  }
}
