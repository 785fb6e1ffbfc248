// A native boundary that never aborts and never guesses (issue 17): every entry point of the addon
// and of the hardware facade, called with arbitrary JavaScript values in child processes
// (__test__/native-boundary.child.mjs), never kills the process, and every error it throws has a
// documented code (NATIVE_ERROR_CODES) and a message. One child runs the bare addon, unchecked:
// Rust's own defences, and its caps against those ts/native-kinds.ts documents.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CACHE_ENTRIES_MAX,
  Host,
  IommuUnit,
  NATIVE_ERROR_CODES,
  PhysicalMemory,
  READ_MAX,
  type IommuUnitOptions,
} from 'iommu-liveupdate';
import { native } from '../ts/native.js';
import { NATIVE_SPECS, specEntryPoints } from '../ts/native-check.js';
import { ensureBuilt, root } from './cli-helpers.js';

/** Generated calls per entry point per child: about 75,000 calls in all (16,500 per checked child). */
const RUNS = 100;
const CHECKED_CHILDREN = 4;

interface ChildReport {
  mode: 'checked' | 'bare';
  seed: number;
  calls: number;
  exercised: Record<string, number>;
  codes: Record<string, number>;
  violations: string[];
  bindingEntryPoints?: string[];
  specEntryPoints?: string[];
  facadeEntryPoints?: string[];
  caps?: Record<string, string | string[]>;
}
interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  report: ChildReport | null;
  lastCall: string;
  ms: number;
}

function child(mode: 'checked' | 'bare', seed: number): Promise<ChildRun> {
  const t0 = Date.now();
  return new Promise((done) => {
    const env = { ...process.env, RUST_BACKTRACE: '0' };
    execFile(process.execPath, [join(root, '__test__', 'native-boundary.child.mjs'), mode, String(seed), String(RUNS)], { cwd: root, env, maxBuffer: 1 << 26 }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number; signal?: NodeJS.Signals }) | null;
      let report: ChildReport | null = null;
      try {
        report = JSON.parse(stdout.trim().split('\n').pop()!) as ChildReport;
      } catch {
        // Died before reporting: the exit status and the last call say why.
      }
      const lastCall = stderr.trimEnd().split('\n').slice(-3).join(' / ');
      done({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, report, lastCall, ms: Date.now() - t0 });
    });
  });
}

const thrown = (f: () => unknown): Error & { code?: string } => {
  try {
    f();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('did not throw');
};

describe('the native boundary under arbitrary arguments', () => {
  it('no call kills a child, every error has a documented code and a message, every entry point is exercised', async () => {
    ensureBuilt();
    const seed = Date.now() % 1_000_000;
    const t0 = Date.now();
    const runs = await Promise.all([
      ...Array.from({ length: CHECKED_CHILDREN }, (_, i) => child('checked', seed + i)),
      child('bare', seed + CHECKED_CHILDREN),
    ]);
    const wallMs = Date.now() - t0;
    for (const r of runs) {
      const who = `child seed ${r.report?.seed ?? '?'} (last calls: ${r.lastCall})`;
      expect({ code: r.code, signal: r.signal }, who).toEqual({ code: 0, signal: null });
      expect(r.report, who).not.toBeNull();
      expect(r.report!.violations, `seed ${r.report!.seed} ${r.report!.mode}`).toEqual([]);
    }
    const reports = runs.map((r) => r.report!);
    const calls = reports.reduce((n, r) => n + r.calls, 0);
    expect(calls).toBeGreaterThanOrEqual(10_000);

    // The entry points the addon has (read from its prototypes at run time) are the table's,
    // and each checked child called every one of them and every facade entry point.
    for (const r of reports.filter((x) => x.mode === 'checked')) {
      expect([...r.bindingEntryPoints!].sort()).toEqual([...r.specEntryPoints!].sort());
      const want = [...r.bindingEntryPoints!, ...r.facadeEntryPoints!].sort();
      expect(Object.keys(r.exercised).sort()).toEqual(want);
      for (const e of want) expect(r.exercised[e], e).toBeGreaterThanOrEqual(RUNS);
    }
    const bare = reports.find((r) => r.mode === 'bare')!;
    expect(Object.keys(bare.exercised).sort()).toEqual(specEntryPoints(NATIVE_SPECS).sort());
    // Rust refuses past the same caps, without the JavaScript checks.
    expect(bare.caps).toEqual({
      iotlbEntries: ['ok', 'ERR_VTD_CONFIG'],
      iotlbEntriesMinus1: 'ERR_VTD_CONFIG',
      iotlbWays: ['ok', 'ERR_VTD_CONFIG'],
      pscEntries: 'ERR_VTD_CONFIG',
      contextCacheEntries: 'ERR_VTD_CONFIG',
      read: ['ERR_PHYSMEM_RANGE', 'ERR_OUT_OF_RANGE'],
      maxSize: ['ok', 'ERR_OUT_OF_RANGE'],
      blob: ['ok', 'ERR_OUT_OF_RANGE'],
      placeholder: ['ok', 'FDT_ERR_NOSPACE'],
    });
    const codes = [...new Set(reports.flatMap((r) => (r.mode === 'checked' ? Object.keys(r.codes) : [])))].sort();
    console.log(`[boundary] ${calls} generated calls in ${runs.length} children, ${wallMs} ms wall (children ${runs.map((r) => r.ms).join(', ')} ms); codes seen: ${codes.join(', ')}`);
  });

  it('NATIVE_ERROR_CODES names every code the crates define', () => {
    const defined = new Set<string>();
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.rs') && !/tests?\.rs$/.test(e.name)) for (const m of readFileSync(p, 'utf8').matchAll(/"((?:ERR|FDT_ERR)_[A-Z_]+)"/g)) defined.add(m[1]!);
      }
    };
    for (const c of ['physmem', 'vtd', 'binding']) walk(join(root, 'crates', c, 'src'));
    for (const m of readFileSync(join(root, 'crates', 'fdt', 'src', 'error.rs'), 'utf8').matchAll(/(FDT_ERR_[A-Z]+)/g)) defined.add(m[1]!);
    expect(defined.size).toBeGreaterThan(30);
    expect([...defined].filter((c) => !NATIVE_ERROR_CODES.includes(c))).toEqual([]);
  });
});

