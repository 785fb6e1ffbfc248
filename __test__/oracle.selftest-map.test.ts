// oracle/upstream/selftest-map.json against the upstream selftest run recorded in the lab
// (oracle/upstream/iommufd-selftest.txt) and against our test files, so that the map cannot rot:
// every upstream case is either ported or listed as not ported, every ported one ran and passed
// upstream (unless the map says why not), and every test the map names exists.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string): string => readFileSync(join(root, path), 'utf8');

interface Ported {
  file: string;
  test: string;
  upstream: string[];
  difference?: string;
  note?: string;
  /** Why a mapped upstream case that did not pass (fail or skip) in the recorded run is mapped anyway. */
  upstreamNotPassing?: string;
}
interface SelftestMap {
  kernel: string;
  source: string;
  tap: string;
  fixtures: Record<string, string>;
  ported: Ported[];
  own: { file: string; test: string; note: string }[];
  notPorted: { reason: string; upstream: string[] }[];
  summary: { upstream: number; ported: number; portedWithDifference: number; notPorted: number };
}

const map = JSON.parse(read('oracle/upstream/selftest-map.json')) as SelftestMap;
/** The selftest port: every test in it must be in the map. */
const SELFTEST_FILE = '__test__/iommufd.selftest.test.ts';

type Result = 'pass' | 'fail' | 'skip';

/** The TAP result lines of the recorded run: `ok N name`, `not ok N name`, `ok N name # SKIP ...`. */
function parseTap(text: string): { header: string; plan: number; results: Map<string, Result>; totals: string } {
  const lines = text.split('\n');
  const results = new Map<string, Result>();
  let plan = -1;
  for (const line of lines) {
    const p = /^1\.\.(\d+)$/.exec(line);
    if (p) plan = Number(p[1]);
    const m = /^(not )?ok \d+ (\S+)( # SKIP\b.*)?$/.exec(line);
    if (!m) continue;
    expect(results.has(m[2]!), `${m[2]} reported twice`).toBe(false);
    results.set(m[2]!, m[1] ? 'fail' : m[3] ? 'skip' : 'pass');
  }
  return { header: lines[0]!, plan, results, totals: lines.find((l) => l.startsWith('# Totals:')) ?? '' };
}

const tap = parseTap(read(map.tap));
const upstreamNames = [...tap.results.keys()];

/** The recorded names a map name stands for: `*` matches one dot-separated part. */
function expand(pattern: string): string[] {
  const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^.]+')}$`);
  return upstreamNames.filter((n) => re.test(n));
}

/** JavaScript string-literal escapes, as far as test titles use them. */
const unescape = (s: string): string => s.replace(/\\(u\{[0-9a-fA-F]+\}|u[0-9a-fA-F]{4}|.)/g, (_, e: string) => (e[0] === 'u' ? String.fromCodePoint(parseInt(e.replace(/[u{}]/g, ''), 16)) : e === 'n' ? '\n' : e));

/**
 * The titles of `it(...)` (and it.skip/only/todo/fails) in a test file, read as text: a quoted
 * title literally, a template literal as a pattern in which each `${...}` matches any text.
 */
function itTitles(path: string): { literal: Set<string>; templates: { source: string; re: RegExp }[] } {
  const text = read(path);
  const literal = new Set<string>();
  const templates: { source: string; re: RegExp }[] = [];
  const re = /\bit(?:\.(?:skip|only|todo|fails))?\(\s*(?:'((?:\\.|[^'\\\n])*)'|"((?:\\.|[^"\\\n])*)"|`((?:\\.|\$\{[^}]*\}|[^`\\])*)`)/g;
  for (const m of text.matchAll(re)) {
    const quoted = m[1] ?? m[2];
    if (quoted !== undefined) {
      literal.add(unescape(quoted));
      continue;
    }
    const source = m[3]!;
    const parts = source.split(/\$\{[^}]*\}/);
    if (parts.length === 1) literal.add(unescape(source));
    else templates.push({ source, re: new RegExp(`^${parts.map((s) => unescape(s).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.+?')}$`) });
  }
  return { literal, templates };
}

const titleCache = new Map<string, ReturnType<typeof itTitles>>();
const titlesOf = (file: string) => titleCache.get(file) ?? titleCache.set(file, itTitles(file)).get(file)!;

