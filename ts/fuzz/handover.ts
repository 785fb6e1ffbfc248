// The KHO handover as untrusted input: corrupt the blob of a multi-VM host between the old
// kernel's shutdown and the next kernel's boot (raw bytes, or semantic rewrites of the tree that
// still look consistent), boot, let each VMM re-claim its iommufd and re-attach its device as the
// README shows, and check that no device translates anything it did not translate before the
// update: no new IOVA, no other physical page, no write where it could only read.
import fc from 'fast-check';
import {
  decodeFdt,
  encodeFdt,
  Host,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION,
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
  type FdtNode,
  type Process,
} from '../index.js';

const MiB = 1n << 20n;
const PAGE = 4096n;
const R = IOMMU_IOAS_MAP_READABLE;
const W = IOMMU_IOAS_MAP_WRITEABLE;
const FIXED = IOMMU_IOAS_MAP_FIXED_IOVA;
const MNT = '/mnt/guestmemfs';

/** One IOMMU mapping a VMM makes: a piece of its guestmemfs file at an IOVA. */
export interface HandoverMap {
  /** Index into the VMM's mapped IOASes (0 = the one its device is attached to: IOAS 2). */
  ioas: number;
  iova: bigint;
  offset: bigint;
  length: bigint;
  write: boolean;
}

/**
 * The host every case starts from: `vms` VMMs (root, like most VMMs), each with an 8 MiB
 * guestmemfs file and a persistent iommufd holding three IOASes. IOAS 1 is empty; IOAS 2 (its
 * device attached) maps 4 MiB read/write in 2 MiB pages and 64 KiB read-only in 4 KiB pages;
 * IOAS 3 (no device) maps the file's last 2 MiB read/write. Every VMM uses the same IOVAs, so a
 * handover that hands one VM's areas, files or domain to another shows up as another physical
 * page. After the update the first VMM re-attaches its device by IOAS id (2), the second by the
 * restored HWPT's id (4), so a handover that shifts either numbering shows up too. Plus one
 * device of the host's own, in a plain iommufd over anonymous memory.
 */
export const HANDOVER_MAPS: readonly HandoverMap[] = [
  { ioas: 0, iova: 1n << 32n, offset: 0n, length: 4n * MiB, write: true },
  { ioas: 0, iova: (1n << 33n) + PAGE, offset: 4n * MiB, length: 64n * 1024n, write: false },
  { ioas: 1, iova: 1n << 32n, offset: 6n * MiB, length: 2n * MiB, write: true },
];
const FILE_SIZE = 8n * MiB;
const HOST_IOVA = 0x10_0000n;

export interface HandoverVm {
  bdf: string;
  vfio: string;
  file: string;
  /** Its persistent id. */
  pid: number;
}

export interface HandoverHost {
  host: Host;
  vms: HandoverVm[];
  /** The host's own device (ordinary iommufd). */
  hostBdf: string;
  /** Every IOVA the check translates for every device (each map's edges and middle, and next to them). */
  probes: BigUint64Array;
}

