//! Flat frame storage, as QEMU's RAM blocks: the whole memory is one sparse anonymous host
//! mapping, so frame `n` lives at `base + n * 4096` and a page-table read is one load. Only pages
//! written cost host memory; a dropped frame's page is given back (`MADV_DONTNEED`), so it reads
//! as zero and costs nothing again. Reading a page never written maps the kernel's shared zero
//! page, which costs no memory either (a memfd would allocate a page on such a read, which is why
//! the mapping is anonymous: guest RAM cannot be handed to another process by fd yet).
//!
//! A residency bitmap (one bit per frame, in a second sparse mapping) says which frames hold
//! data, since a frame without data reads as its fill, not as zero. The hot read
//! ([`FlatStore::word`]) skips it: a non-zero word can only come from a frame that holds data,
//! so only a zero word needs the bitmap. The bitmap's pages are given back when their last bit
//! clears; a count per bitmap page lets range operations skip untouched parts.
//!
//! The mappings reserve address space, not memory (`MAP_NORESERVE`). Address space is finite
//! (128 TiB per process on x86-64, shared with V8), so a memory is mapped flat only up to
//! [`FLAT_MAX`](crate::FLAT_MAX) and while every live flat memory together stays within
//! [`FLAT_BUDGET`](crate::FLAT_BUDGET); the mappings exist only while a frame holds data.
use super::Frame;
use crate::{FLAT_BUDGET, FLAT_MAX, FRAME_SHIFT};
use std::sync::atomic::{AtomicU64, Ordering};

/// Frames per bitmap page (4096 bytes of bits).
const PAGE_FRAMES: u64 = 4096 * 8;
const PAGE_SHIFT: u32 = 15;

/// Address space reserved by live flat memories (data and bitmap mappings).
static RESERVED: AtomicU64 = AtomicU64::new(0);

pub(crate) struct FlatStore {
    /// `frames * 4096` bytes.
    base: *mut u8,
    /// One bit per frame.
    bits: *mut u64,
    data_len: usize,
    bits_len: usize,
    /// Set bits per bitmap page.
    counts: Vec<u32>,
    /// Bitmap pages with a set bit (resident).
    pages: u64,
    resident: u64,
}

/// A private anonymous mapping of `len` bytes that reserves no memory.
fn map(len: usize) -> Option<*mut u8> {
    // SAFETY: a new mapping of our own; failure is checked.
    unsafe {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0);
        if p == libc::MAP_FAILED {
            return None;
        }
        // A huge page would make one written frame cost 2 MiB.
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        Some(p.cast())
    }
}

impl FlatStore {
    /// A flat store for `frames` frames, or `None` if the host will not map it (too large, over
    /// the budget, pages not 4 KiB, or mmap refused): the caller falls back to the radix.
    pub(crate) fn new(frames: u64) -> Option<Self> {
        if frames > FLAT_MAX >> FRAME_SHIFT || unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != 4096 {
            return None;
        }
        let data_len = (frames << FRAME_SHIFT) as usize;
        let pages = frames.div_ceil(PAGE_FRAMES);
        let bits_len = (pages * 4096) as usize;
        let va = (data_len + bits_len) as u64;
        if RESERVED.fetch_add(va, Ordering::Relaxed) + va > FLAT_BUDGET {
            RESERVED.fetch_sub(va, Ordering::Relaxed);
            return None;
        }
        let Some(base) = map(data_len) else {
            RESERVED.fetch_sub(va, Ordering::Relaxed);
            return None;
        };
        let Some(bits) = map(bits_len) else {
            // SAFETY: our mapping, unused.
            unsafe { libc::munmap(base.cast(), data_len) };
            RESERVED.fetch_sub(va, Ordering::Relaxed);
            return None;
        };
        Some(FlatStore { base, bits: bits.cast(), data_len, bits_len, counts: vec![0; pages as usize], pages: 0, resident: 0 })
    }

    pub(crate) fn resident(&self) -> u64 {
        self.resident
    }

    /// Host bytes held: written frames, bitmap pages with a set bit, and the page counts.
    pub(crate) fn host_bytes(&self) -> u64 {
        (self.resident + self.pages) * 4096 + self.counts.capacity() as u64 * 4
    }

