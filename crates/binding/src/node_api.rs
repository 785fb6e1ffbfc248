//! Node-API version and native memory accounting: what the module declares to Node when it is
//! loaded, and the native bytes objects report to V8.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// `NAPI_VERSION_EXPERIMENTAL` (js_native_api.h).
const NAPI_VERSION_EXPERIMENTAL: i32 = i32::MAX;
/// The version Node loads addons without `node_api_module_get_api_version_v1` as.
const NAPI_VERSION_DEFAULT: i32 = 8;
/// What [`node_api_module_get_api_version_v1`] answered (0 before Node asked).
static DECLARED_API_VERSION: AtomicI32 = AtomicI32::new(0);

/// Asked by Node when it loads the addon: the Node-API version the module is written for.
///
/// Under `NAPI_VERSION_EXPERIMENTAL` Node runs the finalizers of wrapped objects synchronously
/// from the garbage collector, so a program that drops memories, units and page tables in a loop
/// that never yields gets their native memory back; under the default (8) they wait for
/// `SetImmediate`, i.e. for the loop to yield. A finalizer running inside the GC may only call
/// Node-APIs that cannot affect GC state. Ours drop Rust values and call
/// `napi_adjust_external_memory` (a `node_api_basic_env` API); napi-rs's class finalizer calls
/// `napi_delete_reference` on the reference `napi_wrap` returned, which Node allows there only
/// since nodejs/node#55620 (20.18.3, and the 22.x/23.x lines after it) and which aborts the
/// process before. So the experimental version is declared only when the environment variable
/// `IOMMU_LIVEUPDATE_SYNC_FINALIZERS` is `1`: ts/native.ts sets it before loading the addon when
/// the running Node is one of those (and leaves an explicit `0` or `1` of the user alone).
#[no_mangle]
pub extern "C" fn node_api_module_get_api_version_v1() -> i32 {
    let sync = std::env::var_os("IOMMU_LIVEUPDATE_SYNC_FINALIZERS").is_some_and(|v| v == "1");
    let version = if sync { NAPI_VERSION_EXPERIMENTAL } else { NAPI_VERSION_DEFAULT };
    DECLARED_API_VERSION.store(version, Ordering::Relaxed);
    version
}

/// The Node-API version this module declared when Node loaded it: 2147483647 (experimental:
/// finalizers run from the garbage collector) or 8 (finalizers wait for the event loop).
#[napi]
pub fn native_module_api_version() -> i32 {
    DECLARED_API_VERSION.load(Ordering::Relaxed)
}

/// How much each native byte weighs in what is reported to V8. V8 starts a collection once
/// external memory has grown by 64 MiB since the last one, so a loop that makes nothing but native
/// garbage (hosts dropped one after another) would hold about 64 MiB of dead frames at any time;
/// weighed 4×, it collects after about 16 MiB. `process.memoryUsage().external` counts them 4× too.
const EXTERNAL_WEIGHT: u64 = 4;

/// Native bytes an object holds, as reported to V8 with `napi_adjust_external_memory` (weighed by
/// [`EXTERNAL_WEIGHT`]): V8 counts them towards its heap limits, so it collects (and our
/// finalizers free) in time even when the JavaScript objects themselves are small. Reported again
/// whenever they change, given back when the object is dropped.
pub(crate) struct External {
    env: napi::sys::napi_env,
    reported: Cell<i64>,
}

impl External {
    pub(crate) fn new(env: &Env, bytes: u64) -> Self {
        let e = External { env: env.raw(), reported: Cell::new(0) };
        e.set(bytes);
        e
    }

    pub(crate) fn set(&self, bytes: u64) {
        let bytes = i64::try_from(bytes.saturating_mul(EXTERNAL_WEIGHT)).unwrap_or(i64::MAX);
        let delta = bytes - self.reported.get();
        if delta != 0 {
            let mut total = 0;
            // SAFETY: `env` is the env this object was created in; objects never leave its
            // thread (`Rc`), and the env outlives every object it finalizes. The call takes a
            // `node_api_basic_env`: allowed inside a GC finalizer. It only fails for a null env.
            unsafe { napi::sys::napi_adjust_external_memory(self.env, delta, &mut total) };
            self.reported.set(bytes);
        }
    }
}

impl Drop for External {
    fn drop(&mut self) {
        self.set(0);
    }
}
