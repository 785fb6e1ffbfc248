// The iommufd commands and struct changes up to Linux 7.3's include/uapi/linux/iommufd.h, answered
// as a 7.3 kernel answers them on this host's unit: Intel VT-d in legacy mode, no nesting, no
// PRI/PASID, no vIOMMU support in the driver. Each command goes through the syscall surface
// (open /dev/iommu, ioctl with the kernel struct as an object, or its raw bytes for the size
// rules); the kernel source line each check follows is named next to it.
import { describe, expect, it } from 'vitest';
import {
  Host,
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_ALLOC_PASID,
  IOMMU_HWPT_DATA_VTD_S1,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
  IOMMU_HW_INFO_FLAG_INPUT_TYPE,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HW_INFO_TYPE_DEFAULT,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_HW_QUEUE_ALLOC,
  IOMMU_HW_QUEUE_TYPE_DEFAULT,
  IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_CHANGE_PROCESS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_NOIOMMU_GET_PA,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VDEVICE_ALLOC,
  IOMMU_VEVENTQ_ALLOC,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  IOMMU_VEVENTQ_TYPE_DEFAULT,
  IOMMU_VIOMMU_ALLOC,
  IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
  IOMMU_VIOMMU_TYPE_DEFAULT,
  IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
  IOMMUFD_CMD_BASE,
  IOMMUFD_IOCTL_OPS,
  IOMMUFD_TYPE,
  _IO,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  iommu_fault_alloc,
  iommu_hw_queue_alloc,
  iommu_ioas_change_process,
  iommu_ioas_noiommu_get_pa,
  iommu_hw_info,
  iommu_hwpt_page_response,
  iommu_hwpt_pgfault,
  iommu_hwpt_invalidate,
  iommu_hwpt_vtd_s1_invalidate,
  iommu_vdevice_alloc,
  iommu_veventq_alloc,
  iommu_viommu_alloc,
  type SpawnOptions,
  type StructLayout,
} from 'iommu-liveupdate';
import { expectErrno } from './helpers.js';
import { BDF0, BDF1, PAGE, R, U64_MAX, W, expectDmaFault } from './liveupdate-helpers.js';

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

/** A page of a memfd mapped twice: `rw` for the process to fill, `ro` (PROT_READ) to hand the kernel. */
function readOnlyPage(p: Fx['p']): { rw: bigint; ro: bigint } {
  const mfd = p.memfd_create('ro');
  p.ftruncate(mfd, PAGE);
  const rw = p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd);
  const ro = p.mmap(null, PAGE, PROT_READ, MAP_SHARED, mfd);
  p.close(mfd);
  return { rw, ro };
}

