// Parameter kinds of the native boundary (ts/native-check.ts) and the caps of what the addon
// allocates. A kind is a JavaScript test compiled once (straight into each entry point's
// validator, or into its own `check` for the facade) and the error of a value it rejects, in
// Node's words: ERR_INVALID_ARG_TYPE for a wrong type, ERR_OUT_OF_RANGE for a number or bigint
// outside its range or cap, ERR_INVALID_ARG_VALUE for a right type that is not accepted.
import { invalidArgType, invalidArgValue, outOfRange, received, subject } from './errors.js';

/** Largest `read` of a memory, in bytes: one read is one new buffer. */
export const READ_MAX = 2 ** 30;
/** Largest IOTLB, paging-structure cache and context cache, in entries. */
export const CACHE_ENTRIES_MAX = 2 ** 16;
/** Largest IOTLB associativity (ways are searched one by one on every lookup). */
export const IOTLB_WAYS_MAX = 1024;
/** Fault-recording registers: CAP.NFR + 1, an 8-bit field. */
export const FAULT_RECORDS_MAX = 256;
/** Largest frame order (`physmem::MAX_ORDER`): 2^18 frames, 1 GiB. */
export const ORDER_MAX = 18;
/** Largest FDT blob the writer and encoder produce, and decoders and the DTS renderer take. */
export const FDT_SIZE_MAX = 64 * 2 ** 20;

type TypedArrayTag = 'Uint8Array' | 'Uint32Array' | 'BigUint64Array' | 'Float64Array';

/** What a kind accepts: the table's declarative part, read by the property test and the README. */
export type KindInfo =
  | { readonly type: 'u64' }
  | { readonly type: 'int'; readonly min: number; readonly max: number }
  | { readonly type: 'bool' | 'string' | 'object' | 'strings' | 'u64List' }
  | { readonly type: 'oneOf'; readonly values: readonly string[] }
  | { readonly type: 'typedArray'; readonly tag: TypedArrayTag; readonly maxLength: number }
  | { readonly type: 'instance'; readonly class: string }
  | { readonly type: 'options'; readonly fields: Readonly<Record<string, Kind<unknown>>> }
  | { readonly type: 'optional'; readonly kind: Kind<unknown> };

/** A parameter kind accepting values of type `T`. */
export interface Kind<T> {
  readonly info: KindInfo;
  /**
   * A JavaScript expression over the variable named `v`, true iff the value is accepted: no side
   * effects, no allocation. Null for kinds that copy (option objects, arrays).
   */
  readonly test: ((v: string) => string) | null;
  /**
   * Checks `value` as the argument `name` and returns what goes on: the value itself, or for a
   * kind that copies a checked copy, so that getters run once. Throws ERR_INVALID_ARG_TYPE,
   * ERR_OUT_OF_RANGE or ERR_INVALID_ARG_VALUE with a message naming `name`.
   */
  readonly check: (value: unknown, name: string) => T;
  /** The error for a value `test` rejected (null for kinds without a `test`). */
  readonly fail: ((value: unknown, name: string) => never) | null;
  /** Phantom: what the table's type checks parameter types against. */
  readonly __accepts?: T;
}

// Intrinsics captured at load: the checks mean the same whatever a program patches later.
// `$tag.call(v)` is the typed-array kind of `v` ('Uint8Array', ...) or undefined, not fooled by
// prototypes or proxies; written into each validator, so that each call site has its own feedback.
const tagGetter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag)!.get!;
const tagOf = (v: unknown): unknown => tagGetter.call(v);
const INTRINSICS = { $tag: tagGetter, $asUintN: BigInt.asUintN, $isSafeInteger: Number.isSafeInteger } as const;

/** Class brands (per class name): a private field stamped on the objects the addon makes. */
export interface Brand {
  stamp(o: object): void;
  has(v: unknown): boolean;
}
const brands = new Map<string, Brand>();
export function brandOf(cls: string): Brand {
  let b = brands.get(cls);
  if (!b) {
    // Compiled per class from a source naming it (V8 caches compiled sources by their text): each
    // `#native in v` gets its own inline cache, which one shared function would make polymorphic.
    b = new Function(`"use strict";
      class Carrier { constructor(o) { return o; } }
      class ${cls}Brand extends Carrier {
        #native = true;
        static stamp(o) { new ${cls}Brand(o); }
        static has(v) { return typeof v === "object" && v !== null && #native in v; }
      }
      return { stamp: ${cls}Brand.stamp, has: ${cls}Brand.has };`)() as Brand;
    brands.set(cls, b);
  }
  return b;
}
const brandScope = (): Record<string, unknown> => Object.fromEntries([...brands].map(([c, b]) => [`$has_${c}`, b.has]));

