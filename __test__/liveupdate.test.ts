// KHO (Kexec HandOver) and kexec live update with persistent iommufds, against the rules
// and the 2024 RFC "iommufd: Support persistence across kexec" (reference persistence-rfc.md §1
// and §3.1, fdt-kho.md §3, with the project's completions at the end of persistence-rfc.md):
// /sys/kernel/kho/{active,dt}, the freeze while KHO is active, the blob's layout (checked with the
// real dtc and our decoder against the live state), preserved memory, kexec_file_load + reboot,
// the old kernel's death, a kexec without KHO, re-hydration through
// /sys/kernel/iommufd_persisted/<id>/iommufd, continuous DMA across every lifecycle phase, the
// timeline and the kernel logs of every generation.
import { describe, expect, it } from 'vitest';
import {
  Host,
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_PERSISTENT,
  LINUX_REBOOT_CMD_KEXEC,
  MAP_SHARED,
  O_CREAT,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  decodeFdt,
  fdtToDts,
  type Process,
} from 'iommu-liveupdate';
import { dtcCompile, dtcDecompile, libfdtCheck } from './fdt-tools.js';
import { needTools } from './host-tools.js';
import {
  BDF0,
  BDF1,
  FILE,
  FILE_SIZE,
  FIXED,
  GUEST_BYTES,
  GUEST_OFF,
  IOMMU_CACHE,
  IOMMU_READ,
  IOMMU_WRITE,
  IOVA_4K,
  IOVA_ANON,
  IOVA_SP,
  LEN_4K,
  LEN_ANON,
  LEN_SP,
  MNT,
  MiB,
  OFF_4K,
  PAGE,
  R,
  RO_BYTES,
  RW,
  TRAFFIC0,
  U64_MAX,
  W,
  bootVm,
  child,
  childNames,
  claim,
  dec,
  enc,
  expectDmaFault,
  khoMem,
  khoWrite,
  leU32,
  leU32s,
  leU64,
  leU64s,
  liveUpdate,
  ls,
  prop,
  propNames,
  reattach,
  readDt,
  str,
  iommuVerdict,
  type Vm,
} from './liveupdate-helpers.js';
import { expectErrno } from './helpers.js';

const GMEMFS_BLOCK = 2n * MiB;
const persistentId = (p: Process, fd: number) => Number(p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_GET }).val64);
const ranges = (p: Process, fd: number, ioas: number) => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: ioas, num_iovas: 8, allowed_iovas: [] }).allowed_iovas;
const readAttr = (p: Process, path: string) => {
  const f = p.open(path, O_RDONLY);
  try {
    return dec(p.read(f, 4096));
  } finally {
    p.close(f);
  }
};
/** The context tables the root table points at (bus → table). */
function contextTables(vm: Vm): Map<number, bigint> {
  const root = vm.host.kernel.intel.rootEntry;
  const out = new Map<number, bigint>();
  for (let bus = 0; bus < 256; bus++) {
    const re = vm.host.memory.readU64(root + 16n * BigInt(bus));
    if (re & 1n) out.set(bus, re & ~0xfffn);
  }
  return out;
}

describe('/sys/kernel/kho: activation, permissions, abort', () => {
  it('active is 0600 root (unprivileged open: EACCES); dt is 0400 and exists only while active', () => {
    const { host, p } = bootVm();
    const st = p.stat('/sys/kernel/kho/active');
    expect({ mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid }).toEqual({ mode: 0o600, uid: 0, gid: 0 });
    expect(readAttr(p, '/sys/kernel/kho/active')).toBe('0\n');
    expect(readAttr(p, '/sys/kernel/kho/dt_max')).toBe(`${10 << 20}\n`);
    expect(ls(p, '/sys/kernel/kho')).not.toContain('dt');
    expectErrno(() => p.stat('/sys/kernel/kho/dt'), 'ENOENT', 'stat');
    expectErrno(() => p.open('/sys/kernel/kho/dt', O_RDONLY), 'ENOENT', 'open');

    const u = host.kernel.spawn({ uid: 1000 });
    expectErrno(() => u.open('/sys/kernel/kho/active', O_WRONLY), 'EACCES', 'open');
    expectErrno(() => u.open('/sys/kernel/kho/active', O_RDONLY), 'EACCES', 'open');
    expectErrno(() => u.open('/sys/kernel/kho/active', O_RDWR), 'EACCES', 'open');
    expect(host.kernel.kho.active).toBe(false);

    // Neither 0 nor 1: EINVAL, nothing happens.
    const k = p.open('/sys/kernel/kho/active', O_WRONLY);
    expectErrno(() => p.write(k, '2'), 'EINVAL', 'write');
    expectErrno(() => p.write(k, 'yes'), 'EINVAL', 'write');
    expect(host.kernel.kho.active).toBe(false);
    expect(host.memory.preserved()).toEqual([]);

    expect(p.write(k, '1\n')).toBe(2);
    expect(readAttr(p, '/sys/kernel/kho/active')).toBe('1\n');
    expect(host.kernel.kho.active).toBe(true);
    const dt = p.stat('/sys/kernel/kho/dt');
    expect({ mode: dt.st_mode & 0o7777, uid: dt.st_uid, gid: dt.st_gid }).toEqual({ mode: 0o400, uid: 0, gid: 0 });
    expect(ls(p, '/sys/kernel/kho')).toContain('dt');
    expectErrno(() => u.open('/sys/kernel/kho/dt', O_RDONLY), 'EACCES', 'open');
    expectErrno(() => p.open('/sys/kernel/kho/dt', O_WRONLY), 'EACCES', 'open');
    // The blob: what sysfs shows is what sits in physical memory at blobPa.
    const blob = readDt(p);
    expect(blob.length).toBeGreaterThan(40);
    expect(new DataView(blob.buffer, blob.byteOffset).getUint32(0)).toBe(0xd00dfeed);
    expect(new DataView(blob.buffer, blob.byteOffset).getUint32(4)).toBe(blob.length);
    expect(Buffer.from(host.memory.read(host.kernel.kho.blobPa!, blob.length)).equals(Buffer.from(blob))).toBe(true);

    expect(p.write(k, '0')).toBe(1);
    expect(readAttr(p, '/sys/kernel/kho/active')).toBe('0\n');
    expect(host.kernel.kho.active).toBe(false);
    expectErrno(() => p.stat('/sys/kernel/kho/dt'), 'ENOENT', 'stat');
    expectErrno(() => p.open('/sys/kernel/kho/dt', O_RDONLY), 'ENOENT', 'open');
    expect(host.memory.preserved()).toEqual([]);
    const phases = host.timeline.map((t) => t.phase);
    expect(phases.slice(-2)).toEqual(['kho-dump', 'kho-abort']);
    p.close(k);
  });

  it('while active, guestmemfs and the persistent iommufd are frozen (EBUSY); ABORT makes everything writable again', () => {
    const vm = bootVm();
    const { host, p, fd, ioas, dev, devid, g, va, fd2 } = vm;
    const spare = p.open(`${MNT}/spare`, O_RDWR | O_CREAT, 0o600);
    const ioasB = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const ioas2 = 1; // the ordinary context's IOAS
    const extraIova = 1n << 34n;
    const mapExtra = () => p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas, user_va: va + 6n * MiB, length: 2n * MiB, iova: extraIova });
    const mapFile = () => p.ioctl(fd, IOMMU_IOAS_MAP_FILE, { flags: R | W | FIXED, ioas_id: ioasB, fd: g, start: 6n * MiB, length: 2n * MiB, iova: extraIova });
    const copy = () => p.ioctl(fd, IOMMU_IOAS_COPY, { flags: R | W | FIXED, dst_ioas_id: ioasB, src_ioas_id: ioas, src_iova: IOVA_SP, dst_iova: 0x4000_0000n, length: 2n * MiB });

    khoWrite(p, '1');
    // guestmemfs: create, truncate (grow and shrink), unlink.
    expectErrno(() => p.open(`${MNT}/new-file`, O_RDWR | O_CREAT, 0o600), 'EBUSY', 'open');
    expectErrno(() => p.ftruncate(g, FILE_SIZE + GMEMFS_BLOCK), 'EBUSY', 'ftruncate');
    expectErrno(() => p.ftruncate(spare, 2n * MiB), 'EBUSY', 'ftruncate');
    expectErrno(() => p.unlink(`${MNT}/spare`), 'EBUSY', 'unlink');
    expect(ls(p, MNT).sort()).toEqual(['guest-ram', 'spare']);
    // The persistent iommufd: MAP, MAP_FILE, UNMAP, COPY, DESTROY, HWPT_ALLOC.
    expectErrno(mapExtra, 'EBUSY', 'ioctl');
    expectErrno(mapFile, 'EBUSY', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: IOVA_4K, length: LEN_4K }), 'EBUSY', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 0n, length: U64_MAX }), 'EBUSY', 'ioctl');
    expectErrno(copy, 'EBUSY', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: ioasB }), 'EBUSY', 'ioctl');
    expectErrno(() => p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioasB }), 'EBUSY', 'ioctl');
    // VFIO attach and detach of a device bound to it.
    expectErrno(() => p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioasB }), 'EBUSY', 'ioctl');
    expectErrno(() => p.ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, {}), 'EBUSY', 'ioctl');
    // Reading is fine; the ordinary iommufd is not frozen; DMA goes on.
    expect(persistentId(p, fd)).toBe(vm.pid);
    expect(ranges(p, fd, ioas).length).toBeGreaterThan(0);
    p.ioctl(fd2, IOMMU_IOAS_UNMAP, { ioas_id: ioas2, iova: IOVA_ANON, length: LEN_ANON });
    p.ioctl(fd2, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas2, user_va: vm.anon, length: LEN_ANON, iova: IOVA_ANON });
    expect(dec(host.device(BDF1).dma.read(IOVA_ANON, 9))).toBe('anonymous');
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    // Nothing the frozen calls touched changed.
    expect(host.kernel.kho.active).toBe(true);
    expect(p.stat(FILE).st_size).toBe(FILE_SIZE);

    khoWrite(p, '0');
    expect(host.kernel.kho.active).toBe(false);
    expect(host.memory.preserved()).toEqual([]);
    const nf = p.open(`${MNT}/new-file`, O_RDWR | O_CREAT, 0o600);
    p.ftruncate(nf, 2n * MiB);
    p.ftruncate(spare, 2n * MiB);
    p.ftruncate(spare, 0n);
    p.close(spare);
    p.unlink(`${MNT}/spare`);
    p.ftruncate(g, FILE_SIZE + GMEMFS_BLOCK); // grows (shrinking a pinned file stays EBUSY)
    expect(ls(p, MNT).sort()).toEqual(['guest-ram', 'new-file']);
    mapExtra();
    expect(host.device(BDF0).dma.read(extraIova, 4)).toEqual(p.memRead(va + 6n * MiB, 4));
    mapFile();
    copy();
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: extraIova, length: 2n * MiB }).length).toBe(2n * MiB);
    const hw = p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: devid, pt_id: ioasB }).out_hwpt_id as number;
    p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: hw }); // replace
    expect(host.device(BDF0).dma.read(0x4000_0000n + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    p.ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, {});
    expect(expectDmaFault(() => host.device(BDF0).dma.read(IOVA_SP, 4)).reason).toBe(0x2);
    p.ioctl(fd, IOMMU_DESTROY, { id: hw });
    expect(p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas }).pt_id).toBeGreaterThan(0);
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: ioasB, iova: 0n, length: U64_MAX });
    p.ioctl(fd, IOMMU_DESTROY, { id: ioasB });

    // A second activation serialises the new state; ABORT again leaves nothing behind.
    khoWrite(p, '1');
    const tree = decodeFdt(readDt(p));
    expect(childNames(child(tree, `iommufd/iommufds/${vm.pid}/ioases`))).toEqual([String(ioas)]);
    khoWrite(p, '0');
    expect(host.memory.preserved()).toEqual([]);
  });
});

