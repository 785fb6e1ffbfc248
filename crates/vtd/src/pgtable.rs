//! The kernel side of second-level page tables: Linux's pre-generic_pt VT-d code
//! (`__domain_mapping`, `domain_unmap`, `intel_iommu_iova_to_phys`) over simulated memory.
use physmem::PhysMem;

use crate::entry::*;
use crate::{Error, Result};

/// What a page table may use: its depth, which levels may hold leaves, whether SNP is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTableConfig {
    /// Paging levels, 3..=5.
    pub levels: u32,
    /// Bit L-1 set when level L may hold a leaf: bit 0 always (4 KiB), bit 1 for 2 MiB, bit 2
    /// for 1 GiB (CAP.SLLPS).
    pub leaf_levels: u8,
    /// ECAP.SC: leaves may carry SNP.
    pub snoop: bool,
    /// Host address width for address fields.
    pub haw: u32,
}

/// Permissions of a mapping, as `DMA_PTE_READ | DMA_PTE_WRITE | DMA_PTE_SNP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prot {
    /// Device may read.
    pub read: bool,
    /// Device may write.
    pub write: bool,
    /// Snooped access (IOMMU_CACHE with ECAP.SC).
    pub snoop: bool,
}

impl Prot {
    /// Read-only.
    pub const R: Prot = Prot { read: true, write: false, snoop: false };
    /// Write-only.
    pub const W: Prot = Prot { read: false, write: true, snoop: false };
    /// Read and write.
    pub const RW: Prot = Prot { read: true, write: true, snoop: false };

    fn bits(self) -> u64 {
        ((self.read as u64) * SL_R) | ((self.write as u64) * SL_W) | ((self.snoop as u64) * SL_SNP)
    }
}

/// Unmapped ranges and table pages waiting for the IOTLB flush (`iommu_iotlb_gather`). Pages on
/// the freelist stay allocated, and readable by the hardware, until
/// [`Unit::iotlb_sync`](crate::Unit::iotlb_sync) flushes and frees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gather {
    range: Option<(u64, u64)>,
    freelist: Vec<u64>,
}

impl Gather {
    /// The gathered IOVA range `[start, end]` (inclusive), if any.
    pub fn range(&self) -> Option<(u64, u64)> {
        self.range
    }
    /// Table pages to free after the flush.
    pub fn freelist(&self) -> &[u64] {
        &self.freelist
    }
    /// Adds `[start, end]`; disjoint ranges widen to one covering range, as the core does.
    pub fn add_range(&mut self, start: u64, end: u64) {
        self.range = Some(match self.range {
            None => (start, end),
            Some((s, e)) => (s.min(start), e.max(end)),
        });
    }
    pub(crate) fn reset(&mut self) {
        self.range = None;
        self.freelist.clear();
    }
}

/// One level of a walk: the entry read at `level` from `pte_pa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStep {
    /// Paging level (the top is `levels`, 1 is the 4 KiB table).
    pub level: u32,
    /// Physical address of the entry.
    pub pte_pa: u64,
    /// The entry.
    pub pte: u64,
}

const M2: u64 = 1 << 21;

/// A table change `map_runs` undoes if a later run fails.
#[derive(Debug)]
enum Undo {
    /// `table` was allocated and installed at `pte_pa`, an entry translating `span` (the
    /// inclusive IOVA range of that entry).
    NewTable { pte_pa: u64, table: u64, span: (u64, u64) },
    /// The empty table subtree `pte` at `pte_pa` made way for a superpage; its pages are
    /// `gather.freelist[freelist]`.
    Displaced { pte_pa: u64, pte: u64, freelist: std::ops::Range<usize> },
}

/// A domain's second-level page table in simulated memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageTable {
    pgd: u64,
    config: PageTableConfig,
}

impl PageTable {
    /// Allocates a zeroed top-level table.
    pub fn new(mem: &mut PhysMem, config: PageTableConfig) -> Result<Self> {
        Self::check_config(&config)?;
        let pgd = mem.alloc(0, true)?;
        Ok(PageTable { pgd, config })
    }

    /// Adopts tables that already exist at `pgd` (the next kernel re-hydrating a domain).
    pub fn from_raw(pgd: u64, config: PageTableConfig) -> Result<Self> {
        Self::check_config(&config)?;
        if !pgd.is_multiple_of(4096) {
            return Err(Error::Unaligned { value: pgd, align: 4096 });
        }
        Ok(PageTable { pgd, config })
    }

