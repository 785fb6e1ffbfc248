//! Flat frame storage, as QEMU's RAM blocks: the whole memory is one sparse anonymous host
//! mapping, so frame `n` lives at `base + n * 4096` and a page-table read is one load. Only pages
//! written cost host memory; a dropped frame's page is given back (`MADV_DONTNEED`), so it reads
//! as zero and costs nothing again. Reading a page never written maps the kernel's shared zero
//! page, which costs no memory either (a memfd would allocate a page on such a read, which is why
//! the mapping is anonymous: guest RAM cannot be handed to another process by fd yet).
//!
//! A residency bitmap (one bit per frame, in 4 KiB leaves made on demand) says which frames hold
//! data, since a frame without data reads as its fill, not as zero. The hot read
//! ([`FlatStore::word`]) skips it: a non-zero word can only come from a frame that holds data,
//! so only a zero word needs the bitmap. A leaf goes when its last bit clears; leaves are heap
//! blocks, not pages of a mapping, so a new memory reuses freed ones without page faults.
//!
//! The mapping reserves address space, not memory (`MAP_NORESERVE`). Address space is finite
//! (128 TiB per process on x86-64, shared with V8), so a memory is mapped flat only up to
//! [`FLAT_MAX`](crate::FLAT_MAX) and while every live flat memory together stays within
//! [`FLAT_BUDGET`](crate::FLAT_BUDGET); the mapping exists only while a frame holds data.
use super::Frame;
use crate::{FLAT_BUDGET, FLAT_MAX, FRAME_SHIFT};
use std::sync::atomic::{AtomicU64, Ordering};

/// Frames per bitmap leaf (4096 bytes of bits).
const PAGE_FRAMES: u64 = 4096 * 8;
const PAGE_SHIFT: u32 = 15;

/// Address space reserved by live flat memories (their data mappings).
static RESERVED: AtomicU64 = AtomicU64::new(0);

pub(crate) struct FlatStore {
    /// `frames * 4096` bytes.
    base: *mut u8,
    data_len: usize,
    /// One bit per frame, in leaves of `PAGE_FRAMES` frames; `None` while no bit is set.
    leaves: Vec<Option<Box<Leaf>>>,
    /// Set bits per leaf.
    counts: Vec<u32>,
    /// Leaves that exist.
    pages: u64,
    resident: u64,
}

const WORDS: usize = (PAGE_FRAMES / 64) as usize;

