//! `struct page` pin counts by PFN.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::HPAGE_PAGES;

/// Chunk numbers are dense small integers: a multiplicative hash spreads them cheaply.
#[derive(Default)]
struct ChunkHasher(u64);

impl Hasher for ChunkHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Chunks per group: a group covers 1 GiB of PFNs, one lookup per GiB walked.
const GROUP_CHUNKS: u64 = 512;

/// The counts of 1 GiB of PFNs: the whole-chunk counters packed together (2 KiB, so pinning whole
/// 2 MiB runs touches few cache lines), per-page counters only for chunks a run covered in part.
struct Group {
    whole: [i32; GROUP_CHUNKS as usize],
    pins: [Option<Box<[i32; HPAGE_PAGES as usize]>>; GROUP_CHUNKS as usize],
}

/// Groups indexed directly: the first 4 TiB of PFNs (a pointer per GiB, grown as pinned);
/// PFNs beyond are hashed.
const DENSE_GROUPS: u64 = 4096;

/// Pin counts of pages by PFN: a run covering a whole 2 MiB-aligned chunk bumps one counter,
/// partial runs count per page. Groups stay once created (pin counts are hot; the map only grows
/// with pinned memory).
#[derive(Default)]
pub struct PinCounts {
    dense: Vec<Option<Box<Group>>>,
    sparse: HashMap<u64, Box<Group>, BuildHasherDefault<ChunkHasher>>,
    total: i64,
    /// Heap bytes of the groups and per-page counters.
    bytes: u64,
}

fn new_group() -> Box<Group> {
    Box::new(Group { whole: [0; GROUP_CHUNKS as usize], pins: std::array::from_fn(|_| None) })
}

