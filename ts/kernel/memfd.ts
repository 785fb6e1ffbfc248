// memfd_create and file seals: an anonymous shmem file behind an fd (mm/memfd.c, mm/shmem.c).
// The seals and LUO's size freeze live on the shmem object (the inode): every open file of it
// sees them.
import type { PhysicalMemory } from '../hw/memory.js';
import { errno } from '../uapi/errno.js';
import {
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MAP_PRIVATE,
  MAP_TYPE,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_EXEC,
  MFD_HUGETLB,
  MFD_NOEXEC_SEAL,
  O_ACCMODE,
  O_RDONLY,
  O_RDWR,
  PROT_WRITE,
} from '../uapi/mman.js';
import { File, type Task } from './file.js';
import { MemObject, PAGE_SIZE, type PageRefs } from './mm.js';

const PAGE = BigInt(PAGE_SIZE);

/** `F_ALL_SEALS`. */
export const F_ALL_SEALS = F_SEAL_SEAL | F_SEAL_EXEC | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
const MFD_ALL_FLAGS = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC;
/** `MFD_NAME_MAX_LEN`: NAME_MAX minus "memfd:". */
const MFD_NAME_MAX_LEN = 255 - 6;

/** Memfds made with MFD_NOEXEC_SEAL: their mode has no exec bits. */
const noexec = new WeakSet<MemObject>();

