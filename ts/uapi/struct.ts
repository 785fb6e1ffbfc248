// C struct layouts of the uAPI, and the copy_from_user / copy_to_user of an ioctl argument.
//
// A layout carries its declaration at the type level too: `typeof iommu_ioas_map` knows every
// field, its C type and whether it is an output, so StructIn (what a caller may pass), StructOut
// (what the kernel writes back) and StructFields (the struct as the kernel decodes it) come from
// the same table the runtime lays out.
import { invalidArgType } from '../errors.js';

/** A C scalar field type. */
export type ScalarType = 'u8' | 'u16' | 'u32' | 's32' | 'u64';
/** A C field type: a scalar, or an inline byte array (`__u8 name[64]` is `'u8[64]'`). */
export type FieldType = ScalarType | `u8[${number}]`;

/**
 * What a `__aligned_u64` user pointer points at (the header's "User pointer to ..."), given as
 * the third element of its declaration (`['data_uptr', 'u64', 'void *']`). It widens what an
 * object argument of `Process.ioctl` may pass for the field besides an address: `'void *'` also a
 * buffer (an ArrayBufferView, copied in as user memory and out again), `'struct iommu_iova_range *'`
 * also an array of `{ start, last }` (its count field defaults to its length; the kernel's
 * answer is read back into the array).
 */
export type UserPointee = 'void *' | 'struct iommu_iova_range *';

/** One field of a struct declaration: `[name, type]` or `[name, 'u64', pointee]`; a name ending in `>` is an output. */
export type FieldSpec = readonly [name: string, type: FieldType] | readonly [name: string, type: 'u64', pointee: UserPointee];

/** One field of a uAPI struct at its C offset. */
export interface Field {
  readonly name: string;
  readonly type: FieldType;
  readonly offset: number;
  /** `sizeof` the field: a scalar's width, a byte array's length. */
  readonly size: number;
  /** Written back to an object argument when the kernel responds. */
  readonly out: boolean;
  /** Present on a u64 that is a user pointer: what it points at. */
  readonly pointee?: UserPointee;
  /** An inline byte array (`__u8 name[N]`) rather than a scalar. */
  readonly byteArray: boolean;
}

/** An anonymous `union { ... }` member of a struct: its fields share one offset. */
export interface UnionMember<M extends readonly FieldSpec[] = readonly FieldSpec[]> {
  readonly union: M;
}

/** One entry of a struct declaration: a field or an anonymous union. */
export type StructMember = FieldSpec | UnionMember;

/** Type-level only: the declaration a layout was made from (never set at runtime). */
declare const structDecl: unique symbol;

/**
 * A uAPI struct: its C size (with tail padding) and fields in order. `N` and `F` are the name and
 * the declaration given to {@link struct}; they exist for the types only (`typeof iommu_ioas_map`
 * knows its fields), the defaults stand for any struct.
 */
export interface StructLayout<N extends string = string, F extends readonly StructMember[] = readonly StructMember[]> {
  readonly name: N;
  readonly size: number;
  readonly fields: readonly Field[];
  readonly byName: ReadonlyMap<string, Field>;
  /** Whether two fields share bytes (an anonymous union): such a struct only exists as bytes. */
  readonly hasUnion: boolean;
  /** Whether a field is an inline byte array. */
  readonly hasByteArray: boolean;
  /** Every field zero (see {@link zeroStruct}). */
  readonly zero: Readonly<Record<string, number | bigint | Uint8Array>>;
  /** Type-level only (never set): the declaration. */
  readonly [structDecl]?: F;
}

// ---- Types derived from a layout ----

/** The field declarations of a layout, unions flattened: a union of `FieldSpec` tuples. */
type Specs<L extends StructLayout> = L extends StructLayout<string, infer F> ? MemberSpecs<F[number]> : never;
type MemberSpecs<M> = M extends UnionMember<infer U> ? U[number] : M;
/** A declaration's field name without its output mark. */
type SpecName<S extends FieldSpec> = S extends FieldSpec ? (S[0] extends `${infer B}>` ? B : S[0]) : never;
type OutSpecs<L extends StructLayout> = Extract<Specs<L>, readonly [`${string}>`, ...unknown[]]>;

/** A C field type's value as the kernel sees it: u64 → bigint, a byte array → bytes, else number. */
export type FieldValue<T extends FieldType> = T extends 'u64' ? bigint : T extends `u8[${number}]` ? Uint8Array : number;

/** `struct iommu_iova_range` as an element of an array argument (`allowed_iovas`). */
export interface IovaRangeArg {
  start: bigint;
  last: bigint;
}

/** What an object argument may pass for a user pointer besides its address. */
export type UserPointerArg<P extends UserPointee> = P extends 'struct iommu_iova_range *' ? ArrayBufferView | (IovaRangeArg | undefined)[] : ArrayBufferView;

/** What an object argument may pass for one field. */
type FieldArg<S extends FieldSpec> = S extends readonly [string, 'u64', infer P extends UserPointee]
  ? bigint | UserPointerArg<P>
  : S[1] extends `u8[${number}]`
    ? Uint8Array | string
    : FieldValue<S[1]>;

