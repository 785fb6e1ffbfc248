// The VT-d side of the 2024 RFC's hand-over (drivers/iommu/intel/serialise.c, RFC patches 08/09):
// KEXEC_KHO_DUMP writes `/intel-iommu` (root table, context tables, every persistent domain with
// its table pages, DID and devices), and the next kernel's driver adopts it at init: the unit
// must still translate through the handed-over root table; context tables and page tables are
// reused in place, DIDs reclaimed, and each device keeps its context entry if it still points at
// its domain. Every other live context entry is blocked.
import type { FdtWriter } from '../../fdt/index.js';
import { errno } from '../../uapi/errno.js';
import { le, type Kho, type KhoNode, type KhoNotifier } from '../kho/kho.js';
import { DmarDomain, GSTS_TES, IDA_START_DID, sidName, type IntelIommu } from './iommu.js';

/** Adopts `/intel-iommu` (`node`): the root table, or a KernelError for a handover not to trust. */
export function intelKhoRestore(intel: IntelIommu, node: KhoNode): bigint {
  const mem = intel.memory;
  if (node.string('compatible') !== 'intel-iommu-v0') errno('EINVAL', 'unknown compatible');
  const root = node.u64('root-table');
  const regs = intel.unit.registers();
  if (!(regs.gsts & GSTS_TES) || (regs.rtaddr & ~0xfffn) !== root) errno('EINVAL', 'the unit does not translate through the handed-over root table');
  for (const m of node.mem('mem')) if (!intel.preservedRange(m.addr, m.len)) errno('EINVAL', `table page 0x${m.addr.toString(16)} was not preserved`);
  adoptContextTables(intel, root);
  const keep = new Set<number>();
  const memSize = mem.size;
  for (const d of node.child('domains')?.children() ?? []) {
    const index = d.id();
    const pgd = d.u64('pgd');
    const levels = d.u32('agaw') + 2;
    const did = d.u32('did');
    if (levels !== intel.levels) errno('EINVAL', `${d.path}: agaw ${levels - 2} is not the unit's`);
    if (did !== 0 && (did < IDA_START_DID || did >= intel.ndoms || intel.domainIds.has(did))) errno('EINVAL', `${d.path}: bad did ${did}`);
    const pages = tablePages(d, pgd, memSize);
    if (!mem.isAllocatedMany(pages, 4096n)) errno('EINVAL', `${d.path}: a table page was not preserved`);
    const domain = new DmarDomain(intel, intel.unit.adoptPageTable(pgd, levels));
    domain.persistentId = Number(d.u64('persistent_id'));
    domain.handedOverPages = pages;
    for (const dev of d.child('devices')?.children() ?? []) {
      const sid = (dev.u8('bus') << 8) | dev.u8('devfn');
      if (!adoptDevice(intel, domain, sid, pgd, did)) {
        intel.svc.log(`DMAR: ${sidName(sid)}: context entry does not point at restored domain ${index}; left blocked`);
        continue;
      }
      keep.add(sid);
    }
    if (did !== 0 && domain.devices.size) intel.domainIds.add(did);
    intel.restored.set(index, domain);
    intel.svc.log(`DMAR: restored persistent domain ${index} (persistent id ${domain.persistentId}, did ${domain.did}, ${domain.devices.size} devices, ${pages.length} table pages)`);
  }
  intel.rootEntry = root;
  blockOthers(intel, keep);
  return root;
}

/**
 * A domain's `mem` (`kho_mem[]`, one 4 KiB table page each) as page addresses, read straight from
 * the property: no object per page. The pgd must be among them.
 */
function tablePages(d: KhoNode, pgd: bigint, memSize: bigint): BigUint64Array {
  const raw = d.raw('mem');
  if (raw.length % 16) errno('EINVAL', `${d.path}/mem: not kho_mem[]`);
  const v = new DataView(raw.buffer, raw.byteOffset, raw.length);
  const pages = new BigUint64Array(raw.length / 16);
  let hasPgd = false;
  let bad = false;
  for (let i = 0; i < pages.length; i++) {
    const addr = v.getBigUint64(16 * i, true);
    pages[i] = addr;
    hasPgd ||= addr === pgd;
    bad ||= v.getBigUint64(16 * i + 8, true) !== 4096n || (addr & 0xfffn) !== 0n || addr + 4096n > memSize;
  }
  if (!hasPgd) errno('EINVAL', `${d.path}: pgd not among its pages`);
  if (bad) errno('EINVAL', `${d.path}: bad mem entry`);
  return pages;
}

