// scripts/setup.mjs (`npm run setup`) in its report-only mode (`--check`: it never runs apt-get
// here): one line when the tools are there; the missing ones, why the tests need them and the
// install line when they are not; a typo in the opt-out is an error, not a silent no-op.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { root } from './cli-helpers.js';
import { SKIP_TOOLS_ENV, needTools } from './host-tools.js';

const INSTALL_LINE = 'sudo apt-get install -y device-tree-compiler libfdt-dev chromium';

function setup(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, ['scripts/setup.mjs', ...args], { cwd: root, encoding: 'utf8', env: { ...process.env, [SKIP_TOOLS_ENV]: '', ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('npm run setup --check', () => {
  it('every tool present: one line on stdout, exit 0', (ctx) => {
    needTools(ctx, 'dtc', 'libfdt', 'chromium');
    const r = setup(['--check']);
    expect(r.err).toBe('');
    expect(r.out).toBe('setup: dtc, libfdt, chromium present, nothing to install\n');
    expect(r.code).toBe(0);
  });

  it('a PATH without dtc or cc: both reported with why, the install line, exit 1', () => {
    const bin = mkdtempSync(join(tmpdir(), 'setup-path-'));
    try {
      symlinkSync(process.execPath, join(bin, 'node'));
      const r = setup(['--check', 'dtc', 'libfdt'], { PATH: bin });
      expect(r.code).toBe(1);
      expect(r.out).toBe('');
      expect(r.err).toContain('dtc (device-tree-compiler): dtc is not on PATH; the FDT tests decompile');
      expect(r.err).toContain('libfdt (libfdt-dev, build-essential): no C compiler (cc)');
      expect(r.err).toContain(`\n  ${INSTALL_LINE} build-essential\n`);
      expect(r.err).toContain(`${SKIP_TOOLS_ENV}=dtc,libfdt to skip the tests that need them`);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it(`${SKIP_TOOLS_ENV} leaves tools out; an unknown name is exit 2`, (ctx) => {
    needTools(ctx, 'dtc', 'libfdt');
    expect(setup(['--check'], { [SKIP_TOOLS_ENV]: 'chromium' }).out).toBe(`setup: dtc, libfdt present, nothing to install (chromium skipped by ${SKIP_TOOLS_ENV})\n`);
    const bad = setup(['--check'], { [SKIP_TOOLS_ENV]: 'dtc,chromum' });
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/unknown tool "chromum": the tools are dtc, libfdt, chromium/);
  });
});
