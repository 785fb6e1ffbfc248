use super::*;
use crate::{Unit, UnitConfig};
use physmem::Config;

const K4: u64 = 1 << 12;
const M2: u64 = 1 << 21;
const G1: u64 = 1 << 30;
const DID: u16 = 5;

fn setup(config: UnitConfig, mem_size: u64) -> (PhysMem, Unit, PageTable) {
    let mut mem = PhysMem::new(Config { size: mem_size, seed: 11 }).unwrap();
    let unit = Unit::new(config).unwrap();
    let pt = PageTable::new(&mut mem, unit.pagetable_config(4).unwrap()).unwrap();
    (mem, unit, pt)
}

/// Every table page, top first, with its 512 entries.
fn snapshot(pt: &PageTable, mem: &PhysMem) -> Vec<(u64, Vec<u64>)> {
    let pages = pt.table_pages(mem).unwrap();
    pages.into_iter().map(|t| (t, (0..512).map(|i| mem.read_u64(t + 8 * i).unwrap()).collect())).collect()
}

fn leaf_level(pt: &PageTable, mem: &PhysMem, iova: u64) -> u32 {
    let step = *pt.walk(mem, iova).unwrap().last().unwrap();
    assert!(slpte_present(step.pte), "{iova:#x} is mapped");
    step.level
}

/// Runs of every kind: 4 KiB only (misaligned PA), 2 MiB + 4 KiB, a 1 GiB page, runs sharing an
/// L1 table back to back, and one straddling a 2 MiB boundary.
const RUNS: [(u64, u64, u64); 6] = [
    (0x1000, 0x4000_5000, 0x3000),
    (0x4000, 0x4100_0000, 0x1000),
    (0x4000_0000, 0x2_0000_0000, M2 + K4),
    (0x8000_0000, 0x3_0000_1000, 2 * M2),
    (0x1_0000_0000, 0x4_0000_0000, G1),
    (0x1f_f000, 0x5000_0000, 0x2000),
];

#[test]
fn map_runs_writes_the_same_tables_as_one_map_per_run() {
    let (mut mem_a, _, mut a) = setup(UnitConfig::default(), 64 << 30);
    let (mut mem_b, _, mut b) = setup(UnitConfig::default(), 64 << 30);
    let (mut ga, mut gb) = (Gather::default(), Gather::default());
    a.map_runs(&mut mem_a, RUNS, Prot::RW, &mut ga).unwrap();
    for (iova, pa, size) in RUNS {
        b.map(&mut mem_b, iova, pa, size, Prot::RW, &mut gb).unwrap();
    }
    assert_eq!(snapshot(&a, &mem_a), snapshot(&b, &mem_b), "same allocations, same entries");
    assert_eq!(ga, gb);
    assert_eq!(mem_a.stats().frames_allocated, mem_b.stats().frames_allocated);
    for (iova, pa, size) in RUNS {
        for at in [iova, iova + size / 2, iova + size - 8] {
            assert_eq!(a.iova_to_phys(&mem_a, at).unwrap(), Some(pa + (at - iova)));
        }
    }
    // an empty batch is a no-op, whatever the permissions
    a.map_runs(&mut mem_a, [], Prot::default(), &mut ga).unwrap();
    assert_eq!(snapshot(&a, &mem_a), snapshot(&b, &mem_b));
}

#[test]
fn map_runs_chooses_superpages_per_run() {
    let (mut mem, _, mut pt) = setup(UnitConfig::default(), 64 << 30);
    let mut g = Gather::default();
    pt.map_runs(&mut mem, RUNS, Prot::R, &mut g).unwrap();
    assert_eq!(leaf_level(&pt, &mem, 0x1000), 1);
    assert_eq!(leaf_level(&pt, &mem, 0x4000_0000), 2, "2 MiB aligned IOVA and PA");
    assert_eq!(leaf_level(&pt, &mem, 0x4020_0000), 1, "the 4 KiB tail");
    assert_eq!(leaf_level(&pt, &mem, 0x8000_0000), 1, "misaligned PA: 4 KiB only");
    assert_eq!(leaf_level(&pt, &mem, 0x8020_0000), 1);
    assert_eq!(leaf_level(&pt, &mem, 0x1_0000_0000), 3, "a whole aligned GiB");
    assert_eq!(pt.walk(&mem, 0x4000_0000).unwrap().last().unwrap().pte, 0x2_0000_0000 | SL_PS | SL_R);
    // a 2 MiB run right after 4 KiB runs in the same 1 GiB, and SLLPS without 1 GiB
    let (mut mem, _, mut pt) = setup(UnitConfig { superpage_1g: false, ..Default::default() }, 64 << 30);
    let runs = [(0, 0x1000_1000, K4), (M2, 0x1020_0000, M2), (G1, 0x4000_0000, G1)];
    pt.map_runs(&mut mem, runs, Prot::RW, &mut g).unwrap();
    assert_eq!(leaf_level(&pt, &mem, 0), 1);
    assert_eq!(leaf_level(&pt, &mem, M2), 2);
    assert_eq!(leaf_level(&pt, &mem, G1 + G1 / 2), 2, "no 1 GiB pages without SLLPS bit 1");
    assert!(g.freelist().is_empty());
}

