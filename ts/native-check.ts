// The native boundary: every function, constructor, method and getter of the addon, with the kind
// of each parameter (ts/native-kinds.ts), checked before napi-rs sees the value. Unchecked,
// napi-rs wraps -1 into 4294967295 and NaN into 0, throws a wrong type with its own status as
// code (and for a bigint an empty message), and a cache size it cannot allocate aborts the process.
// Each entry point gets a straight-line validator generated once at load (no loop over the table,
// no allocation per call) installed on the addon's prototypes, so objects the addon returns are
// checked too. The table's type is derived from the binding's interfaces: an entry point without
// a spec, a missing parameter or a kind of the wrong type does not compile.
import {
  brandOf,
  bool,
  bytes,
  compile,
  FDT_SIZE_MAX,
  instance,
  int,
  oneOf,
  optional,
  ORDER_MAX,
  READ_MAX,
  str,
  strings,
  typedArray,
  u16,
  u32,
  u64,
  u64List,
  u8,
  unitOptions,
  type Kind,
} from './native-kinds.js';

/** The codes the checks themselves throw; the native core's are listed in ts/hw/error-codes.ts. */
export const CHECK_ERROR_CODES = [
  'ERR_INVALID_ARG_TYPE',
  'ERR_OUT_OF_RANGE',
  'ERR_INVALID_ARG_VALUE',
  'ERR_INVALID_THIS',
  'ERR_CONSTRUCT_CALL_REQUIRED',
  'ERR_ILLEGAL_CONSTRUCTOR',
] as const;

// ---- The table's type, derived from the binding's interfaces ----------------------------------

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyFn = (...args: any[]) => unknown;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyCtor = abstract new (...args: any[]) => unknown;
type Same<X, Y> = [X] extends [Y] ? ([Y] extends [X] ? true : false) : false;
type Instances<B> = { [K in keyof B]: B[K] extends AnyCtor ? InstanceType<B[K]> : never }[keyof B];
type ClassName<B, T> = { [K in keyof B]: B[K] extends AnyCtor ? (Same<InstanceType<B[K]>, T> extends true ? K : never) : never }[keyof B];
type Plain = bigint | number | boolean | string | Uint8Array | Uint32Array | BigUint64Array | Float64Array | readonly unknown[] | null | undefined;

/** The kind a parameter of type `T` needs: its own kind, a class brand, or every field of an options object. */
type KindFor<B, T> = [T] extends [Plain]
  ? Kind<T>
  : [T] extends [Instances<B>]
    ? Kind<unknown> & { readonly info: { readonly type: 'instance'; readonly class: ClassName<B, T> } }
    : Kind<T> & { readonly info: { readonly type: 'options'; readonly fields: { readonly [K in keyof Required<T>]: Kind<T[K]> } } };
type Params<B, P extends readonly unknown[]> = { readonly [I in keyof P]-?: readonly [name: string, kind: KindFor<B, P[I]>] };
type Returns<B, R> = [R] extends [Instances<B>] ? { readonly returns: ClassName<B, R> } : { readonly returns?: undefined };
type FnSpecOf<B, F extends AnyFn> = { readonly params: Params<B, Parameters<F>> } & Returns<B, ReturnType<F>>;

/** A getter: no arguments, only the receiver is checked. */
export const GETTER = Object.freeze({ getter: true as const });

type ClassSpecOf<B, C extends AnyCtor> = {
  /** The constructor's parameters; null for a class the addon alone makes. */
  readonly new: C extends new (...args: infer P) => unknown ? { readonly params: Params<B, P> } : null;
  readonly members: { readonly [M in keyof InstanceType<C>]-?: InstanceType<C>[M] extends AnyFn ? FnSpecOf<B, InstanceType<C>[M]> : typeof GETTER };
};

/** The spec of binding `B`: one entry per export, one per member of each class. */
export type BindingSpec<B> = {
  readonly [K in keyof B]-?: B[K] extends AnyCtor ? ClassSpecOf<B, B[K]> : B[K] extends AnyFn ? FnSpecOf<B, B[K]> : never;
};

// ---- The table ---------------------------------------------------------------------------------

type Param = readonly [name: string, kind: Kind<unknown>];
/** A function or method taking `params`. */
const fn = <const P extends readonly Param[]>(...params: P) => ({ params });
/** A method returning a new object of class `cls`, which is then branded. */
const makes = <const C extends string, const P extends readonly Param[]>(cls: C, ...params: P) => ({ params, returns: cls });

