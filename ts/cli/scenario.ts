// The `simulate` scenario: a hypervisor host with VMs whose guest RAM lives in guestmemfs and
// whose assigned devices do DMA through persistent iommufds, live-updated by KHO + kexec while
// the devices keep going, plus one device of the host's own in a non-persistent iommufd.
// Everything here goes through the simulator's syscall surface, as a VMM and an init would.
import {
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_PERSISTENT,
  LINUX_REBOOT_CMD_KEXEC,
  MAP_ANONYMOUS,
  MAP_SHARED,
  O_CREAT,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  type DmaTraffic,
} from '../index.js';
import { protName, summariseKho, type KhoSummary } from './kho-summary.js';
import { faultReason, formatBytes, hex } from './units.js';

export type PageSize = '4k' | '2m' | 'mixed';

export interface ScenarioConfig {
  /** Host RAM. */
  hostMemory: bigint;
  /** `guestmemfs=` carve-out. */
  carveOut: bigint;
  vms: number;
  /** Guest RAM per VM (a guestmemfs file, mapped whole into the VM's IOAS). */
  guestMem: bigint;
  devicesPerVm: number;
  /** IOMMU page size of the VMs' IOASes (`4k`: IOMMU_OPTION_HUGE_PAGES = 0). */
  pageSize: PageSize;
  kexecs: number;
  /** `Host.boot` seed (the page allocator's). */
  seed: bigint;
  /** Pages each device writes and re-reads per step (a step follows every lifecycle phase). */
  pagesPerStep: number;
  /** `guest-io` phases before the first live update. */
  ioTicksBefore: number;
  /** `guest-io` phases after each `vmm-reattach`. */
  ioTicksAfter: number;
  /** Activate KHO before each kexec (false: the negative control, nothing may survive). */
  kho: boolean;
}

export const GiB = 1n << 30n;
export const MiB = 1n << 20n;
/** guestmemfs's block: files grow in these, and its first one holds the metadata. */
export const BLOCK = 2n * MiB;
/** Where each VM's guest RAM sits in its IOAS (above the 32-bit MMIO hole, IOVA = GPA). */
export const GUEST_IOVA = 4n * GiB;
/** The first 2 MiB of guest RAM are the VMM's (firmware, the signature it checks); devices get the rest. */
export const VMM_RESERVED = BLOCK;
/** The non-persistent device's buffer: anonymous shared memory of the host's own driver. */
export const HOST_BUFFER = 64n * MiB;
export const HOST_IOVA = 1n * GiB;
const GUESTMEMFS_MAX_FILE = 512n * GiB;

export const DEFAULT_CONFIG: ScenarioConfig = {
  hostMemory: 64n * GiB,
  carveOut: 16n * GiB,
  vms: 2,
  guestMem: 4n * GiB,
  devicesPerVm: 2,
  pageSize: '2m',
  kexecs: 1,
  seed: 0n,
  pagesPerStep: 32,
  ioTicksBefore: 8,
  ioTicksAfter: 4,
  kho: true,
};

