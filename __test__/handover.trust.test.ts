// The rule the next kernel enforces on the handover (README "Trust model of the handover"), piece by
// piece: guestmemfs's pin records are the truth about what each persisted context mapped, they are
// frozen between KHO DUMP and ABORT, a context the blob does not fully account for is not offered,
// IOASes keep their numbers whatever the blob's node order, a domain two IOASes name is refused,
// the claimer needs the files' access, the pin table has a size, and a superblock inside guest data
// is not a filesystem.
import { describe, expect, it } from 'vitest';
import {
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_UNMAP,
  O_RDONLY,
  O_RDWR,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  decodeFdt,
  encodeFdt,
  type FdtNode,
} from 'iommu-liveupdate';
import {
  BDF0,
  FILE,
  FIXED,
  GUEST_BYTES,
  GUEST_OFF,
  IOVA_4K,
  IOVA_SP,
  LEN_4K,
  LEN_SP,
  MNT,
  MiB,
  PAGE,
  R,
  RO_BYTES,
  U64_MAX,
  W,
  bootVm,
  claim,
  child,
  khoWrite,
  leU64,
  liveUpdate,
  ls,
  prop,
  reattach,
  type Vm,
} from './liveupdate-helpers.js';
import { expectErrno } from './helpers.js';

/** Activates KHO, edits the decoded blob, writes it back in place, and jumps. */
function updateWithEditedBlob(vm: Vm, edit: (tree: FdtNode) => void): string {
  khoWrite(vm.p, '1');
  const kho = vm.host.kernel.kho;
  const tree = decodeFdt(kho.blob!);
  edit(tree);
  vm.host.memory.write(kho.blobPa!, encodeFdt(tree, { layout: 'libfdt' }));
  vm.host.kexec();
  return vm.host.kernel.dmesg().join('\n');
}

const ioases = (tree: FdtNode, pid: number) => child(tree, `iommufd/iommufds/${pid}/ioases`);

