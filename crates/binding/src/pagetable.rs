//! Page tables and gathers: a domain's second-level tables (`vtd::PageTable`) and the pages
//! they free, awaiting the IOTLB flush.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use vtd::verify::ExpectedRun;
use vtd::{Gather, PageTable, Prot};

use crate::arrays::u64_array;
use crate::error::{invalid, out_of_range, u64_arg, up_to, vtd_err, Code};
use crate::memory::SharedMem;

/// Unmapped ranges and table pages awaiting the IOTLB flush.
#[napi]
pub struct NativeGather {
    pub(crate) inner: Gather,
}

#[napi]
impl NativeGather {
    /// An empty gather.
    #[napi(constructor)]
    pub fn new() -> Self {
        NativeGather { inner: Gather::default() }
    }

    /// Whether a flush is owed: a range gathered or a table page waiting (a boolean, so the
    /// kernel's check after every map builds no array).
    #[napi(getter)]
    pub fn pending(&self) -> bool {
        self.inner.range().is_some() || !self.inner.freelist().is_empty()
    }

    /// `[start, end]` gathered, or null.
    #[napi(catch_unwind)]
    pub fn range(&self) -> Option<Vec<u64>> {
        self.inner.range().map(|(s, e)| vec![s, e])
    }

    /// Table pages awaiting the flush.
    #[napi(catch_unwind)]
    pub fn freelist<'e>(&self, env: &'e Env) -> Result<BigUint64ArraySlice<'e>, Code> {
        u64_array(env, self.inner.freelist())
    }
}

/// One walk step.
#[napi(object)]
pub struct WalkStep {
    /// Level.
    pub level: u32,
    /// Entry address.
    pub pte_pa: BigInt,
    /// Entry value.
    pub pte: BigInt,
}

/// A domain's second-level page table.
#[napi]
pub struct NativePageTable {
    pub(crate) mem: SharedMem,
    pub(crate) pt: PageTable,
}

fn prot(read: bool, write: bool, snoop: bool) -> Prot {
    Prot { read, write, snoop }
}

/// What `mappedPages` found.
#[napi(object)]
pub struct MappedPages<'e> {
    /// 4 KiB pages mapped by present leaves (a 2 MiB leaf counts 512).
    pub pages: f64,
    /// Every table page reached, top first.
    pub tables: BigUint64ArraySlice<'e>,
}

/// What `verifyHandover` found (`vtd::verify::HandoverAudit`).
#[napi(object)]
pub struct HandoverAudit {
    /// The lowest expected page not translated onto its PA with exactly its run's permissions.
    pub mismatch: Option<BigInt>,
    /// Why the walk stopped (a table reached twice or beyond memory), in the VT-d model's words.
    pub corrupt: Option<String>,
    /// The first table reached that was not handed over (not entered).
    pub foreign_table: Option<BigInt>,
    /// 4 KiB pages present leaves map (a 2 MiB leaf counts 512).
    pub pages: f64,
    /// Table pages walked.
    pub tables: f64,
}

/// Checks runs given as three `Float64Array`s of 4 KiB page numbers and counts (`mapRuns`,
/// `verifyRuns`) and returns them as byte ranges `(iova, pa, size)`: IOVA page numbers are
/// integers below 2^52, PA page numbers below 2^40, counts at least 1, and neither end past
/// 2^52 pages. Every entry is checked before the first run is used.
fn pfn_runs<'a>(iova_pfns: &'a [f64], pa_pfns: &'a [f64], npages: &'a [f64]) -> Result<impl Iterator<Item = (u64, u64, u64)> + Clone + 'a, Code> {
    let n = iova_pfns.len();
    if pa_pfns.len() != n || npages.len() != n {
        return Err(invalid(format!(
            "iovaPfns, paPfns and npages must have the same length ({n}, {}, {})",
            pa_pfns.len(),
            npages.len()
        )));
    }
    const PFN_END: f64 = (1u64 << 52) as f64;
    const PA_PFN_END: f64 = (1u64 << 40) as f64;
    // An integer in [lo, end), lo >= 0, end <= 2^52: adding 2^52 rounds to an integer
    // exactly there. Branch-free and conversion-free: 2 ns a run instead of 5.
    let int_in = |v: f64, lo: f64, end: f64| (v >= lo) & (v < end) & ((v + PFN_END) - PFN_END == v);
    for i in 0..n {
        let (iova, pa, np) = (iova_pfns[i], pa_pfns[i], npages[i]);
        let (iova_ok, pa_ok) = (int_in(iova, 0.0, PFN_END), int_in(pa, 0.0, PA_PFN_END));
        // Sums of integers below 2^52 are exact.
        let np_ok = int_in(np, 1.0, PFN_END) & (iova + np <= PFN_END) & (pa + np <= PFN_END);
        if !(iova_ok & pa_ok & np_ok) {
            return Err(invalid(if !iova_ok {
                format!("iovaPfns[{i}] = {iova} is not an integer in 0..2^52")
            } else if !pa_ok {
                format!("paPfns[{i}] = {pa} is not an integer in 0..2^40")
            } else {
                format!("npages[{i}] = {np} is not an integer >= 1 keeping both runs below page 2^52")
            }));
        }
    }
    // Through i64: one instruction, exact for these values (f64 as u64 is a long sequence).
    let pfn = |v: f64| (v as i64 as u64) << 12;
    Ok(iova_pfns.iter().zip(pa_pfns).zip(npages).map(move |((&iova, &pa), &np)| (pfn(iova), pfn(pa), pfn(np))))
}

