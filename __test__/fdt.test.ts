import { describe, expect, it } from 'vitest';
import {
  FdtWriter,
  encodeFdt,
  decodeFdt,
  decodeFdtBlob,
  checkFdt,
  fdtToDts,
  FdtError,
  FDT_SIZE_MAX,
  FDT_ERRNO,
  FDT_MAX_DEPTH,
  KHO_ROOT_MAX,
  KHO_V2,
  khoRoot,
  khoRootInfo,
  type FdtLayout,
  type FdtNode,
} from 'iommu-liveupdate';
import { BlobLog, libfdtCheck, verifyWithTools } from './fdt-tools.js';
import { needTools } from './host-tools.js';

const log = new BlobLog();
const LAYOUTS: FdtLayout[] = ['libfdt', 'dtc'];
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const unhex = (h: string) => new Uint8Array(Buffer.from(h, 'hex'));
const str = (s: string) => new TextEncoder().encode(`${s}\0`);
const cells = (...c: number[]) => {
  const b = new Uint8Array(c.length * 4);
  c.forEach((v, i) => new DataView(b.buffer).setUint32(i * 4, v));
  return b;
};

/** The thrown value of `f`, which must throw. */
function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}
function fdtErr(f: () => unknown): FdtError {
  const e = thrown(f);
  expect(e).toBeInstanceOf(FdtError);
  return e as FdtError;
}

function pinnedExample(layout: FdtLayout): Uint8Array {
  const w = new FdtWriter({ layout });
  w.beginNode('');
  w.propertyString('compatible', 'kho-v1');
  w.propertyU32('a', 1);
  w.propertyU64('b', 2n);
  w.propertyU32Le('c', 3);
  w.propertyU64Le('preserved-memory-map', 0x116be4000n);
  w.property('raw', new Uint8Array([1, 2]));
  w.propertyEmpty('d');
  w.endNode();
  return log.add(`pinned example`, layout, w.finish());
}

const PINNED_TREE: FdtNode = {
  name: '',
  properties: [
    { name: 'compatible', value: str('kho-v1') },
    { name: 'a', value: cells(1) },
    { name: 'b', value: cells(0, 2) },
    { name: 'c', value: new Uint8Array([3, 0, 0, 0]) },
    { name: 'preserved-memory-map', value: new Uint8Array([0x00, 0x40, 0xbe, 0x16, 0x01, 0, 0, 0]) },
    { name: 'raw', value: new Uint8Array([1, 2]) },
    { name: 'd', value: new Uint8Array(0) },
  ],
  children: [],
};

