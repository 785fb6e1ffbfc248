// Persistent iommufds across kexec (RFC patches 05-07, 10-13, completed): KHO DUMP writes
// /iommufd/iommufds/<persistent id>/ioases/<ioas id>/<area>; the next kernel verifies every
// handed-over domain against the areas and the guestmemfs blocks before adopting it, then offers
// each context at /sys/kernel/iommufd_persisted/<id>/iommufd, whose read claims it.
//
// The blob is untrusted input. What the next kernel trusts is what the previous one left outside
// it: the IOMMU's tables (the domains' page tables and the context entries pointing at them) and
// guestmemfs's own metadata, whose pin table records every long-term pin a persistent area holds,
// with its owner (persistent id, IOAS id), IOVA, file range and access (guestmemfs/pins.ts). So a
// context is offered only if each piece of each of its areas is one of those records, byte for
// byte, and every record it held is in the handover; otherwise it is not offered at all (dmesg
// says why). A domain is adopted only if its tables map exactly its IOAS's areas; a refused domain
// blocks its devices and the context is offered without it. The claimer must be allowed to open
// each file with the access its areas grant. A corrupted blob can then refuse or drop state, but
// not give a device a translation, a page or a permission it did not have.
import type { FdtWriter } from '../../fdt/index.js';
import { errno, KernelError } from '../../uapi/errno.js';
import { O_RDWR } from '../../uapi/mman.js';
import type { Guestmemfs, GuestmemfsInode } from '../guestmemfs/guestmemfs.js';
import { HOLDER_PGDS, pinOwner, samePin, type HolderRecord, type PinRecord } from '../guestmemfs/pins.js';
import type { Task } from '../file.js';
import type { IommuDomain } from '../iommu.js';
import { le, type Kho, type KhoNode, type KhoNotifier } from '../kho/kho.js';
import { HPAGE_PAGES, RunList } from '../mm.js';
import { IommufdFile } from './main.js';
import { IoptPages } from './pages.js';
import { abandonRestoredHwpts, HwptPaging, Ioas, RestoredAttach, type IommufdCtx, type IommufdSubsystem } from './private.js';

/**
 * In an IOAS's `domains`: a domain an unclaimed context lost (the kernel that handed it over did
 * not adopt it). It keeps its place, so the restored HWPTs after it keep their numbers.
 */
const DOMAIN_GONE = 0xffff_ffff;

/** `IOMMU_READ`, `IOMMU_WRITE`, `IOMMU_CACHE` as `iommu-prot` carries them. */
const IOMMU_READ = 1;
const IOMMU_WRITE = 2;
const IOMMU_CACHE = 4;

/** A piece of an area backed by one guestmemfs file, byte-exact. */
interface Segment {
  iova: bigint;
  ino: number;
  offset: bigint;
  len: bigint;
}
interface PersistedArea {
  iova: bigint;
  len: bigint;
  prot: number;
  segs: Segment[];
}
interface PersistedIoas {
  id: number;
  /** Indices under /intel-iommu/domains. */
  domains: number[];
  areas: PersistedArea[];
}
/** A context the previous kernel handed over, until a process claims it. */
interface PersistedCtx {
  pid: number;
  /** By old IOAS id, ascending (the claim numbers them 1..n in this order). */
  ioases: PersistedIoas[];
  /** Its adopted domains by index. */
  domains: Map<number, IommuDomain>;
  /** The previous kernel's pin records its areas matched: held until the claim re-pins them. */
  pins: { inode: GuestmemfsInode; handle: number }[];
  /** The previous kernel's holder records of its IOASes, likewise. */
  holders: number[];
}

/** The iommufd side of KHO: serialise at DUMP, verify and offer after kexec. */
export class PersistedIommufds implements KhoNotifier {
  /** Handed over and not yet claimed, by persistent id. */
  readonly pending = new Map<number, PersistedCtx>();
  private readonly claimed = new Set<number>();

