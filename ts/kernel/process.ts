// A process: credentials, an fd table, an address space, and the syscall surface. Every call
// either returns what the kernel returns or throws a SyscallError with the kernel's errno.
import { invalidArgType, invalidArgValue } from '../errors.js';
import type { PhysicalMemory } from '../hw/memory.js';
import { errno, KernelError, SyscallError } from '../uapi/errno.js';
import { UAPI_IOCTLS, type AnyIoctlRequest, type IoctlRequest, type IoctlResult, type UnknownFields } from '../uapi/ioctl.js';
import { F_ADD_SEALS, F_GET_SEALS, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MAP_TYPE, O_ACCMODE, O_RDONLY, PROT_EXEC, PROT_READ, PROT_WRITE } from '../uapi/mman.js';
import type { Dirent, Stat } from '../uapi/stat.js';
import { checkFieldValue, getBytes, getField, writeStruct, zeroStruct, type Field, type StructFields, type StructIn, type StructLayout } from '../uapi/struct.js';
import { ALL_CAPABILITIES } from './cred.js';
import { ARG_BASE, File, Uaccess, type StructArg, type Task } from './file.js';
import { MemfdFile, memfdCreate } from './memfd.js';
import { pipeFiles } from './pipe.js';
import { MemObject, Mm, mmapPlace, PAGE_SIZE, type Backing, type PageRefs } from './mm.js';
import { internalError, isCallbackError } from './reentrancy.js';

const PAGE = BigInt(PAGE_SIZE);

/** Which count field sizes an array pointer field (`allowed_iovas` ↔ `num_iovas`), and back. */
const ARRAY_COUNT: Record<string, string> = { allowed_iovas: 'num_iovas' };
const COUNT_OF: Record<string, string | undefined> = Object.fromEntries(Object.entries(ARRAY_COUNT).map(([a, c]) => [c, a]));

/** The buffers the pointer fields of an object argument point at (only made when one does). */
interface PointerArgs {
  next: bigint;
  /** The address each such field was given. */
  addrs: Map<string, bigint>;
  /** Arrays of `{ start, last }`: their buffer and bytes as sent, read back into the array. */
  arrays: { buf: Uint8Array; orig: Uint8Array; arr: ({ start: bigint; last: bigint } | undefined)[] }[];
}

/** An object argument as Process holds it: the struct, and the buffers its pointer fields point at. */
interface ObjectArg extends StructArg {
  readonly ptrs: PointerArgs | null;
}

/** The ioctl's name for errors (`IOMMU_IOAS_MAP`), or its number. */
function requestName(request: number): string {
  return UAPI_IOCTLS.get(request)?.name ?? `0x${request.toString(16)}`;
}

/**
 * The outputs land in the caller's object: each output field the kernel changed, or that the
 * caller left out (the value it had is what was passed, or the address given for a buffer);
 * changed ranges of an array argument are read back into it.
 */
function writeBack(arg: Record<string, unknown>, struct: ObjectArg): void {
  const { layout, vals, bytes, ptrs } = struct;
  const view = bytes === null ? null : new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const f of layout.fields) {
    if (!f.out) continue;
    const given = arg[f.name];
    if (f.byteArray) {
      const b = view === null ? (vals[f.name] as Uint8Array) : getBytes(view, f);
      const a = given === undefined ? null : (checkFieldValue(layout, f, given) as Uint8Array);
      if (a === null || a.some((x, i) => x !== b[i])) arg[f.name] = b.slice();
      continue;
    }
    const b = view === null ? vals[f.name] : getField(view, f);
    const before = typeof given === 'object' && given !== null ? ptrs?.addrs.get(f.name) : given;
    if (given === undefined || before !== b) arg[f.name] = b;
  }
  if (ptrs === null) return;
  for (const a of ptrs.arrays) {
    for (let i = 0; i < a.buf.length / 16; i++) {
      const changed = a.buf.subarray(16 * i, 16 * i + 16).some((x, k) => x !== a.orig[16 * i + k]);
      if (!changed) continue;
      const dv = new DataView(a.buf.buffer, 16 * i, 16);
      a.arr[i] = { start: dv.getBigUint64(0, true), last: dv.getBigUint64(8, true) };
    }
  }
}

/** An ioctl argument: a struct as an object, raw struct bytes, a user pointer, or NULL. */
export type IoctlArg = Record<string, unknown> | Uint8Array | bigint | null | undefined;

