// Generated oracle sequences: the fuzz model's command generator (ts/fuzz) drives a simulated VMM,
// and every syscall that VMM makes is recorded as a step of the sequence format. Only what
// upstream Linux has is drawn (no guestmemfs, KHO, kexec or persistent iommufd), and no device DMA
// (QEMU's edu is slow and masks addresses to 28 bits: DMA is covered by hand-written sequences).
import fc from 'fast-check';
import { DEFAULT_WEIGHTS, LUO_KINDS, opArbitrary, type CommandWeights, type Op } from '../fuzz/ops.js';
import { FuzzDivergence, Rig } from '../fuzz/runner.js';
import type { Process } from '../kernel/process.js';
import { F_ADD_SEALS, F_GET_SEALS } from '../uapi/mman.js';
import { UAPI_IOCTLS } from '../uapi/ioctl.js';
import { SERIES_IOCTLS } from '../uapi/iommufd.js';
import { isByteArray } from '../uapi/struct.js';
import type { Sequence, Step } from './sequence.js';

/** What upstream Linux has: IOAS and device lifecycle commands, the VMM's loads and stores. */
const UPSTREAM_KINDS = new Set(['open', 'close', 'ioasAlloc', 'map', 'mapFile', 'copy', 'unmap', 'allow', 'destroy', 'bind', 'attach', 'detach', 'unbind', 'cpuWrite', 'cpuRead']);

/**
 * The upstream mix: the default weights of those kinds, others off; contexts and IOASes more
 * often (without them most commands find nothing to act on), fewer stores.
 */
export const UPSTREAM_WEIGHTS: CommandWeights = {
  ...(Object.fromEntries(Object.entries(DEFAULT_WEIGHTS).map(([k, w]) => [k, UPSTREAM_KINDS.has(k) ? w : 0])) as CommandWeights),
  open: 6,
  ioasAlloc: 5,
  cpuWrite: 3,
};

/**
 * The upstream flow's mix (`--generate-luo`): memfds, seals, /dev/liveupdate, sessions, PRESERVE_FD
 * of every kind of fd, the reboot, RETRIEVE and FINISH in the next kernel, beside a little of the
 * upstream iommufd mix. A reboot with KHO activated by userspace (the RFC's sysfs) or a failure
 * injected writes files the lab does not have: such sequences are dropped.
 */
export const LUO_UPSTREAM_WEIGHTS: CommandWeights = {
  ...(Object.fromEntries(Object.entries(UPSTREAM_WEIGHTS).map(([k, w]) => [k, (w ?? 0) / 4])) as CommandWeights),
  ...Object.fromEntries(LUO_KINDS.map((k) => [k, 3])),
  luoPreserve: 6,
  luoReboot: 1,
  // IOMMU_HWPT_LU_SET_PRESERVE is the series' (SERIES_IOCTLS): the lab kernel does not have it.
  luoMark: 0,
  luoVm: 0,
};

/** A recorded call the format cannot express: the sequence is dropped. */
class Unrepresentable extends Error {}

/** `e` is (the fuzz runner's report of) an {@link Unrepresentable} call. */
const unrepresentable = (e: unknown) => e instanceof Unrepresentable || (e instanceof FuzzDivergence && e.cause instanceof Unrepresentable);

const hex = (v: bigint | number) => (typeof v === 'number' && v < 0 ? `-${(-v).toString(16).replace(/^/, '0x')}` : `0x${BigInt(v).toString(16)}`);

/**
 * Wraps a process so that each syscall the model makes is also a step. `tag` (the sequence's
 * own) is appended to every LUO session name of 1..48 bytes: the lab runs the whole corpus in one
 * kernel, so a session an earlier sequence left preserved across its kexec must not be found by
 * a later one (the simulator runs each sequence on a fresh host).
 */
