// The whole upstream flow, VMM-shaped (ts/vmm.ts): sealed-memfd guest RAM, IOAS_MAP_FILE, a marked
// HWPT, a session preserving memfd, iommufd and VFIO device, kexec, retrieve, re-attach, finish —
// with a device doing continuous self-verifying DMA, checked after every phase. And the VFIO cdev
// handler's (vfio-pci-v1) errnos.
import { describe, expect, it } from 'vitest';
import {
  DmaFault,
  Host,
  IOMMU_HWPT_LU_SET_PRESERVE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  createLuoVm,
  finishLuoVm,
  preserveLuoVm,
  reattachLuoVm,
  retrieveLuoVm,
  type Process,
} from '../ts/index.js';
import { expectErrno } from './helpers.js';

const MiB = 1n << 20n;
const BDF0 = '0000:01:00.0';
const BDF1 = '0000:02:00.0';
const RAM = 8n * MiB;
const IOVA = 1n << 32n;
/** The preserved device's traffic window: the second half of guest RAM. */
const WIN = { iova: IOVA + RAM / 2n, length: RAM / 2n };
const ANON_IOVA = 0x10_0000n;
const GUEST = new TextEncoder().encode('guest RAM written before the live update');
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA;

const boot = () => Host.boot({ memory: 1n << 30n, cmdline: 'kho=on liveupdate=on', devices: [{ bdf: BDF0 }, { bdf: BDF1 }] });

/** An ordinary iommufd in `p` with vfio`n` attached to 1 MiB of anonymous memory. */
function ordinary(p: Process, n = 1) {
  const fd = p.open('/dev/iommu', O_RDWR);
  const ioas = Number(p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id);
  const anon = p.mmap(null, MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: ioas, user_va: anon, length: MiB, iova: ANON_IOVA });
  const dev = p.open(`/dev/vfio/devices/vfio${n}`, O_RDWR);
  p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
  p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
  return { fd, ioas, dev };
}

// The kernel reports the LUO phases: the reboot's serialise, freeze and KHO finalise; in the next
// kernel one luo-retrieve per RETRIEVE_SESSION and per file retrieved (memfd, iommufd, device),
// one luo-finish per FINISH. vm-running, luo-preserve and vmm-reattach are the test's (the VMM's).
const PHASES = ['vm-running', 'luo-preserve', 'luo-serialise', 'luo-freeze', 'kho-finalise', 'shutdown', 'jump', 'early-boot', 'iommu-init', 'iommufd-restore', 'boot', 'luo-retrieve', 'luo-retrieve', 'luo-retrieve', 'luo-retrieve', 'vmm-reattach', 'luo-finish'];

/** One full update with traffic on both devices. */
function run() {
  const host = boot();
  const vm = createLuoVm(host, { ram: RAM, iova: IOVA, devices: [0] });
  vm.process.memWrite(vm.va, GUEST);
  ordinary(vm.process, 1);
  const t0 = host.dmaTraffic({ bdf: BDF0, ...WIN, pagesPerStep: 8 });
  const t1 = host.dmaTraffic({ bdf: BDF1, iova: ANON_IOVA, length: MiB, pagesPerStep: 4 });
  host.phase('vm-running');
  const saved = preserveLuoVm(vm, 'vm');
  host.phase('luo-preserve');
  host.kexec();
  const r = retrieveLuoVm(host, saved, { reattach: false, finish: false });
  reattachLuoVm(r);
  host.phase('vmm-reattach', undefined, { devicesAttached: r.devices.length });
  finishLuoVm(r);
  return { host, vm, saved, r, t0, t1 };
}

