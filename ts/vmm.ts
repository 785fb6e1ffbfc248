// A VMM's side of a live-updatable VM, as user space builds it through the uAPI. The RFC flow:
// guest RAM in a guestmemfs file, a persistent iommufd (IOMMU_OPTION_PERSISTENT) with one IOAS
// mapping that RAM, and VFIO devices bound and attached to it. The upstream (LUO) flow: guest RAM
// in a sealed memfd, an HWPT marked for preservation, a session preserving memfd, iommufd and
// devices, and their retrieval after the kexec. For live-update tests, benchmarks and the CLI; every
// step is an ordinary syscall of the VMM process, so nothing here reaches into the kernel.
import { Host } from './host.js';
import type { Process } from './kernel/index.js';
import {
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_LU_SET_PRESERVE,
  IOMMU_IOAS_MAP_FILE,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  MFD_ALLOW_SEALING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_PERSISTENT,
  MAP_SHARED,
  O_CREAT,
  O_RDONLY,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
} from './uapi/index.js';

/** Where guest RAM goes by default: a file of guestmemfs mounted at `/mnt/guestmemfs`. */
export const GUEST_RAM_FILE = '/mnt/guestmemfs/guest-ram';
/** Where guest RAM is mapped for devices by default: above the 32-bit MMIO hole (IOVA = GPA). */
export const GUEST_RAM_IOVA = 1n << 32n;

/** Guest RAM: a guestmemfs file and the VMM's shared mapping of all of it. */
export interface GuestRam {
  path: string;
  /** The VMM's fd of the file. */
  fd: number;
  /** Where the VMM maps it (read/write, MAP_SHARED). */
  va: bigint;
  size: bigint;
}

/**
 * Creates guest RAM: `open(path, O_RDWR | O_CREAT, 0600)`, `ftruncate(size)` (guestmemfs takes
 * its blocks now) and `mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED)`. guestmemfs must be
 * mounted where `path` points (an init's job: `p.mount('guestmemfs', '/mnt/guestmemfs')`).
 */
