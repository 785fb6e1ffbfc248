// Tearing down a frozen persistent context while KHO is active: what was serialised stays for the
// next kernel (fuzzer finds frozen-domain-teardown-crash and frozen-file-freed).
import { describe, expect, it } from 'vitest';
import * as L from 'iommu-liveupdate';

const { Host, O_RDWR, O_CREAT, O_WRONLY } = L;
const RW = L.IOMMU_IOAS_MAP_READABLE | L.IOMMU_IOAS_MAP_WRITEABLE;

function vm() {
  const host = Host.boot({ memory: 8n << 30n, cmdline: 'guestmemfs=64M', devices: [{ bdf: '0000:01:00.0' }] });
  const p = host.kernel.spawn();
  p.mount('guestmemfs', '/mnt/g');
  // The devices first: the one MAP (at an IOVA the kernel picks) then pins at once.
  const v = L.createPersistentVm(p, { ram: 4n << 20n, file: '/mnt/g/ram', attachFirst: true, maps: [{}] });
  const { iommufd: fd, ioasId: ioas } = v;
  // A one-page COPY next to the 2 MiB leaves gives the domain a 4 KiB table of its own.
  p.ioctl(fd, L.IOMMU_IOAS_COPY, { flags: RW, src_ioas_id: ioas, dst_ioas_id: ioas, src_iova: v.iovas[0]! + 4096n, length: 4096n });
  return { host, p, g: v.ram.fd, fd, dev: v.devices[0]!.fd, ioas };
}

describe('a frozen persistent context torn down while KHO is active', () => {
  it('closing its device and iommufd neither throws nor frees a preserved table page', () => {
    const { host, p, fd, dev } = vm();
    p.write(p.open('/sys/kernel/kho/active', O_WRONLY), '1');
    const preserved = host.memory.preserved().length;
    expect(() => p.close(dev)).not.toThrow();
    expect(() => p.close(fd)).not.toThrow();
    expect(host.memory.preserved().length).toBe(preserved);
    expect(() => p.exit()).not.toThrow();
    expect(() => host.kexec()).not.toThrow();
    expect(host.kernel.spawn().open('/dev/iommu', O_RDWR)).toBe(3);
  });

  it('an unlinked file whose last pin goes while serialised is freed at ABORT, not before', () => {
    const { host, p, fd, dev, ioas } = vm();
    const f = p.open('/mnt/g/scratch', O_RDWR | O_CREAT, 0o600);
    p.ftruncate(f, 2n << 20n);
    p.unlink('/mnt/g/scratch'); // unlinked, still open: MAP_FILE pins it
    p.ioctl(fd, L.IOMMU_IOAS_MAP_FILE, { flags: RW, ioas_id: ioas, fd: f, start: 0n, length: 2n << 20n });
    p.close(f);
    p.write(p.open('/sys/kernel/kho/active', O_WRONLY), '1');
    const free = host.kernel.guestmemfs!.freeBlocks();
    p.close(dev);
    p.close(fd);
    p.exit();
    expect(host.kernel.guestmemfs!.freeBlocks()).toBe(free);
    const q = host.kernel.spawn();
    q.write(q.open('/sys/kernel/kho/active', O_WRONLY), '0');
    expect(host.kernel.guestmemfs!.freeBlocks()).toBeGreaterThan(free);
  });
});
