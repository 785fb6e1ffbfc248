//! The unit's translation caches: a set-associative IOTLB and paging-structure cache with LRU
//! replacement, and a context cache. All are tagged by domain id, as hardware tags them.
use std::collections::HashMap;

use crate::entry::{level_shift, TranslationType};

const EMPTY: u64 = u64::MAX;

/// Packs a cache key: did (16 bits) | kind (2 bits) | page number (45 bits).
#[inline]
pub(crate) fn key(did: u16, kind: u32, vpn: u64) -> u64 {
    (did as u64) << 47 | (kind as u64) << 45 | (vpn & ((1 << 45) - 1))
}

#[inline]
fn key_did(key: u64) -> u16 {
    (key >> 47) as u16
}

#[inline]
fn key_kind(key: u64) -> usize {
    ((key >> 45) & 3) as usize
}

/// A set-associative cache of `key → (address, permission)` with LRU replacement per set.
///
/// A probe reads one fingerprint byte per way, eight ways to a word, and compares the matching
/// ways' full tags only: no branch on which way holds the key (its position is random and
/// mispredicts). Each set is padded to a multiple of eight ways; padding ways stay empty. An
/// address is page aligned, so its entry keeps the permission in its low bits.
#[derive(Debug, Clone)]
pub(crate) struct SetAssoc {
    tags: Vec<u64>,
    /// Fingerprint bytes, one per way (0: empty), eight ways per word.
    fps: Vec<u64>,
    /// Address | permission.
    vals: Vec<u64>,
    stamps: Vec<u64>,
    /// Ways per set; 0 for a disabled cache (its one set of padding ways stays empty).
    ways: usize,
    /// Ways per set including padding: `ways` rounded up to a multiple of eight.
    stride: usize,
    /// Sets − 1 (the set count is a power of two).
    set_mask: usize,
    clock: u64,
    /// Valid entries per kind, so lookups skip kinds (page sizes) that hold nothing.
    counts: [u32; 4],
    /// Bit k set while `counts[k]` is not zero.
    kinds: u32,
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const PERM_MASK: u64 = 0xff;

impl SetAssoc {
    /// A cache of at most `entries` entries in sets of `ways`; the set count is rounded down
    /// to a power of two. Zero entries disables the cache.
    pub(crate) fn new(entries: u32, ways: u32) -> Self {
        let ways = ways.clamp(1, entries.max(1)) as usize;
        let sets = (entries as usize / ways).max(1);
        let sets = if entries == 0 { 0 } else { 1usize << sets.ilog2() };
        let stride = ways.next_multiple_of(8);
        // A disabled cache keeps one set of empty ways, so a lookup needs no test first.
        let n = sets.max(1) * stride;
        SetAssoc {
            tags: vec![EMPTY; n],
            fps: vec![0; n / 8],
            vals: vec![0; n],
            stamps: vec![0; n],
            ways: if sets == 0 { 0 } else { ways },
            stride,
            set_mask: sets.saturating_sub(1),
            clock: 0,
            counts: [0; 4],
            kinds: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        (self.tags.len() / self.stride) * self.ways
    }

    #[inline(always)]
    fn set_fp(&mut self, i: usize, fp: u8) {
        let shift = (i % 8) * 8;
        let w = &mut self.fps[i / 8];
        *w = (*w & !(0xff << shift)) | (fp as u64) << shift;
    }

    /// The kinds (bit k for kind k) that hold entries: a lookup probes only those.
    #[inline(always)]
    pub(crate) fn kinds(&self) -> u32 {
        self.kinds
    }

    #[inline(always)]
    pub(crate) fn lookup(&mut self, key: u64) -> Option<(u64, u8)> {
        self.probe().lookup(key)
    }

    /// A burst of lookups with the cache's arrays and clock in locals (a batch's hit loop):
    /// stores to the LRU stamps then cannot make the compiler read the cache's fields again.
    #[inline(always)]
    pub(crate) fn probe(&mut self) -> Probe<'_> {
        Probe {
            tags: &self.tags,
            fps: &self.fps,
            vals: &self.vals,
            stamps: &mut self.stamps,
            stride: self.stride,
            set_mask: self.set_mask,
            clock: self.clock,
            home: &mut self.clock,
        }
    }

