// The phase cost model: phases report their work, the model turns it into simulated time. The
// blackout grows with the work (mappings, table pages, memory to reclaim), a supplied constant
// changes exactly the phases that use it, the defaults are the README's table, bad constants are
// refused the Node way. Simulated time only: nothing here measures or asserts wall-clock time.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CostModel,
  DEFAULT_COSTS,
  Host,
  LUO_PHASES,
  O_WRONLY,
  PHASE_COSTS,
  PHASE_NS,
  WORK_FIELDS,
  createLuoVm,
  createPersistentVm,
  finishLuoVm,
  preserveLuoVm,
  reattachLuoVm,
  retrieveLuoVm,
  type CostConstants,
  type PhaseWork,
  type TimelineEntry,
} from 'iommu-liveupdate';
import { root } from './cli-helpers.js';

const MiB = 1n << 20n;
const GiB = 1n << 30n;
const BDF0 = '0000:01:00.0';
const BDF1 = '0000:02:00.0';

/**
 * Boots a host, builds one persistent VM over `ram` of guest RAM (4 KiB IOPTEs unless
 * `hugePages`), live-updates it (KHO DUMP through sysfs, kexec) and returns the host.
 */
function liveUpdate(opts: { memory?: bigint; ram?: bigint; hugePages?: boolean; costModel?: Partial<CostConstants> } = {}): Host {
  const host = Host.boot({ memory: opts.memory ?? 2n * GiB, cmdline: 'guestmemfs=256M', devices: [{ bdf: BDF0 }, { bdf: BDF1 }], costModel: opts.costModel });
  const init = host.kernel.spawn();
  init.mount('guestmemfs', '/mnt/guestmemfs');
  createPersistentVm(host, { ram: opts.ram ?? 8n * MiB, hugePages: opts.hugePages ?? false });
  init.write(init.open('/sys/kernel/kho/active', O_WRONLY), '1');
  host.kexec();
  return host;
}

/** The live update's entries: from kho-dump to the next kernel's boot. */
function update(host: Host): TimelineEntry[] {
  const from = host.timeline.findIndex((e) => e.phase === 'kho-dump');
  return host.timeline.slice(from);
}
/** The live update's entry of `phase` (each runs once in it). */
const entry = (host: Host, phase: string): TimelineEntry => update(host).find((e) => e.phase === phase)!;
/** The blackout as the CLI counts it without the VMM's re-attach: end of kho-dump → end of the next kernel's boot. */
const blackout = (host: Host): bigint => entry(host, 'boot').simNs - entry(host, 'kho-dump').simNs;

