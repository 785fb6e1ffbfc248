// Flattened Device Tree blobs (crates/fdt): a libfdt-/dtc-compatible writer, tree encode/decode,
// validation, DTS rendering and KHO root helpers. Blobs cross N-API once per call; trees cross as
// one op buffer (encode) or one flat shape + names + data triple (decode).
import { invalidArgType } from '../errors.js';
import { native, type NativeDecodedFdt, type NativeFdtWriter } from '../native.js';
import { bool, bytes, FDT_SIZE_MAX, given, int, obj, oneOf, str, typedArray, u32, u64 } from '../native-kinds.js';
import { call } from './errors.js';

export { FDT_ERRNO, FdtError, type FdtErrorCode } from './errors.js';
export { FDT_SIZE_MAX } from '../native-kinds.js';

/** A device-tree node: name (`''` for the root, `name@unit` otherwise), properties, children. */
export type FdtNode = { name: string; properties: FdtProperty[]; children: FdtNode[] };
/** A property: name and raw value bytes. */
export type FdtProperty = { name: string; value: Uint8Array };
/**
 * Block layout: `'libfdt'` as libfdt's sequential-write API (and the kernel's KHO code) leaves
 * it, `'dtc'` as `dtc -I dts -O dtb` writes it.
 */
export type FdtLayout = 'libfdt' | 'dtc';
/**
 * Decoder checks: `'structural'` = libfdt's `fdt_check_full`; `'dtc'` adds dtc's name,
 * duplicate and ordering errors; `'strict'` adds the spec's name limits (KHO's numeric node names
 * fail there).
 */
export type FdtValidation = 'structural' | 'dtc' | 'strict';
/** A memory reservation entry. */
export type FdtReserveEntry = { address: bigint; size: bigint };

export interface FdtWriterOptions {
  /** Default `'libfdt'`. */
  layout?: FdtLayout;
  /**
   * Largest blob allowed (`fdt_create`'s buffer size); more is `FDT_ERR_NOSPACE`. At most, and by
   * default, 64 MiB (`FDT_SIZE_MAX`): a larger value is `ERR_OUT_OF_RANGE`.
   */
  maxSize?: number;
  /** `FDT_CREATE_FLAG_NO_NAME_DEDUP`: store every property name anew. */
  noNameDedup?: boolean;
  /** The header's `boot_cpuid_phys` (default 0). */
  bootCpuidPhys?: number;
}
export interface FdtEncodeOptions extends FdtWriterOptions {
  /** Memory reservation entries (size never 0). */
  reserve?: FdtReserveEntry[];
}
export interface FdtDecodeOptions {
  /** Default `'structural'`. */
  validate?: FdtValidation;
}
/** A decoded blob with its header fields. */
export interface FdtBlob {
  version: number;
  bootCpuidPhys: number;
  reserve: FdtReserveEntry[];
  root: FdtNode;
}

const layoutKind = oneOf<FdtLayout>(['libfdt', 'dtc']);
const validationKind = oneOf<FdtValidation>(['structural', 'dtc', 'strict']);
/** A blob size (`maxSize`, a placeholder's length): at most `FDT_SIZE_MAX`. */
const blobSize = int(0, FDT_SIZE_MAX);
/** Blobs the decoders take: at most `FDT_SIZE_MAX` bytes. */
const blobKind = typedArray('Uint8Array', FDT_SIZE_MAX);

/** An options bag: undefined is `{}`. */
const options = (name: string, v: unknown): Record<string, unknown> => given(obj, v, name, {}) as Record<string, unknown>;

/** The decoder's (and writer's) deepest nesting; the root is depth 1. */
export const FDT_MAX_DEPTH: number = native.fdtMaxDepth();

