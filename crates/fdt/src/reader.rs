//! The defensive decoder and validator (libfdt `fdt_check_full` semantics and beyond).
//!
//! One non-recursive walker serves both [`check`] (no allocation at the `Structural` level) and
//! [`decode`] (builds the tree with an explicit stack). Every read is a checked slice access, so
//! arbitrary input can neither panic nor overflow the Rust stack.
//!
//! What `Validation::Structural` checks, in libfdt's (v1.8.1) order and with its error kinds:
//!
//! 1. the blob holds a v1 header (28 bytes) and the header of its version → `TRUNCATED`;
//! 2. `magic` → `BADMAGIC`;
//! 3. `version >= 2`, `last_comp_version <= 17`, `version >= last_comp_version` → `BADVERSION`;
//! 4. `hdrsize <= totalsize <= INT32_MAX` → `TRUNCATED`;
//! 5. `off_mem_rsvmap % 8`, `off_dt_struct % 4` → `ALIGNMENT` (libfdt >= 1.8.0);
//! 6. rsvmap offset, struct block (v17: offset + size), strings block (offset + size) inside
//!    `[hdrsize, totalsize]` → `TRUNCATED`;
//! 7. the slice is at least `totalsize` long → `TRUNCATED`;
//! 8. the reservation map terminates (an entry with size 0) inside `totalsize` → `TRUNCATED`;
//! 9. tags, as `fdt_next_tag` + `fdt_check_full` see them: a token that cannot be read inside
//!    the structure block → `TRUNCATED`; an unknown token, a property length overflowing
//!    `INT32_MAX`, a node name or property value running past the block → `BADSTRUCTURE` (libfdt
//!    reports these as `BADSTRUCTURE`, not `TRUNCATED`: `fdt_next_tag` sets
//!    `*nextoffset = -FDT_ERR_BADSTRUCTURE` once the token itself was read); any non-NOP tag after
//!    the root closed, `END_NODE` at depth 0, `FDT_END` inside a node, a named root →
//!    `BADSTRUCTURE`; a property `nameoff` outside the strings block → `BADOFFSET`, without a NUL
//!    before the end of the block → `TRUNCATED`.
//!
//! Deliberate differences from libfdt, all stricter:
//! - nesting deeper than [`MAX_DEPTH`] → `BADSTRUCTURE`;
//! - a structure block without any node, or a property before the root node, →
//!   `BADSTRUCTURE` (libfdt's `fdt_check_full` accepts both; `dtc` rejects them);
//! - `version` 2 (32-byte header without `size_dt_strings`) → `BADVERSION`. Versions 3..=15 are
//!   decoded like libfdt does: no `size_dt_struct` (the block runs to `totalsize`), values of 8
//!   bytes or more 8-byte aligned relative to the structure block, node names as full paths
//!   (the decoded name is the part after the last `/`; the root must be `/`).
//! - the blob's base address alignment (libfdt's first check) cannot be checked on a byte slice
//!   and is not; copy into an 8-aligned buffer before handing it to native libfdt.
//! - names that are not UTF-8 are decoded lossily (`U+FFFD`); `Validation::Dtc` rejects them
//!   anyway through its character sets.
//!
//! `Validation::Dtc` adds dtc's `checks.c` errors, all `BADSTRUCTURE` at the offset of the
//! node's or property's token: `node_name_chars`, `node_name_format` (one `@` at most),
//! `node_name_not_empty`, `property_name_chars`, `duplicate_node_names`,
//! `duplicate_property_names`, and properties after subnodes (dtc only warns about that one).
//! `Validation::Strict` adds the spec's limits: a node name (before `@`) of 1..=31 characters
//! starting with a letter, property names of 1..=31 characters. Name errors never hide a
//! structural error later in the blob: the first name error is kept while the walk goes on.
use std::collections::HashSet;

use crate::{
    Error, ErrorKind, Node, Property, ReserveEntry, Result, Validation, FDT_BEGIN_NODE, FDT_END,
    FDT_END_NODE, FDT_MAGIC, FDT_NOP, FDT_PROP,
};

/// Deepest nesting a decoder accepts (the root is depth 1), as vm-fdt and Linux bound it.
pub const MAX_DEPTH: usize = 64;

