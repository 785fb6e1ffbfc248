import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkFdt, decodeFdt, encodeFdt, FDT_ERRNO, FdtError, fdtToDts, type FdtLayout, type FdtNode, type FdtValidation } from 'iommu-liveupdate';
import { BlobLog, libfdtCheck, verifyWithTools } from './fdt-tools.js';
import { needTools } from './host-tools.js';

const log = new BlobLog();
const LAYOUTS: FdtLayout[] = ['libfdt', 'dtc'];
const RUNS = Number(process.env.FDT_PROP_RUNS ?? 100);

// Names dtc accepts (checks.c errors: characters, one '@', no duplicates; `name` and phandle
// properties have value rules), including KHO's numeric node names.
const nodeName = fc.oneof(
  fc.nat(99_999).map(String),
  fc.stringMatching(/^[a-z][a-z0-9,._+-]{0,8}(@[0-9a-f]{1,4})?$/),
);
const propName = fc.stringMatching(/^[a-z#][a-z0-9,._+#-]{0,10}$/).filter((n) => !['name', 'phandle', 'linux,phandle'].includes(n));
const enc = new TextEncoder();
const value = fc.oneof(
  fc.uint8Array({ maxLength: 24 }),
  fc.uint8Array({ minLength: 1, maxLength: 1 }),
  fc.stringMatching(/^[ -~]{0,12}$/).map((s) => enc.encode(`${s}\0`)),
  fc.array(fc.nat(), { maxLength: 4 }).map((c) => {
    const b = new Uint8Array(c.length * 4);
    c.forEach((v, i) => new DataView(b.buffer).setUint32(i * 4, v >>> 0));
    return b;
  }),
);
const properties = fc.uniqueArray(fc.record({ name: propName, value }), { maxLength: 5, selector: (p) => p.name });
const tree: fc.Arbitrary<FdtNode> = fc
  .letrec<{ node: FdtNode }>((tie) => ({
    node: fc.record({
      name: nodeName,
      properties,
      children: fc.oneof({ depthSize: 'small', withCrossShrink: true }, fc.constant<FdtNode[]>([]), fc.uniqueArray(tie('node'), { maxLength: 4, selector: (n) => n.name })),
    }),
  }))
  .node.map((root) => ({ ...root, name: '' }));

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), byte: fc.nat(255) }),
  fc.record({ kind: fc.constant('u32' as const), at: fc.nat(), v: fc.oneof(fc.nat(16), fc.nat(0xffff_ffff), fc.constantFrom(1, 2, 3, 4, 9, 0xd00dfeed)) }),
  fc.record({ kind: fc.constant('header' as const), field: fc.nat(8), v: fc.oneof(fc.nat(0x200), fc.nat(0xffff_ffff)) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(b: Uint8Array, muts: Mutation[]): Uint8Array {
  for (const m of muts) {
    const d = new DataView(b.buffer, b.byteOffset, b.byteLength);
    if (m.kind === 'byte' && b.length > 0) b[m.at % b.length] = m.byte;
    else if (m.kind === 'u32' && b.length >= 4) d.setUint32((m.at % (b.length >> 2)) * 4, m.v >>> 0);
    else if (m.kind === 'header' && b.length >= 40) d.setUint32(4 + m.field * 4, m.v >>> 0);
    else if (m.kind === 'truncate') b = b.slice(0, m.at % (b.length + 1));
  }
  return b;
}

function expectFdtError(e: unknown): FdtError {
  expect(e).toBeInstanceOf(FdtError);
  const f = e as FdtError;
  expect(FDT_ERRNO[f.code]).toBe(f.errno);
  if (f.offset !== undefined) expect(Number.isSafeInteger(f.offset) && f.offset >= 0).toBe(true);
  return f;
}

function outcome(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (e) {
    const err = expectFdtError(e);
    return `${err.code}@${err.offset}`;
  }
}

describe('FDT properties', () => {
  it.each(LAYOUTS)('random valid trees round-trip identically (%s)', (layout) => {
    fc.assert(
      fc.property(tree, (t) => {
        const blob = log.add('random tree', layout, encodeFdt(t, { layout }));
        expect(decodeFdt(blob, { validate: 'dtc' })).toEqual(t);
        expect(encodeFdt(decodeFdt(blob), { layout })).toEqual(blob);
        expect(typeof fdtToDts(blob)).toBe('string');
      }),
      { numRuns: RUNS },
    );
  });

  it('mutated and truncated blobs never crash: FdtError, or a tree that re-encodes to itself', () => {
    fc.assert(
      fc.property(tree, fc.constantFrom(...LAYOUTS), fc.array(mutation, { minLength: 1, maxLength: 4 }), (t, layout, muts) => {
        const b = mutate(encodeFdt(t, { layout }).slice(), muts);
        for (const validate of ['structural', 'dtc', 'strict'] as FdtValidation[]) {
          const decoded = outcome(() => decodeFdt(b, { validate }));
          expect(outcome(() => checkFdt(b, { validate }))).toBe(decoded);
        }
        let root: FdtNode;
        try {
          root = decodeFdt(b);
        } catch (e) {
          expectFdtError(e);
          expect(outcome(() => fdtToDts(b))).not.toBe('ok');
          return;
        }
        expect(typeof fdtToDts(b)).toBe('string');
        for (const l of LAYOUTS) {
          const again = encodeFdt(root, { layout: l });
          expect(decodeFdt(again)).toEqual(root);
        }
      }),
      { numRuns: 3 * RUNS },
    );
  });

  it('random bytes never crash the decoder', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, withMagic) => {
        if (withMagic && bytes.length >= 4) new DataView(bytes.buffer).setUint32(0, 0xd00dfeed);
        const r = outcome(() => decodeFdt(bytes));
        expect(outcome(() => checkFdt(bytes))).toBe(r);
      }),
      { numRuns: 3 * RUNS },
    );
  });
});