#[napi]
impl NativePageTable {
    /// SLPTPTR.
    #[napi(getter, catch_unwind)]
    pub fn pgd(&self) -> u64 {
        self.pt.pgd()
    }

    /// Paging levels.
    #[napi(getter, catch_unwind)]
    pub fn levels(&self) -> u32 {
        self.pt.config().levels
    }

    /// Context-entry AW.
    #[napi(getter, catch_unwind)]
    pub fn aw(&self) -> u32 {
        self.pt.aw() as u32
    }

    /// Maps `[iova, iova+size)` to `pa`.
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn map(&mut self, iova: BigInt, pa: BigInt, size: BigInt, read: bool, write: bool, snoop: bool, gather: &mut NativeGather) -> Result<(), Code> {
        let (iova, pa, size) = (u64_arg(&iova, "iova")?, u64_arg(&pa, "pa")?, u64_arg(&size, "size")?);
        self.pt
            .map(&mut self.mem.borrow_mut(), iova, pa, size, prot(read, write, snoop), &mut gather.inner)
            .map_err(vtd_err)
    }

    /// Maps the runs `iovaPfns[i]`, `paPfns[i]`, `npages[i]` (4 KiB page numbers and counts as
    /// numbers, not bigints) all or nothing: `vtd::PageTable::map_runs`. The three arrays have
    /// one entry per run; IOVA page numbers are integers below 2^52, PA page numbers below
    /// 2^40, counts at least 1, and neither end past 2^52 pages. Nothing is mapped if any
    /// entry is invalid.
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn map_runs(&mut self, iova_pfns: &[f64], pa_pfns: &[f64], npages: &[f64], read: bool, write: bool, snoop: bool, gather: &mut NativeGather) -> Result<(), Code> {
        let runs = pfn_runs(iova_pfns, pa_pfns, npages)?;
        self.pt
            .map_runs(&mut self.mem.borrow_mut(), runs, prot(read, write, snoop), &mut gather.inner)
            .map_err(vtd_err)
    }

    /// Trust but verify: `vtd::PageTable::verify_runs` over runs given as `mapRuns` takes them
    /// (same checks, `ERR_INVALID_ARG_VALUE` before anything is read). Returns null if every
    /// page translates to its PA with exactly R = `read`, W = `write`, else the IOVA of the
    /// first page that does not (in run order). Garbage tables are mismatches, never errors.
    #[napi(catch_unwind)]
    pub fn verify_runs(&self, iova_pfns: &[f64], pa_pfns: &[f64], npages: &[f64], read: bool, write: bool) -> Result<Option<u64>, Code> {
        let runs = pfn_runs(iova_pfns, pa_pfns, npages)?;
        self.pt.verify_runs(&self.mem.borrow(), runs, prot(read, write, false)).map_err(vtd_err)
    }

