// `npm run fuzz -- [options]`: model-based fuzzing of the simulated host's uAPI across kexec
// (ts/fuzz), in parallel on worker_threads. Prints the seed and the shrunk counterexample of a
// failure, writes it to a file, and `--replay FILE` re-runs that file deterministically.
//
//   --runs N           random sequences in all (default 200; with --minutes, a floor per batch)
//   --minutes T        run batches until T minutes have passed (a campaign), instead of --runs
//   --seed S           base seed (default: random); worker w, batch b use a seed derived from S
//   --workers W        worker threads (default: available parallelism)
//   --max-commands M   longest sequence (default 400)
//   --weights JSON     per-command weights over the defaults, e.g. '{"kexec":2,"dmaRead":20}'
//   --flow rfc|luo     fuzz one live-update flow only (default: both, half of each batch's runs each)
//   --out FILE         where to write a failure (default fuzz-failure-<seed>.json)
//   --handover         corrupt KHO handovers instead (ts/fuzz/handover.ts): each run is one live update
//                      of a two-VM host whose blob is corrupted (raw or semantic, half and half); a
//                      failure is a device that gained a translation
//   --replay FILE      re-run a failure file (either kind), printing every syscall; exit 1 if it still fails
//   --no-build         use dist/ as it is (otherwise `tsc -p tsconfig.build.json` runs first)
//   --stacks           keep JavaScript stack traces (slower; default off in workers)
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const lib = pathToFileURL(resolve(root, 'dist/fuzz/index.js')).href;

const HANDOVER_FORMAT = 'iommu-liveupdate-handover/1';
/** JSON with bigints as { "$bigint": "123" } (handover mutations carry u64 values). */
const toJson = (v, indent) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? { $bigint: x.toString() } : x), indent);
const fromJson = (text) => JSON.parse(text, (_k, x) => (x && typeof x === 'object' && typeof x.$bigint === 'string' && Object.keys(x).length === 1 ? BigInt(x.$bigint) : x));

/** Seed of worker `w`, batch `b`: distinct, reproducible, 31-bit. */
const batchSeed = (base, w, b) => (Math.imul(base ^ 0x5bd1e995, 1) + Math.imul(w + 1, 0x9e3779b1) + Math.imul(b + 1, 0x85ebca6b)) >>> 1;