/** Boots the host of {@link HANDOVER_MAPS} with `vms` VMMs. */
export function bootHandoverHost(vms = 2, seed = 0): HandoverHost {
  const bdf = (i: number) => `0000:${(i + 1).toString(16).padStart(2, '0')}:00.0`;
  const host = Host.boot({ memory: 8n << 30n, seed, cmdline: `guestmemfs=${16 * vms + 8}M`, devices: Array.from({ length: vms + 1 }, (_, i) => ({ bdf: bdf(i) })) });
  const out: HandoverVm[] = [];
  const root = host.kernel.spawn();
  root.mount('guestmemfs', MNT);
  for (let k = 0; k < vms; k++) {
    const p = host.kernel.spawn();
    const file = `${MNT}/vm${k}`;
    const g = p.open(file, O_RDWR | O_CREAT, 0o600);
    p.ftruncate(g, FILE_SIZE);
    const va = p.mmap(null, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, g);
    p.memWrite(va, new TextEncoder().encode(`vm${k}`));
    const fd = p.open('/dev/iommu', O_RDWR);
    const pid = Number(p.ioctl(fd, IOMMU_OPTION, { option_id: IOMMU_OPTION_PERSISTENT, op: IOMMU_OPTION_OP_SET }).val64);
    p.ioctl(fd, IOMMU_IOAS_ALLOC, {}); // IOAS 1: empty
    const ioases = [0, 1].map(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number);
    for (const m of HANDOVER_MAPS) {
      p.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | (m.write ? W : 0) | FIXED, ioas_id: ioases[m.ioas]!, user_va: va + m.offset, length: m.length, iova: m.iova });
    }
    const vfio = `/dev/vfio/devices/vfio${k}`;
    const dev = p.open(vfio, O_RDWR);
    p.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
    p.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioases[0]! });
    out.push({ bdf: bdf(k), vfio, file, pid });
  }
  // The host's own device: not persistent, blocked from the kexec on.
  const fd = root.open('/dev/iommu', O_RDWR);
  const ioas = root.ioctl(fd, IOMMU_IOAS_ALLOC, {}).out_ioas_id as number;
  const anon = root.mmap(null, 16n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
  root.ioctl(fd, IOMMU_IOAS_MAP, { flags: R | W | FIXED, ioas_id: ioas, user_va: anon, length: 16n * PAGE, iova: HOST_IOVA });
  const dev = root.open(`/dev/vfio/devices/vfio${vms}`, O_RDWR);
  root.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd });
  root.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: ioas });
  const probes = new Set<bigint>([HOST_IOVA, HOST_IOVA + PAGE]);
  for (const m of HANDOVER_MAPS) {
    const last = m.iova + m.length - PAGE;
    for (const x of [m.iova - PAGE, m.iova, m.iova + PAGE, m.iova + m.length / 2n, last, m.iova + m.length]) probes.add(x & ~(PAGE - 1n));
  }
  return { host, vms: out, hostBdf: bdf(vms), probes: BigUint64Array.from([...probes].sort((a, b) => (a < b ? -1 : 1))) };
}

/** What each device translates at each probe IOVA: the PA (or -1n) for a read and for a write. */
export type Translations = Map<string, { read: BigUint64Array; write: BigUint64Array; readOk: Uint8Array; writeOk: Uint8Array }>;

/** Asks the IOMMU itself (not the device's bus mastering) for every device and probe. */
export function translations(host: Host, bdfs: readonly string[], probes: BigUint64Array): Translations {
  const out: Translations = new Map();
  for (const bdf of bdfs) {
    const dma = host.device(bdf).dma;
    const t = { read: new BigUint64Array(probes.length), write: new BigUint64Array(probes.length), readOk: new Uint8Array(probes.length), writeOk: new Uint8Array(probes.length) };
    for (const write of [false, true]) {
      const faults = new Uint8Array(probes.length);
      dma.translate(probes, write ? t.write : t.read, { write, faults });
      for (let i = 0; i < probes.length; i++) (write ? t.writeOk : t.readOk)[i] = faults[i] === 0 ? 1 : 0;
    }
    out.set(bdf, t);
  }
  return out;
}

/** Each translation in `after` that `before` did not have (or had onto another page), described. */
export function widened(before: Translations, after: Translations, probes: BigUint64Array): string[] {
  const bad: string[] = [];
  for (const [bdf, a] of after) {
    const b = before.get(bdf)!;
    for (let i = 0; i < probes.length; i++) {
      const iova = `0x${probes[i]!.toString(16)}`;
      if (a.readOk[i] && (!b.readOk[i] || a.read[i] !== b.read[i])) bad.push(`${bdf} reads IOVA ${iova} → PA 0x${a.read[i]!.toString(16)} (before: ${b.readOk[i] ? `0x${b.read[i]!.toString(16)}` : 'fault'})`);
      if (a.writeOk[i] && (!b.writeOk[i] || a.write[i] !== b.write[i])) bad.push(`${bdf} writes IOVA ${iova} → PA 0x${a.write[i]!.toString(16)} (before: ${b.writeOk[i] ? `0x${b.write[i]!.toString(16)}` : 'fault'})`);
    }
  }
  return bad;
}

// ---- mutations ----------------------------------------------------------------------------------

/** A corruption of the blob: raw bytes, or a rewrite of the decoded tree (re-encoded). */
export type HandoverMutation =
  | { k: 'flip'; bits: number[] }
  | { k: 'bytes'; at: number; bytes: number[] }
  | { k: 'u64'; word: number; value: bigint }
  | { k: 'swapValues'; name: string; a: number; b: number }
  | { k: 'setWord'; name: string; which: number; word: number; value: ValueChoice }
  | { k: 'swapNames'; parent: string; at: number; a: number; b: number }
  | { k: 'rename'; parent: string; at: number; which: number; name: number }
  | { k: 'relabel'; a: number; b: number }
  | { k: 'drop'; parent: string; at: number; which: number }
  | { k: 'seq'; edits: HandoverMutation[] };

