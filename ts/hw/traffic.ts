// A device's DMA traffic that never stops: between every lifecycle phase the host lets each
// generator write fresh bytes to some pages of its window and read back pages it wrote before,
// checking every byte. It is part of the device (hardware): it survives kexec by construction.
import { DmaFault, type PciDevice } from './pci.js';

/** Options of {@link Host.dmaTraffic}. */
export interface DmaTrafficOptions {
  /** The device. */
  bdf: string;
  /** IOVA window the device uses (page aligned). */
  iova: bigint;
  length: bigint;
  /** Pages written and pages re-read per step (default 16 each). */
  pagesPerStep?: number;
  /** Only read, never write (default false). */
  readOnly?: boolean;
}

/** What happened in one phase. */
export interface DmaTrafficStep {
  phase: string;
  generation: number;
  /** Index of the phase in `host.timeline`. */
  at: number;
  /** The simulated time of that phase's end (ns). */
  simNs: bigint;
  pagesWritten: number;
  pagesVerified: number;
  faults: { iova: bigint; reason: number; write: boolean }[];
  mismatches: bigint[];
}

const PAGE = 4096;

/** One device's traffic, with everything it wrote remembered (device-side state). */
export class DmaTraffic {
  readonly steps: DmaTrafficStep[] = [];
  /** IOVA page → the seed of the bytes last written there. */
  private readonly written = new Map<bigint, number>();
  private seq = 1;
  private cursor = 0n;
  stopped = false;
  private readonly buf = new Uint8Array(PAGE);

  constructor(
    readonly device: PciDevice,
    readonly opts: Required<Omit<DmaTrafficOptions, 'bdf'>> & { bdf: string },
  ) {}

  /** Faults over every step. */
  get faults(): number {
    return this.steps.reduce((n, s) => n + s.faults.length, 0);
  }

  /** Byte mismatches over every step (pages whose bytes were not what the device wrote). */
  get mismatches(): number {
    return this.steps.reduce((n, s) => n + s.mismatches.length, 0);
  }

  /** Pages read back and found right, over every step. */
  get pagesVerified(): number {
    return this.steps.reduce((n, s) => n + s.pagesVerified, 0);
  }

  /** Stops stepping. */
  stop(): void {
    this.stopped = true;
  }

  /** One burst: write `pagesPerStep` new pages, re-read as many written earlier. */
  step(phase: string, generation: number, at = -1, simNs = 0n): DmaTrafficStep {
    const s: DmaTrafficStep = { phase, generation, at, simNs, pagesWritten: 0, pagesVerified: 0, faults: [], mismatches: [] };
    const pages = this.opts.length / BigInt(PAGE);
    const n = this.opts.pagesPerStep;
    const dma = this.device.dma;
    if (!this.opts.readOnly) {
      for (let i = 0; i < n && pages > 0n; i++) {
        const page = this.cursor % pages;
        this.cursor += 7919n; // a prime stride: spread over the window, revisit eventually
        const iova = this.opts.iova + page * BigInt(PAGE);
        const seed = this.seq++;
        fill(this.buf, seed);
        try {
          dma.write(iova, this.buf);
          this.written.set(iova, seed);
          s.pagesWritten++;
        } catch (e) {
          if (!(e instanceof DmaFault)) throw e;
          s.faults.push({ iova: e.iova, reason: e.reason, write: true });
          // A faulted write may have landed partially: forget what the page held.
          this.written.delete(iova);
        }
      }
    }
    const olds = [...this.written.keys()];
    for (let i = 0; i < n && olds.length; i++) {
      const iova = olds[(this.seq * 31 + i * 17) % olds.length]!;
      try {
        dma.readInto(iova, this.buf);
        const seed = this.written.get(iova)!;
        if (check(this.buf, seed)) s.pagesVerified++;
        else s.mismatches.push(iova);
      } catch (e) {
        if (!(e instanceof DmaFault)) throw e;
        s.faults.push({ iova: e.iova, reason: e.reason, write: false });
      }
    }
    this.steps.push(s);
    return s;
  }
}

/** A page of bytes derived from `seed` (cheap, distinct per seed and per offset). */
function fill(buf: Uint8Array, seed: number): void {
  const v = new Uint32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < v.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    v[i] = (x >>> 0) ^ i;
  }
}

function check(buf: Uint8Array, seed: number): boolean {
  const want = new Uint8Array(buf.length);
  fill(want, seed);
  for (let i = 0; i < buf.length; i++) if (buf[i] !== want[i]) return false;
  return true;
}
