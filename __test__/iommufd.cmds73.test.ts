// The iommufd commands and struct changes up to Linux 7.3's include/uapi/linux/iommufd.h, answered
// as a 7.3 kernel answers them on this host's unit: Intel VT-d in legacy mode, no nesting, no
// PRI/PASID, no vIOMMU support in the driver. Each command goes through the syscall surface
// (open /dev/iommu, ioctl with the kernel struct as an object, or its raw bytes for the size
// rules); the kernel source line each check follows is named next to it.
import { describe, expect, it } from 'vitest';
import {
  Host,
  IOMMU_GET_HW_INFO,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_IOAS_ALLOC,
  IOMMUFD_IOCTL_OPS,
  O_RDWR,
  VFIO_DEVICE_BIND_IOMMUFD,
  iommu_hw_info,
  type SpawnOptions,
  type StructLayout,
} from 'iommu-liveupdate';
import { BDF0, BDF1, expectErrno } from './liveupdate-helpers.js';

/** A host with two devices; vfio0 is bound to a fresh iommufd with one empty IOAS. */
function setup(opts: SpawnOptions = {}) {
  const host = Host.boot({ memory: 1n << 30n, devices: [{ bdf: BDF0 }, { bdf: BDF1 }] });
  const p = host.kernel.spawn(opts);
  const fd = p.open('/dev/iommu', O_RDWR);
  const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  const dfd = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  const dev = p.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd }).out_devid as number;
  return { host, p, fd, ioas, dfd, dev };
}
type Fx = ReturnType<typeof setup>;

/** `struct _struct` with `size`, followed by one extra byte, as the selftest's TEST_LENGTH builds it. */
function rawCmd(layout: StructLayout, size: number, extra: number, fields: Record<string, number> = {}): Uint8Array {
  const b = new Uint8Array(layout.size + 1);
  const v = new DataView(b.buffer);
  v.setUint32(0, size, true);
  for (const [name, value] of Object.entries(fields)) v.setUint32(layout.byName.get(name)!.offset, value, true);
  b[layout.size] = extra;
  return b;
}

/**
 * main.c iommufd_fops_ioctl: a size below `min_size` is EINVAL and a non-zero byte past the
 * struct E2BIG, before the handler; a zero tail answers as the exact size does.
 */
function sizeRules(fx: Fx, request: number, layout: StructLayout, minSize: number, fields: Record<string, number> = {}): void {
  const name = IOMMUFD_IOCTL_OPS.get(request)?.name;
  expect(IOMMUFD_IOCTL_OPS.get(request)?.minSize, name).toBe(minSize);
  expectErrno(() => fx.p.ioctl(fx.fd, request, rawCmd(layout, minSize - 1, 0xff, fields)), 'EINVAL', 'ioctl');
  expectErrno(() => fx.p.ioctl(fx.fd, request, rawCmd(layout, layout.size + 1, 0xff, fields)), 'E2BIG', 'ioctl');
  const outcome = (b: Uint8Array) => {
    try {
      fx.p.ioctl(fx.fd, request, b);
      return 'ok';
    } catch (e) {
      return (e as { code: string }).code;
    }
  };
  expect(outcome(rawCmd(layout, layout.size + 1, 0, fields)), name).toBe(outcome(rawCmd(layout, layout.size, 0, fields)));
}

describe('IOMMU_GET_HW_INFO: the 7.3 struct, in_data_type and IOMMU_HW_INFO_FLAG_INPUT_TYPE', () => {
  it('in_data_type and out_data_type are one union member at offset 24; min_size is offsetofend(__reserved)', () => {
    expect(iommu_hw_info.size).toBe(40);
    expect(iommu_hw_info.byName.get('in_data_type')!.offset).toBe(24);
    expect(iommu_hw_info.byName.get('out_data_type')!.offset).toBe(24);
    expect(iommu_hw_info.byName.get('out_data_type')!.out).toBe(true);
    expect(iommu_hw_info.byName.get('in_data_type')!.out).toBe(false);
    const fx = setup();
    sizeRules(fx, IOMMU_GET_HW_INFO, iommu_hw_info, 32, { dev_id: fx.dev });
  });

  it('device.c iommufd_get_hw_info: flags, then __reserved, then the device, then the type the driver has', () => {
    const fx = setup();
    const { p, fd, dev } = fx;
    // Without INPUT_TYPE any in_data_type asks for the default: VT-d's own.
    expect(p.ioctl(fd, IOMMU_GET_HW_INFO, { dev_id: dev, in_data_type: 77 }).out_data_type).toBe(IOMMU_HW_INFO_TYPE_INTEL_VTD);
    for (const t of [IOMMU_HW_INFO_TYPE_DEFAULT, IOMMU_HW_INFO_TYPE_INTEL_VTD]) {
      const r = p.ioctl(fd, IOMMU_GET_HW_INFO, { flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, dev_id: dev, in_data_type: t, data_len: 24, data_uptr: new Uint8Array(24) });
      expect([r.out_data_type, r.data_len]).toEqual([IOMMU_HW_INFO_TYPE_INTEL_VTD, 24]);
    }
    // intel_iommu_hw_info refuses any other type.
    expectErrno(() => p.ioctl(fd, IOMMU_GET_HW_INFO, { flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, dev_id: dev, in_data_type: IOMMU_HW_INFO_TYPE_ARM_SMMUV3 }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_GET_HW_INFO, { flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, dev_id: dev, in_data_type: 99 }), 'EOPNOTSUPP', 'ioctl');
    // The device is looked up before the driver sees the type; flags and __reserved before both.
    expectErrno(() => p.ioctl(fd, IOMMU_GET_HW_INFO, { flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, dev_id: 99, in_data_type: 99 }), 'ENOENT', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_GET_HW_INFO, { flags: 1 << 1, dev_id: 99 }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_GET_HW_INFO, { flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE, dev_id: 99, __reserved2: 1 }), 'EOPNOTSUPP', 'ioctl');
  });
});
