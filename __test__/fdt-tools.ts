// The real tools the FDT tests cross-check against: dtc (device-tree-compiler) and libfdt
// (libfdt-dev, through our tools/fdt-check.c). A test using them starts with
// `needTools(ctx, 'dtc', 'libfdt')` (./host-tools.ts): missing tools fail it with the install line.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fdtToDts, type FdtLayout } from 'iommu-liveupdate';
import { missingTools } from './host-tools.js';

const root = fileURLToPath(new URL('..', import.meta.url));

let tools: { dir: string; checker: string } | undefined;

/** tools/fdt-check.c compiled against libfdt, once per process. */
function fdtChecker(): { dir: string; checker: string } {
  if (tools) return tools;
  const dir = mkdtempSync(join(tmpdir(), 'fdt-tools-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const checker = join(dir, 'fdt-check');
  const cc = spawnSync('cc', ['-O2', join(root, 'tools/fdt-check.c'), '-lfdt', '-o', checker], { encoding: 'utf8' });
  if (cc.error || cc.status !== 0) {
    throw new Error(`cannot compile tools/fdt-check.c against libfdt (${cc.error?.message ?? cc.stderr.trim()})\n${missingTools('libfdt') ?? ''}`);
  }
  tools = { dir, checker };
  return tools;
}

/** dtc with `args`, or an Error with the install line when there is no dtc. */
function dtc(args: string[], input: string | Uint8Array) {
  const r = spawnSync('dtc', args, { input });
  if (r.error) throw new Error(`cannot run dtc (${r.error.message})\n${missingTools('dtc') ?? ''}`);
  return r;
}

/** `dtc -I dtb -O dts` of a blob. */
export function dtcDecompile(blob: Uint8Array): { status: number | null; stdout: string; stderr: string } {
  const r = dtc(['-I', 'dtb', '-O', 'dts', '-'], blob);
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** `dtc -I dts -O dtb` of DTS source. */
export function dtcCompile(dts: string, bootCpuidPhys = 0): Uint8Array {
  const r = dtc(['-I', 'dts', '-O', 'dtb', '-b', String(bootCpuidPhys), '-'], dts);
  if (r.status !== 0) throw new Error(`dtc -I dts -O dtb failed (${r.status}): ${r.stderr.toString()}\n${dts}`);
  return new Uint8Array(r.stdout);
}

/** libfdt's `fdt_check_full` verdict for each blob: `'OK'` or the error name. */
export function libfdtCheck(blobs: Uint8Array[]): string[] {
  const { dir, checker } = fdtChecker();
  const files = blobs.map((b, i) => {
    const f = join(dir, `blob-${i}.dtb`);
    writeFileSync(f, b);
    return f;
  });
  const out: string[] = [];
  // Keep argument lists short. libfdt 1.6.1 can crash or hang on hostile input: then retry the
  // batch one file at a time and report the signal (`SIGSEGV`, `SIGTERM` for a hang) of the file.
  const run = (batch: string[]): string[] => {
    const r = spawnSync(checker, batch, { encoding: 'utf8', timeout: 2_000 * batch.length });
    if (r.status === 0 || r.status === 1) return r.stdout.trim().split('\n');
    if (r.signal && batch.length > 1) return batch.flatMap((f) => run([f]));
    if (r.signal) return [r.signal];
    throw new Error(`fdt-check failed (${r.status}): ${r.stderr}`);
  };
  for (let i = 0; i < files.length; i += 200) out.push(...run(files.slice(i, i + 200)));
  for (const f of files) rmSync(f, { force: true });
  return out;
}

/** Blobs a test file produced, checked against the tools by {@link verifyWithTools}. */
export class BlobLog {
  readonly entries: { label: string; layout: FdtLayout; blob: Uint8Array }[] = [];
  add(label: string, layout: FdtLayout, blob: Uint8Array): Uint8Array {
    this.entries.push({ label, layout, blob });
    return blob;
  }
}

/**
 * (a) `dtc -I dtb -O dts` accepts every blob (rc 0); (b) for the dtc layout, `dtc -I dts -O dtb`
 * of our `fdtToDts` text gives our bytes back; (c) libfdt's `fdt_check_full` accepts every blob.
 * (d) our `fdtToDts` text equals dtc's `-O dts` text (string lists aside).
 * Returns a list of failures (empty when all agree).
 */
export function verifyWithTools(log: BlobLog): string[] {
  const failures: string[] = [];
  for (const { label, layout, blob } of log.entries) {
    const d = dtcDecompile(blob);
    if (d.status !== 0) failures.push(`${label} (${layout}): dtc -I dtb exited ${d.status}: ${d.stderr.trim()}`);
    // (d) our DTS text is dtc's, except string lists: dtc 1.6.1 prints "a\0b", we print "a", "b".
    const ours = fdtToDts(blob);
    if (d.status === 0 && !ours.includes('", "') && ours !== d.stdout) {
      failures.push(`${label} (${layout}): fdtToDts differs from dtc -O dts\n--- ours\n${ours}--- dtc\n${d.stdout}`);
    }
    if (layout === 'dtc') {
      const dts = ours;
      let again: Uint8Array;
      try {
        again = dtcCompile(dts, new DataView(blob.buffer, blob.byteOffset).getUint32(0x1c));
      } catch (e) {
        failures.push(`${label}: ${(e as Error).message}`);
        continue;
      }
      if (Buffer.compare(Buffer.from(again), Buffer.from(blob)) !== 0) {
        failures.push(`${label}: dtc -O dtb of our DTS differs from our dtc-layout bytes\n${dts}`);
      }
    }
  }
  const verdicts = libfdtCheck(log.entries.map((e) => e.blob));
  verdicts.forEach((v, i) => {
    if (v !== 'OK') failures.push(`${log.entries[i]!.label} (${log.entries[i]!.layout}): libfdt fdt_check_full says ${v}`);
  });
  return failures;
}
