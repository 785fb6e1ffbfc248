// Runs oracle sequences on the simulator through its public syscall surface and prints what
// the guest driver prints on the real kernel (oracle/guest/seqrun.c), key for key.
import { Host, type HostConfig } from '../host.js';
import type { PciDevice } from '../hw/pci.js';
import { LINUX_REBOOT_CMD_KEXEC } from '../kernel/kernel.js';
import type { Process } from '../kernel/process.js';
import { VfioDeviceFile } from '../kernel/vfio/device_cdev.js';
import { UAPI_IOCTLS_BY_NAME } from '../uapi/ioctl.js';
import { F_ADD_SEALS, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, O_RDWR, PROT_READ, PROT_WRITE } from '../uapi/mman.js';
import { getBytes, getField, isByteArray, setField, type Field } from '../uapi/struct.js';
import type { Sequence, Step, StepResult } from './sequence.js';

/** Where `mmap` steps place mappings, 2 MiB apart (the guest driver uses the same arena). */
export const ARENA_BASE = 0x1_0000_0000n;
const ARENA_ALIGN = 0x20_0000n;
/** Where ioctl argument buffers live in the simulated process (outside the arena). */
const SCRATCH = 0x7f00_0000_0000n;
/** QEMU's edu: a 4 KiB DMA buffer at 0x40000, 28-bit DMA mask, transfers of at most 2048 bytes here. */
const EDU_BUF_SIZE = 4096;
const EDU_MAX = 2048;
const EDU_DMA_MASK = (1n << 28n) - 1n;

/** A step the sequence wrote wrongly (not a kernel answer): the driver prints `error`. */
class FormatError extends Error {}

class Runner {
  private readonly vars = new Map<string, bigint>();
  private readonly devByFd = new Map<number, PciDevice>();
  private readonly eduBuf = new Map<PciDevice, Uint8Array>();
  private arenaNext = ARENA_BASE;
  private scratchNext = SCRATCH;
  private faultsSeen = 0;
  private proc: Process;

  constructor(
    private readonly host: Host,
    private readonly seq: Sequence,
  ) {
    this.proc = this.init();
  }

  /** What the lab's init does before the driver runs: a process, tmpfs on /tmp. */
  private init(): Process {
    const p = this.host.kernel.spawn();
    p.mount('tmpfs', '/tmp');
    return p;
  }

  run(): StepResult[] {
    const out: StepResult[] = [];
    this.faultsSeen = this.host.kernel.dmesg().length;
    this.seq.steps.forEach((st, i) => {
      const head = { seq: this.seq.name, step: i };
      try {
        out.push({ ...head, ...this.step(st) });
      } catch (e) {
        if (e instanceof FormatError) out.push({ ...head, error: e.message });
        else throw e;
      }
    });
    out.push({ seq: this.seq.name, end: true });
    this.proc.exit();
    return out;
  }

  private num(word: string | undefined): bigint {
    if (word === undefined) throw new FormatError('missing argument');
    let acc: bigint | null = null;
    let sign = 1n;
    const re = /(\$[A-Za-z0-9_.]+|[0-9][0-9a-fA-FxX]*)([+-]?)/y;
    let s = word;
    if (s.startsWith('-') && /^-[0-9]/.test(s)) {
      sign = -1n;
      s = s.slice(1);
    }
    let pos = 0;
    while (pos < s.length) {
      re.lastIndex = pos;
      const m = re.exec(s);
      if (!m) throw new FormatError(`bad value ${word}`);
      let v: bigint;
      if (m[1]!.startsWith('$')) {
        const got = this.vars.get(m[1]!.slice(1));
        if (got === undefined) throw new FormatError(`bad value ${word}`);
        v = got;
      } else {
        try {
          v = BigInt(m[1]!);
        } catch {
          throw new FormatError(`bad value ${word}`);
        }
      }
      acc = acc === null ? sign * v : acc + sign * v;
      sign = m[2] === '-' ? -1n : 1n;
      pos = re.lastIndex;
      if (!m[2] && pos < s.length) throw new FormatError(`bad value ${word}`);
    }
    if (acc === null) throw new FormatError(`bad value ${word}`);
    return BigInt.asUintN(64, acc);
  }