impl PinCounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sum of all pin counts (a page pinned twice counts twice).
    pub fn total(&self) -> i64 {
        self.total
    }

    /// Heap bytes held (what the binding reports to V8).
    pub fn heap_bytes(&self) -> u64 {
        self.bytes + self.dense.capacity() as u64 * 8
    }

    /// Pins `n` pages from `pfn`.
    pub fn pin(&mut self, pfn: u64, n: u64) {
        self.total += n as i64;
        self.walk(pfn, n, 1);
    }

    /// Unpins `n` pages from `pfn`.
    pub fn unpin(&mut self, pfn: u64, n: u64) {
        self.total -= n as i64;
        self.walk(pfn, n, -1);
    }

    fn group(&self, gi: u64) -> Option<&Group> {
        if gi < DENSE_GROUPS {
            self.dense.get(gi as usize).and_then(|g| g.as_deref())
        } else {
            self.sparse.get(&gi).map(|g| &**g)
        }
    }

    fn group_mut(&mut self, gi: u64) -> &mut Group {
        let bytes = &mut self.bytes;
        let make = || {
            *bytes += std::mem::size_of::<Group>() as u64;
            new_group()
        };
        if gi >= DENSE_GROUPS {
            return self.sparse.entry(gi).or_insert_with(make);
        }
        if self.dense.len() <= gi as usize {
            self.dense.resize_with(gi as usize + 1, || None);
        }
        self.dense[gi as usize].get_or_insert_with(make)
    }

    /// The whole-chunk count and the per-page counts of chunk `ci`.
    fn chunk(&self, ci: u64) -> Option<(i32, Option<&[i32; HPAGE_PAGES as usize]>)> {
        let i = (ci % GROUP_CHUNKS) as usize;
        self.group(ci / GROUP_CHUNKS).map(|g| (g.whole[i], g.pins[i].as_deref()))
    }

    /// Pin count of the page at `pfn`.
    pub fn count(&self, pfn: u64) -> i64 {
        match self.chunk(pfn / HPAGE_PAGES) {
            None => 0,
            Some((whole, pins)) => whole as i64 + pins.map_or(0, |p| p[(pfn % HPAGE_PAGES) as usize] as i64),
        }
    }

    /// Sum of the pin counts of `[pfn, pfn + n)`.
    pub fn count_range(&self, pfn: u64, n: u64) -> i64 {
        let mut sum = 0;
        let end = pfn + n;
        let mut p = pfn;
        while p < end {
            let ci = p / HPAGE_PAGES;
            let off = p % HPAGE_PAGES;
            let len = (end - p).min(HPAGE_PAGES - off);
            if let Some((whole, pins)) = self.chunk(ci) {
                sum += whole as i64 * len as i64;
                if let Some(pins) = pins {
                    sum += pins[off as usize..(off + len) as usize].iter().map(|&x| x as i64).sum::<i64>();
                }
            }
            p += len;
        }
        sum
    }

    fn walk(&mut self, pfn: u64, n: u64, delta: i32) {
        let end = pfn + n;
        let mut p = pfn;
        while p < end {
            // One group lookup, then every chunk of the run inside that group.
            let gi = p / (HPAGE_PAGES * GROUP_CHUNKS);
            let mut boxes = 0;
            let g = self.group_mut(gi);
            let group_end = end.min((gi + 1) * HPAGE_PAGES * GROUP_CHUNKS);
            while p < group_end {
                let ci = p / HPAGE_PAGES;
                let off = p % HPAGE_PAGES;
                let len = (group_end - p).min(HPAGE_PAGES - off);
                let i = (ci % GROUP_CHUNKS) as usize;
                if len == HPAGE_PAGES {
                    g.whole[i] += delta;
                } else {
                    let pins = g.pins[i].get_or_insert_with(|| {
                        boxes += 1;
                        Box::new([0; HPAGE_PAGES as usize])
                    });
                    for x in &mut pins[off as usize..(off + len) as usize] {
                        *x += delta;
                    }
                }
                p += len;
            }
            self.bytes += boxes * HPAGE_PAGES * 4;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_chunks_and_pieces_count_alike() {
        let mut c = PinCounts::new();
        c.pin(1024, 512);
        c.pin(1030, 4);
        assert_eq!(c.count(1024), 1);
        assert_eq!(c.count(1031), 2);
        assert_eq!(c.count(1536), 0);
        assert_eq!(c.count_range(1000, 600), 512 + 4);
        assert_eq!(c.total(), 516);
        assert_eq!(c.heap_bytes() - c.dense.capacity() as u64 * 8, std::mem::size_of::<Group>() as u64 + 2048);
        c.unpin(1024, 512);
        assert_eq!(c.count(1024), 0);
        assert_eq!(c.count(1033), 1);
        c.unpin(1030, 4);
        assert_eq!(c.count_range(0, 1 << 20), 0);
        assert_eq!(c.total(), 0);
    }

    #[test]
    fn runs_across_group_edges() {
        let mut c = PinCounts::new();
        let g = HPAGE_PAGES * GROUP_CHUNKS;
        c.pin(g - 3, 6);
        c.pin(g - 512, 1024);
        assert_eq!(c.count(g - 513), 0);
        assert_eq!(c.count(g - 4), 1);
        assert_eq!(c.count(g - 3), 2);
        assert_eq!(c.count(g + 2), 2);
        assert_eq!(c.count(g + 3), 1);
        assert_eq!(c.count_range(g - 1024, 2048), 1030);
        c.unpin(g - 3, 6);
        c.unpin(g - 512, 1024);
        assert_eq!((c.count_range(0, 4 * g), c.total()), (0, 0));
        // Far PFNs are hashed, not indexed.
        let far = g * DENSE_GROUPS + 7;
        c.pin(far, 3);
        assert_eq!((c.count(far + 2), c.count(far + 3), c.dense.len()), (1, 0, 2));
    }

    #[test]
    fn runs_across_chunk_edges() {
        let mut c = PinCounts::new();
        c.pin(500, 600); // 12 pages of chunk 0, all of chunk 1, 76 of chunk 2
        assert_eq!(c.count(499), 0);
        assert_eq!(c.count(500), 1);
        assert_eq!(c.count(1099), 1);
        assert_eq!(c.count(1100), 0);
        assert_eq!(c.count_range(0, 2048), 600);
    }
}