describe('IOMMU_HWPT_INVALIDATE as 7.3 answers it (hw_pagetable.c iommufd_hwpt_invalidate)', () => {
  it('checks __reserved, then bounds the entry array, then looks up the id; only a nested HWPT or a vIOMMU would do', () => {
    const fx = setup();
    const { p, fd, ioas, dev, dfd } = fx;
    const hwpt = p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: dev, pt_id: ioas }).out_hwpt_id as number;
    p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwpt });
    const entries = new Uint8Array(iommu_hwpt_vtd_s1_invalidate.size * 2);
    const inv = (fields: Record<string, unknown>) =>
      p.ioctl(fd, IOMMU_HWPT_INVALIDATE, { hwpt_id: hwpt, data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, entry_len: 24, entry_num: 2, data_uptr: entries, ...fields });
    expectErrno(() => inv({ __reserved: 1, hwpt_id: 999 }), 'EOPNOTSUPP', 'ioctl');
    // entry_len above PAGE_SIZE, entry_num above 1 << 19, or entries without a pointer or a length.
    expectErrno(() => inv({ hwpt_id: 999, entry_len: 4097, data_uptr: new Uint8Array(4097) }), 'EINVAL', 'ioctl');
    expectErrno(() => inv({ hwpt_id: 999, entry_num: (1 << 19) + 1 }), 'EINVAL', 'ioctl');
    expectErrno(() => inv({ hwpt_id: 999, data_uptr: 0n }), 'EINVAL', 'ioctl');
    expectErrno(() => inv({ hwpt_id: 999, entry_len: 0 }), 'EINVAL', 'ioctl');
    // With no entries the array is not looked at: the id is.
    expectErrno(() => inv({ hwpt_id: 999, entry_num: 0, entry_len: 1 << 20, data_uptr: 0n }), 'ENOENT', 'ioctl');
    expectErrno(() => inv({ entry_num: 1 << 19, entry_len: 4096, data_uptr: new Uint8Array(4096) }), 'EINVAL', 'ioctl');
    // A paging HWPT, an IOAS or a device is not something user invalidations go to.
    for (const id of [hwpt, ioas, dev]) expectErrno(() => inv({ hwpt_id: id }), 'EINVAL', 'ioctl');
    expectErrno(() => inv({ entry_num: 0 }), 'EINVAL', 'ioctl');
  });

  it('writes entry_num back as 0 handled on every error, and a fault doing so is EFAULT whatever the error', () => {
    const fx = setup();
    const { p, fd, ioas } = fx;
    const arg = { hwpt_id: ioas, entry_num: 3, entry_len: 24, data_uptr: new Uint8Array(72) };
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_INVALIDATE, arg), 'EINVAL', 'ioctl');
    expect(arg.entry_num).toBe(0);
    const bad = { __reserved: 1, entry_num: 5 };
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_INVALIDATE, bad), 'EOPNOTSUPP', 'ioctl');
    expect(bad.entry_num).toBe(0);
    // The struct in read-only memory: the copy in works, the copy back faults.
    const { rw, ro } = readOnlyPage(p);
    const b = new Uint8Array(iommu_hwpt_invalidate.size);
    const v = new DataView(b.buffer);
    v.setUint32(0, b.length, true);
    v.setUint32(4, 999, true); // hwpt_id: ENOENT, but EFAULT is what returns
    p.memWrite(rw, b);
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_INVALIDATE, ro), 'EFAULT', 'ioctl');
    v.setUint32(28, 1, true); // __reserved: EOPNOTSUPP, still EFAULT
    p.memWrite(rw, b);
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_INVALIDATE, ro), 'EFAULT', 'ioctl');
  });
});

describe('IOMMU_HWPT_ALLOC flags on a legacy-mode unit in 7.3', () => {
  it('ALLOC_PASID is taken (the second-stage allocator accepts it); NEST_PARENT and DIRTY_TRACKING are not', () => {
    const fx = setup();
    const { p, fd, ioas, dev, dfd, host } = fx;
    const hwpt = p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags: IOMMU_HWPT_ALLOC_PASID, dev_id: dev, pt_id: ioas }).out_hwpt_id as number;
    expect(p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwpt }).pt_id).toBe(hwpt);
    const va = p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    p.memWrite(va, new Uint8Array([7, 3]));
    const { iova } = p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: ioas, flags: R | W, user_va: va, length: PAGE });
    expect([...host.device(BDF0).dma.read(iova as bigint, 2)]).toEqual([7, 3]);
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags: IOMMU_HWPT_ALLOC_NEST_PARENT, dev_id: dev, pt_id: ioas }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING | IOMMU_HWPT_ALLOC_PASID, dev_id: dev, pt_id: ioas }), 'EOPNOTSUPP', 'ioctl');
    // A nested HWPT on it (hw_pagetable.c iommufd_hwpt_nested_alloc): FAULT_ID_VALID and PASID pass
    // the flag check, then the parent is not a NEST_PARENT HWPT.
    const nested = { flags: IOMMU_HWPT_ALLOC_PASID, dev_id: dev, pt_id: hwpt, data_type: IOMMU_HWPT_DATA_VTD_S1, data_len: 32, data_uptr: new Uint8Array(32) };
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, nested), 'EINVAL', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, { ...nested, flags: IOMMU_HWPT_ALLOC_NEST_PARENT }), 'EOPNOTSUPP', 'ioctl');
  });
});

