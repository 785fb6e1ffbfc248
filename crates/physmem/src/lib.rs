//! Simulated host physical memory for the iommu-liveupdate simulator.
//!
//! A host may be configured with up to 2^52 bytes, but nothing is allocated for memory that is
//! never touched: frames are materialised on first write, the allocator keeps free *extents*, and
//! every whole-memory operation ([`PhysMem::scrub`], [`PhysMem::free`]) walks only the frames that
//! exist. A frame that holds no data reads as its *fill* byte: zero at cold boot, whatever
//! [`PhysMem::fill_range`] set (zeroing allocations included), and [`POISON`] once freed or
//! scrubbed by a kexec; fills are kept as extents too, so filling untouched memory costs nothing.
//! The reverse holds as well: a frame that is freed, scrubbed or filled whole gives its storage
//! back (its contents are its fill again), so [`Stats::host_bytes`] returns to 0 once no frame
//! holds data.
//!
//! Frames live flat, as QEMU's RAM blocks: one sparse anonymous mapping of the whole memory, so a
//! physical address plus a base is a host pointer and a page-table read is one load; dropped
//! frames are punched out of it. A memory is mapped flat up to [`FLAT_MAX`] (16 TiB), while the
//! flat memories of the process together reserve at most [`FLAT_BUDGET`] (64 TiB) of address
//! space (x86-64 gives a process 128 TiB);
//! beyond either limit, or if the host refuses the mapping, frames live in a radix index instead
//! (same behaviour, a slower lookup). [`PhysMem::is_flat`] says which.
//!
//! ```
//! use physmem::{PhysMem, Config};
//! let mut mem = PhysMem::new(Config { size: 1 << 40, seed: 1 }).unwrap();
//! let pa = mem.alloc(0, true).unwrap();
//! mem.write_u64(pa + 8, 0xdead_beef).unwrap();
//! assert_eq!(mem.read_u64(pa + 8).unwrap(), 0xdead_beef);
//! mem.preserve(pa, 0).unwrap();
//! let report = mem.scrub();
//! assert_eq!(report.preserved_frames, 1);
//! assert_eq!(mem.read_u64(pa + 8).unwrap(), 0xdead_beef);
//! ```
#![deny(missing_docs)]

mod alloc;
mod dma;
mod error;
mod preserve;
mod store;

pub use dma::{DmaRead, FlatReader};
pub use error::{Error, Result};

use alloc::{Extents, FillMap};
use std::collections::BTreeMap;
use store::FrameStore;

/// log2 of the frame size.
pub const FRAME_SHIFT: u32 = 12;
/// Frame size in bytes (4 KiB).
pub const FRAME_SIZE: u64 = 1 << FRAME_SHIFT;
/// The largest configurable memory size: 2^52 bytes, the VT-d output-address limit.
pub const MAX_SIZE: u64 = 1 << 52;
/// The largest memory whose frames live in one flat host mapping: 16 TiB (see the crate
/// documentation; larger memories work, with a slower frame lookup).
pub const FLAT_MAX: u64 = 1 << 44;
/// Address space the flat memories of one process may reserve at once: 64 TiB, half of what
/// x86-64 gives a process, so V8 and the rest of the process keep the other half.
pub const FLAT_BUDGET: u64 = 1 << 46;
/// The largest allocation order (2^18 frames = 1 GiB).
pub const MAX_ORDER: u8 = 18;
/// The byte every scrubbed or freed frame reads as. Linux's `POISON_FREE`; as a VT-d PTE the
/// word 0x6b6b6b6b6b6b6b6b has reserved bits set, so a walk into scrubbed memory faults.
pub const POISON: u8 = 0x6b;
/// Physical ranges the allocator never hands out: low memory (as memblock reserves it) and the
/// interrupt-message window 0xFEE0_0000..0xFEF0_0000, where DMA is an interrupt, not a write.
pub const RESERVED_RANGES: [(u64, u64); 2] = [(0, 0x10_0000), (0xFEE0_0000, 0xFEF0_0000)];

/// Configuration of a simulated memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Size in bytes; a non-zero multiple of 4 KiB, at most [`MAX_SIZE`].
    pub size: u64,
    /// Seed of the frame allocator; the same seed and calls give the same frames.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { size: 1 << 30, seed: 0 }
    }
}