/// A table with a mapping, a partially unmapped 2 MiB region (an empty L1 table remains) and
/// nothing pending: the baseline every failed batch must leave word for word.
fn baseline(config: UnitConfig, mem_size: u64) -> (PhysMem, Unit, PageTable) {
    let (mut mem, mut unit, mut pt) = setup(config, mem_size);
    let mut g = Gather::default();
    pt.map(&mut mem, 0x6000_0000, 0x40_0000, 0x2000, Prot::RW, &mut g).unwrap();
    pt.map(&mut mem, 0x20_0000, 0x60_0000, K4, Prot::RW, &mut g).unwrap();
    pt.unmap(&mut mem, 0x20_0000, K4, &mut g).unwrap();
    unit.iotlb_sync(&mut mem, DID, &mut g).unwrap();
    (mem, unit, pt)
}

#[test]
fn a_failing_run_rolls_the_whole_batch_back() {
    let ok = |iova: u64| (iova, 0x2000_0000 + iova % G1, K4);
    // (failing run, the error): after runs that allocate tables, fill an L1 table, displace the
    // empty L1 table at 2 MiB with a superpage and straddle 2 MiB boundaries.
    let cases: [((u64, u64, u64), Error); 8] = [
        ((0x6000_1000, 0x3000_0000, K4), Error::AlreadyMapped { iova: 0x6000_1000 }),
        ((0x1_0000_3000, 0x3000_0000, 0x3000), Error::AlreadyMapped { iova: 0x1_0000_3000 }),
        ((0x7000_0800, 0x3000_0000, K4), Error::Unaligned { value: 0x7000_0800, align: 4096 }),
        ((0x7000_0000, 0x3000_0800, K4), Error::Unaligned { value: 0x3000_0800, align: 4096 }),
        ((0x7000_0000, 0x3000_0000, 0), Error::EmptyRange),
        ((1 << 48, 0x3000_0000, K4), Error::OutOfRange { iova: 1 << 48, size: K4, width: 48 }),
        ((0x7000_0000, 64 << 30, K4), Error::Mem(physmem::Error::OutOfRange { pa: 64 << 30, len: K4, size: 64 << 30 })),
        ((0x7000_0000, 0x3000_0000, !0xfff_u64), Error::OutOfRange { iova: 0x7000_0000, size: !0xfff_u64, width: 48 }),
    ];
    for (bad, err) in cases {
        let (mut mem, mut unit, mut pt) = baseline(UnitConfig::default(), 64 << 30);
        let before = snapshot(&pt, &mem);
        let l1 = pt.walk(&mem, 0x20_0000).unwrap()[2].pte & !0xfff;
        let frames = mem.stats().frames_allocated;
        let runs = [ok(0x1_0000_0000), (0x1_0000_1000, 0x2000_1000, 0x4000), (M2, 0x4000_0000, M2), (0x8_001f_f000, 0x50_0000, 0x3000), bad, ok(0x9_0000_0000)];
        let mut g = Gather::default();
        assert_eq!(pt.map_runs(&mut mem, runs, Prot::RW, &mut g), Err(err.clone()));
        assert_eq!(snapshot(&pt, &mem), before, "{err}: the table is as it was");
        assert!(!g.freelist().contains(&l1), "{err}: the displaced L1 table is back, not freed");
        assert_eq!(g.freelist().len(), 2 + 3, "{err}: the tables the batch allocated");
        assert!(g.freelist().iter().all(|&t| mem.is_allocated(t, K4)), "still allocated before the flush");
        assert_eq!(pt.iova_to_phys(&mem, 0x1_0000_0000).unwrap(), None);
        assert_eq!(pt.iova_to_phys(&mem, 0x6000_1000).unwrap(), Some(0x40_1000));
        unit.iotlb_sync(&mut mem, DID, &mut g).unwrap();
        assert_eq!(mem.stats().frames_allocated, frames, "{err}: no table page leaked");
        assert!(mem.is_allocated(l1, K4));
    }
}

#[test]
fn running_out_of_memory_mid_batch_and_mid_run_rolls_back() {
    // 16 MiB of memory, of which exactly two frames are free after the baseline.
    let (mut mem, mut unit, mut pt) = baseline(UnitConfig::default(), 16 << 20);
    let mut held = Vec::new();
    while let Ok(pa) = mem.alloc(0, false) {
        held.push(pa);
    }
    for pa in held.drain(..2) {
        mem.free_order(pa, 0).unwrap();
    }
    let before = snapshot(&pt, &mem);
    let frames = mem.stats().frames_allocated;
    // A new GiB: L2 + L1 (the two frames); the last run needs a second L1 after its first page.
    const B: u64 = 4 * G1;
    let runs = [(B, 0x10_0000, K4), (B + 0x1000, 0x20_0000, 0x1000), (B + 0x1f_f000, 0x30_0000, 0x2000)];
    let mut g = Gather::default();
    assert_eq!(pt.map_runs(&mut mem, runs, Prot::RW, &mut g), Err(Error::Mem(physmem::Error::OutOfMemory { order: 0 })));
    assert_eq!(snapshot(&pt, &mem), before);
    assert_eq!(g.freelist().len(), 2);
    assert_eq!(g.range(), Some((B, B + G1 - 1)), "the rolled-back runs and the span of the detached L2 table");
    unit.iotlb_sync(&mut mem, DID, &mut g).unwrap();
    assert_eq!(mem.stats().frames_allocated, frames);
    // with the memory back, the same batch maps
    for pa in held.drain(..) {
        mem.free_order(pa, 0).unwrap();
    }
    pt.map_runs(&mut mem, runs, Prot::RW, &mut g).unwrap();
    assert_eq!(pt.iova_to_phys(&mem, B + 0x20_0008).unwrap(), Some(0x30_1008));
}

