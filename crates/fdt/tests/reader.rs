//! Reader tests: decode / check / to_dts on hand-assembled blobs (the encoder is tested
//! separately). The negative blobs reproduce dtc's `tests/trees.S` and `tests/check_header.c`
//! cases byte for byte in spirit; expected error kinds were cross-checked against libfdt 1.8.1's
//! `fdt_check_full`.
use fdt::{check, decode, to_dts, ErrorKind, Node, ReserveEntry, Validation, MAX_DEPTH};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// A test-only blob builder.

fn be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// Structure and strings blocks under construction.
#[derive(Default, Clone)]
struct B {
    st: Vec<u8>,
    strings: Vec<u8>,
    /// NOPs to insert before every token.
    nops: usize,
    /// Pre-v16 layout: values of 8 bytes or more 8-byte aligned (in the structure block).
    old: bool,
}

impl B {
    fn new() -> Self {
        B::default()
    }
    fn with_nops(nops: usize) -> Self {
        B {
            nops,
            ..B::default()
        }
    }
    fn tok(&mut self, t: u32) -> &mut Self {
        for _ in 0..self.nops {
            self.st.extend_from_slice(&be(4));
        }
        self.st.extend_from_slice(&be(t));
        self
    }
    fn pad(&mut self) {
        while !self.st.len().is_multiple_of(4) {
            self.st.push(0);
        }
    }
    fn begin(&mut self, name: &str) -> &mut Self {
        self.begin_raw(name.as_bytes())
    }
    fn begin_raw(&mut self, name: &[u8]) -> &mut Self {
        self.tok(1);
        self.st.extend_from_slice(name);
        self.st.push(0);
        self.pad();
        self
    }
    fn end(&mut self) -> &mut Self {
        self.tok(2)
    }
    fn nop(&mut self) -> &mut Self {
        self.st.extend_from_slice(&be(4));
        self
    }
    fn fin(&mut self) -> &mut Self {
        self.tok(9)
    }
    /// dtc's `stringtable_insert`: reuse any suffix match, else append.
    fn string(&mut self, name: &str) -> u32 {
        let want = [name.as_bytes(), &[0]].concat();
        if let Some(i) = self
            .strings
            .windows(want.len())
            .position(|w| w == want.as_slice())
        {
            return i as u32;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(&want);
        off
    }
    fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let off = self.string(name);
        self.prop_raw(off, value.len() as u32, value)
    }
    fn prop_raw(&mut self, nameoff: u32, len: u32, value: &[u8]) -> &mut Self {
        self.tok(3);
        self.st.extend_from_slice(&be(len));
        self.st.extend_from_slice(&be(nameoff));
        if self.old && len >= 8 && !self.st.len().is_multiple_of(8) {
            self.st.extend_from_slice(&[0; 4]);
        }
        self.st.extend_from_slice(value);
        self.pad();
        self
    }
}

/// How to lay a blob out.
#[derive(Clone)]
struct L {
    version: u32,
    /// Block order: a permutation of "mts" (m = rsvmap, t = struct, s = strings).
    order: &'static str,
    /// Free bytes before each block.
    gap: usize,
    /// Free bytes after the last block.
    trailing: usize,
    rsv: Vec<(u64, u64)>,
    boot_cpuid: u32,
}

impl Default for L {
    fn default() -> Self {
        L {
            version: 17,
            order: "mts",
            gap: 0,
            trailing: 0,
            rsv: vec![],
            boot_cpuid: 0,
        }
    }
}

fn set32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&be(v));
}
fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