    /// The frame's bytes, or `None` if it holds no data. `fn_` must be below the frame count.
    #[inline(always)]
    pub(crate) fn get(&self, fn_: u64) -> Option<&Frame> {
        debug_assert!(fn_ < self.counts.len() as u64 * PAGE_FRAMES);
        // SAFETY: `fn_` is inside both mappings (the callers check the range); the bit is read
        // first so a frame without data is never touched.
        unsafe {
            if *self.bits.add((fn_ >> 6) as usize) >> (fn_ & 63) & 1 == 0 {
                return None;
            }
            Some(&*self.base.add((fn_ << FRAME_SHIFT) as usize).cast::<Frame>())
        }
    }

    /// The little-endian word at the 8-byte aligned `pa` if it is not zero, else 0, without the
    /// bitmap: a frame without data reads as zero here (so 0 says nothing; ask [`get`]).
    /// Reading a page never written maps the zero page, which costs no memory.
    ///
    /// [`get`]: FlatStore::get
    #[inline(always)]
    pub(crate) fn word(&self, pa: u64) -> u64 {
        debug_assert!(pa >> FRAME_SHIFT < self.counts.len() as u64 * PAGE_FRAMES && pa.is_multiple_of(8));
        // SAFETY: inside the mapping (the callers check the range), aligned.
        u64::from_le(unsafe { self.base.add(pa as usize).cast::<u64>().read() })
    }

    /// The frame's bytes for writing, filled with `init()` first if it held no data.
    #[inline]
    pub(crate) fn get_mut(&mut self, fn_: u64, init: impl FnOnce() -> u8) -> &mut Frame {
        debug_assert!(fn_ < self.counts.len() as u64 * PAGE_FRAMES);
        // SAFETY: as in `get`; `&mut self` makes the frame's bytes exclusively ours. A frame
        // without data was never written or was given back, so it reads as zero.
        unsafe {
            let word = &mut *self.bits.add((fn_ >> 6) as usize);
            let frame = self.base.add((fn_ << FRAME_SHIFT) as usize);
            if *word >> (fn_ & 63) & 1 == 0 {
                *word |= 1 << (fn_ & 63);
                let count = &mut self.counts[(fn_ >> PAGE_SHIFT) as usize];
                self.pages += (*count == 0) as u64;
                *count += 1;
                self.resident += 1;
                let byte = init();
                if byte != 0 {
                    std::ptr::write_bytes(frame, byte, 1 << FRAME_SHIFT);
                }
            }
            &mut *frame.cast::<Frame>()
        }
    }

    /// Gives back the data pages of frames `[lo, hi)` (they read as zero again).
    fn punch(&self, lo: u64, hi: u64) {
        if lo < hi {
            // SAFETY: inside our private anonymous mapping; its pages read as zero afterwards.
            unsafe { libc::madvise(self.base.add((lo << FRAME_SHIFT) as usize).cast(), ((hi - lo) << FRAME_SHIFT) as usize, libc::MADV_DONTNEED) };
        }
    }

    /// Gives back bitmap pages `[lo, hi)`, whose bits are all clear.
    fn drop_bit_pages(&self, lo: u64, hi: u64) {
        if lo < hi {
            // SAFETY: inside our private anonymous mapping; its pages read as zero afterwards.
            unsafe { libc::madvise(self.bits.cast::<u8>().add(lo as usize * 4096).cast(), ((hi - lo) * 4096) as usize, libc::MADV_DONTNEED) };
        }
    }

    /// Clears the bits `mask` of word `wi` on bitmap page `page`; returns the bits that were set.
    fn clear(&mut self, wi: u64, mask: u64) -> u64 {
        // SAFETY: `wi` is inside the bitmap, on a page with set bits (so it is resident).
        let word = unsafe { &mut *self.bits.add(wi as usize) };
        let hit = *word & mask;
        *word &= !mask;
        let n = hit.count_ones();
        if n > 0 {
            let count = &mut self.counts[(wi >> (PAGE_SHIFT - 6)) as usize];
            *count -= n;
            self.pages -= (*count == 0) as u64;
            self.resident -= n as u64;
        }
        hit
    }