if (!isMainThread) {
  // ---- worker ----
  const { base, index, runs, deadline, maxCommands, weights, stacks, batchRuns, handover, flow } = workerData;
  if (!stacks) Error.stackTraceLimit = 0;
  const { fuzz, fuzzHandover } = await import(lib);
  let done = 0;
  for (let b = 0; ; b++) {
    if (deadline ? Date.now() >= deadline : done >= runs) break;
    const n = deadline ? batchRuns : Math.min(batchRuns, runs - done);
    const seed = batchSeed(base, index, b);
    done += n;
    if (handover) {
      const r = fuzzHandover({ runs: n, seed });
      parentPort.postMessage({ t: 'progress', runs: r.runs, commands: r.applied, effective: r.degraded, syscalls: 0, kexecs: r.runs, ms: r.elapsedMs });
      if (!r.ok) {
        const f = r.failure;
        const replay = { format: HANDOVER_FORMAT, seed, mutation: f.mutation };
        parentPort.postMessage({ t: 'failure', seed, replay: JSON.parse(toJson(replay)), message: `a device gained a translation:\n  ${f.widened.slice(0, 12).join('\n  ')}` });
        break;
      }
    } else {
      const r = fuzz({ runs: n, seed, maxCommands, commands: weights, world: flow ? { flow } : undefined });
      parentPort.postMessage({ t: 'progress', runs: n, commands: r.commands, effective: r.effective, syscalls: r.syscalls, kexecs: r.kexecs, ms: r.elapsedMs, flows: r.flows });
      if (!r.ok) {
        parentPort.postMessage({ t: 'failure', seed, replay: r.failure.replayFile, message: r.failure.message });
        break;
      }
    }
    // The addon's native memory (each run's simulated host) is released by N-API finalizers, which
    // only run when the event loop turns: let it turn after every batch, or memory grows unbounded.
    await new Promise((r) => setImmediate(r));
  }
  parentPort.postMessage({ t: 'done' });
} else {
  // ---- main ----
  const args = process.argv.slice(2);
  if (args[0] === '--') args.shift();
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
  };
  const flag = (name) => args.includes(name);
  if (!flag('--no-build')) {
    const r = spawnSync('npx', ['--no', '--', 'tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) {
      console.error('[fuzz] build failed');
      process.exit(2);
    }
  }
  const { replay, formatOp, runHandoverCase } = await import(lib);

  const replayPath = opt('--replay');
  if (replayPath) {
    let file, r;
    try {
      file = fromJson(readFileSync(replayPath, 'utf8'));
      if (file?.format === HANDOVER_FORMAT) {
        console.log(`replaying ${replayPath}: a corrupted handover, ${toJson(file.mutation)}`);
        const h = runHandoverCase(file.mutation);
        for (const l of h.log.split('\n')) if (/not restored|not adopted|left blocked|ignoring the handover|released|claimed/.test(l)) console.log(`  ${l}`);
        const bad = [...h.widenedAtBoot.map((x) => `at boot: ${x}`), ...h.widenedAfterReattach.map((x) => `after re-attach: ${x}`)];
        console.log(`\nre-attached: ${h.reattached.join(', ') || 'none'}`);
        if (!bad.length) {
          console.log('no device gained a translation: the case passes now');
          process.exit(0);
        }
        console.log(`a device gained a translation:\n  ${bad.join('\n  ')}`);
        process.exit(1);
      }
      console.log(`replaying ${replayPath}: ${file.ops?.length} operations, host seed ${file.hostSeed}, fast-check seed ${file.seed}${file.path ? ` path ${file.path}` : ''}`);
      r = replay(file, { log: (line) => console.log(line) });
    } catch (e) {
      console.error(`[fuzz] ${replayPath}: ${e.message}`);
      process.exit(2);
    }
    if (r.ok) {
      console.log(`\nthe sequence passes now (${r.steps} operations)`);
      process.exit(0);
    }
    console.log(`\n${r.error.message}`);
    process.exit(1);
  }

  const base = Number(opt('--seed', String((Math.random() * 0x7fffffff) >>> 0))) >>> 0;
  const workers = Math.max(1, Number(opt('--workers', String(availableParallelism()))));
  const minutes = Number(opt('--minutes', '0'));
  const runs = Number(opt('--runs', '200'));
  const maxCommands = Number(opt('--max-commands', '400'));
  const weights = opt('--weights') ? JSON.parse(opt('--weights')) : undefined;
  const deadline = minutes > 0 ? Date.now() + minutes * 60_000 : 0;
  const handover = flag('--handover');
  const flow = opt('--flow');
  if (flow !== undefined && flow !== 'rfc' && flow !== 'luo') {
    console.error(`[fuzz] --flow ${flow}: rfc or luo`);
    process.exit(2);
  }
  console.log(
    handover
      ? `fuzz --handover: seed ${base}, ${workers} workers, ${deadline ? `${minutes} min` : `${runs} corrupted live updates`}`
      : `fuzz: seed ${base}, ${workers} workers, ${deadline ? `${minutes} min` : `${runs} runs`}, ≤ ${maxCommands} commands a run, ${flow ? `the ${flow} flow` : 'both flows (rfc, luo)'}`,
  );

  const total = { runs: 0, commands: 0, effective: 0, syscalls: 0, kexecs: 0, busyMs: 0 };
  /** Per flow: runs, commands, kexecs and the busy time they took. */
  const perFlow = {};
  const t0 = performance.now();
  let failure = null;
  const line = () => {
    const s = (performance.now() - t0) / 1000;
    if (handover) {
      const perCore = total.busyMs ? total.runs / (total.busyMs / 1000) : 0;
      return `${total.runs.toLocaleString('en-US')} corrupted live updates (${total.commands.toLocaleString('en-US')} mutations applied, ${total.effective.toLocaleString('en-US')} refused something) in ${s.toFixed(1)} s: ${Math.round(perCore)} per core per second`;
    }
    const perCore = total.busyMs ? total.commands / (total.busyMs / 1000) : 0;
    return (
      `${total.runs} runs, ${total.commands.toLocaleString('en-US')} commands (${total.effective.toLocaleString('en-US')} effective), ` +
      `${total.syscalls.toLocaleString('en-US')} syscalls, ${total.kexecs.toLocaleString('en-US')} kexecs in ${s.toFixed(1)} s: ` +
      `${Math.round(total.commands / s).toLocaleString('en-US')} commands/s, ${Math.round(perCore).toLocaleString('en-US')} per core`
    );
  };
  const ticker = setInterval(() => console.log(line()), 10_000);
  const per = Math.ceil(runs / workers);
  const workers_ = [];
  const pool = Array.from({ length: workers }, (_, index) => {
    const w = new Worker(fileURLToPath(import.meta.url), {
      workerData: { base, index, runs: per, deadline, maxCommands, weights, stacks: flag('--stacks'), handover, flow, batchRuns: handover ? Math.min(200, per) : deadline ? 10 : Math.min(10, per) },
    });
    return new Promise((done) => {
      w.on('message', (m) => {
        if (m.t === 'progress') {
          total.runs += m.runs;
          total.commands += m.commands;
          total.effective += m.effective;
          total.syscalls += m.syscalls;
          total.kexecs += m.kexecs;
          total.busyMs += m.ms;
          for (const [name, f] of Object.entries(m.flows ?? {})) {
            const acc = (perFlow[name] ??= { runs: 0, commands: 0, kexecs: 0, ms: 0 });
            acc.runs += f.runs;
            acc.commands += f.commands;
            acc.kexecs += f.kexecs;
            acc.ms += f.elapsedMs;
          }
        } else if (m.t === 'failure' && !failure) {
          failure = m;
          for (const other of workers_) if (other !== w) other.terminate();
        }
      });
      w.on('error', (e) => {
        if (!failure) failure = { seed: null, message: `worker ${index} crashed: ${e.stack ?? e}`, replay: null };
        done();
      });
      w.on('exit', () => done());
      workers_.push(w);
    });
  });
  await Promise.all(pool);
  clearInterval(ticker);
  console.log(line());
  for (const [name, f] of Object.entries(perFlow)) {
    console.log(`  ${name}: ${f.runs} runs, ${f.commands.toLocaleString('en-US')} commands, ${f.kexecs.toLocaleString('en-US')} kexecs: ${Math.round(f.commands / (f.ms / 1000)).toLocaleString('en-US')} model-checked commands/s per core`);
  }
  if (!failure) {
    console.log('no divergence');
    process.exit(0);
  }
  console.log(`\nFAILED with seed ${failure.seed}\n${failure.message}`);
  if (failure.replay?.format === HANDOVER_FORMAT) {
    const out = opt('--out', `handover-failure-${failure.seed}.json`);
    writeFileSync(out, `${toJson(failure.replay, 2)}\n`);
    console.log(`\nshrunk mutation: ${toJson(failure.replay.mutation)}\nwritten to ${out}; re-run with: npm run fuzz -- --replay ${out}`);
  } else if (failure.replay) {
    console.log(`\nshrunk counterexample (${failure.replay.ops.length} operations, host seed ${failure.replay.hostSeed}):`);
    for (const op of failure.replay.ops) console.log(`  ${formatOp(op)}`);
    const out = opt('--out', `fuzz-failure-${failure.seed}.json`);
    writeFileSync(out, `${JSON.stringify(failure.replay, null, 2)}\n`);
    console.log(`\nwritten to ${out}; re-run with: npm run fuzz -- --replay ${out}`);
  }
  process.exit(1);
}
