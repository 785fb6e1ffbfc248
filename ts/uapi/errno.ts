// Linux x86-64 errno values (include/uapi/asm-generic/errno-base.h, errno.h) and the error the
// simulated syscalls throw, shaped like Node's system errors.

/** errno name → value, as the x86-64 kernel returns them (positive). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ENODATA: 61,
  EOVERFLOW: 75,
  EBADFD: 77,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
} as const;

export type ErrnoCode = keyof typeof ERRNO;

/** `strerror` text, as glibc prints it. */
const DESCRIPTION: Record<ErrnoCode, string> = {
  EPERM: 'operation not permitted',
  ENOENT: 'no such file or directory',
  ESRCH: 'no such process',
  EINTR: 'interrupted system call',
  EIO: 'i/o error',
  ENXIO: 'no such device or address',
  E2BIG: 'argument list too long',
  EBADF: 'bad file descriptor',
  EAGAIN: 'resource temporarily unavailable',
  ENOMEM: 'cannot allocate memory',
  EACCES: 'permission denied',
  EFAULT: 'bad address',
  EBUSY: 'device or resource busy',
  EEXIST: 'file exists',
  ENODEV: 'no such device',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  EINVAL: 'invalid argument',
  ENFILE: 'too many open files in system',
  EMFILE: 'too many open files',
  ENOTTY: 'inappropriate ioctl for device',
  EFBIG: 'file too large',
  ENOSPC: 'no space left on device',
  ESPIPE: 'illegal seek',
  EROFS: 'read-only file system',
  EPIPE: 'broken pipe',
  ERANGE: 'result too large',
  EDEADLK: 'resource deadlock avoided',
  ENAMETOOLONG: 'name too long',
  ENOSYS: 'function not implemented',
  ENOTEMPTY: 'directory not empty',
  ENODATA: 'no data available',
  EOVERFLOW: 'value too large for defined data type',
  EBADFD: 'file descriptor in bad state',
  EMSGSIZE: 'message too long',
  EOPNOTSUPP: 'operation not supported',
  EADDRINUSE: 'address already in use',
};

/** `process.env` without assuming Node (the uAPI module is a leaf). */
const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};

/**
 * What the errno errors share. They are Errors by their prototype (`instanceof Error`,
 * `util.inspect` and `String()` show them as errors) but are not built by the Error constructor:
 * that captures a stack even at `Error.stackTraceLimit = 0` and costs more than a whole simulated
 * syscall, and a fuzzer or a VMM's retry loop expects most of its errors. `message` is formatted
 * when read; `stack` is the first line (`SyscallError: EEXIST: file exists, ioctl ...`) unless a
 * stack was captured into the error. Both can be assigned, as an Error's can.
 */
function errorPrototype(proto: object, message: (this: never) => string): void {
  Object.setPrototypeOf(proto, Error.prototype);
  const own = (key: string) =>
    function (this: object, value: unknown) {
      Object.defineProperty(this, key, { value, writable: true, configurable: true });
    };
  Object.defineProperties(proto, {
    message: { get: message, set: own('message'), configurable: true },
    stack: {
      get(this: Error) {
        return `${this.name}: ${this.message}`;
      },
      set: own('stack'),
      configurable: true,
    },
  });
}

/**
 * A failed simulated system call, shaped like Node's system errors: `code` is the errno name,
 * `errno` the negative number Node reports (`-2` for ENOENT), `syscall` the call, and `request`
 * the ioctl name or path when there is one. Cheap to make (see `errorPrototype`): its `stack`
 * is its first line unless {@link SyscallError.captureStackTraces} is set.
 */
// The interface gives the class Error's members, which its prototype provides.
export interface SyscallError extends Error {}
export class SyscallError {
  /**
   * Capture the JavaScript stack (`Error.stackTraceLimit` frames) into every SyscallError: for
   * debugging where a failing syscall was made. Default off; on when the environment has
   * `IOMMU_LIVEUPDATE_STACKS=1`.
   */
  static captureStackTraces = env.IOMMU_LIVEUPDATE_STACKS === '1';

  name = 'SyscallError';
  readonly errno: number;
  readonly #detail: string | undefined;
  constructor(
    readonly code: ErrnoCode,
    readonly syscall: string,
    readonly request?: string,
    detail?: string,
  ) {
    this.errno = -ERRNO[code];
    this.#detail = detail;
    if (SyscallError.captureStackTraces) Error.captureStackTrace(this, SyscallError);
  }

  static {
    errorPrototype(this.prototype, function (this: SyscallError) {
      const { code, syscall, request } = this;
      const detail = this.#detail;
      return `${code}: ${DESCRIPTION[code]}, ${syscall}${request ? ` ${request}` : ''}${detail ? ` (${detail})` : ''}`;
    } as (this: never) => string);
  }
}

/**
 * Thrown inside the simulated kernel: `-EINVAL` and friends. The syscall entry turns it into a
 * {@link SyscallError}; `detail` says which rule fired, for the message only. A `return -EXXX`
 * that unwinds: as cheap as a SyscallError (no stack, the message formatted when read).
 */
export interface KernelError extends Error {}
export class KernelError {
  constructor(
    readonly code: ErrnoCode,
    readonly detail?: string,
  ) {}

  static {
    errorPrototype(this.prototype, function (this: KernelError) {
      return this.detail ? `${this.code} (${this.detail})` : this.code;
    } as (this: never) => string);
  }
}

/** `return -E...;` */
export function errno(code: ErrnoCode, detail?: string): never {
  throw new KernelError(code, detail);
}