// A board-like tree with a reservation, shared suffixes (`size-cells` in `#size-cells`), a
// numeric KHO-style node name and a 1-byte property. Golden bytes were produced by Debian's
// libfdt 1.6.1 sequential-write API and by `dtc -I dts -O dtb` (dtc 1.6.1) respectively.
const BOARD: FdtNode = {
  name: '',
  properties: [
    { name: 'compatible', value: str('test,board') },
    { name: '#address-cells', value: cells(1) },
    { name: '#size-cells', value: cells(1) },
  ],
  children: [
    { name: 'memory@0', properties: [{ name: 'device_type', value: str('memory') }, { name: 'reg', value: cells(0, 0x1000) }], children: [] },
    { name: '1', properties: [{ name: 'fdt', value: new Uint8Array([0, 0x40, 0xbe, 0x16, 1, 0, 0, 0]) }, { name: 'size-cells', value: new Uint8Array([7]) }], children: [] },
  ],
};
const BOARD_RESERVE = [{ address: 0x1000_0000n, size: 0x4000n }];
const BOARD_GOLDEN: Record<FdtLayout, string> = {
  libfdt:
    'd00dfeed0000013e0000005000000104000000300000001100000010000000000000003a000000b40000000000000000000000001000000000000000000040000000000000000000000000000000000000000001000000000000000300' +
    '00000b0000002f746573742c626f61726400000000000300000004000000200000000100000003000000040000001400000001000000016d656d6f72794030000000000000000300000007000000086d656d6f7279000000000003000000' +
    '080000000400000000000010000000000200000001310000000000000300000008000000000040be16010000000000000300000001000000150700000000000002000000020000000966647400726567006465766963655f747970650023' +
    '73697a652d63656c6c730023616464726573732d63656c6c7300636f6d70617469626c6500',
  dtc:
    'd00dfeed0000013600000048000000fc000000280000001100000010000000000000003a000000b400000000100000000000000000004000000000000000000000000000000000000000000100000000000000030000000b00000000746573' +
    '742c626f617264000000000003000000040000000b0000000100000003000000040000001a00000001000000016d656d6f72794030000000000000000300000007000000266d656d6f7279000000000003000000080000003200000000' +
    '000010000000000200000001310000000000000300000008000000360040be160100000000000003000000010000001b07000000000000020000000200000009636f6d70617469626c650023616464726573732d63656c6c73002373697a65' +
    '2d63656c6c73006465766963655f74797065007265670066647400',
};
const BOARD_DTS = `/dts-v1/;

/memreserve/\t0x0000000010000000 0x0000000000004000;
/ {
\tcompatible = "test,board";
\t#address-cells = <0x01>;
\t#size-cells = <0x01>;

\tmemory@0 {
\t\tdevice_type = "memory";
\t\treg = <0x00 0x1000>;
\t};

\t1 {
\t\tfdt = <0x40be16 0x1000000>;
\t\tsize-cells = [07];
\t};
};
`;

// kho_finalize() of Linux 6.16 with libfdt: memory map 0x116be4000, sub-trees memblock and "1".
const KHO_GOLDEN =
  'd00dfeed000000e400000040000000c000000030000000110000001000000000000000240000008000000000000000000000000000000000000000000000000000000001000000000000000300000007000000196b686f2d763100000000' +
  '000300000008000000040040be1601000000000000016d656d626c6f636b0000000000000003000000080000000000f0a300010000000000000200000001310000000000000300000008000000000000a40001000000000000020000000200' +
  '000009666474007072657365727665642d6d656d6f72792d6d617000636f6d70617469626c6500';

