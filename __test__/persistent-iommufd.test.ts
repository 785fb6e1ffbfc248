// Persistent iommufds (RFC "iommufd: Support persistence across kexec", reference
// persistence-rfc.md §1.4 and §1.9, with the project's completions listed at the end of it):
// IOMMU_OPTION_PERSISTENT ids, domains that carry the id, the guestmemfs-only rule for IOAS_MAP
// (every VMA of the range) and IOAS_MAP_FILE, and per-area long-term pins on guestmemfs files that
// make unlink EBUSY. Pin counts are read from the inode in the carve-out (long_term_pins, the
// layout in the header of ts/kernel/guestmemfs/guestmemfs.ts) and cross-checked by unlink.
// A normal context keeps working with any memory and pins nothing. The last test is a VM: a 1 GiB
// guestmemfs file mapped into a persistent IOAS with 2 MiB superpages, a device doing DMA.
import { describe, expect, it } from 'vitest';
import {
  DmaFault,
  Host,
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_PERSISTENT,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_SHARED,
  O_CREAT,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  type Process,
} from 'iommu-liveupdate';
import { expectErrno } from './helpers.js';

const MiB = 1n << 20n;
const GiB = 1n << 30n;
const BLOCK = 2n * MiB;
const PAGE = 4096n;
const U64_MAX = 0xffff_ffff_ffff_ffffn;
const MNT = '/mnt/guestmemfs';
const RW = PROT_READ | PROT_WRITE;
const R = IOMMU_IOAS_MAP_READABLE;
const W = IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;
const BDF0 = '0000:01:00.0';
const BDF1 = '0000:02:00.0';
/** VT-d second-level PTE bit 7: a superpage leaf. */
const PS = 1n << 7n;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

// ---- helpers ---------------------------------------------------------------------------------------

/** A host with a guestmemfs carve-out, two VFIO devices and guestmemfs mounted by root. */
function boot(cmdline = 'guestmemfs=256M', memory = 4n * GiB) {
  const host = Host.boot({ memory, cmdline, devices: [{ bdf: BDF0 }, { bdf: BDF1 }] });
  const fs = host.kernel.guestmemfs!;
  const p = host.kernel.spawn();
  p.mount('guestmemfs', MNT);
  return { host, fs, p, sid0: host.device(BDF0).sid, sid1: host.device(BDF1).sid };
}

/** A guestmemfs file of `size` bytes, mapped shared read-write (at `at` with MAP_FIXED if given). */
function gmFile(p: Process, name: string, size: bigint, at?: bigint): { fd: number; va: bigint; path: string } {
  const path = `${MNT}/${name}`;
  const fd = p.open(path, O_CREAT | O_RDWR, 0o600);
  p.ftruncate(fd, size);
  const va = p.mmap(at ?? null, size, RW, MAP_SHARED | (at !== undefined ? MAP_FIXED : 0), fd);
  return { fd, va, path };
}

const optGet = (p: Process, fd: number) => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64 as bigint;
const optSet = (p: Process, fd: number, val64 = 1n) => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET, val64 }).val64 as bigint;
const ioasAlloc = (p: Process, fd: number) => p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;

/** An iommufd marked persistent, with one IOAS. */
function persistentCtx(p: Process): { fd: number; id: bigint; ioas: number } {
  const fd = p.open('/dev/iommu', O_RDWR);
  const id = optSet(p, fd);
  return { fd, id, ioas: ioasAlloc(p, fd) };
}

function map(p: Process, fd: number, ioas: number, user_va: bigint, length: bigint, iova?: bigint): bigint {
  return p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | (iova !== undefined ? FIXED : 0), ioas_id: ioas, user_va, length, iova: iova ?? 0n }).iova as bigint;
}

function mapFile(p: Process, fd: number, ioas: number, file: number, start: bigint, length: bigint, iova?: bigint): bigint {
  return p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: R | W | (iova !== undefined ? FIXED : 0), ioas_id: ioas, fd: file, start, length, iova: iova ?? 0n }).iova as bigint;
}

function unmap(p: Process, fd: number, ioas: number, iova: bigint, length: bigint): bigint {
  return p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova, length }).length as bigint;
}

function copy(p: Process, fd: number, dst: number, src: number, src_iova: bigint, length: bigint): bigint {
  return p.ioctl(fd, IOMMU_IOAS_COPY, { flags: R | W, dst_ioas_id: dst, src_ioas_id: src, src_iova, length, dst_iova: 0n }).dst_iova as bigint;
}