/** Options of {@link Kernel.spawn}. */
export interface SpawnOptions {
  uid?: number;
  gid?: number;
  /** Capabilities; default: all of them for uid 0, none otherwise. */
  capabilities?: string[];
  /** RLIMIT_MEMLOCK in bytes (default 8 MiB). */
  rlimitMemlock?: bigint | number;
}

/** What the syscalls of a process need from its kernel (the kernel implements it). */
export interface SyscallKernel {
  readonly memory: PhysicalMemory;
  readonly pageRefs: PageRefs;
  readonly cmdline: string;
  readonly dead: boolean;
  /** Why the kernel cannot be entered now (inside a transition), or null. */
  reentrancy(): string | null;
  log(msg: string): void;
  /** The VFS: path lookup and the path syscalls. */
  openPath(task: Task, path: string, flags: number, mode: number): File;
  stat(path: string): Stat;
  readdir(path: string): Dirent[];
  unlink(task: Task, path: string): void;
  mount(task: Task, fstype: string, path: string): void;
  kexecLoad(task: Task, cmdline: string | null): void;
  reboot(task: Task, cmd: number): void;
  /** The process exited. */
  reap(p: Process): void;
}

/** A simulated process (`struct task_struct` with its files and mm). */
export class Process implements Task {
  readonly mm = new Mm();
  readonly uid: number;
  readonly gid: number;
  private readonly caps: Set<string>;
  readonly rlimitMemlock: number;
  private readonly fds: (File | undefined)[] = [];
  private exited = false;
  /** User memory for ioctl handlers, reused call after call (see {@link ioctl}). */
  private readonly uaccess: Uaccess;
  private uaccessBusy = false;

  constructor(
    readonly kernel: SyscallKernel,
    readonly pid: number,
    opts: SpawnOptions,
  ) {
    this.uid = opts.uid ?? 0;
    this.gid = opts.gid ?? this.uid;
    this.caps = new Set(opts.capabilities ?? (this.uid === 0 ? ALL_CAPABILITIES : []));
    this.rlimitMemlock = Number(opts.rlimitMemlock ?? 8 << 20);
    this.uaccess = new Uaccess(this.mm, kernel.memory);
  }

  /** `capable(cap)`. */
  capable(cap: string): boolean {
    return this.caps.has(cap);
  }

  /** `fget`: a new reference to the file behind `fd`, or EBADF. */
  fget(fd: number): File {
    const f = Number.isInteger(fd) && fd >= 0 ? this.fds[fd] : undefined;
    if (!f) errno('EBADF', `fd ${fd} is not open`);
    return f.get();
  }

  /**
   * The syscall entry. A process of a dead kernel is gone (ESRCH). A call made from inside a
   * transition of this kernel — a KHO failure-injection hook, a DUMP/ABORT, a phase observer of
   * its host — is refused with EDEADLK before it does anything: the kernel would wait there for
   * the very transition that is waiting for the caller ("resource deadlock avoided"), and no
   * retry from the same place can succeed, which EBUSY or EAGAIN would suggest.
   *
   * On the way out a KernelError becomes a SyscallError. What else may pass unchanged is the
   * caller's own: argument errors (`ERR_INVALID_ARG_*`: a JavaScript value no C caller could
   * pass), another syscall's SyscallError, or an exception the caller's observer or hook threw.
   * Anything else is a bug of the simulated kernel (an `ERR_PHYSMEM_*` from the native core, a
   * broken invariant): it is logged as a `BUG:` line and thrown as `ERR_INTERNAL_ASSERTION` with
   * the original error as `cause` — visible as a bug, never dressed up as an errno, never a raw
   * internal code a caller might take for part of the API.
   */
  private syscall<T>(name: string, request: string | undefined, fn: () => T): T {
    this.enter(name, request);
    try {
      return fn();
    } catch (e) {
      throw this.exitError(e, name, request);
    }
  }

  /** The syscall entry's refusals: a process that is gone (ESRCH), a call from inside a transition (EDEADLK). */
  private enter(name: string, request: string | undefined): void {
    if (this.exited) throw new SyscallError('ESRCH', name, request, this.kernel.dead ? 'its kernel was replaced by kexec' : 'the process has exited');
    const busy = this.kernel.reentrancy();
    if (busy !== null) throw new SyscallError('EDEADLK', name, request, busy);
  }

