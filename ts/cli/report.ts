// `simulate --report FILE.html`: one self-contained page (inline CSS, SVG and a little JS; no
// network) with the lifecycle timeline, per-device DMA across the update and the handover tables.
import { updateFaults, WHOLE_RUN, type SimulationResult } from './scenario/index.js';
import { faultReason, formatBytes, group, plural, workText } from './units.js';

const esc = (s: string | number) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const GEN_COLOURS = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#9c755f', '#e15759'];
const genColour = (g: number) => GEN_COLOURS[g % GEN_COLOURS.length]!;

function tableHtml(id: string, caption: string, header: string[], rows: (string | number)[][], numeric: boolean[] = []): string {
  const th = header.map((h, i) => `<th${numeric[i] ? ' class="n"' : ''}>${esc(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((c, i) => `<td${numeric[i] ? ' class="n"' : ''}>${esc(c)}</td>`).join('')}</tr>`).join('\n');
  return `<table id="${id}"><caption>${esc(caption)}</caption><thead><tr>${th}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

/**
 * The timeline's rows in time order of the first live update: each phase at its last start up to
 * the end of that update, so the update reads top to bottom as it ran (guest-io, kho-dump, ...,
 * vmm-reattach); a phase first seen after it comes after, at its first start.
 */
function phaseRows(r: SimulationResult): string[] {
  const end = r.updates[0]?.blackout.toIndex ?? r.timeline.length - 1;
  const start = new Map<string, number>();
  r.timeline.forEach((e, i) => {
    if (i <= end || !start.has(e.phase)) start.set(e.phase, i);
  });
  return [...start.keys()].sort((a, b) => start.get(a)! - start.get(b)!);
}

/**
 * The generations' colours, left to right, wrapped to `width` (the colours repeat after 8, so
 * past 8 generations one entry per colour). Returns the SVG and the height of its strip.
 */
function legendSvg(generations: number[], x0: number, width: number): { svg: string; height: number } {
  const n = GEN_COLOURS.length;
  const entries = generations.length <= n ? generations.map((g) => ({ g, text: `generation ${g}` })) : GEN_COLOURS.map((_, g) => ({ g, text: `generations ${g}, ${g + n}, …` }));
  const lineH = 18;
  const parts: string[] = [];
  let x = x0, y = 4;
  for (const e of entries) {
    const w = 16 + e.text.length * 6.2 + 18; // swatch, text at 10.5px, gap
    if (x + w > width && x > x0) {
      x = x0;
      y += lineH;
    }
    parts.push(`<rect x="${x.toFixed(1)}" y="${y}" width="12" height="12" fill="${genColour(e.g)}"/><text x="${(x + 16).toFixed(1)}" y="${y + 10}">${esc(e.text)}</text>`);
    x += w;
  }
  return { svg: `<g class="legend">${parts.join('')}</g>`, height: y + lineH };
}

/** Phases as bars on the simulated clock, one row per phase name, blackout windows shaded. */
function timelineSvg(r: SimulationResult): string {
  const tl = r.timeline;
  const rows = phaseRows(r);
  const left = 130, right = 20, rowH = 22, width = 1000;
  const plotW = width - left - right;
  // From the top: the legend's own strip, then the blackout bands with their labels on top, the
  // rows inside them; so the legend never sits on a band.
  const legend = legendSvg([...new Set(tl.map((e) => e.generation))], left, width - right);
  const bandTop = legend.height + 6;
  const top = bandTop + 18;
  const height = top + rows.length * rowH + 40;
  const maxNs = tl.length ? tl[tl.length - 1]!.simNs : 1;
  const x = (ns: number) => left + (ns / maxNs) * plotW;
  const parts: string[] = [legend.svg];
  for (const u of r.updates) {
    const a = x(tl[u.blackout.fromIndex]!.simNs), b = x(tl[u.blackout.toIndex]!.simNs);
    parts.push(
      `<rect class="blackout" data-update="${u.index}" x="${a.toFixed(1)}" y="${bandTop}" width="${Math.max(1, b - a).toFixed(1)}" height="${top - bandTop + rows.length * rowH}"><title>blackout of live update ${u.index}: ${u.blackout.simMs.toFixed(1)} ms simulated, ${u.blackout.wallMs.toFixed(1)} ms wall</title></rect>`,
    );
    // As much of the label as the band holds (many updates make narrow bands).
    const label = b - a > 130 ? `blackout ${u.index}: ${u.blackout.simMs.toFixed(1)} ms` : b - a > 24 ? String(u.index) : '';
    if (label) parts.push(`<text class="blackout-label" x="${((a + b) / 2).toFixed(1)}" y="${top - 6}" text-anchor="middle">${label}</text>`);
  }
  rows.forEach((name, i) => {
    const y = top + i * rowH;
    parts.push(`<text class="row-label" x="${left - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${esc(name)}</text>`);
    parts.push(`<line class="grid" x1="${left}" x2="${width - right}" y1="${y + rowH}" y2="${y + rowH}"/>`);
  });
  tl.forEach((e, i) => {
    const start = i ? tl[i - 1]!.simNs : 0;
    const y = top + rows.indexOf(e.phase) * rowH + 4;
    const a = x(start);
    const w = Math.max(2, x(e.simNs) - a);
    parts.push(
      `<rect class="phase" data-index="${i}" x="${a.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${genColour(e.generation)}"><title>${esc(e.phase)} (generation ${e.generation}): ${(e.costNs / 1e6).toFixed(1)} ms${workText(e.work) ? ` for ${esc(workText(e.work))}` : ''}, ends at ${(e.simNs / 1e6).toFixed(1)} ms simulated, ${e.wallMs.toFixed(1)} ms wall</title></rect>`,
    );
  });
  // Axis: simulated ms.
  const axisY = top + rows.length * rowH;
  const stepMs = niceStep(maxNs / 1e6 / 8);
  for (let t = 0; t * 1e6 <= maxNs; t += stepMs) {
    const px = x(t * 1e6);
    parts.push(`<line class="tick" x1="${px.toFixed(1)}" x2="${px.toFixed(1)}" y1="${axisY}" y2="${axisY + 5}"/><text class="tick-label" x="${px.toFixed(1)}" y="${axisY + 18}" text-anchor="middle">${t}</text>`);
  }
  parts.push(`<text class="axis-label" x="${left + plotW / 2}" y="${axisY + 34}" text-anchor="middle">simulated time since cold boot (ms)</text>`);
  return `<svg id="timeline-chart" role="img" aria-label="lifecycle timeline" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">${parts.join('')}</svg>`;
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-9)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/** One lane per device: bytes moved per step (bars), faults (red), blackout shaded; x = the phase after which the burst ran. */
function dmaSvg(r: SimulationResult): string {
  const tl = r.timeline;
  const firstIndex = Math.min(...r.devices.map((d) => d.steps[0]?.timelineIndex ?? tl.length));
  const cols = tl.length - firstIndex;
  const left = 190, right = 20, top = 26, laneH = 64, gap = 10, width = 1000;
  const plotW = width - left - right;
  const colW = plotW / Math.max(1, cols);
  const lanesH = r.devices.length * (laneH + gap);
  const height = top + lanesH + 110;
  const maxBytes = Math.max(1, ...r.devices.flatMap((d) => d.steps.map((s) => (s.pagesWritten + s.pagesVerified + s.mismatches) * 4096)));
  const maxFaults = Math.max(1, ...r.devices.flatMap((d) => d.steps.map((s) => s.faults)));
  const barMax = laneH - 16; // room for the scale label at the top of each lane
  const cx = (idx: number) => left + (idx - firstIndex) * colW;
  const parts: string[] = [];
  r.devices.forEach((d, lane) => {
    const y0 = top + lane * (laneH + gap);
    const base = y0 + laneH;
    parts.push(`<g class="lane" data-bdf="${esc(d.bdf)}">`);
    parts.push(`<rect class="lane-bg" x="${left}" y="${y0}" width="${plotW}" height="${laneH}"/>`);
    parts.push(`<text class="row-label" x="${left - 8}" y="${y0 + 22}" text-anchor="end">${esc(d.bdf)}</text>`);
    parts.push(`<text class="row-sub" x="${left - 8}" y="${y0 + 38}" text-anchor="end">${esc(`${d.vm ?? 'host'} ${d.kind}, ${d.persistent ? 'persistent' : 'non-persistent'}`)}</text>`);
    parts.push(`<text class="row-sub ${d.status === 'failed' ? 'bad' : ''}" x="${left - 8}" y="${y0 + 54}" text-anchor="end">${esc(`${plural(d.faults, 'fault')}, ${WHOLE_RUN} · ${d.status}`)}</text>`);
    parts.push(`<text class="scale" x="${left + 4}" y="${y0 + 11}">${esc(`${formatBytes(maxBytes)} / ${plural(maxFaults, 'fault')} per step`)}</text>`);
    for (const s of d.steps) {
      const moved = (s.pagesWritten + s.pagesVerified + s.mismatches) * 4096;
      const x0 = cx(s.timelineIndex) + 1;
      const w = Math.max(1, colW - 2);
      if (moved > 0) {
        const h = (moved / maxBytes) * barMax;
        parts.push(`<rect class="bytes" data-index="${s.timelineIndex}" x="${x0.toFixed(1)}" y="${(base - h).toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(`${d.bdf} after ${s.phase} (gen ${s.generation}): ${formatBytes(moved)} moved (${plural(s.pagesWritten, 'page')} written, ${group(s.pagesVerified)} verified)`)}</title></rect>`);
      }
      if (s.faults > 0) {
        const h = Math.max(3, (s.faults / maxFaults) * barMax);
        parts.push(`<rect class="faults" data-index="${s.timelineIndex}" x="${x0.toFixed(1)}" y="${(base - h).toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}"><title>${esc(`${d.bdf} after ${s.phase} (gen ${s.generation}): ${plural(s.faults, 'fault')}, ${s.faultReasons.map(faultReason).join(', ')}`)}</title></rect>`);
      }
      if (s.mismatches > 0) parts.push(`<circle class="mismatch" cx="${(x0 + w / 2).toFixed(1)}" cy="${y0 + 6}" r="4"><title>${plural(s.mismatches, 'mismatch', 'mismatches')}</title></circle>`);
    }
    parts.push('</g>');
  });
  // Over the bars: the live updates' windows and the kexecs.
  for (const u of r.updates) {
    const a = cx(u.blackout.fromIndex), b = cx(u.blackout.toIndex + 1);
    parts.push(`<rect class="blackout" data-update="${u.index}" x="${a.toFixed(1)}" y="${top - 4}" width="${(b - a).toFixed(1)}" height="${lanesH}"><title>live update ${u.index}: ${esc(u.blackout.from)} … ${esc(u.blackout.to)}</title></rect>`);
    const label = b - a > 300 ? `live update ${u.index}: ${formatBytes(u.dma.bytes)} moved ${u.dma.countWindow.label}, ${u.blackout.simMs.toFixed(0)} ms blackout` : b - a > 60 ? `update ${u.index}` : String(u.index);
    parts.push(`<text class="blackout-label" x="${((a + b) / 2).toFixed(1)}" y="${top - 9}" text-anchor="middle">${esc(label)}</text>`);
  }
  for (let i = firstIndex + 1; i < tl.length; i++) {
    if (tl[i]!.generation !== tl[i - 1]!.generation) parts.push(`<line class="kexec" x1="${cx(i).toFixed(1)}" x2="${cx(i).toFixed(1)}" y1="${top - 4}" y2="${top + lanesH - 4}"><title>kexec into generation ${tl[i]!.generation}</title></line>`);
  }
  // Phase labels under the lanes.
  for (let i = firstIndex; i < tl.length; i++) {
    const px = cx(i) + colW / 2;
    const py = top + lanesH + 6;
    parts.push(`<text class="col-label" data-index="${i}" transform="translate(${px.toFixed(1)},${py}) rotate(60)">${esc(tl[i]!.phase)}</text>`);
  }
  return `<svg id="dma-chart" role="img" aria-label="DMA per device and phase" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">${parts.join('')}</svg>`;
}

