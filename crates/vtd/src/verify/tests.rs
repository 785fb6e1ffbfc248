use super::*;
use crate::pgtable::Gather;
use crate::{Unit, UnitConfig};
use physmem::Config;

const K4: u64 = 1 << 12;
const M2: u64 = 1 << 21;
const G1: u64 = 1 << 30;

/// 4 KiB runs sharing an L1 table, 2 MiB + 4 KiB, a 1 GiB page, a run straddling a 2 MiB
/// boundary, a long 4 KiB run over several L1 tables; ascending and disjoint.
const RUNS: [(u64, u64, u64); 7] = [
    (0x1000, 0x4000_5000, 0x3000),
    (0x4000, 0x4100_0000, 0x1000),
    (0x1f_f000, 0x5000_0000, 0x2000),
    (0x4000_0000, 0x2_0000_0000, M2 + K4),
    (0x8000_0000, 0x3_0000_1000, 2 * M2),
    (0x1_0000_0000, 0x4_0000_0000, G1),
    (0x2_0000_0000, 0x6_0000_3000, 3 * M2 + 5 * K4),
];

fn mapped(prot: Prot) -> (PhysMem, PageTable) {
    let mut mem = PhysMem::new(Config { size: 64 << 30, seed: 3 }).unwrap();
    let unit = Unit::new(UnitConfig::default()).unwrap();
    let mut pt = PageTable::new(&mut mem, unit.pagetable_config(4).unwrap()).unwrap();
    pt.map_runs(&mut mem, RUNS, prot, &mut Gather::default()).unwrap();
    (mem, pt)
}

fn expected(runs: &[(u64, u64, u64)], prot: Prot) -> Vec<ExpectedRun> {
    runs.iter().map(|&(iova, pa, size)| ExpectedRun { iova, pa, size, prot }).collect()
}

fn pages(runs: &[(u64, u64, u64)]) -> u64 {
    runs.iter().map(|r| r.2 >> 12).sum()
}

/// The verdict of the two-walk check it replaces: verify_runs, then mapped_pages, then each
/// table handed over, then the count.
fn two_walks(pt: &PageTable, mem: &PhysMem, prot: Prot, handed: &[u64]) -> bool {
    if pt.verify_runs(mem, RUNS, prot) != Ok(None) {
        return false;
    }
    match pt.mapped_pages(mem, handed.len()) {
        Ok(s) => s.tables.iter().all(|t| handed.contains(t)) && s.pages == pages(&RUNS),
        Err(_) => false,
    }
}

fn accepted(a: &HandoverAudit) -> bool {
    a.mismatch.is_none() && a.corrupt.is_none() && a.foreign_table.is_none() && a.pages == pages(&RUNS)
}

#[test]
fn an_exact_table_passes_and_is_counted_as_mapped_pages_counts_it() {
    for prot in [Prot::R, Prot::W, Prot::RW] {
        let (mem, pt) = mapped(prot);
        let s = pt.mapped_pages(&mem, 1 << 20).unwrap();
        let a = pt.verify_handover(&mem, &expected(&RUNS, prot), &s.tables).unwrap();
        assert_eq!(a, HandoverAudit { pages: pages(&RUNS), tables: s.tables.len() as u64, ..Default::default() }, "{prot:?}");
        // in any order, snoop not compared
        let mut rev = expected(&RUNS, Prot { snoop: true, ..prot });
        rev.reverse();
        assert!(accepted(&pt.verify_handover(&mem, &rev, &s.tables).unwrap()));
    }
}

