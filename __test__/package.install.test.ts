// A release as a user gets it: `npm run release:pack` makes the main and the linux-x64-gnu
// tarballs; a scratch project installs both with no Rust toolchain on PATH (so nothing can be
// built from source) and runs the README's first example there.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readmePrograms, tidy, TS } from './readme-blocks.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'iommu-liveupdate-pack-'));
const scratch = join(work, 'scratch');

/** PATH without any directory that holds cargo or rustc. */
const pathWithoutRust = (process.env.PATH ?? '')
  .split(delimiter)
  .filter((d) => d && !['cargo', 'rustc'].some((tool) => existsSync(join(d, tool))))
  .join(delimiter);
const env = { ...process.env, PATH: pathWithoutRust, CARGO: undefined, npm_config_prefer_offline: 'true' };

/** The README's first program and what it prints; TypeScript is transpiled for the scratch project, which has no tsx. */
function firstReadmeExample(): { code: string; stdout: string | undefined } {
  const [first] = readmePrograms(readFileSync(join(root, 'README.md'), 'utf8'));
  if (!first) throw new Error('README.md has no program block');
  const code = TS.includes(first.lang)
    ? ts.transpileModule(first.code, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText
    : first.code;
  return { code, stdout: first.stdout };
}

let tarballs: string[] = [];
let installLog = '';

beforeAll(() => {
  tarballs = execFileSync(process.execPath, ['scripts/release-pack.mjs', '--out', join(work, 'release')], { cwd: root, encoding: 'utf8' })
    .trim()
    .split('\n');
  execFileSync('mkdir', ['-p', scratch]);
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
  const res = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--foreground-scripts', ...tarballs], { cwd: scratch, env, encoding: 'utf8' });
  installLog = `${res.stdout}${res.stderr}`;
  if (res.status !== 0) throw new Error(`npm install failed (${res.status}):\n${installLog}`);
}, 240_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('release tarballs, installed with no Rust toolchain', () => {
  it('packs the main package and one package per built platform, the main one naming it as an optional dependency', () => {
    expect(tarballs.map((t) => t.slice(t.lastIndexOf('/') + 1))).toEqual(['iommu-liveupdate-linux-x64-gnu-0.1.0.tgz', 'iommu-liveupdate-0.1.0.tgz']);
    const installed = JSON.parse(readFileSync(join(scratch, 'node_modules/iommu-liveupdate/package.json'), 'utf8')) as {
      optionalDependencies?: Record<string, string>;
    };
    expect(installed.optionalDependencies).toEqual({ 'iommu-liveupdate-linux-x64-gnu': '0.1.0' });
    // The repository's own package.json names no package that exists only once published.
    expect(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).optionalDependencies).toBeUndefined();
  });

  it('installs the prebuilt binary: no cargo run, no target/ and no binary of its own in node_modules', () => {
    expect(spawnSync('cargo', ['--version'], { env }).error).toMatchObject({ code: 'ENOENT' });
    expect(installLog).toContain('[build-native] using the prebuilt iommu-liveupdate-linux-x64-gnu@0.1.0');
    const pkgDir = join(scratch, 'node_modules/iommu-liveupdate');
    expect(existsSync(join(pkgDir, 'target'))).toBe(false);
    expect(readdirSync(join(pkgDir, 'native')).sort()).toEqual(['index.cjs', 'index.d.cts']);
    expect(readdirSync(join(scratch, 'node_modules/iommu-liveupdate-linux-x64-gnu')).filter((f) => f.endsWith('.node'))).toEqual([
      'iommu-liveupdate.linux-x64-gnu.node',
    ]);
  });

  it("runs the README's first example and the fuzz entry point from the scratch project", () => {
    const { code, stdout } = firstReadmeExample();
    writeFileSync(join(scratch, 'example.mjs'), code);
    const example = spawnSync(process.execPath, ['example.mjs'], { cwd: scratch, env: { ...env, NO_COLOR: '1' }, encoding: 'utf8' });
    expect(example.stderr).toBe('');
    expect(example.status).toBe(0);
    expect(stdout).toBeDefined();
    expect(tidy(example.stdout)).toBe(tidy(stdout!));
    // ./fuzz imports fast-check: a dependency of the package, not only of its tests.
    const fuzz = spawnSync(process.execPath, ['--input-type=module', '-e', "import('iommu-liveupdate/fuzz').then((m) => console.log(Object.keys(m).length > 0))"], {
      cwd: scratch,
      env,
      encoding: 'utf8',
    });
    expect(fuzz.stderr).toBe('');
    expect(fuzz.stdout.trim()).toBe('true');
  });
});
