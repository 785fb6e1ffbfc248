//! Auditing a handed-over page table in ONE walk ("trust but verify"): does it translate exactly
//! the expected runs, through tables that were all handed over, each reached once — and how much
//! does it map in all? [`PageTable::verify_runs`] plus [`PageTable::mapped_pages`] answer the
//! same with two walks and a list of every table page; this is the next kernel's check at the
//! cost of one read of each table page.
//!
//! The walk goes depth first in entry order, so leaves come in ascending IOVA; the expected runs,
//! sorted, are merged against them with a cursor: an expected page the walk passes without a
//! leaf translating it is a mismatch, as is a leaf translating it wrongly. Bounded whatever the
//! tables hold: a table not handed over is not entered, a table reached twice stops the walk, and
//! the handed-over pages bound the rest.
use physmem::PhysMem;

use crate::entry::*;
use crate::pgtable::verify::first_mismatch;
use crate::{Corruption, Error, PageTable, Prot, Result};

/// A run the table must translate: `size` bytes from `iova` onto `pa` (all 4 KiB aligned) with
/// exactly the permissions `prot` (R and W; snoop is not compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedRun {
    /// First IOVA.
    pub iova: u64,
    /// PA of the first page.
    pub pa: u64,
    /// Bytes.
    pub size: u64,
    /// R and W the leaves must carry (and every entry above them grant).
    pub prot: Prot,
}

/// What [`PageTable::verify_handover`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandoverAudit {
    /// The lowest expected page the hardware would not translate onto its PA with exactly its
    /// run's permissions, among those the walk reached before it stopped (if it did).
    pub mismatch: Option<u64>,
    /// Why the walk stopped: [`Error::Corrupt`] for a table reached twice (a cycle or a shared
    /// table) or lying beyond memory.
    pub corrupt: Option<Error>,
    /// The first table an entry points at that is not among the handed-over pages (not entered).
    pub foreign_table: Option<u64>,
    /// 4 KiB pages mapped by present leaves (R or W, the software view) of the tables walked.
    pub pages: u64,
    /// Table pages walked (each handed over, each once).
    pub tables: u64,
}

/// A sorted expected run, in bytes, with the R|W its leaves must carry.
#[derive(Clone, Copy)]
struct Run {
    iova: u64,
    end: u64,
    pa: u64,
    want: u64,
}

struct Walk<'a> {
    mem: &'a PhysMem,
    haw: u32,
    leaf_levels: u8,
    rsvd: SlpteRsvd,
    /// Sorted, deduplicated; `seen[i]` once `handed[i]` was walked.
    handed: Vec<u64>,
    seen: Vec<bool>,
    runs: Vec<Run>,
    /// The run holding the next expected page not yet accounted for, and that page.
    r: usize,
    cur: u64,
    out: HandoverAudit,
}

