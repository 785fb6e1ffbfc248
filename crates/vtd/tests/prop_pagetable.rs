//! Property-based tests of the second-level page table ([`PageTable`]) and the unit's translation
//! path ([`Unit::translate`], [`Unit::translate_batch`]) against a reference model, over 3-, 4-
//! and 5-level tables of a 57-bit unit. Public APIs only.
//!
//! The model is a map of leaves `iova → (level, pa, prot)`. Its leaf decomposition is the rule of
//! `hardware_largepage_caps`: at each step the largest page SLLPS permits, that `iova | pa` is
//! aligned to and that fits in what remains. Its translation is QEMU's (reference §1.9): a page
//! that is not mapped or lacks the permission faults with Read/Write, a leaf whose page overlaps
//! the interrupt window faults with InterruptAddr, an IOVA beyond the width with AddrBeyondMgaw.
//!
//! Properties:
//! 1. `model_agreement`: random map/unmap sequences, each followed by `iotlb_sync`, agree with
//!    the model in `iova_to_phys`, `walk`, `translate` and `translate_batch`; failed operations
//!    change nothing.
//! 2. `stale_caches_are_old_or_fault`: unmaps without a sync translate to the old address or
//!    fault, never to a third address; freed table pages stay allocated until the sync.
//! 3. `superpage_choice`: every leaf is the largest level alignment, size and SLLPS permit.
//! 4. `table_pages_and_no_leaks`: `table_pages` is exactly the reachable tables, all allocated;
//!    a teardown returns every frame.
//! 5. `cache_capacity_is_transparent`: tiny IOTLB/PSC capacities, and units without PSI or with
//!    a small MAMV, give the same results as the default unit.
//! 6. `out_of_memory_changes_nothing`: a map that runs out of table pages midway leaves the
//!    translations as they were and leaks nothing.
//!
//! Cases are drawn from a fresh seed each run and no regression files are written; a failure
//! prints its minimal case, and `PROPTEST_RNG_SEED=<n>` replays a run. `PROPTEST_CASES=<n>` runs
//! more cases (e.g. a soak in release mode).
use std::collections::{BTreeMap, BTreeSet};

use physmem::{Config, PhysMem};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use vtd::entry::{level_size, slpte_addr, slpte_is_leaf, slpte_present, SL_PS, SL_R, SL_SNP, SL_W};
use vtd::{ContextEntry, Error, FaultReason, Gather, PageTable, Prot, RootEntry, TranslationType, Unit, UnitConfig};

const K4: u64 = 1 << 12;
const M2: u64 = 1 << 21;
const G1: u64 = 1 << 30;
const MEM: u64 = 64 << 30;
const SID: u16 = 0x0310; // 03:02.0
const DID: u16 = 9;
/// Each IOVA region is this large: one at 0, one around the middle of the width, one at its top.
const REGION: u64 = 4 * G1;
/// 2 MiB-aligned places in a region where small and medium operations crowd together, straddling
/// 1 GiB boundaries.
const ANCHORS: [u64; 4] = [0, G1 - 4 * M2, 2 * G1 - 2 * M2, 3 * G1 + 3 * M2];
/// Maps are cut after this many leaves, so 4 KiB-only layouts stay cheap in debug builds.
const MAX_LEAVES: usize = 2048;
const INTERRUPT_FIRST: u64 = 0xfee0_0000;
const INTERRUPT_LAST: u64 = 0xfeef_ffff;
const LEVELS: [u32; 3] = [3, 4, 5];

type TestResult = Result<(), TestCaseError>;

fn fail<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> TestCaseError + '_ {
    move |e| TestCaseError::fail(format!("{what}: {e:?}"))
}

