// The hardware facade's part of __test__/native-boundary.child.mjs: every constructor, method and
// getter of PhysicalMemory, IommuUnit, PageTable, Gather and FdtWriter, and the FDT functions,
// called on objects the harness made with generated arguments. The list is read from the
// prototypes at run time and returned, so the parent can hold it to what was exercised.
import {
  FdtWriter,
  Gather,
  IommuUnit,
  PageTable,
  PhysicalMemory,
  checkFdt,
  decodeFdt,
  decodeFdtBlob,
  encodeFdt,
  fdtToDts,
  khoRoot,
  khoRootInfo,
} from '../dist/index.js';

const FUNCTIONS = { encodeFdt, decodeFdt, decodeFdtBlob, checkFdt, fdtToDts, khoRoot, khoRootInfo };
/** Classes a caller constructs; PageTable's constructor is private (units make page tables). */
const CLASSES = { PhysicalMemory, IommuUnit, Gather, PageTable, FdtWriter };
const CONSTRUCTED = ['PhysicalMemory', 'IommuUnit', 'Gather', 'FdtWriter'];

export function fuzzFacade({ fc, call, fuzz, odd, realArgs, u64Valid, intValid, typedValid, BLOB, MEM_SIZE, seed }) {
  const objects = { PhysicalMemory: [], IommuUnit: [], Gather: [], PageTable: [], FdtWriter: [] };
  const keep = (cls, o) => {
    const p = objects[cls];
    if (p.length < 6) p.push(o);
    else p[seed % p.length] = o;
  };
  for (const s of [1n, 2n]) {
    const mem = new PhysicalMemory({ size: MEM_SIZE, seed: s });
    const unit = new IommuUnit(mem);
    keep('PhysicalMemory', mem);
    keep('IommuUnit', unit);
    keep('PageTable', unit.createPageTable());
    keep('Gather', new Gather());
  }
  keep('FdtWriter', new FdtWriter().beginNode(''));
  const pick = (cls) => fc.nat().map((n) => objects[cls][n % objects[cls].length]);

  const bool = fc.boolean();
  const tree = fc.constantFrom({ name: '', properties: [{ name: 'compatible', value: new Uint8Array([97, 0]) }], children: [{ name: 'a@1', properties: [], children: [] }] });
  /** Values of the shapes the facade takes (most valid), so calls get past their first check. */
  const plausible = fc.oneof(
    u64Valid,
    intValid(0, 70_000),
    bool,
    typedValid('Uint8Array'),
    typedValid('BigUint64Array'),
    typedValid('Float64Array'),
    fc.constantFrom('', 'a', 'compatible', 'libfdt', 'dtc'),
    fc.record({ read: bool, write: bool, snoop: bool }, { requiredKeys: [] }),
    fc.record({ write: bool, faults: fc.option(typedValid('Uint8Array'), { nil: undefined }) }, { requiredKeys: ['write'] }),
    fc.record({ zero: bool }, { requiredKeys: [] }),
    fc.record({ size: u64Valid, seed: fc.oneof(u64Valid, intValid(0, 100)) }, { requiredKeys: ['size'] }),
    fc.record(
      {
        addressWidth: fc.constantFrom(39, 48, 57, 40),
        superpages: fc.subarray(['2M', '1G']),
        iotlbEntries: intValid(0, 70_000),
        iotlbWays: intValid(0, 2000),
        pagingStructureCacheEntries: intValid(0, 70_000),
        faultRecords: intValid(0, 300),
        mamv: intValid(0, 70),
        psi: bool,
      },
      { requiredKeys: [] },
    ),
    fc.record({ granularity: fc.constantFrom('global', 'domain', 'device', 'page'), did: intValid(0, 70_000), sid: intValid(0, 70_000), addr: u64Valid, am: intValid(0, 70), ih: bool }, { requiredKeys: ['granularity'] }),
    fc.record({ layout: fc.constantFrom('libfdt', 'dtc'), maxSize: intValid(0, 1 << 20), validate: fc.constantFrom('structural', 'dtc', 'strict'), bootCpuidPhys: intValid(0, 9) }, { requiredKeys: [] }),
    fc.array(fc.record({ name: fc.constantFrom('memblock', '1'), phys: u64Valid }), { maxLength: 3 }),
    tree,
    fc.constant(BLOB),
    pick('PhysicalMemory'),
    pick('Gather'),
  );
  const value = fc.oneof({ weight: 6, arbitrary: plausible }, { weight: 3, arbitrary: odd });
  const argList = fc.array(value, { maxLength: 6 });

  const entryPoints = [];
  // Named 'facade …': the addon has an fdtToDts too.
  for (const [name, f] of Object.entries(FUNCTIONS)) {
    const label = `facade ${name}`;
    entryPoints.push(label);
    fuzz(label, argList, (a) => call(label, () => f(...realArgs(a)), true));
  }
  for (const [cls, C] of Object.entries(CLASSES)) {
    if (CONSTRUCTED.includes(cls)) {
      const label = `facade ${cls}`;
      entryPoints.push(label);
      fuzz(label, argList, (a) => {
        const o = call(label, () => new C(...realArgs(a)), true);
        if (o && cls !== 'PhysicalMemory') keep(cls, o);
      });
    }
    for (const m of Object.getOwnPropertyNames(C.prototype)) {
      if (m === 'constructor') continue;
      const label = `facade ${cls}#${m}`;
      entryPoints.push(label);
      const d = Object.getOwnPropertyDescriptor(C.prototype, m);
      if (d.get) fuzz(label, pick(cls), (r) => call(label, () => d.get.call(r), true));
      else
        fuzz(label, fc.tuple(pick(cls), argList), ([r, a]) => {
          const out = call(label, () => d.value.apply(r, realArgs(a)), true);
          if (out instanceof PageTable) keep('PageTable', out);
          if (m === 'finish') keep('FdtWriter', new FdtWriter().beginNode(''));
        });
    }
  }
  return entryPoints;
}
