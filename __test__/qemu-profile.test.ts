// The 'qemu-7.2-q35' machine against what a real Linux 7.3.4 answered under
// `qemu-system-x86_64 -machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on
// -device edu` (TCG, legacy mode, aw-bits 39; /work/shared/reference/real-kernel-oracle.md), field for
// field: IOMMU_GET_HW_INFO on the edu device bound through the VFIO cdev, IOMMU_IOAS_IOVA_RANGES
// with and without the device attached, HWPT_ALLOC flags this unit refuses, and a DMA write fault.
import { describe, expect, it } from 'vitest';
import {
  Host,
  IommuUnit,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDWR,
  PhysicalMemory,
  PROT_READ,
  PROT_WRITE,
  QEMU_7_2_INTEL_IOMMU,
  QEMU_EDU,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VTD_FR_WRITE,
  iommu_hw_info,
  iommu_hw_info_vtd,
  type Process,
} from 'iommu-liveupdate';
import { expectErrno } from './helpers.js';
import { expectDmaFault, GiB, iommuVerdict, U64_MAX } from './liveupdate-helpers.js';

/** What the real kernel reported (Linux 7.3.4 under QEMU 7.2). */
const REAL = {
  cap: 0x00d2_008c_2226_0286n,
  ecap: 0x0000_0000_00f0_0f4an,
  /** `struct iommu_hw_info_vtd`: flags ERRATA_772415_SPR17, __reserved 0, cap_reg, ecap_reg (LE). */
  data: Uint8Array.from([
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x86, 0x02, 0x26, 0x22, 0x8c, 0x00, 0xd2, 0x00,
    0x4a, 0x0f, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00,
  ]),
  outCapabilities: 0x8n,
  attachedRanges: [
    { start: 0n, last: 0xfedf_ffffn },
    { start: 0xfef0_0000n, last: 0x7f_ffff_ffffn },
  ],
  unattachedRanges: [{ start: 0n, last: U64_MAX }],
  dmesg: 'DMAR: [DMA Write NO_PASID] Request device [0000:00:01.0] fault addr 0x101000 [fault reason 0x05] PTE Write access is not set',
};
const EDU_SID = 0x0008; // 00:01.0

/** The oracle's guest: `-m 2G`, the edu device as vfio0. */
function bootQemu(extra: Omit<Parameters<typeof Host.boot>[0], 'memory' | 'machine'> = {}): Host {
  return Host.boot({ memory: 2n * GiB, machine: 'qemu-7.2-q35', ...extra });
}

/** The kernel log without its `[    0.123456] ` timestamps. */
const dmesg = (host: Host): string[] => host.kernel.dmesg().map((l) => l.replace(/^\[\s*\d+\.\d+\] /, ''));

/** /dev/iommu, an IOAS, and vfio`index` bound to it (not attached). */
function bindDevice(p: Process, index = 0): { fd: number; ioas: number; dev: number; devId: number } {
  const fd = p.open('/dev/iommu', O_RDWR);
  const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  const dev = p.open(`/dev/vfio/devices/vfio${index}`, O_RDWR);
  const devId = p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd }).out_devid as number;
  return { fd, ioas, dev, devId };
}

/** IOMMU_GET_HW_INFO with a buffer of exactly `struct iommu_hw_info_vtd`, prefilled with 0xaa. */
function hwInfo(p: Process, fd: number, devId: number) {
  const data = new Uint8Array(iommu_hw_info_vtd.size).fill(0xaa);
  const r = p.ioctl(fd, IOMMU_GET_HW_INFO, { dev_id: devId, data_len: data.length, data_uptr: data });
  return { r, data };
}

function ranges(p: Process, fd: number, ioas: number): { ranges: { start: bigint; last: bigint }[]; alignment: bigint } {
  const arr: { start: bigint; last: bigint }[] = [];
  const r = p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: ioas, num_iovas: 8, allowed_iovas: arr });
  return { ranges: arr.slice(0, r.num_iovas as number), alignment: r.out_iova_alignment as bigint };
}