describe('FDT pinned API', () => {
  it.each(LAYOUTS)('writer example (%s) decodes, renders and re-encodes identically', (layout) => {
    const blob = pinnedExample(layout);
    expect(blob).toBeInstanceOf(Uint8Array);
    expect(decodeFdt(blob, { validate: 'structural' })).toEqual(PINNED_TREE);
    expect(decodeFdt(blob, { validate: 'dtc' })).toEqual(PINNED_TREE);
    expect(hex(log.add('pinned tree', layout, encodeFdt(PINNED_TREE, { layout })))).toBe(hex(blob));
    expect(fdtToDts(blob)).toBe(
      '/dts-v1/;\n\n/ {\n\tcompatible = "kho-v1";\n\ta = <0x01>;\n\tb = <0x00 0x02>;\n\tc = <0x3000000>;\n' +
        '\tpreserved-memory-map = <0x40be16 0x1000000>;\n\traw = [01 02];\n\td;\n};\n',
    );
  });

  it('layouts differ only where libfdt and dtc do: header region and string order', () => {
    const a = pinnedExample('libfdt'), b = pinnedExample('dtc');
    const dv = (x: Uint8Array) => new DataView(x.buffer, x.byteOffset);
    expect(dv(a).getUint32(0x10)).toBe(0x30); // off_mem_rsvmap
    expect(dv(b).getUint32(0x10)).toBe(0x28);
    expect(dv(a).getUint32(0x08)).toBe(0x40); // off_dt_struct
    expect(dv(b).getUint32(0x08)).toBe(0x38);
    expect(a.length - b.length).toBe(8);
  });

  it.each(LAYOUTS)('golden bytes of a board tree (%s): encodeFdt and FdtWriter', (layout) => {
    const blob = log.add('board', layout, encodeFdt(BOARD, { layout, reserve: BOARD_RESERVE }));
    expect(hex(blob)).toBe(BOARD_GOLDEN[layout]);
    const w = new FdtWriter({ layout });
    w.addReservemapEntry(0x1000_0000n, 0x4000n);
    w.beginNode('').propertyString('compatible', 'test,board').propertyU32('#address-cells', 1).propertyU32('#size-cells', 1);
    w.beginNode('memory@0').propertyString('device_type', 'memory').propertyCells('reg', [0, 0x1000]).endNode();
    w.beginNode('1').propertyU64Le('fdt', 0x116be4000n).property('size-cells', new Uint8Array([7])).endNode();
    w.endNode();
    expect(hex(w.finish())).toBe(BOARD_GOLDEN[layout]);
    expect(fdtToDts(blob)).toBe(BOARD_DTS);
    expect(decodeFdtBlob(blob, { validate: 'dtc' })).toEqual({ version: 17, bootCpuidPhys: 0, reserve: BOARD_RESERVE, root: BOARD });
  });

  it('writer options: bootCpuidPhys, noNameDedup, maxSize', () => {
    const blob = log.add('boot cpu 3', 'dtc', encodeFdt(BOARD, { layout: 'dtc', bootCpuidPhys: 3 }));
    expect(decodeFdtBlob(blob).bootCpuidPhys).toBe(3);
    const plain = encodeFdt(BOARD, { layout: 'libfdt' });
    const nodedup = log.add('no dedup', 'libfdt', encodeFdt(BOARD, { layout: 'libfdt', noNameDedup: true }));
    expect(nodedup.length).toBeGreaterThan(plain.length); // size-cells stored on its own
    expect(decodeFdt(nodedup)).toEqual(BOARD);
    expect(encodeFdt(BOARD, { maxSize: plain.length })).toEqual(plain);
    const e = fdtErr(() => encodeFdt(BOARD, { maxSize: plain.length - 1 }));
    expect(e.code).toBe('FDT_ERR_NOSPACE');
    expect(e.errno).toBe(3);
    expect(e.offset).toBeUndefined();
  });

  it('string lists, cells and placeholders', () => {
    const w = new FdtWriter({ layout: 'dtc' });
    w.beginNode('');
    w.propertyStringList('compatible', ['vendor,board', 'generic']);
    w.propertyCells('ranges', new Uint32Array([1, 2, 3]));
    const h = w.propertyPlaceholder('late', 8);
    w.fillPlaceholder(h, new Uint8Array([1, 2, 3, 4]));
    w.endNode();
    const blob = log.add('string list', 'dtc', w.finish());
    const root = decodeFdt(blob);
    expect(root.properties.map((p) => [p.name, hex(p.value)])).toEqual([
      ['compatible', hex(str('vendor,board')) + hex(str('generic'))],
      ['ranges', '000000010000000200000003'],
      ['late', '0102030400000000'],
    ]);
  });

  it('checkFdt accepts what decodeFdt accepts and reports the same error', () => {
    const blob = encodeFdt(BOARD);
    expect(checkFdt(blob, { validate: 'dtc' })).toBeUndefined();
    expect(fdtErr(() => checkFdt(blob, { validate: 'strict' })).code).toBe('FDT_ERR_BADSTRUCTURE'); // node "1"
    const bad = blob.slice();
    bad[0] = 0;
    const a = fdtErr(() => checkFdt(bad)), b = fdtErr(() => decodeFdt(bad));
    expect([a.code, a.offset]).toEqual([b.code, b.offset]);
  });

  it('empty property names (structural level) survive decode next to other names', () => {
    for (const names of [['', 'ab'], ['a', '', 'b'], ['ab', ''], ['', '']]) {
      const t: FdtNode = { name: '', properties: names.map((name) => ({ name, value: new Uint8Array([1]) })), children: [] };
      for (const layout of LAYOUTS) expect(decodeFdt(encodeFdt(t, { layout }))).toEqual(t);
    }
  });

  it('decodes a Buffer and a Uint8Array view at an odd offset', () => {
    const blob = encodeFdt(BOARD);
    const backing = new Uint8Array(blob.length + 3);
    backing.set(blob, 3);
    expect(decodeFdt(backing.subarray(3))).toEqual(BOARD);
    expect(decodeFdt(Buffer.from(blob))).toEqual(BOARD);
  });

  it('deep and wide trees: up to FDT_MAX_DEPTH nesting, 1,000 nodes', () => {
    let deep: FdtNode = { name: 'n', properties: [], children: [] };
    for (let d = 2; d < FDT_MAX_DEPTH; d++) deep = { name: 'n', properties: [], children: [deep] };
    const ok: FdtNode = { name: '', properties: [], children: [deep] };
    const blob = log.add('deep', 'dtc', encodeFdt(ok, { layout: 'dtc' }));
    expect(decodeFdt(blob)).toEqual(ok);
    const tooDeep: FdtNode = { name: '', properties: [], children: [{ name: 'n', properties: [], children: [deep] }] };
    expect(fdtErr(() => encodeFdt(tooDeep)).code).toBe('FDT_ERR_BADSTRUCTURE');
    // A cyclic object graph is refused, not walked forever.
    const cyclic: FdtNode = { name: '', properties: [], children: [] };
    const child: FdtNode = { name: 'c', properties: [], children: [] };
    child.children.push(child);
    cyclic.children.push(child);
    expect(fdtErr(() => encodeFdt(cyclic)).code).toBe('FDT_ERR_BADSTRUCTURE');

    const wide: FdtNode = {
      name: '',
      properties: [{ name: 'compatible', value: str('kho-v1') }],
      children: Array.from({ length: 1000 }, (_, i) => ({
        name: `node${i}`,
        properties: [
          { name: 'iova-start', value: cells(0, i * 4096) },
          { name: 'iova-len', value: cells(0, 4096) },
          { name: 'label', value: str(`λ-${i}`) },
        ],
        children: [],
      })),
    };
    for (const layout of LAYOUTS) {
      const b = log.add('wide', layout, encodeFdt(wide, { layout }));
      expect(decodeFdt(b)).toEqual(wide);
    }
  });
});