/** A response record for a fault queue's fd. */
function response(cookie: number, code: number): Uint8Array {
  const b = new Uint8Array(iommu_hwpt_page_response.size);
  new DataView(b.buffer).setUint32(0, cookie, true);
  new DataView(b.buffer).setUint32(4, code, true);
  return b;
}

describe('IOMMU_FAULT_QUEUE_ALLOC (eventq.c iommufd_fault_alloc)', () => {
  it('size rules; flags must be 0 (EOPNOTSUPP) and a refused call takes no id and no fd', () => {
    const fx = setup();
    sizeRules(fx, IOMMU_FAULT_QUEUE_ALLOC, iommu_fault_alloc, 16);
    const next = setup();
    expectErrno(() => next.p.ioctl(next.fd, IOMMU_FAULT_QUEUE_ALLOC, { flags: 1 }), 'EOPNOTSUPP', 'ioctl');
    // Ids: IOAS 1, device 2; fds: /dev/iommu 3, vfio0 4.
    expect(next.p.ioctl(next.fd, IOMMU_FAULT_QUEUE_ALLOC, {})).toMatchObject({ out_fault_id: 3, out_fault_fd: 5 });
  });

  it('the fd reads whole iommu_hwpt_pgfault records (none ever queued) and takes whole responses (no cookie is outstanding)', () => {
    const { p, fd } = setup();
    const { out_fault_fd: qfd } = p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, {});
    const q = qfd as number;
    expect(iommu_hwpt_pgfault.size).toBe(40);
    expect(p.read(q, 0).length).toBe(0);
    expect(p.read(q, 2 * 40).length).toBe(0);
    expectErrno(() => p.read(q, 39), 'ESPIPE', 'read');
    expect(p.write(q, new Uint8Array(0))).toBe(0);
    expectErrno(() => p.write(q, new Uint8Array(7)), 'ESPIPE', 'write');
    expectErrno(() => p.write(q, response(1, 2)), 'EINVAL', 'write'); // neither SUCCESS nor INVALID
    expectErrno(() => p.write(q, response(1, 0)), 'EINVAL', 'write'); // no group awaits cookie 1
    expectErrno(() => p.write(q, new Uint8Array([...response(0, 1), ...response(1, 1)])), 'EINVAL', 'write');
  });

  it('the fd holds the object (DESTROY is EBUSY until it is closed) and the context (closing /dev/iommu keeps it)', () => {
    const { host, p, fd, dfd } = setup();
    const { out_fault_id: id, out_fault_fd: q } = p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, {});
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id }), 'EBUSY', 'ioctl');
    p.close(q as number);
    p.ioctl(fd, IOMMU_DESTROY, { id });
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id }), 'ENOENT', 'ioctl');
    // The lowest free id and fd again.
    const again = p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, {});
    expect([again.out_fault_id, again.out_fault_fd]).toEqual([id, q]);
    p.close(dfd); // unbinds the device: the context's last other holder
    p.close(fd);
    expect(host.kernel.iommufds.size).toBe(1);
    expect(p.read(again.out_fault_fd as number, 40).length).toBe(0);
    p.close(again.out_fault_fd as number);
    expect(host.kernel.iommufds.size).toBe(0);
  });

  it('when writing the answer back faults: EFAULT, and neither the id nor the fd is taken', () => {
    const { p, fd } = setup();
    const { rw, ro } = readOnlyPage(p);
    const b = new Uint8Array(iommu_fault_alloc.size);
    new DataView(b.buffer).setUint32(0, b.length, true);
    p.memWrite(rw, b);
    expectErrno(() => p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, ro), 'EFAULT', 'ioctl');
    expect(p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, {})).toMatchObject({ out_fault_id: 3, out_fault_fd: 5 });
  });
});

