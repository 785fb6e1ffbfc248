use super::*;
use crate::pgtable::Gather;
use crate::{Unit, UnitConfig};
use physmem::Config;

const K4: u64 = 1 << 12;
const M2: u64 = 1 << 21;
const G1: u64 = 1 << 30;
const MEM: u64 = 64 << 30;

fn setup(config: UnitConfig) -> (PhysMem, PageTable) {
    let mut mem = PhysMem::new(Config { size: MEM, seed: 3 }).unwrap();
    let unit = Unit::new(config).unwrap();
    let pt = PageTable::new(&mut mem, unit.pagetable_config(4).unwrap()).unwrap();
    (mem, pt)
}

/// 4 KiB only (misaligned PA), 2 MiB + 4 KiB, two runs sharing an L1 table, a 1 GiB page, a
/// run straddling a 2 MiB boundary, a long 4 KiB run over several L1 tables.
const RUNS: [(u64, u64, u64); 7] = [
    (0x1000, 0x4000_5000, 0x3000),
    (0x4000, 0x4100_0000, 0x1000),
    (0x4000_0000, 0x2_0000_0000, M2 + K4),
    (0x8000_0000, 0x3_0000_1000, 2 * M2),
    (0x1_0000_0000, 0x4_0000_0000, G1),
    (0x1f_f000, 0x5000_0000, 0x2000),
    (0x2_0000_0000, 0x6_0000_3000, 3 * M2 + 5 * K4),
];

fn mapped(prot: Prot) -> (PhysMem, PageTable) {
    let (mut mem, mut pt) = setup(UnitConfig::default());
    pt.map_runs(&mut mem, RUNS, prot, &mut Gather::default()).unwrap();
    (mem, pt)
}

/// The address of the entry mapping `iova` at its leaf (or first non-present) level.
fn leaf_pa(pt: &PageTable, mem: &PhysMem, iova: u64) -> (u32, u64) {
    let s = *pt.walk(mem, iova).unwrap().last().unwrap();
    (s.level, s.pte_pa)
}

fn pages(runs: &[(u64, u64, u64)]) -> u64 {
    runs.iter().map(|r| r.2 >> 12).sum()
}

#[test]
fn an_exact_match_is_none() {
    for prot in [Prot::R, Prot::W, Prot::RW] {
        let (mem, pt) = mapped(prot);
        assert_eq!(pt.verify_runs(&mem, RUNS, prot), Ok(None), "{prot:?}");
        // snoop in the expectation is not compared
        assert_eq!(pt.verify_runs(&mem, RUNS, Prot { snoop: true, ..prot }), Ok(None));
        // a subset, in any order, and nothing at all
        assert_eq!(pt.verify_runs(&mem, RUNS.iter().rev().copied().step_by(2), prot), Ok(None));
        assert_eq!(pt.verify_runs(&mem, [], prot), Ok(None));
    }
}

#[test]
fn a_wrong_pa_is_found_at_its_page() {
    let (mut mem, pt) = mapped(Prot::RW);
    // a 4 KiB leaf in the middle of the long run
    let at = 0x2_0000_0000 + M2 + 7 * K4;
    let (level, pte_pa) = leaf_pa(&pt, &mem, at);
    assert_eq!(level, 1);
    let pte = mem.read_u64(pte_pa).unwrap();
    mem.write_u64(pte_pa, pte + K4).unwrap();
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(Some(at)));
    mem.write_u64(pte_pa, pte).unwrap();
    // an expectation off by a page: the first page of its run
    let mut runs = RUNS;
    runs[3].1 += K4;
    assert_eq!(pt.verify_runs(&mem, runs, Prot::RW), Ok(Some(runs[3].0)));
    // a superpage expected one 2 MiB further on: the page where the expected run enters it
    let mut runs = RUNS;
    runs[4] = (0x1_0000_0000 + 5 * K4, 0x4_0000_0000 + 5 * K4 + M2, K4);
    assert_eq!(pt.verify_runs(&mem, runs, Prot::RW), Ok(Some(0x1_0000_0000 + 5 * K4)));
    // the first mismatch in run order, not the lowest IOVA
    let bad = [(0x2_0000_0000, 0x6_0000_3000, K4), (0x1000, 0x1000, K4)];
    assert_eq!(pt.verify_runs(&mem, [RUNS[6], bad[1], bad[0]], Prot::RW), Ok(Some(0x1000)));
}