describe('the KHO blob', () => {
  it('decodes with dtc -I dtb -O dts (and libfdt fdt_check_full); dtc sees the RFC layout', (ctx) => {
    needTools(ctx, 'dtc', 'libfdt');
    const vm = bootVm();
    khoWrite(vm.p, '1');
    const blob = readDt(vm.p);
    const d = dtcDecompile(blob);
    expect(d.stderr).not.toMatch(/ERROR/);
    expect(d.status).toBe(0);
    const dts = d.stdout;
    expect(dts).toMatch(/^\/dts-v1\/;\n/);
    expect(dts).toContain('compatible = "kho-v1";');
    expect(dts).toContain('compatible = "iommufd-v0";');
    expect(dts).toContain('compatible = "intel-iommu-v0";');
    expect(dts).toContain('compatible = "guestmemfs-v0";');
    // The node path /iommufd/iommufds/<id>/ioases/<ioas>/<area> and the property sizes as dtc shows them.
    expect(dts).toMatch(new RegExp(`iommufds \\{\\s+${vm.pid} \\{\\s+ioases \\{\\s+${vm.ioas} \\{`));
    expect(dts).toContain(`iova-start = <0x00 0x1000000>;`); // 0x1_0000_0000 as LE u64: bytes 00 00 00 00 01 00 00 00
    expect(dts).toContain(`iova-len = <0x4000 0x00>;`); // 4 MiB: bytes 00 00 40 00 00 00 00 00
    expect(dts).toContain(`iommu-prot = <0x7000000>;`); // READ|WRITE|CACHE, LE u32
    expect(dts).toContain(`iommu-prot = <0x5000000>;`); // READ|CACHE (the read-only area)
    expect(dts).toContain('bus = [01];');
    expect(dts).toContain('devfn = [00];');
    expect(dts).toMatch(/domains \{\s+0 \{\s+mem = </);
    // dtc's text compiles back to a tree with the same nodes and values; our renderer agrees with dtc.
    expect(decodeFdt(dtcCompile(dts))).toEqual(decodeFdt(blob));
    expect(fdtToDts(blob)).toBe(dts);
    expect(libfdtCheck([blob])).toEqual(['OK']);
  });

  it('decodeFdt: every node and value matches the live state', () => {
    const vm = bootVm();
    const { host, p, pid, ioas, ino, sid0, sid1 } = vm;
    const dom = host.kernel.intel.domainOf(sid0)!;
    const other = host.kernel.intel.domainOf(sid1)!;
    expect(dom.persistentId).toBe(pid);
    expect(other.persistentId).toBe(0);
    khoWrite(p, '1');
    const blob = readDt(p);
    expect(Buffer.from(blob).equals(Buffer.from(host.kernel.kho.blob!))).toBe(true);
    const tree = decodeFdt(blob, { validate: 'structural' });

    expect(tree.name).toBe('');
    expect(str(prop(tree, 'compatible'))).toBe('kho-v1');
    expect(childNames(tree)).toEqual(['iommufd', 'intel-iommu', 'guestmemfs']);

    // /iommufd: only the persistent context, its one IOAS, its two areas.
    const fdNode = child(tree, 'iommufd');
    expect(str(prop(fdNode, 'compatible'))).toBe('iommufd-v0');
    expect(childNames(fdNode)).toEqual(['iommufds']);
    expect(childNames(child(fdNode, 'iommufds'))).toEqual([String(pid)]);
    expect(childNames(child(fdNode, `iommufds/${pid}`))).toEqual(['ioases']);
    expect(childNames(child(fdNode, `iommufds/${pid}/ioases`))).toEqual([String(ioas)]);
    const io = child(fdNode, `iommufds/${pid}/ioases/${ioas}`);
    expect(leU32s(prop(io, 'domains'))).toEqual([0]);
    expect(leU64s(prop(io, 'pinned-files'))).toEqual([BigInt(ino)]);
    expect(childNames(io)).toEqual(['0', '1']);
    const a0 = child(io, '0');
    const a1 = child(io, '1');
    for (const a of [a0, a1]) {
      expect(propNames(a)).toEqual(expect.arrayContaining(['iova-start', 'iova-len', 'iommu-prot', 'guestmemfs']));
      expect(prop(a, 'iova-start').length).toBe(8);
      expect(prop(a, 'iova-len').length).toBe(8);
      expect(prop(a, 'iommu-prot').length).toBe(4);
    }
    expect(leU64(prop(a0, 'iova-start'))).toBe(IOVA_SP);
    expect(leU64(prop(a0, 'iova-len'))).toBe(LEN_SP);
    expect(leU32(prop(a0, 'iommu-prot'))).toBe(IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE);
    expect(leU64s(prop(a0, 'guestmemfs'))).toEqual([IOVA_SP, BigInt(ino), 0n, LEN_SP]);
    expect(leU64(prop(a1, 'iova-start'))).toBe(IOVA_4K);
    expect(leU64(prop(a1, 'iova-len'))).toBe(LEN_4K);
    expect(leU32(prop(a1, 'iommu-prot'))).toBe(IOMMU_READ | IOMMU_CACHE);
    expect(leU64s(prop(a1, 'guestmemfs'))).toEqual([IOVA_4K, BigInt(ino), OFF_4K, LEN_4K]);

    // /intel-iommu: the root table the unit translates through, its context tables, the one
    // persistent domain (not the ordinary one) with its table pages and its device.
    const ii = child(tree, 'intel-iommu');
    expect(str(prop(ii, 'compatible'))).toBe('intel-iommu-v0');
    const root = leU64(prop(ii, 'root-table'));
    expect(root).toBe(host.kernel.intel.rootEntry);
    expect(root).toBe(host.iommu.registers().rtaddr & ~0xfffn);
    const ctx = contextTables(vm);
    expect([...ctx.keys()]).toEqual([1, 2]);
    expect(khoMem(prop(ii, 'mem')).sort((a, b) => (a.addr < b.addr ? -1 : 1))).toEqual(
      [root, ...ctx.values()].sort((a, b) => (a < b ? -1 : 1)).map((addr) => ({ addr, len: PAGE })),
    );
    expect(childNames(child(ii, 'domains'))).toEqual(['0']);
    const d0 = child(ii, 'domains/0');
    expect(leU64(prop(d0, 'pgd'))).toBe(dom.pt.pgd);
    expect(leU64(prop(d0, 'persistent_id'))).toBe(BigInt(pid));
    expect(leU32(prop(d0, 'agaw'))).toBe(dom.pt.levels - 2);
    expect(leU32(prop(d0, 'did'))).toBe(dom.did);
    expect(dom.did).toBeGreaterThanOrEqual(2);
    const pages = [...dom.pt.tablePages()].sort((a, b) => (a < b ? -1 : 1));
    expect(pages).toContain(dom.pt.pgd);
    expect(pages.length).toBe(5); // pgd, L3, L2 for both areas, L2 and L1 for the 4 KiB area
    expect(khoMem(prop(d0, 'mem')).sort((a, b) => (a.addr < b.addr ? -1 : 1))).toEqual(pages.map((addr) => ({ addr, len: PAGE })));
    expect(childNames(child(d0, 'devices'))).toEqual(['0']);
    const dv0 = child(d0, 'devices/0');
    expect(prop(dv0, 'bus')).toEqual(new Uint8Array([sid0 >> 8]));
    expect(prop(dv0, 'devfn')).toEqual(new Uint8Array([sid0 & 0xff]));
    // The context entry of the device is what the blob says: SLPTPTR = pgd, DID.
    const ce = ctx.get(sid0 >> 8)! + 16n * BigInt(sid0 & 0xff);
    expect(host.memory.readU64(ce) & ~0xfffn).toBe(dom.pt.pgd);
    expect(Number((host.memory.readU64(ce + 8n) >> 8n) & 0xffffn)).toBe(dom.did);

    // /guestmemfs: the carve-out.
    const fs = host.kernel.guestmemfs!;
    const gm = child(tree, 'guestmemfs');
    expect(str(prop(gm, 'compatible'))).toBe('guestmemfs-v0');
    expect(leU64(prop(gm, 'base'))).toBe(fs.base);
    expect(leU64(prop(gm, 'nblocks'))).toBe(BigInt(fs.nblocks));
    expect(khoMem(prop(gm, 'mem'))).toEqual([{ addr: fs.base, len: BigInt(fs.nblocks) * GMEMFS_BLOCK }]);
    expect(fs.nblocks).toBe(32);
  });

  it('preserves exactly the memory the next kernel needs: table pages, root and context tables, the carve-out, the blob', () => {
    const vm = bootVm();
    const { host, p, sid0, sid1 } = vm;
    const dom = host.kernel.intel.domainOf(sid0)!;
    const other = host.kernel.intel.domainOf(sid1)!;
    const fs = host.kernel.guestmemfs!;
    const carve = BigInt(fs.nblocks) * GMEMFS_BLOCK;
    expect(host.memory.preserved()).toEqual([]);

    const check = () => {
      const kho = host.kernel.kho;
      const tables = [...dom.pt.tablePages()];
      const ctx = [...contextTables(vm).values()];
      for (const pa of [...tables, host.kernel.intel.rootEntry, ...ctx]) expect(host.memory.isPreserved(pa), `0x${pa.toString(16)}`).toBe(true);
      for (let at = fs.base; at < fs.base + carve; at += GMEMFS_BLOCK) {
        expect(host.memory.isPreserved(at)).toBe(true);
        expect(host.memory.isPreserved(at + GMEMFS_BLOCK - PAGE)).toBe(true);
      }
      expect(host.memory.isPreserved(fs.base - PAGE)).toBe(false);
      expect(host.memory.isPreserved(kho.blobPa!)).toBe(true);
      // The guest's pages are in the carve-out; the ordinary domain's tables and memory are not kept.
      expect(host.memory.isPreserved(dom.iovaToPhys(IOVA_SP + GUEST_OFF)!)).toBe(true);
      for (const pa of other.pt.tablePages()) expect(host.memory.isPreserved(pa)).toBe(false);
      expect(host.memory.isPreserved(other.iovaToPhys(IOVA_ANON)!)).toBe(false);
      // Nothing else: the marks add up to exactly these pages.
      const blobBytes = 4096n << BigInt(Math.ceil(Math.log2(Math.ceil(kho.blob!.length / 4096))));
      const total = host.memory.preserved().reduce((n, m) => n + (PAGE << BigInt(m.order)), 0n);
      expect(total).toBe(BigInt(tables.length + 1 + ctx.length) * PAGE + carve + blobBytes);
    };
    khoWrite(p, '1');
    check();
    khoWrite(p, '0');
    expect(host.memory.preserved()).toEqual([]);
    expect(host.memory.isPreserved(dom.pt.pgd)).toBe(false);
    expect(host.memory.isPreserved(fs.base)).toBe(false);
    khoWrite(p, '1');
    check();
  });
});

describe('kexec_file_load and reboot', () => {
  it('need CAP_SYS_BOOT (EPERM); reboot without a loaded image, or with another command, is EINVAL', () => {
    const { host, p } = bootVm();
    const k0 = host.kernel;
    const nocap = host.kernel.spawn({ uid: 0, capabilities: [] });
    expectErrno(() => nocap.kexecFileLoad({}), 'EPERM', 'kexec_file_load');
    expectErrno(() => nocap.reboot(LINUX_REBOOT_CMD_KEXEC), 'EPERM', 'reboot');
    const user = host.kernel.spawn({ uid: 1000 });
    expectErrno(() => user.kexecFileLoad({}), 'EPERM', 'kexec_file_load');
    expectErrno(() => user.reboot(LINUX_REBOOT_CMD_KEXEC), 'EPERM', 'reboot');
    expectErrno(() => p.reboot(LINUX_REBOOT_CMD_KEXEC), 'EINVAL', 'reboot');
    p.kexecFileLoad({});
    expectErrno(() => nocap.reboot(LINUX_REBOOT_CMD_KEXEC), 'EPERM', 'reboot'); // loaded, still not allowed
    expectErrno(() => p.reboot(0x1234_5678), 'EINVAL', 'reboot');
    p.kexecFileLoad({ unload: true });
    expectErrno(() => p.reboot(LINUX_REBOOT_CMD_KEXEC), 'EINVAL', 'reboot');
    expect(host.kernel).toBe(k0);
    expect(host.generations).toEqual([k0]);
    expect(k0.dead).toBe(false);
  });

  it('after the jump: a new kernel generation, the old kernel dead, every call of its processes ESRCH', () => {
    const vm = bootVm();
    const { host, p, fd, g, va, dev } = vm;
    const k0 = host.kernel;
    const user = k0.spawn({ uid: 1000 });
    const k = p.open('/sys/kernel/kho/active', O_WRONLY);
    p.write(k, '1');
    p.kexecFileLoad({ cmdline: 'guestmemfs=64M quiet' });
    p.reboot(LINUX_REBOOT_CMD_KEXEC);
    const k1 = host.kernel;
    expect(k1).not.toBe(k0);
    expect(host.generations).toEqual([k0, k1]);
    expect([k0.generation, k1.generation]).toEqual([0, 1]);
    expect([k0.dead, k1.dead]).toEqual([true, false]);
    expect(k1.cmdline).toBe('guestmemfs=64M quiet');
    expect(k1.kho.active).toBe(false);
    expect(k1.kho.blob).toBe(null);

    const calls: [string, () => unknown][] = [
      ['open', () => p.open('/dev/iommu', O_RDWR)],
      ['close', () => p.close(fd)],
      ['ioctl', () => p.ioctl(fd, IOMMU_IOAS_ALLOC, {})],
      ['ioctl', () => p.ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, {})],
      ['write', () => p.write(k, '0')],
      ['read', () => p.read(g, 1)],
      ['mmap', () => p.mmap(null, MiB, RW, MAP_SHARED, g)],
      ['munmap', () => p.munmap(va, MiB)],
      ['memRead', () => p.memRead(va, 1)],
      ['memWrite', () => p.memWrite(va, enc('x'))],
      ['ftruncate', () => p.ftruncate(g, 0n)],
      ['mount', () => p.mount('guestmemfs', '/mnt/x')],
      ['unlink', () => p.unlink(FILE)],
      ['stat', () => p.stat('/dev/iommu')],
      ['kexec_file_load', () => p.kexecFileLoad({})],
      ['reboot', () => p.reboot(LINUX_REBOOT_CMD_KEXEC)],
      ['open', () => user.open('/sys/kernel/kho/dt_max', O_RDONLY)],
    ];
    for (const [name, call] of calls) expectErrno(call, 'ESRCH', name);
    // The old kernel's state is gone with it: the new one starts with nothing of it.
    expect(k1.iommufds.size).toBe(0);
    expect(k1.persistentIommufds.size).toBe(0);
    expect(k1.pinnedPages()).toBe(0);
    // The new kernel works.
    const q = k1.spawn();
    expect(q.open('/dev/iommu', O_RDWR)).toBe(3);
  });

  it('a dead kernel runs nothing: its spawn() gives no working process', () => {
    const vm = bootVm();
    const k0 = vm.host.kernel;
    vm.host.kexec();
    let ok = false;
    try {
      const ghost = k0.spawn();
      ghost.open('/dev/iommu', O_RDWR);
      ok = true;
    } catch (e) {
      expect((e as { code?: string }).code).toBe('ESRCH');
    }
    expect(ok, 'the dead kernel opened /dev/iommu for a new process').toBe(false);
  });

  it('a kexec without KHO persists nothing: guestmemfs fresh, every device blocked (context entry not present), no persisted iommufds', () => {
    const vm = bootVm();
    const { host, p, pid } = vm;
    const k0 = host.kernel;
    p.kexecFileLoad({});
    p.reboot(LINUX_REBOOT_CMD_KEXEC);
    const k1 = host.kernel;
    expect(k1.generation).toBe(1);
    expect(k0.dead).toBe(true);
    expect(k0.dmesg()).toContain(k0.dmesg().find((l) => l.includes('DMAR: translation disabled for kexec')));
    expect(k1.dmesg().join('\n')).not.toMatch(/KHO: found|restored/);
    expect(host.memory.preserved()).toEqual([]);
    // Every device's DMA faults: context entry not present.
    for (const [bdf, iova] of [
      [BDF0, IOVA_SP + GUEST_OFF],
      [BDF0, IOVA_4K],
      [BDF1, IOVA_ANON],
    ] as const) {
      expectDmaFault(() => host.device(bdf).dma.read(iova, 8));
      expectDmaFault(() => host.device(bdf).dma.write(iova, enc('x')));
      // The IOMMU blocks it too: the new kernel's fresh root table has no entry for it (root
      // entry 0x1 or context entry 0x2 not present).
      expect([0x1, 0x2]).toContain(iommuVerdict(host, bdf, iova));
      expect([0x1, 0x2]).toContain(iommuVerdict(host, bdf, iova, true));
    }
    expect(host.kernel.intel.domainOf(vm.sid0)).toBeUndefined();
    const q = k1.spawn();
    expect(ls(q, '/sys/kernel/iommufd_persisted')).toEqual([]);
    expectErrno(() => q.open(`/sys/kernel/iommufd_persisted/${pid}/iommufd`, O_RDONLY), 'ENOENT', 'open');
    // guestmemfs: a new, empty filesystem (the old region was not handed over).
    const fs = k1.guestmemfs!;
    expect(fs).not.toBe(k0.guestmemfs);
    q.mount('guestmemfs', MNT);
    expect(ls(q, MNT)).toEqual([]);
    expectErrno(() => q.open(FILE, O_RDWR), 'ENOENT', 'open');
    expect(fs.freeBlocks()).toBe(fs.nblocks - 1);
    // A file made now reads zeros where the guest's bytes were, if it even got the same blocks.
    const g = q.open(FILE, O_RDWR | O_CREAT, 0o600);
    q.ftruncate(g, FILE_SIZE);
    const va = q.mmap(null, FILE_SIZE, RW, MAP_SHARED, g);
    expect(q.memRead(va + GUEST_OFF, GUEST_BYTES.length)).toEqual(new Uint8Array(GUEST_BYTES.length));
    // The machine works: a new VMM attaches device 1 and does DMA.
    const fdn = q.open('/dev/iommu', O_RDWR);
    const ioas = q.ioctl(fdn, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    q.ioctl(fdn, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas, user_va: va, length: FILE_SIZE, iova: IOVA_SP });
    const d1 = q.open('/dev/vfio/devices/vfio1', O_RDWR);
    q.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fdn });
    q.ioctl(d1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    host.device(BDF1).dma.write(IOVA_SP + 8192n, enc('fresh'));
    expect(dec(q.memRead(va + 8192n, 5))).toBe('fresh');
  });

  // pci_device_shutdown clears bus mastering at kexec: the request never reaches the IOMMU.
  it("a kexec without KHO: every device's DMA fails with bus mastering off (reason 0)", () => {
    const vm = bootVm();
    vm.host.kexec();
    for (const [bdf, iova] of [
      [BDF0, IOVA_SP + GUEST_OFF],
      [BDF1, IOVA_ANON],
    ] as const) {
      expect(expectDmaFault(() => vm.host.device(bdf).dma.read(iova, 8)).reason).toBe(0);
      expect(expectDmaFault(() => vm.host.device(bdf).dma.write(iova, enc('x'))).reason).toBe(0);
    }
  });

  it('host.kexec() without KHO and without guestmemfs= on the new command line: no carve-out at all', () => {
    const vm = bootVm();
    const k1 = vm.host.kexec({ cmdline: '' });
    expect(k1).toBe(vm.host.kernel);
    expect(k1.generation).toBe(1);
    expect(k1.cmdline).toBe('');
    expect(k1.guestmemfs).toBe(null);
    const q = k1.spawn();
    expectErrno(() => q.mount('guestmemfs', MNT), 'ENOMEM', 'mount');
    expect(ls(q, '/sys/kernel/iommufd_persisted')).toEqual([]);
    expectDmaFault(() => vm.host.device(BDF0).dma.read(IOVA_SP, 8));
    expect([0x1, 0x2]).toContain(iommuVerdict(vm.host, BDF0, IOVA_SP));
    expect(vm.host.memory.preserved()).toEqual([]);
  });

  it('host.kexec() after activating KHO hands over like reboot does', () => {
    const vm = bootVm();
    khoWrite(vm.p, '1');
    const k1 = vm.host.kexec();
    expect(k1.cmdline).toBe('guestmemfs=64M');
    expect(vm.host.generations.length).toBe(2);
    expect(vm.host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    const q = k1.spawn();
    expect(ls(q, '/sys/kernel/iommufd_persisted')).toEqual([String(vm.pid)]);
  });
});

describe('re-hydration through /sys/kernel/iommufd_persisted/<id>/iommufd', () => {
  it('the read returns "<fd>\\n": an fd of the reader holding the IOASes (ids from 1) bound to the restored domain; once only; root only', () => {
    const vm = bootVm();
    const { host, p, pid, ino, sid0 } = vm;
    const pgd = host.kernel.intel.domainOf(sid0)!.pt.pgd;
    const before = ranges(p, vm.fd, vm.ioas);
    liveUpdate(p);
    const q = host.kernel.spawn();
    expect(ls(q, '/sys/kernel/iommufd_persisted')).toEqual([String(pid)]);
    expect(ls(q, `/sys/kernel/iommufd_persisted/${pid}`)).toEqual(['iommufd']);
    const st = q.stat(`/sys/kernel/iommufd_persisted/${pid}/iommufd`);
    expect({ mode: st.st_mode & 0o7777, uid: st.st_uid }).toEqual({ mode: 0o440, uid: 0 });
    const u = host.kernel.spawn({ uid: 1000 });
    expectErrno(() => u.open(`/sys/kernel/iommufd_persisted/${pid}/iommufd`, O_RDONLY), 'EACCES', 'open');
    expectErrno(() => q.open(`/sys/kernel/iommufd_persisted/${pid}/iommufd`, O_WRONLY), 'EACCES', 'open');
    // The guestmemfs file stays pinned while the context waits to be claimed.
    expect(host.kernel.guestmemfs!.inodeByIno(ino)!.pins).toBeGreaterThan(0);

    const f = q.open(`/sys/kernel/iommufd_persisted/${pid}/iommufd`, O_RDONLY);
    expect(f).toBe(3);
    const text = dec(q.read(f, 64));
    expect(text).toBe('4\n');
    const fd = 4;
    expect(persistentId(q, fd)).toBe(pid);
    // Once: a second read (same or another process, another open) is EBUSY.
    const f2 = q.open(`/sys/kernel/iommufd_persisted/${pid}/iommufd`, O_RDONLY);
    expectErrno(() => q.read(f2, 64), 'EBUSY', 'read');
    const other = host.kernel.spawn();
    const f3 = other.open(`/sys/kernel/iommufd_persisted/${pid}/iommufd`, O_RDONLY);
    expectErrno(() => other.read(f3, 64), 'EBUSY', 'read');
    expect(host.kernel.persistentIommufds.get(pid)).toBeDefined();

    // New ids from 1: the IOAS (id 2 before) is 1, its restored HWPT 2; nothing else exists.
    expect(vm.ioas).toBe(2);
    expect(ranges(q, fd, 1)).toEqual(expect.any(Array));
    expectErrno(() => ranges(q, fd, 3), 'ENOENT', 'ioctl');
    expectErrno(() => q.ioctl(fd, IOMMU_DESTROY, { id: 1 }), 'EBUSY', 'ioctl'); // the HWPT holds it
    // The areas are there, with the allowed ranges covering them; the domain is the old one.
    const r = ranges(q, fd, 1);
    expect(r.some((x: { start: bigint; last: bigint }) => x.start <= IOVA_SP && x.last >= IOVA_4K + LEN_4K - 1n)).toBe(true);
    expect(host.kernel.intel.domainOf(sid0)!.pt.pgd).toBe(pgd);
    // COPY out of a restored area into a new IOAS of the same context, then DMA through it.
    const ioasB = q.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    expect(ioasB).toBe(3);
    q.ioctl(fd, IOMMU_IOAS_COPY, { flags: R | W | FIXED, dst_ioas_id: ioasB, src_ioas_id: 1, src_iova: IOVA_SP, dst_iova: 0x8000_0000n, length: LEN_SP });
    const d1 = q.open('/dev/vfio/devices/vfio1', O_RDWR);
    q.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    q.ioctl(d1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioasB });
    expect(host.device(BDF1).dma.read(0x8000_0000n + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    // UNMAP of a restored area returns its length; the device loses it; the other area stays.
    expect(q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: IOVA_4K, length: LEN_4K }).length).toBe(LEN_4K);
    expectDmaFault(() => host.device(BDF0).dma.read(IOVA_4K, 4));
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expectErrno(() => q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: IOVA_4K, length: LEN_4K }), 'ENOENT', 'ioctl');
    expect(q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: 0n, length: U64_MAX }).length).toBe(LEN_SP);
    expectDmaFault(() => host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, 4));
    // Re-binding after the unmaps: the IOVA ranges are those of before the update again.
    const dev = q.open('/dev/vfio/devices/vfio0', O_RDWR);
    q.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    expect(q.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 }).pt_id).toBe(2);
    expect(ranges(q, fd, 1)).toEqual(before);
  });

  it.each(['hwpt', 'ioas'] as const)('the VMM re-opens vfio0, binds and attaches to the restored %s, then unmaps and maps as usual', (target) => {
    const vm = bootVm();
    const { host, p, pid, sid0 } = vm;
    const dom0 = host.kernel.intel.domainOf(sid0)!;
    const pgd = dom0.pt.pgd;
    const did = dom0.did;
    const before = ranges(p, vm.fd, vm.ioas);
    liveUpdate(p);
    const q = host.kernel.spawn();
    const { fd, hwpt } = reattach(q, pid, target === 'hwpt' ? 2 : 1);
    expect(hwpt).toBe(2);
    const dom = host.kernel.intel.domainOf(sid0)!;
    expect(dom.pt.pgd).toBe(pgd);
    expect(dom.did).toBe(did);
    expect(dom.persistentId).toBe(pid);
    expect(ranges(q, fd, 1)).toEqual(before);
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    // Unmap everything, then map the file again from a fresh mapping of the remounted guestmemfs.
    expect(q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: 0n, length: U64_MAX }).length).toBe(LEN_SP + LEN_4K);
    expectDmaFault(() => host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, 4));
    q.mount('guestmemfs', MNT);
    const g = q.open(FILE, O_RDWR);
    const va = q.mmap(null, FILE_SIZE, RW, MAP_SHARED, g);
    const iova = 1n << 35n;
    q.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: 1, user_va: va, length: FILE_SIZE, iova });
    expect(host.device(BDF0).dma.read(iova + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expect(host.device(BDF0).dma.read(iova + OFF_4K, RO_BYTES.length)).toEqual(RO_BYTES);
    host.device(BDF0).dma.write(iova + 3n * PAGE, enc('after'));
    expect(dec(q.memRead(va + 3n * PAGE, 5))).toBe('after');
    // The pins follow the areas: unlink is EBUSY while mapped, fine after the unmap.
    expectErrno(() => q.unlink(FILE), 'EBUSY', 'unlink');
    q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: 0n, length: U64_MAX });
    expect(host.kernel.guestmemfs!.inodeByIno(vm.ino)!.pins).toBe(0);
  });

  it('the restored domain stays attached: DMA works right after the jump, before the claim and before any re-bind', () => {
    const vm = bootVm();
    const { host, p, pid, sid0 } = vm;
    const pgd = host.kernel.intel.domainOf(sid0)!.pt.pgd;
    liveUpdate(p);
    const dma = host.device(BDF0).dma;
    expect(host.kernel.intel.domainOf(sid0)?.pt.pgd).toBe(pgd);
    expect(host.kernel.intel.isRestoredAttach(sid0)).toBe(true);
    expect(dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expect(dma.read(IOVA_4K, RO_BYTES.length)).toEqual(RO_BYTES);
    dma.write(IOVA_SP + 5n * PAGE, enc('unclaimed'));
    expect(dec(dma.read(IOVA_SP + 5n * PAGE, 9))).toBe('unclaimed');
    // The permissions came along: the read-only area is still read-only.
    expect(expectDmaFault(() => dma.write(IOVA_4K, enc('x'))).reason).toBe(0x5);
    // The ordinary device is blocked (and its context entry is gone).
    expectDmaFault(() => host.device(BDF1).dma.read(IOVA_ANON, 4));
    expect(iommuVerdict(host, BDF1, IOVA_ANON)).toBe(0x2);
    expect(iommuVerdict(host, BDF0, IOVA_SP)).toBe(0);
    const q = host.kernel.spawn();
    const fd = claim(q, pid);
    expect(dec(dma.read(IOVA_SP + 5n * PAGE, 9))).toBe('unclaimed');
    // A map made on the claimed context, before any re-bind, reaches the device through the restored domain.
    q.mount('guestmemfs', MNT);
    const g = q.open(FILE, O_RDWR);
    const va = q.mmap(null, FILE_SIZE, RW, MAP_SHARED, g);
    q.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: 1, user_va: va + 6n * MiB, length: 2n * MiB, iova: 1n << 36n });
    q.memWrite(va + 6n * MiB, enc('new map'));
    expect(dec(dma.read(1n << 36n, 7))).toBe('new map');
    expect(host.kernel.intel.isRestoredAttach(sid0)).toBe(true);
  });

  it('before the re-bind, the restored IOAS keeps the attached device\'s reserved MSI window (IOVA_RANGES and MAP as before)', () => {
    const vm = bootVm();
    const { host, p, pid } = vm;
    const before = ranges(p, vm.fd, vm.ioas);
    expectErrno(() => p.ioctl(vm.fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: vm.ioas, user_va: vm.va + 6n * MiB, length: MiB, iova: 0xfee0_0000n }), 'EINVAL', 'ioctl');
    liveUpdate(p);
    const q = host.kernel.spawn();
    const fd = claim(q, pid);
    q.mount('guestmemfs', MNT);
    const va = q.mmap(null, FILE_SIZE, RW, MAP_SHARED, q.open(FILE, O_RDWR));
    let mapped = true;
    try {
      q.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: 1, user_va: va + 6n * MiB, length: MiB, iova: 0xfee0_0000n });
    } catch {
      mapped = false;
    }
    const dev = q.open('/dev/vfio/devices/vfio0', O_RDWR);
    q.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    q.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 }); // EADDRINUSE when the MAP went through
    expect(mapped).toBe(false);
    expect(ranges(q, fd, 1)).toEqual(before);
  });

  it('a re-hydrated context stays persistent: a chain of live updates where the VMM only re-claims its iommufd', () => {
    const vm = bootVm();
    const { host, pid, sid0 } = vm;
    const pgd = host.kernel.intel.domainOf(sid0)!.pt.pgd;
    let p = vm.p;
    let fd = -1;
    for (let gen = 1; gen <= 4; gen++) {
      liveUpdate(p);
      expect(host.kernel.generation).toBe(gen);
      p = host.kernel.spawn();
      fd = claim(p, pid);
      expect(persistentId(p, fd)).toBe(pid);
      expect(host.kernel.intel.domainOf(sid0)?.pt.pgd).toBe(pgd);
      expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
      expect(host.kernel.dmesg().join('\n')).not.toMatch(/not adopted|not restored|ignoring/);
    }
    // At the end of the chain the VMM re-binds, unmaps and maps.
    const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    expect(p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 }).pt_id).toBe(2);
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: IOVA_4K, length: LEN_4K }).length).toBe(LEN_4K);
    p.mount('guestmemfs', MNT);
    const va = p.mmap(null, FILE_SIZE, RW, MAP_SHARED, p.open(FILE, O_RDWR));
    p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | FIXED, ioas_id: 1, user_va: va + OFF_4K, length: LEN_4K, iova: IOVA_4K });
    expect(host.device(BDF0).dma.read(IOVA_4K, RO_BYTES.length)).toEqual(RO_BYTES);
  });

  it('a context nobody claimed is handed over again by the next live update', () => {
    const vm = bootVm();
    const { host, pid } = vm;
    liveUpdate(vm.p);
    let p = host.kernel.spawn();
    expect(ls(p, '/sys/kernel/iommufd_persisted')).toEqual([String(pid)]);
    liveUpdate(p); // nobody claimed it
    p = host.kernel.spawn();
    expect(ls(p, '/sys/kernel/iommufd_persisted')).toEqual([String(pid)]);
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    const { fd } = reattach(p, pid);
    expect(persistentId(p, fd)).toBe(pid);
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: 0n, length: U64_MAX }).length).toBe(LEN_SP + LEN_4K);
  });
});

