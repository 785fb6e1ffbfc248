// The KHO handover is untrusted input (README "Trust model of the handover"). Two VMMs, same IOVAs,
// each with a persistent iommufd over its own guestmemfs file (ts/fuzz/handover.ts); the blob is
// corrupted in physical memory at the `jump`, then the next kernel boots and each VMM re-claims,
// re-binds and re-attaches. No device may translate anything it did not translate before: checked
// at boot and after the re-attach, for four named attacks and a fast-check campaign of raw byte
// corruptions (handover.semantic.test.ts runs the semantic rewrites).
import { describe, expect, it } from 'vitest';
import { runHandoverCase, type HandoverMutation } from '../ts/fuzz/handover.js';
import { handoverCampaign } from './handover-helpers.js';

const VM0 = '0000:01:00.0';
const VM1 = '0000:02:00.0';
const HOST = '0000:03:00.0';
/** `guestmemfs` / `iommu-prot` properties in tree order: vm0 IOAS 2 area 0, area 1, IOAS 3 area 0, then vm1's. */
const VM0_RW = 0;
const VM0_RO = 1;
const VM1_RW = 3;

function expectIsolated(m: HandoverMutation) {
  const r = runHandoverCase(m);
  expect(r.applied).toBe(true);
  expect(r.widenedAtBoot).toEqual([]);
  expect(r.widenedAfterReattach).toEqual([]);
  return r;
}

describe('named attacks on the handover (each widened a device before the trust rule)', () => {
  it('an area segment names the other VM’s file (inode 2 → 3): iommufd 1 is not restored, VM 1 is untouched', () => {
    const r = expectIsolated({ k: 'setWord', name: 'guestmemfs', which: VM0_RW, word: 1, value: { k: 'any', v: 3n } });
    expect(r.log).toMatch(/iommufd: \/iommufd\/iommufds\/1 not restored: IOAS 2, IOVA 0x100000000: no long-term pin of inode 3/);
    expect(r.log).toMatch(/DMAR: persistent domain \(persistent id 1, did \d+\) not adopted: no persisted iommufd refers to it/);
    expect(r.reattached).toEqual([VM1]);
    expect(r.lostAfterReattach.filter((x) => x.startsWith(VM1))).toEqual([]);
  });

  it('two areas swap iommu-prot (read/write ↔ read-only): the domain is refused and the context is not restored', () => {
    const r = expectIsolated({ k: 'swapValues', name: 'iommu-prot', a: VM0_RW, b: VM0_RO });
    expect(r.log).toMatch(/iommufd: \/iommufd\/iommufds\/1 not restored: IOAS 2, IOVA 0x100000000: no long-term pin of inode 2/);
    expect(r.reattached).toEqual([VM1]);
  });

  it('the two persisted iommufds swap node names and their domains’ persistent_id: neither is restored', () => {
    for (const m of [{ k: 'relabel', a: 0, b: 1 } as const, { k: 'swapNames', parent: 'iommufds', at: 0, a: 0, b: 1 } as const]) {
      const r = expectIsolated(m);
      expect(r.log).toMatch(/iommufds\/1 not restored: .*no long-term pin of inode 3/);
      expect(r.log).toMatch(/iommufds\/2 not restored: .*no long-term pin of inode 2/);
      expect(r.reattached).toEqual([]);
    }
  });

  it('the two VMs’ areas swap guestmemfs segments (same IOVA and length, the other file): neither is restored', () => {
    const r = expectIsolated({ k: 'swapValues', name: 'guestmemfs', a: VM0_RW, b: VM1_RW });
    expect(r.log).toMatch(/iommufds\/1 not restored/);
    expect(r.log).toMatch(/iommufds\/2 not restored/);
    expect(r.reattached).toEqual([]);
  });

  it('an untouched handover restores both VMs exactly; the host’s own device stays blocked', () => {
    const r = expectIsolated({ k: 'flip', bits: [] });
    expect(r.degraded).toBe(false);
    expect(r.reattached).toEqual([VM0, VM1]);
    expect(r.lostAfterReattach.filter((x) => !x.startsWith(HOST))).toEqual([]);
    expect(r.lostAfterReattach.some((x) => x.startsWith(HOST))).toBe(true);
  });
});

describe('raw corruptions (bit flips, byte runs, u64 words anywhere in the blob)', () => {
  handoverCampaign('raw', 20261207);
});
