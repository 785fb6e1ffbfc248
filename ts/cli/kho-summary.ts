// Reading a KHO handover blob back (`/sys/kernel/kho/dt`): the persisted iommufds with their
// IOASes and areas, the Intel driver's domains and tables, guestmemfs, and the memory each hands
// over. KHO values are native (little-endian) u64/u32, unlike the FDT's big-endian cells.
import { decodeFdtBlob, type FdtNode } from '../index.js';

/** A KHO node or property that is not what the handover format says (path + why). */
export class KhoFormatError extends Error {
  constructor(
    readonly path: string,
    why: string,
  ) {
    super(`${path || '/'}: ${why}`);
    this.name = 'KhoFormatError';
  }
}

export interface MemRange {
  addr: bigint;
  len: bigint;
}
export interface KhoSegment {
  iova: bigint;
  ino: bigint;
  offset: bigint;
  len: bigint;
}
export interface KhoArea {
  index: number;
  iova: bigint;
  len: bigint;
  /** `IOMMU_READ` 1, `IOMMU_WRITE` 2, `IOMMU_CACHE` 4. */
  prot: number;
  segments: KhoSegment[];
}
export interface KhoIoas {
  id: number;
  /** Indices under `/intel-iommu/domains`. */
  domains: number[];
  pinnedFiles: bigint[];
  areas: KhoArea[];
}
export interface KhoIommufd {
  id: number;
  ioases: KhoIoas[];
}
export interface KhoDomain {
  index: number;
  persistentId: bigint;
  did: number;
  pgd: bigint;
  agaw: number;
  /** `bus:dev.fn` of each device attached when it was serialised. */
  devices: string[];
  tablePages: MemRange[];
}
/** A preserved range and who hands it over. */
export interface PreservedRange extends MemRange {
  owner: string;
}
export interface KhoSummary {
  bytes: number;
  version: number;
  compatible: string;
  iommufds: KhoIommufd[];
  intel: { rootTable: bigint; tables: MemRange[]; domains: KhoDomain[] } | null;
  guestmemfs: { base: bigint; nblocks: bigint; mem: MemRange[] } | null;
  /** The upstream flow's `LUO` node: where `struct luo_ser` is (`preserved-data`) and its size (`blob-size`). */
  luo: { preservedData: bigint; blobSize: bigint } | null;
  /** Top-level nodes this reader does not know. */
  unknown: string[];
  preserved: PreservedRange[];
  totals: {
    iommufds: number;
    ioases: number;
    areas: number;
    mappedBytes: bigint;
    domains: number;
    pageTablePages: number;
    rootContextPages: number;
    preservedBytes: bigint;
    preservedRanges: number;
  };
}

class Node {
  constructor(
    readonly node: FdtNode,
    readonly path: string,
  ) {}
  child(name: string): Node | undefined {
    const c = this.node.children.find((x) => x.name === name);
    return c ? new Node(c, `${this.path}/${name}`) : undefined;
  }
  children(): Node[] {
    return this.node.children.map((c) => new Node(c, `${this.path}/${c.name}`));
  }
  raw(name: string): Uint8Array {
    const p = this.node.properties.find((x) => x.name === name);
    if (!p) throw new KhoFormatError(this.path, `no property ${name}`);
    return p.value;
  }
  private view(name: string, unit: number): DataView {
    const v = this.raw(name);
    if (v.length % unit !== 0) throw new KhoFormatError(`${this.path}/${name}`, `${v.length} bytes, not a multiple of ${unit}`);
    return new DataView(v.buffer, v.byteOffset, v.length);
  }
  private exact(name: string, width: number, what: string): DataView {
    const v = this.raw(name);
    if (v.length !== width) throw new KhoFormatError(`${this.path}/${name}`, `${v.length} bytes, want ${width} (${what})`);
    return new DataView(v.buffer, v.byteOffset, v.length);
  }
  u64(name: string): bigint {
    return this.exact(name, 8, 'u64 LE').getBigUint64(0, true);
  }
  u32(name: string): number {
    return this.exact(name, 4, 'u32 LE').getUint32(0, true);
  }
  u8(name: string): number {
    const v = this.raw(name);
    if (v.length !== 1) throw new KhoFormatError(`${this.path}/${name}`, `${v.length} bytes, want 1`);
    return v[0]!;
  }
  u32s(name: string): number[] {
    const v = this.view(name, 4);
    return Array.from({ length: v.byteLength / 4 }, (_, i) => v.getUint32(4 * i, true));
  }
  u64s(name: string): bigint[] {
    const v = this.view(name, 8);
    return Array.from({ length: v.byteLength / 8 }, (_, i) => v.getBigUint64(8 * i, true));
  }
  mem(name: string): MemRange[] {
    const w = this.u64s(name);
    if (w.length % 2) throw new KhoFormatError(`${this.path}/${name}`, 'not a kho_mem { u64 addr; u64 len; } array');
    return Array.from({ length: w.length / 2 }, (_, i) => ({ addr: w[2 * i]!, len: w[2 * i + 1]! }));
  }
  string(name: string): string {
    const v = this.raw(name);
    if (v.length === 0 || v[v.length - 1] !== 0) throw new KhoFormatError(`${this.path}/${name}`, 'not a NUL-terminated string');
    return new TextDecoder().decode(v.subarray(0, v.length - 1));
  }
  id(): number {
    if (!/^(0|[1-9]\d{0,9})$/.test(this.node.name)) throw new KhoFormatError(this.path, 'node name is not a decimal id');
    return Number(this.node.name);
  }
}