/// A decoded blob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fdt {
    /// Header `version`: 16 or 17 normally; 3..=15 (old layout) and later versions whose
    /// `last_comp_version` is at most 17 are accepted too, as libfdt does.
    pub version: u32,
    /// Header `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// Memory reservation entries.
    pub reserve: Vec<ReserveEntry>,
    /// The root node (name `""`).
    pub root: Node,
}

/// Decodes and validates a blob. Never panics; every error names the libfdt error and the byte
/// offset.
pub fn decode(blob: &[u8], validation: Validation) -> Result<Fdt> {
    let header = parse_header(blob)?;
    let mut sink = TreeSink {
        reserve: Vec::new(),
        stack: Vec::new(),
        root: None,
    };
    walk(blob, &header, validation, &mut sink)?;
    let root = sink
        .root
        .ok_or_else(|| Error::new(ErrorKind::Internal, "no root node built"))?;
    Ok(Fdt {
        version: header.version,
        boot_cpuid_phys: header.boot_cpuid_phys,
        reserve: sink.reserve,
        root,
    })
}

/// Validates without building a tree (the fast path for `fdt_check_full`-like checks).
pub fn check(blob: &[u8], validation: Validation) -> Result<()> {
    let header = parse_header(blob)?;
    walk(blob, &header, validation, &mut NullSink)
}

// ---------------------------------------------------------------------------------------------
// Header

const FDT_SW_MAGIC: u32 = !FDT_MAGIC;
const FDT_V1_SIZE: usize = 28;
const FDT_V2_SIZE: usize = 32;
const FDT_V3_SIZE: usize = 36;
const FDT_V17_SIZE: usize = 40;
const INT_MAX: u64 = i32::MAX as u64;

const OFF_TOTALSIZE: usize = 0x04;
const OFF_OFF_STRUCT: usize = 0x08;
const OFF_OFF_STRINGS: usize = 0x0c;
const OFF_OFF_RSVMAP: usize = 0x10;
const OFF_VERSION: usize = 0x14;
const OFF_LAST_COMP: usize = 0x18;
const OFF_BOOT_CPUID: usize = 0x1c;
const OFF_SIZE_STRINGS: usize = 0x20;
const OFF_SIZE_STRUCT: usize = 0x24;

#[inline]
fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    <[u8; 4]>::try_from(s).ok().map(u32::from_be_bytes)
}

#[inline]
fn be64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    <[u8; 8]>::try_from(s).ok().map(u64::from_be_bytes)
}

/// `fdt_header_size_()`.
fn header_size(version: u32) -> usize {
    match version {
        0 | 1 => FDT_V1_SIZE,
        2 => FDT_V2_SIZE,
        3..=16 => FDT_V3_SIZE,
        _ => FDT_V17_SIZE,
    }
}

/// The validated header: every block lies inside `totalsize`, which lies inside the slice.
struct Header {
    version: u32,
    boot_cpuid_phys: u32,
    totalsize: usize,
    off_rsvmap: usize,
    /// Absolute start and end of the structure block (v < 17: up to `totalsize`).
    struct_start: usize,
    struct_end: usize,
    off_strings: usize,
    size_strings: usize,
}

fn trunc(off: usize, detail: String) -> Error {
    Error::at(ErrorKind::Truncated, off, detail)
}