describe('FDT errors', () => {
  const good = encodeFdt(
    { name: '', properties: [{ name: 'compatible', value: str('t') }], children: [{ name: 'a', properties: [{ name: 'x', value: new Uint8Array([1]) }], children: [] }] },
    { layout: 'dtc' },
  );
  const mut = (f: (b: Uint8Array, d: DataView) => void) => {
    const b = good.slice();
    f(b, new DataView(b.buffer));
    return b;
  };
  // Structure block of `good`: 0x38 root, 0x40 compatible, 0x50 node a, 0x58 x, 0x68 END_NODE a,
  // 0x6c END_NODE root, 0x70 FDT_END. `libfdt`: what Debian's libfdt 1.6.1 fdt_check_full says
  // (null where it differs from libfdt 1.8.1, which the decoder follows).
  const BAD: { label: string; blob: Uint8Array; code: string; offset: number; libfdt: string | null }[] = [
    { label: 'empty', blob: new Uint8Array(0), code: 'FDT_ERR_TRUNCATED', offset: 0, libfdt: 'FDT_ERR_TRUNCATED' },
    { label: 'shorter than a v1 header', blob: good.slice(0, 20), code: 'FDT_ERR_TRUNCATED', offset: 20, libfdt: 'FDT_ERR_TRUNCATED' },
    { label: 'bad magic', blob: mut((b) => (b[0] = 0)), code: 'FDT_ERR_BADMAGIC', offset: 0, libfdt: 'FDT_ERR_BADMAGIC' },
    { label: 'version 1', blob: mut((_, d) => d.setUint32(0x14, 1)), code: 'FDT_ERR_BADVERSION', offset: 0x14, libfdt: 'FDT_ERR_BADVERSION' },
    { label: 'last_comp_version 18', blob: mut((_, d) => d.setUint32(0x18, 18)), code: 'FDT_ERR_BADVERSION', offset: 0x18, libfdt: 'FDT_ERR_BADVERSION' },
    { label: 'totalsize past the buffer', blob: mut((_, d) => d.setUint32(4, good.length + 4)), code: 'FDT_ERR_TRUNCATED', offset: 4, libfdt: 'FDT_ERR_TRUNCATED' },
    { label: 'truncated blob', blob: good.slice(0, good.length - 4), code: 'FDT_ERR_TRUNCATED', offset: 4, libfdt: 'FDT_ERR_TRUNCATED' },
    { label: 'misaligned rsvmap', blob: mut((_, d) => d.setUint32(0x10, 0x2c)), code: 'FDT_ERR_ALIGNMENT', offset: 0x10, libfdt: null },
    { label: 'struct block past totalsize', blob: mut((_, d) => d.setUint32(0x24, 0x1000)), code: 'FDT_ERR_TRUNCATED', offset: 0x24, libfdt: 'FDT_ERR_TRUNCATED' },
    { label: 'unknown token', blob: mut((_, d) => d.setUint32(0x40, 7)), code: 'FDT_ERR_BADSTRUCTURE', offset: 0x40, libfdt: 'FDT_ERR_BADSTRUCTURE' },
    { label: 'nameoff outside strings', blob: mut((_, d) => d.setUint32(0x48, 0x100)), code: 'FDT_ERR_BADOFFSET', offset: 0x40, libfdt: 'FDT_ERR_BADOFFSET' },
    { label: 'named root', blob: mut((b) => (b[0x3c] = 0x41)), code: 'FDT_ERR_BADSTRUCTURE', offset: 0x38, libfdt: 'FDT_ERR_BADSTRUCTURE' },
    { label: 'second root', blob: mut((_, d) => d.setUint32(0x70, 2)), code: 'FDT_ERR_BADSTRUCTURE', offset: 0x70, libfdt: 'FDT_ERR_BADSTRUCTURE' },
    { label: 'missing END_NODE', blob: mut((_, d) => d.setUint32(0x6c, 4)), code: 'FDT_ERR_BADSTRUCTURE', offset: 0x70, libfdt: 'FDT_ERR_BADSTRUCTURE' },
    // libfdt 1.8.1 allows NOPs after the root and then runs off the block (TRUNCATED); 1.6.1
    // rejects the NOP itself (BADSTRUCTURE).
    { label: 'NOP instead of FDT_END', blob: mut((_, d) => d.setUint32(0x70, 4)), code: 'FDT_ERR_TRUNCATED', offset: 0x74, libfdt: null },
  ];

  it.each(BAD)('$label → $code at $offset', ({ blob, code, offset }) => {
    const e = fdtErr(() => decodeFdt(blob));
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('FdtError');
    expect([e.code, e.offset]).toEqual([code, offset]);
    expect(e.errno).toBe(FDT_ERRNO[code as keyof typeof FDT_ERRNO]);
    expect(e.message).toBe(`${code} at offset 0x${offset.toString(16)}: ${e.detail}`);
    const c = fdtErr(() => checkFdt(blob));
    expect([c.code, c.offset]).toEqual([code, offset]);
    expect(fdtErr(() => fdtToDts(blob)).code).toBe(code);
  });

  it('libfdt (tools/fdt-check.c) gives the same error names', (ctx) => {
    needTools(ctx, 'libfdt');
    const verdicts = libfdtCheck([good, ...BAD.map((b) => b.blob)]);
    expect(verdicts[0]).toBe('OK');
    BAD.forEach((b, i) => {
      if (b.libfdt !== null) expect(`${b.label}: ${verdicts[i + 1]}`).toBe(`${b.label}: ${b.code}`);
      else expect(verdicts[i + 1]).not.toBe('OK');
    });
  });

  it('validation levels: dtc rejects bad names and duplicates, strict rejects numeric node names', () => {
    const dup: FdtNode = { name: '', properties: [], children: [{ name: 'a', properties: [], children: [] }, { name: 'a', properties: [], children: [] }] };
    const blob = encodeFdt(dup, { layout: 'dtc' });
    expect(decodeFdt(blob)).toEqual(dup);
    const e = fdtErr(() => decodeFdt(blob, { validate: 'dtc' }));
    expect(e.code).toBe('FDT_ERR_BADSTRUCTURE');
    expect(e.offset).toBe(0x4c); // the second node's BEGIN_NODE (root 0x38, a 0x40, END_NODE 0x48)
    const kho = khoRoot({}, 1n, [{ name: '1', phys: 2n }]);
    expect(decodeFdt(kho, { validate: 'dtc' }).children[0]!.name).toBe('1');
    expect(fdtErr(() => decodeFdt(kho, { validate: 'strict' })).code).toBe('FDT_ERR_BADSTRUCTURE');
    const badChars: FdtNode = { name: '', properties: [{ name: 'a b', value: new Uint8Array(0) }], children: [] };
    expect(fdtErr(() => decodeFdt(encodeFdt(badChars), { validate: 'dtc' })).code).toBe('FDT_ERR_BADSTRUCTURE');
  });

  it('writer calls in the wrong state throw FDT_ERR_BADSTATE and change nothing', () => {
    const state = (f: () => unknown) => {
      const e = fdtErr(f);
      expect(e.code).toBe('FDT_ERR_BADSTATE');
      expect(e.errno).toBe(7);
      expect(e.offset).toBeUndefined();
    };
    const w = new FdtWriter({ layout: 'dtc' });
    state(() => w.propertyU32('early', 1)); // before the root
    state(() => w.endNode()); // nothing open
    state(() => w.finish()); // no root
    w.addReservemapEntry(0x1000n, 0x1000n);
    w.beginNode('');
    state(() => w.addReservemapEntry(0x2000n, 0x1000n)); // after the first node
    w.propertyU32('p', 1);
    w.beginNode('child').endNode();
    state(() => w.propertyU32('late', 1)); // property after a subnode
    state(() => w.finish()); // root still open: the writer stays usable
    w.endNode();
    state(() => w.beginNode('second-root'));
    state(() => w.propertyEmpty('after'));
    const blob = log.add('after BADSTATE errors', 'dtc', w.finish());
    state(() => w.finish()); // finished
    state(() => w.beginNode(''));
    expect(decodeFdtBlob(blob)).toEqual({
      version: 17,
      bootCpuidPhys: 0,
      reserve: [{ address: 0x1000n, size: 0x1000n }],
      root: { name: '', properties: [{ name: 'p', value: cells(1) }], children: [{ name: 'child', properties: [], children: [] }] },
    });
  });

  it('writer value errors: named root, NULs, zero-size reservation, NOSPACE', () => {
    expect(fdtErr(() => new FdtWriter().beginNode('root')).code).toBe('FDT_ERR_BADSTRUCTURE');
    expect(fdtErr(() => encodeFdt({ name: 'x', properties: [], children: [] })).code).toBe('FDT_ERR_BADSTRUCTURE');
    const w = new FdtWriter().beginNode('');
    expect(fdtErr(() => w.propertyString('s', 'a\0b')).code).toBe('FDT_ERR_BADVALUE');
    expect(fdtErr(() => w.propertyEmpty('a\0')).code).toBe('FDT_ERR_BADVALUE');
    expect(fdtErr(() => w.beginNode('n\0')).code).toBe('FDT_ERR_BADVALUE');
    expect(fdtErr(() => new FdtWriter().addReservemapEntry(0x1000n, 0n)).code).toBe('FDT_ERR_BADVALUE');
    const small = new FdtWriter({ maxSize: 0x4c }).beginNode('');
    expect(small.size).toBe(0x48);
    expect(fdtErr(() => small.propertyEmpty('x')).code).toBe('FDT_ERR_NOSPACE');
    expect(fdtErr(() => small.endNode().finish()).code).toBe('FDT_ERR_NOSPACE');
  });

  it('invalid JS arguments are TypeError / RangeError with Node codes, never a crash', () => {
    const argErr = (f: () => unknown, type: typeof TypeError | typeof RangeError, code: string) => {
      const e = thrown(f);
      expect(e).toBeInstanceOf(type);
      expect((e as { code?: string }).code).toBe(code);
    };
    const T = 'ERR_INVALID_ARG_TYPE', V = 'ERR_INVALID_ARG_VALUE', R = 'ERR_OUT_OF_RANGE';
    const w = new FdtWriter().beginNode('');
    const any = w as unknown as Record<string, (...a: unknown[]) => unknown>;
    argErr(() => any.propertyU32!.call(w, 'a', '1'), TypeError, T);
    argErr(() => any.propertyU32!.call(w, 'a', -1), RangeError, R);
    argErr(() => any.propertyU32!.call(w, 'a', 2 ** 32), RangeError, R);
    argErr(() => any.propertyU32!.call(w, 'a', 1.5), RangeError, R);
    argErr(() => any.propertyU32Le!.call(w, 'a', NaN), RangeError, R);
    argErr(() => any.propertyU64!.call(w, 'a', 1), TypeError, T);
    argErr(() => any.propertyU64!.call(w, 'a', -1n), RangeError, R);
    argErr(() => any.propertyU64Le!.call(w, 'a', 1n << 64n), RangeError, R);
    argErr(() => any.property!.call(w, 'a', [1, 2]), TypeError, T);
    argErr(() => any.property!.call(w, 1, new Uint8Array(1)), TypeError, T);
    argErr(() => any.propertyString!.call(w, 'a', null), TypeError, T);
    argErr(() => any.propertyStringList!.call(w, 'a', ['x', 1]), TypeError, T);
    argErr(() => any.propertyCells!.call(w, 'a', [1, -2]), RangeError, R);
    argErr(() => any.beginNode!.call(w, undefined), TypeError, T);
    argErr(() => any.addReservemapEntry!.call(new FdtWriter(), 1n, 2 ** 70), TypeError, T);
    argErr(() => new FdtWriter({ layout: 'dts' as FdtLayout }), RangeError, V);
    argErr(() => new FdtWriter({ maxSize: -1 }), RangeError, R);
    argErr(() => new FdtWriter({ maxSize: FDT_SIZE_MAX + 1 }), RangeError, R);
    argErr(() => decodeFdt(new Uint8Array(FDT_SIZE_MAX + 1)), RangeError, R);
    argErr(() => new FdtWriter({ bootCpuidPhys: 2 ** 32 }), RangeError, R);
    argErr(() => new FdtWriter(7 as never), TypeError, T);
    argErr(() => decodeFdt([1, 2] as never), TypeError, T);
    argErr(() => decodeFdt(new Uint8Array(0), { validate: 'loose' as never }), RangeError, V);
    argErr(() => fdtToDts('blob' as never), TypeError, T);
    argErr(() => encodeFdt(null as never), TypeError, T);
    argErr(() => encodeFdt({ name: '', properties: [{ name: 'a', value: 'x' }], children: [] } as never), TypeError, T);
    argErr(() => encodeFdt({ name: '', properties: [], children: [{ name: 1 }] } as never), TypeError, T);
    argErr(() => encodeFdt({ name: '', properties: [] } as never), TypeError, T);
    argErr(() => encodeFdt(BOARD, { reserve: [{ address: 1n, size: -1n }] }), RangeError, R);
    argErr(() => khoRoot({}, 1n, [{ name: 'a', phys: 1 as never }]), TypeError, T);
    argErr(() => khoRoot({ compatible: 5 as never }, 1n, []), TypeError, T);
    // The writer is still fine.
    w.endNode();
    expect(decodeFdt(w.finish())).toEqual({ name: '', properties: [], children: [] });
  });
});

