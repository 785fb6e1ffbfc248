// include/uapi/asm-generic/mman-common.h, mman.h and fcntl.h values for x86-64.

export const PROT_NONE = 0x0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const PROT_EXEC = 0x4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_SHARED_VALIDATE = 0x03;
export const MAP_TYPE = 0x0f;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;
export const MAP_FIXED_NOREPLACE = 0x100000;
/** `(void *)-1`. */
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_ACCMODE = 0o3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECTORY = 0o200000;
export const O_CLOEXEC = 0o2000000;

/** memfd_create flags (include/uapi/linux/memfd.h). */
export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;
export const MFD_HUGETLB = 0x0004;
export const MFD_NOEXEC_SEAL = 0x0008;
export const MFD_EXEC = 0x0010;

/** fcntl commands for seals (include/uapi/linux/fcntl.h: F_LINUX_SPECIFIC_BASE 1024 + 9, + 10). */
export const F_LINUX_SPECIFIC_BASE = 1024;
export const F_ADD_SEALS = F_LINUX_SPECIFIC_BASE + 9;
export const F_GET_SEALS = F_LINUX_SPECIFIC_BASE + 10;
/** Prevent further seals from being set. */
export const F_SEAL_SEAL = 0x0001;
/** Prevent the file from shrinking. */
export const F_SEAL_SHRINK = 0x0002;
/** Prevent the file from growing. */
export const F_SEAL_GROW = 0x0004;
/** Prevent writes. */
export const F_SEAL_WRITE = 0x0008;
/** Prevent future writes while mapped. */
export const F_SEAL_FUTURE_WRITE = 0x0010;
/** Prevent chmod modifying exec bits. */
export const F_SEAL_EXEC = 0x0020;
