// The syscall path: an ioctl's object argument is held as the struct's values from the caller to
// the handler and back, and must answer exactly as the same struct passed as bytes does (the
// size rules of copy_struct_from_user, raw writes into the struct, outputs written back, errors
// after a partial answer). The errors it throws are Node-shaped and cheap: no stack unless asked.
import { afterEach, describe, expect, it } from 'vitest';
import {
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  KernelError,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  SyscallError,
  iommu_ioas_alloc,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_option,
  readStruct,
  writeStruct,
  type StructLayout,
} from 'iommu-liveupdate';
import { expectErrno } from './helpers.js';

const VA = 0x10000000n;
const LEN = 0x10000n;
const MAP_RW = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

function boot() {
  const host = Host.boot({ memory: 1n << 30n, devices: [] });
  const p = host.kernel.spawn();
  p.mmap(VA, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED);
  return { host, p };
}

type Outcome = { code: string } | { ok: Record<string, unknown> };

/** What an ioctl answers: its errno, or the outputs of `layout` it wrote. */
function outcome(fn: () => Record<string, unknown>, layout: StructLayout): Outcome {
  try {
    const got = fn();
    return { ok: Object.fromEntries(layout.fields.filter((f) => f.out).map((f) => [f.name, got[f.name]])) };
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    return { code: e.code };
  }
}

/**
 * The struct `fields` of `layout` as bytes of `size` (the size field says `size`), through the
 * raw-bytes ioctl: its outcome, the outputs read back from the bytes the kernel wrote.
 */
function viaBytes(call: (b: Uint8Array) => unknown, layout: StructLayout, fields: Record<string, unknown>, size: number): Outcome {
  const bytes = new Uint8Array(Math.max(size, layout.size));
  writeStruct(layout, { ...fields, [layout.fields[0]!.name]: size } as never, bytes);
  return outcome(() => {
    call(bytes);
    return readStruct(layout, bytes) as Record<string, unknown>;
  }, layout);
}

afterEach(() => {
  SyscallError.captureStackTraces = false;
});

