import { expect } from 'vitest';
import { ERRNO, IommuUnit, PhysicalMemory, SyscallError, type ErrnoCode, type PageTable } from 'iommu-liveupdate';

/**
 * `EXPECT_ERRNO`: `fn` fails with errno `code` (name and number) from `syscall`, and with ioctl
 * `request` when given. Returns the error; anything else thrown is rethrown as is.
 */
export function expectErrno(fn: () => unknown, code: ErrnoCode, syscall = 'ioctl', request?: string): SyscallError {
  let caught: unknown;
  let threw = false;
  try {
    fn();
  } catch (e) {
    caught = e;
    threw = true;
  }
  if (!threw) expect.fail(`expected ${syscall} to fail with ${code}, but it succeeded`);
  if (!(caught instanceof SyscallError)) throw caught;
  return expectSyscallError(caught, code, syscall, request);
}

/** `e` (an error caught elsewhere, e.g. in a callback) is errno `code` from `syscall` (and `request`). */
export function expectSyscallError(e: unknown, code: ErrnoCode, syscall = 'ioctl', request?: string): SyscallError {
  expect(e, `expected ${code} from ${syscall}`).toBeInstanceOf(SyscallError);
  const s = e as SyscallError;
  expect({ code: s.code, errno: s.errno, syscall: s.syscall }, s.message).toEqual({ code, errno: -ERRNO[code], syscall });
  if (request !== undefined) expect(s.request).toBe(request);
  return s;
}

/** A root table and a context table per bus, programmed as the Intel driver does. */
export class Tables {
  readonly root: bigint;
  private readonly contexts = new Map<number, bigint>();

  constructor(
    readonly mem: PhysicalMemory,
    readonly unit: IommuUnit,
  ) {
    this.root = mem.alloc(0, { zero: true });
    unit.setRootTable(this.root);
    unit.enableTranslation(true);
  }

  /** Points requester `sid` at `pt` in domain `did` (legacy context entry, TT=0). */
  attach(sid: number, pt: PageTable, did: number, opts: { fpd?: boolean } = {}): bigint {
    const bus = sid >> 8;
    let ctx = this.contexts.get(bus);
    if (ctx === undefined) {
      ctx = this.mem.alloc(0, { zero: true });
      this.contexts.set(bus, ctx);
      this.mem.writeU64(this.root + 16n * BigInt(bus), ctx | 1n);
    }
    const ce = ctx + 16n * BigInt(sid & 0xff);
    this.mem.writeU64(ce, pt.pgd | (opts.fpd ? 2n : 0n) | 1n);
    this.mem.writeU64(ce + 8n, BigInt(pt.aw) | (BigInt(did) << 8n));
    return ce;
  }
}

export function rig(options: ConstructorParameters<typeof IommuUnit>[1] = {}, size = 64n << 30n) {
  const mem = new PhysicalMemory({ size, seed: 7 });
  const unit = new IommuUnit(mem, options);
  const tables = new Tables(mem, unit);
  return { mem, unit, tables };
}