    fn check_config(c: &PageTableConfig) -> Result<()> {
        if !(3..=5).contains(&c.levels) {
            return Err(Error::UnsupportedLevels { levels: c.levels });
        }
        if c.leaf_levels & 1 == 0 || c.leaf_levels & !7 != 0 {
            return Err(Error::BadConfig(format!("leaf levels {:#b} must include 4 KiB and stay within 1 GiB", c.leaf_levels)));
        }
        Ok(())
    }

    /// Physical address of the top-level table (the context entry's SLPTPTR).
    pub fn pgd(&self) -> u64 {
        self.pgd
    }
    /// The configuration.
    pub fn config(&self) -> PageTableConfig {
        self.config
    }
    /// Context-entry AW for this depth.
    pub fn aw(&self) -> u8 {
        (self.config.levels - 2) as u8
    }
    /// Input address width in bits.
    pub fn width(&self) -> u32 {
        levels_to_width(self.config.levels)
    }

    fn check_range(&self, iova: u64, size: u64) -> Result<()> {
        for v in [iova, size] {
            if v % 4096 != 0 {
                return Err(Error::Unaligned { value: v, align: 4096 });
            }
        }
        if size == 0 {
            return Err(Error::EmptyRange);
        }
        match iova.checked_add(size) {
            Some(end) if end <= 1u64 << self.width() => Ok(()),
            _ => Err(Error::OutOfRange { iova, size, width: self.width() }),
        }
    }

