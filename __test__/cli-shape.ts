// The shape of `simulate --json` (schemaVersion 1) for the CLI tests: the RFC flow's document
// (exact keys), and the LUO flow's (the same with the fields that flow adds).
import { DEFAULT_COSTS, WORK_FIELDS } from 'iommu-liveupdate';

// ---- the --json document, schemaVersion 1 --------------------------------------------------------

export type Shape = 'string' | 'number' | 'integer' | 'boolean' | 'hex' | 'bdf' | Shape[] | { [key: string]: Shape } | { nullable: Shape } | { enum: readonly unknown[] } | { partial: { [key: string]: Shape } };

/** Every mismatch between `value` and `shape` (objects must have exactly the listed keys). */
export function mismatches(value: unknown, shape: Shape, path = '$'): string[] {
  if (Array.isArray(shape)) {
    if (!Array.isArray(value)) return [`${path}: not an array`];
    return value.flatMap((v, i) => mismatches(v, shape[0]!, `${path}[${i}]`));
  }
  if (typeof shape === 'object') {
    if ('nullable' in shape && Object.keys(shape).length === 1) return value === null ? [] : mismatches(value, shape.nullable as Shape, path);
    if ('enum' in shape && Object.keys(shape).length === 1) return (shape.enum as unknown[]).includes(value) ? [] : [`${path}: ${JSON.stringify(value)} not one of ${JSON.stringify(shape.enum)}`];
    if ('partial' in shape && Object.keys(shape).length === 1) {
      // An object of some of the listed keys (a phase's work: only the kinds it did).
      if (value === null || typeof value !== 'object' || Array.isArray(value)) return [`${path}: not an object`];
      const part = shape.partial as Record<string, Shape>;
      return Object.entries(value).flatMap(([k, v]) => (k in part ? mismatches(v, part[k]!, `${path}.${k}`) : [`${path}.${k}: unexpected`]));
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return [`${path}: not an object`];
    const o = value as Record<string, unknown>;
    const s = shape as Record<string, Shape>;
    const extra = Object.keys(o).filter((k) => !(k in s)).map((k) => `${path}.${k}: unexpected`);
    return [...extra, ...Object.keys(s).flatMap((k) => (k in o ? mismatches(o[k], s[k]!, `${path}.${k}`) : [`${path}.${k}: missing`]))];
  }
  const ok =
    shape === 'string' ? typeof value === 'string'
    : shape === 'number' ? typeof value === 'number' && Number.isFinite(value)
    : shape === 'integer' ? Number.isSafeInteger(value) && (value as number) >= 0
    : shape === 'boolean' ? typeof value === 'boolean'
    : shape === 'hex' ? typeof value === 'string' && /^0x[0-9a-f]+$/.test(value)
    : typeof value === 'string' && /^0000:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/.test(value);
  return ok ? [] : [`${path}: ${JSON.stringify(value)} is not ${shape}`];
}

/** A phase's work: some of the kinds, each a count. */
export const WORK: Shape = { partial: Object.fromEntries(WORK_FIELDS.map((k) => [k, 'integer'])) };
const step: Shape = { timelineIndex: 'integer', phase: 'string', generation: 'integer', pagesWritten: 'integer', pagesVerified: 'integer', faults: 'integer', mismatches: 'integer', faultReasons: ['integer'] };
export const SIMULATE_V1: Shape = {
  schemaVersion: { enum: [1] },
  command: { enum: ['simulate'] },
  flow: { enum: ['rfc'] },
  tool: { enum: ['iommu-liveupdate'] },
  version: 'string',
  config: {
    hostMemoryBytes: 'integer',
    guestmemfsBytes: 'integer',
    vms: 'integer',
    guestMemBytes: 'integer',
    devicesPerVm: 'integer',
    pageSize: { enum: ['4k', '2m', 'mixed'] },
    kexecs: 'integer',
    seed: 'string',
    pagesPerStep: 'integer',
    kho: 'boolean',
  },
  costModel: Object.fromEntries(Object.keys(DEFAULT_COSTS).map((k) => [k, 'number'])),
  verdict: { enum: ['pass', 'fail'] },
  checks: [{ name: 'string', ok: 'boolean', detail: 'string' }],
  vms: [{ name: 'string', persistentId: 'integer', ioasId: 'integer', guestMemBytes: 'integer', iova: 'hex', iommuPageSize: { enum: ['4k', '2m'] }, file: 'string', devices: ['bdf'] }],
  devices: [
    {
      bdf: 'bdf',
      kind: { enum: ['nvme', 'nic'] },
      vm: { nullable: 'string' },
      persistent: 'boolean',
      window: { iova: 'hex', bytes: 'integer' },
      countWindow: { label: 'string', fromIndex: 'integer', toIndex: 'integer' },
      transactions: 'integer',
      bytes: 'integer',
      pagesWritten: 'integer',
      pagesVerified: 'integer',
      faults: 'integer',
      mismatches: 'integer',
      faultReasons: ['integer'],
      firstFault: { nullable: { phase: 'string', generation: 'integer' } },
      iommuProbe: { nullable: { faulted: 'boolean', reason: 'integer' } },
      status: { enum: ['ok', 'blocked', 'failed'] },
      steps: [step],
    },
  ],
  updates: [
    {
      index: 'integer',
      fromGeneration: 'integer',
      toGeneration: 'integer',
      kho: {
        blobBytes: 'integer',
        iommufds: 'integer',
        ioases: 'integer',
        mappings: 'integer',
        mappedBytes: 'integer',
        domains: 'integer',
        pageTablePages: 'integer',
        rootContextPages: 'integer',
        preservedBytes: 'integer',
        preservedRanges: 'integer',
      },
      blackout: {
        from: 'string',
        to: { enum: ['vmm-reattach'] },
        simNs: 'integer',
        simMs: 'number',
        wallMs: 'number',
        fromIndex: 'integer',
        toIndex: 'integer',
        phases: [{ phase: 'string', generation: 'integer', costNs: 'integer', costMs: 'number', work: WORK }],
      },
      dma: { countWindow: { label: 'string', fromIndex: 'integer', toIndex: 'integer' }, transactions: 'integer', bytes: 'integer', faults: 'integer', byDevice: [{ bdf: 'bdf', transactions: 'integer', bytes: 'integer', faults: 'integer' }] },
    },
  ],
  kho: {
    nullable: {
      blobBytes: 'integer',
      blobAddress: { nullable: 'hex' },
      domains: [{ index: 'integer', persistentId: 'integer', did: 'integer', pgd: 'hex', levels: 'integer', devices: ['string'], tablePages: 'integer' }],
      areas: [{ iommufd: 'integer', ioas: 'integer', area: 'integer', iova: 'hex', last: 'hex', bytes: 'integer', prot: 'string', segments: [{ ino: 'integer', offset: 'hex', bytes: 'integer' }] }],
      preserved: [{ owner: 'string', ranges: 'integer', bytes: 'integer', first: 'hex' }],
    },
  },
  timeline: [{ generation: 'integer', phase: 'string', simNs: 'integer', costNs: 'integer', work: WORK, wallMs: 'number' }],
  wallMs: 'number',
};


/** `simulate --flow luo --json`: the RFC flow's document with what crosses in the sessions. */
export function simulateLuoShape(): Shape {
  const s = structuredClone(SIMULATE_V1) as Record<string, any>;
  s.flow = { enum: ['luo'] };
  s.vms[0].persistentId = { nullable: 'integer' };
  s.vms[0].session = 'string';
  s.updates[0].blackout.to = { enum: ['luo-finish'] };
  s.updates[0].luo = { sessions: 'integer', files: 'integer', memfds: 'integer', folios: 'integer', iommufds: 'integer', hwpts: 'integer', devices: 'integer' };
  s.kho.nullable.luo = { preservedData: 'hex', blobSize: 'integer' };
  return s as Shape;
}