  /** What leaves the syscall for `e` thrown inside it (see {@link syscall}). */
  private exitError(e: unknown, name: string, request: string | undefined): unknown {
    if (e instanceof KernelError) return new SyscallError(e.code, name, request, e.detail);
    if (e instanceof SyscallError || isCallbackError(e) || /^ERR_INVALID_ARG_/.test(String((e as { code?: unknown } | null)?.code))) return e;
    const where = `${name}${request ? ` ${request}` : ''}`;
    this.kernel.log(`BUG: unexpected error in ${where}: ${e instanceof Error ? e.message : String(e)}`);
    return internalError(e, where);
  }

  /** @internal the lowest free fd now holds `file`. */
  installFd(file: File): number {
    const fd = this.unusedFd();
    this.fds[fd] = file;
    return fd;
  }

  /** @internal `get_unused_fd_flags`: the fd {@link installFd} takes next. */
  unusedFd(): number {
    let fd = 3; // 0, 1 and 2 are the process's stdio
    while (this.fds[fd]) fd++;
    return fd;
  }

  /** `open(path, flags)`: returns the lowest free fd. */
  open(path: string, flags: number, mode = 0o666): number {
    return this.syscall('open', path, () => this.installFd(this.kernel.openPath(this, path, flags, mode)));
  }

  /** `close(fd)`. */
  close(fd: number): void {
    this.syscall('close', undefined, () => {
      const f = Number.isInteger(fd) && fd >= 0 ? this.fds[fd] : undefined;
      if (!f) errno('EBADF', `fd ${fd} is not open`);
      this.fds[fd] = undefined;
      f.put();
    });
  }

  /**
   * `ioctl(fd, request, arg)`. `arg` is the struct as an object keyed by the kernel's field names
   * (outputs are written back into it, which is returned), raw struct bytes, a user pointer, or
   * null. Other requests return the syscall's value.
   *
   * With a typed request (`IOMMU_IOAS_MAP` is `IoctlRequest<typeof iommu_ioas_map>`) the object
   * is checked against the struct (no unknown field, `bigint` for a u64, ...) and the result has
   * the struct's outputs typed.
   */
  ioctl<L extends StructLayout, A extends StructIn<L>>(fd: number, request: IoctlRequest<L>, arg: A & NoInfer<UnknownFields<L, A>>): IoctlResult<L, A>;
  /** A request picked at runtime ({@link AnyIoctlRequest}, `UAPI_IOCTLS_BY_NAME`): the object is checked at runtime only. */
  ioctl(fd: number, request: AnyIoctlRequest, arg: Record<string, unknown>): Record<string, unknown>;
  /** Raw struct bytes, a user pointer or NULL, for any request: returns the syscall's value. */
  ioctl(fd: number, request: number, arg?: Uint8Array | bigint | null): number;
  ioctl(fd: number, request: number, arg?: IoctlArg): unknown {
    if (this.exited || this.kernel.reentrancy() !== null) this.enter('ioctl', requestName(request));
    // One Uaccess per process, reset after every call; a fresh one if a call is still using it.
    const own = !this.uaccessBusy;
    const u = own ? this.uaccess : new Uaccess(this.mm, this.kernel.memory);
    if (own) this.uaccessBusy = true;
    let file: File | undefined;
    let ret: unknown;
    let failed: unknown = null;
    // No finally and no rethrow on the way out: a failing ioctl is one catch and one throw.
    try {
      file = this.fget(fd);
      ret = this.ioctlArg(file, request, arg, u);
      if (ret instanceof KernelError) failed = ret;
    } catch (e) {
      failed = e;
    }
    file?.put();
    const struct = u.reset() as ObjectArg | null;
    if (own) this.uaccessBusy = false;
    if (struct !== null) {
      // The outputs land in the object, also when the call fails (IOVA_RANGES with EMSGSIZE).
      try {
        writeBack(arg as Record<string, unknown>, struct);
      } catch (e) {
        failed = e;
      }
    }
    if (failed !== null) throw this.exitError(failed, 'ioctl', requestName(request));
    return ret;
  }

