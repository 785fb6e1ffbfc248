//! N-API binding of iommu-liveupdate: thin wrappers over the pure crates `physmem`, `vtd` and `fdt`.
//! Every `#[napi]` item of the project lives here. Errors carry stable string codes
//! (`ERR_PHYSMEM_*`, `ERR_VTD_*`, Node's `ERR_INVALID_ARG_VALUE`); every entry point catches
//! panics, so a Rust bug surfaces as a JavaScript exception instead of killing the process.
//!
//! Memory comes back without waiting for the event loop: when the loader asks for it (see
//! [`node_api_module_get_api_version_v1`]) the module declares the experimental Node-API version,
//! under which Node runs the finalizers of wrapped objects from the garbage collector itself
//! instead of a later `SetImmediate`; the native bytes a memory or unit holds are reported to V8
//! (`napi_adjust_external_memory`) as they grow and shrink, so the collector runs when they add
//! up; and arrays handed to JavaScript are V8-owned copies, never external buffers (whose free
//! callbacks Node always defers to the event loop).
#![allow(clippy::new_without_default)]

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};

use napi::bindgen_prelude::*;
use napi_derive::napi;

use physmem::PhysMem;
use vtd::{ContextInvalidation, Gather, IotlbInvalidation, PageTable, Prot, Unit, UnitConfig};

/// The error status type: a stable string code.
#[derive(Debug, Clone, Copy)]
pub struct Code(&'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}


fn err(code: &'static str, msg: impl Into<String>) -> Error<Code> {
    Error::new(Code(code), msg.into())
}

fn mem_err(e: physmem::Error) -> Error<Code> {
    err(e.code(), e.to_string())
}

fn vtd_err(e: vtd::Error) -> Error<Code> {
    err(e.code(), e.to_string())
}

fn invalid(msg: impl Into<String>) -> Error<Code> {
    err("ERR_INVALID_ARG_VALUE", msg)
}

/// A non-negative bigint that fits 64 bits.
fn u64_arg(v: &BigInt, name: &str) -> Result<u64, Code> {
    let (negative, value, lossless) = v.get_u64();
    if negative && value != 0 || !lossless {
        return Err(invalid(format!("{name} must be a bigint in 0..2^64")));
    }
    Ok(value)
}

fn u8_arg(v: u32, max: u32, name: &str) -> Result<u8, Code> {
    if v > max {
        return Err(invalid(format!("{name} must be at most {max}")));
    }
    Ok(v as u8)
}

fn u16_arg(v: u32, name: &str) -> Result<u16, Code> {
    u16::try_from(v).map_err(|_| invalid(format!("{name} must fit 16 bits")))
}

// ---------------------------------------------------------------------------------------------
// Node-API version and native memory accounting

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
struct External {
    env: napi::sys::napi_env,
    reported: Cell<i64>,
}

impl External {
    fn new(env: &Env, bytes: u64) -> Self {
        let e = External { env: env.raw(), reported: Cell::new(0) };
        e.set(bytes);
        e
    }

    fn set(&self, bytes: u64) {
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

/// A memory shared by a `NativeMemory`, its units and their page tables (one `Rc`, no cycle:
/// units and page tables point at the memory, never the other way round). Every mutable borrow
/// reports the memory's host bytes to V8 when it ends.
struct Mem {
    mem: RefCell<PhysMem>,
    external: External,
}

impl Mem {
    fn cost(m: &PhysMem) -> u64 {
        m.host_bytes() + m.metadata_bytes() + std::mem::size_of::<Mem>() as u64
    }

    fn borrow(&self) -> Ref<'_, PhysMem> {
        self.mem.borrow()
    }

    fn borrow_mut(&self) -> MemMut<'_> {
        MemMut { guard: Some(self.mem.borrow_mut()), external: &self.external }
    }
}

/// A mutable borrow of a [`Mem`]; on drop (after the borrow ends) V8 learns the new cost.
struct MemMut<'a> {
    guard: Option<RefMut<'a, PhysMem>>,
    external: &'a External,
}

impl Deref for MemMut<'_> {
    type Target = PhysMem;
    fn deref(&self) -> &PhysMem {
        self.guard.as_deref().unwrap()
    }
}

impl DerefMut for MemMut<'_> {
    fn deref_mut(&mut self) -> &mut PhysMem {
        self.guard.as_deref_mut().unwrap()
    }
}

impl Drop for MemMut<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let bytes = Mem::cost(&guard);
            // Release the borrow first: reporting growth may run the GC, and with it finalizers.
            drop(guard);
            self.external.set(bytes);
        }
    }
}

type SharedMem = Rc<Mem>;

fn napi_err(e: napi::Error) -> Error<Code> {
    err("ERR_NATIVE_ALLOCATION", format!("cannot create a JavaScript array: {}", e.reason))
}

/// A `Uint8Array` over a new V8-owned `ArrayBuffer` of `len` bytes that `fill` writes. V8-owned:
/// the garbage collector frees it like any array, with no finalizer to wait for.
fn new_u8_array<'e>(env: &'e Env, len: usize, fill: impl FnOnce(&mut [u8]) -> Result<(), Code>) -> Result<Uint8ArraySlice<'e>, Code> {
    use napi::sys;
    let raw = env.raw();
    let (mut data, mut ab) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: plain Node-API calls on the calling thread's env; `data` points at `len` bytes of
    // the new buffer (or is null for 0), which nothing else sees before `fill` returns.
    unsafe {
        if sys::napi_create_arraybuffer(raw, len, &mut data, &mut ab) != sys::Status::napi_ok {
            return Err(err("ERR_NATIVE_ALLOCATION", format!("cannot allocate a {len}-byte ArrayBuffer")));
        }
        let bytes: &mut [u8] = if len == 0 || data.is_null() { &mut [] } else { std::slice::from_raw_parts_mut(data.cast(), len) };
        fill(bytes)?;
        let mut ta = std::ptr::null_mut();
        if sys::napi_create_typedarray(raw, sys::TypedarrayType::uint8_array, len, ab, 0, &mut ta) != sys::Status::napi_ok {
            return Err(err("ERR_NATIVE_ALLOCATION", "cannot create a Uint8Array"));
        }
        Uint8ArraySlice::from_napi_value(raw, ta).map_err(napi_err)
    }
}

fn u8_array<'e>(env: &'e Env, data: &[u8]) -> Result<Uint8ArraySlice<'e>, Code> {
    new_u8_array(env, data.len(), |b| {
        b.copy_from_slice(data);
        Ok(())
    })
}

fn u64_array<'e>(env: &'e Env, data: &[u64]) -> Result<BigUint64ArraySlice<'e>, Code> {
    BigUint64ArraySlice::copy_from(env, data).map_err(napi_err)
}

fn u32_array<'e>(env: &'e Env, data: &[u32]) -> Result<Uint32ArraySlice<'e>, Code> {
    Uint32ArraySlice::copy_from(env, data).map_err(napi_err)
}

// napi-derive reads a literal `&mut [T]` argument as a class reference; through an alias it
// takes the zero-copy typed-array path (`FromNapiValue for &mut [T]`).
type U64Out<'a> = &'a mut [u64];
type U8Out<'a> = &'a mut [u8];

// ---------------------------------------------------------------------------------------------
// Physical memory

