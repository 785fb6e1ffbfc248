//! Auditing a table handed over by the previous kernel ("trust but verify"): does it translate
//! exactly the expected runs ([`PageTable::verify_runs`]), and how much does it map in all
//! ([`PageTable::mapped_pages`])? Both only read memory, and no table contents can make them
//! panic or loop: a walk descends at most `levels` entries, and the audit refuses a table it
//! reaches twice.
use std::collections::HashSet;

use physmem::PhysMem;

use super::{PageTable, Prot};
use crate::entry::*;
use crate::{Corruption, Error, Result};

/// What [`PageTable::mapped_pages`] found under the top-level table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MappedSummary {
    /// 4 KiB pages mapped by present leaves: a 2 MiB leaf counts 512, a 1 GiB leaf 262,144.
    pub pages: u64,
    /// Every table page reached, the top first, then depth first in entry order.
    pub tables: Vec<u64>,
}

/// A tag no IOVA region has (regions are IOVA >> 21 or more).
const NO_TAG: u64 = u64::MAX;
/// Below this many entries, reading them one by one beats copying the whole table.
const LOAD_TABLE_MIN: usize = 16;

/// Where the walk for one IOVA ended.
enum Step {
    /// At the L1 table `table`, reached through entries granting `perm` (R|W).
    Table { table: u64, perm: u64 },
    /// At the superpage leaf `pte` of `level`, reached through entries granting `perm`.
    Leaf { level: u32, pte: u64, perm: u64 },
    /// Nothing translates the IOVA: an entry not present, with reserved bits set, or beyond
    /// memory.
    Miss,
}

/// A read-only walker that remembers, per level, the table the last walk passed through, so
/// consecutive pages of a run resume at the lowest table whose region still holds them: one
/// descent per L1 table or superpage, not per page.
struct Verifier<'a> {
    mem: &'a PhysMem,
    levels: u32,
    haw: u32,
    leaf_levels: u8,
    rsvd: SlpteRsvd,
    /// R|W the leaves must carry.
    want: u64,
    /// Per level `l`: the table at level `l` for the IOVA region `tag[l]` (IOVA >>
    /// `level_shift(l + 1)`), and the R|W the entries above it grant.
    tag: [u64; 6],
    table: [u64; 6],
    perm: [u64; 6],
    /// The L1 table whose entries `words` holds (`NO_TAG`: none).
    loaded: u64,
    words: [u64; 512],
}

impl<'a> Verifier<'a> {
    fn new(pt: &PageTable, mem: &'a PhysMem, want: u64) -> Self {
        let c = pt.config;
        let mut v = Verifier {
            mem,
            levels: c.levels,
            haw: c.haw,
            leaf_levels: c.leaf_levels,
            // Bit 62 (TM) counts as reserved in 4 KiB leaves, as on VT-d 3.2 and later; Linux
            // never sets it.
            rsvd: SlpteRsvd::new(c.haw, c.snoop, false),
            want,
            tag: [NO_TAG; 6],
            table: [0; 6],
            perm: [0; 6],
            loaded: NO_TAG,
            words: [0; 512],
        };
        // Every IOVA below the width is in the top table's one region.
        v.tag[c.levels as usize] = 0;
        v.table[c.levels as usize] = pt.pgd;
        v.perm[c.levels as usize] = SL_R | SL_W;
        v
    }

    /// Walks `iova` (below the width) from the lowest remembered table whose region holds it.
    #[inline]
    fn descend(&mut self, iova: u64) -> Step {
        let mut l = 1;
        while l < self.levels && self.tag[l as usize] != iova >> level_shift(l + 1) {
            l += 1;
        }
        let (mut table, mut perm) = (self.table[l as usize], self.perm[l as usize]);
        while l > 1 {
            let Some(pte) = self.mem.dma_read_u64(table + 8 * level_index(iova, l)) else {
                return Step::Miss;
            };
            if !slpte_present(pte) || pte & self.rsvd.mask(pte, l) != 0 {
                return Step::Miss;
            }
            if slpte_is_leaf(pte, l) {
                return Step::Leaf { level: l, pte, perm };
            }
            perm &= pte;
            table = slpte_addr(pte, self.haw);
            l -= 1;
            self.tag[l as usize] = iova >> level_shift(l + 1);
            self.table[l as usize] = table;
            self.perm[l as usize] = perm;
        }
        Step::Table { table, perm: perm & (SL_R | SL_W) }
    }