/** Why `config` cannot run (a usage error), or null. */
export function checkConfig(c: ScenarioConfig): string | null {
  if (c.vms < 1) return '--vms must be at least 1';
  if (c.devicesPerVm < 1) return '--devices must be at least 1 per VM';
  if (c.kexecs < 1) return '--kexecs must be at least 1 (the live update is the point)';
  if (c.kexecs > 1000) return '--kexecs must be at most 1000';
  if (c.vms * c.devicesPerVm + 1 > 255) return `--vms ${c.vms} × --devices ${c.devicesPerVm} needs ${c.vms * c.devicesPerVm + 1} PCI buses (one device each, with the host's own); at most 255`;
  if (c.guestMem === 0n || c.guestMem % BLOCK !== 0n) return `--guest-mem ${formatBytes(c.guestMem, { exact: true })}: guest RAM is a guestmemfs file, which grows in 2 MiB blocks; give a non-zero multiple of 2M`;
  if (c.guestMem > GUESTMEMFS_MAX_FILE) return `--guest-mem ${formatBytes(c.guestMem)}: a guestmemfs file holds at most ${formatBytes(GUESTMEMFS_MAX_FILE)}`;
  // guestmemfs spends its first block on the superblock and inodes, and one block per file on
  // that file's block map.
  const usable = c.carveOut - BLOCK - BigInt(c.vms) * BLOCK;
  const want = BigInt(c.vms) * c.guestMem;
  if (want > usable) {
    return `--vms ${c.vms} × --guest-mem ${formatBytes(c.guestMem, { exact: true })} = ${formatBytes(want, { exact: true })} does not fit the ${formatBytes(c.carveOut)} guestmemfs carve-out (${formatBytes(usable, { exact: true })} usable: 2 MiB go to the superblock and 2 MiB to each file's block map)`;
  }
  if (deviceSlice(c) < BLOCK) return `--guest-mem ${formatBytes(c.guestMem)} is too small for ${c.devicesPerVm} devices: each needs a 2 MiB DMA window after the VMM's first 2 MiB`;
  return null;
}

/** Each device's share of its VM's RAM (after the VMM's first 2 MiB), 2 MiB aligned. */
function deviceSlice(c: ScenarioConfig): bigint {
  return ((c.guestMem - VMM_RESERVED) / BigInt(c.devicesPerVm) / BLOCK) * BLOCK;
}

export type DeviceKind = 'nvme' | 'nic';

export interface StepRecord {
  /** Index into the timeline: the phase after which this burst ran. */
  timelineIndex: number;
  phase: string;
  generation: number;
  pagesWritten: number;
  pagesVerified: number;
  faults: number;
  mismatches: number;
  /** Distinct VT-d fault reasons of this step. */
  faultReasons: number[];
}

export interface DeviceResult {
  bdf: string;
  kind: DeviceKind;
  /** `vm0`, ...; null for the host's own device. */
  vm: string | null;
  persistent: boolean;
  window: { iova: string; bytes: number };
  transactions: number;
  bytes: number;
  pagesWritten: number;
  pagesVerified: number;
  faults: number;
  mismatches: number;
  faultReasons: number[];
  firstFault: { phase: string; generation: number } | null;
  /**
   * Non-persistent devices: one translation of its window asked of the IOMMU directly after the
   * run (bypassing the device's bus-master bit), to show the IOMMU blocks it too.
   */
  iommuProbe: { faulted: boolean; reason: number } | null;
  /** `ok` (persistent, clean), `blocked` (non-persistent, blocked from shutdown on), `failed`. */
  status: 'ok' | 'blocked' | 'failed';
  steps: StepRecord[];
}

export interface VmResult {
  name: string;
  persistentId: number;
  ioasId: number;
  guestMemBytes: number;
  iova: string;
  iommuPageSize: '4k' | '2m';
  file: string;
  devices: string[];
}

export interface UpdateResult {
  index: number;
  fromGeneration: number;
  toGeneration: number;
  kho: {
    blobBytes: number;
    iommufds: number;
    ioases: number;
    mappings: number;
    mappedBytes: number;
    domains: number;
    pageTablePages: number;
    rootContextPages: number;
    preservedBytes: number;
    preservedRanges: number;
  };
  /** From the end of the last phase before the jump (`kho-dump`) to the end of `vmm-reattach`. */
  blackout: { from: string; to: 'vmm-reattach'; simNs: number; simMs: number; wallMs: number; fromIndex: number; toIndex: number };
  dma: { transactions: number; bytes: number; faults: number; byDevice: { bdf: string; transactions: number; bytes: number; faults: number }[] };
}