/// Usage statistics of a memory.
#[napi(object)]
pub struct MemoryStats {
    /// Configured size in bytes.
    pub size: BigInt,
    /// Frames in the configured size.
    pub frames_total: f64,
    /// Free frames.
    pub frames_free: f64,
    /// Allocated frames.
    pub frames_allocated: f64,
    /// Reserved frames (low 1 MiB, interrupt window).
    pub frames_reserved: f64,
    /// Frames holding data.
    pub frames_resident: f64,
    /// Frames covered by preservation marks.
    pub frames_preserved: f64,
    /// Host bytes of frame storage (resident frames, their index and lookup cache); 0 when no
    /// frame holds data.
    pub host_bytes: f64,
    /// Host bytes (estimated) of allocator, fill and preservation bookkeeping.
    pub metadata_bytes: f64,
    /// Allocation calls.
    pub allocations: f64,
    /// Free calls.
    pub frees: f64,
}

/// What a scrub did.
#[napi(object)]
pub struct ScrubReport {
    /// Frames kept by preservation marks.
    pub preserved_frames: f64,
    /// Resident frames that lost their contents.
    pub poisoned_frames: f64,
    /// Free frames afterwards.
    pub free_frames: f64,
}

/// A preservation mark.
#[napi(object)]
pub struct PreservedBlock {
    /// Physical address.
    pub pa: BigInt,
    /// Order: 2^order frames.
    pub order: u32,
}

/// Simulated host physical memory (the `physmem` crate).
#[napi]
pub struct NativeMemory {
    mem: SharedMem,
}