const CSS = `
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto; max-width: 1040px; color: #1d2330; padding: 0 12px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #d9dde5; padding-bottom: 4px; }
.sub { color: #5b6475; margin-top: 0; }
.verdict { display: inline-block; padding: 6px 12px; border-radius: 6px; font-weight: 600; }
.verdict.pass { background: #e3f4e1; color: #1f6b1a; } .verdict.fail { background: #fbe3e3; color: #9b1c1c; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #d9dde5; border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 19px; } .card span { color: #5b6475; font-size: 12px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; width: 100%; }
caption { text-align: left; color: #5b6475; padding-bottom: 4px; }
th, td { border-bottom: 1px solid #e6e9ef; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f9; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td { background: #fdf0f0; } code, td { font-family: ui-monospace, 'SFMono-Regular', Menlo, monospace; font-size: 12px; }
svg { display: block; max-width: 100%; height: auto; font-family: system-ui, sans-serif; }
.blackout { fill: #f6c343; fill-opacity: .22; stroke: #d9a200; stroke-dasharray: 4 3; pointer-events: none; }
.blackout-label { font-size: 11px; fill: #8a6500; font-weight: 600; }
.row-label { font-size: 12px; fill: #1d2330; } .row-sub { font-size: 10.5px; fill: #5b6475; } .bad { fill: #b42318; }
.grid { stroke: #eef0f4; } .tick { stroke: #8892a3; } .tick-label, .axis-label, .legend text, .col-label { font-size: 10.5px; fill: #5b6475; }
.lane-bg { fill: #f8f9fb; } .scale { font-size: 9.5px; fill: #8892a3; } .bytes { fill: #4e9a5a; } .faults { fill: #d64545; } .mismatch { fill: #7a1fa2; }
.kexec { stroke: #1d2330; stroke-width: 1.5; stroke-dasharray: 3 3; }
rect.hl { stroke: #1d2330; stroke-width: 1.5; } #hover { min-height: 1.5em; color: #1d2330; font-size: 12px; }
.legend-row { font-size: 12px; color: #5b6475; } .legend-row i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; vertical-align: -1px; }
`;

