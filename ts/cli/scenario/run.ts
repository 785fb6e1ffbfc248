// Running the `simulate` scenario: guests do I/O, then each live update (KHO DUMP, kexec, every
// VMM re-claiming its iommufd and devices) is checked as it happens, and at the end every device's
// traffic is judged. Everything goes through the simulator's syscall surface, as a VMM and an
// init would; the hardware's view (context entries, DMA) is read from the host directly.
import {
  IOMMU_IOAS_IOVA_RANGES,
  LINUX_REBOOT_CMD_KEXEC,
  MAP_SHARED,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  claimPersistentIommufd,
  type Host,
  type Kernel,
  type PhaseWork,
} from '../../index.js';
import { summariseKho, type KhoSummary } from '../kho-summary.js';
import { faultReason, hex, plural } from '../units.js';
import { GUEST_IOVA, type ProgressFn, type ScenarioConfig } from './config.js';
import { deviceResult, simulationResult, updateResult, WHOLE_RUN, type Check, type DeviceResult, type SimulationResult, type UpdateResult } from './results.js';
import { setUp, type ScenarioHost, type VmState } from './setup.js';


export type CheckFn = (name: string, ok: boolean, detail: string) => void;

/** What a run of either flow returns: the account, and every KHO blob in order. */
export interface SimulationRun {
  result: SimulationResult;
  blobs: Uint8Array[];
}

/**
 * Reports every lifecycle phase as it ends (the kernel calls host.phase from inside kexec and
 * the LUO ioctls), prefixed by the update under way; `guestIo` runs DMA bursts of the guests.
 */
export function instrument(s: ScenarioHost, progress: ProgressFn) {
  const host = s.host;
  const io = { label: '', guestIo: (n: number, what: string) => {} };
  const phase = host.phase.bind(host);
  host.phase = (name: string, generation?: number, work?: PhaseWork) => {
    if (name !== 'guest-io') progress(`${io.label}${name} (generation ${generation ?? host.kernel.generation})`);
    phase(name, generation, work);
  };
  io.guestIo = (n: number, what: string) => {
    for (let i = 0; i < n; i++) {
      progress(`${what}: DMA burst ${i + 1}/${n} on ${plural(s.devs.length, 'device')}`);
      host.phase('guest-io');
    }
  };
  return io;
}

/** Runs the scenario through the RFC flow; returns the whole account, checks included (never throws for a failed check). */
export function simulateRfc(c: ScenarioConfig, progress: ProgressFn = () => {}): SimulationRun {
  const wall0 = performance.now();
  const checks: Check[] = [];
  const check: CheckFn = (name, ok, detail) => checks.push({ name, ok, detail });

  const s = setUp(c, progress);
  const { host, vms, devs } = s;
  const io = instrument(s, progress);
  const guestIo = io.guestIo;
  guestIo(c.ioTicksBefore, 'guests running');

  const updates: UpdateResult[] = [];
  const blobs: Uint8Array[] = [];
  const summaries: KhoSummary[] = [];
  let firstBlobPa: bigint | null = null;
  for (let u = 1; u <= c.kexecs; u++) {
    io.label = `live update ${u}/${c.kexecs}: `;
    const fromGeneration = host.kernel.generation;
    let summary: KhoSummary | null = null;
    let blob: Uint8Array | null = null;
    if (c.kho) {
      // KHO DUMP: the handover tree is built and what it names preserved; iommufds freeze.
      s.init.write(s.init.open('/sys/kernel/kho/active', O_WRONLY), '1');
      blob = s.init.read(s.init.open('/sys/kernel/kho/dt', O_RDONLY), 16 << 20);
      if (u === 1) firstBlobPa = host.kernel.kho.blobPa;
      blobs.push(blob);
      summary = summariseKho(blob);
      summaries.push(summary);
      progress(`${io.label}KHO blob ${plural(blob.length, 'byte')}: ${plural(summary.totals.areas, 'mapping')}, ${plural(summary.totals.pageTablePages, 'page-table page')}; kexec`);
    } else {
      progress(`${io.label}kexec without KHO (negative control)`);
    }
    // The blackout starts with the last phase before the jump: kho-dump, when KHO is used.
    const fromIndex = host.timeline.length - 1;
    s.init.kexecFileLoad({});
    s.init.reboot(LINUX_REBOOT_CMD_KEXEC);

    // The next kernel: init mounts guestmemfs again, each VMM re-claims its iommufd and devices.
    const gen = host.kernel;
    s.init = gen.spawn();
    s.init.mount('guestmemfs', '/mnt/guestmemfs');
    let devicesAttached = 0;
    for (const vm of vms) {
      progress(`${io.label}${vm.name}: claiming persisted iommufd ${vm.persistentId}, re-binding ${plural(vm.devices.length, 'device')}`);
      devicesAttached += reclaimVm(s, gen, c, u, vm, summary, check);
    }
    host.phase('vmm-reattach', undefined, { devicesAttached });
    const toIndex = host.timeline.length - 1;
    const rejected = gen.dmesg().filter((l) => /not adopted|not restored|ignoring the handover/.test(l));
    if (rejected.length) check(`update ${u}: next kernel adopts every persistent domain`, false, rejected.map((l) => l.replace(/^\[[^\]]*\]\s*/, '')).join('; '));
    updates.push(updateResult(u, fromGeneration, gen.generation, blob, summary, host.timeline, fromIndex, toIndex, devs));
    io.label = '';
    guestIo(c.ioTicksAfter, u < c.kexecs ? `after live update ${u}` : 'after the live update');
  }

  progress('verifying');
  const devices = devs.map((d) => deviceResult(d, host.timeline));
  judgeDevices(host, devices, updates, check);
  const result = simulationResult(c, { checks, vms, devices, updates, blobs, first: summaries[0], firstBlobPa, timeline: host.timeline, costModel: host.costModel.constants, wallMs: performance.now() - wall0 });
  return { result, blobs };
}

