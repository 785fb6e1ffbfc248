// Runs operations against the model and the simulator side by side: every syscall a plan makes is
// executed on the simulated host, its outcome (value, errno, DMA bytes or fault) must be one the
// model accepts, and after every operation the pinned-page count and the caller's invariants must
// hold. A failure is a FuzzDivergence naming the operation, the syscall, what the model allowed and
// what the simulator did.
import fc from 'fast-check';
import { invalidArgValue } from '../errors.js';
import { Host, type Process } from '../index.js';
import { corruptedLiveUpdate, mutationFromSeed } from './handover.js';
import { DEFAULT_WORLD, Model, observe, type Alt, type Obs, type Plan, type Sys, type WorldConfig } from './model/index.js';
import { DEFAULT_WEIGHTS, formatOp, type CommandWeights, type Op } from './ops.js';

/** A check of your own, run after every operation: throw to report a failure. */
export type Invariant = (host: Host, model: Model) => void;

/** Thrown when the simulator and the model disagree. */
export class FuzzDivergence extends Error {
  readonly code = 'ERR_FUZZ_DIVERGENCE';
  constructor(
    message: string,
    /** Index of the operation in the sequence. */
    readonly step: number,
    readonly op: Op,
    /** The syscall (or check) that diverged. */
    readonly syscall: string,
    readonly expected: string,
    readonly observed: string,
    /** What the syscall threw, when it threw (a bug of the simulator, or of a process wrapper). */
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'FuzzDivergence';
  }
}

const hexish = (v: unknown): string => {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (v instanceof Uint8Array) return `<${Buffer.from(v.buffer, v.byteOffset, v.length).toString('hex')}>`;
  if (Array.isArray(v)) return `[${v.map(hexish).join(', ')}]`;
  if (v && typeof v === 'object') return `{ ${Object.entries(v).map(([k, x]) => `${k}: ${hexish(x)}`).join(', ')} }`;
  return JSON.stringify(v) ?? String(v);
};

export function formatObs(o: Obs): string {
  if (o.t === 'ok') return `ok ${o.v === undefined ? '' : hexish(o.v)}`.trim();
  if (o.t === 'err') return `${o.code} (${o.syscall})`;
  return `DMA fault reason 0x${o.reason.toString(16)} at 0x${o.iova.toString(16)}${o.write ? ' (write)' : ''}`;
}

function formatAlt(a: Alt): string {
  if (a.any) return 'anything (unspecified)';
  if (a.okAny) return 'success';
  if (a.okCheck) return 'success (checked)';
  if ('ok' in a) return `ok ${hexish(a.ok)}`;
  if (a.err) return a.err.join(' or ');
  if (a.fault) return `DMA fault reason ${a.fault.reasons.map((r) => `0x${r.toString(16)}`).join('/')} at 0x${a.fault.iova.toString(16)}`;
  return '?';
}

