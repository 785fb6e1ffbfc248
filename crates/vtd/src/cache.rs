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
/// Tags are stored apart from values so a probe touches one cache line of tags.
#[derive(Debug, Clone)]
pub(crate) struct SetAssoc {
    tags: Vec<u64>,
    vals: Vec<u64>,
    perms: Vec<u8>,
    stamps: Vec<u64>,
    ways: usize,
    set_bits: u32,
    clock: u64,
    /// Valid entries per kind, so lookups skip kinds (page sizes) that hold nothing.
    pub(crate) counts: [u32; 4],
}

impl SetAssoc {
    /// A cache of at most `entries` entries in sets of `ways`; the set count is rounded down
    /// to a power of two. Zero entries disables the cache.
    pub(crate) fn new(entries: u32, ways: u32) -> Self {
        let ways = ways.clamp(1, entries.max(1)) as usize;
        let sets = (entries as usize / ways).max(1);
        let sets = if entries == 0 { 0 } else { 1usize << sets.ilog2() };
        let n = sets * ways;
        SetAssoc {
            tags: vec![EMPTY; n],
            vals: vec![0; n],
            perms: vec![0; n],
            stamps: vec![0; n],
            ways,
            set_bits: if sets == 0 { 0 } else { sets.ilog2() },
            clock: 0,
            counts: [0; 4],
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.tags.len()
    }

    #[inline(always)]
    fn set_base(&self, key: u64) -> usize {
        if self.set_bits == 0 {
            0
        } else {
            ((key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.set_bits)) as usize) * self.ways
        }
    }

    /// Whether no entry is valid (one test instead of one per kind).
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.counts == [0; 4]
    }

    #[inline(always)]
    pub(crate) fn lookup(&mut self, key: u64) -> Option<(u64, u8)> {
        if self.tags.is_empty() {
            return None;
        }
        let base = self.set_base(key);
        let way = self.tags[base..base + self.ways].iter().position(|&t| t == key)?;
        let i = base + way;
        self.clock += 1;
        self.stamps[i] = self.clock;
        Some((self.vals[i], self.perms[i]))
    }

    /// Inserts or refreshes `key`; a no-op (inlined, so no call) when the cache is disabled.
    #[inline(always)]
    pub(crate) fn insert(&mut self, key: u64, val: u64, perm: u8) {
        if !self.tags.is_empty() {
            self.insert_entry(key, val, perm);
        }
    }

    fn insert_entry(&mut self, key: u64, val: u64, perm: u8) {
        let base = self.set_base(key);
        // The key's own way if present (never duplicate a key), else the first empty way, else
        // the least recently used one.
        let (mut hit, mut empty, mut lru) = (usize::MAX, usize::MAX, base);
        let mut oldest = u64::MAX;
        for i in base..base + self.ways {
            let t = self.tags[i];
            if t == key {
                hit = i;
                break;
            }
            if t == EMPTY {
                empty = empty.min(i);
                continue;
            }
            // Select without a branch: which way is oldest is data-dependent and mispredicts.
            let s = self.stamps[i];
            let older = s < oldest;
            lru = if older { i } else { lru };
            oldest = if older { s } else { oldest };
        }
        let victim = if hit != usize::MAX { hit } else if empty != usize::MAX { empty } else { lru };
        let old = self.tags[victim];
        if old != EMPTY {
            self.counts[key_kind(old)] -= 1;
        }
        self.counts[key_kind(key)] += 1;
        self.clock += 1;
        self.tags[victim] = key;
        self.vals[victim] = val;
        self.perms[victim] = perm;
        self.stamps[victim] = self.clock;
    }

    /// Drops the entries for which `drop(key)` holds; returns how many.
    pub(crate) fn invalidate(&mut self, mut drop: impl FnMut(u64) -> bool) -> usize {
        let mut n = 0;
        for i in 0..self.tags.len() {
            let k = self.tags[i];
            if k != EMPTY && drop(k) {
                self.counts[key_kind(k)] -= 1;
                self.tags[i] = EMPTY;
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

    #[test]
    fn lru_within_a_set() {
        let mut c = SetAssoc::new(2, 2); // one set of two ways
        c.insert(key(1, 0, 10), 100, 3);
        c.insert(key(1, 0, 11), 110, 3);
        assert!(c.lookup(key(1, 0, 10)).is_some()); // 10 is now most recent
        c.insert(key(1, 0, 12), 120, 3); // evicts 11
        assert_eq!(c.lookup(key(1, 0, 11)), None);
        assert_eq!(c.lookup(key(1, 0, 10)), Some((100, 3)));
        assert_eq!(c.lookup(key(1, 0, 12)), Some((120, 3)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn lru_victim_is_the_oldest_way_and_empty_ways_go_first() {
        let mut c = SetAssoc::new(4, 4); // one set of four ways
        for vpn in 0..4 {
            c.insert(key(1, 0, vpn), vpn, 3);
        }
        for vpn in [0, 3, 1] {
            assert!(c.lookup(key(1, 0, vpn)).is_some()); // 2 is now the oldest, in way 2
        }
        c.insert(key(1, 0, 4), 4, 3);
        assert_eq!(c.lookup(key(1, 0, 2)), None);
        c.insert(key(1, 0, 5), 5, 3); // then 0
        assert_eq!(c.lookup(key(1, 0, 0)), None);
        assert_eq!(c.invalidate(|k| k == key(1, 0, 3)), 1);
        c.insert(key(1, 0, 6), 6, 3); // the freed way, not the oldest live entry (1)
        for vpn in [1, 4, 5, 6] {
            assert!(c.lookup(key(1, 0, vpn)).is_some(), "{vpn}");
        }
        assert_eq!(c.len(), 4);
        // re-inserting a key behind a freed way updates it in place instead of duplicating it
        c.invalidate(|k| k == key(1, 0, 1));
        c.insert(key(1, 0, 6), 60, 1);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(key(1, 0, 6)), Some((60, 1)));
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
        assert_eq!(c.counts, [1, 0, 0, 0]);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut c = SetAssoc::new(0, 8);
        c.insert(key(1, 0, 1), 1, 1);
        assert_eq!(c.lookup(key(1, 0, 1)), None);
        assert_eq!(c.capacity(), 0);
    }
}
