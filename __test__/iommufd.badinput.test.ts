// Bad input to /dev/iommu and the VFIO device cdev gets the kernel's errno and changes nothing.
// Every failure is asserted as a Node system error (code, negative errno, syscall), then the whole
// observable state is compared with the fixture's: IOVA_RANGES of every id, the area sets (probed
// without changing them), what the device DMA-reads, pin counts and locked_vm. At the end of most
// tests a last probe allocates automatically in both IOASes (proving the allowed ranges are intact)
// and unmaps everything (proving the exact area lengths), and closing frees every pin.
import { describe, expect, it } from 'vitest';
import {
  DmaFault,
  Host,
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  SyscallError,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  anyIoctlRequest,
  iommu_destroy,
  iommu_hw_info,
  iommu_ioas_alloc,
  iommu_ioas_allow_iovas,
  iommu_ioas_copy,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_option,
  iommu_vfio_ioas,
  vfio_device_detach_iommufd_pt,
  type ErrnoCode,
  type Process,
  type StructIn,
  type StructLayout,
} from 'iommu-liveupdate';
import { expectErrno } from './helpers.js';

const PAGE = 4096n;
const ULONG_MAX = 0xffff_ffff_ffff_ffffn;
const R = IOMMU_IOAS_MAP_READABLE;
const W = IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;
const BDF0 = '0000:01:00.0';
const BDF1 = '0000:02:00.0';

/** 64 pages of anonymous shared memory, read-write, with a pattern. */
const BUF = 0x4000_0000n;
const BUF_PAGES = 64;
/** One read-write page for arrays the kernel reads or writes through a user pointer. */
const SCRATCH = 0x6000_0000n;
/** Four pages mapped PROT_READ only. */
const RO = 0x7000_0000n;
/** Nothing is mapped here. */
const UNMAPPED = 0x5000_0000n;

/** The fixture's ids: IOAS 1 with vfio0 attached (device 2, auto HWPT 3), IOAS 4 without a device. */
const IOAS1 = 1;
const DEV = 2;
const HWPT = 3;
const IOAS2 = 4;

interface Area {
  start: bigint;
  last: bigint;
  va: bigint;
}
/** IOAS1: an automatic R|W map of BUF[0..16) pages, and a FIXED READABLE-only map of BUF[16..24). */
const A1: Area = { start: 0x1_0000n, last: 0x1_ffffn, va: BUF };
const A2: Area = { start: 0x10_0000n, last: 0x10_7fffn, va: BUF + 16n * PAGE };
/** IOAS2: a FIXED map at an odd address of an odd length, and a COPY of A1's first 4 pages into
 *  the allowed window [0x400000, 0x7fffff]. */
const A3: Area = { start: 0x2010n, last: 0x2010n + 3n * PAGE - 0x21n, va: BUF + 32n * PAGE + 0x10n };
const A4: Area = { start: 0x40_0000n, last: 0x40_3fffn, va: BUF };
const AREAS: Record<number, Area[]> = { [IOAS1]: [A1, A2], [IOAS2]: [A3, A4] };
const len = (a: Area) => a.last - a.start + 1n;

interface Fx {
  host: Host;
  p: Process;
  fd: number;
  dfd: number;
  base: Snapshot;
}

function fixture(): Fx {
  const host = Host.boot({ memory: 1n << 30n, devices: [{ bdf: BDF0 }, { bdf: BDF1 }] });
  const p = host.kernel.spawn();
  p.mmap(BUF, BigInt(BUF_PAGES) * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
  const pat = new Uint8Array(BUF_PAGES * 4096);
  for (let i = 0; i < pat.length; i++) pat[i] = (i * 131 + (i >> 12) * 7 + 1) & 0xff;
  p.memWrite(BUF, pat);
  p.mmap(SCRATCH, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
  p.mmap(RO, 4n * PAGE, PROT_READ, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);

  const fd = p.open('/dev/iommu', O_RDWR);
  expect(p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id).toBe(IOAS1);
  const dfd = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  expect(p.ioctl(dfd, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fd }).out_devid).toBe(DEV);
  expect(p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: IOAS1 }).pt_id).toBe(HWPT);
  expect(p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id).toBe(IOAS2);
  expect(p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS1, flags: R | W, user_va: A1.va, length: len(A1) }).iova).toBe(A1.start);
  p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS1, flags: R | FIXED, user_va: A2.va, length: len(A2), iova: A2.start });
  p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS2, flags: R | W | FIXED, user_va: A3.va, length: len(A3), iova: A3.start });
  p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS2, allowed_iovas: [{ start: 0x40_0000n, last: 0x7f_ffffn }] });
  expect(p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: IOAS2, src_ioas_id: IOAS1, flags: R, src_iova: A1.start, length: len(A4) }).dst_iova).toBe(A4.start);
  const fx = { host, p, fd, dfd, base: undefined as unknown as Snapshot };
  fx.base = snap(fx);
  // The fixture itself, once: what the snapshot holds is what the kernel would show.
  expect(fx.base.ranges[IOAS1]).toEqual({
    ok: {
      ranges: [
        { start: 0n, last: 0xfedf_ffffn },
        { start: 0xfef0_0000n, last: (1n << 48n) - 1n },
      ],
      align: PAGE,
    },
  });
  expect(fx.base.ranges[IOAS2]).toEqual({ ok: { ranges: [{ start: 0n, last: ULONG_MAX }], align: 1n } });
  expect(fx.base.pinned).toBe(24);
  return fx;
}

// ---- observing the state ------------------------------------------------------------------------

type Outcome<T> = { ok: T } | { err: string };
function attempt<T>(fn: () => T): Outcome<T> {
  try {
    return { ok: fn() };
  } catch (e) {
    if (e instanceof SyscallError) return { err: e.code };
    if (e instanceof DmaFault) return { err: `dma fault 0x${e.reason.toString(16)}` };
    throw e;
  }
}

function iovaRanges(p: Process, fd: number, id: number) {
  const arr: ({ start: bigint; last: bigint } | undefined)[] = [undefined, undefined, undefined, undefined];
  const r = p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: id, num_iovas: 4, allowed_iovas: arr });
  return { ranges: arr.slice(0, r.num_iovas as number), align: r.out_iova_alignment as bigint };
}

/** COPY of [src, src + length) onto itself at the same IOVA: EEXIST when covered, ENOENT when not. */
function copyProbe(p: Process, fd: number, id: number, src: bigint, length: bigint) {
  return attempt(() => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: id, src_ioas_id: id, flags: R | FIXED, src_iova: src, length, dst_iova: src }).dst_iova);
}

function sameAsProcess(fx: Fx, iova: bigint, va: bigint, n: number): Outcome<boolean> {
  return attempt(() => {
    const got = fx.host.device(BDF0).dma.read(iova, n);
    const want = fx.p.memRead(va, n);
    return Buffer.from(got).equals(Buffer.from(want));
  });
}

function snap(fx: Fx) {
  const { p, fd, host } = fx;
  const ranges: Record<number, Outcome<ReturnType<typeof iovaRanges>>> = {};
  for (let id = 0; id <= 7; id++) ranges[id] = attempt(() => iovaRanges(p, fd, id));
  const areas: Record<string, unknown> = {};
  for (const [id, list] of Object.entries(AREAS)) {
    for (const a of list) {
      areas[`${id}:${a.start.toString(16)}`] = copyProbe(p, fd, Number(id), a.start, len(a));
      areas[`${id}:before ${a.start.toString(16)}`] = copyProbe(p, fd, Number(id), a.start - 1n, 1n);
      areas[`${id}:after ${a.last.toString(16)}`] = copyProbe(p, fd, Number(id), a.last + 1n, 1n);
    }
  }
  const dev = host.device(BDF0).dma;
  const dma = {
    a1: sameAsProcess(fx, A1.start, A1.va, Number(len(A1))),
    a2: sameAsProcess(fx, A2.start, A2.va, Number(len(A2))),
    a2write: attempt(() => dev.write(A2.start, new Uint8Array(8))),
    gaps: [0n, 0x1000n, A1.start - 1n, A1.last + 1n, A2.start - 1n, A2.last + 1n, 0x40_0000n].map((x) => attempt(() => dev.read(x, 1))),
  };
  const pins: number[] = [];
  for (let i = 0; i < BUF_PAGES; i++) pins.push(p.pinCount(BUF + BigInt(i) * PAGE));
  return {
    ranges,
    busy: [IOAS1, DEV, HWPT].map((id) => attempt(() => p.ioctl(fd, IOMMU_DESTROY, { id }))),
    areas,
    dma,
    pins,
    pinned: host.kernel.pinnedPages(),
    lockedVm: host.kernel.lockedVm(0),
  };
}
type Snapshot = ReturnType<typeof snap>;

