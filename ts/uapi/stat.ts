// struct stat and struct linux_dirent64 as stat(2) and getdents64(2) fill them.

/** `struct stat`. */
export interface Stat {
  st_dev: number;
  st_ino: bigint;
  st_mode: number;
  st_nlink: number;
  st_uid: number;
  st_gid: number;
  st_size: bigint;
  st_blksize: number;
  /** In 512-byte units. */
  st_blocks: bigint;
}

/** `struct linux_dirent64` (without the record-length bookkeeping). */
export interface Dirent {
  d_ino: bigint;
  d_type: number;
  d_name: string;
}

export const DT_DIR = 4;
export const DT_REG = 8;
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