#[test]
fn a_wrong_permission_is_found() {
    let (mut mem, pt) = mapped(Prot::RW);
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::R), Ok(Some(RUNS[0].0)));
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::W), Ok(Some(RUNS[0].0)));
    // a 4 KiB leaf losing W
    let at = 0x8000_0000 + 300 * K4;
    let (_, pte_pa) = leaf_pa(&pt, &mem, at);
    let pte = mem.read_u64(pte_pa).unwrap();
    mem.write_u64(pte_pa, pte & !SL_W).unwrap();
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(Some(at)));
    mem.write_u64(pte_pa, pte).unwrap();
    // a table entry above the leaves losing W: every page under it
    let steps = pt.walk(&mem, 0x4000_0000).unwrap();
    let l3 = steps[1];
    mem.write_u64(l3.pte_pa, l3.pte & !SL_W).unwrap();
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(Some(0x4000_0000)));
    mem.write_u64(l3.pte_pa, l3.pte).unwrap();
    // a superpage leaf granting more than expected
    let (level, pte_pa) = leaf_pa(&pt, &mem, 0x1_0000_0000);
    assert_eq!(level, 3);
    let pte = mem.read_u64(pte_pa).unwrap();
    mem.write_u64(pte_pa, pte & !SL_W).unwrap();
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(Some(0x1_0000_0000)));
    assert_eq!(pt.verify_runs(&mem, [RUNS[4]], Prot::R), Ok(None));
    mem.write_u64(pte_pa, pte).unwrap();
    // SNP (ECAP.SC) and the ignored bits are not compared, on 4 KiB and superpage leaves
    for iova in [at, 0x1_0000_0000, 0x4000_0000] {
        let (_, pte_pa) = leaf_pa(&pt, &mem, iova);
        let pte = mem.read_u64(pte_pa).unwrap();
        mem.write_u64(pte_pa, pte | SL_SNP | SL_IGN).unwrap();
    }
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(None));
}

#[test]
fn a_missing_page_is_found() {
    let (mut mem, pt) = mapped(Prot::R);
    let at = 0x1f_f000 + K4; // second page of the run straddling 2 MiB: first of its L1 table
    let (_, pte_pa) = leaf_pa(&pt, &mem, at);
    mem.write_u64(pte_pa, 0).unwrap();
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::R), Ok(Some(at)));
    // a run one page longer than mapped
    let (mem, pt) = mapped(Prot::R);
    let mut runs = RUNS;
    runs[6].2 += K4;
    assert_eq!(pt.verify_runs(&mem, runs, Prot::R), Ok(Some(runs[6].0 + runs[6].2 - K4)));
    // a run nothing maps: no L3 table there
    assert_eq!(pt.verify_runs(&mem, [(0x50_0000_0000, 0x1000_0000, M2)], Prot::R), Ok(Some(0x50_0000_0000)));
}