/** Fails with `code` and leaves the fixture exactly as it was. */
function fails(fx: Fx, code: ErrnoCode, fn: () => unknown, syscall = 'ioctl'): void {
  expectErrno(fn, code, syscall);
  expect(snap(fx)).toEqual(fx.base);
}

/** A JS-level argument error: nothing reaches the kernel, nothing changes. */
function rejects(fx: Fx, code: string, fn: () => unknown): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(TypeError);
  expect((caught as { code?: string }).code).toBe(code);
  expect(snap(fx)).toEqual(fx.base);
}

/**
 * The destructive last probe: an automatic map in each IOAS lands where the untouched allowed
 * ranges and areas put it, unmap-all returns the exact total, and closing everything unpins all.
 */
function finalProbe(fx: Fx): void {
  const { p, fd, dfd, host } = fx;
  const va = BUF + 40n * PAGE;
  expect(p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS2, flags: R, user_va: va, length: PAGE }).iova).toBe(A4.last + 1n);
  expect(p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS1, flags: R, user_va: va, length: PAGE }).iova).toBe(0x1000n);
  expect(host.kernel.pinnedPages()).toBe(25);
  const all = (id: number) => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: id, iova: 0n, length: ULONG_MAX }).length;
  expect(all(IOAS1)).toBe(len(A1) + len(A2) + PAGE);
  expect(all(IOAS2)).toBe(len(A3) + len(A4) + PAGE);
  expect(host.kernel.pinnedPages()).toBe(0);
  p.close(dfd);
  p.close(fd);
  expect(host.kernel.iommufds.size).toBe(0);
  expect(host.kernel.lockedVm(0)).toBe(0);
}

// ---- raw struct forms -----------------------------------------------------------------------------

/** The C struct as bytes: `values` by field name, then `tail` bytes past sizeof; `size` is the first field. */
function raw(layout: StructLayout, values: Record<string, number | bigint>, opts: { size?: number; tail?: number[] } = {}): Uint8Array {
  const tail = opts.tail ?? [];
  const buf = new Uint8Array(layout.size + tail.length);
  const dv = new DataView(buf.buffer);
  const put = (name: string, v: number | bigint) => {
    const f = layout.byName.get(name);
    if (!f) throw new Error(`${layout.name} has no ${name}`);
    if (f.type === 'u64') dv.setBigUint64(f.offset, BigInt(v), true);
    else if (f.type === 'u32') dv.setUint32(f.offset, Number(v), true);
    else if (f.type === 's32') dv.setInt32(f.offset, Number(v), true);
    else if (f.type === 'u16') dv.setUint16(f.offset, Number(v), true);
    else dv.setUint8(f.offset, Number(v));
  };
  for (const [k, v] of Object.entries(values)) put(k, v);
  buf.set(tail, layout.size);
  put(layout.fields[0]!.name, opts.size ?? buf.length);
  return buf;
}

function rawGet(layout: StructLayout, buf: Uint8Array, name: string): number | bigint {
  const f = layout.byName.get(name)!;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  if (f.type === 'u64') return dv.getBigUint64(f.offset, true);
  if (f.type === 'u32') return dv.getUint32(f.offset, true);
  if (f.type === 's32') return dv.getInt32(f.offset, true);
  if (f.type === 'u16') return dv.getUint16(f.offset, true);
  return dv.getUint8(f.offset);
}

const rangeBytes = (ranges: { start: bigint; last: bigint }[]) => {
  const b = new Uint8Array(16 * ranges.length);
  const dv = new DataView(b.buffer);
  ranges.forEach((r, i) => {
    dv.setBigUint64(16 * i, r.start, true);
    dv.setBigUint64(16 * i + 8, r.last, true);
  });
  return b;
};

/**
 * One command in raw form: `min` is the kernel's min_size (offsetofend of the last mandatory
 * field). `prepare` sets up what a successful call needs and returns the field values; `after`
 * checks a successful call's effect and undoes it; `undo` undoes `prepare` when the call failed.
 */
interface SizeCase {
  name: string;
  request: number;
  layout: StructLayout;
  min: number;
  prepare(fx: Fx): Record<string, number | bigint>;
  after(fx: Fx, buf: Uint8Array): void;
  undo?(fx: Fx): void;
}

const SIZE_CASES: SizeCase[] = [
  {
    name: 'IOMMU_DESTROY',
    request: IOMMU_DESTROY,
    layout: iommu_destroy,
    min: 8,
    prepare: (fx) => ({ id: fx.p.ioctl(fx.fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number }),
    after: (fx) => expectErrno(() => iovaRanges(fx.p, fx.fd, 5), 'ENOENT'),
    undo: (fx) => void fx.p.ioctl(fx.fd, IOMMU_DESTROY, { id: 5 }),
  },
  {
    name: 'IOMMU_IOAS_ALLOC',
    request: IOMMU_IOAS_ALLOC,
    layout: iommu_ioas_alloc,
    min: 12,
    prepare: () => ({ flags: 0 }),
    after: (fx, buf) => {
      expect(rawGet(iommu_ioas_alloc, buf, 'out_ioas_id')).toBe(5);
      fx.p.ioctl(fx.fd, IOMMU_DESTROY, { id: 5 });
    },
  },
  {
    name: 'IOMMU_IOAS_ALLOW_IOVAS',
    request: IOMMU_IOAS_ALLOW_IOVAS,
    layout: iommu_ioas_allow_iovas,
    min: 24,
    // The same window again: success changes nothing.
    prepare: (fx) => {
      fx.p.memWrite(SCRATCH, rangeBytes([{ start: 0x40_0000n, last: 0x7f_ffffn }]));
      return { ioas_id: IOAS2, num_iovas: 1, allowed_iovas: SCRATCH };
    },
    after: () => {},
  },
  {
    name: 'IOMMU_IOAS_COPY',
    request: IOMMU_IOAS_COPY,
    layout: iommu_ioas_copy,
    min: 40,
    prepare: () => ({ flags: R | FIXED, dst_ioas_id: IOAS2, src_ioas_id: IOAS1, length: PAGE, src_iova: A1.start, dst_iova: 0x30_0000n }),
    after: (fx, buf) => {
      expect(rawGet(iommu_ioas_copy, buf, 'dst_iova')).toBe(0x30_0000n);
      expect(fx.p.ioctl(fx.fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS2, iova: 0x30_0000n, length: PAGE }).length).toBe(PAGE);
    },
  },
  {
    name: 'IOMMU_IOAS_IOVA_RANGES',
    request: IOMMU_IOAS_IOVA_RANGES,
    layout: iommu_ioas_iova_ranges,
    min: 32,
    prepare: (fx) => {
      fx.p.memWrite(SCRATCH, new Uint8Array(64));
      return { ioas_id: IOAS1, num_iovas: 4, allowed_iovas: SCRATCH };
    },
    after: (fx, buf) => {
      expect(rawGet(iommu_ioas_iova_ranges, buf, 'num_iovas')).toBe(2);
      expect(rawGet(iommu_ioas_iova_ranges, buf, 'out_iova_alignment')).toBe(PAGE);
      expect(fx.p.memRead(SCRATCH, 32)).toEqual(
        rangeBytes([
          { start: 0n, last: 0xfedf_ffffn },
          { start: 0xfef0_0000n, last: (1n << 48n) - 1n },
        ]),
      );
    },
  },
  {
    name: 'IOMMU_IOAS_MAP',
    request: IOMMU_IOAS_MAP,
    layout: iommu_ioas_map,
    min: 40,
    prepare: () => ({ flags: R | FIXED, ioas_id: IOAS2, user_va: BUF, length: PAGE, iova: 0x30_0000n }),
    after: (fx, buf) => {
      expect(rawGet(iommu_ioas_map, buf, 'iova')).toBe(0x30_0000n);
      expect(fx.p.ioctl(fx.fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS2, iova: 0x30_0000n, length: PAGE }).length).toBe(PAGE);
    },
  },
  {
    name: 'IOMMU_IOAS_UNMAP',
    request: IOMMU_IOAS_UNMAP,
    layout: iommu_ioas_unmap,
    min: 24,
    prepare: (fx) => {
      fx.p.ioctl(fx.fd, IOMMU_IOAS_MAP, { ioas_id: IOAS2, flags: R | FIXED, user_va: BUF, length: PAGE, iova: 0x30_0000n });
      return { ioas_id: IOAS2, iova: 0x30_0000n, length: PAGE };
    },
    after: (_fx, buf) => expect(rawGet(iommu_ioas_unmap, buf, 'length')).toBe(PAGE),
    undo: (fx) => void fx.p.ioctl(fx.fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS2, iova: 0x30_0000n, length: PAGE }),
  },
  {
    name: 'IOMMU_OPTION',
    request: IOMMU_OPTION,
    layout: iommu_option,
    min: 24,
    prepare: () => ({ option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_GET, object_id: IOAS1, val64: 7n }),
    after: (_fx, buf) => expect(rawGet(iommu_option, buf, 'val64')).toBe(1n),
  },
  {
    name: 'IOMMU_VFIO_IOAS',
    request: IOMMU_VFIO_IOAS,
    layout: iommu_vfio_ioas,
    min: 12,
    prepare: () => ({ ioas_id: IOAS2, op: IOMMU_VFIO_IOAS_SET }),
    after: (fx) => {
      expect(fx.p.ioctl(fx.fd, IOMMU_VFIO_IOAS, { op: IOMMU_VFIO_IOAS_GET }).ioas_id).toBe(IOAS2);
      fx.p.ioctl(fx.fd, IOMMU_VFIO_IOAS, { op: IOMMU_VFIO_IOAS_CLEAR });
    },
  },
  {
    // min_size is offsetofend(__reserved) = 32, sizeof is 40 (out_capabilities).
    name: 'IOMMU_GET_HW_INFO',
    request: IOMMU_GET_HW_INFO,
    layout: iommu_hw_info,
    min: 32,
    prepare: () => ({ dev_id: DEV, data_len: 0, data_uptr: 0n }),
    after: (_fx, buf) => {
      expect(rawGet(iommu_hw_info, buf, 'out_data_type')).toBe(1); // IOMMU_HW_INFO_TYPE_INTEL_VTD
      expect(rawGet(iommu_hw_info, buf, 'data_len')).toBe(24);
    },
  },
];

