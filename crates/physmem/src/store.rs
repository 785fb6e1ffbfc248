//! Frame storage: flat (one sparse host mapping, [`flat`]) whenever the host can map the memory,
//! else the radix index ([`radix`]). The kind is chosen when the first frame is written and the
//! storage is released with the last one, so an empty store holds neither memory nor address
//! space, and a memory refused a flat mapping may get one later.
mod flat;
mod radix;

use crate::FRAME_SIZE;
use flat::FlatStore;
#[cfg(test)]
pub(crate) use flat::BUDGET_LOCK;
use radix::RadixStore;

pub(crate) type Frame = [u8; FRAME_SIZE as usize];

enum Kind {
    Empty,
    Flat(FlatStore),
    Radix(RadixStore),
}

pub(crate) struct FrameStore {
    frames: u64,
    kind: Kind,
}

impl FrameStore {
    pub(crate) fn new(frames: u64) -> Self {
        FrameStore { frames, kind: Kind::Empty }
    }

    pub(crate) fn resident(&self) -> u64 {
        match &self.kind {
            Kind::Empty => 0,
            Kind::Flat(s) => s.resident(),
            Kind::Radix(s) => s.resident(),
        }
    }

    /// Whether the frames live in a flat host mapping.
    pub(crate) fn is_flat(&self) -> bool {
        matches!(self.kind, Kind::Flat(_))
    }

    /// Host bytes held; 0 when no frame is resident.
    pub(crate) fn host_bytes(&self) -> u64 {
        match &self.kind {
            Kind::Empty => 0,
            Kind::Flat(s) => s.host_bytes(),
            Kind::Radix(s) => s.host_bytes(),
        }
    }

    /// The frame's bytes, or `None` if it holds no data. `fn_` must be below the frame count.
    #[inline(always)]
    pub(crate) fn get(&self, fn_: u64) -> Option<&Frame> {
        match &self.kind {
            Kind::Flat(s) => s.get(fn_),
            Kind::Radix(s) => s.get(fn_),
            Kind::Empty => None,
        }
    }

    /// The flat mapping's base (frame `n` at `base + n * 4096`), null unless the store is flat.
    /// A word read there that is not zero is the frame's data; a zero word may be a frame
    /// without data (ask [`get`](Self::get)).
    #[inline(always)]
    pub(crate) fn flat_base(&self) -> *const u8 {
        match &self.kind {
            Kind::Flat(s) => s.base(),
            _ => std::ptr::null(),
        }
    }

    /// The frame's bytes for writing, materialised filled with `init()` if it was not resident.
    #[inline]
    pub(crate) fn get_mut(&mut self, fn_: u64, init: impl FnOnce() -> u8) -> &mut Frame {
        if let Kind::Empty = self.kind {
            self.kind = match FlatStore::new(self.frames) {
                Some(s) => Kind::Flat(s),
                None => Kind::Radix(RadixStore::new(self.frames)),
            };
        }
        match &mut self.kind {
            Kind::Flat(s) => s.get_mut(fn_, init),
            Kind::Radix(s) => s.get_mut(fn_, init),
            Kind::Empty => unreachable!("storage was just created"),
        }
    }

    /// Drops the resident frames of `[start, start+n)` (they read as their fill again).
    /// Returns how many frames were dropped.
    pub(crate) fn remove_range(&mut self, start: u64, n: u64) -> u64 {
        let dropped = match &mut self.kind {
            Kind::Empty => 0,
            Kind::Flat(s) => s.remove_range(start, n),
            Kind::Radix(s) => s.remove_range(start, n),
        };
        self.release_if_empty();
        dropped
    }

    /// Drops every resident frame for which `keep(fn)` is false (called in ascending frame
    /// order). Returns how many frames were dropped.
    pub(crate) fn retain(&mut self, keep: impl FnMut(u64) -> bool) -> u64 {
        let dropped = match &mut self.kind {
            Kind::Empty => 0,
            Kind::Flat(s) => s.retain(keep),
            Kind::Radix(s) => s.retain(keep),
        };
        self.release_if_empty();
        dropped
    }

    /// With no resident frame left, gives the storage (memory and address space) back.
    fn release_if_empty(&mut self) {
        if self.resident() == 0 {
            self.kind = Kind::Empty;
        }
    }
}