fn parse_header(blob: &[u8]) -> Result<Header> {
    // fdt_check_full: the buffer holds the v1 header, then the header of its version.
    let field = |off: usize| be32(blob, off).unwrap_or(0);
    if blob.len() < FDT_V1_SIZE {
        return Err(trunc(
            blob.len(),
            format!(
                "blob is {} bytes, shorter than the {FDT_V1_SIZE}-byte v1 header",
                blob.len()
            ),
        ));
    }
    let version = field(OFF_VERSION);
    let hdrsize = header_size(version);
    if blob.len() < hdrsize {
        return Err(trunc(
            blob.len(),
            format!(
                "blob is {} bytes, shorter than the {hdrsize}-byte v{version} header",
                blob.len()
            ),
        ));
    }
    // fdt_check_header.
    let magic = field(0);
    if magic != FDT_MAGIC {
        let detail = if magic == FDT_SW_MAGIC {
            format!(
                "magic {magic:#010x} is libfdt's sequential-write magic: fdt_finish was not called"
            )
        } else {
            format!("magic {magic:#010x}, expected {FDT_MAGIC:#010x}")
        };
        return Err(Error::at(ErrorKind::BadMagic, 0, detail));
    }
    let last_comp = field(OFF_LAST_COMP);
    if version < 2 {
        return Err(Error::at(
            ErrorKind::BadVersion,
            OFF_VERSION,
            format!("version {version} is older than the first supported version 2"),
        ));
    }
    if last_comp > 17 {
        return Err(Error::at(
            ErrorKind::BadVersion,
            OFF_LAST_COMP,
            format!("last_comp_version {last_comp} is newer than the last supported version 17"),
        ));
    }
    if version < last_comp {
        return Err(Error::at(
            ErrorKind::BadVersion,
            OFF_VERSION,
            format!("version {version} is older than its last_comp_version {last_comp}"),
        ));
    }
    if version < 3 {
        return Err(Error::at(
            ErrorKind::BadVersion,
            OFF_VERSION,
            format!("version {version} (no size_dt_strings field) is not supported; 3..=17 are"),
        ));
    }
    let totalsize = field(OFF_TOTALSIZE) as u64;
    if totalsize < hdrsize as u64 || totalsize > INT_MAX {
        return Err(trunc(
            OFF_TOTALSIZE,
            format!("totalsize {totalsize:#x} outside [{hdrsize:#x}, INT32_MAX]"),
        ));
    }
    let off_rsvmap = field(OFF_OFF_RSVMAP) as u64;
    let off_struct = field(OFF_OFF_STRUCT) as u64;
    let off_strings = field(OFF_OFF_STRINGS) as u64;
    let size_strings = field(OFF_SIZE_STRINGS) as u64;
    if !off_rsvmap.is_multiple_of(8) {
        return Err(Error::at(
            ErrorKind::Alignment,
            OFF_OFF_RSVMAP,
            format!("off_mem_rsvmap {off_rsvmap:#x} is not 8-byte aligned"),
        ));
    }
    if !off_struct.is_multiple_of(4) {
        return Err(Error::at(
            ErrorKind::Alignment,
            OFF_OFF_STRUCT,
            format!("off_dt_struct {off_struct:#x} is not 4-byte aligned"),
        ));
    }
    let hdr = hdrsize as u64;
    let inside = |off: u64| off >= hdr && off <= totalsize;
    if !inside(off_rsvmap) {
        return Err(trunc(
            OFF_OFF_RSVMAP,
            format!("off_mem_rsvmap {off_rsvmap:#x} outside [{hdr:#x}, totalsize {totalsize:#x}]"),
        ));
    }
    if !inside(off_struct) {
        return Err(trunc(
            OFF_OFF_STRUCT,
            format!("off_dt_struct {off_struct:#x} outside [{hdr:#x}, totalsize {totalsize:#x}]"),
        ));
    }
    let struct_end = if version >= 17 {
        let size_struct = field(OFF_SIZE_STRUCT) as u64;
        // u64 arithmetic cannot overflow; libfdt's u32 wrap-around also ends past totalsize.
        if off_struct + size_struct > totalsize {
            return Err(trunc(
                OFF_SIZE_STRUCT,
                format!(
                    "structure block {off_struct:#x}+{size_struct:#x} ends past totalsize {totalsize:#x}"
                ),
            ));
        }
        off_struct + size_struct
    } else {
        totalsize
    };
    if !inside(off_strings) {
        return Err(trunc(
            OFF_OFF_STRINGS,
            format!("off_dt_strings {off_strings:#x} outside [{hdr:#x}, totalsize {totalsize:#x}]"),
        ));
    }
    if off_strings + size_strings > totalsize {
        return Err(trunc(
            OFF_SIZE_STRINGS,
            format!(
                "strings block {off_strings:#x}+{size_strings:#x} ends past totalsize {totalsize:#x}"
            ),
        ));
    }
    // fdt_check_full: the buffer holds totalsize bytes.
    if (blob.len() as u64) < totalsize {
        return Err(trunc(
            OFF_TOTALSIZE,
            format!(
                "totalsize {totalsize:#x} exceeds the {:#x} bytes given",
                blob.len()
            ),
        ));
    }
    // All values now fit in usize (<= INT32_MAX).
    Ok(Header {
        version,
        boot_cpuid_phys: field(OFF_BOOT_CPUID),
        totalsize: totalsize as usize,
        off_rsvmap: off_rsvmap as usize,
        struct_start: off_struct as usize,
        struct_end: struct_end as usize,
        off_strings: off_strings as usize,
        size_strings: size_strings as usize,
    })
}