  constructor(
    readonly iommufd: IommufdSubsystem,
    node?: KhoNode,
  ) {
    const svc = iommufd.svc;
    const iommu = svc.iommu;
    if (node) {
      try {
        this.parse(node);
      } catch (e) {
        svc.log(`iommufd: KHO state not restored: ${e instanceof KernelError ? e.detail : String(e)}`);
        this.pending.clear();
      }
    }
    // A handed-over domain no verified context refers to can never be claimed: block it.
    const used = new Set([...this.pending.values()].flatMap((c) => [...c.domains.values()]));
    for (const d of [...iommu.restoredDomains().values()]) if (!used.has(d)) iommu.rejectRestored(d, 'no persisted iommufd refers to it');
    // The old kernel's pin records: the accepted contexts hold theirs, every other one goes.
    iommufd.guestmemfs?.keepPins(new Set([...this.pending.values()].flatMap((c) => [...c.pins.map((x) => x.handle), ...c.holders])));
    for (const ctx of this.pending.values()) {
      svc.sysfs.attr(`/sys/kernel/iommufd_persisted/${ctx.pid}/iommufd`, 0o440, { show: (task) => `${this.claim(task, ctx.pid)}\n` });
      svc.log(`iommufd: persisted iommufd ${ctx.pid} ready at /sys/kernel/iommufd_persisted/${ctx.pid}/iommufd`);
    }
  }

  // ---- after kexec ------------------------------------------------------------------------------

  private parse(node: KhoNode): void {
    if (node.string('compatible') !== 'iommufd-v0') errno('EINVAL', 'unknown compatible');
    const gm = this.iommufd.guestmemfs;
    // guestmemfs's pin records by owner and IOVA (unique: the areas of one IOAS never overlap),
    // and its holder records by owner.
    const records: Records = { pins: new Map(), holders: new Map() };
    for (const [handle, rec] of gm?.pinTable.entries() ?? []) records.pins.set(`${rec.owner}/${rec.iova}`, { handle, rec });
    for (const [handle, rec] of gm?.pinTable.holders() ?? []) records.holders.set(rec.owner, { handle, rec });
    for (const c of node.child('iommufds')?.children() ?? []) {
      try {
        this.parseCtx(c, gm, records);
      } catch (e) {
        this.iommufd.svc.log(`iommufd: ${c.path} not restored: ${e instanceof KernelError ? e.detail : String(e)}`);
      }
    }
    // A domain two IOASes name belongs to neither (only one of them can be what it maps). The
    // holder records' pgds catch this already, except past an IOAS's first HOLDER_PGDS domains.
    const named = new Map<number, number>();
    for (const ctx of this.pending.values()) for (const ioas of ctx.ioases) for (const idx of new Set(ioas.domains)) if (idx !== DOMAIN_GONE) named.set(idx, (named.get(idx) ?? 0) + 1);
    for (const [idx, n] of named) {
      const d = this.iommufd.svc.iommu.restoredDomains().get(idx);
      if (n < 2 || !d) continue;
      for (const ctx of this.pending.values()) ctx.domains.delete(idx);
      this.iommufd.svc.iommu.rejectRestored(d, `${n} persisted IOASes name it`);
    }
  }

