#!/usr/bin/env node
// `iommu-liveupdate`: the command line. `simulate` runs a live update with DMA persistence on a
// simulated host and says whether DMA survived it; `inspect` reads a KHO handover blob back.
// Exit codes: 0 all good, 1 a check failed (or the blob is bad, or an output file could not be
// written after the run), 2 a usage error (output files are tried before the run).
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync, statSync, unlinkSync, writeFileSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { checkCostConstants, decodeFdt, FdtError, fdtToDts, version, type CostConstants } from '../index.js';
import { KhoFormatError, summariseKho, type KhoSummary } from './kho-summary.js';
import { renderReport } from './report.js';
import { checkConfig, DEFAULT_CONFIG, fitMemory, HOST_OWN, simulate, type Flow, type PageSize, type ScenarioConfig } from './scenario/index.js';
import { compareRuns, renderComparison } from './scenario/compare.js';
import { COLOUR, PLAIN, renderKho, renderSummary, verdictLine } from './text.js';
import { formatBytes, parseCount, parseSize, parseU64, plural, sizeArg } from './units.js';

/** A bad flag or argument: message on stderr, exit code 2. */
class UsageError extends Error {}

const count = (flag: string) => (v: string) => {
  const n = parseCount(v);
  if (n === null) throw new InvalidArgumentError(`${flag} takes a whole number, like 2.`);
  return n;
};
const size = (flag: string) => (v: string) => {
  const n = parseSize(v);
  if (n === null) throw new InvalidArgumentError(`${flag} takes a size like 4G, 512M or 2048K (binary units).`);
  return n;
};
const seed = (v: string) => {
  const n = parseU64(v);
  if (n === null) throw new InvalidArgumentError('--seed takes an unsigned 64-bit integer, decimal or 0x hex.');
  return n;
};

/** One status line on a terminal's stderr, rewritten in place; nothing elsewhere. */
class Progress {
  private shown = false;
  private readonly t0 = performance.now();
  constructor(
    private readonly out: NodeJS.WriteStream,
    readonly enabled: boolean,
  ) {}
  update = (msg: string): void => {
    if (!this.enabled) return;
    const line = `[${((performance.now() - this.t0) / 1000).toFixed(1).padStart(5)} s] ${msg}`;
    this.out.write(`\r\x1b[K${line.slice(0, Math.max(20, (this.out.columns || 100) - 1))}`);
    this.shown = true;
  };
  clear(): void {
    if (this.shown) this.out.write('\r\x1b[K');
    this.shown = false;
  }
}

/** `EACCES: permission denied` from a Node fs error (its message without the call and path). */
function osReason(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return /^[A-Z0-9]+: [^,]+/.exec(err.message)?.[0] ?? err.code ?? err.message;
}

/** The nearest ancestor of `dir` that exists but is not a directory, if any. */
function notADirectory(dir: string): string | null {
  for (let d = dir; ; d = dirname(d)) {
    try {
      return statSync(d).isDirectory() ? null : d;
    } catch {
      if (d === dirname(d)) return null;
    }
  }
}

/**
 * An output file must be writable before minutes of simulation, not after: not a directory, in
 * a directory that exists, and either an existing file we may write or a new one we could create
 * (tried, then removed). Anything else is a usage error naming the flag, the path and the errno.
 */
