// Pin and area bookkeeping in the native core (crates/iopt via ts/kernel/pins.ts), end to end:
// pin counts per page across areas, COPY sharing pages, frames that outlive their mapping while
// pinned ("pinned frames stay put"), a memfd truncated under a pin, and nothing left behind.
import { describe, expect, it } from 'vitest';
import {
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
} from 'iommu-liveupdate';

const PAGE = 4096n;
const MIB2 = 2n << 20n;
const FLAGS = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/** A host with one device attached to one IOAS, so every MAP pins. */
function world() {
  const host = Host.boot({ memory: 1n << 30n, seed: 7n, devices: [{ bdf: '0000:01:00.0' }] });
  const p = host.kernel.spawn();
  const fd = p.open('/dev/iommu', O_RDWR);
  const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { flags: 0, iommufd: fd });
  const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
  p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { flags: 0, pt_id: ioas });
  const map = (user_va: bigint, length: bigint, iova: bigint) => p.ioctl(fd, IOMMU_IOAS_MAP, { flags: FLAGS, ioas_id: ioas, user_va, length, iova });
  const unmap = (iova: bigint, length: bigint) => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova, length }).length;
  const dom = host.kernel.intel.domainOf(host.devices[0]!.sid)!;
  // Frames allocated besides the domain's page-table pages (which come and go with mappings).
  const frames = () => host.memory.stats().framesAllocated - dom.pt.tablePages().length;
  return { host, p, fd, ioas, map, unmap, frames, dma: host.device('0000:01:00.0').dma };
}

describe('pin and area bookkeeping', () => {
  it('counts pins per page across areas and COPY, keeps pinned frames after munmap, and frees everything at the end', () => {
    const w = world();
    const { p } = w;
    const frames0 = w.frames();
    // Two 2 MiB folios and three 4 KiB pages.
    const len = 2n * MIB2 + 3n * PAGE;
    const va = p.mmap(null, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    const tail = va + 2n * MIB2 + PAGE;
    p.memWrite(tail, Uint8Array.of(0xab));
    p.memWrite(va + MIB2 + 5n * PAGE, Uint8Array.of(0xcd));

    const A = 1n << 30n;
    w.map(va, len, A);
    expect([p.pinCount(va), p.pinCount(tail), w.host.kernel.pinnedPages()]).toEqual([1, 1, 1027]);
    // A second MAP is a second iopt_pages: its pages count twice.
    const B = 2n << 30n;
    w.map(va + MIB2 / 2n, MIB2, B);
    expect([p.pinCount(va), p.pinCount(va + MIB2 / 2n), p.pinCount(va + MIB2 / 2n + MIB2 - PAGE), p.pinCount(va + MIB2 / 2n + MIB2)]).toEqual([1, 2, 2, 1]);
    // COPY shares A's pages: no new pin.
    const C = 3n << 30n;
    p.ioctl(w.fd, IOMMU_IOAS_COPY, { flags: FLAGS, dst_ioas_id: w.ioas, src_ioas_id: w.ioas, length: MIB2 / 2n, dst_iova: C, src_iova: A + MIB2 });
    expect(w.host.kernel.pinnedPages()).toBe(1027 + 512);

    // The mapping goes; its frames stay while pinned, and DMA still sees their bytes.
    const allocated = w.frames();
    p.munmap(va, len);
    expect(w.frames()).toBe(allocated);
    expect(w.dma.read(A + 2n * MIB2 + PAGE, 1)[0]).toBe(0xab);
    expect(w.dma.read(C + 5n * PAGE, 1)[0]).toBe(0xcd);

    // A goes: COPY's window of A's pages keeps them pinned, B keeps its own.
    expect(w.unmap(A, len)).toBe(len);
    expect(w.host.kernel.pinnedPages()).toBe(512 + 256);
    expect(w.dma.read(C + 5n * PAGE, 1)[0]).toBe(0xcd);
    // The small pages of the tail were freed with A's last pin.
    expect(w.frames()).toBe(allocated - 3);

    expect(w.unmap(0n, (1n << 64n) - 1n)).toBe(MIB2 + MIB2 / 2n);
    expect(w.host.kernel.pinnedPages()).toBe(0);
    expect(w.frames()).toBe(frames0);
  });

  it('a memfd truncated under a pin keeps the pinned folio, zeroed past the end, until the last unpin', () => {
    const w = world();
    const { p } = w;
    const mfd = p.memfd_create('guest', 0);
    p.ftruncate(mfd, 2n * MIB2);
    const va = p.mmap(null, 2n * MIB2, PROT_READ | PROT_WRITE, MAP_SHARED, mfd);
    p.memWrite(va + MIB2 + 100n * PAGE, Uint8Array.of(0x5a));
    p.munmap(va, 2n * MIB2);
    const A = 1n << 30n;
    p.ioctl(w.fd, IOMMU_IOAS_MAP_FILE, { flags: FLAGS, ioas_id: w.ioas, fd: mfd, start: 0n, length: 2n * MIB2, iova: A });
    const allocated = w.frames();
    expect(w.host.kernel.pinnedPages()).toBe(1024);
    // Into the second folio: it cannot split while pinned, so its tail reads as zeros.
    p.ftruncate(mfd, MIB2 + 10n * PAGE);
    expect(w.frames()).toBe(allocated);
    expect(w.dma.read(A + MIB2 + 100n * PAGE, 1)[0]).toBe(0);
    // Down to nothing: both folios leave the file, but stay while the area pins them.
    p.ftruncate(mfd, 0n);
    expect(w.frames()).toBe(allocated);
    expect(w.unmap(A, 2n * MIB2)).toBe(2n * MIB2);
    expect(w.host.kernel.pinnedPages()).toBe(0);
    expect(w.frames()).toBe(allocated - 1024);
    p.close(mfd);
  });
});
