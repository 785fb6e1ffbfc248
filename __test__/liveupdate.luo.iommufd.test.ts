// Preserving an iommufd through LUO (the iommu live-update series): IOMMU_HWPT_LU_SET_PRESERVE,
// the iommufd-v1 handler's checks at PRESERVE_FD, the frozen IOAS and its release by unpreserve.
import { describe, expect, it } from 'vitest';
import {
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  Host,
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_LU_SET_PRESERVE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_PERSISTENT,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  MAP_ANONYMOUS,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  type Process,
} from '../ts/index.js';
import { expectErrno } from './helpers.js';

const MiB = 1n << 20n;
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA;
const SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK;

function setup(cmdline = 'kho=on liveupdate=on', iommuLiveupdate = true) {
  const host = Host.boot({ memory: 1n << 30n, cmdline, devices: [{ bdf: '0000:01:00.0' }], kconfig: { IOMMU_LIVEUPDATE: iommuLiveupdate } });
  const p = host.kernel.spawn();
  const fd = p.open('/dev/iommu', O_RDWR);
  const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  const devId = p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd }).out_devid as number;
  const hwpt = p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: devId, pt_id: ioas }).out_hwpt_id as number;
  p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwpt });
  return { host, p, fd, ioas, dev, devId, hwpt };
}

function memfd(p: Process, seals = SEALS): number {
  const m = p.memfd_create('guest-ram', MFD_ALLOW_SEALING);
  p.ftruncate(m, 2n * MiB);
  if (seals) p.fcntl(m, F_ADD_SEALS, seals);
  return m;
}

const session = (p: Process, name = 's') => p.ioctl(p.open('/dev/liveupdate', O_RDWR), LIVEUPDATE_IOCTL_CREATE_SESSION, { name }).fd as number;

describe('IOMMU_HWPT_LU_SET_PRESERVE', () => {
  it('is ENOTTY without live update (no CONFIG_IOMMU_LIVEUPDATE), after the size rules', () => {
    const { p, fd, hwpt } = setup('');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 }), 'ENOTTY');
  });

  it('a kernel built without the series (plain 7.3, the oracle lab) has no 0x96 and no iommufd handler', () => {
    const { p, fd, hwpt } = setup('kho=on liveupdate=on', false);
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 }), 'ENOTTY');
    expectErrno(() => p.ioctl(session(p), LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 1n }), 'ENOENT');
  });

  it('ENOENT for an unknown id or an object that is not a paging HWPT', () => {
    const { p, fd, ioas } = setup();
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: 99, hwpt_token: 1 }), 'ENOENT');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: ioas, hwpt_token: 1 }), 'ENOENT');
  });

  it('EADDRINUSE for a token another preserved HWPT of the iommufd has; the same HWPT may mark again', () => {
    const { p, fd, ioas, devId, hwpt } = setup();
    const other = p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: devId, pt_id: ioas }).out_hwpt_id as number;
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 7 });
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 7 });
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: other, hwpt_token: 7 }), 'EADDRINUSE');
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: other, hwpt_token: 8 });
    // Another iommufd has its own tokens.
    const s = setup();
    s.p.ioctl(s.fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: s.hwpt, hwpt_token: 7 });
  });
});

