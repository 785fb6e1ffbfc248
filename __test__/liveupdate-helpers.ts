// Shared set-up for the live-update tests (liveupdate.test.ts, liveupdate.robustness.test.ts): a
// host with a guestmemfs carve-out and two VFIO devices, a VMM whose persistent iommufd maps a
// guestmemfs file for device 0 (one superpage area, one read-only 4 KiB area), and a second,
// ordinary iommufd mapping anonymous memory for device 1. Plus the userspace steps of a live
// update: activate KHO through sysfs, kexec_file_load + reboot, claim the persisted iommufd.
import { expect } from 'vitest';
import {
  DmaFault,
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  LINUX_REBOOT_CMD_KEXEC,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  claimPersistentIommufd,
  createGuestRam,
  createPersistentVm,
  type FdtNode,
  type Process,
} from 'iommu-liveupdate';

export const KiB = 1n << 10n;
export const MiB = 1n << 20n;
export const GiB = 1n << 30n;
export const PAGE = 4096n;
export const U64_MAX = 0xffff_ffff_ffff_ffffn;
export const MNT = '/mnt/guestmemfs';
export const FILE = `${MNT}/guest-ram`;
export const BDF0 = '0000:01:00.0';
export const BDF1 = '0000:02:00.0';
export const R = IOMMU_IOAS_MAP_READABLE;
export const W = IOMMU_IOAS_MAP_WRITEABLE;
export const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;
export const RW = PROT_READ | PROT_WRITE;
/** `iommu-prot` bits: IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE. */
export const IOMMU_READ = 1;
export const IOMMU_WRITE = 2;
export const IOMMU_CACHE = 4;

/** The guestmemfs file: 8 MiB, mapped at `va`. */
export const FILE_SIZE = 8n * MiB;
/** Area 0: the file's first 4 MiB, read/write, at a 2 MiB-aligned IOVA (two superpages). */
export const IOVA_SP = 1n << 32n;
export const LEN_SP = 4n * MiB;
/** Area 1: 64 KiB of the file from offset 4 MiB, read-only, at an IOVA that forces 4 KiB PTEs. */
export const IOVA_4K = (1n << 33n) + 0x1000n;
export const LEN_4K = 64n * KiB;
export const OFF_4K = 4n * MiB;
/** Bytes the guest wrote before any update, at this offset of the file (in area 0). */
export const GUEST_OFF = 12345n;
export const GUEST_BYTES = new TextEncoder().encode('guest RAM written before the live update');
/** Bytes at the start of area 1 (read-only for the device). */
export const RO_BYTES = new TextEncoder().encode('read-only area');
/** The window device 0's traffic uses: the second 2 MiB of area 0 (away from GUEST_OFF). */
export const TRAFFIC0 = { iova: IOVA_SP + 2n * MiB, length: 2n * MiB };
/** Device 1 (ordinary iommufd, anonymous memory). */
export const IOVA_ANON = 0x10_0000n;
export const LEN_ANON = 1n * MiB;

export const enc = (s: string) => new TextEncoder().encode(s);
export const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** The DMA fault `fn` raises (fails if it does not fault). */
export function expectDmaFault(fn: () => unknown): DmaFault {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a DMA fault').toBeInstanceOf(DmaFault);
  return caught as DmaFault;
}

export interface Vm {
  host: Host;
  /** The VMM (root). */
  p: Process;
  /** Its persistent iommufd, persistent id, IOAS, device fd and auto HWPT. */
  fd: number;
  pid: number;
  ioas: number;
  dev: number;
  devid: number;
  hwpt: number;
  /** The guestmemfs file fd and its mapping. */
  g: number;
  va: bigint;
  ino: number;
  /** The ordinary iommufd of device 1, its IOAS, device fd and anonymous memory. */
  fd2: number;
  ioas2: number;
  dev1: number;
  anon: bigint;
  sid0: number;
  sid1: number;
}

/** Boots the host and sets up the VMM (see the header). */
export function bootVm(opts: { memory?: bigint; carve?: string; seed?: number } = {}): Vm {
  const host = Host.boot({
    memory: opts.memory ?? 4n * GiB,
    seed: opts.seed,
    cmdline: `guestmemfs=${opts.carve ?? '64M'}`,
    devices: [{ bdf: BDF0 }, { bdf: BDF1 }],
  });
  const p = host.kernel.spawn();
  p.mount('guestmemfs', MNT);
  const ram = createGuestRam(p, FILE_SIZE, FILE);
  p.memWrite(ram.va + GUEST_OFF, GUEST_BYTES);
  p.memWrite(ram.va + OFF_4K, RO_BYTES);
  // A scratch IOAS takes id 1 and goes: the persisted IOAS is id 2 here and id 1 after re-hydration.
  const vm = createPersistentVm(p, {
    ram,
    scratchIoases: 1,
    maps: [
      { length: LEN_SP, iova: IOVA_SP },
      { offset: OFF_4K, length: LEN_4K, iova: IOVA_4K, writeable: false },
    ],
  });
  const [d0] = vm.devices;

  const fd2 = p.open('/dev/iommu', O_RDWR);
  const ioas2 = p.ioctl(fd2, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  const anon = p.mmap(null, LEN_ANON, RW, MAP_SHARED | MAP_ANONYMOUS);
  p.memWrite(anon, enc('anonymous'));
  p.ioctl(fd2, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas2, user_va: anon, length: LEN_ANON, iova: IOVA_ANON });
  const dev1 = p.open('/dev/vfio/devices/vfio1', O_RDWR);
  p.ioctl(dev1, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd2 });
  p.ioctl(dev1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas2 });

  const ino = Number(p.stat(FILE).st_ino);
  return { host, p, fd: vm.iommufd, pid: vm.persistentId, ioas: vm.ioasId, dev: d0!.fd, devid: d0!.devId, hwpt: d0!.hwptId, g: ram.fd, va: ram.va, ino, fd2, ioas2, dev1, anon, sid0: host.device(BDF0).sid, sid1: host.device(BDF1).sid };
}