  private parseCtx(c: KhoNode, gm: Guestmemfs | null, records: Records): void {
    {
      const ctx: PersistedCtx = { pid: c.id(), ioases: [], domains: new Map(), pins: [], holders: [] };
      if (ctx.pid === 0 || ctx.pid > 0xffff_ffff || this.pending.has(ctx.pid)) errno('EINVAL', `${c.path}: bad persistent id`);
      for (const i of c.child('ioases')?.children() ?? []) {
        const ioas: PersistedIoas = { id: i.id(), domains: u32s(i, 'domains'), areas: [] };
        if (ioas.id === 0 || ioas.id > 0xffff_ffff) errno('EINVAL', `${i.path}: bad IOAS id`);
        for (const a of i.children()) {
          const area: PersistedArea = { iova: a.u64('iova-start'), len: a.u64('iova-len'), prot: a.u32('iommu-prot'), segs: [] };
          const raw = a.raw('guestmemfs');
          if (raw.length % 32) errno('EINVAL', `${a.path}/guestmemfs: not segments`);
          const dv = new DataView(raw.buffer, raw.byteOffset, raw.length);
          for (let k = 0; k < raw.length; k += 32) {
            area.segs.push({ iova: dv.getBigUint64(k, true), ino: Number(dv.getBigUint64(k + 8, true)), offset: dv.getBigUint64(k + 16, true), len: dv.getBigUint64(k + 24, true) });
          }
          this.checkArea(area, a.path, gm);
          ioas.areas.push(area);
        }
        // Areas of one IOAS never overlap (iopt_check_iova would refuse the claim half-way).
        const sorted = [...ioas.areas].sort((x, y) => (x.iova < y.iova ? -1 : 1));
        for (let k = 1; k < sorted.length; k++) {
          if (sorted[k]!.iova <= sorted[k - 1]!.iova + sorted[k - 1]!.len - 1n) errno('EINVAL', `${i.path}: areas overlap`);
        }
        if (ctx.ioases.some((x) => x.id === ioas.id)) errno('EINVAL', `${i.path}: duplicate IOAS id`);
        ctx.ioases.push(ioas);
      }
      ctx.ioases.sort((a, b) => a.id - b.id);
      if (!gm) errno('EINVAL', 'guestmemfs was not handed over: nothing vouches for its IOASes');
      this.matchRecords(ctx, gm, records);
      // Trust, but verify: each domain must translate exactly its IOAS's areas onto the blocks.
      for (const ioas of ctx.ioases) {
        const holder = records.holders.get(pinOwner(ctx.pid, ioas.id))!.rec;
        for (const [k, idx] of ioas.domains.entries()) {
          if (idx === DOMAIN_GONE) continue;
          const d = this.iommufd.svc.iommu.restoredDomains().get(idx);
          if (d && k < HOLDER_PGDS && d.pgd !== holder.pgds[k]) {
            errno('EINVAL', `IOAS ${ioas.id}: domain ${idx} is not the page table guestmemfs recorded for it`);
          }
          if (!d) {
            this.iommufd.svc.log(`iommufd: IOAS ${ioas.id} of persisted iommufd ${ctx.pid}: domain ${idx} was not restored; not adopted`);
            continue;
          }
          if (d.persistentId !== ctx.pid) {
            this.iommufd.svc.iommu.rejectRestored(d, `persistent id ${d.persistentId} is not iommufd ${ctx.pid}'s`);
            continue;
          }
          let why: string | null;
          try {
            why = verifyDomain(d, ioas.areas, gm!);
          } catch (e) {
            why = e instanceof KernelError ? (e.detail ?? e.code) : String((e as Error).message ?? e);
          }
          if (why) this.iommufd.svc.iommu.rejectRestored(d, why);
          else ctx.domains.set(idx, d);
        }
      }
      this.pending.set(ctx.pid, ctx);
    }
  }

  /**
   * guestmemfs's records must account for the context exactly: each IOAS is a holder record of
   * this persistent id with as many domains, and every holder of this persistent id is in the
   * handover; each piece of each area is one of the pin records of its IOAS, byte for byte (file,
   * offset, length, IOVA, access), and every pin record of this persistent id is in the handover.
   * The matched records are the context's until it is claimed.
   */
  private matchRecords(ctx: PersistedCtx, gm: Guestmemfs, records: Records): void {
    const pid = BigInt(ctx.pid);
    for (const ioas of ctx.ioases) {
      const holder = records.holders.get(pinOwner(ctx.pid, ioas.id));
      if (!holder) errno('EINVAL', `IOAS ${ioas.id}: guestmemfs has no record of it`);
      if (holder.rec.domains !== ioas.domains.length) errno('EINVAL', `IOAS ${ioas.id}: ${ioas.domains.length} domains, guestmemfs recorded ${holder.rec.domains}`);
      ctx.holders.push(holder.handle);
    }
    const ioases = new Set(ctx.holders);
    for (const { handle, rec } of records.holders.values()) if (rec.owner >> 32n === pid && !ioases.has(handle)) errno('EINVAL', `IOAS ${rec.owner & 0xffff_ffffn} of it is not in the handover`);
    const seen = new Set<number>();
    for (const ioas of ctx.ioases) {
      const owner = pinOwner(ctx.pid, ioas.id);
      for (const area of ioas.areas) {
        for (const s of area.segs) {
          const want = { owner, iova: s.iova, ino: s.ino, offset: s.offset, len: s.len, access: area.prot & (IOMMU_READ | IOMMU_WRITE) };
          const got = records.pins.get(`${owner}/${s.iova}`);
          if (!got || !samePin(got.rec, want) || seen.has(got.handle)) {
            errno('EINVAL', `IOAS ${ioas.id}, IOVA 0x${s.iova.toString(16)}: no long-term pin of inode ${s.ino} for it (the handover does not match guestmemfs)`);
          }
          seen.add(got.handle);
          ctx.pins.push({ inode: gm.inodeByIno(s.ino)!, handle: got.handle });
        }
      }
    }
    let missing = 0;
    for (const { handle, rec } of records.pins.values()) if (rec.owner >> 32n === pid && !seen.has(handle)) missing++;
    if (missing) errno('EINVAL', `${missing} of its long-term pins are not in the handover`);
  }

