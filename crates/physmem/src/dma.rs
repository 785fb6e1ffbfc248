//! The hardware's view of memory: what DMA and page-table walks read ([`DmaRead`]), a flat
//! memory's reader for a burst of walks ([`FlatReader`]), and whole table pages read in place.
use crate::{PhysMem, FRAME_SHIFT, FRAME_SIZE};

/// A source of the hardware's 64-bit reads ([`PhysMem::dma_read_u64`]): the memory itself, or
/// its [`FlatReader`] for a burst of reads (a batch of page walks) on a flat memory.
pub trait DmaRead {
    /// `None` when `pa` lies beyond memory (a DMA read error), the word otherwise. `pa` must
    /// be 8-byte aligned (the memory itself ignores low bits).
    fn dma_read_u64(&self, pa: u64) -> Option<u64>;

    /// [`dma_read_u64`](Self::dma_read_u64), except that a frame without data may read as 0
    /// instead of its fill: a caller that finds 0 (or any word it would refuse) asks again with
    /// `dma_read_u64`. A walk's permission test then also stands for the residency test.
    #[inline(always)]
    fn dma_peek_u64(&self, pa: u64) -> Option<u64> {
        self.dma_read_u64(pa)
    }
}

impl DmaRead for PhysMem {
    #[inline(always)]
    fn dma_read_u64(&self, pa: u64) -> Option<u64> {
        PhysMem::dma_read_u64(self, pa)
    }
}

/// What [`PhysMem::flat_reader`] returns: `dma_read_u64` as a compare and one load, with the
/// memory's size and flat base in registers.
#[derive(Clone, Copy)]
pub struct FlatReader<'a> {
    mem: &'a PhysMem,
    base: *const u8,
    size: u64,
}

impl DmaRead for FlatReader<'_> {
    #[inline(always)]
    fn dma_read_u64(&self, pa: u64) -> Option<u64> {
        if pa >= self.size {
            return None;
        }
        // The walk's addresses are aligned (a table plus 8 × an index): no mask on its chain.
        debug_assert!(pa.is_multiple_of(8));
        // SAFETY: a flat base maps all `size` bytes while the memory is borrowed; aligned.
        // A non-zero word can only come from a frame that holds data: no residency check.
        let word = u64::from_le(unsafe { self.base.add(pa as usize).cast::<u64>().read() });
        if word != 0 {
            return Some(word);
        }
        Some(self.mem.load_u64_cold(pa))
    }

    #[inline(always)]
    fn dma_peek_u64(&self, pa: u64) -> Option<u64> {
        if pa >= self.size {
            return None;
        }
        debug_assert!(pa.is_multiple_of(8));
        // SAFETY: as in `dma_read_u64`.
        Some(u64::from_le(unsafe { self.base.add(pa as usize).cast::<u64>().read() }))
    }
}

impl PhysMem {
    /// The hardware's view of a 64-bit read: `None` when `pa` lies beyond memory (a DMA read
    /// error), the word otherwise. `pa` must be 8-byte aligned; low bits are ignored. On a flat
    /// memory a word never written may map the host's zero page (no memory), unlike
    /// [`read_u64`](Self::read_u64), which reads only frames that hold data.
    #[inline(always)]
    pub fn dma_read_u64(&self, pa: u64) -> Option<u64> {
        match self.flat_reader() {
            Some(r) => r.dma_read_u64(pa & !7),
            None if pa < self.size => Some(self.load_u64_cold(pa & !7)),
            None => None,
        }
    }

    /// A reader for a burst of [`dma_read_u64`](Self::dma_read_u64)s on a flat memory (`None`
    /// when the memory is not flat): the size and flat base are read once, not per read.
    #[inline(always)]
    pub fn flat_reader(&self) -> Option<FlatReader<'_>> {
        let base = self.store.flat_base();
        (!base.is_null()).then_some(FlatReader { mem: self, base, size: self.size })
    }

    /// Starts loading the 4 KiB page at `pa` into the CPU's caches (a walk about to read it
    /// whole); nothing observable happens, and nothing at all unless the memory is flat.
    pub fn prefetch_page(&self, pa: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(r) = self.flat_reader() {
            if pa.is_multiple_of(FRAME_SIZE) && pa < self.size {
                for line in (0..FRAME_SIZE).step_by(64) {
                    // SAFETY: inside the mapping; a prefetch reads nothing and cannot fault.
                    unsafe {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                        _mm_prefetch::<_MM_HINT_T0>(r.base.add((pa + line) as usize).cast());
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = pa;
    }

    /// The 512 little-endian words of the 4 KiB page at `pa`, in place, when the page holds
    /// data and the host can lend them as words (little-endian, 8-byte aligned); else `None`:
    /// [`read_u64s`](Self::read_u64s) reads it (and says why it cannot). A table walk that reads
    /// whole pages then copies nothing.
    pub fn page_u64s(&self, pa: u64) -> Option<&[u64; 512]> {
        if !pa.is_multiple_of(FRAME_SIZE) || pa >= self.size || cfg!(target_endian = "big") {
            return None;
        }
        let frame = self.store.get(pa >> FRAME_SHIFT)?;
        let p = frame.as_ptr();
        // SAFETY: 4096 bytes of the frame, aligned for u64 (checked), borrowed from `self`; any
        // bytes are valid u64s.
        p.align_offset(8).eq(&0).then(|| unsafe { &*p.cast::<[u64; 512]>() })
    }
}