#[napi]
impl NativeMemory {
    /// A memory of `size` bytes whose allocator is seeded with `seed`.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, size: BigInt, seed: BigInt) -> Result<Self, Code> {
        let config = physmem::Config { size: u64_arg(&size, "size")?, seed: u64_arg(&seed, "seed")? };
        let mem = PhysMem::new(config).map_err(mem_err)?;
        let external = External::new(&env, Mem::cost(&mem));
        Ok(NativeMemory { mem: Rc::new(Mem { mem: RefCell::new(mem), external }) })
    }

    /// Configured size in bytes.
    #[napi(getter, catch_unwind)]
    pub fn size(&self) -> u64 {
        self.mem.borrow().size()
    }

    /// Reads `n` bytes at `pa` into a new (V8-owned) array.
    #[napi(catch_unwind)]
    pub fn read<'e>(&self, env: &'e Env, pa: BigInt, n: u32) -> Result<Uint8ArraySlice<'e>, Code> {
        // One read is one buffer: bound it so a typo cannot ask the allocator for 4 GiB.
        if n > 1 << 30 {
            return Err(invalid("n must be at most 1 GiB per read"));
        }
        let pa = u64_arg(&pa, "pa")?;
        let mem = self.mem.borrow();
        new_u8_array(env, n as usize, |buf| mem.read(pa, buf).map_err(mem_err))
    }

    /// Writes `bytes` at `pa`.
    #[napi(catch_unwind)]
    pub fn write(&self, pa: BigInt, bytes: &[u8]) -> Result<(), Code> {
        self.mem.borrow_mut().write(u64_arg(&pa, "pa")?, bytes).map_err(mem_err)
    }

    /// Fills `len` bytes at `pa` with `byte`.
    #[napi(catch_unwind)]
    pub fn fill(&self, pa: BigInt, len: BigInt, byte: u32) -> Result<(), Code> {
        let byte = u8_arg(byte, 255, "byte")?;
        self.mem.borrow_mut().fill_range(u64_arg(&pa, "pa")?, u64_arg(&len, "len")?, byte).map_err(mem_err)
    }

    /// Reads the little-endian u64 at `pa` (8-byte aligned).
    #[napi(catch_unwind)]
    pub fn read_u64(&self, pa: BigInt) -> Result<u64, Code> {
        self.mem.borrow().read_u64(u64_arg(&pa, "pa")?).map_err(mem_err)
    }

    /// Writes the little-endian u64 at `pa` (8-byte aligned).
    #[napi(catch_unwind)]
    pub fn write_u64(&self, pa: BigInt, value: BigInt) -> Result<(), Code> {
        let v = u64_arg(&value, "value")?;
        self.mem.borrow_mut().write_u64(u64_arg(&pa, "pa")?, v).map_err(mem_err)
    }

    /// Allocates 2^order frames; `zero` makes them read as zero.
    #[napi(catch_unwind)]
    pub fn alloc(&self, order: u32, zero: bool) -> Result<u64, Code> {
        let order = u8_arg(order, physmem::MAX_ORDER as u32, "order")?;
        self.mem.borrow_mut().alloc(order, zero).map_err(mem_err)
    }

    /// Allocates the given range of whole frames.
    #[napi(catch_unwind)]
    pub fn claim(&self, pa: BigInt, len: BigInt) -> Result<(), Code> {
        self.mem.borrow_mut().claim(u64_arg(&pa, "pa")?, u64_arg(&len, "len")?).map_err(mem_err)
    }

    /// Frees an allocated range of whole frames.
    #[napi(catch_unwind)]
    pub fn free(&self, pa: BigInt, len: BigInt) -> Result<(), Code> {
        self.mem.borrow_mut().free(u64_arg(&pa, "pa")?, u64_arg(&len, "len")?).map_err(mem_err)
    }

    /// Whether the whole range is allocated.
    #[napi(catch_unwind)]
    pub fn is_allocated(&self, pa: BigInt, len: BigInt) -> Result<bool, Code> {
        Ok(self.mem.borrow().is_allocated(u64_arg(&pa, "pa")?, u64_arg(&len, "len")?))
    }

    /// Marks a block preserved across the next scrub.
    #[napi(catch_unwind)]
    pub fn preserve(&self, pa: BigInt, order: u32) -> Result<(), Code> {
        let order = u8_arg(order, physmem::MAX_ORDER as u32, "order")?;
        self.mem.borrow_mut().preserve(u64_arg(&pa, "pa")?, order).map_err(mem_err)
    }

    /// Marks the block of 2^order frames at each of `pas` preserved, all or nothing: on a
    /// failure the marks this call set are removed and the block's error is thrown.
    #[napi(catch_unwind)]
    pub fn preserve_many(&self, pas: &[u64], order: u32) -> Result<(), Code> {
        let order = u8_arg(order, physmem::MAX_ORDER as u32, "order")?;
        self.mem.borrow_mut().preserve_many(pas, order).map_err(mem_err)
    }

    /// Whether every range `[pa, pa+len)` of `pas` is allocated (true for none).
    #[napi(catch_unwind)]
    pub fn is_allocated_many(&self, pas: &[u64], len: BigInt) -> Result<bool, Code> {
        Ok(self.mem.borrow().is_allocated_many(pas, u64_arg(&len, "len")?))
    }

    /// Removes a preservation mark.
    #[napi(catch_unwind)]
    pub fn unpreserve(&self, pa: BigInt, order: u32) -> Result<(), Code> {
        let order = u8_arg(order, physmem::MAX_ORDER as u32, "order")?;
        self.mem.borrow_mut().unpreserve(u64_arg(&pa, "pa")?, order).map_err(mem_err)
    }

    /// Whether a mark covers `pa`.
    #[napi(catch_unwind)]
    pub fn is_preserved(&self, pa: BigInt) -> Result<bool, Code> {
        Ok(self.mem.borrow().is_preserved(u64_arg(&pa, "pa")?))
    }

    /// Every preservation mark.
    #[napi(catch_unwind)]
    pub fn preserved(&self) -> Vec<PreservedBlock> {
        self.mem
            .borrow()
            .preserved()
            .into_iter()
            .map(|(pa, order)| PreservedBlock { pa: BigInt::from(pa), order: order as u32 })
            .collect()
    }

    /// A new kernel takes over: unpreserved memory is poisoned and freed.
    #[napi(catch_unwind)]
    pub fn scrub(&self) -> ScrubReport {
        let r = self.mem.borrow_mut().scrub();
        ScrubReport {
            preserved_frames: r.preserved_frames as f64,
            poisoned_frames: r.poisoned_frames as f64,
            free_frames: r.free_frames as f64,
        }
    }

    /// Re-seeds the allocator.
    #[napi(catch_unwind)]
    pub fn reseed(&self, seed: BigInt) -> Result<(), Code> {
        self.mem.borrow_mut().reseed(u64_arg(&seed, "seed")?);
        Ok(())
    }

    /// Usage statistics.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> MemoryStats {
        let s = self.mem.borrow().stats();
        MemoryStats {
            size: BigInt::from(s.size),
            frames_total: s.frames_total as f64,
            frames_free: s.frames_free as f64,
            frames_allocated: s.frames_allocated as f64,
            frames_reserved: s.frames_reserved as f64,
            frames_resident: s.frames_resident as f64,
            frames_preserved: s.frames_preserved as f64,
            host_bytes: s.host_bytes as f64,
            metadata_bytes: s.metadata_bytes as f64,
            allocations: s.allocations as f64,
            frees: s.frees as f64,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The VT-d unit

/// Unit configuration; absent fields take the defaults of `vtd::UnitConfig`.
#[napi(object)]
pub struct UnitOptions {
    /// 39, 48 or 57.
    pub address_width: Option<u32>,
    /// SLLPS 2 MiB.
    pub superpage_2m: Option<bool>,
    /// SLLPS 1 GiB.
    pub superpage_1g: Option<bool>,
    /// CAP.ND.
    pub nd: Option<u32>,
    /// CAP.PSI.
    pub psi: Option<bool>,
    /// CAP.MAMV.
    pub mamv: Option<u32>,
    /// CAP.CM.
    pub caching_mode: Option<bool>,
    /// CAP.ESRTPS.
    pub esrtps: Option<bool>,
    /// ECAP.C.
    pub coherent: Option<bool>,
    /// ECAP.SC.
    pub snoop_control: Option<bool>,
    /// ECAP.PT.
    pub pass_through: Option<bool>,
    /// ECAP.DT.
    pub device_tlb: Option<bool>,
    /// ECAP.QI (advertised only).
    pub queued_invalidation: Option<bool>,
    /// ECAP.IR (advertised only).
    pub interrupt_remapping: Option<bool>,
    /// ECAP.MHMV.
    pub mhmv: Option<u32>,
    /// TM bit ignored in 4K leaves.
    pub stale_tm: Option<bool>,
    /// Fault-recording registers.
    pub fault_records: Option<u32>,
    /// IOTLB entries.
    pub iotlb_entries: Option<u32>,
    /// IOTLB associativity.
    pub iotlb_ways: Option<u32>,
    /// Paging-structure-cache entries.
    pub psc_entries: Option<u32>,
    /// Context-cache entries.
    pub context_cache_entries: Option<u32>,
}

fn unit_config(o: UnitOptions) -> Result<UnitConfig, Code> {
    let d = UnitConfig::default();
    Ok(UnitConfig {
        address_width: o.address_width.unwrap_or(d.address_width),
        superpage_2m: o.superpage_2m.unwrap_or(d.superpage_2m),
        superpage_1g: o.superpage_1g.unwrap_or(d.superpage_1g),
        nd: u8_arg(o.nd.unwrap_or(d.nd as u32), 6, "nd")?,
        psi: o.psi.unwrap_or(d.psi),
        mamv: u8_arg(o.mamv.unwrap_or(d.mamv as u32), 63, "mamv")?,
        caching_mode: o.caching_mode.unwrap_or(d.caching_mode),
        esrtps: o.esrtps.unwrap_or(d.esrtps),
        coherent: o.coherent.unwrap_or(d.coherent),
        snoop_control: o.snoop_control.unwrap_or(d.snoop_control),
        pass_through: o.pass_through.unwrap_or(d.pass_through),
        device_tlb: o.device_tlb.unwrap_or(d.device_tlb),
        queued_invalidation: o.queued_invalidation.unwrap_or(d.queued_invalidation),
        interrupt_remapping: o.interrupt_remapping.unwrap_or(d.interrupt_remapping),
        mhmv: u8_arg(o.mhmv.unwrap_or(d.mhmv as u32), 15, "mhmv")?,
        stale_tm: o.stale_tm.unwrap_or(d.stale_tm),
        fault_records: o.fault_records.unwrap_or(d.fault_records),
        iotlb_entries: o.iotlb_entries.unwrap_or(d.iotlb_entries),
        iotlb_ways: o.iotlb_ways.unwrap_or(d.iotlb_ways),
        psc_entries: o.psc_entries.unwrap_or(d.psc_entries),
        context_cache_entries: o.context_cache_entries.unwrap_or(d.context_cache_entries),
    })
}

/// The pinned register view.
#[napi(object)]
pub struct Registers {
    /// CAP_REG.
    pub cap: BigInt,
    /// ECAP_REG.
    pub ecap: BigInt,
    /// GSTS_REG.
    pub gsts: u32,
    /// RTADDR_REG.
    pub rtaddr: BigInt,
}

/// One fault record.
#[napi(object)]
pub struct Fault {
    /// Requester id.
    pub sid: u32,
    /// Faulting page address.
    pub iova: BigInt,
    /// Fault reason (0x1..=0xE).
    pub reason: u32,
    /// Whether the request was a write.
    pub write: bool,
}

/// Unit counters (numbers: they stay far below 2^53).
#[napi(object)]
pub struct UnitStats {
    /// IOTLB hits.
    pub iotlb_hits: f64,
    /// IOTLB misses.
    pub iotlb_misses: f64,
    /// Page walks.
    pub walks: f64,
    /// Faulted requests.
    pub faults: f64,
    /// Walks resumed from the paging-structure cache.
    pub psc_hits: f64,
    /// Context-cache hits.
    pub context_hits: f64,
    /// Context-cache misses.
    pub context_misses: f64,
    /// Faults recorded in FRCD registers.
    pub faults_recorded: f64,
    /// Faults not recorded (FPD, collapse, overflow).
    pub faults_dropped: f64,
    /// Untranslated requests (TE off, pass-through).
    pub passthrough: f64,
    /// Context-cache invalidations.
    pub context_invalidations: f64,
    /// IOTLB invalidations.
    pub iotlb_invalidations: f64,
}

/// Entries held and capacity of each cache.
#[napi(object)]
pub struct CacheOccupancy {
    /// IOTLB entries held.
    pub iotlb: u32,
    /// IOTLB capacity.
    pub iotlb_capacity: u32,
    /// Paging-structure-cache entries held.
    pub psc: u32,
    /// Paging-structure-cache capacity.
    pub psc_capacity: u32,
    /// Context-cache entries held.
    pub context: u32,
    /// Context-cache capacity.
    pub context_capacity: u32,
}

/// A VT-d DMA-remapping unit over a memory.
#[napi]
pub struct NativeUnit {
    mem: SharedMem,
    unit: Unit,
    /// The caches' capacity, as V8 sees it.
    #[allow(dead_code)]
    external: External,
    last_fault: u32,
    last_fault_iova: u64,
}

fn dma_args(sid: u32, iova: &BigInt, len: usize) -> Result<(u16, u64), Code> {
    let sid = u16_arg(sid, "sid")?;
    let iova = u64_arg(iova, "iova")?;
    if iova.checked_add(len as u64).is_none() {
        return Err(invalid(format!("iova {iova:#x} + {len} bytes overflows 64 bits")));
    }
    Ok((sid, iova))
}

fn granularity_name(g: IotlbInvalidation) -> &'static str {
    match g {
        IotlbInvalidation::Global => "global",
        IotlbInvalidation::Domain(_) => "domain",
        IotlbInvalidation::Page { .. } => "page",
    }
}

