// The typed uAPI, as the package's public .d.ts declares it: struct layouts carry their fields
// (StructIn / StructOut / StructFields), every struct-taking request carries its struct
// (IoctlRequest<typeof iommu_ioas_map>), and Process.ioctl checks an object argument against it
// and types the outputs it returns. vitest does not type-check, `npm test` does (tsc --noEmit over
// __test__/): a `@ts-expect-error` that no longer errors fails it (TS2578), so these cannot rot.
// The calls also run, so each compile-time rule is shown to match what the kernel does at runtime.
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  Host,
  IOMMU_GET_HW_INFO,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  UAPI_IOCTLS_BY_NAME,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_GET_API_VERSION,
  anyIoctlRequest,
  iommu_hw_info,
  iommu_ioas_alloc,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  liveupdate_ioctl_create_session,
  liveupdate_session_get_name,
  offsetofend,
  readStruct,
  vfio_device_bind_iommufd,
  writeStruct,
  type AnyIoctlRequest,
  type IoctlRequest,
  type IoctlStructOf,
  type IovaRangeArg,
  type Process,
  type StructFields,
  type StructIn,
  type StructLayout,
  type StructOut,
} from 'iommu-liveupdate';

const PAGE = 4096n;
const BDF = '0000:01:00.0';
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/** A process with /dev/iommu open, one IOAS and one bound, attached VFIO device, and a mapped page. */
function fixture() {
  const host = Host.boot({ memory: 64n << 20n, devices: [{ bdf: BDF }] });
  const p: Process = host.kernel.spawn();
  const fd = p.open('/dev/iommu', O_RDWR);
  const dev = p.open('/dev/vfio/devices/vfio0', O_RDWR);
  const va = p.mmap(null, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  return { host, p, fd, dev, va };
}

/** The TypeError Process.ioctl throws for an object argument no C caller could pass. */
const argError = (code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE') => expect.objectContaining({ code });

describe('struct layouts carry their fields', () => {
  it('StructIn: every field optional, u64 is bigint, a user pointer also a buffer or ranges', () => {
    expectTypeOf<StructIn<typeof iommu_ioas_map>>().toEqualTypeOf<{
      size?: number;
      flags?: number;
      ioas_id?: number;
      __reserved?: number;
      user_va?: bigint;
      length?: bigint;
      iova?: bigint;
    }>();
    expectTypeOf<StructIn<typeof iommu_ioas_iova_ranges>['allowed_iovas']>().toEqualTypeOf<bigint | ArrayBufferView | (IovaRangeArg | undefined)[] | undefined>();
    expectTypeOf<StructIn<typeof iommu_hw_info>['data_uptr']>().toEqualTypeOf<bigint | ArrayBufferView | undefined>();
    expectTypeOf<StructIn<typeof vfio_device_bind_iommufd>['token_uuid_ptr']>().toEqualTypeOf<bigint | ArrayBufferView | undefined>();
    // The size field is VFIO's argsz there; a byte array takes bytes or a string.
    expectTypeOf<StructIn<typeof vfio_device_bind_iommufd>['argsz']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<StructIn<typeof liveupdate_ioctl_create_session>['name']>().toEqualTypeOf<Uint8Array | string | undefined>();
  });

  it('StructOut: the outputs (declared with ">"), present and typed; a union member is its own field', () => {
    expectTypeOf<StructOut<typeof iommu_ioas_alloc>>().toEqualTypeOf<{ out_ioas_id: number }>();
    expectTypeOf<StructOut<typeof iommu_ioas_map>>().toEqualTypeOf<{ iova: bigint }>();
    expectTypeOf<StructOut<typeof iommu_ioas_iova_ranges>>().toEqualTypeOf<{ num_iovas: number; out_iova_alignment: bigint }>();
    expectTypeOf<StructOut<typeof iommu_hw_info>>().toEqualTypeOf<{ data_len: number; out_data_type: number; out_max_pasid_log2: number; out_capabilities: bigint }>();
    expectTypeOf<StructIn<typeof iommu_hw_info>['in_data_type']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<StructOut<typeof liveupdate_session_get_name>>().toEqualTypeOf<{ name: Uint8Array }>();
  });

  it('each request carries its struct; requests without one are plain numbers', () => {
    expectTypeOf<IoctlStructOf<typeof IOMMU_IOAS_MAP>>().toEqualTypeOf<typeof iommu_ioas_map>();
    expectTypeOf(IOMMU_IOAS_MAP).toEqualTypeOf<IoctlRequest<typeof iommu_ioas_map>>();
    expectTypeOf(VFIO_DEVICE_BIND_IOMMUFD).toEqualTypeOf<IoctlRequest<typeof vfio_device_bind_iommufd>>();
    expectTypeOf(LIVEUPDATE_IOCTL_CREATE_SESSION).toEqualTypeOf<IoctlRequest<typeof liveupdate_ioctl_create_session>>();
    expectTypeOf(VFIO_GET_API_VERSION).toEqualTypeOf<number>();
    // Still the same numbers at runtime.
    expect(IOMMU_IOAS_MAP).toBe(0x3b85);
    expect(typeof IOMMU_IOAS_MAP).toBe('number');
    // A request never passes for another struct's, nor for "any struct" (the brand is invariant).
    // @ts-expect-error IOMMU_IOAS_MAP does not take struct iommu_ioas_alloc
    const alloc: IoctlRequest<typeof iommu_ioas_alloc> = IOMMU_IOAS_MAP;
    // @ts-expect-error widening to an unknown struct would let any object through
    const wide: IoctlRequest<StructLayout> = IOMMU_IOAS_MAP;
    // @ts-expect-error a typed request is not a runtime-picked one (anyIoctlRequest() is the way)
    const loose: AnyIoctlRequest = IOMMU_IOAS_MAP;
    expect([alloc, wide, loose]).toEqual([0x3b85, 0x3b85, 0x3b85]);
  });

  it('offsetofend takes the struct\'s field names only', () => {
    expect(offsetofend(iommu_ioas_map, 'iova')).toBe(40);
    // @ts-expect-error no field lenght (the runtime throws too)
    expect(() => offsetofend(iommu_ioas_map, 'lenght')).toThrow(/no field lenght/);
  });
});

describe('Process.ioctl with a typed request', () => {
  it('types the outputs: IOAS_ALLOC out_ioas_id, MAP iova, IOVA_RANGES num_iovas and the ranges', () => {
    const { p, fd, va } = fixture();
    const a = p.ioctl(fd, IOMMU_IOAS_ALLOC, {});
    expectTypeOf(a.out_ioas_id).toEqualTypeOf<number>();
    expect(typeof a.out_ioas_id).toBe('number');
    const ioas_id = a.out_ioas_id;

    const m = p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id, user_va: va, length: PAGE });
    expectTypeOf(m.iova).toEqualTypeOf<bigint>();
    expectTypeOf(m.length).toEqualTypeOf<bigint>();
    expect(typeof m.iova).toBe('bigint');
    // An output given as input (FIXED_IOVA) is still the output's type.
    const fixed = p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW | IOMMU_IOAS_MAP_FIXED_IOVA, ioas_id, user_va: va, length: PAGE, iova: m.iova + 0x10_0000n });
    expectTypeOf(fixed.iova).toEqualTypeOf<bigint>();
    expect(fixed.iova).toBe(m.iova + 0x10_0000n);

    const u = p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id, iova: fixed.iova, length: PAGE });
    expectTypeOf(u.length).toEqualTypeOf<bigint>();
    expect(u.length).toBe(PAGE);

    const r = p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id, num_iovas: 8, allowed_iovas: [] });
    expectTypeOf(r.num_iovas).toEqualTypeOf<number>();
    expectTypeOf(r.out_iova_alignment).toEqualTypeOf<bigint>();
    expectTypeOf(r.allowed_iovas).toEqualTypeOf<IovaRangeArg[]>();
    expect(r.num_iovas).toBeGreaterThan(0);
    expect(typeof r.allowed_iovas[0]!.last).toBe('bigint');
    // An array of the caller's type stays that type.
    const arr: (IovaRangeArg | undefined)[] = [undefined];
    expectTypeOf(p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id, num_iovas: 1, allowed_iovas: arr }).allowed_iovas).toEqualTypeOf<(IovaRangeArg | undefined)[]>();
  });

  it('types VFIO outputs: BIND out_devid, ATTACH pt_id', () => {
    const { p, fd, dev } = fixture();
    const ioas = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
    const b = p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    expectTypeOf(b.out_devid).toEqualTypeOf<number>();
    expectTypeOf(b.iommufd).toEqualTypeOf<number>();
    expect(typeof b.out_devid).toBe('number');
    const at = p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
    expectTypeOf(at.pt_id).toEqualTypeOf<number>();
    expect(at.pt_id).not.toBe(ioas); // the IOAS's auto HWPT

    // A buffer for a user pointer; the union's members (in_data_type in, out_data_type out).
    const data = new Uint8Array(24);
    const info = p.ioctl(fd, IOMMU_GET_HW_INFO, { dev_id: b.out_devid, in_data_type: 0, data_len: data.length, data_uptr: data });
    expectTypeOf(info.data_uptr).toEqualTypeOf<Uint8Array<ArrayBuffer>>();
    expectTypeOf(info.data_len).toEqualTypeOf<number>();
    expectTypeOf(info.out_data_type).toEqualTypeOf<number>();
    expectTypeOf(info.out_capabilities).toEqualTypeOf<bigint>();
    expect(info.data_len).toBeGreaterThan(0);
    expect(typeof info.out_capabilities).toBe('bigint');
  });

  it('types LIVEUPDATE outputs: CREATE_SESSION fd, GET_NAME name, RETRIEVE_FD fd (no /dev/liveupdate yet: ENOTTY)', () => {
    const { p, fd } = fixture();
    const create = () => p.ioctl(fd, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 'vm0' });
    expectTypeOf(create).returns.toEqualTypeOf<{ name: string; fd: number }>();
    const getName = () => p.ioctl(fd, LIVEUPDATE_SESSION_GET_NAME, {});
    expectTypeOf(getName).returns.toEqualTypeOf<{ name: Uint8Array }>();
    const retrieve = () => p.ioctl(fd, LIVEUPDATE_SESSION_RETRIEVE_FD, { token: 7n });
    expectTypeOf(retrieve).returns.toEqualTypeOf<{ token: bigint; fd: number }>();
    for (const call of [create, getName, retrieve]) expect(call).toThrow(expect.objectContaining({ code: 'ENOTTY' }));
  });

  it('rejects at compile time what the runtime rejects: a misspelt field, a number for a u64, another struct\'s fields', () => {
    const { p, fd, va } = fixture();
    const ioas_id = p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id;
    // @ts-expect-error misspelt field
    expect(() => p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id, user_va: va, lenght: PAGE })).toThrow(argError('ERR_INVALID_ARG_VALUE'));
    // @ts-expect-error `number` for a u64
    expect(() => p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id, user_va: va, length: 4096 })).toThrow(argError('ERR_INVALID_ARG_TYPE'));
    // @ts-expect-error `bigint` for a u32
    expect(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { ioas_id: 1n, iova: 0n, length: PAGE })).toThrow(argError('ERR_INVALID_ARG_TYPE'));
    // @ts-expect-error IOAS_UNMAP's struct has no flags or user_va: a MAP argument with the UNMAP request
    expect(() => p.ioctl(fd, IOMMU_IOAS_UNMAP, { flags: RW, ioas_id, user_va: va, length: PAGE })).toThrow(argError('ERR_INVALID_ARG_VALUE'));
    // Held in a variable of another struct's type: its fields are still checked (no excess-property rule needed).
    const mapArg: StructIn<typeof iommu_ioas_map> = { flags: RW, ioas_id, user_va: va, length: PAGE };
    // @ts-expect-error struct iommu_ioas_map's fields for IOMMU_IOAS_ALLOC
    expect(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, mapArg)).toThrow(argError('ERR_INVALID_ARG_VALUE'));
    // Not run (the runtime lays any buffer out as user memory, so it would map the kernel's scratch address):
    // @ts-expect-error a buffer where the struct has no user pointer (user_va is an address the kernel pins)
    const notPointer = () => p.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id, user_va: new Uint8Array(8), length: PAGE });
    expect(typeof notPointer).toBe('function');
    // @ts-expect-error an IOVA range with numbers
    expect(() => p.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id, allowed_iovas: [{ start: 0, last: 1 }] })).toThrow(argError('ERR_INVALID_ARG_TYPE'));
    // @ts-expect-error a byte array takes bytes or a string
    expect(() => p.ioctl(fd, LIVEUPDATE_IOCTL_CREATE_SESSION, { name: 5 })).toThrow(argError('ERR_INVALID_ARG_TYPE'));
    // @ts-expect-error a plain number is no typed request: an object argument needs its struct
    expect(() => p.ioctl(fd, 0x3b81, {})).not.toThrow();
    // @ts-expect-error a loosely typed object for a typed request (a Record could hold anything)
    expect(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, { bogus: 1 } as Record<string, unknown>)).toThrow(argError('ERR_INVALID_ARG_VALUE'));
  });

  it('the raw-bytes, user-pointer and NULL forms stay for every request and return the syscall\'s value', () => {
    const { p, fd } = fixture();
    const bytes = writeStruct(iommu_ioas_alloc, { size: iommu_ioas_alloc.size });
    const ret = p.ioctl(fd, IOMMU_IOAS_ALLOC, bytes);
    expectTypeOf(ret).toEqualTypeOf<number>();
    expect(ret).toBe(0);
    const back = readStruct(iommu_ioas_alloc, bytes);
    expectTypeOf(back).toEqualTypeOf<{ size: number; flags: number; out_ioas_id: number }>();
    expect(back.out_ioas_id).toBeGreaterThan(0);
    const nul = () => p.ioctl(fd, IOMMU_IOAS_ALLOC, null);
    const ptr = () => p.ioctl(fd, IOMMU_IOAS_ALLOC, 0x10n);
    expectTypeOf(nul).returns.toEqualTypeOf<number>();
    expectTypeOf(ptr).returns.toEqualTypeOf<number>();
    expect(nul).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    expect(ptr).toThrow(expect.objectContaining({ code: 'EFAULT' }));
    const version = () => p.ioctl(fd, VFIO_GET_API_VERSION, null);
    expectTypeOf(version).returns.toEqualTypeOf<number>();
    expect(version).toThrow(expect.objectContaining({ code: 'ENOTTY' }));
  });

  it('a request picked at runtime (UAPI_IOCTLS_BY_NAME) takes any object, checked at runtime only', () => {
    const { p, fd } = fixture();
    const io = UAPI_IOCTLS_BY_NAME.get('IOMMU_IOAS_ALLOC')!;
    expectTypeOf(io.request).toEqualTypeOf<AnyIoctlRequest>();
    const r = p.ioctl(fd, io.request, {});
    expectTypeOf(r).toEqualTypeOf<Record<string, unknown>>();
    expect(typeof r.out_ioas_id).toBe('number');
    expect(() => p.ioctl(fd, io.request, { bogus: 1 })).toThrow(argError('ERR_INVALID_ARG_VALUE'));
    expect(p.ioctl(fd, anyIoctlRequest(IOMMU_IOAS_ALLOC), {}).out_ioas_id).toBeGreaterThan(0);
    // @ts-expect-error the loose request is not a typed one either
    const typed: IoctlRequest<typeof iommu_ioas_alloc> = io.request;
    expect(typed).toBe(IOMMU_IOAS_ALLOC);
  });
});