// Hovering a column of the DMA chart (or a timeline bar) names the phase and what each device did
// (the lines are written here, so their counts read like the rest of the CLI's).
function hoverLines(r: SimulationResult): string[] {
  return r.timeline.map((e, idx) => {
    const per = r.devices.flatMap((d) => {
      const s = d.steps.find((x) => x.timelineIndex === idx);
      return s ? [`${d.bdf}: ${plural(s.pagesWritten + s.pagesVerified, 'page')}, ${plural(s.faults, 'fault')}`] : [];
    });
    return `${e.phase} (generation ${e.generation}, ${(e.simNs / 1e6).toFixed(1)} ms simulated) — ${per.join(' · ') || 'no DMA step'}`;
  });
}
const JS = `
(() => {
  const lines = JSON.parse(document.getElementById('hover-lines').textContent);
  const out = document.getElementById('hover');
  const show = (idx) => {
    if (lines[idx] === undefined) return;
    out.textContent = lines[idx];
    document.querySelectorAll('[data-index]').forEach((n) => n.classList.toggle('hl', Number(n.dataset.index) === idx));
  };
  document.querySelectorAll('svg [data-index]').forEach((n) => n.addEventListener('mouseenter', () => show(Number(n.dataset.index))));
})();
`;

/** The whole page. */
export function renderReport(r: SimulationResult): string {
  const u1 = r.updates[0]!;
  const c = r.config;
  const of1 = r.updates.length > 1 ? ' (update 1)' : '';
  const faults = updateFaults(u1, r.devices);
  const cards = [
    [`blackout (simulated)${of1}`, `${u1.blackout.simMs.toFixed(1)} ms`],
    [`blackout (wall)${of1}`, `${u1.blackout.wallMs.toFixed(1)} ms`],
    [`KHO blob${of1}`, `${group(u1.kho.blobBytes)} B`],
    [`mappings preserved${of1}`, `${u1.kho.mappings} (${formatBytes(u1.kho.mappedBytes)})`],
    [`page-table pages${of1}`, group(u1.kho.pageTablePages)],
    [`DMA ${u1.dma.countWindow.label}`, `${plural(u1.dma.transactions, 'transaction')} / ${formatBytes(u1.dma.bytes)}`],
    [`faults ${u1.dma.countWindow.label}`, `${group(faults.persistent)} persistent / ${group(faults.other)} blocked`],
  ];
  const kho = r.kho ?? { blobBytes: 0, blobAddress: null, domains: [], areas: [], preserved: [] };
  const json = JSON.stringify(r).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>iommu-liveupdate: live update report</title>
<style>${CSS}</style></head>
<body>
<h1>Live update with DMA persistence</h1>
<p class="sub">${esc(`${r.flow === 'luo' ? 'Upstream flow (LUO, kho=on liveupdate=on): guest RAM in sealed memfds, one LUO session per VM; ' : ''}${formatBytes(c.hostMemoryBytes)} host, ${formatBytes(c.guestmemfsBytes)} guestmemfs carve-out; ${plural(c.vms, 'VM')} × ${formatBytes(c.guestMemBytes)} (${c.pageSize} IOMMU pages), ${plural(c.devicesPerVm, 'device')} each + 1 non-persistent; ${plural(c.kexecs, 'live update')}; seed ${c.seed}`)}</p>
<p><span id="verdict" class="verdict ${r.verdict}">${r.verdict === 'pass' ? 'PASS' : 'FAIL'}: ${r.checks.filter((x) => x.ok).length} of ${plural(r.checks.length, 'check')} passed</span></p>
<div class="cards">${cards.map(([k, v]) => `<div class="card"><b>${esc(v!)}</b><span>${esc(k!)}</span></div>`).join('')}</div>

<h2>Lifecycle timeline</h2>
<p class="sub">Each bar is one phase on the simulated clock (modelled phase costs; colour = kernel generation). The shaded band is the blackout: from the end of <code>${esc(r.updates[0]?.blackout.from ?? 'kho-dump')}</code> to the end of <code>${esc(r.updates[0]?.blackout.to ?? 'vmm-reattach')}</code>.</p>
${timelineSvg(r)}

<h2>DMA per device across the update</h2>
<p class="sub">One column per lifecycle phase: the burst each device ran right after it (green: bytes moved, red: faults). Dotted lines are kexecs; the shaded band is the live update.</p>
<div class="legend-row"><i style="background:#4e9a5a"></i>bytes moved<i style="background:#d64545"></i>faults<i style="background:#f6c343;opacity:.5"></i>blackout</div>
${dmaSvg(r)}
<div id="hover"></div>

${tableHtml(
  'devices',
  `Devices (DMA counts: ${WHOLE_RUN})`,
  ['device', 'vm', 'kind', 'iommufd', 'DMA window', 'transactions', 'bytes', 'faults', 'mismatches', 'status'],
  r.devices.map((d) => [d.bdf, d.vm ?? 'host', d.kind, d.persistent ? 'persistent' : 'non-persistent', `${d.window.iova} + ${formatBytes(d.window.bytes)}`, group(d.transactions), formatBytes(d.bytes), group(d.faults), group(d.mismatches), d.status]),
  [false, false, false, false, false, true, true, true, true, false],
)}

${tableHtml(
  'updates',
  `Live updates (DMA counts: during each update, ${r.updates[0]?.blackout.from ?? 'kho-dump'} → ${r.updates[0]?.blackout.to ?? 'vmm-reattach'})`,
  ['update', 'generation', 'KHO blob', 'mappings', 'domains', 'page-table pages', 'preserved', 'blackout sim', 'blackout wall', 'DMA transactions', 'DMA bytes', 'faults'],
  r.updates.map((u) => [u.index, `${u.fromGeneration} → ${u.toGeneration}`, `${group(u.kho.blobBytes)} B`, u.kho.mappings, u.kho.domains, group(u.kho.pageTablePages), formatBytes(u.kho.preservedBytes, { exact: true }), `${u.blackout.simMs.toFixed(1)} ms`, `${u.blackout.wallMs.toFixed(1)} ms`, group(u.dma.transactions), formatBytes(u.dma.bytes), group(u.dma.faults)]),
  [true, false, true, true, true, true, true, true, true, true, true, true],
)}

${tableHtml(
  'blackout-phases',
  `Blackout of live update 1: ${u1.blackout.simMs.toFixed(1)} ms simulated, phase by phase (cost model: base + work × per-unit constants)`,
  ['phase', 'generation', 'simulated ms', 'work'],
  u1.blackout.phases.map((p) => [p.phase, p.generation, p.costMs.toFixed(1), workText(p.work) || '-']),
  [false, true, true, false],
)}

<h2>What the first live update handed over</h2>
${tableHtml(
  'domains',
  `Domains (/intel-iommu/domains), KHO blob ${plural(kho.blobBytes, 'byte')}${kho.blobAddress ? ` at ${kho.blobAddress}` : ''}`,
  ['index', 'persistent id', 'DID', 'pgd', 'levels', 'page-table pages', 'devices'],
  kho.domains.map((d) => [d.index, d.persistentId, d.did, d.pgd, d.levels, group(d.tablePages), d.devices.join(' ')]),
  [true, true, true, false, true, true, false],
)}
${tableHtml(
  'areas',
  'Areas (/iommufd/iommufds/<id>/ioases/<ioas>/<area>)',
  ['iommufd', 'IOAS', 'area', 'IOVA first', 'IOVA last', 'size', 'prot', 'guestmemfs segments'],
  kho.areas.map((a) => [a.iommufd, a.ioas, a.area, a.iova, a.last, formatBytes(a.bytes), a.prot, a.segments.map((s) => `ino ${s.ino} +${s.offset} (${formatBytes(s.bytes)})`).join(', ')]),
  [true, true, true, false, false, true, false, false],
)}
${tableHtml(
  'preserved',
  'Preserved memory',
  ['owner', 'ranges', 'bytes', 'lowest address'],
  kho.preserved.map((p) => [p.owner, group(p.ranges), formatBytes(p.bytes, { exact: true }), p.first]),
  [false, true, true, false],
)}

<h2>Checks</h2>
<table id="checks"><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead><tbody>
${r.checks.map((x) => `<tr class="${x.ok ? 'ok' : 'fail'}"><td>${esc(x.name)}</td><td>${x.ok ? 'ok' : 'FAILED'}</td><td>${esc(x.detail)}</td></tr>`).join('\n')}
</tbody></table>

${tableHtml(
  'timeline',
  'Timeline',
  ['#', 'generation', 'phase', 'simulated ms', 'cost ms', 'work', 'wall ms'],
  r.timeline.map((e, i) => [i, e.generation, e.phase, (e.simNs / 1e6).toFixed(1), (e.costNs / 1e6).toFixed(1), workText(e.work) || '-', e.wallMs.toFixed(1)]),
  [true, true, false, true, true, false, true],
)}
<script type="application/json" id="report-data">${json}</script>
<script type="application/json" id="hover-lines">${JSON.stringify(hoverLines(r)).replace(/</g, '\\u003c')}</script>
<script>${JS}</script>
</body></html>
`;
}
