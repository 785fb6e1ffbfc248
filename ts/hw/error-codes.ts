// Every code an error thrown by the hardware API can carry: the argument checks of the native
// boundary (ts/native-check.ts) and of the facade, and the native core's own. The README's
// "Errors at the native boundary" names this list; __test__/native.boundary.prop.test.ts holds
// every entry point to it and checks it against the codes the crates define.
import { FDT_ERRNO } from '../fdt/errors.js';
import { CHECK_ERROR_CODES } from '../native-check.js';

/** `crates/physmem`: simulated physical memory. */
const PHYSMEM = ['ALIGN', 'NOMEM', 'NOT_ALLOCATED', 'NOT_FREE', 'NOT_PRESERVED', 'ORDER', 'PRESERVED', 'RANGE', 'SIZE'].map((c) => `ERR_PHYSMEM_${c}`);
/** `crates/vtd`: the VT-d unit and its page tables. */
const VTD = ['ADDRESS_MASK', 'ALIGN', 'ALREADY_MAPPED', 'CONFIG', 'CORRUPT', 'EMPTY_RANGE', 'LEVELS', 'NO_PERMISSION', 'RANGE', 'REGISTER', 'SNOOP', 'SPLITS_SUPERPAGE'].map(
  (c) => `ERR_VTD_${c}`,
);

/**
 * The codes of errors thrown by `PhysicalMemory`, `IommuUnit`, `PageTable`, `Gather`, the FDT
 * functions and the addon under them, each with a non-empty message:
 * - `ERR_INVALID_ARG_TYPE` (TypeError), `ERR_OUT_OF_RANGE` (RangeError), `ERR_INVALID_ARG_VALUE`,
 *   `ERR_INVALID_THIS`, `ERR_CONSTRUCT_CALL_REQUIRED`, `ERR_ILLEGAL_CONSTRUCTOR`: a bad argument;
 * - `ERR_PHYSMEM_*`, `ERR_VTD_*`, `FDT_ERR_*` (libfdt's names, as `FdtError`): the native core;
 * - `ERR_DMAR_FAULT`: `translateOne` faulted (`DmarFaultError`);
 * - `ERR_NATIVE_ALLOCATION`: V8 could not allocate an array the addon returns;
 * - `GenericFailure`: a Rust panic, caught (a bug of the native core; the process survives).
 * Errors thrown by a caller's own getters or proxies pass through unchanged.
 */
export const NATIVE_ERROR_CODES: readonly string[] = Object.freeze([
  ...CHECK_ERROR_CODES,
  ...PHYSMEM,
  ...VTD,
  ...Object.keys(FDT_ERRNO),
  'ERR_DMAR_FAULT',
  'ERR_NATIVE_ALLOCATION',
  'GenericFailure',
]);