// ---- the tests ----------------------------------------------------------------------------------

describe('struct size rules (iommufd_fops_ioctl, copy_struct_from_user), raw Uint8Array forms', () => {
  for (const c of SIZE_CASES) {
    it(`${c.name}: size < min_size is EINVAL, a non-zero tail E2BIG, a tail past the buffer EFAULT, a zero tail works`, () => {
      const fx = fixture();
      const { p, fd } = fx;
      const bad = (opts: { size?: number; tail?: number[] }, code: ErrnoCode) => {
        const values = c.prepare(fx);
        expectErrno(() => p.ioctl(fd, c.request, raw(c.layout, values, opts)), code);
        c.undo?.(fx);
        expect(snap(fx)).toEqual(fx.base);
      };
      const good = (opts: { size?: number; tail?: number[] }) => {
        const buf = raw(c.layout, c.prepare(fx), opts);
        expect(p.ioctl(fd, c.request, buf)).toBe(0);
        c.after(fx, buf);
        // The tail is the caller's: the kernel copies back at most sizeof.
        expect([...buf.subarray(c.layout.size)]).toEqual(opts.tail ?? []);
        expect(snap(fx)).toEqual(fx.base);
      };
      bad({ size: c.min - 1 }, 'EINVAL');
      bad({ size: 0 }, 'EINVAL');
      bad({ tail: [0, 0, 0, 0, 0, 0, 0, 1] }, 'E2BIG');
      bad({ tail: [0x80] }, 'E2BIG');
      bad({ size: c.layout.size + 16, tail: [0, 0, 0, 0, 0, 0, 0, 0] }, 'EFAULT');
      good({ tail: [0, 0, 0, 0, 0, 0, 0, 0] });
      good({});
      if (c.min < c.layout.size) good({ size: c.min });
      finalProbe(fx);
    });
  }

  it('GET_HW_INFO with size = min_size leaves out_capabilities, past the user size, unwritten', () => {
    const fx = fixture();
    const buf = raw(iommu_hw_info, { dev_id: DEV, out_capabilities: 0xaaaa_aaaa_aaaa_aaaan }, { size: 32 });
    expect(fx.p.ioctl(fx.fd, IOMMU_GET_HW_INFO, buf)).toBe(0);
    expect(rawGet(iommu_hw_info, buf, 'out_capabilities')).toBe(0xaaaa_aaaa_aaaa_aaaan);
    finalProbe(fx);
  });
});

describe('NULL and unmapped user pointers', () => {
  it('a NULL or unmapped argument is EFAULT for every iommufd command (get_user of the size)', () => {
    const fx = fixture();
    for (const req of [IOMMU_DESTROY, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, IOMMU_IOAS_UNMAP, IOMMU_IOAS_COPY, IOMMU_IOAS_IOVA_RANGES, IOMMU_IOAS_ALLOW_IOVAS, IOMMU_OPTION]) {
      fails(fx, 'EFAULT', () => fx.p.ioctl(fx.fd, req, null));
      fails(fx, 'EFAULT', () => fx.p.ioctl(fx.fd, req));
      fails(fx, 'EFAULT', () => fx.p.ioctl(fx.fd, req, 0n));
      fails(fx, 'EFAULT', () => fx.p.ioctl(fx.fd, req, UNMAPPED));
    }
    finalProbe(fx);
  });

  it('a struct in user memory works through a bigint pointer, and one running off the mapping is EFAULT', () => {
    const fx = fixture();
    const { p, fd } = fx;
    // IOAS_MAP at the end of the scratch page: the 40 bytes cross into unmapped memory.
    const at = SCRATCH + PAGE - 24n;
    p.memWrite(at, raw(iommu_ioas_map, { flags: R | FIXED, ioas_id: IOAS2, user_va: BUF, length: PAGE, iova: 0x30_0000n }).subarray(0, 24));
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_MAP, at));
    p.memWrite(SCRATCH, raw(iommu_ioas_map, { flags: R | FIXED, ioas_id: IOAS2, user_va: BUF, length: PAGE, iova: 0x30_0000n }));
    expect(p.ioctl(fd, IOMMU_IOAS_MAP, SCRATCH)).toBe(0);
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS2, iova: 0x30_0000n, length: PAGE }).length).toBe(PAGE);
    finalProbe(fx);
  });

  it('ALLOW_IOVAS with an unmapped or half-mapped allowed_iovas array is EFAULT and keeps the old list', () => {
    const fx = fixture();
    const { p, fd } = fx;
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS2, num_iovas: 1, allowed_iovas: UNMAPPED }));
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS2, num_iovas: 1, allowed_iovas: 0n }));
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS1, num_iovas: 3, allowed_iovas: 0x10n }));
    // The first entry is readable (a valid window far from the current one), the second is not.
    p.memWrite(SCRATCH + PAGE - 16n, rangeBytes([{ start: 0x1000_0000n, last: 0x1fff_ffffn }]));
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS2, num_iovas: 2, allowed_iovas: SCRATCH + PAGE - 16n }));
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS1, num_iovas: 2, allowed_iovas: SCRATCH + PAGE - 16n }));
    finalProbe(fx);
  });

  it('IOVA_RANGES into an unmapped array is EFAULT; too small an array is EMSGSIZE with the count and first entries written', () => {
    const fx = fixture();
    const { p, fd } = fx;
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: IOAS1, num_iovas: 2, allowed_iovas: UNMAPPED }));
    fails(fx, 'EFAULT', () => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: IOAS1, num_iovas: 2, allowed_iovas: SCRATCH + PAGE - 16n }));
    const arr: ({ start: bigint; last: bigint } | undefined)[] = [undefined];
    const arg = { ioas_id: IOAS1, num_iovas: 1, allowed_iovas: arr };
    fails(fx, 'EMSGSIZE', () => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, arg));
    expect(arg.num_iovas).toBe(2);
    expect(arr).toEqual([{ start: 0n, last: 0xfedf_ffffn }]);
    // No room at all: nothing is written but the count.
    const none = { ioas_id: IOAS2, num_iovas: 0, allowed_iovas: 0n };
    fails(fx, 'EMSGSIZE', () => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, none));
    expect(none.num_iovas).toBe(1);
    finalProbe(fx);
  });

  it('MAP into the IOAS with a domain pins nothing when the user range is unmapped, runs off its mapping, or is read-only for WRITEABLE', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const map = (user_va: bigint, length: bigint, flags: number) => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS1, flags, user_va, length });
    fails(fx, 'EFAULT', () => map(UNMAPPED, PAGE, R | W));
    fails(fx, 'EFAULT', () => map(BUF + 60n * PAGE, 8n * PAGE, R | W));
    fails(fx, 'EFAULT', () => map(BUF + 60n * PAGE, 8n * PAGE, R));
    fails(fx, 'EFAULT', () => map(RO, 2n * PAGE, R | W));
    fails(fx, 'EFAULT', () => map(RO, 2n * PAGE, W));
    // COPY into the domain of pages nobody pinned yet goes to the mm as well: a lazy (no domain)
    // map of unmapped memory in IOAS2 cannot be copied into IOAS1.
    p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS2, flags: R | FIXED, user_va: UNMAPPED, length: PAGE, iova: 0x30_0000n });
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: IOAS1, src_ioas_id: IOAS2, flags: R, src_iova: 0x30_0000n, length: PAGE }), 'EFAULT');
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS2, iova: 0x30_0000n, length: PAGE }).length).toBe(PAGE);
    expect(snap(fx)).toEqual(fx.base);
    // The read-only memory is fine for a READABLE map.
    const ro = map(RO, 2n * PAGE, R).iova as bigint;
    expect(p.pinCount(RO)).toBe(1);
    p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: ro, length: 2n * PAGE });
    expect(snap(fx)).toEqual(fx.base);
    finalProbe(fx);
  });
});

