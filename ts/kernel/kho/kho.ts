// Kexec HandOver in its 2024 RFC form (Graf's KHO v3, which the iommufd RFC and guestmemfs use):
// one device tree, built when userspace writes 1 to /sys/kernel/kho/active by running the DUMP
// notifier chain; each subsystem writes its nodes and marks the memory it hands over preserved.
// Writing 0 runs ABORT. At kexec the blob's physical address is all the next kernel gets.
import { decodeFdt, FdtError, FdtWriter, type FdtNode } from '../../fdt/index.js';
import { errno, KernelError } from '../../uapi/errno.js';
import type { PhysicalMemory } from '../../hw/memory.js';
import type { PhaseWork } from '../phase-cost.js';
import { callbackError } from '../reentrancy.js';
import type { Sysfs } from '../sysfs/sysfs.js';

/** What KHO uses of the kernel it runs in (a part of its services). */
export interface KhoServices {
  readonly memory: PhysicalMemory;
  readonly sysfs: Sysfs;
  readonly dead: boolean;
  log(msg: string): void;
  phase(name: string, work?: PhaseWork): void;
  /** Why the machine is inside a transition of its own (a phase observer), or null. */
  reentrancy(): string | null;
}

/** `KEXEC_KHO_DUMP` / `KEXEC_KHO_ABORT` participants, called in registration order. */
export interface KhoNotifier {
  /** Writes this subsystem's nodes (under the root) and preserves its memory through `kho`. */
  dump(w: FdtWriter, kho: Kho): void;
  /** Undoes what `dump` did beyond the blob (the blob and preservation marks are KHO's). */
  abort(): void;
}

/** `dt_max`: the blob buffer (10 MiB, as the RFC's default). */
export const KHO_DT_MAX = 10 << 20;
const FDT_MAGIC = 0xd00dfeed;

/**
 * A failure injected at a named site (tests sweep them: every site must abort cleanly). It runs
 * inside the DUMP, like a notifier callback: it may read and write `host.memory` or do DMA, but a
 * syscall into this kernel, a KHO activate/deactivate or a kexec from it is refused (EDEADLK,
 * `ERR_INVALID_STATE` for `host.kexec()`). Returning true fails the site with ENOMEM; throwing
 * fails the DUMP with that exception (aborted cleanly first).
 */
export type FailPoint = (site: string) => boolean;

/** Little-endian helpers for KHO's native-endian properties. */
export const le = {
  u64(v: bigint): Uint8Array {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    return b;
  },
  u32(v: number): Uint8Array {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    return b;
  },
  /** `struct kho_mem[]` of single 4 KiB pages, straight from their addresses. */
  pages(pas: BigUint64Array): Uint8Array {
    const b = new Uint8Array(16 * pas.length);
    const v = new DataView(b.buffer);
    for (let i = 0; i < pas.length; i++) {
      v.setBigUint64(16 * i, pas[i]!, true);
      v.setBigUint64(16 * i + 8, 4096n, true);
    }
    return b;
  },
  /** `struct kho_mem { u64 addr; u64 len; }[]`. */
  mem(ranges: readonly { addr: bigint; len: bigint }[]): Uint8Array {
    const b = new Uint8Array(16 * ranges.length);
    const v = new DataView(b.buffer);
    ranges.forEach((r, i) => {
      v.setBigUint64(16 * i, r.addr, true);
      v.setBigUint64(16 * i + 8, r.len, true);
    });
    return b;
  },
};

/** Reading a decoded KHO node defensively: a bad value is a KernelError, never a crash. */
export class KhoNode {
  constructor(
    readonly node: FdtNode,
    readonly path: string,
  ) {}

  child(name: string): KhoNode | undefined {
    const c = this.node.children.find((x) => x.name === name);
    return c ? new KhoNode(c, `${this.path}/${name}`) : undefined;
  }

  children(): KhoNode[] {
    return this.node.children.map((c) => new KhoNode(c, `${this.path}/${c.name}`));
  }

  raw(name: string): Uint8Array {
    const p = this.node.properties.find((x) => x.name === name);
    if (!p) errno('EINVAL', `${this.path}: no property ${name}`);
    return p.value;
  }

  has(name: string): boolean {
    return this.node.properties.some((x) => x.name === name);
  }