/** `echo <v> > /sys/kernel/kho/active`. */
export function khoWrite(p: Process, v: string): void {
  const k = p.open('/sys/kernel/kho/active', O_WRONLY);
  try {
    p.write(k, v);
  } finally {
    p.close(k);
  }
}

/** `cat /sys/kernel/kho/dt`. */
export function readDt(p: Process): Uint8Array {
  const f = p.open('/sys/kernel/kho/dt', O_RDONLY);
  const parts: Uint8Array[] = [];
  for (;;) {
    const b = p.read(f, 1 << 16);
    if (!b.length) break;
    parts.push(b);
  }
  p.close(f);
  return Buffer.concat(parts);
}

/** The KHO failure-injection sites one successful activation of `vm`'s kernel passes, in order. */
export function sitesOf(vm: Vm): string[] {
  const sites: string[] = [];
  vm.host.kernel.kho.failPoint = (site) => {
    sites.push(site);
    return false;
  };
  khoWrite(vm.p, '1');
  khoWrite(vm.p, '0');
  vm.host.kernel.kho.failPoint = null;
  return sites;
}

/** Activates KHO, stages the next kernel and jumps (the userspace side of a live update). */
export function liveUpdate(p: Process, cmdline?: string): void {
  khoWrite(p, '1');
  p.kexecFileLoad(cmdline === undefined ? {} : { cmdline });
  p.reboot(LINUX_REBOOT_CMD_KEXEC);
}

/** Reads /sys/kernel/iommufd_persisted/<id>/iommufd: returns the fd it prints ("N\n"). */
export const claim = claimPersistentIommufd;

/** The VMM's side after the jump: claim the iommufd, re-open vfio0, bind and attach to `ptId`. */
export function reattach(p: Process, pid: number, ptId = 1): { fd: number; dev: number; hwpt: number } {
  const fd = claim(p, pid);
  const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
  const hwpt = p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ptId }).pt_id as number;
  return { fd, dev, hwpt };
}

/** Names under a sysfs/guestmemfs directory, without `.` and `..`. */
export function ls(p: Process, path: string): string[] {
  return p
    .readdir(path)
    .map((d) => d.d_name)
    .filter((n) => n !== '.' && n !== '..');
}

// ---- FDT navigation ------------------------------------------------------------------------------

export function child(n: FdtNode, path: string): FdtNode {
  let at = n;
  for (const part of path.split('/').filter(Boolean)) {
    const c = at.children.find((x) => x.name === part);
    if (!c) throw new Error(`no node ${part} under ${at.name || '/'} (have ${at.children.map((x) => x.name).join(', ')})`);
    at = c;
  }
  return at;
}

export function prop(n: FdtNode, name: string): Uint8Array {
  const p = n.properties.find((x) => x.name === name);
  if (!p) throw new Error(`no property ${name} in ${n.name || '/'} (have ${n.properties.map((x) => x.name).join(', ')})`);
  return p.value;
}

export const propNames = (n: FdtNode) => n.properties.map((x) => x.name);
export const childNames = (n: FdtNode) => n.children.map((x) => x.name);

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
export function leU64(b: Uint8Array): bigint {
  expect(b.length).toBe(8);
  return dv(b).getBigUint64(0, true);
}
export function leU32(b: Uint8Array): number {
  expect(b.length).toBe(4);
  return dv(b).getUint32(0, true);
}
export function leU64s(b: Uint8Array): bigint[] {
  expect(b.length % 8).toBe(0);
  return Array.from({ length: b.length / 8 }, (_, i) => dv(b).getBigUint64(8 * i, true));
}
export function leU32s(b: Uint8Array): number[] {
  expect(b.length % 4).toBe(0);
  return Array.from({ length: b.length / 4 }, (_, i) => dv(b).getUint32(4 * i, true));
}
/** `struct kho_mem { u64 addr; u64 len; }[]`. */
export function khoMem(b: Uint8Array): { addr: bigint; len: bigint }[] {
  const xs = leU64s(b);
  expect(xs.length % 2).toBe(0);
  return Array.from({ length: xs.length / 2 }, (_, i) => ({ addr: xs[2 * i]!, len: xs[2 * i + 1]! }));
}
export function str(b: Uint8Array): string {
  expect(b[b.length - 1]).toBe(0);
  return dec(b.subarray(0, b.length - 1));
}

/**
 * What the IOMMU itself answers for `bdf` at `iova` (0 = translates, else the VT-d fault reason),
 * asked through the unit directly: independent of the device's bus mastering.
 */
export function iommuVerdict(host: Host, bdf: string, iova: bigint, write = false): number {
  const out = new BigUint64Array(1);
  const faults = new Uint8Array(1);
  host.device(bdf).dma.translate(new BigUint64Array([iova]), out, { write, faults });
  return faults[0]!;
}
