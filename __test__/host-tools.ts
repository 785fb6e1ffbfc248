// System tools some tests need besides Node and Rust: dtc, libfdt (tools/fdt-check.c) and
// /usr/bin/chromium. scripts/setup.mjs (`npm run setup`) is the one place that knows how to find
// and install them; a test asks it through needTools. A missing tool fails the test with setup's
// install line; the only way to skip is naming the tool in IOMMU_LIVEUPDATE_SKIP_TOOLS
// (`dtc,libfdt,chromium` or `all`), and vitest then counts the test as skipped.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'vitest';

export type HostTool = 'dtc' | 'libfdt' | 'chromium';
export const SKIP_TOOLS_ENV = 'IOMMU_LIVEUPDATE_SKIP_TOOLS';

const setup = fileURLToPath(new URL('../scripts/setup.mjs', import.meta.url));
const optedOut = new Set((process.env[SKIP_TOOLS_ENV] ?? '').split(',').map((s) => s.trim()));
const verdicts = new Map<string, string | null>();

/** null when every one of `tools` works, else setup's report with the install line (asked once per set). */
export function missingTools(...tools: HostTool[]): string | null {
  const key = tools.join(',');
  if (!verdicts.has(key)) {
    const r = spawnSync(process.execPath, [setup, '--check', ...tools], { encoding: 'utf8' });
    verdicts.set(key, r.status === 0 ? null : `${r.stdout}${r.stderr}`.trim() || `scripts/setup.mjs --check failed (${r.error?.message ?? r.status})`);
  }
  return verdicts.get(key)!;
}

/** Start of a test that needs `tools`: skips it when opted out, fails it when one is missing. */
export function needTools(ctx: TestContext, ...tools: HostTool[]): void {
  const off = tools.filter((t) => optedOut.has(t) || optedOut.has('all'));
  if (off.length) ctx.skip(`${SKIP_TOOLS_ENV} skips tests that need ${off.join(', ')}`);
  const missing = missingTools(...tools);
  if (missing !== null) throw new Error(missing);
}