export interface KhoTables {
  blobBytes: number;
  blobAddress: string | null;
  domains: { index: number; persistentId: number; did: number; pgd: string; levels: number; devices: string[]; tablePages: number }[];
  areas: { iommufd: number; ioas: number; area: number; iova: string; last: string; bytes: number; prot: string; segments: { ino: number; offset: string; bytes: number }[] }[];
  preserved: { owner: string; ranges: number; bytes: number; first: string }[];
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface SimulationResult {
  schemaVersion: 1;
  command: 'simulate';
  config: {
    hostMemoryBytes: number;
    guestmemfsBytes: number;
    vms: number;
    guestMemBytes: number;
    devicesPerVm: number;
    pageSize: PageSize;
    kexecs: number;
    seed: string;
    pagesPerStep: number;
    kho: boolean;
  };
  verdict: 'pass' | 'fail';
  checks: Check[];
  vms: VmResult[];
  devices: DeviceResult[];
  updates: UpdateResult[];
  /** The first live update's handover, for tables (null with `kho: false`). */
  kho: KhoTables | null;
  timeline: { generation: number; phase: string; simNs: number; wallMs: number }[];
  wallMs: number;
}

/** What the run reports while it works (the CLI shows it on a terminal). */
export type ProgressFn = (message: string) => void;

const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_FIXED_IOVA;
const PAGE = 4096;
const enc = new TextEncoder();
const dec = new TextDecoder();

interface VmState {
  name: string;
  persistentId: number;
  ioasId: number;
  pageSize: '4k' | '2m';
  file: string;
  signature: Uint8Array;
  devices: DevState[];
}
interface DevState {
  bdf: string;
  vfio: number;
  kind: DeviceKind;
  vm: string | null;
  persistent: boolean;
  iova: bigint;
  length: bigint;
  traffic: DmaTraffic;
  /** Timeline index of the first phase it stepped after. */
  firstIndex: number;
}

/** Runs the scenario; returns the whole account, checks included (never throws for a failed check). */
export function simulate(c: ScenarioConfig, progress: ProgressFn = () => {}): { result: SimulationResult; blobs: Uint8Array[] } {
  const wall0 = performance.now();
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });

  const nDev = c.vms * c.devicesPerVm + 1;
  const bdfs = Array.from({ length: nDev }, (_, i) => `0000:${(i + 1).toString(16).padStart(2, '0')}:00.0`);
  progress(`booting a ${formatBytes(c.hostMemory)} host with a ${formatBytes(c.carveOut)} guestmemfs carve-out and ${nDev} devices`);
  const host = Host.boot({ memory: c.hostMemory, seed: c.seed, guestmemfs: c.carveOut, devices: bdfs.map((bdf) => ({ bdf })) });

  // Report every lifecycle phase as it ends (the kernel calls host.phase from inside kexec).
  let updateLabel = '';
  const phase = host.phase.bind(host);
  host.phase = (name: string, generation?: number) => {
    if (name !== 'guest-io') progress(`${updateLabel}${name} (generation ${generation ?? host.kernel.generation})`);
    phase(name, generation);
  };

  let init = host.kernel.spawn();
  init.mount('guestmemfs', '/mnt/guestmemfs');

  const vms: VmState[] = [];
  const devs: DevState[] = [];
  const slice = deviceSlice(c);
  for (let v = 0; v < c.vms; v++) {
    const name = `vm${v}`;
    const pageSize: '4k' | '2m' = c.pageSize === 'mixed' ? (v % 2 ? '4k' : '2m') : c.pageSize;
    const vmm = host.kernel.spawn();
    const file = `/mnt/guestmemfs/${name}-ram`;
    progress(`${name}: guest RAM ${formatBytes(c.guestMem)} in ${file}`);
    const ram = vmm.open(file, O_CREAT | O_RDWR, 0o600);
    vmm.ftruncate(ram, c.guestMem);
    const va = vmm.mmap(null, c.guestMem, PROT_READ | PROT_WRITE, MAP_SHARED, ram);
    const signature = enc.encode(`iommu-liveupdate ${name} guest RAM, written by its VMM before the first live update (seed ${c.seed})`);
    vmm.memWrite(va, signature);
    const fd = vmm.open('/dev/iommu', O_RDWR);
    const opt = vmm.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET });
    const ioasId = vmm.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    if (pageSize === '4k') vmm.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_HUGE_PAGES, op: IOMMU_OPTION_OP_SET, object_id: ioasId, val64: 0n });
    progress(`${name}: IOAS_MAP ${formatBytes(c.guestMem)} at IOVA ${hex(GUEST_IOVA)} (${pageSize === '4k' ? '4 KiB' : '2 MiB'} IOMMU pages)`);
    vmm.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: ioasId, user_va: va, length: c.guestMem, iova: GUEST_IOVA });
    const vm: VmState = { name, persistentId: Number(opt.val64), ioasId, pageSize, file, signature, devices: [] };
    for (let d = 0; d < c.devicesPerVm; d++) {
      const vfio = v * c.devicesPerVm + d;
      const bdf = bdfs[vfio]!;
      progress(`${name}: VFIO bind + attach ${bdf} (pins and maps ${formatBytes(c.guestMem)} on the first attach)`);
      const dev = vmm.open(`/dev/vfio/devices/vfio${vfio}`, O_RDWR);
      vmm.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
      vmm.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioasId });
      const iova = GUEST_IOVA + VMM_RESERVED + BigInt(d) * slice;
      const state: DevState = {
        bdf,
        vfio,
        kind: d % 2 ? 'nic' : 'nvme',
        vm: name,
        persistent: true,
        iova,
        length: slice,
        firstIndex: host.timeline.length,
        traffic: host.dmaTraffic({ bdf, iova, length: slice, pagesPerStep: c.pagesPerStep }),
      };
      vm.devices.push(state);
      devs.push(state);
    }
    vms.push(vm);
  }

  // The host's own device: a userspace driver on anonymous memory, in a plain iommufd.
  {
    const bdf = bdfs[nDev - 1]!;
    progress(`host: ${bdf} in a non-persistent iommufd over ${formatBytes(HOST_BUFFER)} of anonymous memory`);
    const drv = host.kernel.spawn();
    const fd = drv.open('/dev/iommu', O_RDWR);
    const ioasId = drv.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
    const va = drv.mmap(null, HOST_BUFFER, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
    drv.ioctl(fd, IOMMU_IOAS_MAP, { flags: RW, ioas_id: ioasId, user_va: va, length: HOST_BUFFER, iova: HOST_IOVA });
    const dev = drv.open(`/dev/vfio/devices/vfio${nDev - 1}`, O_RDWR);
    drv.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    drv.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioasId });
    devs.push({
      bdf,
      vfio: nDev - 1,
      kind: 'nic',
      vm: null,
      persistent: false,
      iova: HOST_IOVA,
      length: HOST_BUFFER,
      firstIndex: host.timeline.length,
      traffic: host.dmaTraffic({ bdf, iova: HOST_IOVA, length: HOST_BUFFER, pagesPerStep: c.pagesPerStep }),
    });
  }

  const guestIo = (n: number, what: string) => {
    for (let i = 0; i < n; i++) {
      progress(`${what}: DMA burst ${i + 1}/${n} on ${devs.length} devices`);
      host.phase('guest-io');
    }
  };
  guestIo(c.ioTicksBefore, 'guests running');

  const updates: UpdateResult[] = [];
  const blobs: Uint8Array[] = [];
  const summaries: KhoSummary[] = [];
  let firstBlobPa: bigint | null = null;
  for (let u = 1; u <= c.kexecs; u++) {
    updateLabel = `live update ${u}/${c.kexecs}: `;
    const fromGeneration = host.kernel.generation;
    let summary: KhoSummary | null = null;
    let blob: Uint8Array | null = null;
    if (c.kho) {
      // KHO DUMP: the handover tree is built and what it names preserved; iommufds freeze.
      init.write(init.open('/sys/kernel/kho/active', O_WRONLY), '1');
      blob = init.read(init.open('/sys/kernel/kho/dt', O_RDONLY), 16 << 20);
      if (u === 1) firstBlobPa = host.kernel.kho.blobPa;
      blobs.push(blob);
      summary = summariseKho(blob);
      summaries.push(summary);
      progress(`${updateLabel}KHO blob ${blob.length} bytes: ${summary.totals.areas} mappings, ${summary.totals.pageTablePages} page-table pages; kexec`);
    } else {
      progress(`${updateLabel}kexec without KHO (negative control)`);
    }
    // The blackout starts with the last phase before the jump: kho-dump, when KHO is used.
    const fromIndex = host.timeline.length - 1;
    init.kexecFileLoad({});
    init.reboot(LINUX_REBOOT_CMD_KEXEC);

    // The next kernel: init mounts guestmemfs again, each VMM re-claims its iommufd and devices.
    const gen = host.kernel;
    init = gen.spawn();
    init.mount('guestmemfs', '/mnt/guestmemfs');
    for (const vm of vms) {
      progress(`${updateLabel}${vm.name}: claiming persisted iommufd ${vm.persistentId}, re-binding ${vm.devices.length} devices`);
      const vmm = gen.spawn();
      let fd: number;
      try {
        fd = Number(dec.decode(vmm.read(vmm.open(`/sys/kernel/iommufd_persisted/${vm.persistentId}/iommufd`, O_RDONLY), 32)));
      } catch (e) {
        check(`update ${u}: ${vm.name} re-claims iommufd ${vm.persistentId}`, false, errorText(e));
        continue;
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
        problems.length ? problems.join('; ') : `fd ${fd}, IOAS ${vm.ioasId}, ${reattached}/${vm.devices.length} devices attached`,
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
    }
    host.phase('vmm-reattach');
    const toIndex = host.timeline.length - 1;
    const rejected = gen.dmesg().filter((l) => /not adopted|not restored|ignoring the handover/.test(l));
    if (rejected.length) check(`update ${u}: next kernel adopts every persistent domain`, false, rejected.map((l) => l.replace(/^\[[^\]]*\]\s*/, '')).join('; '));
    updates.push(updateResult(u, fromGeneration, gen.generation, blob, summary, host.timeline, fromIndex, toIndex, devs));
    updateLabel = '';
    guestIo(c.ioTicksAfter, u < c.kexecs ? `after live update ${u}` : 'after the live update');
  }

  progress('verifying');
  const devices = devs.map((d) => deviceResult(d, host.timeline));
  for (const d of devices) {
    const steps = d.steps;
    if (d.persistent) {
      const during = updates.map((u) => steps.filter((s) => s.timelineIndex >= u.blackout.fromIndex && s.timelineIndex <= u.blackout.toIndex).reduce((n, s) => n + s.pagesWritten + s.pagesVerified, 0));
      const ok = d.faults === 0 && d.mismatches === 0 && d.pagesVerified > 0 && during.every((n) => n > 0);
      d.status = ok ? 'ok' : 'failed';
      check(
        `${d.bdf} (${d.vm} ${d.kind}): DMA through every live update`,
        ok,
        `${d.faults} faults, ${d.mismatches} mismatches, ${d.pagesVerified} pages verified; pages moved during each update: ${during.join(', ')}`,
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
        `${before.reduce((n, s) => n + s.faults, 0)} faults before shutdown; after: ${after.reduce((n, s) => n + s.faults, 0)} faults (${d.faultReasons.map(faultReason).join(', ') || '-'}), ${leaked} pages got through; the IOMMU ${faulted ? `blocks it too (${faultReason(reasons[0]!)})` : 'still translates its window'}`,
      );
    }
  }

  const first = summaries[0];
  const result: SimulationResult = {
    schemaVersion: 1,
    command: 'simulate',
    config: {
      hostMemoryBytes: Number(c.hostMemory),
      guestmemfsBytes: Number(c.carveOut),
      vms: c.vms,
      guestMemBytes: Number(c.guestMem),
      devicesPerVm: c.devicesPerVm,
      pageSize: c.pageSize,
      kexecs: c.kexecs,
      seed: c.seed.toString(),
      pagesPerStep: c.pagesPerStep,
      kho: c.kho,
    },
    verdict: checks.every((x) => x.ok) ? 'pass' : 'fail',
    checks,
    vms: vms.map((v) => ({
      name: v.name,
      persistentId: v.persistentId,
      ioasId: v.ioasId,
      guestMemBytes: Number(c.guestMem),
      iova: hex(GUEST_IOVA),
      iommuPageSize: v.pageSize,
      file: v.file,
      devices: v.devices.map((d) => d.bdf),
    })),
    devices,
    updates,
    kho: first ? khoTables(first, blobs[0]!.length, firstBlobPa) : null,
    timeline: host.timeline.map((e) => ({ generation: e.generation, phase: e.phase, simNs: Number(e.simNs), wallMs: round(e.wallMs) })),
    wallMs: round(performance.now() - wall0),
  };
  return { result, blobs };
}

