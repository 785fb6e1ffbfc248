//! The sequential writer (libfdt `fdt_sw.c` semantics) and tree encoding.
use crate::Error;
use crate::{
    ErrorKind, Layout, Node, ReserveEntry, Result, FDT_BEGIN_NODE, FDT_END, FDT_END_NODE,
    FDT_MAGIC, FDT_PROP, MAX_DEPTH,
};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Options of a writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterOptions {
    /// Block layout and string order.
    pub layout: Layout,
    /// Largest `totalsize` allowed (`fdt_create(buf, bufsize)`'s buffer); exceeding it is
    /// `FDT_ERR_NOSPACE`. `None`: unbounded (up to libfdt's INT32_MAX).
    pub max_size: Option<usize>,
    /// `FDT_CREATE_FLAG_NO_NAME_DEDUP`: store every property name anew.
    pub no_name_dedup: bool,
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
}

/// libfdt's limit on `totalsize` (`fdt_create` takes an `int`).
const INT_MAX: usize = i32::MAX as usize;
/// `FDT_ALIGN(sizeof(struct fdt_header), sizeof(struct fdt_reserve_entry))`.
const LIBFDT_HEADER: usize = 0x30;
/// `ALIGN(sizeof(struct fdt_header), 8)` as dtc lays it out.
const DTC_HEADER: usize = 0x28;
/// `struct fdt_reserve_entry`.
const RSV_ENTRY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reservation entries may be added; no node yet.
    MemRsv,
    /// The root is open (`depth >= 1`).
    Struct,
    /// The root has been closed; only `finish` is allowed.
    Closed,
}

