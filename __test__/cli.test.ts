// The `iommu-liveupdate` command as a user runs it: exit codes, the --json document, flag
// validation and `inspect` on the blobs `simulate --dump-kho` writes (and on broken ones).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_COSTS, FdtWriter } from 'iommu-liveupdate';
import { ensureBuilt, runCli } from './cli-helpers.js';
import { mismatches, SIMULATE_V1 } from './cli-shape.js';

let tmp: string;
beforeAll(() => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'iommu-liveupdate-cli-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// Small scenarios keep the suite quick; the default run is exercised once, as `npm start` runs it.
const SMALL = ['--guest-mem', '256M'];


interface Doc {
  verdict: string;
  config: { vms: number; kexecs: number };
  checks: { name: string; ok: boolean; detail: string }[];
  vms: { name: string; iommuPageSize: string; persistentId: number }[];
  devices: { bdf: string; vm: string | null; persistent: boolean; faults: number; mismatches: number; pagesVerified: number; status: string; steps: { timelineIndex: number; phase: string }[] }[];
  updates: { index: number; kho: { blobBytes: number; mappings: number; mappedBytes: number; domains: number; pageTablePages: number }; blackout: { from: string; simNs: number; fromIndex: number; toIndex: number; phases: { phase: string; costNs: number }[] }; dma: { transactions: number; byDevice: { bdf: string; faults: number; transactions: number }[] } }[];
  kho: { domains: { tablePages: number; devices: string[] }[]; areas: { bytes: number }[] };
  timeline: { generation: number; phase: string; simNs: number; costNs: number }[];
  costModel: Record<string, number>;
}

describe('iommu-liveupdate simulate', () => {
  it('runs the default scenario with no flags: summary on stdout, exit 0, stderr silent off a terminal', async () => {
    const r = await runCli(['simulate']);
    expect(r.stderr).toBe(''); // no progress, no colour: stderr is a pipe
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/\x1b\[/);
    expect(r.stdout).toMatch(/^iommu-liveupdate simulate: 64 GiB host, 16 GiB guestmemfs carve-out/);
    expect(r.stdout).toMatch(/^ {2}vm0 {2}4 GiB at IOVA 0x100000000, 2 MiB pages, persistent iommufd 1: 0000:01:00\.0 nvme, 0000:02:00\.0 nic$/m);
    expect(r.stdout).toMatch(/^ {2}vm1 {2}4 GiB at IOVA 0x100000000, 2 MiB pages, persistent iommufd 2: 0000:03:00\.0 nvme, 0000:04:00\.0 nic$/m);
    expect(r.stdout).toMatch(/^ {2}preserved {3}2 mappings \(8 GiB\) in 2 IOASes of 2 persistent iommufds\n {14}2 domains: \d+ page-table pages/m);
    expect(r.stdout).toMatch(/KHO blob {4}[\d,]+ bytes/);
    // The README's sample: the default cost model on the default scenario, phase by phase.
    expect(r.stdout).toMatch(/blackout {4}1031\.2 ms simulated \(end of kho-dump → end of vmm-reattach\), [\d.]+ ms wall\n/);
    expect(r.stdout).toContain(
      [
        '    shutdown          30.1 ms  1 device shut down, 4 devices kept',
        '    jump              15.0 ms',
        '    early-boot       169.6 ms  48.0 GiB reclaimed, 19 preserved blocks (16.0 GiB), 1,575-byte FDT',
        '    iommu-init        10.1 ms  2 domains, 12 table pages, 4 devices attached',
        '    iommufd-restore    5.0 ms  2 mappings, 12 table pages',
        '    boot             800.0 ms',
        '    vmm-reattach       1.4 ms  4 devices attached',
      ].join('\n'),
    );
    expect(r.stdout).toMatch(/^ {2}DMA {9}during update 1: [\d,]+ transactions \([\d.]+ MiB\)$/m);
    expect(r.stdout).toMatch(/^ {2}faults {6}during update 1: 0 on 4 persistent devices, [\d,]+ on 1 non-persistent device \(blocked\)$/m);
    expect(r.stdout).toMatch(/^DMA per device, whole run:\ndevice {8}vm {4}kind  iommufd {9}transactions {4}bytes  faults  status$/m);
    expect(r.stdout).toMatch(/0000:05:00\.0 {2}host {2}nic {3}non-persistent .* blocked from shutdown/);
    expect(r.stdout).toMatch(/^checks: \d+ passed, 0 failed$/m);
    expect(r.stdout).toMatch(/^PASS: 4 persistent devices kept DMA going through 1 live update/m);
  });

  it('--json prints one schemaVersion 1 document whose numbers add up (2 updates, mixed page sizes)', async () => {
    const r = await runCli(['simulate', '--json', ...SMALL, '--kexecs', '2', '--page-size', 'mixed', '--seed', '0x2a']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const raw = JSON.parse(r.stdout) as unknown;
    expect(mismatches(raw, SIMULATE_V1)).toEqual([]);
    const doc = raw as Doc;
    expect(doc.verdict).toBe('pass');
    expect(doc.costModel).toEqual({ ...DEFAULT_COSTS });
    expect(doc.checks.length).toBeGreaterThan(0);
    expect(doc.checks.every((c) => c.ok)).toBe(true);
    expect(doc.vms.map((v) => v.iommuPageSize)).toEqual(['2m', '4k']);
    expect(doc.vms.map((v) => v.persistentId)).toEqual([1, 2]);
    // 256 MiB as 4 KiB pages needs 128 leaf tables; as 2 MiB pages a handful.
    const [d2m, d4k] = doc.kho.domains;
    expect(d4k!.tablePages).toBeGreaterThan(128);
    expect(d2m!.tablePages).toBeLessThan(8);
    expect(doc.kho.areas.map((a) => a.bytes)).toEqual([256 << 20, 256 << 20]);
    expect(doc.updates).toHaveLength(2);
    for (const u of doc.updates) {
      const from = doc.timeline[u.blackout.fromIndex]!, to = doc.timeline[u.blackout.toIndex]!;
      expect(from.phase).toBe('kho-dump');
      expect(to.phase).toBe('vmm-reattach');
      expect(to.generation).toBe(from.generation + 1);
      expect(u.blackout.simNs).toBe(to.simNs - from.simNs);
      // The blackout is the sum of its phases' costs, each the timeline entry's.
      expect(u.blackout.phases.map((p) => p.phase)).toEqual(doc.timeline.slice(u.blackout.fromIndex + 1, u.blackout.toIndex + 1).map((e) => e.phase));
      expect(u.blackout.phases.reduce((n, p) => n + p.costNs, 0)).toBe(u.blackout.simNs);
      expect(u.kho.mappings).toBe(2);
      expect(u.kho.domains).toBe(2);
      expect(u.dma.transactions).toBe(u.dma.byDevice.reduce((n, d) => n + d.transactions, 0));
    }
    for (const d of doc.devices) {
      if (d.persistent) {
        expect([d.faults, d.mismatches, d.status]).toEqual([0, 0, 'ok']);
        expect(d.pagesVerified).toBeGreaterThan(0);
      } else {
        expect(d.status).toBe('blocked');
        expect(d.faults).toBeGreaterThan(0);
      }
      // Every burst lines up with the timeline entry it ran after.
      for (const s of d.steps) expect(doc.timeline[s.timelineIndex]!.phase).toBe(s.phase);
    }
  });

  it('says which window every DMA and fault count covers: during update N, or the whole run', async () => {
    const args = [...SMALL, '--kexecs', '2', '--vms', '1'];
    const [text, json] = await Promise.all([runCli(['simulate', ...args]), runCli(['simulate', '--json', ...args])]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^ {2}DMA {9}during update 1: /m);
    expect(text.stdout).toMatch(/^ {2}faults {6}during update 1: /m);
    expect(text.stdout).toMatch(/^all 2 live updates \(DMA and faults: during each update\):$/m);
    expect(text.stdout).toMatch(/^DMA per device, whole run:$/m);
    // The labels say what was counted: each count is the sum of the steps in its window.
    type Step = { timelineIndex: number; pagesWritten: number; pagesVerified: number; faults: number; mismatches: number };
    type Window = { label: string; fromIndex: number; toIndex: number };
    const doc = JSON.parse(json.stdout) as {
      timeline: unknown[];
      checks: { detail: string }[];
      devices: { bdf: string; countWindow: Window; faults: number; transactions: number; steps: Step[] }[];
      updates: { index: number; blackout: { fromIndex: number; toIndex: number }; dma: { countWindow: Window; faults: number; transactions: number } }[];
    };
    const inside = (w: Window) => (s: Step) => s.timelineIndex >= w.fromIndex && s.timelineIndex <= w.toIndex;
    const tx = (s: Step) => s.pagesWritten + s.pagesVerified + s.mismatches + s.faults;
    const sum = (steps: Step[], f: (s: Step) => number) => steps.reduce((n, s) => n + f(s), 0);
    for (const d of doc.devices) {
      expect(d.countWindow).toEqual({ label: 'whole run', fromIndex: d.steps[0]!.timelineIndex, toIndex: doc.timeline.length - 1 });
      const steps = d.steps.filter(inside(d.countWindow));
      expect([d.faults, d.transactions]).toEqual([sum(steps, (s) => s.faults), sum(steps, tx)]);
    }
    for (const u of doc.updates) {
      expect(u.dma.countWindow).toEqual({ label: `during update ${u.index}`, fromIndex: u.blackout.fromIndex, toIndex: u.blackout.toIndex });
      const steps = doc.devices.flatMap((d) => d.steps.filter(inside(u.dma.countWindow)));
      expect([u.dma.faults, u.dma.transactions]).toEqual([sum(steps, (s) => s.faults), sum(steps, tx)]);
    }
    expect(doc.checks.filter((c) => / pages verified over the whole run; /.test(c.detail))).toHaveLength(2); // one per persistent device
    // The two windows differ: the whole run's faults are more than one update's.
    const host = doc.devices.find((d) => d.faults > 0)!;
    expect(host.faults).toBeGreaterThan(doc.updates[0]!.dma.faults);
  });

  it('--quiet prints only the verdict line', async () => {
    const r = await runCli(['simulate', '--quiet', ...SMALL, '--vms', '1', '--devices', '1']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^PASS: 1 persistent device kept DMA going through 1 live update[^\n]*\n$/);
  });

  // Every noun the CLI counts, in the plural: none of them may follow a lone 1.
  const ONE_PLURAL = /(?<![\d,.])1 (?:persist\w+ |non-persistent )?(?:mappings|IOASes|iommufds|domains|page-table pages|root\/context table pages|ranges|devices|live updates|checks|areas|faults|mismatches|pages|bytes|transactions|blocks)\b/;

  it('counts one of a thing in the singular: 1 mapping, 1 IOAS, 1 device (--vms 1 --devices 1)', async () => {
    const file = join(tmp, 'one.dtb');
    const r = await runCli(['simulate', ...SMALL, '--vms', '1', '--devices', '1', '--dump-kho', file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}preserved {3}1 mapping \(256 MiB\) in 1 IOAS of 1 persistent iommufd\n {14}1 domain: \d+ page-table pages/m);
    expect(r.stdout).toMatch(/^ {2}faults {6}during update 1: 0 on 1 persistent device, [\d,]+ on 1 non-persistent device \(blocked\)/m);
    expect(r.stdout).toMatch(/^PASS: 1 persistent device kept DMA going through 1 live update /m);
    const json = await runCli(['simulate', '--json', ...SMALL, '--vms', '1', '--devices', '1']);
    const details = (JSON.parse(json.stdout) as Doc).checks.map((c) => c.detail);
    expect(details).toContain('fd 4, IOAS 1, 1/1 device attached');
    const inspect = await runCli(['inspect', file]);
    expect(inspect.stdout).toMatch(/^ {2}1 persisted iommufd, 1 IOAS, 1 area \(256 MiB mapped\), 1 domain with \d+ page-table pages$/m);
    for (const text of [r.stdout, r.stderr, ...details, inspect.stdout]) expect(text).not.toMatch(ONE_PLURAL);
  });

  it('exits 1 when a check fails: kexec without KHO (--no-kho) loses the persistent devices', async () => {
    const r = await runCli(['simulate', '--json', ...SMALL, '--no-kho']);
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout) as Doc;
    expect(mismatches(doc, SIMULATE_V1)).toEqual([]);
    expect(doc.verdict).toBe('fail');
    expect(doc.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(
      expect.arrayContaining(['update 1: vm0 re-claims iommufd 1', '0000:01:00.0 (vm0 nvme): DMA through every live update']),
    );
    expect(doc.devices.filter((d) => d.persistent).every((d) => d.status === 'failed' && d.faults > 0)).toBe(true);
    expect(doc.updates[0]!.kho.blobBytes).toBe(0);
    const text = await runCli(['simulate', ...SMALL, '--no-kho']);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/^FAIL: \d+ of \d+ checks failed/m);
  });

  it.concurrent.each([
    [['--vms', 'two'], /option '--vms <n>' argument 'two' is invalid\. --vms takes a whole number/],
    [['--vms', '1.5'], /--vms takes a whole number/],
    [['--devices', '-1'], /--devices takes a whole number/],
    [['--kexecs', '1e3'], /--kexecs takes a whole number/],
    [['--kexecs', '0'], /--kexecs must be at least 1/],
    [['--vms', '0'], /--vms must be at least 1/],
    [['--guest-mem', '4X'], /--guest-mem takes a size like 4G, 512M/],
    [['--guest-mem', '3M'], /--guest-mem 3 MiB: .* multiple of 2M/],
    [['--guest-mem', '2M'], /too small for 2 devices/],
    [['--vms', '5', '--guestmemfs', '16G'], /--vms 5 × --guest-mem 4 GiB = 20 GiB does not fit --guestmemfs 16 GiB \(16,372 MiB usable: 2 MiB go to the superblock and 2 MiB to each file's block map\); raise --guestmemfs to 21G or lower --vms or --guest-mem$/m],
    [['--vms', '2', '--guest-mem', '8190M', '--guestmemfs', '16G'], /= 16,380 MiB does not fit --guestmemfs 16 GiB \(16,378 MiB usable/],
    [['--vms', '2', '--guest-mem', '8G', '--guestmemfs', '16G'], /= 16 GiB does not fit --guestmemfs 16 GiB .*; raise --guestmemfs to 17G/],
    [['--vms', '16', '--guest-mem', '8G', '--host-mem', '64G'], /--vms 16 × --guest-mem 8 GiB need 128 GiB \+ 34 MiB of guestmemfs carve-out, which with the host's own 4 GiB below it does not fit --host-mem 64 GiB; raise --host-mem to 133G or lower --vms or --guest-mem$/m],
    [['--host-mem', '60G', '--guestmemfs', '58G'], /--guestmemfs 58 GiB with the host's own 4 GiB below it does not fit --host-mem 60 GiB; raise --host-mem to 62G or lower --guestmemfs$/m],
    [['--host-mem', '2G'], /need 8,198 MiB of guestmemfs carve-out, which with .* does not fit --host-mem 2 GiB; raise --host-mem to 13G/],
    [['--guestmemfs', '3M'], /--guestmemfs 3 MiB: the carve-out is whole 2 MiB guestmemfs blocks; give a non-zero multiple of 2M/],
    [['--guestmemfs', '17T'], /--guestmemfs 17 TiB: at most 16 TiB/],
    [['--vms', '200', '--devices', '1', '--guest-mem', '512G'], /need 100 TiB \+ 402 MiB of guestmemfs carve-out, more than the largest carve-out \(16 TiB\)/],
    [['--host-mem', '5000'], /--host-mem 5,000 B: host memory is whole 4 KiB frames; give a non-zero multiple of 4K/],
    [['--host-mem', '257T'], /--host-mem 257 TiB: at most 256 TiB/],
    [['--host-mem', '64X'], /--host-mem takes a size like 4G, 512M/],
    [['--guestmemfs', 'lots'], /--guestmemfs takes a size like 4G, 512M/],
    [['--vms', '100', '--devices', '3', '--guest-mem', '64M'], /needs 301 PCI buses/],
    [['--page-size', '1g'], /argument '1g' is invalid\. Allowed choices are 4k, 2m, mixed/],
    [['--seed', 'abc'], /--seed takes an unsigned 64-bit integer/],
    [['--seed', '0x10000000000000000'], /--seed takes an unsigned 64-bit integer/],
    [['--bogus'], /unknown option '--bogus'/],
    [['--report', '/nonexistent-dir/report.html'], /--report \/nonexistent-dir\/report\.html: directory \/nonexistent-dir does not exist/],
    [['--dump-kho', '/nonexistent-dir/kho.dtb'], /--dump-kho .*does not exist/],
    [['--no-kho', '--dump-kho', 'x.dtb'], /--dump-kho needs KHO/],
  ])('rejects simulate %j with exit code 2 and says why', async (args, message) => {
    const r = await runCli(['simulate', ...args]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: /);
    expect(r.stderr).toMatch(message);
  });

  it('--vms 16 --guest-mem 8G just works: the carve-out and the host grow to hold it, and stderr says so', async () => {
    const r = await runCli(['simulate', '--json', '--vms', '16', '--guest-mem', '8G']);
    expect(r.stderr).toBe(
      "note: --vms 16 × --guest-mem 8 GiB need 128 GiB + 34 MiB of guestmemfs carve-out, more than the default 16 GiB: using --guestmemfs 129G; a 129 GiB carve-out and the host's own 4 GiB need more than the default 64 GiB host: using --host-mem 133G\n",
    );
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as Doc & { config: { hostMemoryBytes: number; guestmemfsBytes: number } };
    expect([doc.config.guestmemfsBytes, doc.config.hostMemoryBytes]).toEqual([129 * 2 ** 30, 133 * 2 ** 30]);
    expect(doc.verdict).toBe('pass');
  });

  it.concurrent.each([
    // Both given: taken as they are, nothing to say.
    [['--host-mem', '8G', '--guestmemfs', '2G', '--vms', '1', '--guest-mem', '1G'], '8 GiB host, 2 GiB guestmemfs carve-out', ''],
    // A small host: the default carve-out shrinks to what the host leaves.
    [['--host-mem', '8G', '--vms', '1', '--guest-mem', '1G'], '8 GiB host, 4 GiB guestmemfs carve-out', "note: the default 16 GiB guestmemfs carve-out and the host's own 4 GiB do not fit --host-mem 8 GiB: using --guestmemfs 4G\n"],
    // A big carve-out: the default host grows to hold it.
    [['--guestmemfs', '100G', ...SMALL], '104 GiB host, 100 GiB guestmemfs carve-out', "note: a 100 GiB carve-out and the host's own 4 GiB need more than the default 64 GiB host: using --host-mem 104G\n"],
    [['--host-mem', '1T', '--guestmemfs', '512M', ...SMALL, '--vms', '1'], '1 TiB host, 512 MiB guestmemfs carve-out', ''],
  ])('simulate %j runs on the memory it was given or chose', async (args, sizes, note) => {
    const r = await runCli(['simulate', ...args]);
    expect(r.stderr).toBe(note);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^iommu-liveupdate simulate: ${sizes}, seed 0\n`));
    const quiet = await runCli(['simulate', '--quiet', ...args]);
    expect([quiet.code, quiet.stderr]).toEqual([0, '']);
  });

  it('answers --help and --version with exit 0, and no command or an unknown one with exit 2', async () => {
    const help = await runCli(['simulate', '--help']);
    expect(help.code).toBe(0);
    for (const flag of ['--vms', '--guest-mem', '--host-mem', '--guestmemfs', '--devices', '--page-size', '--kexecs', '--seed', '--json', '--report', '--dump-kho', '--quiet']) expect(help.stdout).toContain(flag);
    const v = await runCli(['--version']);
    expect([v.code, v.stdout.trim()]).toEqual([0, JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version]);
    const none = await runCli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/Usage: iommu-liveupdate/);
    const unknown = await runCli(['simulat']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command 'simulat'/);
  });
});

describe('iommu-liveupdate inspect', () => {
  let blob: Uint8Array;
  let simulated: Doc;
  beforeAll(async () => {
    const file = join(tmp, 'kho.dtb');
    const r = await runCli(['simulate', '--json', ...SMALL, '--page-size', 'mixed', '--dump-kho', file]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/wrote the KHO blob of live update 1 to .*kho\.dtb \([\d,]+ bytes/);
    simulated = JSON.parse(r.stdout) as Doc;
    blob = readFileSync(file);
  });

  it('prints the blob --dump-kho wrote as DTS, then the persisted iommufds, IOASes, areas and domains', async () => {
    expect(blob.length).toBe(simulated.updates[0]!.kho.blobBytes);
    const r = await runCli(['inspect', join(tmp, 'kho.dtb')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^\/dts-v1\/;\n\n\/ \{\n\tcompatible = "kho-v1";/);
    expect(r.stdout).toMatch(/iommufd \{\n\t\tcompatible = "iommufd-v0";/);
    // After the tree: little-endian values decoded.
    expect(r.stdout).toMatch(/^KHO handover: [\d,]+ bytes, FDT version 17, compatible "kho-v1"$/m);
    expect(r.stdout).toMatch(/^ {2}2 persisted iommufds, 2 IOASes, 2 areas \(512 MiB mapped\), 2 domains with [\d,]+ page-table pages$/m);
    expect(r.stdout).toMatch(/^ {2}iommufd 1\n {4}IOAS 1: domains \[0\], pinned guestmemfs inodes \[\d+\]\n {6}area 0: IOVA 0x100000000-0x10fffffff \(256 MiB\) RW\+CACHE → ino \d+ \+0x0 \(256 MiB\)$/m);
    expect(r.stdout).toMatch(/^ {2}domain 0: persistent id 1, did \d+, pgd 0x[0-9a-f]+, 4-level, \d+ page-table pages, devices 01:00\.0 02:00\.0$/m);
    expect(r.stdout).toMatch(/^ {2}domain 1: persistent id 2, .* devices 03:00\.0 04:00\.0$/m);
    expect(r.stdout).toMatch(/^guestmemfs \(guestmemfs-v0\): base 0x[0-9a-f]+, 8,192 blocks of 2 MiB \(16 GiB\)$/m);
  });

  it('--json agrees with what simulate reported for the same blob', async () => {
    const r = await runCli(['inspect', '--json', join(tmp, 'kho.dtb')]);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as { schemaVersion: number; command: string; blob: { bytes: number; totals: Record<string, number | string>; intel: { domains: { devices: string[] }[] } } };
    expect([doc.schemaVersion, doc.command]).toEqual([1, 'inspect']);
    const k = simulated.updates[0]!.kho;
    expect(doc.blob.bytes).toBe(k.blobBytes);
    expect(doc.blob.totals).toMatchObject({ areas: k.mappings, domains: k.domains, pageTablePages: k.pageTablePages, mappedBytes: `0x${k.mappedBytes.toString(16)}` });
    expect(doc.blob.intel.domains.map((d) => d.devices)).toEqual(simulated.kho.domains.map((d) => d.devices));
  });

  const corrupt = (name: string, f: (b: Uint8Array) => Uint8Array) => {
    const file = join(tmp, name);
    writeFileSync(file, f(new Uint8Array(blob)));
    return file;
  };

  it.each([
    ['bad magic', (b: Uint8Array) => ((b[0] = 0x2f), b), /is not a valid flattened device tree: FDT_ERR_BADMAGIC at offset 0x0/],
    ['truncated', (b: Uint8Array) => b.subarray(0, 100), /FDT_ERR_TRUNCATED/],
    ['empty', () => new Uint8Array(0), /FDT_ERR_TRUNCATED/],
    // The first structure token of the root (FDT_BEGIN_NODE) turned into garbage.
    ['bad structure token', (b: Uint8Array) => {
      const off = new DataView(b.buffer, b.byteOffset).getUint32(8);
      b[off + 3] = 0x7f;
      return b;
    }, /FDT_ERR_(BADSTRUCTURE|BADSTATE|BADOFFSET)/],
  ])('fails on a %s blob with exit code 1 and libfdt\'s error', async (name, f, message) => {
    const r = await runCli(['inspect', corrupt(`${name.replace(/ /g, '-')}.dtb`, f)]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
  });

  it('prints a valid FDT that is not a KHO tree, then fails with exit code 1', async () => {
    const file = join(tmp, 'not-kho.dtb');
    writeFileSync(file, new FdtWriter().beginNode('').propertyString('compatible', 'acme,board').endNode().finish());
    const r = await runCli(['inspect', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/compatible = "acme,board";/);
    expect(r.stderr).toMatch(/is a valid FDT but not a KHO handover this tool can read: \/compatible: "acme,board" is not kho-v1/);
  });

  it('names the property when a KHO value has the wrong width (u64 LE stored in 4 bytes)', async () => {
    const w = new FdtWriter({ layout: 'libfdt' });
    w.beginNode('').propertyString('compatible', 'kho-v1');
    w.beginNode('iommufd').propertyString('compatible', 'iommufd-v0').beginNode('iommufds').beginNode('1').beginNode('ioases').beginNode('1');
    w.property('domains', new Uint8Array(4)).property('pinned-files', new Uint8Array(8));
    w.beginNode('0').property('iova-start', new Uint8Array(4)).property('iova-len', new Uint8Array(8)).property('iommu-prot', new Uint8Array(4)).property('guestmemfs', new Uint8Array(0));
    for (let i = 0; i < 6; i++) w.endNode();
    const file = join(tmp, 'narrow.dtb');
    writeFileSync(file, w.endNode().finish());
    const r = await runCli(['inspect', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\/iommufd\/iommufds\/1\/ioases\/1\/0\/iova-start: 4 bytes, want 8 \(u64 LE\)/);
  });

  it('exits 2 for a file it cannot read', async () => {
    const r = await runCli(['inspect', join(tmp, 'missing.dtb')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: cannot read .*missing\.dtb: ENOENT/);
  });
});
