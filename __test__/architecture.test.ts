// The house rules, checked on the sources: data flows one way (no import cycle, no import from a
// lower layer to a higher one, type imports included), the kernel core names no subsystem, and
// no source file is past kernel size.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const files = (dir: string, ext: RegExp): string[] =>
  readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name), ext) : ext.test(e.name) ? [join(dir, e.name)] : []));

/** Every relative import and re-export of each ts/ file, `import type` included. */
function importGraph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of files('ts', /\.ts$/)) {
    const src = readFileSync(join(root, f), 'utf8');
    const deps = [...src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+'(\.[^']+)'/g)].map((m) => normalize(join(dirname(f), m[1]!)).replace(/\.js$/, '.ts'));
    g.set(f, [...new Set(deps)]);
  }
  return g;
}

/** The layer of a file: a file may import its own layer or lower ones only (native/ is the generated addon loader). */
function layer(f: string): number {
  if (f.startsWith('native/')) return -1;
  if (/^ts\/(native|native-check|native-kinds|errors)\.ts$|^ts\/(uapi|fdt)\//.test(f)) return 0;
  if (f.startsWith('ts/hw/')) return 1;
  if (f === 'ts/kernel/initcalls.ts' || f === 'ts/kernel/index.ts') return 3;
  if (f.startsWith('ts/kernel/')) return 2;
  if (f === 'ts/host.ts') return 4;
  return 5; // index.ts, the VMM helpers, fuzz/, cli/, oracle/
}

/** The kernel's subsystems: the core (kernel.ts, process.ts, file.ts, ...) imports none of them. */
const SUBSYSTEM = /^ts\/kernel\/(iommufd|intel-iommu|vfio|guestmemfs|liveupdate)\//;

describe('the house', () => {
  const g = importGraph();

  it('has no import cycle', () => {
    const index = new Map<string, number>();
    const low = new Map<string, number>();
    const stack: string[] = [];
    const cycles: string[][] = [];
    let next = 0;
    const visit = (v: string): void => {
      index.set(v, next);
      low.set(v, next++);
      stack.push(v);
      for (const w of g.get(v) ?? []) {
        if (!index.has(w)) {
          visit(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (stack.includes(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
      if (low.get(v) === index.get(v)) {
        const scc: string[] = [];
        let w: string;
        do scc.push((w = stack.pop()!));
        while (w !== v);
        if (scc.length > 1 || g.get(v)?.includes(v)) cycles.push(scc.sort());
      }
    };
    for (const f of g.keys()) if (!index.has(f)) visit(f);
    expect(cycles).toEqual([]);
  });

  it('imports only downwards: uapi/fdt < hw < kernel < initcalls < host < facade', () => {
    const up = [...g].flatMap(([f, deps]) => deps.filter((d) => layer(d) > layer(f)).map((d) => `${f} -> ${d}`));
    expect(up).toEqual([]);
  });

  it('keeps the kernel core free of subsystems', () => {
    const core = [...g].filter(([f]) => f.startsWith('ts/kernel/') && !SUBSYSTEM.test(f) && layer(f) === 2);
    const bad = core.flatMap(([f, deps]) => deps.filter((d) => SUBSYSTEM.test(d)).map((d) => `${f} -> ${d}`));
    expect(bad).toEqual([]);
  });

  it('has no source file past kernel size (600 lines)', () => {
    const big = [...files('ts', /\.ts$/), ...files('crates', /\.rs$/).filter((f) => f.includes('/src/') && !/\/tests?\.rs$|\/tests\//.test(f))]
      .map((f) => [relative(root, join(root, f)), readFileSync(join(root, f), 'utf8').split('\n').length] as const)
      .filter(([, n]) => n > 600);
    expect(big).toEqual([]);
  });
});
