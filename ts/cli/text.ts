// The plain-text account of a run (stdout of `simulate`) and of a KHO blob (`inspect`).
import { protName, type KhoSummary } from './kho-summary.js';
import { updateFaults, WHOLE_RUN, type SimulationResult, type UpdateResult } from './scenario/index.js';
import { faultReason, formatBytes, group, hex, plural, workText } from './units.js';

export interface Style {
  ok(s: string): string;
  bad(s: string): string;
  dim(s: string): string;
}
export const PLAIN: Style = { ok: (s) => s, bad: (s) => s, dim: (s) => s };
export const COLOUR: Style = {
  ok: (s) => `\x1b[32m${s}\x1b[0m`,
  bad: (s) => `\x1b[31m${s}\x1b[0m`,
  dim: (s) => `\x1b[2m${s}\x1b[0m`,
};

/** A table with left-aligned text and right-aligned numbers (columns given as 'l' / 'r'). */
export function table(header: string[], rows: string[][], align: ('l' | 'r')[]): string[] {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => visible(r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => {
        const pad = ' '.repeat(Math.max(0, w[i]! - visible(c).length));
        return align[i] === 'r' ? pad + c : c + pad;
      })
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

function visible(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*m/g, '');
}

/** One line: what the run concluded. */
export function verdictLine(r: SimulationResult, style: Style): string {
  const persistent = r.devices.filter((d) => d.persistent);
  const others = r.devices.filter((d) => !d.persistent);
  const failed = r.checks.filter((c) => !c.ok).length;
  const updates = plural(r.updates.length, 'live update');
  if (r.verdict === 'pass') {
    const [kept, other] = r.flow === 'luo' ? ['preserved', 'unpreserved'] : ['persistent', 'non-persistent'];
    return `${style.ok('PASS')}: ${plural(persistent.length, `${kept} device`)} kept DMA going through ${updates} with no fault or mismatch; ${others.length === 1 ? `the ${other} device was` : `${plural(others.length, `${other} device`)} were`} blocked from shutdown on`;
  }
  return `${style.bad('FAIL')}: ${failed} of ${plural(r.checks.length, 'check')} failed across ${updates}`;
}

function updateLines(u: UpdateResult, r: SimulationResult): string[] {
  const k = u.kho;
  const persistent = r.devices.filter((d) => d.persistent).length;
  const faults = updateFaults(u, r.devices);
  const head = `live update ${u.index}: generation ${u.fromGeneration} → ${u.toGeneration}`;
  const l = u.luo;
  const [kept, other] = l ? ['preserved', 'unpreserved'] : ['persistent', 'non-persistent'];
  const handover = l
    ? [
        `  preserved   ${plural(l.sessions, 'session')}: ${plural(l.files, 'file')} (${plural(l.memfds, 'sealed memfd')} of ${plural(l.folios, 'folio')}, ${plural(l.iommufds, 'iommufd')}, ${plural(l.devices, 'VFIO device')})`,
        `              ${plural(l.hwpts, 'preserved HWPT')}: ${plural(k.mappings, 'mapping')} (${formatBytes(k.mappedBytes)}), ${plural(k.domains, 'domain')} with ${plural(k.pageTablePages, 'page-table page')} adopted in early boot`,
        `  KHO blob    ${plural(k.blobBytes, 'byte')} (kho-v1 with the LUO node), finalised over ${formatBytes(k.preservedBytes, { exact: true })} in ${plural(k.preservedRanges, 'preserved block')}`,
      ]
    : k.blobBytes
    ? [
        `  preserved   ${plural(k.mappings, 'mapping')} (${formatBytes(k.mappedBytes)}) in ${plural(k.ioases, 'IOAS', 'IOASes')} of ${plural(k.iommufds, 'persistent iommufd')}`,
        `              ${plural(k.domains, 'domain')}: ${plural(k.pageTablePages, 'page-table page')} (+ ${plural(k.rootContextPages, 'root/context table page')})`,
        `  KHO blob    ${plural(k.blobBytes, 'byte')}, handing over ${formatBytes(k.preservedBytes, { exact: true })} in ${plural(k.preservedRanges, 'range')}`,
      ]
    : ['  handover    none: KHO was not activated (--no-kho), so nothing was preserved'];
  return [
    head,
    ...handover,
    `  blackout    ${u.blackout.simMs.toFixed(1)} ms simulated (end of ${u.blackout.from} → end of ${u.blackout.to}), ${u.blackout.wallMs.toFixed(1)} ms wall`,
    ...table(
      ['', '', ''],
      u.blackout.phases.map((p) => [p.phase, `${p.costMs.toFixed(1)} ms`, workText(p.work)]),
      ['l', 'r', 'l'],
    )
      .slice(1)
      .map((l) => `    ${l}`),
    `  DMA         ${u.dma.countWindow.label}: ${plural(u.dma.transactions, 'transaction')} (${formatBytes(u.dma.bytes)})`,
    `  faults      ${u.dma.countWindow.label}: ${group(faults.persistent)} on ${plural(persistent, `${kept} device`)}, ${group(faults.other)} on ${plural(r.devices.length - persistent, `${other} device`)} (blocked)`,
  ];
}

