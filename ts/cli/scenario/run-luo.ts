// Running the `simulate` scenario through the upstream (LUO) flow: guests do I/O; at each live
// update every VMM creates a session named after its VM and preserves its memfd, iommufd and
// devices in it (preserveLuoVm, guests still running: `luo-preserve`), init reboots into the next
// kernel (the kernel reports luo-serialise, luo-freeze, kho-finalise), and in the next kernel each
// VMM retrieves its session and files (luo-retrieve), re-attaches its devices (`vmm-reattach`)
// and finishes the session (luo-finish). Everything goes through the VMM helpers of ts/vmm.ts;
// the devices' traffic and the verdicts are the RFC flow's (run.ts).
import {
  finishLuoVm,
  LINUX_REBOOT_CMD_KEXEC,
  preserveLuoVm,
  reattachLuoVm,
  retrieveLuoVm,
  type Host,
  type Kernel,
  type PhaseWork,
  type RetrievedLuoVm,
} from '../../index.js';
import { summariseKho, type KhoSummary } from '../kho-summary.js';
import { hex, plural } from '../units.js';
import { GUEST_IOVA, type ProgressFn, type ScenarioConfig } from './config.js';
import { deviceResult, simulationResult, updateResult, type Check, type LuoHandover, type UpdateResult } from './results.js';
import { contextEntry, equal, errorText, instrument, judgeDevices, type CheckFn, type SimulationRun } from './run.js';
import { setUpLuo } from './setup-luo.js';
import type { VmState } from './setup.js';

/** Runs the scenario through the LUO flow; returns the whole account, checks included (never throws for a failed check). */
export function simulateLuo(c: ScenarioConfig, progress: ProgressFn = () => {}): SimulationRun {
  const wall0 = performance.now();
  const checks: Check[] = [];
  const check: CheckFn = (name, ok, detail) => checks.push({ name, ok, detail });

  const s = setUpLuo(c, progress);
  const { host, vms, devs } = s;
  const io = instrument(s, progress);
  // The KHO blob is the outgoing kernel's: read it when KHO's finalisation reports, before the jump.
  let finalised: { blob: Uint8Array; pa: bigint } | null = null;
  host.onPhase((e) => {
    if (e.phase !== 'kho-finalise') return;
    const kho = host.kernel.kho;
    if (kho.blob && kho.blobPa !== null) finalised = { blob: kho.blob, pa: kho.blobPa };
  });
  io.guestIo(c.ioTicksBefore, 'guests running');

  const updates: UpdateResult[] = [];
  const blobs: Uint8Array[] = [];
  const summaries: KhoSummary[] = [];
  let firstBlobPa: bigint | null = null;
  for (let u = 1; u <= c.kexecs; u++) {
    io.label = `live update ${u}/${c.kexecs}: `;
    const fromGeneration = host.kernel.generation;
    const preserved = { sessions: 0, files: 0 };
    if (c.kho) {
      for (const vm of vms) {
        const luo = vm.luo!;
        progress(`${io.label}${vm.name}: session ${vm.name} preserves its memfd, iommufd and ${plural(luo.vm.devices.length, 'device')}`);
        try {
          luo.saved = preserveLuoVm(luo.vm, vm.name, { closeDevice: true });
          preserved.sessions++;
          preserved.files += 2 + luo.vm.devices.length;
        } catch (e) {
          luo.saved = null;
          check(`update ${u}: ${vm.name} preserves its files in session ${vm.name}`, false, errorText(e));
        }
      }
    } else {
      for (const vm of vms) vm.luo!.saved = null;
      progress(`${io.label}kexec without preserving anything (negative control)`);
    }
    // What each device translates through before the jump: the next kernel must keep it.
    const before = new Map(devs.filter((d) => d.persistent).map((d) => [d.bdf, contextEntry(host, d.bdf)]));
    host.phase('luo-preserve', undefined, preserved);
    // The blackout starts when the VMMs stop and init reboots: the end of luo-preserve.
    const fromIndex = host.timeline.length - 1;
    finalised = null;
    s.init.kexecFileLoad({});
    s.init.reboot(LINUX_REBOOT_CMD_KEXEC);
    let summary: KhoSummary | null = null;
    const got = finalised as { blob: Uint8Array; pa: bigint } | null;
    if (got) {
      blobs.push(got.blob);
      summary = summariseKho(got.blob);
      summaries.push(summary);
      if (u === 1) firstBlobPa = got.pa;
    }

    // The next kernel: each VMM retrieves its session and files and re-attaches its devices;
    // then every session is finished.
    const gen = host.kernel;
    s.init = gen.spawn();
    const retrieved: [VmState, RetrievedLuoVm][] = [];
    let devicesAttached = 0;
    for (const vm of vms) {
      progress(`${io.label}${vm.name}: retrieving session ${vm.name}, re-attaching ${plural(vm.devices.length, 'device')}`);
      const r = retrieveVm(host, gen, u, vm, before, check);
      if (r) {
        retrieved.push([vm, r]);
        devicesAttached += r.devices.filter((d) => d.devId > 0).length;
      }
    }
    host.phase('vmm-reattach', undefined, { devicesAttached });
    for (const [vm, r] of retrieved) {
      try {
        finishLuoVm(r);
        vm.luo!.vm = r;
        check(`update ${u}: ${vm.name} finishes session ${vm.name}`, true, 'LIVEUPDATE_SESSION_FINISH: its memfd, iommufd and devices are ordinary files again');
      } catch (e) {
        check(`update ${u}: ${vm.name} finishes session ${vm.name}`, false, errorText(e));
      }
    }
    const toIndex = host.timeline.length - 1;
    const rejected = gen.dmesg().filter((l) => /not adopted|not restored|ignoring the handover|failed to deserialize/.test(l));
    if (rejected.length) check(`update ${u}: next kernel restores every preserved domain and session`, false, rejected.map((l) => l.replace(/^\[[^\]]*\]\s*/, '')).join('; '));
    updates.push(updateResult(u, fromGeneration, gen.generation, got?.blob ?? null, summary, host.timeline, fromIndex, toIndex, devs, luoHandover(c, host, fromIndex, toIndex, preserved)));
    io.label = '';
    io.guestIo(c.ioTicksAfter, u < c.kexecs ? `after live update ${u}` : 'after the live update');
  }

  progress('verifying');
  const devices = devs.map((d) => deviceResult(d, host.timeline));
  judgeDevices(host, devices, updates, check);
  const result = simulationResult(c, { checks, vms, devices, updates, blobs, first: summaries[0], firstBlobPa, timeline: host.timeline, costModel: host.costModel.constants, wallMs: performance.now() - wall0 });
  return { result, blobs };
}

