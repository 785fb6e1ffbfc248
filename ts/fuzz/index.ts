// iommu-liveupdate/fuzz: model-based fuzzing of the simulated host's uAPI across kexec.
import fc from 'fast-check';
import type { Host } from '../index.js';
import { DEFAULT_WORLD, type Model, type WorldConfig } from './model/index.js';
import { opArbitrary, weightsOf, type CommandWeights, type Op } from './ops.js';
import { FuzzCommand, Rig, worldToJson, type FuzzCounters, type Invariant, type ReplayFile } from './runner.js';

export { DEFAULT_WORLD, Model, pattern, type WorldConfig, type MCtx, type MIoas, type MHwpt, type MArea, type MDevice } from './model/index.js';
export { DEFAULT_WEIGHTS, LUO_KINDS, LUO_WEIGHTS, OP_ARBITRARIES, formatOp, opArbitrary, weightsOf, type CommandWeights, type IovaChoice, type Op, type OpKind } from './ops.js';
export { LUO_FILE_MODELS, LuoModel, type FdTarget, type LuoFileModel, type MLuoFile, type MSession, type MShmem } from './model/luo.js';
export { FuzzDivergence, Rig, replay, type Invariant, type ReplayFile, type ReplayResult, type RigOptions } from './runner.js';
export {
  HANDOVER_MAPS,
  bootHandoverHost,
  fuzzHandover,
  mutateHandover,
  rawMutation,
  runHandoverCase,
  semanticMutation,
  translations,
  widened,
  type HandoverCaseResult,
  type HandoverFuzzOptions,
  type HandoverFuzzResult,
  type HandoverHost,
  type HandoverMutation,
  type Translations,
} from './handover.js';

/** Options of {@link fuzz}. */
export interface FuzzOptions {
  /** Random sequences to run (fast-check `numRuns`; default 100). */
  runs?: number;
  /** fast-check seed (default: random). The same seed replays the same sequences. */
  seed?: number;
  /** fast-check path of a failing run, to replay only it (with its `seed`). */
  path?: string;
  /** Longest sequence (default 200 operations). */
  maxCommands?: number;
  /** Weights per operation kind, merged over the flow's defaults ({@link DEFAULT_WEIGHTS}, {@link LUO_WEIGHTS}; 0 disables a kind). */
  commands?: CommandWeights;
  /**
   * The host: memory, guestmemfs size, devices, flow (default {@link DEFAULT_WORLD}). Without a
   * `flow`, both flows are fuzzed: the first half of the runs on the RFC's host, the second half
   * on a host booted with `kho=on liveupdate=on` (`flow: 'luo'`), each with its default mix.
   */
  world?: Partial<WorldConfig>;
  /** Your own checks after every operation: `(host, model) => void`, throw to fail. */
  invariants?: Invariant | Invariant[];
  /** Called once with the shrunk counterexample when a run fails. */
  onFailure?: (failure: FuzzFailure) => void;
  /**
   * Keep JavaScript stack traces while fuzzing (default false: `Error.stackTraceLimit` is 0 for the
   * duration of the call, which halves the cost of the many failing syscalls; restored after).
   */
  stackTraces?: boolean;
}

/** A failing run, shrunk. */
export interface FuzzFailure {
  seed: number;
  path: string;
  /** The failing sequence after shrinking. */
  ops: Op[];
  hostSeed: number;
  /** What diverged (the syscall, what the model allowed, what the simulator did). */
  message: string;
  error: unknown;
  /** Write `JSON.stringify(replayFile)` to a file; `npm run fuzz -- --replay FILE` re-runs it. */
  replayFile: ReplayFile;
}

/** One flow's share of a {@link fuzz} call. */
export interface FlowStats {
  runs: number;
  commands: number;
  effective: number;
  syscalls: number;
  kexecs: number;
  elapsedMs: number;
  /** Model-checked commands per second on this flow. */
  commandsPerSecond: number;
  /** The upstream flow's tagged syscalls by outcome, e.g. `preserve:iommufd-v1 EINVAL`. */
  coverage: Record<string, number>;
}

/** What {@link fuzz} returns: the totals over every flow, and each flow's share. */
export interface FuzzResult extends FlowStats {
  /** Each flow fuzzed (both unless `world.flow` chose one). */
  flows: { rfc?: FlowStats; luo?: FlowStats };
  ok: boolean;
  seed: number;
  failure?: FuzzFailure;
  /** fast-check's own report. */
  details: fc.RunDetails<[number, Iterable<fc.Command<Rig, Rig>>]>;
}