    /// The first page of the run `[iova, iova+size)` that does not translate to `pa` + its
    /// offset with exactly the wanted permissions.
    fn run(&mut self, iova: u64, pa: u64, size: u64) -> Option<u64> {
        let width_end = level_size(self.levels + 1);
        let phys_max = haw_mask(self.haw);
        let want = self.want;
        let end = iova + size;
        let mut cur = iova;
        while cur < end {
            let phys = pa + (cur - iova);
            if cur >= width_end || phys > phys_max {
                return Some(cur);
            }
            match self.descend(cur) {
                Step::Miss => return Some(cur),
                Step::Leaf { level, pte, perm } => {
                    let span = level_size(level);
                    let lo = cur & !(span - 1);
                    // One comparison covers every page of the run inside the superpage: both
                    // sides advance by the same offset.
                    if self.leaf_levels & (1 << (level - 1)) == 0
                        || pte & (SL_R | SL_W) != want
                        || perm & want != want
                        || slpte_addr(pte, self.haw) + (cur - lo) != phys
                    {
                        return Some(cur);
                    }
                    cur = (lo + span).min(end);
                }
                Step::Table { table, perm } => {
                    if perm & want != want {
                        return Some(cur);
                    }
                    let i0 = level_index(cur, 1) as usize;
                    // Up to the table's end, the run's end, and the last PA the width allows.
                    let n = (512 - i0 as u64).min((end - cur) >> 12).min(((phys_max - phys) >> 12) + 1) as usize;
                    if let Some(k) = self.scan(table, i0, n, phys) {
                        return Some(cur + ((k as u64) << 12));
                    }
                    cur += (n as u64) << 12;
                }
            }
        }
        None
    }

    /// The first of the `n` 4 KiB leaves from index `i0` of the L1 table `table` that is not
    /// `phys + 4 KiB × k | want` (address, R/W and reserved bits compared; ignored, software
    /// and, where allowed, SNP bits not).
    #[inline]
    fn scan(&mut self, table: u64, i0: usize, n: usize, phys: u64) -> Option<usize> {
        let cmp = (haw_mask(self.haw) & !0xfff) | SL_R | SL_W | self.rsvd.table[1];
        let expect = phys | self.want;
        if self.loaded != table && n >= LOAD_TABLE_MIN {
            if self.mem.read_u64s(table, &mut self.words).is_err() {
                return Some(0);
            }
            self.loaded = table;
        }
        if self.loaded == table {
            first_mismatch(&self.words[i0..i0 + n], cmp, expect)
        } else {
            (0..n).find(|&k| match self.mem.dma_read_u64(table + 8 * (i0 + k) as u64) {
                Some(w) => w & cmp != expect + ((k as u64) << 12),
                None => true,
            })
        }
    }
}

/// The first of the consecutive 4 KiB leaves `words` whose bits under `cmp` are not
/// `expect + 4 KiB × k` (leaf `k` maps the `k`-th page of a run). Eight entries are compared at a
/// time without a branch per entry, then the culprit is found.
pub(crate) fn first_mismatch(words: &[u64], cmp: u64, expect: u64) -> Option<usize> {
    let n = words.len();
    let mut k = 0;
    while k + 8 <= n {
        let mut bad = 0u64;
        for j in 0..8 {
            bad |= (words[k + j] & cmp) ^ (expect + (((k + j) as u64) << 12));
        }
        if bad != 0 {
            break;
        }
        k += 8;
    }
    (k..n).find(|&k| words[k] & cmp != expect + ((k as u64) << 12))
}

/// The depth-first audit of [`PageTable::mapped_pages`].
struct Audit<'a> {
    mem: &'a PhysMem,
    haw: u32,
    max: usize,
    seen: HashSet<u64>,
    out: MappedSummary,
}

