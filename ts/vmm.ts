// A VMM's side of a live-updatable VM, as user space builds it through the uAPI: guest RAM in a
// guestmemfs file, a persistent iommufd (IOMMU_OPTION_PERSISTENT) with one IOAS mapping that RAM,
// and VFIO devices bound and attached to it. For live-update tests, benchmarks and the CLI; every
// step is an ordinary syscall of the VMM process, so nothing here reaches into the kernel.
import { Host } from './host.js';
import type { Process } from './kernel/index.js';
import {
  IOMMU_DESTROY,
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
