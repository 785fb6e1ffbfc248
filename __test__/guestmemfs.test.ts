// guestmemfs, sysfs and process credentials, through the syscall surface.
//
// guestmemfs (reference persistence-rfc.md §2, the live-update issue): a `guestmemfs=` carve-out
// taken at cold boot out of the page allocator, one mount, files that grow and shrink in 2 MiB
// blocks all or nothing, mmap(MAP_SHARED) as the only data path, EBUSY while KHO has serialised it.
// Its superblock, inodes, bitmap and block maps must be bytes in the carve-out, so every test that
// changes the filesystem also decodes it straight from physical memory (layout: the header of
// ts/kernel/guestmemfs/guestmemfs.ts) and checks that it agrees with what stat/readdir report and
// that file data sits at the physical addresses the block maps name. A fast-check property runs
// random create/ftruncate/unlink/KHO sequences against a model of the free blocks.
//
// sysfs: attributes with a mode and an owner, opened with kernfs's rules (EACCES for a reader
// without permission, and for any write open of an attribute without a store, root included).
// Credentials: uid, gid and capabilities from spawn(); /dev/iommu 0660 root:root; RLIMIT_MODE SET
// needs CAP_SYS_RESOURCE; mount needs CAP_SYS_ADMIN.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DT_DIR,
  DT_REG,
  Host,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  KernelError,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  O_CREAT,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  type ErrnoCode,
} from 'iommu-liveupdate';
import { expectErrno } from './helpers.js';

const MiB = 1n << 20n;
const GiB = 1n << 30n;
const BLOCK = 2n * MiB;
const MNT = '/mnt/guestmemfs';
const RW = PROT_READ | PROT_WRITE;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

// ---- helpers ---------------------------------------------------------------------------------------

/** A host with a carve-out, guestmemfs mounted by a root process. */
function mounted(cmdline = 'guestmemfs=64M', memory = 1n * GiB) {
  const host = Host.boot({ memory, cmdline });
  const fs = host.kernel.guestmemfs!;
  expect(fs).not.toBeNull();
  const p = host.kernel.spawn();
  p.mount('guestmemfs', MNT);
  return { host, fs, p };
}

/** An inode as it sits in the carve-out's inode table. */
interface DiskInode {
  slot: number;
  flags: number;
  mode: number;
  ino: bigint;
  size: bigint;
  mapBlock: bigint;
  nblocks: bigint;
  pins: number;
  nlink: number;
  uid: number;
  gid: number;
  name: string;
  /** Data block indices, from the map block. */
  blocks: bigint[];
}

/** The filesystem decoded from physical memory alone (superblock, inode table, bitmap, block maps). */
function decodeFs(host: Host, base: bigint) {
  const m = host.memory;
  const sb = new DataView(m.read(base, 56).buffer);
  const sbv = {
    magic: dec(m.read(base, 8)),
    version: sb.getUint32(8, true),
    flags: sb.getUint32(12, true),
    base: sb.getBigUint64(16, true),
    nblocks: sb.getBigUint64(24, true),
    maxInodes: sb.getUint32(32, true),
    inodeSize: sb.getUint32(36, true),
    inodeTable: sb.getBigUint64(40, true),
    bitmap: sb.getBigUint64(48, true),
  };
  const nblocks = Number(sbv.nblocks);
  const table = m.read(base + sbv.inodeTable, sbv.maxInodes * sbv.inodeSize);
  const tv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const inodes: DiskInode[] = [];
  for (let s = 0; s < sbv.maxInodes; s++) {
    const o = s * sbv.inodeSize;
    const flags = tv.getUint32(o, true);
    if (!(flags & 1)) continue;
    const nameBytes = table.subarray(o + 64, o + sbv.inodeSize);
    const end = nameBytes.indexOf(0);
    const ino: DiskInode = {
      slot: s,
      flags,
      mode: tv.getUint32(o + 4, true),
      ino: tv.getBigUint64(o + 8, true),
      size: tv.getBigUint64(o + 16, true),
      mapBlock: tv.getBigUint64(o + 24, true),
      nblocks: tv.getBigUint64(o + 32, true),
      pins: tv.getUint32(o + 40, true),
      nlink: tv.getUint32(o + 44, true),
      uid: tv.getUint32(o + 48, true),
      gid: tv.getUint32(o + 52, true),
      name: dec(nameBytes.subarray(0, end < 0 ? nameBytes.length : end)),
      blocks: [],
    };
    if (ino.nblocks > 0n) {
      const map = m.read(base + ino.mapBlock * BLOCK, Number(ino.nblocks) * 8);
      const mv = new DataView(map.buffer, map.byteOffset, map.byteLength);
      for (let i = 0; i < Number(ino.nblocks); i++) ino.blocks.push(mv.getBigUint64(i * 8, true));
    }
    inodes.push(ino);
  }
  const bm = m.read(base + sbv.bitmap, Math.ceil(nblocks / 8));
  const used = new Set<number>();
  for (let b = 0; b < nblocks; b++) if ((bm[b >> 3]! >> (b & 7)) & 1) used.add(b);
  return { sb: sbv, inodes, used, bitmapBytes: bm };
}

/**
 * The on-memory filesystem is self-consistent: block 0 is metadata; every in-use inode's map block
 * and data blocks are inside the carve-out, distinct across all files, and exactly the bitmap's set
 * bits; a file has ceil(size / 2 MiB) data blocks and a map block iff it has any.
 */
function checkConsistent(host: Host, base: bigint) {
  const d = decodeFs(host, base);
  const nb = d.sb.nblocks;
  const owned = new Set<number>([0]);
  const claim = (b: bigint) => {
    expect(b > 0n && b < nb, `block ${b} inside the carve-out`).toBe(true);
    expect(owned.has(Number(b)), `block ${b} owned once`).toBe(false);
    owned.add(Number(b));
  };
  for (const i of d.inodes) {
    expect(i.nblocks).toBe((i.size + BLOCK - 1n) / BLOCK);
    if (i.nblocks > 0n) claim(i.mapBlock);
    else expect(i.mapBlock).toBe(0n);
    for (const b of i.blocks) claim(b);
  }
  expect([...d.used].sort((a, b) => a - b)).toEqual([...owned].sort((a, b) => a - b));
  return d;
}