#[napi]
impl NativeUnit {
    /// A unit with translation disabled.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, mem: &NativeMemory, options: UnitOptions) -> Result<Self, Code> {
        let unit = Unit::new(unit_config(options)?).map_err(vtd_err)?;
        // Tag, value, permission and LRU stamp per IOTLB/PSC entry; a hash entry per context.
        let (iotlb, psc, ctx) = unit.cache_capacity();
        let bytes = (iotlb + psc) as u64 * 25 + ctx as u64 * 48 + std::mem::size_of::<NativeUnit>() as u64;
        let external = External::new(&env, bytes);
        Ok(NativeUnit { mem: mem.mem.clone(), unit, external, last_fault: 0, last_fault_iova: 0 })
    }

    /// CAP, ECAP, GSTS, RTADDR.
    #[napi(catch_unwind)]
    pub fn registers(&self) -> Registers {
        Registers {
            cap: BigInt::from(self.unit.cap()),
            ecap: BigInt::from(self.unit.ecap()),
            gsts: self.unit.gsts(),
            rtaddr: BigInt::from(self.unit.rtaddr()),
        }
    }

    /// MMIO read.
    #[napi(catch_unwind)]
    pub fn read_register(&self, offset: u32, size: u32) -> Result<u64, Code> {
        self.unit.read_reg(offset, size).map_err(vtd_err)
    }

    /// MMIO write.
    #[napi(catch_unwind)]
    pub fn write_register(&mut self, offset: u32, size: u32, value: BigInt) -> Result<(), Code> {
        let v = u64_arg(&value, "value")?;
        self.unit.write_reg(offset, size, v).map_err(vtd_err)
    }

    /// RTADDR + GCMD.SRTP.
    #[napi(catch_unwind)]
    pub fn set_root_table(&mut self, pa: BigInt) -> Result<(), Code> {
        self.unit.set_root_table(u64_arg(&pa, "pa")?);
        Ok(())
    }

    /// GCMD.TE.
    #[napi(catch_unwind)]
    pub fn enable_translation(&mut self, on: bool) {
        self.unit.enable_translation(on);
    }

    /// Batch translation: `out[i]` = PA or 2^64-1, `faults[i]` = reason or 0. Returns how many
    /// faulted.
    #[napi(catch_unwind)]
    pub fn translate(&mut self, sid: u32, iovas: &[u64], out: U64Out, write: bool, faults: Option<U8Out>) -> Result<u32, Code> {
        let sid = u16_arg(sid, "sid")?;
        if out.len() < iovas.len() {
            return Err(invalid(format!("out holds {} entries, iovas {}", out.len(), iovas.len())));
        }
        if let Some(f) = &faults {
            if f.len() < iovas.len() {
                return Err(invalid(format!("faults holds {} entries, iovas {}", f.len(), iovas.len())));
            }
        }
        let mem = self.mem.borrow();
        Ok(self.unit.translate_batch(&mem, sid, iovas, out, write, faults) as u32)
    }

    /// One translation: the PA, or 2^64-1 on a fault (never a PA: PAs are below 2^52), whose
    /// reason `last_fault` then returns. Scalar arguments and result keep the call cheap.
    #[napi(catch_unwind)]
    pub fn translate_one(&mut self, sid: u32, iova: BigInt, write: bool) -> Result<u64, Code> {
        let sid = u16_arg(sid, "sid")?;
        let iova = u64_arg(&iova, "iova")?;
        let mem = self.mem.borrow();
        Ok(match self.unit.translate(&mem, sid, iova, write) {
            Ok(pa) => {
                self.last_fault = 0;
                pa
            }
            Err(reason) => {
                self.last_fault = reason as u32;
                self.last_fault_iova = iova;
                u64::MAX
            }
        })
    }

    /// The fault reason of the last `translate_one`, `dma_read` or `dma_write`, 0 if it
    /// succeeded.
    #[napi(getter)]
    pub fn last_fault(&self) -> u32 {
        self.last_fault
    }

    /// The IOVA of the faulting request of the last `translate_one`, `dma_read` or `dma_write`
    /// that faulted: for DMA, the transfer's first byte in the faulting page. 0 after a call
    /// that succeeded.
    #[napi(getter)]
    pub fn last_fault_iova(&self) -> u64 {
        self.last_fault_iova
    }

    fn dma_done(&mut self, r: vtd::Result<std::result::Result<(), vtd::DmaFault>>) -> Result<u32, Code> {
        let (reason, iova) = match r.map_err(vtd_err)? {
            Ok(()) => (0, 0),
            Err(f) => (f.reason as u32, f.iova),
        };
        self.last_fault = reason;
        self.last_fault_iova = iova;
        Ok(reason)
    }

    /// A device reads `buf.length` bytes at `iova` into `buf` (zero-copy), one translation
    /// request per 4 KiB page. Returns 0, or the fault reason of the first faulting page; the
    /// bytes before it were transferred, `buf` is untouched from it on, `lastFaultIova` is
    /// where it starts.
    #[napi(catch_unwind)]
    pub fn dma_read(&mut self, sid: u32, iova: BigInt, buf: U8Out) -> Result<u32, Code> {
        let (sid, iova) = dma_args(sid, &iova, buf.len())?;
        let r = self.unit.dma_read(&self.mem.borrow(), sid, iova, buf);
        self.dma_done(r)
    }

    /// A device writes `buf` at `iova`, one translation request per 4 KiB page. Returns 0, or
    /// the fault reason of the first faulting page (earlier pages were written, nothing from
    /// it on; `lastFaultIova` is where it starts).
    #[napi(catch_unwind)]
    pub fn dma_write(&mut self, sid: u32, iova: BigInt, buf: &[u8]) -> Result<u32, Code> {
        let (sid, iova) = dma_args(sid, &iova, buf.len())?;
        let r = self.unit.dma_write(&mut self.mem.borrow_mut(), sid, iova, buf);
        self.dma_done(r)
    }

    /// Pending fault records, oldest first.
    #[napi(catch_unwind)]
    pub fn faults(&self) -> Vec<Fault> {
        self.unit
            .fault_records()
            .into_iter()
            .map(|f| Fault { sid: f.sid as u32, iova: BigInt::from(f.addr), reason: f.reason as u32, write: f.write })
            .collect()
    }

    /// Clears the fault log; returns how many records were pending.
    #[napi(catch_unwind)]
    pub fn clear_faults(&mut self) -> u32 {
        self.unit.clear_faults() as u32
    }

    /// Counters.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> UnitStats {
        let s = self.unit.stats();
        UnitStats {
            iotlb_hits: s.iotlb_hits as f64,
            iotlb_misses: s.iotlb_misses as f64,
            walks: s.walks as f64,
            faults: s.faults as f64,
            psc_hits: s.psc_hits as f64,
            context_hits: s.context_hits as f64,
            context_misses: s.context_misses as f64,
            faults_recorded: s.faults_recorded as f64,
            faults_dropped: s.faults_dropped as f64,
            passthrough: s.passthrough as f64,
            context_invalidations: s.context_invalidations as f64,
            iotlb_invalidations: s.iotlb_invalidations as f64,
        }
    }

    /// Cache occupancy and capacity.
    #[napi(catch_unwind)]
    pub fn cache_occupancy(&self) -> CacheOccupancy {
        let (iotlb, psc, context) = self.unit.cache_occupancy();
        let (ic, pc, cc) = self.unit.cache_capacity();
        CacheOccupancy {
            iotlb: iotlb as u32,
            iotlb_capacity: ic as u32,
            psc: psc as u32,
            psc_capacity: pc as u32,
            context: context as u32,
            context_capacity: cc as u32,
        }
    }

    /// Context-cache invalidation: granularity "global" | "domain" | "device".
    #[napi(catch_unwind)]
    pub fn invalidate_context(&mut self, granularity: String, did: u32, sid: u32, fm: u32) -> Result<(), Code> {
        let did = u16_arg(did, "did")?;
        let req = match granularity.as_str() {
            "global" => ContextInvalidation::Global,
            "domain" => ContextInvalidation::Domain(did),
            "device" => ContextInvalidation::Device { did, sid: u16_arg(sid, "sid")?, fm: u8_arg(fm, 3, "fm")? },
            g => return Err(invalid(format!("unknown context invalidation granularity {g:?}"))),
        };
        self.unit.invalidate_context(req);
        Ok(())
    }

    /// IOTLB invalidation: granularity "global" | "domain" | "page"; returns the granularity
    /// performed.
    #[napi(catch_unwind)]
    pub fn invalidate_iotlb(&mut self, granularity: String, did: u32, addr: BigInt, am: u32, ih: bool) -> Result<&'static str, Code> {
        let did = u16_arg(did, "did")?;
        let req = match granularity.as_str() {
            "global" => IotlbInvalidation::Global,
            "domain" => IotlbInvalidation::Domain(did),
            "page" => IotlbInvalidation::Page { did, addr: u64_arg(&addr, "addr")?, am: u8_arg(am, 63, "am")?, ih },
            g => return Err(invalid(format!("unknown IOTLB invalidation granularity {g:?}"))),
        };
        self.unit.invalidate_iotlb(req).map(granularity_name).map_err(vtd_err)
    }

    /// Flushes what `gather` collected for domain `did`, then frees its table pages.
    #[napi(catch_unwind)]
    pub fn iotlb_sync(&mut self, did: u32, gather: &mut NativeGather) -> Result<&'static str, Code> {
        let did = u16_arg(did, "did")?;
        let mut mem = self.mem.borrow_mut();
        self.unit.iotlb_sync(&mut mem, did, &mut gather.inner).map(granularity_name).map_err(vtd_err)
    }

    /// A fresh page table for this unit with `levels` levels.
    #[napi(catch_unwind)]
    pub fn create_page_table(&self, levels: u32) -> Result<NativePageTable, Code> {
        let config = self.unit.pagetable_config(levels).map_err(vtd_err)?;
        let pt = PageTable::new(&mut self.mem.borrow_mut(), config).map_err(vtd_err)?;
        Ok(NativePageTable { mem: self.mem.clone(), pt })
    }

    /// Adopts existing tables at `pgd` (re-hydration after kexec).
    #[napi(catch_unwind)]
    pub fn adopt_page_table(&self, pgd: BigInt, levels: u32) -> Result<NativePageTable, Code> {
        let config = self.unit.pagetable_config(levels).map_err(vtd_err)?;
        let pt = PageTable::from_raw(u64_arg(&pgd, "pgd")?, config).map_err(vtd_err)?;
        Ok(NativePageTable { mem: self.mem.clone(), pt })
    }
}