describe('KHO root', () => {
  it('is byte-identical to kho_finalize() with libfdt and reads back', () => {
    const subtrees = [
      { name: 'memblock', phys: 0x1_00a3_f000n },
      { name: '1', phys: 0x1_00a4_0000n },
    ];
    const blob = log.add('kho', 'libfdt', khoRoot({}, 0x1_16be_4000n, subtrees, { layout: 'libfdt' }));
    expect(hex(blob)).toBe(KHO_GOLDEN);
    expect(blob).toEqual(unhex(KHO_GOLDEN));
    expect(fdtToDts(blob)).toContain('preserved-memory-map = <0x40be16 0x1000000>;');
    expect(khoRootInfo(blob)).toEqual({ memoryMap: 0x1_16be_4000n, subtrees });
    const dtc = log.add('kho', 'dtc', khoRoot({}, 0x1_16be_4000n, subtrees, { layout: 'dtc' }));
    expect(decodeFdt(dtc)).toEqual(decodeFdt(blob));
    const v2 = log.add('kho v2', 'libfdt', khoRoot(KHO_V2, 5n, [{ name: 'x', phys: 6n }]));
    expect(khoRootInfo(v2, KHO_V2)).toEqual({ memoryMap: 5n, subtrees: [{ name: 'x', phys: 6n }] });
    expect(fdtErr(() => khoRootInfo(v2)).code).toBe('FDT_ERR_BADVALUE'); // kho-v2 is not kho-v1
    expect(fdtErr(() => khoRootInfo(encodeFdt(BOARD))).code).toBe('FDT_ERR_BADVALUE');
    expect(khoRootInfo(pinnedExample('libfdt'))).toEqual({ memoryMap: 0x1_16be_4000n, subtrees: [] });
    const noMap = encodeFdt({ name: '', properties: [{ name: 'compatible', value: str('kho-v1') }], children: [] });
    expect(fdtErr(() => khoRootInfo(noMap)).code).toBe('FDT_ERR_NOTFOUND');
  });

  it(`fails with FDT_ERR_NOSPACE past one page (${KHO_ROOT_MAX} bytes)`, () => {
    expect(KHO_ROOT_MAX).toBe(4096);
    const sub = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `subtree-${i}`, phys: BigInt(i) << 12n }));
    let n = 1;
    while (khoRoot({}, 0n, sub(n + 1)).length <= KHO_ROOT_MAX - 40) n++;
    // Grow until the cap: the last fitting blob is at most one page, the next one fails.
    let last = khoRoot({}, 0n, sub(n));
    for (;;) {
      try {
        last = khoRoot({}, 0n, sub(n + 1));
        n++;
      } catch (e) {
        expect(e).toBeInstanceOf(FdtError);
        expect((e as FdtError).code).toBe('FDT_ERR_NOSPACE');
        break;
      }
    }
    expect(last.length).toBeLessThanOrEqual(KHO_ROOT_MAX);
    log.add('kho at the cap', 'libfdt', last);
    expect(khoRootInfo(last).subtrees).toHaveLength(n);
    expect(fdtErr(() => khoRoot({}, 0n, [{ name: '', phys: 0n }])).code).toBe('FDT_ERR_BADSTRUCTURE');
  });
});

describe('FDT cross-checks with dtc and libfdt', () => {
  it('every blob above passes dtc -I dtb and fdt_check_full; our DTS is dtc\'s and compiles back to our dtc-layout bytes', (ctx) => {
    needTools(ctx, 'dtc', 'libfdt');
    expect(log.entries.length).toBeGreaterThan(10);
    expect(verifyWithTools(log)).toEqual([]);
  });
});
