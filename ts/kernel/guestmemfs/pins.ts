// guestmemfs's long-term pin table: every pin a persistent iommufd area takes on a file is a record
// in the carve-out's metadata block, saying who holds it (persistent iommufd and IOAS), which file
// range it pins, at which IOVA, with which access; and every holder, a persistent IOAS, has a
// record of its own with the page tables (pgd) of the domains it maps into, in order. The carve-out
// is handed over with the rest of the filesystem, so the next kernel learns from its own metadata,
// not from the KHO blob, what each persisted context had: its IOASes, their domains and areas.
//
// Record layout (64 B, little-endian), `slots` of them at `table` inside block 0:
//   pin     @0 flags u32 (bit 0: in use)   @4 access u32 (IOMMU_READ 1 | IOMMU_WRITE 2)
//           @8 ino u64   @16 owner u64 (persistent id << 32 | IOAS id)   @24 iova u64
//           @32 offset u64 (file bytes)   @40 length u64 (bytes)   @48..63 zero
//   holder  @0 flags u32 (bit 0: in use, bit 1: holder)   @4 domains u32   @8 zero
//           @16 owner u64   @24.. the first HOLDER_PGDS domains' pgd, u64 each
import type { PhysicalMemory } from '../../hw/memory.js';
import { errno } from '../../uapi/errno.js';

export const PIN_RECORD_SIZE = 64;

/** One long-term pin: a piece of a persistent area that one guestmemfs file backs. */
export interface PinRecord {
  ino: number;
  /** `pinOwner(persistent id, IOAS id)`. */
  owner: bigint;
  iova: bigint;
  /** Byte offset in the file and length of the piece. */
  offset: bigint;
  len: bigint;
  /** IOMMU_READ | IOMMU_WRITE. */
  access: number;
}

/** The owner tag of a pin: which persistent iommufd and which of its IOASes holds it. */
export const pinOwner = (persistentId: number, ioasId: number): bigint => (BigInt(persistentId) << 32n) | BigInt(ioasId);

export const samePin = (a: PinRecord, b: PinRecord): boolean =>
  a.ino === b.ino && a.owner === b.owner && a.iova === b.iova && a.offset === b.offset && a.len === b.len && a.access === b.access;

/** A persistent IOAS (the holder of pins tagged with its owner) and its domains' page tables. */
export interface HolderRecord {
  owner: bigint;
  /** How many domains the IOAS maps into, and the first {@link HOLDER_PGDS} of their pgds, in order. */
  domains: number;
  pgds: bigint[];
}
export const HOLDER_PGDS = 5;

const isPin = (r: PinRecord | HolderRecord): r is PinRecord => 'ino' in r;

/**
 * The table as this kernel sees it (the records in memory are the truth; the carve-out copy is
 * written through, except while KHO has frozen the filesystem: then writes wait for ABORT, so the
 * handover keeps the records the DUMP saw).
 */
export class PinTable {
  private readonly recs: (PinRecord | HolderRecord | undefined)[] = [];
  /** Freed slots below the high-water mark, the last freed on top (reused first). */
  private readonly freeSlots: number[] = [];
  private readonly dirty = new Set<number>();
  private frozen = false;

  constructor(
    private readonly memory: PhysicalMemory,
    /** Physical address of slot 0. */
    private readonly table: bigint,
    readonly slots: number,
    /** Where the high-water mark (slots ever used) lives in the superblock. */
    private readonly hwmAt: bigint,
  ) {}