// ---------------------------------------------------------------------------------------------
// Page tables and gathers

/// Unmapped ranges and table pages awaiting the IOTLB flush.
#[napi]
pub struct NativeGather {
    inner: Gather,
}

#[napi]
impl NativeGather {
    /// An empty gather.
    #[napi(constructor)]
    pub fn new() -> Self {
        NativeGather { inner: Gather::default() }
    }

    /// `[start, end]` gathered, or null.
    #[napi(catch_unwind)]
    pub fn range(&self) -> Option<Vec<u64>> {
        self.inner.range().map(|(s, e)| vec![s, e])
    }

    /// Table pages awaiting the flush.
    #[napi(catch_unwind)]
    pub fn freelist<'e>(&self, env: &'e Env) -> Result<BigUint64ArraySlice<'e>, Code> {
        u64_array(env, self.inner.freelist())
    }
}

/// One walk step.
#[napi(object)]
pub struct WalkStep {
    /// Level.
    pub level: u32,
    /// Entry address.
    pub pte_pa: BigInt,
    /// Entry value.
    pub pte: BigInt,
}

/// A domain's second-level page table.
#[napi]
pub struct NativePageTable {
    mem: SharedMem,
    pt: PageTable,
}

fn prot(read: bool, write: bool, snoop: bool) -> Prot {
    Prot { read, write, snoop }
}

/// What `mappedPages` found.
#[napi(object)]
pub struct MappedPages<'e> {
    /// 4 KiB pages mapped by present leaves (a 2 MiB leaf counts 512).
    pub pages: f64,
    /// Every table page reached, top first.
    pub tables: BigUint64ArraySlice<'e>,
}

/// Checks runs given as three `Float64Array`s of 4 KiB page numbers and counts (`mapRuns`,
/// `verifyRuns`) and returns them as byte ranges `(iova, pa, size)`: IOVA page numbers are
/// integers below 2^52, PA page numbers below 2^40, counts at least 1, and neither end past
/// 2^52 pages. Every entry is checked before the first run is used.
fn pfn_runs<'a>(iova_pfns: &'a [f64], pa_pfns: &'a [f64], npages: &'a [f64]) -> Result<impl Iterator<Item = (u64, u64, u64)> + Clone + 'a, Code> {
    let n = iova_pfns.len();
    if pa_pfns.len() != n || npages.len() != n {
        return Err(invalid(format!(
            "iovaPfns, paPfns and npages must have the same length ({n}, {}, {})",
            pa_pfns.len(),
            npages.len()
        )));
    }
    const PFN_END: f64 = (1u64 << 52) as f64;
    const PA_PFN_END: f64 = (1u64 << 40) as f64;
    // An integer in [lo, end), lo >= 0, end <= 2^52: adding 2^52 rounds to an integer
    // exactly there. Branch-free and conversion-free: 2 ns a run instead of 5.
    let int_in = |v: f64, lo: f64, end: f64| (v >= lo) & (v < end) & ((v + PFN_END) - PFN_END == v);
    for i in 0..n {
        let (iova, pa, np) = (iova_pfns[i], pa_pfns[i], npages[i]);
        let (iova_ok, pa_ok) = (int_in(iova, 0.0, PFN_END), int_in(pa, 0.0, PA_PFN_END));
        // Sums of integers below 2^52 are exact.
        let np_ok = int_in(np, 1.0, PFN_END) & (iova + np <= PFN_END) & (pa + np <= PFN_END);
        if !(iova_ok & pa_ok & np_ok) {
            return Err(invalid(if !iova_ok {
                format!("iovaPfns[{i}] = {iova} is not an integer in 0..2^52")
            } else if !pa_ok {
                format!("paPfns[{i}] = {pa} is not an integer in 0..2^40")
            } else {
                format!("npages[{i}] = {np} is not an integer >= 1 keeping both runs below page 2^52")
            }));
        }
    }
    // Through i64: one instruction, exact for these values (f64 as u64 is a long sequence).
    let pfn = |v: f64| (v as i64 as u64) << 12;
    Ok(iova_pfns.iter().zip(pa_pfns).zip(npages).map(move |((&iova, &pa), &np)| (pfn(iova), pfn(pa), pfn(np))))
}