/// A sequential writer: reservation entries, then `begin_node` / properties / `end_node`, then
/// `finish`, producing exactly the bytes of libfdt's sequential-write API or of dtc.
///
/// # Byte layout
///
/// - [`Layout::Libfdt`]: what `fdt_create()` .. `fdt_finish()` leave in the buffer: a 0x30-byte
///   header region (`FDT_ALIGN(40, 16)`), the reservation map at 0x30, the structure block right
///   after it (0x40 with an empty map), then the strings block in **reverse insertion order**
///   (libfdt grows strings downwards from the end of its buffer), `totalsize` exact (no trailing
///   free space), `version` 17, `last_comp_version` 16.
/// - [`Layout::Dtc`]: what `dtc -I dts -O dtb` writes: 40-byte header, reservation map at 0x28,
///   structure block, then strings in first-use order.
///
/// # Property-name de-duplication
///
/// Both tools share names by suffix: a name may point into the middle of a longer stored name
/// (`size-cells` inside `#size-cells`). When several stored names end with the wanted name, the
/// tools differ in which occurrence they pick, and this writer reproduces each exactly:
///
/// - libfdt (`fdt_find_string_len_`) scans its table from the lowest address, which is the
///   **most recently added** name: the newest stored name ending with the wanted name wins;
/// - dtc (`stringtable_insert`) scans from offset 0: the **oldest** one wins.
///
/// Instead of the tools' linear scans (quadratic over a whole tree), the stored names are kept
/// reversed in a compressed trie whose nodes know the newest (libfdt) or oldest (dtc) name
/// below them, so finding or adding a name costs time linear in its length and memory stays
/// proportional to the number of distinct names; repeated names are found through an
/// exact-name hash map. (20,000 distinct 20-byte names: ~5 ms in release; libfdt itself needs
/// ~11 s.) [`WriterOptions::no_name_dedup`] (`FDT_CREATE_FLAG_NO_NAME_DEDUP`) stores every name anew.
///
/// # States and errors
///
/// Like libfdt (`tests/sw_states.c`), calls in the wrong state fail with `FDT_ERR_BADSTATE`, and
/// a failing call changes nothing (the writer stays usable). This writer is stricter than libfdt
/// where libfdt would silently produce a blob that `fdt_check_full` or dtc reject:
///
/// | call | error |
/// |---|---|
/// | `add_reservemap_entry` after the first `begin_node` | `FDT_ERR_BADSTATE` |
/// | reservation with size 0, or `address + size` past `u64::MAX` | `FDT_ERR_BADVALUE` |
/// | property before the root's `begin_node`, or after the root closed | `FDT_ERR_BADSTATE` |
/// | property after a subnode of the same node (libfdt does not check this; vm-fdt's `PropertyAfterEndNode`) | `FDT_ERR_BADSTATE` |
/// | `end_node` with no open node | `FDT_ERR_BADSTATE` |
/// | `begin_node` after the root closed (a second root) | `FDT_ERR_BADSTATE` |
/// | `finish` with open nodes or without a root | `FDT_ERR_BADSTATE` |
/// | a root (first node) with a non-empty name | `FDT_ERR_BADSTRUCTURE` |
/// | nesting deeper than [`crate::MAX_DEPTH`] (the root is depth 1), which the decoder rejects | `FDT_ERR_BADSTRUCTURE` |
/// | a node or property name, or a string value, containing NUL | `FDT_ERR_BADVALUE` |
/// | `totalsize` would exceed [`WriterOptions::max_size`] or `i32::MAX` | `FDT_ERR_NOSPACE` |
///
/// Space is checked as libfdt checks its fixed buffer: the call that would make the blob
/// (header region + reservation map + structure block so far + strings so far; `finish` adds the
/// 4-byte `FDT_END`) larger than `max_size` fails, so a blob that fits is exactly as large as
/// libfdt's `fdt_totalsize()` after `fdt_finish()`.
///
/// Names are otherwise not validated, as in libfdt: KHO's numeric node names (`"0"`, `"42"`),
/// long names and any characters other than NUL are accepted.
///
/// Padding bytes are always zero. (libfdt relies on `fdt_create` having zeroed its buffer; only
/// after a failed call that had to roll back a new name can libfdt leave stale bytes in later
/// padding. This writer never does.)
#[derive(Debug, Clone)]
pub struct FdtWriter {
    options: WriterOptions,
    /// `min(max_size, INT_MAX)`.
    limit: usize,
    /// Size of the header region before the reservation map.
    header: usize,
    /// Header region, reservation map (terminator appended at the first `begin_node`) and
    /// structure block: the blob's first part, patched at `finish`.
    buf: Vec<u8>,
    /// Offset of the structure block in `buf` (valid from the first `begin_node`).
    struct_off: usize,
    state: State,
    /// Open nodes.
    depth: usize,
    /// The innermost open node already has a subnode.
    subnode_seen: bool,
    strings: StringTable,
    /// Libfdt layout: positions in `buf` of `nameoff` fields that hold a distance from the end
    /// of the (reversed) strings table, resolved at `finish` like libfdt's own fix-up walk.
    nameoff_fixups: Vec<u32>,
    /// Placeholders: (value position in `buf`, length).
    placeholders: Vec<(usize, usize)>,
}

fn err(kind: ErrorKind, detail: impl Into<String>) -> Error {
    Error::new(kind, detail)
}

#[inline]
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.as_bytes().contains(&0) {
        return Err(err(
            ErrorKind::BadValue,
            format!("{what} name {name:?} contains a NUL byte"),
        ));
    }
    Ok(())
}

impl FdtWriter {
    /// A writer with the given options.
    pub fn new(options: WriterOptions) -> Self {
        let header = match options.layout {
            Layout::Libfdt => LIBFDT_HEADER,
            Layout::Dtc => DTC_HEADER,
        };
        let limit = options.max_size.map_or(INT_MAX, |m| m.min(INT_MAX));
        FdtWriter {
            options,
            limit,
            header,
            buf: vec![0; header],
            struct_off: 0,
            state: State::MemRsv,
            depth: 0,
            subnode_seen: false,
            strings: StringTable::new(options.layout, options.no_name_dedup),
            nameoff_fixups: Vec::new(),
            placeholders: Vec::new(),
        }
    }

    /// The options this writer was created with.
    pub fn options(&self) -> &WriterOptions {
        &self.options
    }

