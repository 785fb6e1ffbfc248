// Loads the cargo-built addon. `../native/` resolves the same from ts/ (vitest) and dist/ (tsc output).
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Hand-written typing of what crates/binding exports via #[napi]; keep in sync with lib.rs. */
export interface NativeBinding {
  nativeVersion(): string;
}

const addonPath = process.env.IOMMU_LIVEUPDATE_NATIVE
  ? resolve(process.env.IOMMU_LIVEUPDATE_NATIVE)
  : fileURLToPath(new URL('../native/iommu_liveupdate.node', import.meta.url));

function load(): NativeBinding {
  try {
    // ESM cannot import .node files; createRequire gives us Node's native loader.
    return createRequire(import.meta.url)(addonPath) as NativeBinding;
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new Error(
      `iommu-liveupdate: cannot load native addon ${addonPath} (${reason}). Run \`npm run build\` to compile it (requires cargo).`,
      { cause },
    );
  }
}

export const native: NativeBinding = load();
