// The real kernel as the judge, without QEMU: every recorded answer of Linux 7.3 under QEMU's
// VT-d (oracle/golden, written by `npm run oracle`) against the simulator, step by step. A
// divergence fails unless oracle/differences.json lists it with its reason.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkGolden, loadDifferences, loadGoldens } from '../ts/oracle/index.js';

const oracleDir = fileURLToPath(new URL('../oracle', import.meta.url));
const cases = loadGoldens(oracleDir);
const diffs = loadDifferences(oracleDir);

describe('the simulator answers as the recorded kernel did', () => {
  it('has goldens from the lab kernel for every sequence file', () => {
    expect(cases.length).toBeGreaterThan(0);
    for (const c of cases) {
      expect(c.header.release).toMatch(/^7\.3\./);
      for (const s of c.sequences) {
        const k = c.kernel.get(s.name);
        expect(k, `${c.file}: ${s.name} has no golden answers`).toBeDefined();
        // A step the driver could not parse is a corpus bug, not a kernel answer.
        expect(k!.filter((l) => 'error' in l), `${c.file}: ${s.name}`).toEqual([]);
      }
    }
  });

  for (const c of cases) {
    it(`${c.file} (${c.sequences.length} sequences)`, () => {
      const unexplained = checkGolden(c, diffs).filter((d) => !d.reason);
      const shown = unexplained.slice(0, 5).map((d) => `${d.seq} step ${d.step}\n  kernel:    ${JSON.stringify(d.kernel)}\n  simulator: ${JSON.stringify(d.simulator)}`);
      expect(shown, `${unexplained.length} divergences`).toEqual([]);
    });
  }

  it('every deliberate difference is still a difference', () => {
    const seen = new Set(cases.flatMap((c) => checkGolden(c, diffs).flatMap((d) => (d.reason ? [diffs.find((x) => x.reason === d.reason)!] : []))));
    expect(diffs.filter((d) => !seen.has(d)).map((d) => d.seq)).toEqual([]);
  });
});
