// Filesystems: a type registers at init (`register_filesystem`); `mount` puts its superblock on
// a path, and the VFS hands it the paths below that point.
import type { Dirent, Stat } from '../uapi/stat.js';
import type { File, Task } from './file.js';

/** A mounted filesystem: names are relative to its mount point ('' is its root directory). */
export interface SuperBlock {
  /** The name below the mount point, or null when `path` is outside it. */
  relative(path: string): string | null;
  stat(name: string): Stat;
  readdir(name: string): Dirent[];
  /** `open` after the VFS checked the directory permission for O_CREAT. */
  open(task: Task, name: string, flags: number, mode: number, path: string): File;
  /** `unlink` after the VFS checked the directory permission. */
  unlink(name: string): void;
}

/** `struct file_system_type`. */
export interface FileSystemType {
  readonly name: string;
  /** Mounts it on `path` (absolute, no trailing slash); errno on failure. */
  mount(path: string): SuperBlock;
}