describe('readStruct / writeStruct', () => {
  it('decode and encode a struct typed by its layout', () => {
    const bytes = writeStruct(iommu_ioas_map, { size: iommu_ioas_map.size, ioas_id: 3, length: PAGE, iova: 0x1000n });
    expect(bytes.length).toBe(iommu_ioas_map.size);
    const s = readStruct(iommu_ioas_map, bytes);
    expectTypeOf(s).toEqualTypeOf<StructFields<typeof iommu_ioas_map>>();
    expectTypeOf(s.length).toEqualTypeOf<bigint>();
    expectTypeOf(s.ioas_id).toEqualTypeOf<number>();
    expect(s).toEqual({ size: 40, flags: 0, ioas_id: 3, __reserved: 0, user_va: 0n, length: PAGE, iova: 0x1000n });
    // The kernel sees a user pointer as its address; byte arrays as bytes.
    expectTypeOf<StructFields<typeof iommu_ioas_iova_ranges>['allowed_iovas']>().toEqualTypeOf<bigint>();
    const name = readStruct(liveupdate_session_get_name, writeStruct(liveupdate_session_get_name, { name: new TextEncoder().encode('vm0') })).name;
    expectTypeOf(name).toEqualTypeOf<Uint8Array>();
    expect(new TextDecoder().decode(name.subarray(0, 3))).toBe('vm0');
    // Into given bytes, keeping the fields not given.
    writeStruct(iommu_ioas_map, { ioas_id: 4 }, bytes);
    expect(readStruct(iommu_ioas_map, bytes)).toMatchObject({ ioas_id: 4, length: PAGE });
    // @ts-expect-error number for a u64
    writeStruct(iommu_ioas_map, { length: 4096 });
    // @ts-expect-error no such field
    writeStruct(iommu_ioas_map, { lenght: PAGE });
    expect(() => readStruct(iommu_ioas_map, new Uint8Array(8))).toThrow(RangeError);
  });
});