/// Assembles header + blocks like dtc's `dt_to_blob` (for "mts", no gaps: byte-identical to
/// `dtc -I dts -O dtb`).
fn assemble(b: &B, l: &L) -> Vec<u8> {
    let hdr = if l.version >= 17 { 40 } else { 36 };
    let mut out = vec![0u8; hdr];
    let mut rsv = Vec::new();
    for &(a, s) in l.rsv.iter().chain(std::iter::once(&(0, 0))) {
        rsv.extend_from_slice(&a.to_be_bytes());
        rsv.extend_from_slice(&s.to_be_bytes());
    }
    let (mut om, mut ot, mut os) = (0, 0, 0);
    for c in l.order.chars() {
        out.resize(out.len() + l.gap, 0);
        match c {
            'm' => {
                while out.len() % 8 != 0 {
                    out.push(0);
                }
                om = out.len();
                out.extend_from_slice(&rsv);
            }
            't' => {
                while out.len() % 4 != 0 {
                    out.push(0);
                }
                ot = out.len();
                out.extend_from_slice(&b.st);
            }
            's' => {
                os = out.len();
                out.extend_from_slice(&b.strings);
            }
            _ => unreachable!(),
        }
    }
    out.resize(out.len() + l.trailing, 0);
    let total = out.len() as u32;
    set32(&mut out, 0, 0xd00dfeed);
    set32(&mut out, 4, total);
    set32(&mut out, 8, ot as u32);
    set32(&mut out, 12, os as u32);
    set32(&mut out, 16, om as u32);
    set32(&mut out, 20, l.version);
    set32(&mut out, 24, if l.version >= 16 { 16 } else { 2 });
    set32(&mut out, 28, l.boot_cpuid);
    set32(&mut out, 32, b.strings.len() as u32);
    if l.version >= 17 {
        set32(&mut out, 36, b.st.len() as u32);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// dtc's test_tree1

const TEST_ADDR_1: u64 = 0xdeadbeef00000000;
const TEST_SIZE_1: u64 = 0x100000;
const TEST_ADDR_2: u64 = 123456789;
const TEST_SIZE_2: u64 = 0o10000;
const TEST_VALUE_1: u32 = 0xdeadbeef;
const TEST_VALUE_2: u32 = 123456789;
const TEST_VALUE64_1: u64 = 0xdeadbeef01abcdef;

fn tree1_tokens(b: &mut B) {
    b.begin("")
        .prop("compatible", b"test_tree1\0")
        .prop("prop-int", &be(TEST_VALUE_1))
        .prop("prop-int64", &TEST_VALUE64_1.to_be_bytes())
        .prop("prop-str", b"hello world\0")
        .prop("#address-cells", &be(1))
        .prop("#size-cells", &be(0));
    b.begin("subnode@1")
        .prop("compatible", b"subnode1\0")
        .prop("reg", &be(1))
        .prop("prop-int", &be(TEST_VALUE_1));
    b.begin("subsubnode")
        .prop("compatible", b"subsubnode1\0subsubnode\0")
        .prop("placeholder", b"this is a placeholder string\0string2\0")
        .prop("prop-int", &be(TEST_VALUE_1))
        .end();
    b.begin("ss1").end();
    b.end();
    b.begin("subnode@2")
        .prop("reg", &be(2))
        .prop("linux,phandle", &be(0x2000))
        .prop("prop-int", &be(TEST_VALUE_2))
        .prop("#address-cells", &be(1))
        .prop("#size-cells", &be(0));
    b.begin("subsubnode@0")
        .prop("reg", &be(0))
        .prop("phandle", &be(0x2001))
        .prop("compatible", b"subsubnode2\0subsubnode\0")
        .prop("prop-int", &be(0o726746425))
        .end();
    b.begin("ss2").end();
    b.end();
    b.end().fin();
}

fn tree1_layout() -> L {
    L {
        rsv: vec![(TEST_ADDR_1, TEST_SIZE_1), (TEST_ADDR_2, TEST_SIZE_2)],
        ..L::default()
    }
}

fn tree1_blob() -> Vec<u8> {
    let mut b = B::new();
    tree1_tokens(&mut b);
    assemble(&b, &tree1_layout())
}

fn tree1_expected() -> Node {
    let mut root = Node::new("");
    root.set_property("compatible", b"test_tree1\0".to_vec())
        .set_property("prop-int", be(TEST_VALUE_1).to_vec())
        .set_property("prop-int64", TEST_VALUE64_1.to_be_bytes().to_vec())
        .set_property("prop-str", b"hello world\0".to_vec())
        .set_property("#address-cells", be(1).to_vec())
        .set_property("#size-cells", be(0).to_vec());
    let s1 = root.add_child(Node::new("subnode@1"));
    s1.set_property("compatible", b"subnode1\0".to_vec())
        .set_property("reg", be(1).to_vec())
        .set_property("prop-int", be(TEST_VALUE_1).to_vec());
    let ss = s1.add_child(Node::new("subsubnode"));
    ss.set_property("compatible", b"subsubnode1\0subsubnode\0".to_vec())
        .set_property(
            "placeholder",
            b"this is a placeholder string\0string2\0".to_vec(),
        )
        .set_property("prop-int", be(TEST_VALUE_1).to_vec());
    s1.add_child(Node::new("ss1"));
    let s2 = root.add_child(Node::new("subnode@2"));
    s2.set_property("reg", be(2).to_vec())
        .set_property("linux,phandle", be(0x2000).to_vec())
        .set_property("prop-int", be(TEST_VALUE_2).to_vec())
        .set_property("#address-cells", be(1).to_vec())
        .set_property("#size-cells", be(0).to_vec());
    let ss0 = s2.add_child(Node::new("subsubnode@0"));
    ss0.set_property("reg", be(0).to_vec())
        .set_property("phandle", be(0x2001).to_vec())
        .set_property("compatible", b"subsubnode2\0subsubnode\0".to_vec())
        .set_property("prop-int", be(0o726746425).to_vec());
    s2.add_child(Node::new("ss2"));
    root
}

fn all_levels() -> [Validation; 3] {
    [Validation::Structural, Validation::Dtc, Validation::Strict]
}

fn assert_tree1(blob: &[u8], version: u32) {
    for v in all_levels() {
        check(blob, v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let f = decode(blob, v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(f.version, version);
        assert_eq!(
            f.reserve,
            vec![
                ReserveEntry {
                    address: TEST_ADDR_1,
                    size: TEST_SIZE_1
                },
                ReserveEntry {
                    address: TEST_ADDR_2,
                    size: TEST_SIZE_2
                }
            ]
        );
        assert_eq!(f.root, tree1_expected());
    }
}

#[test]
fn test_tree1_decodes() {
    let blob = tree1_blob();
    assert_tree1(&blob, 17);
    let f = decode(&blob, Validation::Structural).unwrap();
    assert_eq!(f.boot_cpuid_phys, 0);
    assert_eq!(
        f.root
            .find("/subnode@2/subsubnode@0")
            .unwrap()
            .property("phandle")
            .unwrap()
            .value,
        be(0x2001)
    );
}

#[test]
fn all_six_block_orders_and_gaps() {
    for order in ["mts", "mst", "tms", "tsm", "smt", "stm"] {
        for gap in [0, 4, 8, 13] {
            let mut b = B::new();
            tree1_tokens(&mut b);
            let blob = assemble(
                &b,
                &L {
                    order,
                    gap,
                    ..tree1_layout()
                },
            );
            assert_tree1(&blob, 17);
        }
    }
}

#[test]
fn version_16_header() {
    for order in ["mts", "stm"] {
        let mut b = B::new();
        tree1_tokens(&mut b);
        let blob = assemble(
            &b,
            &L {
                version: 16,
                order,
                ..tree1_layout()
            },
        );
        assert_eq!(get32(&blob, 16) % 8, 0);
        assert_tree1(&blob, 16);
    }
}

fn old_v3_blob() -> Vec<u8> {
    let mut b = B {
        old: true,
        ..B::new()
    };
    b.begin("/")
        .prop("a", &[1])
        .prop("big", &TEST_VALUE64_1.to_be_bytes())
        .begin("/sub@1")
        .prop("nine", &[9; 9])
        .prop("big", &TEST_VALUE64_1.to_be_bytes())
        .end()
        .end()
        .fin();
    assemble(
        &b,
        &L {
            version: 3,
            ..L::default()
        },
    )
}

#[test]
fn old_version_3_paths_and_realigned_values() {
    // As `dtc -V 3` writes (minus its "name" properties): full paths, 8-aligned big values.
    let blob = old_v3_blob();
    let f = decode(&blob, Validation::Dtc).unwrap();
    assert_eq!(f.version, 3);
    let mut root = Node::new("");
    root.set_property("a", vec![1])
        .set_property("big", TEST_VALUE64_1.to_be_bytes().to_vec());
    root.add_child(Node::new("sub@1"))
        .set_property("nine", vec![9; 9])
        .set_property("big", TEST_VALUE64_1.to_be_bytes().to_vec());
    assert_eq!(f.root, root);
    check(&blob, Validation::Strict).unwrap();
    // A root that is not a path.
    let mut b = B {
        old: true,
        ..B::new()
    };
    b.begin("").end().fin();
    expect(
        &assemble(
            &b,
            &L {
                version: 3,
                ..L::default()
            },
        ),
        ErrorKind::BadStructure,
        56,
    );
    // Version 2 is not supported (libfdt reads a size_dt_strings beyond its header).
    let mut blob = blob;
    set32(&mut blob, 20, 2);
    assert_eq!(err(&blob).kind, ErrorKind::BadVersion);
}

#[test]
fn version_above_17_backward_compatible() {
    // libfdt accepts any version >= last_comp_version as long as last_comp <= 17.
    let mut blob = tree1_blob();
    set32(&mut blob, 20, 18);
    assert_tree1(&blob, 18);
}

#[test]
fn nops_everywhere() {
    for nops in [1, 3] {
        let mut b = B::with_nops(nops);
        tree1_tokens(&mut b);
        let blob = assemble(&b, &tree1_layout());
        assert_tree1(&blob, 17);
    }
    // NOPs after FDT_END too (ignored like libfdt ignores everything after FDT_END).
    let mut b = B::new();
    tree1_tokens(&mut b);
    b.nop().nop();
    assert_tree1(&assemble(&b, &tree1_layout()), 17);
}

#[test]
fn nameoff_into_the_middle_of_a_string_and_trailing_space() {
    let mut b = B::new();
    let full = b.string("#size-cells");
    assert_eq!(full, 0);
    b.begin("")
        .prop_raw(1, 4, &be(7))
        .prop_raw(6, 0, &[])
        .prop_raw(0, 4, &be(1))
        .end()
        .fin();
    let blob = assemble(
        &b,
        &L {
            trailing: 100,
            ..L::default()
        },
    );
    let f = decode(&blob, Validation::Dtc).unwrap();
    let names: Vec<_> = f.root.properties.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["size-cells", "cells", "#size-cells"]);
    check(&blob, Validation::Strict).unwrap();
}

#[test]
fn empty_rsvmap_and_boot_cpuid() {
    let mut b = B::new();
    b.begin("").end().fin();
    let blob = assemble(
        &b,
        &L {
            boot_cpuid: 0x12345678,
            ..L::default()
        },
    );
    let f = decode(&blob, Validation::Strict).unwrap();
    assert!(f.reserve.is_empty());
    assert_eq!(f.boot_cpuid_phys, 0x12345678);
    assert_eq!(f.root, Node::new(""));
}

#[test]
fn libfdt_layout_rsvmap_at_0x30() {
    // libfdt's sequential-write layout: 48-byte header area, rsvmap at 0x30, struct at 0x40,
    // strings in reverse insertion order.
    let mut b = B::new();
    b.strings = b"iova-len\0compatible\0".to_vec();
    b.begin("")
        .prop_raw(9, 7, b"kho-v1\0")
        .begin("0")
        .prop_raw(0, 8, &[1, 0, 0, 0, 0, 0, 0, 0])
        .end()
        .end()
        .fin();
    let mut blob = vec![0u8; 0x30];
    blob.extend_from_slice(&[0; 16]);
    blob.extend_from_slice(&b.st);
    let os = blob.len();
    blob.extend_from_slice(&b.strings);
    let total = blob.len() as u32;
    for (o, v) in [
        (0, 0xd00dfeed),
        (4, total),
        (8, 0x40),
        (12, os as u32),
        (16, 0x30),
        (20, 17),
        (24, 16),
    ] {
        set32(&mut blob, o, v);
    }
    set32(&mut blob, 32, b.strings.len() as u32);
    set32(&mut blob, 36, b.st.len() as u32);
    let f = decode(&blob, Validation::Dtc).unwrap();
    assert_eq!(
        f.root
            .child("0")
            .unwrap()
            .property("iova-len")
            .unwrap()
            .value,
        [1, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        check(&blob, Validation::Strict).unwrap_err().kind,
        ErrorKind::BadStructure
    );
}

// ---------------------------------------------------------------------------------------------
// Rejections: dtc's bad trees (tests/trees.S).

fn err(blob: &[u8]) -> fdt::Error {
    let e = check(blob, Validation::Structural).expect_err("check accepted a bad blob");
    let d = decode(blob, Validation::Structural).expect_err("decode accepted a bad blob");
    assert_eq!(e, d, "check and decode disagree");
    e
}

fn expect(blob: &[u8], kind: ErrorKind, offset: usize) {
    let e = err(blob);
    assert_eq!((e.kind, e.offset), (kind, Some(offset)), "{e}");
    assert!(!e.detail.is_empty());
}

#[test]
fn truncated_property() {
    // The property header is there, its 4 value bytes are not: libfdt says BADSTRUCTURE.
    let mut b = B::new();
    b.strings = b"truncated\0".to_vec();
    b.begin("").prop_raw(0, 4, &[]);
    let blob = assemble(&b, &L::default());
    expect(&blob, ErrorKind::BadStructure, 64);
}

#[test]
fn truncated_string() {
    let mut b = B::new();
    b.strings = b"good\0bad".to_vec();
    b.begin("")
        .prop_raw(0, 0, &[])
        .prop_raw(5, 0, &[])
        .end()
        .fin();
    let blob = assemble(&b, &L::default());
    expect(&blob, ErrorKind::Truncated, 76);
}

#[test]
fn truncated_memrsv() {
    // Reservation map last, with one entry and no terminator.
    let mut b = B::new();
    b.begin("").end().fin();
    let mut blob = assemble(
        &b,
        &L {
            order: "tsm",
            ..L::default()
        },
    );
    let om = get32(&blob, 16) as usize;
    blob.truncate(om);
    blob.extend_from_slice(&TEST_ADDR_1.to_be_bytes());
    blob.extend_from_slice(&TEST_SIZE_1.to_be_bytes());
    let total = blob.len() as u32;
    set32(&mut blob, 4, total);
    expect(&blob, ErrorKind::Truncated, om + 16);
}

#[test]
fn unterminated_memrsv() {
    // One entry, then the structure block is read as further entries until totalsize.
    let mut b = B::new();
    b.begin("").end().fin();
    let mut blob = assemble(
        &b,
        &L {
            rsv: vec![(TEST_ADDR_1, TEST_SIZE_1)],
            ..L::default()
        },
    );
    // Drop the terminator: move the struct block 16 bytes down.
    let st = b.st.clone();
    blob.truncate(40 + 16);
    blob.extend_from_slice(&st);
    let total = blob.len() as u32;
    set32(&mut blob, 4, total);
    set32(&mut blob, 8, 56);
    set32(&mut blob, 12, total);
    let e = err(&blob);
    assert_eq!(e.kind, ErrorKind::Truncated, "{e}");
}

#[test]
fn two_roots() {
    let mut b = B::new();
    b.begin("").end().begin("").end().fin();
    expect(
        &assemble(&b, &L::default()),
        ErrorKind::BadStructure,
        40 + 16 + 12,
    );
}

#[test]
fn named_root() {
    let mut b = B::new();
    b.begin("fake").end().fin();
    expect(&assemble(&b, &L::default()), ErrorKind::BadStructure, 56);
}

#[test]
fn ovf_size_strings() {
    // As in trees.S: size_dt_strings = 0xffffffff fails the header's bounds check first.
    let mut b = B::new();
    b.strings = b"x\0".to_vec();
    b.begin("").prop_raw(0x1000_0000, 4, &be(0)).end().fin();
    let mut blob = assemble(&b, &L::default());
    set32(&mut blob, 32, 0xffff_ffff);
    expect(&blob, ErrorKind::Truncated, 0x20);
    // With a sane size, the nameoff 0x10000000 is out of the strings block.
    set32(&mut blob, 32, 2);
    expect(&blob, ErrorKind::BadOffset, 56 + 8);
}

#[test]
fn nameoff_past_block_but_inside_blob() {
    let mut b = B::new();
    b.strings = b"ab\0".to_vec();
    b.begin("").prop_raw(3, 0, &[]).end().fin();
    let blob = assemble(
        &b,
        &L {
            trailing: 8,
            ..L::default()
        },
    );
    expect(&blob, ErrorKind::BadOffset, 64);
    let mut b = B::new();
    b.strings = b"ab\0".to_vec();
    b.begin("").prop_raw(0x8000_0000, 0, &[]).end().fin();
    expect(&assemble(&b, &L::default()), ErrorKind::BadOffset, 64);
}

#[test]
fn misaligned_blob_from_dtc_issue_178() {
    // 72 bytes, off_dt_struct = 0x32: FDT_ERR_ALIGNMENT on libfdt >= 1.8.0.
    let mut blob = vec![0u8; 72];
    for (o, v) in [
        (0, 0xd00dfeed),
        (4, 72),
        (8, 0x32),
        (12, 0x48),
        (16, 0x28),
        (20, 17),
        (24, 16),
        (32, 0),
        (36, 0x14),
    ] {
        set32(&mut blob, o, v);
    }
    set32(&mut blob, 0x32, 1);
    set32(&mut blob, 0x3a, 2);
    set32(&mut blob, 0x3e, 9);
    expect(&blob, ErrorKind::Alignment, 0x08);
    // rsvmap misaligned too.
    let mut blob = tree1_blob();
    set32(&mut blob, 16, 0x2c);
    expect(&blob, ErrorKind::Alignment, 0x10);
}

// ---------------------------------------------------------------------------------------------
// Header mangling (tests/check_header.c).

#[test]
fn header_mangling() {
    let good = tree1_blob();
    let mangle = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        err(&b)
    };
    let kind = |f: &dyn Fn(&mut Vec<u8>)| mangle(f).kind;
    let (om, ot, os) = (get32(&good, 16), get32(&good, 8), get32(&good, 12));
    let total = get32(&good, 4);

    for bit in [0x1, 0x8000_0000, 0x100] {
        let e = mangle(&|b| set32(b, 0, 0xd00dfeed ^ bit));
        assert_eq!((e.kind, e.offset), (ErrorKind::BadMagic, Some(0)));
    }
    assert_eq!(kind(&|b| set32(b, 0, 0x2ff20112)), ErrorKind::BadMagic);
    assert_eq!(
        kind(&|b| {
            set32(b, 20, 1);
            set32(b, 24, 1)
        }),
        ErrorKind::BadVersion
    );
    assert_eq!(
        kind(&|b| {
            set32(b, 20, 18);
            set32(b, 24, 18)
        }),
        ErrorKind::BadVersion
    );
    assert_eq!(
        kind(&|b| {
            set32(b, 20, 2);
            set32(b, 24, 17)
        }),
        ErrorKind::BadVersion
    );
    assert_eq!(
        kind(&|b| {
            set32(b, 20, 16);
            set32(b, 24, 17)
        }),
        ErrorKind::BadVersion
    );
    assert_eq!(kind(&|b| set32(b, 20, 0)), ErrorKind::BadVersion);

    for t in [
        27,
        39,
        0,
        (i32::MAX as u32) + 1,
        0xffff_ffff,
        total + 1,
        ot - 1,
        os - 1,
        om - 1,
        ot + 1,
        os + 1,
        om + 1,
    ] {
        let e = mangle(&|b| set32(b, 4, t));
        assert_eq!(e.kind, ErrorKind::Truncated, "totalsize {t:#x}: {e}");
    }
    for (field, v) in [
        (36, 0xffff_ffff),
        (32, 0xffff_ffff),
        (36, 0x8000_0000),
        (32, 0x8000_0000),
        (8, 0xffff_fffc),
        (12, 0xffff_ffff),
        (16, 0xffff_fff8),
    ] {
        let e = mangle(&|b| set32(b, field, v));
        assert_eq!(
            e.kind,
            ErrorKind::Truncated,
            "field {field:#x} = {v:#x}: {e}"
        );
        assert_eq!(e.offset, Some(field), "{e}");
    }
    // Offsets inside the header.
    assert_eq!(kind(&|b| set32(b, 8, 36)), ErrorKind::Truncated);
    assert_eq!(kind(&|b| set32(b, 16, 32)), ErrorKind::Truncated);
    // The slice shorter than totalsize, or than the header.
    for n in [0, 4, 27, 28, 39, good.len() - 1] {
        let e = err(&good[..n]);
        assert_eq!(e.kind, ErrorKind::Truncated, "{n}: {e}");
    }
    // Each block truncated by a shorter size field.
    assert_eq!(
        kind(&|b| set32(b, 36, get32(&good, 36) - 4)),
        ErrorKind::Truncated
    );
    assert_eq!(kind(&|b| set32(b, 36, 0)), ErrorKind::Truncated);
    // A shorter strings block: "compatible" at nameoff 0 loses its NUL, or is out of block.
    assert_eq!(kind(&|b| set32(b, 32, 1)), ErrorKind::Truncated);
    assert_eq!(kind(&|b| set32(b, 32, 0)), ErrorKind::BadOffset);
}

// ---------------------------------------------------------------------------------------------
// Tokens.

fn root_with(f: impl FnOnce(&mut B)) -> Vec<u8> {
    let mut b = B::new();
    b.begin("");
    f(&mut b);
    assemble(&b, &L::default())
}

#[test]
fn bad_tokens() {
    for t in [0u32, 5, 8, 10, 0xffff_ffff, 0x0100_0000] {
        expect(
            &root_with(|b| {
                b.tok(t);
            }),
            ErrorKind::BadStructure,
            64,
        );
    }
    // END_NODE at depth 0.
    let mut b = B::new();
    b.end().fin();
    expect(
        &assemble(&b, &L::default()),
        ErrorKind::BadStructure,
        40 + 16,
    );
    // FDT_END inside a node.
    expect(
        &root_with(|b| {
            b.begin("a").end().fin();
        }),
        ErrorKind::BadStructure,
        76,
    );
    // No FDT_END at all.
    expect(
        &root_with(|b| {
            b.end();
        }),
        ErrorKind::Truncated,
        68,
    );
    // Empty structure block; a structure block without nodes; a property before the root.
    let mut b = B::new();
    b.fin();
    expect(&assemble(&b, &L::default()), ErrorKind::BadStructure, 56);
    expect(
        &assemble(&B::new(), &L::default()),
        ErrorKind::Truncated,
        56,
    );
    let mut b = B::new();
    b.prop("a", &[]).begin("").end().fin();
    expect(&assemble(&b, &L::default()), ErrorKind::BadStructure, 56);
    // A property after the root closed.
    let mut b = B::new();
    b.begin("").end().prop("a", &[]).fin();
    expect(&assemble(&b, &L::default()), ErrorKind::BadStructure, 68);
}

#[test]
fn bad_property_lengths() {
    for len in [0xFFFF_FFFA, 0x7FFF_FFFA, 0x7FFF_FFFF, 0x8000_0000] {
        expect(
            &root_with(|b| {
                b.prop_raw(0, len, &[]);
            }),
            ErrorKind::BadStructure,
            64,
        );
    }
    // A length running past the block.
    let mut b = B::new();
    b.strings = b"a\0".to_vec();
    b.begin("").prop_raw(0, 100, &[1, 2, 3, 4]).end().fin();
    expect(&assemble(&b, &L::default()), ErrorKind::BadStructure, 64);
}

#[test]
fn unterminated_node_name() {
    let mut b = B::new();
    b.begin("").tok(1);
    b.st.extend_from_slice(b"abcd");
    expect(&assemble(&b, &L::default()), ErrorKind::BadStructure, 64);
}

#[test]
fn depth_limit() {
    let deep = |n: usize| {
        let mut b = B::new();
        b.begin("");
        for _ in 1..n {
            b.begin("n");
        }
        for _ in 0..n {
            b.end();
        }
        b.fin();
        assemble(&b, &L::default())
    };
    check(&deep(MAX_DEPTH), Validation::Strict).unwrap();
    decode(&deep(MAX_DEPTH), Validation::Strict).unwrap();
    let e = err(&deep(MAX_DEPTH + 1));
    assert_eq!(e.kind, ErrorKind::BadStructure);
    // Very deep input must not overflow the stack.
    assert_eq!(err(&deep(200_000)).kind, ErrorKind::BadStructure);
}

// ---------------------------------------------------------------------------------------------
// dtc and strict levels.

fn levels(blob: &[u8]) -> [Option<ErrorKind>; 3] {
    all_levels().map(|v| {
        let c = check(blob, v).err();
        let d = decode(blob, v).err();
        assert_eq!(c, d, "{v:?}");
        c.map(|e| e.kind)
    })
}

const BS: Option<ErrorKind> = Some(ErrorKind::BadStructure);

#[test]
fn dtc_checks() {
    let node = |name: &[u8]| {
        root_with(|b| {
            b.begin_raw(name).end().end().fin();
        })
    };
    let prop = |name: &str| {
        root_with(|b| {
            b.prop(name, &[]).end().fin();
        })
    };
    // bad_node_char, bad_node_format, bad_prop_char (dtc's tests).
    assert_eq!(levels(&node(b"sub$node")), [None, BS, BS]);
    assert_eq!(levels(&node(b"Bad Node")), [None, BS, BS]);
    assert_eq!(levels(&node(b"subnode@1@2")), [None, BS, BS]);
    assert_eq!(levels(&node(b"@1")), [None, BS, BS]);
    assert_eq!(levels(&node(b"\xff")), [None, BS, BS]);
    assert_eq!(levels(&prop("prop$erty")), [None, BS, BS]);
    assert_eq!(levels(&prop("bad@name")), [None, BS, BS]);
    // KHO's numeric names pass dtc, fail strict.
    assert_eq!(levels(&node(b"0")), [None, None, BS]);
    assert_eq!(levels(&node(b"42")), [None, None, BS]);
    assert_eq!(
        levels(&node(b"a123456789012345678901234567890b@1")),
        [None, None, BS]
    );
    assert_eq!(levels(&node(b"a@1")), [None, None, None]);
    assert_eq!(
        levels(&prop("a123456789012345678901234567890b")),
        [None, None, BS]
    );
    assert_eq!(levels(&prop("")), [None, None, BS]);
    assert_eq!(levels(&prop("*x#?,._+-")), [None, None, None]);
    // Duplicates.
    let dup_prop = root_with(|b| {
        b.prop("a", &[]).prop("b", &[]).prop("a", &[1]).end().fin();
    });
    assert_eq!(levels(&dup_prop), [None, BS, BS]);
    let e = check(&dup_prop, Validation::Dtc).unwrap_err();
    assert_eq!(e.offset, Some(88));
    let dup_node = root_with(|b| {
        b.begin("a")
            .end()
            .begin("b")
            .end()
            .begin("a")
            .end()
            .end()
            .fin();
    });
    assert_eq!(levels(&dup_node), [None, BS, BS]);
    // Same names under different parents are fine.
    let ok = root_with(|b| {
        b.prop("a", &[])
            .begin("a")
            .prop("a", &[])
            .begin("a")
            .end()
            .end()
            .begin("b")
            .prop("a", &[])
            .begin("a")
            .end()
            .end()
            .end()
            .fin();
    });
    assert_eq!(levels(&ok), [None, None, None]);
    // Property after a subnode.
    let after = root_with(|b| {
        b.begin("a").end().prop("p", &[]).end().fin();
    });
    assert_eq!(levels(&after), [None, BS, BS]);
    // A name error never hides a later structural error.
    let both = root_with(|b| {
        b.begin("a b").end().tok(7);
    });
    assert_eq!(levels(&both), [BS; 3].map(|_| BS));
    let e = check(&both, Validation::Dtc).unwrap_err();
    assert!(e.detail.contains("unknown token"), "{e}");
    let trunc = root_with(|b| {
        b.begin("a b").end();
    });
    assert_eq!(levels(&trunc), [Some(ErrorKind::Truncated); 3]);
}

// ---------------------------------------------------------------------------------------------
// to_dts, with goldens from `dtc -I dtb -O dts` (dtc 1.6.1 prints string lists as "a\0b"; we
// print "a", "b" like dtc >= 1.7).

const TREE1_DTS: &str = r#"/dts-v1/;

/memreserve/	0xdeadbeef00000000 0x0000000000100000;
/memreserve/	0x00000000075bcd15 0x0000000000001000;
/ {
	compatible = "test_tree1";
	prop-int = <0xdeadbeef>;
	prop-int64 = <0xdeadbeef 0x1abcdef>;
	prop-str = "hello world";
	#address-cells = <0x01>;
	#size-cells = <0x00>;

	subnode@1 {
		compatible = "subnode1";
		reg = <0x01>;
		prop-int = <0xdeadbeef>;

		subsubnode {
			compatible = "subsubnode1", "subsubnode";
			placeholder = "this is a placeholder string", "string2";
			prop-int = <0xdeadbeef>;
		};

		ss1 {
		};
	};

	subnode@2 {
		reg = <0x02>;
		linux,phandle = <0x2000>;
		prop-int = <0x75bcd15>;
		#address-cells = <0x01>;
		#size-cells = <0x00>;

		subsubnode@0 {
			reg = <0x00>;
			phandle = <0x2001>;
			compatible = "subsubnode2", "subsubnode";
			prop-int = <0x75bcd15>;
		};

		ss2 {
		};
	};
};
"#;

#[test]
fn dts_of_test_tree1() {
    assert_eq!(to_dts(&tree1_blob()).unwrap(), TREE1_DTS);
}

const VALUES_DTS: &str = r#"/dts-v1/;

/ {
	empty;
	bytes = [01 02 03];
	tab = "a\tb";
	nonp = <0x4142ff00>;
	nuls = <0x00>;
	nul1 = [00];
	two = [61 00 00 00 00 00];
	quote = "a\"b\\c";
	esc = "\a\b\t\n\v\f\r";
	hi = <0xe282ac00>;
	kho = <0x40be16 0x1000000>;
	sl3odd = [61 00 00 62 00];
	sl3 = "a", "", "bc";

	0 {
		bus = [00];
	};
};
"#;

/// Properties that exercise dtc's value guessing (strings, cells, bytes, escapes, KHO LE).
fn values_blob() -> Vec<u8> {
    root_with(|b| {
        b.prop("empty", &[])
            .prop("bytes", &[1, 2, 3])
            .prop("tab", b"a\tb\0")
            .prop("nonp", &[0x41, 0x42, 0xff, 0])
            .prop("nuls", &[0; 4])
            .prop("nul1", &[0])
            .prop("two", b"a\0\0\0\0\0")
            .prop("quote", b"a\"b\\c\0")
            .prop("esc", b"\x07\x08\t\n\x0b\x0c\r\0")
            .prop("hi", "€\0".as_bytes())
            .prop("kho", &0x1_16be_4000u64.to_le_bytes())
            .prop("sl3odd", b"a\0\0b\0")
            .prop("sl3", b"a\0\0bc\0")
            .begin("0")
            .prop("bus", &[0])
            .end()
            .end()
            .fin();
    })
}

#[test]
fn dts_value_guessing() {
    let blob = values_blob();
    assert_eq!(to_dts(&blob).unwrap(), VALUES_DTS);
    assert_eq!(to_dts(&blob[..50]).unwrap_err().kind, ErrorKind::Truncated);
}

// ---------------------------------------------------------------------------------------------
// Robustness.

fn agree(blob: &[u8]) {
    for v in all_levels() {
        let c = check(blob, v);
        let d = decode(blob, v);
        match (&c, &d) {
            (Ok(()), Ok(_)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("check {c:?} vs decode {:?}", d.as_ref().map(|_| ())),
        }
        if d.is_ok() {
            to_dts(blob).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        agree(&bytes);
    }

    #[test]
    fn header_then_arbitrary_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 40..300), total in 0u32..320) {
        set32(&mut bytes, 0, 0xd00dfeed);
        set32(&mut bytes, 4, total);
        set32(&mut bytes, 20, 17);
        set32(&mut bytes, 24, 16);
        agree(&bytes);
    }

    #[test]
    fn mutated_valid_blobs(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        ins in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        order in 0usize..6,
        nops in 0usize..2,
    ) {
        let mut b = B::with_nops(nops);
        tree1_tokens(&mut b);
        let orders = ["mts", "mst", "tms", "tsm", "smt", "stm"];
        let mut blob = assemble(&b, &L { order: orders[order], ..tree1_layout() });
        for (i, x) in &flips {
            let i = i.index(blob.len());
            blob[i] ^= x | 1;
        }
        for (i, x) in &ins {
            let i = i.index(blob.len() + 1);
            blob.insert(i, *x);
        }
        if do_cut {
            let n = cut.index(blob.len() + 1);
            blob.truncate(n);
        }
        agree(&blob);
    }
}

/// Throughput on a ~7.6 MB KHO-like blob: `cargo test --release -p fdt --test reader --
/// --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let mut b = B::new();
    b.begin("")
        .prop("compatible", b"kho-v1\0")
        .prop("preserved-memory-map", &[0; 8]);
    for i in 0..100_000u64 {
        b.begin(&format!("node{i}"))
            .prop("iova-start", &(i << 12).to_le_bytes())
            .prop("iova-len", &4096u64.to_le_bytes())
            .prop("iommu-prot", &3u32.to_le_bytes())
            .end();
    }
    b.end().fin();
    let blob = assemble(&b, &L::default());
    let mb = blob.len() as f64 / 1e6;
    for (what, v) in [
        ("check Structural", Validation::Structural),
        ("check Dtc", Validation::Dtc),
        ("check Strict", Validation::Strict),
    ] {
        let t = std::time::Instant::now();
        let n = 20;
        for _ in 0..n {
            check(&blob, v).unwrap();
        }
        let s = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "{what}: {mb:.1} MB in {:.2} ms = {:.0} MB/s",
            s * 1e3,
            mb / s
        );
    }
    for (what, v) in [
        ("decode Structural", Validation::Structural),
        ("decode Dtc", Validation::Dtc),
    ] {
        let t = std::time::Instant::now();
        let n = 5;
        for _ in 0..n {
            decode(&blob, v).unwrap();
        }
        let s = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "{what}: {mb:.1} MB in {:.2} ms = {:.0} MB/s",
            s * 1e3,
            mb / s
        );
    }
    let t = std::time::Instant::now();
    let d = to_dts(&blob).unwrap();
    println!(
        "to_dts: {:.2} ms, {} bytes",
        t.elapsed().as_secs_f64() * 1e3,
        d.len()
    );
    if let Ok(p) = std::env::var("FDT_DUMP") {
        std::fs::write(p, &blob).unwrap();
    }
}

