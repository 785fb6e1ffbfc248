// The fixed-budget handover campaign both adversarial test files run (one kind each, so vitest
// runs them side by side). HANDOVER_RUNS=<n> scales the budget; HANDOVER_SEED=<s> reseeds.
import { expect, it } from 'vitest';
import { fuzzHandover } from '../ts/fuzz/handover.js';

export const HANDOVER_RUNS = Number(process.env.HANDOVER_RUNS ?? 5000);

export function handoverCampaign(kind: 'raw' | 'semantic', seed: number): void {
  it(`${HANDOVER_RUNS} ${kind} corruptions of a two-VM handover: no device gains a translation, at boot or after re-attach`, () => {
    const r = fuzzHandover({ runs: HANDOVER_RUNS, seed: process.env.HANDOVER_SEED === undefined ? seed : Number(process.env.HANDOVER_SEED), kind });
    if (!r.ok) {
      const f = r.failure!;
      expect.fail(`seed ${r.seed}: ${JSON.stringify(f.mutation, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))} widened:\n${f.widened.slice(0, 8).join('\n')}`);
    }
    expect(r.runs).toBe(HANDOVER_RUNS);
    // The budget really corrupts: most mutations apply, and the next kernel refuses many of them.
    expect(r.applied).toBeGreaterThan(HANDOVER_RUNS * 0.6);
    expect(r.degraded).toBeGreaterThan(HANDOVER_RUNS * 0.3);
  }, 600_000);
}