  private ioctlArg(file: File, request: number, arg: IoctlArg, u: Uaccess): unknown {
    if (arg === null || arg === undefined) return file.ioctl(this, request, u, 0n);
    if (typeof arg === 'bigint') return file.ioctl(this, request, u, arg);
    if (arg instanceof Uint8Array) {
      u.addTemp(ARG_BASE, arg);
      return file.ioctl(this, request, u, ARG_BASE);
    }
    if (typeof arg !== 'object') throw invalidArgType('ioctl argument must be an object, Uint8Array, bigint or null');
    const layout = UAPI_IOCTLS.get(request)?.layout;
    if (!layout) {
      u.addTemp(ARG_BASE, new Uint8Array(8));
      const ret = file.ioctl(this, request, u, ARG_BASE);
      return ret instanceof KernelError ? ret : arg;
    }
    u.setStruct(this.structArg(layout, arg as Record<string, unknown>, u));
    const ret = file.ioctl(this, request, u, ARG_BASE);
    return ret instanceof KernelError ? ret : arg;
  }

  /**
   * An object argument, checked against the struct (Node's argument errors, in field order) and
   * held as the struct's values for the handler (see {@link StructArg}).
   */
  private structArg(layout: StructLayout, arg: Record<string, unknown>, u: Uaccess): ObjectArg {
    for (const key in arg) {
      if (!layout.byName.has(key) && Object.hasOwn(arg, key)) throw invalidArgValue(`${layout.name} has no field ${key}`, TypeError);
    }
    const sizeField = layout.fields[0]!;
    const size = arg[sizeField.name] === undefined ? layout.size : (checkFieldValue(layout, sizeField, arg[sizeField.name]) as number);
    // Every field present, zero until given; of a union, only what is given (it is bytes, below).
    const vals: Record<string, number | bigint | Uint8Array | undefined> = layout.hasUnion ? {} : { ...zeroStruct(layout) };
    let ptrs: PointerArgs | null = null;
    for (const f of layout.fields) {
      const v = f === sizeField ? size : arg[f.name];
      if (v === undefined) {
        // An absent count next to an array is the array's length.
        const arr = COUNT_OF[f.name];
        if (arr !== undefined && Array.isArray(arg[arr])) vals[f.name] = (arg[arr] as unknown[]).length;
        continue;
      }
      if (f.type === 'u64' && typeof v !== 'bigint') {
        ptrs ??= { next: ARG_BASE + (1n << 32n), addrs: new Map(), arrays: [] };
        vals[f.name] = this.pointerArg(layout, f, v, arg, ptrs, u);
        continue;
      }
      vals[f.name] = checkFieldValue(layout, f, v);
    }
    const struct: ObjectArg = { layout, vals, length: Math.max(layout.size, Math.min(size, layout.size + PAGE_SIZE)), bytes: null, ptrs };
    // Members of a union share bytes: such a struct is bytes from the start.
    if (layout.hasUnion) struct.bytes = writeStruct(layout, vals as Partial<StructFields<StructLayout>>, new Uint8Array(struct.length));
    return struct;
  }

  /** A u64 field given as a buffer or an array of ranges: a kernel-side buffer the field points at. */
  private pointerArg(layout: StructLayout, f: Field, v: unknown, arg: Record<string, unknown>, ptrs: PointerArgs, u: Uaccess): bigint {
    let buf: Uint8Array;
    if (Array.isArray(v) && f.name in ARRAY_COUNT) {
      const countField = layout.byName.get(ARRAY_COUNT[f.name]!)!;
      const count = arg[countField.name] === undefined ? v.length : Number(arg[countField.name]);
      buf = new Uint8Array(16 * Math.max(v.length, Number.isFinite(count) ? count : 0));
      const dv = new DataView(buf.buffer);
      v.forEach((r: { start?: unknown; last?: unknown } | undefined, i) => {
        if (r === undefined) return;
        if (typeof r?.start !== 'bigint' || typeof r?.last !== 'bigint') {
          throw invalidArgType(`${layout.name}.${f.name}[${i}] must be { start: bigint, last: bigint }`);
        }
        dv.setBigUint64(16 * i, BigInt.asUintN(64, r.start), true);
        dv.setBigUint64(16 * i + 8, BigInt.asUintN(64, r.last), true);
      });
      ptrs.arrays.push({ buf, orig: buf.slice(), arr: v });
    } else if (ArrayBuffer.isView(v)) {
      buf = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    } else {
      return checkFieldValue(layout, f, v) as bigint;
    }
    const addr = buf.length ? ptrs.next : 0n;
    u.addTemp(ptrs.next, buf);
    ptrs.next += 1n << 32n;
    ptrs.addrs.set(f.name, addr);
    return addr;
  }

