// struct file and the user-memory accessors ioctl handlers use (copy_from_user / copy_to_user).
import type { PhysicalMemory } from '../hw/memory.js';
import { errno, type KernelError } from '../uapi/errno.js';
import { copyFields, fieldValue, readStruct, writeStruct, zeroValue, type StructFields, type StructLayout } from '../uapi/struct.js';
import type { Cred } from './cred.js';
import type { Backing, Mm } from './mm.js';

/**
 * The task a file operation runs for (`current`): its credentials, address space and fd table.
 * File operations and subsystems see a task through this, never the whole process.
 */
export interface Task extends Cred {
  readonly pid: number;
  readonly mm: Mm;
  /** RLIMIT_MEMLOCK in bytes. */
  readonly rlimitMemlock: number;
  /** `fget`: a new reference to the file behind `fd`, or EBADF. */
  fget(fd: number): File;
  /** `fd_install` at the lowest free fd. */
  installFd(file: File): number;
  /** `get_unused_fd_flags`: the fd {@link installFd} takes next. */
  unusedFd(): number;
}

/** Kernel-half addresses no process can map: where an ioctl's object or bytes argument appears. */
export const ARG_BASE = 0xffff_8000_0000_0000n;

/**
 * An ioctl's struct given as a JavaScript object (`Process.ioctl`): the `length` bytes of user
 * memory at {@link ARG_BASE}. They are held as the struct's values (`vals`, absent fields zero)
 * while every access is a whole copy of `layout` in or out, which is what iommufd, VFIO and LUO
 * do; the first other access lays them out as bytes (`bytes`), plain user memory from then on.
 */
export interface StructArg {
  readonly layout: StructLayout;
  readonly vals: Record<string, number | bigint | Uint8Array | undefined>;
  readonly length: number;
  bytes: Uint8Array | null;
}

/**
 * User memory as a handler sees it: the process address space, plus the kernel-side buffers that
 * stand in for user memory when an ioctl argument is given as a JS object or bytes.
 */
export class Uaccess {
  /** The argument at ARG_BASE given as an object. */
  private arg: StructArg | null = null;
  /** Further buffers by address: bytes at ARG_BASE, buffers a pointer field of the object points at. */
  private temps: Map<bigint, Uint8Array> | null = null;

  constructor(
    private readonly mm: Mm,
    private readonly memory: PhysicalMemory,
  ) {}

  /** @internal the argument is `arg` (an object) for the next call. */
  setStruct(arg: StructArg): void {
    this.arg = arg;
  }

  /** @internal `buf` stands in for user memory at `base` for the next call. */
  addTemp(base: bigint, buf: Uint8Array): void {
    (this.temps ??= new Map()).set(base, buf);
  }

  /** @internal the call is over: nothing stands in for user memory any more. Returns the object argument. */
  reset(): StructArg | null {
    const a = this.arg;
    this.arg = null;
    this.temps = null;
    return a;
  }

  /** The object argument if `ptr` is it and it is still held as values. */
  private typed(ptr: bigint, layout: StructLayout, usize: number): StructArg | null {
    const a = this.arg;
    return a !== null && a.bytes === null && ptr === ARG_BASE && a.layout === layout && usize >= layout.size ? a : null;
  }

  private temp(ptr: bigint, n: number): { buf: Uint8Array; off: number } | undefined {
    const a = this.arg;
    if (a !== null && ptr >= ARG_BASE && ptr < ARG_BASE + BigInt(a.length)) {
      // A byte-level access to the object argument: from now on it is bytes.
      if (a.bytes === null) a.bytes = writeStruct(a.layout, a.vals as Partial<StructFields<StructLayout>>, new Uint8Array(a.length));
      return this.within(a.bytes, Number(ptr - ARG_BASE), n);
    }
    if (this.temps === null) return undefined;
    for (const [base, buf] of this.temps) {
      if (ptr >= base && ptr < base + BigInt(buf.length || 1)) return this.within(buf, Number(ptr - base), n);
    }
    return undefined;
  }

  private within(buf: Uint8Array, off: number, n: number): { buf: Uint8Array; off: number } {
    if (off + n > buf.length) errno('EFAULT', 'access beyond the argument buffer');
    return { buf, off };
  }

  /** `copy_from_user`: EFAULT for NULL or unmapped memory. */
  read(ptr: bigint, n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    if (ptr === 0n) errno('EFAULT', 'NULL user pointer');
    const t = this.temp(ptr, n);
    if (t) return t.buf.slice(t.off, t.off + n);
    const out = new Uint8Array(n);
    this.mm.access(this.memory, ptr, out, false, true);
    return out;
  }

