// memfd_create: an anonymous shmem file behind an fd (mm/memfd.c, mm/shmem.c).
import type { PhysicalMemory } from '../hw/memory.js';
import { File, type Task } from './file.js';
import { PAGE_SIZE, type MemObject } from './mm.js';

const PAGE = BigInt(PAGE_SIZE);

/** A memfd (`memfd_create`): a shmem object behind an fd. */
export class MemfdFile extends File {
  private pos = 0n;
  constructor(
    private readonly memory: PhysicalMemory,
    readonly obj: MemObject,
    name: string,
    flags = 2,
  ) {
    super(flags, name.startsWith('/memfd:') ? name : `/memfd:${name}`);
  }
  mapFileObject(): MemObject {
    return this.obj;
  }
  /** open("/proc/self/fd/N"): a new open file of the same shmem inode. */
  reopen(flags: number): File {
    return new MemfdFile(this.memory, this.obj.get(), this.path, flags);
  }
  mmapObject(): MemObject {
    return this.obj;
  }
  truncate(_task: Task, length: bigint): void {
    const npages = Number((length + PAGE - 1n) / PAGE);
    if (npages < this.obj.npages) this.obj.truncate(npages);
    else this.obj.npages = npages;
    this.obj.isize = length;
  }
  protected release(): void {
    this.obj.put();
  }
  read(_task: Task, n: number): Uint8Array {
    const size = BigInt(this.obj.npages) * PAGE;
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
  write(_task: Task, data: Uint8Array): number {
    const end = this.pos + BigInt(data.length);
    if (end > BigInt(this.obj.npages) * PAGE) this.obj.npages = Number((end + PAGE - 1n) / PAGE);
    if (end > (this.obj.isize ?? 0n)) this.obj.isize = end;
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
}