function outputPath(flag: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  const path = resolve(file);
  const dir = dirname(path);
  let st: Stats | null = null;
  try {
    st = statSync(path);
  } catch {
    // A new file, or a directory that is missing or is not one: the probe below says which.
  }
  if (st?.isDirectory()) throw new UsageError(`${flag} ${file}: is a directory (EISDIR)`);
  try {
    if (st) accessSync(path, constants.W_OK);
    else closeSync(openSync(path, 'wx'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const blocker = notADirectory(dir);
    if (code === 'ENOTDIR' && blocker) throw new UsageError(`${flag} ${file}: ${blocker} is not a directory (ENOTDIR)`);
    if (code === 'ENOENT' && !existsSync(dir)) throw new UsageError(`${flag} ${file}: directory ${dir} does not exist (ENOENT)`);
    throw new UsageError(`${flag} ${file}: cannot ${st ? 'write it' : `create it in ${dir}`} (${osReason(e)})`);
  }
  if (!st) unlinkSync(path);
  return path;
}

/** Writes an output file after the run; a failure (disk full, ...) is reported, and the run fails. */
function writeOutput(flag: string, file: string, path: string, data: string | Uint8Array): boolean {
  try {
    writeFileSync(path, data);
    return true;
  } catch (e) {
    process.stderr.write(`error: ${flag} ${file}: cannot write it (${osReason(e)})\n`);
    return false;
  }
}

interface SimulateFlags {
  flow: Flow | 'both';
  vms: number;
  guestMem: bigint;
  hostMem?: bigint;
  guestmemfs?: bigint;
  devices: number;
  pageSize: PageSize;
  kexecs: number;
  seed: bigint;
  json?: boolean;
  report?: string;
  dumpKho?: string;
  quiet?: boolean;
  kho: boolean;
  costModel?: string;
}

/**
 * `--cost-model FILE.json`: a JSON object of phase cost constants (ns) over the defaults, read
 * and checked before the run: a file that cannot be read, is not JSON, names an unknown
 * constant or gives a bad number is a usage error naming the flag, the file and the reason.
 */
function costModelFile(file: string | undefined): Partial<CostConstants> | undefined {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`--cost-model ${file}: cannot read it (${osReason(e)})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--cost-model ${file}: not JSON (${(e as Error).message})`);
  }
  try {
    return checkCostConstants(value, 'costModel');
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_')) throw new UsageError(`--cost-model ${file}: ${(e as Error).message} (${code})`);
    throw e;
  }
}

function runSimulate(f: SimulateFlags): void {
  const asked: ScenarioConfig = { ...DEFAULT_CONFIG, flow: f.flow === 'both' ? 'rfc' : f.flow, vms: f.vms, guestMem: f.guestMem, devicesPerVm: f.devices, pageSize: f.pageSize, kexecs: f.kexecs, seed: f.seed, kho: f.kho };
  const why = checkConfig(asked);
  if (why) throw new UsageError(why);
  const memory = fitMemory(asked, { hostMemory: f.hostMem, carveOut: f.guestmemfs });
  if ('error' in memory) throw new UsageError(memory.error);
  const config: ScenarioConfig = { ...asked, hostMemory: memory.hostMemory, carveOut: memory.carveOut, costModel: costModelFile(f.costModel) };
  if (!f.kho && f.dumpKho !== undefined) throw new UsageError('--dump-kho needs KHO: drop --no-kho');
  if (f.flow === 'both' && (f.report !== undefined || f.dumpKho !== undefined)) throw new UsageError(`${f.report !== undefined ? '--report' : '--dump-kho'} takes one flow's run: use --flow rfc or --flow luo`);
  const report = outputPath('--report', f.report);
  const dump = outputPath('--dump-kho', f.dumpKho);
  if (report !== undefined && report === dump) throw new UsageError(`--report and --dump-kho both name ${report}: give each its own file`);
  const json = !!f.json;
  const quiet = !!f.quiet;
  const log = (msg: string) => {
    if (!quiet) process.stderr.write(`${msg}\n`);
  };
  if (memory.note) log(`note: ${memory.note}`);
  const progress = new Progress(process.stderr, !json && !quiet && process.stderr.isTTY === true);
  const style = !json && process.stdout.isTTY && !process.env.NO_COLOR && process.env.TERM !== 'dumb' ? COLOUR : PLAIN;
  if (f.flow === 'both') {
    // The same workload through each flow, each on a fresh host.
    const runs = (['rfc', 'luo'] as const).map((flow) => {
      try {
        return simulate({ ...config, flow }, (msg) => progress.update(`${flow}: ${msg}`)).result;
      } finally {
        progress.clear();
      }
    });
    const cmp = compareRuns(runs[0]!, runs[1]!);
    if (json) process.stdout.write(`${JSON.stringify({ schemaVersion: 1, command: 'simulate', tool: 'iommu-liveupdate', version, flow: 'both', verdict: cmp.verdict, comparison: cmp, runs: { rfc: runs[0], luo: runs[1] } }, null, 2)}\n`);
    else process.stdout.write(renderComparison(cmp, runs, style, quiet));
    process.exitCode = cmp.verdict === 'pass' ? 0 : 1;
    return;
  }
  let run;
  try {
    run = simulate(config, progress.update);
  } finally {
    progress.clear();
  }
  const { result, blobs } = run;
  if (json) {
    const { schemaVersion, command, ...rest } = result;
    process.stdout.write(`${JSON.stringify({ schemaVersion, command, tool: 'iommu-liveupdate', version, ...rest }, null, 2)}\n`);
  } else if (quiet) process.stdout.write(`${verdictLine(result, style)}\n`);
  else process.stdout.write(renderSummary(result, style));
  let written = true;
  if (dump) {
    if (writeOutput('--dump-kho', f.dumpKho!, dump, blobs[0]!)) log(`wrote the KHO blob of live update 1 to ${f.dumpKho} (${plural(blobs[0]!.length, 'byte')}; read it with: iommu-liveupdate inspect ${f.dumpKho})`);
    else written = false;
  }
  if (report) {
    if (writeOutput('--report', f.report!, report, renderReport(result))) log(`wrote the report to ${f.report}`);
    else written = false;
  }
  process.exitCode = result.verdict === 'pass' && written ? 0 : 1;
}

