// The `simulate` scenario's host before any live update: a VMM per VM with its guest RAM in
// guestmemfs and its devices on a persistent iommufd (createPersistentVm), and one device of the
// host's own on anonymous memory in a plain iommufd. Each device runs self-verifying DMA traffic.
import {
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  attachVfioDevice,
  createGuestRam,
  createPersistentVm,
  type DmaTraffic,
  type LuoVm,
  type LuoVmSession,
  type Process,
} from '../../index.js';
import { formatBytes, hex, plural } from '../units.js';
import { deviceSlice, GUEST_IOVA, HOST_BUFFER, HOST_IOVA, VMM_RESERVED, type ProgressFn, type ScenarioConfig } from './config.js';

export type DeviceKind = 'nvme' | 'nic';

export interface VmState {
  name: string;
  /** The RFC flow's persistent iommufd id; null in the LUO flow (a session crosses instead). */
  persistentId: number | null;
  ioasId: number;
  pageSize: '4k' | '2m';
  file: string;
  /** What the VMM wrote at the start of guest RAM before the first live update. */
  signature: Uint8Array;
  devices: DevState[];
  /** The LUO flow's VM (its VMM's view, the retrieved one after an update) and the session that carries it. */
  luo?: { vm: LuoVm; saved: LuoVmSession | null };
}

export interface DevState {
  bdf: string;
  vfio: number;
  kind: DeviceKind;
  vm: string | null;
  persistent: boolean;
  iova: bigint;
  length: bigint;
  traffic: DmaTraffic;
  /** Timeline index of the first phase it stepped after. */
  firstIndex: number;
}

/** The booted host: init (it mounted guestmemfs), the VMs and every device (the host's own last). */
export interface ScenarioHost {
  host: Host;
  init: Process;
  vms: VmState[];
  devs: DevState[];
}

const enc = new TextEncoder();

/** What VM `name`'s VMM writes at the start of guest RAM before the first live update. */
export const signatureOf = (name: string, c: ScenarioConfig): Uint8Array => enc.encode(`iommu-liveupdate ${name} guest RAM, written by its VMM before the first live update (seed ${c.seed})`);

/** The devices of the scenario, one per PCI bus: the VMs' then the host's own. */
export const scenarioBdfs = (c: ScenarioConfig): string[] => Array.from({ length: c.vms * c.devicesPerVm + 1 }, (_, i) => `0000:${(i + 1).toString(16).padStart(2, '0')}:00.0`);

/** Device `d` of a VM: what it is and the slice of guest RAM it moves pages through. */
export function vmDevice(host: Host, c: ScenarioConfig, vm: string, d: number, vfio: number, bdf: string): DevState {
  const slice = deviceSlice(c);
  const iova = GUEST_IOVA + VMM_RESERVED + BigInt(d) * slice;
  return {
    bdf,
    vfio,
    kind: d % 2 ? 'nic' : 'nvme',
    vm,
    persistent: true,
    iova,
    length: slice,
    firstIndex: host.timeline.length,
    traffic: host.dmaTraffic({ bdf, iova, length: slice, pagesPerStep: c.pagesPerStep }),
  };
}

/** Boots the host and sets up every VM and the host's own device. */
export function setUp(c: ScenarioConfig, progress: ProgressFn): ScenarioHost {
  const bdfs = scenarioBdfs(c);
  const nDev = bdfs.length;
  progress(`booting a ${formatBytes(c.hostMemory)} host with a ${formatBytes(c.carveOut)} guestmemfs carve-out and ${plural(nDev, 'device')}`);
  const host = Host.boot({ memory: c.hostMemory, seed: c.seed, guestmemfs: c.carveOut, devices: bdfs.map((bdf) => ({ bdf })), costModel: c.costModel });
  const init = host.kernel.spawn();
  init.mount('guestmemfs', '/mnt/guestmemfs');
  const vms: VmState[] = [];
  const devs: DevState[] = [];
  for (let v = 0; v < c.vms; v++) {
    const vm = setUpVm(host, c, v, bdfs, progress);
    vms.push(vm);
    devs.push(...vm.devices);
  }
  devs.push(setUpHostDevice(host, c, nDev - 1, bdfs[nDev - 1]!, progress));
  return { host, init, vms, devs };
}

/** VM `v`: its VMM writes a signature into guest RAM, maps all of it at GUEST_IOVA, attaches its devices. */
function setUpVm(host: Host, c: ScenarioConfig, v: number, bdfs: string[], progress: ProgressFn): VmState {
  const name = `vm${v}`;
  const pageSize: '4k' | '2m' = c.pageSize === 'mixed' ? (v % 2 ? '4k' : '2m') : c.pageSize;
  const vmm = host.kernel.spawn();
  const file = `/mnt/guestmemfs/${name}-ram`;
  progress(`${name}: guest RAM ${formatBytes(c.guestMem)} in ${file}`);
  const ram = createGuestRam(vmm, c.guestMem, file);
  const signature = signatureOf(name, c);
  vmm.memWrite(ram.va, signature);
  progress(`${name}: IOAS_MAP ${formatBytes(c.guestMem)} at IOVA ${hex(GUEST_IOVA)} (${pageSize === '4k' ? '4 KiB' : '2 MiB'} IOMMU pages)`);
  // The devices one by one below, each with its own progress line (the first attach is the slow one).
  const pvm = createPersistentVm(vmm, { ram, hugePages: pageSize !== '4k', maps: [{ iova: GUEST_IOVA }], devices: [] });
  const vm: VmState = { name, persistentId: pvm.persistentId, ioasId: pvm.ioasId, pageSize, file, signature, devices: [] };
  for (let d = 0; d < c.devicesPerVm; d++) {
    const vfio = v * c.devicesPerVm + d;
    const bdf = bdfs[vfio]!;
    progress(`${name}: VFIO bind + attach ${bdf} (pins and maps ${formatBytes(c.guestMem)} on the first attach)`);
    attachVfioDevice(pvm, vfio);
    vm.devices.push(vmDevice(host, c, name, d, vfio, bdf));
  }
  return vm;
}

/** The host's own device: a userspace driver on anonymous memory, in a plain iommufd. */
export function setUpHostDevice(host: Host, c: ScenarioConfig, vfio: number, bdf: string, progress: ProgressFn): DevState {
  progress(`host: ${bdf} in a non-persistent iommufd over ${formatBytes(HOST_BUFFER)} of anonymous memory`);
  const drv = host.kernel.spawn();
  const fd = drv.open('/dev/iommu', O_RDWR);
  const ioasId = drv.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  const va = drv.mmap(null, HOST_BUFFER, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  const flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA;
  drv.ioctl(fd, IOMMU_IOAS_MAP, { flags, ioas_id: ioasId, user_va: va, length: HOST_BUFFER, iova: HOST_IOVA });
  const dev = drv.open(`/dev/vfio/devices/vfio${vfio}`, O_RDWR);
  drv.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
  drv.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioasId });
  return {
    bdf,
    vfio,
    kind: 'nic',
    vm: null,
    persistent: false,
    iova: HOST_IOVA,
    length: HOST_BUFFER,
    firstIndex: host.timeline.length,
    traffic: host.dmaTraffic({ bdf, iova: HOST_IOVA, length: HOST_BUFFER, pagesPerStep: c.pagesPerStep }),
  };
}