/** Compiles `body` with the intrinsics, the brands and `scope` as its free variables. */
export function compile<F>(body: string, scope: Record<string, unknown>): F {
  const all = { ...INTRINSICS, ...brandScope(), ...scope };
  return new Function(...Object.keys(all), `"use strict";\n${body}`)(...Object.values(all)) as F;
}

function kind<T>(info: KindInfo, test: (v: string) => string, fail: (value: unknown, name: string) => never): Kind<T> {
  const check = compile<(value: unknown, name: string) => T>(`return function check(v, name) {\n  if (!(${test('v')})) $fail(v, name);\n  return v;\n};`, { $fail: fail });
  return { info, test, check, fail };
}

function copying<T>(info: KindInfo, check: (value: unknown, name: string) => T): Kind<T> {
  return { info, test: null, check, fail: null };
}

/** A bigint in 0..2^64-1. */
export const u64: Kind<bigint> = kind(
  { type: 'u64' },
  (v) => `typeof ${v} === "bigint" && $asUintN(64, ${v}) === ${v}`,
  (v, name) => {
    throw typeof v !== 'bigint' ? invalidArgType(name, 'of type bigint', v) : outOfRange(name, '>= 0n && < 2n ** 64n', v);
  },
);

/** An integer number in `min..max` (-0 is 0). */
export function int(min: number, max: number): Kind<number> {
  const u32 = min >= 0 && max <= 0xffff_ffff;
  const test = u32
    ? (v: string) => `typeof ${v} === "number" && (${v} >>> 0) === ${v}${min > 0 ? ` && ${v} >= ${min}` : ''}${max < 0xffff_ffff ? ` && ${v} <= ${max}` : ''}`
    : (v: string) => `$isSafeInteger(${v}) && ${v} >= ${min} && ${v} <= ${max}`;
  return kind({ type: 'int', min, max }, test, (v, name) => {
    throw typeof v !== 'number' ? invalidArgType(name, 'of type number', v) : outOfRange(name, `an integer >= ${min} && <= ${max}`, v);
  });
}

export const u8 = int(0, 0xff);
export const u16 = int(0, 0xffff);
export const u32 = int(0, 0xffff_ffff);

export const bool: Kind<boolean> = kind(
  { type: 'bool' },
  (v) => `typeof ${v} === "boolean"`,
  (v, name) => {
    throw invalidArgType(name, 'of type boolean', v);
  },
);

export const str: Kind<string> = kind(
  { type: 'string' },
  (v) => `typeof ${v} === "string"`,
  (v, name) => {
    throw invalidArgType(name, 'of type string', v);
  },
);

/** A non-null object (an options bag, a request). */
export const obj: Kind<object> = kind(
  { type: 'object' },
  (v) => `typeof ${v} === "object" && ${v} !== null`,
  (v, name) => {
    throw invalidArgType(name, 'of type object', v);
  },
);

/** One of a few strings; another string is ERR_INVALID_ARG_VALUE. */
export function oneOf<const V extends string>(values: readonly V[]): Kind<V> {
  const list = values.map((x) => `'${x}'`).join(', ');
  return kind(
    { type: 'oneOf', values },
    (v) => `(${values.map((x) => `${v} === ${JSON.stringify(x)}`).join(' || ')})`,
    (v, name) => {
      throw typeof v !== 'string' ? invalidArgType(name, 'of type string', v) : invalidArgValue(`${subject(name)} must be one of: ${list}. ${received(v)}`);
    },
  );
}

type TypedArrayOf<K extends TypedArrayTag> = { Uint8Array: Uint8Array; Uint32Array: Uint32Array; BigUint64Array: BigUint64Array; Float64Array: Float64Array }[K];

/** A typed array of exactly that kind (a Buffer is a Uint8Array), at most `maxLength` elements. */
export function typedArray<K extends TypedArrayTag>(tag: K, maxLength = Number.MAX_SAFE_INTEGER): Kind<TypedArrayOf<K>> {
  const capped = maxLength < Number.MAX_SAFE_INTEGER;
  return kind(
    { type: 'typedArray', tag, maxLength },
    (v) => `$tag.call(${v}) === "${tag}"${capped ? ` && ${v}.length <= ${maxLength}` : ''}`,
    (v, name) => {
      if (tagOf(v) !== tag) throw invalidArgType(name, `an instance of ${tag}`, v);
      throw outOfRange(`${name}.length`, `<= ${maxLength}`, (v as TypedArrayOf<K>).length);
    },
  );
}