  /** `copy_to_user`. */
  write(ptr: bigint, bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (ptr === 0n) errno('EFAULT', 'NULL user pointer');
    const t = this.temp(ptr, bytes.length);
    if (t) {
      t.buf.set(bytes, t.off);
      return;
    }
    this.mm.access(this.memory, ptr, bytes, true, true);
  }

  /**
   * `copy_struct_from_user` of `layout` from `ptr`, the user's struct being `usize` bytes: what
   * it covers, zero-extended; past the kernel's struct it must be zero (E2BIG). The one copy-in
   * of ioctl structs (iommufd, VFIO, every later device).
   */
  copyStruct<L extends StructLayout>(ptr: bigint, layout: L, usize: number): StructFields<L> {
    const a = this.typed(ptr, layout, usize);
    if (a !== null) {
      // The object's bytes past the struct are zero; past its buffer they are not there.
      if (usize > a.length) errno('EFAULT', 'access beyond the argument buffer');
      return copyFields(layout, a.vals);
    }
    // The tail first (check_zeroed_user), then the common part (copy_from_user), as the kernel does.
    if (usize > layout.size && !this.isZeroed(ptr + BigInt(layout.size), usize - layout.size)) errno('E2BIG', 'non-zero bytes past the known struct');
    const bytes = new Uint8Array(layout.size);
    bytes.set(this.read(ptr, Math.min(usize, layout.size)));
    return readStruct(layout, bytes);
  }

  /** `copy_to_user` of the whole struct, up to the user's `usize` (iommufd_ucmd_respond). */
  respondStruct<L extends StructLayout>(ptr: bigint, layout: L, value: StructFields<L>, usize: number): void {
    const a = this.typed(ptr, layout, usize);
    if (a !== null) {
      // The whole struct lands, a field the value lacks as zero (writeStruct's fresh bytes).
      const from = value as Record<string, number | bigint | Uint8Array | undefined>;
      for (const f of layout.fields) {
        const v = from[f.name];
        a.vals[f.name] = v === undefined ? zeroValue(f) : fieldValue(f, v);
      }
      return;
    }
    const bytes = writeStruct(layout, value as unknown as Partial<StructFields<L>>);
    this.write(ptr, bytes.subarray(0, Math.min(usize, bytes.length)));
  }

  /** `get_user` of a u32. */
  getU32(ptr: bigint): number {
    const a = this.arg;
    if (a !== null && a.bytes === null && ptr === ARG_BASE) {
      const f = a.layout.fields[0];
      if (f !== undefined && f.offset === 0 && f.type === 'u32') return (a.vals[f.name] as number | undefined) ?? 0;
    }
    const b = this.read(ptr, 4);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  }

  /** `check_zeroed_user`. */
  isZeroed(ptr: bigint, n: number): boolean {
    return this.read(ptr, n).every((x) => x === 0);
  }
}

/** `struct file`: refcounted; the last `put` releases it. */
export abstract class File {
  private refs = 1;

  constructor(
    /** Open flags (O_RDWR, ...). */
    readonly flags: number,
    /** Path it was opened by, for messages. */
    readonly path: string,
  ) {}

  get(): this {
    this.refs++;
    return this;
  }

  put(): void {
    if (--this.refs === 0) this.release();
  }

  /**
   * `unlocked_ioctl`: returns the syscall's value, or a KernelError for `return -EXXX` (throwing
   * it is the same, only slower: a failing ioctl that returns its error is one throw, the
   * SyscallError's).
   */
  ioctl(_task: Task, _request: number, _u: Uaccess, _arg: bigint): number | KernelError {
    return errno('ENOTTY', 'no ioctls on this file');
  }

  read(_task: Task, _n: number): Uint8Array {
    return errno('EINVAL', 'file does not support read');
  }

  write(_task: Task, _data: Uint8Array): number {
    return errno('EINVAL', 'file does not support write');
  }

  /** The object an mmap of this file maps, and its first page (`prot`: the mapping's PROT_*). */
  mmapObject(_task: Task, _pgoff: number, _npages: number, _flags: number, _prot?: number): Backing {
    return errno('ENODEV', 'file cannot be mmapped');
  }

  /** Whether a shared mapping of this file may write (counted against F_SEAL_WRITE); default no. */
  mayWriteShared?(): boolean;

  /** The shmem object behind a memfd (IOMMU_IOAS_MAP_FILE), if this is one. */
  mapFileObject?(): Backing | undefined;

  /** An open of `/proc/self/fd/N` naming this file: a new open file of the same inode. */
  reopen?(flags: number): File;

  /** `ftruncate`. */
  truncate(_task: Task, _length: bigint): void {
    errno('EINVAL', 'not a regular file');
  }

  /** `release`: the last reference went away. */
  protected release(): void {}
}
