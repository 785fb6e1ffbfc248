// Compares the simulator's answers with the real kernel's (a golden file or a live run).
import { isDeepStrictEqual } from 'node:util';
import type { StepResult } from './sequence.js';

/** A divergence the project keeps on purpose, with its reason (oracle/differences.json). */
export interface Difference {
  /** Sequence name, or a prefix ending in `*`. */
  seq: string;
  /** One step, or every step of the sequence when absent. */
  step?: number;
  reason: string;
}

/** One step where the two disagree. */
export interface Divergence {
  seq: string;
  step: number | 'end';
  kernel: StepResult | undefined;
  simulator: StepResult | undefined;
  /** The listed reason, when this is a deliberate difference. */
  reason?: string;
}

function listed(diffs: readonly Difference[], seq: string, step: number | 'end'): Difference | undefined {
  return diffs.find((d) => (d.seq.endsWith('*') ? seq.startsWith(d.seq.slice(0, -1)) : d.seq === seq) && (d.step === undefined || d.step === step));
}

/** Step by step, every key of both lines. */
export function compareSequence(seq: string, kernel: readonly StepResult[], sim: readonly StepResult[], diffs: readonly Difference[] = []): Divergence[] {
  const out: Divergence[] = [];
  const n = Math.max(kernel.length, sim.length);
  for (let i = 0; i < n; i++) {
    const k = kernel[i];
    const s = sim[i];
    if (isDeepStrictEqual(k, s)) continue;
    const step = (k?.step ?? s?.step ?? 'end') as number | 'end';
    out.push({ seq, step, kernel: k, simulator: s, reason: listed(diffs, seq, step)?.reason });
  }
  return out;
}

/** Groups driver output lines (parsed) by sequence name, in order. */
export function groupBySequence(lines: readonly StepResult[]): Map<string, StepResult[]> {
  const out = new Map<string, StepResult[]>();
  for (const l of lines) {
    if (typeof l.seq !== 'string') continue;
    let g = out.get(l.seq);
    if (!g) out.set(l.seq, (g = []));
    g.push(l);
  }
  return out;
}
