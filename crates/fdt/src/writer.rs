//! The sequential writer (libfdt `fdt_sw.c` semantics) and tree encoding; the strings table
//! with the tools' suffix-sharing rules is [`strings`].
use crate::Error;
use crate::{
    ErrorKind, Layout, Node, ReserveEntry, Result, FDT_BEGIN_NODE, FDT_END, FDT_END_NODE,
    FDT_MAGIC, FDT_PROP, MAX_DEPTH,
};

mod strings;

use strings::StringTable;

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