  /** `mmap(addr, length, prot, flags, fd, offset)`: returns the address. */
  mmap(addr: bigint | null, length: bigint, prot: number, flags: number, fd = -1, offset = 0n): bigint {
    return this.syscall('mmap', undefined, () => {
      if (length === 0n) errno('EINVAL', 'zero length');
      if (offset % PAGE !== 0n) errno('EINVAL', 'offset not page aligned');
      const type = flags & MAP_TYPE;
      if (type !== MAP_SHARED && type !== MAP_PRIVATE && type !== MAP_SHARED_VALIDATE) errno('EINVAL', 'MAP_SHARED or MAP_PRIVATE required');
      if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) errno('EINVAL', 'unknown prot bits');
      const npages = Number((length + PAGE - 1n) / PAGE);
      if (npages > 2 ** 35) errno('ENOMEM', 'length too large');
      let obj: Backing;
      let pgoff = 0;
      let name = 'anon';
      let sharedWrite = false;
      if (flags & MAP_ANONYMOUS) {
        obj = new MemObject(this.kernel.memory, this.kernel.pageRefs, npages);
      } else {
        const file = this.fget(fd);
        try {
          if ((file.flags & O_ACCMODE) === O_RDONLY && type !== MAP_PRIVATE && prot & PROT_WRITE) errno('EACCES', 'shared writable map of a read-only fd');
          pgoff = Number(offset / PAGE);
          obj = file.mmapObject(this, pgoff, npages, flags, prot).get();
          name = file.path;
          sharedWrite = type !== MAP_PRIVATE && (file.mayWriteShared?.() ?? false);
        } finally {
          file.put();
        }
      }
      let start: number;
      try {
        start = mmapPlace(this.mm, addr, npages, flags & (MAP_FIXED | MAP_FIXED_NOREPLACE));
      } catch (e) {
        obj.put();
        throw e;
      }
      this.mm.insert({ start, end: start + npages, prot, flags, obj, pgoff, name, sharedWrite });
      return BigInt(start) * PAGE;
    });
  }

  /** `munmap(addr, length)`. */
  munmap(addr: bigint, length: bigint): void {
    this.syscall('munmap', undefined, () => {
      if (addr % PAGE !== 0n || length === 0n) errno('EINVAL', 'address not page aligned or zero length');
      const start = Number(addr / PAGE);
      this.mm.remove(start, start + Number((length + PAGE - 1n) / PAGE));
    });
  }

  /** Reads `n` bytes of process memory at `va` (as the process itself would). */
  memRead(va: bigint, n: number): Uint8Array {
    return this.syscall('memRead', undefined, () => {
      const out = new Uint8Array(n);
      this.mm.access(this.kernel.memory, va, out, false, true);
      return out;
    });
  }

  /** Writes `bytes` into process memory at `va`; first touch allocates the backing frames. */
  memWrite(va: bigint, bytes: Uint8Array): void {
    this.syscall('memWrite', undefined, () => this.mm.access(this.kernel.memory, va, bytes, true, true));
  }

  /** `read(fd, n)`. */
  read(fd: number, n: number): Uint8Array {
    return this.syscall('read', undefined, () => {
      const f = this.fget(fd);
      try {
        return f.read(this, n);
      } finally {
        f.put();
      }
    });
  }

  /** `write(fd, data)`: returns the bytes written. */
  write(fd: number, data: Uint8Array | string): number {
    return this.syscall('write', undefined, () => {
      const f = this.fget(fd);
      try {
        return f.write(this, typeof data === 'string' ? new TextEncoder().encode(data) : data);
      } finally {
        f.put();
      }
    });
  }

  /**
   * `memfd_create(name, flags)`: `MFD_ALLOW_SEALING` lets seals be added (else the memfd is born
   * with F_SEAL_SEAL), `MFD_NOEXEC_SEAL`, `MFD_EXEC`, `MFD_CLOEXEC`.
   */
  memfd_create(name: string, flags = 0): number {
    return this.syscall('memfd_create', name, () => this.installFd(memfdCreate(this.kernel.memory, this.kernel.pageRefs, name, flags)));
  }

  /**
   * `fcntl(fd, cmd, arg)`: `F_ADD_SEALS` (returns 0) and `F_GET_SEALS` (returns the seals) of a
   * memfd; EINVAL for other files and other commands.
   */
  fcntl(fd: number, cmd: number, arg = 0): number {
    return this.syscall('fcntl', undefined, () => {
      const f = this.fget(fd);
      try {
        if (cmd !== F_ADD_SEALS && cmd !== F_GET_SEALS) return errno('EINVAL', `fcntl command ${cmd} is not modelled`);
        if (!(f instanceof MemfdFile)) return errno('EINVAL', 'seals are only on memfds');
        if (cmd === F_GET_SEALS) return f.getSeals();
        f.addSeals(arg >>> 0 === arg ? arg : -1);
        return 0;
      } finally {
        f.put();
      }
    });
  }

  /** `pipe2(fds, 0)`: `[read end, write end]`. */
  pipe(): [number, number] {
    return this.syscall('pipe', undefined, () => {
      const [r, w] = pipeFiles();
      return [this.installFd(r), this.installFd(w)];
    });
  }

  /** `ftruncate(fd, length)`. */
  ftruncate(fd: number, length: bigint): void {
    this.syscall('ftruncate', undefined, () => {
      const f = this.fget(fd);
      try {
        if (length < 0n) errno('EINVAL', 'negative length');
        if ((f.flags & O_ACCMODE) === O_RDONLY) errno('EINVAL', 'fd not open for writing');
        f.truncate(this, length);
      } finally {
        f.put();
      }
    });
  }

  /** `kexec_file_load`: stages the next kernel with `cmdline` (CAP_SYS_BOOT); `{ unload: true }` drops it. */
  kexecFileLoad(opts: { cmdline?: string; unload?: boolean } = {}): void {
    this.syscall('kexec_file_load', undefined, () => this.kernel.kexecLoad(this, opts.unload ? null : (opts.cmdline ?? this.kernel.cmdline)));
  }

  /** `reboot(cmd)`: `LINUX_REBOOT_CMD_KEXEC` jumps to the staged kernel; this process is gone after. */
  reboot(cmd: number): void {
    this.syscall('reboot', undefined, () => this.kernel.reboot(this, cmd));
  }

  /** `mount(source, target, fstype)`: only `guestmemfs` (one mount, CAP_SYS_ADMIN). */
  mount(fstype: string, path: string): void {
    this.syscall('mount', path, () => this.kernel.mount(this, fstype, path));
  }

  /** `unlink(path)`. */
  unlink(path: string): void {
    this.syscall('unlink', path, () => this.kernel.unlink(this, path));
  }

  /** `stat(path)`. */
  stat(path: string): Stat {
    return this.syscall('stat', path, () => this.kernel.stat(path));
  }

  /** `getdents64` on a directory opened at `path`, as one list (with `.` and `..`). */
  readdir(path: string): Dirent[] {
    return this.syscall('getdents64', path, () => this.kernel.readdir(path));
  }

  /** Pin count of the page mapped at `va` (0 if unmapped or not resident): MD_CHECK_REFS. */
  pinCount(va: bigint): number {
    const page = Number(va / PAGE);
    const v = this.mm.find(page);
    if (!v) return 0;
    const pfn = v.obj.pfn(v.pgoff + (page - v.start), false);
    return pfn ? this.kernel.pageRefs.count(pfn) : 0;
  }

  /** @internal kexec: the process is gone with its kernel; nothing is torn down. */
  kill(): void {
    this.exited = true;
  }

  /**
   * `exit()`: closes every fd and tears the address space down. From inside a transition of its
   * kernel (a KHO hook, a phase observer) it is refused with EDEADLK and the process is kept:
   * its release would tear down what the DUMP is serialising.
   */
  exit(): void {
    if (this.exited) return;
    const busy = this.kernel.reentrancy();
    if (busy !== null) throw new SyscallError('EDEADLK', 'exit', undefined, busy);
    for (let fd = 0; fd < this.fds.length; fd++) {
      const f = this.fds[fd];
      this.fds[fd] = undefined;
      f?.put();
    }
    this.mm.exit();
    this.exited = true;
    this.kernel.reap(this);
  }
}