function deepEq(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a instanceof Uint8Array && b instanceof Uint8Array) return a.length === b.length && a.every((x, i) => x === b[i]);
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEq(x, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => deepEq((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  }
  return false;
}

function matches(a: Alt, o: Obs): boolean {
  if (a.any) return true;
  if (o.t === 'ok') {
    if (a.okAny) return true;
    if (a.okCheck) return a.okCheck(o.v) === null;
    return 'ok' in a && deepEq(o.v, a.ok);
  }
  if (o.t === 'err') return !!a.err?.includes(o.code);
  return !!a.fault && a.fault.reasons.includes(o.reason) && a.fault.iova === o.iova && a.fault.write === o.write;
}

/** Counters shared by every rig of one fuzz() call. */
export interface FuzzCounters {
  commands: number;
  /** Commands that made at least one syscall (the others did not apply to the state they met). */
  effective: number;
  syscalls: number;
  kexecs: number;
  /** Tagged syscalls (Plan.tag) by tag and outcome ('ok', an errno or 'fault'). */
  coverage?: Record<string, number>;
}

export interface RigOptions {
  counters?: FuzzCounters;
  invariants?: Invariant[];
  /** Every operation and syscall, as it runs. */
  log?: (line: string) => void;
  /** Wraps each VMM process, the first before setup (the oracle records its syscalls as a sequence). */
  wrapProcess?: (p: Process) => Process;
}

/** One host, its VMM, and the model beside them. */
export class Rig {
  readonly model: Model;
  readonly sys: Sys;
  private step = 0;
  /** The last syscalls, for failure messages. */
  readonly trail: string[] = [];

  private readonly counters: FuzzCounters;
  private readonly invariants: Invariant[];
  private readonly verbose?: (line: string) => void;

  constructor(
    readonly world: WorldConfig,
    hostSeed: number,
    opts: RigOptions = {},
  ) {
    this.counters = opts.counters ?? { commands: 0, effective: 0, syscalls: 0, kexecs: 0 };
    this.invariants = opts.invariants ?? [];
    this.verbose = opts.log;
    // The LUO world boots the upstream flow beside the RFC's (both share KHO and the hardware).
    const cmdline = `guestmemfs=${world.guestmemfsMiB}M${world.flow === 'luo' ? ' kho=on liveupdate=on' : ''}`;
    // The kernel is built with the iommu live-update series (its iommufd-v1 and vfio-pci-v1 handlers
    // beside memfd's), which the model follows across the reboot (model/luo-iommu.ts).
    const host = Host.boot({
      memory: world.memory,
      seed: hostSeed,
      cmdline,
      devices: world.devices.map((bdf) => ({ bdf })),
    });
    // A VMM spawned later (after a kexec) is wrapped too.
    const wrap = opts.wrapProcess ?? ((q: Process) => q);
    let vmm = wrap(host.kernel.spawn());
    this.sys = {
      host,
      get p() {
        return vmm;
      },
      set p(q: Process) {
        vmm = wrap(q);
      },
    };
    this.model = new Model(world);
    this.runPlans(this.model.planSetup(), { k: 'check' }, -1);
  }

  get host(): Host {
    return this.sys.host;
  }

  private runPlans(plans: Generator<Plan, void, void>, op: Op, step: number): void {
    for (let r = plans.next(); !r.done; r = plans.next()) {
      const plan = r.value;
      this.counters.syscalls++;
      let obs: Obs;
      try {
        obs = observe(this.sys, plan);
      } catch (e) {
        throw this.divergence(step, op, plan.what, plan.alts.map(formatAlt).join(' | '), `threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, e);
      }
      const line = `${plan.what} -> ${formatObs(obs)}`;
      if (this.trail.length >= 12) this.trail.shift();
      this.trail.push(line);
      this.verbose?.(`  ${line}`);
      const alt = plan.alts.find((a) => matches(a, obs));
      if (!alt) throw this.divergence(step, op, plan.what, plan.alts.map(formatAlt).join(' | '), formatObs(obs));
      alt.then?.(obs);
      if (plan.tag && this.counters.coverage) {
        const k = `${plan.tag} ${obs.t === 'ok' ? 'ok' : obs.t === 'err' ? obs.code : 'fault'}`;
        this.counters.coverage[k] = (this.counters.coverage[k] ?? 0) + 1;
      }
    }
  }

  private divergence(step: number, op: Op, what: string, expected: string, observed: string, cause?: unknown): FuzzDivergence {
    const msg =
      `divergence at step ${step} ${formatOp(op)}\n  syscall:  ${what}\n  expected: ${expected}\n  observed: ${observed}\n` +
      `  recent syscalls:\n${this.trail.map((l) => `    ${l}`).join('\n')}`;
    return new FuzzDivergence(msg, step, op, what, expected, observed, cause);
  }

  /** Runs one operation and the per-operation invariants (none once a corrupted handover ran). */
  run(op: Op): void {
    if (this.model.opaque) return;
    const step = this.step++;
    this.verbose?.(`#${step} ${formatOp(op)}`);
    const k0 = this.model.kexecs;
    const s0 = this.counters.syscalls;
    this.runPlans(this.model.plan(op), op, step);
    this.counters.commands++;
    if (this.counters.syscalls > s0) this.counters.effective++;
    this.counters.kexecs += this.model.kexecs - k0;
    if (op.k === 'corruptKexec') return this.corruptKexec(op, step);
    const got = this.sys.host.kernel.pinnedPages();
    const want = this.model.pinnedPages();
    if (got !== want) throw this.divergence(step, op, 'host.kernel.pinnedPages()', String(want), String(got));
    for (const inv of this.invariants) {
      try {
        inv(this.sys.host, this.model);
      } catch (e) {
        throw this.divergence(step, op, 'invariant', 'no exception', e instanceof Error ? e.message : String(e));
      }
    }
  }

  /**
   * The update with a corrupted blob (fuzz/handover.ts): every VMM re-claims and re-attaches what the
   * model says it had, and no device may translate anything it did not before. The model cannot
   * say what the next kernel refused, so it is opaque from here on.
   */
  private corruptKexec(op: Extract<Op, { k: 'corruptKexec' }>, step: number): void {
    const { vmms, probes } = this.model.handoverPlan();
    const m = mutationFromSeed(op.seed, op.semantic ? 'semantic' : 'raw');
    const r = corruptedLiveUpdate(this.sys.host, this.sys.p, m, vmms, this.world.devices, probes);
    this.model.opaque = true;
    this.counters.kexecs++;
    this.sys.p = this.sys.host.kernel.spawn();
    const bad = [...r.widenedAtBoot.map((x) => `at boot: ${x}`), ...r.widenedAfterReattach.map((x) => `after re-attach: ${x}`)];
    const what = JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v));
    this.verbose?.(`  corrupted handover ${what}: ${r.reattached.length} devices re-attached, ${bad.length} widened`);
    if (bad.length) throw this.divergence(step, op, `live update with a corrupted handover ${what}`, 'no device gains a translation', bad.slice(0, 6).join('; '));
  }

  /** The end of a sequence: a deep check, the VMM exits, nothing of it stays pinned. */
  finish(): void {
    if (this.model.opaque) return;
    this.run({ k: 'check' });
    this.run({ k: 'exit' });
    this.run({ k: 'check' });
  }
}

/** fast-check command wrapping one operation. */
export class FuzzCommand implements fc.Command<Rig, Rig> {
  constructor(readonly op: Op) {}
  /** Nothing runs after a corrupted handover (the model no longer knows the state). */
  check(rig: Readonly<Rig>): boolean {
    return !rig.model.opaque;
  }
  run(_m: Rig, rig: Rig): void {
    rig.run(this.op);
  }
  toString(): string {
    return formatOp(this.op);
  }
}

/** Everything needed to re-run a failure deterministically (`npm run fuzz -- --replay FILE`). */
export interface ReplayFile {
  format: 'iommu-liveupdate-fuzz/1';
  /** fast-check seed and path of the failing run (for `fuzz({ seed, path })`). */
  seed: number;
  path?: string;
  hostSeed: number;
  world: { memory: string; guestmemfsMiB: number; devices: string[]; flow?: 'rfc' | 'luo' };
  commands?: CommandWeights;
  maxCommands?: number;
  /** The shrunk counterexample. */
  ops: Op[];
  message: string;
}

export function worldToJson(w: WorldConfig): ReplayFile['world'] {
  return { memory: w.memory.toString(), guestmemfsMiB: w.guestmemfsMiB, devices: [...w.devices], ...(w.flow === 'luo' ? { flow: 'luo' as const } : {}) };
}
export function worldFromJson(w: ReplayFile['world'] | undefined): WorldConfig {
  return w ? { memory: BigInt(w.memory), guestmemfsMiB: w.guestmemfsMiB, devices: [...w.devices], flow: w.flow === 'luo' ? 'luo' : 'rfc' } : DEFAULT_WORLD;
}

/** Result of {@link replay}. */
export interface ReplayResult {
  ok: boolean;
  /** The failure, if the sequence still fails. */
  error?: Error;
  /** Operations run (including the failing one). */
  steps: number;
}

/**
 * Re-runs a recorded sequence on a fresh host, without fast-check: deterministic, and with every
 * syscall printed through `log` if given. A file that is not a replay file (another format, an
 * operation the fuzzer does not have) is refused with a TypeError (`ERR_INVALID_ARG_VALUE`).
 */
export function replay(file: ReplayFile, opts: { invariants?: Invariant[]; log?: (line: string) => void } = {}): ReplayResult {
  const bad = (why: string): never => {
    throw invalidArgValue(`not a replay file: ${why}`, TypeError);
  };
  if (file?.format !== 'iommu-liveupdate-fuzz/1') bad(`format ${JSON.stringify(file?.format)} is not 'iommu-liveupdate-fuzz/1'`);
  if (!Array.isArray(file.ops)) bad('ops is not an array');
  file.ops.forEach((op, i) => {
    if (typeof op !== 'object' || op === null || !Object.hasOwn(DEFAULT_WEIGHTS, op.k)) bad(`operation ${i} has unknown kind ${JSON.stringify((op as { k?: unknown })?.k)}`);
  });
  const rig = new Rig(worldFromJson(file.world), file.hostSeed, { invariants: opts.invariants, log: opts.log });
  let steps = 0;
  try {
    for (const op of file.ops) {
      steps++;
      rig.run(op);
    }
    rig.finish();
    return { ok: true, steps };
  } catch (e) {
    return { ok: false, error: e as Error, steps };
  }
}