/**
 * After the jump of update `u`: `vm`'s VMM, a new process of `gen`, retrieves its session and
 * files and re-attaches its devices to the restored HWPT (no FINISH yet); checks that, the
 * devices' context entries against what they were before the jump, and guest RAM (by DMA and
 * through the retrieved memfd). Returns the retrieved VM, or null if it could not be retrieved.
 */
function retrieveVm(host: Host, gen: Kernel, u: number, vm: VmState, before: Map<string, ReturnType<typeof contextEntry>>, check: CheckFn): RetrievedLuoVm | null {
  const saved = vm.luo!.saved;
  let r: RetrievedLuoVm;
  try {
    if (!saved) throw new Error('no session was preserved');
    r = retrieveLuoVm(gen.spawn(), saved, { reattach: false, finish: false, closeDevice: true });
    // Not marked for the next update until the VMM says so; it will use its token again.
    r.hwptToken = saved.hwptToken;
  } catch (e) {
    check(`update ${u}: ${vm.name} retrieves session ${vm.name}`, false, errorText(e));
    return null;
  }
  try {
    reattachLuoVm(r);
    check(`update ${u}: ${vm.name} retrieves session ${vm.name} and re-attaches its devices`, true, `memfd fd ${r.memfd}, iommufd fd ${r.iommufd} (IOAS ${r.ioasId}, HWPT ${r.hwptId}), ${plural(r.devices.length, 'device')} bound and attached`);
  } catch (e) {
    check(`update ${u}: ${vm.name} retrieves session ${vm.name} and re-attaches its devices`, false, errorText(e));
  }
  const ctx = vm.devices.map((d) => ({ bdf: d.bdf, was: before.get(d.bdf)!, now: contextEntry(host, d.bdf) }));
  const same = ctx.every((x) => x.now.present && x.was.present && x.now.slptptr === x.was.slptptr && x.now.did === x.was.did);
  check(
    `update ${u}: ${vm.name} devices translate through the preserved page table`,
    same,
    ctx.map((x) => `${x.bdf}: ${x.now.present ? `${hex(x.now.slptptr)}/DID ${x.now.did}` : 'not present'} (before: ${x.was.present ? `${hex(x.was.slptptr)}/DID ${x.was.did}` : 'not present'})`).join(', '),
  );
  const sig = vm.signature;
  const bad: string[] = [];
  try {
    if (!equal(host.device(vm.devices[0]!.bdf).dma.read(GUEST_IOVA, sig.length), sig)) bad.push(`DMA read by ${vm.devices[0]!.bdf} differs`);
  } catch (e) {
    bad.push(`DMA read: ${errorText(e)}`);
  }
  try {
    if (!equal(r.process.memRead(r.va, sig.length), sig)) bad.push('the retrieved memfd differs');
  } catch (e) {
    bad.push(`memfd: ${errorText(e)}`);
  }
  check(`update ${u}: ${vm.name} guest RAM intact`, bad.length === 0, bad.length ? bad.join('; ') : `${sig.length}-byte signature read back by DMA and through the retrieved memfd`);
  return r;
}

/** What update `fromIndex … toIndex` handed over, from the phases' work: the sessions and files, the HWPTs' domains and tables, KHO's preserved blocks. */
function luoHandover(c: ScenarioConfig, host: Host, fromIndex: number, toIndex: number, preserved: { sessions: number; files: number }): { kho: Partial<UpdateResult['kho']>; handover: LuoHandover } {
  const span = host.timeline.slice(fromIndex + 1, toIndex + 1);
  const work = (phase: string): PhaseWork => span.find((e) => e.phase === phase)?.work ?? {};
  const vms = preserved.sessions;
  const devices = preserved.files - 2 * vms;
  const init = work('iommu-init');
  const fin = work('kho-finalise');
  return {
    kho: {
      iommufds: vms,
      ioases: vms,
      mappings: vms,
      mappedBytes: vms * Number(c.guestMem),
      domains: init.domains ?? 0,
      pageTablePages: init.tablePages ?? 0,
      rootContextPages: 0,
      preservedBytes: fin.preservedBytes ?? 0,
      preservedRanges: fin.preservedBlocks ?? 0,
    },
    handover: { sessions: vms, files: preserved.files, memfds: vms, folios: work('luo-freeze').folios ?? 0, iommufds: vms, hwpts: vms, devices },
  };
}