const pa = ['pa', u64] as const;
const len = ['len', u64] as const;
const order = ['order', int(0, ORDER_MAX)] as const;
const iova = ['iova', u64] as const;
const sid = ['sid', u16] as const;
const did = ['did', u16] as const;
const name = ['name', str] as const;
const levels = ['levels', u32] as const;
const pfnRuns = [['iovaPfns', typedArray('Float64Array')], ['paPfns', typedArray('Float64Array')], ['npages', typedArray('Float64Array')]] as const;
const fdtBlob = ['blob', typedArray('Uint8Array', FDT_SIZE_MAX)] as const;
const layout = ['layout', oneOf(['libfdt', 'dtc'])] as const;
const validate = ['validate', oneOf(['structural', 'dtc', 'strict'])] as const;
const writerOptions = [layout, ['maxSize', optional(int(0, FDT_SIZE_MAX))], ['noNameDedup', bool], ['bootCpuidPhys', u32]] as const;
const khoNames = [['compatible', str], ['memoryMapProp', str], ['subtreeProp', str]] as const;
const memory = instance('NativeMemory'), gather = instance('NativeGather');
const pageNo = int(0, Number.MAX_SAFE_INTEGER);
const pfn = ['pfn', pageNo] as const;
const count = ['n', pageNo] as const;
const handle = ['h', u32] as const;
const window = [['first', pageNo], ['last', pageNo]] as const;

/** Every entry point of crates/binding with its parameters, in order. */
export const NATIVE_SPECS = {
  nativeVersion: fn(),
  nativeModuleApiVersion: fn(),
  nativePanicForTest: fn(),
  NativeMemory: {
    new: fn(['size', u64], ['seed', u64]),
    members: {
      size: GETTER,
      read: fn(pa, ['n', int(0, READ_MAX)]),
      write: fn(pa, ['bytes', bytes]),
      fill: fn(pa, len, ['byte', u8]),
      readU64: fn(pa),
      writeU64: fn(pa, ['value', u64]),
      alloc: fn(order, ['zero', bool]),
      claim: fn(pa, len),
      free: fn(pa, len),
      isAllocated: fn(pa, len),
      preserve: fn(pa, order),
      preserveMany: fn(['pas', typedArray('BigUint64Array')], order),
      isAllocatedMany: fn(['pas', typedArray('BigUint64Array')], len),
      unpreserve: fn(pa, order),
      isPreserved: fn(pa),
      preserved: fn(),
      preservedSummary: fn(),
      scrub: fn(),
      reseed: fn(['seed', u64]),
      stats: fn(),
    },
  },
  NativeUnit: {
    new: fn(['mem', memory], ['options', unitOptions]),
    members: {
      registers: fn(),
      readRegister: fn(['offset', u32], ['size', u32]),
      writeRegister: fn(['offset', u32], ['size', u32], ['value', u64]),
      setRootTable: fn(pa),
      enableTranslation: fn(['on', bool]),
      translate: fn(sid, ['iovas', typedArray('BigUint64Array')], ['out', typedArray('BigUint64Array')], ['write', bool], ['faults', optional(bytes)]),
      translateOne: fn(sid, iova, ['write', bool]),
      lastFault: GETTER,
      dmaRead: fn(sid, iova, ['buf', bytes]),
      dmaWrite: fn(sid, iova, ['buf', bytes]),
      lastFaultIova: GETTER,
      faults: fn(),
      clearFaults: fn(),
      stats: fn(),
      cacheOccupancy: fn(),
      invalidateContext: fn(['granularity', oneOf(['global', 'domain', 'device'])], did, sid, ['fm', int(0, 3)]),
      invalidateIotlb: fn(['granularity', oneOf(['global', 'domain', 'page'])], did, ['addr', u64], ['am', int(0, 63)], ['ih', bool]),
      iotlbSync: fn(did, ['gather', gather]),
      createPageTable: makes('NativePageTable', levels),
      adoptPageTable: makes('NativePageTable', ['pgd', u64], levels),
    },
  },
  NativeGather: { new: fn(), members: { pending: GETTER, range: fn(), freelist: fn() } },
  NativePageTable: {
    new: null,
    members: {
      pgd: GETTER,
      levels: GETTER,
      aw: GETTER,
      map: fn(iova, pa, ['size', u64], ['read', bool], ['write', bool], ['snoop', bool], ['gather', gather]),
      mapRuns: fn(...pfnRuns, ['read', bool], ['write', bool], ['snoop', bool], ['gather', gather]),
      verifyRuns: fn(...pfnRuns, ['read', bool], ['write', bool]),
      verifyHandover: fn(...pfnRuns, ['prots', bytes], ['handedOver', typedArray('BigUint64Array')]),
      mappedPages: fn(['maxTables', int(0, Number.MAX_SAFE_INTEGER)]),
      unmap: fn(iova, ['size', u64], ['gather', gather]),
      iovaToPhys: fn(iova),
      walk: fn(iova),
      tablePages: fn(),
      destroy: fn(['gather', gather]),
    },
  },
  NativePins: {
    new: fn(['mem', memory]),
    members: {
      total: GETTER,
      pin: fn(pfn, count),
      unpin: fn(pfn, count),
      count: fn(pfn),
      countRange: fn(pfn, count),
      shmemCreate: fn(['npages', pageNo], ['huge', bool]),
      shmemSetSize: fn(handle, ['npages', pageNo]),
      shmemResident: fn(handle),
      shmemPfn: fn(handle, ['page', pageNo], ['alloc', bool]),
      shmemRuns: fn(handle, ['page', pageNo], count, ['base', pageNo]),
      shmemFolios: fn(handle, ['alloc', bool]),
      shmemAdopt: fn(handle, ['indexes', typedArray('Float64Array')], ['pfns', typedArray('Float64Array')], ['orders', bytes]),
      shmemAnyPinned: fn(handle),
      shmemTruncate: fn(handle, ['npages', pageNo]),
      shmemRelease: fn(handle),
      pagesHoles: fn(handle, ...window),
      pagesPin: fn(['h', int(-1, 0x7fff_ffff)], ...window, ['segs', typedArray('Float64Array')]),
      pagesUnpin: fn(handle, ...window),
      pagesBatch: fn(handle, ...window, ['iovaPfn', pageNo], ['small', bool], ...pfnRuns),
    },
  },
  NativeFdtWriter: {
    new: fn(...writerOptions),
    members: {
      size: GETTER,
      addReservemapEntry: fn(['address', u64], ['size', u64]),
      beginNode: fn(name),
      endNode: fn(),
      property: fn(name, ['value', bytes]),
      propertyEmpty: fn(name),
      propertyU32: fn(name, ['v', u32]),
      propertyU64: fn(name, ['v', u64]),
      propertyCells: fn(name, ['cells', typedArray('Uint32Array')]),
      propertyString: fn(name, ['s', str]),
      propertyStringList: fn(name, ['list', strings]),
      propertyU32Le: fn(name, ['v', u32]),
      propertyU64Le: fn(name, ['v', u64]),
      propertyPlaceholder: fn(name, ['len', int(0, FDT_SIZE_MAX)]),
      fillPlaceholder: fn(['handle', u32], ['data', bytes]),
      finish: fn(),
    },
  },
  fdtEncode: fn(['ops', bytes], ...writerOptions),
  fdtDecode: fn(fdtBlob, validate),
  fdtCheck: fn(fdtBlob, validate),
  fdtToDts: fn(fdtBlob),
  fdtKhoRootMax: fn(),
  fdtMaxDepth: fn(),
  fdtKhoRoot: fn(...khoNames, ['memoryMap', u64], ['names', strings], ['phys', u64List], layout),
  fdtKhoRootInfo: fn(fdtBlob, ...khoNames),
} as const;