describe('reserved fields and unknown flags', () => {
  it('non-zero __reserved or unknown flag bits are EOPNOTSUPP, checked before the object lookup', () => {
    const fx = fixture();
    const { p, fd } = fx;
    for (const ioas_id of [IOAS1, 99]) {
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id, flags: R, __reserved: 1, user_va: BUF, length: PAGE }));
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id, flags: R | (1 << 3), user_va: BUF, length: PAGE }));
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id, flags: (R | (1 << 31)) >>> 0, user_va: BUF, length: PAGE }));
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: ioas_id, src_ioas_id: ioas_id, flags: R | (1 << 3), src_iova: A1.start, length: PAGE }));
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id, __reserved: 1, num_iovas: 0, allowed_iovas: 0n }));
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id, __reserved: 1, allowed_iovas: [] }));
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, __reserved: 1, object_id: ioas_id, val64: 0n }));
      fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_VFIO_IOAS, { ioas_id, op: IOMMU_VFIO_IOAS_SET, __reserved: 1 }));
    }
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_IOAS_ALLOC, { flags: 1 }));
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_GET_HW_INFO, { dev_id: DEV, __reserved1: 1 }));
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_HWPT_ALLOC, { dev_id: DEV, pt_id: IOAS1, __reserved: 1 }));
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: HWPT, __reserved: 1, iova: 0n, length: PAGE, page_size: PAGE, data: SCRATCH }));
    // Unknown option, unknown op, RLIMIT_MODE with an object id.
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_OPTION, { option_id: 99, op: IOMMU_OPTION_OP_GET }));
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: 2, object_id: IOAS1 }));
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET, object_id: IOAS1 }));
    fails(fx, 'EOPNOTSUPP', () => p.ioctl(fd, IOMMU_VFIO_IOAS, { op: 3 }));
    finalProbe(fx);
  });

  // hw_pagetable.c iommufd_hwpt_set_dirty_tracking checks only the flags before
  // iommufd_get_hwpt_paging (there is no __reserved check), so a missing HWPT is ENOENT.
  it('HWPT_SET_DIRTY_TRACKING does not look at __reserved: a missing HWPT is ENOENT', () => {
    const fx = fixture();
    fails(fx, 'ENOENT', () => fx.p.ioctl(fx.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, { hwpt_id: 99, __reserved: 1 }));
  });
});

describe('check order: the EOVERFLOW guards and the R/W check come before the IOAS lookup', () => {
  it('MAP, COPY and UNMAP of a missing IOAS still answer the earlier checks', () => {
    const fx = fixture();
    const { p, fd } = fx;
    fails(fx, 'EOVERFLOW', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: 99, flags: R, user_va: BUF, length: ULONG_MAX }));
    fails(fx, 'EINVAL', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: 99, flags: 0, user_va: BUF, length: PAGE }));
    fails(fx, 'EINVAL', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: 99, flags: FIXED, user_va: BUF, length: PAGE }));
    fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: 99, flags: R, user_va: BUF, length: 0n }));
    fails(fx, 'EOVERFLOW', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: 99, src_ioas_id: 99, flags: R, src_iova: ULONG_MAX, length: PAGE }));
    fails(fx, 'EINVAL', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: 99, src_ioas_id: 99, flags: FIXED, src_iova: 0n, length: PAGE }));
    // UNMAP looks the IOAS up first.
    fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 99, iova: ULONG_MAX, length: 0n }));
    // COPY: the destination is only looked up once the source range resolved.
    fails(fx, 'EINVAL', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: 99, src_ioas_id: IOAS1, flags: R, src_iova: A1.start, length: 0n }));
    fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: 99, src_ioas_id: IOAS1, flags: R, src_iova: A1.last, length: 2n }));
    fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: 99, src_ioas_id: IOAS1, flags: R, src_iova: A1.start, length: PAGE }));
    finalProbe(fx);
  });
});

