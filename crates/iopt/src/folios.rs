//! A shmem object's folio table (`shmem_inode_info`'s page cache): pages allocated zeroed on first
//! touch, as 2 MiB folios where a whole aligned 2 MiB of the object exists (`huge=within_size`),
//! else 4 KiB pages.

use std::collections::BTreeMap;

use crate::{push_run, Error, Run, HPAGE_ORDER, HPAGE_PAGES};

/// The page allocator the folios come from: a zeroed block of 2^`order` frames, its first PFN,
/// or [`Error::NoMem`].
pub trait FrameSource {
    fn alloc(&mut self, order: u8) -> Result<u64, Error>;
}

/// One 2 MiB slice of the object: a huge folio, or up to 512 small pages (PFN 0: not present;
/// PFN 0 is never handed out).
enum Chunk {
    Huge(u64),
    Small(Box<[u64; HPAGE_PAGES as usize]>),
}

fn small() -> Chunk {
    Chunk::Small(Box::new([0; HPAGE_PAGES as usize]))
}

/// A folio of the object: page `index` onwards is PFN `pfn` onwards, 2^`order` pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folio {
    pub index: u64,
    pub pfn: u64,
    pub order: u8,
}

/// What a truncation leaves the caller to do with the memory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Truncated {
    /// Folios the object let go of, `(pfn, order)`: freed now, or when their last pin goes.
    pub release: Vec<(u64, u8)>,
    /// A pinned huge folio cannot split: these pages `(pfn, n)` past the end are zeroed instead.
    pub zero: Option<(u64, u64)>,
    /// The tail `(pfn, n)` of a huge folio split at the new end: free now.
    pub free: Option<(u64, u64)>,
}

/// The folio table of one shmem object.
pub struct Folios {
    chunks: BTreeMap<u64, Chunk>,
    npages: u64,
    huge: bool,
    resident: u64,
    /// Chunks of small pages (a PFN array each).
    small: u64,
}

impl Folios {
    /// An empty object of `npages` pages; `huge`: 2 MiB folios where they fit.
    pub fn new(npages: u64, huge: bool) -> Self {
        Folios { chunks: BTreeMap::new(), npages, huge, resident: 0, small: 0 }
    }

    /// Size in pages.
    pub fn npages(&self) -> u64 {
        self.npages
    }

    /// Sets the size without dropping pages (growing; [`Folios::truncate`] shrinks).
    pub fn set_npages(&mut self, npages: u64) {
        self.npages = npages;
    }

    /// Pages currently allocated.
    pub fn resident(&self) -> u64 {
        self.resident
    }

    /// Heap bytes held (what the binding reports to V8): a tree node's share per chunk, and a
    /// PFN array per chunk of small pages.
    pub fn heap_bytes(&self) -> u64 {
        self.chunks.len() as u64 * 32 + self.small * HPAGE_PAGES * 8
    }

    fn populate(&mut self, ci: u64, src: &mut impl FrameSource) -> Result<&mut Chunk, Error> {
        let c = if self.huge && (ci + 1) * HPAGE_PAGES <= self.npages {
            match src.alloc(HPAGE_ORDER) {
                Ok(pfn) => {
                    self.resident += HPAGE_PAGES;
                    Chunk::Huge(pfn)
                }
                // No 2 MiB block left: small pages, as shmem falls back.
                Err(Error::NoMem) => small(),
                Err(e) => return Err(e),
            }
        } else {
            small()
        };
        if let Chunk::Small(_) = c {
            self.small += 1;
        }
        Ok(self.chunks.entry(ci).or_insert(c))
    }

    /// PFN of page `page`, allocating it when `alloc`; 0 if absent and not allocated.
    pub fn pfn(&mut self, page: u64, alloc: bool, src: &mut impl FrameSource) -> Result<u64, Error> {
        if page >= self.npages {
            return Err(Error::Fault);
        }
        let ci = page / HPAGE_PAGES;
        let i = (page % HPAGE_PAGES) as usize;
        if !self.chunks.contains_key(&ci) {
            if !alloc {
                return Ok(0);
            }
            self.populate(ci, src)?;
        }
        let mut added = 0;
        let pfn = match self.chunks.get_mut(&ci) {
            Some(Chunk::Huge(pfn)) => *pfn + i as u64,
            Some(Chunk::Small(pfns)) => {
                if pfns[i] == 0 && alloc {
                    pfns[i] = src.alloc(0)?;
                    added = 1;
                }
                pfns[i]
            }
            None => unreachable!("populated above"),
        };
        self.resident += added;
        Ok(pfn)
    }

