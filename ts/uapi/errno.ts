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

/**
 * A failed simulated system call, shaped like Node's system errors: `code` is the errno name,
 * `errno` the negative number Node reports (`-2` for ENOENT), `syscall` the call, and `request`
 * the ioctl name or path when there is one.
 */
export class SyscallError extends Error {
  readonly errno: number;
  constructor(
    readonly code: ErrnoCode,
    readonly syscall: string,
    readonly request?: string,
    detail?: string,
  ) {
    super(`${code}: ${DESCRIPTION[code]}, ${syscall}${request ? ` ${request}` : ''}${detail ? ` (${detail})` : ''}`);
    this.name = 'SyscallError';
    this.errno = -ERRNO[code];
  }
}

/**
 * Thrown inside the simulated kernel: `-EINVAL` and friends. The syscall entry turns it into a
 * {@link SyscallError}; `detail` says which rule fired, for the message only.
 */
export class KernelError extends Error {
  constructor(
    readonly code: ErrnoCode,
    readonly detail?: string,
  ) {
    super(detail ? `${code} (${detail})` : code);
  }
}

/** `return -E...;` */
export function errno(code: ErrnoCode, detail?: string): never {
  throw new KernelError(code, detail);
}
