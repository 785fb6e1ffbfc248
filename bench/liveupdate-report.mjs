// The live-update section of the bench report, from bench/liveupdate.mjs's JSON: the RFC flow's
// rows (as before), the LUO flow's rows, and the side-by-side table of both blackouts. Used by
// scripts/bench.mjs (the whole bench, or `--only liveupdate`).
const sig2 = (x) => (Number.isFinite(x) ? String(Number(x.toPrecision(2))) : 'n/a');
const ratio = (x) => `${sig2(x)}×`;
const group3 = (x) => Math.round(x).toLocaleString('en-US');
const met = (ok) => (ok ? 'yes' : 'no');
const msec = (x) => `${x < 1e7 ? (x / 1e6).toFixed(2) : x < 1e8 ? (x / 1e6).toFixed(1) : group3(x / 1e6)} ms`;

/** `{ rows, luoRows, sideBySide, md }` of one bench/liveupdate.mjs result. */
export function liveupdateReport(liveupdate) {
  // Live-update rows (bench/liveupdate.mjs): medians of the updates without DMA traffic unless a
  // row says otherwise; every time is wall time of the simulator.
  const lu = liveupdate;
  const luAt = (n) => {
    const s = lu.sizes.find((x) => x.n === n);
    if (!s) die(`bench/liveupdate.mjs reported no N=${n}`);
    return s;
  };
  const lu1k = luAt(1024);
  const lu1m = luAt(1 << 20);
  const luBlack = (s) => s.blackout;
  const luPct = (x) => {
    const pct = (100 * x) / lu1m.blackout;
    return `${pct >= 10 ? pct.toFixed(1) : pct.toPrecision(2)}% of the blackout`;
  };
  const bytesB = (b) => `${group3(b)} B`;
  const lph = lu1m.phases;
  const lr = lu.replay;
  const lrPer1m = lr.perPage1M;
  const lrPer100k = lr.perPage100k;
  const luSpeedup = lrPer1m.value / luBlack(lu1m);
  const luIdealPerGiB = 513; // 512 pages of 4 KiB PTEs + 1 page of PDEs per GiB
  const luSizeLabel = (s) => `${group3(s.n)} × 4 KiB mappings (${s.mappedBytes >= 2 ** 30 ? `${s.mappedBytes / 2 ** 30} GiB` : `${s.mappedBytes / 2 ** 20} MiB`}, ${group3(s.tablePages)} table pages)`;
  const luRows = [
    ...lu.sizes.map((s) => {
      const r = luBlack(s) / luBlack(lu1k);
      const head = `blackout, ${luSizeLabel(s)}: write '1' to /sys/kernel/kho/active → kexec → claim → BIND + ATTACH; median of ${s.blackoutRuns.length} updates (best ${msec(s.blackoutBest)})`;
      if (s.n === lu1k.n) return [head, msec(luBlack(s)), '—', 'info (the base of the ratios below)', '—'];
      if (s.n === lu1m.n) return [`${head}; ratio = ÷ the 1,024-mapping blackout`, msec(luBlack(s)), ratio(r), '≤ 3× (tables kept and verified in one walk, not rebuilt)', met(r <= 3)];
      return [`${head}; ratio = ÷ the 1,024-mapping blackout`, msec(luBlack(s)), ratio(r), 'info', '—'];
    }),
    [`1M phase: KHO activation (DUMP: serialise, preserve ${group3(lu1m.preservedPages)} pages + the carve-out; ${luPct(lph.kho)})`, msec(lph.kho), '—', 'info', '—'],
    [
      `1M phase: kexec jump, kexec_file_load + reboot to the next kernel up (${luPct(lph.kexec)}): old kernel's shutdown ${msec(lph.shutdown)}, scrub ${msec(lph.scrub)}, KHO blob ingest ${msec(lph.khoIngest)}, guestmemfs + VT-d adoption ${msec(lph.iommuInit)}, iommufd restore (verifies every handed-over PTE against guestmemfs) ${msec(lph.iommufdRestore)}, rest of boot ${msec(lph.bootRest)}`,
      msec(lph.kexec),
      '—',
      'info',
      '—',
    ],
    [`1M phase: claim, a new process reads /sys/kernel/iommufd_persisted/1/iommufd (${luPct(lph.claim)})`, msec(lph.claim), '—', 'info', '—'],
    [`1M phase: re-bind, open vfio0 + VFIO_DEVICE_BIND_IOMMUFD + VFIO_DEVICE_ATTACH_IOMMUFD_PT to the restored HWPT (${luPct(lph.rebind)})`, msec(lph.rebind), '—', 'info', '—'],
    [
      `blackout with DMA running, 1,048,576 mappings: \`host.dmaTraffic\` over the whole window, ${lu.trafficPagesPerStep} pages written + ${lu.trafficPagesPerStep} re-read between every lifecycle phase; median of ${lu1m.blackoutTrafficRuns.length}; ratio = ÷ without traffic (1,024 mappings: ${msec(lu1k.blackoutTraffic)}, ${ratio(lu1k.blackoutTraffic / lu1k.blackout)})`,
      msec(lu1m.blackoutTraffic),
      ratio(lu1m.blackoutTraffic / lu1m.blackout),
      'info',
      '—',
    ],
    [
      `DMA faults / byte mismatches over the ${lu.traffic.updates} updates with traffic (all sizes; ${group3(lu.traffic.pagesWritten)} pages written, ${group3(lu.traffic.pagesVerified)} re-read and verified, some across several kexecs)`,
      `${lu.traffic.faults} / ${lu.traffic.mismatches}`,
      '—',
      '0 / 0',
      met(lu.traffic.faults === 0 && lu.traffic.mismatches === 0),
    ],
    [
      `replay baseline, 1,048,576 mappings: fresh host with the same guest RAM in guestmemfs; open /dev/iommu, IOAS_ALLOC, HUGE_PAGES=0, BIND, ATTACH, then every mapping re-created as its own 4 KiB IOAS_MAP (FIXED_IOVA; ${
        lrPer1m.extrapolated
          ? `NOT measured: extrapolated ×${(lrPer1m.n / lrPer100k.n).toFixed(2)} from the 102,400-ioctl median (BENCH_QUICK or BENCH_LIVEUPDATE_REPLAY_1M=0)`
          : `1 run, ${((lrPer1m.value / lrPer1m.n) / 1e3).toFixed(1)} µs per ioctl; the 102,400 median ×${(lrPer1m.n / lrPer100k.n).toFixed(2)} would be ${msec((lrPer100k.median * lrPer1m.n) / lrPer100k.n)}`
      }); no kexec or boot counted; ratio = replay ÷ KHO blackout at 1M`,
      msec(lrPer1m.value),
      ratio(luSpeedup),
      'KHO ≥ 1,000× faster',
      met(luSpeedup >= 1000),
    ],
    [
      `replay baseline, 102,400 mappings as 102,400 × 4 KiB IOAS_MAP (same setup; median of ${lrPer100k.runs.length}, ${((lrPer100k.median / lrPer100k.n) / 1e3).toFixed(1)} µs per ioctl); ratio = ÷ KHO blackout at 102,400`,
      msec(lrPer100k.median),
      ratio(lrPer100k.median / luBlack(luAt(lrPer100k.n))),
      'info',
      '—',
    ],
    [
      `replay as ONE IOAS_MAP of 1,048,576 × 4 KiB (4 GiB, HUGE_PAGES=0: the same 1,048,576 PTEs; what a VMM replaying one RAM region issues) + the same setup; median of ${lr.single1M.runs.length}; ratio = ÷ KHO blackout at 1M`,
      msec(lr.single1M.median),
      ratio(lr.single1M.median / luBlack(lu1m)),
      'info',
      '—',
    ],
    [
      `KHO blob (/sys/kernel/kho/dt) at 1,048,576 mappings (${lu.sizes
        .filter((s) => s.n !== lu1m.n)
        .map((s) => `${group3(s.n)}: ${bytesB(s.blobBytes)}`)
        .join('; ')}); grows with the table pages listed in /intel-iommu/domains/0/mem`,
      bytesB(lu1m.blobBytes),
      '—',
      'info',
      '—',
    ],
    [
      `preserved pages per mapped GiB at 1,048,576 mappings (host.memory.preserved() after activation, outside the ${group3(lu1m.preservedCarveoutPages)}-page guestmemfs carve-out: ${group3(lu1m.preservedPages)} pages, of which ${group3(lu1m.tablePages)} page-table pages); ratio = ÷ ideal ${luIdealPerGiB} (512 PTE pages + 1 PDE page per GiB)`,
      group3(lu1m.preservedPagesPerGiB),
      ratio(lu1m.preservedPagesPerGiB / luIdealPerGiB),
      'info',
      '—',
    ],
  ];

  // ---- LUO (the upstream flow), measured in the same rounds -----------------------------------
  const luoOf = (s) => s.luo;
  const luo1k = luoOf(lu1k);
  const luoTop = luoOf(lu1m);
  const luoHostGiB = lu.luo.hostMemory / 2 ** 30;
  const luoCut = luoTop.n !== lu1m.n;
  const lp = luoTop.phases;
  const luoPct = (x) => {
    const pct = (100 * x) / luoTop.blackout;
    return `${pct >= 10 ? pct.toFixed(1) : pct.toPrecision(2)}% of the blackout`;
  };
  const luoLimit = luoCut
    ? `LUO on a ${luoHostGiB} GiB host (BENCH_LUO_HOST_GIB), which holds ${group3(luoTop.n)} mappings at most, not ${group3(lu1m.n)}`
    : `LUO on a ${luoHostGiB} GiB host`;
  const luoRows = [
    ...lu.sizes.map((s) => {
      const l = luoOf(s);
      const head = `LUO blackout, ${group3(l.n)} × 4 KiB mappings ${luSizeLabel(l).replace(/^[^(]*/, '')}: kexec_file_load + reboot → RETRIEVE_SESSION + RETRIEVE_FD (memfd, iommufd, device) → BIND + ATTACH → FINISH; median of ${l.blackoutRuns.length} (best ${msec(l.blackoutBest)}); preparation before it (session, SET_PRESERVE, PRESERVE_FD ×3) ${msec(l.prepare)}`;
      if (l.n === luo1k.n) return [head, msec(l.blackout), '—', 'info (the base of the LUO ratios)', '—'];
      const r = l.blackout / luo1k.blackout;
      if (l.n === luoTop.n) return [`${head}; ratio = ÷ the 1,024-mapping LUO blackout`, msec(l.blackout), ratio(r), '≤ 3× (the preserved tables adopted, not rebuilt)', met(r <= 3)];
      return [`${head}; ratio = ÷ the 1,024-mapping LUO blackout`, msec(l.blackout), ratio(r), 'info', '—'];
    }),
    [
      `LUO ${group3(luoTop.n)} phase: reboot, kexec_file_load + reboot(KEXEC) to the next kernel up (${luoPct(lp.reboot)}): liveupdate_reboot (serialise, freeze, KHO finalise) ${msec(lp.luoReboot)}, old kernel's shutdown ${msec(lp.shutdown)}, scrub ${msec(lp.scrub)}, KHO ingest ${msec(lp.khoIngest)}, VT-d init + the preserved domain re-attached ${msec(lp.iommuInit)}, rest of boot ${msec(lp.bootRest)}`,
      msec(lp.reboot),
      '—',
      'info',
      '—',
    ],
    [`LUO ${group3(luoTop.n)} phase: retrieve, a new process opens /dev/liveupdate, RETRIEVE_SESSION, RETRIEVE_FD of the memfd (mmap again), the iommufd and the device (${luoPct(lp.retrieve)})`, msec(lp.retrieve), '—', 'info', '—'],
    [`LUO ${group3(luoTop.n)} phase: re-attach, VFIO_DEVICE_BIND_IOMMUFD + ATTACH_IOMMUFD_PT to the restored HWPT (${luoPct(lp.reattach)})`, msec(lp.reattach), '—', 'info', '—'],
    [`LUO ${group3(luoTop.n)} phase: LIVEUPDATE_SESSION_FINISH (${luoPct(lp.finish)})`, msec(lp.finish), '—', 'info', '—'],
    [
      `LUO blackout with DMA running, ${group3(luoTop.n)} mappings (\`host.dmaTraffic\`, as for the RFC flow); median of ${luoTop.blackoutTrafficRuns.length}; ratio = ÷ without traffic`,
      luoTop.blackoutTraffic === null ? 'n/a' : msec(luoTop.blackoutTraffic),
      luoTop.blackoutTraffic === null ? '—' : ratio(luoTop.blackoutTraffic / luoTop.blackout),
      'info',
      '—',
    ],
    [
      `LUO DMA faults / byte mismatches over the ${lu.luo.traffic.updates} updates with traffic (${group3(lu.luo.traffic.pagesVerified)} pages re-read and verified); every LUO update also checked: same pgd and table pages, device writes seen through the retrieved memfd and VMM writes seen by device reads (first, middle, last page)`,
      `${lu.luo.traffic.faults} / ${lu.luo.traffic.mismatches}`,
      '—',
      '0 / 0',
      met(lu.luo.traffic.faults === 0 && lu.luo.traffic.mismatches === 0),
    ],
  ];

  // ---- Side by side: one row per size ----------------------------------------------------------
  const sbsHeader = [
    '4 KiB mappings',
    'RFC blackout (KHO activation → claim → re-bind)',
    'LUO blackout (reboot → retrieve → re-attach → finish)',
    'LUO ÷ RFC',
    'LUO preparation (before the reboot)',
    'RFC / LUO blackout CPU time (process.cpuUsage)',
  ];
  // CPU time, where the run measured it: the wall time on a shared machine also counts waiting for a core.
  const cpu = (x) => (x?.blackoutCpu == null ? '—' : msec(x.blackoutCpu));
  const sideBySide = lu.sizes.map((s) => {
    const l = luoOf(s);
    if (l.n === s.n) return [group3(s.n), msec(s.blackout), msec(l.blackout), ratio(l.blackout / s.blackout), msec(l.prepare), `${cpu(s)} / ${cpu(l)}`];
    return [`${group3(s.n)} (LUO: ${group3(l.n)})`, msec(s.blackout), `${msec(l.blackout)} at ${group3(l.n)}`, `${ratio(l.blackout / s.blackout)} (not the same size)`, msec(l.prepare), `${cpu(s)} / ${cpu(l)}`];
  });
  const scaleRfc = luBlack(lu1m) / luBlack(lu1k);
  const scaleLuo = luoTop.blackout / luo1k.blackout;
  const cpuScale = (a, b) => (a?.blackoutCpu == null || b?.blackoutCpu == null ? '—' : ratio(a.blackoutCpu / b.blackoutCpu));
  sideBySide.push([
    'scaling: largest ÷ 1,024',
    `${ratio(scaleRfc)} (${group3(lu1m.n)} ÷ 1,024)`,
    `${ratio(scaleLuo)} (${group3(luoTop.n)} ÷ 1,024)`,
    '—',
    `${ratio(luoTop.prepare / luo1k.prepare)}`,
    `${cpuScale(lu1m, lu1k)} / ${cpuScale(luoTop, luo1k)}`,
  ]);

  const tableOf = (header, rows) => [
    `| ${header.join(' | ')} |`,
    `| ${header.map((h, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
  const valueHeader = ['benchmark', 'value', 'ratio', 'target', 'met?'];
  const valueTable = (rows) => [
    `| ${valueHeader.join(' | ')} |`,
    `| ${valueHeader.map((h, i) => (i === 1 || i === 2 ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
  const md = [
    '## Live update: blackout',
    '',
    `bench/liveupdate.mjs, one process: per size a fresh Host.boot (64 GiB, \`${lu.cmdline}\`, one device), a guestmemfs file of N × 4 KiB mapped with ONE IOAS_MAP into a persistent IOAS (IOMMU_OPTION PERSISTENT on the iommufd, HUGE_PAGES=0 on the IOAS) with the device attached, so its domain holds N 4 KiB PTEs; then chained live updates (gen k → k+1), each checked to come back on the same pgd and table pages. Blackout = wall time from writing '1' to /sys/kernel/kho/active until the VMM's new process holds the restored iommufd (read from /sys/kernel/iommufd_persisted/1/iommufd) with the device bound and attached to the restored HWPT. DMA never stops; updates with traffic alternate with the ones timed without (the blackout). Replay baseline: a fresh host, same guest RAM, the VMM re-creating the mappings with IOAS_MAP; it leaves out the kexec and boot that the KHO blackout includes.`,
    '',
    `The upstream flow (LUO) at each size, on its own host (${luoHostGiB} GiB, \`${luo1k.cmdline}\`), in the same rounds as the RFC flow (one update of each per round, the order swapped every round, traffic on or off for both): guest RAM a sealed memfd mapped with ONE IOMMU_IOAS_MAP_FILE into an IOAS with HUGE_PAGES=0 (set before the map), the device attached to a HWPT marked with IOMMU_HWPT_LU_SET_PRESERVE. Preparation (while the guest runs, not in the blackout): CREATE_SESSION, SET_PRESERVE, PRESERVE_FD of memfd, iommufd and device. LUO blackout = wall time from kexec_file_load + reboot(LINUX_REBOOT_CMD_KEXEC) until the VMM's new process has retrieved the session's files, bound and attached the device to the restored HWPT and FINISHed. ${luoLimit}.`,
    '',
    ...tableOf(sbsHeader, sideBySide),
    '',
    ...valueTable(luRows),
    '',
    ...valueTable(luoRows),
  ].join('\n');
  return { rows: luRows, luoRows, sideBySide, md };
}