/**
 * Decodes `blob` (FDT structural checks: throws `FdtError`) and reads it as a KHO handover tree
 * (throws {@link KhoFormatError} for a node or property that does not fit the format).
 */
export function summariseKho(blob: Uint8Array): KhoSummary {
  const decoded = decodeFdtBlob(blob, { validate: 'structural' });
  const root = new Node(decoded.root, '');
  const compatible = root.string('compatible');
  if (compatible !== 'kho-v1') throw new KhoFormatError('/compatible', `"${compatible}" is not kho-v1`);
  const preserved: PreservedRange[] = [];
  const unknown: string[] = [];

  const iommufds: KhoIommufd[] = [];
  const iommufdNode = root.child('iommufd');
  if (iommufdNode) {
    expectCompatible(iommufdNode, 'iommufd-v0');
    for (const c of iommufdNode.child('iommufds')?.children() ?? []) {
      const ioases: KhoIoas[] = [];
      for (const i of c.child('ioases')?.children() ?? []) {
        const areas: KhoArea[] = i.children().map((a) => {
          const segWords = a.u64s('guestmemfs');
          if (segWords.length % 4) throw new KhoFormatError(`${a.path}/guestmemfs`, 'not { iova, inode, offset, length } segments');
          const segments = Array.from({ length: segWords.length / 4 }, (_, k) => ({
            iova: segWords[4 * k]!,
            ino: segWords[4 * k + 1]!,
            offset: segWords[4 * k + 2]!,
            len: segWords[4 * k + 3]!,
          }));
          return { index: a.id(), iova: a.u64('iova-start'), len: a.u64('iova-len'), prot: a.u32('iommu-prot'), segments };
        });
        ioases.push({ id: i.id(), domains: i.u32s('domains'), pinnedFiles: i.u64s('pinned-files'), areas });
      }
      iommufds.push({ id: c.id(), ioases });
    }
  }

  let intel: KhoSummary['intel'] = null;
  const intelNode = root.child('intel-iommu');
  if (intelNode) {
    expectCompatible(intelNode, 'intel-iommu-v0');
    const tables = intelNode.mem('mem');
    for (const t of tables) preserved.push({ owner: 'intel-iommu root/context tables', ...t });
    const domains: KhoDomain[] = (intelNode.child('domains')?.children() ?? []).map((d) => {
      const tablePages = d.mem('mem');
      for (const t of tablePages) preserved.push({ owner: `intel-iommu domain ${d.node.name} page tables`, ...t });
      const devices = (d.child('devices')?.children() ?? []).map((x) => {
        const bus = x.u8('bus');
        const devfn = x.u8('devfn');
        return `${bus.toString(16).padStart(2, '0')}:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
      });
      return { index: d.id(), persistentId: d.u64('persistent_id'), did: d.u32('did'), pgd: d.u64('pgd'), agaw: d.u32('agaw'), devices, tablePages };
    });
    intel = { rootTable: intelNode.u64('root-table'), tables, domains };
  }

  let guestmemfs: KhoSummary['guestmemfs'] = null;
  const gmNode = root.child('guestmemfs');
  if (gmNode) {
    expectCompatible(gmNode, 'guestmemfs-v0');
    guestmemfs = { base: gmNode.u64('base'), nblocks: gmNode.u64('nblocks'), mem: gmNode.mem('mem') };
    for (const m of guestmemfs.mem) preserved.push({ owner: 'guestmemfs carve-out', ...m });
  }
  const luoNode = root.child('LUO');
  const luo = luoNode ? { preservedData: luoNode.u64('preserved-data'), blobSize: luoNode.u64('blob-size') } : null;
  for (const c of root.children()) if (!['iommufd', 'intel-iommu', 'guestmemfs', 'LUO'].includes(c.node.name)) unknown.push(c.node.name);

  const allIoases = iommufds.flatMap((c) => c.ioases);
  const allAreas = allIoases.flatMap((i) => i.areas);
  const domains = intel?.domains ?? [];
  return {
    bytes: blob.length,
    version: decoded.version,
    compatible,
    iommufds,
    intel,
    guestmemfs,
    luo,
    unknown,
    preserved,
    totals: {
      iommufds: iommufds.length,
      ioases: allIoases.length,
      areas: allAreas.length,
      mappedBytes: allAreas.reduce((n, a) => n + a.len, 0n),
      domains: domains.length,
      pageTablePages: domains.reduce((n, d) => n + pages(d.tablePages), 0),
      rootContextPages: pages(intel?.tables ?? []),
      preservedBytes: preserved.reduce((n, r) => n + r.len, 0n),
      preservedRanges: preserved.length,
    },
  };
}

function pages(ranges: MemRange[]): number {
  return ranges.reduce((n, r) => n + Number(r.len / 4096n), 0);
}

function expectCompatible(n: Node, want: string): void {
  const c = n.string('compatible');
  if (c !== want) throw new KhoFormatError(`${n.path}/compatible`, `"${c}", want "${want}"`);
}

/** `RW+CACHE` for an `iommu-prot` value. */
export function protName(prot: number): string {
  const p = [prot & 1 ? 'R' : '', prot & 2 ? 'W' : ''].join('') || '-';
  return prot & 4 ? `${p}+CACHE` : p;
}