  u64(name: string): bigint {
    const v = this.raw(name);
    if (v.length !== 8) errno('EINVAL', `${this.path}/${name}: ${v.length} bytes, want 8`);
    return new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true);
  }

  u32(name: string): number {
    const v = this.raw(name);
    if (v.length !== 4) errno('EINVAL', `${this.path}/${name}: ${v.length} bytes, want 4`);
    return new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true);
  }

  u8(name: string): number {
    const v = this.raw(name);
    if (v.length !== 1) errno('EINVAL', `${this.path}/${name}: ${v.length} bytes, want 1`);
    return v[0]!;
  }

  string(name: string): string {
    const v = this.raw(name);
    if (v.length === 0 || v[v.length - 1] !== 0) errno('EINVAL', `${this.path}/${name}: not a string`);
    return new TextDecoder().decode(v.subarray(0, v.length - 1));
  }

  mem(name: string): { addr: bigint; len: bigint }[] {
    const v = this.raw(name);
    if (v.length % 16) errno('EINVAL', `${this.path}/${name}: not kho_mem[]`);
    const dv = new DataView(v.buffer, v.byteOffset, v.length);
    const out: { addr: bigint; len: bigint }[] = [];
    for (let i = 0; i < v.length; i += 16) out.push({ addr: dv.getBigUint64(i, true), len: dv.getBigUint64(i + 8, true) });
    return out;
  }

  /** The node's name as the decimal id the RFC writes (`"%lu"`). */
  id(): number {
    if (!/^(0|[1-9]\d{0,9})$/.test(this.node.name)) errno('EINVAL', `${this.path}: not a decimal id`);
    return Number(this.node.name);
  }
}

/** The KHO state of one kernel. */
export class Kho {
  /** Subsystems in notifier order. */
  readonly notifiers: KhoNotifier[] = [];
  active = false;
  /** The serialised blob while active. */
  blob: Uint8Array | null = null;
  /** Where the blob lives in physical memory while active. */
  blobPa: bigint | null = null;
  private blobOrder = 0;
  /** Preservation marks made during this DUMP, undone by ABORT: blocks one by one, and single pages by the batch. */
  private marks: { pa: bigint; order: number }[] = [];
  private pageMarks: BigUint64Array[] = [];
  /** Injected failures (tests): `fail(site)` true makes that site fail with ENOMEM. */
  failPoint: FailPoint | null = null;
  /** The DUMP or ABORT in progress (the RFC's `kho_out.lock` is held), or null. */
  private running: 'DUMP' | 'ABORT' | null = null;
  /** The site whose failure-injection hook is running, or null. */
  private hookSite: string | null = null;
  /** What the previous kernel handed over, if it could be read. */
  readonly incoming: KhoNode | null;

  constructor(
    private readonly kernel: KhoServices,
    /** The blob address the previous kernel passed, if any. */
    incomingPa: bigint | null,
  ) {
    this.incoming = incomingPa === null ? null : this.ingest(incomingPa);
    const sys = kernel.sysfs;
    sys.attr('/sys/kernel/kho/active', 0o600, {
      show: () => (this.active ? '1\n' : '0\n'),
      store: (_p, data) => {
        const v = new TextDecoder().decode(data).trim();
        if (v === '1') this.activate();
        else if (v === '0') this.deactivate();
        else errno('EINVAL', 'write 0 or 1');
      },
    });
    sys.attr('/sys/kernel/kho/dt_max', 0o444, { show: () => `${KHO_DT_MAX}\n` });
  }

  /** Fails with ENOMEM at `site` when a test asked for it. */
  inject(site: string): void {
    if (!this.failPoint) return;
    let fail: boolean;
    this.hookSite = site;
    try {
      fail = this.failPoint(site);
    } catch (e) {
      throw callbackError(e);
    } finally {
      this.hookSite = null;
    }
    if (fail) errno('ENOMEM', `injected failure at ${site}`);
  }

  /**
   * Why this kernel cannot be entered right now, most specific first: a failure-injection hook
   * is running, else the host's reason (`host`: a phase observer is running, a kexec is under
   * way), else a DUMP/ABORT is in progress; or null.
   */
  reentrancy(host: string | null): string | null {
    if (this.hookSite !== null) return `called from the KHO failure-injection hook at ${this.hookSite}`;
    if (host !== null) return host;
    if (this.running !== null) return `KHO ${this.running} is in progress`;
    return null;
  }