#[napi]
impl NativePageTable {
    /// SLPTPTR.
    #[napi(getter, catch_unwind)]
    pub fn pgd(&self) -> u64 {
        self.pt.pgd()
    }

    /// Paging levels.
    #[napi(getter, catch_unwind)]
    pub fn levels(&self) -> u32 {
        self.pt.config().levels
    }

    /// Context-entry AW.
    #[napi(getter, catch_unwind)]
    pub fn aw(&self) -> u32 {
        self.pt.aw() as u32
    }

    /// Maps `[iova, iova+size)` to `pa`.
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn map(&mut self, iova: BigInt, pa: BigInt, size: BigInt, read: bool, write: bool, snoop: bool, gather: &mut NativeGather) -> Result<(), Code> {
        let (iova, pa, size) = (u64_arg(&iova, "iova")?, u64_arg(&pa, "pa")?, u64_arg(&size, "size")?);
        self.pt
            .map(&mut self.mem.borrow_mut(), iova, pa, size, prot(read, write, snoop), &mut gather.inner)
            .map_err(vtd_err)
    }

    /// Maps the runs `iovaPfns[i]`, `paPfns[i]`, `npages[i]` (4 KiB page numbers and counts as
    /// numbers, not bigints) all or nothing: `vtd::PageTable::map_runs`. The three arrays have
    /// one entry per run; IOVA page numbers are integers below 2^52, PA page numbers below
    /// 2^40, counts at least 1, and neither end past 2^52 pages. Nothing is mapped if any
    /// entry is invalid.
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn map_runs(&mut self, iova_pfns: &[f64], pa_pfns: &[f64], npages: &[f64], read: bool, write: bool, snoop: bool, gather: &mut NativeGather) -> Result<(), Code> {
        let runs = pfn_runs(iova_pfns, pa_pfns, npages)?;
        self.pt
            .map_runs(&mut self.mem.borrow_mut(), runs, prot(read, write, snoop), &mut gather.inner)
            .map_err(vtd_err)
    }

    /// Trust but verify: `vtd::PageTable::verify_runs` over runs given as `mapRuns` takes them
    /// (same checks, `ERR_INVALID_ARG_VALUE` before anything is read). Returns null if every
    /// page translates to its PA with exactly R = `read`, W = `write`, else the IOVA of the
    /// first page that does not (in run order). Garbage tables are mismatches, never errors.
    #[napi(catch_unwind)]
    pub fn verify_runs(&self, iova_pfns: &[f64], pa_pfns: &[f64], npages: &[f64], read: bool, write: bool) -> Result<Option<u64>, Code> {
        let runs = pfn_runs(iova_pfns, pa_pfns, npages)?;
        self.pt.verify_runs(&self.mem.borrow(), runs, prot(read, write, false)).map_err(vtd_err)
    }

    /// `vtd::PageTable::mapped_pages`: 4 KiB pages mapped by present leaves and every table
    /// page reached, top first; `ERR_VTD_CORRUPT` for a table reached twice, beyond memory, or
    /// past `maxTables` (a non-negative integer).
    #[napi(catch_unwind)]
    pub fn mapped_pages<'e>(&self, env: &'e Env, max_tables: f64) -> Result<MappedPages<'e>, Code> {
        if !(max_tables >= 0.0 && max_tables.fract() == 0.0 && max_tables <= 9_007_199_254_740_991.0) {
            return Err(invalid(format!("maxTables = {max_tables} is not a non-negative safe integer")));
        }
        let s = self.pt.mapped_pages(&self.mem.borrow(), max_tables as usize).map_err(vtd_err)?;
        Ok(MappedPages { pages: s.pages as f64, tables: u64_array(env, &s.tables)? })
    }

    /// Unmaps `[iova, iova+size)`; returns the size unmapped.
    #[napi(catch_unwind)]
    pub fn unmap(&mut self, iova: BigInt, size: BigInt, gather: &mut NativeGather) -> Result<u64, Code> {
        let (iova, size) = (u64_arg(&iova, "iova")?, u64_arg(&size, "size")?);
        self.pt.unmap(&mut self.mem.borrow_mut(), iova, size, &mut gather.inner).map_err(vtd_err)
    }

    /// The PA `iova` maps to, or null.
    #[napi(catch_unwind)]
    pub fn iova_to_phys(&self, iova: BigInt) -> Result<Option<u64>, Code> {
        self.pt.iova_to_phys(&self.mem.borrow(), u64_arg(&iova, "iova")?).map_err(vtd_err)
    }

    /// Every entry read walking `iova`, top first.
    #[napi(catch_unwind)]
    pub fn walk(&self, iova: BigInt) -> Result<Vec<WalkStep>, Code> {
        let steps = self.pt.walk(&self.mem.borrow(), u64_arg(&iova, "iova")?).map_err(vtd_err)?;
        Ok(steps
            .into_iter()
            .map(|s| WalkStep { level: s.level, pte_pa: BigInt::from(s.pte_pa), pte: BigInt::from(s.pte) })
            .collect())
    }

    /// Every table page, top first.
    #[napi(catch_unwind)]
    pub fn table_pages<'e>(&self, env: &'e Env) -> Result<BigUint64ArraySlice<'e>, Code> {
        u64_array(env, &self.pt.table_pages(&self.mem.borrow()).map_err(vtd_err)?)
    }

    /// Hands every table page to `gather` (teardown); the table must not be used afterwards.
    #[napi(catch_unwind)]
    pub fn destroy(&mut self, gather: &mut NativeGather) -> Result<(), Code> {
        self.pt.clone().destroy(&self.mem.borrow(), &mut gather.inner).map_err(vtd_err)
    }
}

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

// ---------------------------------------------------------------------------------------------
// Flattened Device Tree (the `fdt` crate)
//
// Errors: the napi error's `code` is libfdt's name (`FDT_ERR_TRUNCATED`, ...) and its message
// starts with `<name> at offset 0x<hex>: ` when the error is about a byte of the blob, else with
// `<name>: `; ts/fdt parses that prefix into `FdtError.offset`.

fn fdt_err(e: fdt::Error) -> Error<Code> {
    let msg = match e.offset {
        Some(o) => format!("{} at offset {:#x}: {}", e.code(), o, e.detail),
        None => format!("{}: {}", e.code(), e.detail),
    };
    err(e.code(), msg)
}

fn fdt_layout_arg(layout: &str) -> Result<fdt::Layout, Code> {
    match layout {
        "libfdt" => Ok(fdt::Layout::Libfdt),
        "dtc" => Ok(fdt::Layout::Dtc),
        _ => Err(invalid(format!("layout must be 'libfdt' or 'dtc', not {layout:?}"))),
    }
}

fn fdt_validation_arg(v: &str) -> Result<fdt::Validation, Code> {
    match v {
        "structural" => Ok(fdt::Validation::Structural),
        "dtc" => Ok(fdt::Validation::Dtc),
        "strict" => Ok(fdt::Validation::Strict),
        _ => Err(invalid(format!("validate must be 'structural', 'dtc' or 'strict', not {v:?}"))),
    }
}

