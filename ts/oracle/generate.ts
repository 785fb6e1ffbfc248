// Generated oracle sequences: the fuzz model's command generator (ts/fuzz) drives a simulated VMM,
// and every syscall that VMM makes is recorded as a step of the sequence format. Only what
// upstream Linux has is drawn (no guestmemfs, KHO, kexec or persistent iommufd), and no device DMA
// (QEMU's edu is slow and masks addresses to 28 bits: DMA is covered by hand-written sequences).
import fc from 'fast-check';
import { DEFAULT_WEIGHTS, opArbitrary, type CommandWeights, type Op } from '../fuzz/ops.js';
import { Rig } from '../fuzz/runner.js';
import type { Process } from '../kernel/process.js';
import { UAPI_IOCTLS } from '../uapi/ioctl.js';
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

/** A recorded call the format cannot express: the sequence is dropped. */
class Unrepresentable extends Error {}

const hex = (v: bigint | number) => (typeof v === 'number' && v < 0 ? `-${(-v).toString(16).replace(/^/, '0x')}` : `0x${BigInt(v).toString(16)}`);

/** Wraps a process so that each syscall the model makes is also a step. */
function recording(p: Process, steps: Step[]): Process {
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
        case 'ioctl':
          return (fd: number, request: number, arg: unknown) => {
            const io = UAPI_IOCTLS.get(request);
            if (!io || arg === null || typeof arg !== 'object' || arg instanceof Uint8Array) throw new Unrepresentable(`ioctl 0x${request.toString(16)}`);
            const words = Object.entries(arg as Record<string, unknown>).map(([k, v]) => {
              const f = io.layout.byName.get(k);
              if (f && isByteArray(f)) {
                if (typeof v !== 'string' && !(v instanceof Uint8Array)) throw new Unrepresentable(`field ${k}`);
                return `${k}=hex(${Buffer.from(typeof v === 'string' ? new TextEncoder().encode(v) : v).toString('hex')})`;
              }
              if (Array.isArray(v)) return `${k}=[${v.map((r: { start: bigint; last: bigint }) => `${hex(r.start)}:${hex(r.last)}`).join(',')}]`;
              if (v instanceof Uint8Array) return `${k}=buf(${v.length})`;
              if ((k === 'iommufd' || k === 'fd') && typeof v === 'number') return `${k}=${labels.has(v) ? `$${labels.get(v)}` : fdWord(v)}`;
              if (typeof v === 'bigint' || typeof v === 'number') return `${k}=${typeof v === 'number' && v < 0 ? String(v) : hex(v)}`;
              throw new Unrepresentable(`field ${k}`);
            });
            // An absent count beside an array is the array's length (Process.ioctl's object rule).
            const a = arg as Record<string, unknown>;
            if (Array.isArray(a.allowed_iovas) && a.num_iovas === undefined) words.push(`num_iovas=${a.allowed_iovas.length}`);
            push('ioctl', [fdWord(fd), io.name, ...words]);
            return orig.call(target, fd, request, arg);
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

/** Labels are fd references (`$f0`); the recorded fd numbers are the simulator's, so rewrite. */
function fdRefs(steps: Step[]): Step[] {
  const labelled = new Set(steps.flatMap((s) => (s.label ? [s.label] : [])));
  return steps.map((s) => ({
    ...s,
    args: s.args.map((a, i) => {
      if (labelled.has(a) && (i === 0 || (s.op === 'mmap' && i === 3))) return `$${a}`;
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

/**
 * `count` sequences of up to `maxCommands` fuzz commands each, from `seed`, recorded on a
 * simulated host shaped like the lab (one device at 00:01.0).
 */
export function generateSequences(opts: { seed: number; count: number; maxCommands?: number; prefix?: string }): Sequence[] {
  const { seed, count, maxCommands = 48, prefix = 'gen' } = opts;
  const cmds = fc.sample(fc.array(opArbitrary(UPSTREAM_WEIGHTS), { minLength: Math.min(16, maxCommands), maxLength: maxCommands, size: 'max' }), { seed, numRuns: count });
  const out: Sequence[] = [];
  cmds.forEach((ops, i) => {
    const steps: Step[] = [];
    try {
      const rig = new Rig({ memory: 2n << 30n, guestmemfsMiB: 8, devices: ['0000:00:01.0'] }, seed + i, { wrapProcess: (p) => recording(p, steps) });
      for (const op of ops) rig.run(upstreamOnly(op));
    } catch (e) {
      if (e instanceof Unrepresentable) return;
      throw e;
    }
    if (steps.length > 0) out.push({ name: `${prefix}.s${seed}.${i}`, steps: fdRefs(steps) });
  });
  return out;
}