#[test]
fn every_single_bit_flip_gets_the_two_walks_verdict_and_mismatch() {
    let (mut mem, pt) = mapped(Prot::RW);
    let tables = pt.mapped_pages(&mem, 1 << 20).unwrap().tables;
    let mut rng = 0x1234_5678u64;
    let mut next = || {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut refused = 0;
    for _ in 0..3000 {
        let table = tables[(next() % tables.len() as u64) as usize];
        // mostly entries that are in use (the interesting ones), sometimes any
        let slot = if next() % 4 == 0 { next() % 512 } else { (0..512).find(|&k| mem.read_u64(table + 8 * ((k + next()) % 512)).unwrap() != 0).unwrap_or(0) };
        let pa = table + 8 * slot;
        let old = mem.read_u64(pa).unwrap();
        mem.write_u64(pa, old ^ (1 << (next() % 64))).unwrap();
        let a = pt.verify_handover(&mem, &expected(&RUNS, Prot::RW), &tables).unwrap();
        let want = two_walks(&pt, &mem, Prot::RW, &tables);
        assert_eq!(accepted(&a), want, "flip at {pa:#x}: {a:?}");
        if a.corrupt.is_none() {
            assert_eq!(a.mismatch, pt.verify_runs(&mem, RUNS, Prot::RW).unwrap(), "flip at {pa:#x}");
        }
        refused += !want as u32;
        mem.write_u64(pa, old).unwrap();
    }
    assert!(refused > 500, "{refused}");
}

#[test]
fn a_table_not_handed_over_is_not_entered() {
    let (mem, pt) = mapped(Prot::RW);
    let tables = pt.mapped_pages(&mem, 1 << 20).unwrap().tables;
    let (level, pte_pa) = {
        let s = pt.walk(&mem, 0x2_0000_0000 + M2).unwrap();
        (s.last().unwrap().level, s.last().unwrap().pte_pa)
    };
    assert_eq!(level, 1);
    let l1 = pte_pa & !0xfff;
    let handed: Vec<u64> = tables.iter().copied().filter(|&t| t != l1).collect();
    let a = pt.verify_handover(&mem, &expected(&RUNS, Prot::RW), &handed).unwrap();
    assert_eq!(a.foreign_table, Some(l1));
    assert_eq!(a.mismatch, Some(0x2_0000_0000 + M2));
    assert_eq!(a.pages, pages(&RUNS) - 512);
    assert_eq!(a.tables, handed.len() as u64);
}

#[test]
fn a_cycle_or_a_shared_table_stops_the_walk() {
    let (mut mem, pt) = mapped(Prot::RW);
    let tables = pt.mapped_pages(&mem, 1 << 20).unwrap().tables;
    // an empty top-level slot pointing back at the top
    let slot = pt.pgd() + 8 * 300;
    mem.write_u64(slot, pt.pgd() | 3).unwrap();
    let a = pt.verify_handover(&mem, &expected(&RUNS, Prot::RW), &tables).unwrap();
    assert_eq!(a.corrupt, Some(Error::Corrupt { table: pt.pgd(), why: Corruption::ReachedTwice }));
    assert!(!accepted(&a));
}

#[test]
fn missing_extra_and_overlapping_expectations() {
    let (mem, pt) = mapped(Prot::RW);
    let tables = pt.mapped_pages(&mem, 1 << 20).unwrap().tables;
    // fewer runs than mapped: no mismatch, the count tells
    let a = pt.verify_handover(&mem, &expected(&RUNS[1..], Prot::RW), &tables).unwrap();
    assert_eq!((a.mismatch, a.pages), (None, pages(&RUNS)));
    // a run where nothing is mapped, between others, past the width, and after everything
    for iova in [0x10_0000, 0x5000_0000_0000, 0x3_0000_0000] {
        let mut runs = expected(&RUNS, Prot::RW);
        runs.push(ExpectedRun { iova, pa: 0x1000, size: 2 * K4, prot: Prot::RW });
        assert_eq!(pt.verify_handover(&mem, &runs, &tables).unwrap().mismatch, Some(iova), "{iova:#x}");
    }
    // two runs naming one page
    let mut runs = expected(&RUNS, Prot::RW);
    runs.push(ExpectedRun { iova: 0x2000, pa: 0x4000_6000, size: K4, prot: Prot::RW });
    assert_eq!(pt.verify_handover(&mem, &runs, &tables).unwrap().mismatch, Some(0x2000));
    // the wrong permissions
    assert_eq!(pt.verify_handover(&mem, &expected(&RUNS, Prot::R), &tables).unwrap().mismatch, Some(0x1000));
}

#[test]
fn malformed_runs_are_errors() {
    let (mem, pt) = mapped(Prot::RW);
    let run = |iova, pa, size, prot| [ExpectedRun { iova, pa, size, prot }];
    assert_eq!(pt.verify_handover(&mem, &run(0x1001, 0, K4, Prot::RW), &[]), Err(Error::Unaligned { value: 0x1001, align: 4096 }));
    assert_eq!(pt.verify_handover(&mem, &run(0, 0, 0, Prot::RW), &[]), Err(Error::EmptyRange));
    assert_eq!(pt.verify_handover(&mem, &run(u64::MAX - 0xfff, 0, 2 * K4, Prot::RW), &[]), Err(Error::OutOfRange { iova: u64::MAX - 0xfff, size: 2 * K4, width: 64 }));
    assert_eq!(pt.verify_handover(&mem, &run(0, 0, K4, Prot::default()), &[]), Err(Error::NoPermission));
    // no table handed over: the top is foreign, every run unmapped
    let a = pt.verify_handover(&mem, &expected(&RUNS, Prot::RW), &[]).unwrap();
    assert_eq!((a.foreign_table, a.mismatch, a.pages, a.tables), (Some(pt.pgd()), Some(0x1000), 0, 0));
}