// ---------------------------------------------------------------------------------------------
// The walker

/// What a walk produces.
trait Sink<'a> {
    fn reserve(&mut self, entry: ReserveEntry);
    fn begin(&mut self, name: &'a [u8]);
    fn prop(&mut self, name: &'a [u8], value: &'a [u8]);
    fn end(&mut self);
}

struct NullSink;

impl<'a> Sink<'a> for NullSink {
    #[inline(always)]
    fn reserve(&mut self, _: ReserveEntry) {}
    #[inline(always)]
    fn begin(&mut self, _: &'a [u8]) {}
    #[inline(always)]
    fn prop(&mut self, _: &'a [u8], _: &'a [u8]) {}
    #[inline(always)]
    fn end(&mut self) {}
}

struct TreeSink {
    reserve: Vec<ReserveEntry>,
    stack: Vec<Node>,
    root: Option<Node>,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl<'a> Sink<'a> for TreeSink {
    fn reserve(&mut self, entry: ReserveEntry) {
        self.reserve.push(entry);
    }
    fn begin(&mut self, name: &'a [u8]) {
        self.stack.push(Node::new(lossy(name)));
    }
    fn prop(&mut self, name: &'a [u8], value: &'a [u8]) {
        if let Some(n) = self.stack.last_mut() {
            n.properties.push(Property {
                name: lossy(name),
                value: value.to_vec(),
            });
        }
    }
    fn end(&mut self) {
        if let Some(n) = self.stack.pop() {
            match self.stack.last_mut() {
                Some(parent) => parent.children.push(n),
                None => self.root = Some(n),
            }
        }
    }
}

/// Per-node state for the dtc-level checks.
#[derive(Default)]
struct Frame<'a> {
    props: NameSet<'a>,
    children: NameSet<'a>,
    has_child: bool,
}

/// A set of names: a linear scan while small (most nodes have a handful of properties), a
/// hash set (SipHash, so crafted input cannot force collisions) beyond.
#[derive(Default)]
struct NameSet<'a> {
    few: Vec<&'a [u8]>,
    many: HashSet<&'a [u8]>,
}

impl<'a> NameSet<'a> {
    const FEW: usize = 16;

    /// Adds `name`; false if it was already there.
    fn insert(&mut self, name: &'a [u8]) -> bool {
        if self.many.is_empty() {
            if self.few.contains(&name) {
                return false;
            }
            if self.few.len() < Self::FEW {
                self.few.push(name);
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(name)
    }

    fn clear(&mut self) {
        self.few.clear();
        if !self.many.is_empty() {
            self.many = HashSet::new();
        }
    }
}

const NODECHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+-@";
const PROPCHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+*#?-";

const fn char_table(chars: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] = true;
        i += 1;
    }
    t
}
static NODE_OK: [bool; 256] = char_table(NODECHARS);
static PROP_OK: [bool; 256] = char_table(PROPCHARS);

fn show(name: &[u8]) -> String {
    name.escape_ascii().to_string()
}

fn bad(off: usize, detail: String) -> Error {
    Error::at(ErrorKind::BadStructure, off, detail)
}

/// dtc (and strict) checks of a non-root node name, against its parent's frame.
fn check_node_name<'a>(
    name: &'a [u8],
    off: usize,
    parent: &mut Frame<'a>,
    strict: bool,
) -> Option<Error> {
    if let Some(&c) = name.iter().find(|&&c| !NODE_OK[c as usize]) {
        return Some(bad(
            off,
            format!(
                "node_name_chars: bad character {:?} in node name \"{}\"",
                c as char,
                show(name)
            ),
        ));
    }
    let base_len = name.iter().position(|&c| c == b'@').unwrap_or(name.len());
    if name.iter().filter(|&&c| c == b'@').count() > 1 {
        return Some(bad(
            off,
            format!(
                "node_name_format: multiple '@' characters in node name \"{}\"",
                show(name)
            ),
        ));
    }
    if base_len == 0 {
        return Some(bad(
            off,
            format!("node_name_not_empty: empty node name \"{}\"", show(name)),
        ));
    }
    if !parent.children.insert(name) {
        return Some(bad(
            off,
            format!(
                "duplicate_node_names: duplicate node name \"{}\"",
                show(name)
            ),
        ));
    }
    if strict {
        if base_len > 31 {
            return Some(bad(
                off,
                format!(
                    "node name \"{}\" is {base_len} characters before '@', more than 31",
                    show(name)
                ),
            ));
        }
        if !name[0].is_ascii_alphabetic() {
            return Some(bad(
                off,
                format!("node name \"{}\" does not start with a letter", show(name)),
            ));
        }
    }
    None
}

