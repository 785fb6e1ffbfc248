// `iommu-liveupdate simulate --flow luo|both` as a user runs it: the upstream flow's run (0 faults
// and 0 wrong bytes on the preserved devices, the unpreserved one blocked), its JSON, its KHO blob
// through `inspect`, the side-by-side comparison, and the exit codes of bad flags.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, runCli } from './cli-helpers.js';
import { mismatches, simulateLuoShape } from './cli-shape.js';

let tmp: string;
beforeAll(() => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'iommu-liveupdate-cli-luo-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const SMALL = ['--guest-mem', '256M'];

interface LuoDoc {
  flow: string;
  verdict: string;
  checks: { name: string; ok: boolean; detail: string }[];
  vms: { name: string; persistentId: number | null; session: string; file: string }[];
  devices: { bdf: string; persistent: boolean; faults: number; mismatches: number; pagesVerified: number; status: string; firstFault: { phase: string } | null }[];
  updates: { luo: { sessions: number; files: number; memfds: number; folios: number; devices: number }; blackout: { from: string; to: string; simNs: number; phases: { phase: string; costNs: number; work: Record<string, number> }[] }; dma: { byDevice: { bdf: string; faults: number; transactions: number }[] } }[];
  kho: { luo: { preservedData: string; blobSize: number } };
}

describe('iommu-liveupdate simulate --flow luo', () => {
  it('runs the upstream flow: preserved devices with 0 faults and 0 wrong bytes through 2 updates, the unpreserved one blocked', async () => {
    const r = await runCli(['simulate', '--flow', 'luo', ...SMALL, '--kexecs', '2']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^iommu-liveupdate simulate --flow luo: 64 GiB host \(kho=on liveupdate=on\), guest RAM in sealed memfds, seed 0$/m);
    expect(r.stdout).toMatch(/^ {2}vm0 {2}256 MiB at IOVA 0x100000000, 2 MiB pages, memfd:vm0-ram in LUO session vm0: 0000:01:00\.0 nvme, 0000:02:00\.0 nic$/m);
    expect(r.stdout).toMatch(/^ {2}preserved {3}2 sessions: 8 files \(2 sealed memfds of 256 folios, 2 iommufds, 4 VFIO devices\)$/m);
    expect(r.stdout).toMatch(/^ {2}blackout {4}[\d.]+ ms simulated \(end of luo-preserve → end of luo-finish\)/m);
    for (const phase of ['luo-serialise', 'luo-freeze', 'kho-finalise', 'luo-retrieve', 'vmm-reattach', 'luo-finish']) expect(r.stdout).toMatch(new RegExp(`^ {4}${phase} +[\\d.]+ ms`, 'm'));
    expect(r.stdout).toMatch(/0000:05:00\.0 {2}host {2}nic {3}not preserved .* blocked from shutdown/);
    expect(r.stdout).toMatch(/^PASS: 4 preserved devices kept DMA going through 2 live updates with no fault or mismatch; the unpreserved device was blocked from shutdown on$/m);
  });

  it('--json: the schemaVersion 1 document with flow "luo", the sessions instead of persistent iommufds, and the LUO blackout', async () => {
    const r = await runCli(['simulate', '--flow', 'luo', '--json', ...SMALL]);
    expect(r.code).toBe(0);
    const raw = JSON.parse(r.stdout) as unknown;
    expect(mismatches(raw, simulateLuoShape())).toEqual([]);
    const doc = raw as LuoDoc;
    expect(doc.flow).toBe('luo');
    expect(doc.verdict).toBe('pass');
    expect(doc.vms.map((v) => [v.persistentId, v.session, v.file])).toEqual([
      [null, 'vm0', 'memfd:vm0-ram'],
      [null, 'vm1', 'memfd:vm1-ram'],
    ]);
    const persistent = doc.devices.filter((d) => d.persistent);
    expect(persistent).toHaveLength(4);
    for (const d of persistent) expect([d.faults, d.mismatches, d.status, d.pagesVerified > 0]).toEqual([0, 0, 'ok', true]);
    const host = doc.devices.find((d) => !d.persistent)!;
    expect([host.status, host.firstFault?.phase, host.faults > 0]).toEqual(['blocked', 'shutdown', true]);
    const u = doc.updates[0]!;
    expect(u.luo).toMatchObject({ sessions: 2, files: 8, memfds: 2, folios: 256, devices: 4 });
    expect([u.blackout.from, u.blackout.to]).toEqual(['luo-preserve', 'luo-finish']);
    const phases = u.blackout.phases.map((p) => p.phase);
    expect(phases.slice(0, 4)).toEqual(['luo-serialise', 'luo-freeze', 'kho-finalise', 'shutdown']);
    expect(phases.filter((p) => p === 'luo-retrieve')).toHaveLength(2 * (1 + 2 + 2)); // a session, its memfd, iommufd and 2 devices, per VM
    expect(phases.slice(-3)).toEqual(['vmm-reattach', 'luo-finish', 'luo-finish']);
    expect(u.blackout.phases.reduce((n, p) => n + p.costNs, 0)).toBe(u.blackout.simNs);
    expect(u.blackout.phases.find((p) => p.phase === 'luo-freeze')!.work).toEqual({ files: 8, folios: 256 });
    expect(u.dma.byDevice.filter((d) => persistent.some((x) => x.bdf === d.bdf)).every((d) => d.faults === 0 && d.transactions > 0)).toBe(true);
    expect(doc.kho.luo.blobSize).toBeGreaterThan(0);
  });

  it('--dump-kho writes the LUO flow\'s blob and inspect shows its LUO node', async () => {
    const file = join(tmp, 'luo.dtb');
    const r = await runCli(['simulate', '--flow', 'luo', ...SMALL, '--quiet', '--dump-kho', file]);
    expect(r.code).toBe(0);
    expect(readFileSync(file).length).toBeGreaterThan(0);
    const inspect = await runCli(['inspect', file]);
    expect(inspect.code).toBe(0);
    expect(inspect.stdout).toMatch(/^\tLUO \{$/m);
    expect(inspect.stdout).toMatch(/^LUO \(upstream live update\): struct luo_ser at 0x[0-9a-f]+ \(preserved-data\), \d+ bytes \(blob-size\)/m);
    const json = JSON.parse((await runCli(['inspect', '--json', file])).stdout) as { blob: { luo: { preservedData: string; blobSize: string } } };
    expect(json.blob.luo.preservedData).toMatch(/^0x[0-9a-f]+$/);
  });

  it('--no-kho: nothing is preserved, the checks fail, exit 1', async () => {
    const r = await runCli(['simulate', '--flow', 'luo', ...SMALL, '--no-kho', '--quiet']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^FAIL: /);
  });

  it('a bad --flow is a usage error (exit 2); --flow both takes no --report or --dump-kho', async () => {
    const bad = await runCli(['simulate', '--flow', 'upstream']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/argument 'upstream' is invalid\. Allowed choices are rfc, luo, both\./);
    const both = await runCli(['simulate', '--flow', 'both', '--report', join(tmp, 'r.html')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^error: --report takes one flow's run: use --flow rfc or --flow luo$/m);
  });
});

describe('iommu-liveupdate simulate --flow both', () => {
  it('runs the same workload through each flow and prints them side by side, in text and JSON', async () => {
    const r = await runCli(['simulate', '--flow', 'both', ...SMALL]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^live update 1, blackout phase by phase \(simulated, cost model\):$/m);
    expect(r.stdout).toMatch(/^ {2}luo-freeze +- +[\d.]+ ms$/m);
    expect(r.stdout).toMatch(/^ {2}boot +800\.000 ms +800\.000 ms$/m);
    expect(r.stdout).toMatch(/^faults, persistent devices +0 +0$/m);
    expect(r.stdout).toMatch(/^PASS: rfc pass, luo pass; blackout of live update 1: rfc [\d.]+ ms, luo [\d.]+ ms \(simulated\)$/m);
    const j = await runCli(['simulate', '--flow', 'both', '--json', ...SMALL]);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout) as { schemaVersion: number; flow: string; verdict: string; comparison: { flows: { flow: string; blackout: { simMs: number }; faults: { persistent: number }; bytesVerified: number }[]; phases: { phase: string }[] }; runs: { rfc: { flow: string }; luo: { flow: string } } };
    expect([doc.schemaVersion, doc.flow, doc.verdict, doc.runs.rfc.flow, doc.runs.luo.flow]).toEqual([1, 'both', 'pass', 'rfc', 'luo']);
    expect(doc.comparison.flows.map((f) => [f.flow, f.faults.persistent, f.bytesVerified > 0, f.blackout.simMs > 0])).toEqual([
      ['rfc', 0, true, true],
      ['luo', 0, true, true],
    ]);
    expect(doc.comparison.phases.map((p) => p.phase)).toContain('kho-finalise');
  });
});