  /** Values a corrupted blob could carry that must not reach the model. */
  private checkArea(area: PersistedArea, path: string, gm: Guestmemfs | null): void {
    if (area.len === 0n || area.iova + area.len - 1n > 0xffff_ffff_ffff_ffffn) errno('EINVAL', `${path}: bad range`);
    if (area.prot & ~(IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE) || !(area.prot & (IOMMU_READ | IOMMU_WRITE))) errno('EINVAL', `${path}: bad iommu-prot`);
    if (!gm) errno('EINVAL', `${path}: guestmemfs was not handed over`);
    let at = area.iova;
    for (const s of area.segs) {
      const inode = gm.inodeByIno(s.ino);
      if (s.iova !== at || s.len === 0n || !inode) errno('EINVAL', `${path}: bad segment`);
      if (s.offset + s.len > BigInt(inode.npages) * 4096n) errno('EINVAL', `${path}: segment beyond its file`);
      at += s.len;
    }
    if (at !== area.iova + area.len) errno('EINVAL', `${path}: segments do not cover the area`);
  }

  /** Reading /sys/kernel/iommufd_persisted/<id>/iommufd: a new fd in `task` holding the context. */
  claim(task: Task, pid: number): number {
    const rec = this.pending.get(pid);
    if (!rec) return errno(this.claimed.has(pid) ? 'EBUSY' : 'ENOENT', `persisted iommufd ${pid} already claimed`);
    const iommufd = this.iommufd;
    const gm = iommufd.guestmemfs!;
    // As mmap of each file would demand: read for a readable area, write for a writable one.
    for (const ioas of rec.ioases) {
      for (const area of ioas.areas) {
        const want = (area.prot & IOMMU_READ ? 4 : 0) | (area.prot & IOMMU_WRITE ? 2 : 0);
        for (const s of area.segs) gm.permission(task, s.ino - 2, want);
      }
    }
    const ictx = new IommufdFile(iommufd, O_RDWR);
    iommufd.ctxs.add(ictx);
    ictx.persistentId = pid;
    iommufd.persistent.set(pid, ictx);
    let attached: RestoredAttach[];
    try {
      attached = this.build(ictx, rec, task);
    } catch (e) {
      // All or nothing: the half-built context goes without touching the restored domains (they
      // keep translating), and the record stays claimable.
      abandonRestoredHwpts(ictx);
      iommufd.persistent.delete(pid);
      ictx.persistentId = 0;
      ictx.put();
      throw e;
    }
    // The areas hold the file pins now, and each device still on a restored domain holds its HWPT.
    for (const { inode, handle } of rec.pins) inode.unpin(handle);
    for (const h of rec.holders) gm.pinTable.remove(h);
    for (const ra of attached) {
      ra.hwpt.users++;
      iommufd.restoredAttach.set(ra.sid, ra);
    }
    this.pending.delete(pid);
    this.claimed.add(pid);
    const fd = task.installFd(ictx);
    iommufd.svc.log(`iommufd: persisted iommufd ${pid} claimed by pid ${task.pid} as fd ${fd}`);
    return fd;
  }