/// 64 cases unless `PROPTEST_CASES` asks for more (a soak run); no regression files.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn unit_config(sp2m: bool, sp1g: bool) -> UnitConfig {
    UnitConfig { address_width: 57, superpage_2m: sp2m, superpage_1g: sp1g, ..UnitConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------------------

/// Memory, a unit with translation on, and one domain's page table behind requester SID.
struct Rig {
    mem: PhysMem,
    unit: Unit,
    pt: PageTable,
    gather: Gather,
    /// Frames allocated just before the page table was created.
    baseline: u64,
}

impl Rig {
    fn new(config: UnitConfig, levels: u32, seed: u64) -> Rig {
        Rig::build(Config { size: MEM, seed }, config, levels, None)
    }

    /// With `keep_free`, every frame but that many is allocated before the table is created.
    fn build(mem: Config, config: UnitConfig, levels: u32, keep_free: Option<u64>) -> Rig {
        let mut mem = PhysMem::new(mem).unwrap();
        let mut unit = Unit::new(config).unwrap();
        let root = mem.alloc(0, true).unwrap();
        let ctx = mem.alloc(0, true).unwrap();
        if let Some(n) = keep_free {
            exhaust(&mut mem, n);
        }
        let baseline = mem.stats().frames_allocated;
        let pt = PageTable::new(&mut mem, unit.pagetable_config(levels).unwrap()).unwrap();
        mem.write_u64(root + 16 * u64::from(SID >> 8), RootEntry::new(ctx).lo).unwrap();
        let ce = ContextEntry::new(pt.pgd(), pt.aw(), DID, TranslationType::MultiLevel, false);
        let at = ctx + 16 * u64::from(SID & 0xff);
        mem.write_u64(at, ce.lo).unwrap();
        mem.write_u64(at + 8, ce.hi).unwrap();
        unit.set_root_table(root);
        unit.enable_translation(true);
        Rig { mem, unit, pt, gather: Gather::default(), baseline }
    }

    fn width(&self) -> u32 {
        self.pt.width()
    }

    /// `iotlb_sync`; the freelist must be allocated before and free after.
    fn sync(&mut self) -> TestResult {
        let freelist = self.gather.freelist().to_vec();
        for &p in &freelist {
            prop_assert!(self.mem.is_allocated(p, K4), "freelist page {:#x} freed before the flush", p);
        }
        self.unit.iotlb_sync(&mut self.mem, DID, &mut self.gather).map_err(fail("iotlb_sync"))?;
        for &p in &freelist {
            prop_assert!(!self.mem.is_allocated(p, K4), "freelist page {:#x} still allocated after the flush", p);
        }
        prop_assert_eq!(&self.gather, &Gather::default());
        Ok(())
    }

    fn table_pages(&self) -> Result<Vec<u64>, TestCaseError> {
        self.pt.table_pages(&self.mem).map_err(fail("table_pages"))
    }
}

/// Allocates every free frame, then gives `keep` of them back.
fn exhaust(mem: &mut PhysMem, keep: u64) {
    let mut blocks = Vec::new();
    for order in (0..=physmem::MAX_ORDER).rev() {
        while let Ok(pa) = mem.alloc(order, false) {
            blocks.push((pa, order));
        }
    }
    let mut left = keep;
    for (pa, order) in blocks {
        if left == 0 {
            break;
        }
        let n = (1u64 << order).min(left);
        mem.free(pa, n * K4).unwrap();
        left -= n;
    }
    assert_eq!(left, 0, "memory too small for the budget");
    assert_eq!(mem.stats().frames_free, keep);
}

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leaf {
    level: u32,
    pa: u64,
    prot: Prot,
}

impl Leaf {
    fn size(&self) -> u64 {
        level_size(self.level)
    }
    /// The PTE Linux writes: `pa | R | W | SNP`, plus PS above level 1.
    fn pte(&self) -> u64 {
        let p = self.prot;
        self.pa
            | if p.read { SL_R } else { 0 }
            | if p.write { SL_W } else { 0 }
            | if p.snoop { SL_SNP } else { 0 }
            | if self.level > 1 { SL_PS } else { 0 }
    }
    fn translate(&self, offset: u64, write: bool) -> Result<u64, FaultReason> {
        let allowed = if write { self.prot.write } else { self.prot.read };
        if !allowed {
            return Err(deny(write));
        }
        // The whole output page is checked against the interrupt window (QEMU, reference §1.9).
        if self.pa <= INTERRUPT_LAST && self.pa + self.size() > INTERRUPT_FIRST {
            return Err(FaultReason::InterruptAddr);
        }
        Ok(self.pa + offset)
    }
}

/// Whether `x` is a multiple of the power of two `to`.
fn aligned(x: u64, to: u64) -> bool {
    x & (to - 1) == 0
}

fn deny(write: bool) -> FaultReason {
    if write {
        FaultReason::Write
    } else {
        FaultReason::Read
    }
}

/// The leaves `[iova, iova+size) → pa` is made of, `(iova, pa, level)`, at most `limit` of them.
fn decompose(leaf_levels: u8, iova: u64, pa: u64, size: u64, limit: usize) -> Vec<(u64, u64, u32)> {
    let end = iova + size;
    let mut out = Vec::new();
    let mut cur = iova;
    while cur < end && out.len() < limit {
        let phys = pa + (cur - iova);
        let level = [3u32, 2, 1]
            .into_iter()
            .find(|&l| {
                l == 1
                    || (leaf_levels >> (l - 1) & 1 == 1
                        && aligned(cur | phys, level_size(l))
                        && end - cur >= level_size(l))
            })
            .unwrap();
        out.push((cur, phys, level));
        cur += level_size(level);
    }
    out
}

#[derive(Debug, Clone)]
struct Model {
    leaves: BTreeMap<u64, Leaf>,
    levels: u32,
    width: u32,
    leaf_levels: u8,
    snoop: bool,
    haw: u32,
    mem_size: u64,
}

impl Model {
    fn new(rig: &Rig) -> Model {
        let c = rig.pt.config();
        Model {
            leaves: BTreeMap::new(),
            levels: c.levels,
            width: rig.width(),
            leaf_levels: c.leaf_levels,
            snoop: c.snoop,
            haw: c.haw,
            mem_size: rig.mem.size(),
        }
    }

    fn empty_like(&self) -> Model {
        Model { leaves: BTreeMap::new(), ..self.clone() }
    }

    fn leaf_at(&self, iova: u64) -> Option<(u64, Leaf)> {
        let (&s, &l) = self.leaves.range(..=iova).next_back()?;
        (iova - s < l.size()).then_some((s, l))
    }

    fn check_range(&self, iova: u64, size: u64) -> Result<(), Error> {
        for v in [iova, size] {
            if !aligned(v, K4) {
                return Err(Error::Unaligned { value: v, align: K4 });
            }
        }
        if size == 0 {
            return Err(Error::EmptyRange);
        }
        match iova.checked_add(size) {
            Some(end) if end <= 1u64 << self.width => Ok(()),
            _ => Err(Error::OutOfRange { iova, size, width: self.width }),
        }
    }

    /// The size a map is cut to so it has at most [`MAX_LEAVES`] leaves.
    fn capped(&self, iova: u64, pa: u64, size: u64) -> u64 {
        if !aligned(iova | pa | size, K4) || size == 0 || iova.checked_add(size).is_none() {
            return size;
        }
        match decompose(self.leaf_levels, iova, pa, size, MAX_LEAVES + 1).get(MAX_LEAVES) {
            Some(&(cut, _, _)) => cut - iova,
            None => size,
        }
    }

    /// The leaves a map would add, or the error it fails with (the model is not changed).
    fn plan_map(&self, iova: u64, pa: u64, size: u64, prot: Prot) -> Result<Vec<(u64, Leaf)>, Error> {
        self.check_range(iova, size)?;
        if !aligned(pa, K4) {
            return Err(Error::Unaligned { value: pa, align: K4 });
        }
        if !matches!(pa.checked_add(size), Some(e) if e <= self.mem_size && e <= 1u64 << self.haw) {
            return Err(Error::Mem(physmem::Error::OutOfRange { pa, len: size, size: self.mem_size }));
        }
        if !prot.read && !prot.write {
            return Err(Error::NoPermission);
        }
        if prot.snoop && !self.snoop {
            return Err(Error::SnoopUnsupported);
        }
        let last = iova + size - 1;
        let first = self.leaf_at(iova).map(|(s, _)| s).or_else(|| self.leaves.range(iova..=last).next().map(|(&s, _)| s));
        if let Some(at) = first {
            return Err(Error::AlreadyMapped { iova: at.max(iova) });
        }
        Ok(decompose(self.leaf_levels, iova, pa, size, usize::MAX)
            .into_iter()
            .map(|(v, p, level)| (v, Leaf { level, pa: p, prot }))
            .collect())
    }

    fn map(&mut self, iova: u64, pa: u64, size: u64, prot: Prot) -> Result<(), Error> {
        let leaves = self.plan_map(iova, pa, size, prot)?;
        self.leaves.extend(leaves);
        Ok(())
    }

    /// `intel_iommu_unmap`: grows to a superpage at `iova`, refuses to split one at either end.
    /// Returns the size unmapped and the leaves removed.
    fn unmap(&mut self, iova: u64, size: u64) -> Result<(u64, Vec<(u64, Leaf)>), Error> {
        self.check_range(iova, size)?;
        let mut size = size;
        if let Some((s, l)) = self.leaf_at(iova) {
            if iova != s {
                return Err(Error::SplitsSuperpage { iova: s, size: l.size() });
            }
            size = size.max(l.size());
        }
        let last = iova + size - 1;
        if let Some((s, l)) = self.leaf_at(last) {
            if last != s + l.size() - 1 {
                return Err(Error::SplitsSuperpage { iova: s, size: l.size() });
            }
        }
        self.check_range(iova, size)?;
        let gone: Vec<(u64, Leaf)> = self.leaves.range(iova..=last).map(|(&s, &l)| (s, l)).collect();
        for (s, l) in &gone {
            assert!(s + l.size() - 1 <= last);
            self.leaves.remove(s);
        }
        Ok((size, gone))
    }

    fn iova_to_phys(&self, iova: u64) -> Option<u64> {
        if iova >> self.width != 0 {
            return None;
        }
        self.leaf_at(iova).map(|(s, l)| l.pa + (iova - s))
    }

    fn translate(&self, iova: u64, write: bool) -> Result<u64, FaultReason> {
        if iova >> self.width != 0 {
            return Err(FaultReason::AddrBeyondMgaw);
        }
        match self.leaf_at(iova) {
            Some((s, l)) => l.translate(iova - s, write),
            None => Err(deny(write)),
        }
    }

    /// IOVAs worth probing: the first and last byte, the middle and both neighbours of a spread
    /// of leaves, plus `extra`.
    fn samples(&self, extra: &[u64]) -> Vec<u64> {
        let step = self.leaves.len() / 10 + 1;
        let mut v: Vec<u64> = extra.to_vec();
        for (&s, l) in self.leaves.iter().step_by(step) {
            let e = s + l.size();
            v.extend([s, e - 1, s + l.size() / 2 + 0x18, s.wrapping_sub(1), e]);
        }
        v.push(1u64 << self.width);
        v.sort_unstable();
        v.dedup();
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// The software view: `iova_to_phys` and the walk, leaf PTE and non-leaf entries included.
fn check_software(rig: &Rig, model: &Model, iova: u64) -> TestResult {
    let got = rig.pt.iova_to_phys(&rig.mem, iova).map_err(fail("iova_to_phys"))?;
    prop_assert_eq!(got, model.iova_to_phys(iova), "iova_to_phys({:#x})", iova);
    if let Some((_, leaf)) = model.leaf_at(iova) {
        let steps = rig.pt.walk(&rig.mem, iova).map_err(fail("walk"))?;
        let last = steps.last().unwrap();
        prop_assert_eq!(last.level, leaf.level, "leaf level of {:#x}", iova);
        prop_assert_eq!(steps.len() as u32, model.levels - leaf.level + 1);
        prop_assert_eq!(last.pte, leaf.pte(), "leaf PTE of {:#x}", iova);
        for s in &steps[..steps.len() - 1] {
            prop_assert_eq!(s.pte & 0xfff, SL_R | SL_W, "non-leaf entry {:?} of {:#x}", s, iova);
            prop_assert!(!slpte_is_leaf(s.pte, s.level));
        }
    }
    Ok(())
}

/// Everything agrees with the model: software view, `translate` and `translate_batch`.
fn check(rig: &mut Rig, model: &Model, iovas: &[u64]) -> TestResult {
    let mut single = [Vec::new(), Vec::new()];
    for &iova in iovas {
        check_software(rig, model, iova)?;
        for write in [false, true] {
            let got = rig.unit.translate(&rig.mem, SID, iova, write);
            prop_assert_eq!(got, model.translate(iova, write), "translate({:#x}, write={})", iova, write);
            single[write as usize].push(got);
        }
    }
    for write in [false, true] {
        let mut out = vec![0; iovas.len()];
        let mut reasons = vec![0xff; iovas.len()];
        let faulted = rig.unit.translate_batch(&rig.mem, SID, iovas, &mut out, write, Some(&mut reasons));
        let mut batch = Vec::with_capacity(iovas.len());
        for (&pa, &r) in out.iter().zip(&reasons) {
            if r == 0 {
                batch.push(Ok(pa));
            } else {
                prop_assert_eq!(pa, u64::MAX, "a faulted batch slot holds u64::MAX");
                let reason = FaultReason::from_u8(r);
                prop_assert!(reason.is_some(), "reason byte {:#x}", r);
                batch.push(Err(reason.unwrap()));
            }
        }
        prop_assert_eq!(&batch, &single[write as usize], "translate_batch(write={}) vs translate", write);
        prop_assert_eq!(faulted, batch.iter().filter(|r| r.is_err()).count());
    }
    Ok(())
}

/// Every table page reachable from the top, by reading the tables: `(page, level, span start)`.
fn reachable_tables(rig: &Rig) -> Vec<(u64, u32, u64)> {
    let c = rig.pt.config();
    let mut out = Vec::new();
    let mut stack = vec![(rig.pt.pgd(), c.levels, 0u64)];
    while let Some((table, level, base)) = stack.pop() {
        out.push((table, level, base));
        if level == 1 {
            continue;
        }
        for i in 0..512u64 {
            let pte = rig.mem.read_u64(table + 8 * i).unwrap();
            if slpte_present(pte) && !slpte_is_leaf(pte, level) {
                stack.push((slpte_addr(pte, c.haw), level - 1, base + i * level_size(level)));
            }
        }
    }
    out
}

/// `table_pages` is exactly what the tables reach, the top first, without repeats, all allocated,
/// and each one is where the walk of its span goes.
fn check_tables(rig: &Rig, model: &Model) -> TestResult {
    let pages = rig.table_pages()?;
    prop_assert_eq!(pages.first(), Some(&rig.pt.pgd()));
    let set: BTreeSet<u64> = pages.iter().copied().collect();
    prop_assert_eq!(set.len(), pages.len(), "table_pages repeats a page");
    let reach = reachable_tables(rig);
    let reach_set: BTreeSet<u64> = reach.iter().map(|t| t.0).collect();
    prop_assert_eq!(reach_set.len(), reach.len(), "two entries point at one table");
    prop_assert_eq!(&set, &reach_set);
    for &(table, level, base) in &reach {
        prop_assert!(rig.mem.is_allocated(table, K4), "table {:#x} is not allocated", table);
        let steps = rig.pt.walk(&rig.mem, base).map_err(fail("walk"))?;
        let at = steps.iter().find(|s| s.level == level).map(|s| s.pte_pa & !0xfff);
        prop_assert_eq!(at, Some(table), "walk of {:#x} misses the level-{} table", base, level);
    }
    for &s in model.leaves.keys().step_by(model.leaves.len() / 16 + 1) {
        for step in rig.pt.walk(&rig.mem, s).map_err(fail("walk"))? {
            prop_assert!(set.contains(&(step.pte_pa & !0xfff)));
        }
    }
    Ok(())
}

fn same_map_result(got: &Result<(), Error>, want: &Result<(), Error>, allow_oom: bool) -> Result<bool, TestCaseError> {
    if allow_oom && want.is_ok() && matches!(got, Err(Error::Mem(physmem::Error::OutOfMemory { .. }))) {
        return Ok(false);
    }
    prop_assert_eq!(got, want);
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Map { region: u8, off: u64, pa: u64, size: u64, prot: Prot },
    /// Unmap the range of an earlier successful map (whatever is left of it).
    UnmapMapping(Index),
    Unmap { region: u8, off: u64, size: u64 },
    /// Flush (only meaningful where operations do not sync by themselves).
    Sync,
}

fn region_base(region: u8, width: u32) -> u64 {
    let top = 1u64 << width;
    match region % 3 {
        0 => 0,
        1 => top / 2 - REGION / 2,
        _ => top - REGION,
    }
}

fn off_4k() -> impl Strategy<Value = u64> {
    (0..ANCHORS.len(), 0u64..2048).prop_map(|(a, j)| ANCHORS[a] + j * K4)
}

fn off_2m() -> impl Strategy<Value = u64> {
    (0..ANCHORS.len(), 0u64..4).prop_map(|(a, j)| ANCHORS[a] + j * M2)
}

fn off_1g() -> impl Strategy<Value = u64> {
    (0u64..4).prop_map(|j| j * G1)
}

fn pa_4k() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0..MEM / K4).prop_map(|f| f * K4),
        1 => (0u64..0x300).prop_map(|f| 0xfed0_0000 + f * K4), // around the interrupt window
        1 => (1u64..=64).prop_map(|f| MEM - f * K4),           // at the end; some run off it
    ]
}