/// One bit per frame, and one bit per word of them that is not zero: a scan of the frames
/// with data reads the summary, not the whole leaf.
struct Leaf {
    bits: [u64; WORDS],
    nonzero: [u64; WORDS / 64],
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
        let va = data_len as u64;
        if RESERVED.fetch_add(va, Ordering::Relaxed) + va > FLAT_BUDGET {
            RESERVED.fetch_sub(va, Ordering::Relaxed);
            return None;
        }
        let Some(base) = map(data_len) else {
            RESERVED.fetch_sub(va, Ordering::Relaxed);
            return None;
        };
        let leaves = (0..pages).map(|_| None).collect();
        Some(FlatStore { base, data_len, leaves, counts: vec![0; pages as usize], pages: 0, resident: 0 })
    }

    pub(crate) fn resident(&self) -> u64 {
        self.resident
    }

    /// Host bytes held: written frames, bitmap leaves, and the leaf table and counts.
    pub(crate) fn host_bytes(&self) -> u64 {
        (self.resident + self.pages) * 4096 + self.counts.capacity() as u64 * (4 + 8)
    }

    /// The bitmap word of frame `fn_`, 0 where no leaf exists.
    #[inline(always)]
    fn bits(&self, fn_: u64) -> u64 {
        match &self.leaves[(fn_ >> PAGE_SHIFT) as usize] {
            Some(leaf) => leaf.bits[(fn_ >> 6) as usize % WORDS],
            None => 0,
        }
    }

    /// The frame's bytes, or `None` if it holds no data. `fn_` must be below the frame count.
    #[inline(always)]
    pub(crate) fn get(&self, fn_: u64) -> Option<&Frame> {
        debug_assert!(fn_ < self.counts.len() as u64 * PAGE_FRAMES);
        if self.bits(fn_) >> (fn_ & 63) & 1 == 0 {
            return None;
        }
        // SAFETY: `fn_` is inside the mapping (the callers check the range).
        Some(unsafe { &*self.base.add((fn_ << FRAME_SHIFT) as usize).cast::<Frame>() })
    }

    /// The mapping's base. A word read there that is not zero comes from a frame that holds
    /// data; a frame without data reads as zero (so 0 says nothing; ask [`get`]). Reading a
    /// page never written maps the zero page, which costs no memory.
    ///
    /// [`get`]: FlatStore::get
    #[inline(always)]
    pub(crate) fn base(&self) -> *const u8 {
        self.base
    }

    /// The frame's bytes for writing, filled with `init()` first if it held no data.
    #[inline]
    pub(crate) fn get_mut(&mut self, fn_: u64, init: impl FnOnce() -> u8) -> &mut Frame {
        debug_assert!(fn_ < self.counts.len() as u64 * PAGE_FRAMES);
        // SAFETY: as in `get`; `&mut self` makes the frame's bytes exclusively ours. A frame
        // without data was never written or was given back, so it reads as zero.
        unsafe {
            let frame = self.base.add((fn_ << FRAME_SHIFT) as usize);
            let page = (fn_ >> PAGE_SHIFT) as usize;
            let leaf = self.leaves[page].get_or_insert_with(|| {
                self.pages += 1;
                // All-zero bits: an empty leaf.
                Box::new_zeroed().assume_init()
            });
            let i = (fn_ >> 6) as usize % WORDS;
            let word = &mut leaf.bits[i];
            if *word >> (fn_ & 63) & 1 == 0 {
                *word |= 1 << (fn_ & 63);
                leaf.nonzero[i / 64] |= 1 << (i % 64);
                self.counts[page] += 1;
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

    /// Clears the bits `mask` of word `wi`, whose leaf exists; returns the bits that were set.
    /// The leaf goes with its last bit.
    fn clear(&mut self, wi: u64, mask: u64) -> u64 {
        let page = (wi >> (PAGE_SHIFT - 6)) as usize;
        let leaf = self.leaves[page].as_deref_mut().expect("a leaf with set bits");
        let i = wi as usize % WORDS;
        let word = &mut leaf.bits[i];
        let hit = *word & mask;
        *word &= !mask;
        if *word == 0 {
            leaf.nonzero[i / 64] &= !(1 << (i % 64));
        }
        let n = hit.count_ones();
        if n > 0 {
            self.counts[page] -= n;
            self.resident -= n as u64;
            if self.counts[page] == 0 {
                self.leaves[page] = None;
                self.pages -= 1;
            }
        }
        hit
    }

    /// Drops the resident frames of `[start, start+n)` with one punch over the span they cover.
    /// Returns how many frames were dropped.
    pub(crate) fn remove_range(&mut self, start: u64, n: u64) -> u64 {
        let end = start.saturating_add(n).min(self.counts.len() as u64 * PAGE_FRAMES);
        let before = self.resident;
        let (mut lo, mut hi) = (u64::MAX, 0);
        let mut f = start;
        while f < end {
            let page = f >> PAGE_SHIFT;
            let page_end = ((page + 1) << PAGE_SHIFT).min(end);
            if self.counts[page as usize] == 0 {
                f = page_end;
                continue;
            }
            while f < page_end && self.counts[page as usize] > 0 {
                let wi = f >> 6;
                let (a, b) = (f & 63, (page_end - (wi << 6)).min(64));
                let hit = self.clear(wi, (u64::MAX >> (64 - (b - a))) << a);
                if hit != 0 {
                    lo = lo.min((wi << 6) + hit.trailing_zeros() as u64);
                    hi = hi.max((wi << 6) + 64 - hit.leading_zeros() as u64);
                }
                f = (wi << 6) + b;
            }
            f = page_end;
        }
        self.punch(lo, hi);
        before - self.resident
    }

    /// Drops every resident frame for which `keep(fn)` is false (called in ascending frame
    /// order), one punch per span between kept frames. Returns how many frames were dropped.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> u64 {
        let before = self.resident;
        let mut punch = Runs::default();
        for page in 0..self.counts.len() as u64 {
            // The words with set bits, by the leaf's summary; the leaf may go with its last bit.
            for si in 0..WORDS / 64 {
                let mut nz = match self.leaves[page as usize].as_deref() {
                    Some(leaf) => leaf.nonzero[si],
                    None => break,
                };
                while nz != 0 {
                    let i = si * 64 + nz.trailing_zeros() as usize;
                    nz &= nz - 1;
                    let wi = (page << (PAGE_SHIFT - 6)) + i as u64;
                    let mut w = self.bits(wi << 6);
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
            }
        }
        punch.flush(|l, h| self.punch(l, h));
        before - self.resident
    }
}

/// A pending `[lo, hi)` run of frames, handed to `done` when it can grow no more.
#[derive(Default)]
struct Runs(Option<(u64, u64)>);

impl Runs {
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
        // SAFETY: our mapping; nothing borrows them past `self`.
        unsafe {
            libc::munmap(self.base.cast(), self.data_len);
        }
        RESERVED.fetch_sub(self.data_len as u64, Ordering::Relaxed);
    }
}

/// Held by tests that fill the budget and by tests that need a flat memory (tests run in
/// parallel threads of one process, which share the budget).
#[cfg(test)]
pub(crate) static BUDGET_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests;
