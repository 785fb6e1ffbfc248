//! Sets of frame numbers kept as coalesced extents, so their size follows fragmentation, not the
//! configured memory size.
use std::collections::BTreeMap;

/// Disjoint, coalesced `[start, start+len)` extents of frame numbers.
#[derive(Debug, Default, Clone)]
pub(crate) struct Extents {
    map: BTreeMap<u64, u64>,
    total: u64,
}

impl Extents {
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &l)| (s, l))
    }

    pub(crate) fn host_bytes(&self) -> u64 {
        // A B-tree entry is two u64 plus node overhead; an estimate is enough for statistics.
        self.map.len() as u64 * 40
    }

    /// The set of sorted, disjoint, non-adjacent `(start, len)` extents (len > 0), built in one
    /// pass instead of one tree insert each.
    pub(crate) fn from_sorted(extents: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut total = 0;
        let map: BTreeMap<u64, u64> = extents
            .into_iter()
            .inspect(|&(_, l)| {
                debug_assert!(l > 0);
                total += l;
            })
            .collect();
        debug_assert!(map.iter().zip(map.iter().skip(1)).all(|((&s, &l), (&t, _))| s + l < t));
        Extents { map, total }
    }

    /// Adds a range that must not overlap the set.
    pub(crate) fn insert(&mut self, mut start: u64, mut len: u64) {
        debug_assert!(!self.overlaps(start, len));
        self.total += len;
        if let Some((&s, &l)) = self.map.range(..start).next_back() {
            if s + l == start {
                self.map.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(l) = self.map.remove(&(start + len)) {
            len += l;
        }
        self.map.insert(start, len);
    }

    /// Removes every frame of the range that is in the set.
    pub(crate) fn remove(&mut self, start: u64, len: u64) {
        let end = start + len;
        let first = self.map.range(..=start).next_back().map(|(&s, _)| s).unwrap_or(start);
        let hits: Vec<(u64, u64)> = self.map.range(first..end).map(|(&s, &l)| (s, l)).collect();
        for (s, l) in hits {
            let e = s + l;
            if e <= start {
                continue;
            }
            self.map.remove(&s);
            self.total -= l;
            if s < start {
                self.map.insert(s, start - s);
                self.total += start - s;
            }
            if e > end {
                self.map.insert(end, e - end);
                self.total += e - end;
            }
        }
    }

    /// Whether the whole range is in the set.
    pub(crate) fn contains(&self, start: u64, len: u64) -> bool {
        matches!(self.map.range(..=start).next_back(), Some((&s, &l)) if s + l >= start + len)
    }

    /// Whether any frame of the range is in the set.
    pub(crate) fn overlaps(&self, start: u64, len: u64) -> bool {
        if let Some((&s, &l)) = self.map.range(..=start).next_back() {
            if s + l > start {
                return true;
            }
        }
        self.map.range(start..start + len).next().is_some()
    }

    /// Whether any frame of the `(start, len)` ranges, sorted by start, is in the set: one
    /// pass over the extents from the first range on.
    pub(crate) fn overlaps_any_sorted(&self, ranges: &[(u64, u64)]) -> bool {
        let Some(&(first, _)) = ranges.first() else { return false };
        let from = self.map.range(..=first).next_back().map_or(first, |(&s, _)| s);
        overlaps_any_sorted(self.map.range(from..).map(|(&s, &l)| (s, l)), ranges)
    }

    /// The first `n`-aligned block of `n` frames in the set at or after `hint`, wrapping around.
    pub(crate) fn find_aligned(&self, hint: u64, n: u64) -> Option<u64> {
        let fit = |s: u64, l: u64, from: u64| {
            let a = from.max(s).next_multiple_of(n);
            (a + n <= s + l).then_some(a)
        };
        if let Some((&s, &l)) = self.map.range(..=hint).next_back() {
            if let Some(a) = fit(s, l, hint) {
                return Some(a);
            }
        }
        self.map
            .range(hint + 1..)
            .chain(self.map.range(..=hint))
            .find_map(|(&s, &l)| fit(s, l, s))
    }
}

/// Whether any of the `(start, len)` `ranges`, sorted by start, meets one of the disjoint
/// `extents`, sorted by start: one merge of the two.
pub(crate) fn overlaps_any_sorted(extents: impl Iterator<Item = (u64, u64)>, ranges: &[(u64, u64)]) -> bool {
    let mut extents = extents.peekable();
    for &(start, len) in ranges {
        // Extents ending at or before this range cannot meet it or any later one.
        while extents.next_if(|&(s, l)| s + l <= start).is_some() {}
        match extents.peek() {
            Some(&(s, _)) if s < start + len => return true,
            Some(_) => {}
            None => return false,
        }
    }
    false
}

/// What frames without data read as: extents of a fill byte (coalesced when adjacent and equal);
/// frames outside every extent read as [`POISON`](crate::POISON). Zeroing or filling untouched
/// memory is an extent operation, so it costs nothing per frame.
#[derive(Debug, Clone, Default)]
pub(crate) struct FillMap {
    map: BTreeMap<u64, (u64, u8)>,
}

impl FillMap {
    #[inline]
    pub(crate) fn get(&self, fn_: u64) -> u8 {
        match self.map.range(..=fn_).next_back() {
            Some((&s, &(l, b))) if fn_ < s + l => b,
            _ => crate::POISON,
        }
    }

    pub(crate) fn host_bytes(&self) -> u64 {
        self.map.len() as u64 * 48
    }

    /// The map of sorted, disjoint `(start, len, byte)` extents, coalescing adjacent ones of one
    /// byte and dropping [`POISON`](crate::POISON) ones, in one pass.
    pub(crate) fn from_sorted(extents: impl IntoIterator<Item = (u64, u64, u8)>) -> Self {
        let mut v: Vec<(u64, (u64, u8))> = Vec::new();
        for (s, l, b) in extents {
            if l == 0 || b == crate::POISON {
                continue;
            }
            match v.last_mut() {
                Some((ps, (pl, pb))) if *ps + *pl == s && *pb == b => *pl += l,
                _ => v.push((s, (l, b))),
            }
        }
        FillMap { map: v.into_iter().collect() }
    }

    /// The extents overlapping `[start, start+len)`, clipped to it.
    pub(crate) fn overlapping(&self, start: u64, len: u64) -> impl Iterator<Item = (u64, u64, u8)> + '_ {
        let end = start + len;
        let first = self.map.range(..=start).next_back().map(|(&s, _)| s).unwrap_or(start);
        self.map.range(first..end).filter_map(move |(&s, &(l, b))| {
            let (a, e) = (s.max(start), (s + l).min(end));
            (a < e).then_some((a, e - a, b))
        })
    }

    /// Makes `[start, start+len)` read as `byte`.
    pub(crate) fn set(&mut self, start: u64, len: u64, byte: u8) {
        let end = start + len;
        // Cut out every stored extent overlapping the range, keeping its parts outside.
        let first = self.map.range(..=start).next_back().map(|(&s, _)| s).unwrap_or(start);
        let hits: Vec<(u64, u64, u8)> = self.map.range(first..end).map(|(&s, &(l, b))| (s, l, b)).collect();
        for (ks, kl, b) in hits {
            if ks + kl <= start {
                continue;
            }
            self.map.remove(&ks);
            if ks < start {
                self.map.insert(ks, (start - ks, b));
            }
            if ks + kl > end {
                self.map.insert(end, (ks + kl - end, b));
            }
        }
        if byte == crate::POISON {
            return;
        }
        let (mut s, mut e) = (start, end);
        if let Some((&ps, &(pl, pb))) = self.map.range(..s).next_back() {
            if ps + pl == s && pb == byte {
                self.map.remove(&ps);
                s = ps;
            }
        }
        if let Some(&(nl, nb)) = self.map.get(&e) {
            if nb == byte {
                self.map.remove(&e);
                e += nl;
            }
        }
        self.map.insert(s, (e - s, byte));
    }
}