describe('leaving a restored domain', () => {
  /** bootVm with device 1 moved onto the persistent IOAS too: two devices on one persistent domain. */
  function twoDeviceVm(): Vm {
    const vm = bootVm();
    vm.p.close(vm.dev1);
    vm.dev1 = vm.p.open('/dev/vfio/devices/vfio1', O_RDWR);
    vm.p.ioctl(vm.dev1, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: vm.fd });
    expect(vm.p.ioctl(vm.dev1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: vm.ioas }).pt_id).toBe(vm.hwpt);
    return vm;
  }
  /** Live-updates `vm` and claims its iommufd in a new process of the next kernel. */
  function updatedAndClaimed(vm: Vm): { vm: Vm; host: Vm['host']; p: Process; fd: number } {
    liveUpdate(vm.p);
    const p = vm.host.kernel.spawn();
    return { vm, host: vm.host, p, fd: claim(p, vm.pid) };
  }
  const bindTo = (p: Process, i: number, fd: number) => {
    const dev = p.open(`/dev/vfio/devices/vfio${i}`, O_RDWR);
    p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    return dev;
  };

  it('attached elsewhere, a device takes its MSI window out of the restored IOAS; the restored HWPT stays until destroyed', () => {
    const { vm, host, p, fd } = updatedAndClaimed(bootVm());
    const msiHole = ranges(p, fd, 1) as { start: bigint; last: bigint }[];
    expect(msiHole).toHaveLength(2); // the MSI window 0xfee00000-0xfeefffff is reserved for device 0
    const dev = bindTo(p, 0, fd);
    // The restored HWPT is id 2; while device 0 still translates through it, it is in use.
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: 2 }), 'EBUSY', 'ioctl');
    const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const hwpt = p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas }).pt_id as number;
    expect(host.kernel.intel.isRestoredAttach(vm.sid0)).toBe(false);
    // The window moved with the device: the restored IOAS is one range again, the new one has the hole.
    expect(ranges(p, fd, 1)).toEqual([{ start: 0n, last: msiHole[1]!.last }]);
    expect(ranges(p, fd, ioas)).toEqual(msiHole);
    // The device now translates through the new, empty IOAS.
    expect(iommuVerdict(host, BDF0, IOVA_SP)).not.toBe(0);
    // Leaving is not a detach: the restored HWPT is still there, and now only the VMM holds it.
    p.ioctl(fd, IOMMU_DESTROY, { id: 2 });
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: 2 }), 'ENOENT', 'ioctl');
    expect([ioas, hwpt]).toEqual([4, 5]); // after IOAS 1, HWPT 2 and the device (3)
  });

  it('VFIO unbind of a device still on its restored domain blocks it (DMA ownership released)', () => {
    const { vm, host, p, fd } = updatedAndClaimed(bootVm());
    const dev = bindTo(p, 0, fd);
    // Bound, not yet attached: DMA continues through the restored domain.
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    p.close(dev);
    expect(host.kernel.intel.domainOf(vm.sid0)).toBeUndefined();
    expect([0x1, 0x2]).toContain(iommuVerdict(host, BDF0, IOVA_SP));
    expect(ranges(p, fd, 1)).toHaveLength(1);
    p.ioctl(fd, IOMMU_DESTROY, { id: 2 });
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: 2 }), 'ENOENT', 'ioctl');
  });

  it('two devices on one restored domain: the re-attached one leaving does not take the HWPT from the other', () => {
    const { vm, host, p, fd } = updatedAndClaimed(twoDeviceVm());
    const dma1 = host.device(BDF1).dma;
    const dev0 = bindTo(p, 0, fd);
    expect(p.ioctl(dev0, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 }).pt_id).toBe(2);
    p.ioctl(dev0, VFIO_DEVICE_DETACH_IOMMUFD_PT, {});
    // HWPT 2 lives on for device 1, which never stopped translating through it.
    expect(dma1.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expect(iommuVerdict(host, BDF0, IOVA_SP)).not.toBe(0);
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: 2 }), 'EBUSY', 'ioctl');
    // Device 1 re-attaches to it by its IOAS, leaves, and the HWPT goes with its last device.
    const dev1 = bindTo(p, 1, fd);
    expect(p.ioctl(dev1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 1 }).pt_id).toBe(2);
    p.close(dev1);
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: 2 }), 'ENOENT', 'ioctl');
    expect([0x1, 0x2]).toContain(iommuVerdict(host, BDF1, IOVA_SP));
    expect(host.kernel.intel.domains.size).toBe(0);
  });

  it('closing the claimed iommufd blocks the devices still on its restored domains', () => {
    const { vm, host, p, fd } = updatedAndClaimed(twoDeviceVm());
    p.close(fd);
    expect([0x1, 0x2]).toContain(iommuVerdict(host, BDF0, IOVA_SP));
    expect([0x1, 0x2]).toContain(iommuVerdict(host, BDF1, IOVA_SP));
    expect(host.kernel.intel.domains.size).toBe(0);
    expect(host.kernel.pinnedPages()).toBe(0);
  });
});