/** Whether `title` is a test of `file`; returns the template it instantiates, if any. */
function findTitle(file: string, title: string): { found: boolean; template?: string } {
  const t = titlesOf(file);
  if (t.literal.has(title)) return { found: true };
  const tpl = t.templates.find((x) => x.re.test(title));
  return tpl ? { found: true, template: tpl.source } : { found: false };
}

describe('oracle/upstream/selftest-map.json', () => {
  it('the recorded run is whole: 246 cases as planned, its totals line agrees, and it is the kernel the map names', () => {
    expect(tap.plan).toBe(246);
    expect(tap.results.size).toBe(tap.plan);
    const count = (r: Result) => [...tap.results.values()].filter((v) => v === r).length;
    expect(tap.totals).toBe(`# Totals: pass:${count('pass')} fail:${count('fail')} xfail:0 xpass:0 skip:${count('skip')} error:0`);
    expect(tap.header).toContain(`Linux ${map.kernel} `);
    expect(map.source).toBe('tools/testing/selftests/iommu/iommufd.c');
  });

  it('every upstream name of the map exists in the recorded run', () => {
    const names = [...map.ported.flatMap((e) => e.upstream), ...map.notPorted.flatMap((g) => g.upstream)];
    for (const n of names) expect(expand(n), `${n} matches no case of the recorded run`).not.toEqual([]);
    for (const key of Object.keys(map.fixtures)) {
      expect(expand(`${key}.*`), `fixture ${key} matches no case`).not.toEqual([]);
    }
  });

  it('every upstream case is either ported or listed as not ported, never both, and every not-ported group says why', () => {
    const ported = new Set(map.ported.flatMap((e) => e.upstream.flatMap(expand)));
    const notPorted = new Map<string, number>();
    map.notPorted.forEach((g, i) => {
      expect(g.reason.trim(), `group ${i} has no reason`).not.toBe('');
      for (const n of g.upstream.flatMap(expand)) {
        expect(notPorted.get(n), `${n} is in two not-ported groups`).toBeUndefined();
        notPorted.set(n, i);
      }
    });
    for (const n of upstreamNames) {
      expect(ported.has(n) || notPorted.has(n), `${n} is neither ported nor listed as not ported`).toBe(true);
      expect(ported.has(n) && notPorted.has(n), `${n} is both ported and listed as not ported`).toBe(false);
    }
  });

  it('no ported case failed or was skipped upstream unless its entry says why', () => {
    for (const e of map.ported) {
      const bad = e.upstream.flatMap(expand).filter((n) => tap.results.get(n) !== 'pass');
      if (bad.length) expect(e.upstreamNotPassing?.trim(), `${e.test} ports ${bad.join(', ')}, which did not pass upstream`).toBeTruthy();
    }
  });

  it('every test the map names exists in our test files', () => {
    for (const e of [...map.ported, ...map.own]) {
      expect(findTitle(e.file, e.test).found, `${e.file}: no it(${JSON.stringify(e.test)})`).toBe(true);
    }
    for (const e of map.ported) {
      for (const s of [e.difference, e.note]) if (s !== undefined) expect(s.trim(), `${e.test}: empty difference or note`).not.toBe('');
    }
  });

  it(`every test of ${SELFTEST_FILE} is in the map, as a port or as our own`, () => {
    const named = [...map.ported, ...map.own].filter((e) => e.file === SELFTEST_FILE).map((e) => e.test);
    const { literal, templates } = titlesOf(SELFTEST_FILE);
    for (const title of literal) expect(named, `${JSON.stringify(title)} is not in the map`).toContain(title);
    for (const t of templates) expect(named.some((n) => t.re.test(n)), `no title of the map instantiates \`${t.source}\``).toBe(true);
    // Our own tests port nothing: they must not also be listed as ports.
    const ports = new Set(map.ported.map((e) => `${e.file}\0${e.test}`));
    for (const e of map.own) expect(ports.has(`${e.file}\0${e.test}`), `${e.test} is both a port and our own`).toBe(false);
  });

  it('the summary counts what the map says', () => {
    const ported = new Set(map.ported.flatMap((e) => e.upstream.flatMap(expand)));
    const different = new Set(map.ported.filter((e) => e.difference).flatMap((e) => e.upstream.flatMap(expand)));
    expect(map.summary).toEqual({
      upstream: upstreamNames.length,
      ported: ported.size,
      portedWithDifference: different.size,
      notPorted: upstreamNames.length - ported.size,
    });
  });
});