  /**
   * DUMP and ABORT are not re-entrant: both run under one lock in the kernel, and each owns the
   * preservation marks and the blob until it returns. A second one started from inside the
   * first (from a failure-injection hook or a kho-dump/kho-abort observer) would deadlock there;
   * here it is refused with EDEADLK ("resource deadlock avoided"), as a lock with deadlock
   * detection answers. Before this rule a nested DUMP preserved the frames the outer one had
   * just preserved (`ERR_PHYSMEM_PRESERVED` escaping the write), or completed and had its blob
   * freed by the outer DUMP's rollback while `active` stayed true.
   */
  private enter(what: 'DUMP' | 'ABORT'): void {
    if (this.kernel.dead) errno('ESRCH', `KHO ${what} on a kernel replaced by kexec`);
    const why = this.kernel.reentrancy();
    if (why !== null) errno('EDEADLK', `KHO ${what} refused: ${why}`);
  }

  /** Marks `[pa, pa + 2^order pages)` preserved for the next kernel (undone by ABORT). */
  preserve(pa: bigint, order = 0): void {
    this.inject('kho:preserve');
    this.kernel.memory.preserve(pa, order);
    this.marks.push({ pa, order });
  }

  /** Marks many single pages preserved in one call (all or nothing). */
  preserveMany(pas: BigUint64Array): void {
    this.inject('kho:preserve');
    this.kernel.memory.preserveMany(pas, 0);
    // Kept as the batch it came in (an array of thousands of table pages, not an object each).
    this.pageMarks.push(pas.slice());
  }

  /** Preserves an arbitrary page-aligned range as naturally aligned blocks. */
  preserveRange(pa: bigint, len: bigint): void {
    let at = pa;
    const end = pa + len;
    while (at < end) {
      let order = 18;
      while (order > 0 && ((at & ((4096n << BigInt(order)) - 1n)) !== 0n || at + (4096n << BigInt(order)) > end)) order--;
      this.preserve(at, order);
      at += 4096n << BigInt(order);
    }
  }

  /**
   * `echo 1 > /sys/kernel/kho/active`: DUMP; any failure runs ABORT and answers EINVAL/ENOMEM.
   * EDEADLK from inside a DUMP/ABORT, a failure-injection hook or a phase observer. The phase
   * it reports is `kho-dump` (the RFC's sysfs DUMP), or `kho-finalise` when LUO's reboot
   * finalises KHO: its work is then every block preserved for the next kernel (`kho_preserve_*`
   * of every subsystem: memfd folios, the IOMMU's tables, LUO's own pages, the blob), which the
   * finalisation serialises.
   */
  activate(phase: 'kho-dump' | 'kho-finalise' = 'kho-dump'): void {
    this.enter('DUMP');
    if (this.active) return;
    this.running = 'DUMP';
    try {
      this.dump();
      this.kernel.phase(phase, phase === 'kho-dump' ? this.dumpWork() : this.finaliseWork());
    } finally {
      this.running = null;
    }
  }

  private dump(): void {
    const w = new FdtWriter({ layout: 'libfdt', maxSize: KHO_DT_MAX });
    const dumped: KhoNotifier[] = [];
    try {
      this.inject('kho:alloc');
      w.beginNode('');
      w.propertyString('compatible', 'kho-v1');
      for (const n of this.notifiers) {
        dumped.push(n);
        n.dump(w, this);
      }
      w.endNode();
      const blob = w.finish();
      this.inject('kho:blob');
      const pages = Math.ceil(blob.length / 4096);
      let order = 0;
      while (1 << order < pages) order++;
      const pa = this.kernel.memory.alloc(order, { zero: true });
      this.kernel.memory.write(pa, blob);
      this.blobPa = pa;
      this.blobOrder = order;
      this.preserve(pa, order);
      this.blob = blob;
    } catch (e) {
      for (const n of dumped.reverse()) n.abort();
      this.undo();
      if (e instanceof FdtError) errno('EINVAL', `KHO blob: ${e.code}`);
      // A KernelError is the errno of the write; anything else is the hook's own exception or a
      // kernel bug, which the syscall entry reports as such (ERR_INTERNAL_ASSERTION).
      throw e;
    }
    this.active = true;
    this.kernel.sysfs.attr('/sys/kernel/kho/dt', 0o400, { show: () => this.blob! });
    this.kernel.log(`KHO: serialised ${this.blob.length} bytes at 0x${this.blobPa.toString(16)}, ${this.markCount()} preserved blocks`);
  }

