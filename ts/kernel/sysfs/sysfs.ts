// sysfs: directories and attributes with a mode and an owner. Opening checks the mode as kernfs
// does (a write open of an attribute without a store is EACCES even for root); reads return the
// attribute's show() from the file position, writes go to store().
import { errno } from '../../uapi/errno.js';
import { O_ACCMODE, O_RDONLY, O_WRONLY } from '../../uapi/mman.js';
import { permitted } from '../cred.js';
import { File, type Task } from '../file.js';
import { DT_DIR, DT_REG, type Dirent, type Stat } from '../../uapi/stat.js';

/** An attribute's behaviour. */
export interface SysfsOps {
  /** Contents (the `.show` of the attribute); may return bytes. */
  show?(task: Task): string | Uint8Array;
  /** Accepts a write (`.store`); returns nothing or throws a KernelError. */
  store?(task: Task, data: Uint8Array): void;
}

/** A directory or attribute of the tree. */
export class SysfsNode {
  readonly children = new Map<string, SysfsNode>();
  private static nextIno = 1000;
  readonly ino = SysfsNode.nextIno++;

  constructor(
    readonly name: string,
    readonly dir: boolean,
    /** Permission bits (0o444, 0o200, 0o440, ...). */
    readonly mode: number,
    readonly ops: SysfsOps = {},
    readonly uid = 0,
    readonly gid = 0,
  ) {}
}

/** An open attribute: the contents are produced at the first read, as seq_file does. */
class SysfsFile extends File {
  private pos = 0;
  private buf: Uint8Array | null = null;

  constructor(
    readonly node: SysfsNode,
    flags: number,
    path: string,
  ) {
    super(flags, path);
  }

  read(task: Task, n: number): Uint8Array {
    if (this.node.dir) errno('EISDIR', 'a directory');
    if ((this.flags & O_ACCMODE) === O_WRONLY) errno('EBADF', 'not open for reading');
    if (!this.buf) {
      const v = this.node.ops.show!(task);
      this.buf = typeof v === 'string' ? new TextEncoder().encode(v) : v;
    }
    const out = this.buf.slice(this.pos, this.pos + n);
    this.pos += out.length;
    return out;
  }

  write(task: Task, data: Uint8Array): number {
    if (this.node.dir) errno('EISDIR', 'a directory');
    if ((this.flags & O_ACCMODE) === O_RDONLY) errno('EBADF', 'not open for writing');
    this.node.ops.store!(task, data);
    return data.length;
  }
}

/** The mounted sysfs tree. */
export class Sysfs {
  readonly root = new SysfsNode('', true, 0o755);

  /** Finds `path` (absolute, under /sys), or undefined. */
  lookup(path: string): SysfsNode | undefined {
    let node: SysfsNode | undefined = this.root;
    for (const part of path.replace(/^\/sys\/?/, '').split('/').filter(Boolean)) {
      node = node?.children.get(part);
    }
    return node;
  }

  /** Creates the directories of `path` as needed and returns the last one. */
  mkdirs(path: string): SysfsNode {
    let node = this.root;
    for (const part of path.replace(/^\/sys\/?/, '').split('/').filter(Boolean)) {
      let next = node.children.get(part);
      if (!next) node.children.set(part, (next = new SysfsNode(part, true, 0o755)));
      node = next;
    }
    return node;
  }

  /** Adds an attribute file at `path`. */
  attr(path: string, mode: number, ops: SysfsOps): SysfsNode {
    const cut = path.lastIndexOf('/');
    const dir = this.mkdirs(path.slice(0, cut));
    const node = new SysfsNode(path.slice(cut + 1), false, mode, ops);
    dir.children.set(node.name, node);
    return node;
  }

  /** Removes `path` and what is under it. */
  remove(path: string): void {
    const cut = path.lastIndexOf('/');
    this.lookup(path.slice(0, cut))?.children.delete(path.slice(cut + 1));
  }

  /** `open` with kernfs's permission rules. */
  open(task: Task, path: string, flags: number): File {
    const node = this.lookup(path);
    if (!node) return errno('ENOENT', 'no such sysfs entry');
    const acc = flags & O_ACCMODE;
    if (node.dir) {
      if (acc !== O_RDONLY) errno('EISDIR', 'a directory');
      return new SysfsFile(node, flags, path);
    }
    const wantR = acc !== O_WRONLY;
    const wantW = acc !== O_RDONLY;
    if (!permitted(task, node.mode, node.uid, node.gid, (wantR ? 4 : 0) | (wantW ? 2 : 0))) errno('EACCES', `${path} is ${node.mode.toString(8).padStart(4, '0')}`);
    // kernfs_fop_open: no write op, or no write bit for anyone, and no read op: EACCES for root too.
    if (wantW && (!node.ops.store || !(node.mode & 0o222))) errno('EACCES', `${path} is not writable`);
    if (wantR && (!node.ops.show || !(node.mode & 0o444))) errno('EACCES', `${path} is not readable`);
    return new SysfsFile(node, flags, path);
  }

  stat(path: string): Stat {
    const node = this.lookup(path);
    if (!node) return errno('ENOENT', 'no such sysfs entry');
    return {
      st_dev: 0x16,
      st_ino: BigInt(node.ino),
      st_mode: (node.dir ? 0o040000 : 0o100000) | node.mode,
      st_nlink: node.dir ? 2 + [...node.children.values()].filter((c) => c.dir).length : 1,
      st_uid: node.uid,
      st_gid: node.gid,
      st_size: node.dir ? 0n : 4096n,
      st_blksize: 4096,
      st_blocks: 0n,
    };
  }

  readdir(path: string): Dirent[] {
    const node = this.lookup(path);
    if (!node) return errno('ENOENT', 'no such sysfs entry');
    if (!node.dir) return errno('ENOTDIR', 'not a directory');
    return [
      { d_ino: BigInt(node.ino), d_type: DT_DIR, d_name: '.' },
      { d_ino: 1n, d_type: DT_DIR, d_name: '..' },
      ...[...node.children.values()].map((c) => ({ d_ino: BigInt(c.ino), d_type: c.dir ? DT_DIR : DT_REG, d_name: c.name })),
    ];
  }
}