describe('overflowing ranges', () => {
  it('MAP: iova or length >= 2^64-1, user_va + length, FIXED iova + length, automatic length >= 2^63 are EOVERFLOW', () => {
    const fx = fixture();
    const { p, fd } = fx;
    for (const ioas_id of [IOAS1, IOAS2]) {
      const map = (a: { flags: number; user_va?: bigint; length: bigint; iova?: bigint }) => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id, user_va: BUF, ...a });
      fails(fx, 'EOVERFLOW', () => map({ flags: R | FIXED, length: PAGE, iova: ULONG_MAX }));
      fails(fx, 'EOVERFLOW', () => map({ flags: R, length: PAGE, iova: ULONG_MAX }));
      fails(fx, 'EOVERFLOW', () => map({ flags: R, length: ULONG_MAX }));
      fails(fx, 'EOVERFLOW', () => map({ flags: R, user_va: ULONG_MAX - 0xfffn, length: 2n * PAGE }));
      fails(fx, 'EOVERFLOW', () => map({ flags: R | FIXED, length: 2n * PAGE, iova: ULONG_MAX - 0xfffn }));
      fails(fx, 'EOVERFLOW', () => map({ flags: R, length: 1n << 63n }));
      // length > SIZE_MAX - PAGE_SIZE (and < ULONG_MAX) is iopt_alloc_pages' EINVAL.
      fails(fx, 'EINVAL', () => map({ flags: R, user_va: 0n, length: ULONG_MAX - 1n }));
    }
    finalProbe(fx);
  });

  it('UNMAP: iova or length >= 2^64-1 and iova + length - 1 past 2^64-1 are EOVERFLOW; (0, 2^64-1) is unmap-all', () => {
    const fx = fixture();
    const { p, fd } = fx;
    for (const ioas_id of [IOAS1, IOAS2]) {
      const unmap = (iova: bigint, length: bigint) => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id, iova, length });
      fails(fx, 'EOVERFLOW', () => unmap(ULONG_MAX, 1n));
      fails(fx, 'EOVERFLOW', () => unmap(A1.start, ULONG_MAX));
      fails(fx, 'EOVERFLOW', () => unmap(ULONG_MAX - 0xfffn, 0x2000n));
      fails(fx, 'EOVERFLOW', () => unmap(ULONG_MAX, 0n));
      fails(fx, 'EINVAL', () => unmap(A1.start, 0n));
      fails(fx, 'ENOENT', () => unmap(ULONG_MAX - 0xfffn, 0x1000n));
    }
    finalProbe(fx);
  });

  it('COPY: length, src_iova or dst_iova >= 2^64-1, src and FIXED dst overflow are EOVERFLOW', () => {
    const fx = fixture();
    const { p, fd } = fx;
    for (const dst of [IOAS1, IOAS2]) {
      const copy = (a: { flags?: number; src_iova?: bigint; length?: bigint; dst_iova?: bigint }) =>
        p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: dst, src_ioas_id: IOAS1, flags: R, src_iova: A1.start, length: PAGE, ...a });
      fails(fx, 'EOVERFLOW', () => copy({ length: ULONG_MAX }));
      fails(fx, 'EOVERFLOW', () => copy({ src_iova: ULONG_MAX }));
      fails(fx, 'EOVERFLOW', () => copy({ dst_iova: ULONG_MAX }));
      fails(fx, 'EOVERFLOW', () => copy({ src_iova: ULONG_MAX - 0xfffn, length: 0x2000n }));
      fails(fx, 'EOVERFLOW', () => copy({ flags: R | FIXED, dst_iova: ULONG_MAX - 0xfffn, length: 0x2000n }));
    }
    finalProbe(fx);
  });

  it('HWPT_GET_DIRTY_BITMAP: an iova range past 2^64-1 is EOVERFLOW', () => {
    const fx = fixture();
    const bitmap = (iova: bigint, length: bigint) =>
      fx.p.ioctl(fx.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: HWPT, iova, length, page_size: PAGE, data: SCRATCH });
    fails(fx, 'EOVERFLOW', () => bitmap(ULONG_MAX - 0xfffn, 0x2000n));
    // In range, aligned: the VT-d domain has no dirty tracking.
    fails(fx, 'EOPNOTSUPP', () => bitmap(A1.start, len(A1)));
    finalProbe(fx);
  });

  // io_pagetable.c iommufd_check_iova_range refuses a zero length before it forms length - 1,
  // whatever the iova (Linux 7.3 under QEMU: oracle/sequences/23-dirty-invalidate.seq
  // dirty.get_length_zero).
  it('HWPT_GET_DIRTY_BITMAP: a zero length is EINVAL, at iova 0 as elsewhere', () => {
    const fx = fixture();
    const bitmap = (iova: bigint) => fx.p.ioctl(fx.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: HWPT, iova, length: 0n, page_size: PAGE, data: SCRATCH });
    fails(fx, 'EINVAL', () => bitmap(0n));
    fails(fx, 'EINVAL', () => bitmap(0x1000n));
  });

  // iommufd_check_iova_range tests `iova & (page_size - 1)` and `(last + 1) & (page_size - 1)`:
  // a page_size that is not a power of two (12 KiB here: 0x3000 & 0x2fff = 0x2000) is EINVAL.
  it('HWPT_GET_DIRTY_BITMAP: a page_size that is not a power of two is EINVAL', () => {
    const fx = fixture();
    fails(fx, 'EINVAL', () => fx.p.ioctl(fx.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: HWPT, iova: 0n, length: 0x3000n, page_size: 0x3000n, data: SCRATCH }));
  });
});

describe('bad ranges inside the IOVA space', () => {
  it('MAP: alignment, reserved ranges, overlap, allowed windows', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const map1 = (a: { flags: number; user_va?: bigint; length?: bigint; iova?: bigint }) => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS1, user_va: BUF, length: PAGE, ...a });
    fails(fx, 'EINVAL', () => map1({ flags: R, length: 0n }));
    fails(fx, 'EINVAL', () => map1({ flags: R, length: PAGE + 1n }));
    fails(fx, 'EINVAL', () => map1({ flags: R | FIXED, iova: 0x30_0800n }));
    fails(fx, 'EINVAL', () => map1({ flags: R | FIXED, iova: 0x30_0000n, user_va: BUF + 0x800n }));
    fails(fx, 'EINVAL', () => map1({ flags: R, user_va: BUF + 0x800n })); // automatic alignment 2 KiB < 4 KiB
    fails(fx, 'EINVAL', () => map1({ flags: R | FIXED, iova: 0xfee0_0000n }));
    fails(fx, 'EINVAL', () => map1({ flags: R | FIXED, iova: 0xfedf_f000n, length: 2n * PAGE }));
    fails(fx, 'EINVAL', () => map1({ flags: R | FIXED, iova: 1n << 48n }));
    fails(fx, 'EINVAL', () => map1({ flags: R | FIXED, iova: (1n << 48n) - PAGE, length: 2n * PAGE }));
    fails(fx, 'EEXIST', () => map1({ flags: R | FIXED, iova: A1.start }));
    fails(fx, 'EEXIST', () => map1({ flags: R | FIXED, iova: A1.last + 1n - PAGE, length: 2n * PAGE }));
    fails(fx, 'EEXIST', () => map1({ flags: R | FIXED, iova: A2.start - PAGE, length: 2n * PAGE }));
    const map2 = (a: { flags: number; user_va?: bigint; length?: bigint; iova?: bigint }) => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS2, user_va: BUF, length: PAGE, ...a });
    fails(fx, 'EEXIST', () => map2({ flags: R | FIXED, iova: A3.last }));
    fails(fx, 'EEXIST', () => map2({ flags: R | FIXED, iova: A3.start - 1n, length: 2n }));
    // Automatic allocation stays inside IOAS2's allowed window [0x400000, 0x7fffff] (4 MiB - 16 KiB free).
    fails(fx, 'ENOSPC', () => map2({ flags: R, length: 4n << 20n }));
    finalProbe(fx);
  });

  it('UNMAP: an empty range and a partial overlap of the first area are ENOENT and remove nothing', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const unmap = (ioas_id: number, iova: bigint, length: bigint) => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id, iova, length });
    fails(fx, 'ENOENT', () => unmap(IOAS1, 0x20_0000n, PAGE));
    fails(fx, 'ENOENT', () => unmap(IOAS1, A1.start + PAGE, len(A1)));
    fails(fx, 'ENOENT', () => unmap(IOAS1, A1.start, len(A1) - PAGE));
    fails(fx, 'ENOENT', () => unmap(IOAS1, A1.start - PAGE, PAGE + 1n));
    fails(fx, 'ENOENT', () => unmap(IOAS2, A3.start + 1n, len(A3)));
    fails(fx, 'ENOENT', () => unmap(IOAS2, 0n, A3.start + 1n));
    fails(fx, 'ENOENT', () => unmap(IOAS2, A3.last + 1n, A4.start - A3.last - 1n));
    finalProbe(fx);
  });

  it('UNMAP is not atomic: whole areas below the partial one are gone when ENOENT comes back', () => {
    const fx = fixture();
    const { p, fd } = fx;
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS2, iova: 0n, length: A4.start + PAGE }), 'ENOENT');
    expect(copyProbe(p, fd, IOAS2, A3.start, len(A3))).toEqual({ err: 'ENOENT' });
    expect(copyProbe(p, fd, IOAS2, A4.start, len(A4))).toEqual({ err: 'EEXIST' });
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: 0n, length: A2.start + PAGE }), 'ENOENT');
    expect(copyProbe(p, fd, IOAS1, A1.start, len(A1))).toEqual({ err: 'ENOENT' });
    expect(copyProbe(p, fd, IOAS1, A2.start, len(A2))).toEqual({ err: 'EEXIST' });
    expectFaultReason(fx, BDF0, A1.start, 0x6);
    expect(sameAsProcess(fx, A2.start, A2.va, Number(len(A2)))).toEqual({ ok: true });
    expect(p.pinCount(A1.va)).toBe(0);
    expect(fx.host.kernel.pinnedPages()).toBe(8);
  });

  it('COPY: a source not fully covered is ENOENT, WRITEABLE from READABLE-only pages EPERM, misaligned into the domain EINVAL', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const copy = (a: { dst?: number; src?: number; flags?: number; src_iova: bigint; length: bigint; dst_iova?: bigint }) =>
      p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: a.dst ?? IOAS2, src_ioas_id: a.src ?? IOAS1, flags: a.flags ?? R, src_iova: a.src_iova, length: a.length, dst_iova: a.dst_iova ?? 0n });
    fails(fx, 'EINVAL', () => copy({ src_iova: A1.start, length: 0n }));
    fails(fx, 'ENOENT', () => copy({ src_iova: A1.start - 1n, length: 2n }));
    fails(fx, 'ENOENT', () => copy({ src_iova: A1.last, length: 2n }));
    fails(fx, 'ENOENT', () => copy({ src_iova: A1.start, length: A2.last - A1.start + 1n }));
    fails(fx, 'ENOENT', () => copy({ src: IOAS2, src_iova: A3.start, length: A4.last - A3.start + 1n }));
    fails(fx, 'EPERM', () => copy({ flags: R | W, src_iova: A2.start, length: PAGE }));
    fails(fx, 'EPERM', () => copy({ dst: IOAS1, flags: W, src_iova: A2.start, length: PAGE }));
    fails(fx, 'EINVAL', () => copy({ dst: IOAS1, src_iova: A1.start, length: 0x800n }));
    fails(fx, 'EINVAL', () => copy({ dst: IOAS1, src: IOAS2, src_iova: A3.start, length: PAGE }));
    fails(fx, 'EINVAL', () => copy({ dst: IOAS1, flags: R | FIXED, src_iova: A1.start, length: PAGE, dst_iova: 0xfee0_0000n }));
    fails(fx, 'EEXIST', () => copy({ dst: IOAS1, flags: R | FIXED, src_iova: A1.start, length: PAGE, dst_iova: A2.last + 1n - PAGE }));
    finalProbe(fx);
  });

  it('ALLOW_IOVAS: start >= last or overlapping entries are EINVAL, a reserved range EADDRINUSE; the old list stays', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const allow = (ioas_id: number, allowed_iovas: { start: bigint; last: bigint }[]) => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id, allowed_iovas });
    for (const id of [IOAS1, IOAS2]) {
      fails(fx, 'EINVAL', () => allow(id, [{ start: 0x100_0000n, last: 0x100_0000n }]));
      fails(fx, 'EINVAL', () => allow(id, [{ start: 0x200_0000n, last: 0x100_0000n }]));
      fails(fx, 'EINVAL', () => allow(id, [{ start: 0x100_0000n, last: 0x1ff_ffffn }, { start: 0x1ff_ffffn, last: 0x2ff_ffffn }]));
      fails(fx, 'EINVAL', () => allow(id, [{ start: 0x100_0000n, last: 0x1ff_ffffn }, { start: 0x300_0000n, last: 0x3ff_ffffn }, { start: 0x110_0000n, last: 0x120_0000n }]));
    }
    fails(fx, 'EADDRINUSE', () => allow(IOAS1, [{ start: 0x100_0000n, last: 0x1ff_ffffn }, { start: 0xfe00_0000n, last: 0xfeef_ffffn }]));
    fails(fx, 'EADDRINUSE', () => allow(IOAS1, [{ start: 1n << 48n, last: 1n << 49n }]));
    fails(fx, 'EADDRINUSE', () => allow(IOAS1, [{ start: 0n, last: ULONG_MAX }]));
    finalProbe(fx);
  });

  it('OPTION: HUGE_PAGES needs an IOAS object and 0 or 1; RLIMIT_MODE is EBUSY once objects exist', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const opt = (a: StructIn<typeof iommu_option>) => p.ioctl(fd, IOMMU_OPTION, a);
    fails(fx, 'ENOENT', () => opt({ option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_GET, object_id: 0 }));
    fails(fx, 'EINVAL', () => opt({ option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: IOAS2, val64: 2n }));
    // Disabling large pages on an IOAS with a domain and areas is refused.
    fails(fx, 'EINVAL', () => opt({ option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: IOAS1, val64: 0n }));
    fails(fx, 'EBUSY', () => opt({ option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64: 1n }));
    expect(opt({ option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET, val64: 9n }).val64).toBe(0n);
    finalProbe(fx);
  });
});

