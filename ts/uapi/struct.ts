// C struct layouts of the uAPI, and the copy_from_user / copy_to_user of an ioctl argument.

/** A C scalar field type. */
export type FieldType = 'u8' | 'u16' | 'u32' | 's32' | 'u64';

/** One field of a uAPI struct at its C offset. */
export interface Field {
  readonly name: string;
  readonly type: FieldType;
  readonly offset: number;
  /** Written back to an object argument when the kernel responds. */
  readonly out: boolean;
}

/** A uAPI struct: its C size (with tail padding) and fields in order. */
export interface StructLayout {
  readonly name: string;
  readonly size: number;
  readonly fields: readonly Field[];
  readonly byName: ReadonlyMap<string, Field>;
}

const WIDTH: Record<FieldType, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 };

/** An anonymous `union { ... }` member of a struct: its fields share one offset. */
export interface UnionMember {
  readonly union: readonly [string, FieldType][];
}

/**
 * `union { a; b; }` inside {@link struct}. The members are fields of the struct at the same
 * offset, in order; when the kernel writes the struct back, the last member's value is the one
 * that lands, so list the output member last (`union(['in_data_type', 'u32'], ['out_data_type>', 'u32'])`).
 */
export const union = (...members: [string, FieldType][]): UnionMember => ({ union: members });

/**
 * Lays out `struct name { ... }` with the natural x86-64 alignment (`__aligned_u64` is 8).
 * A field name ending in `>` is an output (`'out_ioas_id>'`).
 */
export function struct(name: string, fields: ([string, FieldType] | UnionMember)[]): StructLayout {
  let offset = 0;
  let align = 1;
  const out: Field[] = [];
  for (const entry of fields) {
    const members = 'union' in entry ? entry.union : [entry];
    const w = Math.max(...members.map(([, type]) => WIDTH[type]));
    offset = Math.ceil(offset / w) * w;
    align = Math.max(align, w);
    for (const [raw, type] of members) {
      const isOut = raw.endsWith('>');
      out.push({ name: isOut ? raw.slice(0, -1) : raw, type, offset, out: isOut });
    }
    offset += w;
  }
  const size = Math.ceil(offset / align) * align;
  return { name, size, fields: out, byName: new Map(out.map((f) => [f.name, f])) };
}

/** `offsetofend(struct, field)`. */
export function offsetofend(layout: StructLayout, field: string): number {
  const f = layout.byName.get(field);
  if (!f) throw new Error(`${layout.name} has no field ${field}`);
  return f.offset + WIDTH[f.type];
}

/** Reads a field of a struct held in `buf` (little-endian). */
export function getField(view: DataView, f: Field): number | bigint {
  switch (f.type) {
    case 'u8':
      return view.getUint8(f.offset);
    case 'u16':
      return view.getUint16(f.offset, true);
    case 'u32':
      return view.getUint32(f.offset, true);
    case 's32':
      return view.getInt32(f.offset, true);
    case 'u64':
      return view.getBigUint64(f.offset, true);
  }
}

/** Writes a field of a struct held in `buf` (little-endian). */
export function setField(view: DataView, f: Field, v: number | bigint): void {
  switch (f.type) {
    case 'u8':
      return view.setUint8(f.offset, Number(v));
    case 'u16':
      return view.setUint16(f.offset, Number(v), true);
    case 'u32':
      return view.setUint32(f.offset, Number(v), true);
    case 's32':
      return view.setInt32(f.offset, Number(v), true);
    case 'u64':
      return view.setBigUint64(f.offset, BigInt(v), true);
  }
}

const LIMIT: Record<Exclude<FieldType, 'u64'>, [number, number]> = {
  u8: [0, 0xff],
  u16: [0, 0xffff],
  u32: [0, 0xffff_ffff],
  s32: [-0x8000_0000, 0x7fff_ffff],
};

/** Checks a JS value for a field: u64 fields take `bigint`, the others integral `number`s. */
export function checkFieldValue(layout: StructLayout, f: Field, v: unknown): number | bigint {
  if (f.type === 'u64') {
    if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn) {
      throw Object.assign(new TypeError(`${layout.name}.${f.name} must be a bigint in [0, 2^64)`), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    return v;
  }
  const [lo, hi] = LIMIT[f.type];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw Object.assign(new TypeError(`${layout.name}.${f.name} must be an integer number in [${lo}, ${hi}] (${f.type})`), {
      code: 'ERR_INVALID_ARG_TYPE',
    });
  }
  return v;
}