#[test]
fn superpages_and_4k_leaves_verify_alike() {
    let (mut mem, mut pt) = setup(UnitConfig::default());
    let mut g = Gather::default();
    // 2 MiB superpages, verified as 4 KiB runs of 3 pages
    pt.map(&mut mem, 0x4000_0000, 0x8000_0000, 4 * M2, Prot::RW, &mut g).unwrap();
    assert_eq!(leaf_pa(&pt, &mem, 0x4000_0000).0, 2);
    let small = (0..(4 * M2) / (3 * K4)).map(|i| (0x4000_0000 + i * 3 * K4, 0x8000_0000 + i * 3 * K4, 3 * K4));
    assert_eq!(pt.verify_runs(&mem, small, Prot::RW), Ok(None));
    // 4 KiB leaves (one map call per page) verified as one 2 MiB-aligned run
    for i in 0..1024 {
        pt.map(&mut mem, 0x10_0000_0000 + i * K4, 0x2_0000_0000 + i * K4, K4, Prot::RW, &mut g).unwrap();
    }
    assert_eq!(leaf_pa(&pt, &mem, 0x10_0000_0000).0, 1);
    assert_eq!(pt.verify_runs(&mem, [(0x10_0000_0000, 0x2_0000_0000, 2 * M2)], Prot::RW), Ok(None));
    // a 1 GiB leaf against runs crossing into the next GiB, mapped by 2 MiB leaves
    pt.map(&mut mem, 0x20_0000_0000, 0x4_0000_0000, G1 + M2, Prot::RW, &mut g).unwrap();
    assert_eq!(leaf_pa(&pt, &mem, 0x20_0000_0000).0, 3);
    let runs = [(0x20_0000_0000 + G1 - M2, 0x4_0000_0000 + G1 - M2, 2 * M2), (0x20_0000_0000, 0x4_0000_0000, K4)];
    assert_eq!(pt.verify_runs(&mem, runs, Prot::RW), Ok(None));
    // a superpage at a level SLLPS does not allow is not a translation this unit makes
    let (mut mem, mut pt) = setup(UnitConfig { superpage_1g: false, ..Default::default() });
    pt.map(&mut mem, 0x4000_0000, 0x8000_0000, M2, Prot::RW, &mut g).unwrap();
    let l3 = pt.walk(&mem, 0x4000_0000).unwrap()[1];
    mem.write_u64(l3.pte_pa, 0x8000_0000 | SL_PS | SL_R | SL_W).unwrap();
    assert_eq!(pt.verify_runs(&mem, [(0x4000_0000, 0x8000_0000, M2)], Prot::RW), Ok(Some(0x4000_0000)));
}