describe("the 'qemu-7.2-q35' machine", () => {
  it('has the unit QEMU 7.2 emulates and the edu device at 0000:00:01.0', () => {
    const host = bootQemu();
    const { cap, ecap } = host.iommu.registers();
    expect({ cap, ecap }).toEqual({ cap: REAL.cap, ecap: REAL.ecap });
    expect(IommuUnit.profiles['qemu-7.2']).toBe(QEMU_7_2_INTEL_IOMMU);
    expect(host.devices.map((d) => [d.bdf, d.sid, d.vendorId, d.deviceId, d.ats])).toEqual([['0000:00:01.0', EDU_SID, 0x1234, 0x11e8, false]]);
    expect(dmesg(host)).toContain(`DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap d2008c22260286 ecap f00f4a`);
    expect(dmesg(host)).toContain('vfio-pci 0000:00:01.0: registered as /dev/vfio/devices/vfio0');
  });

  it('IOMMU_GET_HW_INFO on edu through the VFIO cdev: every byte as the real kernel, bound and attached', () => {
    const host = bootQemu();
    const p = host.kernel.spawn({ uid: 0 });
    const { fd, ioas, dev, devId } = bindDevice(p);
    // The whole struct iommu_hw_info (40 bytes) and the data buffer in process memory, so every
    // byte the kernel reads and writes back is compared, the __reserved ones too.
    const cmdVa = p.mmap(null, 4096n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    const dataVa = cmdVa + 2048n;
    const cmd = (out: { type: number; caps: bigint }) => {
      const b = new Uint8Array(iommu_hw_info.size);
      const v = new DataView(b.buffer);
      v.setUint32(0, iommu_hw_info.size, true); // size
      v.setUint32(4, 0, true); // flags
      v.setUint32(8, devId, true); // dev_id
      v.setUint32(12, iommu_hw_info_vtd.size, true); // data_len
      v.setBigUint64(16, dataVa, true); // data_uptr
      v.setUint32(24, out.type, true); // out_data_type
      // out_max_pasid_log2, __reserved0..2 (bytes 28-31) stay 0
      v.setBigUint64(32, out.caps, true); // out_capabilities
      return b;
    };
    expect(iommu_hw_info.size).toBe(40);
    const check = () => {
      p.memWrite(cmdVa, cmd({ type: 0, caps: 0n }));
      p.memWrite(dataVa, new Uint8Array(iommu_hw_info_vtd.size).fill(0xaa));
      expect(p.ioctl(fd, IOMMU_GET_HW_INFO, cmdVa)).toBe(0);
      expect([...p.memRead(cmdVa, iommu_hw_info.size)]).toEqual([...cmd({ type: 1, caps: REAL.outCapabilities })]);
      expect([...p.memRead(dataVa, iommu_hw_info_vtd.size)]).toEqual([...REAL.data]);
      // The same through the object form, by field name.
      const { r, data } = hwInfo(p, fd, devId);
      expect(r).toMatchObject({ data_len: 24, out_data_type: IOMMU_HW_INFO_TYPE_INTEL_VTD, out_max_pasid_log2: 0, out_capabilities: BigInt(IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED) });
      expect([...data]).toEqual([...REAL.data]);
    };
    check();
    p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    check();
  });

  it('IOMMU_IOAS_IOVA_RANGES: the aperture less the MSI window when attached, everything when not', () => {
    const host = bootQemu();
    const p = host.kernel.spawn({ uid: 0 });
    const { fd, ioas, dev } = bindDevice(p);
    const other = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    expect(ranges(p, fd, ioas)).toEqual({ ranges: REAL.unattachedRanges, alignment: 1n });
    p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    expect(ranges(p, fd, ioas)).toEqual({ ranges: REAL.attachedRanges, alignment: 0x1000n });
    expect(ranges(p, fd, other)).toEqual({ ranges: REAL.unattachedRanges, alignment: 1n });
  });

  it('HWPT_ALLOC with DIRTY_TRACKING or NEST_PARENT is EOPNOTSUPP', () => {
    const host = bootQemu();
    const p = host.kernel.spawn({ uid: 0 });
    const { fd, ioas, devId } = bindDevice(p);
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING, dev_id: devId, pt_id: ioas }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags: IOMMU_HWPT_ALLOC_NEST_PARENT, dev_id: devId, pt_id: ioas }), 'EOPNOTSUPP', 'ioctl');
    // A plain paging HWPT is fine: 3-level tables, the only depth SAGAW offers.
    const hwpt = p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags: 0, dev_id: devId, pt_id: ioas }).out_hwpt_id as number;
    expect(hwpt).toBeGreaterThan(0);
  });

  it('a DMA write to an unmapped IOVA faults with reason 5 and dmar_fault logs it as the real kernel did', () => {
    const host = bootQemu();
    const p = host.kernel.spawn({ uid: 0 });
    const { fd, ioas, dev } = bindDevice(p);
    p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    // One page mapped at 0x100000, so the device does DMA; the page after it is not mapped.
    const va = p.mmap(null, 4096n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    const flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA;
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags, ioas_id: ioas, user_va: va, length: 4096n, iova: 0x10_0000n });
    const edu = host.device(QEMU_EDU.bdf);
    // edu moves at most 2048 bytes at a time in QEMU 7.2 (a 4096-byte transfer aborts QEMU).
    const bytes = Uint8Array.from({ length: 2048 }, (_, i) => (i * 7) & 0xff);
    edu.dma.write(0x10_0000n, bytes);
    expect(p.memRead(va, 2048)).toEqual(bytes);
    const f = expectDmaFault(() => edu.dma.write(0x10_1000n, bytes));
    expect({ bdf: f.bdf, iova: f.iova, reason: f.reason, write: f.write }).toEqual({ bdf: '0000:00:01.0', iova: 0x10_1000n, reason: 5, write: true });
    expect(f.reason).toBe(VTD_FR_WRITE);
    expect(host.iommu.faults()).toEqual([{ sid: EDU_SID, iova: 0x10_1000n, reason: VTD_FR_WRITE, write: true }]);
    expect(dmesg(host).filter((l) => l.includes('Request device'))).toEqual([REAL.dmesg]);
    // The IOMMU itself, asked directly, says the same.
    expect(iommuVerdict(host, QEMU_EDU.bdf, 0x10_1000n, true)).toBe(VTD_FR_WRITE);
    // The logged address is the page FRCD.FI holds, also for a transfer starting inside the page.
    expectDmaFault(() => edu.dma.write(0x10_1234n, bytes.subarray(0, 16)));
    expect(dmesg(host).filter((l) => l.includes('Request device')).at(-1)).toBe(REAL.dmesg);
  });
});