export function createGuestRam(p: Process, size: bigint, path = GUEST_RAM_FILE): GuestRam {
  const fd = p.open(path, O_RDWR | O_CREAT, 0o600);
  p.ftruncate(fd, size);
  const va = p.mmap(null, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
  return { path, fd, va, size };
}

/** One IOAS_MAP of guest RAM. */
export interface GuestRamMap {
  /** Offset in guest RAM (default 0). */
  offset?: bigint;
  /** Bytes (default: the rest of guest RAM). */
  length?: bigint;
  /** IOVA (IOMMU_IOAS_MAP_FIXED_IOVA); omitted, the kernel allocates one (see {@link PersistentVm.iovas}). */
  iova?: bigint;
  /** IOMMU_IOAS_MAP_WRITEABLE (default true; it is always READABLE). */
  writeable?: boolean;
}

/** Options of {@link createPersistentVm}. */
export interface PersistentVmOptions {
  /** Guest RAM: one made by {@link createGuestRam} (with what the VMM wrote into it), or the size of a new one. */
  ram: GuestRam | bigint;
  /** The file of new guest RAM (default {@link GUEST_RAM_FILE}). */
  file?: string;
  /** How guest RAM is mapped into the IOAS (default: all of it, read/write, at {@link GUEST_RAM_IOVA}). */
  maps?: GuestRamMap[];
  /** Allow IOMMU superpages (default true); false sets IOMMU_OPTION_HUGE_PAGES = 0 on the IOAS: 4 KiB IOPTEs only. */
  hugePages?: boolean;
  /** N of each /dev/vfio/devices/vfioN to bind and attach to the IOAS, in order (default [0]). */
  devices?: number[];
  /**
   * Bind and attach the devices before mapping, so each IOAS_MAP pins and maps at once (default
   * false: map first, and the first attach pins and maps everything).
   */
  attachFirst?: boolean;
  /**
   * IOASes allocated before the VM's and destroyed right after it (default 0): the VM's IOAS id is
   * then `scratchIoases + 1`, while re-hydration after a kexec numbers IOASes from 1 again.
   */
  scratchIoases?: number;
}

/** A device of the VM: its cdev, bound to the VM's iommufd and attached to its IOAS. */
export interface VmDevice {
  /** N of /dev/vfio/devices/vfioN. */
  vfio: number;
  /** The VMM's fd of the cdev. */
  fd: number;
  /** VFIO_DEVICE_BIND_IOMMUFD's `out_devid`. */
  devId: number;
  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT's `pt_id`: the IOAS's automatic HWPT. */
  hwptId: number;
}

/** What {@link createPersistentVm} built. */
export interface PersistentVm {
  /** The VMM. */
  process: Process;
  ram: GuestRam;
  /** The persistent iommufd. */
  iommufd: number;
  /** Its persistent id: after a kexec, /sys/kernel/iommufd_persisted/<id>/iommufd hands it back. */
  persistentId: number;
  ioasId: number;
  /** The IOVA of each map, in the order of {@link PersistentVmOptions.maps}. */
  iovas: bigint[];
  devices: VmDevice[];
}

/**
 * Builds a persistent VM in `vmm` (or in a new process of `host`'s kernel): guest RAM, then
 * `open("/dev/iommu")`, IOMMU_OPTION(PERSISTENT, SET) while the context is empty,
 * IOMMU_IOAS_ALLOC, HUGE_PAGES if asked, the IOAS_MAPs of guest RAM and each device's
 * VFIO_DEVICE_BIND_IOMMUFD + ATTACH_IOMMUFD_PT (before the maps with `attachFirst`). Any failing
 * syscall throws its SyscallError, leaving what was built so far.
 */
export function createPersistentVm(vmm: Host | Process, options: PersistentVmOptions): PersistentVm {
  const p = vmm instanceof Host ? vmm.kernel.spawn() : vmm;
  const ram = typeof options.ram === 'bigint' ? createGuestRam(p, options.ram, options.file) : options.ram;
  const iommufd = p.open('/dev/iommu', O_RDWR);
  const persistentId = Number(p.ioctl(iommufd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET }).val64);
  const scratch = Array.from({ length: options.scratchIoases ?? 0 }, () => Number(p.ioctl(iommufd, IOMMU_IOAS_ALLOC, {}).out_ioas_id));
  const ioasId = Number(p.ioctl(iommufd, IOMMU_IOAS_ALLOC, {}).out_ioas_id);
  for (const id of scratch) p.ioctl(iommufd, IOMMU_DESTROY, { id });
  if (options.hugePages === false) p.ioctl(iommufd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: ioasId, val64: 0n });
  const vm: PersistentVm = { process: p, ram, iommufd, persistentId, ioasId, iovas: [], devices: [] };
  const attach = () => {
    for (const n of options.devices ?? [0]) attachVfioDevice(vm, n);
  };
  if (options.attachFirst) attach();
  for (const m of options.maps ?? [{ iova: GUEST_RAM_IOVA }]) {
    const offset = m.offset ?? 0n;
    const flags = IOMMU_IOAS_MAP_READABLE | (m.writeable === false ? 0 : IOMMU_IOAS_MAP_WRITEABLE) | (m.iova === undefined ? 0 : IOMMU_IOAS_MAP_FIXED_IOVA);
    const arg = { flags, ioas_id: ioasId, user_va: ram.va + offset, length: m.length ?? ram.size - offset, ...(m.iova === undefined ? {} : { iova: m.iova }) };
    vm.iovas.push(p.ioctl(iommufd, IOMMU_IOAS_MAP, arg).iova as bigint); // written back: the IOVA used
  }
  if (!options.attachFirst) attach();
  return vm;
}

/**
 * Opens /dev/vfio/devices/vfio`n`, binds it to the VM's iommufd and attaches it to the VM's IOAS
 * (its automatic HWPT: the first attach allocates the domain and pins what the IOAS maps).
 */
