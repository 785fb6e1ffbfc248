//! The pinned side of a `struct iopt_pages` (pages.c): its physically contiguous runs, sorted by
//! page index, and the windows of page indices its filled areas use. A page is pinned once however
//! many areas and domains use it; each area's window counts as one user.

use crate::{push_run, PinCounts, Run};

/// A window of page indices `[first, last]` used `users` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    first: u64,
    last: u64,
    users: u32,
}

/// The pinned runs and used windows of one `iopt_pages`.
#[derive(Default)]
pub struct PagesRuns {
    runs: Vec<Run>,
    spans: Vec<Span>,
    npinned: u64,
}

impl PagesRuns {
    pub fn new() -> Self {
        Self::default()
    }

    /// Heap bytes held (what the binding reports to V8).
    pub fn heap_bytes(&self) -> u64 {
        (self.runs.capacity() * std::mem::size_of::<Run>() + self.spans.capacity() * std::mem::size_of::<Span>()) as u64
    }

    /// Pages pinned (`pages->npinned`).
    pub fn npinned(&self) -> u64 {
        self.npinned
    }

    /// The pieces of `[first, last]` no window uses yet (what a new user must pin), ascending.
    pub fn holes(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        let mut cur = first;
        for s in &self.spans {
            if s.last < cur {
                continue;
            }
            if s.first > last {
                break;
            }
            if s.first > cur {
                holes.push((cur, s.first - 1));
            }
            cur = s.last + 1;
            if cur > last {
                break;
            }
        }
        if cur <= last {
            holes.push((cur, last));
        }
        holes
    }

    /// One more user of `[first, last]`: `got` are the runs of its holes (see [`PagesRuns::holes`]),
    /// resolved by the caller in index order; each of their pages gets one pin in `counts`.
    pub fn pin(&mut self, first: u64, last: u64, got: &[Run], counts: &mut PinCounts) {
        let mut n = 0;
        for r in got {
            counts.pin(r.pfn, r.len);
            n += r.len;
        }
        self.npinned += n;
        if self.spans.is_empty() {
            // Nothing pinned yet: the runs are the whole list, in order.
            self.runs.clear();
            self.runs.extend_from_slice(got);
            self.spans.push(Span { first, last, users: 1 });
            return;
        }
        self.insert_runs(got);
        self.add_span(first, last);
    }

    /// One user of `[first, last]` fewer: pages nobody uses any more lose their pin. Returns how
    /// many pages were unpinned.
    pub fn unpin(&mut self, first: u64, last: u64, counts: &mut PinCounts) -> u64 {
        if let [only] = self.spans[..] {
            if only.first == first && only.last == last && only.users == 1 {
                // The common case: the one area using these pages goes away.
                self.spans.clear();
                return self.drop_runs(first, last, counts);
            }
        }
        self.split(first);
        self.split(last + 1);
        let mut dropped = 0;
        let mut keep = Vec::with_capacity(self.spans.len());
        for mut s in std::mem::take(&mut self.spans) {
            if s.first >= first && s.last <= last {
                s.users -= 1;
                if s.users == 0 {
                    dropped += self.drop_runs(s.first, s.last, counts);
                    continue;
                }
            }
            keep.push(s);
        }
        self.spans = merge(keep);
        dropped
    }

    /// Calls `emit(iova_pfn, pfn, len)` for the map batch of page indices `[first, last]` (which
    /// must be pinned) placed at IOVA page `iova_pfn` onwards: one entry per run, or per page when
    /// `small`.
    pub fn batch(&self, first: u64, last: u64, iova_pfn: u64, small: bool, mut emit: impl FnMut(u64, u64, u64)) {
        let lo = self.runs.partition_point(|r| r.idx + r.len <= first);
        for r in self.runs[lo..].iter().take_while(|r| r.idx <= last) {
            let a = r.idx.max(first);
            let b = (r.idx + r.len - 1).min(last);
            let p = r.pfn + (a - r.idx);
            let at = iova_pfn + (a - first);
            if small {
                for k in 0..=b - a {
                    emit(at + k, p + k, 1);
                }
            } else {
                emit(at, p, b - a + 1);
            }
        }
    }

    /// Entries [`PagesRuns::batch`] would emit.
    pub fn batch_len(&self, first: u64, last: u64, small: bool) -> u64 {
        if small {
            return last - first + 1;
        }
        let lo = self.runs.partition_point(|r| r.idx + r.len <= first);
        self.runs[lo..].iter().take_while(|r| r.idx <= last).count() as u64
    }