fn pa_2m() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0..MEM / M2).prop_map(|f| f * M2),
        2 => (0..MEM / M2).prop_map(|f| f * M2 + K4), // only 4 KiB-aligned
        1 => Just(INTERRUPT_FIRST),                   // a 2 MiB page over the interrupt window
    ]
}

fn pa_1g() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0..MEM / G1).prop_map(|f| f * G1),
        2 => (0..MEM / M2).prop_map(|f| f * M2),
        1 => Just(3 * G1), // a 1 GiB page over the interrupt window
    ]
}

fn prot() -> impl Strategy<Value = Prot> {
    prop_oneof![
        3 => Just(Prot::RW),
        2 => Just(Prot::R),
        2 => Just(Prot::W),
        1 => Just(Prot { read: true, write: true, snoop: true }),
        1 => Just(Prot::default()), // NoPermission
    ]
}

/// A mapping shape: `(iova offset in the region, pa, size)`, mixing 4 KiB runs, 2 MiB and 1 GiB
/// chunks, with up to two 4 KiB pages in front (same relative alignment).
fn shape() -> impl Strategy<Value = (u64, u64, u64)> {
    let run = (off_4k(), pa_4k(), 1u64..=64).prop_map(|(o, p, n)| (o, p, n * K4));
    let mid = (off_2m(), pa_2m(), 1u64..=3, 0u64..=3).prop_map(|(o, p, n, t)| (o, p, n * M2 + t * K4));
    let big = (off_1g(), pa_1g(), 1u64..=2, 0u64..=2).prop_map(|(o, p, n, t)| (o, p, n * G1 + t * M2));
    (prop_oneof![3 => run, 3 => mid, 2 => big], 0u64..=2).prop_map(|((off, pa, size), head)| {
        let head = head.min(off / K4).min(pa / K4) * K4;
        (off - head, pa - head, size + head)
    })
}