/** A value to write: another property's word, a small step from the current one, or anything. */
export type ValueChoice = { k: 'other'; name: string; which: number; word: number } | { k: 'delta'; by: bigint } | { k: 'any'; v: bigint };

/** Properties a semantic edit targets (every value the next kernel acts on). */
export const HANDOVER_PROPS = ['guestmemfs', 'iommu-prot', 'iova-start', 'iova-len', 'domains', 'pinned-files', 'persistent_id', 'pgd', 'did', 'agaw', 'mem', 'bus', 'devfn', 'root-table', 'base', 'nblocks'];
/** Node lists whose children a semantic edit swaps, renames or drops (by the parent's name). */
export const HANDOVER_PARENTS = ['iommufds', 'ioases', 'ioas', 'domains', 'devices'];

const bytesOf = (n: number) => fc.array(fc.nat({ max: 255 }), { minLength: 1, maxLength: n });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const valueChoice: fc.Arbitrary<ValueChoice> = fc.oneof(
  fc.record({ k: fc.constant('other' as const), name: fc.constantFrom(...HANDOVER_PROPS), which: fc.nat(), word: fc.nat({ max: 7 }) }),
  fc.record({ k: fc.constant('delta' as const), by: fc.constantFrom(-(2n * MiB), -PAGE, -1n, 1n, PAGE, 2n * MiB, 1n << 32n) }),
  fc.record({ k: fc.constant('any' as const), v: fc.oneof(u64, fc.bigInt({ min: 0n, max: 16n })) }),
);

/** Raw corruptions: bit flips, byte runs, whole u64 words anywhere in the blob. */
export const rawMutation: fc.Arbitrary<HandoverMutation> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), bits: fc.array(fc.nat(), { minLength: 1, maxLength: 6 }) }),
  fc.record({ k: fc.constant('bytes' as const), at: fc.nat(), bytes: bytesOf(8) }),
  fc.record({ k: fc.constant('u64' as const), word: fc.nat(), value: u64 }),
);

/** One rewrite of the tree that keeps it well-formed (and often self-consistent). */
const semanticEdit: fc.Arbitrary<HandoverMutation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: fc.constant('swapValues' as const), name: fc.constantFrom(...HANDOVER_PROPS), a: fc.nat(), b: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('setWord' as const), name: fc.constantFrom(...HANDOVER_PROPS), which: fc.nat(), word: fc.nat({ max: 7 }), value: valueChoice }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('swapNames' as const), parent: fc.constantFrom(...HANDOVER_PARENTS), at: fc.nat(), a: fc.nat(), b: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('rename' as const), parent: fc.constantFrom(...HANDOVER_PARENTS), at: fc.nat(), which: fc.nat(), name: fc.nat({ max: 6 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('relabel' as const), a: fc.nat(), b: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('drop' as const), parent: fc.constantFrom(...HANDOVER_PARENTS), at: fc.nat(), which: fc.nat() }) },
);

/** Rewrites of the tree: one edit, or two or three in a row (a swap that also hides a domain...). */
export const semanticMutation: fc.Arbitrary<HandoverMutation> = fc.oneof(
  { weight: 3, arbitrary: semanticEdit },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('seq' as const), edits: fc.array(semanticEdit, { minLength: 2, maxLength: 3 }) }) },
);