describe('the upstream flow with continuous DMA (createLuoVm, preserveLuoVm, retrieveLuoVm)', () => {
  it('the preserved device: a step after every phase, zero faults, zero wrong bytes', () => {
    const { host, t0 } = run();
    expect(t0.steps.map((s) => s.phase)).toEqual(PHASES);
    expect(t0.steps.map((s) => s.generation)).toEqual([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    expect(t0.faults).toBe(0);
    expect(t0.mismatches).toBe(0);
    for (const s of t0.steps) expect(s.pagesWritten).toBe(8);
    for (const s of t0.steps.slice(1)) expect(s.pagesVerified).toBe(8);
    expect(host.iommu.faults().filter((f) => f.sid === host.device(BDF0).sid)).toEqual([]);
    expect(host.device(BDF0).busMaster).toBe(true);
  });

  it('the device nobody preserved: fine before the shutdown, blocked from the shutdown on', () => {
    const { t1 } = run();
    const cut = t1.steps.findIndex((s) => s.phase === 'shutdown');
    for (const s of t1.steps.slice(0, cut)) expect(s.faults).toEqual([]);
    for (const s of t1.steps.slice(cut)) {
      expect(s.faults.length).toBeGreaterThan(0);
      expect(s.pagesWritten).toBe(0);
    }
    expect(t1.mismatches).toBe(0);
  });

  it("the guest's bytes are there after: by DMA and through the retrieved memfd; the iommufd is an ordinary one after FINISH", () => {
    const { host, r, t0 } = run();
    const dma = host.device(BDF0).dma;
    expect(dma.read(IOVA, GUEST.length)).toEqual(GUEST);
    expect(r.process.memRead(r.va, GUEST.length)).toEqual(GUEST);
    dma.write(IOVA + 7n * 4096n, new TextEncoder().encode('device'));
    expect(new TextDecoder().decode(r.process.memRead(r.va + 7n * 4096n, 6))).toBe('device');
    expect(t0.pagesVerified).toBeGreaterThan(0);
    // After FINISH the HWPT's IOAS is the VMM's again: it maps more.
    const anon = r.process.mmap(null, MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    r.process.ioctl(r.iommufd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: r.ioasId, user_va: anon, length: MiB, iova: 1n << 40n });
    expect(host.kernel.dmesg().some((l) => l.includes('DMAR: liveupdate: restored 1 preserved domains, 1 devices still attached'))).toBe(true);
  });

  it('a 64 GiB host: the domain records above 4 GiB come back whole (iommufd_hwpt_lu.reclaimed is byte 12 of 13, after domain_data)', () => {
    const host = Host.boot({ memory: 64n << 30n, cmdline: 'kho=on liveupdate=on', devices: [{ bdf: BDF0 }] });
    const vm = createLuoVm(host, { ram: RAM, iova: IOVA, devices: [0] });
    vm.process.memWrite(vm.va, GUEST);
    const saved = preserveLuoVm(vm, 'vm');
    host.kexec();
    const r = retrieveLuoVm(host, saved);
    expect(host.device(BDF0).dma.read(IOVA, GUEST.length)).toEqual(GUEST);
    expect(r.process.memRead(r.va, GUEST.length)).toEqual(GUEST);
  });

  it('a second live update after the first works the same way', () => {
    const { host, r, t0 } = run();
    const saved = preserveLuoVm(r, 'vm2');
    host.kexec();
    const r2 = retrieveLuoVm(host, saved);
    host.phase('after-second');
    expect(host.device(BDF0).dma.read(IOVA, GUEST.length)).toEqual(GUEST);
    expect(r2.process.memRead(r2.va, GUEST.length)).toEqual(GUEST);
    expect(t0.faults).toBe(0);
    expect(t0.mismatches).toBe(0);
    expect(t0.steps.filter((s) => s.generation === 2).length).toBeGreaterThan(3);
  });

  it('what is not retrieved is dropped at the next update; the device is blocked then', () => {
    const host = boot();
    const vm = createLuoVm(host, { ram: RAM, iova: IOVA });
    preserveLuoVm(vm, 'vm');
    host.kexec();
    expect(host.device(BDF0).dma.read(IOVA, 4).length).toBe(4); // still translating, nobody retrieved it
    host.kexec();
    const p = host.kernel.spawn();
    const lu = p.open('/dev/liveupdate', O_RDWR);
    expectErrno(() => p.ioctl(lu, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, { name: 'vm' }), 'ENOENT');
    expect(() => host.device(BDF0).dma.read(IOVA, 4)).toThrow(DmaFault);
    // The device is free for anyone again.
    ordinary(p, 0);
  });
});

describe('the next kernel: ownership of a preserved device until FINISH', () => {
  function updated() {
    const host = boot();
    const vm = createLuoVm(host, { ram: RAM, iova: IOVA });
    const saved = preserveLuoVm(vm, 'vm');
    host.kexec();
    return { host, saved };
  }

  it('opening /dev/vfio/devices/vfio0 of a preserved device is EBUSY until FINISH', () => {
    const { host, saved } = updated();
    const p = host.kernel.spawn();
    expectErrno(() => p.open('/dev/vfio/devices/vfio0', O_RDWR), 'EBUSY', 'open');
    p.open('/dev/vfio/devices/vfio1', O_RDWR);
    const r = retrieveLuoVm(p, saved, { finish: false });
    expectErrno(() => p.open('/dev/vfio/devices/vfio0', O_RDWR), 'EBUSY', 'open');
    finishLuoVm(r);
    p.open('/dev/vfio/devices/vfio0', O_RDWR);
  });

  it('binding the retrieved device to another iommufd is EBUSY until FINISH', () => {
    const { host, saved } = updated();
    const p = host.kernel.spawn();
    const r = retrieveLuoVm(p, saved, { reattach: false, finish: false });
    const other = p.open('/dev/iommu', O_RDWR);
    expectErrno(() => p.ioctl(r.devices[0]!.fd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: other }), 'EBUSY');
    reattachLuoVm(r);
    finishLuoVm(r);
  });

  it('FINISH is EBUSY until the device is bound and re-attached', () => {
    const { host, saved } = updated();
    const p = host.kernel.spawn();
    const r = retrieveLuoVm(p, saved, { reattach: false, finish: false });
    expectErrno(() => p.ioctl(r.session, LIVEUPDATE_SESSION_FINISH, {}), 'EBUSY');
    p.ioctl(r.devices[0]!.fd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: r.iommufd });
    expectErrno(() => p.ioctl(r.session, LIVEUPDATE_SESSION_FINISH, {}), 'EBUSY');
    p.ioctl(r.devices[0]!.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: r.hwptId });
    finishLuoVm(r);
  });
});

