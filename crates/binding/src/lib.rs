//! N-API binding of iommu-liveupdate: thin wrappers over the pure crates `physmem`, `vtd` and `fdt`.
//! Every `#[napi]` item of the project lives in this crate. Errors carry stable string codes
//! (`ERR_PHYSMEM_*`, `ERR_VTD_*`, `FDT_ERR_*`, Node's `ERR_OUT_OF_RANGE` and
//! `ERR_INVALID_ARG_VALUE`); every entry point catches panics, so a Rust bug surfaces as a
//! JavaScript exception instead of killing the process. ts/native-check.ts checks every argument
//! before it gets here; the checks here (ranges, caps on what is allocated) hold without it.
//! Entry points with a `String` parameter are `strict` (napi-rs checks types before converting):
//! napi-rs's own error for a non-string runs `JSON.stringify` on it, which runs the caller's
//! getters and, for a 64 MiB array, exhausts V8's heap (an abort).
//!
//! Memory comes back without waiting for the event loop: when the loader asks for it (see
//! [`node_api_module_get_api_version_v1`]) the module declares the experimental Node-API version,
//! under which Node runs the finalizers of wrapped objects from the garbage collector itself
//! instead of a later `SetImmediate`; the native bytes a memory or unit holds are reported to V8
//! (`napi_adjust_external_memory`) as they grow and shrink, so the collector runs when they add
//! up; and arrays handed to JavaScript are V8-owned copies, never external buffers (whose free
//! callbacks Node always defers to the event loop).
//!
//! One module per exported class family, each beside the crate it wraps:
//!
//! - `memory`: `NativeMemory` over `physmem::PhysMem`, and the `Rc` its units and page tables share;
//! - `unit`: `NativeUnit` over `vtd::Unit` (registers, DMA translation, faults, caches);
//! - `pagetable`: `NativePageTable` and `NativeGather` over `vtd::PageTable` and `vtd::Gather`;
//! - `pins`: `NativePins` over `iopt`: a kernel's page pin counts, shmem folios and `iopt_pages` runs;
//! - `devicetree`: `NativeFdtWriter` and the one-call-per-tree `fdt*` functions over `fdt`;
//! - `node_api`: the Node-API version the module declares, and native bytes reported to V8;
//! - `arrays`: V8-owned arrays out, zero-copy typed arrays in;
//! - `error`: the stable error codes and the argument checks.
#![allow(clippy::new_without_default)]

mod arrays;
mod devicetree;
mod error;
mod memory;
mod node_api;
mod pagetable;
mod pins;
mod unit;

pub use devicetree::{
    fdt_check, fdt_decode, fdt_encode, fdt_kho_root, fdt_kho_root_info, fdt_kho_root_max, fdt_max_depth, fdt_to_dts,
    NativeDecodedFdt, NativeFdtWriter, NativeKhoRootInfo, NativeKhoSubtree,
};
pub use error::Code;
pub use memory::{MemoryStats, NativeMemory, PreservedBlock, ScrubReport};
pub use node_api::{native_module_api_version, node_api_module_get_api_version_v1};
pub use pagetable::{MappedPages, NativeGather, NativePageTable, WalkStep};
pub use pins::NativePins;
pub use unit::{CacheOccupancy, Fault, NativeUnit, Registers, UnitOptions, UnitStats};

use napi_derive::napi;

/// Version of the native core, for diagnostics.
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Panics on purpose: lets tests prove a Rust panic becomes a JavaScript exception.
#[napi(catch_unwind)]
pub fn native_panic_for_test() {
    panic!("deliberate panic from the native core");
}