interface Found {
  node: FdtNode;
  path: string;
}
/** Every node of the tree with its path, root first. */
function nodes(root: FdtNode): Found[] {
  const out: Found[] = [];
  const walk = (n: FdtNode, path: string) => {
    out.push({ node: n, path });
    for (const c of n.children) walk(c, `${path}/${c.name}`);
  };
  walk(root, '');
  return out;
}
/** The nodes whose children `parent` names: `ioas` is any IOAS node (its children are areas). */
function parents(root: FdtNode, parent: string): FdtNode[] {
  return nodes(root)
    .filter(({ path }) => (parent === 'ioas' ? /\/ioases\/[^/]+$/.test(path) : path.endsWith(`/${parent}`)))
    .map((f) => f.node);
}
function props(root: FdtNode, name: string): { node: FdtNode; i: number }[] {
  const out: { node: FdtNode; i: number }[] = [];
  for (const { node } of nodes(root)) node.properties.forEach((p, i) => p.name === name && out.push({ node, i }));
  return out;
}
const pick = <T>(xs: readonly T[], n: number): T | undefined => (xs.length ? xs[n % xs.length] : undefined);
const word = (v: Uint8Array, w: number): bigint => {
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  return v.length >= 8 ? dv.getBigUint64((w % Math.floor(v.length / 8)) * 8, true) : v.length >= 4 ? BigInt(dv.getUint32(0, true)) : BigInt(v[0] ?? 0);
};
function setWord(v: Uint8Array, w: number, x: bigint): Uint8Array {
  const out = v.slice();
  const dv = new DataView(out.buffer);
  const m = (1n << 64n) - 1n;
  if (out.length >= 8) dv.setBigUint64((w % Math.floor(out.length / 8)) * 8, ((x % (m + 1n)) + m + 1n) & m, true);
  else if (out.length >= 4) dv.setUint32(0, Number(x & 0xffff_ffffn), true);
  else if (out.length) out[0] = Number(x & 0xffn);
  return out;
}

/**
 * The blob with `m` applied; `null` when the edit does not apply to this tree (nothing to swap).
 * Semantic edits keep the tree valid; the blob may grow or shrink a little.
 */
export function mutateHandover(blob: Uint8Array, m: HandoverMutation): Uint8Array | null {
  if (m.k === 'flip' || m.k === 'bytes' || m.k === 'u64') {
    const out = blob.slice();
    const dv = new DataView(out.buffer);
    if (m.k === 'flip') for (const b of m.bits) out[(b >> 3) % out.length]! ^= 1 << (b & 7);
    else if (m.k === 'bytes') m.bytes.forEach((x, j) => (out[(m.at + j) % out.length] = x));
    else dv.setBigUint64((m.word % Math.floor(out.length / 8)) * 8, m.value, true);
    return out;
  }
  if (m.k === 'seq') {
    let out: Uint8Array | null = blob;
    for (const e of m.edits) out = mutateHandover(out, e) ?? out;
    return out === blob ? null : out;
  }
  const tree = decodeFdt(blob);
  switch (m.k) {
    case 'swapValues': {
      const ps = props(tree, m.name);
      const a = pick(ps, m.a);
      const b = pick(ps, m.b);
      if (!a || !b || a === b) return null;
      const va = a.node.properties[a.i]!.value;
      a.node.properties[a.i] = { name: m.name, value: b.node.properties[b.i]!.value };
      b.node.properties[b.i] = { name: m.name, value: va };
      break;
    }
    case 'setWord': {
      const t = pick(props(tree, m.name), m.which);
      if (!t) return null;
      const cur = t.node.properties[t.i]!.value;
      let x: bigint;
      if (m.value.k === 'other') {
        const o = pick(props(tree, m.value.name), m.value.which);
        if (!o) return null;
        x = word(o.node.properties[o.i]!.value, m.value.word);
      } else x = m.value.k === 'delta' ? word(cur, m.word) + m.value.by : m.value.v;
      t.node.properties[t.i] = { name: m.name, value: setWord(cur, m.word, x) };
      break;
    }
    case 'swapNames': {
      const p = pick(parents(tree, m.parent), m.at);
      const a = p && pick(p.children, m.a);
      const b = p && pick(p.children, m.b);
      if (!a || !b || a === b) return null;
      [a.name, b.name] = [b.name, a.name];
      break;
    }
    case 'rename': {
      const p = pick(parents(tree, m.parent), m.at);
      const c = p && pick(p.children, m.which);
      if (!c) return null;
      c.name = String(m.name);
      break;
    }
    case 'relabel': {
      // A consistent-looking swap of two contexts: their node names and their domains' persistent_id.
      const ctxs = parents(tree, 'iommufds')[0]?.children ?? [];
      const a = pick(ctxs, m.a);
      const b = pick(ctxs, m.b);
      if (!a || !b || a === b) return null;
      const [na, nb] = [a.name, b.name];
      [a.name, b.name] = [nb, na];
      for (const d of props(tree, 'persistent_id')) {
        const v = word(d.node.properties[d.i]!.value, 0);
        if (String(v) === na) d.node.properties[d.i] = { name: 'persistent_id', value: setWord(d.node.properties[d.i]!.value, 0, BigInt(nb)) };
        else if (String(v) === nb) d.node.properties[d.i] = { name: 'persistent_id', value: setWord(d.node.properties[d.i]!.value, 0, BigInt(na)) };
      }
      break;
    }
    case 'drop': {
      const p = pick(parents(tree, m.parent), m.at);
      if (!p || !p.children.length) return null;
      p.children.splice(m.which % p.children.length, 1);
      break;
    }
  }
  return encodeFdt(tree, { layout: 'libfdt' });
}

