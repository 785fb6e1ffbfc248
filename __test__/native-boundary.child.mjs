// One child of __test__/native.boundary.prop.test.ts: calls every entry point with generated
// arguments (fast-check), against the built package (dist/ + the addon), so a call that kills the
// process kills this child only. Usage: node native-boundary.child.mjs <mode> <seed> <runs>
//   mode 'checked': the addon through ts/native-check.ts, and the hardware facade;
//   mode 'bare': the .node file itself, unchecked (Rust's own defences), plus its caps.
// Before each call its label goes to stderr, so the parent can name the call that killed us.
// stdout: ONE JSON line { mode, seed, calls, exercised, bindingEntryPoints, specEntryPoints,
// facadeEntryPoints, codes, violations, caps? }.
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import fc from 'fast-check';
// Modules that do not load the addon: in 'bare' mode nothing may patch its prototypes.
import { NATIVE_ERROR_CODES } from '../dist/hw/error-codes.js';
import { NATIVE_SPECS, bindingEntryPoints, specEntryPoints } from '../dist/native-check.js';
import { CACHE_ENTRIES_MAX, FDT_SIZE_MAX, IOTLB_WAYS_MAX, READ_MAX } from '../dist/native-kinds.js';

const [mode, seedArg, runsArg] = process.argv.slice(2);
const seed = Number(seedArg), runs = Number(runsArg);
// The bare addon as the generated loader gives it, before ts/native.ts wraps it.
const addonPath = new URL('../native/index.cjs', import.meta.url).pathname;
const CODES = new Set(NATIVE_ERROR_CODES);
const MEM_SIZE = 64n << 20n; // pool memories: small, so no generated mapping can grow large

/** What a caller's own getter or proxy trap throws: passes through the boundary unchanged. */
class Sentinel extends Error {}
const trap = () => {
  throw new Sentinel('thrown by a getter or trap of the test');
};
/**
 * Proxies whose every trap throws. fast-check probes each generated value (`cloneMethod in v`),
 * so they are generated as a `Hostile` marker and swapped in by {@link real} at the call.
 */
const HOSTILE = [new Proxy({}, { get: trap, has: trap, ownKeys: trap, getOwnPropertyDescriptor: trap, getPrototypeOf: trap }), new Proxy([1n], { get: trap, has: trap })];
class Hostile {
  constructor(i) {
    this.i = i;
  }
}
const real = (v) => (v instanceof Hostile ? HOSTILE[v.i] : v);
const realArgs = (a) => a.map(real);
const throwingGetters = Object.defineProperties(
  {},
  Object.fromEntries(['size', 'seed', 'zero', 'read', 'write', 'snoop', 'faults', 'granularity', 'did', 'iotlbEntries', 'layout', 'length', '0'].map((k) => [k, { get: trap, enumerable: true }])),
);

function detached() {
  const b = new ArrayBuffer(16), a = new Uint8Array(b);
  structuredClone(b, { transfer: [b] });
  return a;
}

// ---- values ------------------------------------------------------------------------------------

const EDGES = [
  -1, 1.5, NaN, Infinity, -Infinity, -0, 0, 1, 2 ** 16, 2 ** 16 + 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE, 1e12,
  18, 19, 256, 257, 1024, 1025, READ_MAX + 1, FDT_SIZE_MAX + 1, CACHE_ENTRIES_MAX + 1,
  0n, 1n, -1n, 4096n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n, 2n ** 64n - 4096n, -(2n ** 64n), 1n << 200n,
  '', 'x', '0', 'abc', 'libfdt', 'page', 'a\0b', '\ud800', "it's",
  null, undefined, true, false, Symbol('s'), {}, [], [1, 2], ['a', 'b'], [1n, -1n], () => 1, Object.create(null),
  new Hostile(0), new Hostile(1), throwingGetters, detached(),
  new Int8Array(4), new Uint8ClampedArray(4), new Uint16Array(4), new Int32Array(4), new Float32Array(4), new BigInt64Array(2), new DataView(new ArrayBuffer(8)),
  new Uint8Array(new SharedArrayBuffer(16)), new Uint8Array(new ArrayBuffer(8, { maxByteLength: 64 })), Buffer.from('buffer'),
  Object.create(Uint8Array.prototype), Object.create(BigUint64Array.prototype), new (class extends Uint8Array {})(8),
  new Float64Array([1, 2 ** 52, -1, 0.5]), new BigUint64Array([0n, 2n ** 64n - 1n]), new Uint32Array([0, 2 ** 32 - 1]),
];
/** Expensive to pass: oversized arrays and a huge string, drawn rarely. */
const HEAVY = [new Uint8Array(FDT_SIZE_MAX + 1), new BigUint64Array(1 << 16), 'n'.repeat(1 << 20)];

