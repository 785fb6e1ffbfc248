// `npm run oracle -- [options]`: the real kernel as the judge (oracle/README.md). Builds the lab
// (oracle/build.sh, cached), boots Linux under QEMU with an emulated VT-d unit and the edu
// device, runs every sequence of oracle/sequences/ in the guest, records the kernel's answers as
// golden files (oracle/golden/), runs the same sequences on the simulator and reports every
// divergence. Exit 1 on an unexplained divergence (oracle/differences.json lists the deliberate ones).
//
//   --layouts        only regenerate oracle/guest/uapi_layouts.h from ts/uapi
//   --build-only     build the lab and print its directory
//   --no-record      compare with the live kernel but leave the golden files alone
//   --selftest       run the upstream iommufd selftest in the guest; record oracle/upstream/iommufd-selftest.txt
//   --luo            run the upstream LUO selftests in the guest; record oracle/upstream/luo-selftest.txt
//   --generate N     first write N sequences from the fuzz model's generator to
//                    oracle/sequences/90-generated-s<SEED>.seq (with --seed SEED, default 1)
//   --generate-luo N the same for the upstream flow's mix (memfds, sessions, PRESERVE_FD, kexec,
//                    RETRIEVE, FINISH): oracle/sequences/96-generated-luo-s<SEED>.seq, after 95-luo
//                    (sequences with a kexec go last: the rest of the corpus runs in the next kernel)
//   --shrink         shrink each diverging sequence on the kernel and add it to oracle/sequences/50-shrunk.seq
//   --only REGEX     run only the sequences whose name matches (implies --no-record)
//   --no-build       use dist/ as it is (otherwise `tsc -p tsconfig.build.json` runs first)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const has = (f) => args.includes(f);
const SEQ_DIR = join(root, 'oracle/sequences');
const GOLDEN_DIR = join(root, 'oracle/golden');
const UPSTREAM_DIR = join(root, 'oracle/upstream');
const QEMU_TIMEOUT_MS = Number(process.env.ORACLE_QEMU_TIMEOUT_MS ?? 20 * 60_000);

function sh(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status ?? r.signal})`);
  return (r.stdout ?? '').trim();
}

if (!has('--no-build')) {
  sh(process.execPath, ['scripts/build-native.mjs'], { stdio: 'inherit' });
  sh('npx', ['--no', '--', 'tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
const oracle = await import(pathToFileURL(join(root, 'dist/oracle/index.js')).href);

const layoutsPath = join(root, 'oracle/guest/uapi_layouts.h');
writeFileSync(layoutsPath, oracle.uapiLayoutsHeader());
if (has('--layouts')) process.exit(0);

const t0 = performance.now();
const lab = sh('bash', ['oracle/build.sh']);
const labInfo = JSON.parse(readFileSync(join(lab, 'lab.json'), 'utf8'));
console.error(`[oracle] lab ${lab} (Linux ${labInfo.kernel}, ${labInfo.qemu}) ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
if (has('--build-only')) {
  console.log(lab);
  process.exit(0);
}

/**
 * Boots the lab with extra initramfs files; resolves to the guest's "@@" lines (prefix removed).
 * With `initrd`, boots that initramfs instead and resolves to every console line once QEMU exits.
 */
