// The persistent-VM builder (ts/vmm.ts): what it builds is what a VMM would, seen through the
// uAPI and the devices' DMA, and it survives a live update.
import { describe, expect, it } from 'vitest';
import {
  GUEST_RAM_FILE,
  GUEST_RAM_IOVA,
  Host,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_PERSISTENT,
  attachVfioDevice,
  createGuestRam,
  createPersistentVm,
} from 'iommu-liveupdate';
import { expectErrno } from './helpers.js';
import { BDF0, BDF1, MNT, MiB, PAGE, claim, enc, expectDmaFault, liveUpdate } from './liveupdate-helpers.js';

function boot() {
  const host = Host.boot({ memory: 1n << 30n, cmdline: 'guestmemfs=64M', devices: [{ bdf: BDF0 }, { bdf: BDF1 }] });
  const init = host.kernel.spawn();
  init.mount('guestmemfs', MNT);
  return { host, init };
}

describe('createPersistentVm', () => {
  it('defaults: a new VMM, guest RAM in guestmemfs mapped whole at 4 GiB, vfio0 bound and attached', () => {
    const { host, init } = boot();
    const vm = createPersistentVm(host, { ram: 4n * MiB });
    const p = vm.process;
    expect(p).not.toBe(init);
    expect({ path: vm.ram.path, size: vm.ram.size, st_size: p.stat(GUEST_RAM_FILE).st_size }).toEqual({ path: GUEST_RAM_FILE, size: 4n * MiB, st_size: 4n * MiB });
    expect({ persistentId: vm.persistentId, ioasId: vm.ioasId, iovas: vm.iovas, devices: vm.devices.map(({ vfio, devId, hwptId }) => ({ vfio, devId, hwptId })) }).toEqual({
      persistentId: 1,
      ioasId: 1,
      iovas: [GUEST_RAM_IOVA],
      devices: [{ vfio: 0, devId: 2, hwptId: 3 }],
    });
    expect(p.ioctl(vm.iommufd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64).toBe(1n);
    // The domain is there: 4 KiB alignment, and the device reads what the VMM writes.
    expect(p.ioctl(vm.iommufd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: vm.ioasId, num_iovas: 8, allowed_iovas: [] }).out_iova_alignment).toBe(PAGE);
    p.memWrite(vm.ram.va + 3n * MiB + 5n, enc('guest bytes'));
    expect(host.device(BDF0).dma.read(GUEST_RAM_IOVA + 3n * MiB + 5n, 11)).toEqual(enc('guest bytes'));
  });

  it('keeps the device translating across a live update, and the VMM claims its iommufd back', () => {
    const { host } = boot();
    const vm = createPersistentVm(host, { ram: 2n * MiB });
    vm.process.memWrite(vm.ram.va, enc('before the kexec'));
    liveUpdate(vm.process);
    expect(host.device(BDF0).dma.read(GUEST_RAM_IOVA, 16)).toEqual(enc('before the kexec'));
    const q = host.kernel.spawn();
    const fd = claim(q, vm.persistentId);
    expect(q.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64).toBe(BigInt(vm.persistentId));
  });

  it('options: existing guest RAM, scratch IOASes, several maps (fixed, read-only, allocated), 4 KiB IOPTEs, two devices on one HWPT', () => {
    const { host } = boot();
    const p = host.kernel.spawn();
    const ram = createGuestRam(p, 8n * MiB, `${MNT}/vm0`);
    p.memWrite(ram.va + 6n * MiB, enc('read-only'));
    const vm = createPersistentVm(p, {
      ram,
      scratchIoases: 2,
      hugePages: false,
      devices: [1, 0],
      maps: [{ length: 4n * MiB, iova: 1n << 32n }, { offset: 6n * MiB, length: PAGE, iova: 1n << 33n, writeable: false }, { offset: 4n * MiB, length: 2n * MiB }],
    });
    expect(vm.process).toBe(p);
    expect(vm.ram).toBe(ram);
    // The scratch IOASes took ids 1 and 2 and are gone again: the devices and the HWPT take them.
    expect(vm.ioasId).toBe(3);
    expect(vm.devices.map((d) => [d.vfio, d.devId, d.hwptId])).toEqual([
      [1, 1, 2],
      [0, 4, 2],
    ]);
    expect(vm.iovas.slice(0, 2)).toEqual([1n << 32n, 1n << 33n]);
    expect(vm.iovas[2]! % PAGE).toBe(0n);
    expect(p.ioctl(vm.iommufd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_GET, object_id: vm.ioasId }).val64).toBe(0n);
    expect(host.device(BDF0).dma.read(1n << 33n, 9)).toEqual(enc('read-only'));
    expect(expectDmaFault(() => host.device(BDF1).dma.write(1n << 33n, enc('x'))).reason).toBe(0x5);
    host.device(BDF1).dma.write(vm.iovas[2]!, enc('allocated'));
    expect(p.memRead(ram.va + 4n * MiB, 9)).toEqual(enc('allocated'));
  });

  it('attachVfioDevice: a device added later joins the IOAS (its first attach pins what is mapped)', () => {
    const { host } = boot();
    const vm = createPersistentVm(host, { ram: 2n * MiB, devices: [] });
    expect(vm.devices).toEqual([]);
    expect(vm.process.pinCount(vm.ram.va)).toBe(0); // mapped, but no domain yet
    const dev = attachVfioDevice(vm, 1);
    expect(vm.devices).toEqual([dev]);
    expect(vm.process.pinCount(vm.ram.va)).toBe(1);
    expect(host.device(BDF1).dma.read(GUEST_RAM_IOVA, 4)).toEqual(new Uint8Array(4));
  });

  it('attachFirst: the devices are attached before the maps (a map the domain cannot take fails at the MAP, not at the attach)', () => {
    const { host } = boot();
    const odd = { offset: 0x800n, length: PAGE, iova: 1n << 32n };
    expectErrno(() => createPersistentVm(host, { ram: 2n * MiB, maps: [odd] }), 'EADDRINUSE', 'ioctl', 'VFIO_DEVICE_ATTACH_IOMMUFD_PT');
    expectErrno(() => createPersistentVm(host, { ram: 2n * MiB, file: `${MNT}/vm1`, maps: [odd], devices: [1], attachFirst: true }), 'EINVAL', 'ioctl', 'IOMMU_IOAS_MAP');
  });
});