describe('IOMMU_HWPT_ALLOC with IOMMU_HWPT_FAULT_ID_VALID (hw_pagetable.c iommufd_hwpt_alloc)', () => {
  it('allocates the domain, then looks the queue up (ENOENT undoes the HWPT); the HWPT holds the queue', () => {
    const fx = setup();
    const { p, fd, ioas, dev } = fx;
    const { out_fault_id: faultId, out_fault_fd: q } = p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, {});
    const alloc = (fault_id: number, flags = IOMMU_HWPT_FAULT_ID_VALID) => p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags, dev_id: dev, pt_id: ioas, fault_id });
    expectErrno(() => alloc(99), 'ENOENT', 'ioctl');
    expectErrno(() => alloc(ioas), 'ENOENT', 'ioctl'); // not a FAULT
    expectErrno(() => alloc(faultId as number, IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_NEST_PARENT), 'EOPNOTSUPP', 'ioctl');
    // Without the flag fault_id is not looked at.
    const plain = alloc(99, 0).out_hwpt_id as number;
    p.ioctl(fd, IOMMU_DESTROY, { id: plain });
    const hwpt = alloc(faultId as number).out_hwpt_id as number;
    expect(hwpt).toBe(plain); // the failed allocations left no id behind
    p.close(q as number);
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: faultId }), 'EBUSY', 'ioctl');
    p.ioctl(fd, IOMMU_DESTROY, { id: hwpt });
    p.ioctl(fd, IOMMU_DESTROY, { id: faultId });
    // A queue is not a page table to allocate on or attach to.
    const f2 = p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, {}).out_fault_id as number;
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: dev, pt_id: f2 }), 'EINVAL', 'ioctl');
    expectErrno(() => p.ioctl(fx.dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: f2 }), 'EINVAL', 'ioctl');
  });

  it('no device can attach to it: IO page faults need PRI, which legacy mode does not enable (ENODEV)', () => {
    const fx = setup();
    const { p, fd, ioas, dev, dfd, host } = fx;
    const faultId = p.ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, {}).out_fault_id as number;
    const hwpt = p.ioctl(fd, IOMMU_HWPT_ALLOC, { flags: IOMMU_HWPT_FAULT_ID_VALID, dev_id: dev, pt_id: ioas, fault_id: faultId }).out_hwpt_id as number;
    const va = p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    const { iova } = p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: ioas, flags: R | W, user_va: va, length: PAGE });
    expectErrno(() => p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwpt }), 'ENODEV', 'ioctl');
    expectDmaFault(() => host.device(BDF0).dma.read(iova as bigint, 1));
    // Attached through the IOAS's automatic HWPT, it translates; replacing that with the fault
    // HWPT fails, and intel_iommu_attach_device has blocked the device before failing (the iommu
    // core does not revert the device that failed): DMA faults while iommufd keeps the old HWPT.
    const auto = p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas }).pt_id as number;
    expect(host.device(BDF0).dma.read(iova as bigint, 1).length).toBe(1);
    expectErrno(() => p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwpt }), 'ENODEV', 'ioctl');
    expectDmaFault(() => host.device(BDF0).dma.read(iova as bigint, 1));
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: auto }), 'EBUSY', 'ioctl');
  });
});

/** The next object id and fd: proof that a failed command took neither. */
function nextIdAndFd(fx: Fx): [number, number] {
  const { out_fault_id, out_fault_fd } = fx.p.ioctl(fx.fd, IOMMU_FAULT_QUEUE_ALLOC, {});
  fx.p.close(out_fault_fd as number);
  fx.p.ioctl(fx.fd, IOMMU_DESTROY, { id: out_fault_id });
  return [out_fault_id as number, out_fault_fd as number];
}