fn check_prop_name<'a>(
    name: &'a [u8],
    off: usize,
    node: &mut Frame<'a>,
    strict: bool,
) -> Option<Error> {
    if node.has_child {
        return Some(bad(
            off,
            format!(
                "property \"{}\" after subnodes (dtc warns; rejected at this level)",
                show(name)
            ),
        ));
    }
    if let Some(&c) = name.iter().find(|&&c| !PROP_OK[c as usize]) {
        return Some(bad(
            off,
            format!(
                "property_name_chars: bad character {:?} in property name \"{}\"",
                c as char,
                show(name)
            ),
        ));
    }
    if !node.props.insert(name) {
        return Some(bad(
            off,
            format!(
                "duplicate_property_names: duplicate property name \"{}\"",
                show(name)
            ),
        ));
    }
    if strict && (name.is_empty() || name.len() > 31) {
        return Some(bad(
            off,
            format!(
                "property name \"{}\" is {} characters, not 1..=31",
                show(name),
                name.len()
            ),
        ));
    }
    None
}

/// Walks the reservation map and the structure block of a blob whose header passed
/// [`parse_header`], reporting to `sink`.
fn walk<'a, S: Sink<'a>>(
    blob: &'a [u8],
    h: &Header,
    validation: Validation,
    sink: &mut S,
) -> Result<()> {
    let blob = blob
        .get(..h.totalsize)
        .ok_or_else(|| trunc(OFF_TOTALSIZE, "totalsize exceeds the blob".into()))?;

    // fdt_num_mem_rsv: stop at the first entry whose size is 0.
    let mut at = h.off_rsvmap;
    loop {
        let (Some(address), Some(size)) = (
            be64(blob, at),
            at.checked_add(8).and_then(|o| be64(blob, o)),
        ) else {
            return Err(trunc(
                at,
                format!(
                    "memory reservation map at {:#x} not terminated before totalsize {:#x}",
                    h.off_rsvmap, h.totalsize
                ),
            ));
        };
        if size == 0 {
            break;
        }
        sink.reserve(ReserveEntry { address, size });
        at += 16;
    }

    let s = blob
        .get(h.struct_start..h.struct_end)
        .ok_or_else(|| trunc(OFF_OFF_STRUCT, "structure block outside the blob".into()))?;
    let base = h.struct_start;
    let old = h.version < 16;
    let v17 = h.version >= 17;
    let dtc = validation != Validation::Structural;
    let strict = validation == Validation::Strict;

    let mut frames: Vec<Frame<'a>> = Vec::new();
    let mut pending: Option<Error> = None;
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut expect_end = false;
    let mut off = 0usize;

    loop {
        let tag_at = base + off;
        let Some(tag) = be32(s, off) else {
            return Err(trunc(
                tag_at,
                format!(
                    "structure block ends at {:#x} before a token (no FDT_END)",
                    base + s.len()
                ),
            ));
        };
        let mut next = off + 4;
        // fdt_next_tag: decode the token's payload.
        let mut name: &[u8] = &[];
        let mut prop: Option<(u32, &'a [u8])> = None;
        match tag {
            FDT_BEGIN_NODE => {
                let rest = s.get(next..).unwrap_or(&[]);
                let Some(n) = rest.iter().position(|&c| c == 0) else {
                    return Err(bad(
                        tag_at,
                        "node name not NUL-terminated before the end of the structure block".into(),
                    ));
                };
                name = &rest[..n];
                next += n + 1;
            }
            FDT_PROP => {
                let Some(len) = be32(s, next) else {
                    return Err(bad(
                        tag_at,
                        "property header runs past the structure block".into(),
                    ));
                };
                if len as u64 + next as u64 >= INT_MAX {
                    return Err(bad(
                        tag_at,
                        format!("property length {len:#x} overflows INT32_MAX"),
                    ));
                }
                let mut vstart = next + 8;
                if old && len >= 8 && !vstart.is_multiple_of(8) {
                    vstart += 4;
                }
                let vend = vstart + len as usize;
                let (Some(nameoff), Some(value)) = (be32(s, next + 4), s.get(vstart..vend)) else {
                    return Err(bad(
                        tag_at,
                        format!("property of length {len:#x} runs past the structure block"),
                    ));
                };
                prop = Some((nameoff, value));
                next = vend;
            }
            FDT_END | FDT_END_NODE | FDT_NOP => {}
            _ => return Err(bad(tag_at, format!("unknown token {tag:#010x}"))),
        }
        off = (next + 3) & !3;

        // fdt_check_full.
        if expect_end && tag != FDT_END && tag != FDT_NOP {
            return Err(bad(
                tag_at,
                format!("token {tag:#x} after the root node (second root?)"),
            ));
        }
        match tag {
            FDT_NOP => {}
            FDT_END => {
                if depth != 0 {
                    return Err(bad(
                        tag_at,
                        format!("FDT_END inside a node at depth {depth}"),
                    ));
                }
                if !seen_root {
                    return Err(bad(tag_at, "structure block holds no root node".into()));
                }
                return match pending {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
            FDT_BEGIN_NODE => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(bad(tag_at, format!("nesting deeper than {MAX_DEPTH}")));
                }
                if old {
                    match name.iter().rposition(|&c| c == b'/') {
                        Some(i) => name = &name[i + 1..],
                        None if depth == 1 => {
                            return Err(bad(tag_at, "pre-v16 root name is not a path".into()))
                        }
                        None => {}
                    }
                }
                if depth == 1 {
                    if !name.is_empty() {
                        return Err(bad(tag_at, format!("root node named \"{}\"", show(name))));
                    }
                    seen_root = true;
                } else if dtc && pending.is_none() {
                    if let Some(parent) = frames.get_mut(depth - 2) {
                        parent.has_child = true;
                        pending = check_node_name(name, tag_at, parent, strict);
                    }
                }
                if dtc {
                    if let Some(f) = frames.get_mut(depth - 1) {
                        f.props.clear();
                        f.children.clear();
                        f.has_child = false;
                    } else {
                        frames.push(Frame::default());
                    }
                }
                sink.begin(name);
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(bad(tag_at, "FDT_END_NODE outside any node".into()));
                }
                depth -= 1;
                if depth == 0 {
                    expect_end = true;
                }
                sink.end();
            }
            FDT_PROP => {
                let Some((nameoff, value)) = prop else {
                    return Err(Error::new(ErrorKind::Internal, "property without payload"));
                };
                if depth == 0 {
                    return Err(bad(tag_at, "property outside any node".into()));
                }
                let pname = get_string(blob, h, v17, nameoff, tag_at)?;
                if dtc && pending.is_none() {
                    if let Some(f) = frames.get_mut(depth - 1) {
                        pending = check_prop_name(pname, tag_at, f, strict);
                    }
                }
                sink.prop(pname, value);
            }
            _ => return Err(Error::new(ErrorKind::Internal, "unreachable token")),
        }
    }
}

/// `fdt_get_string`: the NUL-terminated name at `nameoff` of the strings block.
#[inline]
fn get_string<'a>(
    blob: &'a [u8],
    h: &Header,
    v17: bool,
    nameoff: u32,
    tag_at: usize,
) -> Result<&'a [u8]> {
    let abs = h.off_strings as u64 + nameoff as u64;
    if abs >= h.totalsize as u64
        || nameoff > i32::MAX as u32
        || (v17 && nameoff as usize >= h.size_strings)
    {
        return Err(Error::at(
            ErrorKind::BadOffset,
            tag_at,
            format!(
                "property nameoff {nameoff:#x} outside the strings block ({:#x} bytes)",
                h.size_strings
            ),
        ));
    }
    let abs = abs as usize;
    let end = if v17 {
        h.off_strings + h.size_strings
    } else {
        h.totalsize
    };
    let bytes = blob.get(abs..end).unwrap_or(&[]);
    match bytes.iter().position(|&c| c == 0) {
        Some(n) => Ok(&bytes[..n]),
        None => Err(trunc(
            tag_at,
            format!("property name at nameoff {nameoff:#x} has no NUL before the end of the strings block"),
        )),
    }
}
