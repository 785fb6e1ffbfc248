//! The fallback frame storage, for memories the host cannot map flat (larger than
//! [`FLAT_MAX`](crate::FLAT_MAX), or beyond the process's address-space budget): a four-level radix
//! index over frame numbers (13+9+9+9 bits for 2^40 frames) with a small direct-mapped lookup
//! cache in front, so a hot page-table read costs two dependent loads instead of five.
//!
//! Storage follows the frames that hold data: index nodes exist only above resident frames (a
//! node goes when its last frame does), and the top-level table and the lookup cache are
//! allocated with the first resident frame and released with the last one, so a store with no
//! resident frame holds no heap memory at all.
use super::Frame;
use crate::FRAME_SIZE;
use std::cell::UnsafeCell;

const FANOUT: usize = 512;
// 4096 slots (64 KiB): the 515 table pages of a GiB of 4 KiB mappings, scattered over memory,
// collide in ~40% of 1024 slots but ~10% of 4096, which takes a 4-level walk from ~26 to ~24 ns.
const CACHE_SLOTS: usize = 4096;
/// Host bytes of one index node (Leaf, Mid or Upper): 512 pointers and a count.
const NODE_BYTES: u64 = FANOUT as u64 * 8 + 8;

struct Leaf {
    frames: [Option<Box<Frame>>; FANOUT],
    live: u32,
}
struct Mid {
    leaves: [Option<Box<Leaf>>; FANOUT],
    live: u32,
}
struct Upper {
    mids: [Option<Box<Mid>>; FANOUT],
    live: u32,
}

/// A new index node: all-zero bits are a valid node (every `Option<Box<_>>` is `None`, `live` 0),
/// so it comes zeroed from the allocator instead of being built on the stack and copied.
trait Node: Sized {
    fn new_boxed() -> Box<Self> {
        // SAFETY: only implemented for the node types below, whose fields are arrays of
        // `Option<Box<_>>` (all-zero is `None`, guaranteed by the null-pointer optimisation) and
        // a `u32`.
        unsafe { Box::new_zeroed().assume_init() }
    }
}
impl Node for Leaf {}
impl Node for Mid {}
impl Node for Upper {}

/// Frees a node whose `live` count is 0 without its drop glue, which would read all 512 slots
/// (known to be `None`) of memory about to be freed.
fn free_empty<T: Node>(slot: &mut Option<Box<T>>) {
    if let Some(node) = slot.take() {
        // SAFETY: `ManuallyDrop<T>` has `T`'s layout; every slot of an empty node is `None`, so
        // skipping the drop glue leaks nothing.
        drop(unsafe { Box::from_raw(Box::into_raw(node).cast::<std::mem::ManuallyDrop<T>>()) });
    }
}

/// A new frame whose bytes all read `byte`, written in place on the heap.
fn new_frame(byte: u8) -> Box<Frame> {
    if byte == 0 {
        // SAFETY: any bytes are a valid `Frame`.
        return unsafe { Box::new_zeroed().assume_init() };
    }
    let mut frame = Box::<Frame>::new_uninit();
    // SAFETY: every byte is written before `assume_init`.
    unsafe {
        std::ptr::write_bytes(frame.as_mut_ptr().cast::<u8>(), byte, FRAME_SIZE as usize);
        frame.assume_init()
    }
}

/// A lookup-cache entry: `tag` is the frame number inverted, so an all-zero slot (tag `!u64::MAX`,
/// never a frame number) is empty and a new cache comes zeroed from the allocator.
#[derive(Clone, Copy)]
struct Slot {
    tag: u64,
    frame: *mut Frame,
}

const EMPTY_SLOT: Slot = Slot { tag: 0, frame: std::ptr::null_mut() };

type Cache = Box<[Slot; CACHE_SLOTS]>;

pub(crate) struct RadixStore {
    /// Upper nodes by frame number >> 27; empty (no allocation) while nothing is resident.
    top: Vec<Option<Box<Upper>>>,
    /// Length of `top` once allocated.
    tops: usize,
    resident: u64,
    nodes: u64,
    // Raw pointers into boxed frames. A frame's heap block never moves while it exists, and every
    // path that drops frames (`retain`, `remove_range`) clears the slots that point at them, so a
    // tagged slot always points at a live frame. `None` exactly while nothing is resident.
    cache: UnsafeCell<Option<Cache>>,
}

impl RadixStore {
    pub(crate) fn new(frames: u64) -> Self {
        RadixStore { top: Vec::new(), tops: frames.div_ceil(1 << 27) as usize, resident: 0, nodes: 0, cache: UnsafeCell::new(None) }
    }

    pub(crate) fn resident(&self) -> u64 {
        self.resident
    }