describe('vIOMMU commands: the Intel driver has no vIOMMU support (viommu.c, eventq.c)', () => {
  it('size rules of VIOMMU_ALLOC, VDEVICE_ALLOC, VEVENTQ_ALLOC and HW_QUEUE_ALLOC', () => {
    const fx = setup();
    expect([iommu_viommu_alloc.size, iommu_vdevice_alloc.size, iommu_veventq_alloc.size, iommu_hw_queue_alloc.size]).toEqual([40, 24, 32, 40]);
    sizeRules(fx, IOMMU_VIOMMU_ALLOC, iommu_viommu_alloc, 24, { type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: fx.dev });
    sizeRules(fx, IOMMU_VDEVICE_ALLOC, iommu_vdevice_alloc, 24, { dev_id: fx.dev });
    sizeRules(fx, IOMMU_VEVENTQ_ALLOC, iommu_veventq_alloc, 28, { type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: 1 });
    sizeRules(fx, IOMMU_HW_QUEUE_ALLOC, iommu_hw_queue_alloc, 40, { type: IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV });
  });

  it('VIOMMU_ALLOC: flags or type DEFAULT (EOPNOTSUPP), the device (ENOENT), then the driver (EOPNOTSUPP)', () => {
    const fx = setup();
    const { p, fd, ioas, dev } = fx;
    const hwpt = p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: dev, pt_id: ioas }).out_hwpt_id as number;
    const before = nextIdAndFd(fx);
    const viommu = (fields: Record<string, unknown>) => p.ioctl(fd, IOMMU_VIOMMU_ALLOC, { type: IOMMU_VIOMMU_TYPE_ARM_SMMUV3, dev_id: dev, hwpt_id: hwpt, ...fields });
    expectErrno(() => viommu({ flags: 1, dev_id: 99 }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => viommu({ type: IOMMU_VIOMMU_TYPE_DEFAULT, dev_id: 99 }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => viommu({ dev_id: 99 }), 'ENOENT', 'ioctl');
    expectErrno(() => viommu({ dev_id: ioas }), 'ENOENT', 'ioctl');
    // iommufd_viommu.no_viommu.viommu_negative_tests: device 0, HWPT 0, IOMMU_VIOMMU_TYPE_SELFTEST
    expectErrno(() => viommu({ dev_id: 0, hwpt_id: 0, type: 0xdeadbeef }), 'ENOENT', 'ioctl');
    // With a device: any type, any hwpt_id (it is looked up only after the driver agrees), a
    // non-zero __reserved (never checked) and driver data all end at the driver.
    for (const fields of [{}, { type: IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV }, { type: 99 }, { hwpt_id: 99 }, { __reserved: 1 }, { data_len: 16, data_uptr: new Uint8Array(16) }]) {
      expectErrno(() => viommu(fields), 'EOPNOTSUPP', 'ioctl');
    }
    expect(nextIdAndFd(fx)).toEqual(before);
  });

  it('VDEVICE_ALLOC: no vIOMMU exists, so the lookup is ENOENT whatever else the struct holds', () => {
    const fx = setup();
    const { p, fd, ioas, dev } = fx;
    for (const viommu_id of [0, ioas, dev, 99]) {
      expectErrno(() => p.ioctl(fd, IOMMU_VDEVICE_ALLOC, { viommu_id, dev_id: dev, virt_id: 1n }), 'ENOENT', 'ioctl');
    }
    expectErrno(() => p.ioctl(fd, IOMMU_VDEVICE_ALLOC, { viommu_id: ioas, dev_id: 99, virt_id: U64_MAX }), 'ENOENT', 'ioctl');
    // iommufd_viommu.no_viommu.vdevice_alloc: vIOMMU 0, device 0, virt_id 0x99
    expectErrno(() => p.ioctl(fd, IOMMU_VDEVICE_ALLOC, { viommu_id: 0, dev_id: 0, virt_id: 0x99n }), 'ENOENT', 'ioctl');
  });

  it('VEVENTQ_ALLOC: flags, __reserved or type DEFAULT (EOPNOTSUPP), the depth (EINVAL), then the vIOMMU (ENOENT)', () => {
    const fx = setup();
    const { p, fd, ioas } = fx;
    const before = nextIdAndFd(fx);
    const q = (fields: Record<string, unknown>) => p.ioctl(fd, IOMMU_VEVENTQ_ALLOC, { viommu_id: ioas, type: IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, veventq_depth: 16, ...fields });
    expectErrno(() => q({ flags: 1, veventq_depth: 0 }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => q({ __reserved: 1, veventq_depth: 0 }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => q({ type: IOMMU_VEVENTQ_TYPE_DEFAULT, veventq_depth: 0 }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => q({ veventq_depth: 0 }), 'EINVAL', 'ioctl');
    expectErrno(() => q({ veventq_depth: (1 << 19) + 1 }), 'EINVAL', 'ioctl');
    expectErrno(() => q({ veventq_depth: 1 << 19 }), 'ENOENT', 'ioctl');
    expectErrno(() => q({ type: 99 }), 'ENOENT', 'ioctl');
    expect(nextIdAndFd(fx)).toEqual(before);
  });

  it('HW_QUEUE_ALLOC: flags or type DEFAULT (EOPNOTSUPP), zero length (EINVAL), an IOVA range past 2^64 (EOVERFLOW), then the vIOMMU (ENOENT)', () => {
    const fx = setup();
    const { p, fd, ioas } = fx;
    const q = (fields: Record<string, unknown>) =>
      p.ioctl(fd, IOMMU_HW_QUEUE_ALLOC, { viommu_id: ioas, type: IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV, nesting_parent_iova: 0n, length: PAGE, ...fields });
    expectErrno(() => q({ flags: 1, length: 0n }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => q({ type: IOMMU_HW_QUEUE_TYPE_DEFAULT, length: 0n }), 'EOPNOTSUPP', 'ioctl');
    expectErrno(() => q({ length: 0n, nesting_parent_iova: U64_MAX }), 'EINVAL', 'ioctl');
    expectErrno(() => q({ nesting_parent_iova: U64_MAX, length: 2n }), 'EOVERFLOW', 'ioctl');
    expectErrno(() => q({ nesting_parent_iova: 2n, length: U64_MAX }), 'EOVERFLOW', 'ioctl');
    // A last byte at 2^64 - 1 does not overflow.
    expectErrno(() => q({ nesting_parent_iova: U64_MAX, length: 1n }), 'ENOENT', 'ioctl');
    expectErrno(() => q({ nesting_parent_iova: 1n, length: U64_MAX }), 'ENOENT', 'ioctl');
    expectErrno(() => q({ nesting_parent_iova: 0n, length: U64_MAX, index: 7 }), 'ENOENT', 'ioctl');
  });
});

describe('IOMMU_IOAS_CHANGE_PROCESS (ioas.c iommufd_ioas_change_process)', () => {
  it('size rules; __reserved (EOPNOTSUPP); any area not mapped by IOAS_MAP_FILE (EINVAL), a memfd mapped by address included', () => {
    const fx = setup();
    const { p, fd, ioas } = fx;
    sizeRules(fx, IOMMU_IOAS_CHANGE_PROCESS, iommu_ioas_change_process, 8);
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, { __reserved: 1 }), 'EOPNOTSUPP', 'ioctl');
    // Nothing mapped: nothing to move.
    p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, {});
    const mfd = p.memfd_create('guest');
    p.ftruncate(mfd, 2n * PAGE);
    const va = p.mmap(null, 2n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd);
    const byVa = p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: ioas, flags: R | W, user_va: va, length: PAGE }).iova as bigint;
    p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { ioas_id: ioas, flags: R | W, fd: mfd, start: PAGE, length: PAGE });
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, {}), 'EINVAL', 'ioctl');
    // In another IOAS too: every IOAS of the context counts.
    p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: byVa, length: PAGE });
    p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, {});
    const other = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: other, flags: R, user_va: va, length: PAGE });
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_CHANGE_PROCESS, {}), 'EINVAL', 'ioctl');
  });

  /**
   * The selftest's change_process fixture without CAP_IPC_LOCK: process A maps 4 pages of a memfd
   * with IOAS_MAP_FILE and attaches a device (the pins are charged to A); B gets A's /dev/iommu fd
   * (standing in for fork's inherited fd, or SCM_RIGHTS, which the simulator does not have).
   */
  function moved(mode: 'user' | 'mm', b: SpawnOptions = {}) {
    const host = Host.boot({ memory: 1n << 30n, devices: [{ bdf: BDF0 }] });
    const caps = ['CAP_DAC_OVERRIDE', 'CAP_SYS_RESOURCE'];
    const pa = host.kernel.spawn({ uid: 1000, capabilities: caps });
    const fd = pa.open('/dev/iommu', O_RDWR);
    if (mode === 'mm') pa.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64: 1n });
    const ioas = pa.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const mfd = pa.memfd_create('guest');
    pa.ftruncate(mfd, 4n * PAGE);
    const { iova } = pa.ioctl(fd, IOMMU_IOAS_MAP_FILE, { ioas_id: ioas, flags: R | W, fd: mfd, start: 0n, length: 4n * PAGE });
    const dfd = pa.open('/dev/vfio/devices/vfio0', O_RDWR);
    pa.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    pa.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    const pb = host.kernel.spawn({ uid: 1000, capabilities: caps, ...b });
    const bfd = pb.installFd(pa.fget(fd));
    const locked = (p: typeof pa) => (mode === 'mm' ? p.mm.lockedVm : host.kernel.lockedVm(p.uid));
    return { host, pa, pb, fd, bfd, ioas, iova: iova as bigint, locked };
  }

  for (const mode of ['user', 'mm'] as const) {
    it(`RLIMIT_MODE ${mode}: the pins move to the caller's ${mode === 'mm' ? 'mm' : 'mm (pinned_vm) and user'}, and unpin from there`, () => {
      const { host, pa, pb, bfd, ioas, iova, locked } = moved(mode);
      expect([pa.mm.pinnedVm, pb.mm.pinnedVm, locked(pa)]).toEqual([4, 0, 4]);
      if (mode === 'mm') expect(pb.mm.lockedVm).toBe(0);
      pb.ioctl(bfd, IOMMU_IOAS_CHANGE_PROCESS, {});
      expect([pa.mm.pinnedVm, pb.mm.pinnedVm, locked(pb)]).toEqual([0, 4, 4]);
      if (mode === 'mm') expect(pa.mm.lockedVm).toBe(0);
      // Again from B: nothing left to move.
      pb.ioctl(bfd, IOMMU_IOAS_CHANGE_PROCESS, {});
      expect([pa.mm.pinnedVm, pb.mm.pinnedVm, locked(pb)]).toEqual([0, 4, 4]);
      pb.ioctl(bfd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova, length: 4n * PAGE });
      expect([pa.mm.pinnedVm, pb.mm.pinnedVm, locked(pa), locked(pb), host.kernel.pinnedPages()]).toEqual([0, 0, 0, 0, 0]);
    });
  }

  it('RLIMIT_MODE user, another user: locked_vm moves from one user to the other', () => {
    const { host, pb, bfd } = moved('user', { uid: 2000 });
    expect([host.kernel.lockedVm(1000), host.kernel.lockedVm(2000)]).toEqual([4, 0]);
    pb.ioctl(bfd, IOMMU_IOAS_CHANGE_PROCESS, {});
    expect([host.kernel.lockedVm(1000), host.kernel.lockedVm(2000)]).toEqual([0, 4]);
  });

  it('the caller is charged before the old owner is uncharged: over its RLIMIT_MEMLOCK it is ENOMEM and nothing moves', () => {
    // mm: 4 pages > 3. user, the same user: its 4 pages + 4 more > 6, though it would end at 4.
    for (const [mode, limit] of [['user', 6n], ['mm', 3n]] as const) {
      const { pa, pb, bfd, locked } = moved(mode, { rlimitMemlock: limit * PAGE });
      expectErrno(() => pb.ioctl(bfd, IOMMU_IOAS_CHANGE_PROCESS, {}), 'ENOMEM', 'ioctl');
      expect([pa.mm.pinnedVm, pb.mm.pinnedVm, locked(pa)]).toEqual([4, 0, 4]);
      if (mode === 'mm') expect(pb.mm.lockedVm).toBe(0);
    }
  });

  it('pages shared by COPY into another IOAS move once', () => {
    const { pa, pb, fd, bfd, ioas, iova, locked } = moved('mm');
    const other = pa.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    pa.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: other, src_ioas_id: ioas, flags: R, src_iova: iova, length: 4n * PAGE });
    pb.ioctl(bfd, IOMMU_IOAS_CHANGE_PROCESS, {});
    expect([pa.mm.pinnedVm, pb.mm.pinnedVm, locked(pa), locked(pb)]).toEqual([0, 4, 0, 4]);
  });
});

