//! Preservation for the hand-over to the next kernel: marks on allocated blocks, and the scrub
//! that models the jump (everything unmarked loses its contents and becomes free).
use crate::alloc::{self, Extents, FillMap};
use crate::{Error, PhysMem, Result, ScrubReport, FRAME_SHIFT, FRAME_SIZE, MAX_ORDER};

impl PhysMem {
    pub(crate) fn preserved_overlap(&self, start: u64, n: u64) -> bool {
        if let Some((&s, &o)) = self.preserved.range(..=start).next_back() {
            if s + (1u64 << o) > start {
                return true;
            }
        }
        self.preserved.range(start..start + n).next().is_some()
    }

    /// Marks the allocated block of 2^`order` frames at `pa` as preserved across the next
    /// [`scrub`](Self::scrub). The block must be naturally aligned, allocated and not overlap
    /// another mark.
    pub fn preserve(&mut self, pa: u64, order: u8) -> Result<()> {
        if order > MAX_ORDER {
            return Err(Error::BadOrder { order });
        }
        let len = FRAME_SIZE << order;
        let (start, n) = self.frame_range(pa, len)?;
        if start % n != 0 {
            return Err(Error::Unaligned { pa, align: len });
        }
        if !self.is_allocated(pa, len) {
            return Err(Error::NotAllocated { pa, len });
        }
        if self.preserved_overlap(start, n) {
            return Err(Error::Preserved { pa, len });
        }
        self.preserved.insert(start, order);
        Ok(())
    }

    /// [`preserve`](Self::preserve) for each block of 2^`order` frames at `pas`, in order, all
    /// or nothing: if one fails (a duplicate in `pas` included), the marks this call set are
    /// removed and that block's error is returned, so the marks are as before.
    pub fn preserve_many(&mut self, pas: &[u64], order: u8) -> Result<()> {
        if pas.len() >= 64 && order <= MAX_ORDER && self.may_preserve_all(pas, order) {
            // Every block passes (merged checks, sorted): the marks go in without a query each.
            self.preserved.extend(pas.iter().map(|&pa| (pa >> FRAME_SHIFT, order)));
            return Ok(());
        }
        // One by one: the first block that fails gives its error, the marks set are undone.
        for (i, &pa) in pas.iter().enumerate() {
            if let Err(e) = self.preserve(pa, order) {
                // Each earlier block was marked by this call: a mark never overlaps another.
                for &done in &pas[..i] {
                    self.preserved.remove(&(done >> FRAME_SHIFT));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether [`preserve`](Self::preserve) would accept every block of 2^`order` frames at
    /// `pas` (also none overlapping another of them): checked sorted, in one merge against the
    /// free, reserved and preserved extents each. False says nothing about which block fails.
    fn may_preserve_all(&self, pas: &[u64], order: u8) -> bool {
        let len = FRAME_SIZE << order;
        let mut ranges = Vec::with_capacity(pas.len());
        for &pa in pas {
            match self.frame_range(pa, len) {
                Ok((start, n)) if start % n == 0 => ranges.push((start, n)),
                _ => return false,
            }
        }
        ranges.sort_unstable();
        ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0)
            && !self.free.overlaps_any_sorted(&ranges)
            && !self.reserved.overlaps_any_sorted(&ranges)
            && !alloc::overlaps_any_sorted(self.preserved.range(self.mark_before(ranges[0].0)..).map(|(&s, &o)| (s, 1u64 << o)), &ranges)
    }

    /// The start of the last mark at or before frame `start` (where a merge from `start` begins).
    fn mark_before(&self, start: u64) -> u64 {
        self.preserved.range(..=start).next_back().map_or(start, |(&s, _)| s)
    }

    /// Removes the mark set by [`preserve`](Self::preserve) with the same `pa` and `order`.
    pub fn unpreserve(&mut self, pa: u64, order: u8) -> Result<()> {
        match self.preserved.get(&(pa >> FRAME_SHIFT)) {
            Some(&o) if o == order && pa.is_multiple_of(FRAME_SIZE) => {
                self.preserved.remove(&(pa >> FRAME_SHIFT));
                Ok(())
            }
            _ => Err(Error::NotPreserved { pa, order }),
        }
    }

    /// Whether a preservation mark covers the frame holding `pa`.
    pub fn is_preserved(&self, pa: u64) -> bool {
        pa < self.size && self.preserved_overlap(pa >> FRAME_SHIFT, 1)
    }

    /// Every preservation mark as `(pa, order)`, in address order.
    pub fn preserved(&self) -> Vec<(u64, u8)> {
        self.preserved.iter().map(|(&f, &o)| (f << FRAME_SHIFT, o)).collect()
    }

    /// Models a new kernel taking over memory: every frame not covered by a preservation mark
    /// loses its contents (it reads as [`POISON`], as do frames never written) and becomes free;
    /// preserved blocks keep their bytes and stay allocated, for the new kernel to claim or free.
    /// The marks are consumed. Cost grows with resident frames and marks, not with the size.
    pub fn scrub(&mut self) -> ScrubReport {
        let marks = std::mem::take(&mut self.preserved);
        // Marks never overlap: sorted, disjoint `[start, end)` blocks.
        let keep: Vec<(u64, u64)> = marks.iter().map(|(&s, &o)| (s, s + (1u64 << o))).collect();
        let preserved_frames = keep.iter().map(|&(s, e)| e - s).sum();
        // Free: the gaps between the blocks, less the reserved ranges, built in one pass.
        let reserved: Vec<(u64, u64)> = self.reserved.iter().map(|(s, l)| (s, s + l)).collect();
        let mut free = Vec::with_capacity(keep.len() + 1);
        let mut from = 0;
        for &(s, e) in keep.iter().chain(std::iter::once(&(self.frames, self.frames))) {
            subtract(from, s, &reserved, &mut free);
            from = e;
        }
        // Fills survive only inside preserved blocks (a range query per block).
        let fills = FillMap::from_sorted(keep.iter().flat_map(|&(s, e)| self.fills.overlapping(s, e - s)));
        self.fills = fills;
        let mut next = keep.iter().copied().peekable();
        let poisoned_frames = self.store.retain(|fn_| {
            while let Some(&(_, end)) = next.peek() {
                if end <= fn_ {
                    next.next();
                } else {
                    break;
                }
            }
            matches!(next.peek(), Some(&(s, _)) if s <= fn_)
        });
        self.free = Extents::from_sorted(free);
        ScrubReport { preserved_frames, poisoned_frames, free_frames: self.free.total() }
    }
}

/// Appends to `out` the pieces of `[from, to)` outside the sorted, disjoint `[start, end)`
/// ranges `cut`, as `(start, len)`.
fn subtract(mut from: u64, to: u64, cut: &[(u64, u64)], out: &mut Vec<(u64, u64)>) {
    for &(cs, ce) in cut {
        if ce <= from || cs >= to {
            continue;
        }
        if cs > from {
            out.push((from, cs - from));
        }
        from = from.max(ce);
    }
    if from < to {
        out.push((from, to - from));
    }
}