    /// Heap bytes held: resident frames, index nodes, the top-level table and the lookup cache.
    /// Zero when no frame is resident.
    pub(crate) fn host_bytes(&self) -> u64 {
        // SAFETY: a read of the `Option`'s discriminant; no reference into the cache is live.
        let cache = unsafe { (*self.cache.get()).is_some() };
        self.resident * FRAME_SIZE
            + self.nodes * NODE_BYTES
            + self.top.capacity() as u64 * 8
            + if cache { (CACHE_SLOTS * std::mem::size_of::<Slot>()) as u64 } else { 0 }
    }

    fn lookup(&self, fn_: u64) -> Option<&Frame> {
        let upper = self.top.get((fn_ >> 27) as usize)?.as_deref()?;
        let mid = upper.mids[(fn_ >> 18) as usize & (FANOUT - 1)].as_deref()?;
        let leaf = mid.leaves[(fn_ >> 9) as usize & (FANOUT - 1)].as_deref()?;
        leaf.frames[fn_ as usize & (FANOUT - 1)].as_deref()
    }

    /// The frame's bytes, or `None` if it holds no data.
    #[inline]
    pub(crate) fn get(&self, fn_: u64) -> Option<&Frame> {
        // SAFETY: single-threaded (`UnsafeCell` makes the store !Sync); no reference into the
        // cache outlives this function, and tagged pointers are live (see the field comment).
        unsafe {
            // No cache means nothing is resident.
            let cache = (*self.cache.get()).as_deref_mut()?;
            let slot = &mut cache[fn_ as usize % CACHE_SLOTS];
            if slot.tag == !fn_ {
                return Some(&*slot.frame);
            }
            let frame = self.lookup(fn_)?;
            *slot = Slot { tag: !fn_, frame: frame as *const Frame as *mut Frame };
            Some(frame)
        }
    }

    /// The frame's bytes for writing, materialised filled with `init()` if it was not resident.
    pub(crate) fn get_mut(&mut self, fn_: u64, init: impl FnOnce() -> u8) -> &mut Frame {
        if self.top.is_empty() {
            self.top = (0..self.tops).map(|_| None).collect();
            // SAFETY: all-zero slots are valid and empty (see `Slot`).
            *self.cache.get_mut() = Some(unsafe { Box::new_zeroed().assume_init() });
        }
        let upper = self.top[(fn_ >> 27) as usize].get_or_insert_with(|| {
            self.nodes += 1;
            Upper::new_boxed()
        });
        let mi = (fn_ >> 18) as usize & (FANOUT - 1);
        if upper.mids[mi].is_none() {
            upper.live += 1;
            self.nodes += 1;
        }
        let mid = upper.mids[mi].get_or_insert_with(Mid::new_boxed);
        let li = (fn_ >> 9) as usize & (FANOUT - 1);
        if mid.leaves[li].is_none() {
            mid.live += 1;
            self.nodes += 1;
        }
        let leaf = mid.leaves[li].get_or_insert_with(Leaf::new_boxed);
        let frame_slot = &mut leaf.frames[fn_ as usize & (FANOUT - 1)];
        if frame_slot.is_none() {
            leaf.live += 1;
            self.resident += 1;
        }
        frame_slot.get_or_insert_with(|| new_frame(init()))
    }

    /// Drops the resident frames of `[start, start+n)` (they read as their fill again) and the
    /// index nodes left empty. Returns how many frames were dropped.
    pub(crate) fn remove_range(&mut self, start: u64, n: u64) -> u64 {
        let end = start.saturating_add(n);
        let cache = self.cache.get_mut();
        let (mut dropped, mut nodes_freed) = (0u64, 0u64);
        let mut fn_ = start;
        while fn_ < end {
            let ti = (fn_ >> 27) as usize;
            let Some(upper_slot) = self.top.get_mut(ti) else { break };
            let Some(upper) = upper_slot.as_deref_mut() else {
                fn_ = ((fn_ >> 27) + 1) << 27;
                continue;
            };
            let mi = (fn_ >> 18) as usize & (FANOUT - 1);
            let Some(mid) = upper.mids[mi].as_deref_mut() else {
                fn_ = ((fn_ >> 18) + 1) << 18;
                continue;
            };
            let li = (fn_ >> 9) as usize & (FANOUT - 1);
            let leaf_end = (((fn_ >> 9) + 1) << 9).min(end);
            let Some(leaf) = mid.leaves[li].as_deref_mut() else {
                fn_ = leaf_end;
                continue;
            };
            for f in fn_..leaf_end {
                if leaf.frames[f as usize & (FANOUT - 1)].take().is_some() {
                    leaf.live -= 1;
                    dropped += 1;
                    if let Some(c) = cache.as_deref_mut() {
                        let slot = &mut c[f as usize % CACHE_SLOTS];
                        if slot.tag == !f {
                            *slot = EMPTY_SLOT;
                        }
                    }
                }
            }
            if leaf.live == 0 {
                free_empty(&mut mid.leaves[li]);
                mid.live -= 1;
                nodes_freed += 1;
                if mid.live == 0 {
                    free_empty(&mut upper.mids[mi]);
                    upper.live -= 1;
                    nodes_freed += 1;
                    if upper.live == 0 {
                        free_empty(upper_slot);
                        nodes_freed += 1;
                    }
                }
            }
            fn_ = leaf_end;
        }
        self.resident -= dropped;
        self.nodes -= nodes_freed;
        self.release_if_empty();
        dropped
    }