// ---- Entry points and their validators ----------------------------------------------------------

interface FnSpec {
  readonly params: readonly Param[];
  readonly returns?: string;
}
interface ClassSpec {
  readonly new: FnSpec | null;
  readonly members: Readonly<Record<string, FnSpec | typeof GETTER>>;
}
type AnySpec = Readonly<Record<string, FnSpec | ClassSpec>>;
const isClass = (s: FnSpec | ClassSpec): s is ClassSpec => 'members' in s;

/**
 * The entry points of a binding, found on the objects themselves: each function (`fdtEncode`),
 * each class (`NativeMemory`, by napi-rs's naming: capitalised) and each member of its prototype
 * (`NativeMemory#read`, getters included).
 */
export function bindingEntryPoints(binding: object): string[] {
  return Object.entries(binding).flatMap(([k, v]: [string, unknown]) => {
    if (typeof v !== 'function') return [];
    if (!/^[A-Z]/.test(k)) return [k];
    const proto = (v as { prototype?: object }).prototype ?? {};
    return [k, ...Object.getOwnPropertyNames(proto).filter((m) => m !== 'constructor').map((m) => `${k}#${m}`)];
  });
}

/** The entry points a spec table describes, named as {@link bindingEntryPoints} names them. */
export function specEntryPoints(specs: object): string[] {
  return Object.entries(specs as AnySpec).flatMap(([k, s]) => (isClass(s) ? [k, ...Object.keys(s.members).map((m) => `${k}#${m}`)] : [k]));
}

function nodeError(Class: new (m: string) => Error, code: string, message: string): Error {
  return Object.assign(new Class(message), { code });
}
const invalidThis = (cls: string) => (): never => {
  throw nodeError(TypeError, 'ERR_INVALID_THIS', `Value of "this" must be of type ${cls}`);
};