export function attachVfioDevice(vm: PersistentVm, n: number): VmDevice {
  const p = vm.process;
  const fd = p.open(`/dev/vfio/devices/vfio${n}`, O_RDWR);
  const devId = Number(p.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: vm.iommufd }).out_devid);
  const hwptId = Number(p.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: vm.ioasId }).pt_id);
  const dev = { vfio: n, fd, devId, hwptId };
  vm.devices.push(dev);
  return dev;
}

/**
 * After a kexec, the VMM's claim of its persistent iommufd: reads
 * `/sys/kernel/iommufd_persisted/<persistentId>/iommufd`, which installs the re-hydrated context
 * in `p` and prints its fd ("N\n"). The attribute's own fd is closed again.
 */
export function claimPersistentIommufd(p: Process, persistentId: number): number {
  const f = p.open(`/sys/kernel/iommufd_persisted/${persistentId}/iommufd`, O_RDONLY);
  try {
    const text = new TextDecoder().decode(p.read(f, 64));
    if (!/^\d+\n$/.test(text)) throw new Error(`iommufd_persisted/${persistentId}/iommufd read ${JSON.stringify(text)}, not an fd`);
    return Number(text);
  } finally {
    p.close(f);
  }
}

// ---- the upstream flow (LUO): sealed memfd guest RAM, a preserved HWPT, a session --------------

/** Options of {@link createLuoVm}. */
export interface LuoVmOptions {
  /** Guest RAM bytes: a memfd (MFD_ALLOW_SEALING) sealed F_SEAL_SEAL|GROW|SHRINK before it is mapped. */
  ram: bigint;
  /** IOVA of guest RAM (default {@link GUEST_RAM_IOVA}). */
  iova?: bigint;
  /** N of each /dev/vfio/devices/vfioN to bind and attach to the VM's HWPT, in order (default [0]). */
  devices?: number[];
  /** IOMMU_HWPT_LU_SET_PRESERVE's `hwpt_token` (default 1). */
  hwptToken?: number;
  /** Allow IOMMU superpages (default true); false sets IOMMU_OPTION_HUGE_PAGES = 0 on the IOAS before the MAP_FILE: 4 KiB IOPTEs only. */
  hugePages?: boolean;
  /** The memfd's name (default `guest-ram`; /proc shows `memfd:NAME`). */
  name?: string;
}

/** A device of a LUO VM: its cdev, bound to the VM's iommufd and attached to its HWPT. */
export interface LuoVmDevice {
  vfio: number;
  fd: number;
  devId: number;
}

/** What {@link createLuoVm} (or {@link retrieveLuoVm}) built. */
export interface LuoVm {
  process: Process;
  /** The memfd of guest RAM, and where the VMM maps it. */
  memfd: number;
  va: bigint;
  size: bigint;
  iova: bigint;
  iommufd: number;
  ioasId: number;
  /** The HWPT the devices are attached to (marked for preservation). */
  hwptId: number;
  hwptToken: number;
  devices: LuoVmDevice[];
}

/** The LUO tokens a VM's files are preserved under in its session. */
export interface LuoVmTokens {
  memfd: bigint;
  iommufd: bigint;
  /** One per device, in the order of {@link LuoVm.devices}. */
  devices: bigint[];
}

/** What {@link preserveLuoVm} opened: keep the session fd open until the kexec (closing it unpreserves). */
export interface LuoVmSession {
  /** The session's name (RETRIEVE_SESSION finds it by name after the kexec). */
  name: string;
  /** /dev/liveupdate (one opener at a time; -1 once closed with `closeDevice`) and the session fd. */
  liveupdate: number;
  session: number;
  tokens: LuoVmTokens;
  /** What the next kernel's VMM needs besides the tokens: guest RAM size and IOVA, the devices' N. */
  size: bigint;
  iova: bigint;
  vfio: number[];
  /** The HWPT's `hwpt_token` (unique on the host: the next kernel restores domains by it), marked again at the next update. */
  hwptToken: number;
}