function updateResult(
  index: number,
  fromGeneration: number,
  toGeneration: number,
  blob: Uint8Array | null,
  s: KhoSummary | null,
  timeline: readonly { phase: string; simNs: bigint; wallMs: number }[],
  fromIndex: number,
  toIndex: number,
  devs: DevState[],
): UpdateResult {
  const from = timeline[fromIndex]!, to = timeline[toIndex]!;
  const byDevice = devs.map((d) => {
    const steps = stepsOf(d).filter((x) => x.timelineIndex >= fromIndex && x.timelineIndex <= toIndex);
    return {
      bdf: d.bdf,
      transactions: steps.reduce((n, x) => n + transactions(x), 0),
      bytes: steps.reduce((n, x) => n + bytes(x), 0),
      faults: steps.reduce((n, x) => n + x.faults, 0),
    };
  });
  const simNs = Number(to.simNs - from.simNs);
  return {
    index,
    fromGeneration,
    toGeneration,
    kho: {
      blobBytes: blob?.length ?? 0,
      iommufds: s?.totals.iommufds ?? 0,
      ioases: s?.totals.ioases ?? 0,
      mappings: s?.totals.areas ?? 0,
      mappedBytes: Number(s?.totals.mappedBytes ?? 0n),
      domains: s?.totals.domains ?? 0,
      pageTablePages: s?.totals.pageTablePages ?? 0,
      rootContextPages: s?.totals.rootContextPages ?? 0,
      preservedBytes: Number(s?.totals.preservedBytes ?? 0n),
      preservedRanges: s?.totals.preservedRanges ?? 0,
    },
    blackout: { from: from.phase, to: 'vmm-reattach', simNs, simMs: simNs / 1e6, wallMs: round(to.wallMs - from.wallMs), fromIndex, toIndex },
    dma: {
      transactions: byDevice.reduce((n, d) => n + d.transactions, 0),
      bytes: byDevice.reduce((n, d) => n + d.bytes, 0),
      faults: byDevice.reduce((n, d) => n + d.faults, 0),
      byDevice,
    },
  };
}