/** The context tables the root table `root` points at, each of which must be preserved. */
export function adoptContextTables(intel: IntelIommu, root: bigint): void {
  const rootTable = intel.table(root);
  for (let bus = 0; bus < 256; bus++) {
    const re = rootTable[2 * bus]!;
    if (!(re & 1n)) continue;
    const ctx = re & 0x000f_ffff_ffff_f000n;
    if (!intel.preservedRange(ctx, 4096n)) errno('EINVAL', `context table of bus ${bus} was not preserved`);
    intel.contextTables.set(bus, ctx);
  }
}

/**
 * `sid` stays on `domain` if its context entry is present, points at `pgd` and holds `did`:
 * attached with no gap (and re-bound by its owner later). False when the entry says otherwise.
 */
export function adoptDevice(intel: IntelIommu, domain: DmarDomain, sid: number, pgd: bigint, did: number): boolean {
  const ce = intel.contextTables.get(sid >> 8);
  const lo = ce === undefined ? 0n : intel.memory.readU64(ce + 16n * BigInt(sid & 0xff));
  const hi = ce === undefined ? 0n : intel.memory.readU64(ce + 16n * BigInt(sid & 0xff) + 8n);
  if (!(lo & 1n) || (lo & 0x000f_ffff_ffff_f000n) !== pgd || Number((hi >> 8n) & 0xffffn) !== did) return false;
  domain.adoptDevice(sid, did);
  intel.attached.set(sid, domain);
  intel.restoredAttach.add(sid);
  return true;
}

/** Any live context entry outside `keep` belongs to no adopted domain: blocked now. */
export function blockOthers(intel: IntelIommu, keep: ReadonlySet<number>): void {
  for (const [bus, ctx] of intel.contextTables) {
    const entries = intel.table(ctx);
    for (let devfn = 0; devfn < 256; devfn++) {
      const sid = (bus << 8) | devfn;
      if (keep.has(sid) || !(entries[2 * devfn]! & 1n)) continue;
      intel.svc.log(`DMAR: ${sidName(sid)}: its context entry belongs to no handed-over domain: not adopted, blocked`);
      intel.clearContext(sid);
    }
  }
}

/** KEXEC_KHO_DUMP: `/intel-iommu` with the root table and every persistent domain. */
export function intelKhoDump(intel: IntelIommu, w: FdtWriter, kho: Kho): void {
  kho.inject('intel-iommu:dump');
  w.beginNode('intel-iommu');
  w.propertyString('compatible', 'intel-iommu-v0');
  w.property('root-table', le.u64(intel.rootEntry));
  const tables = [intel.rootEntry, ...intel.contextTables.values()];
  w.property('mem', le.mem(tables.map((addr) => ({ addr, len: 4096n }))));
  // A LUO kexec writes this node too: tables the iommu FLB preserved already keep its marks.
  for (const t of tables) if (!intel.memory.isPreserved(t)) kho.preserve(t, 0);
  w.beginNode('domains');
  intel.persistentDomains().forEach((d, i) => {
    kho.inject('intel-iommu:domain');
    const table = d.pt.tablePages();
    w.beginNode(String(i));
    w.property('mem', le.pages(table));
    w.property('persistent_id', le.u64(BigInt(d.persistentId)));
    w.property('pgd', le.u64(d.pt.pgd));
    w.property('agaw', le.u32(d.pt.levels - 2));
    w.property('did', le.u32(d.did));
    w.beginNode('devices');
    [...d.devices].sort((a, b) => a - b).forEach((sid, j) => {
      w.beginNode(String(j));
      w.property('bus', new Uint8Array([sid >> 8]));
      w.property('devfn', new Uint8Array([sid & 0xff]));
      w.endNode();
    });
    w.endNode();
    w.endNode();
    kho.preserveMany(table);
  });
  w.endNode();
  w.endNode();
}

/** The driver's KHO notifier: DUMP writes `/intel-iommu`; ABORT has nothing beyond the marks KHO undoes. */
export function intelKhoNotifier(intel: IntelIommu): KhoNotifier {
  return { dump: (w, kho) => intelKhoDump(intel, w, kho), abort: () => {} };
}