const anything = fc.anything({ withBigInt: true, withTypedArray: true, withBoxedValues: true, withNullPrototype: true, withSparseArray: true, withMap: true, withSet: true, maxDepth: 2 });
const u64Valid = fc.oneof(
  { weight: 4, arbitrary: fc.bigInt(0n, (MEM_SIZE >> 12n) - 1n).map((p) => p << 12n) },
  { weight: 2, arbitrary: fc.bigInt(0n, 1n << 16n) },
  { weight: 1, arbitrary: fc.constantFrom(0n, 2n ** 64n - 1n, 2n ** 63n, 2n ** 52n, 2n ** 48n, MEM_SIZE) },
  { weight: 1, arbitrary: fc.bigInt(0n, 2n ** 64n - 1n) },
);
const intValid = (min, max) =>
  fc.oneof({ weight: 4, arbitrary: fc.integer({ min, max: Math.min(max, min + 4096) }) }, { weight: 1, arbitrary: fc.constantFrom(min, ...(max <= 2 ** 26 ? [max] : [])) });

/** A minimal valid FDT blob, so decoders reach past the header. */
const BLOB = (() => {
  const b = new Uint8Array(80), v = new DataView(b.buffer);
  [0xd00dfeed, 80, 0x38, 0x48, 0x28, 17, 16, 0, 0, 16].forEach((x, i) => v.setUint32(i * 4, x));
  [1, 0, 2, 9].forEach((x, i) => v.setUint32(0x38 + i * 4, x));
  return b;
})();

function typedValid(tag) {
  switch (tag) {
    case 'Uint8Array':
      return fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(BLOB).map((b) => b.slice()), fc.constant(0).map(() => new Uint8Array(4096)));
    case 'Uint32Array':
      return fc.uint32Array({ maxLength: 8 });
    case 'BigUint64Array':
      return fc.array(u64Valid, { maxLength: 16 }).map((a) => BigUint64Array.from(a));
    default:
      return fc.array(fc.integer({ min: 0, max: 1 << 16 }), { minLength: 1, maxLength: 3 }).map((a) => Float64Array.from(a));
  }
}

/** Objects made by the harness (never huge memories: see MEM_SIZE), by class. */
const pools = new Map();
const pick = (cls) => fc.nat().map((n) => {
  const p = pools.get(cls) ?? [];
  return p.length ? p[n % p.length] : undefined;
});
const anyPooled = fc.nat().map((n) => {
  const all = [...pools.values()].flat();
  return all[n % all.length];
});
let made = 0;
function pool(cls, o) {
  const p = pools.get(cls) ?? [];
  if (p.length < 6) p.push(o);
  else p[made++ % p.length] = o;
  pools.set(cls, p);
}

/** A value its kind accepts (most of them; the rest exercise the checks). */
function valid(kind) {
  const i = kind.info;
  switch (i.type) {
    case 'u64':
      return u64Valid;
    case 'int':
      return intValid(i.min, i.max);
    case 'bool':
      return fc.boolean();
    case 'string':
      return fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('', 'a', 'node@1', 'compatible', 'kho-v1', 'fdt'));
    case 'object':
      return fc.object({ maxDepth: 1 });
    case 'oneOf':
      return fc.constantFrom(...i.values);
    case 'typedArray':
      return typedValid(i.tag);
    case 'instance':
      return pick(i.class);
    case 'strings':
      return fc.array(fc.string({ maxLength: 8 }), { maxLength: 4 });
    case 'u64List':
      return fc.array(u64Valid, { maxLength: 4 });
    case 'options':
      return fc.record(Object.fromEntries(Object.entries(i.fields).map(([k, f]) => [k, valid(f)])), { requiredKeys: [] });
    case 'optional':
      return fc.oneof(fc.constantFrom(undefined, null), valid(i.kind));
    default:
      throw new Error(`no generator for kind ${i.type}`);
  }
}

