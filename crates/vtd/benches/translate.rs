//! Native benchmarks of the VT-d model's hot paths: DMA translation (IOTLB hit, full walk,
//! walk resumed from the paging-structure cache, a realistic mostly-miss batch) and the kernel
//! side's map/unmap of 1 GiB, and DMA bandwidth (1 MiB reads and writes).
//!
//! Run with `cargo bench -p vtd --bench translate`. Criterion writes
//! `target/criterion/<group>/<function>/new/estimates.json`; `mean.point_estimate` is ns per
//! iteration (one iteration = one 4096-entry batch for `translate/*`, one map or unmap of 1 GiB
//! for `map/*` and `unmap/*`, one 1 MiB transfer for `dma/*`). The ids are stable: scripts read them.
//! `VTD_WALK_DUMP=<file>` writes walk_4level's tables and IOVAs for bench/walk_flat.c;
//! `VTD_BENCH_ROUNDS=<n>` also prints each `translate/*` scenario's median of n timed batches
//! (steadier than criterion's samples on a loaded machine, and the statistic bench/walk_flat.c
//! reports), and `VTD_BENCH_ROUNDS_OUT=<file>` appends them to `file` as JSON lines.
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput};
use physmem::{Config, PhysMem};
use vtd::{ContextEntry, Gather, PageTable, Prot, RootEntry, TranslationType, Unit, UnitConfig};

const SID: u16 = 0x0100; // 01:00.0
const DID: u16 = 7;
const GIB: u64 = 1 << 30;
/// Mapped IOVA range: [IOVA, IOVA + 1 GiB), 1 GiB aligned so unmap covers one whole L3 entry.
const IOVA: u64 = GIB;
/// Target of the 4 KiB mappings: misaligned to 2 MiB so only 4 KiB leaves are chosen.
const PA_4K: u64 = GIB + 0x1000;
/// Target of the 2 MiB mappings: 2 MiB aligned but not 1 GiB aligned, so 2 MiB leaves.
const PA_2M: u64 = GIB + 0x20_0000;
/// IOVAs per `translate_batch` call.
const BATCH: usize = 4096;
/// Distinct pages of the IOTLB-hit working set.
const HOT_PAGES: usize = 64;

fn mem() -> PhysMem {
    PhysMem::new(Config { size: 1 << 40, seed: 1 }).unwrap()
}

/// splitmix64, so the IOVA streams are fixed across runs and machines.
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

/// A translating unit whose requester `SID` is attached to a 4-level domain `DID` with
/// `[IOVA, IOVA + 1 GiB)` mapped read/write as 262,144 4 KiB pages.
struct Rig {
    mem: PhysMem,
    unit: Unit,
    pgd: u64,
}

impl Rig {
    fn new(config: UnitConfig) -> Rig {
        let mut mem = mem();
        let mut unit = Unit::new(config).unwrap();
        let mut pt = PageTable::new(&mut mem, unit.pagetable_config(4).unwrap()).unwrap();
        let mut gather = Gather::default();
        pt.map(&mut mem, IOVA, PA_4K, GIB, Prot::RW, &mut gather).unwrap();
        assert!(gather.freelist().is_empty());
        let root = mem.alloc(0, true).unwrap();
        let ctx = mem.alloc(0, true).unwrap();
        mem.write_u64(root + 16 * (SID >> 8) as u64, RootEntry::new(ctx).lo).unwrap();
        let ce = ContextEntry::new(pt.pgd(), pt.aw(), DID, TranslationType::MultiLevel, false);
        mem.write_u64(ctx + 16 * (SID & 0xff) as u64, ce.lo).unwrap();
        mem.write_u64(ctx + 16 * (SID & 0xff) as u64 + 8, ce.hi).unwrap();
        unit.set_root_table(root);
        unit.enable_translation(true);
        Rig { mem, unit, pgd: pt.pgd() }
    }

    /// Translates `iovas` once, checks every result against the linear mapping, and returns
    /// the unit's (IOTLB misses, walks, PSC hits) for that pass.
    fn check(&mut self, iovas: &[u64]) -> (u64, u64, u64) {
        let before = self.unit.stats();
        let mut out = vec![0; iovas.len()];
        let faulted = self.unit.translate_batch(&self.mem, SID, iovas, &mut out, false, None);
        assert_eq!(faulted, 0);
        for (&iova, &pa) in iovas.iter().zip(&out) {
            assert_eq!(pa, iova - IOVA + PA_4K);
        }
        let after = self.unit.stats();
        (after.iotlb_misses - before.iotlb_misses, after.walks - before.walks, after.psc_hits - before.psc_hits)
    }