#[test]
fn running_out_of_memory_in_the_first_step_leaves_no_frame_behind() {
    // One free frame: the first run's first step allocates the L2 table of a new GiB with it,
    // then fails to allocate the L1 table. Nothing was mapped, yet the L2 table was installed
    // (and reachable by a walk): it must reach the freelist with a range to flush, so that the
    // sync frees it; a freelist without a range is never flushed or freed.
    let (mut mem, mut unit, mut pt) = baseline(UnitConfig::default(), 16 << 20);
    let mut held = Vec::new();
    while let Ok(pa) = mem.alloc(0, false) {
        held.push(pa);
    }
    mem.free_order(held.pop().unwrap(), 0).unwrap();
    let before = snapshot(&pt, &mem);
    let frames = mem.stats().frames_allocated;
    const B: u64 = 5 * G1;
    for runs in [vec![(B + 0x3000, 0x10_0000, K4)], vec![(B, 0x20_0000, M2 + K4), (2 * B, 0x40_0000, K4)]] {
        let mut g = Gather::default();
        assert_eq!(pt.map_runs(&mut mem, runs.iter().copied(), Prot::RW, &mut g), Err(Error::Mem(physmem::Error::OutOfMemory { order: 0 })));
        assert_eq!(snapshot(&pt, &mem), before, "{runs:x?}: the table is as it was");
        assert_eq!(g.freelist().len(), 1, "{runs:x?}: the L2 table");
        assert_eq!(g.range(), Some((B, B + G1 - 1)), "{runs:x?}: the span of the entry that pointed at it");
        let flush = crate::IotlbInvalidation::Page { did: DID, addr: B, am: 18, ih: false };
        assert_eq!(unit.iotlb_sync(&mut mem, DID, &mut g).unwrap(), flush, "the 1 GiB span, paging-structure caches included");
        assert_eq!(mem.stats().frames_allocated, frames, "{runs:x?}: no frame left behind");
    }
    // the frame is usable again: a 2 MiB superpage needs the L2 table only
    let mut g = Gather::default();
    pt.map_runs(&mut mem, [(B, 0x20_0000, M2)], Prot::RW, &mut g).unwrap();
    assert_eq!(pt.iova_to_phys(&mem, B + 0x1234).unwrap(), Some(0x20_1234));
}

#[test]
fn runs_of_one_batch_may_not_overlap() {
    let (mut mem, mut unit, mut pt) = baseline(UnitConfig::default(), 64 << 30);
    let before = snapshot(&pt, &mem);
    let frames = mem.stats().frames_allocated;
    let mut g = Gather::default();
    let runs = [(0x4000_0000, 0x1_0000_0000, 4 * M2), (0x4060_0000, 0x2000_0000, 0x1000)];
    assert_eq!(pt.map_runs(&mut mem, runs, Prot::RW, &mut g), Err(Error::AlreadyMapped { iova: 0x4060_0000 }));
    assert_eq!(snapshot(&pt, &mem), before);
    // 4 KiB runs in the L1 table of the previous run: checked there, not by a walk
    let runs = [(0x4000_1000, 0x2000_0000, 0x3000), (0x4000_4000, 0x2100_0000, K4), (0x4000_3000, 0x2200_0000, 0x2000)];
    assert_eq!(pt.map_runs(&mut mem, runs, Prot::RW, &mut g), Err(Error::AlreadyMapped { iova: 0x4000_3000 }));
    assert_eq!(snapshot(&pt, &mem), before);
    let runs = [(0x4000_5000, 0x2000_0000, K4), (0x4000_0000, 0x4000_0000, M2)];
    assert_eq!(pt.map_runs(&mut mem, runs, Prot::RW, &mut g), Err(Error::AlreadyMapped { iova: 0x4000_5000 }));
    assert_eq!(snapshot(&pt, &mem), before);
    let runs = [(0x4000_5000, 0x2000_0000, K4), (0x4000_0000, 0x2100_0000, 0x6000)];
    assert_eq!(pt.map_runs(&mut mem, runs, Prot::RW, &mut g), Err(Error::AlreadyMapped { iova: 0x4000_5000 }));
    assert_eq!(snapshot(&pt, &mem), before);
    unit.iotlb_sync(&mut mem, DID, &mut g).unwrap();
    assert_eq!(mem.stats().frames_allocated, frames);
}
