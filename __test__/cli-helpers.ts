// Running the built CLI (dist/cli/main.js, what `npx iommu-liveupdate` runs) as a child process.
// `npm test` builds dist/ first; a direct `npx vitest` rebuilds it here when a source is newer.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('..', import.meta.url));
export const cliPath = join(root, 'dist', 'cli', 'main.js');

function newestSource(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestSource(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

const fresh = () => existsSync(cliPath) && statSync(cliPath).mtimeMs >= newestSource(join(root, 'ts'));

/** Builds dist/ if any ts/ source is newer than the CLI (one builder at a time across test files). */
export function ensureBuilt(): void {
  if (fresh()) return;
  mkdirSync(join(root, 'dist'), { recursive: true });
  const lock = join(root, 'dist', '.cli-test-build.lock');
  const deadline = Date.now() + 180_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`gave up waiting for ${lock}`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
      if (fresh()) return;
    }
  }
  try {
    if (!fresh()) execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  } finally {
    rmdirSync(lock);
  }
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * `node dist/cli/main.js ...args`, stdin closed, stdout/stderr pipes (so: not a TTY). `closed`
 * names pipes whose reading end is closed at once, before the CLI writes a byte: a reader that
 * stopped early (`| head -1`) without the race of when it stops.
 */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, closed: ('stdout' | 'stderr')[] = []): Promise<CliRun> {
  const t0 = performance.now();
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const name of closed) child[name].destroy();
    const out: Buffer[] = [], err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', fail);
    child.on('close', (code, signal) =>
      done({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: performance.now() - t0 }),
    );
  });
}