    /// Inserts or refreshes `key`; a no-op (inlined, so no call) when the cache is disabled.
    #[inline(always)]
    pub(crate) fn insert(&mut self, key: u64, val: u64, perm: u8) {
        if self.enabled() {
            self.insert_entry(key, val, perm);
        }
    }

    /// Whether the cache has room at all (zero entries disable it).
    #[inline(always)]
    pub(crate) fn enabled(&self) -> bool {
        self.ways != 0
    }

    /// [`insert`](Self::insert) into a cache known to be enabled.
    pub(crate) fn insert_entry(&mut self, key: u64, val: u64, perm: u8) {
        debug_assert_eq!(val & PERM_MASK, 0, "cached addresses are page aligned");
        let (base, fp) = slot(key, self.set_mask, self.stride);
        // The key's own way if present (never duplicate a key), else the first empty way, else
        // the least recently used one.
        let victim = match find(&self.fps, &self.tags, self.stride, base, fp, key) {
            Some(i) => i,
            None => {
                let (mut empty, mut lru) = (usize::MAX, base);
                let mut oldest = u64::MAX;
                for i in base..base + self.ways {
                    if self.tags[i] == EMPTY {
                        empty = empty.min(i);
                        continue;
                    }
                    // Select without a branch: which way is oldest is data-dependent.
                    let s = self.stamps[i];
                    let older = s < oldest;
                    lru = if older { i } else { lru };
                    oldest = if older { s } else { oldest };
                }
                if empty != usize::MAX {
                    empty
                } else {
                    lru
                }
            }
        };
        let old = self.tags[victim];
        if old != EMPTY {
            self.uncount(key_kind(old));
        }
        self.counts[key_kind(key)] += 1;
        self.kinds |= 1 << key_kind(key);
        self.clock += 1;
        self.tags[victim] = key;
        self.set_fp(victim, fp);
        self.vals[victim] = val | perm as u64;
        self.stamps[victim] = self.clock;
    }

    #[inline(always)]
    fn uncount(&mut self, kind: usize) {
        self.counts[kind] -= 1;
        if self.counts[kind] == 0 {
            self.kinds &= !(1 << kind);
        }
    }

    /// Drops the entries for which `drop(key)` holds; returns how many.
    pub(crate) fn invalidate(&mut self, mut drop: impl FnMut(u64) -> bool) -> usize {
        let mut n = 0;
        for i in 0..self.tags.len() {
            let k = self.tags[i];
            if k != EMPTY && drop(k) {
                self.uncount(key_kind(k));
                self.tags[i] = EMPTY;
                self.set_fp(i, 0);
                n += 1;
            }
        }
        n
    }

    pub(crate) fn invalidate_domain(&mut self, did: u16) -> usize {
        self.invalidate(|k| key_did(k) == did)
    }

    /// Drops the entries of `did` whose span intersects `[start, end]`; `level_of(kind)` gives
    /// the paging level an entry of that kind maps.
    pub(crate) fn invalidate_range(&mut self, did: u16, start: u64, end: u64, level_of: fn(usize) -> u32) -> usize {
        self.invalidate(|k| {
            if key_did(k) != did {
                return false;
            }
            let shift = level_shift(level_of(key_kind(k)));
            let lo = (k & ((1 << 45) - 1)) << shift;
            let hi = lo + ((1u64 << shift) - 1);
            lo <= end && start <= hi
        })
    }

    pub(crate) fn clear(&mut self) -> usize {
        self.invalidate(|_| true)
    }