describe('guestmemfs blocks across the jump', () => {
  it('blocks that waited for a non-persistent domain to let go are free in the next kernel', () => {
    const vm = bootVm();
    const { host, p } = vm;
    const free0 = host.kernel.guestmemfs!.freeBlocks();
    const f = p.open(`${MNT}/scratch`, O_RDWR | O_CREAT, 0o600);
    p.ftruncate(f, 3n * GMEMFS_BLOCK);
    const va = p.mmap(null, 3n * GMEMFS_BLOCK, RW, MAP_SHARED, f);
    // Device 1's ordinary context pins the first two blocks; the file shrinks, then goes.
    p.ioctl(vm.fd2, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: vm.ioas2, user_va: va, length: 2n * GMEMFS_BLOCK, iova: 1n << 32n });
    p.munmap(va, 3n * GMEMFS_BLOCK);
    p.ftruncate(f, GMEMFS_BLOCK);
    p.close(f);
    p.unlink(`${MNT}/scratch`);
    expect(host.kernel.guestmemfs!.freeBlocks()).toBe(free0 - 2);
    liveUpdate(p);
    // Those pins died with the old kernel: nothing can reach the blocks any more.
    expect(host.kernel.guestmemfs!.freeBlocks()).toBe(free0);
    expect(host.kernel.dmesg().join('\n')).toMatch(/guestmemfs: 2 blocks no file owns were waiting for the previous kernel's DMA pins; free again/);
    // The persistent file is whole.
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
  });

  it('an unlinked file only a refused persisted context pinned is freed at the next mount', () => {
    const vm = bootVm();
    const { host, p } = vm;
    const free0 = host.kernel.guestmemfs!.freeBlocks();
    const x = p.open(`${MNT}/x`, O_RDWR | O_CREAT, 0o600);
    p.ftruncate(x, GMEMFS_BLOCK);
    p.unlink(`${MNT}/x`);
    // An IOAS without a domain takes a range past the file's end (nothing is pinned until a
    // domain needs the pages); the next kernel refuses such a context as a whole.
    const ioas = p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    p.ioctl(vm.fd, IOMMU_IOAS_MAP_FILE, { flags: R | W, ioas_id: ioas, fd: x, start: GMEMFS_BLOCK - 2n * PAGE, length: 3n * PAGE, iova: 0n });
    p.close(x);
    liveUpdate(p);
    expect(host.kernel.dmesg().join('\n')).toMatch(/iommufd: \/iommufd\/iommufds\/\d+ not restored: .*segment beyond its file/);
    const q = host.kernel.spawn();
    q.mount('guestmemfs', MNT);
    expect(host.kernel.guestmemfs!.freeBlocks()).toBe(free0);
  });

  it('an unlinked file a persisted area pins lives until that area goes in the next kernel', () => {
    const vm = bootVm();
    const { host, p, pid } = vm;
    const free0 = host.kernel.guestmemfs!.freeBlocks();
    const x = p.open(`${MNT}/x`, O_RDWR | O_CREAT, 0o600);
    p.ftruncate(x, GMEMFS_BLOCK);
    p.unlink(`${MNT}/x`);
    p.ioctl(vm.fd, IOMMU_IOAS_MAP_FILE, { flags: R | W | FIXED, ioas_id: vm.ioas, fd: x, start: 0n, length: GMEMFS_BLOCK, iova: 1n << 36n });
    p.close(x);
    expect(host.kernel.guestmemfs!.freeBlocks()).toBe(free0 - 2);
    liveUpdate(p);
    const q = host.kernel.spawn();
    const fd = claim(q, pid);
    q.mount('guestmemfs', MNT);
    expect(ls(q, MNT)).toEqual(['guest-ram']);
    expect(host.kernel.guestmemfs!.freeBlocks()).toBe(free0 - 2);
    expect(q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: 1n << 36n, length: GMEMFS_BLOCK }).length).toBe(GMEMFS_BLOCK);
    expect(host.kernel.guestmemfs!.freeBlocks()).toBe(free0);
  });
});