/** Every field name of a layout (outputs without their `>`); `string` for any struct. */
export type StructFieldName<L extends StructLayout> = SpecName<Specs<L>>;
/** The names of a layout's output fields (declared with a trailing `>`). */
export type StructOutName<L extends StructLayout> = SpecName<OutSpecs<L>>;
/** The names of a layout's fields that point at an array of `struct iommu_iova_range`. */
export type StructIovaRangesName<L extends StructLayout> = SpecName<Extract<Specs<L>, readonly [string, 'u64', 'struct iommu_iova_range *']>>;

/**
 * An object argument of `struct L` (`Process.ioctl`): every field optional (absent is 0; an absent
 * size field is `sizeof`), u64 fields `bigint` (a user pointer also what {@link UserPointee}
 * says), the other scalars `number`, byte arrays bytes or a string (its UTF-8 bytes).
 */
export type StructIn<L extends StructLayout> = { [S in Specs<L> as SpecName<S>]?: FieldArg<S> };

/** The outputs of `struct L` as the kernel writes them back: every output present and typed. */
export type StructOut<L extends StructLayout> = { [S in OutSpecs<L> as SpecName<S>]: FieldValue<S[1]> };

/** `struct L` as the kernel decodes it ({@link readStruct}): every field, user pointers as addresses. */
export type StructFields<L extends StructLayout> = { [S in Specs<L> as SpecName<S>]: FieldValue<S[1]> };
const WIDTH: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 };

/** The length of a byte-array type (`'u8[64]'` is 64), or null for a scalar. */
function arrayLength(type: FieldType): number | null {
  const m = /^u8\[(\d+)\]$/.exec(type);
  return m ? Number(m[1]) : null;
}

/** Whether `f` is an inline byte array (`__u8 name[N]`) rather than a scalar. */
export function isByteArray(f: Field): boolean {
  return f.byteArray;
}

/** `sizeof` and alignment of a field type. */
function sizeAlign(type: FieldType): [number, number] {
  const n = arrayLength(type);
  if (n !== null) return [n, 1];
  const w = WIDTH[type as ScalarType];
  if (w === undefined) throw new TypeError(`unknown field type ${type}`);
  return [w, w];
}

/**
 * `union { a; b; }` inside {@link struct}. The members are fields of the struct at the same
 * offset, in order; when the kernel writes the struct back, the last member's value is the one
 * that lands, so list the output member last (`union(['in_data_type', 'u32'], ['out_data_type>', 'u32'])`).
 */
export function union<const M extends readonly FieldSpec[]>(...members: M): UnionMember<M> {
  return { union: members };
}

/**
 * Lays out `struct name { ... }` with the natural x86-64 alignment (`__aligned_u64` is 8).
 * A field name ending in `>` is an output (`'out_ioas_id>'`).
 */
export function struct<const N extends string, const F extends readonly StructMember[]>(name: N, fields: F): StructLayout<N, F> {
  let offset = 0;
  let align = 1;
  const out: Field[] = [];
  for (const entry of fields) {
    const members: readonly FieldSpec[] = 'union' in entry ? entry.union : [entry];
    const w = Math.max(...members.map(([, type]) => sizeAlign(type)[0]));
    const a = Math.max(...members.map(([, type]) => sizeAlign(type)[1]));
    offset = Math.ceil(offset / a) * a;
    align = Math.max(align, a);
    for (const [raw, type, pointee] of members) {
      const isOut = raw.endsWith('>');
      const field: Field = { name: isOut ? raw.slice(0, -1) : raw, type, offset, size: sizeAlign(type)[0], out: isOut, byteArray: arrayLength(type) !== null };
      out.push(pointee === undefined ? field : { ...field, pointee });
    }
    offset += w;
  }
  const size = Math.ceil(offset / align) * align;
  const hasUnion = fields.some((entry) => 'union' in entry && entry.union.length > 1);
  const zero = Object.fromEntries(out.map((f) => [f.name, zeroValue(f)]));
  return { name, size, fields: out, byName: new Map(out.map((f) => [f.name, f])), hasUnion, hasByteArray: out.some((f) => f.byteArray), zero };
}