fn map_op() -> impl Strategy<Value = Op> {
    (0u8..3, shape(), prot()).prop_map(|(region, (off, pa, size), prot)| Op::Map { region, off, pa, size, prot })
}

fn unmap_op() -> impl Strategy<Value = Op> {
    let off = prop_oneof![off_4k(), off_2m(), off_1g()];
    let size = prop_oneof![
        (1u64..=64).prop_map(|n| n * K4),
        (1u64..=3).prop_map(|n| n * M2),
        (1u64..=2).prop_map(|n| n * G1),
    ];
    (0u8..3, off, size).prop_map(|(region, off, size)| Op::Unmap { region, off, size })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => map_op(),
        3 => any::<Index>().prop_map(Op::UnmapMapping),
        2 => unmap_op(),
    ]
}

fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=max)
}

fn ops_with_sync(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(prop_oneof![8 => op(), 2 => Just(Op::Sync)], 1..=max)
}

/// Random bytes of the regions.
fn probes() -> impl Strategy<Value = Vec<(u8, u64)>> {
    prop::collection::vec((0u8..3, 0..REGION), 0..6)
}

fn concrete(probes: &[(u8, u64)], width: u32) -> Vec<u64> {
    probes.iter().map(|&(r, o)| region_base(r, width) + o).collect()
}