const odd = fc.oneof({ weight: 20, arbitrary: fc.constantFrom(...EDGES) }, { weight: 10, arbitrary: anything }, { weight: 4, arbitrary: anyPooled }, { weight: 1, arbitrary: fc.constantFrom(...HEAVY) });
const param = (kind) => fc.oneof({ weight: 8, arbitrary: valid(kind) }, { weight: 2, arbitrary: odd });
const receiver = (cls) => fc.oneof({ weight: 15, arbitrary: pick(cls) }, { weight: 1, arbitrary: odd });

// ---- calls -------------------------------------------------------------------------------------

const exercised = {}, codes = {}, violations = [];
let calls = 0;

/** Why an error breaks the contract, or null: a documented code, the right class, a message. */
function wrong(e) {
  if (e instanceof Sentinel) return null;
  if (!(e instanceof Error)) return `threw a non-Error (${typeof e})`;
  if (typeof e.message !== 'string' || e.message === '') return `empty message (code ${String(e.code)})`;
  if (!CODES.has(e.code)) return `undocumented code ${String(e.code)}: ${e.message}`;
  if (e.code === 'ERR_INVALID_ARG_TYPE' && !(e instanceof TypeError)) return 'ERR_INVALID_ARG_TYPE is not a TypeError';
  if (e.code === 'ERR_OUT_OF_RANGE' && !(e instanceof RangeError)) return 'ERR_OUT_OF_RANGE is not a RangeError';
  return null;
}

const show = (v) => {
  try {
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
    if (typeof v === 'symbol' || typeof v === 'function' || v === null || typeof v !== 'object') return String(v);
    return Object.prototype.toString.call(v);
  } catch {
    return '<unprintable>';
  }
};

/** Runs one call; returns its result or undefined; records what it threw. */
function call(label, f, strict) {
  calls++;
  exercised[label] = (exercised[label] ?? 0) + 1;
  writeSync(2, `${label}\n`);
  try {
    return f();
  } catch (e) {
    const code = e instanceof Sentinel ? 'TEST_SENTINEL' : String(e?.code);
    codes[code] = (codes[code] ?? 0) + 1;
    const why = strict ? wrong(e) : e instanceof Sentinel || (e instanceof Error && typeof e.message === 'string') ? null : 'threw a non-Error';
    if (why) throw new Error(`${label}: ${why}`);
    return undefined;
  }
}

/**
 * `runs` generated calls of one entry point; a broken contract is a violation, with the shrunk
 * arguments shown compactly (fast-check's own report would print a 64 MiB array in full).
 */
function fuzz(label, arb, run) {
  const d = fc.check(fc.property(arb, (x) => void run(x)), { seed: seed ^ hash(label), numRuns: runs, endOnFailure: true });
  if (!d.failed) return;
  const ex = (v) => (Array.isArray(v) ? `[${v.map(ex).join(', ')}]` : show(real(v)));
  violations.push(`${label}: ${d.errorInstance?.message ?? String(d.errorInstance)} (arguments ${d.counterexample ? ex(d.counterexample[0]) : '?'})`);
}
function hash(s) {
  let h = 0;
  for (const c of s) h = (Math.imul(h, 31) + c.charCodeAt(0)) | 0;
  return h;
}
const args = (params) => fc.tuple(...params.map(([, k]) => param(k)));

/** Every entry point of the binding `b` as NATIVE_SPECS describes it. */
function fuzzBinding(b, strict) {
  for (const [key, spec] of Object.entries(NATIVE_SPECS)) {
    if (!('members' in spec)) {
      fuzz(key, args(spec.params), (a) => call(key, () => b[key](...realArgs(a)), strict));
      continue;
    }
    const C = b[key];
    const ctorParams = spec.new?.params ?? [];
    fuzz(key, fc.tuple(args(ctorParams), fc.nat(19)), ([a, n]) => {
      // Bare constructors called without `new` wrap their receiver: only the checked ones are.
      const o = call(key, () => (n === 0 && strict ? C(...realArgs(a)) : new C(...realArgs(a))), strict);
      if (o && key !== 'NativeMemory') pool(key, o);
    });
    for (const [m, s] of Object.entries(spec.members)) {
      const label = `${key}#${m}`;
      const d = Object.getOwnPropertyDescriptor(C.prototype, m);
      // Bare getters and methods with a wrong receiver throw napi's codes: the checks' business.
      const recv = strict ? receiver(key) : pick(key);
      if (d.get) fuzz(label, recv, (r) => call(label, () => d.get.call(real(r)), strict));
      else
        fuzz(label, fc.tuple(recv, args(s.params)), ([r, a]) => {
          const out = call(label, () => d.value.apply(real(r), realArgs(a)), strict);
          if (s.returns && out) pool(s.returns, out);
        });
    }
  }
}