  /** A table read back from memory (the next kernel); a malformed record is an error. */
  static load(memory: PhysicalMemory, table: bigint, slots: number, hwmAt: bigint, maxIno: number): PinTable {
    const t = new PinTable(memory, table, slots, hwmAt);
    const used = Number(memory.readU64(hwmAt) & 0xffff_ffffn);
    if (used > slots) errno('EINVAL', `guestmemfs: pin table high-water mark ${used} beyond ${slots} slots`);
    const raw = used ? memory.read(table, used * PIN_RECORD_SIZE) : new Uint8Array(0);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.length);
    for (let s = 0; s < used; s++) {
      const at = s * PIN_RECORD_SIZE;
      const flags = dv.getUint32(at, true);
      if (!(flags & 1)) {
        t.recs.push(undefined);
        t.freeSlots.push(s);
        continue;
      }
      if (flags & 2) {
        const domains = dv.getUint32(at + 4, true);
        const pgds = Array.from({ length: Math.min(domains, HOLDER_PGDS) }, (_, k) => dv.getBigUint64(at + 24 + 8 * k, true));
        if (flags !== 3 || dv.getBigUint64(at + 8, true) !== 0n) errno('EINVAL', `guestmemfs: holder record ${s} is malformed`);
        t.recs.push({ owner: dv.getBigUint64(at + 16, true), domains, pgds });
        continue;
      }
      const rec: PinRecord = {
        access: dv.getUint32(at + 4, true),
        ino: Number(dv.getBigUint64(at + 8, true) & 0xffff_ffffn),
        owner: dv.getBigUint64(at + 16, true),
        iova: dv.getBigUint64(at + 24, true),
        offset: dv.getBigUint64(at + 32, true),
        len: dv.getBigUint64(at + 40, true),
      };
      if (rec.ino < 2 || rec.ino > maxIno || rec.len === 0n || rec.access & ~3 || !rec.access) errno('EINVAL', `guestmemfs: pin record ${s} is malformed`);
      t.recs.push(rec);
    }
    return t;
  }

  /** Every pin record, by slot. */
  *entries(): Generator<[number, PinRecord]> {
    for (let s = 0; s < this.recs.length; s++) {
      const r = this.recs[s];
      if (r && isPin(r)) yield [s, r];
    }
  }

  /** Every holder record, by slot. */
  *holders(): Generator<[number, HolderRecord]> {
    for (let s = 0; s < this.recs.length; s++) {
      const r = this.recs[s];
      if (r && !isPin(r)) yield [s, r];
    }
  }

  get(slot: number): PinRecord | undefined {
    const r = this.recs[slot];
    return r && isPin(r) ? r : undefined;
  }

  /** Records a pin or a holder; ENOMEM when the table is full. Returns its slot. */
  add(rec: PinRecord | HolderRecord): number {
    let slot: number;
    if (this.freeSlots.length) slot = this.freeSlots.pop()!;
    else if (this.recs.length < this.slots) slot = this.recs.push(undefined) - 1;
    else return errno('ENOMEM', `guestmemfs: all ${this.slots} long-term pin records are in use`);
    this.recs[slot] = isPin(rec) ? { ...rec } : { owner: rec.owner, domains: rec.domains, pgds: rec.pgds.slice(0, HOLDER_PGDS) };
    this.write(slot);
    return slot;
  }

  /** A holder's domains changed. */
  setHolder(slot: number, pgds: bigint[]): void {
    const r = this.recs[slot];
    if (!r || isPin(r)) throw new Error(`guestmemfs: no holder record in slot ${slot}`);
    this.recs[slot] = { owner: r.owner, domains: pgds.length, pgds: pgds.slice(0, HOLDER_PGDS) };
    this.write(slot);
  }

  /** Drops the record in `slot`; returns what it was. */
  remove(slot: number): PinRecord | HolderRecord {
    const rec = this.recs[slot];
    if (!rec) throw new Error(`guestmemfs: no pin record in slot ${slot}`);
    this.recs[slot] = undefined;
    this.freeSlots.push(slot);
    this.write(slot);
    return rec;
  }

  /** KHO DUMP: from now on the carve-out copy stays as it is. */
  freeze(): void {
    this.frozen = true;
  }

  /** KHO ABORT: what changed meanwhile is written now. */
  thaw(): void {
    this.frozen = false;
    for (const s of this.dirty) this.write(s);
    this.dirty.clear();
  }

  private write(slot: number): void {
    if (this.frozen) {
      this.dirty.add(slot);
      return;
    }
    const b = new Uint8Array(PIN_RECORD_SIZE);
    const rec = this.recs[slot];
    const v = new DataView(b.buffer);
    if (rec && !isPin(rec)) {
      v.setUint32(0, 3, true);
      v.setUint32(4, rec.domains, true);
      v.setBigUint64(16, rec.owner, true);
      rec.pgds.forEach((pgd, k) => v.setBigUint64(24 + 8 * k, pgd, true));
    } else if (rec) {
      v.setUint32(0, 1, true);
      v.setUint32(4, rec.access, true);
      v.setBigUint64(8, BigInt(rec.ino), true);
      v.setBigUint64(16, rec.owner, true);
      v.setBigUint64(24, rec.iova, true);
      v.setBigUint64(32, rec.offset, true);
      v.setBigUint64(40, rec.len, true);
    }
    this.memory.write(this.table + BigInt(slot * PIN_RECORD_SIZE), b);
    // The high-water mark (the slots the next kernel reads) only grows: recs.length is it.
    if (slot + 1 === this.recs.length) this.memory.writeU64(this.hwmAt, (BigInt(this.slots) << 32n) | BigInt(this.recs.length));
  }
}