function writerArgs(opts: unknown): [FdtLayout, number | undefined, boolean, number] {
  const o = options('options', opts);
  const layout = given(layoutKind, o.layout, 'options.layout', 'libfdt');
  const maxSize = given(blobSize, o.maxSize, 'options.maxSize', undefined);
  const noNameDedup = given(bool, o.noNameDedup, 'options.noNameDedup', false);
  return [layout, maxSize, noNameDedup, given(u32, o.bootCpuidPhys, 'options.bootCpuidPhys', 0)];
}

/**
 * A sequential writer with libfdt's `fdt_sw` semantics: reservation entries, then `beginNode('')`
 * (the root), properties and subnodes, `endNode()`, then `finish()`. A call in the wrong state
 * throws `FdtError` `FDT_ERR_BADSTATE` and changes nothing.
 */
export class FdtWriter {
  readonly #w: NativeFdtWriter;

  constructor(opts: FdtWriterOptions = {}) {
    const [layout, maxSize, noNameDedup, boot] = writerArgs(opts);
    this.#w = call(() => new native.NativeFdtWriter(layout, maxSize, noNameDedup, boot));
  }

  /** The blob size so far (without the final `FDT_END`; 0 once finished). */
  get size(): number {
    return this.#w.size;
  }

  /** `fdt_add_reservemap_entry` (only before the root node). */
  addReservemapEntry(address: bigint, size: bigint): this {
    const a = u64.check(address, 'address'), s = u64.check(size, 'size');
    call(() => this.#w.addReservemapEntry(a, s));
    return this;
  }

  /** `fdt_begin_node`: the first one is the root and must be named `''`. */
  beginNode(name: string): this {
    const n = str.check(name, 'name');
    call(() => this.#w.beginNode(n));
    return this;
  }

  /** `fdt_end_node`. */
  endNode(): this {
    call(() => this.#w.endNode());
    return this;
  }

  /** `fdt_property`: raw bytes. */
  property(name: string, value: Uint8Array): this {
    const n = str.check(name, 'name'), v = bytes.check(value, 'value');
    call(() => this.#w.property(n, v));
    return this;
  }

  /** An empty (boolean) property. */
  propertyEmpty(name: string): this {
    const n = str.check(name, 'name');
    call(() => this.#w.propertyEmpty(n));
    return this;
  }

  /** `fdt_property_u32`: one big-endian cell. */
  propertyU32(name: string, value: number): this {
    const n = str.check(name, 'name'), v = u32.check(value, 'value');
    call(() => this.#w.propertyU32(n, v));
    return this;
  }

  /** `fdt_property_u64`: big-endian, most significant cell first. */
  propertyU64(name: string, value: bigint): this {
    const n = str.check(name, 'name'), v = u64.check(value, 'value');
    call(() => this.#w.propertyU64(n, v));
    return this;
  }

  /** Big-endian cells (`<a b c>`). */
  propertyCells(name: string, cells: readonly number[] | Uint32Array): this {
    const n = str.check(name, 'name');
    let c: Uint32Array;
    if (cells instanceof Uint32Array) c = cells;
    else if (Array.isArray(cells)) c = Uint32Array.from(cells, (x: unknown, i) => u32.check(x, `cells[${i}]`));
    else throw invalidArgType('cells', 'an instance of Array or Uint32Array', cells);
    call(() => this.#w.propertyCells(n, c));
    return this;
  }

  /** `fdt_property_string`: UTF-8 with a terminating NUL (a NUL inside is `FDT_ERR_BADVALUE`). */
  propertyString(name: string, value: string): this {
    const n = str.check(name, 'name'), v = str.check(value, 'value');
    call(() => this.#w.propertyString(n, v));
    return this;
  }

  /** A string list: each string with its NUL (`"a", "b"`). */
  propertyStringList(name: string, list: readonly string[]): this {
    const n = str.check(name, 'name');
    if (!Array.isArray(list)) throw invalidArgType('list', 'an instance of Array', list);
    const l = list.map((s: unknown, i) => str.check(s, `list[${i}]`));
    call(() => this.#w.propertyStringList(n, l));
    return this;
  }

  /** A little-endian u32, as KHO writes native values. */
  propertyU32Le(name: string, value: number): this {
    const n = str.check(name, 'name'), v = u32.check(value, 'value');
    call(() => this.#w.propertyU32Le(n, v));
    return this;
  }

  /** A little-endian u64, as KHO writes native values (`preserved-memory-map`, `fdt`). */
  propertyU64Le(name: string, value: bigint): this {
    const n = str.check(name, 'name'), v = u64.check(value, 'value');
    call(() => this.#w.propertyU64Le(n, v));
    return this;
  }

  /** `fdt_property_placeholder`: `len` zero bytes (at most `FDT_SIZE_MAX`) to fill later; returns a handle. */
  propertyPlaceholder(name: string, len: number): number {
    const n = str.check(name, 'name'), l = blobSize.check(len, 'len');
    return call(() => this.#w.propertyPlaceholder(n, l));
  }

  /** Writes `data` at the start of a placeholder's value (before `finish`). */
  fillPlaceholder(handle: number, data: Uint8Array): this {
    const h = u32.check(handle, 'handle'), d = bytes.check(data, 'data');
    call(() => this.#w.fillPlaceholder(h, d));
    return this;
  }

  /** `fdt_finish`: the blob. After a failed finish the writer is unchanged and still usable. */
  finish(): Uint8Array {
    return call(() => this.#w.finish());
  }
}

// ---------------------------------------------------------------------------------------------
// encode: the tree is flattened into one op buffer (crates/binding `fdt_encode`).

const utf8 = new TextEncoder();

class Ops {
  buf = new Uint8Array(4096);
  view = new DataView(this.buf.buffer);
  pos = 0;

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  op(op: number): void {
    this.ensure(1);
    this.buf[this.pos++] = op;
  }

  string(s: string): void {
    this.ensure(4 + s.length * 3);
    const start = this.pos + 4, buf = this.buf;
    let i = 0;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      buf[start + i] = c;
    }
    const len = i === s.length ? i : utf8.encodeInto(s, buf.subarray(start)).written;
    this.view.setUint32(this.pos, len, true);
    this.pos = start + len;
  }

  bytes(v: Uint8Array): void {
    this.ensure(4 + v.length);
    this.view.setUint32(this.pos, v.length, true);
    this.buf.set(v, this.pos + 4);
    this.pos += 4 + v.length;
  }

  u64(v: bigint): void {
    this.ensure(8);
    this.view.setBigUint64(this.pos, v, true);
    this.pos += 8;
  }
}

type Frame = { node: FdtNode; children: FdtNode[]; next: number; path: string };

function flatten(tree: unknown, reserve: unknown): Uint8Array {
  const ops = new Ops();
  if (reserve !== undefined) {
    if (!Array.isArray(reserve)) throw invalidArgType('options.reserve', 'an instance of Array', reserve);
    reserve.forEach((r: unknown, i) => {
      const e = obj.check(r, `options.reserve[${i}]`) as Record<string, unknown>;
      ops.op(4);
      ops.u64(u64.check(e.address, `options.reserve[${i}].address`));
      ops.u64(u64.check(e.size, `options.reserve[${i}].size`));
    });
  }
  const stack: Frame[] = [];
  const open = (n: unknown, path: string): boolean => {
    const node = obj.check(n, path) as FdtNode;
    const name = node.name, props = node.properties, children = node.children;
    str.check(name, `${path}.name`);
    if (!Array.isArray(props)) throw invalidArgType(`${path}.properties`, 'an instance of Array', props);
    if (!Array.isArray(children)) throw invalidArgType(`${path}.children`, 'an instance of Array', children);
    ops.op(1);
    ops.string(name);
    // The writer rejects this node; stop here so a cyclic object graph cannot loop forever.
    if (stack.length >= FDT_MAX_DEPTH) return false;
    for (let i = 0; i < props.length; i++) {
      const { name: pn, value } = obj.check(props[i], `${path}.properties[${i}]`) as FdtProperty;
      str.check(pn, `${path}.properties[${i}].name`);
      bytes.check(value, `${path}.properties[${i}].value`);
      ops.op(3);
      ops.string(pn);
      ops.bytes(value);
    }
    stack.push({ node, children, next: 0, path });
    return true;
  };
  if (open(tree, 'tree')) {
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.next < top.children.length) {
        const i = top.next++;
        if (!open(top.children[i], `${top.path}.children[${i}]`)) break;
      } else {
        ops.op(2);
        stack.pop();
      }
    }
  }
  return ops.buf.subarray(0, ops.pos);
}

/**
 * Encodes a tree (root named `''`) into a blob, byte-identical to `FdtWriter` calls in tree
 * order: libfdt's sequential-write output (`layout: 'libfdt'`) or `dtc -O dtb`'s (`'dtc'`).
 */
export function encodeFdt(tree: FdtNode, opts: FdtEncodeOptions = {}): Uint8Array {
  const [layout, maxSize, noNameDedup, boot] = writerArgs(opts);
  const ops = flatten(tree, opts.reserve);
  return call(() => native.fdtEncode(ops, layout, maxSize, noNameDedup, boot));
}

// ---------------------------------------------------------------------------------------------
// decode: the native side returns one flat shape; the FdtNode objects are built here.

function rebuild(d: NativeDecodedFdt): FdtNode {
  const { shape, names, data } = d;
  const propNames = new Map<number, string>();
  let si = 0, di = 0;
  // The decoder bounds nesting to FDT_MAX_DEPTH, so this recursion is shallow.
  const node = (): FdtNode => {
    const name = names.substring(shape[si]!, shape[si + 1]!);
    const np = shape[si + 2]!, nc = shape[si + 3]!;
    si += 4;
    const properties: FdtProperty[] = new Array(np);
    for (let i = 0; i < np; i++) {
      const s = shape[si]!, e = shape[si + 1]!, len = shape[si + 2]!;
      // Distinct non-empty names have distinct starts; an empty name shares its start.
      let pn = s === e ? '' : propNames.get(s);
      if (pn === undefined) {
        pn = names.substring(s, e);
        propNames.set(s, pn);
      }
      properties[i] = { name: pn, value: data.slice(di, di + len) };
      di += len;
      si += 3;
    }
    const children: FdtNode[] = new Array(nc);
    for (let i = 0; i < nc; i++) children[i] = node();
    return { name, properties, children };
  };
  return node();
}

function decodeArgs(blob: unknown, opts: unknown): [Uint8Array, FdtValidation] {
  const b = blobKind.check(blob, 'blob');
  const o = options('options', opts);
  return [b, given(validationKind, o.validate, 'options.validate', 'structural')];
}

/** Decodes and validates a blob; throws `FdtError` with libfdt's `code` and the byte `offset`. */
export function decodeFdt(blob: Uint8Array, opts: FdtDecodeOptions = {}): FdtNode {
  const [b, v] = decodeArgs(blob, opts);
  return rebuild(call(() => native.fdtDecode(b, v)));
}

/** Like {@link decodeFdt}, with the header's version and boot CPU and the reservation map. */
export function decodeFdtBlob(blob: Uint8Array, opts: FdtDecodeOptions = {}): FdtBlob {
  const [b, v] = decodeArgs(blob, opts);
  const d = call(() => native.fdtDecode(b, v));
  const reserve: FdtReserveEntry[] = [];
  for (let i = 0; i + 1 < d.reserve.length; i += 2) reserve.push({ address: d.reserve[i]!, size: d.reserve[i + 1]! });
  return { version: d.version, bootCpuidPhys: d.bootCpuidPhys, reserve, root: rebuild(d) };
}

/** Validates a blob without building a tree; throws `FdtError` like {@link decodeFdt}. */
export function checkFdt(blob: Uint8Array, opts: FdtDecodeOptions = {}): void {
  const [b, v] = decodeArgs(blob, opts);
  call(() => native.fdtCheck(b, v));
}

/** Renders a blob as DTS source like `dtc -I dtb -O dts` (structural validation). */
export function fdtToDts(blob: Uint8Array): string {
  const b = blobKind.check(blob, 'blob');
  return call(() => native.fdtToDts(b));
}

// ---------------------------------------------------------------------------------------------
// KHO (Kexec HandOver) root trees

/** The size cap of a KHO root tree: one 4 KiB page. */
export const KHO_ROOT_MAX: number = native.fdtKhoRootMax();

/** The names of a KHO ABI version; omitted fields take Linux 6.16's (`KHO_V1`). */
export interface KhoNames {
  /** The root's `compatible`: `'kho-v1'`. */
  compatible?: string;
  /** The root property with the preserved-memory map's address: `'preserved-memory-map'`. */
  memoryMapProp?: string;
  /** The sub-tree nodes' property with their blob's address: `'fdt'` (v1), `'preserved-data'` (v2). */
  subtreeProp?: string;
}
/** Linux 6.16's KHO names. */
export const KHO_V1: Readonly<Required<KhoNames>> = Object.freeze({ compatible: 'kho-v1', memoryMapProp: 'preserved-memory-map', subtreeProp: 'fdt' });
/** Stateless KHO's names. */
export const KHO_V2: Readonly<Required<KhoNames>> = Object.freeze({ compatible: 'kho-v2', memoryMapProp: 'preserved-memory-map', subtreeProp: 'preserved-data' });

/** A KHO sub-tree: node name and physical address of its blob. */
export type KhoSubtree = { name: string; phys: bigint };

function khoNames(names: unknown): [string, string, string] {
  const n = options('names', names);
  return [
    given(str, n.compatible, 'names.compatible', KHO_V1.compatible),
    given(str, n.memoryMapProp, 'names.memoryMapProp', KHO_V1.memoryMapProp),
    given(str, n.subtreeProp, 'names.subtreeProp', KHO_V1.subtreeProp),
  ];
}

/**
 * The KHO root tree as Linux's `kho_finalize()` builds it: `compatible`, `preserved-memory-map`
 * (u64 LE `memoryMap`), one node per sub-tree with its u64 LE address. With `layout: 'libfdt'`
 * (the default) the bytes are the kernel's. `FDT_ERR_NOSPACE` past {@link KHO_ROOT_MAX}.
 */
export function khoRoot(names: KhoNames, memoryMap: bigint, subtrees: readonly KhoSubtree[], opts: { layout?: FdtLayout } = {}): Uint8Array {
  const [compatible, mapProp, subProp] = khoNames(names);
  const map = u64.check(memoryMap, 'memoryMap');
  if (!Array.isArray(subtrees)) throw invalidArgType('subtrees', 'an instance of Array', subtrees);
  const sn: string[] = [], sp: bigint[] = [];
  subtrees.forEach((s: unknown, i) => {
    const o = obj.check(s, `subtrees[${i}]`) as Record<string, unknown>;
    sn.push(str.check(o.name, `subtrees[${i}].name`));
    sp.push(u64.check(o.phys, `subtrees[${i}].phys`));
  });
  const layout = given(layoutKind, options('options', opts).layout, 'options.layout', 'libfdt');
  return call(() => native.fdtKhoRoot(compatible, mapProp, subProp, map, sn, sp, layout));
}

/**
 * Reads a KHO root blob back as the next kernel does: the preserved-memory map's address and the
 * sub-trees. `FDT_ERR_NOTFOUND` / `FDT_ERR_BADVALUE` for a missing or wrong `compatible` or
 * address property.
 */
export function khoRootInfo(blob: Uint8Array, names: KhoNames = {}): { memoryMap: bigint; subtrees: KhoSubtree[] } {
  const b = blobKind.check(blob, 'blob');
  const [compatible, mapProp, subProp] = khoNames(names);
  return call(() => native.fdtKhoRootInfo(b, compatible, mapProp, subProp));
}