describe('ids: foreign, wrong type, zero', () => {
  it("an id of another iommufd context, an HWPT or a device where an IOAS is expected, and id 0 are ENOENT", () => {
    const fx = fixture();
    const { p, fd } = fx;
    // A second context of the same process with six IOASes: its 5 and 6 do not exist in the first.
    const fd2 = p.open('/dev/iommu', O_RDWR);
    for (let i = 1; i <= 6; i++) expect(p.ioctl(fd2, IOMMU_IOAS_ALLOC, {}).out_ioas_id).toBe(i);
    p.ioctl(fd2, IOMMU_IOAS_MAP, { ioas_id: 6, flags: R | FIXED, user_va: BUF, length: PAGE, iova: A1.start });
    for (const id of [6, 5, HWPT, DEV, 0]) {
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: id, flags: R, user_va: BUF, length: PAGE }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: id, iova: 0n, length: ULONG_MAX }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: id, iova: A1.start, length: PAGE }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: id, num_iovas: 0, allowed_iovas: 0n }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: id, allowed_iovas: [] }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: IOAS2, src_ioas_id: id, flags: R, src_iova: A1.start, length: PAGE }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_IOAS_COPY, { dst_ioas_id: id, src_ioas_id: IOAS1, flags: R, src_iova: A1.start, length: PAGE }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_GET, object_id: id }));
      fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_VFIO_IOAS, { ioas_id: id, op: IOMMU_VFIO_IOAS_SET }));
    }
    // The device resolves pt_id in its own context too.
    for (const id of [0, 5, 6]) fails(fx, 'ENOENT', () => p.ioctl(fx.dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: id }));
    // DESTROY: foreign or 0 is ENOENT; the in-use objects of this context are EBUSY.
    for (const id of [0, 5, 6, 99]) fails(fx, 'ENOENT', () => p.ioctl(fd, IOMMU_DESTROY, { id }));
    for (const id of [IOAS1, DEV, HWPT]) fails(fx, 'EBUSY', () => p.ioctl(fd, IOMMU_DESTROY, { id }));
    // The other context is untouched too.
    expect(p.ioctl(fd2, IOMMU_IOAS_UNMAP, { ioas_id: 6, iova: 0n, length: ULONG_MAX }).length).toBe(PAGE);
    p.close(fd2);
    finalProbe(fx);
  });

  it('GET_HW_INFO and HWPT_ALLOC need a device id: an IOAS id is ENOENT', () => {
    const fx = fixture();
    fails(fx, 'ENOENT', () => fx.p.ioctl(fx.fd, IOMMU_GET_HW_INFO, { dev_id: IOAS1 }));
    fails(fx, 'ENOENT', () => fx.p.ioctl(fx.fd, IOMMU_HWPT_ALLOC, { dev_id: IOAS1, pt_id: IOAS1 }));
    fails(fx, 'ENOENT', () => fx.p.ioctl(fx.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, { hwpt_id: IOAS1, iova: 0n, length: PAGE, page_size: PAGE, data: SCRATCH }));
    finalProbe(fx);
  });

  // hw_pagetable.c iommufd_hwpt_alloc: `pt_obj = iommufd_get_object(..., cmd->pt_id,
  // IOMMUFD_OBJ_ANY); if (IS_ERR(pt_obj)) { rc = -EINVAL; ... }`: an unknown (or foreign) pt_id is
  // EINVAL, not ENOENT.
  it('HWPT_ALLOC with a pt_id that does not exist in this context is EINVAL', () => {
    const fx = fixture();
    fails(fx, 'EINVAL', () => fx.p.ioctl(fx.fd, IOMMU_HWPT_ALLOC, { dev_id: DEV, pt_id: 99 }));
  });
});