function boot(mode, files = {}, { initrd: ownInitrd } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'oracle-'));
  try {
    const extra = join(dir, 'root');
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(extra, path)), { recursive: true });
      writeFileSync(join(extra, path), text);
    }
    mkdirSync(extra, { recursive: true });
    // A second cpio appended to the initramfs adds files without rebuilding the lab.
    const cpio = spawnSync('sh', ['-c', `cd "${extra}" && find . | cpio -o -H newc --quiet | gzip -1`], { encoding: 'buffer', maxBuffer: 1 << 30 });
    if (cpio.status !== 0) throw new Error('cpio failed');
    const initrd = ownInitrd ?? join(dir, 'initramfs.cpio.gz');
    if (!ownInitrd) writeFileSync(initrd, Buffer.concat([readFileSync(join(lab, 'initramfs.cpio.gz')), cpio.stdout]));
    // retain_initrd: a sequence's `kexec` step boots the next kernel with this very initrd
    // (/sys/firmware/initrd), the appended cpio included.
    const cmdline = ownInitrd ? labInfo.cmdline.replace(/ quiet loglevel=1$/, '') : `${labInfo.cmdline} oracle=${mode}${mode === 'seq' ? ' retain_initrd' : ''}`;
    const qemuArgs = [...labInfo.qemuArgs, '-kernel', join(lab, 'bzImage'), '-initrd', initrd, '-append', cmdline];
    return new Promise((done, fail) => {
      const q = spawn('qemu-system-x86_64', qemuArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
      const lines = [];
      let buf = '';
      let log = '';
      const timer = setTimeout(() => {
        q.kill('SIGKILL');
        fail(new Error(`QEMU did not power off within ${QEMU_TIMEOUT_MS} ms; last output:\n${log.slice(-3000)}`));
      }, QEMU_TIMEOUT_MS);
      q.stdout.on('data', (d) => {
        buf += d.toString('latin1');
        log = (log + d.toString('latin1')).slice(-20000);
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          const at = line.indexOf('@@');
          if (ownInitrd) lines.push(line);
          else if (at >= 0) lines.push(line.slice(at + 2).replace(/^ /, ''));
        }
      });
      q.stderr.on('data', (d) => (log = (log + d.toString()).slice(-20000)));
      q.on('close', () => {
        clearTimeout(timer);
        if (!ownInitrd && !lines.some((l) => l.includes('"poweroff"'))) fail(new Error(`the guest did not finish; last output:\n${log.slice(-3000)}`));
        // The console's tail rides along, for a run whose answers stop early.
        else done(Object.assign(lines, { consoleTail: log.slice(-3000) }));
      });
    });
  } finally {
    setTimeout(() => rmSync(dir, { recursive: true, force: true }), 5 * 60_000).unref();
  }
}

if (has('--selftest')) {
  const t = performance.now();
  const lines = await boot('selftest');
  const text = lines.filter((l) => l.startsWith('T ')).map((l) => l.slice(2)).join('\n');
  mkdirSync(UPSTREAM_DIR, { recursive: true });
  const file = join(UPSTREAM_DIR, 'iommufd-selftest.txt');
  writeFileSync(file, `# tools/testing/selftests/iommu/iommufd on Linux ${labInfo.release} (${labInfo.kernel}) under ${labInfo.qemu}, recorded by npm run oracle -- --selftest\n${text}\n`);
  console.log(`[oracle] selftest: ${((performance.now() - t) / 1000).toFixed(1)} s, ${text.match(/^# Totals.*$/m)?.[0] ?? 'no totals'}; recorded ${file}`);
  process.exit(0);
}