describe('continuous DMA through the live update', () => {
  /** One full update with traffic on both devices; returns what the tests look at. */
  function run() {
    const vm = bootVm();
    const { host, p, pid } = vm;
    const t0 = host.dmaTraffic({ bdf: BDF0, ...TRAFFIC0, pagesPerStep: 8 });
    const t1 = host.dmaTraffic({ bdf: BDF1, iova: IOVA_ANON, length: LEN_ANON, pagesPerStep: 4 });
    host.phase('vm-running');
    host.phase('vm-running');
    liveUpdate(p);
    const q = host.kernel.spawn();
    const re = reattach(q, pid);
    host.phase('vmm-reattach');
    return { ...vm, t0, t1, q, re };
  }
  const UPDATE = ['kho-dump', 'shutdown', 'jump', 'early-boot', 'iommu-init', 'iommufd-restore', 'boot', 'vmm-reattach'];

  it('the persistent device: a step after every phase, zero faults, zero mismatches', () => {
    const { t0, host } = run();
    expect(t0.steps.map((s) => s.phase)).toEqual(['vm-running', 'vm-running', ...UPDATE]);
    expect(t0.steps.map((s) => s.generation)).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    expect(t0.faults).toBe(0);
    expect(t0.mismatches).toBe(0);
    expect(t0.pagesVerified).toBeGreaterThan(0);
    for (const s of t0.steps) expect(s.pagesWritten).toBe(8);
    for (const s of t0.steps.slice(1)) expect(s.pagesVerified).toBe(8);
    expect(host.iommu.faults().filter((f) => f.sid === host.device(BDF0).sid)).toEqual([]);
  });

  it('the non-persistent device: fine before the shutdown, blocked from the shutdown on', () => {
    const { t1, host } = run();
    const cut = t1.steps.findIndex((s) => s.phase === 'shutdown');
    expect(cut).toBe(3);
    for (const s of t1.steps.slice(0, cut)) {
      expect(s.faults).toEqual([]);
      expect(s.pagesWritten).toBe(4);
    }
    expect(t1.steps[1]!.pagesVerified + t1.steps[2]!.pagesVerified).toBeGreaterThan(0);
    for (const s of t1.steps.slice(cut)) {
      expect(s.faults.length).toBeGreaterThan(0);
      // 0: bus mastering cleared at kexec (the request never reaches the IOMMU); 0x2: context entry cleared.
      for (const f of s.faults) expect([0x0, 0x2]).toContain(f.reason);
      expect(s.pagesWritten).toBe(0);
      expect(s.pagesVerified).toBe(0);
    }
    expect(t1.mismatches).toBe(0);
    expect(iommuVerdict(host, BDF1, IOVA_ANON)).toBe(0x2);
  });

  it("the guest's bytes written before the update are there after: by DMA, and by a fresh mmap of the remounted guestmemfs", () => {
    const { host, q, re } = run();
    const dma = host.device(BDF0).dma;
    expect(dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expect(dma.read(IOVA_4K, RO_BYTES.length)).toEqual(RO_BYTES);
    q.mount('guestmemfs', MNT);
    expect(ls(q, MNT)).toEqual(['guest-ram']);
    expect(q.stat(FILE).st_size).toBe(FILE_SIZE);
    const g = q.open(FILE, O_RDWR);
    const va = q.mmap(null, FILE_SIZE, RW, MAP_SHARED, g);
    expect(q.memRead(va + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expect(q.memRead(va + OFF_4K, RO_BYTES.length)).toEqual(RO_BYTES);
    // The device's view and the CPU's view are the same pages, both ways.
    dma.write(IOVA_SP + 7n * PAGE, enc('device'));
    expect(dec(q.memRead(va + 7n * PAGE, 6))).toBe('device');
    q.memWrite(va + 9n * PAGE, enc('cpu'));
    expect(dec(dma.read(IOVA_SP + 9n * PAGE, 3))).toBe('cpu');
    // What the traffic wrote in the old kernel is in the file too.
    const traffic = TRAFFIC0.iova - IOVA_SP;
    const viaDma = new Uint8Array(Number(TRAFFIC0.length));
    dma.readInto(TRAFFIC0.iova, viaDma);
    expect(Buffer.from(q.memRead(va + traffic, viaDma.length)).equals(Buffer.from(viaDma))).toBe(true);
    expect(viaDma.some((b) => b !== 0)).toBe(true);
    // guestmemfs is writable again in the new kernel.
    const n = q.open(`${MNT}/next-vm`, O_RDWR | O_CREAT, 0o600);
    q.ftruncate(n, 2n * MiB);
    expect(ls(q, MNT).sort()).toEqual(['guest-ram', 'next-vm']);
    expect(re.hwpt).toBe(2);
  });

  it('the timeline lists every phase of every generation; every generation keeps its kernel log', () => {
    const { host, pid, sid0 } = run();
    const k0 = host.generations[0]!;
    const k1 = host.generations[1]!;
    expect(host.timeline.map((t) => `${t.generation}:${t.phase}`)).toEqual([
      '0:early-boot',
      '0:iommu-init',
      '0:boot',
      '0:vm-running',
      '0:vm-running',
      '0:kho-dump',
      '0:shutdown',
      '1:jump',
      '1:early-boot',
      '1:iommu-init',
      '1:iommufd-restore',
      '1:boot',
      '1:vmm-reattach',
    ]);
    for (let i = 1; i < host.timeline.length; i++) {
      expect(host.timeline[i]!.simNs).toBeGreaterThan(host.timeline[i - 1]!.simNs);
      expect(host.timeline[i]!.wallMs).toBeGreaterThanOrEqual(host.timeline[i - 1]!.wallMs);
    }
    const log0 = k0.dmesg().join('\n');
    const log1 = k1.dmesg().join('\n');
    expect(log0).toMatch(/generation 0/);
    expect(log0).toMatch(/KHO: serialised \d+ bytes at 0x[0-9a-f]+, \d+ preserved blocks/);
    expect(log0).toContain('kexec: loaded the next kernel, command line "guestmemfs=64M"');
    expect(log0).toContain('kexec_core: Starting new kernel');
    expect(log0).toContain('DMAR: kexec with KHO: translation stays on for 1 persistent devices');
    expect(log1).toMatch(/Linux version .*generation 1/);
    expect(log1).toMatch(/KHO: found a \d+-byte handover blob at 0x[0-9a-f]+/);
    expect(log1).toContain(`guestmemfs: restored 64 MiB at 0x${host.kernel.guestmemfs!.base.toString(16)} from KHO`);
    expect(log1).toMatch(new RegExp(`DMAR: restored persistent domain 0 \\(persistent id ${pid}, did \\d+, 1 devices, 5 table pages\\)`));
    expect(log1).toContain(`iommufd: persisted iommufd ${pid} ready at /sys/kernel/iommufd_persisted/${pid}/iommufd`);
    expect(log1).toMatch(new RegExp(`iommufd: persisted iommufd ${pid} claimed by pid \\d+ as fd \\d+`));
    expect(log1).not.toMatch(/ignoring|not adopted|not restored|left blocked/);
    // The persistent device never faulted.
    expect(log0 + log1).not.toMatch(/Request device \[0000:01:00\.0\]/);
    // The logs stay readable after another update, and the timeline goes on.
    liveUpdate(host.kernel.spawn());
    expect(host.generations.map((k) => k.generation)).toEqual([0, 1, 2]);
    expect(k0.dmesg().join('\n')).toBe(log0);
    expect(host.timeline.slice(13).map((t) => `${t.generation}:${t.phase}`)).toEqual([
      '1:kho-dump',
      '1:shutdown',
      '2:jump',
      '2:early-boot',
      '2:iommu-init',
      '2:iommufd-restore',
      '2:boot',
    ]);
    expect(host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expect(host.kernel.intel.domainOf(sid0)).toBeDefined();
  });
});

describe('a kexec, generation by generation', () => {
  it("logs a DMA fault during the next kernel's boot phases in that kernel's log, not the dead one's", () => {
    const host = Host.boot({ memory: 64n << 20n, devices: [{ bdf: '0000:01:00.0' }] });
    const k0 = host.kernel;
    const seen: string[] = [];
    host.onPhase((e) => {
      if (e.generation !== 1 || e.phase !== 'iommu-init') return;
      seen.push(`${host.kernel.generation}`);
      // A device that kept bus mastering (as a handed-over one does) hits the new driver's
      // tables, which have no context entry for it yet.
      const dev = host.device('0000:01:00.0');
      dev.busMaster = true;
      expect(() => dev.dma.read(0x1000n, 4)).toThrow(/DMA read by 0000:01:00.0 at 0x1000 fa/);
    });
    const k1 = host.kexec();
    expect(seen).toEqual(['1']);
    expect(k1.dmesg().join('\n')).toMatch(/DMAR: \[DMA Read NO_PASID\] Request device \[0000:01:00\.0\] fault addr 0x1000/);
    expect(k0.dmesg().join('\n')).not.toMatch(/Request device \[0000:01:00\.0\]/);
  });
});