describe('FDT property cross-checks with dtc and libfdt', () => {
  // Differential: the structural verdict on mutated blobs is libfdt's fdt_check_full's, except
  // where Debian's libfdt 1.6.1 differs from 1.8.1 (no ALIGNMENT check; a NOP after the root is
  // BADSTRUCTURE there) or the decoder is deliberately stricter (a property outside any node, a
  // structure block without nodes).
  it('mutated blobs: checkFdt agrees with libfdt fdt_check_full', (ctx) => {
    needTools(ctx, 'libfdt');
    const samples = fc.sample(
      fc.tuple(tree, fc.constantFrom(...LAYOUTS), fc.array(mutation, { minLength: 1, maxLength: 3 })),
      { numRuns: 5 * RUNS, seed: 42 },
    );
    const blobs = samples.map(([t, layout, muts]) => mutate(encodeFdt(t, { layout }).slice(), muts));
    const theirs = libfdtCheck(blobs);
    const disagreements: string[] = [];
    let agreed = 0;
    blobs.forEach((b, i) => {
      let ours = 'OK', detail = '';
      try {
        checkFdt(b);
      } catch (e) {
        ours = expectFdtError(e).code;
        detail = (e as FdtError).detail;
      }
      const lib = theirs[i]!;
      if (ours === lib) return void agreed++;
      if (ours === 'FDT_ERR_ALIGNMENT') return;
      if (ours === 'FDT_ERR_TRUNCATED' && lib === 'FDT_ERR_BADSTRUCTURE' && /no FDT_END/.test(detail)) return;
      if (ours === 'FDT_ERR_BADSTRUCTURE' && /outside any node|no root node|no node/.test(detail)) return;
      disagreements.push(`ours ${ours} (${detail}), libfdt ${lib}: ${Buffer.from(b).toString('hex')}`);
    });
    expect(disagreements).toEqual([]);
    expect(agreed).toBeGreaterThan(blobs.length * 0.8);
  });


  it('every random tree blob passes dtc -I dtb and fdt_check_full; our DTS is dtc\'s and compiles back to our dtc-layout bytes', (ctx) => {
    needTools(ctx, 'dtc', 'libfdt');
    expect(log.entries.length).toBeGreaterThanOrEqual(2 * RUNS);
    expect(verifyWithTools(log)).toEqual([]);
  });
});