  /** Runs a syscall; a SyscallError becomes `ret: -1, errno`. */
  private sys(fields: StepResult, fn: () => StepResult | void): StepResult {
    try {
      return { ...fields, ...(fn() ?? { ret: 0 }) };
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (e instanceof Error && e.name === 'SyscallError' && code) return { ...fields, ret: -1, errno: code };
      throw e;
    }
  }

  private step(st: Step): StepResult {
    const a = st.args;
    const p = this.proc;
    switch (st.op) {
      case 'open': {
        if (a[0] === undefined) throw new FormatError('open needs PATH');
        const flags = a[1] === undefined ? O_RDWR : Number(this.num(a[1]));
        return this.sys({ op: 'open' }, () => {
          const fd = p.open(a[0]!, flags);
          const m = /^\/dev\/vfio\/devices\/vfio(\d+)$/.exec(a[0]!);
          const dev = m ? this.host.devices[Number(m[1])] : undefined;
          if (dev) this.devByFd.set(fd, dev);
          if (st.label) this.vars.set(st.label, BigInt(fd));
          return { ret: 'fd' };
        });
      }
      case 'close': {
        const fd = Number(this.num(a[0]));
        return this.sys({ op: 'close' }, () => {
          p.close(fd);
          this.devByFd.delete(fd);
        });
      }
      case 'reopen': {
        const fd = Number(this.num(a[0]));
        const flags = Number(this.num(a[1]));
        return this.sys({ op: 'reopen' }, () => {
          const nfd = p.open(`/proc/self/fd/${fd}`, flags);
          if (st.label) this.vars.set(st.label, BigInt(nfd));
          return { ret: 'fd' };
        });
      }
      case 'memfd_create': {
        if (a[0] === undefined) throw new FormatError('memfd_create needs NAME');
        const flags = a[1] === undefined ? 0 : Number(this.num(a[1]));
        return this.sys({ op: 'memfd_create' }, () => {
          const fd = p.memfd_create(a[0]!, flags);
          if (st.label) this.vars.set(st.label, BigInt(fd));
          return { ret: 'fd' };
        });
      }
      case 'ftruncate': {
        const fd = Number(this.num(a[0]));
        const len = this.num(a[1]);
        return this.sys({ op: 'ftruncate' }, () => p.ftruncate(fd, len));
      }
      case 'mmap': {
        const len = this.num(a[0]);
        const prot = a[1] === undefined ? PROT_READ | PROT_WRITE : Number(this.num(a[1]));
        const flags = a[2] === undefined ? MAP_PRIVATE | MAP_ANONYMOUS : Number(this.num(a[2]));
        const fd = a[3] === undefined ? -1 : Number(BigInt.asIntN(64, this.num(a[3])));
        const off = a[4] === undefined ? 0n : this.num(a[4]);
        const fixed = a[5] !== undefined;
        const at = fixed ? this.num(a[5]) : this.arenaNext;
        return this.sys({ op: 'mmap' }, () => {
          const va = p.mmap(at, len, prot, fixed ? flags : flags | MAP_FIXED_NOREPLACE, fd, off);
          if (!fixed) this.arenaNext = (at + len + 2n * ARENA_ALIGN - 1n) & ~(ARENA_ALIGN - 1n);
          if (st.label) this.vars.set(st.label, va);
          return { ret: `0x${va.toString(16)}` };
        });
      }
      case 'munmap': {
        const va = this.num(a[0]);
        const len = this.num(a[1]);
        return this.sys({ op: 'munmap' }, () => p.munmap(va, len));
      }
      case 'poke': {
        const va = this.num(a[0]);
        return this.sys({ op: 'poke' }, () => p.memWrite(va, Buffer.from(a[1] ?? '', 'hex')));
      }
      case 'peek': {
        const va = this.num(a[0]);
        const n = Number(this.num(a[1]));
        if (n > 4096) throw new FormatError('peek needs ADDR LEN<=4096');
        return this.sys({ op: 'peek' }, () => ({ bytes: Buffer.from(p.memRead(va, n)).toString('hex') }));
      }
      case 'sleep':
        // Guest time for the kernel's ratelimits; the simulated kernel has none to wait out.
        this.num(a[0]);
        return { op: 'sleep', ret: 0 };
      case 'read': {
        const fd = Number(this.num(a[0]));
        const n = Number(this.num(a[1]));
        if (n > 4096) throw new FormatError('read needs FD LEN<=4096');
        return this.sys({ op: 'read' }, () => {
          const b = p.read(fd, n);
          return { ret: b.length, bytes: Buffer.from(b).toString('hex') };
        });
      }
      case 'write': {
        const fd = Number(this.num(a[0]));
        const data = Buffer.from(a[1] ?? '', 'hex').subarray(0, 4096);
        return this.sys({ op: 'write' }, () => ({ ret: p.write(fd, data) }));
      }
      case 'ioctl':
        return this.ioctl(st);
      case 'dma_to_dev':
      case 'dma_from_dev':
        return this.dma(st);
      case 'add_seals': {
        const fd = Number(this.num(a[0]));
        const seals = Number(BigInt.asUintN(32, this.num(a[1])));
        return this.sys({ op: 'add_seals' }, () => void p.fcntl(fd, F_ADD_SEALS, seals));
      }
      case 'pipe':
        return this.sys({ op: 'pipe' }, () => {
          const [r, w] = p.pipe();
          if (st.label) {
            this.vars.set(st.label, BigInt(r));
            this.vars.set(`${st.label}.w`, BigInt(w));
          }
          return { ret: 'fd' };
        });
      case 'kexec':
        return this.kexec();
      case 'dmar_faults': {
        const log = this.host.kernel.dmesg();
        const faults = log.slice(this.faultsSeen).flatMap((l) => {
          const m = /DMA (Write|Read).*fault addr 0x([0-9a-f]+) \[fault reason 0x([0-9a-f]+)\]/.exec(l);
          return m ? [{ write: m[1] === 'Write', addr: `0x${m[2]}`, reason: parseInt(m[3]!, 16) }] : [];
        });
        this.faultsSeen = log.length;
        return { op: 'dmar_faults', faults };
      }
      default:
        throw new FormatError(`unknown op ${st.op}`);
    }
  }