    /// The blob size so far: header region, reservation map, structure block and strings,
    /// without the 4-byte `FDT_END` (and, before the first `begin_node`, without the 16-byte
    /// reservation-map terminator) that are still to come.
    pub fn size(&self) -> usize {
        self.buf.len() + self.strings.len()
    }

    /// `FDT_ERR_NOSPACE` unless `extra` more bytes fit under the cap.
    fn ensure(&self, extra: usize) -> Result<()> {
        let total = self.size().checked_add(extra);
        match total {
            Some(t) if t <= self.limit => Ok(()),
            _ => Err(err(
                ErrorKind::NoSpace,
                format!(
                    "blob would grow from {} to {} bytes, over the {}-byte limit",
                    self.size(),
                    total.map_or_else(|| "more than usize::MAX".to_string(), |t| t.to_string()),
                    self.limit
                ),
            )),
        }
    }

    /// `fdt_add_reservemap_entry`: only before the first `begin_node`.
    pub fn add_reservemap_entry(&mut self, entry: ReserveEntry) -> Result<()> {
        if self.state != State::MemRsv {
            return Err(err(
                ErrorKind::BadState,
                "reservation entries must be added before the first begin_node",
            ));
        }
        if entry.size == 0 {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "reservation at {:#x} has size 0 (it would end the map)",
                    entry.address
                ),
            ));
        }
        if entry.address.checked_add(entry.size).is_none() {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "reservation {:#x}+{:#x} overflows the 64-bit address space",
                    entry.address, entry.size
                ),
            ));
        }
        self.ensure(RSV_ENTRY)?;
        self.buf.extend_from_slice(&entry.address.to_be_bytes());
        self.buf.extend_from_slice(&entry.size.to_be_bytes());
        Ok(())
    }

    /// `fdt_begin_node` (the first call also does `fdt_finish_reservemap`).
    pub fn begin_node(&mut self, name: &str) -> Result<()> {
        match self.state {
            State::Closed => {
                return Err(err(
                    ErrorKind::BadState,
                    format!("begin_node({name:?}) after the root node was closed (a second root)"),
                ))
            }
            State::MemRsv if !name.is_empty() => {
                return Err(err(
                    ErrorKind::BadStructure,
                    format!("the root node must have an empty name, not {name:?}"),
                ))
            }
            _ => {}
        }
        check_name("node", name)?;
        if self.depth >= MAX_DEPTH {
            return Err(err(
                ErrorKind::BadStructure,
                format!("node {name:?} would nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        let rsv_end = if self.state == State::MemRsv {
            RSV_ENTRY
        } else {
            0
        };
        let node_len = 4 + align4(name.len() + 1);
        self.ensure(rsv_end + node_len)?;
        if self.state == State::MemRsv {
            self.buf.extend_from_slice(&[0; RSV_ENTRY]);
            self.struct_off = self.buf.len();
            self.state = State::Struct;
        }
        let buf = &mut self.buf;
        buf.reserve(node_len);
        buf.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
        buf.extend_from_slice(name.as_bytes());
        let pad = node_len - 4 - name.len();
        buf.extend_from_slice(&[0u8; 4][..pad]);
        self.depth += 1;
        self.subnode_seen = false;
        Ok(())
    }

    /// `fdt_end_node`.
    pub fn end_node(&mut self) -> Result<()> {
        if self.state != State::Struct || self.depth == 0 {
            return Err(err(ErrorKind::BadState, "end_node without an open node"));
        }
        self.ensure(4)?;
        self.buf.extend_from_slice(&FDT_END_NODE.to_be_bytes());
        self.depth -= 1;
        // The parent now has a subnode.
        self.subnode_seen = true;
        if self.depth == 0 {
            self.state = State::Closed;
        }
        Ok(())
    }

    /// Writes an `FDT_PROP` with a value made of `parts` then `zeroes` zero bytes; returns the
    /// value's position in `buf`.
    fn emit(&mut self, name: &str, parts: &[&[u8]], zeroes: usize) -> Result<usize> {
        match self.state {
            State::MemRsv => {
                return Err(err(
                    ErrorKind::BadState,
                    format!("property {name:?} before the root node was begun"),
                ))
            }
            State::Closed => {
                return Err(err(
                    ErrorKind::BadState,
                    format!("property {name:?} after the root node was closed"),
                ))
            }
            State::Struct => {}
        }
        if self.subnode_seen {
            return Err(err(
                ErrorKind::BadState,
                format!("property {name:?} after a subnode of the same node"),
            ));
        }
        check_name("property", name)?;
        let len = parts.iter().fold(zeroes, |a, p| a.saturating_add(p.len()));
        let found = self.strings.lookup(name.as_bytes());
        let new_string = if found.is_some() { 0 } else { name.len() + 1 };
        let prop_len = 12usize.saturating_add(align4(len.min(INT_MAX)));
        self.ensure(prop_len.saturating_add(new_string))?;
        // Both fit under INT_MAX now.
        let nameoff = match found {
            Some(off) => off,
            None => self.strings.insert(name.as_bytes()),
        };
        let buf = &mut self.buf;
        buf.reserve(prop_len);
        buf.extend_from_slice(&FDT_PROP.to_be_bytes());
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        if self.strings.layout == Layout::Libfdt {
            self.nameoff_fixups.push(buf.len() as u32);
        }
        buf.extend_from_slice(&nameoff.to_be_bytes());
        let pos = buf.len();
        for p in parts {
            buf.extend_from_slice(p);
        }
        buf.resize(buf.len() + zeroes + (align4(len) - len), 0);
        Ok(pos)
    }

    /// `fdt_property`: raw bytes.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.emit(name, &[value], 0).map(|_| ())
    }

    /// `fdt_property(fdt, name, NULL, 0)`: an empty (boolean) property.
    pub fn property_empty(&mut self, name: &str) -> Result<()> {
        self.emit(name, &[], 0).map(|_| ())
    }

    /// `fdt_property_u32`: one big-endian cell.
    pub fn property_u32(&mut self, name: &str, v: u32) -> Result<()> {
        self.emit(name, &[&v.to_be_bytes()], 0).map(|_| ())
    }

    /// `fdt_property_u64`: big-endian, most significant cell first.
    pub fn property_u64(&mut self, name: &str, v: u64) -> Result<()> {
        self.emit(name, &[&v.to_be_bytes()], 0).map(|_| ())
    }

    /// Big-endian cells (`fdt_property_cell` for one).
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<()> {
        let mut v = Vec::with_capacity(cells.len() * 4);
        for c in cells {
            v.extend_from_slice(&c.to_be_bytes());
        }
        self.emit(name, &[&v], 0).map(|_| ())
    }

    /// `fdt_property_string`: the string and its NUL; `FDT_ERR_BADVALUE` if it holds a NUL.
    pub fn property_string(&mut self, name: &str, s: &str) -> Result<()> {
        if s.as_bytes().contains(&0) {
            return Err(err(
                ErrorKind::BadValue,
                format!("string value of property {name:?} contains a NUL byte"),
            ));
        }
        self.emit(name, &[s.as_bytes(), &[0]], 0).map(|_| ())
    }

    /// A string list: each string with its NUL; `FDT_ERR_BADVALUE` if one holds a NUL.
    pub fn property_string_list(&mut self, name: &str, list: &[&str]) -> Result<()> {
        let v = crate::value::string_list(list).ok_or_else(|| {
            err(
                ErrorKind::BadValue,
                format!("a string of property {name:?}'s list contains a NUL byte"),
            )
        })?;
        self.emit(name, &[&v], 0).map(|_| ())
    }

    /// A little-endian u32, as KHO writes native values on x86 and arm64.
    pub fn property_u32_le(&mut self, name: &str, v: u32) -> Result<()> {
        self.emit(name, &[&v.to_le_bytes()], 0).map(|_| ())
    }

    /// A little-endian u64, as KHO writes native values on x86 and arm64.
    pub fn property_u64_le(&mut self, name: &str, v: u64) -> Result<()> {
        self.emit(name, &[&v.to_le_bytes()], 0).map(|_| ())
    }

    /// `fdt_property_placeholder`: a property of `len` zero bytes to be filled later with
    /// [`fill_placeholder`](Self::fill_placeholder) (before `finish`). Returns the handle.
    pub fn property_placeholder(&mut self, name: &str, len: usize) -> Result<usize> {
        let pos = self.emit(name, &[], len)?;
        self.placeholders.push((pos, len));
        Ok(self.placeholders.len() - 1)
    }

    /// Writes `data` at the start of a placeholder's value; the rest of it stays zero.
    /// `FDT_ERR_BADOFFSET` for an unknown handle, `FDT_ERR_BADVALUE` if `data` is longer than
    /// the placeholder.
    pub fn fill_placeholder(&mut self, handle: usize, data: &[u8]) -> Result<()> {
        let &(pos, len) = self.placeholders.get(handle).ok_or_else(|| {
            err(
                ErrorKind::BadOffset,
                format!("no placeholder with handle {handle}"),
            )
        })?;
        if data.len() > len {
            return Err(err(
                ErrorKind::BadValue,
                format!(
                    "{} bytes do not fit in a {len}-byte placeholder",
                    data.len()
                ),
            ));
        }
        self.buf[pos..pos + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// `fdt_finish`: the blob.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        match self.state {
            State::Closed => {}
            State::MemRsv => return Err(err(ErrorKind::BadState, "finish without a root node")),
            State::Struct => {
                return Err(err(
                    ErrorKind::BadState,
                    format!("finish with {} node(s) still open", self.depth),
                ))
            }
        }
        self.ensure(4)?;
        self.buf.extend_from_slice(&FDT_END.to_be_bytes());
        let off_strings = self.buf.len();
        let size_strings = self.strings.len();
        let size_struct = off_strings - self.struct_off;
        let total = off_strings + size_strings;
        self.buf.reserve_exact(size_strings);
        match self.strings.layout {
            Layout::Dtc => self.buf.extend_from_slice(&self.strings.bytes),
            Layout::Libfdt => {
                // Names were stored oldest first; libfdt's table has the newest first. Names
                // hold no NUL, so the NULs delimit them.
                for s in self.strings.bytes.split_inclusive(|&b| b == 0).rev() {
                    self.buf.extend_from_slice(s);
                }
                for &at in &self.nameoff_fixups {
                    let at = at as usize;
                    let d = u32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap());
                    let off = (size_strings as u32).wrapping_sub(d);
                    self.buf[at..at + 4].copy_from_slice(&off.to_be_bytes());
                }
            }
        }
        debug_assert_eq!(self.buf.len(), total);
        let header = [
            FDT_MAGIC,
            total as u32,
            self.struct_off as u32,
            off_strings as u32,
            self.header as u32,
            17,
            16,
            self.options.boot_cpuid_phys,
            size_strings as u32,
            size_struct as u32,
        ];
        for (i, v) in header.iter().enumerate() {
            self.buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
        }
        Ok(self.buf)
    }
}

