// The `simulate` scenario's host for the upstream (LUO) flow, booted `kho=on liveupdate=on`: a
// VMM per VM with its guest RAM in a sealed memfd mapped by IOMMU_IOAS_MAP_FILE and its devices
// attached to an HWPT marked for preservation (createLuoVm), and the same device of the host's
// own as the RFC flow's (setup.ts). The sessions are created at each live update (run-luo.ts).
import { Host, createLuoVm } from '../../index.js';
import { formatBytes, hex, plural } from '../units.js';
import { GUEST_IOVA, type ProgressFn, type ScenarioConfig } from './config.js';
import { scenarioBdfs, setUpHostDevice, signatureOf, vmDevice, type DevState, type ScenarioHost, type VmState } from './setup.js';

/** The kernel command line that boots the upstream flow. */
export const LUO_CMDLINE = 'kho=on liveupdate=on';

/** Boots the host with LUO and sets up every VM and the host's own device. */
export function setUpLuo(c: ScenarioConfig, progress: ProgressFn): ScenarioHost {
  const bdfs = scenarioBdfs(c);
  progress(`booting a ${formatBytes(c.hostMemory)} host (${LUO_CMDLINE}) with ${plural(bdfs.length, 'device')}`);
  const host = Host.boot({ memory: c.hostMemory, seed: c.seed, cmdline: LUO_CMDLINE, devices: bdfs.map((bdf) => ({ bdf })), costModel: c.costModel });
  const init = host.kernel.spawn();
  const vms: VmState[] = [];
  const devs: DevState[] = [];
  for (let v = 0; v < c.vms; v++) {
    const name = `vm${v}`;
    const pageSize: '4k' | '2m' = c.pageSize === 'mixed' ? (v % 2 ? '4k' : '2m') : c.pageSize;
    const vfios = Array.from({ length: c.devicesPerVm }, (_, d) => v * c.devicesPerVm + d);
    // hwpt_token is the host's name for the domain across the kexec: one per VM.
    progress(`${name}: guest RAM ${formatBytes(c.guestMem)} in a sealed memfd, IOAS_MAP_FILE at IOVA ${hex(GUEST_IOVA)} (${pageSize === '4k' ? '4 KiB' : '2 MiB'} IOMMU pages), an HWPT for ${plural(vfios.length, 'device')}, marked for preservation`);
    const vm = createLuoVm(host.kernel.spawn(), { ram: c.guestMem, iova: GUEST_IOVA, devices: vfios, hugePages: pageSize !== '4k', name: `${name}-ram`, hwptToken: v + 1 });
    const signature = signatureOf(name, c);
    vm.process.memWrite(vm.va, signature);
    const state: VmState = { name, persistentId: null, ioasId: vm.ioasId, pageSize, file: `memfd:${name}-ram`, signature, devices: [], luo: { vm, saved: null } };
    state.devices = vfios.map((vfio, d) => vmDevice(host, c, name, d, vfio, bdfs[vfio]!));
    vms.push(state);
    devs.push(...state.devices);
  }
  devs.push(setUpHostDevice(host, c, bdfs.length - 1, bdfs[bdfs.length - 1]!, progress));
  return { host, init, vms, devs };
}
