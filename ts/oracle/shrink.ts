// Shrinking a diverging sequence: drop steps while the divergence stays, so that what is left
// becomes a short named sequence of the corpus. Each round asks about every candidate at once,
// because on the real kernel one round is one boot.
import type { Sequence } from './sequence.js';

/**
 * Which candidates still diverge "the same way" (the caller decides: usually the same command
 * and the same pair of answers at the first divergence). One call per round, all candidates.
 */
export type DivergesBatch = (candidates: readonly Sequence[]) => Promise<boolean[]>;

/** The steps of `seq` without those in `drop` (by index). */
function without(seq: Sequence, drop: ReadonlySet<number>, name: string): Sequence {
  return { name, steps: seq.steps.filter((_, i) => !drop.has(i)) };
}

/**
 * Delta debugging over steps: each round tries dropping chunks of the current sequence (halves,
 * quarters, ... down to single steps) and keeps the shortest candidate that still diverges.
 * Stops when no single step can go, or after `maxRounds`.
 */
export async function shrinkSequence(seq: Sequence, diverges: DivergesBatch, opts: { maxRounds?: number; name?: string } = {}): Promise<Sequence> {
  const name = opts.name ?? `shrunk.${seq.name}`;
  let cur: Sequence = { name, steps: seq.steps };
  for (let round = 0; round < (opts.maxRounds ?? 40); round++) {
    const n = cur.steps.length;
    const cands: Sequence[] = [];
    for (let chunk = Math.max(1, n >> 1); ; chunk = Math.max(1, chunk >> 1)) {
      for (let at = 0; at < n; at += chunk) {
        const drop = new Set<number>();
        for (let i = at; i < Math.min(n, at + chunk); i++) drop.add(i);
        if (drop.size < n) cands.push(without(cur, drop, `${name}.c${cands.length}`));
      }
      if (chunk === 1) break;
    }
    if (cands.length === 0) break;
    const verdicts = await diverges(cands);
    let best: Sequence | null = null;
    cands.forEach((c, i) => {
      if (verdicts[i] && (!best || c.steps.length < best.steps.length)) best = c;
    });
    if (!best) break;
    cur = { name, steps: (best as Sequence).steps };
  }
  return cur;
}