describe('PRESERVE_FD of an iommufd (iommufd-v1)', () => {
  it('EBUSY for IOMMU_HWPT_LU_SET_PRESERVE once the iommufd is preserved (its HWPT set is serialised), until unpreserve', () => {
    const { p, fd, ioas, devId, hwpt } = setup();
    const other = p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: devId, pt_id: ioas }).out_hwpt_id as number;
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 });
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 's' }).fd as number;
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n });
    // Neither a new HWPT, nor the marked one again, nor a bad id after the lookup.
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: other, hwpt_token: 3 }), 'EBUSY');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 4 }), 'EBUSY');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: 99, hwpt_token: 3 }), 'ENOENT');
    p.close(s);
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: other, hwpt_token: 3 });
    // A failed PRESERVE_FD leaves it markable.
    const anon = p.mmap(null, MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: ioas, user_va: anon, length: MiB, iova: 1n << 32n });
    const t = p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 't' }).fd as number;
    expectErrno(() => p.ioctl(t, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n }), 'EINVAL');
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: other, hwpt_token: 5 });
  });

  it('freezes the IOAS of a preserved HWPT (MAP, COPY, UNMAP: EBUSY) until the session closes', () => {
    const { p, fd, ioas, hwpt } = setup();
    const m = memfd(p);
    p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: RW, ioas_id: ioas, fd: m, start: 0n, length: 2n * MiB, iova: 1n << 32n });
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 });
    const s = session(p);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token: 1n });
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n });
    const anon = p.mmap(null, MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: ioas, user_va: anon, length: MiB, iova: 1n << 33n }), 'EBUSY');
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: RW, ioas_id: ioas, fd: m, start: 0n, length: MiB, iova: 1n << 33n }), 'EBUSY');
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_COPY, { flags: RW, dst_ioas_id: ioas, src_ioas_id: ioas, length: MiB, src_iova: 1n << 32n, dst_iova: 1n << 34n }), 'EBUSY');
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 1n << 32n, length: 2n * MiB }), 'EBUSY');
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 0n, length: 0xffff_ffff_ffff_ffffn }), 'EBUSY');
    // Another IOAS of the same iommufd is not frozen.
    const free = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: free, user_va: anon, length: MiB, iova: 1n << 33n });
    p.close(s);
    p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 1n << 32n, length: 2n * MiB });
  });

  it('EINVAL for an area that is not a memfd mapped with MAP_FILE', () => {
    const { p, fd, ioas, hwpt } = setup();
    const anon = p.mmap(null, MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: ioas, user_va: anon, length: MiB, iova: 1n << 32n });
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 });
    const s = session(p);
    expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n }), 'EINVAL');
    // A failed preserve leaves the IOAS mutable.
    p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 1n << 32n, length: MiB });
  });

  it('EINVAL for a memfd not sealed SEAL|GROW|SHRINK when it was mapped (sealing later does not count)', () => {
    for (const seals of [0, F_SEAL_GROW | F_SEAL_SHRINK, F_SEAL_SEAL]) {
      const { p, fd, ioas, hwpt } = setup();
      const m = memfd(p, seals);
      p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: RW, ioas_id: ioas, fd: m, start: 0n, length: 2n * MiB, iova: 1n << 32n });
      if (!(seals & F_SEAL_SEAL)) p.fcntl(m, F_ADD_SEALS, SEALS);
      p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 });
      const s = session(p);
      p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token: 1n });
      expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n }), 'EINVAL');
    }
  });

  it('ENOENT (liveupdate_get_token_outgoing) for a sealed memfd not preserved in the same session', () => {
    const { p, fd, ioas, hwpt } = setup();
    const m = memfd(p);
    p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: RW, ioas_id: ioas, fd: m, start: 0n, length: 2n * MiB, iova: 1n << 32n });
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 });
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const a = p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 'a' }).fd as number;
    const b = p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 'b' }).fd as number;
    expectErrno(() => p.ioctl(a, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n }), 'ENOENT');
    p.ioctl(b, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token: 1n });
    expectErrno(() => p.ioctl(a, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n }), 'ENOENT');
    p.ioctl(b, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n });
  });

  it('EBUSY for a persistent iommufd (the RFC flow) with a marked HWPT: KHO hands its domains over already', () => {
    const host = Host.boot({ memory: 1n << 30n, cmdline: 'kho=on liveupdate=on', devices: [{ bdf: '0000:01:00.0' }] });
    const p = host.kernel.spawn();
    const fd = p.open('/dev/iommu', O_RDWR);
    p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET, val64: 1n });
    const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    const hwpt = p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas }).pt_id as number;
    const lu = p.open('/dev/liveupdate', O_RDWR);
    const s = p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 's' }).fd as number;
    // Without a marked HWPT it preserves (nothing of the IOMMU).
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 1n });
    p.close(s);
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 });
    const lu2 = p.ioctl(lu, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 't' }).fd as number;
    expectErrno(() => p.ioctl(lu2, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 1n }), 'EBUSY');
    // KHO's DUMP then serialises it as before (its domain's tables preserved once).
    const kho = p.open('/sys/kernel/kho/active', O_WRONLY);
    p.write(kho, '1');
    expect(host.kernel.dmesg().join('\n')).not.toMatch(/internal error/);
  });

  it('a failure injected at the iommu FLB\'s or the handler\'s preserve fails PRESERVE_FD and leaves nothing preserved (the IOAS mutable)', () => {
    for (const site of ['iommu_liveupdate_flb_preserve', 'iommufd_liveupdate_preserve']) {
      const { p, fd, ioas, hwpt } = setup();
      const m = memfd(p);
      p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: RW, ioas_id: ioas, fd: m, start: 0n, length: 2n * MiB, iova: 1n << 32n });
      p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: hwpt, hwpt_token: 1 });
      const s = session(p);
      p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd: m, token: 1n });
      const put = (path: string, v: string) => {
        const f = p.open(`/sys/kernel/debug/fail_function/${path}`, O_WRONLY);
        p.write(f, v);
        p.close(f);
      };
      put('inject', site);
      put(`${site}/retval`, '0xfffffffffffffff4'); // -ENOMEM
      put('probability', '100');
      expectErrno(() => p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n }), 'ENOMEM');
      // Nothing preserved: the IOAS is mutable, the token free, and the next try (times ran out) works.
      p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 1n << 32n, length: 2n * MiB });
      p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: RW, ioas_id: ioas, fd: m, start: 0n, length: 2n * MiB, iova: 1n << 32n });
      p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n });
      expectErrno(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 1n << 32n, length: 2n * MiB }), 'EBUSY');
    }
  });

  it('holds each preserved HWPT: its last device may leave, IOMMU_DESTROY is EBUSY, and an automatic one goes at unpreserve', () => {
    const host = Host.boot({ memory: 1n << 30n, cmdline: 'kho=on liveupdate=on', devices: [{ bdf: '0000:01:00.0' }] });
    const p = host.kernel.spawn();
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    const auto = p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas }).pt_id as number;
    p.ioctl(fd, IOMMU_HWPT_LU_SET_PRESERVE, { hwpt_id: auto, hwpt_token: 1 });
    const s = session(p);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 1n });
    // Detaching the last device used to free the preserved domain (an internal error).
    p.ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, {});
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: auto }), 'EBUSY');
    p.close(s);
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: auto }), 'ENOENT');
    // The IOAS has no domain left: it can go.
    p.ioctl(fd, IOMMU_DESTROY, { id: ioas });
    expect(host.kernel.dmesg().join('\n')).not.toMatch(/BUG/);
  });

  it('an iommufd with no preserved HWPT preserves nothing of the IOMMU', () => {
    const { p, fd, ioas } = setup();
    const anon = p.mmap(null, MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: ioas, user_va: anon, length: MiB, iova: 1n << 32n });
    const s = session(p);
    p.ioctl(s, LIVEUPDATE_SESSION_PRESERVE_FD, { fd, token: 2n });
    p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 1n << 32n, length: MiB });
    expect(p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id).toBeGreaterThan(0);
  });
});
