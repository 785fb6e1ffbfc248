// Loads the addon through the loader `napi build` generates (native/index.cjs): a matching
// prebuilt platform package (`iommu-liveupdate-<platform>`) or the binary built from source beside
// it (native/iommu-liveupdate.<platform>.node). Its surface is typed by the generated
// native/index.d.cts, never by hand; the facade's public types sit on top of these names.
// `../native/` resolves the same from ts/ (vitest) and dist/ (tsc output).
import { createRequire } from 'node:module';
import type * as Binding from '../native/index.cjs';
import { checkedBinding, NATIVE_SPECS } from './native-check.js';

/**
 * What crates/binding exports via #[napi], as `napi build --dts` types it (without the loader's
 * own `__napiBindingTarget` and the CommonJS namespace's `default`).
 */
export type NativeBinding = Omit<typeof Binding, 'default' | '__napiBindingTarget' | 'NativePageTable'> & {
  /** Made by `NativeUnit#createPageTable`/`adoptPageTable` only: the d.ts cannot say a class has no constructor. */
  NativePageTable: abstract new () => Binding.NativePageTable;
};
export type NativeMemory = Binding.NativeMemory;
export type NativeUnit = Binding.NativeUnit;
export type NativeGather = Binding.NativeGather;
export type NativePageTable = Binding.NativePageTable;
export type NativeFdtWriter = Binding.NativeFdtWriter;
export type NativePins = Binding.NativePins;
export type NativeMemoryStats = Binding.MemoryStats;
export type NativeScrubReport = Binding.ScrubReport;
export type NativeUnitOptions = Binding.UnitOptions;
export type NativeUnitStats = Binding.UnitStats;
export type NativeCacheOccupancy = Binding.CacheOccupancy;
export type NativeMappedPages = Binding.MappedPages;
export type NativeWalkStep = Binding.WalkStep;
export type NativeDecodedFdt = Binding.NativeDecodedFdt;

/**
 * Whether this Node lets a finalizer that runs inside the garbage collector call
 * `napi_delete_reference` (nodejs/node#55620), as napi-rs's class finalizers do: 20.18.3 and
 * later 20.x (verified on 20.20), 22.14 and later 22.x, 23.6 and later 23.x, 24 and later. On
 * those the addon runs its finalizers from the GC; elsewhere they wait for the event loop.
 */
export function gcFinalizersSafe(nodeVersion: string): boolean {
  const [major = 0, minor = 0, patch = 0] = nodeVersion.split('.').map((x) => Number.parseInt(x, 10));
  if (major === 20) return minor > 18 || (minor === 18 && patch >= 3);
  if (major === 22) return minor >= 14;
  if (major === 23) return minor >= 6;
  return major >= 24;
}

/**
 * `IOMMU_LIVEUPDATE_SYNC_FINALIZERS`, read by the addon when Node loads it: `1` makes it declare
 * the experimental Node-API version, under which finalizers run synchronously from the GC (see
 * crates/binding). A user's own `0` or `1` is kept; otherwise it is set from
 * {@link gcFinalizersSafe} and `..._AUTO` records for which Node version, so that worker threads
 * (which read the process environment) agree and a child process running another Node decides
 * afresh. It stays set: workers load the addon after this thread did.
 */
function chooseFinalizers(): void {
  const env = process.env;
  const key = 'IOMMU_LIVEUPDATE_SYNC_FINALIZERS', auto = `${key}_AUTO`;
  if (env[key] !== undefined && env[auto] === undefined) return; // the user's choice
  if (env[auto] === process.versions.node && env[key] !== undefined) return;
  env[key] = gcFinalizersSafe(process.versions.node) ? '1' : '0';
  env[auto] = process.versions.node;
}

const LOADER = '../native/index.cjs';

function load(): NativeBinding {
  try {
    chooseFinalizers();
    // The generated loader is CommonJS; createRequire gives ESM Node's require.
    return checkedBinding(createRequire(import.meta.url)(LOADER) as NativeBinding, NATIVE_SPECS);
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new Error(
      `iommu-liveupdate: cannot load the native addon (${reason}). No prebuilt binary for ${process.platform}-${process.arch} ` +
        'was found and none was built from source: reinstall the package, or in a clone run `npm run build` (requires cargo).',
      { cause },
    );
  }
}

export const native: NativeBinding = load();