/** Binds `bdf` (vfioN) to the iommufd and attaches it to `ptId`; returns the device fd. */
function attach(p: Process, iommufd: number, n: number, ptId: number): { dfd: number; devId: number; hwpt: number } {
  const dfd = p.open(`/dev/vfio/devices/vfio${n}`, O_RDWR);
  const devId = p.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd }).out_devid as number;
  const hwpt = p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ptId }).pt_id as number;
  return { dfd, devId, hwpt };
}

/** The inode of `name` as the carve-out stores it (the long-term pin count is the u32 at 40). */
function diskInode(host: Host, name: string) {
  const fs = host.kernel.guestmemfs!;
  const sb = new DataView(host.memory.read(fs.base, 56).buffer);
  const maxInodes = sb.getUint32(32, true);
  const inodeSize = sb.getUint32(36, true);
  const table = host.memory.read(fs.base + sb.getBigUint64(40, true), maxInodes * inodeSize);
  const v = new DataView(table.buffer);
  for (let s = 0; s < maxInodes; s++) {
    const o = s * inodeSize;
    if (!(v.getUint32(o, true) & 1) || v.getUint32(o + 44, true) === 0) continue;
    const raw = table.subarray(o + 64, o + inodeSize);
    if (dec(raw.subarray(0, raw.indexOf(0))) !== name) continue;
    const nblocks = Number(v.getBigUint64(o + 32, true));
    const mapPa = fs.base + v.getBigUint64(o + 24, true) * BLOCK;
    const m = nblocks ? host.memory.read(mapPa, nblocks * 8) : new Uint8Array(0);
    const mv = new DataView(m.buffer);
    return {
      ino: v.getBigUint64(o + 8, true),
      pins: v.getUint32(o + 40, true),
      /** Physical address of each 2 MiB data block, in file order. */
      blockPas: Array.from({ length: nblocks }, (_, i) => fs.base + mv.getBigUint64(i * 8, true) * BLOCK),
    };
  }
  throw new Error(`no inode ${name} in the carve-out`);
}

const pinsOf = (host: Host, name: string) => diskInode(host, name).pins;

/** Pin counts of several files, by name. */
const pinMap = (host: Host, names: string[]) => Object.fromEntries(names.map((n) => [n, pinsOf(host, n)]));

/** unlink agrees with the pin count: EBUSY while pinned (nothing changes), success at zero. */
function expectUnlinkBusy(p: Process, path: string): void {
  expectErrno(() => p.unlink(path), 'EBUSY', 'unlink', path);
  expect(p.stat(path).st_nlink).toBe(1);
}

// ---- IOMMU_OPTION_PERSISTENT -----------------------------------------------------------------------