impl Audit<'_> {
    fn table(&mut self, table: u64, level: u32) -> Result<()> {
        let corrupt = |why| Error::Corrupt { table, why };
        if self.seen.contains(&table) {
            return Err(corrupt(Corruption::ReachedTwice));
        }
        if self.out.tables.len() >= self.max {
            return Err(corrupt(Corruption::TooManyTables { max: self.max }));
        }
        let mut words = [0u64; 512];
        self.mem.read_u64s(table, &mut words).map_err(|_| corrupt(Corruption::BeyondMemory))?;
        self.seen.insert(table);
        self.out.tables.push(table);
        if level == 1 {
            let n = words.iter().filter(|&&w| slpte_present(w)).count() as u64;
            self.out.pages = self.out.pages.saturating_add(n);
            return Ok(());
        }
        for w in words {
            if !slpte_present(w) {
                continue;
            }
            if slpte_is_leaf(w, level) {
                self.out.pages = self.out.pages.saturating_add(level_size(level) >> 12);
            } else {
                self.table(slpte_addr(w, self.haw), level - 1)?;
            }
        }
        Ok(())
    }
}

impl PageTable {
    /// Trust but verify: whether every 4 KiB page of every run `(iova, pa, size)` translates to
    /// `pa` plus its offset in the run, with permissions exactly `prot` — the leaf's R and W
    /// equal `prot.read` and `prot.write`, and every table entry above it grants them (the
    /// hardware ANDs the levels). `prot.snoop`, SNP where ECAP.SC allows it, and the bits the
    /// hardware ignores (63, 61:52) are not compared. Superpages are fine wherever the
    /// translation is right: the check is on the translation, not the leaf size; a leaf at a
    /// level SLLPS does not allow is a mismatch.
    ///
    /// Returns `Ok(None)` if every page matches, else `Ok(Some(iova))` of the first page that
    /// does not (in run order, then ascending within a run). Whatever the tables hold, a page
    /// the hardware would not translate so is a mismatch, never an error: an entry not present
    /// or with reserved bits set (`SlpteRsvd` for this width and ECAP.SC; bit 62 counts as
    /// reserved), a table beyond memory, an IOVA beyond the address width, a PA beyond the host
    /// address width. The interrupt window is not checked (the allocator never hands it out).
    ///
    /// Errors are for malformed runs only, checked as each run is reached: an IOVA, PA or size
    /// not 4 KiB aligned ([`Error::Unaligned`]), a zero size ([`Error::EmptyRange`]), an end past
    /// 2^64 ([`Error::OutOfRange`]); and a `prot` granting neither read nor write
    /// ([`Error::NoPermission`]).
    ///
    /// Cost: one walk from the lowest table still valid per L1 table or superpage reached, one
    /// copy of each L1 table entered for 16 pages or more, and one compare per 4 KiB entry.
    pub fn verify_runs<I>(&self, mem: &PhysMem, runs: I, prot: Prot) -> Result<Option<u64>>
    where
        I: IntoIterator<Item = (u64, u64, u64)>,
    {
        if !prot.read && !prot.write {
            return Err(Error::NoPermission);
        }
        let mut v = Verifier::new(self, mem, prot.bits() & (SL_R | SL_W));
        for (iova, pa, size) in runs {
            for value in [iova, pa, size] {
                if !value.is_multiple_of(4096) {
                    return Err(Error::Unaligned { value, align: 4096 });
                }
            }
            if size == 0 {
                return Err(Error::EmptyRange);
            }
            if iova.checked_add(size).is_none() || pa.checked_add(size).is_none() {
                return Err(Error::OutOfRange { iova, size, width: 64 });
            }
            if let Some(at) = v.run(iova, pa, size) {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    /// How many 4 KiB pages present leaves map (the software view, as [`walk`](Self::walk):
    /// R or W makes an entry present, PS a leaf at levels 2 and 3, reserved bits are not
    /// checked), and every table page reached, top first. With [`verify_runs`](Self::verify_runs)
    /// this proves a handed-over table maps the expected runs and nothing else.
    ///
    /// Bounded whatever the tables hold: fails with [`Error::Corrupt`] if a table is reached a
    /// second time (a cycle, or a table shared by two entries: [`Corruption::ReachedTwice`]),
    /// if more than `max_tables` table pages would be visited
    /// ([`Corruption::TooManyTables`]), or if a table lies beyond memory
    /// ([`Corruption::BeyondMemory`]).
    pub fn mapped_pages(&self, mem: &PhysMem, max_tables: usize) -> Result<MappedSummary> {
        let mut audit = Audit { mem, haw: self.config.haw, max: max_tables, seen: HashSet::new(), out: MappedSummary::default() };
        audit.table(self.pgd, self.config.levels)?;
        Ok(audit.out)
    }
}

#[cfg(test)]
mod tests;
