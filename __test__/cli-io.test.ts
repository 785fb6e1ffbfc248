// The `iommu-liveupdate` command and its files: a reader that closes stdout early, output files
// (--report, --dump-kho) that cannot be written and --cost-model files that cannot be used,
// refused before the run.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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
  writeFileSync(join(tmp, 'a-file'), '');
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

describe('output files are checked before the run', () => {
  const asRoot = process.getuid?.() === 0;

  it.concurrent.each([
    // /proc takes no new files, even from root: the directory exists, the file cannot be made.
    ['--dump-kho', '/proc/iommu-liveupdate-kho.dtb', /^error: --dump-kho \/proc\/iommu-liveupdate-kho\.dtb: cannot create it in \/proc \(ENOENT: no such file or directory\)\n$/],
    // sysfs refuses creation with EACCES (EROFS where /sys is mounted read-only).
    ['--report', '/sys/iommu-liveupdate-report.html', /^error: --report \/sys\/iommu-liveupdate-report\.html: cannot create it in \/sys \((EACCES: permission denied|EROFS: read-only file system)\)\n$/],
    ['--dump-kho', '<tmp>/missing-dir/kho.dtb', /^error: --dump-kho .*\/missing-dir\/kho\.dtb: directory .*\/missing-dir does not exist \(ENOENT\)\n$/],
    ['--dump-kho', '<tmp>/a-file/kho.dtb', /^error: --dump-kho .*\/a-file\/kho\.dtb: .*\/a-file is not a directory \(ENOTDIR\)\n$/],
    ['--report', '<tmp>', /^error: --report .*: is a directory \(EISDIR\)\n$/],
  ])('%s %s: exit 2 at once, naming the flag, the path and the errno, with no run', async (flag, path, message) => {
    // Sixteen live updates would take a while: the refusal must come before any of them.
    const r = await runCli(['simulate', ...SMALL, '--kexecs', '16', flag, path.replace('<tmp>', tmp)]);
    expect(r.stderr).toMatch(message);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
  });

  it.skipIf(asRoot)('a directory without write permission: EACCES before the run (root is not bound by the mode)', async () => {
    const dir = join(tmp, 'read-only');
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o555);
    const r = await runCli(['simulate', ...SMALL, '--dump-kho', join(dir, 'kho.dtb')]);
    expect(r.stderr).toMatch(/^error: --dump-kho .*\/read-only\/kho\.dtb: cannot create it in .*\/read-only \(EACCES: permission denied\)\n$/);
    expect([r.code, r.stdout]).toEqual([2, '']);
  });

  it('--report and --dump-kho naming the same file is a usage error', async () => {
    const file = join(tmp, 'same.out');
    const r = await runCli(['simulate', ...SMALL, '--report', file, '--dump-kho', file]);
    expect(r.stderr).toMatch(/^error: --report and --dump-kho both name .*\/same\.out: give each its own file\n$/);
    expect([r.code, r.stdout]).toEqual([2, '']);
  });

  it('a write that still fails after the run (/dev/full) says so and fails the run', async () => {
    const r = await runCli(['simulate', '--quiet', ...SMALL, '--dump-kho', '/dev/full']);
    expect(r.stderr).toBe('error: --dump-kho /dev/full: cannot write it (ENOSPC: no space left on device)\n');
    expect(r.stdout).toMatch(/^PASS: /);
    expect(r.code).toBe(1);
  });

  it('the probe leaves nothing behind, and a good path is written after the run', async () => {
    const dir = join(tmp, 'probe');
    mkdirSync(dir);
    const refused = await runCli(['simulate', '--vms', '0', '--report', join(dir, 'r.html')]);
    expect(refused.code).toBe(2);
    expect(readdirSync(dir)).toEqual([]);
    const ok = await runCli(['simulate', '--quiet', ...SMALL, '--report', join(dir, 'r.html')]);
    expect(ok.code).toBe(0);
    expect(existsSync(join(dir, 'r.html'))).toBe(true);
  });
});

describe('--cost-model FILE.json', () => {
  const file = (name: string, text: string) => {
    const path = join(tmp, name);
    writeFileSync(path, text);
    return path;
  };

  it.concurrent.each([
    ['missing.json', null, /^error: --cost-model .*\/missing\.json: cannot read it \(ENOENT: no such file or directory\)\n$/],
    ['not-json.json', '{"jumpNs": ', /^error: --cost-model .*\/not-json\.json: not JSON \(.*\)\n$/],
    ['array.json', '[1, 2]', /^error: --cost-model .*: The "costModel" argument must be an object of cost constants \(ns\)\. Received an array \(ERR_INVALID_ARG_TYPE\)\n$/],
    ['unknown.json', '{"jumpz": 1}', /^error: --cost-model .*: The property 'costModel\.jumpz' is not a cost constant\. Known: khoDumpNs, .* \(ERR_INVALID_ARG_VALUE\)\n$/],
    ['negative.json', '{"jumpNs": -1}', /^error: --cost-model .*: The value of "costModel\.jumpNs" is out of range\. It must be a finite number of ns >= 0 && <= 1e15\. Received -1 \(ERR_OUT_OF_RANGE\)\n$/],
    ['huge.json', '{"bootNs": 1e400}', /is out of range\. .* Received Infinity \(ERR_OUT_OF_RANGE\)\n$/],
    ['string.json', '{"bootNs": "800ms"}', /The "costModel\.bootNs" property must be of type number \(ns\)\. Received type string \(ERR_INVALID_ARG_TYPE\)\n$/],
  ])('%s: exit 2 at once with the reason, no run', async (name, text, message) => {
    const path = text === null ? join(tmp, name) : file(name, text);
    const r = await runCli(['simulate', ...SMALL, '--kexecs', '16', '--cost-model', path]);
    expect(r.stderr).toMatch(message);
    expect([r.code, r.stdout]).toEqual([2, '']);
  });

  it('its constants replace the defaults: the JSON carries them and the blackout moves by exactly the change', async () => {
    const path = file('slow-kexec.json', JSON.stringify({ jumpNs: 500e6, reclaimNsPerGiB: 0 }));
    const [base, slow] = await Promise.all([runCli(['simulate', '--json', ...SMALL]), runCli(['simulate', '--json', ...SMALL, '--cost-model', path])]);
    expect([base.code, slow.code]).toEqual([0, 0]);
    type Doc = { costModel: Record<string, number>; updates: { blackout: { simNs: number; phases: { phase: string; costNs: number; work: { scrubbedBytes?: number } }[] } }[] };
    const a = JSON.parse(base.stdout) as Doc, b = JSON.parse(slow.stdout) as Doc;
    expect(b.costModel).toMatchObject({ jumpNs: 500e6, reclaimNsPerGiB: 0, bootNs: a.costModel.bootNs });
    const pa = a.updates[0]!.blackout.phases, pb = b.updates[0]!.blackout.phases;
    const reclaim = Math.round((pa.find((p) => p.phase === 'early-boot')!.work.scrubbedBytes! / 2 ** 30) * a.costModel.reclaimNsPerGiB!);
    expect(pb.map((p) => p.costNs - pa.find((q) => q.phase === p.phase)!.costNs)).toEqual(pb.map((p) => (p.phase === 'jump' ? 500e6 - a.costModel.jumpNs! : p.phase === 'early-boot' ? -reclaim : 0)));
    expect(b.updates[0]!.blackout.simNs - a.updates[0]!.blackout.simNs).toBe(500e6 - a.costModel.jumpNs! - reclaim);
  });
});