  /** Builds the claimed context; returns the restored attachments to take once it is complete. */
  private build(ictx: IommufdCtx, rec: PersistedCtx, task: Task): RestoredAttach[] {
    const iommu = this.iommufd.svc.iommu;
    const attached: RestoredAttach[] = [];
    const gm = this.iommufd.guestmemfs!;
    // As the RFC does, the IOASes get fresh ids 1, 2, ... in their old order; the restored HWPTs
    // follow them, in the same order, so a VMM can tell which is which. A domain this kernel did
    // not adopt keeps its number unused, so no other HWPT takes the id its VMM expects.
    const ioases = rec.ioases.map(() => {
      const ioas = new Ioas(ictx);
      ictx.reserve(ioas);
      ioas.register();
      ictx.finalize(ioas);
      return ioas;
    });
    for (const [k, p] of rec.ioases.entries()) {
      const ioas = ioases[k]!;
      for (const idx of p.domains) {
        const d = rec.domains.get(idx);
        if (!d) {
          ictx.reserveId();
          continue;
        }
        const hwpt = new HwptPaging(ioas, d, false);
        hwpt.autoDomain = true;
        ioas.iopt.adoptDomain(d);
        hwpt.inIopt = true;
        // The devices still translating through it keep their reserved regions (the MSI window)
        // in the IOAS until they leave it, as they had before the update.
        for (const sid of d.devices) {
          const ra = new RestoredAttach(sid, hwpt);
          for (const r of iommu.getResvRegions(sid)) ioas.iopt.reserveIova(r.start, r.start + r.length - 1n, ra);
          attached.push(ra);
        }
        ictx.reserve(hwpt);
        ictx.finalize(hwpt);
        ioas.hwpts.push(hwpt);
        ioas.recordDomains();
      }
      for (const area of p.areas) {
        for (const s of area.segs) {
          const inode = gm.inodeByIno(s.ino)!;
          const first = s.offset & ~4095n;
          const npages = Number((s.offset + s.len - first + 4095n) / 4096n);
          const pages = new IoptPages(
            { type: 'file', obj: inode, page: Number(first / 4096n) },
            first,
            npages,
            !!(area.prot & IOMMU_WRITE),
            this.iommufd.svc.pageRefs,
            ictx.accounter(task),
            [{ file: inode, first: 0, last: npages - 1, filePage: Number(first / 4096n) }],
          );
          ioas.iopt.adoptArea(s.iova, pages, s.offset - first, s.len, { read: !!(area.prot & IOMMU_READ), write: !!(area.prot & IOMMU_WRITE) });
        }
      }
    }
    return attached;
  }

  // ---- KEXEC_KHO_DUMP / ABORT -----------------------------------------------------------------

  /** Writes `/iommufd`: every live persistent context, and those handed over but not claimed. */
  dump(w: FdtWriter, kho: Kho): void {
    kho.inject('iommufd:dump');
    const domainIndex = new Map(this.iommufd.svc.iommu.persistentDomains().map((d, i) => [d, i]));
    const ctxs: PersistedCtx[] = [];
    for (const [pid, ictx] of this.iommufd.persistent) ctxs.push(snapshot(pid, ictx, domainIndex));
    for (const rec of this.pending.values()) {
      const byDomain = new Map([...rec.domains].map(([idx, d]) => [idx, domainIndex.get(d)]));
      ctxs.push({ ...rec, ioases: rec.ioases.map((i) => ({ ...i, domains: i.domains.map((x) => byDomain.get(x) ?? DOMAIN_GONE) })) });
    }
    ctxs.sort((a, b) => a.pid - b.pid);
    w.beginNode('iommufd');
    w.propertyString('compatible', 'iommufd-v0');
    w.beginNode('iommufds');
    for (const c of ctxs) {
      w.beginNode(String(c.pid));
      w.beginNode('ioases');
      for (const i of c.ioases) {
        kho.inject('iommufd:ioas');
        w.beginNode(String(i.id));
        w.property('domains', u32Bytes(i.domains));
        const inos = [...new Set(i.areas.flatMap((a) => a.segs.map((s) => s.ino)))];
        w.property('pinned-files', le64s(inos.map(BigInt)));
        i.areas.forEach((a, n) => {
          w.beginNode(String(n));
          w.property('iova-start', le.u64(a.iova));
          w.property('iova-len', le.u64(a.len));
          w.property('iommu-prot', le.u32(a.prot));
          w.property('guestmemfs', le64s(a.segs.flatMap((s) => [s.iova, BigInt(s.ino), s.offset, s.len])));
          w.endNode();
        });
        w.endNode();
      }
      w.endNode();
      w.endNode();
    }
    w.endNode();
    w.endNode();
  }

  /** KEXEC_KHO_ABORT: nothing to undo (the freeze is read from KHO's state). */
  abort(): void {}
}

/** guestmemfs's records, as the next kernel finds them: pins by owner and IOVA, holders by owner. */
interface Records {
  pins: Map<string, { handle: number; rec: PinRecord }>;
  holders: Map<bigint, { handle: number; rec: HolderRecord }>;
}