fn fdt_options(layout: &str, max_size: Option<f64>, no_name_dedup: bool, boot_cpuid_phys: u32) -> Result<fdt::WriterOptions, Code> {
    let max_size = match max_size {
        None => None,
        Some(m) if m >= 0.0 && m.fract() == 0.0 && m <= 9_007_199_254_740_991.0 => Some(m as usize),
        Some(_) => return Err(invalid("maxSize must be a non-negative safe integer")),
    };
    Ok(fdt::WriterOptions { layout: fdt_layout_arg(layout)?, max_size, no_name_dedup, boot_cpuid_phys })
}

/// libfdt's sequential-write API (`fdt_create` .. `fdt_finish`) over `fdt::FdtWriter`.
#[napi]
pub struct NativeFdtWriter {
    /// `None` once `finish` succeeded.
    w: Option<fdt::FdtWriter>,
}

impl NativeFdtWriter {
    fn w(&mut self) -> Result<&mut fdt::FdtWriter, Code> {
        self.w.as_mut().ok_or_else(|| err("FDT_ERR_BADSTATE", "FDT_ERR_BADSTATE: the writer has already finished"))
    }
}

#[napi]
impl NativeFdtWriter {
    /// A writer: `layout` is `"libfdt"` or `"dtc"`; `maxSize` null for no cap.
    #[napi(constructor, catch_unwind)]
    pub fn new(layout: String, max_size: Option<f64>, no_name_dedup: bool, boot_cpuid_phys: u32) -> Result<Self, Code> {
        let options = fdt_options(&layout, max_size, no_name_dedup, boot_cpuid_phys)?;
        Ok(NativeFdtWriter { w: Some(fdt::FdtWriter::new(options)) })
    }

    /// The blob size so far (0 once finished).
    #[napi(getter, catch_unwind)]
    pub fn size(&self) -> f64 {
        self.w.as_ref().map_or(0, |w| w.size()) as f64
    }

    /// `fdt_add_reservemap_entry`.
    #[napi(catch_unwind)]
    pub fn add_reservemap_entry(&mut self, address: BigInt, size: BigInt) -> Result<(), Code> {
        let entry = fdt::ReserveEntry { address: u64_arg(&address, "address")?, size: u64_arg(&size, "size")? };
        self.w()?.add_reservemap_entry(entry).map_err(fdt_err)
    }

    /// `fdt_begin_node`.
    #[napi(catch_unwind)]
    pub fn begin_node(&mut self, name: String) -> Result<(), Code> {
        self.w()?.begin_node(&name).map_err(fdt_err)
    }

    /// `fdt_end_node`.
    #[napi(catch_unwind)]
    pub fn end_node(&mut self) -> Result<(), Code> {
        self.w()?.end_node().map_err(fdt_err)
    }

    /// `fdt_property`: raw bytes.
    #[napi(catch_unwind)]
    pub fn property(&mut self, name: String, value: &[u8]) -> Result<(), Code> {
        self.w()?.property(&name, value).map_err(fdt_err)
    }

    /// An empty property.
    #[napi(catch_unwind)]
    pub fn property_empty(&mut self, name: String) -> Result<(), Code> {
        self.w()?.property_empty(&name).map_err(fdt_err)
    }

    /// A big-endian u32 cell.
    #[napi(catch_unwind)]
    pub fn property_u32(&mut self, name: String, v: u32) -> Result<(), Code> {
        self.w()?.property_u32(&name, v).map_err(fdt_err)
    }

    /// A big-endian u64.
    #[napi(catch_unwind)]
    pub fn property_u64(&mut self, name: String, v: BigInt) -> Result<(), Code> {
        let v = u64_arg(&v, "value")?;
        self.w()?.property_u64(&name, v).map_err(fdt_err)
    }

    /// Big-endian cells.
    #[napi(catch_unwind)]
    pub fn property_cells(&mut self, name: String, cells: Uint32Array) -> Result<(), Code> {
        self.w()?.property_cells(&name, &cells).map_err(fdt_err)
    }

    /// A NUL-terminated string.
    #[napi(catch_unwind)]
    pub fn property_string(&mut self, name: String, s: String) -> Result<(), Code> {
        self.w()?.property_string(&name, &s).map_err(fdt_err)
    }

    /// A string list.
    #[napi(catch_unwind)]
    pub fn property_string_list(&mut self, name: String, list: Vec<String>) -> Result<(), Code> {
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        self.w()?.property_string_list(&name, &list).map_err(fdt_err)
    }

    /// A little-endian u32 (KHO native value).
    #[napi(catch_unwind)]
    pub fn property_u32_le(&mut self, name: String, v: u32) -> Result<(), Code> {
        self.w()?.property_u32_le(&name, v).map_err(fdt_err)
    }

    /// A little-endian u64 (KHO native value).
    #[napi(catch_unwind)]
    pub fn property_u64_le(&mut self, name: String, v: BigInt) -> Result<(), Code> {
        let v = u64_arg(&v, "value")?;
        self.w()?.property_u64_le(&name, v).map_err(fdt_err)
    }

    /// `fdt_property_placeholder`: returns a handle for `fillPlaceholder`.
    #[napi(catch_unwind)]
    pub fn property_placeholder(&mut self, name: String, len: u32) -> Result<u32, Code> {
        self.w()?.property_placeholder(&name, len as usize).map(|h| h as u32).map_err(fdt_err)
    }

    /// Writes `data` at the start of a placeholder's value.
    #[napi(catch_unwind)]
    pub fn fill_placeholder(&mut self, handle: u32, data: &[u8]) -> Result<(), Code> {
        self.w()?.fill_placeholder(handle as usize, data).map_err(fdt_err)
    }

    /// `fdt_finish`: the blob. A failed finish leaves the writer usable (e.g. close the open
    /// nodes and finish again); a successful one ends it.
    #[napi(catch_unwind)]
    pub fn finish<'e>(&mut self, env: &'e Env) -> Result<Uint8ArraySlice<'e>, Code> {
        // FdtWriter::finish consumes the writer; finish a copy so an error changes nothing.
        let blob = self.w()?.clone().finish().map_err(fdt_err)?;
        let array = u8_array(env, &blob)?;
        self.w = None;
        Ok(array)
    }
}

// The op stream of `fdtEncode`, built by ts/fdt/ops.ts (all integers little-endian):
// 1 BEGIN_NODE u32 len, name (UTF-8) | 2 END_NODE | 3 PROP u32 len, name, u32 len, value |
// 4 RESERVE u64 address, u64 size.
struct Ops<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Ops<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Code> {
        let s = self.at.checked_add(n).and_then(|end| self.b.get(self.at..end)).ok_or_else(|| invalid("truncated FDT op stream"))?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<usize, Code> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()) as usize)
    }
    fn u64(&mut self) -> Result<u64, Code> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn str(&mut self) -> Result<&'a str, Code> {
        let n = self.u32()?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| invalid("FDT op stream: name is not UTF-8"))
    }
}