fn around(iova: u64, size: u64) -> [u64; 5] {
    [iova.wrapping_sub(1), iova, iova.wrapping_add(size / 2), iova.wrapping_add(size).wrapping_sub(1), iova.wrapping_add(size)]
}

/// What an operation turned into, concretely.
enum Step {
    Map { iova: u64, pa: u64, size: u64, prot: Prot },
    Unmap { iova: u64, size: u64 },
    Sync,
    Nothing,
}

fn concretize(op: &Op, model: &Model, history: &[(u64, u64)]) -> Step {
    match *op {
        Op::Map { region, off, pa, size, prot } => {
            let iova = region_base(region, model.width) + off;
            Step::Map { iova, pa, size: model.capped(iova, pa, size), prot }
        }
        Op::UnmapMapping(i) if !history.is_empty() => {
            let (iova, size) = history[i.index(history.len())];
            Step::Unmap { iova, size }
        }
        Op::UnmapMapping(_) => Step::Nothing,
        Op::Unmap { region, off, size } => Step::Unmap { iova: region_base(region, model.width) + off, size },
        Op::Sync => Step::Sync,
    }
}

/// Runs `ops` in lockstep on every rig (all built alike), each operation followed by a sync, and
/// checks every rig against the model after each. With `allow_oom`, a map may fail for lack of
/// memory; it must then change nothing.
fn run_synced(rigs: &mut [Rig], ops: &[Op], probes: &[(u8, u64)], allow_oom: bool) -> Result<Model, TestCaseError> {
    let mut model = Model::new(&rigs[0]);
    let probes = concrete(probes, model.width);
    let mut history = Vec::new();
    for op in ops {
        let touched = match concretize(op, &model, &history) {
            Step::Map { iova, pa, size, prot } => {
                let plan = model.plan_map(iova, pa, size, prot);
                let want = plan.as_ref().map(|_| ()).map_err(Clone::clone);
                let mut applied = None;
                for rig in rigs.iter_mut() {
                    let before = rig.mem.stats().frames_allocated;
                    let got = rig.pt.map(&mut rig.mem, iova, pa, size, prot, &mut rig.gather);
                    let ok = same_map_result(&got, &want, allow_oom)?;
                    prop_assert!(applied.is_none() || applied == Some(ok), "rigs disagree on running out of memory");
                    applied = Some(ok);
                    if got.is_err() && ok {
                        // Refused before touching anything.
                        prop_assert_eq!(&rig.gather, &Gather::default());
                        prop_assert_eq!(rig.mem.stats().frames_allocated, before);
                    }
                }
                if let (Ok(leaves), Some(true)) = (plan, applied) {
                    model.leaves.extend(leaves);
                    history.push((iova, size));
                }
                around(iova, size)
            }
            Step::Unmap { iova, size } => {
                let want = model.unmap(iova, size).map(|(n, _)| n);
                for rig in rigs.iter_mut() {
                    let got = rig.pt.unmap(&mut rig.mem, iova, size, &mut rig.gather);
                    prop_assert_eq!(&got, &want, "unmap({:#x}, {:#x})", iova, size);
                    if got.is_err() {
                        prop_assert_eq!(&rig.gather, &Gather::default());
                    }
                }
                around(iova, size)
            }
            Step::Sync | Step::Nothing => continue,
        };
        for rig in rigs.iter_mut() {
            rig.sync()?;
        }
        let iovas = model.samples(&[&touched[..], &probes].concat());
        for rig in rigs.iter_mut() {
            check(rig, &model, &iovas)?;
        }
    }
    Ok(model)
}