const writeSealed = (seals: number): boolean => (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0;

/** A shmem file behind an fd: a memfd (`memfd_create`), or a tmpfs file when `linked`. */
export class MemfdFile extends File {
  /** `f_pos`. */
  pos = 0n;
  constructor(
    private readonly memory: PhysicalMemory,
    readonly obj: MemObject,
    name: string,
    flags = O_RDWR,
    /** A tmpfs file with a name in a directory (`i_nlink` > 0); a memfd has none. */
    readonly linked = false,
  ) {
    super(flags, linked || name.startsWith('/memfd:') ? name : `/memfd:${name}`);
  }
  mapFileObject(): MemObject {
    return this.obj;
  }
  /** open("/proc/self/fd/N"): a new open file of the same shmem inode. */
  reopen(flags: number): File {
    return new MemfdFile(this.memory, this.obj.get(), this.path, flags, this.linked);
  }
  /** `shmem_mmap` after `memfd_check_seals_mmap`: no new shared writable mapping once write-sealed. */
  mmapObject(_task: Task, _pgoff: number, _npages: number, flags: number, prot = 0): MemObject {
    if (writeSealed(this.obj.seals) && (flags & MAP_TYPE) !== MAP_PRIVATE && prot & PROT_WRITE) errno('EPERM', 'the memfd is write-sealed');
    return this.obj;
  }
  /** Whether a shared mapping of this file may ever write (`VM_MAYWRITE` of a `VM_SHARED` vma). */
  mayWriteShared(): boolean {
    return (this.flags & O_ACCMODE) !== O_RDONLY && !writeSealed(this.obj.seals);
  }
  /** `shmem_setattr(ATTR_SIZE)`: the seals, then LUO's freeze. */
  truncate(_task: Task, length: bigint): void {
    const old = this.obj.isize ?? 0n;
    if ((length < old && this.obj.seals & F_SEAL_SHRINK) || (length > old && this.obj.seals & F_SEAL_GROW)) errno('EPERM', 'the memfd is sealed against this size change');
    if (length === old) return;
    if (this.obj.frozen) errno('EPERM', 'the memfd is preserved by LUO: its size is frozen');
    const npages = Number((length + PAGE - 1n) / PAGE);
    if (npages < this.obj.npages) this.obj.truncate(npages);
    else this.obj.npages = npages;
    this.obj.isize = length;
  }
  protected release(): void {
    this.obj.put();
  }
  read(_task: Task, n: number): Uint8Array {
    const size = this.obj.isize ?? BigInt(this.obj.npages) * PAGE;
    const len = Number(this.pos >= size ? 0n : BigInt(n) < size - this.pos ? BigInt(n) : size - this.pos);
    const out = new Uint8Array(len);
    for (let done = 0; done < len; ) {
      const at = this.pos + BigInt(done);
      const inPage = Number(at % PAGE);
      const k = Math.min(len - done, PAGE_SIZE - inPage);
      const pfn = this.obj.pfn(Number(at / PAGE), false);
      if (pfn) out.set(this.memory.read((BigInt(pfn) << 12n) + BigInt(inPage), k), done);
      done += k;
    }
    this.pos += BigInt(len);
    return out;
  }
  /** `shmem_write_begin`: write seals, GROW past i_size, LUO's freeze past i_size. */
  write(_task: Task, data: Uint8Array): number {
    if ((this.flags & O_ACCMODE) === O_RDONLY) errno('EBADF', 'fd not open for writing');
    const end = this.pos + BigInt(data.length);
    const seals = this.obj.seals;
    if (writeSealed(seals)) errno('EPERM', 'the memfd is write-sealed');
    const size = this.obj.isize ?? 0n;
    if (seals & F_SEAL_GROW && end > size) errno('EPERM', 'the memfd is sealed against growing');
    if (this.obj.frozen && end > size) errno('EPERM', 'the memfd is preserved by LUO: its size is frozen');
    if (end > BigInt(this.obj.npages) * PAGE) this.obj.npages = Number((end + PAGE - 1n) / PAGE);
    if (end > size) this.obj.isize = end;
    for (let done = 0; done < data.length; ) {
      const at = this.pos + BigInt(done);
      const inPage = Number(at % PAGE);
      const k = Math.min(data.length - done, PAGE_SIZE - inPage);
      const pfn = this.obj.pfn(Number(at / PAGE), true);
      this.memory.write((BigInt(pfn) << 12n) + BigInt(inPage), data.subarray(done, done + k));
      done += k;
    }
    this.pos = end;
    return data.length;
  }

  /** `memfd_add_seals`, in the kernel's check order. */
  addSeals(seals: number): void {
    if ((this.flags & O_ACCMODE) === O_RDONLY) errno('EPERM', 'fd not open for writing');
    if (seals & ~F_ALL_SEALS || seals < 0) errno('EINVAL', 'unknown seal bits');
    if (this.linked) errno('EINVAL', 'only memfds take seals');
    const obj = this.obj;
    if (obj.seals & F_SEAL_SEAL) errno('EPERM', 'the memfd is sealed against new seals (F_SEAL_SEAL, or created without MFD_ALLOW_SEALING)');
    // SEAL_EXEC implies SEAL_WRITE on an executable memfd (W^X from the start): 0777 unless made
    // with MFD_NOEXEC_SEAL.
    if (seals & F_SEAL_EXEC && !noexec.has(obj)) seals |= F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
    if (seals & F_SEAL_WRITE && !(obj.seals & F_SEAL_WRITE)) {
      if (obj.writableMaps > 0) errno('EBUSY', 'shared writable mappings exist (mapping_deny_writable)');
      if (obj.anyPinned()) errno('EBUSY', 'pages are pinned (memfd_wait_for_pins)');
    }
    obj.seals |= seals;
  }

  /** `memfd_get_seals`. */
  getSeals(): number {
    if (this.linked) errno('EINVAL', 'only memfds have seals');
    return this.obj.seals;
  }
}

/**
 * `memfd_create(name, flags)`: the new file (the caller installs it). Without MFD_ALLOW_SEALING
 * (or MFD_NOEXEC_SEAL) the memfd is born with F_SEAL_SEAL.
 */
export function memfdCreate(memory: PhysicalMemory, refs: PageRefs, name: string, flags: number): MemfdFile {
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff_ffff) errno('EINVAL', 'bad flags');
  if (!(flags & MFD_HUGETLB) && flags & ~MFD_ALL_FLAGS) errno('EINVAL', 'unknown memfd flags');
  if (flags & MFD_HUGETLB) errno('EINVAL', 'MFD_HUGETLB is not modelled');
  if (flags & MFD_EXEC && flags & MFD_NOEXEC_SEAL) errno('EINVAL', 'MFD_EXEC with MFD_NOEXEC_SEAL');
  if (new TextEncoder().encode(name).length > MFD_NAME_MAX_LEN) errno('EINVAL', 'name too long');
  const obj = new MemObject(memory, refs, 0);
  obj.isize = 0n;
  if (flags & MFD_NOEXEC_SEAL) {
    obj.seals = F_SEAL_EXEC;
    noexec.add(obj);
  }
  else if (!(flags & MFD_ALLOW_SEALING)) obj.seals = F_SEAL_SEAL;
  return new MemfdFile(memory, obj, name);
}