    /// Maps `[iova, iova+size)` to `[pa, pa+size)`, each step with the largest page the
    /// alignment of `iova | pa`, the remaining size and SLLPS allow (`hardware_largepage_caps`).
    /// Table pages are zeroed frames; non-leaf entries are `table | R | W`, leaves
    /// `pa | prot (| PS)`. Fails without changing anything if part of the range is mapped;
    /// empty tables replaced by a superpage go to `gather` (`switch_to_super_page`). If memory
    /// runs out midway, what was mapped is unmapped into `gather` and the error returned.
    pub fn map(&mut self, mem: &mut PhysMem, iova: u64, pa: u64, size: u64, prot: Prot, gather: &mut Gather) -> Result<()> {
        let bits = self.check_map(mem, iova, pa, size, prot, None)?;
        if let Err((e, done)) = self.map_run(mem, iova, pa, size, bits, gather, &mut None, None) {
            if done > iova {
                self.unmap(mem, iova, done - iova, gather)?;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Maps a batch of runs `(iova, pa, size)`, each exactly as [`map`](Self::map) would, with
    /// one `prot` (`iommu_map_sg` over a scatterlist). All or nothing: if a run fails (already
    /// mapped, by an earlier run of the batch too; out of memory; misaligned; beyond the
    /// address width or memory), every leaf this call wrote is cleared, every table page it
    /// allocated is detached onto `gather`'s freelist and every empty table a superpage
    /// displaced is put back, so the table is word for word as before and
    /// [`Unit::iotlb_sync`](crate::Unit::iotlb_sync) returns every frame the call took; the
    /// runs' ranges, and the span of every entry that pointed at a detached table, are added to
    /// `gather` (so it has a range whenever its freelist has pages) and the error of the failing
    /// run is returned. On
    /// success `gather` holds what `map` would have put there. The runs are iterated twice
    /// only on failure; nothing is allocated per run.
    pub fn map_runs<I>(&mut self, mem: &mut PhysMem, runs: I, prot: Prot, gather: &mut Gather) -> Result<()>
    where
        I: IntoIterator<Item = (u64, u64, u64)>,
        I::IntoIter: Clone,
    {
        let runs = runs.into_iter();
        // Tables installed or displaced: a few per 2 MiB at most, and empty until one is.
        let mut journal = Vec::new();
        // The L1 shortcut stays valid across runs: only a superpage step can detach an L1
        // table, and that step resets it.
        let mut l1 = None;
        for (n, (iova, pa, size)) in runs.clone().enumerate() {
            let r = match self.check_map(mem, iova, pa, size, prot, l1) {
                Ok(bits) => self.map_run(mem, iova, pa, size, bits, gather, &mut l1, Some(&mut journal)),
                Err(e) => Err((e, iova)),
            };
            if let Err((e, done)) = r {
                let mapped = runs.take(n).map(|(iova, _, size)| (iova, iova + size));
                self.roll_back(mem, mapped.chain([(iova, done)]), journal, gather)?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The argument checks of `map`, in its order; returns the leaf bits for `prot`. `l1` is the
    /// L1 table of the last 4 KiB step (see `map_run`): a run inside its 2 MiB region is checked
    /// for leaves there instead of by a walk from the top.
    fn check_map(&self, mem: &PhysMem, iova: u64, pa: u64, size: u64, prot: Prot, l1: Option<(u64, u64)>) -> Result<u64> {
        self.check_range(iova, size)?;
        if !pa.is_multiple_of(4096) {
            return Err(Error::Unaligned { value: pa, align: 4096 });
        }
        if pa.checked_add(size).is_none_or(|e| e > mem.size() || e > 1u64 << self.config.haw) {
            return Err(Error::Mem(physmem::Error::OutOfRange { pa, len: size, size: mem.size() }));
        }
        if !prot.read && !prot.write {
            return Err(Error::NoPermission);
        }
        if prot.snoop && !self.config.snoop {
            return Err(Error::SnoopUnsupported);
        }
        let last = iova + size - 1;
        let mapped = match l1 {
            // The region's L2 entry points at this table, so it holds every leaf of the region.
            Some((region, table)) if iova >> 21 == region && last >> 21 == region => {
                let mut at = None;
                for i in level_index(iova, 1)..=level_index(last, 1) {
                    if slpte_present(mem.read_u64(table + 8 * i)?) {
                        at = Some((iova & !(M2 - 1)) | i << 12);
                        break;
                    }
                }
                at
            }
            _ => self.first_leaf(mem, self.pgd, self.config.levels, iova, last)?,
        };
        if let Some(at) = mapped {
            return Err(Error::AlreadyMapped { iova: at.max(iova) });
        }
        Ok(prot.bits())
    }

    /// `__domain_mapping` of one checked run. `l1` is the L1 table of the last 4 KiB step, so
    /// runs of small pages skip the descent. On failure returns the error and the end of what
    /// was mapped, `[iova, end)`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn map_run(
        &mut self,
        mem: &mut PhysMem,
        iova: u64,
        pa: u64,
        size: u64,
        bits: u64,
        gather: &mut Gather,
        l1: &mut Option<(u64, u64)>,
        mut journal: Option<&mut Vec<Undo>>,
    ) -> std::result::Result<(), (Error, u64)> {
        let end = iova + size;
        let mut cur = iova;
        while cur < end {
            let phys = pa + (cur - iova);
            let level = (1..=3)
                .rev()
                .find(|&l| {
                    self.config.leaf_levels & (1 << (l - 1)) != 0
                        && (cur | phys) & (level_size(l) - 1) == 0
                        && end - cur >= level_size(l)
                })
                .unwrap_or(1);
            let pte_pa = match *l1 {
                Some((region, table)) if level == 1 && cur >> 21 == region => table + 8 * level_index(cur, 1),
                _ => self.pte_for(mem, cur, level, gather, journal.as_deref_mut()).map_err(|e| (e, cur))?,
            };
            *l1 = (level == 1).then_some((cur >> 21, pte_pa & !0xfff));
            let leaf = phys | bits | if level > 1 { SL_PS } else { 0 };
            mem.write_u64(pte_pa, leaf).map_err(|e| (e.into(), cur))?;
            cur += level_size(level);
        }
        Ok(())
    }

    /// Undoes a failed `map_runs`: clears the leaves of `ranges` (`[start, end)`, what the call
    /// mapped) without detaching any table, then walks the journal backwards, detaching the
    /// tables the call installed (now empty) onto the freelist and putting back the empty tables
    /// superpages displaced (taking them off the freelist again).
    ///
    /// A detached table adds the span of the entry that pointed at it to `gather`'s range: while
    /// installed, a walk may have cached that entry (paging-structure cache) for any IOVA of the
    /// span, so the flush must cover it before the page is reused. It also keeps the gather's
    /// invariant that a freelist comes with a range: a batch that fails in its first step
    /// (out of memory after allocating a table, nothing mapped yet) used to leave the table on
    /// the freelist with no range, and `iotlb_sync` (and the kernel, which syncs only when
    /// something was gathered) then kept the frame until the next unmap.
    fn roll_back(&self, mem: &mut PhysMem, ranges: impl Iterator<Item = (u64, u64)>, journal: Vec<Undo>, gather: &mut Gather) -> Result<()> {
        for (start, end) in ranges {
            if end > start {
                self.clear_leaves(mem, self.pgd, self.config.levels, start, end - 1)?;
                gather.add_range(start, end - 1);
            }
        }
        for undo in journal.into_iter().rev() {
            match undo {
                Undo::NewTable { pte_pa, table, span } => {
                    debug_assert!((0..512).all(|i| mem.read_u64(table + 8 * i) == Ok(0)), "table {table:#x} is empty");
                    mem.write_u64(pte_pa, 0)?;
                    gather.freelist.push(table);
                    gather.add_range(span.0, span.1);
                }
                Undo::Displaced { pte_pa, pte, freelist } => {
                    mem.write_u64(pte_pa, pte)?;
                    gather.freelist.drain(freelist);
                }
            }
        }
        Ok(())
    }

    /// Clears every leaf inside `[start, last]` under `table`, keeping the tables.
    fn clear_leaves(&self, mem: &mut PhysMem, table: u64, level: u32, start: u64, last: u64) -> Result<()> {
        let size = level_size(level);
        let mut cur = start;
        loop {
            let pte_pa = table + 8 * level_index(cur, level);
            let pte = mem.read_u64(pte_pa)?;
            let lo = cur & !(size - 1);
            let hi = lo + (size - 1);
            if slpte_present(pte) {
                if !slpte_is_leaf(pte, level) {
                    self.clear_leaves(mem, slpte_addr(pte, self.config.haw), level - 1, cur, hi.min(last))?;
                } else if start <= lo && last >= hi {
                    mem.write_u64(pte_pa, 0)?;
                } else {
                    debug_assert!(false, "a leaf of this call straddles {start:#x}..={last:#x}");
                }
            }
            if hi >= last {
                return Ok(());
            }
            cur = hi + 1;
        }
    }

    /// The address of the entry for `iova` at `target` level, allocating missing tables. An
    /// empty table where a superpage goes is detached onto the freelist. With a journal, both
    /// changes are recorded for [`roll_back`](Self::roll_back).
    fn pte_for(&mut self, mem: &mut PhysMem, iova: u64, target: u32, gather: &mut Gather, mut journal: Option<&mut Vec<Undo>>) -> Result<u64> {
        let mut table = self.pgd;
        let mut level = self.config.levels;
        loop {
            let pte_pa = table + 8 * level_index(iova, level);
            let pte = mem.read_u64(pte_pa)?;
            if level == target {
                if slpte_present(pte) {
                    // first_leaf() found no leaf, so this is an empty table subtree.
                    debug_assert!(!slpte_is_leaf(pte, level));
                    let from = gather.freelist.len();
                    self.list_tables(mem, slpte_addr(pte, self.config.haw), level - 1, &mut gather.freelist)?;
                    mem.write_u64(pte_pa, 0)?;
                    gather.add_range(iova & !(level_size(level) - 1), iova | (level_size(level) - 1));
                    if let Some(j) = journal {
                        j.push(Undo::Displaced { pte_pa, pte, freelist: from..gather.freelist.len() });
                    }
                }
                return Ok(pte_pa);
            }
            table = if slpte_present(pte) {
                slpte_addr(pte, self.config.haw)
            } else {
                let new = mem.alloc(0, true)?;
                mem.write_u64(pte_pa, new | SL_R | SL_W)?;
                if let Some(j) = journal.as_deref_mut() {
                    let span = (iova & !(level_size(level) - 1), iova | (level_size(level) - 1));
                    j.push(Undo::NewTable { pte_pa, table: new, span });
                }
                new
            };
            level -= 1;
        }
    }

    /// The start of the first leaf overlapping `[start, last]` under `table`, skipping absent
    /// subtrees.
    fn first_leaf(&self, mem: &PhysMem, table: u64, level: u32, start: u64, last: u64) -> Result<Option<u64>> {
        let size = level_size(level);
        let mut cur = start;
        loop {
            let pte = mem.read_u64(table + 8 * level_index(cur, level))?;
            let lo = cur & !(size - 1);
            let hi = lo + (size - 1);
            if slpte_present(pte) {
                if slpte_is_leaf(pte, level) {
                    return Ok(Some(lo));
                }
                if let Some(at) = self.first_leaf(mem, slpte_addr(pte, self.config.haw), level - 1, cur, hi.min(last))? {
                    return Ok(Some(at));
                }
            }
            if hi >= last {
                return Ok(None);
            }
            cur = hi + 1;
        }
    }

    fn list_tables(&self, mem: &PhysMem, table: u64, level: u32, out: &mut Vec<u64>) -> Result<()> {
        if level > 1 {
            for i in 0..512 {
                let pte = mem.read_u64(table + 8 * i)?;
                if slpte_present(pte) && !slpte_is_leaf(pte, level) {
                    self.list_tables(mem, slpte_addr(pte, self.config.haw), level - 1, out)?;
                }
            }
        }
        out.push(table);
        Ok(())
    }

    /// The leaf mapping `iova`: `(level, pte)`.
    fn leaf(&self, mem: &PhysMem, iova: u64) -> Result<Option<(u32, u64)>> {
        let step = self.walk(mem, iova)?.pop();
        Ok(step.filter(|s| slpte_present(s.pte) && slpte_is_leaf(s.pte, s.level)).map(|s| (s.level, s.pte)))
    }

    /// Unmaps `[iova, iova+size)` as `intel_iommu_unmap` + `domain_unmap` do: a range starting
    /// on a larger superpage grows to that page; leaves are cleared; table pages whose whole span
    /// is covered are detached onto `gather`'s freelist (they stay allocated until the flush);
    /// the range is added to `gather`. Returns the size unmapped. Fails without changing
    /// anything if the range would split a superpage.
    pub fn unmap(&mut self, mem: &mut PhysMem, iova: u64, size: u64, gather: &mut Gather) -> Result<u64> {
        self.check_range(iova, size)?;
        let mut size = size;
        if let Some((level, _)) = self.leaf(mem, iova)? {
            let psize = level_size(level);
            if !iova.is_multiple_of(psize) {
                return Err(Error::SplitsSuperpage { iova: iova & !(psize - 1), size: psize });
            }
            size = size.max(psize);
        }
        let last = iova + size - 1;
        if let Some((level, _)) = self.leaf(mem, last)? {
            let psize = level_size(level);
            if !(last + 1).is_multiple_of(psize) {
                return Err(Error::SplitsSuperpage { iova: last & !(psize - 1), size: psize });
            }
        }
        self.check_range(iova, size)?;
        self.clear_level(mem, self.pgd, self.config.levels, iova, last, &mut gather.freelist)?;
        gather.add_range(iova, last);
        Ok(size)
    }

    fn clear_level(&self, mem: &mut PhysMem, table: u64, level: u32, start: u64, last: u64, freelist: &mut Vec<u64>) -> Result<()> {
        let size = level_size(level);
        let mut cur = start;
        loop {
            let pte_pa = table + 8 * level_index(cur, level);
            let pte = mem.read_u64(pte_pa)?;
            let lo = cur & !(size - 1);
            let hi = lo + (size - 1);
            if slpte_present(pte) {
                let leaf = slpte_is_leaf(pte, level);
                if start <= lo && last >= hi {
                    if !leaf {
                        self.list_tables(mem, slpte_addr(pte, self.config.haw), level - 1, freelist)?;
                    }
                    mem.write_u64(pte_pa, 0)?;
                } else if !leaf {
                    self.clear_level(mem, slpte_addr(pte, self.config.haw), level - 1, cur, hi.min(last), freelist)?;
                }
            }
            if hi >= last {
                return Ok(());
            }
            cur = hi + 1;
        }
    }

    /// Walks `iova` from the top, reporting every entry read down to the leaf or the first
    /// entry that is not present. Reserved bits are not checked: this is the software view.
    pub fn walk(&self, mem: &PhysMem, iova: u64) -> Result<Vec<WalkStep>> {
        let mut steps = Vec::with_capacity(self.config.levels as usize);
        let mut table = self.pgd;
        let mut level = self.config.levels;
        loop {
            let pte_pa = table + 8 * level_index(iova, level);
            let pte = mem.read_u64(pte_pa)?;
            steps.push(WalkStep { level, pte_pa, pte });
            if !slpte_present(pte) || slpte_is_leaf(pte, level) {
                return Ok(steps);
            }
            table = slpte_addr(pte, self.config.haw);
            level -= 1;
        }
    }

    /// `intel_iommu_iova_to_phys`: the physical address `iova` maps to, if mapped.
    pub fn iova_to_phys(&self, mem: &PhysMem, iova: u64) -> Result<Option<u64>> {
        if iova >> self.width() != 0 {
            return Ok(None);
        }
        Ok(self.leaf(mem, iova)?.map(|(level, pte)| slpte_addr(pte, self.config.haw) + (iova & (level_size(level) - 1))))
    }

    /// Every table page, top first (what must be preserved for the hardware to keep walking).
    pub fn table_pages(&self, mem: &PhysMem) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        self.list_tables(mem, self.pgd, self.config.levels, &mut out)?;
        out.reverse();
        Ok(out)
    }

    /// Tears the table down (`domain_exit`): every table page, the top included, goes to the
    /// freelist and the whole address space to the gathered range.
    pub fn destroy(self, mem: &PhysMem, gather: &mut Gather) -> Result<()> {
        self.list_tables(mem, self.pgd, self.config.levels, &mut gather.freelist)?;
        gather.add_range(0, (1u64 << self.width()) - 1);
        Ok(())
    }
}

pub(crate) mod verify;
pub use verify::MappedSummary;

#[cfg(test)]
mod tests;
