// Sizes, counts and numbers as the command line takes them and the summary prints them.
import type { PhaseWork } from '../index.js';

const UNITS: Record<string, bigint> = { '': 1n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n, t: 1n << 40n };

/**
 * A size like `4G`, `512M`, `4GiB`, `2m`, `1024k` or plain bytes (binary units, as the kernel's
 * `memparse` reads them). Returns null when it is not one.
 */
export function parseSize(text: string): bigint | null {
  const m = /^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return null;
  return BigInt(m[1]!) * UNITS[m[2]!.toLowerCase()]!;
}

/** `129G`, `4094M`: a size as {@link parseSize} takes it back (the largest whole unit). */
export function sizeArg(n: bigint): string {
  for (const u of ['t', 'g', 'm', 'k'] as const) if (n !== 0n && n % UNITS[u]! === 0n) return `${n / UNITS[u]!}${u.toUpperCase()}`;
  return String(n);
}

/** A non-negative decimal integer (no sign, no fraction, no exponent). */
export function parseCount(text: string): number | null {
  if (!/^\s*\d{1,9}\s*$/.test(text)) return null;
  return Number(text.trim());
}

/** A u64 in decimal or `0x` hex. */
export function parseU64(text: string): bigint | null {
  const t = text.trim();
  if (!/^(0x[0-9a-f]{1,16}|\d{1,20})$/i.test(t)) return null;
  const v = BigInt(t);
  return v <= 0xffff_ffff_ffff_ffffn ? v : null;
}

const NAMES = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/**
 * `4 GiB`, `512 MiB`; otherwise one decimal (`8.3 MiB`), or with `exact` the whole truth:
 * `16,382 MiB`, `16 GiB + 60 KiB`.
 */
export function formatBytes(n: bigint | number, opts: { exact?: boolean } = {}): string {
  const v = BigInt(n);
  let i = NAMES.length - 1;
  while (i > 0 && v < 1n << BigInt(10 * i)) i--;
  const unit = 1n << BigInt(10 * i);
  if (v % unit === 0n) return `${group(v / unit)} ${NAMES[i]}`;
  if (opts.exact && i > 0) {
    const lower = unit >> 10n;
    if (v % lower === 0n && v / lower < 100_000n) return `${group(v / lower)} ${NAMES[i - 1]}`;
    const rest = v % unit;
    const restText = formatBytes(rest, { exact: true });
    if (!restText.includes('+')) return `${group(v / unit)} ${NAMES[i]} + ${restText}`;
    return `${group(v)} B`;
  }
  return `${(Number(v) / Number(unit)).toFixed(1)} ${NAMES[i]}`;
}

/** `1 mapping`, `2 mappings`, `1,575 bytes`; `many` for the irregular ones (`2 IOASes`). */
export function plural(n: number | bigint, one: string, many = `${one}s`): string {
  return `${group(n)} ${Number(n) === 1 ? one : many}`;
}

/** `0x1000` */
export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}

/** `1,234,567` */
export function group(n: number | bigint): string {
  // Not toLocaleString: its first call loads ICU data (~15 ms, a tenth of a default run).
  const [int, frac] = String(n).split('.');
  return int!.replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (frac === undefined ? '' : `.${frac}`);
}

/** Nanoseconds as milliseconds with one decimal: `1003.0 ms`. */
export function ms(ns: bigint | number): string {
  return `${(Number(ns) / 1e6).toFixed(1)} ms`;
}

/** A phase's work in words: `48 GiB reclaimed, 19 preserved blocks (16 GiB), 1,575-byte FDT`; '' for none. */
export function workText(w: Readonly<PhaseWork>): string {
  const out: string[] = [];
  const n = (k: keyof PhaseWork) => w[k] ?? 0;
  if (n('scrubbedBytes')) out.push(`${formatBytes(n('scrubbedBytes'))} reclaimed`);
  if (n('preservedBlocks')) out.push(`${plural(n('preservedBlocks'), 'preserved block')}${n('preservedBytes') ? ` (${formatBytes(n('preservedBytes'))})` : ''}`);
  if (n('fdtBytes')) out.push(`${group(n('fdtBytes'))}-byte FDT`);
  if (n('mappings')) out.push(plural(n('mappings'), 'mapping'));
  if (n('domains')) out.push(plural(n('domains'), 'domain'));
  if (n('tablePages')) out.push(plural(n('tablePages'), 'table page'));
  if (n('devicesShutDown')) out.push(`${plural(n('devicesShutDown'), 'device')} shut down`);
  if (n('devicesKept')) out.push(`${plural(n('devicesKept'), 'device')} kept`);
  if (n('devicesAttached')) out.push(`${plural(n('devicesAttached'), 'device')} attached`);
  if (n('sessions')) out.push(plural(n('sessions'), 'session'));
  if (n('files')) out.push(plural(n('files'), 'file'));
  if (n('folios')) out.push(plural(n('folios'), 'folio'));
  return out.join(', ');
}

/** What stopped a DMA request: 0 is the device's own bus mastering, the rest VT-d fault reasons. */
export function faultReason(reason: number): string {
  return reason === 0 ? 'bus mastering off' : `VT-d fault reason ${hex(reason)}`;
}