#[test]
fn garbage_is_a_mismatch_never_an_error() {
    let (mut mem, pt) = mapped(Prot::RW);
    let steps = pt.walk(&mem, 0x8000_0000).unwrap();
    // a table pointer beyond memory, at each level
    for s in &steps[..3] {
        mem.write_u64(s.pte_pa, (MEM + 0x10_0000) | SL_R | SL_W).unwrap();
        assert_eq!(pt.verify_runs(&mem, [RUNS[3]], Prot::RW), Ok(Some(0x8000_0000)), "level {}", s.level);
        mem.write_u64(s.pte_pa, s.pte).unwrap();
    }
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(None));
    // reserved bits: an address bit above the 48-bit HAW in a table pointer, TM in a 4 KiB leaf,
    // PS at level 4, low address bits of a superpage
    let leaf = steps[3];
    for (s, bit) in [(steps[1], 1u64 << 50), (leaf, SL_TM), (steps[0], SL_PS)] {
        mem.write_u64(s.pte_pa, s.pte | bit).unwrap();
        assert_eq!(pt.verify_runs(&mem, [RUNS[3]], Prot::RW), Ok(Some(0x8000_0000)), "bit {bit:#x} at level {}", s.level);
        mem.write_u64(s.pte_pa, s.pte).unwrap();
    }
    let (_, sp) = leaf_pa(&pt, &mem, 0x4000_0000);
    let pte = mem.read_u64(sp).unwrap();
    mem.write_u64(sp, pte | K4).unwrap();
    assert_eq!(pt.verify_runs(&mem, [RUNS[2]], Prot::RW), Ok(Some(0x4000_0000)));
    mem.write_u64(sp, pte).unwrap();
    // SNP is reserved without ECAP.SC
    let (mut mem2, mut pt2) = setup(UnitConfig { snoop_control: false, ..Default::default() });
    pt2.map_runs(&mut mem2, RUNS, Prot::RW, &mut Gather::default()).unwrap();
    let (_, l) = leaf_pa(&pt2, &mem2, 0x1000);
    let pte = mem2.read_u64(l).unwrap();
    mem2.write_u64(l, pte | SL_SNP).unwrap();
    assert_eq!(pt2.verify_runs(&mem2, RUNS, Prot::RW), Ok(Some(0x1000)));
    // a top-level table beyond memory
    let lost = PageTable::from_raw(MEM + (1 << 30), pt.config()).unwrap();
    assert_eq!(lost.verify_runs(&mem, RUNS, Prot::RW), Ok(Some(RUNS[0].0)));
    assert_eq!(lost.mapped_pages(&mem, 100), Err(Error::Corrupt { table: MEM + (1 << 30), why: Corruption::BeyondMemory }));
    // IOVAs beyond the width, PAs beyond the host address width
    assert_eq!(pt.verify_runs(&mem, [(1 << 48, 0x1000, K4)], Prot::RW), Ok(Some(1 << 48)));
    assert_eq!(pt.verify_runs(&mem, [((1 << 48) - K4, 0x4000_5000, 2 * K4)], Prot::RW), Ok(Some((1 << 48) - K4)));
    assert_eq!(pt.verify_runs(&mem, [(0x2000, 0x4000_6000, 2 * K4)], Prot::RW), Ok(None));
    assert_eq!(pt.verify_runs(&mem, [(0x2000, (1 << 48) - K4, 2 * K4)], Prot::RW), Ok(Some(0x2000)));
    // a scrubbed (poisoned) table: every entry 0x6b6b..., R|W set, address beyond memory
    let mut mem3 = PhysMem::new(Config { size: MEM, seed: 3 }).unwrap();
    let mut pt3 = PageTable::new(&mut mem3, pt.config()).unwrap();
    pt3.map_runs(&mut mem3, RUNS, Prot::RW, &mut Gather::default()).unwrap();
    mem3.scrub();
    assert_eq!(pt3.verify_runs(&mem3, RUNS, Prot::RW), Ok(Some(RUNS[0].0)));
    assert!(matches!(pt3.mapped_pages(&mem3, 100), Err(Error::Corrupt { why: Corruption::BeyondMemory, .. })));
}

#[test]
fn malformed_runs_are_errors() {
    let (mem, pt) = mapped(Prot::RW);
    assert_eq!(pt.verify_runs(&mem, [(0x1001, 0, K4)], Prot::RW), Err(Error::Unaligned { value: 0x1001, align: 4096 }));
    assert_eq!(pt.verify_runs(&mem, [(0x1000, 8, K4)], Prot::RW), Err(Error::Unaligned { value: 8, align: 4096 }));
    assert_eq!(pt.verify_runs(&mem, [(0x1000, 0, 10)], Prot::RW), Err(Error::Unaligned { value: 10, align: 4096 }));
    assert_eq!(pt.verify_runs(&mem, [(0x1000, 0, 0)], Prot::RW), Err(Error::EmptyRange));
    assert!(matches!(pt.verify_runs(&mem, [(u64::MAX - 0xfff, 0, K4)], Prot::RW), Err(Error::OutOfRange { .. })));
    assert!(matches!(pt.verify_runs(&mem, [(0, u64::MAX - 0xfff, K4)], Prot::RW), Err(Error::OutOfRange { .. })));
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::default()), Err(Error::NoPermission));
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot { snoop: true, ..Prot::default() }), Err(Error::NoPermission));
}

