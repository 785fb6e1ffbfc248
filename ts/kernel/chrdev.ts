// Device nodes: a driver registers a path under /dev and its open at init (`misc_register`,
// `cdev_device_add`); the VFS finds it there. The core knows no driver by name.
import { errno } from '../uapi/errno.js';
import type { Stat } from '../uapi/stat.js';
import { permitted } from './cred.js';
import type { File, Task } from './file.js';

/** A character device node and its `open` (the driver's file_operations start there). */
export interface Chrdev {
  /** `/dev/iommu`, `/dev/vfio/devices/vfio0`, ... */
  readonly path: string;
  /** Permission bits of the node (`0o660` for crw-rw----). */
  readonly mode: number;
  /** Owner of the node (default root:root). */
  readonly uid?: number;
  readonly gid?: number;
  /** Opens the device for `task`; permission was checked already. */
  open(task: Task, flags: number): File;
}

/** Every registered device node of one kernel. */
export class Chrdevs {
  private readonly nodes = new Map<string, Chrdev>();

  /** `misc_register`: the path must be free. */
  register(dev: Chrdev): void {
    if (this.nodes.has(dev.path)) throw new Error(`device node ${dev.path} registered twice`);
    this.nodes.set(dev.path, dev);
  }

  has(path: string): boolean {
    return this.nodes.has(path);
  }

  /** `chrdev_open` after `inode_permission`: EACCES unless the mode lets `task` read and write. */
  open(task: Task, path: string, flags: number): File {
    const dev = this.nodes.get(path);
    if (!dev) return errno('ENOENT', 'no such file');
    const acc = flags & 3;
    const want = acc === 0 ? 4 : acc === 1 ? 2 : 6;
    if (!permitted(task, dev.mode, dev.uid ?? 0, dev.gid ?? 0, want)) errno('EACCES', `${path} is 0${dev.mode.toString(8)} ${dev.uid ?? 0}:${dev.gid ?? 0}`);
    return dev.open(task, flags);
  }

  stat(path: string): Stat {
    const dev = this.nodes.get(path);
    if (!dev) return errno('ENOENT', 'no such file');
    return { st_dev: 5, st_ino: 1n, st_mode: 0o020000 | dev.mode, st_nlink: 1, st_uid: dev.uid ?? 0, st_gid: dev.gid ?? 0, st_size: 0n, st_blksize: 4096, st_blocks: 0n };
  }
}