function runInspect(file: string, f: { json?: boolean }): void {
  let blob: Uint8Array;
  try {
    blob = readFileSync(file);
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    decodeFdt(blob, { validate: 'structural' });
  } catch (e) {
    if (!(e instanceof FdtError)) throw e;
    process.stderr.write(`error: ${file} is not a valid flattened device tree: ${e.message}\n`);
    process.exitCode = 1;
    return;
  }
  let summary: KhoSummary | null = null;
  let bad: string | null = null;
  try {
    summary = summariseKho(blob);
  } catch (e) {
    if (!(e instanceof KhoFormatError || e instanceof FdtError)) throw e;
    bad = e.message;
  }
  if (f.json) {
    if (summary) process.stdout.write(`${JSON.stringify({ schemaVersion: 1, command: 'inspect', tool: 'iommu-liveupdate', version, file, blob: summary }, (_k, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2)}\n`);
  } else {
    process.stdout.write(fdtToDts(blob));
    if (summary) process.stdout.write(`\n// dtc shows big-endian cells; KHO stores native little-endian u64/u32 values, decoded here:\n${renderKho(summary)}`);
  }
  if (bad) {
    process.stderr.write(`error: ${file} is a valid FDT but not a KHO handover this tool can read: ${bad}\n`);
    process.exitCode = 1;
  }
}