/// Encodes a tree (root name must be empty) with the writer's exact byte layout: the same bytes
/// as `add_reservemap_entry` for each of `reserve`, then `begin_node` / properties / children /
/// `end_node` depth first, then `finish`.
pub fn encode(root: &Node, options: WriterOptions, reserve: &[ReserveEntry]) -> Result<Vec<u8>> {
    if !root.name.is_empty() {
        return Err(err(
            ErrorKind::BadStructure,
            format!("the root node must have an empty name, not {:?}", root.name),
        ));
    }
    let mut w = FdtWriter::new(options);
    for r in reserve {
        w.add_reservemap_entry(*r)?;
    }
    fn emit(w: &mut FdtWriter, n: &Node) -> Result<()> {
        w.begin_node(&n.name)?;
        for p in &n.properties {
            w.property(&p.name, &p.value)?;
        }
        // begin_node bounds the depth, so this recursion is at most MAX_DEPTH deep.
        for c in &n.children {
            emit(w, c)?;
        }
        w.end_node()
    }
    emit(&mut w, root)?;
    w.finish()
}

// ---------------------------------------------------------------------------------------------
// The strings table.

/// A fast seeded hasher for the exact-name cache (keys are short byte strings).
#[derive(Clone, Copy)]
struct NameHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = (h ^ u64::from_le_bytes(c.try_into().unwrap()))
                .wrapping_mul(K)
                .rotate_left(31);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
        }
        self.0 = h;
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(K);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
}