    fn bench(&mut self, g: &mut BenchmarkGroup<'_, WallTime>, id: &str, iovas: &[u64]) {
        let mut out = vec![0u64; iovas.len()];
        let Rig { mem, unit, .. } = self;
        // On a shared machine: the median of many short rounds, as bench/walk_flat.c reports.
        if let Some(rounds) = std::env::var("VTD_BENCH_ROUNDS").ok().and_then(|r| r.parse::<usize>().ok()) {
            let mut t: Vec<f64> = (0..rounds)
                .map(|_| {
                    let t0 = std::time::Instant::now();
                    black_box(unit.translate_batch(mem, SID, black_box(iovas), &mut out, false, None));
                    t0.elapsed().as_nanos() as f64 / iovas.len() as f64
                })
                .collect();
            t.sort_by(f64::total_cmp);
            eprintln!("translate/{id}: median of {rounds} rounds: {:.2} ns per translation", t[rounds / 2]);
            if let Some(file) = std::env::var_os("VTD_BENCH_ROUNDS_OUT") {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file).unwrap();
                writeln!(f, "{{\"id\":\"translate/{id}\",\"rounds\":{rounds},\"medianNs\":{}}}", t[rounds / 2]).unwrap();
            }
        }
        g.bench_function(id, |b| {
            b.iter(|| black_box(unit.translate_batch(mem, SID, black_box(iovas), &mut out, false, None)))
        });
    }
}

/// `n` random 8-byte-aligned IOVAs anywhere in the mapped GiB.
fn random_iovas(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = Rng(seed);
    (0..n).map(|_| (IOVA + rng.below(GIB)) & !7).collect()
}

/// Writes what bench/walk_flat.c walks: the pgd, the table pages (pa + 4096 bytes each), the
/// IOVAs and their translations, all little-endian u64 (`VTD_WALK_DUMP=<file>`).
fn dump_walk(rig: &Rig, iovas: &[u64], file: &std::path::Path) {
    fn tables(mem: &PhysMem, pa: u64, level: u32, out: &mut Vec<u64>) {
        out.push(pa);
        let mut words = [0u64; 512];
        mem.read_u64s(pa, &mut words).unwrap();
        for pte in words {
            // Present (R or W) and not a leaf (PS, bit 7) above the last level: a table.
            if level > 1 && pte & 3 != 0 && pte & 0x80 == 0 {
                tables(mem, pte & 0x000f_ffff_ffff_f000, level - 1, out);
            }
        }
    }
    let mut pages = Vec::new();
    tables(&rig.mem, rig.pgd, 4, &mut pages);
    let mut w: Vec<u64> = vec![rig.pgd, pages.len() as u64, iovas.len() as u64];
    let mut bytes = Vec::new();
    for &pa in &pages {
        let mut page = [0u64; 512];
        rig.mem.read_u64s(pa, &mut page).unwrap();
        w.push(pa);
        w.extend(page);
    }
    w.extend(iovas);
    w.extend(iovas.iter().map(|&iova| iova - IOVA + PA_4K));
    for x in w {
        bytes.extend(x.to_le_bytes());
    }
    std::fs::write(file, bytes).unwrap();
    eprintln!("translate/walk_4level: {} table pages and {} IOVAs written to {}", pages.len(), iovas.len(), file.display());
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g
}

fn translate(c: &mut Criterion) {
    let mut g = group(c, "translate");
    g.throughput(Throughput::Elements(BATCH as u64));

    // IOTLB hit: 64 distinct 4 KiB pages, all resident in the 512-entry IOTLB.
    {
        let mut rig = Rig::new(UnitConfig::default());
        let mut rng = Rng(0x1071b);
        let mut pages: Vec<u64> = Vec::new();
        while pages.len() < HOT_PAGES {
            let p = IOVA + (rng.below(GIB) & !0xfff);
            if !pages.contains(&p) {
                pages.push(p);
            }
        }
        let iovas: Vec<u64> =
            (0..BATCH).map(|_| pages[rng.below(HOT_PAGES as u64) as usize] + (rng.below(0x1000) & !7)).collect();
        assert_eq!(rig.check(&iovas).0, HOT_PAGES as u64, "first pass: one miss per page");
        assert_eq!(rig.check(&iovas).0, 0, "second pass: every translation hits the IOTLB");
        rig.bench(&mut g, "iotlb_hit", &iovas);
    }

    // Every translation walks all four levels (the context cache still hits).
    {
        let mut rig = Rig::new(UnitConfig { iotlb_entries: 0, psc_entries: 0, ..Default::default() });
        let iovas = random_iovas(0x3a1c, BATCH);
        rig.check(&iovas);
        let (misses, walks, psc) = rig.check(&iovas);
        assert_eq!((misses, walks, psc), (BATCH as u64, BATCH as u64, 0));
        if let Some(file) = std::env::var_os("VTD_WALK_DUMP") {
            dump_walk(&rig, &iovas, std::path::Path::new(&file));
        }
        rig.bench(&mut g, "walk_4level", &iovas);
    }

    // IOTLB off, paging-structure cache on: walks resume below the top. The GiB has 512 PDEs but
    // the PSC holds 128 entries, so about a quarter of the walks resume from a cached PDE (one
    // read) and the rest from the cached PDPTE (two reads).
    {
        let mut rig = Rig::new(UnitConfig { iotlb_entries: 0, ..Default::default() });
        let iovas = random_iovas(0x3a1c, BATCH);
        rig.check(&iovas);
        let (_, walks, psc) = rig.check(&iovas);
        assert_eq!(walks, BATCH as u64);
        eprintln!("translate/walk_psc: {psc} of {walks} walks resumed from the PSC");
        rig.bench(&mut g, "walk_psc", &iovas);
    }

    // The realistic case: default unit, random IOVAs over the whole GiB, mostly misses.
    {
        let mut rig = Rig::new(UnitConfig::default());
        let iovas = random_iovas(0x3a1c, BATCH);
        rig.check(&iovas);
        let (misses, walks, psc) = rig.check(&iovas);
        eprintln!("translate/batch_4096_mixed: {misses} IOTLB misses, {psc} of {walks} walks resumed from the PSC");
        rig.bench(&mut g, "batch_4096_mixed", &iovas);
    }
    g.finish();
}