/// Usage statistics, all in frames unless named otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Configured size in bytes.
    pub size: u64,
    /// Frames in the configured size.
    pub frames_total: u64,
    /// Frames the allocator can hand out.
    pub frames_free: u64,
    /// Frames allocated (or claimed) and not yet freed.
    pub frames_allocated: u64,
    /// Frames in [`RESERVED_RANGES`] below the configured size.
    pub frames_reserved: u64,
    /// Frames that hold data (materialised by a write).
    pub frames_resident: u64,
    /// Frames covered by preservation marks.
    pub frames_preserved: u64,
    /// Host bytes of frame storage: resident frames and what finds them (the residency bitmap's
    /// touched pages, or the radix index and its lookup cache). Exactly 0 when no frame holds
    /// data (a new memory, or once every written frame was freed, scrubbed or filled whole).
    pub host_bytes: u64,
    /// Host bytes (estimated) of the bookkeeping that follows fragmentation, not data: free and
    /// reserved extents, fill extents and preservation marks. Small and bounded by the number of
    /// distinct ranges, not by the memory size.
    pub metadata_bytes: u64,
    /// Successful allocation calls since creation.
    pub allocations: u64,
    /// Successful free calls since creation.
    pub frees: u64,
}

/// What a [`PhysMem::scrub`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrubReport {
    /// Frames kept because a preservation mark covers them.
    pub preserved_frames: u64,
    /// Resident frames that were not preserved and now read as poison.
    pub poisoned_frames: u64,
    /// Free frames after the scrub.
    pub free_frames: u64,
}

/// Simulated physical memory: sparse frame storage, a seeded extent allocator and preservation
/// marks for the hand-over to the next kernel.
pub struct PhysMem {
    size: u64,
    frames: u64,
    store: FrameStore,
    free: Extents,
    reserved: Extents,
    // What frames without data read as.
    fills: FillMap,
    preserved: BTreeMap<u64, u8>,
    rng: u64,
    allocations: u64,
    frees: u64,
}

impl std::fmt::Debug for PhysMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysMem").field("size", &self.size).field("stats", &self.stats()).finish()
    }
}

impl PhysMem {
    /// Creates a memory of `config.size` bytes, all free but the reserved ranges, reading as zero.
    pub fn new(config: Config) -> Result<Self> {
        let size = config.size;
        if size == 0 || !size.is_multiple_of(FRAME_SIZE) {
            return Err(Error::BadSize { size });
        }
        if size > MAX_SIZE {
            return Err(Error::BadSize { size });
        }
        let frames = size >> FRAME_SHIFT;
        let mut reserved = Extents::default();
        for (start, end) in RESERVED_RANGES {
            let (s, e) = (start >> FRAME_SHIFT, (end >> FRAME_SHIFT).min(frames));
            if s < e {
                reserved.insert(s, e - s);
            }
        }
        let mut mem = PhysMem {
            size,
            frames,
            store: FrameStore::new(frames),
            free: Extents::default(),
            fills: FillMap::default(),
            reserved,
            preserved: BTreeMap::new(),
            rng: config.seed,
            allocations: 0,
            frees: 0,
        };
        mem.free = mem.all_but_reserved();
        mem.fills.set(0, frames, 0);
        Ok(mem)
    }

    fn all_but_reserved(&self) -> Extents {
        let mut free = Extents::default();
        free.insert(0, self.frames);
        for (s, l) in self.reserved.iter() {
            free.remove(s, l);
        }
        free
    }