  /**
   * `echo 0 > /sys/kernel/kho/active`: ABORT; everything is writable again. EDEADLK from inside
   * a DUMP/ABORT, a failure-injection hook or a phase observer.
   */
  deactivate(): void {
    this.enter('ABORT');
    if (!this.active) return;
    this.running = 'ABORT';
    try {
      const work: PhaseWork = { preservedBlocks: this.markCount() };
      for (const n of [...this.notifiers].reverse()) n.abort();
      this.undo();
      this.active = false;
      this.kernel.sysfs.remove('/sys/kernel/kho/dt');
      this.kernel.log('KHO: aborted');
      this.kernel.phase('kho-abort', work);
    } finally {
      this.running = null;
    }
  }

  /** What a DUMP did: the marks it set (the blob's own included) and the blob it serialised. */
  private dumpWork(): PhaseWork {
    const pages = this.pageMarks.reduce((n, b) => n + b.length, 0);
    const preservedBytes = this.marks.reduce((n, m) => n + 4096 * 2 ** m.order, 4096 * pages);
    return { preservedBlocks: this.marks.length + pages, preservedBytes, fdtBytes: this.blob?.length ?? 0 };
  }

  /** What a finalisation did: every preserved block of memory (the blob's own included) and the blob. */
  private finaliseWork(): PhaseWork {
    const { blocks, frames } = this.kernel.memory.preservedSummary();
    return { preservedBlocks: blocks, preservedBytes: 4096 * frames, fdtBytes: this.blob?.length ?? 0 };
  }

  /** Marks this DUMP set. */
  private markCount(): number {
    return this.pageMarks.reduce((n, b) => n + b.length, this.marks.length);
  }

  private undo(): void {
    const pages = this.pageMarks.reverse().flatMap((b) => Array.from(b.reverse(), (pa) => ({ pa, order: 0 })));
    this.pageMarks = [];
    for (const m of [...this.marks.reverse(), ...pages]) {
      try {
        this.kernel.memory.unpreserve(m.pa, m.order);
      } catch {
        /* never marked (failed preserve) */
      }
    }
    this.marks = [];
    if (this.blobPa !== null) this.kernel.memory.free(this.blobPa, this.blobOrder);
    this.blobPa = null;
    this.blob = null;
  }

  /**
   * Early boot of the next kernel: reads the blob the previous one handed over. A blob that is
   * not a KHO tree (bad header, failed check, wrong compatible) is logged and ignored: the
   * machine comes up adopting nothing.
   */
  private ingest(pa: bigint): KhoNode | null {
    const mem = this.kernel.memory;
    try {
      if (pa % 4096n !== 0n || pa + 40n > mem.size) errno('EINVAL', 'blob address out of range');
      const head = new DataView(mem.read(pa, 8).buffer);
      if (head.getUint32(0) !== FDT_MAGIC) errno('EINVAL', 'bad FDT magic');
      const size = head.getUint32(4);
      if (size < 40 || size > KHO_DT_MAX || pa + BigInt(size) > mem.size) errno('EINVAL', `bad totalsize ${size}`);
      const root = decodeFdt(mem.read(pa, size), { validate: 'structural' });
      const node = new KhoNode(root, '');
      if (node.string('compatible') !== 'kho-v1') errno('EINVAL', 'root is not compatible kho-v1');
      this.kernel.log(`KHO: found a ${size}-byte handover blob at 0x${pa.toString(16)}`);
      return node;
    } catch (e) {
      const why = e instanceof KernelError ? e.detail : e instanceof FdtError ? `${e.code} at ${e.offset}` : String(e);
      this.kernel.log(`KHO: ignoring the handover at 0x${pa.toString(16)}: ${why}; booting without revival`);
      return null;
    }
  }
}