describe('IOMMU_OPTION_PERSISTENT', () => {
  it('is 2; GET is 0 until SET; SET takes the lowest free global id from 1 and returns it in val64', () => {
    expect(IOMMU_OPTION_PERSISTENT).toBe(2);
    const { host, p } = boot();
    const q = host.kernel.spawn();
    const a = p.open('/dev/iommu', O_RDWR);
    expect(optGet(p, a)).toBe(0n);
    expect(optSet(p, a)).toBe(1n);
    expect(optGet(p, a)).toBe(1n);
    // Ids are global: another process's context gets the next one.
    const b = q.open('/dev/iommu', O_RDWR);
    expect(optGet(q, b)).toBe(0n);
    expect(optSet(q, b)).toBe(2n);
    // SET ignores val64: any SET marks the context.
    const c = p.open('/dev/iommu', O_RDWR);
    expect(optSet(p, c, 0n)).toBe(3n);
    expect(optGet(p, c)).toBe(3n);
    // A second SET of a persistent context returns its id, it does not take another.
    expect(optSet(q, b, 77n)).toBe(2n);
    expect(optGet(q, b)).toBe(2n);
    expect([...host.kernel.persistentIommufds.keys()].sort()).toEqual([1, 2, 3]);
    // Closing releases the id; the lowest free one is handed out next.
    p.close(a);
    expect([...host.kernel.persistentIommufds.keys()].sort()).toEqual([2, 3]);
    const d = p.open('/dev/iommu', O_RDWR);
    expect(optSet(p, d)).toBe(1n);
    q.close(b);
    p.close(c);
    const e = q.open('/dev/iommu', O_RDWR);
    expect(optSet(q, e)).toBe(2n);
    const f = q.open('/dev/iommu', O_RDWR);
    expect(optSet(q, f)).toBe(3n);
    // Process exit closes its fds: its ids come back.
    q.exit();
    const g = p.open('/dev/iommu', O_RDWR);
    expect(optSet(p, g)).toBe(2n);
    expect([...host.kernel.persistentIommufds.keys()].sort()).toEqual([1, 2]);
  });

  it('SET on a context that owns objects fails with EFAULT, logs it, and leaves it non-persistent', () => {
    const { host, p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas = ioasAlloc(p, fd);
    expectErrno(() => optSet(p, fd), 'EFAULT', 'ioctl', 'IOMMU_OPTION');
    expect(host.kernel.dmesg().some((l) => l.includes('iommufd can only be marked persistented when unused'))).toBe(true);
    expect(optGet(p, fd)).toBe(0n);
    // No id was consumed.
    const other = p.open('/dev/iommu', O_RDWR);
    expect(optSet(p, other)).toBe(1n);
    // A bound device is an object too.
    const dfd = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    const withDev = p.open('/dev/iommu', O_RDWR);
    p.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: withDev });
    expectErrno(() => optSet(p, withDev), 'EFAULT');
    expect(optGet(p, withDev)).toBe(0n);
    // Once the context is empty again, it can be marked.
    p.ioctl(fd, IOMMU_DESTROY, { id: ioas });
    expect(optSet(p, fd)).toBe(2n);
  });

  it('other ops are EOPNOTSUPP; __reserved must be zero', () => {
    const { p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    expectErrno(() => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: 2 }), 'EOPNOTSUPP');
    expectErrno(() => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET, __reserved: 1 }), 'EOPNOTSUPP');
    expect(optGet(p, fd)).toBe(0n);
  });

  it('the id is released when the context really goes: a bound device keeps it alive past close(iommufd)', () => {
    const { host, p } = boot();
    const ctx = persistentCtx(p);
    expect(ctx.id).toBe(1n);
    const { dfd } = attach(p, ctx.fd, 0, ctx.ioas);
    p.close(ctx.fd);
    expect(host.kernel.persistentIommufds.has(1)).toBe(true);
    const next = p.open('/dev/iommu', O_RDWR);
    expect(optSet(p, next)).toBe(2n);
    p.close(dfd); // unbind: the last reference to the context
    expect(host.kernel.persistentIommufds.has(1)).toBe(false);
    const again = p.open('/dev/iommu', O_RDWR);
    expect(optSet(p, again)).toBe(1n);
  });
});

// ---- domains ---------------------------------------------------------------------------------------

describe('domains of a persistent context', () => {
  it('carry its persistent id (auto domains and HWPT_ALLOC); a normal context\'s carry 0', () => {
    const { host, p, sid0, sid1 } = boot();
    const a = persistentCtx(p);
    expect(a.id).toBe(1n);
    const devA = attach(p, a.fd, 0, a.ioas);
    const auto = host.kernel.intel.domainOf(sid0)!;
    expect(auto.persistentId).toBe(1);
    // An explicitly allocated HWPT of the same context.
    const hwpt = p.ioctl(a.fd, IOMMU_HWPT_ALLOC, { dev_id: devA.devId, pt_id: a.ioas }).out_hwpt_id as number;
    p.ioctl(devA.dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hwpt });
    const explicit = host.kernel.intel.domainOf(sid0)!;
    expect(explicit).not.toBe(auto);
    expect(explicit.persistentId).toBe(1);
    // A second persistent context: its own id on its domains.
    const b = persistentCtx(p);
    expect(b.id).toBe(2n);
    const devB = attach(p, b.fd, 1, b.ioas);
    expect(host.kernel.intel.domainOf(sid1)!.persistentId).toBe(2);
    // The same device in a normal context afterwards.
    p.close(devB.dfd);
    p.close(b.fd);
    const n = p.open('/dev/iommu', O_RDWR);
    attach(p, n, 1, ioasAlloc(p, n));
    expect(host.kernel.intel.domainOf(sid1)!.persistentId).toBe(0);
    expect(host.kernel.intel.domainOf(sid0)!.persistentId).toBe(1);
  });
});

// ---- IOAS_MAP / IOAS_MAP_FILE in a persistent context ---------------------------------------------