/// Unmaps everything (optionally), destroys the table and flushes: every frame comes back.
fn teardown(rig: &mut Rig, model: &mut Model, unmap_all: bool) -> TestResult {
    let pages = rig.table_pages()?;
    if unmap_all {
        let all = 1u64 << rig.width();
        prop_assert_eq!(rig.pt.unmap(&mut rig.mem, 0, all, &mut rig.gather), Ok(all));
        prop_assert_eq!(model.unmap(0, all).map(|r| r.0), Ok(all));
        rig.sync()?;
        prop_assert_eq!(rig.table_pages()?, vec![rig.pt.pgd()], "only the top table is left");
        let iovas = model.samples(&[]);
        check(rig, model, &iovas)?;
    }
    rig.pt.clone().destroy(&rig.mem, &mut rig.gather).map_err(fail("destroy"))?;
    rig.sync()?;
    for p in pages {
        prop_assert!(!rig.mem.is_allocated(p, K4), "table page {:#x} not freed", p);
    }
    prop_assert_eq!(rig.mem.stats().frames_allocated, rig.baseline, "leaked frames");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// 1. Random map/unmap sequences, each followed by `iotlb_sync`, agree with the model.
    #[test]
    fn model_agreement(ops in ops(40), probes in probes(), seed in any::<u64>(), sp in 0usize..5) {
        for levels in LEVELS {
            // Mostly 2M + 1G; sometimes a unit with fewer page sizes.
            let (sp2m, sp1g) = [(true, true), (true, true), (true, false), (false, true), (false, false)][sp];
            let cfg = unit_config(sp2m, sp1g);
            let mut rig = Rig::new(cfg, levels, seed);
            run_synced(std::slice::from_mut(&mut rig), &ops, &probes, false)?;
        }
    }

    /// 2. Without a flush, an unmapped IOVA translates to its old address or faults; after the
    /// flush it faults. Pages on the freelist stay allocated (and unreachable) until the flush.
    #[test]
    fn stale_caches_are_old_or_fault(ops in ops_with_sync(40), probes in probes(), seed in any::<u64>()) {
        for levels in LEVELS {
            let mut rig = Rig::new(unit_config(true, true), levels, seed);
            let mut model = Model::new(&rig);
            let probes = concrete(&probes, model.width);
            let mut stale = model.empty_like(); // leaves unmapped since the last flush
            let mut dirty: Vec<(u64, u64)> = Vec::new(); // ranges unmapped since the last flush
            let mut history = Vec::new();
            let ops = ops.iter().chain([&Op::Sync]);
            for op in ops {
                let touched = match concretize(op, &model, &history) {
                    Step::Map { iova, pa, size, prot } => {
                        // Linux never reuses an IOVA before its flush: keep maps off dirty ranges.
                        if dirty.iter().any(|&(lo, hi)| iova <= hi && lo <= iova.saturating_add(size - 1)) {
                            continue;
                        }
                        let want = model.map(iova, pa, size, prot);
                        // A superpage over an emptied table is flushed at once, as
                        // switch_to_super_page does.
                        let mut g = Gather::default();
                        let got = rig.pt.map(&mut rig.mem, iova, pa, size, prot, &mut g);
                        prop_assert_eq!(&got, &want);
                        let gathered = g.freelist().to_vec();
                        rig.unit.iotlb_sync(&mut rig.mem, DID, &mut g).map_err(fail("iotlb_sync"))?;
                        for p in gathered {
                            prop_assert!(!rig.mem.is_allocated(p, K4));
                        }
                        if want.is_ok() {
                            history.push((iova, size));
                        }
                        around(iova, size).to_vec()
                    }
                    Step::Unmap { iova, size } => {
                        let before = rig.gather.clone();
                        let want = model.unmap(iova, size);
                        let got = rig.pt.unmap(&mut rig.mem, iova, size, &mut rig.gather);
                        prop_assert_eq!(&got, &want.as_ref().map(|r| r.0).map_err(Clone::clone));
                        match want {
                            Ok((n, gone)) => {
                                dirty.push((iova, iova + n - 1));
                                stale.leaves.extend(gone);
                            }
                            Err(_) => prop_assert_eq!(&rig.gather, &before),
                        }
                        around(iova, size).to_vec()
                    }
                    Step::Sync => {
                        rig.sync()?;
                        let gone: Vec<u64> = stale.leaves.iter().flat_map(|(&s, l)| [s, s + l.size() - 1]).collect();
                        stale.leaves.clear();
                        dirty.clear();
                        gone
                    }
                    Step::Nothing => continue,
                };
                // Pages waiting for the flush: allocated, no longer part of the table.
                let pages = rig.table_pages()?;
                for p in rig.gather.freelist() {
                    prop_assert!(rig.mem.is_allocated(*p, K4));
                    prop_assert!(!pages.contains(p), "freelist page {:#x} still in the table", p);
                }
                let mut extra = [&touched[..], &probes].concat();
                extra.extend(stale.samples(&[]));
                let iovas = model.samples(&extra);
                for &iova in &iovas {
                    check_software(&rig, &model, iova)?;
                    for write in [false, true] {
                        let got = rig.unit.translate(&rig.mem, SID, iova, write);
                        let want = model.translate(iova, write);
                        if dirty.iter().any(|&(lo, hi)| (lo..=hi).contains(&iova)) {
                            let old = stale.translate(iova, write);
                            prop_assert!(got == want || got == old,
                                "stale translate({:#x}, write={}) = {:?}, want {:?} or the old {:?}", iova, write, got, want, old);
                        } else {
                            prop_assert_eq!(got, want, "translate({:#x}, write={})", iova, write);
                        }
                    }
                }
            }
            prop_assert!(dirty.is_empty());
        }
    }

    /// 3. Every leaf is the largest page SLLPS, the alignment of `iova | pa` and the remaining
    /// size permit; a superpage over an emptied table sends the table to the freelist.
    #[test]
    fn superpage_choice(
        region in 0u8..3,
        (off, pa, size) in shape(),
        sp2m in any::<bool>(),
        sp1g in any::<bool>(),
        empty_table_at in prop::option::of(0u64..1024),
        prot in prot().prop_filter("needs a permission", |p| p.read || p.write),
        seed in any::<u64>(),
    ) {
        for levels in LEVELS {
            let mut rig = Rig::new(unit_config(sp2m, sp1g), levels, seed);
            let leaf_levels = rig.pt.config().leaf_levels;
            prop_assert_eq!(leaf_levels, 1 | (sp2m as u8) << 1 | (sp1g as u8) << 2, "leaf levels follow SLLPS");
            let mut model = Model::new(&rig);
            let iova = region_base(region, model.width) + off;
            let size = model.capped(iova, pa, size);
            // Optionally leave an empty L1 table inside the range (map + unmap one page).
            if let Some(i) = empty_table_at {
                let page = iova + (i * K4) % size;
                rig.pt.map(&mut rig.mem, page, 0x4000_0000, K4, Prot::RW, &mut rig.gather).map_err(fail("map"))?;
                prop_assert_eq!(rig.pt.unmap(&mut rig.mem, page, K4, &mut rig.gather), Ok(K4));
                rig.sync()?;
            }
            let tables_before = rig.table_pages()?;
            let want = model.map(iova, pa, size, prot);
            let got = rig.pt.map(&mut rig.mem, iova, pa, size, prot, &mut rig.gather);
            prop_assert_eq!(&got, &want);
            if want.is_err() {
                continue; // e.g. beyond the top of the width
            }
            // Whatever went to the freelist was a table before and is not one now.
            let tables_after = rig.table_pages()?;
            for p in rig.gather.freelist() {
                prop_assert!(tables_before.contains(p) && !tables_after.contains(p));
            }
            let leaves = decompose(leaf_levels, iova, pa, size, usize::MAX);
            prop_assert_eq!(leaves.len(), model.leaves.len());
            for (i, &(v, p, level)) in leaves.iter().enumerate() {
                // The rule itself: permitted, aligned, fits; and no larger page would do.
                prop_assert!(leaf_levels >> (level - 1) & 1 == 1);
                prop_assert!(aligned(v | p, level_size(level)));
                prop_assert!(v + level_size(level) <= iova + size);
                for bigger in level + 1..=3 {
                    let fits = aligned(v | p, level_size(bigger)) && iova + size - v >= level_size(bigger);
                    prop_assert!(!(fits && leaf_levels >> (bigger - 1) & 1 == 1), "a level-{} page was possible at {:#x}", bigger, v);
                }
                let steps = rig.pt.walk(&rig.mem, v).map_err(fail("walk"))?;
                let last = steps.last().unwrap();
                prop_assert_eq!((last.level, last.pte), (level, model.leaves[&v].pte()), "leaf at {:#x}", v);
                if i % 64 == 0 || i + 1 == leaves.len() {
                    let end = v + level_size(level) - 1;
                    for probe in [v, end] {
                        check_software(&rig, &model, probe)?;
                        for write in [false, true] {
                            prop_assert_eq!(rig.unit.translate(&rig.mem, SID, probe, write), model.translate(probe, write));
                        }
                    }
                }
            }
            rig.sync()?;
            check_tables(&rig, &model)?;
            teardown(&mut rig, &mut model, false)?;
        }
    }

    /// 4. `table_pages` is exactly the set of reachable tables, all allocated; unmapping
    /// everything, destroying and flushing returns the allocator to where it was.
    #[test]
    fn table_pages_and_no_leaks(ops in ops(40), seed in any::<u64>(), unmap_all in any::<bool>()) {
        for levels in LEVELS {
            let mut rig = Rig::new(unit_config(true, true), levels, seed);
            let mut model = run_synced(std::slice::from_mut(&mut rig), &ops, &[], false)?;
            check_tables(&rig, &model)?;
            teardown(&mut rig, &mut model, unmap_all)?;
        }
    }

    /// 5. Small IOTLB and paging-structure caches (down to none) give the results of large ones,
    /// as do units that flush with coarser invalidations (no PSI, a small MAMV).
    #[test]
    fn cache_capacity_is_transparent(ops in ops(40), probes in probes(), seed in any::<u64>(), levels in prop::sample::select(LEVELS.to_vec())) {
        // (IOTLB entries, ways, PSC entries, PSI, MAMV)
        const CACHES: [(u32, u32, u32, bool, u8); 9] = [
            (512, 8, 128, true, 18),
            (0, 8, 0, true, 18),
            (1, 1, 0, true, 18),
            (1, 1, 4, true, 18),
            (8, 8, 4, true, 18),
            (8, 2, 0, true, 18),
            (0, 8, 4, true, 18),
            (8, 4, 4, false, 18),
            (8, 8, 4, true, 2),
        ];
        let mut rigs: Vec<Rig> = CACHES
            .iter()
            .map(|&(iotlb_entries, iotlb_ways, psc_entries, psi, mamv)| {
                let cfg = UnitConfig { iotlb_entries, iotlb_ways, psc_entries, psi, mamv, ..unit_config(true, true) };
                Rig::new(cfg, levels, seed)
            })
            .collect();
        run_synced(&mut rigs, &ops, &probes, false)?;
        for (rig, &(iotlb, _, psc, _, _)) in rigs.iter().zip(&CACHES) {
            let (t, p, _) = rig.unit.cache_occupancy();
            prop_assert!(t <= iotlb as usize && p <= psc as usize, "occupancy {:?} above capacity", (t, p));
            prop_assert_eq!(rig.table_pages()?, rigs[0].table_pages()?, "same seed, same tables");
        }
    }

    /// 6. With only a few free frames, maps that run out of table pages midway change no
    /// translation and leak nothing.
    #[test]
    fn out_of_memory_changes_nothing(ops in ops(30), probes in probes(), seed in any::<u64>(), budget in 1u64..12) {
        for levels in LEVELS {
            let mem = Config { size: 4 * G1, seed };
            let mut rig = Rig::build(mem, unit_config(true, true), levels, Some(budget));
            // Keep physical addresses inside the 4 GiB memory, alignment unchanged.
            let ops: Vec<Op> = ops
                .iter()
                .map(|op| match *op {
                    Op::Map { region, off, pa, size, prot } => Op::Map { region, off, pa: pa % (4 * G1), size, prot },
                    ref other => other.clone(),
                })
                .collect();
            let mut model = run_synced(std::slice::from_mut(&mut rig), &ops, &probes, true)?;
            check_tables(&rig, &model)?;
            teardown(&mut rig, &mut model, true)?;
        }
    }
}
