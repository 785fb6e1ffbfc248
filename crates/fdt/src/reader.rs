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
//!
//! Steps 1 to 7 are `header`'s, 8 and 9 `walk`'s; the `Dtc` and `Strict` name checks are
//! `checks`'.
use crate::{Error, ErrorKind, Node, Property, ReserveEntry, Result, Validation};

mod checks;
mod header;
mod walk;

use header::parse_header;
use walk::walk;

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
// Reads and errors shared by the header and the walk

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

fn trunc(off: usize, detail: String) -> Error {
    Error::at(ErrorKind::Truncated, off, detail)
}

fn bad(off: usize, detail: String) -> Error {
    Error::at(ErrorKind::BadStructure, off, detail)
}

fn show(name: &[u8]) -> String {
    name.escape_ascii().to_string()
}

// ---------------------------------------------------------------------------------------------
// What a walk reports to: nothing (`check`) or a tree (`decode`)

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
