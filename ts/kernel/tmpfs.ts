// tmpfs (mm/shmem.c's `shmem_fs_type`): named shmem files in one flat directory. Its files are
// the same shmem objects as memfds, but linked (`i_nlink` 1): memfd_luo's can_preserve refuses them.
import type { PhysicalMemory } from '../hw/memory.js';
import { errno } from '../uapi/errno.js';
import { O_CREAT, O_EXCL, O_TRUNC } from '../uapi/mman.js';
import { DT_DIR, DT_REG, S_IFDIR, S_IFREG, type Dirent, type Stat } from '../uapi/stat.js';
import type { File, Task } from './file.js';
import type { FileSystemType, SuperBlock } from './fs.js';
import { MemfdFile } from './memfd.js';
import { MemObject, PAGE_SIZE, type PageRefs } from './mm.js';

interface Inode {
  ino: bigint;
  obj: MemObject;
  mode: number;
  uid: number;
  gid: number;
}

/** `register_filesystem(&shmem_fs_type)`: every mount is a new, empty tmpfs. */
export function tmpfsType(memory: PhysicalMemory, refs: PageRefs): FileSystemType {
  return {
    name: 'tmpfs',
    mount(root: string): SuperBlock {
      const files = new Map<string, Inode>();
      let nextIno = 2n;
      const stat = (i: Inode): Stat => ({
        st_dev: 0x2a,
        st_ino: i.ino,
        st_mode: S_IFREG | i.mode,
        st_nlink: 1,
        st_uid: i.uid,
        st_gid: i.gid,
        st_size: i.obj.isize ?? 0n,
        st_blksize: PAGE_SIZE,
        st_blocks: BigInt(i.obj.resident * 8),
      });
      return {
        relative: (path) => (path === root ? '' : path.startsWith(`${root}/`) ? path.slice(root.length + 1) : null),
        stat(name) {
          if (name === '') return { st_dev: 0x2a, st_ino: 1n, st_mode: S_IFDIR | 0o1777, st_nlink: 2, st_uid: 0, st_gid: 0, st_size: 40n, st_blksize: PAGE_SIZE, st_blocks: 0n };
          const i = files.get(name);
          return i ? stat(i) : errno('ENOENT', `no file ${name}`);
        },
        readdir(name): Dirent[] {
          if (name !== '') return errno(files.has(name) ? 'ENOTDIR' : 'ENOENT', `${name} is not a directory`);
          return [{ d_ino: 1n, d_type: DT_DIR, d_name: '.' }, { d_ino: 1n, d_type: DT_DIR, d_name: '..' }, ...[...files].map(([n, i]) => ({ d_ino: i.ino, d_type: DT_REG, d_name: n }))];
        },
        open(task: Task, name: string, flags: number, mode: number, path: string): File {
          if (name === '' || name.includes('/')) return errno(name === '' ? 'EISDIR' : 'ENOENT', 'only files in the root directory are modelled');
          let i = files.get(name);
          if (i && flags & O_CREAT && flags & O_EXCL) errno('EEXIST', `${name} exists`);
          if (!i) {
            if (!(flags & O_CREAT)) errno('ENOENT', `no file ${name}`);
            const obj = new MemObject(memory, refs, 0, false);
            obj.isize = 0n;
            files.set(name, (i = { ino: nextIno++, obj, mode: mode & 0o7777, uid: task.uid, gid: task.gid }));
          }
          if (flags & O_TRUNC) {
            i.obj.truncate(0);
            i.obj.isize = 0n;
          }
          return new MemfdFile(memory, i.obj.get(), path, flags, true);
        },
        unlink(name) {
          const i = files.get(name);
          if (!i) return errno('ENOENT', `no file ${name}`);
          files.delete(name);
          i.obj.put();
        },
      };
    },
  };
}