function seedPools(b) {
  // Look-alikes: the right prototype, not made by the addon.
  for (const [k, v] of Object.entries(b)) if (/^[A-Z]/.test(k)) EDGES.push(Object.create(v.prototype));
  const mem = new b.NativeMemory(MEM_SIZE, BigInt(seed)), mem2 = new b.NativeMemory(MEM_SIZE, 1n);
  pool('NativeMemory', mem);
  pool('NativeMemory', mem2);
  for (const m of [mem, mem2]) {
    const unit = new b.NativeUnit(m, {});
    pool('NativeUnit', unit);
    pool('NativePageTable', unit.createPageTable(4));
  }
  pool('NativeGather', new b.NativeGather());
  pool('NativeFdtWriter', new b.NativeFdtWriter('libfdt', null, false, 0));
}

const result = { mode, seed, runs };
if (mode === 'bare') {
  const raw = createRequire(import.meta.url)(addonPath);
  if (raw.NativeMemory.prototype.constructor !== raw.NativeMemory) throw new Error('the bare addon is checked: something loaded dist/native.js');
  seedPools(raw);
  fuzzBinding(raw, false);
  // Rust's caps are the ones ts/native-kinds.ts documents.
  const codeOf = (f) => {
    try {
      f();
      return 'ok';
    } catch (e) {
      return e.code;
    }
  };
  const mem = pools.get('NativeMemory')[0];
  result.caps = {
    iotlbEntries: [codeOf(() => new raw.NativeUnit(mem, { iotlbEntries: CACHE_ENTRIES_MAX })), codeOf(() => new raw.NativeUnit(mem, { iotlbEntries: CACHE_ENTRIES_MAX + 1 }))],
    iotlbEntriesMinus1: codeOf(() => new raw.NativeUnit(mem, { iotlbEntries: -1 })),
    iotlbWays: [codeOf(() => new raw.NativeUnit(mem, { iotlbWays: IOTLB_WAYS_MAX })), codeOf(() => new raw.NativeUnit(mem, { iotlbWays: IOTLB_WAYS_MAX + 1 }))],
    pscEntries: codeOf(() => new raw.NativeUnit(mem, { pscEntries: CACHE_ENTRIES_MAX + 1 })),
    contextCacheEntries: codeOf(() => new raw.NativeUnit(mem, { contextCacheEntries: CACHE_ENTRIES_MAX + 1 })),
    read: [codeOf(() => mem.read(MEM_SIZE, READ_MAX)), codeOf(() => mem.read(0n, READ_MAX + 1))],
    maxSize: [codeOf(() => new raw.NativeFdtWriter('libfdt', FDT_SIZE_MAX, false, 0)), codeOf(() => new raw.NativeFdtWriter('libfdt', FDT_SIZE_MAX + 1, false, 0))],
    blob: [codeOf(() => raw.fdtCheck(BLOB, 'structural')), codeOf(() => raw.fdtCheck(new Uint8Array(FDT_SIZE_MAX + 1), 'structural'))],
  };
  const w = new raw.NativeFdtWriter('libfdt', null, false, 0);
  w.beginNode('');
  result.caps.placeholder = [codeOf(() => w.propertyPlaceholder('p', FDT_SIZE_MAX - 4096)), codeOf(() => w.propertyPlaceholder('q', 2 ** 32 - 1))];
} else {
  const { native } = await import('../dist/native.js');
  const raw = createRequire(import.meta.url)(addonPath);
  result.bindingEntryPoints = bindingEntryPoints(raw);
  result.specEntryPoints = specEntryPoints(NATIVE_SPECS);
  seedPools(native);
  fuzzBinding(native, true);
  const { fuzzFacade } = await import('./native-boundary.facade.mjs');
  result.facadeEntryPoints = fuzzFacade({ fc, call, fuzz, odd, realArgs, u64Valid, intValid, typedValid, BLOB, MEM_SIZE, seed });
}
Object.assign(result, { calls, exercised, codes, violations });
process.stdout.write(`${JSON.stringify(result)}\n`);