  /**
   * `kexec`: kexec_file_load of the running kernel with its command line, then
   * reboot(LINUX_REBOOT_CMD_KEXEC); the sequence goes on in a fresh process of the next kernel,
   * as the guest driver does (labels, fds and mappings are gone).
   */
  private kexec(): StepResult {
    return this.sys({ op: 'kexec' }, () => {
      this.proc.kexecFileLoad();
      this.proc.reboot(LINUX_REBOOT_CMD_KEXEC);
      this.proc = this.init();
      this.vars.clear();
      this.devByFd.clear();
      this.arenaNext = ARENA_BASE;
      this.scratchNext = SCRATCH;
      this.faultsSeen = this.host.kernel.dmesg().length;
    });
  }

  /** A byte-array field's value: `str(text)` (its bytes) or `hex(...)`, NUL-padded by the struct. */
  private bytesValue(f: Field, val: string): Uint8Array {
    let bytes: Uint8Array | null = null;
    const m = /^(str|hex)\((.*)\)$/s.exec(val);
    if (m?.[1] === 'str') bytes = Buffer.from(m[2]!, 'utf8');
    else if (m?.[1] === 'hex' && /^([0-9a-fA-F]{2})*$/.test(m[2]!)) bytes = Buffer.from(m[2]!, 'hex');
    if (!bytes || bytes.length > f.size) throw new FormatError(`bad value ${val}`);
    return bytes;
  }