/// Encodes a tree flattened into an op stream (one call per tree); the bytes are exactly those
/// of `fdt::encode` with the same options.
#[napi(catch_unwind)]
pub fn fdt_encode<'e>(env: &'e Env, ops: &[u8], layout: String, max_size: Option<f64>, no_name_dedup: bool, boot_cpuid_phys: u32) -> Result<Uint8ArraySlice<'e>, Code> {
    let mut w = fdt::FdtWriter::new(fdt_options(&layout, max_size, no_name_dedup, boot_cpuid_phys)?);
    let mut ops = Ops { b: ops, at: 0 };
    while ops.at < ops.b.len() {
        let op = ops.bytes(1)?[0];
        match op {
            1 => w.begin_node(ops.str()?).map_err(fdt_err)?,
            2 => w.end_node().map_err(fdt_err)?,
            3 => {
                let name = ops.str()?;
                let n = ops.u32()?;
                w.property(name, ops.bytes(n)?).map_err(fdt_err)?
            }
            4 => {
                let entry = fdt::ReserveEntry { address: ops.u64()?, size: ops.u64()? };
                w.add_reservemap_entry(entry).map_err(fdt_err)?
            }
            _ => return Err(invalid(format!("FDT op stream: unknown op {op}"))),
        }
    }
    u8_array(env, &w.finish().map_err(fdt_err)?)
}

/// A decoded blob, flattened for ts/fdt to rebuild `FdtNode`s without one N-API call per node.
#[napi(object)]
pub struct NativeDecodedFdt<'e> {
    /// Header `version`.
    pub version: u32,
    /// Header `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// Reservation entries as address, size pairs.
    pub reserve: BigUint64ArraySlice<'e>,
    /// Pre-order: per node `name start, name end, #properties, #children`, then per property
    /// `name start, name end, value length` (names are UTF-16 ranges of `names`, values are
    /// consecutive in `data`).
    pub shape: Uint32ArraySlice<'e>,
    /// Node names, then each distinct property name once.
    pub names: String,
    /// Property values, concatenated.
    pub data: Uint8ArraySlice<'e>,
}

fn utf16_len(s: &str) -> u32 {
    if s.is_ascii() {
        s.len() as u32
    } else {
        s.encode_utf16().count() as u32
    }
}

fn flatten_fdt<'e>(env: &'e Env, f: fdt::Fdt) -> Result<NativeDecodedFdt<'e>, Code> {
    struct Acc<'a> {
        shape: Vec<u32>,
        names: String,
        names_len: u32,
        data: Vec<u8>,
        props: std::collections::HashMap<&'a str, (u32, u32)>,
    }
    impl<'a> Acc<'a> {
        fn name(&mut self, s: &str) -> (u32, u32) {
            let start = self.names_len;
            self.names.push_str(s);
            self.names_len += utf16_len(s);
            (start, self.names_len)
        }
        // The decoder bounds depth (fdt::MAX_DEPTH), so this recursion is shallow.
        fn node(&mut self, n: &'a fdt::Node) {
            let (s, e) = self.name(&n.name);
            self.shape.extend_from_slice(&[s, e, n.properties.len() as u32, n.children.len() as u32]);
            for p in &n.properties {
                let (s, e) = match self.props.get(p.name.as_str()) {
                    Some(&r) => r,
                    None => {
                        let r = self.name(&p.name);
                        self.props.insert(&p.name, r);
                        r
                    }
                };
                self.data.extend_from_slice(&p.value);
                self.shape.extend_from_slice(&[s, e, p.value.len() as u32]);
            }
            for c in &n.children {
                self.node(c);
            }
        }
    }
    let mut acc = Acc { shape: Vec::new(), names: String::new(), names_len: 0, data: Vec::new(), props: Default::default() };
    acc.node(&f.root);
    let (shape, names, data) = (acc.shape, acc.names, acc.data);
    let reserve: Vec<u64> = f.reserve.iter().flat_map(|r| [r.address, r.size]).collect();
    Ok(NativeDecodedFdt {
        version: f.version,
        boot_cpuid_phys: f.boot_cpuid_phys,
        reserve: u64_array(env, &reserve)?,
        shape: u32_array(env, &shape)?,
        names,
        data: u8_array(env, &data)?,
    })
}

/// Decodes and validates a blob (`validate`: `"structural"`, `"dtc"`, `"strict"`).
#[napi(catch_unwind)]
pub fn fdt_decode<'e>(env: &'e Env, blob: &[u8], validate: String) -> Result<NativeDecodedFdt<'e>, Code> {
    let f = fdt::decode(blob, fdt_validation_arg(&validate)?).map_err(fdt_err)?;
    flatten_fdt(env, f)
}

/// Validates a blob without building a tree.
#[napi(catch_unwind)]
pub fn fdt_check(blob: &[u8], validate: String) -> Result<(), Code> {
    fdt::check(blob, fdt_validation_arg(&validate)?).map_err(fdt_err)
}

/// Renders a blob as DTS text (`dtc -I dtb -O dts`).
#[napi(catch_unwind)]
pub fn fdt_to_dts(blob: &[u8]) -> Result<String, Code> {
    fdt::to_dts(blob).map_err(fdt_err)
}

/// The size cap of a KHO root tree (one page).
#[napi]
pub fn fdt_kho_root_max() -> u32 {
    fdt::kho::KHO_ROOT_MAX as u32
}

/// The decoder's deepest nesting (the root is depth 1).
#[napi]
pub fn fdt_max_depth() -> u32 {
    fdt::MAX_DEPTH as u32
}

/// A KHO root tree as `kho_finalize()` builds it.
#[napi(catch_unwind)]
#[allow(clippy::too_many_arguments)]
pub fn fdt_kho_root<'e>(env: &'e Env, compatible: String, memory_map_prop: String, subtree_prop: String, memory_map: BigInt, names: Vec<String>, phys: Vec<BigInt>, layout: String) -> Result<Uint8ArraySlice<'e>, Code> {
    if names.len() != phys.len() {
        return Err(invalid("one physical address per sub-tree name"));
    }
    let kho_names = fdt::kho::KhoNames { compatible, memory_map: memory_map_prop, subtree_prop };
    let phys = phys.iter().map(|p| u64_arg(p, "phys")).collect::<Result<Vec<_>, _>>()?;
    let subtrees: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(phys).collect();
    let blob = fdt::kho::kho_root(&kho_names, u64_arg(&memory_map, "memoryMap")?, &subtrees, fdt_layout_arg(&layout)?).map_err(fdt_err)?;
    u8_array(env, &blob)
}

/// A KHO sub-tree reference read back from a root.
#[napi(object)]
pub struct NativeKhoSubtree {
    /// Node name.
    pub name: String,
    /// Physical address of its blob.
    pub phys: BigInt,
}

/// What `fdtKhoRootInfo` reads from a KHO root blob.
#[napi(object)]
pub struct NativeKhoRootInfo {
    /// The preserved-memory map's physical address.
    pub memory_map: BigInt,
    /// The sub-trees, in node order.
    pub subtrees: Vec<NativeKhoSubtree>,
}

/// Decodes a KHO root blob (structural validation) and reads its addresses back.
#[napi(catch_unwind)]
pub fn fdt_kho_root_info(blob: &[u8], compatible: String, memory_map_prop: String, subtree_prop: String) -> Result<NativeKhoRootInfo, Code> {
    let f = fdt::decode(blob, fdt::Validation::Structural).map_err(fdt_err)?;
    let kho_names = fdt::kho::KhoNames { compatible, memory_map: memory_map_prop, subtree_prop };
    let (map, subtrees) = fdt::kho::kho_root_info(&f.root, &kho_names).map_err(fdt_err)?;
    Ok(NativeKhoRootInfo {
        memory_map: BigInt::from(map),
        subtrees: subtrees.into_iter().map(|(name, phys)| NativeKhoSubtree { name, phys: BigInt::from(phys) }).collect(),
    })
}