if (has('--luo')) {
  // The kselftest-harness test in our initramfs, then each kexec test in its own initramfs
  // (upstream init.c: stage 1, kexec_file_load + reboot(RB_KEXEC), stage 2, reboot).
  const t = performance.now();
  const out = [`# tools/testing/selftests/liveupdate on Linux ${labInfo.release} (${labInfo.kernel}) under ${labInfo.qemu}, recorded by npm run oracle -- --luo`];
  const harness = await boot('luo');
  out.push('## liveupdate', ...harness.filter((l) => l.startsWith('T ')).map((l) => l.slice(2)));
  for (const test of ['luo_kexec_simple', 'luo_multi_session']) {
    const t0 = performance.now();
    const lines = await boot('luo-kexec', {}, { initrd: join(lab, `${test}.cpio.gz`) });
    const noise = /tsc:|calibrat|rcu:|mem auto-init|ACPI:|Command line:/;
    const keep = lines.filter((l) => /INIT:|STAGE|ok |not ok|# |KHO|luo|liveupdate|PASS|FAIL|kexec/i.test(l) && !noise.test(l) && l.trim() !== '');
    out.push(`## ${test} (${((performance.now() - t0) / 1000).toFixed(1)} s, kexec included)`, ...keep.map((l) => l.replace(/^\[\s*\d+\.\d+\] /, '')));
  }
  mkdirSync(UPSTREAM_DIR, { recursive: true });
  const file = join(UPSTREAM_DIR, 'luo-selftest.txt');
  writeFileSync(file, `${out.join('\n')}\n`);
  console.log(`[oracle] luo: ${((performance.now() - t) / 1000).toFixed(1)} s; recorded ${file}`);
  process.exit(0);
}

// ---- differential run ---------------------------------------------------------------------------
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
if (has('--generate')) {
  const seed = opt('--seed', 1);
  const seqs = oracle.generateSequences({ seed, count: opt('--generate', 1000) });
  const file = join(SEQ_DIR, `90-generated-s${seed}.seq`);
  writeFileSync(file, `# Generated by npm run oracle -- --generate ${seqs.length} --seed ${seed} (ts/oracle/generate.ts).\n${oracle.formatSequences(seqs)}`);
  console.error(`[oracle] wrote ${seqs.length} sequences to ${file}`);
}
if (has('--generate-luo')) {
  const seed = opt('--seed', 1);
  const seqs = oracle.generateSequences({ seed, count: opt('--generate-luo', 200), flow: 'luo', prefix: 'genluo' });
  const file = join(SEQ_DIR, `96-generated-luo-s${seed}.seq`);
  writeFileSync(file, `# Generated by npm run oracle -- --generate-luo ${seqs.length} --seed ${seed} (ts/oracle/generate.ts).\n${oracle.formatSequences(seqs)}`);
  console.error(`[oracle] wrote ${seqs.length} sequences to ${file}`);
}
const files = readdirSync(SEQ_DIR).filter((f) => f.endsWith('.seq')).sort();
const only = args.includes('--only') ? new RegExp(args[args.indexOf('--only') + 1]) : null;
const record = !has('--no-record') && !only;
const corpus = new Map(); // file -> sequences
const owner = new Map(); // sequence name -> file
for (const f of files) {
  const seqs = oracle.parseSequences(readFileSync(join(SEQ_DIR, f), 'utf8')).filter((s) => !only || only.test(s.name));
  corpus.set(f, seqs);
  for (const s of seqs) {
    if (owner.has(s.name)) throw new Error(`sequence ${s.name} is in both ${owner.get(s.name)} and ${f}`);
    owner.set(s.name, f);
  }
}
const t1 = performance.now();
/** Runs sequence files (name -> sequences) in one boot; the parsed driver lines. */
async function runOnKernel(byFile) {
  const lines = await boot('seq', Object.fromEntries([...byFile].map(([f, seqs]) => [`seq/${f}`, oracle.formatSequences(seqs)])));
  const parsed = lines.map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      return { garbled: l };
    }
  });
  return Object.assign(parsed, { consoleTail: lines.consoleTail });
}
const parsed = await runOnKernel(corpus);
const kernelSecs = (performance.now() - t1) / 1000;
const bootLine = parsed.find((l) => l.boot);
const bySeq = oracle.groupBySequence(parsed);
// A guest that stops answering part-way (and still powers off) fails every later sequence: say
// so once, with its console, rather than only as a divergence per step.
{
  const order = [...corpus.values()].flat().map((s) => s.name);
  const last = order.findLastIndex((n) => bySeq.has(n));
  if (last < order.length - 1) {
    console.log(
      `[oracle] the guest's answers stop ${last < 0 ? 'before the first sequence' : `in ${order[last]}`}: the ${order.length - 1 - last} sequences after it got none ` +
        `(the guest failed, not the simulator); its console ends:\n${parsed.consoleTail ?? ''}`,
    );
  }
}
const diffs = JSON.parse(readFileSync(join(root, 'oracle/differences.json'), 'utf8'));