describe('IOMMU_IOAS_NOIOMMU_GET_PA without CONFIG_IOMMUFD_NOIOMMU (iommufd_private.h stub)', () => {
  it('passes the size rules, then is EOPNOTSUPP whatever the struct holds and whoever asks', () => {
    const fx = setup();
    const { p, fd, ioas, dfd, host } = fx;
    expect(iommu_ioas_noiommu_get_pa.size).toBe(40);
    sizeRules(fx, IOMMU_IOAS_NOIOMMU_GET_PA, iommu_ioas_noiommu_get_pa, 40, { ioas_id: ioas });
    p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    const va = p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    const iova = p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: ioas, flags: R | W, user_va: va, length: PAGE }).iova as bigint;
    for (const fields of [{ ioas_id: ioas, iova, length: PAGE }, { ioas_id: 99, iova, length: PAGE }, { ioas_id: ioas, iova: 0n, length: 0n }, { flags: 1, __reserved: 1 }]) {
      const arg = { ...fields, out_phys: 0n };
      expectErrno(() => p.ioctl(fd, IOMMU_IOAS_NOIOMMU_GET_PA, arg), 'EOPNOTSUPP', 'ioctl');
      expect(arg.out_phys).toBe(0n);
    }
    const nobody = host.kernel.spawn({ uid: 1000, capabilities: ['CAP_DAC_OVERRIDE'] });
    const nfd = nobody.open('/dev/iommu', O_RDWR);
    expectErrno(() => nobody.ioctl(nfd, IOMMU_IOAS_NOIOMMU_GET_PA, { ioas_id: 1, iova: 0n, length: PAGE }), 'EOPNOTSUPP', 'ioctl');
  });
});

