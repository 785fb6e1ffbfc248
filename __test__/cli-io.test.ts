// The `iommu-liveupdate` command and its file descriptors: a reader that closes stdout early.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from './cli-helpers.js';

let tmp: string;
let blob: string;
beforeAll(async () => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'iommu-liveupdate-cli-io-'));
  blob = join(tmp, 'kho.dtb');
  const r = await runCli(['simulate', '--quiet', '--guest-mem', '256M', '--dump-kho', blob]);
  expect(r.code).toBe(0);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const SMALL = ['--guest-mem', '256M'];

describe('a reader that closes stdout early (| head -1)', () => {
  it.concurrent.each([
    [['simulate', ...SMALL], 0],
    [['simulate', '--json', ...SMALL], 0],
    [['simulate', '--quiet', ...SMALL], 0],
    // The run's own verdict survives the closed pipe.
    [['simulate', ...SMALL, '--no-kho'], 1],
    [['inspect', '<blob>'], 0],
    [['inspect', '--json', '<blob>'], 0],
    [['simulate', '--help'], 0],
    [['--help'], 0],
    [['--version'], 0],
  ])('%j: no stack trace, nothing on stderr, exit %i', async (args, code) => {
    const r = await runCli(args.map((a) => (a === '<blob>' ? blob : a)), {}, ['stdout']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(code);
  });

  it('a closed stderr does not change the exit code of a usage error either', async () => {
    const r = await runCli(['simulate', '--vms', 'two'], {}, ['stdout', 'stderr']);
    expect(r.code).toBe(2);
  });
});