/** Source lines checking `params` (as a0, a1, ...), and the scope they need. */
function checks(params: readonly Param[]): { args: string; lines: string; scope: Record<string, unknown> } {
  const scope: Record<string, unknown> = {};
  const lines = params.map(([pname, k], i) => {
    scope[`$k${i}`] = k;
    const a = `a${i}`, n = JSON.stringify(pname);
    return k.test ? `  if (!(${k.test(a)})) $k${i}.fail(${a}, ${n});` : `  ${a} = $k${i}.check(${a}, ${n});`;
  });
  return { args: params.map((_, i) => `a${i}`).join(', '), lines: lines.join('\n'), scope };
}

function checkedFunction(key: string, raw: AnyFn, spec: FnSpec, receiver: string | null): AnyFn {
  const { args, lines, scope } = checks(spec.params);
  const self = receiver ? `  if (!$has_${receiver}(this)) $badThis();\n` : '';
  const call = receiver ? `$raw.call(this${args ? `, ${args}` : ''})` : `$raw(${args})`;
  const ret = spec.returns ? `  const r = ${call};\n  $stamp(r);\n  return r;` : `  return ${call};`;
  const stamp = spec.returns ? brandOf(spec.returns).stamp : undefined;
  return compile(`return function ${key}(${args}) {\n${self}${lines}\n${ret}\n};`, { ...scope, $raw: raw, $stamp: stamp, $badThis: receiver && invalidThis(receiver) });
}

function checkedClass(cls: string, Raw: AnyCtor & { prototype: object }, spec: ClassSpec): AnyFn {
  const proto = Raw.prototype, brand = brandOf(cls);
  for (const [m, s] of Object.entries(spec.members)) {
    const d = Object.getOwnPropertyDescriptor(proto, m);
    if (s === GETTER) {
      if (!d?.get) throw new Error(`native-check: ${cls}#${m} is not a getter of the addon`);
      d.get = compile(`return function ${m}() {\n  if (!$has_${cls}(this)) $badThis();\n  return $get.call(this);\n};`, { $get: d.get, $badThis: invalidThis(cls) });
    } else {
      if (typeof d?.value !== 'function') throw new Error(`native-check: ${cls}#${m} is not a method of the addon`);
      d.value = checkedFunction(m, d.value as AnyFn, s as FnSpec, cls);
    }
    Object.defineProperty(proto, m, d);
  }
  let Checked: AnyFn;
  if (spec.new) {
    const { args, lines, scope } = checks(spec.new.params);
    const noNew = () => nodeError(TypeError, 'ERR_CONSTRUCT_CALL_REQUIRED', `Class constructor ${cls} cannot be invoked without 'new'`);
    Checked = compile(`return function ${cls}(${args}) {\n  if (new.target === undefined) throw $noNew();\n${lines}\n  const o = new $Raw(${args});\n  $stamp(o);\n  return o;\n};`, {
      ...scope,
      $Raw: Raw,
      $stamp: brand.stamp,
      $noNew: noNew,
    });
  } else {
    Checked = compile(`return function ${cls}() {\n  throw $illegal();\n};`, { $illegal: () => nodeError(TypeError, 'ERR_ILLEGAL_CONSTRUCTOR', 'Illegal constructor') });
  }
  Object.defineProperty(Checked, 'prototype', { value: proto });
  Object.defineProperty(proto, 'constructor', { value: Checked, writable: true, configurable: true });
  return Checked;
}

const CHECKED = Symbol.for('iommu-liveupdate.checkedBinding');

/**
 * The binding with every entry point checked as `specs` says (see {@link NATIVE_SPECS}): new
 * functions and constructors, and the addon's prototypes patched in place. Throws if the addon
 * and the table disagree on the entry points. Idempotent: a binding is checked once.
 */
export function checkedBinding<B extends object>(raw: B, specs: NoInfer<BindingSpec<B>>): B {
  const done = (raw as { [CHECKED]?: B })[CHECKED];
  if (done) return done;
  const have = bindingEntryPoints(raw), want = specEntryPoints(specs);
  const missing = have.filter((e) => !want.includes(e)), stale = want.filter((e) => !have.includes(e));
  if (missing.length || stale.length) {
    throw new Error(`native-check: the addon and the table disagree: without a spec: ${missing.join(', ') || 'none'}; not in the addon: ${stale.join(', ') || 'none'}`);
  }
  const rawExports = raw as Record<string, AnyFn & AnyCtor & { prototype: object }>;
  const checked = Object.fromEntries(
    Object.entries(specs as AnySpec).map(([k, s]) => [k, isClass(s) ? checkedClass(k, rawExports[k]!, s) : checkedFunction(k, rawExports[k]!, s, null)]),
  ) as B;
  Object.defineProperty(raw, CHECKED, { value: checked });
  return checked;
}