#[test]
fn mapped_pages_counts_leaves_and_lists_tables() {
    let (mut mem, mut pt) = setup(UnitConfig::default());
    let empty = pt.mapped_pages(&mem, 1).unwrap();
    assert_eq!(empty, MappedSummary { pages: 0, tables: vec![pt.pgd()] });
    assert_eq!(pt.mapped_pages(&mem, 0), Err(Error::Corrupt { table: pt.pgd(), why: Corruption::TooManyTables { max: 0 } }));
    pt.map_runs(&mut mem, RUNS, Prot::RW, &mut Gather::default()).unwrap();
    let s = pt.mapped_pages(&mem, 1000).unwrap();
    assert_eq!(s.pages, pages(&RUNS));
    assert_eq!(s.tables[0], pt.pgd());
    let mut listed = pt.table_pages(&mem).unwrap();
    let mut reached = s.tables.clone();
    listed.sort();
    reached.sort();
    assert_eq!(reached, listed, "the same pages as table_pages");
    // parents before children
    for (i, &t) in s.tables.iter().enumerate().skip(1) {
        let parent = s.tables[..i].iter().any(|&p| (0..512).any(|k| slpte_addr(mem.read_u64(p + 8 * k).unwrap(), 48) == t));
        assert!(parent, "table {t:#x} after its parent");
    }
    // exactly as many tables as exist is enough, one fewer is not
    let n = s.tables.len();
    assert_eq!(pt.mapped_pages(&mem, n).unwrap(), s);
    assert!(matches!(pt.mapped_pages(&mem, n - 1), Err(Error::Corrupt { why: Corruption::TooManyTables { max }, .. }) if max == n - 1));
    // an extra leaf anywhere changes the count
    let (_, l) = leaf_pa(&pt, &mem, 0x5000);
    mem.write_u64(l, 0x7000_0000 | SL_R).unwrap();
    assert_eq!(pt.mapped_pages(&mem, n).unwrap().pages, pages(&RUNS) + 1);
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(None), "verify_runs alone does not see it");
}

#[test]
fn cycles_and_shared_tables_are_refused() {
    let (mut mem, pt) = mapped(Prot::RW);
    let steps = pt.walk(&mem, 0x8000_0000).unwrap();
    let (l4, l3, l2) = (steps[0], steps[1], steps[2]);
    // an L2 entry pointing back at the top: a cycle
    let free_l2 = (l2.pte_pa & !0xfff) | (8 * 300);
    assert_eq!(mem.read_u64(free_l2).unwrap(), 0);
    mem.write_u64(free_l2, pt.pgd() | SL_R | SL_W).unwrap();
    assert!(matches!(pt.mapped_pages(&mem, 10_000), Err(Error::Corrupt { why: Corruption::ReachedTwice, .. })));
    // the walk cannot loop: it is bounded by the levels
    assert_eq!(pt.verify_runs(&mem, RUNS, Prot::RW), Ok(None));
    assert!(pt.verify_runs(&mem, [((0x8000_0000 & !(G1 - 1)) | (300 * M2), 0, M2)], Prot::RW).unwrap().is_some());
    mem.write_u64(free_l2, 0).unwrap();
    // a table pointing at itself
    let free_l4 = (l4.pte_pa & !0xfff) | (8 * 400);
    mem.write_u64(free_l4, pt.pgd() | SL_R).unwrap();
    assert_eq!(pt.mapped_pages(&mem, 10_000), Err(Error::Corrupt { table: pt.pgd(), why: Corruption::ReachedTwice }));
    mem.write_u64(free_l4, 0).unwrap();
    // two L3 entries sharing one L2 table
    let free_l3 = (l3.pte_pa & !0xfff) | (8 * 500);
    mem.write_u64(free_l3, l3.pte).unwrap();
    let shared = slpte_addr(l3.pte, 48);
    assert_eq!(pt.mapped_pages(&mem, 10_000), Err(Error::Corrupt { table: shared, why: Corruption::ReachedTwice }));
    mem.write_u64(free_l3, 0).unwrap();
    assert_eq!(pt.mapped_pages(&mem, 10_000).unwrap().pages, pages(&RUNS));
}