describe('PRESERVE_FD of a VFIO cdev (vfio-pci-v1)', () => {
  function vmAndSession(mark = true) {
    const host = boot();
    const vm = createLuoVm(host, { ram: RAM, iova: IOVA, hwptToken: mark ? 1 : undefined });
    const p = vm.process;
    const s = Number(p.ioctl(p.open('/dev/liveupdate', O_RDWR), LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 's' }).fd);
    return { host, vm, p, s };
  }

  it('EINVAL for a device attached to an HWPT not marked for preservation', () => {
    const host = boot();
    const p = host.kernel.spawn();
    const { fd, dev } = ordinary(p, 0);
    const s = Number(p.ioctl(p.open('/dev/liveupdate', O_RDWR), LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 's' }).fd);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n });
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: dev, token: 3n }), 'EINVAL');
  });

  it('ENOENT for a device whose iommufd is not preserved in the same session', () => {
    const { vm, p, s } = vmAndSession();
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: vm.memfd, token: 1n });
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: vm.devices[0]!.fd, token: 3n }), 'ENOENT');
  });

  it('EINVAL for a device on an HWPT its preserved iommufd did not mark (marking it now is EBUSY: the HWPT set is serialised)', () => {
    const host = boot();
    const vm = createLuoVm(host, { ram: RAM, iova: IOVA, devices: [] });
    const p = vm.process;
    // A device attached to a second HWPT, which cannot be marked once the iommufd is preserved.
    const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    const devId = Number(p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: vm.iommufd }).out_devid);
    p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: vm.ioasId });
    const auto = Number(p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: vm.ioasId }).pt_id);
    void devId;
    const s = Number(p.ioctl(p.open('/dev/liveupdate', O_RDWR), LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 's' }).fd);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: vm.memfd, token: 1n });
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: vm.iommufd, token: 2n });
    expectErrno(() => p.ioctl(vm.iommufd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: auto, hwpt_token: 9 }), 'EBUSY');
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: dev, token: 3n }), 'EINVAL');
  });

  it('a bound device that is not attached is preserved without IOMMU state (the series calls iommufd_device_preserve only when attached)', () => {
    const host = boot();
    const p = host.kernel.spawn();
    const fd = p.open('/dev/iommu', O_RDWR);
    const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    const s = Number(p.ioctl(p.open('/dev/liveupdate', O_RDWR), LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 's' }).fd);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: dev, token: 3n });
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: dev, token: 4n }), 'EBUSY');
  });

  it('closing the session before the reboot unpreserves the device: it is shut down at kexec', () => {
    const host = boot();
    const vm = createLuoVm(host, { ram: RAM, iova: IOVA });
    const p = vm.process;
    const saved = preserveLuoVm(vm, 'x');
    p.close(saved.session);
    host.kexec();
    expect(host.device(BDF0).busMaster).toBe(false);
    host.kernel.spawn().open('/dev/vfio/devices/vfio0', O_RDWR);
  });
});

describe('several VMs on a large host', () => {
  it('domain state above 4 GiB crosses whole: iommufd_lu keeps all 64 bits of domain_data (reclaimed is the byte after it)', () => {
    // On a 64 GiB host the IOMMU core's domain records land above 4 GiB; `reclaimed` was once
    // written over byte 4 of domain_data, and RETRIEVE_FD of the iommufd then found no domain.
    const host = Host.boot({ memory: 64n << 30n, cmdline: 'kho=on liveupdate=on', devices: [{ bdf: BDF0 }, { bdf: BDF1 }] });
    const saved = [0, 1].map((v) => preserveLuoVm(createLuoVm(host, { ram: RAM, iova: IOVA, devices: [v], hwptToken: v + 1, name: `vm${v}-ram` }), `vm${v}`, { closeDevice: true }));
    host.kexec();
    // Each VMM opens /dev/liveupdate in turn (one opener at a time), takes its session and closes it.
    const vms = saved.map((s) => retrieveLuoVm(host, s, { closeDevice: true }));
    expect(vms.map((r) => r.liveupdate)).toEqual([-1, -1]);
    expect(host.kernel.dmesg().some((l) => l.includes('restored 2 preserved domains, 2 devices still attached'))).toBe(true);
    for (const bdf of [BDF0, BDF1]) expect(host.device(bdf).busMaster).toBe(true);
  });
});