/**
 * Builds a VM for the upstream flow in `vmm` (or a new process of `host`'s kernel): guest RAM as a
 * sealed memfd (`memfd_create(MFD_ALLOW_SEALING)`, ftruncate, `F_ADD_SEALS` SEAL|GROW|SHRINK,
 * `mmap(MAP_SHARED)`), `open("/dev/iommu")`, IOMMU_IOAS_ALLOC, HUGE_PAGES if asked, IOMMU_IOAS_MAP_FILE of all of it at
 * `iova`, the first device's VFIO_DEVICE_BIND_IOMMUFD + IOMMU_HWPT_ALLOC, each device's bind and
 * VFIO_DEVICE_ATTACH_IOMMUFD_PT to that HWPT, then IOMMU_HWPT_LU_SET_PRESERVE. Any failing syscall
 * throws its SyscallError.
 */
export function createLuoVm(vmm: Host | Process, options: LuoVmOptions): LuoVm {
  const p = vmm instanceof Host ? vmm.kernel.spawn() : vmm;
  const size = options.ram;
  const iova = options.iova ?? GUEST_RAM_IOVA;
  const memfd = p.memfd_create(options.name ?? 'guest-ram', MFD_ALLOW_SEALING);
  p.ftruncate(memfd, size);
  p.fcntl(memfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK);
  const va = p.mmap(null, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd);
  const iommufd = p.open('/dev/iommu', O_RDWR);
  const ioasId = Number(p.ioctl(iommufd, IOMMU_IOAS_ALLOC, {}).out_ioas_id);
  if (options.hugePages === false) p.ioctl(iommufd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: ioasId, val64: 0n });
  const flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA;
  p.ioctl(iommufd, IOMMU_IOAS_MAP_FILE, { flags, ioas_id: ioasId, fd: memfd, start: 0n, length: size, iova });
  const devices: LuoVmDevice[] = [];
  let hwptId = 0;
  for (const n of options.devices ?? [0]) {
    const fd = p.open(`/dev/vfio/devices/vfio${n}`, O_RDWR);
    const devId = Number(p.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd }).out_devid);
    if (!hwptId) hwptId = Number(p.ioctl(iommufd, IOMMU_HWPT_ALLOC, { dev_id: devId, pt_id: ioasId }).out_hwpt_id);
    p.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwptId });
    devices.push({ vfio: n, fd, devId });
  }
  const hwptToken = options.hwptToken ?? 1;
  if (hwptId) p.ioctl(iommufd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwptId, hwpt_token: hwptToken });
  return { process: p, memfd, va, size, iova, iommufd, ioasId, hwptId, hwptToken, devices };
}

/** Options of {@link preserveLuoVm} and {@link retrieveLuoVm}. */
export interface LuoDeviceOptions {
  /**
   * Close /dev/liveupdate once the session is created (or retrieved), default false. It has one
   * opener at a time, so VMMs of several VMs each open it, take their session and close it; the
   * session fd lives on by itself.
   */
  closeDevice?: boolean;
}

/**
 * Preserves `vm` for the next kernel: opens /dev/liveupdate, LIVEUPDATE_IOCTL_CREATE_SESSION
 * `name` (reusing the /dev/liveupdate fd of a VM {@link retrieveLuoVm} got back, if still open), IOMMU_HWPT_LU_SET_PRESERVE
 * of its HWPT again (token {@link LuoVm.hwptToken}, or 1), then LIVEUPDATE_SESSION_PRESERVE_FD of the memfd (token 1), the iommufd (2) and each
 * device (3, 4, ...), in the order the checks need. The fds stay open (/dev/liveupdate unless
 * `closeDevice`): the kexec takes the session along.
 */