/** The persisted form of a live context. */
function snapshot(pid: number, ictx: IommufdCtx, domainIndex: Map<IommuDomain, number>): PersistedCtx {
  const ioases: PersistedIoas[] = [];
  // By id: the next kernel numbers them 1..n in this order.
  for (const obj of [...ictx.objects.values()].sort((a, b) => a.id - b.id)) {
    if (!(obj instanceof Ioas)) continue;
    const areas: PersistedArea[] = [];
    for (const area of obj.iopt.areas) {
      const prot = (area.prot.read ? IOMMU_READ : 0) | (area.prot.write ? IOMMU_WRITE : 0) | IOMMU_CACHE;
      // Exactly what its pins recorded: the next kernel matches one against the other.
      const segs: Segment[] = area.pins.map(({ rec }) => ({ iova: rec.iova, ino: rec.ino, offset: rec.offset, len: rec.len }));
      if (!segs.length) errno('EINVAL', `iommufd ${pid}: an area without guestmemfs backing`);
      areas.push({ iova: area.start, len: area.length, prot, segs });
    }
    const domains = obj.hwpts.map((h) => domainIndex.get(h.domain)).filter((x): x is number => x !== undefined);
    ioases.push({ id: obj.id, domains, areas });
  }
  return { pid, ioases, domains: new Map(), pins: [], holders: [] };
}

/**
 * Trust but verify: `d` must map every page of `areas` onto the guestmemfs block the segment
 * names, with the area's permissions, and map nothing else, through tables that were all handed
 * over. The check is ONE native walk of the tables (verifies and counts). Returns why not, or null.
 */
function verifyDomain(d: IommuDomain, areas: PersistedArea[], gm: Guestmemfs): string | null {
  const runs = new RunList();
  // Where each area's runs end, for their permissions.
  const ends: number[] = [];
  let expected = 0;
  for (const area of areas) {
    for (const s of area.segs) {
      const inode = gm.inodeByIno(s.ino);
      const firstPage = Number(s.iova >> 12n);
      const n = Number((s.iova + s.len - 1n) >> 12n) - firstPage + 1;
      let filePage = Number(s.offset >> 12n);
      if (!inode || filePage + n > inode.npages) return `segment of inode ${s.ino} beyond its file`;
      expected += n;
      // A 2 MiB block is physically contiguous: one run per block piece.
      for (let page = firstPage, end = firstPage + n; page < end; ) {
        const k = Math.min(end - page, HPAGE_PAGES - (filePage % HPAGE_PAGES));
        runs.append(page, gm.blockPfn(inode.slot, Math.floor(filePage / HPAGE_PAGES)) + (filePage % HPAGE_PAGES), k);
        page += k;
        filePage += k;
      }
    }
    ends.push(runs.count);
  }
  // IOMMU_READ and IOMMU_WRITE are the walk's read and write bits.
  const prots = new Uint8Array(runs.count);
  ends.forEach((end, k) => prots.fill(areas[k]!.prot & (IOMMU_READ | IOMMU_WRITE), k ? ends[k - 1] : 0, end));
  const n = runs.count;
  const a = d.verifyHandover(runs.idx.subarray(0, n), runs.pfn.subarray(0, n), runs.len.subarray(0, n), prots);
  if (a.mismatch !== null) return `IOVA 0x${a.mismatch.toString(16)} does not map the file's block with the area's permissions`;
  if (a.corrupt !== null) return a.corrupt;
  if (a.foreignTable !== null) return `table 0x${a.foreignTable.toString(16)} was not handed over`;
  if (a.pages !== expected) return `the page table maps ${a.pages} pages, the areas ${expected}`;
  return null;
}

function u32s(n: KhoNode, name: string): number[] {
  const v = n.raw(name);
  if (v.length % 4) errno('EINVAL', `${n.path}/${name}: not u32[]`);
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  return Array.from({ length: v.length / 4 }, (_, i) => dv.getUint32(4 * i, true));
}

function u32Bytes(xs: number[]): Uint8Array {
  const b = new Uint8Array(4 * xs.length);
  const v = new DataView(b.buffer);
  xs.forEach((x, i) => v.setUint32(4 * i, x, true));
  return b;
}

function le64s(xs: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * xs.length);
  const v = new DataView(b.buffer);
  xs.forEach((x, i) => v.setBigUint64(8 * i, x, true));
  return b;
}
