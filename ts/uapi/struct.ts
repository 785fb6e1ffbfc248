// C struct layouts of the uAPI, and the copy_from_user / copy_to_user of an ioctl argument.

/** A C scalar field type. */
export type ScalarType = 'u8' | 'u16' | 'u32' | 's32' | 'u64';
/** A C field type: a scalar, or an inline byte array (`__u8 name[64]` is `'u8[64]'`). */
export type FieldType = ScalarType | `u8[${number}]`;

/** One field of a uAPI struct at its C offset. */
export interface Field {
  readonly name: string;
  readonly type: FieldType;
  readonly offset: number;
  /** `sizeof` the field: a scalar's width, a byte array's length. */
  readonly size: number;
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

const WIDTH: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 };

/** The length of a byte-array type (`'u8[64]'` is 64), or null for a scalar. */
function arrayLength(type: FieldType): number | null {
  const m = /^u8\[(\d+)\]$/.exec(type);
  return m ? Number(m[1]) : null;
}

/** Whether `f` is an inline byte array (`__u8 name[N]`) rather than a scalar. */
export function isByteArray(f: Field): boolean {
  return arrayLength(f.type) !== null;
}

/** `sizeof` and alignment of a field type. */
function sizeAlign(type: FieldType): [number, number] {
  const n = arrayLength(type);
  if (n !== null) return [n, 1];
  const w = WIDTH[type as ScalarType];
  if (w === undefined) throw new TypeError(`unknown field type ${type}`);
  return [w, w];
}

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
    const w = Math.max(...members.map(([, type]) => sizeAlign(type)[0]));
    const a = Math.max(...members.map(([, type]) => sizeAlign(type)[1]));
    offset = Math.ceil(offset / a) * a;
    align = Math.max(align, a);
    for (const [raw, type] of members) {
      const isOut = raw.endsWith('>');
      out.push({ name: isOut ? raw.slice(0, -1) : raw, type, offset, size: sizeAlign(type)[0], out: isOut });
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
  return f.offset + f.size;
}

/** Reads a scalar field of a struct held in `buf` (little-endian); a byte array: {@link getBytes}. */
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
  throw new TypeError(`${f.name} is a byte array: use getBytes`);
}

/** A copy of a byte-array field's bytes. */
export function getBytes(view: DataView, f: Field): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset + f.offset, f.size).slice();
}

/** Writes a field of a struct held in `buf` (little-endian); a byte array takes bytes (NUL-padded). */
export function setField(view: DataView, f: Field, v: number | bigint | Uint8Array): void {
  if (isByteArray(f) || v instanceof Uint8Array) {
    if (!isByteArray(f) || !(v instanceof Uint8Array) || v.length > f.size) throw new TypeError(`${f.name}: ${f.type} takes at most ${f.size} bytes`);
    const dst = new Uint8Array(view.buffer, view.byteOffset + f.offset, f.size);
    dst.fill(0);
    dst.set(v);
    return;
  }
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

const LIMIT: Record<Exclude<ScalarType, 'u64'>, [number, number]> = {
  u8: [0, 0xff],
  u16: [0, 0xffff],
  u32: [0, 0xffff_ffff],
  s32: [-0x8000_0000, 0x7fff_ffff],
};

/**
 * Checks a JS value for a field: u64 fields take `bigint`, the other scalars integral `number`s,
 * a byte array a `Uint8Array` or a string (its UTF-8 bytes) of at most its length, returned
 * NUL-padded to it.
 */
export function checkFieldValue(layout: StructLayout, f: Field, v: unknown): number | bigint | Uint8Array {
  if (isByteArray(f)) {
    const bytes = typeof v === 'string' ? new TextEncoder().encode(v) : v instanceof Uint8Array ? v : null;
    if (!bytes || bytes.length > f.size) {
      throw Object.assign(new TypeError(`${layout.name}.${f.name} must be a Uint8Array or string of at most ${f.size} bytes`), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    const out = new Uint8Array(f.size);
    out.set(bytes);
    return out;
  }
  if (f.type === 'u64') {
    if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn) {
      throw Object.assign(new TypeError(`${layout.name}.${f.name} must be a bigint in [0, 2^64)`), { code: 'ERR_INVALID_ARG_TYPE' });
    }
    return v;
  }
  const [lo, hi] = LIMIT[f.type as Exclude<ScalarType, 'u64'>];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw Object.assign(new TypeError(`${layout.name}.${f.name} must be an integer number in [${lo}, ${hi}] (${f.type})`), {
      code: 'ERR_INVALID_ARG_TYPE',
    });
  }
  return v;
}
