// The oracle's own tools: the sequence format round trip, generated sequences (recorded from the
// fuzz model) that the simulator's executor runs without a malformed step, and the shrinker.
import { describe, expect, it } from 'vitest';
import { formatSequences, generateSequences, parseSequences, runOnSimulator, shrinkSequence, type Sequence } from '../ts/oracle/index.js';

describe('oracle tools', () => {
  it('parses labels, references and names, and formats back to the same sequences', () => {
    const text = '# c\n== a.one\niommu: open /dev/iommu\nioas: ioctl $iommu IOMMU_IOAS_ALLOC\nioctl $iommu IOMMU_DESTROY id=$ioas.out_ioas_id\n';
    const seqs = parseSequences(text);
    expect(seqs).toHaveLength(1);
    expect(seqs[0]!.steps[1]).toMatchObject({ label: 'ioas', op: 'ioctl', args: ['$iommu', 'IOMMU_IOAS_ALLOC'] });
    const shape = (xs: Sequence[]) => xs.map((x) => ({ name: x.name, steps: x.steps.map(({ label, op, args }) => ({ label, op, args })) }));
    expect(shape(parseSequences(formatSequences(seqs)))).toEqual(shape(seqs));
    expect(() => parseSequences('open /dev/iommu\n')).toThrow(/before the first/);
    expect(() => parseSequences('== x\n== x\n')).toThrow(/twice/);
  });

  it('generates upstream-only sequences the simulator runs without a malformed step', () => {
    const seqs = generateSequences({ seed: 11, count: 20 });
    expect(seqs.length).toBe(20);
    const text = formatSequences(seqs);
    expect(text).not.toMatch(/guestmemfs|OPTION option_id=0x2/);
    expect(text).toMatch(/IOMMU_IOAS_MAP /);
    for (const s of seqs) {
      const out = runOnSimulator(s);
      expect(out.filter((l) => 'error' in l), s.name).toEqual([]);
      expect(out.at(-1)).toEqual({ seq: s.name, end: true });
    }
    // Deterministic: the same seed gives the same corpus.
    expect(formatSequences(generateSequences({ seed: 11, count: 20 }))).toBe(text);
  });

  it('shrinks to the steps the divergence needs, one batch per round', async () => {
    const seq: Sequence = { name: 'big', steps: Array.from({ length: 23 }, (_, i) => ({ op: `s${i}`, args: [], line: i + 1 })) };
    let rounds = 0;
    const small = await shrinkSequence(seq, async (cands) => {
      rounds++;
      return cands.map((c) => c.steps.some((s) => s.op === 's4') && c.steps.some((s) => s.op === 's17'));
    });
    expect(small.name).toBe('shrunk.big');
    expect(small.steps.map((s) => s.op)).toEqual(['s4', 's17']);
    expect(rounds).toBeLessThan(12);
    // Nothing diverges once a step goes: the sequence stays whole.
    const whole = await shrinkSequence(seq, async (cands) => cands.map(() => false));
    expect(whole.steps).toHaveLength(23);
  });
});