    /// Drops the resident frames of `[start, start+n)` with one punch over the span they cover.
    /// Returns how many frames were dropped.
    pub(crate) fn remove_range(&mut self, start: u64, n: u64) -> u64 {
        let end = start.saturating_add(n).min(self.counts.len() as u64 * PAGE_FRAMES);
        let before = self.resident;
        let (mut lo, mut hi) = (u64::MAX, 0);
        let mut emptied = Runs::default();
        let mut f = start;
        while f < end {
            let page = f >> PAGE_SHIFT;
            let page_end = ((page + 1) << PAGE_SHIFT).min(end);
            if self.counts[page as usize] == 0 {
                f = page_end;
                continue;
            }
            while f < page_end {
                let wi = f >> 6;
                let (a, b) = (f & 63, (page_end - (wi << 6)).min(64));
                let hit = self.clear(wi, (u64::MAX >> (64 - (b - a))) << a);
                if hit != 0 {
                    lo = lo.min((wi << 6) + hit.trailing_zeros() as u64);
                    hi = hi.max((wi << 6) + 64 - hit.leading_zeros() as u64);
                }
                f = (wi << 6) + b;
            }
            if self.counts[page as usize] == 0 {
                emptied.add(page, |l, h| self.drop_bit_pages(l, h));
            }
        }
        emptied.flush(|l, h| self.drop_bit_pages(l, h));
        self.punch(lo, hi);
        before - self.resident
    }

    /// Drops every resident frame for which `keep(fn)` is false (called in ascending frame
    /// order), one punch per span between kept frames. Returns how many frames were dropped.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> u64 {
        let before = self.resident;
        let mut punch = Runs::default();
        let mut emptied = Runs::default();
        for page in 0..self.counts.len() as u64 {
            if self.counts[page as usize] == 0 {
                continue;
            }
            for wi in page << (PAGE_SHIFT - 6)..(page + 1) << (PAGE_SHIFT - 6) {
                // SAFETY: inside the bitmap, on a resident page.
                let mut w = unsafe { *self.bits.add(wi as usize) };
                while w != 0 {
                    let f = (wi << 6) + w.trailing_zeros() as u64;
                    w &= w - 1;
                    if keep(f) {
                        punch.flush(|l, h| self.punch(l, h));
                    } else {
                        self.clear(wi, 1 << (f & 63));
                        punch.extend(f);
                    }
                }
            }
            if self.counts[page as usize] == 0 {
                emptied.add(page, |l, h| self.drop_bit_pages(l, h));
            }
        }
        punch.flush(|l, h| self.punch(l, h));
        emptied.flush(|l, h| self.drop_bit_pages(l, h));
        before - self.resident
    }
}

/// A pending `[lo, hi)` run of pages or frames, handed to `done` when it can grow no more.
#[derive(Default)]
struct Runs(Option<(u64, u64)>);

impl Runs {
    /// Adds `x`, flushing the run first unless `x` continues it.
    fn add(&mut self, x: u64, done: impl FnOnce(u64, u64)) {
        match self.0 {
            Some((lo, hi)) if hi == x => self.0 = Some((lo, x + 1)),
            _ => {
                self.flush(done);
                self.0 = Some((x, x + 1));
            }
        }
    }

    /// Extends the run to end after `x` (what lies between holds no data).
    fn extend(&mut self, x: u64) {
        self.0 = Some((self.0.map_or(x, |(lo, _)| lo), x + 1));
    }

    fn flush(&mut self, done: impl FnOnce(u64, u64)) {
        if let Some((lo, hi)) = self.0.take() {
            done(lo, hi);
        }
    }
}

impl Drop for FlatStore {
    fn drop(&mut self) {
        // SAFETY: our mappings; nothing borrows them past `self`.
        unsafe {
            libc::munmap(self.base.cast(), self.data_len);
            libc::munmap(self.bits.cast(), self.bits_len);
        }
        RESERVED.fetch_sub((self.data_len + self.bits_len) as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
