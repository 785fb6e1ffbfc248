import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { version } from 'iommu-liveupdate';

const root = fileURLToPath(new URL('..', import.meta.url));

describe('package', () => {
  it('native version matches package.json', async () => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(version).toBe(pkg.version);
  });

  // Outside vitest (no alias): proves the `exports` self-reference and the built dist/ + addon load.
  it('resolves by name from plain node via package exports', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', "import('iommu-liveupdate').then(m => console.log(typeof m.version))"],
      { cwd: root },
    );
    expect(stdout.trim()).toBe('string');
  });

  it('exports the FDT facade from dist', async () => {
    const script =
      "import('iommu-liveupdate').then(({ FdtWriter, decodeFdt, FdtError }) => {" +
      "  const blob = new FdtWriter().beginNode('').propertyU32('a', 1).endNode().finish();" +
      "  try { decodeFdt(blob.subarray(0, 8)); } catch (e) { console.log(decodeFdt(blob).properties[0].name, e instanceof FdtError, e.code, e.offset); }" +
      '})';
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd: root });
    expect(stdout.trim()).toBe('a true FDT_ERR_TRUNCATED 8');
  });

  // package.json says MIT; the text itself ships at the root (npm packs LICENSE whatever `files` says).
  it('has the MIT LICENSE that package.json names', async () => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { license: string };
    const text = await readFile(new URL('../LICENSE', import.meta.url), 'utf8');
    expect(pkg.license).toBe('MIT');
    expect(text).toMatch(/^MIT License\n\nCopyright \(c\) 2026 iommu-liveupdate contributors\n/);
    expect(text).toContain('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND');
  });
});