  /** A zeroed buffer in the process's memory (the driver callocs one), holding `bytes`. */
  private scratch(bytes: Uint8Array): bigint {
    const va = this.scratchNext;
    const len = BigInt(Math.max(4096, Math.ceil(bytes.length / 4096) * 4096));
    this.proc.mmap(va, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE);
    this.scratchNext += len + 4096n;
    this.proc.memWrite(va, bytes);
    return va;
  }

  private ioctl(st: Step): StepResult {
    const [fdWord, name, ...rest] = st.args;
    if (fdWord === undefined || name === undefined) throw new FormatError('ioctl needs FD NAME');
    const fd = Number(this.num(fdWord));
    const io = UAPI_IOCTLS_BY_NAME.get(name);
    // Not a known name: a raw request number on a zeroed buffer (`ioctl FD 0x3b99 [size=N]`).
    let request: number;
    if (io) request = io.request;
    else {
      try {
        request = Number(this.num(name) & 0xffff_ffffn);
      } catch {
        throw new FormatError(`unknown ioctl ${name}`);
      }
    }
    const L = io?.layout;
    const arg = new Uint8Array(4096 + 64);
    const view = new DataView(arg.buffer);
    const bufs: { name: string; va: bigint; len: number }[] = [];
    let sizeGiven = false;
    let ptr: bigint | null = null;
    for (const kv of rest) {
      const eq = kv.indexOf('=');
      if (eq < 0) throw new FormatError(`bad argument ${kv}`);
      const key = kv.slice(0, eq);
      const val = kv.slice(eq + 1);
      if (key === 'tail') {
        arg.set(Buffer.from(val, 'hex').subarray(0, 64), L?.size ?? 0);
        continue;
      }
      if (key === 'ptr') {
        ptr = this.num(val);
        continue;
      }
      if (!L) {
        if (key !== 'size') throw new FormatError(`${name} has no field ${key}`);
        view.setUint32(0, Number(this.num(val) & 0xffff_ffffn), true);
        continue;
      }
      const f = L.byName.get(key);
      if (!f) throw new FormatError(`${name} has no field ${key}`);
      if (isByteArray(f)) {
        setField(view, f, this.bytesValue(f, val));
        continue;
      }
      if (val.startsWith('[') || val.startsWith('buf(')) {
        let bytes: Uint8Array;
        if (val.startsWith('[')) {
          const ranges = val.slice(1, -1).split(',').filter(Boolean);
          bytes = new Uint8Array(16 * ranges.length);
          const dv = new DataView(bytes.buffer);
          ranges.forEach((r, i) => {
            const [s, l] = r.split(':');
            if (l === undefined) throw new FormatError('range needs start:last');
            dv.setBigUint64(16 * i, this.num(s), true);
            dv.setBigUint64(16 * i + 8, this.num(l), true);
          });
        } else {
          bytes = new Uint8Array(Number(this.num(val.slice(4, -1))));
        }
        const va = bytes.length ? this.scratch(bytes) : 0n;
        bufs.push({ name: key, va, len: bytes.length });
        setField(view, f, va);
        continue;
      }
      const v = val.startsWith('-') && /^-[0-9]/.test(val) ? BigInt.asUintN(64, -this.num(val.slice(1))) : this.num(val);
      setField(view, f, f.type === 'u64' ? v : Number(BigInt.asUintN(f.type === 'u8' ? 8 : f.type === 'u16' ? 16 : 32, v)));
      if (f.offset === 0 && f.type === 'u32') sizeGiven = true;
    }
    if (L && !sizeGiven) view.setUint32(0, L.size, true);
    const res: StepResult = { op: 'ioctl', cmd: name };
    const ret = this.callIoctl(fd, request, ptr ?? arg);
    // Raw requests and `ptr=` print no fields (the driver's buffer is not the argument).
    if (!L || ptr !== null) {
      if (st.label && ret.ret !== -1) this.vars.set(st.label, BigInt(ret.ret as number));
      return { ...res, ...ret };
    }
    const out: Record<string, string> = {};
    for (const f of L.fields) {
      if (!f.out) continue;
      if (isByteArray(f)) {
        out[f.name] = Buffer.from(getBytes(view, f)).toString('hex');
        continue;
      }
      const v = BigInt(getField(view, f));
      out[f.name] = `0x${BigInt.asUintN(64, v).toString(16)}`;
      if (st.label) this.vars.set(`${st.label}.${f.name}`, v);
    }
    for (const b of bufs) out[b.name] = b.len ? Buffer.from(this.proc.memRead(b.va, b.len)).toString('hex') : '';
    if (st.label && ret.ret !== -1) this.vars.set(st.label, BigInt(ret.ret as number));
    return { ...res, out, ...ret };
  }