    /// Merges `got` (sorted, outside every run) into the run list.
    fn insert_runs(&mut self, got: &[Run]) {
        if got.is_empty() {
            return;
        }
        if self.runs.last().is_none_or(|r| r.idx < got[0].idx) {
            for r in got {
                push_run(&mut self.runs, r.idx, r.pfn, r.len);
            }
            return;
        }
        let old = std::mem::take(&mut self.runs);
        let mut out = Vec::with_capacity(old.len() + got.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < got.len() {
            let r = if j == got.len() || (i < old.len() && old[i].idx < got[j].idx) {
                i += 1;
                old[i - 1]
            } else {
                j += 1;
                got[j - 1]
            };
            push_run(&mut out, r.idx, r.pfn, r.len);
        }
        self.runs = out;
    }

    /// Unpins and forgets the runs inside `[first, last]`, splitting runs at the edges.
    fn drop_runs(&mut self, first: u64, last: u64, counts: &mut PinCounts) -> u64 {
        let mut dropped = 0;
        let whole = match (self.runs.first(), self.runs.last()) {
            (Some(a), Some(z)) => first <= a.idx && last >= z.idx + z.len - 1,
            _ => true,
        };
        if whole {
            // Everything goes: no splitting, no copies.
            for r in self.runs.drain(..) {
                counts.unpin(r.pfn, r.len);
                dropped += r.len;
            }
        } else {
            let mut next = Vec::with_capacity(self.runs.len() + 1);
            for &Run { idx: a, pfn: p, len } in &self.runs {
                let b = a + len - 1;
                if b < first || a > last {
                    next.push(Run { idx: a, pfn: p, len });
                    continue;
                }
                let lo = a.max(first);
                let hi = b.min(last);
                counts.unpin(p + (lo - a), hi - lo + 1);
                dropped += hi - lo + 1;
                if a < lo {
                    next.push(Run { idx: a, pfn: p, len: lo - a });
                }
                if hi < b {
                    next.push(Run { idx: hi + 1, pfn: p + (hi + 1 - a), len: b - hi });
                }
            }
            self.runs = next;
        }
        self.npinned -= dropped;
        dropped
    }

    fn add_span(&mut self, first: u64, last: u64) {
        self.split(first);
        self.split(last + 1);
        let mut out = Vec::with_capacity(self.spans.len() + 2);
        let mut cur = first;
        for mut s in std::mem::take(&mut self.spans) {
            if s.last < first || s.first > last {
                out.push(s);
                continue;
            }
            if s.first > cur {
                out.push(Span { first: cur, last: s.first - 1, users: 1 });
            }
            s.users += 1;
            out.push(s);
            cur = s.last + 1;
        }
        if cur <= last {
            out.push(Span { first: cur, last, users: 1 });
        }
        out.sort_by_key(|s| s.first);
        self.spans = merge(out);
    }

    fn split(&mut self, at: u64) {
        if let Some(i) = self.spans.iter().position(|s| s.first < at && at <= s.last) {
            let s = self.spans[i];
            self.spans[i] = Span { last: at - 1, ..s };
            self.spans.insert(i + 1, Span { first: at, ..s });
        }
    }
}

fn merge(spans: Vec<Span>) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(prev) if prev.last + 1 == s.first && prev.users == s.users => prev.last = s.last,
            _ => out.push(s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(p: &PagesRuns, first: u64, last: u64, small: bool) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        p.batch(first, last, 1000, small, |a, b, c| out.push((a, b, c)));
        assert_eq!(out.len() as u64, p.batch_len(first, last, small));
        out
    }

    #[test]
    fn one_area_pins_and_unpins_everything() {
        let mut c = PinCounts::new();
        let mut p = PagesRuns::new();
        assert_eq!(p.holes(0, 1023), vec![(0, 1023)]);
        p.pin(0, 1023, &[Run { idx: 0, pfn: 512, len: 512 }, Run { idx: 512, pfn: 4096, len: 512 }], &mut c);
        assert_eq!(p.npinned(), 1024);
        assert_eq!(c.count(4096), 1);
        assert_eq!(batch(&p, 10, 600, false), vec![(1000, 522, 502), (1502, 4096, 89)]);
        assert_eq!(batch(&p, 510, 513, true), vec![(1000, 1022, 1), (1001, 1023, 1), (1002, 4096, 1), (1003, 4097, 1)]);
        assert_eq!(p.holes(0, 2000), vec![(1024, 2000)]);
        assert_eq!(p.unpin(0, 1023, &mut c), 1024);
        assert_eq!(c.total(), 0);
        assert_eq!(p.npinned(), 0);
    }

    #[test]
    fn overlapping_areas_share_pins() {
        let mut c = PinCounts::new();
        let mut p = PagesRuns::new();
        p.pin(0, 99, &[Run { idx: 0, pfn: 1000, len: 100 }], &mut c);
        // A second area over [50, 149]: only [100, 149] is pinned anew.
        assert_eq!(p.holes(50, 149), vec![(100, 149)]);
        p.pin(50, 149, &[Run { idx: 100, pfn: 1100, len: 50 }], &mut c);
        assert_eq!(p.npinned(), 150);
        assert_eq!(c.count(1060), 1);
        assert_eq!(batch(&p, 50, 149, false), vec![(1000, 1050, 100)]);
        // The first area goes: [0, 49] loses its pins, [50, 99] stays for the second.
        assert_eq!(p.unpin(0, 99, &mut c), 50);
        assert_eq!(c.count(1049), 0);
        assert_eq!(c.count(1050), 1);
        assert_eq!(p.holes(0, 149), vec![(0, 49)]);
        assert_eq!(p.unpin(50, 149, &mut c), 100);
        assert_eq!(c.total(), 0);
        assert_eq!(p.holes(0, 149), vec![(0, 149)]);
    }

    #[test]
    fn a_hole_between_areas_is_filled_in_place() {
        let mut c = PinCounts::new();
        let mut p = PagesRuns::new();
        p.pin(0, 9, &[Run { idx: 0, pfn: 100, len: 10 }], &mut c);
        p.pin(20, 29, &[Run { idx: 20, pfn: 300, len: 10 }], &mut c);
        assert_eq!(p.holes(0, 29), vec![(10, 19)]);
        p.pin(0, 29, &[Run { idx: 10, pfn: 500, len: 10 }], &mut c);
        assert_eq!(batch(&p, 0, 29, false), vec![(1000, 100, 10), (1010, 500, 10), (1020, 300, 10)]);
        assert_eq!(p.unpin(0, 29, &mut c), 10);
        assert_eq!(p.unpin(0, 9, &mut c), 10);
        assert_eq!(p.unpin(20, 29, &mut c), 10);
        assert_eq!((c.total(), p.npinned()), (0, 0));
    }
}