    /// Appends the physically contiguous runs behind pages `[page, page + n)` to `out`,
    /// allocating what is absent; run indices are `base` + the offset in the range.
    pub fn runs(&mut self, page: u64, n: u64, base: u64, src: &mut impl FrameSource, out: &mut Vec<Run>) -> Result<(), Error> {
        if page.checked_add(n).is_none_or(|end| end > self.npages) {
            return Err(Error::Fault);
        }
        let end = page + n;
        let mut p = page;
        while p < end {
            // Consecutive chunks with every page present: one tree step each.
            for (&ci, c) in self.chunks.range(p / HPAGE_PAGES..) {
                if p >= end || ci != p / HPAGE_PAGES {
                    break;
                }
                let in_chunk = p % HPAGE_PAGES;
                let len = (end - p).min(HPAGE_PAGES - in_chunk);
                match c {
                    Chunk::Huge(pfn) => push_run(out, base + (p - page), pfn + in_chunk, len),
                    Chunk::Small(pfns) => {
                        let present = &pfns[in_chunk as usize..(in_chunk + len) as usize];
                        if present.contains(&0) {
                            break;
                        }
                        for (k, &pfn) in present.iter().enumerate() {
                            push_run(out, base + (p - page) + k as u64, pfn, 1);
                        }
                    }
                }
                p += len;
            }
            if p >= end {
                break;
            }
            // A chunk with something to fault in.
            let in_chunk = p % HPAGE_PAGES;
            let len = (end - p).min(HPAGE_PAGES - in_chunk);
            let huge = match self.chunks.get(&(p / HPAGE_PAGES)) {
                Some(Chunk::Huge(pfn)) => Some(*pfn),
                Some(Chunk::Small(_)) => None,
                None => match self.populate(p / HPAGE_PAGES, src)? {
                    Chunk::Huge(pfn) => Some(*pfn),
                    Chunk::Small(_) => None,
                },
            };
            match huge {
                Some(pfn) => push_run(out, base + (p - page), pfn + in_chunk, len),
                None => {
                    for k in 0..len {
                        let pfn = self.pfn(p + k, true, src)?;
                        push_run(out, base + (p - page) + k, pfn, 1);
                    }
                }
            }
            p += len;
        }
        Ok(())
    }