describe("'qemu-7.2-q35' with more options", () => {
  it('devices follow edu as vfio1, ...; iommu options override the profile field by field', () => {
    const host = bootQemu({ devices: [{ bdf: '0000:01:00.0' }], iommu: { iotlbEntries: 64 } });
    expect(host.devices.map((d) => d.bdf)).toEqual(['0000:00:01.0', '0000:01:00.0']);
    expect(dmesg(host)).toContain('vfio-pci 0000:01:00.0: registered as /dev/vfio/devices/vfio1');
    expect(host.iommu.registers()).toMatchObject({ cap: REAL.cap, ecap: REAL.ecap });
    expect(host.iommu.cacheOccupancy()).toMatchObject({ iotlbCapacity: 64 });
    expect(() => bootQemu({ devices: [{ bdf: '0000:00:01.0' }] })).toThrow(/duplicate device/);
    expect(() => Host.boot({ memory: GiB, machine: 'pc-i440fx' as 'qemu-7.2-q35' })).toThrow(/unknown machine/);
  });

  it('out_capabilities follows the device and the unit: ATS needs ECAP.DT and an ATS capability', () => {
    // device-iotlb=on: ECAP.DT; a second device with ATS gets it, edu (no ATS capability) does not.
    const host = bootQemu({ iommu: { deviceTlb: true }, devices: [{ bdf: '0000:01:00.0', ats: true }] });
    expect(host.iommu.registers().ecap).toBe(REAL.ecap | 0x4n);
    const p = host.kernel.spawn({ uid: 0 });
    const edu = bindDevice(p, 0);
    const ats = bindDevice(p, 1);
    expect(hwInfo(p, edu.fd, edu.devId).r.out_capabilities).toBe(BigInt(IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED));
    expect(hwInfo(p, ats.fd, ats.devId).r.out_capabilities).toBe(0n);
    // Without ECAP.DT the same ATS-capable device cannot use it.
    const host2 = bootQemu({ devices: [{ bdf: '0000:01:00.0', ats: true }] });
    const p2 = host2.kernel.spawn({ uid: 0 });
    const ats2 = bindDevice(p2, 1);
    expect(hwInfo(p2, ats2.fd, ats2.devId).r.out_capabilities).toBe(BigInt(IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED));
  });

  it('leaves the defaults alone: a unit with no options has the CAP/ECAP it always had', () => {
    const { cap, ecap } = new IommuUnit(new PhysicalMemory({ size: GiB })).registers();
    expect({ cap, ecap }).toEqual({ cap: 0x00d2_078c_222f_0606n, ecap: 0xfc1n });
  });
});