#[derive(Clone, Copy, Debug)]
struct NameHasherBuilder(u64);

impl BuildHasher for NameHasherBuilder {
    type Hasher = NameHasher;
    fn build_hasher(&self) -> NameHasher {
        NameHasher(self.0)
    }
}

fn random_u64(salt: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

const NONE: u32 = u32::MAX;

/// A node of the trie of reversed names: the position `depth` characters from the end of every
/// name in its subtree. Its incoming edge holds the characters at depths `parent.depth ..
/// depth`, read from the name `label`.
#[derive(Debug, Clone, Copy)]
struct TrieNode {
    /// A stored name whose reversal runs through this node.
    label: u32,
    /// Characters from the end of the names at the bottom of the node.
    depth: u32,
    /// First child, and next sibling in the parent's list.
    child: u32,
    sibling: u32,
    /// The stored name the tool picks for a suffix ending on this node's edge: the newest name
    /// in the subtree (libfdt), or the oldest (dtc).
    best: u32,
    /// The edge's first character (at depth `parent.depth`).
    first: u8,
}

/// The strings table with libfdt's / dtc's exact suffix-sharing rules in linear time.
///
/// Every stored name is inserted reversed into a compressed trie, so a wanted name is a suffix
/// of a stored one exactly when its reversal is a path from the root; each node knows which
/// stored name below it the tool would pick. Memory is proportional to the number of names,
/// lookups and insertions to the name's length (plus sibling scans at branch points).
#[derive(Debug, Clone)]
struct StringTable {
    layout: Layout,
    dedup: bool,
    /// Stored names with their NULs, oldest first (dtc's block; libfdt's reversed at finish).
    bytes: Vec<u8>,
    /// (start in `bytes`, length without NUL) of each stored name.
    names: Vec<(u32, u32)>,
    /// The trie; node 0 is the root (the empty suffix).
    nodes: Vec<TrieNode>,
    /// Exact names looked up so far → the trie node on whose edge they end (re-found if a
    /// split has shortened that node since).
    cache: HashMap<Box<[u8]>, u32, NameHasherBuilder>,
}

impl StringTable {
    fn new(layout: Layout, no_dedup: bool) -> Self {
        let root = TrieNode {
            label: NONE,
            depth: 0,
            child: NONE,
            sibling: NONE,
            best: NONE,
            first: 0,
        };
        StringTable {
            layout,
            dedup: !no_dedup,
            bytes: Vec::new(),
            names: Vec::new(),
            nodes: vec![root],
            cache: HashMap::with_hasher(NameHasherBuilder(random_u64(2))),
        }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The character `t` places from the end of stored name `k`.
    #[inline]
    fn rev_char(&self, k: u32, t: u32) -> u8 {
        let (start, len) = self.names[k as usize];
        self.bytes[(start + len - 1 - t) as usize]
    }

    /// The child of `n` whose edge starts with `c`.
    #[inline]
    fn child(&self, n: u32, c: u8) -> Option<u32> {
        let mut ch = self.nodes[n as usize].child;
        while ch != NONE {
            let node = &self.nodes[ch as usize];
            if node.first == c {
                return Some(ch);
            }
            ch = node.sibling;
        }
        None
    }

    /// The `nameoff` value for a suffix of length `m` ending on node `n`'s edge.
    #[inline]
    fn off_of(&self, n: u32, m: usize) -> u32 {
        let (start, len) = self.names[self.nodes[n as usize].best as usize];
        match self.layout {
            // Distance from the end of libfdt's reversed table: the name's end (with its NUL)
            // minus the suffix's start within it.
            Layout::Libfdt => start + 1 + m as u32,
            Layout::Dtc => start + len - m as u32,
        }
    }

    /// Walks `name` reversed from the root: the node on whose edge it ends, or `None`.
    fn find(&self, name: &[u8]) -> Option<u32> {
        let m = name.len() as u32;
        if self.names.is_empty() {
            return None;
        }
        let mut n = 0u32;
        loop {
            let d = self.nodes[n as usize].depth;
            if m <= d {
                return Some(n);
            }
            let ch = self.child(n, name[(m - 1 - d) as usize])?;
            let node = self.nodes[ch as usize];
            for t in d + 1..node.depth.min(m) {
                if self.rev_char(node.label, t) != name[(m - 1 - t) as usize] {
                    return None;
                }
            }
            n = ch;
        }
    }

    /// The `nameoff` value (final for dtc, a distance from the end for libfdt) a property named
    /// `name` would get without adding a string, or `None` if it must be added.
    fn lookup(&mut self, name: &[u8]) -> Option<u32> {
        if !self.dedup {
            return None;
        }
        let m = name.len() as u32;
        if let Some(&n) = self.cache.get(name) {
            if m <= self.nodes[n as usize].depth {
                return Some(self.off_of(n, name.len()));
            }
            // The node was split since; the name is still in the trie (it only grows).
            let n = self.find(name)?;
            if let Some(c) = self.cache.get_mut(name) {
                *c = n;
            }
            return Some(self.off_of(n, name.len()));
        }
        let n = self.find(name)?;
        self.cache.insert(name.into(), n);
        Some(self.off_of(n, name.len()))
    }

    fn push_node(&mut self, node: TrieNode) -> u32 {
        self.nodes.push(node);
        (self.nodes.len() - 1) as u32
    }

    /// Appends `name` (not found by `lookup`) and returns its `nameoff` value, adding it to the
    /// trie.
    fn insert(&mut self, name: &[u8]) -> u32 {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name);
        self.bytes.push(0);
        let m = name.len() as u32;
        let k = self.names.len() as u32;
        self.names.push((start, m));
        let libfdt = self.layout == Layout::Libfdt;
        let off = if libfdt { start + 1 + m } else { start };
        if !self.dedup {
            return off;
        }
        // libfdt picks the newest name: every node on the path gets this one; dtc the oldest:
        // only new nodes do (a split's lower half inherits).
        let mut n = 0u32;
        loop {
            let node = &mut self.nodes[n as usize];
            if libfdt || node.best == NONE {
                node.best = k;
            }
            let d = node.depth;
            if m <= d {
                // Only the empty name, into an empty table.
                break;
            }
            let c = name[(m - 1 - d) as usize];
            let Some(ch) = self.child(n, c) else {
                let leaf = TrieNode {
                    label: k,
                    depth: m,
                    child: NONE,
                    sibling: self.nodes[n as usize].child,
                    best: k,
                    first: c,
                };
                let leaf = self.push_node(leaf);
                self.nodes[n as usize].child = leaf;
                n = leaf;
                break;
            };
            let node = self.nodes[ch as usize];
            let end = node.depth.min(m);
            let mut t = d + 1;
            while t < end && self.rev_char(node.label, t) == name[(m - 1 - t) as usize] {
                t += 1;
            }
            if t >= m {
                // The name ends on this edge: it was stored already (lookup prevents this).
                n = ch;
                break;
            }
            if t < node.depth {
                // Split `ch` at depth t (t < m: the name was not found). `ch` keeps the upper
                // part, so cached nodes stay at or above where their names end.
                let lower = TrieNode {
                    first: self.rev_char(node.label, t),
                    sibling: NONE,
                    ..node
                };
                let lower = self.push_node(lower);
                let leaf = TrieNode {
                    label: k,
                    depth: m,
                    child: NONE,
                    sibling: lower,
                    best: k,
                    first: name[(m - 1 - t) as usize],
                };
                let leaf = self.push_node(leaf);
                let upper = &mut self.nodes[ch as usize];
                upper.depth = t;
                upper.child = leaf;
                if libfdt {
                    upper.best = k;
                }
                n = leaf;
                break;
            }
            // The whole edge matched and the name goes on below.
            n = ch;
        }
        self.cache.insert(name.into(), n);
        off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(layout: Layout) -> WriterOptions {
        WriterOptions {
            layout,
            ..Default::default()
        }
    }

    /// The strings block and the nameoffs of properties `names` on an otherwise empty root.
    fn strings_of(layout: Layout, names: &[&str]) -> (Vec<u8>, Vec<u32>) {
        let mut w = FdtWriter::new(opts(layout));
        w.begin_node("").unwrap();
        for n in names {
            w.property_empty(n).unwrap();
        }
        w.end_node().unwrap();
        let b = w.finish().unwrap();
        let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
        let (off_struct, off_str, size_str) = (be(8), be(12), be(32));
        let offs = (0..names.len())
            .map(|i| be(off_struct + 8 + 12 * i + 8) as u32)
            .collect();
        (b[off_str..off_str + size_str].to_vec(), offs)
    }

    /// Straightforward models of the tools' linear scans.
    fn model(layout: Layout, names: &[&str]) -> (Vec<u8>, Vec<u32>) {
        match layout {
            Layout::Dtc => {
                let mut t: Vec<u8> = Vec::new();
                let offs = names
                    .iter()
                    .map(|n| {
                        let n = n.as_bytes();
                        for i in 0..t.len() {
                            let rest = &t[i..];
                            let e = rest.iter().position(|&b| b == 0).unwrap();
                            if &rest[..e] == n {
                                return i as u32;
                            }
                        }
                        let o = t.len();
                        t.extend_from_slice(n);
                        t.push(0);
                        o as u32
                    })
                    .collect();
                (t, offs)
            }
            Layout::Libfdt => {
                // Table newest first; offsets relative to its end, fixed at the end.
                let mut t: Vec<u8> = Vec::new();
                let neg: Vec<usize> = names
                    .iter()
                    .map(|n| {
                        let n = n.as_bytes();
                        if t.len() > n.len() {
                            for p in 0..=t.len() - (n.len() + 1) {
                                if &t[p..p + n.len()] == n && t[p + n.len()] == 0 {
                                    return t.len() - p;
                                }
                            }
                        }
                        let mut nt = n.to_vec();
                        nt.push(0);
                        nt.extend_from_slice(&t);
                        t = nt;
                        t.len()
                    })
                    .collect();
                let offs = neg.iter().map(|d| (t.len() - d) as u32).collect();
                (t, offs)
            }
        }
    }

    #[test]
    fn suffix_sharing_matches_models() {
        let cases: &[&[&str]] = &[
            &["#size-cells", "size-cells", "cells"],
            &["cells", "size-cells", "#size-cells", "cells", "size-cells"],
            &[
                "cells",
                "size-cells",
                "cells",
                "#size-cells",
                "cells",
                "s",
                "",
                "x",
                "",
            ],
            &["", "a", "", "ba", "a", "cba", "a", "ba", ""],
            &["reg", "a", "aa", "aaa", "a", "aa", "aaaa", "aaa", "a"],
            &["ab", "b", "cab", "b", "ab", "dcab", "cab", "b"],
        ];
        for layout in [Layout::Dtc, Layout::Libfdt] {
            for names in cases {
                assert_eq!(
                    strings_of(layout, names),
                    model(layout, names),
                    "{layout:?} {names:?}"
                );
            }
        }
    }

    #[test]
    fn suffix_sharing_pseudo_random() {
        // Names over a tiny alphabet share suffixes all the time.
        let mut x = 0x1234_5678u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..40 {
            let names: Vec<String> = (0..60)
                .map(|_| {
                    let l = next() % 6;
                    (0..l)
                        .map(|_| [b'a', b'b', b'-'][(next() % 3) as usize] as char)
                        .collect()
                })
                .collect();
            let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
            for layout in [Layout::Dtc, Layout::Libfdt] {
                assert_eq!(
                    strings_of(layout, &names),
                    model(layout, &names),
                    "round {round}"
                );
            }
        }
    }
}