describe('IOAS_MAP in a persistent context maps guestmemfs memory only', () => {
  it('a guestmemfs mapping maps (and DMA sees it); anonymous memory and a memfd mapping are EFAULT', () => {
    const { host, p } = boot();
    const ctx = persistentCtx(p);
    attach(p, ctx.fd, 0, ctx.ioas);
    const f = gmFile(p, 'ram', 4n * MiB);
    p.memWrite(f.va + 5n, enc('guestmemfs'));
    const iova = map(p, ctx.fd, ctx.ioas, f.va, 4n * MiB);
    expect(dec(host.device(BDF0).dma.read(iova + 5n, 10))).toBe('guestmemfs');
    const pinned = host.kernel.pinnedPages();
    const anon = p.mmap(null, BLOCK, RW, MAP_SHARED | MAP_ANONYMOUS);
    p.memWrite(anon, enc('anon'));
    expectErrno(() => map(p, ctx.fd, ctx.ioas, anon, BLOCK), 'EFAULT', 'ioctl', 'IOMMU_IOAS_MAP');
    const mfd = p.memfd_create('guest');
    p.ftruncate(mfd, BLOCK);
    const mva = p.mmap(null, BLOCK, RW, MAP_SHARED, mfd);
    p.memWrite(mva, enc('memfd'));
    expectErrno(() => map(p, ctx.fd, ctx.ioas, mva, BLOCK), 'EFAULT');
    // Nothing unmapped: EFAULT too.
    expectErrno(() => map(p, ctx.fd, ctx.ioas, 0x1000_0000n, BLOCK), 'EFAULT');
    expect(host.kernel.pinnedPages()).toBe(pinned);
    // Only the first area exists.
    expect(unmap(p, ctx.fd, ctx.ioas, 0n, U64_MAX)).toBe(4n * MiB);
  });

  it('every VMA of [user_va, user_va + length) must be guestmemfs: a guestmemfs VMA then an anonymous one, a hole, or a start in a hole is EFAULT', () => {
    const { host, p } = boot();
    const ctx = persistentCtx(p);
    attach(p, ctx.fd, 0, ctx.ioas);
    // X: A (gm) | X+2M: anonymous | X+4M: B (gm) | X+6M: hole | X+8M: C (gm) | X+10M: D (gm)
    const X = 0x10_0000_0000n;
    gmFile(p, 'A', BLOCK, X);
    p.mmap(X + 2n * MiB, BLOCK, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
    gmFile(p, 'B', BLOCK, X + 4n * MiB);
    gmFile(p, 'C', BLOCK, X + 8n * MiB);
    gmFile(p, 'D', BLOCK, X + 10n * MiB);
    for (const o of [0n, 2n, 4n, 8n, 10n]) p.memWrite(X + o * MiB, enc(`at+${o}M`));
    const names = ['A', 'B', 'C', 'D'];
    const pinned = host.kernel.pinnedPages();
    const bad: [bigint, bigint, string][] = [
      [X, 4n * MiB, 'guestmemfs, then anonymous'],
      [X + MiB, 2n * MiB, 'the second half of A and the first of the anonymous VMA'],
      [X + 2n * MiB, 2n * MiB, 'anonymous only'],
      [X + 2n * MiB, 4n * MiB, 'anonymous, then guestmemfs'],
      [X + 4n * MiB, 4n * MiB, 'B, then a hole'],
      [X + 4n * MiB, 6n * MiB, 'B, a hole, C'],
      [X + 6n * MiB, 4n * MiB, 'a hole, then C'],
      [X + 10n * MiB, 4n * MiB, 'D, then past the end of everything'],
      [X, 12n * MiB, 'the whole layout'],
    ];
    for (const [va, len, what] of bad) {
      expectErrno(() => map(p, ctx.fd, ctx.ioas, va, len), 'EFAULT', 'ioctl', 'IOMMU_IOAS_MAP');
      // ... and changes nothing: no area, no pin, no file pin.
      expect(host.kernel.pinnedPages(), what).toBe(pinned);
      expect(pinMap(host, names), what).toEqual({ A: 0, B: 0, C: 0, D: 0 });
    }
    expect(unmap(p, ctx.fd, ctx.ioas, 0n, U64_MAX)).toBe(0n);
    // Two adjacent guestmemfs VMAs (two files) in one range: fine, and both files are pinned.
    const iova = map(p, ctx.fd, ctx.ioas, X + 8n * MiB, 4n * MiB);
    expect(pinMap(host, names)).toEqual({ A: 0, B: 0, C: 1, D: 1 });
    expect(dec(host.device(BDF0).dma.read(iova, 5))).toBe('at+8M');
    expect(dec(host.device(BDF0).dma.read(iova + BLOCK, 6))).toBe('at+10M');
    // A part of one VMA is fine too.
    map(p, ctx.fd, ctx.ioas, X + MiB, MiB);
    expect(pinsOf(host, 'A')).toBe(1);
  });

  it('IOAS_MAP_FILE: a guestmemfs fd maps and pins; a memfd is EFAULT (and maps in a normal context)', () => {
    const { host, p } = boot();
    const ctx = persistentCtx(p);
    attach(p, ctx.fd, 0, ctx.ioas);
    const f = gmFile(p, 'ram', 4n * MiB);
    p.memWrite(f.va + BLOCK, enc('second block'));
    const iova = mapFile(p, ctx.fd, ctx.ioas, f.fd, BLOCK, BLOCK);
    expect(dec(host.device(BDF0).dma.read(iova, 12))).toBe('second block');
    expect(pinsOf(host, 'ram')).toBe(1);
    expectUnlinkBusy(p, f.path);
    const mfd = p.memfd_create('guest');
    p.ftruncate(mfd, BLOCK);
    expectErrno(() => mapFile(p, ctx.fd, ctx.ioas, mfd, 0n, BLOCK), 'EFAULT', 'ioctl', 'IOMMU_IOAS_MAP_FILE');
    // The same memfd in a normal context.
    const normal = p.open('/dev/iommu', O_RDWR);
    const nioas = ioasAlloc(p, normal);
    attach(p, normal, 1, nioas);
    p.write(mfd, enc('memfd bytes'));
    const niova = mapFile(p, normal, nioas, mfd, 0n, BLOCK);
    expect(dec(host.device(BDF1).dma.read(niova, 11))).toBe('memfd bytes');
    // Unmapping the file area unpins the file.
    expect(unmap(p, ctx.fd, ctx.ioas, iova, BLOCK)).toBe(BLOCK);
    expect(pinsOf(host, 'ram')).toBe(0);
    p.unlink(f.path);
  });
});

// ---- long-term pins --------------------------------------------------------------------------------

describe('guestmemfs pins are per mapped area', () => {
  it('two files in one IOAS, a second area of one, COPY, unmap, IOAS destroy and close keep exact counts', () => {
    const { host, fs, p } = boot();
    const ctx = persistentCtx(p);
    attach(p, ctx.fd, 0, ctx.ioas);
    const a = gmFile(p, 'a', 4n * MiB);
    const b = gmFile(p, 'b', 4n * MiB);
    const c = gmFile(p, 'c', BLOCK);
    const names = ['a', 'b', 'c'];
    const pins = () => pinMap(host, names);
    expect(pins()).toEqual({ a: 0, b: 0, c: 0 });

    // a and b at adjacent IOVAs, so that one COPY can span both areas.
    const ia = 0x1_0000_0000n;
    const ib = ia + 4n * MiB;
    map(p, ctx.fd, ctx.ioas, a.va, 4n * MiB, ia);
    expect(pins()).toEqual({ a: 1, b: 0, c: 0 });
    map(p, ctx.fd, ctx.ioas, b.va, 4n * MiB, ib);
    expect(pins()).toEqual({ a: 1, b: 1, c: 0 });
    // A second area of a (a part of it) is a second pin.
    const ia2 = map(p, ctx.fd, ctx.ioas, a.va + BLOCK, BLOCK);
    expect(pins()).toEqual({ a: 2, b: 1, c: 0 });
    // MAP_FILE pins too.
    const ic = mapFile(p, ctx.fd, ctx.ioas, c.fd, 0n, BLOCK);
    expect(pins()).toEqual({ a: 2, b: 1, c: 1 });
    for (const f of [a, b, c]) expectUnlinkBusy(p, f.path);
    // A failed MAP (the fixed IOVA is taken) changes no count.
    expectErrno(() => map(p, ctx.fd, ctx.ioas, b.va, BLOCK, ia), 'EEXIST');
    expect(pins()).toEqual({ a: 2, b: 1, c: 1 });

    // COPY into a second IOAS: one pin per new area.
    const ioas2 = ioasAlloc(p, ctx.fd);
    copy(p, ctx.fd, ioas2, ctx.ioas, ib, 4n * MiB);
    expect(pins()).toEqual({ a: 2, b: 2, c: 1 });
    const cc = copy(p, ctx.fd, ioas2, ctx.ioas, ic, BLOCK);
    expect(pins()).toEqual({ a: 2, b: 2, c: 2 });
    // A COPY whose range spans two areas makes two areas: one pin each.
    copy(p, ctx.fd, ioas2, ctx.ioas, ia, 8n * MiB);
    expect(pins()).toEqual({ a: 3, b: 3, c: 2 });
    // A failed COPY (the source range is not fully mapped) changes nothing.
    expectErrno(() => copy(p, ctx.fd, ioas2, ctx.ioas, ia, 9n * MiB), 'ENOENT');
    expect(pins()).toEqual({ a: 3, b: 3, c: 2 });

    // Unmap drops exactly the pins of the areas it removes.
    expect(unmap(p, ctx.fd, ctx.ioas, ia2, BLOCK)).toBe(BLOCK);
    expect(pins()).toEqual({ a: 2, b: 3, c: 2 });
    expect(unmap(p, ctx.fd, ioas2, cc, BLOCK)).toBe(BLOCK);
    expect(pins()).toEqual({ a: 2, b: 3, c: 1 });
    // Shrinking a pinned file is EBUSY; growing it is fine.
    expectErrno(() => p.ftruncate(c.fd, 0n), 'EBUSY', 'ftruncate');
    expect(p.stat(c.path).st_size).toBe(BLOCK);
    p.ftruncate(c.fd, 4n * MiB);
    expect(p.stat(c.path).st_size).toBe(4n * MiB);
    expect(unmap(p, ctx.fd, ctx.ioas, ic, BLOCK)).toBe(BLOCK);
    expect(pins()).toEqual({ a: 2, b: 3, c: 0 });
    p.ftruncate(c.fd, BLOCK);
    p.unlink(c.path);
    expect(pinMap(host, ['a', 'b'])).toEqual({ a: 2, b: 3 });

    // Destroying the second IOAS drops the pins of its areas (the three COPY areas) and nothing else.
    p.ioctl(ctx.fd, IOMMU_DESTROY, { id: ioas2 });
    expect(pinMap(host, ['a', 'b'])).toEqual({ a: 1, b: 1 });
    expectUnlinkBusy(p, a.path);

    // Closing the iommufd (and the device that holds it) drops the rest.
    p.close(ctx.fd);
    expect(pinMap(host, ['a', 'b'])).toEqual({ a: 1, b: 1 }); // the bound device keeps the context
    p.exit();
    const q = host.kernel.spawn();
    expect(pinMap(host, ['a', 'b'])).toEqual({ a: 0, b: 0 });
    expect(host.kernel.pinnedPages()).toBe(0);
    q.unlink(a.path);
    q.unlink(b.path);
    // Every block is free again (c, unlinked earlier, went with the process's last fd and mapping).
    expect(fs.freeBlocks()).toBe(fs.nblocks - 1);
  });

  it('pins are taken with the area even before a device is attached, and dropped by close of the iommufd', () => {
    const { host, p } = boot();
    const ctx = persistentCtx(p);
    const f = gmFile(p, 'f', 4n * MiB);
    map(p, ctx.fd, ctx.ioas, f.va, 4n * MiB);
    map(p, ctx.fd, ctx.ioas, f.va, BLOCK);
    expect(pinsOf(host, 'f')).toBe(2);
    expect(host.kernel.pinnedPages()).toBe(0); // no domain: nothing pinned in memory yet
    expectUnlinkBusy(p, f.path);
    p.close(ctx.fd);
    expect(pinsOf(host, 'f')).toBe(0);
    p.unlink(f.path);
  });

  it('a pin keeps an unlinked file\'s blocks until its area goes; UNMAP then succeeds and frees them', () => {
    const { host, fs, p } = boot('guestmemfs=16M', 1n * GiB);
    const ctx = persistentCtx(p);
    attach(p, ctx.fd, 0, ctx.ioas);
    const f = gmFile(p, 'f', BLOCK);
    p.memWrite(f.va, enc('pinned data'));
    p.unlink(f.path); // still open and mapped: the mapping can still be handed to iommufd
    const iova = map(p, ctx.fd, ctx.ioas, f.va, BLOCK);
    const free = fs.freeBlocks();
    p.munmap(f.va, BLOCK);
    p.close(f.fd);
    expect(fs.freeBlocks()).toBe(free);
    const size = BigInt(fs.freeBlocks() - 1) * BLOCK;
    const g = gmFile(p, 'g', size);
    for (let off = 0n; off < size; off += BLOCK) p.memWrite(g.va + off, enc('other file!'));
    expect(dec(host.device(BDF0).dma.read(iova, 11))).toBe('pinned data');
    expect(fs.freeBlocks()).toBe(0);
    expect(unmap(p, ctx.fd, ctx.ioas, iova, BLOCK)).toBe(BLOCK);
    // Now f's data block and map block go.
    expect(fs.freeBlocks()).toBe(2);
  });

  it('a COPY of a sub-range pins only the file its new area maps', () => {
    const { host, p } = boot();
    const ctx = persistentCtx(p);
    const X = 0x10_0000_0000n;
    gmFile(p, 'a', BLOCK, X);
    const b = gmFile(p, 'b', BLOCK, X + BLOCK);
    // One MAP over two files: one area that maps both.
    const iova = map(p, ctx.fd, ctx.ioas, X, 4n * MiB);
    expect(pinMap(host, ['a', 'b'])).toEqual({ a: 1, b: 1 });
    // COPY only the part of a.
    const ioas2 = ioasAlloc(p, ctx.fd);
    copy(p, ctx.fd, ioas2, ctx.ioas, iova, BLOCK);
    expect(pinMap(host, ['a', 'b'])).toEqual({ a: 2, b: 1 });
    // The original area goes: b is no longer mapped anywhere.
    expect(unmap(p, ctx.fd, ctx.ioas, iova, 4n * MiB)).toBe(4n * MiB);
    expect(pinMap(host, ['a', 'b'])).toEqual({ a: 1, b: 0 });
    p.unlink(b.path);
  });
});

// ---- a normal context ------------------------------------------------------------------------------

describe('a non-persistent context', () => {
  it('maps anonymous memory, memfds and guestmemfs alike, and pins no file: unlink works while mapped', () => {
    const { host, p, sid0 } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas = ioasAlloc(p, fd);
    attach(p, fd, 0, ioas);
    expect(optGet(p, fd)).toBe(0n);
    expect(host.kernel.intel.domainOf(sid0)!.persistentId).toBe(0);
    const dma = host.device(BDF0).dma;
    const anon = p.mmap(null, BLOCK, RW, MAP_SHARED | MAP_ANONYMOUS);
    p.memWrite(anon, enc('anon'));
    expect(dec(dma.read(map(p, fd, ioas, anon, BLOCK), 4))).toBe('anon');
    const mfd = p.memfd_create('m');
    p.ftruncate(mfd, BLOCK);
    const mva = p.mmap(null, BLOCK, RW, MAP_SHARED, mfd);
    p.memWrite(mva, enc('memfd'));
    expect(dec(dma.read(map(p, fd, ioas, mva, BLOCK), 5))).toBe('memfd');
    expect(dec(dma.read(mapFile(p, fd, ioas, mfd, 0n, BLOCK), 5))).toBe('memfd');
    const f = gmFile(p, 'f', 4n * MiB);
    p.memWrite(f.va, enc('guestmemfs'));
    const gi = map(p, fd, ioas, f.va, 4n * MiB);
    expect(dec(dma.read(gi, 10))).toBe('guestmemfs');
    expect(dec(dma.read(mapFile(p, fd, ioas, f.fd, 0n, BLOCK), 10))).toBe('guestmemfs');
    // A range mixing guestmemfs and anonymous memory is fine here.
    const X = 0x10_0000_0000n;
    gmFile(p, 'g', BLOCK, X);
    p.mmap(X + BLOCK, BLOCK, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
    p.memWrite(X + BLOCK, enc('mixed'));
    expect(dec(dma.read(map(p, fd, ioas, X, 4n * MiB) + BLOCK, 5))).toBe('mixed');
    expect(pinMap(host, ['f', 'g'])).toEqual({ f: 0, g: 0 });
    // Device writes land in the file.
    dma.write(gi + 100n, enc('from device'));
    expect(dec(p.memRead(f.va + 100n, 11))).toBe('from device');
    p.unlink(f.path);
    p.unlink(`${MNT}/g`);
    expectErrno(() => p.stat(f.path), 'ENOENT', 'stat');
    // The mapping still works (the process still maps the file).
    expect(dec(dma.read(gi, 10))).toBe('guestmemfs');
  });

  it('blocks a normal context has mapped stay allocated after unlink, munmap and close, until the unmap', () => {
    const { host, fs, p } = boot('guestmemfs=16M', 1n * GiB);
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas = ioasAlloc(p, fd);
    attach(p, fd, 0, ioas);
    const f = gmFile(p, 'f', BLOCK);
    p.memWrite(f.va, enc('old file'));
    const iova = map(p, fd, ioas, f.va, BLOCK);
    const free = fs.freeBlocks();
    p.unlink(f.path);
    p.munmap(f.va, BLOCK);
    p.close(f.fd);
    // The data block is still DMA-mapped: it must not be free yet (the map block may be).
    expect(fs.freeBlocks()).toBeLessThanOrEqual(free + 1);
    const g = gmFile(p, 'g', BigInt(fs.freeBlocks() - 1) * BLOCK);
    p.memWrite(g.va, enc('new file'));
    expect(dec(host.device(BDF0).dma.read(iova, 8))).toBe('old file');
    expect(unmap(p, fd, ioas, iova, BLOCK)).toBe(BLOCK);
  });

  it('shrinking a file does not hand out blocks a normal context still maps', () => {
    const { host, fs, p } = boot('guestmemfs=16M', 1n * GiB);
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas = ioasAlloc(p, fd);
    attach(p, fd, 0, ioas);
    const f = gmFile(p, 'f', 4n * MiB);
    p.memWrite(f.va + BLOCK, enc('old bytes'));
    const iova = map(p, fd, ioas, f.va, 4n * MiB);
    p.munmap(f.va, 4n * MiB);
    p.ftruncate(f.fd, BLOCK);
    // Another file takes every free block.
    const size = BigInt(fs.freeBlocks() - 1) * BLOCK;
    const g = gmFile(p, 'g', size);
    for (let off = 0n; off < size; off += BLOCK) p.memWrite(g.va + off, enc('new bytes'));
    expect(dec(host.device(BDF0).dma.read(iova + BLOCK, 9))).toBe('old bytes');
  });
});

// ---- a VM --------------------------------------------------------------------------------------------

describe('a VM on guestmemfs with a persistent iommufd', () => {
  it('1 GiB of guest RAM mapped with 2 MiB superpages; the device and the process see each other\'s writes', () => {
    const { host, fs, p, sid0 } = boot('guestmemfs=2G', 8n * GiB);
    const RAM = 1n * GiB;
    const ram = gmFile(p, 'guest-ram', RAM);
    expect(fs.freeBlocks()).toBe(1024 - 1 - 512 - 1);
    const ctx = persistentCtx(p);
    expect(ctx.id).toBe(1n);
    // Map first (lazy), then attach: the attach fills the domain.
    const iova = map(p, ctx.fd, ctx.ioas, ram.va, RAM);
    expect(iova % BLOCK).toBe(0n);
    const { hwpt } = attach(p, ctx.fd, 0, ctx.ioas);
    expect(hwpt).toBeGreaterThan(0);
    const domain = host.kernel.intel.domainOf(sid0)!;
    expect(domain.persistentId).toBe(1);
    expect(host.kernel.pinnedPages()).toBe(Number(RAM / PAGE));
    expect(pinsOf(host, 'guest-ram')).toBe(1);

    const { blockPas } = diskInode(host, 'guest-ram');
    expect(blockPas.length).toBe(512);
    const dma = host.device(BDF0).dma;
    for (const [k, off] of [0n, 4095n, BLOCK - 4n, 300n * MiB + 12345n, 777n * MiB, RAM - 16n].entries()) {
      // The IOMMU translates to where the block map (in the carve-out) says the byte is.
      const pa = blockPas[Number(off / BLOCK)]! + (off % BLOCK);
      expect(domain.iovaToPhys(iova + off)).toBe(pa);
      expect(pa >= fs.base && pa < fs.base + BigInt(fs.nblocks) * BLOCK).toBe(true);
      // Process → device.
      const fromGuest = enc(`guest-${k}-`.padEnd(16, '.'));
      p.memWrite(ram.va + off, fromGuest);
      expect(dma.read(iova + off, 16)).toEqual(fromGuest);
      expect(host.memory.read(pa, 16)).toEqual(fromGuest);
      // Device → process.
      const fromDev = enc(`dev-${k}-`.padEnd(16, '#'));
      dma.write(iova + off, fromDev);
      expect(p.memRead(ram.va + off, 16)).toEqual(fromDev);
    }
    // 2 MiB superpages: every walk ends at level 2 on a PS leaf pointing at the block.
    for (let i = 0; i < 512; i += 37) {
      const steps = domain.pt.walk(iova + BigInt(i) * BLOCK);
      const leaf = steps[steps.length - 1]!;
      expect(leaf.level).toBe(2);
      expect(leaf.pte & PS).toBe(PS);
      expect(leaf.pte & 3n).toBe(3n); // R | W
      expect(leaf.pte & 0x000f_ffff_ffe0_0000n).toBe(blockPas[i]);
    }
    // Outside the mapping the device faults.
    expect(() => dma.read(iova + RAM, 1)).toThrow(DmaFault);
    // The guest RAM file cannot go while it is mapped for persistent DMA, nor shrink.
    expectUnlinkBusy(p, ram.path);
    expectErrno(() => p.ftruncate(ram.fd, RAM / 2n), 'EBUSY', 'ftruncate');
    // Teardown: unmap, and everything is back.
    expect(unmap(p, ctx.fd, ctx.ioas, iova, RAM)).toBe(RAM);
    expect(pinsOf(host, 'guest-ram')).toBe(0);
    expect(host.kernel.pinnedPages()).toBe(0);
    expect(() => dma.read(iova, 1)).toThrow(DmaFault);
    p.munmap(ram.va, RAM);
    p.close(ram.fd);
    p.unlink(ram.path);
    expect(fs.freeBlocks()).toBe(1023);
  });
});