impl Walk<'_> {
    fn mismatch(&mut self, iova: u64) {
        self.out.mismatch = Some(self.out.mismatch.map_or(iova, |m| m.min(iova)));
    }

    /// Advances the cursor to `to`: expected pages below it that it passes were not translated.
    fn miss_before(&mut self, to: u64) {
        while self.r < self.runs.len() && self.cur < to {
            let run = self.runs[self.r];
            self.mismatch(self.cur);
            if run.end <= to {
                self.next_run();
            } else {
                self.cur = to;
            }
        }
    }

    fn next_run(&mut self) {
        self.r += 1;
        if let Some(run) = self.runs.get(self.r) {
            self.cur = run.iova;
        }
    }

    /// The expected pieces in `[lo, hi)` (after `miss_before(lo)`), each `(iova, end, pa, want)`,
    /// handed to `f` in order; the cursor moves past them.
    fn pieces(&mut self, lo: u64, hi: u64, mut f: impl FnMut(&mut Self, u64, u64, u64, u64)) {
        self.miss_before(lo);
        while self.r < self.runs.len() && self.cur < hi {
            let run = self.runs[self.r];
            let end = run.end.min(hi);
            f(self, self.cur, end, run.pa + (self.cur - run.iova), run.want);
            if end == run.end {
                self.next_run();
            } else {
                self.cur = end;
            }
        }
    }

    /// Walks `table` at `level`, covering IOVAs from `base`; `perm` is the R|W the entries above
    /// grant, `hw` whether the hardware would get here (no reserved bit on the way). False: stop.
    fn table(&mut self, table: u64, level: u32, base: u64, perm: u64, hw: bool) -> bool {
        let i = match self.handed.binary_search(&table) {
            Ok(i) => i,
            Err(_) => {
                self.out.foreign_table.get_or_insert(table);
                return true;
            }
        };
        if self.seen[i] {
            self.out.corrupt = Some(Error::Corrupt { table, why: Corruption::ReachedTwice });
            return false;
        }
        self.seen[i] = true;
        // In place when the memory lends the page, else a copy.
        let mem = self.mem;
        let mut copy = [0u64; 512];
        let words = match mem.page_u64s(table) {
            Some(words) => words,
            None if mem.read_u64s(table, &mut copy).is_ok() => &copy,
            None => {
                self.out.corrupt = Some(Error::Corrupt { table, why: Corruption::BeyondMemory });
                return false;
            }
        };
        self.out.tables += 1;
        if level == 1 {
            // A table whose 512 entries all matched an expected page is 512 present ones.
            let matched = self.leaves(words, base, perm, hw);
            self.out.pages += if matched == 512 { 512 } else { words.iter().map(|&w| slpte_present(w) as u64).sum::<u64>() };
            return true;
        }
        let span = level_size(level);
        // The next table down loads while this one is checked (tables lie scattered: the
        // hardware prefetcher does not see the next one coming).
        let haw = self.haw;
        let table_at = move |w: u64| (slpte_present(w) && !slpte_is_leaf(w, level)).then(|| slpte_addr(w, haw));
        let mut next = words.iter().position(|&w| table_at(w).is_some());
        for (k, &w) in words.iter().enumerate() {
            if next == Some(k) {
                next = words[k + 1..].iter().position(|&w| table_at(w).is_some()).map(|i| k + 1 + i);
                if let Some(after) = next.and_then(|i| table_at(words[i])) {
                    mem.prefetch_page(after);
                }
            }
            if !slpte_present(w) {
                continue;
            }
            let lo = base + k as u64 * span;
            let ok = hw && w & self.rsvd.mask(w, level) == 0;
            if slpte_is_leaf(w, level) {
                self.out.pages = self.out.pages.saturating_add(span >> 12);
                self.superpage(w, level, lo, perm, ok);
            } else if !self.table(slpte_addr(w, self.haw), level - 1, lo, perm & w, ok) {
                return false;
            }
        }
        true
    }

    /// A leaf at `level` > 1 translating `[lo, lo + its size)`.
    fn superpage(&mut self, pte: u64, level: u32, lo: u64, perm: u64, ok: bool) {
        let ok = ok && self.leaf_levels & (1 << (level - 1)) != 0;
        let phys_max = haw_mask(self.haw);
        let addr = slpte_addr(pte, self.haw);
        self.pieces(lo, lo + level_size(level), |w, a, b, pa, want| {
            if !ok || pte & (SL_R | SL_W) != want || perm & want != want || addr + (a - lo) != pa {
                w.mismatch(a);
            } else if pa + (b - a - 1) > phys_max {
                w.mismatch(a + (phys_max + 1).saturating_sub(pa));
            }
        });
    }

    /// The 4 KiB leaves of an L1 table covering `[base, base + 2 MiB)`; returns how many
    /// entries matched their expected page.
    fn leaves(&mut self, words: &[u64; 512], base: u64, perm: u64, hw: bool) -> usize {
        let mut matched = 0;
        let phys_max = haw_mask(self.haw);
        let cmp = (phys_max & !0xfff) | SL_R | SL_W | self.rsvd.table[1];
        self.pieces(base, base + level_size(2), |w, a, b, pa, want| {
            if !hw || perm & want != want {
                return w.mismatch(a);
            }
            let i0 = ((a - base) >> 12) as usize;
            // Pages past the host address width never translate.
            let n = (((b - a) >> 12) as usize).min(if pa > phys_max { 0 } else { (((phys_max - pa) >> 12) + 1) as usize });
            match first_mismatch(&words[i0..i0 + n], cmp, pa | want) {
                Some(k) => w.mismatch(a + ((k as u64) << 12)),
                None if n < ((b - a) >> 12) as usize => w.mismatch(a + ((n as u64) << 12)),
                None => matched += n,
            }
        });
        matched
    }
}