/// Writes the test blobs for cross-checking with libfdt / dtc: `FDT_CORPUS=/tmp/dir cargo test
/// -p fdt --test reader -- --ignored corpus`.
#[test]
#[ignore]
fn corpus() {
    let Ok(dir) = std::env::var("FDT_CORPUS") else {
        return;
    };
    let w = |name: &str, blob: &[u8]| std::fs::write(format!("{dir}/{name}.dtb"), blob).unwrap();
    w("tree1", &tree1_blob());
    for order in ["mts", "mst", "tms", "tsm", "smt", "stm"] {
        let mut b = B::with_nops(1);
        tree1_tokens(&mut b);
        w(
            &format!("tree1_{order}_nops"),
            &assemble(
                &b,
                &L {
                    order,
                    gap: 4,
                    trailing: 12,
                    ..tree1_layout()
                },
            ),
        );
        let mut b = B::new();
        tree1_tokens(&mut b);
        w(
            &format!("tree1_{order}_v16"),
            &assemble(
                &b,
                &L {
                    order,
                    version: 16,
                    ..tree1_layout()
                },
            ),
        );
    }
    let blob = values_blob();
    w("values", &blob);
    w("old_v3", &old_v3_blob());
    // Mutants for error-kind comparison with libfdt.
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..3000 {
        let mut blob = tree1_blob();
        for _ in 0..(1 + next() % 3) {
            let at = (next() as usize) % blob.len();
            blob[at] ^= (next() as u8) | 1;
        }
        if next() % 4 == 0 {
            let n = (next() as usize) % (blob.len() + 1);
            blob.truncate(n);
        }
        w(&format!("mut{i:04}"), &blob);
    }
}
