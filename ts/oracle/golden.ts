// Golden files (oracle/golden/*.jsonl): the real kernel's answers to one sequence file, as the
// guest driver printed them. The first line names the kernel, QEMU and the machine.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compareSequence, groupBySequence, type Difference, type Divergence } from './compare.js';
import { parseSequences, type Sequence, type StepResult } from './sequence.js';
import { runOnSimulator } from './simulator.js';

/** What a golden file's first line says. */
export interface GoldenHeader {
  kernel: string;
  release: string;
  qemu: string;
  machine: string;
}

/** One sequence file with its golden answers. */
export interface GoldenCase {
  file: string;
  header: GoldenHeader;
  sequences: Sequence[];
  kernel: Map<string, StepResult[]>;
}

/** Every sequence file of `oracleDir/sequences` that has a golden file, in name order. */
export function loadGoldens(oracleDir: string): GoldenCase[] {
  const goldenDir = join(oracleDir, 'golden');
  return readdirSync(goldenDir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .map((g) => {
      const file = g.replace(/\.jsonl$/, '.seq');
      const [head, ...lines] = readFileSync(join(goldenDir, g), 'utf8').trimEnd().split('\n');
      return {
        file,
        header: JSON.parse(head!) as GoldenHeader,
        sequences: parseSequences(readFileSync(join(oracleDir, 'sequences', file), 'utf8')),
        kernel: groupBySequence(lines.map((l) => JSON.parse(l) as StepResult)),
      };
    });
}

/** The deliberate differences (oracle/differences.json). */
export function loadDifferences(oracleDir: string): Difference[] {
  return JSON.parse(readFileSync(join(oracleDir, 'differences.json'), 'utf8')) as Difference[];
}

/** Runs every sequence of a case on the simulator; the divergences from the golden answers. */
export function checkGolden(c: GoldenCase, diffs: readonly Difference[]): Divergence[] {
  return c.sequences.flatMap((s) => compareSequence(s.name, c.kernel.get(s.name) ?? [], runOnSimulator(s), diffs));
}