    pub(crate) fn len(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }
}

/// The first way of `key`'s set and the key's fingerprint (never 0, the empty way's): the set
/// from bits 32 and up of a multiplicative hash, the fingerprint from the eight bits below.
#[inline(always)]
fn slot(key: u64, set_mask: usize, stride: usize) -> (usize, u8) {
    let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (((h >> 32) as usize & set_mask) * stride, ((h >> 24) as u8).max(1))
}

/// Bit 8j+7 set for each byte j of `word` equal to `fp` (exact: no false positives).
#[inline(always)]
fn matches(word: u64, fp: u8) -> u64 {
    let x = word ^ (fp as u64 * 0x0101_0101_0101_0101);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The way index of `key` in the set at `base`, if present: its fingerprint's matches, then
/// their full tags. `base` must come from [`slot`] for a cache with these arrays.
#[inline(always)]
fn find(fps: &[u64], tags: &[u64], stride: usize, base: usize, fp: u8, key: u64) -> Option<usize> {
    debug_assert!(base + stride <= tags.len() && tags.len() == fps.len() * 8);
    for w in (base..base + stride).step_by(8) {
        // SAFETY: `base + stride <= tags.len()` (a set's ways are inside the arrays), and
        // `fps` holds one word per eight ways.
        let mut m = matches(unsafe { *fps.get_unchecked(w / 8) }, fp);
        while m != 0 {
            let i = w + (m.trailing_zeros() / 8) as usize;
            // SAFETY: as above, `i < w + 8 <= base + stride`.
            if unsafe { *tags.get_unchecked(i) } == key {
                return Some(i);
            }
            m &= m - 1;
        }
    }
    None
}

/// What [`SetAssoc::probe`] returns; the clock goes back to the cache when it is dropped.
pub(crate) struct Probe<'a> {
    tags: &'a [u64],
    fps: &'a [u64],
    vals: &'a [u64],
    stamps: &'a mut [u64],
    stride: usize,
    set_mask: usize,
    clock: u64,
    home: &'a mut u64,
}

impl Probe<'_> {
    /// `(address, permission)` of `key`, which becomes its set's most recently used entry.
    #[inline(always)]
    pub(crate) fn lookup(&mut self, key: u64) -> Option<(u64, u8)> {
        // A disabled cache has one set of empty ways: nothing matches.
        let (base, fp) = slot(key, self.set_mask, self.stride);
        let i = find(self.fps, self.tags, self.stride, base, fp, key)?;
        self.clock += 1;
        // SAFETY: `find` returns a way inside the arrays, which all have the same length.
        unsafe {
            *self.stamps.get_unchecked_mut(i) = self.clock;
            let v = *self.vals.get_unchecked(i);
            Some((v & !PERM_MASK, v as u8))
        }
    }
}

impl Drop for Probe<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        *self.home = self.clock;
    }
}

/// IOTLB kinds are leaf levels 1..=3 stored as 0..=2.
pub(crate) fn iotlb_level(kind: usize) -> u32 {
    kind as u32 + 1
}

/// Paging-structure-cache kinds are non-leaf entry levels 2..=5 stored as 0..=3.
pub(crate) fn psc_level(kind: usize) -> u32 {
    kind as u32 + 2
}

/// What the context cache keeps of a context entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedContext {
    /// Domain id.
    pub did: u16,
    /// Second-level page-table pointer.
    pub slptptr: u64,
    /// Paging levels (AW + 2).
    pub levels: u32,
    /// Translation type.
    pub tt: TranslationType,
    /// Fault processing disable.
    pub fpd: bool,
}

/// A fully associative context cache keyed by requester id, LRU-replaced.
#[derive(Debug, Clone)]
pub(crate) struct ContextCache {
    map: HashMap<u16, (CachedContext, u64)>,
    capacity: usize,
    clock: u64,
}

impl ContextCache {
    pub(crate) fn new(capacity: u32) -> Self {
        ContextCache { map: HashMap::new(), capacity: capacity as usize, clock: 0 }
    }