    /// Trust but verify in one walk: `vtd::PageTable::verify_handover` over runs given as
    /// `mapRuns` takes them (same checks) with `prots[i]` the run's permissions (1 read, 2 write,
    /// 3 both), against the table pages `handedOver`. Every entry is checked
    /// (`ERR_INVALID_ARG_VALUE`) before a table is read; garbage tables are findings, never
    /// errors.
    #[napi(catch_unwind)]
    pub fn verify_handover(&self, iova_pfns: &[f64], pa_pfns: &[f64], npages: &[f64], prots: &[u8], handed_over: &[u64]) -> Result<HandoverAudit, Code> {
        let runs = pfn_runs(iova_pfns, pa_pfns, npages)?;
        if prots.len() != iova_pfns.len() {
            return Err(invalid(format!("prots must have one entry per run ({}, {})", prots.len(), iova_pfns.len())));
        }
        if let Some(i) = prots.iter().position(|&p| !(1..=3).contains(&p)) {
            return Err(invalid(format!("prots[{i}] = {} is not 1 (read), 2 (write) or 3 (both)", prots[i])));
        }
        let runs: Vec<ExpectedRun> = runs
            .zip(prots)
            .map(|((iova, pa, size), &p)| ExpectedRun { iova, pa, size, prot: prot(p & 1 != 0, p & 2 != 0, false) })
            .collect();
        let a = self.pt.verify_handover(&self.mem.borrow(), &runs, handed_over).map_err(vtd_err)?;
        Ok(HandoverAudit {
            mismatch: a.mismatch.map(BigInt::from),
            corrupt: a.corrupt.map(|e| e.to_string()),
            foreign_table: a.foreign_table.map(BigInt::from),
            pages: a.pages as f64,
            tables: a.tables as f64,
        })
    }

    /// `vtd::PageTable::mapped_pages`: 4 KiB pages mapped by present leaves and every table
    /// page reached, top first; `ERR_VTD_CORRUPT` for a table reached twice, beyond memory, or
    /// past `maxTables` (a non-negative integer).
    #[napi(catch_unwind)]
    pub fn mapped_pages<'e>(&self, env: &'e Env, max_tables: f64) -> Result<MappedPages<'e>, Code> {
        const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
        if !(max_tables >= 0.0 && max_tables.fract() == 0.0 && max_tables <= MAX_SAFE) {
            return Err(out_of_range("maxTables", &up_to(MAX_SAFE), max_tables));
        }
        let s = self.pt.mapped_pages(&self.mem.borrow(), max_tables as usize).map_err(vtd_err)?;
        Ok(MappedPages { pages: s.pages as f64, tables: u64_array(env, &s.tables)? })
    }

    /// Unmaps `[iova, iova+size)`; returns the size unmapped.
    #[napi(catch_unwind)]
    pub fn unmap(&mut self, iova: BigInt, size: BigInt, gather: &mut NativeGather) -> Result<u64, Code> {
        let (iova, size) = (u64_arg(&iova, "iova")?, u64_arg(&size, "size")?);
        self.pt.unmap(&mut self.mem.borrow_mut(), iova, size, &mut gather.inner).map_err(vtd_err)
    }

    /// The PA `iova` maps to, or null.
    #[napi(catch_unwind)]
    pub fn iova_to_phys(&self, iova: BigInt) -> Result<Option<u64>, Code> {
        self.pt.iova_to_phys(&self.mem.borrow(), u64_arg(&iova, "iova")?).map_err(vtd_err)
    }

    /// Every entry read walking `iova`, top first.
    #[napi(catch_unwind)]
    pub fn walk(&self, iova: BigInt) -> Result<Vec<WalkStep>, Code> {
        let steps = self.pt.walk(&self.mem.borrow(), u64_arg(&iova, "iova")?).map_err(vtd_err)?;
        Ok(steps
            .into_iter()
            .map(|s| WalkStep { level: s.level, pte_pa: BigInt::from(s.pte_pa), pte: BigInt::from(s.pte) })
            .collect())
    }

    /// Every table page, top first.
    #[napi(catch_unwind)]
    pub fn table_pages<'e>(&self, env: &'e Env) -> Result<BigUint64ArraySlice<'e>, Code> {
        u64_array(env, &self.pt.table_pages(&self.mem.borrow()).map_err(vtd_err)?)
    }

    /// Hands every table page to `gather` (teardown); the table must not be used afterwards.
    #[napi(catch_unwind)]
    pub fn destroy(&mut self, gather: &mut NativeGather) -> Result<(), Code> {
        self.pt.clone().destroy(&self.mem.borrow(), &mut gather.inner).map_err(vtd_err)
    }
}