/**
 * Drives random sequences of uAPI operations — IOAS_MAP, MAP_FILE, COPY, UNMAP, ALLOW_IOVAS,
 * DESTROY, VFIO bind / attach / detach / unbind, device DMA with byte checks, the VMM's loads and
 * stores, guestmemfs create / truncate / unlink, KHO activate / abort, kexec with re-hydration
 * (claim, re-bind, re-attach), process exit — against a simulated host and a reference model of
 * what user space and devices can observe, and compares them after every syscall (return values,
 * errnos, DMA bytes and fault reasons) and every operation (pinned pages, your `invariants`).
 * Failures are shrunk by fast-check; the result carries the counterexample and a replay file.
 *
 * ```ts
 * import { fuzz } from 'iommu-liveupdate/fuzz';
 * const r = fuzz({ runs: 50, seed: 42, commands: { kexec: 1 }, invariants: (host) => {
 *   if (host.iommu.stats().faultsDropped) throw new Error('fault records overflowed');
 * } });
 * if (!r.ok) console.error(r.failure!.message);
 * ```
 *
 * Synchronous. Each run's host holds native memory that N-API finalizers free only when the event
 * loop turns: in a long loop of calls, `await new Promise((r) => setImmediate(r))` between them.
 */
export function fuzz(opts: FuzzOptions = {}): FuzzResult {
  if (opts.world?.flow) return fuzzFlow(opts, opts.world.flow, opts.runs ?? 100);
  const runs = opts.runs ?? 100;
  const rfc = fuzzFlow(opts, 'rfc', Math.ceil(runs / 2));
  if (!rfc.ok || runs < 2) return rfc;
  const luo = fuzzFlow(opts, 'luo', Math.floor(runs / 2));
  const sum = (k: 'runs' | 'commands' | 'effective' | 'syscalls' | 'kexecs' | 'elapsedMs') => rfc[k] + luo[k];
  return {
    ...luo,
    runs: sum('runs'),
    commands: sum('commands'),
    effective: sum('effective'),
    syscalls: sum('syscalls'),
    kexecs: sum('kexecs'),
    elapsedMs: sum('elapsedMs'),
    commandsPerSecond: sum('commands') / (sum('elapsedMs') / 1000),
    coverage: mergeCoverage(rfc.coverage, luo.coverage),
    flows: { rfc: rfc.flows.rfc, luo: luo.flows.luo },
  };
}

/** Sums coverage counts. */
export function mergeCoverage(...cs: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of cs) for (const [k, n] of Object.entries(c)) out[k] = (out[k] ?? 0) + n;
  return out;
}

function fuzzFlow(opts: FuzzOptions, flow: 'rfc' | 'luo', runs: number): FuzzResult {
  const world: WorldConfig = { ...DEFAULT_WORLD, ...opts.world, flow };
  const invariants = opts.invariants === undefined ? [] : Array.isArray(opts.invariants) ? opts.invariants : [opts.invariants];
  const counters: FuzzCounters = { commands: 0, effective: 0, syscalls: 0, kexecs: 0, coverage: {} };
  const cmd = fc.commands([opArbitrary(opts.commands, weightsOf(flow)).map((op) => new FuzzCommand(op))], { maxCommands: opts.maxCommands ?? 200, size: 'max' });
  const property = fc.property(fc.integer({ min: 0, max: 0x7fff_ffff }), cmd, (hostSeed, cmds) => {
    const rig = new Rig(world, hostSeed, { counters, invariants });
    fc.modelRun(() => ({ model: rig, real: rig }), cmds);
    rig.finish();
  });
  const limit = Error.stackTraceLimit;
  if (!opts.stackTraces) Error.stackTraceLimit = 0;
  const t0 = performance.now();
  let details: fc.RunDetails<[number, Iterable<fc.Command<Rig, Rig>>]>;
  try {
    details = fc.check(property, { numRuns: runs, seed: opts.seed, path: opts.path });
  } finally {
    Error.stackTraceLimit = limit;
  }
  const elapsedMs = performance.now() - t0;
  let failure: FuzzFailure | undefined;
  if (details.failed && details.counterexample) {
    const [hostSeed, cmds] = details.counterexample;
    const ops = [...cmds].map((c) => ((c as unknown as { cmd?: FuzzCommand }).cmd ?? (c as FuzzCommand)).op).filter((op): op is Op => !!op);
    const err = details.errorInstance;
    const message = err instanceof Error ? err.message : String(err);
    failure = {
      seed: details.seed,
      path: details.counterexamplePath ?? '',
      ops,
      hostSeed,
      message,
      error: err,
      replayFile: {
        format: 'iommu-liveupdate-fuzz/1',
        seed: details.seed,
        path: details.counterexamplePath ?? undefined,
        hostSeed,
        world: worldToJson(world),
        commands: opts.commands,
        maxCommands: opts.maxCommands,
        ops,
        message,
      },
    };
    opts.onFailure?.(failure);
  }
  const stats: FlowStats = {
    runs: details.numRuns + details.numShrinks,
    commands: counters.commands,
    effective: counters.effective,
    syscalls: counters.syscalls,
    kexecs: counters.kexecs,
    elapsedMs,
    commandsPerSecond: counters.commands / (elapsedMs / 1000),
    coverage: counters.coverage!,
  };
  return { ok: !details.failed, seed: details.seed, ...stats, failure, details, flows: { [flow]: stats } };
}

export type { Host };