function recording(p: Process, steps: Step[], tag = ''): Process {
  const labels = new Map<number, string>();
  let n = 0;
  // An fd the VMM never opened (the model's "closed fd") is 999 on both sides: EBADF, whatever
  // numbers the guest driver itself holds.
  const fdWord = (fd: number) => labels.get(fd) ?? (fd < 0 ? String(fd) : '999');
  const push = (op: string, args: string[], label?: string) => steps.push({ op, args, label, line: 0 });
  const fdResult = (fd: number) => {
    const label = `f${n++}`;
    labels.set(fd, label);
    return label;
  };
  const handler: ProxyHandler<Process> = {
    get(target, prop) {
      const orig = Reflect.get(target, prop, target);
      if (typeof orig !== 'function') return orig;
      switch (prop) {
        case 'open':
        case 'memfd_create':
          // A new fd: the step is labelled f<n> once the call has returned it.
          return (what: string, flags = 0) => {
            const i = steps.length;
            push(prop, [what, hex(flags)]);
            const fd = orig.call(target, what, flags) as number;
            (steps[i] as { label?: string }).label = fdResult(fd);
            return fd;
          };
        case 'close':
          return (fd: number) => {
            push('close', [fdWord(fd)]);
            const r = orig.call(target, fd);
            labels.delete(fd);
            return r;
          };
        case 'ftruncate':
          return (fd: number, len: bigint) => (push('ftruncate', [fdWord(fd), hex(len)]), orig.call(target, fd, len));
        case 'mmap':
          return (addr: bigint | null, len: bigint, prot: number, flags: number, fd = -1, off = 0n) => {
            if (addr === null) throw new Unrepresentable('mmap without an address');
            push('mmap', [hex(len), hex(prot), hex(flags), fd < 0 ? '-1' : fdWord(fd), hex(off), hex(addr)]);
            return orig.call(target, addr, len, prot, flags, fd, off);
          };
        case 'munmap':
          return (addr: bigint, len: bigint) => (push('munmap', [hex(addr), hex(len)]), orig.call(target, addr, len));
        case 'memWrite':
          return (va: bigint, bytes: Uint8Array) => (push('poke', [hex(va), Buffer.from(bytes).toString('hex')]), orig.call(target, va, bytes));
        case 'memRead':
          return (va: bigint, len: number) => {
            if (len > 4096) throw new Unrepresentable('peek of more than 4096 bytes');
            push('peek', [hex(va), String(len)]);
            return orig.call(target, va, len);
          };
        case 'fcntl':
          // F_ADD_SEALS is `add_seals`; F_GET_SEALS (the model reads back what it predicted) is not recorded.
          return (fd: number, cmd: number, arg = 0) => {
            if (cmd === F_ADD_SEALS) push('add_seals', [fdWord(fd), hex(arg)]);
            else if (cmd !== F_GET_SEALS) throw new Unrepresentable(`fcntl ${cmd}`);
            return orig.call(target, fd, cmd, arg);
          };
        case 'pipe':
          return () => {
            const i = steps.length;
            push('pipe', []);
            const [r, w] = orig.call(target) as [number, number];
            const label = `f${n++}`;
            (steps[i] as { label?: string }).label = label;
            labels.set(r, label);
            labels.set(w, `${label}.w`);
            return [r, w];
          };
        case 'kexecFileLoad':
          // Part of the format's `kexec` (kexec_file_load of the running kernel, then the reboot).
          return orig.bind(target);
        case 'reboot':
          return (cmd: number) => {
            push('kexec', []);
            const r = orig.call(target, cmd);
            // The next kernel: the driver goes on in a fresh process, every fd gone.
            labels.clear();
            return r;
          };
        case 'ioctl':
          return (fd: number, request: number, arg: unknown) => {
            const io = UAPI_IOCTLS.get(request);
            if (!io || SERIES_IOCTLS.has(io.name) || arg === null || typeof arg !== 'object' || arg instanceof Uint8Array) throw new Unrepresentable(`ioctl 0x${request.toString(16)}`);
            const words = Object.entries(arg as Record<string, unknown>).map(([k, v]) => {
              const f = io.layout.byName.get(k);
              if (f && isByteArray(f)) {
                if (typeof v !== 'string' && !(v instanceof Uint8Array)) throw new Unrepresentable(`field ${k}`);
                let bytes = Buffer.from(typeof v === 'string' ? new TextEncoder().encode(v) : v);
                const len = bytes.indexOf(0) < 0 ? bytes.length : bytes.indexOf(0);
                if (k === 'name' && io.name.startsWith('LIVEUPDATE_') && len >= 1 && len <= 48) bytes = Buffer.concat([bytes.subarray(0, len), Buffer.from(tag), bytes.subarray(len)]);
                return `${k}=hex(${bytes.toString('hex')})`;
              }
              if (Array.isArray(v)) return `${k}=[${v.map((r: { start: bigint; last: bigint }) => `${hex(r.start)}:${hex(r.last)}`).join(',')}]`;
              if (v instanceof Uint8Array) return `${k}=buf(${v.length})`;
              if ((k === 'iommufd' || k === 'fd') && typeof v === 'number') {
                // An output-only fd (CREATE_SESSION's) goes in as the caller's number; the kernel ignores it.
                if (f?.out) return `${k}=${hex(v)}`;
                return `${k}=${labels.has(v) ? `$${labels.get(v)}` : fdWord(v)}`;
              }
              if (typeof v === 'bigint' || typeof v === 'number') return `${k}=${typeof v === 'number' && v < 0 ? String(v) : hex(v)}`;
              throw new Unrepresentable(`field ${k}`);
            });
            // An absent count beside an array is the array's length (Process.ioctl's object rule).
            const a = arg as Record<string, unknown>;
            if (Array.isArray(a.allowed_iovas) && a.num_iovas === undefined) words.push(`num_iovas=${a.allowed_iovas.length}`);
            const i = steps.length;
            push('ioctl', [fdWord(fd), io.name, ...words]);
            const r = orig.call(target, fd, request, arg) as Record<string, unknown>;
            // A new fd in the struct (a session, a retrieved file): `$label.fd` from now on.
            if (io.layout.byName.get('fd')?.out && typeof r.fd === 'number' && r.fd >= 0) {
              const label = `f${n++}`;
              (steps[i] as { label?: string }).label = label;
              labels.set(r.fd, `${label}.fd`);
            }
            return r;
          };
        case 'mount':
          // guestmemfs setup of the fuzz world: nothing upstream; no generated command uses it.
          return orig.bind(target);
        case 'pinCount':
        case 'readdir':
        case 'stat':
          return orig.bind(target);
        default:
          return (...args: unknown[]) => {
            throw new Unrepresentable(`Process.${String(prop)}(${args.length} args)`);
          };
      }
    },
  };
  return new Proxy(p, handler);
}

