// `simulate --report`: the page opens in headless Chromium (Debian's, driven by playwright-core)
// with no network, its charts and tables render, and a screenshot is kept in test-results/.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, root, runCli } from './cli-helpers.js';
import { needTools } from './host-tools.js';

const CHROMIUM = '/usr/bin/chromium';
type Box = { x: number; y: number; width: number; height: number };
const SCREENSHOT = join(root, 'test-results', 'cli-report.png');

let tmp: string;
beforeAll(() => {
  ensureBuilt();
  tmp = mkdtempSync(join(tmpdir(), 'iommu-liveupdate-report-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('simulate --report', () => {
  it('renders the timeline, per-device DMA and the handover tables in headless Chromium, offline', async (ctx) => {
    needTools(ctx, 'chromium');
    const file = join(tmp, 'report.html');
    const jsonRun = await runCli(['simulate', '--json', '--guest-mem', '256M', '--page-size', 'mixed', '--kexecs', '2', '--report', file]);
    expect(jsonRun.code).toBe(0);
    expect(jsonRun.stderr).toMatch(/wrote the report to /);
    const sim = JSON.parse(jsonRun.stdout) as {
      timeline: { phase: string }[];
      devices: { bdf: string; persistent: boolean }[];
      vms: unknown[];
      updates: { blackout: { fromIndex: number; toIndex: number } }[];
    };
    const html = readFileSync(file, 'utf8');
    // Self-contained: nothing to fetch.
    expect(html).not.toMatch(/<(link|img|iframe)\b|\bsrc=|https?:\/\//i);

    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      const requests: string[] = [];
      const errors: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(pathToFileURL(file).href);
      expect(await page.title()).toBe('iommu-liveupdate: live update report');
      expect(await page.locator('#verdict').textContent()).toMatch(/^PASS: (\d+) of \1 checks passed$/);

      // Timeline: one bar per phase, both blackout windows marked.
      const timeline = page.locator('#timeline-chart');
      await expect.poll(() => timeline.isVisible()).toBe(true);
      expect(await timeline.locator('rect.phase').count()).toBe(sim.timeline.length);
      expect(await timeline.locator('rect.blackout').count()).toBe(2);
      const box = await timeline.boundingBox();
      expect(box!.width).toBeGreaterThan(600);
      expect(box!.height).toBeGreaterThan(150);
      for (const name of ['kho-dump', 'shutdown', 'jump', 'iommufd-restore', 'vmm-reattach']) await expect.poll(() => timeline.getByText(name, { exact: true }).count()).toBe(1);

      // The generations' legend has a strip of its own: no blackout band or label under it, and
      // it stays inside the chart.
      const legend = (await timeline.locator('g.legend').boundingBox())!;
      const meet = (a: Box, b: Box) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
      const bands = await timeline.locator('rect.blackout, text.blackout-label').all();
      expect(bands.length).toBe(4);
      for (const band of bands) expect(meet(legend, (await band.boundingBox())!)).toBe(false);
      expect(legend.x + legend.width).toBeLessThanOrEqual(box!.x + box!.width);

      // Phase rows in time order: from the last burst before the first update to vmm-reattach, each
      // phase's bar sits a row below the one before, and the row labels read in that order.
      const { fromIndex, toIndex } = sim.updates[0]!.blackout;
      const ys: number[] = [];
      for (let i = fromIndex - 1; i <= toIndex; i++) ys.push(Number(await timeline.locator(`rect.phase[data-index="${i}"]`).getAttribute('y')));
      expect(ys.every((y, i) => i === 0 || y > ys[i - 1]!)).toBe(true);
      const labels = await timeline.locator('text.row-label').allTextContents();
      expect(labels).toEqual(sim.timeline.slice(fromIndex - 1, toIndex + 1).map((e) => e.phase));

      // DMA: a lane per device; bytes bars everywhere, fault bars only in the non-persistent lane.
      const dma = page.locator('#dma-chart');
      expect(await dma.locator('g.lane').count()).toBe(sim.devices.length);
      expect(await dma.locator('rect.blackout').count()).toBe(2);
      for (const d of sim.devices) {
        const lane = dma.locator(`g.lane[data-bdf="${d.bdf}"]`);
        expect(await lane.locator('rect.bytes').count()).toBeGreaterThan(0);
        if (d.persistent) expect(await lane.locator('rect.faults').count()).toBe(0);
        else expect(await lane.locator('rect.faults').count()).toBeGreaterThan(0);
      }
      const bar = dma.locator('rect.bytes').first();
      const barBox = await bar.boundingBox();
      expect(barBox!.height).toBeGreaterThan(10);

      // The inline script: hovering a column names the phase and what each device did.
      await dma.locator('rect.faults').first().hover();
      await expect.poll(() => page.locator('#hover').textContent()).toMatch(/\(generation \d+, [\d.]+ ms simulated\) — 0000:01:00\.0: \d+ pages, 0 faults/);

      // Tables.
      expect(await page.locator('#domains tbody tr').count()).toBe(sim.vms.length);
      expect(await page.locator('#areas tbody tr').count()).toBe(sim.vms.length);
      const owners = await page.locator('#preserved tbody tr td:first-child').allTextContents();
      expect(owners).toEqual(expect.arrayContaining(['guestmemfs carve-out', 'intel-iommu root/context tables', 'intel-iommu domain page tables', 'KHO blob']));
      expect(await page.locator('#devices tbody tr').count()).toBe(sim.devices.length);
      expect(await page.locator('#updates tbody tr').count()).toBe(2);

      // Every DMA and fault count says its window: the first update's cards, the tables' captions,
      // each lane's total.
      const cards = await page.locator('.card span').allTextContents();
      expect(cards).toEqual(expect.arrayContaining(['DMA during update 1', 'faults during update 1']));
      expect(await page.locator('#devices caption').textContent()).toBe('Devices (DMA counts: whole run)');
      expect(await page.locator('#updates caption').textContent()).toMatch(/^Live updates \(DMA counts: during each update, kho-dump → vmm-reattach\)$/);
      for (const d of sim.devices) await expect.poll(() => dma.locator(`g.lane[data-bdf="${d.bdf}"] text.row-sub`).nth(1).textContent()).toMatch(/^\d[\d,]* faults?, whole run · (ok|blocked)$/);
      expect(await page.locator('#checks tr.fail').count()).toBe(0);
      expect(await page.locator('#timeline tbody tr').count()).toBe(sim.timeline.length);

      mkdirSync(join(root, 'test-results'), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      expect(existsSync(SCREENSHOT)).toBe(true);

      expect(errors).toEqual([]);
      expect(requests.every((u) => u.startsWith('file://'))).toBe(true);
    } finally {
      await browser.close();
    }
  });
});