export const bytes = typedArray('Uint8Array');

/** An object the addon made, of class `cls` (never a look-alike with the same prototype). */
export function instance<const C extends string>(cls: C): InstanceKind<C> {
  brandOf(cls);
  return kind({ type: 'instance', class: cls }, (v) => `$has_${cls}(${v})`, (v, name) => {
    const lookalike = received(v) === `Received an instance of ${cls}`;
    throw lookalike
      ? invalidArgType(`${subject(name)} must be an instance of ${cls} made by the addon. Received an object that only inherits from ${cls}.prototype`)
      : invalidArgType(name, `an instance of ${cls}`, v);
  }) as InstanceKind<C>;
}
type InstanceKind<C extends string> = Kind<unknown> & { readonly info: { readonly type: 'instance'; readonly class: C } };

/** `value` checked as `name`, or `dflt` when it is undefined (an option not given). */
export function given<T, D = T>(k: Kind<T>, value: unknown, name: string, dflt: D): T | D {
  return value === undefined ? dflt : k.check(value, name);
}

/** Accepts undefined and null as well. */
export function optional<T>(k: Kind<T>): Kind<T | null | undefined> {
  const info: KindInfo = { type: 'optional', kind: k };
  const { test, fail } = k;
  if (!test || !fail) return copying(info, (v, name) => (v === undefined || v === null ? v : k.check(v, name)));
  return kind(info, (v) => `(${v} === undefined || ${v} === null || (${test(v)}))`, fail);
}

function listOf<T>(type: 'strings' | 'u64List', element: Kind<T>): Kind<T[]> {
  return copying({ type }, (v, name) => {
    if (!Array.isArray(v)) throw invalidArgType(name, 'an instance of Array', v);
    const n = v.length, out = new Array<T>(n);
    for (let i = 0; i < n; i++) out[i] = element.check(v[i], `${name}[${i}]`);
    return out;
  });
}

/** An array of strings (copied: each element read once). */
export const strings = listOf('strings', str);
/** An array of bigints in 0..2^64-1 (copied). */
export const u64List = listOf('u64List', u64);

type KindType<K> = K extends Kind<infer T> ? T : never;
type OptionsOf<F> = { -readonly [K in keyof F]?: KindType<F[K]> };

/**
 * An options object: a copy holding the given fields that are not undefined, each read once and
 * checked as `<name>.<field>`; other fields are ignored.
 */
export function options<const F extends Readonly<Record<string, Kind<unknown>>>>(fields: F): OptionsKind<F> {
  const entries = Object.entries(fields);
  return copying({ type: 'options', fields }, (v, name) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalidArgType(name, 'of type object', v);
    const out: Record<string, unknown> = {};
    for (const [key, k] of entries) {
      const x: unknown = (v as Record<string, unknown>)[key];
      if (x !== undefined) out[key] = k.check(x, `${name}.${key}`);
    }
    return out as OptionsOf<F>;
  }) as OptionsKind<F>;
}
type OptionsKind<F> = Kind<OptionsOf<F>> & { readonly info: { readonly type: 'options'; readonly fields: F } };

/** A cache size option. */
export const cacheEntries = int(0, CACHE_ENTRIES_MAX);

/** `NativeUnitOptions`: the VT-d unit's CAP/ECAP fields and cache sizes. */
export const unitOptions = options({
  addressWidth: u32,
  superpage2M: bool,
  superpage1G: bool,
  nd: int(0, 6),
  psi: bool,
  mamv: int(0, 63),
  cachingMode: bool,
  esrtps: bool,
  coherent: bool,
  snoopControl: bool,
  passThrough: bool,
  deviceTlb: bool,
  queuedInvalidation: bool,
  interruptRemapping: bool,
  mhmv: int(0, 15),
  staleTm: bool,
  faultRecords: int(1, FAULT_RECORDS_MAX),
  iotlbEntries: cacheEntries,
  iotlbWays: int(1, IOTLB_WAYS_MAX),
  pscEntries: cacheEntries,
  contextCacheEntries: cacheEntries,
});