/** A device's steps, each tied to the timeline entry it ran after. */
function stepsOf(d: DevState): StepRecord[] {
  return d.traffic.steps.map((s, i) => ({
    timelineIndex: d.firstIndex + i,
    phase: s.phase,
    generation: s.generation,
    pagesWritten: s.pagesWritten,
    pagesVerified: s.pagesVerified,
    faults: s.faults.length,
    mismatches: s.mismatches.length,
    faultReasons: [...new Set(s.faults.map((f) => f.reason))].sort((a, b) => a - b),
  }));
}

/** One transaction per 4 KiB page a device tried to move. */
function transactions(s: StepRecord): number {
  return s.pagesWritten + s.pagesVerified + s.mismatches + s.faults;
}
/** Bytes that moved (a faulted access moves none). */
function bytes(s: StepRecord): number {
  return (s.pagesWritten + s.pagesVerified + s.mismatches) * PAGE;
}

function deviceResult(d: DevState, timeline: readonly { phase: string }[]): DeviceResult {
  const steps = stepsOf(d);
  // The host steps every generator after each phase, so step i is timeline entry firstIndex + i.
  for (const s of steps) {
    if (timeline[s.timelineIndex]?.phase !== s.phase) throw new Error(`internal: ${d.bdf} step at ${s.timelineIndex} is ${s.phase}, timeline says ${timeline[s.timelineIndex]?.phase}`);
  }
  const faulted = steps.find((s) => s.faults > 0);
  return {
    bdf: d.bdf,
    kind: d.kind,
    vm: d.vm,
    persistent: d.persistent,
    window: { iova: hex(d.iova), bytes: Number(d.length) },
    transactions: steps.reduce((n, s) => n + transactions(s), 0),
    bytes: steps.reduce((n, s) => n + bytes(s), 0),
    pagesWritten: d.traffic.steps.reduce((n, s) => n + s.pagesWritten, 0),
    pagesVerified: d.traffic.pagesVerified,
    faults: d.traffic.faults,
    mismatches: d.traffic.mismatches,
    faultReasons: [...new Set(steps.flatMap((s) => s.faultReasons))].sort((a, b) => a - b),
    firstFault: faulted ? { phase: faulted.phase, generation: faulted.generation } : null,
    iommuProbe: null,
    status: 'ok',
    steps,
  };
}