describe('what the new user ran into (issue 17)', () => {
  const mem = new PhysicalMemory({ size: 1n << 30n });
  const unit = new IommuUnit(mem);

  it('cache sizes beyond their cap are ERR_OUT_OF_RANGE naming the cap, never an abort or a silent 0', () => {
    for (const v of [-1, 1e12, 2 ** 32, CACHE_ENTRIES_MAX + 1, 1.5, NaN]) {
      const e = thrown(() => new IommuUnit(mem, { iotlbEntries: v }));
      expect(e).toBeInstanceOf(RangeError);
      expect(e.code).toBe('ERR_OUT_OF_RANGE');
      expect(e.message).toBe(`The value of "options.iotlbEntries" is out of range. It must be an integer >= 0 && <= 65536. Received ${v}`);
    }
    expect(new IommuUnit(mem, { iotlbEntries: CACHE_ENTRIES_MAX, iotlbWays: 1024 }).cacheOccupancy().iotlbCapacity).toBe(CACHE_ENTRIES_MAX);
    const e = thrown(() => new IommuUnit(mem, { pagingStructureCacheEntries: 'x' as never }));
    expect([e.constructor, e.code, e.message]).toEqual([TypeError, 'ERR_INVALID_ARG_TYPE', `The "options.pagingStructureCacheEntries" property must be of type number. Received type string ('x')`]);
    expect(thrown(() => new IommuUnit(mem, { superpages: ['toString' as never] })).code).toBe('ERR_INVALID_ARG_VALUE');
  });

  it('read lengths, orders and requester ids are integers in range', () => {
    expect(thrown(() => mem.read(0n, 2 ** 40)).message).toBe('The value of "n" is out of range. It must be an integer >= 0 && <= 1073741824. Received 1099511627776');
    expect(thrown(() => mem.read(0n, NaN)).code).toBe('ERR_OUT_OF_RANGE');
    expect(thrown(() => mem.read(0n, READ_MAX + 1)).code).toBe('ERR_OUT_OF_RANGE');
    expect(thrown(() => mem.alloc(1.5)).code).toBe('ERR_OUT_OF_RANGE');
    expect(thrown(() => mem.free(0x1000n, 1.5)).message).toBe('The value of "order" is out of range. It must be an integer >= 0 && <= 18. Received 1.5');
    const io = new BigUint64Array(1);
    for (const sid of [1.5, NaN, -1, 0x1_0000]) {
      expect(thrown(() => unit.translate(sid, io, io.slice(), { write: false })).code).toBe('ERR_OUT_OF_RANGE');
      expect(thrown(() => unit.translateOne(sid, 0n)).code).toBe('ERR_OUT_OF_RANGE');
    }
  });

  it('a memory or a host of the wrong type says which argument, in a message', () => {
    const e = thrown(() => new PhysicalMemory({ size: 4096 as never }));
    expect([e.constructor, e.code, e.message]).toEqual([TypeError, 'ERR_INVALID_ARG_TYPE', 'The "options.size" property must be of type bigint. Received type number (4096)']);
    const h = thrown(() => Host.boot({ memory: (1 << 30) as never }));
    expect([h.code, h.message]).toEqual(['ERR_INVALID_ARG_TYPE', 'The "config.memory" property must be of type bigint. Received type number (1073741824)']);
    expect(thrown(() => new PhysicalMemory({ size: 1n << 20n, seed: 'abc' as never })).message).toBe(
      `The "options.seed" property must be of type bigint or number. Received type string ('abc')`,
    );
    expect(thrown(() => Host.boot({ memory: 1n << 30n, iommu: { iotlbEntries: -1 } as IommuUnitOptions })).message).toMatch(/^The value of "config\.iommu\.iotlbEntries" is out of range/);
    expect(thrown(() => Host.boot({ memory: 1n << 30n, devices: [{ bdf: 7 as never }] })).message).toMatch(/^The "config\.devices\[0\]\.bdf" property must be of type string/);
  });

  it('wrong types never leak napi-rs status names or an empty message', () => {
    const cases: (() => unknown)[] = [
      () => mem.read('x' as never, 1),
      () => mem.alloc(0, { zero: 'x' as never }),
      () => mem.write(0n, [1, 2] as never),
      () => native.fdtKhoRoot('a', 'b', 'c', 0n, ['x'], [1 as never], 'libfdt'),
      () => native.NativeMemory.prototype.readU64.call({} as never, 0n),
      () => new native.NativeUnit(Object.create(native.NativeMemory.prototype) as never, {}),
      () => (native.NativeMemory as unknown as (s: bigint, t: bigint) => unknown)(1n << 20n, 0n),
    ];
    for (const f of cases) {
      const e = thrown(f);
      expect(e.message).not.toBe('');
      expect(['ERR_INVALID_ARG_TYPE', 'ERR_INVALID_THIS', 'ERR_CONSTRUCT_CALL_REQUIRED']).toContain(e.code);
    }
  });
});
