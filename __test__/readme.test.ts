// Documentation that runs: every program block of README.md is run as its own program, as a user
// who copied it would run it, importing the package by name (package.json "exports" → dist/).
// The rules, by the block's info string:
// - ```ts / ```typescript: type-checked together with tsc (the repo's strict NodeNext options, each
//   block its own module), then each run with tsx (`node --import tsx`) in a child process.
//   ```js / ```mjs / ```javascript: run with `node --input-type=module`, the code on stdin.
//   A program must exit 0 and write nothing to stderr.
// - A ```text block right after a program block (only blank lines between) is that program's
//   stdout, exactly (trailing whitespace aside).
// - ```sh blocks are commands for a shell (npm ci, npm test, the CLI, whose flags
//   __test__/cli.test.ts checks) and untagged blocks are transcripts and listings (the `npm start`
//   sample, the layout): not run. Any other info string fails here, so no block goes unchecked.
// - A program block that must not run carries `no-run` in its info string (```ts no-run): it is
//   listed as a skipped test. None does today; keep it rare.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, root } from './cli-helpers.js';
import { fencedBlocks, JS, NOT_RUN, readmePrograms, tidy, TS } from './readme-blocks.js';

const readme = readFileSync(join(root, 'README.md'), 'utf8');
const blocks = fencedBlocks(readme);
const programs = readmePrograms(readme);
const runnable = programs.filter((b) => !b.flags.includes('no-run'));

// Plain output whatever the terminal vitest runs in.
const env = { ...process.env, NO_COLOR: '1', FORCE_COLOR: undefined };

let dir: string;
beforeAll(() => {
  ensureBuilt();
  // Inside the repo, so that 'iommu-liveupdate' resolves to this package by its own name.
  mkdirSync(join(root, '.tmp'), { recursive: true });
  dir = mkdtempSync(join(root, '.tmp', 'readme-'));
  for (const b of programs) writeFileSync(join(dir, b.file), b.code);
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ extends: '../../tsconfig.json', compilerOptions: { moduleDetection: 'force' }, include: ['*.ts'] }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README.md code blocks', () => {
  it('has program blocks to run, and no block of a kind this test does not know', () => {
    expect(runnable.length).toBeGreaterThan(0);
    const unknown = blocks.filter((b) => ![...TS, ...JS, ...NOT_RUN].includes(b.lang)).map((b) => `README.md:${b.line}: \`\`\`${b.lang}`);
    expect(unknown).toEqual([]);
  });

  it('the TypeScript blocks type-check (strict, as modules importing the package)', { timeout: 120_000 }, () => {
    expect(runnable.some((b) => TS.includes(b.lang))).toBe(true);
    const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(dir, 'tsconfig.json')], { cwd: root, encoding: 'utf8' });
    expect(`${tsc.stdout}${tsc.stderr}`.trim()).toBe('');
    expect(tsc.status).toBe(0);
  });

  for (const b of programs) {
    const noRun = b.flags.includes('no-run');
    const what = noRun ? 'is marked no-run' : `runs${b.stdout === undefined ? '' : ' and prints the text block after it'}`;
    it.skipIf(noRun)(`README.md:${b.line} (\`\`\`${b.lang}) ${what}`, () => {
      const r = TS.includes(b.lang)
        ? spawnSync(process.execPath, ['--import', 'tsx', join(dir, b.file)], { cwd: root, env, encoding: 'utf8' })
        : spawnSync(process.execPath, ['--input-type=module'], { cwd: root, env, encoding: 'utf8', input: b.code });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      if (b.stdout !== undefined) expect(tidy(r.stdout)).toBe(tidy(b.stdout));
    });
  }
});