describe('what the next kernel trusts', () => {
  it('the pin records: one per persistent area piece, with owner, IOVA, file range and access; the blob areas are exactly them', () => {
    const vm = bootVm();
    const recs = [...vm.host.kernel.guestmemfs!.pinTable.entries()].map(([, r]) => r);
    const owner = (BigInt(vm.pid) << 32n) | BigInt(vm.ioas);
    expect(recs).toEqual([
      { ino: vm.ino, owner, iova: IOVA_SP, offset: 0n, len: LEN_SP, access: 3 },
      { ino: vm.ino, owner, iova: IOVA_4K, offset: 4n * MiB, len: LEN_4K, access: 1 },
    ]);
    // UNMAP drops the record, and the on-disk pin count with it.
    vm.p.ioctl(vm.fd, IOMMU_IOAS_UNMAP, { ioas_id: vm.ioas, iova: IOVA_4K, length: LEN_4K });
    expect([...vm.host.kernel.guestmemfs!.pinTable.entries()].map(([, r]) => r.iova)).toEqual([IOVA_SP]);
    expect(vm.host.kernel.guestmemfs!.inodeByIno(vm.ino)!.pins).toBe(1);
  });

  it('a re-claimed context re-pins under its new IOAS id; the old kernel’s records go', () => {
    const vm = bootVm();
    liveUpdate(vm.p);
    const gm = vm.host.kernel.guestmemfs!;
    expect([...gm.pinTable.entries()].map(([, r]) => r.owner & 0xffff_ffffn)).toEqual([BigInt(vm.ioas), BigInt(vm.ioas)]);
    reattach(vm.host.kernel.spawn(), vm.pid);
    expect([...gm.pinTable.entries()].map(([, r]) => r.owner & 0xffff_ffffn)).toEqual([1n, 1n]);
    expect(gm.inodeByIno(vm.ino)!.pins).toBe(2);
    // And the next update matches them again.
    liveUpdate(vm.host.kernel.spawn());
    expect(ls(vm.host.kernel.spawn(), '/sys/kernel/iommufd_persisted')).toEqual([String(vm.pid)]);
  });

  it('records are frozen from DUMP to ABORT: a context released meanwhile comes back after the kexec, and only ABORT drops its pins', () => {
    for (const abort of [false, true]) {
      const vm = bootVm();
      khoWrite(vm.p, '1');
      vm.p.close(vm.dev);
      vm.p.close(vm.fd);
      const gm = vm.host.kernel.guestmemfs!;
      if (abort) {
        khoWrite(vm.p, '0');
        expect([...gm.pinTable.entries()]).toEqual([]);
        expect(gm.inodeByIno(vm.ino)!.pins).toBe(0);
        vm.p.unlink(FILE);
        continue;
      }
      vm.host.kexec();
      const q = vm.host.kernel.spawn();
      const fd = claim(q, vm.pid);
      expect(q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1, iova: 0n, length: U64_MAX }).length).toBe(LEN_SP + LEN_4K);
    }
  });

  it('an area missing from the blob: the context is not offered (its records are not all accounted for)', () => {
    const vm = bootVm();
    const log = updateWithEditedBlob(vm, (t) => {
      const ioas = child(ioases(t, vm.pid), String(vm.ioas));
      ioas.children = ioas.children.filter((c) => c.name !== '1');
    });
    expect(log).toMatch(new RegExp(`iommufds/${vm.pid} not restored: 1 of its long-term pins are not in the handover`));
    expect(ls(vm.host.kernel.spawn(), '/sys/kernel/iommufd_persisted')).toEqual([]);
    expect(log).toMatch(/guestmemfs: 2 long-term pins of the previous kernel released/);
  });

  it('IOASes are numbered by their old ids, whatever order the blob lists them in', () => {
    const vm = bootVm();
    // A second IOAS, a higher old id than the device's, mapping other pages at the same IOVA; the blob lists it first.
    const p = vm.p;
    const other = p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    expect(other).toBeGreaterThan(vm.ioas);
    p.ioctl(vm.fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: other, user_va: vm.va + 6n * MiB, length: 2n * MiB, iova: IOVA_SP });
    const log = updateWithEditedBlob(vm, (t) => ioases(t, vm.pid).children.reverse());
    expect(log).not.toMatch(/not restored|not adopted/);
    const q = vm.host.kernel.spawn();
    const { fd } = reattach(q, vm.pid, 1);
    // IOAS 1 is still the device's: it reads the guest's bytes at IOVA_SP, not the other IOAS's pages.
    expect(vm.host.device(BDF0).dma.read(IOVA_SP + GUEST_OFF, GUEST_BYTES.length)).toEqual(GUEST_BYTES);
    expect(q.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 2, iova: 0n, length: U64_MAX }).length).toBe(2n * MiB);
  });

  it('an IOAS naming a domain guestmemfs did not record for it: the context is not offered', () => {
    const vm = bootVm();
    const p = vm.p;
    // A second IOAS mapping exactly what the device's maps: the domain verifies against both.
    const twin = p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    p.ioctl(vm.fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: twin, user_va: vm.va, length: LEN_SP, iova: IOVA_SP });
    p.ioctl(vm.fd, IOMMU_IOAS_MAP, { flags: R | FIXED, ioas_id: twin, user_va: vm.va + 4n * MiB, length: LEN_4K, iova: IOVA_4K });
    const log = updateWithEditedBlob(vm, (t) => {
      const io = ioases(t, vm.pid);
      const domains = prop(child(io, String(vm.ioas)), 'domains');
      const other = child(io, String(twin));
      other.properties = other.properties.map((x) => (x.name === 'domains' ? { name: 'domains', value: domains } : x));
    });
    expect(log).toMatch(new RegExp(`iommufds/${vm.pid} not restored: IOAS ${twin}: 1 domains, guestmemfs recorded 0`));
    expect(log).toMatch(/not adopted: no persisted iommufd refers to it/);
    expect(vm.host.kernel.intel.domainOf(vm.sid0)).toBeUndefined();
    expect(ls(vm.host.kernel.spawn(), '/sys/kernel/iommufd_persisted')).toEqual([]);
  });

  it('the claimer must be allowed to open every file with the access its areas grant (EACCES; the context stays claimable)', () => {
    const vm = bootVm();
    // The VMM's file belongs to uid 1001 now (its VMM runs unprivileged in the next kernel).
    const gm = vm.host.kernel.guestmemfs!;
    gm.setU32(vm.ino - 2, 48, 1001);
    gm.setU32(vm.ino - 2, 52, 1001);
    liveUpdate(vm.p);
    // root without CAP_DAC_OVERRIDE reads the 0440 root attribute, but may not open a 0600 file of uid 1001.
    const q = vm.host.kernel.spawn({ uid: 0, capabilities: [] });
    const path = `/sys/kernel/iommufd_persisted/${vm.pid}/iommufd`;
    const f = q.open(path, O_RDONLY);
    expectErrno(() => q.read(f, 64), 'EACCES', 'read');
    expect(ls(vm.host.kernel.spawn(), '/sys/kernel/iommufd_persisted')).toEqual([String(vm.pid)]);
    expect(claim(vm.host.kernel.spawn(), vm.pid)).toBeGreaterThan(2);
  });

  it('the pin table has a size: a persistent IOAS_MAP past it is ENOMEM and leaves nothing behind', () => {
    const vm = bootVm();
    const gm = vm.host.kernel.guestmemfs!;
    const ioas = vm.p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const free = gm.pinTable.slots - [...gm.pinTable.entries()].length - [...gm.pinTable.holders()].length;
    const arg = { flags: R | FIXED, ioas_id: ioas, user_va: 0n, length: PAGE, iova: 0n };
    for (let i = 0; i < free; i++) {
      arg.user_va = vm.va + BigInt(i % 2048) * PAGE;
      arg.iova = (1n << 40n) + BigInt(i) * PAGE;
      vm.p.ioctl(vm.fd, IOMMU_IOAS_MAP, arg);
    }
    const pins = gm.inodeByIno(vm.ino)!.pins;
    arg.iova += PAGE;
    expectErrno(() => vm.p.ioctl(vm.fd, IOMMU_IOAS_MAP, arg), 'ENOMEM', 'ioctl');
    expect(gm.inodeByIno(vm.ino)!.pins).toBe(pins);
    expect(vm.p.ioctl(vm.fd, IOMMU_IOAS_UNMAP, { ioas_id: ioas, iova: 0n, length: U64_MAX }).length).toBe(BigInt(free) * PAGE);
    vm.p.ioctl(vm.fd, IOMMU_IOAS_MAP, arg);
  });

  it('a blob naming a superblock a guest wrote into its own RAM: that is not a filesystem', () => {
    const vm = bootVm();
    const gm = vm.host.kernel.guestmemfs!;
    // The guest forges a superblock at the start of its file's second 2 MiB block (a data block).
    const fake = vm.va + 2n * MiB;
    const block = gm.memory.read(gm.base, 4096);
    const forgedAt = BigInt(vm.host.kernel.guestmemfs!.filePfn(vm.ino, 512)) << 12n;
    const sb = new DataView(block.buffer, block.byteOffset, 4096);
    sb.setBigUint64(16, forgedAt, true);
    sb.setBigUint64(24, 2n, true);
    vm.p.memWrite(fake, block);
    const log = updateWithEditedBlob(vm, (t) => {
      const g = child(t, 'guestmemfs');
      const le = (v: bigint) => {
        const b = new Uint8Array(8);
        new DataView(b.buffer).setBigUint64(0, v, true);
        return b;
      };
      const mem = new Uint8Array(16);
      mem.set(le(forgedAt), 0);
      mem.set(le(4n * MiB), 8);
      g.properties = g.properties.map((x) => (x.name === 'base' ? { name: 'base', value: le(forgedAt) } : x.name === 'nblocks' ? { name: 'nblocks', value: le(2n) } : x.name === 'mem' ? { name: 'mem', value: mem } : x));
      expect(leU64(prop(g, 'base'))).toBe(forgedAt);
    });
    expect(log).toMatch(new RegExp(`guestmemfs not restored: guestmemfs: 0x${forgedAt.toString(16)} lies inside the filesystem at 0x${gm.base.toString(16)}`));
    expect(ls(vm.host.kernel.spawn(), '/sys/kernel/iommufd_persisted')).toEqual([]);
    // The device is blocked; the next kernel's guestmemfs is fresh.
    const q = vm.host.kernel.spawn();
    q.mount('guestmemfs', MNT);
    expect(ls(q, MNT)).toEqual([]);
  });
});