/**
 * Labels are fd references (`$f0`, a pipe's write end `$f0.w`, an fd an ioctl returned
 * `$f0.fd`); the recorded fd numbers are the simulator's, so rewrite.
 */
function fdRefs(steps: Step[]): Step[] {
  const labelled = new Set(steps.flatMap((s) => (s.label ? [s.label] : [])));
  const isRef = (a: string) => labelled.has(a.replace(/\.(w|fd)$/, ''));
  return steps.map((s) => ({
    ...s,
    args: s.args.map((a, i) => {
      if (isRef(a) && (i === 0 || (s.op === 'mmap' && i === 3))) return `$${a}`;
      return a;
    }),
  }));
}

/**
 * An op of the upstream mix: a context never asks for persistence (an RFC option), and what would
 * name a guestmemfs file names the anonymous or memfd memory instead.
 */
function upstreamOnly(op: Op): Op {
  switch (op.k) {
    case 'open':
      return { ...op, persist: false };
    case 'map':
    case 'cpuWrite':
    case 'cpuRead':
      return op.src >= 2 && op.src <= 4 ? { ...op, src: op.src % 2 } : op;
    case 'mapFile':
      return op.file <= 2 ? { ...op, file: 3 } : op;
    default:
      return op;
  }
}

/** An op of the LUO mix: no failure injected (the lab has no fail_function). */
function luoOnly(op: Op): Op {
  return op.k === 'luoReboot' || op.k === 'luoPreserve' ? { ...op, inject: 0 } : upstreamOnly(op);
}

/**
 * `count` sequences of up to `maxCommands` fuzz commands each, from `seed`, recorded on a
 * simulated host shaped like the lab (one device at 00:01.0); `flow: 'luo'` draws the LUO mix
 * ({@link LUO_UPSTREAM_WEIGHTS}) on a host booted with `kho=on liveupdate=on`.
 */
export function generateSequences(opts: { seed: number; count: number; maxCommands?: number; prefix?: string; flow?: 'rfc' | 'luo' }): Sequence[] {
  const { seed, count, maxCommands = 48, prefix = 'gen', flow = 'rfc' } = opts;
  const weights = flow === 'luo' ? LUO_UPSTREAM_WEIGHTS : UPSTREAM_WEIGHTS;
  const only = flow === 'luo' ? luoOnly : upstreamOnly;
  const cmds = fc.sample(fc.array(opArbitrary(weights), { minLength: Math.min(16, maxCommands), maxLength: maxCommands, size: 'max' }), { seed, numRuns: count });
  const out: Sequence[] = [];
  cmds.forEach((ops, i) => {
    const steps: Step[] = [];
    try {
      const rig = new Rig({ memory: 2n << 30n, guestmemfsMiB: 8, devices: ['0000:00:01.0'], flow }, seed + i, { wrapProcess: (p) => recording(p, steps, flow === 'luo' ? `@${seed}.${i}` : '') });
      for (const op of ops) rig.run(only(op));
    } catch (e) {
      if (unrepresentable(e)) return;
      throw e;
    }
    if (steps.length > 0) out.push({ name: `${prefix}.s${seed}.${i}`, steps: fdRefs(steps) });
  });
  return out;
}