/** `offsetofend(struct, field)`. */
export function offsetofend<L extends StructLayout>(layout: L, field: StructFieldName<L>): number {
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
  if (f.byteArray || v instanceof Uint8Array) {
    if (!f.byteArray || !(v instanceof Uint8Array) || v.length > f.size) throw new TypeError(`${f.name}: ${f.type} takes at most ${f.size} bytes`);
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

/** A struct's bytes as a DataView (a Uint8Array's own range, not its whole buffer). */
function viewOf(bytes: Uint8Array | DataView): DataView {
  return bytes instanceof DataView ? bytes : new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Decodes `struct L` from its bytes (little-endian, at least `layout.size` of them: the kernel's
 * copy after `copy_struct_from_user`): every field, typed by the layout. Both members of a union
 * are read (from the same bytes); byte arrays are copies.
 */
export function readStruct<L extends StructLayout>(layout: L, bytes: Uint8Array | DataView): StructFields<L> {
  const view = viewOf(bytes);
  if (view.byteLength < layout.size) throw new RangeError(`${layout.name}: ${view.byteLength} bytes, sizeof is ${layout.size}`);
  const out: Record<string, number | bigint | Uint8Array> = {};
  for (const f of layout.fields) out[f.name] = f.byteArray ? getBytes(view, f) : getField(view, f);
  return out as StructFields<L>;
}

/**
 * Encodes the fields of `value` into `struct L`: into `bytes` when given (at least `layout.size`
 * of them; fields absent from `value` keep their bytes), else into `layout.size` new zeroed
 * bytes, which it returns. Fields are written in declaration order, so of a union's members the
 * last one given lands (as the kernel's copy_to_user of the output member).
 */
export function writeStruct<L extends StructLayout>(layout: L, value: Partial<StructFields<L>>, bytes?: Uint8Array | DataView): Uint8Array {
  const target = bytes ?? new Uint8Array(layout.size);
  const view = viewOf(target);
  if (view.byteLength < layout.size) throw new RangeError(`${layout.name}: ${view.byteLength} bytes, sizeof is ${layout.size}`);
  const fields = value as Record<string, number | bigint | Uint8Array | undefined>;
  for (const f of layout.fields) {
    const v = fields[f.name];
    if (v !== undefined) setField(view, f, v);
  }
  return target instanceof DataView ? new Uint8Array(target.buffer, target.byteOffset, target.byteLength) : target;
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
  if (f.byteArray) {
    const bytes = typeof v === 'string' ? new TextEncoder().encode(v) : v instanceof Uint8Array ? v : null;
    if (!bytes || bytes.length > f.size) {
      throw invalidArgType(`${layout.name}.${f.name} must be a Uint8Array or string of at most ${f.size} bytes`);
    }
    const out = new Uint8Array(f.size);
    out.set(bytes);
    return out;
  }
  if (f.type === 'u64') {
    if (typeof v !== 'bigint' || v < 0n || v > 0xffff_ffff_ffff_ffffn) {
      throw invalidArgType(`${layout.name}.${f.name} must be a bigint in [0, 2^64)`);
    }
    return v;
  }
  const [lo, hi] = LIMIT[f.type as Exclude<ScalarType, 'u64'>];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw invalidArgType(`${layout.name}.${f.name} must be an integer number in [${lo}, ${hi}] (${f.type})`);
  }
  return v;
}

// ---- The struct as values (an object argument held typed, see Uaccess) ----

/** A field's value when its bytes are all zero. */
export function zeroValue(f: Field): number | bigint | Uint8Array {
  return f.byteArray ? new Uint8Array(f.size) : f.type === 'u64' ? 0n : 0;
}

/**
 * `struct L` with every field zero, one object per layout: spread it (`{ ...zeroStruct(l) }`)
 * for a struct of values whose shape is the layout's, as V8 copies an object of a known shape
 * fastest. Shared: never write into it or its byte arrays.
 */
export function zeroStruct(layout: StructLayout): Readonly<Record<string, number | bigint | Uint8Array>> {
  return layout.zero;
}

/**
 * `v` as the field holds it: what {@link setField} then {@link getField} would give back (a u32
 * wraps modulo 2^32, a u64 modulo 2^64, a byte array is a NUL-padded copy), without the bytes.
 */
export function fieldValue(f: Field, v: number | bigint | Uint8Array): number | bigint | Uint8Array {
  if (v instanceof Uint8Array && !f.byteArray) throw new TypeError(`${f.name}: ${f.type} takes a number, not bytes`);
  switch (f.type) {
    case 'u64':
      return typeof v === 'bigint' && v >= 0n && v <= 0xffff_ffff_ffff_ffffn ? v : BigInt.asUintN(64, BigInt(v as number | bigint));
    case 'u32':
      return typeof v === 'number' && v >>> 0 === v ? v : Number(v) >>> 0;
    case 's32':
      return typeof v === 'number' && (v | 0) === v ? v : Number(v) | 0;
    case 'u16':
      return typeof v === 'number' && (v & 0xffff) === v ? v : Number(v) & 0xffff;
    case 'u8':
      return typeof v === 'number' && (v & 0xff) === v ? v : Number(v) & 0xff;
  }
  if (!(v instanceof Uint8Array) || v.length > f.size) throw new TypeError(`${f.name}: ${f.type} takes at most ${f.size} bytes`);
  const out = new Uint8Array(f.size);
  out.set(v);
  return out;
}

/**
 * A copy of a struct held as values (`copy_struct_from_user` without bytes), every field present
 * (made from {@link zeroStruct}): byte arrays are copied.
 */
export function copyFields<L extends StructLayout>(layout: L, vals: Readonly<Record<string, number | bigint | Uint8Array | undefined>>): StructFields<L> {
  const out: Record<string, number | bigint | Uint8Array | undefined> = { ...vals };
  if (layout.hasByteArray) for (const f of layout.fields) if (f.byteArray) out[f.name] = (out[f.name] as Uint8Array).slice();
  return out as StructFields<L>;
}