/**
 * After the jump of update `u`: `vm`'s VMM, a new process of `gen`, claims its persisted iommufd,
 * re-binds and re-attaches its devices; checks that, the devices' context entries against the
 * handover's domain, and guest RAM (by DMA and through a new mapping of its file). Returns how
 * many devices it re-attached.
 */
function reclaimVm(s: ScenarioHost, gen: Kernel, c: ScenarioConfig, u: number, vm: VmState, summary: KhoSummary | null, check: CheckFn): number {
  const host = s.host;
  const vmm = gen.spawn();
  let fd: number;
  try {
    fd = claimPersistentIommufd(vmm, vm.persistentId!);
  } catch (e) {
    check(`update ${u}: ${vm.name} re-claims iommufd ${vm.persistentId}`, false, errorText(e));
    return 0;
  }
  let reattached = 0;
  const problems: string[] = [];
  try {
    vmm.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, { ioas_id: vm.ioasId, num_iovas: 8, allowed_iovas: [] });
  } catch (e) {
    problems.push(`IOAS ${vm.ioasId}: ${errorText(e)}`);
  }
  for (const d of vm.devices) {
    try {
      const dev = vmm.open(`/dev/vfio/devices/vfio${d.vfio}`, O_RDWR);
      vmm.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
      vmm.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: vm.ioasId });
      reattached++;
    } catch (e) {
      problems.push(`${d.bdf}: ${errorText(e)}`);
    }
  }
  check(
    `update ${u}: ${vm.name} re-claims iommufd ${vm.persistentId} and re-attaches its devices`,
    problems.length === 0,
    problems.length ? problems.join('; ') : `fd ${fd}, IOAS ${vm.ioasId}, ${reattached}/${plural(vm.devices.length, 'device')} attached`,
  );
  // The hardware's view: each device's context entry points at the page table and DID the
  // handover named for its domain (adopted and reused, not rebuilt).
  const domain = summary?.intel?.domains.find((d) => d.devices.includes(shortBdf(vm.devices[0]!.bdf)));
  const ctx = vm.devices.map((d) => contextEntry(host, d.bdf));
  const same = domain !== undefined && ctx.every((e) => e.present && e.slptptr === domain.pgd && e.did === domain.did);
  check(
    `update ${u}: ${vm.name} devices translate through the handed-over page table`,
    same,
    domain
      ? `domain ${domain.index}: pgd ${hex(domain.pgd)}, DID ${domain.did}; context entries: ${ctx.map((e) => (e.present ? `${hex(e.slptptr)}/DID ${e.did}` : 'not present')).join(', ')}`
      : 'no domain for its devices in the handover',
  );
  // What the VMM wrote before the first update, through the device and through a new mapping.
  const sig = vm.signature;
  const bad: string[] = [];
  try {
    const got = host.device(vm.devices[0]!.bdf).dma.read(GUEST_IOVA, sig.length);
    if (!equal(got, sig)) bad.push(`DMA read by ${vm.devices[0]!.bdf} differs`);
  } catch (e) {
    bad.push(`DMA read: ${errorText(e)}`);
  }
  try {
    const ram = vmm.open(vm.file, O_RDWR);
    const va = vmm.mmap(null, c.guestMem, PROT_READ | PROT_WRITE, MAP_SHARED, ram);
    if (!equal(vmm.memRead(va, sig.length), sig)) bad.push(`${vm.file} differs`);
  } catch (e) {
    bad.push(`${vm.file}: ${errorText(e)}`);
  }
  check(`update ${u}: ${vm.name} guest RAM intact`, bad.length === 0, bad.length ? bad.join('; ') : `${sig.length}-byte signature read back by DMA and through ${vm.file}`);
  return reattached;
}