export function preserveLuoVm(vm: LuoVm, name = 'vm', opts: LuoDeviceOptions = {}): LuoVmSession {
  const p = vm.process;
  // One opener of /dev/liveupdate at a time: a VM retrieved in this kernel may have it open already.
  const kept = 'liveupdate' in vm ? (vm as RetrievedLuoVm).liveupdate : -1;
  let liveupdate = kept >= 0 ? kept : p.open('/dev/liveupdate', O_RDWR);
  const session = Number(p.ioctl(liveupdate, LIVEUPDATE_IOCTL_CREATE_SESSION, { name }).fd);
  if (opts.closeDevice) {
    p.close(liveupdate);
    liveupdate = -1;
    if ('liveupdate' in vm) (vm as RetrievedLuoVm).liveupdate = -1;
  }
  // (Re-)mark the HWPT: a retrieved one is not marked until its VMM says so again.
  const hwptToken = vm.hwptToken || 1;
  p.ioctl(vm.iommufd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: vm.hwptId, hwpt_token: hwptToken });
  const tokens: LuoVmTokens = { memfd: 1n, iommufd: 2n, devices: vm.devices.map((_, i) => BigInt(3 + i)) };
  p.ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: vm.memfd, token: tokens.memfd });
  p.ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: vm.iommufd, token: tokens.iommufd });
  vm.devices.forEach((d, i) => p.ioctl(session, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: d.fd, token: tokens.devices[i]! }));
  return { name, liveupdate, session, tokens, size: vm.size, iova: vm.iova, vfio: vm.devices.map((d) => d.vfio), hwptToken };
}

/** A VM {@link retrieveLuoVm} got back, with its session still open until {@link finishLuoVm}. */
export interface RetrievedLuoVm extends LuoVm {
  /** Its /dev/liveupdate fd, or -1 (closed: `closeDevice`). */
  liveupdate: number;
  session: number;
}

/**
 * After the kexec, the VMM's side in `vmm` (or a new process of `host`'s kernel): opens
 * /dev/liveupdate, LIVEUPDATE_IOCTL_RETRIEVE_SESSION by name, LIVEUPDATE_SESSION_RETRIEVE_FD of the
 * memfd (mapped again), of the iommufd (its restored IOAS is id 1, its HWPT id 2) and of each
 * device (a fresh, unbound cdev). With `reattach` (default true) {@link reattachLuoVm}, with
 * `finish` (default true) {@link finishLuoVm}.
 */
export function retrieveLuoVm(vmm: Host | Process, saved: LuoVmSession, opts: { reattach?: boolean; finish?: boolean } & LuoDeviceOptions = {}): RetrievedLuoVm {
  const p = vmm instanceof Host ? vmm.kernel.spawn() : vmm;
  let liveupdate = p.open('/dev/liveupdate', O_RDWR);
  let session: number;
  try {
    session = Number(p.ioctl(liveupdate, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: saved.name }).fd);
  } finally {
    if (opts.closeDevice) {
      p.close(liveupdate);
      liveupdate = -1;
    }
  }
  const get = (token: bigint) => Number(p.ioctl(session, LIVEUPDATE_SESSION_RETRIEVE_FD, { token }).fd);
  const memfd = get(saved.tokens.memfd);
  const va = p.mmap(null, saved.size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd);
  const iommufd = get(saved.tokens.iommufd);
  const devices = saved.vfio.map((vfio, i) => ({ vfio, fd: get(saved.tokens.devices[i]!), devId: 0 }));
  const vm: RetrievedLuoVm = { process: p, memfd, va, size: saved.size, iova: saved.iova, iommufd, ioasId: 1, hwptId: 2, hwptToken: 0, devices, liveupdate, session };
  if (opts.reattach ?? true) reattachLuoVm(vm);
  if (opts.finish ?? true) finishLuoVm(vm);
  return vm;
}

/** Each retrieved device: VFIO_DEVICE_BIND_IOMMUFD to the retrieved iommufd, ATTACH_IOMMUFD_PT to its restored HWPT. */
export function reattachLuoVm(vm: LuoVm): void {
  const p = vm.process;
  for (const d of vm.devices) {
    d.devId = Number(p.ioctl(d.fd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: vm.iommufd }).out_devid);
    p.ioctl(d.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: vm.hwptId });
  }
}

/** LIVEUPDATE_SESSION_FINISH: the session lets go of its files; the VM owns them as ordinary ones. */
export function finishLuoVm(vm: RetrievedLuoVm): void {
  vm.process.ioctl(vm.session, LIVEUPDATE_SESSION_FINISH, {});
}