function khoTables(s: KhoSummary, blobBytes: number, blobPa: bigint | null): KhoTables {
  const owners = new Map<string, { ranges: number; bytes: bigint; first: bigint }>();
  const add = (owner: string, addr: bigint, len: bigint) => {
    const o = owners.get(owner);
    if (o) {
      o.ranges++;
      o.bytes += len;
      if (addr < o.first) o.first = addr;
    } else owners.set(owner, { ranges: 1, bytes: len, first: addr });
  };
  for (const r of s.preserved) add(r.owner.replace(/^intel-iommu domain \d+ page tables$/, 'intel-iommu domain page tables'), r.addr, r.len);
  if (blobPa !== null) add('KHO blob', blobPa, BigInt(Math.ceil(blobBytes / PAGE) * PAGE));
  return {
    blobBytes,
    blobAddress: blobPa === null ? null : hex(blobPa),
    domains: (s.intel?.domains ?? []).map((d) => ({
      index: d.index,
      persistentId: Number(d.persistentId),
      did: d.did,
      pgd: hex(d.pgd),
      levels: d.agaw + 2,
      devices: d.devices,
      tablePages: d.tablePages.reduce((n, r) => n + Number(r.len / 4096n), 0),
    })),
    areas: s.iommufds.flatMap((c) =>
      c.ioases.flatMap((i) =>
        i.areas.map((a) => ({
          iommufd: c.id,
          ioas: i.id,
          area: a.index,
          iova: hex(a.iova),
          last: hex(a.iova + a.len - 1n),
          bytes: Number(a.len),
          prot: protName(a.prot),
          segments: a.segments.map((g) => ({ ino: Number(g.ino), offset: hex(g.offset), bytes: Number(g.len) })),
        })),
      ),
    ),
    preserved: [...owners].map(([owner, o]) => ({ owner, ranges: o.ranges, bytes: Number(o.bytes), first: hex(o.first) })),
  };
}

/** `0000:01:00.0` → `01:00.0`, as the handover names devices. */
function shortBdf(bdf: string): string {
  return bdf.slice(5);
}

/**
 * The device's legacy context entry as the unit sees it (root table → context table), read
 * straight from host memory: present bit, SLPTPTR and DID.
 */
function contextEntry(host: Host, bdf: string): { present: boolean; slptptr: bigint; did: number } {
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

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