describe('an object argument answers as its struct bytes do', () => {
  it('IOAS_ALLOC at every size from 0 to a page past the struct: EINVAL below the minimum, the same id at and above it', () => {
    const a = boot();
    const b = boot();
    const fa = a.p.open('/dev/iommu', O_RDWR);
    const fb = b.p.open('/dev/iommu', O_RDWR);
    const sizes = [0, 4, 8, 11, 12, 13, 16, 64, 4096, 12 + 4096];
    for (const size of sizes) {
      const obj = outcome(() => a.p.ioctl(fa, IOMMU_IOAS_ALLOC, { size }), iommu_ioas_alloc);
      const raw = viaBytes((bytes) => b.p.ioctl(fb, IOMMU_IOAS_ALLOC, bytes), iommu_ioas_alloc, {}, size);
      expect(obj, `size ${size}`).toEqual(raw);
      expect('code' in obj ? obj.code : 'ok', `size ${size}`).toBe(size < 12 ? 'EINVAL' : 'ok');
    }
    // Past a page beyond the struct the object has no bytes (the bytes argument can have them).
    expectErrno(() => a.p.ioctl(fa, IOMMU_IOAS_ALLOC, { size: 12 + 4096 + 1 }), 'EFAULT', 'ioctl', 'IOMMU_IOAS_ALLOC');
  });

  it('IOAS_MAP, MAP again (EEXIST), a partial UNMAP (ENOENT), UNMAP: the same errnos and outputs, at sizes below, at and above the struct', () => {
    for (const size of [32, iommu_ioas_map.size, iommu_ioas_map.size + 8]) {
      const a = boot();
      const b = boot();
      const fa = a.p.open('/dev/iommu', O_RDWR);
      const fb = b.p.open('/dev/iommu', O_RDWR);
      const ia = a.p.ioctl(fa, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
      const ib = b.p.ioctl(fb, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
      expect(ia).toBe(ib);
      const map = { ioas_id: ia, flags: MAP_RW, user_va: VA, length: LEN, iova: 0x100000n };
      for (const step of ['map', 'again'] as const) {
        const obj = outcome(() => a.p.ioctl(fa, IOMMU_IOAS_MAP, { ...map, size }), iommu_ioas_map);
        const raw = viaBytes((bytes) => b.p.ioctl(fb, IOMMU_IOAS_MAP, bytes), iommu_ioas_map, map, size);
        expect(obj, `${step} at size ${size}`).toEqual(raw);
        if (size < iommu_ioas_map.size) expect(obj).toEqual({ code: 'EINVAL' });
        else expect(obj).toEqual(step === 'map' ? { ok: { iova: 0x100000n } } : { code: 'EEXIST' });
      }
      for (const [iova, length] of [
        [0x101000n, 0x1000n],
        [0x100000n, LEN],
      ] as const) {
        const unmap = { ioas_id: ia, iova, length };
        const obj = outcome(() => a.p.ioctl(fa, IOMMU_IOAS_UNMAP, { ...unmap, size: Math.max(size, 8) }), iommu_ioas_unmap);
        const raw = viaBytes((bytes) => b.p.ioctl(fb, IOMMU_IOAS_UNMAP, bytes), iommu_ioas_unmap, unmap, Math.max(size, 8));
        expect(obj, `unmap ${iova} at size ${size}`).toEqual(raw);
      }
    }
  });

  it('IOMMU_OPTION writes val64 alone into the struct (a raw copy_to_user): the object gets it as the bytes do', () => {
    const { p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    const get = { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_GET, val64: 7n };
    expect(p.ioctl(fd, IOMMU_OPTION, { ...get }).val64).toBe(0n);
    p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_RLIMIT_MODE, op: IOMMU_OPTION_OP_SET, val64: 1n });
    expect(p.ioctl(fd, IOMMU_OPTION, { ...get }).val64).toBe(1n);
    expect(viaBytes((bytes) => p.ioctl(fd, IOMMU_OPTION, bytes), iommu_option, get, iommu_option.size)).toEqual({ ok: { val64: 1n } });
  });

  it('IOVA_RANGES with no room: EMSGSIZE, and num_iovas written back into the object all the same', () => {
    const { p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas_id = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
    const arg = { ioas_id, allowed_iovas: [] as { start: bigint; last: bigint }[] };
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, arg), 'EMSGSIZE', 'ioctl', 'IOMMU_IOAS_IOVA_RANGES');
    expect(arg).toMatchObject({ num_iovas: 1, out_iova_alignment: 1n });
    const ranges: { start: bigint; last: bigint }[] = [];
    ranges.length = 1;
    const room = { ioas_id, allowed_iovas: ranges };
    expect(p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, room).num_iovas).toBe(1);
    expect(ranges).toEqual([{ start: 0n, last: 0xffff_ffff_ffff_ffffn }]);
    expect(viaBytes((bytes) => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, bytes), iommu_ioas_iova_ranges, { ioas_id }, iommu_ioas_iova_ranges.size)).toEqual({ code: 'EMSGSIZE' });
  });

  it('an output the kernel leaves as the caller gave it is not written (a frozen argument works)', () => {
    const { p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    const ioas_id = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
    p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id, flags: MAP_RW, user_va: VA, length: LEN, iova: 0x100000n });
    const arg = Object.freeze({ ioas_id, iova: 0x100000n, length: LEN });
    expect(p.ioctl(fd, IOMMU_IOAS_UNMAP, arg)).toBe(arg);
    // Inputs stay as given; the outputs are added.
    const alloc = { flags: 0 };
    expect(p.ioctl(fd, IOMMU_IOAS_ALLOC, alloc)).toEqual({ flags: 0, out_ioas_id: 2 });
  });

  it('bad JavaScript values are argument errors, checked before the kernel runs', () => {
    const { p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    expect(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, { flags: 0, bogus: 1 } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', name: 'TypeError' }));
    expect(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, { flags: 1n } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => p.ioctl(fd, IOMMU_IOAS_MAP, { ioas_id: 1, length: 4096 } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    // Inherited enumerable properties are not the caller's fields (as with Object.keys).
    const arg = Object.assign(Object.create({ bogus: 1 }) as Record<string, unknown>, { flags: 0 });
    expect(p.ioctl(fd, IOMMU_IOAS_ALLOC, arg as { flags: number }).out_ioas_id).toBe(1);
  });
});

describe('the errors of the syscall path', () => {
  it('a SyscallError is Node-shaped; its stack is its first line unless SyscallError.captureStackTraces', () => {
    const { p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    const unmap = () => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 9, iova: 0n, length: 4096n });
    const e = expectErrno(unmap, 'ENOENT', 'ioctl', 'IOMMU_IOAS_UNMAP');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('SyscallError');
    expect(e.message).toBe('ENOENT: no such file or directory, ioctl IOMMU_IOAS_UNMAP (no IOAS with id 9)');
    expect(String(e)).toBe(`SyscallError: ${e.message}`);
    expect(e.stack).toBe(`SyscallError: ${e.message}`);
    expect(Object.keys(e).sort()).toEqual(['code', 'errno', 'name', 'request', 'syscall']);
    SyscallError.captureStackTraces = true;
    const traced = expectErrno(unmap, 'ENOENT', 'ioctl', 'IOMMU_IOAS_UNMAP');
    expect(traced.stack?.split('\n')[0]).toBe(`SyscallError: ${traced.message}`);
    expect(traced.stack).toContain('syscall.path.test.ts');
  });

  it('a KernelError is an Error whose message says the rule; a stack and message can be assigned as on any Error', () => {
    const k = new KernelError('EINVAL', 'on or off');
    expect(k).toBeInstanceOf(Error);
    expect(k.message).toBe('EINVAL (on or off)');
    expect(String(k)).toBe('Error: EINVAL (on or off)');
    k.stack = 'here';
    k.message = 'changed';
    expect([k.stack, k.message]).toEqual(['here', 'changed']);
  });

  it('a failing ioctl leaves the fd table and the next call as they were (the per-process user memory is reset)', () => {
    const { p } = boot();
    const fd = p.open('/dev/iommu', O_RDWR);
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, { size: 4 }), 'EINVAL', 'ioctl', 'IOMMU_IOAS_ALLOC');
    // Bytes that say 12 but hold 4: the copy runs past them.
    expectErrno(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, Uint8Array.of(12, 0, 0, 0)), 'EFAULT', 'ioctl', 'IOMMU_IOAS_ALLOC');
    expectErrno(() => p.ioctl(fd + 1, IOMMU_IOAS_ALLOC, {}), 'EBADF', 'ioctl', 'IOMMU_IOAS_ALLOC');
    expect(p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id).toBe(1);
  });
});