/** The summary `simulate` prints. */
export function renderSummary(r: SimulationResult, style: Style): string {
  const c = r.config;
  const out: string[] = [];
  const luo = r.flow === 'luo';
  if (luo) out.push(`iommu-liveupdate simulate --flow luo: ${formatBytes(c.hostMemoryBytes)} host (kho=on liveupdate=on), guest RAM in sealed memfds, seed ${c.seed}`);
  else out.push(`iommu-liveupdate simulate: ${formatBytes(c.hostMemoryBytes)} host, ${formatBytes(c.guestmemfsBytes)} guestmemfs carve-out, seed ${c.seed}`);
  for (const vm of r.vms) {
    const devs = r.devices.filter((d) => d.vm === vm.name).map((d) => `${d.bdf} ${d.kind}`);
    const crosses = luo ? `${vm.file} in LUO session ${vm.session}` : `persistent iommufd ${vm.persistentId}`;
    out.push(`  ${vm.name}  ${formatBytes(vm.guestMemBytes)} at IOVA ${vm.iova}, ${vm.iommuPageSize === '4k' ? '4 KiB' : '2 MiB'} pages, ${crosses}: ${devs.join(', ')}`);
  }
  for (const d of r.devices.filter((x) => !x.persistent)) out.push(`  host ${formatBytes(d.window.bytes)} of anonymous memory at IOVA ${d.window.iova}, ${luo ? 'an iommufd no session preserves' : 'non-persistent iommufd'}: ${d.bdf} ${d.kind}`);
  out.push('');
  out.push(...updateLines(r.updates[0]!, r));
  if (r.updates.length > 1) {
    out.push('');
    out.push(`all ${plural(r.updates.length, 'live update')} (DMA and faults: during each update):`);
    out.push(
      ...table(
        ['update', 'generation', 'KHO blob', 'page tables', 'blackout sim', 'blackout wall', 'DMA transactions', 'bytes', 'faults'],
        r.updates.map((u) => [
          String(u.index),
          `${u.fromGeneration} → ${u.toGeneration}`,
          `${group(u.kho.blobBytes)} B`,
          group(u.kho.pageTablePages),
          `${u.blackout.simMs.toFixed(1)} ms`,
          `${u.blackout.wallMs.toFixed(1)} ms`,
          group(u.dma.transactions),
          formatBytes(u.dma.bytes),
          group(u.dma.faults),
        ]),
        ['r', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      ).map((l) => `  ${l}`),
    );
  }
  out.push('');
  out.push(`DMA per device, ${WHOLE_RUN}:`);
  out.push(
    ...table(
      ['device', 'vm', 'kind', 'iommufd', 'transactions', 'bytes', 'faults', 'status'],
      r.devices.map((d) => [
        d.bdf,
        d.vm ?? 'host',
        d.kind,
        luo ? (d.persistent ? 'preserved' : 'not preserved') : d.persistent ? 'persistent' : 'non-persistent',
        group(d.transactions),
        formatBytes(d.bytes),
        group(d.faults),
        d.status === 'ok'
          ? style.ok('ok')
          : d.status === 'blocked'
            ? `${style.ok('blocked')} from ${d.firstFault?.phase ?? '-'}: ${d.faultReasons.map(faultReason).join(', ')}${d.iommuProbe ? `; IOMMU: ${d.iommuProbe.faulted ? faultReason(d.iommuProbe.reason).replace('VT-d fault ', '') : 'translates!'}` : ''}`
            : style.bad('FAILED'),
      ]),
      ['l', 'l', 'l', 'l', 'r', 'r', 'r', 'l'],
    ),
  );
  out.push('');
  const failed = r.checks.filter((x) => !x.ok);
  out.push(`checks: ${r.checks.length - failed.length} passed, ${failed.length} failed`);
  for (const f of failed) out.push(`  ${style.bad('✗')} ${f.name}: ${f.detail}`);
  out.push(verdictLine(r, style));
  out.push(style.dim(`(${(r.wallMs / 1000).toFixed(1)} s wall)`));
  return out.join('\n') + '\n';
}

/** The summary `inspect` prints after the tree. */
export function renderKho(s: KhoSummary): string {
  const out: string[] = [];
  const t = s.totals;
  out.push(`KHO handover: ${plural(s.bytes, 'byte')}, FDT version ${s.version}, compatible "${s.compatible}"`);
  out.push(`  ${plural(t.iommufds, 'persisted iommufd')}, ${plural(t.ioases, 'IOAS', 'IOASes')}, ${plural(t.areas, 'area')} (${formatBytes(t.mappedBytes)} mapped), ${plural(t.domains, 'domain')} with ${plural(t.pageTablePages, 'page-table page')}`);
  out.push(`  preserved memory: ${formatBytes(t.preservedBytes, { exact: true })} in ${plural(t.preservedRanges, 'range')} (the blob's own pages are KHO's and not listed in it)`);
  if (s.iommufds.length) out.push('', 'iommufd (iommufd-v0)');
  for (const c of s.iommufds) {
    out.push(`  iommufd ${c.id}`);
    for (const i of c.ioases) {
      out.push(`    IOAS ${i.id}: domains [${i.domains.join(', ')}], pinned guestmemfs inodes [${i.pinnedFiles.join(', ')}]`);
      for (const a of i.areas) {
        const segs = a.segments.map((g) => `ino ${g.ino} +${hex(g.offset)} (${formatBytes(g.len)})`).join(', ');
        out.push(`      area ${a.index}: IOVA ${hex(a.iova)}-${hex(a.iova + a.len - 1n)} (${formatBytes(a.len)}) ${protName(a.prot)} → ${segs}`);
      }
    }
  }
  if (s.intel) {
    out.push('', `intel-iommu (intel-iommu-v0): root table ${hex(s.intel.rootTable)}, ${plural(t.rootContextPages, 'root/context table page')}`);
    for (const d of s.intel.domains) {
      const pages = d.tablePages.reduce((n, r) => n + Number(r.len / 4096n), 0);
      out.push(`  domain ${d.index}: persistent id ${d.persistentId}, did ${d.did}, pgd ${hex(d.pgd)}, ${d.agaw + 2}-level, ${plural(pages, 'page-table page')}, devices ${d.devices.join(' ') || '-'}`);
    }
  }
  if (s.guestmemfs) {
    const g = s.guestmemfs;
    out.push('', `guestmemfs (guestmemfs-v0): base ${hex(g.base)}, ${plural(g.nblocks, 'block')} of 2 MiB (${formatBytes(g.nblocks * 2n * 1024n * 1024n)})`);
  }
  if (s.luo) out.push('', `LUO (upstream live update): struct luo_ser at ${hex(s.luo.preservedData)} (preserved-data), ${plural(s.luo.blobSize, 'byte')} (blob-size); the sessions and their files are reached from there`);
  if (s.unknown.length) out.push('', `other nodes: ${s.unknown.join(', ')}`);
  return out.join('\n') + '\n';
}