/**
 * The verdict on each device's traffic: a persistent one moved pages through every live update
 * without a fault or a mismatch; the host's own was clean until shutdown and blocked from then
 * on, by the IOMMU too (one translation asked of it directly, bypassing bus mastering).
 */
export function judgeDevices(host: Host, devices: DeviceResult[], updates: UpdateResult[], check: CheckFn): void {
  for (const d of devices) {
    const steps = d.steps;
    if (d.persistent) {
      const during = updates.map((u) => steps.filter((s) => s.timelineIndex >= u.blackout.fromIndex && s.timelineIndex <= u.blackout.toIndex).reduce((n, s) => n + s.pagesWritten + s.pagesVerified, 0));
      const ok = d.faults === 0 && d.mismatches === 0 && d.pagesVerified > 0 && during.every((n) => n > 0);
      d.status = ok ? 'ok' : 'failed';
      check(
        `${d.bdf} (${d.vm} ${d.kind}): DMA through every live update`,
        ok,
        `${plural(d.faults, 'fault')}, ${plural(d.mismatches, 'mismatch', 'mismatches')}, ${plural(d.pagesVerified, 'page')} verified over the ${WHOLE_RUN}; pages moved during each update: ${during.join(', ')}`,
      );
    } else {
      const shutdown = host.timeline.findIndex((e) => e.phase === 'shutdown');
      const before = steps.filter((s) => s.timelineIndex < shutdown);
      const after = steps.filter((s) => s.timelineIndex >= shutdown);
      const cleanBefore = before.every((s) => s.faults === 0 && s.mismatches === 0);
      const blocked = after.length > 0 && after.every((s) => s.pagesWritten === 0 && s.pagesVerified === 0 && s.mismatches === 0 && s.faults > 0);
      const iovas = new BigUint64Array([BigInt(d.window.iova)]);
      const reasons = new Uint8Array(1);
      const faulted = host.device(d.bdf).dma.translate(iovas, new BigUint64Array(1), { write: true, faults: reasons }) === 1;
      d.iommuProbe = { faulted, reason: reasons[0]! };
      d.status = cleanBefore && blocked && faulted ? 'blocked' : 'failed';
      const leaked = after.reduce((n, s) => n + s.pagesWritten + s.pagesVerified + s.mismatches, 0);
      check(
        `${d.bdf} (host ${d.kind}, non-persistent): blocked from shutdown on`,
        d.status === 'blocked',
        `${plural(before.reduce((n, s) => n + s.faults, 0), 'fault')} before shutdown; after: ${plural(after.reduce((n, s) => n + s.faults, 0), 'fault')} (${d.faultReasons.map(faultReason).join(', ') || '-'}), ${plural(leaked, 'page')} got through; the IOMMU ${faulted ? `blocks it too (${faultReason(reasons[0]!)})` : 'still translates its window'}`,
      );
    }
  }
}

/** `0000:01:00.0` → `01:00.0`, as the handover names devices. */
function shortBdf(bdf: string): string {
  return bdf.slice(5);
}

/**
 * The device's legacy context entry as the unit sees it (root table → context table), read
 * straight from host memory: present bit, SLPTPTR and DID.
 */
export function contextEntry(host: Host, bdf: string): { present: boolean; slptptr: bigint; did: number } {
  const sid = host.device(bdf).sid;
  const mem = host.memory;
  const root = mem.readU64((host.iommu.registers().rtaddr & ADDR) + 16n * BigInt(sid >> 8));
  if (!(root & 1n)) return { present: false, slptptr: 0n, did: 0 };
  const ce = (root & ADDR) + 16n * BigInt(sid & 0xff);
  const lo = mem.readU64(ce);
  const hi = mem.readU64(ce + 8n);
  return { present: (lo & 1n) === 1n, slptptr: lo & ADDR, did: Number((hi >> 8n) & 0xffffn) };
}
const ADDR = 0x000f_ffff_ffff_f000n;

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
