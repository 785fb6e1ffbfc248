//! Encoder, checker and decoder benchmarks of the `fdt` crate, with rust-vmm `vm-fdt` 0.3 as a
//! Rust baseline (libfdt is measured by `bench/fdt_libfdt.c` on the same trees).
//!
//! Run with `cargo bench -p fdt --bench fdt`. Criterion writes
//! `target/criterion/<group>/<function>/new/{estimates,benchmark}.json`; one iteration is one
//! whole blob (encode: writer creation to `finish`; check / decode: one call on the 100k blob),
//! and `benchmark.json` carries the blob length as `Throughput::Bytes`. The ids are stable:
//! `scripts/bench.mjs` reads them.
//!
//! Workload (`/work/shared/reference/fdt-kho.md` §4.2): a KHO-like tree, root { `compatible` =
//! "kho-v1", `preserved-memory-map` = 8 B LE } plus N children `node<i>` (vm-fdt rejects numeric
//! names, so every encoder uses `node<i>`), each { `iova-start` 8 B LE, `iova-len` 8 B LE,
//! `iommu-prot` 4 B LE }; and a root with 20,000 uniquely named properties `p<i>` (4 B each),
//! the worst case for libfdt's quadratic name dedup. Names are formatted before timing, as in
//! the C harness. Values must stay identical to `bench/fdt_libfdt.c`: the harness checks that
//! our `Layout::Libfdt` 1k blob is byte-identical to libfdt's.
//!
//! `FDT_BENCH_DUMP_DIR=<dir>`: also write `ours_libfdt_1k.dtb`, `ours_dtc_1k.dtb` and
//! `vmfdt_1k.dtb` there.
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use fdt::{check, decode, FdtWriter, Layout, Validation, WriterOptions};

const UNIQUE: usize = 20_000;

struct Names {
    nodes: Vec<String>,
    props: Vec<String>,
}

impl Names {
    fn new() -> Names {
        Names {
            nodes: (0..100_000).map(|i| format!("node{i}")).collect(),
            props: (0..UNIQUE).map(|i| format!("p{i}")).collect(),
        }
    }
}

fn iova_start(i: usize) -> [u8; 8] {
    (0x1_0000_0000u64 + i as u64 * 0x10000).to_le_bytes()
}
fn iova_len(i: usize) -> [u8; 8] {
    (0x1000u64 * (1 + (i as u64 & 15))).to_le_bytes()
}
const PROT: [u8; 4] = 3u32.to_le_bytes();
const PMM: [u8; 8] = 0x123_4000u64.to_le_bytes();

fn ours_kho(names: &Names, n: usize, layout: Layout) -> Vec<u8> {
    let mut w = FdtWriter::new(WriterOptions { layout, ..Default::default() });
    w.begin_node("").unwrap();
    w.property("compatible", b"kho-v1\0").unwrap();
    w.property("preserved-memory-map", &PMM).unwrap();
    for (i, name) in names.nodes[..n].iter().enumerate() {
        w.begin_node(name).unwrap();
        w.property("iova-start", &iova_start(i)).unwrap();
        w.property("iova-len", &iova_len(i)).unwrap();
        w.property("iommu-prot", &PROT).unwrap();
        w.end_node().unwrap();
    }
    w.end_node().unwrap();
    w.finish().unwrap()
}

fn vmfdt_kho(names: &Names, n: usize) -> Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property("compatible", b"kho-v1\0").unwrap();
    w.property("preserved-memory-map", &PMM).unwrap();
    for (i, name) in names.nodes[..n].iter().enumerate() {
        let node = w.begin_node(name).unwrap();
        w.property("iova-start", &iova_start(i)).unwrap();
        w.property("iova-len", &iova_len(i)).unwrap();
        w.property("iommu-prot", &PROT).unwrap();
        w.end_node(node).unwrap();
    }
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

fn ours_unique(names: &Names) -> Vec<u8> {
    let mut w = FdtWriter::new(WriterOptions::default());
    w.begin_node("").unwrap();
    for (i, name) in names.props.iter().enumerate() {
        w.property(name, &(i as u32).to_le_bytes()).unwrap();
    }
    w.end_node().unwrap();
    w.finish().unwrap()
}

