//! Sparse frame storage: a four-level radix index over frame numbers (13+9+9+9 bits for 2^40
//! frames) with a small direct-mapped lookup cache in front, so a hot page-table read costs two
//! dependent loads instead of five.
use crate::FRAME_SIZE;
use std::cell::UnsafeCell;

pub(crate) type Frame = [u8; FRAME_SIZE as usize];

const FANOUT: usize = 512;
// 4096 slots (64 KiB): the 515 table pages of a GiB of 4 KiB mappings, scattered over memory,
// collide in ~40% of 1024 slots but ~10% of 4096, which takes a 4-level walk from ~26 to ~24 ns.
const CACHE_SLOTS: usize = 4096;
const NO_TAG: u64 = u64::MAX;

struct Leaf {
    frames: [Option<Box<Frame>>; FANOUT],
}
struct Mid {
    leaves: [Option<Box<Leaf>>; FANOUT],
}
struct Upper {
    mids: [Option<Box<Mid>>; FANOUT],
}

fn empty<T>() -> [Option<Box<T>>; FANOUT] {
    std::array::from_fn(|_| None)
}

#[derive(Clone, Copy)]
struct Slot {
    tag: u64,
    frame: *mut Frame,
}

pub(crate) struct FrameStore {
    top: Vec<Option<Box<Upper>>>,
    resident: u64,
    nodes: u64,
    // Raw pointers into boxed frames. A frame's heap block never moves while it exists, and every
    // path that drops frames (only `retain` does) clears the
    // cache, so a tagged slot always points at a live frame.
    cache: UnsafeCell<Box<[Slot; CACHE_SLOTS]>>,
}

impl FrameStore {
    pub(crate) fn new(frames: u64) -> Self {
        let tops = frames.div_ceil(1 << 27) as usize;
        FrameStore {
            top: (0..tops).map(|_| None).collect(),
            resident: 0,
            nodes: 0,
            cache: UnsafeCell::new(Box::new([Slot { tag: NO_TAG, frame: std::ptr::null_mut() }; CACHE_SLOTS])),
        }
    }

    pub(crate) fn resident(&self) -> u64 {
        self.resident
    }

    pub(crate) fn host_bytes(&self) -> u64 {
        self.resident * FRAME_SIZE
            + self.nodes * (FANOUT as u64 * 8)
            + self.top.len() as u64 * 8
            + (CACHE_SLOTS * 16) as u64
    }

    fn lookup(&self, fn_: u64) -> Option<&Frame> {
        let upper = self.top.get((fn_ >> 27) as usize)?.as_deref()?;
        let mid = upper.mids[(fn_ >> 18) as usize & (FANOUT - 1)].as_deref()?;
        let leaf = mid.leaves[(fn_ >> 9) as usize & (FANOUT - 1)].as_deref()?;
        leaf.frames[fn_ as usize & (FANOUT - 1)].as_deref()
    }

    /// The frame's bytes, or `None` if it was never written.
    #[inline]
    pub(crate) fn get(&self, fn_: u64) -> Option<&Frame> {
        // SAFETY: single-threaded (`UnsafeCell` makes the store !Sync); no reference into the
        // cache outlives this function, and tagged pointers are live (see the field comment).
        unsafe {
            let cache = &mut *self.cache.get();
            let slot = &mut cache[fn_ as usize % CACHE_SLOTS];
            if slot.tag == fn_ {
                return Some(&*slot.frame);
            }
            let frame = self.lookup(fn_)?;
            *slot = Slot { tag: fn_, frame: frame as *const Frame as *mut Frame };
            Some(frame)
        }
    }

    /// The frame's bytes for writing, materialised filled with `init()` if it was not resident.
    pub(crate) fn get_mut(&mut self, fn_: u64, init: impl FnOnce() -> u8) -> &mut Frame {
        let upper = self.top[(fn_ >> 27) as usize].get_or_insert_with(|| {
            self.nodes += 1;
            Box::new(Upper { mids: empty() })
        });
        let mid = upper.mids[(fn_ >> 18) as usize & (FANOUT - 1)].get_or_insert_with(|| {
            self.nodes += 1;
            Box::new(Mid { leaves: empty() })
        });
        let leaf = mid.leaves[(fn_ >> 9) as usize & (FANOUT - 1)].get_or_insert_with(|| {
            self.nodes += 1;
            Box::new(Leaf { frames: empty() })
        });
        leaf.frames[fn_ as usize & (FANOUT - 1)].get_or_insert_with(|| {
            self.resident += 1;
            Box::new([init(); FRAME_SIZE as usize])
        })
    }

    /// Fills the resident frames of `[start, start+n)` with `byte`.
    pub(crate) fn fill_resident(&mut self, start: u64, n: u64, byte: u8) {
        self.for_each_resident(start, start + n, |_, frame| frame.fill(byte));
    }

    fn for_each_resident(&mut self, start: u64, end: u64, mut f: impl FnMut(u64, &mut Frame)) {
        let mut fn_ = start;
        while fn_ < end {
            let Some(Some(upper)) = self.top.get_mut((fn_ >> 27) as usize) else {
                fn_ = ((fn_ >> 27) + 1) << 27;
                continue;
            };
            let Some(mid) = upper.mids[(fn_ >> 18) as usize & (FANOUT - 1)].as_deref_mut() else {
                fn_ = ((fn_ >> 18) + 1) << 18;
                continue;
            };
            let Some(leaf) = mid.leaves[(fn_ >> 9) as usize & (FANOUT - 1)].as_deref_mut() else {
                fn_ = ((fn_ >> 9) + 1) << 9;
                continue;
            };
            if let Some(frame) = leaf.frames[fn_ as usize & (FANOUT - 1)].as_deref_mut() {
                f(fn_, frame);
            }
            fn_ += 1;
        }
    }

    /// Drops every resident frame for which `keep(fn)` is false (called in ascending frame
    /// order). Returns how many frames were dropped.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> u64 {
        self.clear_cache();
        let mut dropped = 0;
        let mut nodes_freed = 0;
        for (ti, upper_slot) in self.top.iter_mut().enumerate() {
            let Some(upper) = upper_slot.as_deref_mut() else { continue };
            for (ui, mid_slot) in upper.mids.iter_mut().enumerate() {
                let Some(mid) = mid_slot.as_deref_mut() else { continue };
                for (mi, leaf_slot) in mid.leaves.iter_mut().enumerate() {
                    let Some(leaf) = leaf_slot.as_deref_mut() else { continue };
                    let base = ((ti as u64) << 27) | ((ui as u64) << 18) | ((mi as u64) << 9);
                    let mut live = 0;
                    for (li, frame) in leaf.frames.iter_mut().enumerate() {
                        if frame.is_some() {
                            if keep(base | li as u64) {
                                live += 1;
                            } else {
                                *frame = None;
                                dropped += 1;
                            }
                        }
                    }
                    if live == 0 {
                        *leaf_slot = None;
                        nodes_freed += 1;
                    }
                }
                if mid.leaves.iter().all(Option::is_none) {
                    *mid_slot = None;
                    nodes_freed += 1;
                }
            }
            if upper.mids.iter().all(Option::is_none) {
                *upper_slot = None;
                nodes_freed += 1;
            }
        }
        self.resident -= dropped;
        self.nodes -= nodes_freed;
        dropped
    }

    fn clear_cache(&mut self) {
        self.cache.get_mut().fill(Slot { tag: NO_TAG, frame: std::ptr::null_mut() });
    }
}