    pub(crate) fn get(&mut self, sid: u16) -> Option<CachedContext> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(&sid).map(|(c, stamp)| {
            *stamp = clock;
            *c
        })
    }

    pub(crate) fn insert(&mut self, sid: u16, ctx: CachedContext) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&sid) {
            if let Some(&old) = self.map.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| k) {
                self.map.remove(&old);
            }
        }
        self.clock += 1;
        self.map.insert(sid, (ctx, self.clock));
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u16, &CachedContext) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|&sid, (c, _)| keep(sid, c));
        before - self.map.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cached addresses are page aligned.
    const P: u64 = 4096;

    #[test]
    fn lru_within_a_set() {
        let mut c = SetAssoc::new(2, 2); // one set of two ways
        c.insert(key(1, 0, 10), 100 * P, 3);
        c.insert(key(1, 0, 11), 110 * P, 3);
        assert!(c.lookup(key(1, 0, 10)).is_some()); // 10 is now most recent
        c.insert(key(1, 0, 12), 120 * P, 3); // evicts 11
        assert_eq!(c.lookup(key(1, 0, 11)), None);
        assert_eq!(c.lookup(key(1, 0, 10)), Some((100 * P, 3)));
        assert_eq!(c.lookup(key(1, 0, 12)), Some((120 * P, 3)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn lru_victim_is_the_oldest_way_and_empty_ways_go_first() {
        let mut c = SetAssoc::new(4, 4); // one set of four ways
        for vpn in 0..4 {
            c.insert(key(1, 0, vpn), vpn * P, 3);
        }
        for vpn in [0, 3, 1] {
            assert!(c.lookup(key(1, 0, vpn)).is_some()); // 2 is now the oldest, in way 2
        }
        c.insert(key(1, 0, 4), 4 * P, 3);
        assert_eq!(c.lookup(key(1, 0, 2)), None);
        c.insert(key(1, 0, 5), 5 * P, 3); // then 0
        assert_eq!(c.lookup(key(1, 0, 0)), None);
        assert_eq!(c.invalidate(|k| k == key(1, 0, 3)), 1);
        c.insert(key(1, 0, 6), 6 * P, 3); // the freed way, not the oldest live entry (1)
        for vpn in [1, 4, 5, 6] {
            assert!(c.lookup(key(1, 0, vpn)).is_some(), "{vpn}");
        }
        assert_eq!(c.len(), 4);
        // re-inserting a key behind a freed way updates it in place instead of duplicating it
        c.invalidate(|k| k == key(1, 0, 1));
        c.insert(key(1, 0, 6), 60 * P, 1);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(key(1, 0, 6)), Some((60 * P, 1)));
    }

    #[test]
    fn sets_wider_than_eight_ways_and_padded_sets() {
        for ways in [3u32, 8, 16, 24] {
            let mut c = SetAssoc::new(ways, ways); // one set
            assert_eq!(c.capacity(), ways as usize);
            for vpn in 0..ways as u64 {
                c.insert(key(2, 0, vpn), vpn * P, 1);
            }
            // every key is found in its own way, whatever its fingerprint shares with others
            for vpn in 0..ways as u64 {
                assert_eq!(c.lookup(key(2, 0, vpn)), Some((vpn * P, 1)), "{ways} ways, vpn {vpn}");
            }
            assert_eq!(c.len(), ways as usize);
            c.insert(key(2, 0, 1000), 1000 * P, 3); // evicts vpn 0, the least recently used
            assert_eq!(c.lookup(key(2, 0, 0)), None);
            assert_eq!(c.lookup(key(2, 0, 1000)), Some((1000 * P, 3)));
            assert_eq!(c.len(), ways as usize);
            assert_eq!(c.clear(), ways as usize);
            assert_eq!((c.len(), c.kinds()), (0, 0));
            assert_eq!(c.lookup(key(2, 0, 1)), None);
        }
    }

    #[test]
    fn range_invalidation_catches_superpages() {
        let mut c = SetAssoc::new(64, 8);
        c.insert(key(5, 1, 1), 0x20_0000, 3); // 2 MiB page at 2 MiB
        c.insert(key(5, 0, 0x300), 0x30_0000, 3); // 4 KiB at 3 MiB
        c.insert(key(6, 1, 1), 0x20_0000, 3); // other domain
        // a 4 KiB PSI inside the 2 MiB page removes it, not the 4 KiB entry outside
        assert_eq!(c.invalidate_range(5, 0x21_0000, 0x21_0fff, iotlb_level), 1);
        assert_eq!(c.lookup(key(5, 1, 1)), None);
        assert!(c.lookup(key(5, 0, 0x300)).is_some());
        assert!(c.lookup(key(6, 1, 1)).is_some());
        assert_eq!(c.invalidate_domain(6), 1);
        assert_eq!((c.counts, c.kinds()), ([1, 0, 0, 0], 1));
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = SetAssoc::new(0, 8);
        c.insert(key(1, 0, 1), 1, 1);
        assert_eq!(c.lookup(key(1, 0, 1)), None);
        assert_eq!(c.capacity(), 0);
    }
}