// ---- one case ---------------------------------------------------------------------------------

/** What one corrupted update did. */
export interface HandoverCaseResult {
  /** Whether the mutation applied (an edit with nothing to act on is skipped). */
  applied: boolean;
  /** Translations gained at boot, then after every VMM re-claimed and re-attached. */
  widenedAtBoot: string[];
  widenedAfterReattach: string[];
  /** The next kernel logged a refusal (something was not restored or not adopted). */
  degraded: boolean;
  /** The devices whose VMM's claim, bind and attach all went through. */
  reattached: string[];
  /** Translations devices had before and lack after the re-attach (what the refusals cost). */
  lostAfterReattach: string[];
  log: string;
}

/** Best effort, as a VMM does: a step that fails leaves the rest undone. */
function attempt(fn: () => void): boolean {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
}

/** Reads `/sys/kernel/iommufd_persisted/<pid>/iommufd`: the fd it prints. */
function claim(p: Process, pid: number): number {
  const f = p.open(`/sys/kernel/iommufd_persisted/${pid}/iommufd`, O_RDONLY);
  try {
    return Number(new TextDecoder().decode(p.read(f, 64)));
  } finally {
    p.close(f);
  }
}

/** What a VMM re-attaches after the update: its persistent id, and each device with the IOAS (new id) it goes back to. */
export interface HandoverVmm {
  pid: number;
  devices: { bdf: string; vfio: string; ptId: number }[];
}

/** What {@link corruptedLiveUpdate} saw. */
export interface CorruptedUpdate {
  applied: boolean;
  widenedAtBoot: string[];
  widenedAfterReattach: string[];
  /** The devices whose VMM's claim, bind and attach all went through. */
  reattached: string[];
  before: Translations;
  after: Translations;
}

/**
 * The live update of a host whose KHO is active, with `m` applied to the blob in physical memory
 * at the `jump` (after the old kernel's shutdown, before the next kernel reads it): `p` stages and
 * reboots; then each of `vmms` claims its persistent id and binds and attaches each of its devices,
 * best effort as a VMM does. Translations of `bdfs` over `probes` are compared at boot and after the
 * re-attach with those just before the kexec.
 */
export function corruptedLiveUpdate(host: Host, p: Process, m: HandoverMutation, vmms: readonly HandoverVmm[], bdfs: readonly string[], probes: BigUint64Array): CorruptedUpdate {
  const kho = host.kernel.kho;
  if (!kho.active) throw Object.assign(new Error('corruptedLiveUpdate: KHO is not active'), { code: 'ERR_INVALID_STATE' });
  const pa = kho.blobPa!;
  const mutated = mutateHandover(kho.blob!, m);
  const before = translations(host, bdfs, probes);
  let armed = mutated !== null;
  host.onPhase((e) => {
    if (!armed || e.phase !== 'jump') return;
    armed = false;
    host.memory.write(pa, mutated!);
  });
  p.kexecFileLoad({});
  p.reboot(LINUX_REBOOT_CMD_KEXEC);
  const widenedAtBoot = widened(before, translations(host, bdfs, probes), probes);
  const reattached: string[] = [];
  for (const vmm of vmms) {
    const q = host.kernel.spawn();
    let fd = -1;
    if (!attempt(() => void (fd = claim(q, vmm.pid)))) continue;
    for (const d of vmm.devices) {
      let dev = -1;
      const ok =
        attempt(() => void (dev = q.open(d.vfio, O_RDWR))) &&
        attempt(() => void q.ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, { iommufd: fd })) &&
        attempt(() => void q.ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, { pt_id: d.ptId }));
      if (ok) reattached.push(d.bdf);
    }
  }
  const after = translations(host, bdfs, probes);
  return { applied: mutated !== null, widenedAtBoot, widenedAfterReattach: widened(before, after, probes), reattached, before, after };
}

