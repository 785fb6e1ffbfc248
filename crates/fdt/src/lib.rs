//! Flattened Device Tree (DTB) blobs for the iommu-liveupdate simulator, and for anyone else:
//!
//! - [`FdtWriter`]: a sequential writer like libfdt's `fdt_sw.c`, producing blobs byte-identical
//!   to libfdt's ([`Layout::Libfdt`]) or to `dtc -I dts -O dtb` ([`Layout::Dtc`]);
//! - [`Node`]: a tree that can be built, walked, edited and [`encode`]d;
//! - [`decode`] / [`check`]: a defensive decoder accepting what libfdt accepts, with three
//!   [`Validation`] levels, libfdt's error names and byte offsets; it never panics and bounds
//!   recursion;
//! - [`to_dts`]: a `dtc -O dts`-like renderer;
//! - [`kho`]: helpers for Kexec HandOver trees with configurable names and a size cap.
#![deny(missing_docs)]

mod error;
mod writer;
mod reader;
mod dts;
pub mod kho;

pub use error::{Error, ErrorKind, Result};
pub use reader::{check, decode, Fdt, MAX_DEPTH};
pub use writer::{encode, FdtWriter, WriterOptions};
pub use dts::to_dts;

/// `0xd00dfeed`.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Structure-block tokens.
pub const FDT_BEGIN_NODE: u32 = 0x1;
/// End of a node.
pub const FDT_END_NODE: u32 = 0x2;
/// A property.
pub const FDT_PROP: u32 = 0x3;
/// No operation.
pub const FDT_NOP: u32 = 0x4;
/// End of the structure block.
pub const FDT_END: u32 = 0x9;

/// Where the blocks go and how property names are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// As libfdt's sequential-write API leaves it (`fdt_create` .. `fdt_finish`): rsvmap at 0x30,
    /// struct at 0x40 with an empty map, strings in reverse insertion order with suffix sharing.
    /// What the kernel's KHO code emits.
    #[default]
    Libfdt,
    /// As `dtc -I dts -O dtb` writes it: rsvmap at 0x28, struct at 0x38 with an empty map,
    /// strings in first-use order with suffix sharing.
    Dtc,
}

/// How much a decoder checks beyond parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// What libfdt's `fdt_check_full` checks: header, bounds, tokens, nesting, one unnamed root,
    /// property names resolvable.
    #[default]
    Structural,
    /// Adds dtc's `checks.c` errors: node and property name characters, at most one `@`,
    /// duplicate node and property names, properties before subnodes.
    Dtc,
    /// Adds the devicetree specification's limits: names of 1–31 characters, node names starting
    /// with a letter. KHO's numeric node names fail here by design.
    Strict,
}

/// A memory reservation entry (`struct fdt_reserve_entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveEntry {
    /// Physical address.
    pub address: u64,
    /// Size in bytes; never 0 (libfdt stops at the first zero-size entry).
    pub size: u64,
}

/// A property: a name and raw value bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Property {
    /// Name.
    pub name: String,
    /// Value bytes as stored (big-endian cells, strings with their NUL, or native LE for KHO).
    pub value: Vec<u8>,
}

/// A node of the tree: name (`""` for the root), properties then children, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Unit name including any `@unit-address`; empty for the root.
    pub name: String,
    /// Properties in order.
    pub properties: Vec<Property>,
    /// Children in order.
    pub children: Vec<Node>,
}

impl Node {
    /// A node without properties or children.
    pub fn new(name: impl Into<String>) -> Self {
        Node { name: name.into(), ..Default::default() }
    }
    /// The property named `name`.
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }
    /// The child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    /// The child named `name`, mutably.
    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children.iter_mut().find(|c| c.name == name)
    }
    /// Sets (replacing or appending) a property.
    pub fn set_property(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> &mut Self {
        let (name, value) = (name.into(), value.into());
        match self.properties.iter_mut().find(|p| p.name == name) {
            Some(p) => p.value = value,
            None => self.properties.push(Property { name, value }),
        }
        self
    }
    /// Appends a child and returns it.
    pub fn add_child(&mut self, child: Node) -> &mut Node {
        self.children.push(child);
        self.children.last_mut().unwrap()
    }
    /// Removes and returns the child named `name`.
    pub fn remove_child(&mut self, name: &str) -> Option<Node> {
        let i = self.children.iter().position(|c| c.name == name)?;
        Some(self.children.remove(i))
    }
    /// The node at `path` (`/a/b`; `/` is this node).
    pub fn find(&self, path: &str) -> Option<&Node> {
        path.split('/').filter(|s| !s.is_empty()).try_fold(self, |n, seg| n.child(seg))
    }
    /// Visits this node and every descendant, depth first, with its depth.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Node, usize)) {
        fn go<'a>(n: &'a Node, depth: usize, f: &mut dyn FnMut(&'a Node, usize)) {
            f(n, depth);
            for c in &n.children {
                go(c, depth + 1, f);
            }
        }
        go(self, 0, f)
    }
}

/// Value encoders: big-endian as devicetree defines, and explicit little-endian as KHO writes.
pub mod value {
    /// Big-endian u32 cell.
    pub fn u32_be(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }
    /// Big-endian u64 (two cells, most significant first).
    pub fn u64_be(v: u64) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }
    /// Big-endian cells.
    pub fn cells(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|c| c.to_be_bytes()).collect()
    }
    /// Little-endian ("native" on x86/arm64, as KHO writes) u32.
    pub fn u32_le(v: u32) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }
    /// Little-endian u64.
    pub fn u64_le(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }
    /// A string with its terminating NUL; `None` if it holds a NUL.
    pub fn string(s: &str) -> Option<Vec<u8>> {
        (!s.contains('\0')).then(|| [s.as_bytes(), &[0]].concat())
    }
    /// A string list: each string with its NUL; `None` if any holds a NUL.
    pub fn string_list(list: &[&str]) -> Option<Vec<u8>> {
        list.iter().map(|s| string(s)).collect::<Option<Vec<_>>>().map(|v| v.concat())
    }
}