describe('file descriptors and ioctl numbers', () => {
  it('ioctl and close of a closed, never-opened or negative fd are EBADF', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const fd2 = p.open('/dev/iommu', O_RDWR);
    p.close(fd2);
    for (const bad of [fd2, 99, -1, 1.5]) {
      fails(fx, 'EBADF', () => p.ioctl(bad, IOMMU_IOAS_ALLOC, {}));
      fails(fx, 'EBADF', () => p.ioctl(bad, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: 0n, length: ULONG_MAX }));
      fails(fx, 'EBADF', () => p.close(bad), 'close');
    }
    // The closed context's objects are gone; ours are not.
    expect(fx.host.kernel.iommufds.size).toBe(1);
    void fd;
    finalProbe(fx);
  });

  it('unknown ioctl numbers are ENOTTY', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const valid = raw(iommu_ioas_unmap, { ioas_id: IOAS1, iova: 0n, length: ULONG_MAX });
    const unknown = [
      0x3b7f, // below IOMMUFD_CMD_BASE: the VFIO compat handler has no such command
      0x3bff, // past the table
      0x4185, // the IOAS_UNMAP number with another type byte
      ((3 << 30) | (24 << 16) | IOMMU_IOAS_UNMAP) >>> 0, // _IOWR(';', 0x86, 24): not how iommufd encodes it
      0,
    ];
    for (const req of unknown) {
      fails(fx, 'ENOTTY', () => p.ioctl(fd, req, valid));
      fails(fx, 'ENOTTY', () => p.ioctl(fd, anyIoctlRequest(req), {}));
    }
    // Nothing was written back into the struct.
    expect(valid).toEqual(raw(iommu_ioas_unmap, { ioas_id: IOAS1, iova: 0n, length: ULONG_MAX }));
    // No ioctls at all on a memfd; unknown ones on a bound VFIO device.
    const mfd = p.memfd_create('x');
    fails(fx, 'ENOTTY', () => p.ioctl(mfd, IOMMU_IOAS_ALLOC, {}));
    p.close(mfd);
    fails(fx, 'ENOTTY', () => p.ioctl(fx.dfd, IOMMU_IOAS_ALLOC, {}));
    finalProbe(fx);
  });

  it('a table command number with another type byte and a NULL argument is EFAULT: the size is read first', () => {
    const fx = fixture();
    // iommufd_fops_ioctl: get_user(ucmd.user_size) comes before `op->ioctl_num != cmd`.
    fails(fx, 'EFAULT', () => fx.p.ioctl(fx.fd, 0x4185, null));
    // Outside the table's range nothing is read.
    fails(fx, 'ENOTTY', () => fx.p.ioctl(fx.fd, 0x3bff, null));
    finalProbe(fx);
  });
});

describe('object-form argument errors are TypeErrors and never reach the kernel', () => {
  it('number for a u64, bigint for a u32, out of range, unknown field, wrong argument type', () => {
    const fx = fixture();
    const { p, fd } = fx;
    // @ts-expect-error number for a u64 (iova): the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: 0, length: ULONG_MAX }));
    // @ts-expect-error number for a u64 (length): the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: 0n, length: 65536 }));
    // @ts-expect-error bigint for a u32 (ioas_id): the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1n, iova: 0n, length: ULONG_MAX }));
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 2 ** 32, iova: 0n, length: ULONG_MAX }));
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: -1, iova: 0n, length: ULONG_MAX }));
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1.5, iova: 0n, length: ULONG_MAX }));
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: -1n, length: ULONG_MAX }));
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: 1n << 64n, length: ULONG_MAX }));
    // @ts-expect-error string for a u64 (length): the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS2, flags: R, user_va: BUF, length: '4096' }));
    // @ts-expect-error no field bogus in iommu_ioas_unmap: the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_VALUE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: IOAS1, iova: 0n, length: ULONG_MAX, size: 24, bogus: 1 }));
    // @ts-expect-error no field out_iova in iommu_ioas_map: the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_VALUE', () => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: IOAS2, flags: R, user_va: BUF, length: PAGE, out_iova: 0n }));
    // @ts-expect-error numbers for the bigints of an IOVA range: the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS2, allowed_iovas: [{ start: 0, last: 0x1000 }] }));
    // @ts-expect-error an IOVA range without last: the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_ALLOW_IOVAS, { ioas_id: IOAS2, allowed_iovas: [{ start: 0x40_0000n }] }));
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, 'unmap all' as unknown as Uint8Array));
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fd, IOMMU_IOAS_UNMAP, 42 as unknown as bigint));
    // @ts-expect-error bigint for a u32 (pt_id): the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_TYPE', () => p.ioctl(fx.dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: 1n }));
    // @ts-expect-error no field pt in vfio_device_attach_iommufd_pt: the deliberately bad input this test is about
    rejects(fx, 'ERR_INVALID_ARG_VALUE', () => p.ioctl(fx.dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt: IOAS2 }));
    finalProbe(fx);
  });
});