fn vmfdt_unique(names: &Names) -> Vec<u8> {
    let mut w = vm_fdt::FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    for (i, name) in names.props.iter().enumerate() {
        w.property(name, &(i as u32).to_le_bytes()).unwrap();
    }
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

/// Every encoder's blob decodes (strictly enough) to the same KHO-like tree.
fn sanity(blob: &[u8], n: usize, who: &str) {
    check(blob, Validation::Structural).unwrap_or_else(|e| panic!("{who}: check failed: {e:?}"));
    let fdt = decode(blob, Validation::Dtc).unwrap_or_else(|e| panic!("{who}: decode failed: {e:?}"));
    let root = &fdt.root;
    assert_eq!(root.children.len(), n, "{who}: children");
    assert_eq!(root.property("compatible").map(|p| &p.value[..]), Some(&b"kho-v1\0"[..]), "{who}");
    assert_eq!(root.property("preserved-memory-map").map(|p| &p.value[..]), Some(&PMM[..]), "{who}");
    for (i, c) in root.children.iter().enumerate() {
        assert_eq!(c.name, format!("node{i}"), "{who}");
        let vals: Vec<(&str, &[u8])> = c.properties.iter().map(|p| (p.name.as_str(), &p.value[..])).collect();
        assert_eq!(
            vals,
            [("iova-start", &iova_start(i)[..]), ("iova-len", &iova_len(i)[..]), ("iommu-prot", &PROT[..])],
            "{who}: node{i}"
        );
    }
}

fn sanity_unique(blob: &[u8], who: &str) {
    let fdt = decode(blob, Validation::Dtc).unwrap_or_else(|e| panic!("{who}: decode failed: {e:?}"));
    assert_eq!(fdt.root.properties.len(), UNIQUE, "{who}");
    for (i, p) in fdt.root.properties.iter().enumerate() {
        assert_eq!((p.name.as_str(), &p.value[..]), (format!("p{i}").as_str(), &(i as u32).to_le_bytes()[..]), "{who}");
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_millis(1500)).warm_up_time(Duration::from_millis(300));
    g
}

fn encode(c: &mut Criterion) {
    let names = Names::new();

    // Sanity before timing; the 1k blobs optionally go to FDT_BENCH_DUMP_DIR for bench.mjs.
    let ours_1k = ours_kho(&names, 1000, Layout::Libfdt);
    let dtc_1k = ours_kho(&names, 1000, Layout::Dtc);
    let vm_1k = vmfdt_kho(&names, 1000);
    for (blob, who) in [(&ours_1k, "ours_libfdt_1k"), (&dtc_1k, "ours_dtc_1k"), (&vm_1k, "vmfdt_1k")] {
        sanity(blob, 1000, who);
    }
    if let Some(dir) = std::env::var_os("FDT_BENCH_DUMP_DIR") {
        let dir = std::path::PathBuf::from(dir);
        for (blob, file) in [(&ours_1k, "ours_libfdt_1k.dtb"), (&dtc_1k, "ours_dtc_1k.dtb"), (&vm_1k, "vmfdt_1k.dtb")] {
            std::fs::write(dir.join(file), blob).unwrap_or_else(|e| panic!("writing {file}: {e}"));
        }
    }
    sanity(&ours_kho(&names, 100_000, Layout::Libfdt), 100_000, "ours_libfdt_100k");
    sanity(&ours_kho(&names, 100_000, Layout::Dtc), 100_000, "ours_dtc_100k");
    sanity(&vmfdt_kho(&names, 100_000), 100_000, "vmfdt_100k");
    let ours_u = ours_unique(&names);
    let vm_u = vmfdt_unique(&names);
    sanity_unique(&ours_u, "ours_unique_20k");
    sanity_unique(&vm_u, "vmfdt_unique_20k");

    let mut g = group(c, "fdt_encode");
    let cases: [(&str, usize, Option<Layout>); 5] = [
        ("ours_libfdt_1k", 1000, Some(Layout::Libfdt)),
        ("vmfdt_1k", 1000, None),
        ("ours_libfdt_100k", 100_000, Some(Layout::Libfdt)),
        ("ours_dtc_100k", 100_000, Some(Layout::Dtc)),
        ("vmfdt_100k", 100_000, None),
    ];
    for (id, n, layout) in cases {
        let run = |names: &Names| match layout {
            Some(l) => ours_kho(names, n, l),
            None => vmfdt_kho(names, n),
        };
        g.throughput(Throughput::Bytes(run(&names).len() as u64));
        g.bench_function(id, |b| b.iter(|| black_box(run(black_box(&names)))));
    }
    g.throughput(Throughput::Bytes(ours_u.len() as u64));
    g.bench_function("ours_unique_20k", |b| b.iter(|| black_box(ours_unique(black_box(&names)))));
    g.throughput(Throughput::Bytes(vm_u.len() as u64));
    g.bench_function("vmfdt_unique_20k", |b| b.iter(|| black_box(vmfdt_unique(black_box(&names)))));
    g.finish();

    let blob = ours_kho(&names, 100_000, Layout::Libfdt);
    let mut g = group(c, "fdt_check");
    g.throughput(Throughput::Bytes(blob.len() as u64));
    g.bench_function("ours_100k", |b| b.iter(|| check(black_box(&blob), Validation::Structural).unwrap()));
    g.finish();

    let mut g = group(c, "fdt_decode");
    g.throughput(Throughput::Bytes(blob.len() as u64));
    g.bench_function("ours_100k", |b| b.iter_with_large_drop(|| decode(black_box(&blob), Validation::Structural).unwrap()));
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