impl PageTable {
    /// Trust but verify, in one walk: whether the table translates every 4 KiB page of every
    /// run onto its PA with exactly the run's permissions (as [`verify_runs`](Self::verify_runs)
    /// judges it: the hardware view, reserved bits and SLLPS included, R and W ANDed down the
    /// levels), through table pages that are all among `handed_over`, each reached once; and how
    /// many 4 KiB pages present leaves map (as [`mapped_pages`](Self::mapped_pages) counts them).
    /// The table maps exactly the runs when nothing is amiss and `pages` is their page count.
    ///
    /// Runs may come in any order; an expected page two runs name is a mismatch. A table not in
    /// `handed_over` is not entered (its IOVAs count as unmapped); a table reached twice or
    /// beyond memory stops the walk ([`HandoverAudit::corrupt`]). Nothing the tables hold makes
    /// it fail, panic or loop; errors are for malformed runs only (as `verify_runs`).
    ///
    /// Cost: one copy of each table page walked, one compare per 4 KiB entry, one binary search
    /// of `handed_over` per table; no allocation per page.
    pub fn verify_handover(&self, mem: &PhysMem, runs: &[ExpectedRun], handed_over: &[u64]) -> Result<HandoverAudit> {
        let mut sorted = Vec::with_capacity(runs.len());
        for r in runs {
            for value in [r.iova, r.pa, r.size] {
                if !value.is_multiple_of(4096) {
                    return Err(Error::Unaligned { value, align: 4096 });
                }
            }
            if r.size == 0 {
                return Err(Error::EmptyRange);
            }
            let (Some(end), Some(_)) = (r.iova.checked_add(r.size), r.pa.checked_add(r.size)) else {
                return Err(Error::OutOfRange { iova: r.iova, size: r.size, width: 64 });
            };
            if !r.prot.read && !r.prot.write {
                return Err(Error::NoPermission);
            }
            let want = (r.prot.read as u64 * SL_R) | (r.prot.write as u64 * SL_W);
            sorted.push(Run { iova: r.iova, end, pa: r.pa, want });
        }
        sorted.sort_unstable_by_key(|r| r.iova);
        let mut handed = handed_over.to_vec();
        handed.sort_unstable();
        handed.dedup();
        let c = self.config();
        let mut w = Walk {
            mem,
            haw: c.haw,
            leaf_levels: c.leaf_levels,
            // Bit 62 (TM) counts as reserved in 4 KiB leaves, as verify_runs has it.
            rsvd: SlpteRsvd::new(c.haw, c.snoop, false),
            seen: vec![false; handed.len()],
            handed,
            runs: Vec::with_capacity(sorted.len()),
            r: 0,
            cur: sorted.first().map_or(0, |r| r.iova),
            out: HandoverAudit::default(),
        };
        // Overlapping runs: the pages two runs name cannot both hold.
        for run in sorted {
            match w.runs.last().copied() {
                Some(prev) if run.iova < prev.end => {
                    w.mismatch(run.iova);
                    if run.end > prev.end {
                        let cut = prev.end - run.iova;
                        w.runs.push(Run { iova: prev.end, end: run.end, pa: run.pa + cut, want: run.want });
                    }
                }
                _ => w.runs.push(run),
            }
        }
        if w.table(self.pgd(), c.levels, 0, SL_R | SL_W, true) {
            // Whatever is left was not translated by anything the walk met.
            w.miss_before(u64::MAX);
        }
        Ok(w.out)
    }
}

#[cfg(test)]
mod tests;