    /// Drops every resident frame for which `keep(fn)` is false (called in ascending frame
    /// order). Returns how many frames were dropped.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> u64 {
        if let Some(c) = self.cache.get_mut().as_deref_mut() {
            c.fill(EMPTY_SLOT);
        }
        let mut dropped = 0;
        let mut nodes_freed = 0;
        for (ti, upper_slot) in self.top.iter_mut().enumerate() {
            let Some(upper) = upper_slot.as_deref_mut() else { continue };
            for (ui, mid_slot) in upper.mids.iter_mut().enumerate() {
                let Some(mid) = mid_slot.as_deref_mut() else { continue };
                for (mi, leaf_slot) in mid.leaves.iter_mut().enumerate() {
                    let Some(leaf) = leaf_slot.as_deref_mut() else { continue };
                    let base = ((ti as u64) << 27) | ((ui as u64) << 18) | ((mi as u64) << 9);
                    for (li, frame) in leaf.frames.iter_mut().enumerate() {
                        if frame.is_some() && !keep(base | li as u64) {
                            *frame = None;
                            leaf.live -= 1;
                            dropped += 1;
                        }
                    }
                    if leaf.live == 0 {
                        free_empty(leaf_slot);
                        mid.live -= 1;
                        nodes_freed += 1;
                    }
                }
                if mid.live == 0 {
                    free_empty(mid_slot);
                    upper.live -= 1;
                    nodes_freed += 1;
                }
            }
            if upper.live == 0 {
                free_empty(upper_slot);
                nodes_freed += 1;
            }
        }
        self.resident -= dropped;
        self.nodes -= nodes_freed;
        self.release_if_empty();
        dropped
    }

    /// With no resident frame left, gives back the top-level table and the lookup cache.
    fn release_if_empty(&mut self) {
        if self.resident == 0 {
            debug_assert_eq!(self.nodes, 0);
            self.top = Vec::new();
            *self.cache.get_mut() = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_store_holds_nothing_and_the_cache_comes_with_the_first_frame() {
        let mut s = RadixStore::new(1 << 40);
        assert_eq!(s.host_bytes(), 0);
        assert!(s.get(5).is_none());
        assert_eq!(s.host_bytes(), 0, "a read of an absent frame allocates nothing");
        s.get_mut(5, || 7)[0] = 1;
        assert_eq!(s.get(5).unwrap()[..2], [1, 7]);
        let one = s.host_bytes();
        assert_eq!(one, FRAME_SIZE + 3 * NODE_BYTES + 8192 * 8 + (CACHE_SLOTS * 16) as u64);
        assert_eq!(s.remove_range(0, 1 << 40), 1);
        assert_eq!((s.resident(), s.nodes, s.host_bytes()), (0, 0, 0));
        assert!(s.get(5).is_none());
    }

    #[test]
    fn remove_range_frees_nodes_and_clears_cached_pointers() {
        let mut s = RadixStore::new(1 << 20);
        // Frames in two leaves of one mid, and one far away (another mid).
        for f in [10u64, 11, 600, 300_000] {
            s.get_mut(f, || 0)[0] = f as u8;
        }
        for f in [10u64, 11, 600, 300_000] {
            assert_eq!(s.get(f).unwrap()[0], f as u8, "cached now");
        }
        assert_eq!(s.nodes, 1 + 2 + 3);
        assert_eq!(s.remove_range(11, 589), 1, "only frame 11 lies in [11, 600)");
        assert!(s.get(11).is_none(), "the cached pointer was cleared");
        assert_eq!(s.get(10).unwrap()[0], 10);
        assert_eq!(s.remove_range(0, 601), 2);
        assert_eq!(s.nodes, 3, "both leaves and their mid went; the far frame keeps its own");
        assert_eq!(s.get(300_000).unwrap()[0], 300_000u64 as u8);
        s.retain(|_| false);
        assert_eq!((s.resident(), s.nodes, s.host_bytes()), (0, 0, 0));
    }
}