function program(): Command {
  const p = new Command('iommu-liveupdate')
    .description('Live update of a simulated Linux hypervisor host (Intel VT-d, iommufd, guestmemfs, KHO + kexec) with DMA that never stops.')
    .version(version)
    .exitOverride()
    .showHelpAfterError('(add --help for usage)');
  const d = DEFAULT_CONFIG;
  p.command('simulate')
    .summary('run a live update with DMA on a simulated host and check that DMA survived')
    .description(
      `Boot a host (${formatBytes(d.hostMemory)} unless --host-mem) with a guestmemfs carve-out (${formatBytes(d.carveOut)} unless --guestmemfs), start VMs whose guest RAM is a guestmemfs file mapped into a persistent iommufd and whose assigned devices do continuous DMA, add one device in a non-persistent iommufd, live-update the host (KHO, kexec, re-claim, re-attach) and check that DMA survived. Exit code 0 if every check passed, 1 if one failed, 2 for bad flags.`,
    )
    .addOption(new Option('--flow <flow>', 'the live update: rfc (guestmemfs, persistent iommufds, KHO DUMP, sysfs re-claim), luo (kho=on liveupdate=on: sealed memfds, preserved HWPTs, a LUO session per VM), or both (the same workload through each, side by side)').choices(['rfc', 'luo', 'both']).default('rfc'))
    .addOption(new Option('--vms <n>', 'number of VMs').argParser(count('--vms')).default(d.vms))
    .addOption(new Option('--guest-mem <size>', 'guest RAM per VM, a multiple of 2M (4G, 512M, ...)').argParser(size('--guest-mem')).default(d.guestMem, '4G'))
    .addOption(new Option('--host-mem <size>', `host RAM (default: ${sizeArg(d.hostMemory)}, or the carve-out + ${sizeArg(HOST_OWN)} for the host's own when that is more)`).argParser(size('--host-mem')))
    .addOption(new Option('--guestmemfs <size>', `the guestmemfs= carve-out that holds all guest RAM, a multiple of 2M (default: ${sizeArg(d.carveOut)}, or what the VMs need in whole GiB, or what a smaller --host-mem leaves)`).argParser(size('--guestmemfs')))
    .addOption(new Option('--devices <n>', 'assigned devices per VM (NVMe, NIC, NVMe, ...)').argParser(count('--devices')).default(d.devicesPerVm))
    .addOption(new Option('--page-size <size>', 'IOMMU page size of the VMs\' IOASes: 4k (IOMMU_OPTION_HUGE_PAGES=0), 2m, or mixed (half the VMs each)').choices(['4k', '2m', 'mixed']).default(d.pageSize))
    .addOption(new Option('--kexecs <n>', 'live updates in a row').argParser(count('--kexecs')).default(d.kexecs))
    .addOption(new Option('--seed <n>', 'seed of the host\'s page allocator (Host.boot)').argParser(seed).default(d.seed, '0'))
    .option('--json', 'print one JSON document (schemaVersion 1) on stdout; messages go to stderr')
    .option('--report <file.html>', 'write a self-contained HTML report')
    .option('--dump-kho <file.dtb>', 'write the KHO blob of the first live update')
    .option('--cost-model <file.json>', 'phase cost constants (ns) over the defaults, as a JSON object: {"jumpNs": 500000000}')
    .option('--no-kho', 'negative control: kexec without activating KHO (nothing persists, so the checks must fail)')
    .option('-q, --quiet', 'no progress or messages; print only the verdict line (or the JSON)')
    .action((flags: SimulateFlags) => runSimulate(flags));
  p.command('inspect')
    .summary('validate and print a KHO handover blob (--dump-kho)')
    .description('Validate a KHO handover blob (as /sys/kernel/kho/dt or --dump-kho write it), print its tree like dtc -O dts, then the persisted iommufds, IOASes, areas and domains. Exit code 1 if it is not a valid FDT or not a KHO tree.')
    .argument('<file.dtb>', 'the blob')
    .option('--json', 'print the summary as JSON instead of the tree')
    .action((file: string, flags: { json?: boolean }) => runInspect(file, flags));
  return p;
}

/**
 * A reader that stops early (`inspect kho.dtb | head -1`) closes the pipe: what is left to print
 * has nowhere to go, which is not an error. Drop it quietly, as Unix tools do, and keep the exit
 * code the command earned; any other write error still surfaces.
 */
function quietOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
}

function main(argv: string[]): void {
  quietOnClosedPipe(process.stdout);
  quietOnClosedPipe(process.stderr);
  try {
    program().parse(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has printed the message (or the help); help and --version are not errors.
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n`);
      process.exitCode = 2;
      return;
    }
    // Not a usage error and not a failed check: the simulator itself refused (a bug here or there).
    const detail = e instanceof Error ? (process.env.DEBUG ? (e.stack ?? e.message) : `${e.name}: ${e.message}`) : String(e);
    process.stderr.write(`error: the simulation stopped: ${detail}${process.env.DEBUG ? '' : ' (DEBUG=1 shows the stack)'}\n`);
    process.exitCode = 1;
  }
}

main(process.argv);
