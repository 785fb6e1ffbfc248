// `simulate --flow both`: the same workload through the RFC flow and the upstream (LUO) flow, each
// on a fresh host, side by side: the blackout of live update 1 and its phases on the cost model's
// clock in the order they run (a phase that runs several times, luo-retrieve once per session
// and file, is summed),
// faults, bytes verified, wall time.
import { formatBytes, group } from '../units.js';
import type { Style } from '../text.js';
import { table } from '../text.js';
import type { Flow } from './config.js';
import { updateFaults, type SimulationResult } from './results.js';

/** One flow's figures in the comparison. */
export interface FlowFigures {
  flow: Flow;
  verdict: 'pass' | 'fail';
  /** Live update 1's blackout: its ends and simulated length. */
  blackout: { from: string; to: string; simMs: number };
  /** Mean simulated blackout over every live update. */
  meanBlackoutMs: number;
  /** Faults over the whole run on the persistent (preserved) devices and on the others (blocked). */
  faults: { persistent: number; other: number };
  /** Faults during the live updates (their blackout windows), the same split. */
  faultsDuringUpdates: { persistent: number; other: number };
  /** Bytes the persistent devices wrote and read back correct, whole run. */
  bytesVerified: number;
  mismatches: number;
  wallMs: number;
}

export interface Comparison {
  verdict: 'pass' | 'fail';
  flows: FlowFigures[];
  /** Live update 1's blackout phase by phase: simulated ms and times run, per flow (0 where a flow has no such phase). */
  phases: { phase: string; ms: Record<Flow, number>; count: Record<Flow, number> }[];
}

const PAGE = 4096;

function figures(r: SimulationResult): FlowFigures {
  const u = r.updates[0]!;
  const persistent = r.devices.filter((d) => d.persistent);
  const during = r.updates.map((x) => updateFaults(x, r.devices));
  return {
    flow: r.flow,
    verdict: r.verdict,
    blackout: { from: u.blackout.from, to: u.blackout.to, simMs: u.blackout.simMs },
    meanBlackoutMs: r.updates.reduce((n, x) => n + x.blackout.simMs, 0) / r.updates.length,
    faults: { persistent: persistent.reduce((n, d) => n + d.faults, 0), other: r.devices.filter((d) => !d.persistent).reduce((n, d) => n + d.faults, 0) },
    faultsDuringUpdates: { persistent: during.reduce((n, f) => n + f.persistent, 0), other: during.reduce((n, f) => n + f.other, 0) },
    bytesVerified: persistent.reduce((n, d) => n + d.pagesVerified, 0) * PAGE,
    mismatches: persistent.reduce((n, d) => n + d.mismatches, 0),
    wallMs: r.wallMs,
  };
}

/** The comparison of an RFC-flow run and a LUO-flow run of the same configuration. */
export function compareRuns(rfc: SimulationResult, luo: SimulationResult): Comparison {
  const flows = [figures(rfc), figures(luo)];
  const phases: Comparison['phases'] = [];
  for (const r of [luo, rfc]) {
    for (const p of r.updates[0]!.blackout.phases) {
      let row = phases.find((x) => x.phase === p.phase);
      if (!row) phases.push((row = { phase: p.phase, ms: { rfc: 0, luo: 0 }, count: { rfc: 0, luo: 0 } }));
      row.ms[r.flow] += p.costMs;
      row.count[r.flow]++;
    }
  }
  return { verdict: flows.every((f) => f.verdict === 'pass') ? 'pass' : 'fail', flows, phases };
}

/** The text `simulate --flow both` prints (`quiet`: the verdict line only). */
export function renderComparison(cmp: Comparison, runs: SimulationResult[], style: Style, quiet = false): string {
  const [rfc, luo] = cmp.flows as [FlowFigures, FlowFigures];
  const verdict = `${cmp.verdict === 'pass' ? style.ok('PASS') : style.bad('FAIL')}: rfc ${rfc.verdict}, luo ${luo.verdict}; blackout of live update 1: rfc ${rfc.blackout.simMs.toFixed(1)} ms, luo ${luo.blackout.simMs.toFixed(1)} ms (simulated)`;
  if (quiet) return `${verdict}\n`;
  const c = runs[0]!.config;
  const ms = (x: number, n: number) => (n ? `${x.toFixed(3)} ms${n > 1 ? ` (×${n})` : ''}` : '-');
  const out = [
    `iommu-liveupdate simulate --flow both: ${c.vms} VMs × ${formatBytes(c.guestMemBytes)}, ${c.devicesPerVm} devices each + 1 host device, ${c.pageSize} IOMMU pages, ${c.kexecs} live update${c.kexecs === 1 ? '' : 's'}, seed ${c.seed}; each flow on a fresh host`,
    '',
    'live update 1, blackout phase by phase (simulated, cost model):',
    ...table(
      ['phase', 'rfc', 'luo'],
      cmp.phases.map((p) => [p.phase, ms(p.ms.rfc, p.count.rfc), ms(p.ms.luo, p.count.luo)]),
      ['l', 'r', 'r'],
    ).map((l) => `  ${l}`),
    '',
    ...table(
      ['', 'rfc', 'luo'],
      [
        ['blackout, live update 1', `${rfc.blackout.simMs.toFixed(1)} ms`, `${luo.blackout.simMs.toFixed(1)} ms`],
        ['  from the end of', rfc.blackout.from, luo.blackout.from],
        ['  to the end of', rfc.blackout.to, luo.blackout.to],
        ['blackout, mean of all updates', `${rfc.meanBlackoutMs.toFixed(1)} ms`, `${luo.meanBlackoutMs.toFixed(1)} ms`],
        ['faults, persistent devices', group(rfc.faults.persistent), group(luo.faults.persistent)],
        ['faults, other devices (blocked)', group(rfc.faults.other), group(luo.faults.other)],
        ['wrong bytes (mismatched pages)', group(rfc.mismatches), group(luo.mismatches)],
        ['bytes verified by DMA', formatBytes(rfc.bytesVerified), formatBytes(luo.bytesVerified)],
        ['wall time', `${(rfc.wallMs / 1000).toFixed(1)} s`, `${(luo.wallMs / 1000).toFixed(1)} s`],
        ['verdict', rfc.verdict === 'pass' ? style.ok('pass') : style.bad('fail'), luo.verdict === 'pass' ? style.ok('pass') : style.bad('fail')],
      ],
      ['l', 'r', 'r'],
    ),
    '',
  ];
  for (const r of runs) for (const f of r.checks.filter((x) => !x.ok)) out.push(`  ${style.bad('✗')} ${r.flow}: ${f.name}: ${f.detail}`);
  out.push(verdict);
  return out.join('\n') + '\n';
}