    /// Configured size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check_range(&self, pa: u64, len: u64) -> Result<()> {
        match pa.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfRange { pa, len, size: self.size }),
        }
    }

    fn frame_mut(&mut self, fn_: u64) -> &mut store::Frame {
        // Only a frame being materialised needs its fill byte (a B-tree lookup).
        let fills = &self.fills;
        self.store.get_mut(fn_, || fills.get(fn_))
    }

    /// Reads `buf.len()` bytes at `pa`.
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(pa, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = pa + done as u64;
            let off = (at % FRAME_SIZE) as usize;
            let n = (FRAME_SIZE as usize - off).min(buf.len() - done);
            match self.store.get(at >> FRAME_SHIFT) {
                Some(frame) => buf[done..done + n].copy_from_slice(&frame[off..off + n]),
                None => buf[done..done + n].fill(self.fills.get(at >> FRAME_SHIFT)),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `pa`, materialising the frames it touches.
    pub fn write(&mut self, pa: u64, data: &[u8]) -> Result<()> {
        self.check_range(pa, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let at = pa + done as u64;
            let off = (at % FRAME_SIZE) as usize;
            let n = (FRAME_SIZE as usize - off).min(data.len() - done);
            self.frame_mut(at >> FRAME_SHIFT)[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Fills `len` bytes at `pa` with `byte`. Whole frames without data are not materialised:
    /// the fill is recorded as an extent, so zeroing or filling untouched memory costs nothing.
    pub fn fill_range(&mut self, pa: u64, len: u64, byte: u8) -> Result<()> {
        self.check_range(pa, len)?;
        let end = pa + len;
        let first = pa.next_multiple_of(FRAME_SIZE).min(end);
        let last = (end / FRAME_SIZE * FRAME_SIZE).max(first);
        for (s, e) in [(pa, first), (last, end)] {
            if s < e {
                let off = (s % FRAME_SIZE) as usize;
                let n = (e - s) as usize;
                self.frame_mut(s >> FRAME_SHIFT)[off..off + n].fill(byte);
            }
        }
        let (start, n) = (first >> FRAME_SHIFT, (last - first) >> FRAME_SHIFT);
        if n > 0 {
            // Whole frames read as the fill: their data (if any) is no longer needed.
            self.store.remove_range(start, n);
            self.fills.set(start, n, byte);
        }
        Ok(())
    }

    /// Reads the little-endian 64-bit word at the 8-byte aligned address `pa`.
    pub fn read_u64(&self, pa: u64) -> Result<u64> {
        if !pa.is_multiple_of(8) {
            return Err(Error::Unaligned { pa, align: 8 });
        }
        self.check_range(pa, 8)?;
        Ok(self.load_u64(pa))
    }

    /// Reads `out.len()` consecutive little-endian 64-bit words at the 8-byte aligned address
    /// `pa` (a whole page table in one call: one frame lookup per 4 KiB, not per word).
    pub fn read_u64s(&self, pa: u64, out: &mut [u64]) -> Result<()> {
        if !pa.is_multiple_of(8) {
            return Err(Error::Unaligned { pa, align: 8 });
        }
        let len = (out.len() as u64).checked_mul(8).ok_or(Error::OutOfRange { pa, len: u64::MAX, size: self.size })?;
        self.check_range(pa, len)?;
        let mut done = 0usize;
        while done < out.len() {
            let at = pa + 8 * done as u64;
            let off = (at % FRAME_SIZE) as usize;
            let n = ((FRAME_SIZE as usize - off) / 8).min(out.len() - done);
            let dst = &mut out[done..done + n];
            match self.store.get(at >> FRAME_SHIFT) {
                Some(frame) => {
                    for (w, b) in dst.iter_mut().zip(frame[off..off + 8 * n].chunks_exact(8)) {
                        *w = u64::from_le_bytes(b.try_into().unwrap());
                    }
                }
                None => dst.fill(u64::from_ne_bytes([self.fills.get(at >> FRAME_SHIFT); 8])),
            }
            done += n;
        }
        Ok(())
    }

    /// Writes the little-endian 64-bit word at the 8-byte aligned address `pa`.
    pub fn write_u64(&mut self, pa: u64, value: u64) -> Result<()> {
        if !pa.is_multiple_of(8) {
            return Err(Error::Unaligned { pa, align: 8 });
        }
        self.check_range(pa, 8)?;
        self.store_u64(pa, value);
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn load_u64_cold(&self, pa: u64) -> u64 {
        self.load_u64(pa)
    }

    #[inline]
    fn load_u64(&self, pa: u64) -> u64 {
        match self.store.get(pa >> FRAME_SHIFT) {
            Some(frame) => {
                let off = (pa % FRAME_SIZE) as usize;
                u64::from_le_bytes(frame[off..off + 8].try_into().unwrap())
            }
            None => u64::from_ne_bytes([self.fills.get(pa >> FRAME_SHIFT); 8]),
        }
    }

    #[inline]
    fn store_u64(&mut self, pa: u64, value: u64) {
        let off = (pa % FRAME_SIZE) as usize;
        self.frame_mut(pa >> FRAME_SHIFT)[off..off + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: tiny, seedable and good enough to scatter frames like a real allocator.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Allocates 2^`order` contiguous frames, naturally aligned, at a seeded pseudo-random place.
    /// With `zero`, the block reads as zero (without materialising untouched frames); otherwise
    /// it holds whatever was there before.
    pub fn alloc(&mut self, order: u8, zero: bool) -> Result<u64> {
        if order > MAX_ORDER {
            return Err(Error::BadOrder { order });
        }
        let n = 1u64 << order;
        let hint = self.next_random() % self.frames;
        let start = self.free.find_aligned(hint, n).ok_or(Error::OutOfMemory { order })?;
        self.free.remove(start, n);
        self.allocations += 1;
        let pa = start << FRAME_SHIFT;
        if zero {
            self.fill_range(pa, n << FRAME_SHIFT, 0)?;
        }
        Ok(pa)
    }

    /// Allocates the given range of whole frames (a carve-out, or memory the next kernel claims).
    /// Fails with [`Error::NotFree`] if any frame of it is allocated or reserved.
    pub fn claim(&mut self, pa: u64, len: u64) -> Result<()> {
        let (start, n) = self.frame_range(pa, len)?;
        if !self.free.contains(start, n) {
            return Err(Error::NotFree { pa, len });
        }
        self.free.remove(start, n);
        self.allocations += 1;
        Ok(())
    }

    fn frame_range(&self, pa: u64, len: u64) -> Result<(u64, u64)> {
        if !pa.is_multiple_of(FRAME_SIZE) || !len.is_multiple_of(FRAME_SIZE) || len == 0 {
            return Err(Error::Unaligned { pa, align: FRAME_SIZE });
        }
        self.check_range(pa, len)?;
        Ok((pa >> FRAME_SHIFT, len >> FRAME_SHIFT))
    }

    /// Frees an allocated range of whole frames. They read as [`POISON`] from now on, so a use
    /// after free is visible (as with `init_on_free`): poison is what a frame without data reads
    /// as, so the frames' storage is released. Fails without changing anything if part of the
    /// range is free, reserved or preserved.
    pub fn free(&mut self, pa: u64, len: u64) -> Result<()> {
        let (start, n) = self.frame_range(pa, len)?;
        if self.free.overlaps(start, n) || self.reserved.overlaps(start, n) {
            return Err(Error::NotAllocated { pa, len });
        }
        if self.preserved_overlap(start, n) {
            return Err(Error::Preserved { pa, len });
        }
        self.store.remove_range(start, n);
        self.fills.set(start, n, POISON);
        self.free.insert(start, n);
        self.frees += 1;
        Ok(())
    }

    /// Frees a block of 2^`order` frames at `pa`.
    pub fn free_order(&mut self, pa: u64, order: u8) -> Result<()> {
        if order > MAX_ORDER {
            return Err(Error::BadOrder { order });
        }
        self.free(pa, FRAME_SIZE << order)
    }

    /// Whether every frame of `[pa, pa+len)` is allocated (not free and not reserved).
    pub fn is_allocated(&self, pa: u64, len: u64) -> bool {
        match self.frame_range(pa, len) {
            Ok((s, n)) => !self.free.overlaps(s, n) && !self.reserved.overlaps(s, n),
            Err(_) => false,
        }
    }

    /// Whether every range `[pa, pa+len)` for `pa` in `pas` is allocated, as
    /// [`is_allocated`](Self::is_allocated) for each (true for an empty list).
    pub fn is_allocated_many(&self, pas: &[u64], len: u64) -> bool {
        if pas.len() < 64 {
            return pas.iter().all(|&pa| self.is_allocated(pa, len));
        }
        // Many: sorted, then merged against the free and reserved extents in one pass each
        // (a tree query per range costs more than the merge).
        let mut ranges = Vec::with_capacity(pas.len());
        for &pa in pas {
            match self.frame_range(pa, len) {
                Ok(r) => ranges.push(r),
                Err(_) => return false,
            }
        }
        ranges.sort_unstable();
        !self.free.overlaps_any_sorted(&ranges) && !self.reserved.overlaps_any_sorted(&ranges)
    }

    /// Re-seeds the frame allocator (a new kernel's allocator starts from its own state).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = seed;
    }

    /// [`Stats::host_bytes`] in O(1): the host memory the frames' storage holds right now.
    pub fn host_bytes(&self) -> u64 {
        self.store.host_bytes()
    }

    /// Whether the frames live in a flat host mapping now (see the crate documentation); false
    /// while no frame holds data.
    pub fn is_flat(&self) -> bool {
        self.store.is_flat()
    }

    /// [`Stats::metadata_bytes`] in O(1).
    pub fn metadata_bytes(&self) -> u64 {
        // A B-tree entry of the marks is a u64 and a u8 plus node overhead, as the extents'.
        self.free.host_bytes() + self.reserved.host_bytes() + self.fills.host_bytes() + self.preserved.len() as u64 * 40
    }

    /// Usage statistics.
    pub fn stats(&self) -> Stats {
        let frames_free = self.free.total();
        let frames_reserved = self.reserved.total();
        Stats {
            size: self.size,
            frames_total: self.frames,
            frames_free,
            frames_allocated: self.frames - frames_free - frames_reserved,
            frames_reserved,
            frames_resident: self.store.resident(),
            frames_preserved: self.preserved.values().map(|&o| 1u64 << o).sum(),
            host_bytes: self.store.host_bytes(),
            metadata_bytes: self.metadata_bytes(),
            allocations: self.allocations,
            frees: self.frees,
        }
    }
}

#[cfg(test)]
mod tests;