describe("the command table is 7.3's", () => {
  it('every number from IOMMUFD_CMD_BASE to 0x95 is a 7.3 command, 0x96 the live-update series\' HWPT_LU_SET_PRESERVE; 0x97 is past the table (ENOTTY)', () => {
    const names = Array.from({ length: 0x17 }, (_, i) => IOMMUFD_IOCTL_OPS.get(_IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + i))?.name);
    expect(names).toEqual([
      'IOMMU_DESTROY',
      'IOMMU_IOAS_ALLOC',
      'IOMMU_IOAS_ALLOW_IOVAS',
      'IOMMU_IOAS_COPY',
      'IOMMU_IOAS_IOVA_RANGES',
      'IOMMU_IOAS_MAP',
      'IOMMU_IOAS_UNMAP',
      'IOMMU_OPTION',
      'IOMMU_VFIO_IOAS',
      'IOMMU_HWPT_ALLOC',
      'IOMMU_GET_HW_INFO',
      'IOMMU_HWPT_SET_DIRTY_TRACKING',
      'IOMMU_HWPT_GET_DIRTY_BITMAP',
      'IOMMU_HWPT_INVALIDATE',
      'IOMMU_FAULT_QUEUE_ALLOC',
      'IOMMU_IOAS_MAP_FILE',
      'IOMMU_VIOMMU_ALLOC',
      'IOMMU_VDEVICE_ALLOC',
      'IOMMU_IOAS_CHANGE_PROCESS',
      'IOMMU_VEVENTQ_ALLOC',
      'IOMMU_HW_QUEUE_ALLOC',
      'IOMMU_IOAS_NOIOMMU_GET_PA',
      'IOMMU_HWPT_LU_SET_PRESERVE',
    ]);
    expect(IOMMUFD_IOCTL_OPS.size).toBe(0x17);
    const { p, fd } = setup();
    expectErrno(() => p.ioctl(fd, _IO(IOMMUFD_TYPE, 0x97), new Uint8Array(64)), 'ENOTTY', 'ioctl');
    // A table number is read (get_user of the size) before its type byte is compared.
    expectErrno(() => p.ioctl(fd, _IO(0x3c, 0x95), null), 'EFAULT', 'ioctl');
    expectErrno(() => p.ioctl(fd, _IO(0x3c, 0x95), new Uint8Array(40)), 'ENOTTY', 'ioctl');
  });
});
