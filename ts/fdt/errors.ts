// FdtError: libfdt's error names and numbers, and native FDT errors turned into it.

/** libfdt's error names (`libfdt.h`) with their numbers (`-FDT_ERR_*` in C). */
export const FDT_ERRNO = {
  FDT_ERR_NOTFOUND: 1,
  FDT_ERR_EXISTS: 2,
  FDT_ERR_NOSPACE: 3,
  FDT_ERR_BADOFFSET: 4,
  FDT_ERR_BADPATH: 5,
  FDT_ERR_BADPHANDLE: 6,
  FDT_ERR_BADSTATE: 7,
  FDT_ERR_TRUNCATED: 8,
  FDT_ERR_BADMAGIC: 9,
  FDT_ERR_BADVERSION: 10,
  FDT_ERR_BADSTRUCTURE: 11,
  FDT_ERR_BADLAYOUT: 12,
  FDT_ERR_INTERNAL: 13,
  FDT_ERR_BADNCELLS: 14,
  FDT_ERR_BADVALUE: 15,
  FDT_ERR_BADOVERLAY: 16,
  FDT_ERR_NOPHANDLES: 17,
  FDT_ERR_BADFLAGS: 18,
  FDT_ERR_ALIGNMENT: 19,
} as const;

/** A libfdt error name: `'FDT_ERR_BADMAGIC'`, ... */
export type FdtErrorCode = keyof typeof FDT_ERRNO;

/**
 * An FDT error: `code` is libfdt's name, `errno` its number, `offset` the byte of the blob where
 * the decoder found the problem (undefined for writer errors and errors not tied to a byte).
 */
export class FdtError extends Error {
  override readonly name = 'FdtError';
  readonly code: FdtErrorCode;
  readonly errno: number;
  readonly offset: number | undefined;
  /** The message without the `code at offset` prefix. */
  readonly detail: string;

  constructor(code: FdtErrorCode, detail: string, offset?: number) {
    super(offset === undefined ? `${code}: ${detail}` : `${code} at offset 0x${offset.toString(16)}: ${detail}`);
    this.code = code;
    this.errno = FDT_ERRNO[code];
    this.offset = offset;
    this.detail = detail;
  }
}

// The binding's message format (crates/binding fdt_err): `<code> at offset 0x<hex>: <detail>`
// or `<code>: <detail>`.
const NATIVE_MESSAGE = /^(FDT_ERR_[A-Z]+)(?: at offset 0x([0-9a-f]+))?: ([\s\S]*)$/;

/** Turns a native FDT error into an FdtError; anything else is returned unchanged. */
export function fromNative(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== 'string' || !Object.hasOwn(FDT_ERRNO, code)) return e;
  const m = NATIVE_MESSAGE.exec(e.message);
  const err = m
    ? new FdtError(code as FdtErrorCode, m[3]!, m[2] === undefined ? undefined : Number.parseInt(m[2], 16))
    : new FdtError(code as FdtErrorCode, e.message);
  // Keep the caller's frames (the native error's stack), not this helper's.
  if (e.stack) err.stack = `${err.name}: ${err.message}${e.stack.slice(e.stack.indexOf('\n'))}`;
  return err;
}

/** Runs a native call, rethrowing its FDT errors as FdtError. */
export function call<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw fromNative(e);
  }
}