describe('the numbers a VMM re-attaches by stay what they were', () => {
  /** bootVm's context with a second IOAS (6 MiB of the file at IOVA_SP) that device 1 is attached to. */
  function twoDomains() {
    const vm = bootVm();
    const p = vm.p;
    p.close(vm.dev1);
    const second = p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    p.ioctl(vm.fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: second, user_va: vm.va + 6n * MiB, length: 2n * MiB, iova: IOVA_SP });
    const d1 = p.open('/dev/vfio/devices/vfio1', O_RDWR);
    p.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: vm.fd });
    p.ioctl(d1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: second });
    expect(second).toBeGreaterThan(vm.ioas);
    return vm;
  }

  it('an IOAS the blob leaves out (even an empty one): the context is not offered, so no IOAS takes its number', () => {
    const vm = bootVm();
    const empty = vm.p.ioctl(vm.fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const log = updateWithEditedBlob(vm, (t) => {
      const io = ioases(t, vm.pid);
      io.children = io.children.filter((c) => c.name !== String(empty));
    });
    expect(log).toMatch(new RegExp(`iommufds/${vm.pid} not restored: IOAS ${empty} of it is not in the handover`));
    expect(ls(vm.host.kernel.spawn(), '/sys/kernel/iommufd_persisted')).toEqual([]);
  });

  it('two IOASes swap their domains in the blob (consistent indices): refused, guestmemfs recorded which page table is whose', () => {
    const vm = twoDomains();
    const log = updateWithEditedBlob(vm, (t) => {
      const io = ioases(t, vm.pid);
      const [a, b] = [child(io, String(vm.ioas)), child(io, String(vm.ioas + 2))];
      const [da, db] = [prop(a, 'domains'), prop(b, 'domains')];
      a.properties = a.properties.map((x) => (x.name === 'domains' ? { name: 'domains', value: db } : x));
      b.properties = b.properties.map((x) => (x.name === 'domains' ? { name: 'domains', value: da } : x));
    });
    expect(log).toMatch(/not restored: IOAS \d+: domain \d+ is not the page table guestmemfs recorded for it/);
    expect(ls(vm.host.kernel.spawn(), '/sys/kernel/iommufd_persisted')).toEqual([]);
  });

  it('a domain the next kernel refuses keeps its HWPT number unused, in that kernel and after another update unclaimed', () => {
    for (const again of [false, true]) {
      const vm = twoDomains();
      khoWrite(vm.p, '1');
      // Device 0's domain: a leaf PTE redirected (the table disagrees with the records: refused).
      const steps = vm.host.kernel.intel.domainOf(vm.sid0)!.pt.walk(IOVA_SP);
      vm.host.memory.writeU64(steps[steps.length - 1]!.ptePa, steps[steps.length - 1]!.pte ^ (1n << 21n));
      vm.host.kexec();
      expect(vm.host.kernel.dmesg().join('\n')).toMatch(/DMAR: persistent domain \(persistent id 1, did \d+\) not adopted/);
      if (again) liveUpdate(vm.host.kernel.spawn());
      const q = vm.host.kernel.spawn();
      const fd = claim(q, vm.pid);
      // IOASes 1 and 2; HWPT 3 was device 0's (refused: no such object), HWPT 4 device 1's.
      const d0 = q.open('/dev/vfio/devices/vfio0', O_RDWR);
      q.ioctl(d0, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
      expectErrno(() => q.ioctl(d0, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 3 }), 'ENOENT', 'ioctl');
      const d1 = q.open('/dev/vfio/devices/vfio1', O_RDWR);
      q.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
      expect(q.ioctl(d1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: 4 }).pt_id).toBe(4);
      expect(vm.host.kernel.intel.domainOf(vm.sid1)!.persistentId).toBe(vm.pid);
      // A new object does not take the refused HWPT's number (5 and 6 are the two devices).
      expect(q.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id).toBe(7);
    }
  });
});