describe('the phase cost model', () => {
  it('the timeline keeps simNs and adds each phase\'s cost and work; simNs is the running sum of the costs', () => {
    const host = liveUpdate();
    let t = 0n;
    for (const e of host.timeline) {
      t += e.costNs;
      expect(e.simNs).toBe(t);
      expect(e.costNs).toBe(host.costModel.phaseNs(e.phase, e.work));
      expect(Object.keys(e.work).every((k) => (WORK_FIELDS as readonly string[]).includes(k))).toBe(true);
    }
    const u = update(host);
    expect(u.map((e) => e.phase)).toEqual(['kho-dump', 'shutdown', 'jump', 'early-boot', 'iommu-init', 'iommufd-restore', 'boot']);
    const w = Object.fromEntries(u.map((e) => [e.phase, e.work])) as Record<string, PhaseWork>;
    expect(w['kho-dump']!.preservedBlocks).toBeGreaterThan(0);
    expect(w['kho-dump']!.fdtBytes).toBeGreaterThan(0);
    expect(w.shutdown).toEqual({ devicesShutDown: 1, devicesKept: 1 });
    expect(w.jump).toEqual({});
    expect(w['early-boot']!.scrubbedBytes).toBeGreaterThan(Number(GiB));
    expect(w['early-boot']!.fdtBytes).toBe(w['kho-dump']!.fdtBytes);
    expect(w['iommu-init']).toMatchObject({ domains: 1, devicesAttached: 1 });
    expect(w['iommufd-restore']).toMatchObject({ mappings: 1, tablePages: w['iommu-init']!.tablePages });
  });

  it('the blackout grows with the mappings: 4 KiB IOPTEs over more guest RAM mean more table pages to preserve, adopt and verify', () => {
    const small = liveUpdate({ ram: 8n * MiB });
    const large = liveUpdate({ ram: 64n * MiB });
    const tp = (h: Host) => entry(h, 'iommu-init').work.tablePages!;
    expect(tp(large)).toBeGreaterThan(tp(small) + 20); // 64 MiB of 4 KiB IOPTEs: 32 leaf tables, 8 MiB: 4
    for (const phase of ['iommu-init', 'iommufd-restore']) expect(entry(large, phase).costNs).toBeGreaterThan(entry(small, phase).costNs);
    expect(entry(large, 'kho-dump').work.preservedBlocks).toBeGreaterThan(entry(small, 'kho-dump').work.preservedBlocks!);
    expect(entry(large, 'kho-dump').costNs).toBeGreaterThan(entry(small, 'kho-dump').costNs);
    // What the extra tables cost, exactly: the model's per-page constant, twice (adopt + verify).
    const extra = tp(large) - tp(small);
    expect(entry(large, 'iommu-init').costNs - entry(small, 'iommu-init').costNs).toBe(BigInt(Math.round(extra * DEFAULT_COSTS.tablePageNs)));
    expect(blackout(large)).toBeGreaterThan(blackout(small));
  });

  it('the blackout grows with the memory the next kernel reclaims (the scrubbed, unpreserved memory): early-boot', () => {
    const a = liveUpdate({ memory: 6n * GiB });
    const b = liveUpdate({ memory: 10n * GiB });
    const scrubbed = (h: Host) => entry(h, 'early-boot').work.scrubbedBytes!;
    expect(scrubbed(b) - scrubbed(a)).toBe(Number(4n * GiB));
    expect(entry(b, 'early-boot').costNs - entry(a, 'early-boot').costNs).toBe(BigInt(Math.round(4 * DEFAULT_COSTS.reclaimNsPerGiB)));
    for (const phase of ['shutdown', 'jump', 'iommu-init', 'iommufd-restore', 'boot']) expect(entry(b, phase).costNs).toBe(entry(a, phase).costNs);
    expect(blackout(b)).toBeGreaterThan(blackout(a));
  });

  it('a supplied constant changes exactly the phases that use it (each constant, on a recorded live update)', () => {
    const host = liveUpdate();
    const base = new CostModel();
    // The LUO phases do not run yet (their flow is being added): give them work of every kind.
    const every: PhaseWork = Object.fromEntries(WORK_FIELDS.map((k) => [k, 3])) as PhaseWork;
    const records = [...host.timeline.map((e) => ({ phase: e.phase, work: e.work })), ...Object.values(LUO_PHASES).map((phase) => ({ phase, work: every }))];
    for (const name of Object.keys(DEFAULT_COSTS) as (keyof CostConstants)[]) {
      const changed = new CostModel({ [name]: DEFAULT_COSTS[name] * 2 + 1_000 });
      const differs = new Set(records.filter((r) => changed.phaseNs(r.phase, r.work) !== base.phaseNs(r.phase, r.work)).map((r) => r.phase));
      const uses = new Set(
        records
          .filter((r) => {
            const p = PHASE_COSTS[r.phase];
            if (!p) return name === 'otherPhaseNs';
            return p.base === name || p.per.some((t) => t.constant === name && (r.work[t.field] ?? 0) > 0);
          })
          .map((r) => r.phase),
      );
      expect([name, [...differs].sort()]).toEqual([name, [...uses].sort()]);
    }
  });

  it('Host.boot({ costModel }) applies it: jumpNs moves only the jump, and every later simNs by the same amount', () => {
    const a = liveUpdate();
    const b = liveUpdate({ costModel: { jumpNs: 500e6 } });
    expect(b.costModel.constants.jumpNs).toBe(500e6);
    expect(b.costModel.constants.bootNs).toBe(DEFAULT_COSTS.bootNs);
    expect(b.timeline.map((e) => e.phase)).toEqual(a.timeline.map((e) => e.phase));
    b.timeline.forEach((e, i) => {
      const ea = a.timeline[i]!;
      expect(e.costNs - ea.costNs).toBe(e.phase === 'jump' ? 500_000_000n - BigInt(DEFAULT_COSTS.jumpNs) : 0n);
    });
    expect(blackout(b) - blackout(a)).toBe(485_000_000n);
  });

  it('the LUO phases have names and scale with sessions, files and folios', () => {
    const m = new CostModel();
    expect(Object.values(LUO_PHASES)).toEqual(['luo-serialise', 'luo-freeze', 'kho-finalise', 'luo-retrieve', 'luo-finish']);
    for (const phase of Object.values(LUO_PHASES)) expect(PHASE_COSTS[phase]).toBeDefined();
    expect(m.phaseNs('luo-freeze', { files: 10, folios: 1_000 })).toBe(BigInt(Math.round(DEFAULT_COSTS.luoFreezeNs + 10 * DEFAULT_COSTS.luoFileNs + 1_000 * DEFAULT_COSTS.folioSerialiseNs)));
    expect(m.phaseNs('luo-retrieve', { sessions: 2, files: 4, folios: 1 << 20 })).toBeGreaterThan(m.phaseNs('luo-retrieve', { sessions: 2, files: 4, folios: 1 << 10 }));
    expect(m.phaseNs('kho-finalise', { preservedBlocks: 1 << 20 })).toBe(BigInt(Math.round(DEFAULT_COSTS.khoFinaliseNs + (1 << 20) * DEFAULT_COSTS.preserveBlockNs)));
    expect(m.phaseNs('luo-finish', { sessions: 1, files: 3 })).toBe(BigInt(DEFAULT_COSTS.luoFinishNs + DEFAULT_COSTS.luoSessionNs + 3 * DEFAULT_COSTS.luoFileNs));
    // A phase the model does not name costs otherPhaseNs, whatever it reports.
    expect(m.phaseNs('guest-io', { files: 100 })).toBe(BigInt(DEFAULT_COSTS.otherPhaseNs));
  });

  it('the defaults are the README\'s table, constant by constant, and PHASE_NS is each phase\'s base', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const rows = [...readme.matchAll(/^\| `(\w+)` \| ([\d.,]+) (ns|µs|ms) \|/gm)].map((m) => [m[1]!, Number(m[2]!.replace(/,/g, '')) * { ns: 1, µs: 1e3, ms: 1e6 }[m[3] as 'ns' | 'µs' | 'ms']] as const);
    expect(Object.fromEntries(rows)).toEqual({ ...DEFAULT_COSTS });
    for (const [phase, p] of Object.entries(PHASE_COSTS)) expect(PHASE_NS[phase]).toBe(BigInt(DEFAULT_COSTS[p.base]));
  });

  it('refuses bad constants the Node way: unknown names, wrong types, non-finite or negative numbers', () => {
    const boot = (costModel: unknown) => () => Host.boot({ memory: 64n * MiB, costModel: costModel as Partial<CostConstants> });
    expect(boot({ jumpz: 1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', name: 'RangeError', message: expect.stringContaining("'costModel.jumpz' is not a cost constant") }));
    for (const v of [-1, NaN, Infinity, -Infinity, 2e15]) {
      expect(boot({ jumpNs: v })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', name: 'RangeError', message: expect.stringContaining('"costModel.jumpNs" is out of range') }));
    }
    for (const v of ['5', 5n, null, {}]) expect(boot({ jumpNs: v })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError' }));
    for (const v of [null, [], 3, 'x']) expect(boot(v)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError' }));
    expect(() => new CostModel({ bootNs: -0.5 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    // 0 is a cost like any other: a phase can be free.
    expect(new CostModel({ bootNs: 0 }).phaseNs('boot')).toBe(0n);
  });

  it('host.phase checks the work it is given', () => {
    const host = Host.boot({ memory: 64n * MiB });
    expect(() => host.phase('mine', 0, { bogus: 1 } as PhaseWork)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => host.phase('mine', 0, { files: -1 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => host.phase('mine', 0, { files: '1' } as unknown as PhaseWork)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const n = host.timeline.length;
    host.phase('luo-freeze', 0, { files: 2 });
    expect(host.timeline.length).toBe(n + 1);
    expect(host.timeline[n]!.costNs).toBe(BigInt(DEFAULT_COSTS.luoFreezeNs + 2 * DEFAULT_COSTS.luoFileNs));
  });

  describe('the upstream (LUO) flow', () => {
    /** A LUO host with one VM over `ram` of sealed memfd, preserved, kexec'd, retrieved, re-attached and finished. */
    function luoUpdate(ram: bigint, costModel?: Partial<CostConstants>): Host {
      const host = Host.boot({ memory: 4n * GiB, cmdline: 'kho=on liveupdate=on', devices: [{ bdf: BDF0 }], costModel });
      const saved = preserveLuoVm(createLuoVm(host, { ram, devices: [0] }), 'vm');
      host.phase('luo-preserve');
      host.kexec();
      const r = retrieveLuoVm(host, saved, { reattach: false, finish: false });
      reattachLuoVm(r);
      host.phase('vmm-reattach', undefined, { devicesAttached: r.devices.length });
      finishLuoVm(r);
      return host;
    }
    const luoPhases = (host: Host) => host.timeline.slice(host.timeline.findIndex((e) => e.phase === 'luo-preserve') + 1);
    const one = (host: Host, phase: string) => luoPhases(host).find((e) => e.phase === phase)!;
    /** The LUO blackout (README): from the start of luo-serialise (end of luo-preserve) to the end of the last luo-finish. */
    const luoBlackout = (host: Host) => luoPhases(host).at(-1)!.simNs - host.timeline.find((e) => e.phase === 'luo-preserve')!.simNs;

    it('the kernel reports serialise, freeze and KHO finalise at the reboot, retrieve and finish in the next kernel, with their work', () => {
      const host = luoUpdate(64n * MiB);
      expect(luoPhases(host).map((e) => e.phase)).toEqual([
        'luo-serialise', 'luo-freeze', 'kho-finalise', 'shutdown', 'jump', 'early-boot', 'iommu-init', 'iommufd-restore', 'boot',
        'luo-retrieve', 'luo-retrieve', 'luo-retrieve', 'luo-retrieve', 'vmm-reattach', 'luo-finish',
      ]);
      expect(one(host, 'luo-serialise').work).toEqual({ sessions: 1 });
      // memfd, iommufd, one device; the memfd's 64 MiB are 32 folios of 2 MiB.
      expect(one(host, 'luo-freeze').work).toEqual({ files: 3, folios: 32 });
      expect(one(host, 'kho-finalise').work.preservedBlocks).toBeGreaterThan(32);
      const retrieved = luoPhases(host).filter((e) => e.phase === 'luo-retrieve').map((e) => e.work);
      expect(retrieved).toEqual([{ sessions: 1 }, { files: 1, folios: 32 }, { files: 1, folios: 0 }, { files: 1, folios: 0 }]);
      expect(one(host, 'luo-finish').work).toEqual({ sessions: 1, files: 3 });
      expect(host.timeline.some((e) => e.phase === 'kho-dump')).toBe(false);
    });

    it('the blackout grows with the work: more memfd folios preserved, longer freeze, finalise and retrieve', () => {
      const small = luoUpdate(64n * MiB);
      const large = luoUpdate(1n * GiB);
      expect(one(large, 'luo-freeze').work.folios).toBe(512);
      for (const phase of ['luo-freeze', 'kho-finalise']) expect(one(large, phase).costNs).toBeGreaterThan(one(small, phase).costNs);
      const memfd = (h: Host) => luoPhases(h).filter((e) => e.phase === 'luo-retrieve')[1]!;
      expect(memfd(large).costNs - memfd(small).costNs).toBe(BigInt((512 - 32) * DEFAULT_COSTS.folioRestoreNs));
      const luoCost = (h: Host) => luoPhases(h).filter((e) => e.phase.startsWith('luo-') || e.phase === 'kho-finalise').reduce((n, e) => n + e.costNs, 0n);
      expect(luoCost(large)).toBeGreaterThan(luoCost(small));
      // The whole blackout too, once the memory the next kernel reclaims is held out of it: on one
      // host, preserving more leaves less to reclaim in early-boot, which outweighs the folios.
      expect(luoBlackout(luoUpdate(1n * GiB, { reclaimNsPerGiB: 0 }))).toBeGreaterThan(luoBlackout(luoUpdate(64n * MiB, { reclaimNsPerGiB: 0 })));
      expect(luoBlackout(large)).toBeLessThan(luoBlackout(small));
    });
  });
});