/// DMA bandwidth: 1 MiB reads and writes through the default unit, each at the next MiB of the
/// mapped GiB (so frames are copied, not just translated), after one pass wrote them all.
fn dma(c: &mut Criterion) {
    const MIB: usize = 1 << 20;
    let mut g = group(c, "dma");
    g.throughput(Throughput::Bytes(MIB as u64));
    let mut rig = Rig::new(UnitConfig::default());
    let data = vec![0x5au8; MIB];
    for k in 0..(GIB as usize / MIB) {
        rig.unit.dma_write(&mut rig.mem, SID, IOVA + (k * MIB) as u64, &data).unwrap().unwrap();
    }
    let mut buf = vec![0u8; MIB];
    let mut k = 0u64;
    let Rig { mem, unit, .. } = &mut rig;
    g.bench_function("read_1m", |b| {
        b.iter(|| {
            k = (k + 1) % (GIB / MIB as u64);
            unit.dma_read(mem, SID, IOVA + k * MIB as u64, &mut buf).unwrap().unwrap();
        })
    });
    g.bench_function("write_1m", |b| {
        b.iter(|| {
            k = (k + 1) % (GIB / MIB as u64);
            unit.dma_write(mem, SID, IOVA + k * MIB as u64, &data).unwrap().unwrap();
        })
    });
    g.finish();
}

/// A fresh memory with an empty 4-level table, built from the default unit's page-table config.
fn fresh_table() -> (PhysMem, PageTable, Gather) {
    let unit = Unit::new(UnitConfig::default()).unwrap();
    let mut mem = mem();
    let pt = PageTable::new(&mut mem, unit.pagetable_config(4).unwrap()).unwrap();
    (mem, pt, Gather::default())
}

/// A fresh memory and unit with `[IOVA, IOVA + 1 GiB)` mapped to `pa`.
fn mapped(pa: u64) -> (PhysMem, Unit, PageTable, Gather) {
    let (mut mem, mut pt, mut gather) = fresh_table();
    pt.map(&mut mem, IOVA, pa, GIB, Prot::RW, &mut gather).unwrap();
    (mem, Unit::new(UnitConfig::default()).unwrap(), pt, gather)
}

fn map_unmap(c: &mut Criterion) {
    for (_, pa, tables) in [("1g_4k", PA_4K, 513usize), ("1g_2m", PA_2M, 1)] {
        // Sanity: the leaves are the expected size, and unmap + sync frees the expected tables.
        let (mut mem, mut unit, mut pt, mut gather) = mapped(pa);
        let leaf = pt.walk(&mem, IOVA + GIB / 2).unwrap().last().unwrap().level;
        assert_eq!(leaf, if pa == PA_4K { 1 } else { 2 });
        assert_eq!(pt.unmap(&mut mem, IOVA, GIB, &mut gather).unwrap(), GIB);
        assert_eq!(gather.freelist().len(), tables);
        unit.iotlb_sync(&mut mem, DID, &mut gather).unwrap();
    }

    let mut g = group(c, "map");
    for (id, pa) in [("1g_4k", PA_4K), ("1g_2m", PA_2M)] {
        g.bench_function(id, |b| {
            b.iter_batched(
                fresh_table,
                |(mut mem, mut pt, mut gather)| {
                    pt.map(&mut mem, IOVA, pa, GIB, Prot::RW, &mut gather).unwrap();
                    (mem, pt, gather) // dropped outside the timed part
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let mut g = group(c, "unmap");
    for (id, pa) in [("1g_4k", PA_4K), ("1g_2m", PA_2M)] {
        g.bench_function(id, |b| {
            b.iter_batched(
                || mapped(pa),
                |(mut mem, mut unit, mut pt, mut gather)| {
                    pt.unmap(&mut mem, IOVA, GIB, &mut gather).unwrap();
                    unit.iotlb_sync(&mut mem, DID, &mut gather).unwrap();
                    (mem, unit, pt)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, translate, map_unmap, dma);
criterion_main!(benches);
