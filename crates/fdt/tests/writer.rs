//! Writer tests: golden vectors produced by the real tools (libfdt 1.6.1's sequential-write API,
//! `dtc 1.6.1 -I dts -O dtb`), rust-vmm/vm-fdt's byte-exact vectors, KHO trees, state-machine
//! misuse, the one-page cap, suffix sharing and a large de-duplication workload.
use fdt::kho::{kho_root, kho_root_info, KhoNames, KHO_ROOT_MAX};
use fdt::{encode, ErrorKind, FdtWriter, Layout, Node, ReserveEntry, WriterOptions};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn opts(layout: Layout) -> WriterOptions {
    WriterOptions {
        layout,
        ..Default::default()
    }
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

/// Every (property name, nameoff) of a blob, resolving names as C strings in the strings block.
fn prop_names(b: &[u8]) -> Vec<(String, u32)> {
    let (off_struct, off_str, size_struct) = (
        be32(b, 8) as usize,
        be32(b, 12) as usize,
        be32(b, 36) as usize,
    );
    let mut out = Vec::new();
    let mut o = off_struct;
    while o < off_struct + size_struct {
        match be32(b, o) {
            1 => {
                let n = b[o + 4..].iter().position(|&c| c == 0).unwrap();
                o += 4 + (n + 4) / 4 * 4;
            }
            3 => {
                let (len, nameoff) = (be32(b, o + 4) as usize, be32(b, o + 8));
                let s = &b[off_str + nameoff as usize..];
                let e = s.iter().position(|&c| c == 0).unwrap();
                out.push((String::from_utf8(s[..e].to_vec()).unwrap(), nameoff));
                o += 12 + len.div_ceil(4) * 4;
            }
            2 | 4 => o += 4,
            9 => break,
            t => panic!("bad tag {t}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Golden vectors from libfdt 1.6.1 (fdt_create / fdt_property / ... / fdt_finish in a C program)

/// KHO root as Linux 6.16 builds it: compatible "kho-v1", preserved-memory-map 0x1_16be_4000
/// (LE bytes 00 40 be 16 01 00 00 00, the kernel documentation's example), one sub-tree "foo"
/// with fdt = 0x1000.
const LIBFDT_KHO_FOO: &str = "d00dfeed000000bc000000400000009800000030000000110000001000000000000000240000005800000000000000000000000000000000000000000000000000000001000000000000000300000007000000196b686f2d763100000000000300000008000000040040be160100000000000001666f6f000000000300000008000000000010000000000000000000020000000200000009666474007072657365727665642d6d656d6f72792d6d617000636f6d70617469626c6500";

/// `#size-cells`, `size-cells`, `cells` (u32 0, 1, 2 BE): one stored name, nameoffs 0, 1, 6.
const LIBFDT_SUFFIX: &str = "d00dfeed0000008c0000004000000080000000300000001100000010000000000000000c00000040000000000000000000000000000000000000000000000000000000010000000000000003000000040000000000000000000000030000000400000001000000010000000300000004000000060000000200000002000000092373697a652d63656c6c7300";

/// `cells`, `size-cells`, `#size-cells`, `cells` (2, 1, 0, 3): three stored names, newest first;
/// the last `cells` resolves into `#size-cells`, the newest name ending with it.
const LIBFDT_SUFFIX_REV: &str = "d00dfeed000000ad0000004000000090000000300000001100000010000000000000001d0000005000000000000000000000000000000000000000000000000000000001000000000000000300000004000000170000000200000003000000040000000c00000001000000030000000400000000000000000000000300000004000000060000000300000002000000092373697a652d63656c6c730073697a652d63656c6c730063656c6c7300";

/// As `LIBFDT_SUFFIX` with FDT_CREATE_FLAG_NO_NAME_DEDUP.
const LIBFDT_SUFFIX_NODEDUP: &str = "d00dfeed0000009d0000004000000080000000300000001100000010000000000000001d000000400000000000000000000000000000000000000000000000000000000100000000000000030000000400000011000000000000000300000004000000060000000100000003000000040000000000000002000000020000000963656c6c730073697a652d63656c6c73002373697a652d63656c6c7300";

/// Two reservations, boot_cpuid_phys 0x12345678 (fdt_set_boot_cpuid_phys after fdt_finish),
/// an empty property `a`, a child `child@1` with `reg = <1>`.
const LIBFDT_RSV_CPUID: &str = "d00dfeed000000a2000000600000009c00000030000000110000001012345678000000060000003c000000000000000012345678aabbccdd000000000000123410203040506070800000000000005678000000000000000000000000000000000000000100000000000000030000000000000004000000016368696c6440310000000003000000040000000000000001000000020000000200000009726567006100";

/// The 2024 iommu persistence RFC's shape: numeric node names, 1-byte `bus` / `devfn`, native
/// 8- and 4-byte values, a 16-byte `mem` entry.
const LIBFDT_RFC: &str = "d00dfeed000001880000004000000158000000300000001100000010000000000000003000000118000000000000000000000000000000000000000000000000000000010000000000000001696e74656c2d696f6d6d7500000000030000000f00000025696e74656c2d696f6d6d752d7630000000000001646f6d61696e730000000001343200000000000300000008000000172a000000000000000000000300000008000000130000a0123400000000000003000000040000000e0200000000000003000000100000000a00f0ffff00000000001000000000000000000001646576696365730000000001300000000000000300000001000000060000000000000003000000010000000008000000000000020000000131000000000000030000000100000006030000000000000300000001000000001000000000000002000000020000000200000002000000020000000200000009646576666e00627573006d656d0061676177007067640070657273697374656e745f696400636f6d70617469626c6500";

// Golden vectors from `dtc 1.6.1 -I dts -O dtb`.

/// `/ { #size-cells = <0>; size-cells = <1>; cells = <2>; };`: block "#size-cells\0",
/// nameoffs 0, 1, 6.
const DTC_SUFFIX: &str = "d00dfeed000000840000003800000078000000280000001100000010000000000000000c0000004000000000000000000000000000000000000000010000000000000003000000040000000000000000000000030000000400000001000000010000000300000004000000060000000200000002000000092373697a652d63656c6c7300";

/// `/ { cells = <2>; size-cells = <1>; #size-cells = <0>; };`: three names in first-use order.
const DTC_SUFFIX_REV: &str = "d00dfeed000000950000003800000078000000280000001100000010000000000000001d00000040000000000000000000000000000000000000000100000000000000030000000400000000000000020000000300000004000000060000000100000003000000040000001100000000000000020000000963656c6c730073697a652d63656c6c73002373697a652d63656c6c7300";

/// The RFC tree above, compiled from DTS.
const DTC_RFC: &str = "d00dfeed00000180000000380000015000000028000000110000001000000000000000300000011800000000000000000000000000000000000000010000000000000001696e74656c2d696f6d6d7500000000030000000f00000000696e74656c2d696f6d6d752d7630000000000001646f6d61696e7300000000013432000000000003000000080000000b2a000000000000000000000300000008000000190000a0123400000000000003000000040000001d0200000000000003000000100000002200f0ffff00000000001000000000000000000001646576696365730000000001300000000000000300000001000000260000000000000003000000010000002a080000000000000200000001310000000000000300000001000000260300000000000003000000010000002a1000000000000002000000020000000200000002000000020000000200000009636f6d70617469626c650070657273697374656e745f6964007067640061676177006d656d0062757300646576666e00";

fn suffix_blob(layout: Layout, no_name_dedup: bool, props: &[(&str, u32)]) -> Vec<u8> {
    let mut w = FdtWriter::new(WriterOptions {
        layout,
        no_name_dedup,
        ..Default::default()
    });
    w.begin_node("").unwrap();
    for (n, v) in props {
        w.property_u32(n, *v).unwrap();
    }
    w.end_node().unwrap();
    w.finish().unwrap()
}

#[test]
fn libfdt_suffix_sharing_golden() {
    let fwd = [("#size-cells", 0), ("size-cells", 1), ("cells", 2)];
    let rev = [
        ("cells", 2),
        ("size-cells", 1),
        ("#size-cells", 0),
        ("cells", 3),
    ];
    let b = suffix_blob(Layout::Libfdt, false, &fwd);
    assert_eq!(b, hex(LIBFDT_SUFFIX));
    let offs: Vec<u32> = prop_names(&b).iter().map(|p| p.1).collect();
    assert_eq!(offs, [0, 1, 6]);
    assert_eq!(
        suffix_blob(Layout::Libfdt, false, &rev),
        hex(LIBFDT_SUFFIX_REV)
    );
    assert_eq!(
        suffix_blob(Layout::Libfdt, true, &fwd),
        hex(LIBFDT_SUFFIX_NODEDUP)
    );
}

#[test]
fn dtc_suffix_sharing_golden() {
    let b = suffix_blob(
        Layout::Dtc,
        false,
        &[("#size-cells", 0), ("size-cells", 1), ("cells", 2)],
    );
    assert_eq!(b, hex(DTC_SUFFIX));
    assert_eq!(&b[be32(&b, 12) as usize..], b"#size-cells\0");
    let offs: Vec<u32> = prop_names(&b).iter().map(|p| p.1).collect();
    assert_eq!(offs, [0, 1, 6]);
    let b = suffix_blob(
        Layout::Dtc,
        false,
        &[("cells", 2), ("size-cells", 1), ("#size-cells", 0)],
    );
    assert_eq!(b, hex(DTC_SUFFIX_REV));
}

#[test]
fn libfdt_reservations_and_boot_cpuid_golden() {
    let mut w = FdtWriter::new(WriterOptions {
        boot_cpuid_phys: 0x1234_5678,
        ..Default::default()
    });
    w.add_reservemap_entry(ReserveEntry {
        address: 0x1234_5678_aabb_ccdd,
        size: 0x1234,
    })
    .unwrap();
    w.add_reservemap_entry(ReserveEntry {
        address: 0x1020_3040_5060_7080,
        size: 0x5678,
    })
    .unwrap();
    w.begin_node("").unwrap();
    w.property_empty("a").unwrap();
    w.begin_node("child@1").unwrap();
    w.property_u32("reg", 1).unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    assert_eq!(w.finish().unwrap(), hex(LIBFDT_RSV_CPUID));
}

fn rfc_tree() -> Node {
    let mut root = Node::new("");
    let iommu = root.add_child(Node::new("intel-iommu"));
    iommu.set_property("compatible", fdt::value::string("intel-iommu-v0").unwrap());
    let domains = iommu.add_child(Node::new("domains"));
    let d = domains.add_child(Node::new("42"));
    d.set_property("persistent_id", fdt::value::u64_le(42));
    d.set_property("pgd", fdt::value::u64_le(0x34_12a0_0000));
    d.set_property("agaw", fdt::value::u32_le(2));
    d.set_property(
        "mem",
        [fdt::value::u64_le(0xffff_f000), fdt::value::u64_le(0x1000)].concat(),
    );
    let devs = d.add_child(Node::new("devices"));
    for (i, (bus, devfn)) in [(0u8, 8u8), (3, 0x10)].into_iter().enumerate() {
        let n = devs.add_child(Node::new(i.to_string()));
        n.set_property("bus", vec![bus]);
        n.set_property("devfn", vec![devfn]);
    }
    root
}

#[test]
fn rfc_tree_golden_both_layouts() {
    let root = rfc_tree();
    assert_eq!(
        encode(&root, opts(Layout::Libfdt), &[]).unwrap(),
        hex(LIBFDT_RFC)
    );
    assert_eq!(encode(&root, opts(Layout::Dtc), &[]).unwrap(), hex(DTC_RFC));
}

#[test]
fn encode_equals_writer_calls() {
    let root = rfc_tree();
    for layout in [Layout::Libfdt, Layout::Dtc] {
        let mut w = FdtWriter::new(opts(layout));
        w.add_reservemap_entry(ReserveEntry {
            address: 0x1000,
            size: 0x2000,
        })
        .unwrap();
        fn emit(w: &mut FdtWriter, n: &Node) {
            w.begin_node(&n.name).unwrap();
            for p in &n.properties {
                w.property(&p.name, &p.value).unwrap();
            }
            n.children.iter().for_each(|c| emit(w, c));
            w.end_node().unwrap();
        }
        emit(&mut w, &root);
        let rsv = [ReserveEntry {
            address: 0x1000,
            size: 0x2000,
        }];
        assert_eq!(
            w.finish().unwrap(),
            encode(&root, opts(layout), &rsv).unwrap()
        );
    }
    let named = Node::new("root");
    assert_eq!(
        encode(&named, opts(Layout::Libfdt), &[]).unwrap_err().kind,
        ErrorKind::BadStructure
    );
}

// ---------------------------------------------------------------------------------------------
// KHO

#[test]
fn kho_root_matches_linux_6_16_bytes() {
    let b = kho_root(
        &KhoNames::default(),
        0x1_16be_4000,
        &[("foo", 0x1000)],
        Layout::Libfdt,
    )
    .unwrap();
    assert_eq!(b, hex(LIBFDT_KHO_FOO));
    // The documentation's `preserved-memory-map = <0x40be16 0x1000000>;`.
    let needle = [0x00, 0x40, 0xbe, 0x16, 0x01, 0x00, 0x00, 0x00];
    assert!(b.windows(8).any(|w| w == needle));
    // The same through the plain writer with explicit calls.
    let mut w = FdtWriter::new(WriterOptions {
        max_size: Some(4096),
        ..Default::default()
    });
    w.begin_node("").unwrap();
    w.property_string("compatible", "kho-v1").unwrap();
    w.property_u64_le("preserved-memory-map", 0x1_16be_4000)
        .unwrap();
    w.begin_node("foo").unwrap();
    w.property("fdt", &0x1000u64.to_le_bytes()).unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    assert_eq!(w.finish().unwrap(), b);
}

#[test]
fn kho_root_page_cap() {
    // libfdt 1.6.1 with a 4096-byte buffer: 110 sub-trees "st<i>" fit in 0xfec bytes, the
    // 111th fails with FDT_ERR_NOSPACE at its "fdt" property.
    let names: Vec<String> = (0..111).map(|i| format!("st{i}")).collect();
    let subs: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), (i as u64) << 8))
        .collect();
    let b = kho_root(
        &KhoNames::default(),
        0x1_16be_4000,
        &subs[..110],
        Layout::Libfdt,
    )
    .unwrap();
    assert_eq!(b.len(), 0xfec);
    assert_eq!(be32(&b, 4), 0xfec);
    assert!(b.len() <= KHO_ROOT_MAX);
    let e = kho_root(&KhoNames::default(), 0x1_16be_4000, &subs, Layout::Libfdt).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoSpace);
    assert_eq!(e.code(), "FDT_ERR_NOSPACE");
}

fn kho_node(names: &KhoNames, map: u64, subs: &[(&str, u64)]) -> Node {
    let mut root = Node::new("");
    root.set_property("compatible", fdt::value::string(&names.compatible).unwrap());
    root.set_property(names.memory_map.clone(), fdt::value::u64_le(map));
    for (n, p) in subs {
        root.add_child(Node::new(*n))
            .set_property(names.subtree_prop.clone(), fdt::value::u64_le(*p));
    }
    root
}

#[test]
fn kho_root_info_reads_back() {
    for names in [KhoNames::default(), KhoNames::v2()] {
        let subs = [("memblock", 0x1_0000_0000u64), ("LUO", 0x2000)];
        let root = kho_node(&names, 0xabc000, &subs);
        // The tree encodes to what kho_root builds.
        for layout in [Layout::Libfdt, Layout::Dtc] {
            assert_eq!(
                encode(&root, opts(layout), &[]).unwrap(),
                kho_root(&names, 0xabc000, &subs, layout).unwrap()
            );
        }
        let (map, got) = kho_root_info(&root, &names).unwrap();
        assert_eq!(map, 0xabc000);
        assert_eq!(
            got,
            vec![
                ("memblock".to_string(), 0x1_0000_0000),
                ("LUO".to_string(), 0x2000)
            ]
        );
    }
    assert_eq!(KhoNames::v2().subtree_prop, "preserved-data");
    assert_eq!(KhoNames::v2().compatible, "kho-v2");
    // Wrong version, missing compatible, bad lengths, missing sub-tree property.
    let v1 = kho_node(&KhoNames::default(), 1, &[("a", 2)]);
    assert_eq!(
        kho_root_info(&v1, &KhoNames::v2()).unwrap_err().kind,
        ErrorKind::BadValue
    );
    let mut r = v1.clone();
    r.properties.retain(|p| p.name != "compatible");
    assert_eq!(
        kho_root_info(&r, &KhoNames::default()).unwrap_err().kind,
        ErrorKind::NotFound
    );
    let mut r = v1.clone();
    r.set_property(
        "compatible",
        fdt::value::string_list(&["foo", "kho-v1"]).unwrap(),
    );
    assert!(kho_root_info(&r, &KhoNames::default()).is_ok());
    let mut r = v1.clone();
    r.set_property("preserved-memory-map", vec![1, 2, 3, 4]);
    assert_eq!(
        kho_root_info(&r, &KhoNames::default()).unwrap_err().kind,
        ErrorKind::BadValue
    );
    let mut r = v1.clone();
    r.properties.retain(|p| p.name != "preserved-memory-map");
    assert_eq!(
        kho_root_info(&r, &KhoNames::default()).unwrap_err().kind,
        ErrorKind::NotFound
    );
    let mut r = v1.clone();
    r.add_child(Node::new("nofdt"));
    assert_eq!(
        kho_root_info(&r, &KhoNames::default()).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn kho_placeholder_fill() {
    let mut w = FdtWriter::new(WriterOptions::default());
    w.begin_node("").unwrap();
    let h = w.property_placeholder("preserved-memory-map", 8).unwrap();
    w.begin_node("sub").unwrap();
    w.end_node().unwrap();
    assert_eq!(
        w.fill_placeholder(h + 1, &[1]).unwrap_err().kind,
        ErrorKind::BadOffset
    );
    assert_eq!(
        w.fill_placeholder(h, &[0; 9]).unwrap_err().kind,
        ErrorKind::BadValue
    );
    w.fill_placeholder(h, &0x1_16be_4000u64.to_le_bytes())
        .unwrap();
    w.end_node().unwrap();
    let b = w.finish().unwrap();
    let mut e = FdtWriter::new(WriterOptions::default());
    e.begin_node("").unwrap();
    e.property_u64_le("preserved-memory-map", 0x1_16be_4000)
        .unwrap();
    e.begin_node("sub").unwrap();
    e.end_node().unwrap();
    e.end_node().unwrap();
    assert_eq!(b, e.finish().unwrap());
}

// ---------------------------------------------------------------------------------------------
// vm-fdt 0.3.0 (dtc layout, exact-match dedup, first-use order): its byte-exact vectors, and the
// crate itself on trees without suffix sharing.

/// vm-fdt's `nested_nodes` vector.
const VMFDT_NESTED: &str = "
d00dfeed 00000080 00000038 00000078 00000028 00000011 00000010 00000000 00000008 00000040
00000000 00000000 00000000 00000000
00000001 00000000
00000003 00000004 00000000 13579024
00000001 6e657374 65640000
00000003 00000004 00000004 12121212
00000002 00000002 00000009
61626300 64656600";

/// vm-fdt's `all_props` vector.
const VMFDT_ALL_PROPS: &str = "
d00dfeed 000000ee 00000038 000000c8 00000028 00000011 00000010 00000000 00000026 00000090
00000000 00000000 00000000 00000000
00000001 00000000
00000003 00000000 00000000
00000003 00000004 00000005 12345678
00000003 00000008 00000009 12345678 87654321
00000003 00000006 0000000d 68656c6c 6f000000
00000003 00000007 00000011 68690062 79650000
00000003 00000008 00000018 12345678 aabbccdd
00000003 00000008 0000001f 12345678 87654321
00000002 00000009
6e756c6c00 75333200 75363400 73747200 7374726c737400 6172727533320061727275363400";

#[test]
fn vm_fdt_golden_vectors() {
    let mut w = FdtWriter::new(opts(Layout::Dtc));
    w.begin_node("").unwrap();
    w.property_u32("abc", 0x1357_9024).unwrap();
    w.begin_node("nested").unwrap();
    w.property_u32("def", 0x1212_1212).unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    assert_eq!(w.finish().unwrap(), hex(VMFDT_NESTED));

    // "u32" is a suffix of "arru32" (and "u64" of "arru64"), but it was stored first, so dtc's
    // oldest-first rule and vm-fdt's exact match agree.
    let mut w = FdtWriter::new(opts(Layout::Dtc));
    w.begin_node("").unwrap();
    w.property_empty("null").unwrap();
    w.property_u32("u32", 0x1234_5678).unwrap();
    w.property_u64("u64", 0x1234_5678_8765_4321).unwrap();
    w.property_string("str", "hello").unwrap();
    w.property_string_list("strlst", &["hi", "bye"]).unwrap();
    w.property_cells("arru32", &[0x1234_5678, 0xaabb_ccdd])
        .unwrap();
    w.property_u64("arru64", 0x1234_5678_8765_4321).unwrap();
    w.end_node().unwrap();
    assert_eq!(w.finish().unwrap(), hex(VMFDT_ALL_PROPS));
}

#[test]
fn vm_fdt_crate_agrees_in_dtc_layout() {
    // vm-fdt's reservemap / boot_cpuid / prop_name_string_reuse cases, built with both crates.
    let rsv = [
        (0x1234_5678_aabb_ccdd, 0x1234),
        (0x1020_3040_5060_7080, 0x5678),
    ];
    let mut v = vm_fdt::FdtWriter::new_with_mem_reserv(
        &rsv.iter()
            .map(|&(a, s)| vm_fdt::FdtReserveEntry::new(a, s).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    v.set_boot_cpuid_phys(0x1234_5678);
    let r = v.begin_node("").unwrap();
    v.property_u32("abc", 0x1357_9024).unwrap();
    let n = v.begin_node("nested").unwrap();
    v.property_u32("def", 0x1212_1212).unwrap();
    v.property_u32("abc", 0x1212_1212).unwrap();
    v.property_null("null").unwrap();
    v.property_string("str", "hello").unwrap();
    v.end_node(n).unwrap();
    v.end_node(r).unwrap();
    let expected = v.finish().unwrap();

    let mut w = FdtWriter::new(WriterOptions {
        layout: Layout::Dtc,
        boot_cpuid_phys: 0x1234_5678,
        ..Default::default()
    });
    for (address, size) in rsv {
        w.add_reservemap_entry(ReserveEntry { address, size })
            .unwrap();
    }
    w.begin_node("").unwrap();
    w.property_u32("abc", 0x1357_9024).unwrap();
    w.begin_node("nested").unwrap();
    w.property_u32("def", 0x1212_1212).unwrap();
    w.property_u32("abc", 0x1212_1212).unwrap();
    w.property_empty("null").unwrap();
    w.property_string("str", "hello").unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    assert_eq!(w.finish().unwrap(), expected);
}

// ---------------------------------------------------------------------------------------------
// State machine and argument errors

#[test]
fn state_machine_misuse_is_badstate() {
    let bad = |r: fdt::Result<()>| assert_eq!(r.unwrap_err().kind, ErrorKind::BadState);
    for layout in [Layout::Libfdt, Layout::Dtc] {
        let mut w = FdtWriter::new(opts(layout));
        bad(w.property_u32("early", 1));
        bad(w.end_node());
        assert_eq!(w.clone().finish().unwrap_err().kind, ErrorKind::BadState);
        w.add_reservemap_entry(ReserveEntry {
            address: 0,
            size: 1,
        })
        .unwrap();
        w.begin_node("").unwrap();
        bad(w.add_reservemap_entry(ReserveEntry {
            address: 0x1000,
            size: 1,
        }));
        w.property_u32("a", 1).unwrap();
        w.begin_node("child").unwrap();
        assert_eq!(w.clone().finish().unwrap_err().kind, ErrorKind::BadState);
        w.property_u32("b", 1).unwrap();
        w.end_node().unwrap();
        // A property after a subnode of the same node.
        bad(w.property_u32("late", 1));
        w.begin_node("child2").unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        // The root is closed.
        bad(w.property_u32("after", 1));
        bad(w.end_node());
        bad(w.begin_node(""));
        bad(w.begin_node("second-root"));
        bad(w.add_reservemap_entry(ReserveEntry {
            address: 0x1000,
            size: 1,
        }));
        // Errors changed nothing.
        let b = w.finish().unwrap();
        let mut e = FdtWriter::new(opts(layout));
        e.add_reservemap_entry(ReserveEntry {
            address: 0,
            size: 1,
        })
        .unwrap();
        e.begin_node("").unwrap();
        e.property_u32("a", 1).unwrap();
        e.begin_node("child").unwrap();
        e.property_u32("b", 1).unwrap();
        e.end_node().unwrap();
        e.begin_node("child2").unwrap();
        e.end_node().unwrap();
        e.end_node().unwrap();
        assert_eq!(b, e.finish().unwrap());
    }
}

#[test]
fn bad_values_and_structure() {
    let mut w = FdtWriter::new(WriterOptions::default());
    let kind = |r: fdt::Result<()>| r.unwrap_err().kind;
    assert_eq!(
        kind(w.add_reservemap_entry(ReserveEntry {
            address: 0x1000,
            size: 0
        })),
        ErrorKind::BadValue
    );
    assert_eq!(
        kind(w.add_reservemap_entry(ReserveEntry {
            address: u64::MAX,
            size: 1
        })),
        ErrorKind::BadValue
    );
    assert_eq!(kind(w.begin_node("named-root")), ErrorKind::BadStructure);
    w.begin_node("").unwrap();
    assert_eq!(kind(w.begin_node("a\0b")), ErrorKind::BadValue);
    assert_eq!(kind(w.property_u32("a\0b", 1)), ErrorKind::BadValue);
    assert_eq!(kind(w.property_string("s", "a\0b")), ErrorKind::BadValue);
    assert_eq!(
        kind(w.property_string_list("s", &["ok", "a\0b"])),
        ErrorKind::BadValue
    );
    // Depth: the root is depth 1; MAX_DEPTH levels are fine, one more is not.
    for i in 1..fdt::MAX_DEPTH {
        w.begin_node(&format!("d{i}")).unwrap();
    }
    assert_eq!(kind(w.begin_node("too-deep")), ErrorKind::BadStructure);
    for _ in 0..fdt::MAX_DEPTH {
        w.end_node().unwrap();
    }
    w.finish().unwrap();
    // encode refuses too deep a tree without recursing further.
    let mut root = Node::new("");
    let mut cur = &mut root;
    for i in 0..200 {
        cur = cur.add_child(Node::new(format!("n{i}")));
    }
    assert_eq!(
        encode(&root, WriterOptions::default(), &[])
            .unwrap_err()
            .kind,
        ErrorKind::BadStructure
    );
}

#[test]
fn nospace_is_exact_and_recoverable() {
    // The smallest blob: header region + empty map + root + FDT_END.
    for (layout, min) in [(Layout::Libfdt, 0x50), (Layout::Dtc, 0x48)] {
        let build = |max: usize| {
            let mut w = FdtWriter::new(WriterOptions {
                layout,
                max_size: Some(max),
                ..Default::default()
            });
            w.begin_node("")?;
            w.end_node()?;
            w.finish()
        };
        assert_eq!(build(min).unwrap().len(), min);
        assert_eq!(build(min - 1).unwrap_err().kind, ErrorKind::NoSpace);
        // A failed property leaves the writer as it was.
        let mut w = FdtWriter::new(WriterOptions {
            layout,
            max_size: Some(min + 16),
            ..Default::default()
        });
        w.begin_node("").unwrap();
        assert_eq!(
            w.property("big", &[0; 12]).unwrap_err().kind,
            ErrorKind::NoSpace
        );
        w.property("sm", &[]).unwrap();
        w.end_node().unwrap();
        assert_eq!(w.finish().unwrap().len(), min + 15);
    }
}

// ---------------------------------------------------------------------------------------------
// Scale

#[test]
fn twenty_thousand_unique_names() {
    let names: Vec<String> = (0..20_000).map(|i| format!("p{}-{}", i % 97, i)).collect();
    for layout in [Layout::Libfdt, Layout::Dtc] {
        for no_name_dedup in [false, true] {
            let mut w = FdtWriter::new(WriterOptions {
                layout,
                no_name_dedup,
                ..Default::default()
            });
            w.begin_node("").unwrap();
            for n in &names {
                w.property_empty(n).unwrap();
            }
            // Again: every name resolves to its own occurrence (or a new copy without dedup).
            w.begin_node("again").unwrap();
            for n in &names {
                w.property_u32(n, 1).unwrap();
            }
            w.end_node().unwrap();
            w.end_node().unwrap();
            let b = w.finish().unwrap();
            let got = prop_names(&b);
            assert_eq!(got.len(), 40_000);
            for (i, (n, _)) in got.iter().enumerate() {
                assert_eq!(n, &names[i % 20_000]);
            }
            let size_strings = be32(&b, 32) as usize;
            let distinct: usize = names.iter().map(|n| n.len() + 1).sum();
            assert_eq!(
                size_strings,
                if no_name_dedup {
                    2 * distinct
                } else {
                    distinct
                }
            );
            if !no_name_dedup {
                assert!(got[..20_000]
                    .iter()
                    .zip(&got[20_000..])
                    .all(|(a, b)| a.1 == b.1));
            }
        }
    }
}

#[test]
fn huge_values_are_nospace_without_allocating() {
    let mut w = FdtWriter::new(WriterOptions::default());
    w.begin_node("").unwrap();
    assert_eq!(w.property_placeholder("big", usize::MAX).unwrap_err().kind, ErrorKind::NoSpace);
    assert_eq!(
        w.property_placeholder("big", i32::MAX as usize).unwrap_err().kind,
        ErrorKind::NoSpace
    );
    let mut capped = FdtWriter::new(WriterOptions { max_size: Some(4096), ..Default::default() });
    capped.begin_node("").unwrap();
    assert_eq!(capped.property_placeholder("p", 4096).unwrap_err().kind, ErrorKind::NoSpace);
    capped.property_placeholder("p", 8).unwrap();
    w.end_node().unwrap();
    w.finish().unwrap();
}