  /** The ioctl itself: its return value, or `ret: -1` with the errno. */
  private callIoctl(fd: number, request: number, arg: Uint8Array | bigint): StepResult {
    try {
      const r = this.proc.ioctl(fd, request, arg);
      return { ret: typeof r === 'number' ? r : 0 };
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (!(e instanceof Error && e.name === 'SyscallError' && code)) throw e;
      return { ret: -1, errno: code };
    }
  }

  /** QEMU's edu DMA engine: copies between an IOVA (masked to 28 bits) and its 4 KiB buffer. */
  private dma(st: Step): StepResult {
    const [devWord, iovaWord, lenWord, offWord] = st.args;
    const fd = Number(this.num(devWord));
    const iova = this.num(iovaWord) & EDU_DMA_MASK;
    const len = Number(this.num(lenWord));
    const off = offWord === undefined ? 0 : Number(this.num(offWord));
    if (len === 0 || len > EDU_MAX || off + len > EDU_BUF_SIZE) throw new FormatError('dma needs DEV IOVA LEN<=2048 [OFF]');
    const dev = this.devByFd.get(fd);
    if (!dev) return { op: st.op, ret: -1, errno: 'EBADF' };
    // The driver maps the BAR through VFIO_DEVICE_GET_REGION_INFO, EINVAL before BIND_IOMMUFD.
    const file = this.proc.fget(fd);
    file.put();
    if (!(file instanceof VfioDeviceFile) || !file.bound) return { op: st.op, ret: -1, errno: 'EINVAL' };
    let buf = this.eduBuf.get(dev);
    if (!buf) this.eduBuf.set(dev, (buf = new Uint8Array(EDU_BUF_SIZE)));
    // QEMU's memory API (address_space_rw) goes on page by page past a translation failure: a
    // page that faults reads as zeros into the buffer, or is not written; the others are copied.
    for (let done = 0; done < len; ) {
      const at = iova + BigInt(done);
      const n = Math.min(len - done, 4096 - Number(at & 0xfffn));
      const chunk = buf.subarray(off + done, off + done + n);
      try {
        if (st.op === 'dma_to_dev') dev.dma.readInto(at, chunk);
        else dev.dma.write(at, chunk);
      } catch (e) {
        if ((e as Error).name !== 'DmaFault') throw e;
        if (st.op === 'dma_to_dev') chunk.fill(0);
      }
      done += n;
    }
    return { op: st.op, ret: 0 };
  }
}

/**
 * The simulated machine the lab stands for: QEMU q35 with intel-iommu and edu at 00:01.0, booted
 * with `liveupdate=on` as the lab is (its kernel has KEXEC_HANDOVER_ENABLE_DEFAULT: `kho=on`).
 */
export function labHostConfig(): HostConfig {
  // The lab's kernel is plain Linux 7.3: without the iommu live-update series (no
  // IOMMU_HWPT_LU_SET_PRESERVE, no iommufd or VFIO cdev handler for LUO).
  return { memory: 2n << 30n, machine: 'qemu-7.2-q35', cmdline: 'intel_iommu=on kho=on liveupdate=on', kconfig: { IOMMU_LIVEUPDATE: false } };
}

/** Runs one sequence on a fresh simulated host; one result per step, then the end marker. */
export function runOnSimulator(seq: Sequence, config: HostConfig = labHostConfig()): StepResult[] {
  const host = Host.boot(config);
  try {
    return new Runner(host, seq).run();
  } finally {
    host.kernel.retire?.();
  }
}