    /// The folios behind pages `[0, npages)` in index order; with `alloc` every page is
    /// allocated first (`memfd_pin_folios` fills the holes).
    pub fn folios(&mut self, alloc: bool, src: &mut impl FrameSource) -> Result<Vec<Folio>, Error> {
        let mut out = Vec::new();
        if alloc {
            for ci in 0..self.npages.div_ceil(HPAGE_PAGES) {
                if !self.chunks.contains_key(&ci) {
                    self.populate(ci, src)?;
                }
                if let Some(Chunk::Small(_)) = self.chunks.get(&ci) {
                    let end = HPAGE_PAGES.min(self.npages - ci * HPAGE_PAGES);
                    for i in 0..end {
                        self.pfn(ci * HPAGE_PAGES + i, true, src)?;
                    }
                }
            }
        }
        for (&ci, c) in &self.chunks {
            if ci * HPAGE_PAGES >= self.npages {
                break;
            }
            match c {
                Chunk::Huge(pfn) => out.push(Folio { index: ci * HPAGE_PAGES, pfn: *pfn, order: HPAGE_ORDER }),
                Chunk::Small(pfns) => {
                    let end = HPAGE_PAGES.min(self.npages - ci * HPAGE_PAGES);
                    for i in 0..end {
                        if pfns[i as usize] != 0 {
                            out.push(Folio { index: ci * HPAGE_PAGES + i, pfn: pfns[i as usize], order: 0 });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Puts a folio the previous kernel preserved at page `index` (`shmem_add_to_page_cache` of
    /// a restored folio): order 9 only at a 2 MiB-aligned index of an empty chunk.
    pub fn adopt(&mut self, index: u64, pfn: u64, order: u8) -> Result<(), Error> {
        if (order != 0 && order != HPAGE_ORDER) || index + (1 << order) > self.npages {
            return Err(Error::Inval);
        }
        let ci = index / HPAGE_PAGES;
        if order == HPAGE_ORDER {
            if !index.is_multiple_of(HPAGE_PAGES) || self.chunks.contains_key(&ci) {
                return Err(Error::Inval);
            }
            self.chunks.insert(ci, Chunk::Huge(pfn));
            self.resident += HPAGE_PAGES;
            return Ok(());
        }
        let small_count = &mut self.small;
        match self.chunks.entry(ci).or_insert_with(|| {
            *small_count += 1;
            small()
        }) {
            Chunk::Small(pfns) if pfns[(index % HPAGE_PAGES) as usize] == 0 => pfns[(index % HPAGE_PAGES) as usize] = pfn,
            _ => return Err(Error::Inval),
        }
        self.resident += 1;
        Ok(())
    }

    /// Every folio, for the caller to release; the object is empty afterwards (its last user went).
    pub fn take_all(&mut self) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        for c in std::mem::take(&mut self.chunks).into_values() {
            release(c, 0, &mut out);
        }
        self.resident = 0;
        self.small = 0;
        out
    }

    /// Drops the pages at and beyond `npages` (ftruncate down; `shmem_undo_range`). The last
    /// chunk's huge folio splits first, unless `pinned(pfn, n)` says it is pinned: then it keeps
    /// its pages and the tail is zeroed, so growing the file again does not show the old bytes.
    pub fn truncate(&mut self, npages: u64, pinned: impl Fn(u64, u64) -> bool) -> Truncated {
        let mut t = Truncated::default();
        let keep = npages.div_ceil(HPAGE_PAGES);
        for (_, c) in self.chunks.split_off(&keep) {
            self.resident -= match &c {
                Chunk::Huge(_) => HPAGE_PAGES,
                Chunk::Small(pfns) => {
                    self.small -= 1;
                    pfns.iter().filter(|&&p| p != 0).count() as u64
                }
            };
            release(c, 0, &mut t.release);
        }
        let tail = npages % HPAGE_PAGES;
        if tail != 0 {
            if let Some(c) = self.chunks.get_mut(&(keep - 1)) {
                match c {
                    Chunk::Huge(pfn) if pinned(*pfn, HPAGE_PAGES) => t.zero = Some((*pfn + tail, HPAGE_PAGES - tail)),
                    Chunk::Huge(pfn) => {
                        let base = *pfn;
                        let mut pfns = Box::new([0; HPAGE_PAGES as usize]);
                        for (i, p) in pfns.iter_mut().enumerate().take(tail as usize) {
                            *p = base + i as u64;
                        }
                        t.free = Some((base + tail, HPAGE_PAGES - tail));
                        self.resident -= HPAGE_PAGES - tail;
                        self.small += 1;
                        *c = Chunk::Small(pfns);
                    }
                    Chunk::Small(pfns) => {
                        for p in &mut pfns[tail as usize..] {
                            if *p != 0 {
                                t.release.push((*p, 0));
                                *p = 0;
                                self.resident -= 1;
                            }
                        }
                    }
                }
            }
        }
        self.npages = npages;
        t
    }
}

fn release(c: Chunk, from: usize, out: &mut Vec<(u64, u8)>) {
    match c {
        Chunk::Huge(pfn) => out.push((pfn, HPAGE_ORDER)),
        Chunk::Small(pfns) => out.extend(pfns[from..].iter().filter(|&&p| p != 0).map(|&p| (p, 0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out blocks from a bump pointer, 2 MiB blocks until `huge_left` runs out.
    struct Bump {
        next: u64,
        huge_left: u32,
    }

    impl FrameSource for Bump {
        fn alloc(&mut self, order: u8) -> Result<u64, Error> {
            if order == HPAGE_ORDER {
                if self.huge_left == 0 {
                    return Err(Error::NoMem);
                }
                self.huge_left -= 1;
                self.next = self.next.next_multiple_of(HPAGE_PAGES);
            }
            let pfn = self.next;
            self.next += 1 << order;
            Ok(pfn)
        }
    }

    #[test]
    fn huge_folios_where_a_whole_chunk_exists() {
        let mut src = Bump { next: 1, huge_left: 8 };
        let mut f = Folios::new(1024 + 3, true);
        let mut out = Vec::new();
        f.runs(0, 1027, 0, &mut src, &mut out).unwrap();
        // Two huge folios, then three small pages: all physically adjacent here, so one run.
        assert_eq!(out, vec![Run { idx: 0, pfn: 512, len: 1027 }]);
        assert_eq!(f.resident(), 1027);
        assert_eq!(f.pfn(1026, false, &mut src), Ok(1538));
        assert_eq!(f.pfn(1027, false, &mut src), Err(Error::Fault));
        assert_eq!(f.runs(1000, 28, 0, &mut src, &mut out), Err(Error::Fault));
    }

    #[test]
    fn falls_back_to_small_pages_without_a_2mib_block() {
        let mut src = Bump { next: 1, huge_left: 0 };
        let mut f = Folios::new(512, true);
        let mut out = Vec::new();
        f.runs(10, 4, 100, &mut src, &mut out).unwrap();
        assert_eq!(out, vec![Run { idx: 100, pfn: 1, len: 4 }]);
        assert_eq!(f.resident(), 4);
        assert_eq!(f.pfn(0, false, &mut src), Ok(0));
        let folios = f.folios(false, &mut src).unwrap();
        assert_eq!(folios.len(), 4);
        assert_eq!(f.folios(true, &mut src).unwrap().len(), 512);
    }

    #[test]
    fn truncate_splits_an_unpinned_huge_folio_and_zeroes_a_pinned_one() {
        let mut src = Bump { next: 1, huge_left: 8 };
        let mut f = Folios::new(2048, true);
        f.runs(0, 2048, 0, &mut src, &mut Vec::new()).unwrap(); // chunks at 512, 1024, 1536, 2048
        let t = f.truncate(1100, |_, _| false);
        assert_eq!(t.release, vec![(2048, 9)]);
        assert_eq!(t.free, Some((1536 + 76, 512 - 76)));
        assert_eq!(f.resident(), 1100);
        assert_eq!(f.pfn(1099, false, &mut src), Ok(1536 + 75));
        let t = f.truncate(600, |_, _| true);
        assert_eq!(t.zero, Some((1024 + 88, 512 - 88)));
        assert_eq!(t.release.len(), 76);
        assert_eq!(f.resident(), 1024);
        assert_eq!(f.heap_bytes(), 2 * 32); // the split chunk went with the second truncation
        assert_eq!(f.take_all(), vec![(512, 9), (1024, 9)]);
        assert_eq!(f.resident(), 0);
    }

    #[test]
    fn runs_fault_in_what_is_missing_between_present_chunks() {
        let mut src = Bump { next: 1, huge_left: 1 };
        let mut f = Folios::new(1536, true);
        assert_eq!(f.pfn(600, true, &mut src), Ok(600)); // chunk 1: the one huge folio, at PFN 512
        assert_eq!(f.pfn(5, true, &mut src), Ok(1024)); // chunk 0: small pages from here
        let mut out = Vec::new();
        f.runs(4, 1530, 0, &mut src, &mut out).unwrap();
        assert_eq!(f.resident(), 512 + 508 + 510);
        let pages: u64 = out.iter().map(|r| r.len).sum();
        assert_eq!(pages, 1530);
        assert_eq!(out.iter().find(|r| r.idx <= 1 && 1 < r.idx + r.len).map(|r| r.pfn + 1 - r.idx), Some(1024));
        assert!(out.windows(2).all(|w| w[0].idx + w[0].len == w[1].idx));
    }

    #[test]
    fn adopt_checks_the_place() {
        let mut f = Folios::new(1024, true);
        assert_eq!(f.adopt(512, 4096, 9), Ok(()));
        assert_eq!(f.adopt(512, 8192, 0), Err(Error::Inval));
        assert_eq!(f.adopt(3, 8192, 9), Err(Error::Inval));
        assert_eq!(f.adopt(3, 8192, 0), Ok(()));
        assert_eq!(f.adopt(3, 8193, 0), Err(Error::Inval));
        assert_eq!(f.resident(), 513);
        assert_eq!(f.heap_bytes(), 2 * 32 + 4096);
    }
}