describe('VFIO device cdev', () => {
  it('ATTACH, DETACH and unknown ioctls before BIND are EINVAL', () => {
    const fx = fixture();
    const { p } = fx;
    const d1 = p.open('/dev/vfio/devices/vfio1', O_RDWR);
    fails(fx, 'EINVAL', () => p.ioctl(d1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: IOAS2 }));
    fails(fx, 'EINVAL', () => p.ioctl(d1, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 12 }));
    fails(fx, 'EINVAL', () => p.ioctl(d1, IOMMU_IOAS_ALLOC, {}));
    expectBlocked(fx, BDF1, 0x1000n);
    p.close(d1);
    finalProbe(fx);
  });

  it('BIND: a non-iommufd fd is EBADFD, a closed one EBADF, a negative one, bad argsz or flags EINVAL', () => {
    const fx = fixture();
    const { p, fd } = fx;
    const d1 = p.open('/dev/vfio/devices/vfio1', O_RDWR);
    const mfd = p.memfd_create('not-iommufd');
    const closed = p.open('/dev/iommu', O_RDWR);
    p.close(closed);
    const bind = (a: Record<string, number>) => p.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, ...a });
    fails(fx, 'EBADFD', () => bind({ iommufd: fx.dfd }));
    fails(fx, 'EBADFD', () => bind({ iommufd: mfd }));
    fails(fx, 'EBADFD', () => bind({ iommufd: d1 }));
    fails(fx, 'EBADF', () => bind({ iommufd: closed }));
    fails(fx, 'EBADF', () => bind({ iommufd: 99 }));
    fails(fx, 'EINVAL', () => bind({ iommufd: -1 }));
    fails(fx, 'EINVAL', () => bind({ iommufd: fd, argsz: 15 }));
    fails(fx, 'EINVAL', () => bind({ iommufd: fd, argsz: 0 }));
    fails(fx, 'EINVAL', () => bind({ iommufd: fd, flags: 1 << 1 }));
    fails(fx, 'EFAULT', () => p.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, null));
    // A raw 8-byte struct: VFIO reads argsz alone first (0 here: EINVAL), then copies argsz bytes.
    fails(fx, 'EINVAL', () => p.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, new Uint8Array(8)));
    fails(fx, 'EFAULT', () => p.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, new Uint8Array([24, 0, 0, 0, 0, 0, 0, 0])));
    // Still bindable afterwards.
    expect(bind({ iommufd: fd }).out_devid).toBe(5);
    p.close(d1);
    p.close(mfd);
    finalProbe(fx);
  });

  it('BIND twice, or of a device bound through another open file, is EINVAL', () => {
    const fx = fixture();
    const { p, fd } = fx;
    fails(fx, 'EINVAL', () => p.ioctl(fx.dfd, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fd }));
    const fd2 = p.open('/dev/iommu', O_RDWR);
    fails(fx, 'EINVAL', () => p.ioctl(fx.dfd, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fd2 }));
    const again = p.open('/dev/vfio/devices/vfio0', O_RDWR);
    fails(fx, 'EINVAL', () => p.ioctl(again, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fd2 }));
    fails(fx, 'EINVAL', () => p.ioctl(again, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fd }));
    // Closing the second, never-bound file does not unbind the device.
    p.close(again);
    p.close(fd2);
    expect(snap(fx)).toEqual(fx.base);
    finalProbe(fx);
  });

  it('ATTACH: argsz too small or unknown flags EINVAL, a missing pt_id ENOENT, a device id EINVAL; the attachment stays', () => {
    const fx = fixture();
    const { p, dfd } = fx;
    const attach = (a: Record<string, number>) => p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, ...a });
    fails(fx, 'EINVAL', () => attach({ argsz: 11, pt_id: IOAS2 }));
    fails(fx, 'EINVAL', () => attach({ argsz: 0, pt_id: IOAS2 }));
    fails(fx, 'EINVAL', () => attach({ flags: 1 << 1, pt_id: IOAS2 }));
    fails(fx, 'ENOENT', () => attach({ pt_id: 99 }));
    fails(fx, 'ENOENT', () => attach({ pt_id: 0 }));
    fails(fx, 'EINVAL', () => attach({ pt_id: DEV }));
    fails(fx, 'EFAULT', () => p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, null));
    fails(fx, 'EINVAL', () => p.ioctl(dfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 7 }));
    fails(fx, 'EINVAL', () => p.ioctl(dfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 12, flags: 1 << 1 }));
    // A bound but never attached device: ENOENT, and DETACH is a no-op success.
    const d1 = p.open('/dev/vfio/devices/vfio1', O_RDWR);
    expect(p.ioctl(d1, VFIO_DEVICE_BIND_IOMMUFD, { argsz: 24, iommufd: fx.fd }).out_devid).toBe(5);
    fails(fx, 'ENOENT', () => p.ioctl(d1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: 99 }));
    expect(p.ioctl(d1, VFIO_DEVICE_DETACH_IOMMUFD_PT, raw(vfio_device_detach_iommufd_pt, {}))).toBe(0);
    expect(p.ioctl(d1, VFIO_DEVICE_DETACH_IOMMUFD_PT, raw(vfio_device_detach_iommufd_pt, {}, { size: 8 }))).toBe(0);
    expect(p.ioctl(d1, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 12 })).toEqual({ argsz: 12 });
    expectBlocked(fx, BDF1, A1.start);
    // IOAS2 has an area at an odd IOVA: a domain cannot raise its alignment to 4 KiB.
    fails(fx, 'EADDRINUSE', () => p.ioctl(d1, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: IOAS2 }));
    expectBlocked(fx, BDF1, A1.start);
    p.close(d1);
    finalProbe(fx);
  });

  it('closing the device fd unbinds: DMA is blocked (context entry not present), the auto HWPT and the device object are gone', () => {
    const fx = fixture();
    const { p, fd, dfd, host } = fx;
    p.close(dfd);
    expectFaultReason(fx, BDF0, A1.start, 0x2);
    expectFaultReason(fx, BDF0, A2.start, 0x2);
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: HWPT }), 'ENOENT');
    expectErrno(() => p.ioctl(fd, IOMMU_DESTROY, { id: DEV }), 'ENOENT');
    expectErrno(() => p.ioctl(dfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 12 }), 'EBADF');
    expectErrno(() => p.close(dfd), 'EBADF', 'close');
    // The IOAS lost its domain: no reserved ranges, alignment 1, nothing pinned; the areas remain.
    expect(iovaRanges(p, fd, IOAS1)).toEqual({ ranges: [{ start: 0n, last: ULONG_MAX }], align: 1n });
    expect(host.kernel.pinnedPages()).toBe(0);
    expect(p.pinCount(BUF)).toBe(0);
    expect(copyProbe(p, fd, IOAS1, A1.start, len(A1))).toEqual({ err: 'EEXIST' });
    expect(copyProbe(p, fd, IOAS1, A2.start, len(A2))).toEqual({ err: 'EEXIST' });
    // Nothing holds IOAS1 any more.
    expect(p.ioctl(fd, IOMMU_DESTROY, { id: IOAS1 })).toEqual({ id: IOAS1 });
    expect(host.kernel.pinnedPages()).toBe(0);
    p.close(fd);
    expect(host.kernel.iommufds.size).toBe(0);
    expect(host.kernel.lockedVm(0)).toBe(0);
  });

  it('closing the iommufd fd while a device is bound keeps the context alive through the device until it closes', () => {
    const fx = fixture();
    const { p, fd, dfd, host } = fx;
    expect(p.ioctl(dfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, { argsz: 12 })).toEqual({ argsz: 12 });
    expect(host.kernel.pinnedPages()).toBe(0);
    expectFaultReason(fx, BDF0, A1.start, 0x2);
    p.close(fd);
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, {}), 'EBADF');
    expectErrno(() => p.close(fd), 'EBADF', 'close');
    expect(host.kernel.iommufds.size).toBe(1);
    // The context still resolves ids for the device: attach again, the areas are pinned and mapped again.
    expect(p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: IOAS1 }).pt_id).toBe(HWPT);
    expect(host.kernel.pinnedPages()).toBe(24);
    expect(sameAsProcess(fx, A1.start, A1.va, Number(len(A1)))).toEqual({ ok: true });
    expect(sameAsProcess(fx, A2.start, A2.va, Number(len(A2)))).toEqual({ ok: true });
    expectErrno(() => p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: 99 }), 'ENOENT');
    // Replacing onto IOAS2 fails (A3 is not 4 KiB aligned) and leaves the attachment as it was.
    expectErrno(() => p.ioctl(dfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { argsz: 16, pt_id: IOAS2 }), 'EADDRINUSE');
    expect(host.kernel.pinnedPages()).toBe(24);
    expect(sameAsProcess(fx, A1.start, A1.va, Number(len(A1)))).toEqual({ ok: true });
    p.close(dfd);
    expect(host.kernel.iommufds.size).toBe(0);
    expect(host.kernel.pinnedPages()).toBe(0);
    expect(host.kernel.lockedVm(0)).toBe(0);
    expectFaultReason(fx, BDF0, A1.start, 0x2);
  });

  it('closing the iommufd fd while attached: DMA keeps working until the device closes', () => {
    const fx = fixture();
    const { p, fd, dfd, host } = fx;
    p.close(fd);
    expect(sameAsProcess(fx, A1.start, A1.va, Number(len(A1)))).toEqual({ ok: true });
    expect(host.kernel.pinnedPages()).toBe(24);
    p.close(dfd);
    expect(host.kernel.iommufds.size).toBe(0);
    expect(host.kernel.pinnedPages()).toBe(0);
    expectFaultReason(fx, BDF0, A1.start, 0x2);
  });
});

describe('credentials', () => {
  it('an unprivileged process cannot open /dev/iommu (0660 root) or a VFIO device node (0600 root): EACCES', () => {
    const fx = fixture();
    const user = fx.host.kernel.spawn({ uid: 1000 });
    fails(fx, 'EACCES', () => user.open('/dev/iommu', O_RDWR), 'open');
    fails(fx, 'EACCES', () => user.open('/dev/vfio/devices/vfio1', O_RDWR), 'open');
    fails(fx, 'ENOENT', () => user.open('/dev/vfio/devices/vfio7', O_RDWR), 'open');
    user.exit();
    finalProbe(fx);
  });

  it('RLIMIT_MODE SET without CAP_SYS_RESOURCE is EPERM, even on an empty context; GET works', () => {
    const fx = fixture();
    const nocaps = fx.host.kernel.spawn({ uid: 0, capabilities: [] });
    const fd = nocaps.open('/dev/iommu', O_RDWR);
    for (const val64 of [0n, 1n, 2n]) {
      fails(fx, 'EPERM', () => nocaps.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64 }));
    }
    expect(nocaps.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET }).val64).toBe(0n);
    // With the capability: 2 is EINVAL, 1 works on the empty context and reads back.
    const root = fx.host.kernel.spawn();
    const fd2 = root.open('/dev/iommu', O_RDWR);
    fails(fx, 'EINVAL', () => root.ioctl(fd2, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64: 2n }));
    root.ioctl(fd2, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64: 1n });
    expect(root.ioctl(fd2, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET }).val64).toBe(1n);
    nocaps.exit();
    root.exit();
    finalProbe(fx);
  });
});

/** DMA from a device that is bound but not attached (or never bound) is blocked by the context. */
function expectBlocked(fx: Fx, bdf: string, iova: bigint): void {
  let caught: unknown;
  try {
    fx.host.device(bdf).dma.read(iova, 8);
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(DmaFault);
  expect([0x1, 0x2]).toContain((caught as DmaFault).reason);
}

function expectFaultReason(fx: Fx, bdf: string, iova: bigint, reason: number): void {
  let caught: unknown;
  try {
    fx.host.device(bdf).dma.read(iova, 8);
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(DmaFault);
  expect({ iova: (caught as DmaFault).iova, reason: (caught as DmaFault).reason }).toEqual({ iova, reason });
}