/// A small seeded generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The definition, page by page from the top with [`PageTable::walk`]'s steps: the first page of
/// `runs` that does not translate as expected.
fn reference(pt: &PageTable, mem: &PhysMem, runs: &[(u64, u64, u64)], want: u64) -> Option<u64> {
    let c = pt.config();
    let rsvd = SlpteRsvd::new(c.haw, c.snoop, false);
    for &(iova, pa, size) in runs {
        for off in (0..size).step_by(4096) {
            let at = iova + off;
            let ok = (|| {
                if at >> pt.width() != 0 || pa + off > haw_mask(c.haw) {
                    return false;
                }
                let mut table = pt.pgd();
                let mut perm = SL_R | SL_W;
                for level in (1..=c.levels).rev() {
                    let Some(pte) = mem.dma_read_u64(table + 8 * level_index(at, level)) else { return false };
                    if !slpte_present(pte) || pte & rsvd.mask(pte, level) != 0 {
                        return false;
                    }
                    if slpte_is_leaf(pte, level) {
                        let base = slpte_addr(pte, c.haw);
                        return c.leaf_levels & (1 << (level - 1)) != 0
                            && pte & (SL_R | SL_W) == want
                            && perm & want == want
                            && base + (at & (level_size(level) - 1)) == pa + off;
                    }
                    perm &= pte;
                    table = slpte_addr(pte, c.haw);
                }
                unreachable!()
            })();
            if !ok {
                return Some(at);
            }
        }
    }
    None
}

#[test]
fn agrees_with_a_page_by_page_reference_under_random_corruption() {
    let mut rng = Rng(42);
    for round in 0..200 {
        let (mut mem, mut pt) = setup(UnitConfig::default());
        // random runs in a few GiB, 4 KiB to several MiB, PAs aligned to 4 KiB or 2 MiB
        let mut runs = Vec::new();
        let mut iova = rng.below(4) * G1;
        for _ in 0..1 + rng.below(12) {
            iova += rng.below(3) * M2 + rng.below(4) * K4;
            let max_pages = if rng.below(2) == 0 { 8 } else { 1500 };
            let size = K4 * (1 + rng.below(max_pages));
            let pa = if rng.below(2) == 0 { (1 + rng.below(30)) * M2 + (iova & (M2 - 1)) } else { (1 + rng.below(1 << 18)) * K4 };
            if pt.map(&mut mem, iova, pa, size, Prot::RW, &mut Gather::default()).is_ok() {
                runs.push((iova, pa, size));
            }
            iova += size;
        }
        assert_eq!(pt.verify_runs(&mem, runs.iter().copied(), Prot::RW), Ok(None), "round {round}");
        // corrupt a few words of random tables: flip a bit, or write garbage
        let tables = pt.table_pages(&mem).unwrap();
        for _ in 0..1 + rng.below(3) {
            let t = tables[rng.below(tables.len() as u64) as usize];
            let at = t + 8 * rng.below(512);
            let w = mem.read_u64(at).unwrap();
            let v = match rng.below(4) {
                0 => w ^ (1 << rng.below(64)),
                1 => rng.next(),
                2 => w ^ ((1 + rng.below(3)) << 12),
                _ => tables[rng.below(tables.len() as u64) as usize] | SL_R | SL_W,
            };
            mem.write_u64(at, v).unwrap();
        }
        let want = reference(&pt, &mem, &runs, SL_R | SL_W);
        assert_eq!(pt.verify_runs(&mem, runs.iter().copied(), Prot::RW), Ok(want), "round {round}");
        let want_r = reference(&pt, &mem, &runs, SL_R);
        assert_eq!(pt.verify_runs(&mem, runs.iter().copied(), Prot::R), Ok(want_r), "round {round}");
        // the audit terminates with a count or a refusal, never a panic
        let _ = pt.mapped_pages(&mem, 4096);
    }
}
