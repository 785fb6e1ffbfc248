//! Simulated host physical memory (the `physmem` crate), shared by its units and page tables.

use std::cell::{Ref, RefCell, RefMut};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use physmem::PhysMem;

use crate::arrays::new_u8_array;
use crate::error::{mem_err, out_of_range, u64_arg, u8_arg, up_to, Code};
use crate::node_api::External;

/// A memory shared by a `NativeMemory`, its units and their page tables (one `Rc`, no cycle:
/// units and page tables point at the memory, never the other way round). Every mutable borrow
/// reports the memory's host bytes to V8 when it ends.
pub(crate) struct Mem {
    mem: RefCell<PhysMem>,
    external: External,
}

impl Mem {
    fn cost(m: &PhysMem) -> u64 {
        m.host_bytes() + m.metadata_bytes() + std::mem::size_of::<Mem>() as u64
    }

    pub(crate) fn borrow(&self) -> Ref<'_, PhysMem> {
        self.mem.borrow()
    }

    pub(crate) fn borrow_mut(&self) -> MemMut<'_> {
        MemMut { guard: Some(self.mem.borrow_mut()), external: &self.external }
    }
}

/// A mutable borrow of a [`Mem`]; on drop (after the borrow ends) V8 learns the new cost.
pub(crate) struct MemMut<'a> {
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

pub(crate) type SharedMem = Rc<Mem>;

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
    /// Host bytes of frame storage (resident frames and the residency bitmap's pages, or the
    /// radix index of a memory too large to map flat); 0 when no frame holds data.
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

/// What `preservedSummary` counts.
#[napi(object)]
pub struct PreservedSummary {
    /// Preservation marks.
    pub blocks: f64,
    /// Frames they cover.
    pub frames: f64,
}

/// A preservation mark.
#[napi(object)]
pub struct PreservedBlock {
    /// Physical address.
    pub pa: BigInt,
    /// Order: 2^order frames.
    pub order: u32,
}

/// Largest `read`, in bytes (ts `READ_MAX`): one read is one new buffer, and V8 aborts the
/// process when it cannot allocate an `ArrayBuffer`.
const READ_MAX: u32 = 1 << 30;

/// Simulated host physical memory (the `physmem` crate).
#[napi]
pub struct NativeMemory {
    pub(crate) mem: SharedMem,
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
        if n > READ_MAX {
            return Err(out_of_range("n", &up_to(READ_MAX), n));
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

    /// How many preservation marks there are and the frames they cover, without a JavaScript
    /// object per mark (KHO's finalisation counts them).
    #[napi(catch_unwind)]
    pub fn preserved_summary(&self) -> PreservedSummary {
        let marks = self.mem.borrow().preserved();
        let frames: u64 = marks.iter().map(|&(_, order)| 1u64 << order).sum();
        PreservedSummary { blocks: marks.len() as f64, frames: frames as f64 }
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
