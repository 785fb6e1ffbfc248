// Memory that comes back (issue 14, part 3): hosts, live updates, frames and decoded trees that a
// program drops are freed while it runs, without it calling gc() and without the event loop
// turning. Each scenario runs in a fresh `node` (no flags) against the built package, so RSS is
// the scenario's own: __test__/memory-lifetime.child.mjs measures RSS after a warm-up, runs the
// scenario in one synchronous loop and reports RSS at its end. No timing is asserted.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { nativeFinalizers, PhysicalMemory } from 'iommu-liveupdate';
import { gcFinalizersSafe } from '../ts/native.js';
import { ensureBuilt, root } from './cli-helpers.js';

const MiB = 1 << 20;
/** How far RSS may end above where it started (after the warm-up). */
const BOUND = 64 * MiB;

interface Result {
  scenario: string;
  nativeFinalizers: 'gc' | 'event-loop';
  count: number;
  rssStart: number;
  rssEnd: number;
  rssPeak: number;
  ms: number;
  stats?: { hostBytes: number; framesResident: number; framesAllocated: number; metadataBytes: number };
  generation?: number;
  generations?: number;
  blobBytes?: number;
}

/** Runs one scenario in a child that decides its finalizer mode itself (or as `env` says). */
async function scenario(name: string, count: number, warmup: number, env: Record<string, string> = {}): Promise<Result> {
  ensureBuilt();
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  // This process already chose; the child must choose for itself unless the test says.
  if (!('IOMMU_LIVEUPDATE_SYNC_FINALIZERS' in env)) delete childEnv.IOMMU_LIVEUPDATE_SYNC_FINALIZERS;
  delete childEnv.IOMMU_LIVEUPDATE_SYNC_FINALIZERS_AUTO;
  const { stdout } = await promisify(execFile)(process.execPath, [join(root, '__test__', 'memory-lifetime.child.mjs'), name, String(count), String(warmup)], {
    cwd: root,
    env: childEnv,
    maxBuffer: 1 << 20,
  });
  return JSON.parse(stdout.trim().split('\n').pop()!) as Result;
}

const grew = (r: Result) => `${((r.rssEnd - r.rssStart) / MiB).toFixed(1)} MiB (peak +${((r.rssPeak - r.rssStart) / MiB).toFixed(1)} MiB, ${r.count} in ${r.ms} ms)`;

describe('finalizer mode', () => {
  it('the addon runs finalizers from the GC on the Node versions that allow it', () => {
    for (const v of ['20.18.3', '20.19.0', '20.20.2', '22.14.0', '22.20.1', '23.6.0', '24.0.0', '25.1.0']) expect(gcFinalizersSafe(v), v).toBe(true);
    for (const v of ['18.20.4', '20.17.0', '20.18.2', '21.7.3', '22.13.1', '23.5.0']) expect(gcFinalizersSafe(v), v).toBe(false);
    expect(nativeFinalizers).toBe(gcFinalizersSafe(process.versions.node) ? 'gc' : 'event-loop');
  });

  it('IOMMU_LIVEUPDATE_SYNC_FINALIZERS=0 keeps them on the event loop, and everything still works', async () => {
    const r = await scenario('hosts', 50, 5, { IOMMU_LIVEUPDATE_SYNC_FINALIZERS: '0' });
    expect(r.nativeFinalizers).toBe('event-loop');
    expect(r.count).toBe(50);
  });
});

// On an older Node the finalizers wait for the event loop, which these loops never let turn.
describe.skipIf(!gcFinalizersSafe(process.versions.node))('memory that comes back, in loops that never yield', () => {
  it('10,000 small hosts (guestmemfs carve-out, a device on a persistent iommufd) created and dropped', { timeout: 180_000 }, async () => {
    const r = await scenario('hosts', 10_000, 300);
    expect(r.nativeFinalizers).toBe('gc');
    expect(r.rssEnd - r.rssStart, `RSS grew ${grew(r)}`).toBeLessThan(BOUND);
  });

  it('1,000 live updates of one host', { timeout: 180_000 }, async () => {
    const r = await scenario('updates', 1000, 50);
    expect(r.generation).toBe(1050);
    expect(r.generations).toBe(1051);
    expect(r.rssEnd - r.rssStart, `RSS grew ${grew(r)}`).toBeLessThan(BOUND);
  });

  it('100,000 alloc + write + free cycles leave no frame storage', { timeout: 120_000 }, async () => {
    const r = await scenario('frames', 100_000, 2000);
    expect(r.stats).toMatchObject({ framesAllocated: 0, framesResident: 0, hostBytes: 0 });
    expect(r.rssEnd - r.rssStart, `RSS grew ${grew(r)}`).toBeLessThan(BOUND);
  });

  it('decodeFdt of a 35 KB blob, 3,000 times', { timeout: 120_000 }, async () => {
    const r = await scenario('fdt', 3000, 200);
    expect(r.blobBytes).toBeGreaterThan(35_000);
    expect(r.rssEnd - r.rssStart, `RSS grew ${grew(r)}`).toBeLessThan(BOUND);
  });
});

describe('hostBytes', () => {
  it('is 0 for an untouched memory and again once every written frame is freed', () => {
    const mem = new PhysicalMemory({ size: 2n << 30n, seed: 9 });
    expect(mem.stats().hostBytes).toBe(0);
    const page = new Uint8Array(4096).fill(7);
    const pas = Array.from({ length: 300 }, (_, i) => {
      const pa = mem.alloc(i % 3, { zero: i % 2 === 0 });
      mem.write(pa, page);
      return [pa, i % 3] as const;
    });
    const s = mem.stats();
    expect(s.framesResident).toBe(300);
    expect(s.hostBytes).toBeGreaterThanOrEqual(300 * 4096);
    for (const [pa, order] of pas) mem.free(pa, order);
    expect(mem.stats()).toMatchObject({ framesResident: 0, framesAllocated: 0, hostBytes: 0 });
    // Freed memory reads as poison without keeping a byte of it.
    expect(mem.read(pas[0]![0], 4)).toEqual(new Uint8Array([0x6b, 0x6b, 0x6b, 0x6b]));
  });
});