/** The inode of `name` in the carve-out. */
function diskInode(host: Host, base: bigint, name: string): DiskInode {
  const i = decodeFs(host, base).inodes.find((x) => x.name === name && x.nlink > 0);
  expect(i, `inode ${name} in the carve-out`).toBeDefined();
  return i!;
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + 1) & 0xff);

// ---- the carve-out ---------------------------------------------------------------------------------

describe('guestmemfs carve-out at cold boot', () => {
  it('guestmemfs=16G reserves a contiguous, 2 MiB-aligned region out of the page allocator, with an empty filesystem in it', () => {
    const host = Host.boot({ memory: 64n * GiB, cmdline: 'guestmemfs=16G' });
    const fs = host.kernel.guestmemfs!;
    expect(fs).not.toBeNull();
    const size = 16n * GiB;
    expect(fs.nblocks).toBe(8192);
    expect(fs.base % BLOCK).toBe(0n);
    expect(fs.base + size <= host.memory.size).toBe(true);
    expect(host.memory.isAllocated(fs.base, size)).toBe(true);
    // Block 0 holds the metadata; every other block is free.
    expect(fs.freeBlocks()).toBe(8191);
    // The superblock is bytes in physical memory: "GMEMFS01" little-endian, then base and size.
    expect(host.memory.readU64(fs.base)).toBe(0x3130_5346_4d45_4d47n);
    const d = checkConsistent(host, fs.base);
    expect(d.sb).toMatchObject({ magic: 'GMEMFS01', base: fs.base, nblocks: 8192n, flags: 0 });
    expect(d.inodes).toEqual([]);
    expect(d.used).toEqual(new Set([0]));
    expect(host.kernel.dmesg().some((l) => /guestmemfs: reserved 16384 MiB at 0x[0-9a-f]+/.test(l))).toBe(true);
    // The allocator hands out nothing inside it: 3000 huge and 3000 small allocations.
    const inside = (pa: bigint, len: bigint) => pa < fs.base + size && pa + len > fs.base;
    for (let i = 0; i < 3000; i++) {
      expect(inside(host.memory.alloc(9), BLOCK)).toBe(false);
      expect(inside(host.memory.alloc(0), 4096n)).toBe(false);
    }
  });

  it('Host.boot({ guestmemfs }) is the same as the command-line parameter', () => {
    const a = Host.boot({ memory: 64n * GiB, cmdline: 'guestmemfs=16G' }).kernel.guestmemfs!;
    const hb = Host.boot({ memory: 64n * GiB, guestmemfs: 16n << 30n });
    const b = hb.kernel.guestmemfs!;
    expect({ base: b.base, nblocks: b.nblocks }).toEqual({ base: a.base, nblocks: a.nblocks });
    expect(hb.memory.isAllocated(b.base, 16n * GiB)).toBe(true);
  });

  it('the page allocator, run dry, never returns a frame of the carve-out', () => {
    const host = Host.boot({ memory: 1n * GiB, guestmemfs: 256n * MiB, seed: 3 });
    const fs = host.kernel.guestmemfs!;
    const end = fs.base + 256n * MiB;
    const free = host.memory.stats().framesFree;
    // The carve-out is not free memory: only what is outside it (less the reserved low 1 MiB and
    // the kernel's boot allocations) is.
    expect(BigInt(free) <= (host.memory.size - 256n * MiB - MiB) / 4096n).toBe(true);
    let frames = 0n;
    const drain = (order: number) => {
      for (;;) {
        let pa: bigint;
        try {
          pa = host.memory.alloc(order);
        } catch (e) {
          expect((e as { code?: string }).code).toBe('ERR_PHYSMEM_NOMEM');
          return;
        }
        const len = 4096n << BigInt(order);
        expect(pa + len <= fs.base || pa >= end, `0x${pa.toString(16)} outside the carve-out`).toBe(true);
        frames += len / 4096n;
      }
    };
    drain(9);
    drain(0);
    // Every free frame was handed out, none of them inside the carve-out.
    expect(frames).toBe(BigInt(free));
    expect(host.memory.stats().framesFree).toBe(0);
    expect(host.memory.isAllocated(fs.base, 256n * MiB)).toBe(true);
    // And the carve-out still works: its blocks come from the region, not the (empty) allocator.
    const p = host.kernel.spawn();
    p.mount('guestmemfs', MNT);
    const fd = p.open(`${MNT}/f`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(fd, 100n * MiB);
    expect(fs.freeBlocks()).toBe(128 - 1 - 50 - 1);
    checkConsistent(host, fs.base);
  });

  it('sizes: rounded down to whole 2 MiB blocks; less than two blocks, none at all, or more than memory reserves nothing', () => {
    const five = Host.boot({ memory: 1n * GiB, cmdline: 'guestmemfs=5M' }).kernel.guestmemfs!;
    expect(five.nblocks).toBe(2);
    expect(Host.boot({ memory: 1n * GiB, cmdline: 'guestmemfs=262144K' }).kernel.guestmemfs!.nblocks).toBe(128);
    for (const cfg of [{ cmdline: 'guestmemfs=3M' }, {}, { cmdline: 'guestmemfs=2G' }, { cmdline: 'quiet' }]) {
      const host = Host.boot({ memory: 1n * GiB, ...cfg });
      expect(host.kernel.guestmemfs).toBeNull();
      // Nothing to mount: ENOMEM.
      expectErrno(() => host.kernel.spawn().mount('guestmemfs', MNT), 'ENOMEM', 'mount', MNT);
    }
  });
});

// ---- mount -----------------------------------------------------------------------------------------

describe('mount', () => {
  it('one mount, CAP_SYS_ADMIN, guestmemfs only', () => {
    const host = Host.boot({ memory: 1n * GiB, cmdline: 'guestmemfs=64M' });
    const root = host.kernel.spawn();
    // Nothing is there before the mount.
    expectErrno(() => root.open(`${MNT}/f`, O_CREAT | O_RDWR), 'ENOENT', 'open', `${MNT}/f`);
    expectErrno(() => root.mount('ext4', MNT), 'ENODEV', 'mount', MNT);
    expectErrno(() => host.kernel.spawn({ uid: 1000 }).mount('guestmemfs', MNT), 'EPERM', 'mount');
    // The check is the capability, not the uid.
    expectErrno(() => host.kernel.spawn({ uid: 0, capabilities: ['CAP_DAC_OVERRIDE', 'CAP_SYS_RESOURCE'] }).mount('guestmemfs', MNT), 'EPERM', 'mount');
    // Without the capability the fstype is not even looked at.
    expectErrno(() => host.kernel.spawn({ uid: 1000 }).mount('ext4', MNT), 'EPERM', 'mount');
    expect(host.kernel.guestmemfs!.mountpoint).toBeNull();
    host.kernel.spawn({ uid: 1000, capabilities: ['CAP_SYS_ADMIN'] }).mount('guestmemfs', MNT);
    expect(host.kernel.guestmemfs!.mountpoint).toBe(MNT);
    // Single mount point: a second one is EBUSY, wherever it goes.
    expectErrno(() => root.mount('guestmemfs', MNT), 'EBUSY', 'mount', MNT);
    expectErrno(() => root.mount('guestmemfs', '/mnt/other'), 'EBUSY', 'mount', '/mnt/other');
    const st = root.stat(MNT);
    expect(st.st_mode).toBe(S_IFDIR | 0o755);
    expect(st.st_ino).toBe(1n);
  });
});

// ---- files -----------------------------------------------------------------------------------------

describe('guestmemfs files', () => {
  it('open: O_CREAT creates, O_EXCL on an existing name is EEXIST, a missing name without O_CREAT is ENOENT', () => {
    const { host, fs, p } = mounted();
    const fd = p.open(`${MNT}/a`, O_CREAT | O_RDWR, 0o600);
    expect(fd).toBe(3);
    const st = p.stat(`${MNT}/a`);
    expect(st).toMatchObject({ st_mode: S_IFREG | 0o600, st_size: 0n, st_blocks: 0n, st_nlink: 1, st_uid: 0, st_gid: 0 });
    expect(typeof st.st_ino).toBe('bigint');
    expect(typeof st.st_size).toBe('bigint');
    // Opening it again (with or without O_CREAT) is the same inode.
    const fd2 = p.open(`${MNT}/a`, O_RDWR);
    const fd3 = p.open(`${MNT}/a`, O_CREAT | O_RDWR);
    expect([fd2, fd3]).toEqual([4, 5]);
    expect(p.stat(`${MNT}/a`).st_ino).toBe(st.st_ino);
    expectErrno(() => p.open(`${MNT}/a`, O_CREAT | O_EXCL | O_RDWR), 'EEXIST', 'open', `${MNT}/a`);
    expectErrno(() => p.open(`${MNT}/missing`, O_RDWR), 'ENOENT', 'open', `${MNT}/missing`);
    expectErrno(() => p.stat(`${MNT}/missing`), 'ENOENT', 'stat', `${MNT}/missing`);
    // One flat directory.
    expectErrno(() => p.open(`${MNT}/dir/b`, O_CREAT | O_RDWR), 'ENOENT', 'open');
    // Names are at most 191 bytes.
    p.close(p.open(`${MNT}/${'n'.repeat(191)}`, O_CREAT | O_RDWR));
    expectErrno(() => p.open(`${MNT}/${'n'.repeat(192)}`, O_CREAT | O_RDWR), 'ENAMETOOLONG', 'open');
    // The inode is in the carve-out: name, mode, ino, owner, one link.
    const di = diskInode(host, fs.base, 'a');
    expect(di).toMatchObject({ mode: S_IFREG | 0o600, ino: st.st_ino, size: 0n, nlink: 1, uid: 0, gid: 0, pins: 0 });
    checkConsistent(host, fs.base);
  });

  it('readdir lists ".", ".." and every file, with the inode numbers stat reports', () => {
    const { p } = mounted();
    for (const n of ['guest-ram', 'b', 'c']) p.close(p.open(`${MNT}/${n}`, O_CREAT | O_RDWR, 0o644));
    const ents = p.readdir(MNT);
    expect(ents.slice(0, 2)).toEqual([
      { d_ino: 1n, d_type: DT_DIR, d_name: '.' },
      { d_ino: 1n, d_type: DT_DIR, d_name: '..' },
    ]);
    const files = ents.slice(2);
    expect(files.map((e) => e.d_name).sort()).toEqual(['b', 'c', 'guest-ram']);
    for (const e of files) {
      expect(e.d_type).toBe(DT_REG);
      expect(e.d_ino).toBe(p.stat(`${MNT}/${e.d_name}`).st_ino);
    }
    expect(new Set(files.map((e) => e.d_ino)).size).toBe(3);
    expect(p.readdir(`${MNT}/`)).toEqual(ents);
    expectErrno(() => p.readdir(`${MNT}/b`), 'ENOTDIR', 'getdents64');
    expectErrno(() => p.readdir(`${MNT}/zz`), 'ENOENT', 'getdents64');
  });

  it('ftruncate allocates whole 2 MiB blocks from the carve-out (plus one map block) and frees them again', () => {
    const { host, fs, p } = mounted('guestmemfs=64M'); // 32 blocks: 31 free
    const fd = p.open(`${MNT}/f`, O_CREAT | O_RDWR, 0o600);
    const steps: [bigint, number][] = [
      [1n, 1], // one byte: one data block
      [BLOCK, 1],
      [BLOCK + 1n, 2],
      [10n * MiB - 5n, 5],
      [3n * MiB, 2], // shrink
      [0n, 0], // empty: the map block goes too
      [7n * MiB, 4],
    ];
    for (const [size, blocks] of steps) {
      p.ftruncate(fd, size);
      const st = p.stat(`${MNT}/f`);
      expect(st.st_size).toBe(size);
      expect(st.st_blocks).toBe((BigInt(blocks) * BLOCK) / 512n);
      expect(fs.freeBlocks()).toBe(31 - blocks - (blocks ? 1 : 0));
      const di = diskInode(host, fs.base, 'f');
      expect(di.size).toBe(size);
      expect(di.blocks.length).toBe(blocks);
      checkConsistent(host, fs.base);
    }
    expectErrno(() => p.ftruncate(fd, -1n), 'EINVAL', 'ftruncate');
    // Larger than one map block can describe (512 GiB): EFBIG.
    expectErrno(() => p.ftruncate(fd, 512n * GiB + 1n), 'EFBIG', 'ftruncate');
    const ro = p.open(`${MNT}/f`, O_RDONLY);
    expectErrno(() => p.ftruncate(ro, 0n), 'EINVAL', 'ftruncate');
    expectErrno(() => p.ftruncate(99, 0n), 'EBADF', 'ftruncate');
    expect(p.stat(`${MNT}/f`).st_size).toBe(7n * MiB);
  });

  it('ftruncate past the free blocks is ENOMEM and changes nothing (size, free blocks, bitmap, block map)', () => {
    const { host, fs, p } = mounted('guestmemfs=64M');
    const a = p.open(`${MNT}/a`, O_CREAT | O_RDWR, 0o600);
    const b = p.open(`${MNT}/b`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(a, 40n * MiB); // 20 data + 1 map: 10 left
    p.ftruncate(b, 6n * MiB); // 3 + 1: 6 left
    expect(fs.freeBlocks()).toBe(6);
    const before = decodeFs(host, fs.base);
    // b needs 7 more blocks, 6 are free.
    expectErrno(() => p.ftruncate(b, 20n * MiB), 'ENOMEM', 'ftruncate');
    // a new file needs 7 + its map block.
    const c = p.open(`${MNT}/c`, O_CREAT | O_RDWR, 0o600);
    expectErrno(() => p.ftruncate(c, 14n * MiB), 'ENOMEM', 'ftruncate');
    // Exactly as many as are free (5 data + 1 map) works.
    const mid = decodeFs(host, fs.base);
    expect(mid.used).toEqual(before.used);
    expect(mid.inodes.find((i) => i.name === 'b')).toEqual(before.inodes.find((i) => i.name === 'b'));
    expect(p.stat(`${MNT}/b`).st_size).toBe(6n * MiB);
    expect(p.stat(`${MNT}/c`).st_size).toBe(0n);
    expect(fs.freeBlocks()).toBe(6);
    p.ftruncate(c, 10n * MiB);
    expect(fs.freeBlocks()).toBe(0);
    expectErrno(() => p.ftruncate(a, 40n * MiB + 1n), 'ENOMEM', 'ftruncate');
    expect(p.stat(`${MNT}/a`).st_size).toBe(40n * MiB);
    // Growing within the last block needs no block.
    p.ftruncate(a, 40n * MiB - 1n);
    p.ftruncate(a, 40n * MiB);
    checkConsistent(host, fs.base);
  });

  it('read and write are EINVAL, MAP_PRIVATE is EINVAL: mmap(MAP_SHARED) is the only data path', () => {
    const { p } = mounted();
    const fd = p.open(`${MNT}/f`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(fd, BLOCK);
    expectErrno(() => p.read(fd, 16), 'EINVAL', 'read');
    expectErrno(() => p.write(fd, enc('hello')), 'EINVAL', 'write');
    expectErrno(() => p.mmap(null, BLOCK, RW, MAP_PRIVATE, fd), 'EINVAL', 'mmap');
    expectErrno(() => p.mmap(null, BLOCK, PROT_READ, MAP_PRIVATE, fd), 'EINVAL', 'mmap');
    // A shared writable mapping of a read-only fd is EACCES, as for any file.
    const ro = p.open(`${MNT}/f`, O_RDONLY);
    expectErrno(() => p.mmap(null, BLOCK, RW, MAP_SHARED, ro), 'EACCES', 'mmap');
    const rova = p.mmap(null, BLOCK, PROT_READ, MAP_SHARED, ro);
    const va = p.mmap(null, BLOCK, RW, MAP_SHARED, fd);
    p.memWrite(va + 5n, enc('data'));
    expect(dec(p.memRead(rova + 5n, 4))).toBe('data');
    // A mapping longer than the file: past EOF is SIGBUS (EFAULT here).
    const long = p.mmap(null, 2n * BLOCK, RW, MAP_SHARED, fd);
    expect(dec(p.memRead(long + 5n, 4))).toBe('data');
    expectErrno(() => p.memWrite(long + BLOCK, enc('x')), 'EFAULT', 'memWrite');
    expectErrno(() => p.memRead(long + BLOCK, 1), 'EFAULT', 'memRead');
    // The directory cannot be read either.
    const dir = p.open(MNT, O_RDONLY);
    expectErrno(() => p.read(dir, 1), 'EISDIR', 'read');
    expectErrno(() => p.open(MNT, O_RDWR), 'EISDIR', 'open');
  });

  it('file data written through the mapping is at the physical addresses the block map in the carve-out names', () => {
    const { host, fs, p } = mounted('guestmemfs=64M');
    const fd = p.open(`${MNT}/guest-ram`, O_CREAT | O_RDWR, 0o600);
    // Fragment the free space first so that the file's blocks are not simply consecutive.
    const junk = p.open(`${MNT}/junk`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(junk, 4n * MiB);
    const spacer = p.open(`${MNT}/spacer`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(spacer, BLOCK);
    p.ftruncate(junk, BLOCK);
    p.ftruncate(fd, 6n * MiB);
    const va = p.mmap(null, 6n * MiB, RW, MAP_SHARED, fd);
    expect(va % BLOCK).toBe(0n);
    const di = diskInode(host, fs.base, 'guest-ram');
    expect(di.blocks.length).toBe(3);
    const pa = (off: bigint) => fs.base + di.blocks[Number(off / BLOCK)]! * BLOCK + (off % BLOCK);
    for (const [k, off] of [0n, 4095n, BLOCK - 3n, BLOCK + 12345n, 5n * MiB + 7n, 6n * MiB - 64n].entries()) {
      const data = pattern(64, k);
      p.memWrite(va + off, data);
      // A write straddling a block boundary lands in two blocks.
      const got = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) got[i] = host.memory.read(pa(off + BigInt(i)), 1)[0]!;
      expect(got).toEqual(data);
    }
    // And the other way: bytes put at the physical address are what the process reads.
    host.memory.write(pa(3n * MiB), enc('from-pa'));
    expect(dec(p.memRead(va + 3n * MiB, 7))).toBe('from-pa');
    // A mapping at a file offset sees the same blocks.
    const va2 = p.mmap(null, BLOCK, PROT_READ, MAP_SHARED, fd, 2n * BLOCK);
    expect(p.memRead(va2 + (5n * MiB + 7n - 2n * BLOCK), 8)).toEqual(p.memRead(va + 5n * MiB + 7n, 8));
    // The metadata moved along in the carve-out.
    checkConsistent(host, fs.base);
  });

  it('mmap honours MAP_FIXED: a file mapped over part of an anonymous mapping at the given address', () => {
    const { host, fs, p } = mounted();
    const fd = p.open(`${MNT}/f`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(fd, BLOCK);
    const anon = p.mmap(null, 8n * MiB, RW, MAP_SHARED | MAP_ANONYMOUS);
    p.memWrite(anon, enc('anon-low'));
    p.memWrite(anon + 6n * MiB, enc('anon-high'));
    const at = anon + 2n * MiB;
    expect(p.mmap(at, BLOCK, RW, MAP_SHARED | MAP_FIXED, fd)).toBe(at);
    p.memWrite(at + 100n, enc('file'));
    const di = diskInode(host, fs.base, 'f');
    expect(dec(host.memory.read(fs.base + di.blocks[0]! * BLOCK + 100n, 4))).toBe('file');
    expect(dec(p.memRead(anon, 8))).toBe('anon-low');
    expect(dec(p.memRead(anon + 6n * MiB, 9))).toBe('anon-high');
    // A fixed address of our choosing, nothing there before.
    const fixed = 0x2000_0000_0000n;
    expect(p.mmap(fixed, BLOCK, PROT_READ, MAP_SHARED | MAP_FIXED, fd)).toBe(fixed);
    expect(dec(p.memRead(fixed + 100n, 4))).toBe('file');
    expectErrno(() => p.mmap(fixed + 1n, BLOCK, PROT_READ, MAP_SHARED | MAP_FIXED, fd), 'EINVAL', 'mmap');
  });

  it('new blocks read as zeros: neither an earlier size nor a deleted file shows through', () => {
    const { fs, p } = mounted('guestmemfs=16M'); // 8 blocks
    const a = p.open(`${MNT}/a`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(a, 4n * MiB);
    let va = p.mmap(null, 4n * MiB, RW, MAP_SHARED, a);
    p.memWrite(va + 3n * MiB, enc('secret'));
    p.munmap(va, 4n * MiB);
    p.ftruncate(a, BLOCK);
    p.ftruncate(a, 4n * MiB);
    va = p.mmap(null, 4n * MiB, RW, MAP_SHARED, a);
    expect(p.memRead(va + 3n * MiB, 6)).toEqual(new Uint8Array(6));
    p.memWrite(va, enc('secret'));
    p.memWrite(va + 3n * MiB, enc('secret'));
    p.munmap(va, 4n * MiB);
    p.close(a);
    p.unlink(`${MNT}/a`);
    expect(fs.freeBlocks()).toBe(7);
    // b takes every block there is, a's among them.
    const b = p.open(`${MNT}/b`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(b, 12n * MiB);
    expect(fs.freeBlocks()).toBe(0);
    const vb = p.mmap(null, 12n * MiB, PROT_READ, MAP_SHARED, b);
    for (let off = 0n; off < 12n * MiB; off += MiB) expect(p.memRead(vb + off, 6)).toEqual(new Uint8Array(6));
  });

  it('O_TRUNC empties an existing file', () => {
    const { fs, p } = mounted();
    const a = p.open(`${MNT}/a`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(a, 6n * MiB);
    const free = fs.freeBlocks();
    p.close(p.open(`${MNT}/a`, O_RDWR | O_TRUNC));
    expect(p.stat(`${MNT}/a`).st_size).toBe(0n);
    expect(fs.freeBlocks()).toBe(free + 4);
  });

  it('unlink removes the name at once and the blocks with the last open file or mapping', () => {
    const { host, fs, p } = mounted('guestmemfs=64M');
    const fd = p.open(`${MNT}/f`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(fd, 4n * MiB);
    const va = p.mmap(null, 4n * MiB, RW, MAP_SHARED, fd);
    p.memWrite(va, enc('still here'));
    expect(fs.freeBlocks()).toBe(28);
    p.unlink(`${MNT}/f`);
    expectErrno(() => p.stat(`${MNT}/f`), 'ENOENT', 'stat');
    expect(p.readdir(MNT).map((e) => e.d_name)).toEqual(['.', '..']);
    expectErrno(() => p.open(`${MNT}/f`, O_RDWR), 'ENOENT', 'open');
    expectErrno(() => p.unlink(`${MNT}/f`), 'ENOENT', 'unlink', `${MNT}/f`);
    // Open and mapped: the blocks stay and the data is still there.
    expect(fs.freeBlocks()).toBe(28);
    expect(dec(p.memRead(va, 10))).toBe('still here');
    // The name is free for a new file right away (a different inode).
    const g = p.open(`${MNT}/f`, O_CREAT | O_EXCL | O_RDWR, 0o600);
    expect(diskInode(host, fs.base, 'f').nblocks).toBe(0n);
    p.close(g);
    p.close(fd);
    expect(fs.freeBlocks()).toBe(28);
    p.munmap(va, 4n * MiB);
    expect(fs.freeBlocks()).toBe(31);
    checkConsistent(host, fs.base);
    // The directory itself cannot be unlinked.
    expectErrno(() => p.unlink(MNT), 'EISDIR', 'unlink');
  });

  it('unprivileged users: the root directory is 0755 root, files keep their mode', () => {
    const { host, p } = mounted();
    const user = host.kernel.spawn({ uid: 1000 });
    expectErrno(() => user.open(`${MNT}/u`, O_CREAT | O_RDWR, 0o600), 'EACCES', 'open');
    p.close(p.open(`${MNT}/private`, O_CREAT | O_RDWR, 0o600));
    p.close(p.open(`${MNT}/public`, O_CREAT | O_RDWR, 0o644));
    expectErrno(() => user.open(`${MNT}/private`, O_RDONLY), 'EACCES', 'open');
    user.close(user.open(`${MNT}/public`, O_RDONLY));
    expectErrno(() => user.open(`${MNT}/public`, O_RDWR), 'EACCES', 'open');
    expectErrno(() => user.unlink(`${MNT}/public`), 'EACCES', 'unlink');
    // stat and readdir need no permission on the file.
    expect(user.stat(`${MNT}/private`).st_mode).toBe(S_IFREG | 0o600);
    expect(user.readdir(MNT).length).toBe(4);
    // CAP_DAC_OVERRIDE overrides.
    const admin = host.kernel.spawn({ uid: 1000, capabilities: ['CAP_DAC_OVERRIDE'] });
    admin.close(admin.open(`${MNT}/private`, O_RDWR));
    const made = admin.open(`${MNT}/by-admin`, O_CREAT | O_RDWR, 0o640);
    expect(admin.stat(`${MNT}/by-admin`)).toMatchObject({ st_uid: 1000, st_gid: 1000, st_mode: S_IFREG | 0o640 });
    admin.close(made);
  });

  it('while KHO has serialised it, create, ftruncate and unlink are EBUSY; abort makes it writable again', () => {
    const { host, fs, p } = mounted('guestmemfs=64M');
    const fd = p.open(`${MNT}/ram`, O_CREAT | O_RDWR, 0o600);
    p.ftruncate(fd, 4n * MiB);
    p.close(p.open(`${MNT}/other`, O_CREAT | O_RDWR, 0o600));
    const va = p.mmap(null, 4n * MiB, RW, MAP_SHARED, fd);
    expect(fs.serialised).toBe(false);
    const before = decodeFs(host, fs.base);
    fs.khoDump();
    expect(fs.serialised).toBe(true);
    // The flag is in the superblock, in the carve-out.
    expect(decodeFs(host, fs.base).sb.flags & 1).toBe(1);
    expectErrno(() => p.open(`${MNT}/new`, O_CREAT | O_RDWR, 0o600), 'EBUSY', 'open', `${MNT}/new`);
    expectErrno(() => p.ftruncate(fd, 8n * MiB), 'EBUSY', 'ftruncate');
    expectErrno(() => p.ftruncate(fd, BLOCK), 'EBUSY', 'ftruncate');
    expectErrno(() => p.ftruncate(fd, 4n * MiB), 'EBUSY', 'ftruncate');
    expectErrno(() => p.unlink(`${MNT}/other`), 'EBUSY', 'unlink');
    expectErrno(() => p.open(`${MNT}/other`, O_RDWR | O_TRUNC), 'EBUSY', 'open');
    // Nothing changed in the carve-out, apart from the flag.
    const during = decodeFs(host, fs.base);
    expect({ inodes: during.inodes, used: during.used }).toEqual({ inodes: before.inodes, used: before.used });
    // Lookups, opens of existing files and the data path keep working.
    p.close(p.open(`${MNT}/other`, O_RDWR));
    p.close(p.open(`${MNT}/other`, O_CREAT | O_RDWR));
    expect(p.stat(`${MNT}/ram`).st_size).toBe(4n * MiB);
    expect(p.readdir(MNT).length).toBe(4);
    p.memWrite(va, enc('guest'));
    expect(dec(p.memRead(va, 5))).toBe('guest');
    const va2 = p.mmap(null, 4n * MiB, PROT_READ, MAP_SHARED, fd);
    expect(dec(p.memRead(va2, 5))).toBe('guest');
    fs.khoAbort();
    expect(fs.serialised).toBe(false);
    expect(decodeFs(host, fs.base).sb.flags & 1).toBe(0);
    p.close(p.open(`${MNT}/new`, O_CREAT | O_RDWR, 0o600));
    p.ftruncate(fd, 8n * MiB);
    p.unlink(`${MNT}/other`);
    expect(p.readdir(MNT).map((e) => e.d_name).sort()).toEqual(['.', '..', 'new', 'ram']);
    checkConsistent(host, fs.base);
  });

  it('at most 1024 files: the next create is ENOSPC', () => {
    const { p } = mounted('guestmemfs=8M');
    for (let i = 0; i < 1024; i++) p.close(p.open(`${MNT}/f${i}`, O_CREAT | O_RDWR, 0o600));
    expectErrno(() => p.open(`${MNT}/one-more`, O_CREAT | O_RDWR, 0o600), 'ENOSPC', 'open');
    p.unlink(`${MNT}/f17`);
    p.close(p.open(`${MNT}/one-more`, O_CREAT | O_RDWR, 0o600));
  });
});

// ---- property: ftruncate sequences against a model -------------------------------------------------

describe('property: create / ftruncate / unlink / KHO sequences against a model of the free blocks', () => {
  const NBLOCKS = 32; // guestmemfs=64M
  const NAMES = ['a', 'b', 'c'] as const;
  type Op =
    | { op: 'create'; f: number }
    | { op: 'truncate'; f: number; size: bigint }
    | { op: 'unlink'; f: number }
    | { op: 'dump' }
    | { op: 'abort' };
  const sizeArb = fc.oneof(
    fc.bigInt({ min: 0n, max: 70n * MiB }),
    fc.integer({ min: 0, max: 34 }).map((k) => BigInt(k) * BLOCK),
    fc.integer({ min: 1, max: 34 }).map((k) => BigInt(k) * BLOCK + 1n),
  );
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 2, arbitrary: fc.record({ op: fc.constant('create' as const), f: fc.integer({ min: 0, max: 2 }) }) },
    { weight: 6, arbitrary: fc.record({ op: fc.constant('truncate' as const), f: fc.integer({ min: 0, max: 2 }), size: sizeArb }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('unlink' as const), f: fc.integer({ min: 0, max: 2 }) }) },
    { weight: 1, arbitrary: fc.constant({ op: 'dump' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'abort' as const }) },
  );

  it('free blocks, sizes, errnos and the on-memory metadata always agree with the model', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 30 }), (ops) => {
        const { host, fs, p } = mounted('guestmemfs=64M', 256n * MiB);
        /** Model: each existing file's size; the fd we hold on it. */
        const files = new Map<number, { size: bigint; fd: number }>();
        let serialised = false;
        const blocksOf = (size: bigint) => Number((size + BLOCK - 1n) / BLOCK);
        const cost = (size: bigint) => (blocksOf(size) ? blocksOf(size) + 1 : 0);
        const free = () => NBLOCKS - 1 - [...files.values()].reduce((s, f) => s + cost(f.size), 0);
        const attempt = (want: ErrnoCode | null, fn: () => void, syscall: string) => {
          if (want) expectErrno(fn, want, syscall);
          else fn();
        };
        for (const o of ops) {
          if (o.op === 'dump') {
            fs.khoDump();
            serialised = true;
          } else if (o.op === 'abort') {
            fs.khoAbort();
            serialised = false;
          } else if (o.op === 'create') {
            const path = `${MNT}/${NAMES[o.f]}`;
            const exists = files.has(o.f);
            const want: ErrnoCode | null = exists ? 'EEXIST' : serialised ? 'EBUSY' : null;
            attempt(want, () => files.set(o.f, { size: 0n, fd: p.open(path, O_CREAT | O_EXCL | O_RDWR, 0o600) }), 'open');
          } else if (o.op === 'truncate') {
            const f = files.get(o.f);
            if (!f) continue;
            const grow = cost(o.size) - cost(f.size);
            const want: ErrnoCode | null = serialised ? 'EBUSY' : grow > free() ? 'ENOMEM' : null;
            attempt(want, () => p.ftruncate(f.fd, o.size), 'ftruncate');
            if (!want) f.size = o.size;
          } else {
            const f = files.get(o.f);
            const want: ErrnoCode | null = !f ? 'ENOENT' : serialised ? 'EBUSY' : null;
            attempt(want, () => p.unlink(`${MNT}/${NAMES[o.f]}`), 'unlink');
            if (!want) {
              // The name is gone now; the blocks when we close our fd.
              expect(fs.freeBlocks()).toBe(free());
              p.close(f!.fd);
              files.delete(o.f);
            }
          }
          // After every step: free blocks, stat, readdir and the carve-out's own metadata.
          expect(fs.freeBlocks()).toBe(free());
          expect(fs.serialised).toBe(serialised);
          const names = p
            .readdir(MNT)
            .slice(2)
            .map((e) => e.d_name)
            .sort();
          expect(names).toEqual([...files.keys()].map((k) => NAMES[k]).sort());
          for (const [k, f] of files) {
            const st = p.stat(`${MNT}/${NAMES[k]}`);
            expect(st.st_size).toBe(f.size);
            expect(st.st_blocks).toBe((BigInt(blocksOf(f.size)) * BLOCK) / 512n);
          }
          const d = checkConsistent(host, fs.base);
          expect(d.used.size).toBe(NBLOCKS - free());
          expect(d.sb.flags & 1).toBe(serialised ? 1 : 0);
        }
      }),
      { numRuns: 100, seed: 0x6d656d66 },
    );
  });
});

// ---- sysfs -----------------------------------------------------------------------------------------

describe('sysfs', () => {
  it('/sys/kernel has iommufd_persisted/ (empty before any kexec) and mm/transparent_hugepage/hpage_pmd_size', () => {
    const host = Host.boot({ memory: 1n * GiB });
    const p = host.kernel.spawn();
    const kernel = p.readdir('/sys/kernel');
    expect(kernel.slice(0, 2).map((e) => [e.d_name, e.d_type])).toEqual([
      ['.', DT_DIR],
      ['..', DT_DIR],
    ]);
    expect(kernel.find((e) => e.d_name === 'iommufd_persisted')?.d_type).toBe(DT_DIR);
    expect(kernel.find((e) => e.d_name === 'mm')?.d_type).toBe(DT_DIR);
    expect(p.readdir('/sys/kernel/iommufd_persisted').map((e) => e.d_name)).toEqual(['.', '..']);
    expect(p.stat('/sys/kernel/iommufd_persisted').st_mode & S_IFMT).toBe(S_IFDIR);
    expect(p.readdir('/sys/kernel/mm/transparent_hugepage')).toContainEqual(expect.objectContaining({ d_name: 'hpage_pmd_size', d_type: DT_REG }));
    // Anyone can read it (0444 root:root).
    const path = '/sys/kernel/mm/transparent_hugepage/hpage_pmd_size';
    expect(p.stat(path)).toMatchObject({ st_mode: S_IFREG | 0o444, st_uid: 0, st_gid: 0 });
    for (const proc of [p, host.kernel.spawn({ uid: 1000 })]) {
      const fd = proc.open(path, O_RDONLY);
      expect(dec(proc.read(fd, 4096))).toBe('2097152\n');
      expect(proc.read(fd, 4096).length).toBe(0); // EOF
      proc.close(fd);
    }
    // Reads continue from the file position.
    const fd = p.open(path, O_RDONLY);
    expect(dec(p.read(fd, 3))).toBe('209');
    expect(dec(p.read(fd, 100))).toBe('7152\n');
    // No store: a write open is EACCES, even for root.
    expectErrno(() => p.open(path, O_WRONLY), 'EACCES', 'open', path);
    expectErrno(() => p.open(path, O_RDWR), 'EACCES', 'open', path);
    expectErrno(() => p.open('/sys/kernel/nope', O_RDONLY), 'ENOENT', 'open');
    expectErrno(() => p.readdir('/sys/kernel/nope'), 'ENOENT', 'getdents64');
    expectErrno(() => p.readdir(path), 'ENOTDIR', 'getdents64');
    expectErrno(() => p.unlink(path), 'EPERM', 'unlink');
  });

  it('a root-only attribute (0440): EACCES for an unprivileged reader, readable by root, the group, and CAP_DAC_OVERRIDE', () => {
    const host = Host.boot({ memory: 1n * GiB });
    const path = '/sys/kernel/iommufd_persisted/1/iommufd';
    host.kernel.sysfs.attr(path, 0o440, { show: () => 'x' });
    const root = host.kernel.spawn();
    expect(root.readdir('/sys/kernel/iommufd_persisted').map((e) => e.d_name)).toEqual(['.', '..', '1']);
    expect(root.stat(path)).toMatchObject({ st_mode: S_IFREG | 0o440, st_uid: 0, st_gid: 0 });
    const fd = root.open(path, O_RDONLY);
    expect(dec(root.read(fd, 10))).toBe('x');
    const user = host.kernel.spawn({ uid: 1000 });
    expectErrno(() => user.open(path, O_RDONLY), 'EACCES', 'open', path);
    // The group bits: gid 0.
    const group = host.kernel.spawn({ uid: 1000, gid: 0 });
    group.close(group.open(path, O_RDONLY));
    // The owner bits apply to root without capabilities too.
    const bareRoot = host.kernel.spawn({ uid: 0, capabilities: [] });
    bareRoot.close(bareRoot.open(path, O_RDONLY));
    const dac = host.kernel.spawn({ uid: 1000, capabilities: ['CAP_DAC_OVERRIDE'] });
    dac.close(dac.open(path, O_RDONLY));
    // 0400: the group is shut out too.
    host.kernel.sysfs.attr('/sys/kernel/owner-only', 0o400, { show: () => 'y' });
    expectErrno(() => group.open('/sys/kernel/owner-only', O_RDONLY), 'EACCES', 'open');
    // No store: EACCES for root as well.
    expectErrno(() => root.open(path, O_WRONLY), 'EACCES', 'open');
  });

  it('writable attributes go to store(); stat, read and write follow the open mode', () => {
    const host = Host.boot({ memory: 1n * GiB });
    let value = 'off';
    let shows = 0;
    const path = '/sys/kernel/test/knob';
    host.kernel.sysfs.attr(path, 0o644, {
      show: () => `${value} ${++shows}\n`,
      store: (_proc, data) => {
        const s = dec(data).trim();
        if (s !== 'on' && s !== 'off') throw new KernelError('EINVAL', 'on or off');
        value = s;
      },
    });
    const root = host.kernel.spawn();
    const w = root.open(path, O_WRONLY);
    expect(root.write(w, 'on\n')).toBe(3);
    expect(value).toBe('on');
    expectErrno(() => root.write(w, 'maybe'), 'EINVAL', 'write');
    expect(value).toBe('on');
    expectErrno(() => root.read(w, 10), 'EBADF', 'read');
    // The contents are produced once per open (seq_file), at the first read.
    const r = root.open(path, O_RDONLY);
    expect(dec(root.read(r, 2))).toBe('on');
    root.write(w, 'off');
    expect(dec(root.read(r, 10))).toBe(' 1\n');
    const r2 = root.open(path, O_RDONLY);
    expect(dec(root.read(r2, 10))).toBe('off 2\n');
    expectErrno(() => root.write(r2, 'on'), 'EBADF', 'write');
    // 0644: others read, only the owner writes.
    const user = host.kernel.spawn({ uid: 1000 });
    user.close(user.open(path, O_RDONLY));
    expectErrno(() => user.open(path, O_WRONLY), 'EACCES', 'open');
    expectErrno(() => user.open(path, O_RDWR), 'EACCES', 'open');
    // A write-only attribute (0200): not even root may open it for reading.
    host.kernel.sysfs.attr('/sys/kernel/test/trigger', 0o200, { store: () => {} });
    expectErrno(() => root.open('/sys/kernel/test/trigger', O_RDONLY), 'EACCES', 'open');
    root.write(root.open('/sys/kernel/test/trigger', O_WRONLY), '1');
    // Directories: read-only opens, no read().
    const dir = root.open('/sys/kernel', O_RDONLY);
    expectErrno(() => root.read(dir, 1), 'EISDIR', 'read');
    expectErrno(() => root.open('/sys/kernel', O_WRONLY), 'EISDIR', 'open');
    expect(root.readdir('/sys/kernel/test').slice(2).map((e) => e.d_name).sort()).toEqual(['knob', 'trigger']);
  });
});

// ---- credentials -----------------------------------------------------------------------------------

describe('credentials', () => {
  it('spawn takes uid, gid and capabilities; root has them all, others none', () => {
    const host = Host.boot({ memory: 1n * GiB, devices: [{ bdf: '0000:01:00.0' }] });
    const root = host.kernel.spawn();
    const user = host.kernel.spawn({ uid: 1000 });
    expect({ uid: root.uid, gid: root.gid }).toEqual({ uid: 0, gid: 0 });
    expect({ uid: user.uid, gid: user.gid }).toEqual({ uid: 1000, gid: 1000 });
    for (const cap of ['CAP_SYS_ADMIN', 'CAP_SYS_RESOURCE', 'CAP_IPC_LOCK', 'CAP_DAC_OVERRIDE']) {
      expect(root.capable(cap)).toBe(true);
      expect(user.capable(cap)).toBe(false);
    }
    const some = host.kernel.spawn({ uid: 5, gid: 7, capabilities: ['CAP_IPC_LOCK'] });
    expect({ uid: some.uid, gid: some.gid, lock: some.capable('CAP_IPC_LOCK'), admin: some.capable('CAP_SYS_ADMIN') }).toEqual({ uid: 5, gid: 7, lock: true, admin: false });
  });

  it('/dev/iommu is 0660 root:root: EACCES for uid 1000, allowed for the group and CAP_DAC_OVERRIDE', () => {
    const host = Host.boot({ memory: 1n * GiB, devices: [{ bdf: '0000:01:00.0' }] });
    const p = host.kernel.spawn();
    expect(p.stat('/dev/iommu')).toMatchObject({ st_mode: 0o020000 | 0o660, st_uid: 0, st_gid: 0 });
    expectErrno(() => host.kernel.spawn({ uid: 1000 }).open('/dev/iommu', O_RDWR), 'EACCES', 'open', '/dev/iommu');
    const group = host.kernel.spawn({ uid: 1000, gid: 0 });
    group.close(group.open('/dev/iommu', O_RDWR));
    const dac = host.kernel.spawn({ uid: 1000, capabilities: ['CAP_DAC_OVERRIDE'] });
    dac.close(dac.open('/dev/iommu', O_RDWR));
    // VFIO device nodes are 0600 root: the group does not help there.
    expect(p.stat('/dev/vfio/devices/vfio0').st_mode).toBe(0o020000 | 0o600);
    expectErrno(() => group.open('/dev/vfio/devices/vfio0', O_RDWR), 'EACCES', 'open');
    dac.close(dac.open('/dev/vfio/devices/vfio0', O_RDWR));
  });

  it('IOMMU_OPTION RLIMIT_MODE: GET for anyone, SET needs CAP_SYS_RESOURCE (EPERM)', () => {
    const host = Host.boot({ memory: 1n * GiB });
    const get = { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET, object_id: 0, val64: 7n };
    const set = { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, object_id: 0, val64: 1n };
    for (const proc of [host.kernel.spawn({ uid: 1000, gid: 0 }), host.kernel.spawn({ uid: 0, capabilities: ['CAP_SYS_ADMIN', 'CAP_IPC_LOCK'] })]) {
      const fd = proc.open('/dev/iommu', O_RDWR);
      expect(proc.ioctl(fd, IOMMU_OPTION, { ...get }).val64).toBe(0n);
      expectErrno(() => proc.ioctl(fd, IOMMU_OPTION, { ...set }), 'EPERM', 'ioctl', 'IOMMU_OPTION');
      expect(proc.ioctl(fd, IOMMU_OPTION, { ...get }).val64).toBe(0n);
    }
    const cap = host.kernel.spawn({ uid: 1000, gid: 0, capabilities: ['CAP_SYS_RESOURCE'] });
    const fd = cap.open('/dev/iommu', O_RDWR);
    cap.ioctl(fd, IOMMU_OPTION, { ...set });
    expect(cap.ioctl(fd, IOMMU_OPTION, { ...get }).val64).toBe(1n);
  });
});