/** {@link corruptedLiveUpdate} of the host of {@link bootHandoverHost}, each VMM re-attaching its device (by IOAS or HWPT id). */
export function runHandoverCase(m: HandoverMutation, opts: { vms?: number; seed?: number } = {}): HandoverCaseResult {
  const h = bootHandoverHost(opts.vms ?? 2, opts.seed ?? 0);
  const { host } = h;
  const bdfs = [...h.vms.map((v) => v.bdf), h.hostBdf];
  const admin = host.kernel.spawn();
  const kho = admin.open('/sys/kernel/kho/active', O_WRONLY);
  admin.write(kho, '1');
  admin.close(kho);
  // IOASes 1..3, then the restored HWPT of IOAS 2: re-attach by IOAS id, or (odd VMMs) by HWPT id.
  const vmms = h.vms.map((v, k) => ({ pid: v.pid, devices: [{ bdf: v.bdf, vfio: v.vfio, ptId: k % 2 ? 4 : 2 }] }));
  const r = corruptedLiveUpdate(host, admin, m, vmms, bdfs, h.probes);
  const log = host.kernel.dmesg().join('\n');
  return {
    applied: r.applied,
    widenedAtBoot: r.widenedAtBoot,
    widenedAfterReattach: r.widenedAfterReattach,
    degraded: /not restored|not adopted|left blocked|KHO: ignoring the handover/.test(log),
    reattached: r.reattached,
    lostAfterReattach: widened(r.after, r.before, h.probes),
    log,
  };
}

/** A mutation drawn from `seed` (replayable: the same seed, the same mutation). */
export function mutationFromSeed(seed: number, kind: 'raw' | 'semantic'): HandoverMutation {
  return fc.sample(kind === 'raw' ? rawMutation : semanticMutation, { numRuns: 1, seed })[0]!;
}

// ---- a campaign ---------------------------------------------------------------------------------

/** Options of {@link fuzzHandover}. */
export interface HandoverFuzzOptions {
  /** Corrupted updates to run (default 1000). */
  runs?: number;
  /** fast-check seed (default: random). */
  seed?: number;
  /** Raw byte corruptions, semantic tree rewrites, or both, half and half (default). */
  kind?: 'raw' | 'semantic' | 'both';
  /** VMMs on the host (default 2). */
  vms?: number;
}

/** What {@link fuzzHandover} returns. */
export interface HandoverFuzzResult {
  ok: boolean;
  seed: number;
  /** Cases run, cases whose mutation applied, cases the next kernel refused something in. */
  runs: number;
  applied: number;
  degraded: number;
  /** Per mutation kind: cases run. */
  byKind: Record<string, number>;
  /** The shrunk mutation and what it widened, when a case failed. */
  failure?: { mutation: HandoverMutation; widened: string[]; log: string };
  elapsedMs: number;
}

/**
 * Runs `runs` corrupted live updates of the host of {@link bootHandoverHost} (fast-check, shrinking
 * a failure to its smallest mutation) and fails on the first device that translates more than it
 * did before the update, at boot or after its VMM re-claimed and re-attached.
 */
export function fuzzHandover(opts: HandoverFuzzOptions = {}): HandoverFuzzResult {
  const seed = opts.seed ?? (Math.random() * 2 ** 31) >>> 0;
  const kind = opts.kind ?? 'both';
  const arb = kind === 'raw' ? rawMutation : kind === 'semantic' ? semanticMutation : fc.oneof(rawMutation, semanticMutation);
  const t0 = performance.now();
  const stats = { runs: 0, applied: 0, degraded: 0, byKind: {} as Record<string, number> };
  let failure: HandoverFuzzResult['failure'];
  const details = fc.check(
    fc.property(arb, (m) => {
      const r = runHandoverCase(m, { vms: opts.vms });
      stats.runs++;
      stats.byKind[m.k] = (stats.byKind[m.k] ?? 0) + 1;
      if (r.applied) stats.applied++;
      if (r.degraded) stats.degraded++;
      const bad = [...r.widenedAtBoot.map((x) => `at boot: ${x}`), ...r.widenedAfterReattach.map((x) => `after re-attach: ${x}`)];
      if (bad.length) {
        failure = { mutation: m, widened: bad, log: r.log };
        return false;
      }
      return true;
    }),
    { numRuns: opts.runs ?? 1000, seed },
  );
  if (details.failed && failure && details.counterexample) failure.mutation = details.counterexample[0];
  return { ok: !details.failed, seed, ...stats, failure: details.failed ? failure : undefined, elapsedMs: performance.now() - t0 };
}