let nSeq = 0;
let nSteps = 0;
const unexplained = [];
const explained = [];
const failedSeqs = new Set();
const goldenDrift = [];
const t2 = performance.now();
for (const [file, seqs] of corpus) {
  const golden = [JSON.stringify({ kernel: labInfo.kernel, release: bootLine?.boot, qemu: labInfo.qemu, machine: labInfo.machine })];
  const goldenPath = join(GOLDEN_DIR, file.replace(/\.seq$/, '.jsonl'));
  const recorded = !record && existsSync(goldenPath)
    ? oracle.groupBySequence(readFileSync(goldenPath, 'utf8').trimEnd().split('\n').slice(1).map((l) => JSON.parse(l)))
    : null;
  for (const s of seqs) {
    const kernel = bySeq.get(s.name) ?? [];
    for (const l of kernel) golden.push(JSON.stringify(l));
    const sim = oracle.runOnSimulator(s);
    nSeq++;
    nSteps += s.steps.length;
    for (const d of oracle.compareSequence(s.name, kernel, sim, diffs)) {
      (d.reason ? explained : unexplained).push(d);
      if (!d.reason) failedSeqs.add(s.name);
    }
    // Without recording, the kernel must also repeat its golden answers (a drift means the goldens
    // are stale or the kernel is not deterministic on this step).
    if (recorded) {
      for (const d of oracle.compareSequence(s.name, recorded.get(s.name) ?? [], kernel)) {
        goldenDrift.push(d);
        failedSeqs.add(s.name);
      }
    }
  }
  if (record) {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    writeFileSync(goldenPath, `${golden.join('\n')}\n`);
  }
}
const simSecs = (performance.now() - t2) / 1000;
for (const d of unexplained.slice(0, 40)) {
  console.log(`DIVERGENCE ${d.seq} step ${d.step}\n  kernel:    ${JSON.stringify(d.kernel)}\n  simulator: ${JSON.stringify(d.simulator)}`);
}
if (unexplained.length > 40) console.log(`... and ${unexplained.length - 40} more`);
// Where they cluster: the first divergence of each sequence, by what each side answered.
const kinds = new Map();
for (const d of unexplained) {
  if (unexplained.find((x) => x.seq === d.seq) !== d) continue;
  const say = (r) => (r ? `${r.cmd ?? r.op} ${r.errno ?? (r.ret === -1 ? '?' : 'ok')}` : 'missing');
  const k = `${say(d.kernel)} | sim: ${say(d.simulator)}`;
  kinds.set(k, [...(kinds.get(k) ?? []), d.seq]);
}
for (const [k, seqs] of [...kinds].sort((a, b) => b[1].length - a[1].length)) console.log(`  ${seqs.length} x kernel: ${k}  e.g. ${seqs[0]}`);
for (const d of goldenDrift.slice(0, 20)) {
  console.log(`GOLDEN DRIFT ${d.seq} step ${d.step}\n  golden: ${JSON.stringify(d.kernel)}\n  kernel: ${JSON.stringify(d.simulator)}`);
}
console.log(`[oracle] sequences: ${nSeq - failedSeqs.size} agree, ${failedSeqs.size} diverge${recordNote()}`);
function recordNote() {
  return record ? ' (goldens rewritten)' : goldenDrift.length ? `; ${goldenDrift.length} steps drifted from the goldens` : '';
}
console.log(
  `[oracle] Linux ${labInfo.kernel}: ${nSeq} sequences, ${nSteps} steps; kernel ${kernelSecs.toFixed(1)} s (boot included), simulator ${simSecs.toFixed(1)} s; ` +
    `${unexplained.length} unexplained divergences, ${explained.length} deliberate`,
);
// --shrink: each diverging sequence (at most 10) loses steps while its first divergence stays the
// same, one boot per round, and the result joins the corpus as shrunk.<name> (50-shrunk.seq).
if (has('--shrink') && unexplained.length) {
  const signature = (ds) => {
    const d = ds.find((x) => !x.reason);
    const say = (r) => (r ? `${r.cmd ?? r.op}:${r.errno ?? JSON.stringify(r.ret)}` : '-');
    return d ? `${say(d.kernel)}|${say(d.simulator)}` : null;
  };
  const allSeqs = new Map([...corpus.values()].flat().map((q) => [q.name, q]));
  const targets = [...new Set(unexplained.map((d) => d.seq))].slice(0, 10);
  const shrunk = [];
  for (const name of targets) {
    const seq = allSeqs.get(name);
    const want = signature(oracle.compareSequence(name, bySeq.get(name) ?? [], oracle.runOnSimulator(seq), diffs));
    const small = await oracle.shrinkSequence(seq, async (cands) => {
      const k = oracle.groupBySequence(await runOnKernel(new Map([['shrink.seq', cands]])));
      return cands.map((c) => signature(oracle.compareSequence(c.name, k.get(c.name) ?? [], oracle.runOnSimulator(c), diffs)) === want);
    });
    console.log(`[oracle] shrunk ${name}: ${seq.steps.length} -> ${small.steps.length} steps (${want})`);
    shrunk.push(small);
  }
  const file = join(SEQ_DIR, '50-shrunk.seq');
  const known = existsSync(file) ? oracle.parseSequences(readFileSync(file, 'utf8')) : [];
  const merged = [...known.filter((k) => !shrunk.some((x) => x.name === k.name)), ...shrunk];
  writeFileSync(file, `# Divergences the oracle found, shrunk (npm run oracle -- --shrink). Fix the simulator or list them.\n${oracle.formatSequences(merged)}`);
  console.log(`[oracle] wrote ${shrunk.length} shrunk sequences to ${file}; npm run oracle records their goldens`);
}
process.exit(failedSeqs.size ? 1 : 0);
