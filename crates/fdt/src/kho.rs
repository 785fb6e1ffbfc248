//! Kexec HandOver trees: the root (`compatible = "kho-v1"`, `preserved-memory-map`, sub-tree
//! nodes with `fdt` / `preserved-data`), with every name configurable for later ABI versions,
//! and the one-page size cap.
//!
//! [`kho_root`] makes the same calls, in the same order, as Linux 6.16's `kho_finalize()`
//! (`kernel/kexec_handover.c`):
//!
//! ```text
//! fdt_create(fdt, PAGE_SIZE); fdt_finish_reservemap(fdt); fdt_begin_node(fdt, "");
//! fdt_property_string(fdt, "compatible", "kho-v1");
//! fdt_property_placeholder(fdt, "preserved-memory-map", sizeof(u64), &p);
//! for each sub-tree: fdt_begin_node(fdt, name); fdt_property(fdt, "fdt", &phys, 8); fdt_end_node(fdt);
//! *p = memory_map_phys; fdt_end_node(fdt); fdt_finish(fdt);
//! ```
//!
//! so with [`Layout::Libfdt`] its output is byte-identical to the kernel's. Values are
//! little-endian (KHO writes native u64s; x86 and arm64 are little-endian).
use crate::{Error, ErrorKind, FdtWriter, Layout, Node, Result, WriterOptions};

/// The size cap of the KHO root tree: one 4 KiB page (`fdt_create(fdt, PAGE_SIZE)`).
pub const KHO_ROOT_MAX: usize = 4096;

/// The names of a KHO ABI version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KhoNames {
    /// The root's `compatible` string: `"kho-v1"` (Linux 6.16), `"kho-v2"` (stateless KHO).
    pub compatible: String,
    /// The root property holding the physical address of the preserved-memory map:
    /// `"preserved-memory-map"`.
    pub memory_map: String,
    /// The sub-tree nodes' property holding the physical address of their blob: `"fdt"` (v1),
    /// `"preserved-data"` (v2).
    pub subtree_prop: String,
}

impl Default for KhoNames {
    /// Linux 6.16's names (`kho-v1`).
    fn default() -> Self {
        KhoNames {
            compatible: "kho-v1".into(),
            memory_map: "preserved-memory-map".into(),
            subtree_prop: "fdt".into(),
        }
    }
}

impl KhoNames {
    /// Linux 6.16's names: `"kho-v1"`, `"preserved-memory-map"`, `"fdt"`.
    pub fn v1() -> Self {
        Self::default()
    }
    /// Stateless KHO's names: `"kho-v2"`, `"preserved-memory-map"`, `"preserved-data"`.
    pub fn v2() -> Self {
        KhoNames {
            compatible: "kho-v2".into(),
            subtree_prop: "preserved-data".into(),
            ..Self::default()
        }
    }
}

/// Builds a KHO root tree as `kho_finalize()` does: `compatible`, `preserved-memory-map`
/// (u64 LE `memory_map`), then one node per sub-tree with `subtree_prop` = u64 LE physical
/// address. Fails with `FDT_ERR_NOSPACE` if the blob would exceed [`KHO_ROOT_MAX`] (the kernel's
/// one-page buffer), and with the writer's errors for bad names (`FDT_ERR_BADVALUE` for a NUL,
/// `FDT_ERR_BADSTRUCTURE` for an empty sub-tree name, which would make a nameless node).
pub fn kho_root(
    names: &KhoNames,
    memory_map: u64,
    subtrees: &[(&str, u64)],
    layout: Layout,
) -> Result<Vec<u8>> {
    let mut w = FdtWriter::new(WriterOptions {
        layout,
        max_size: Some(KHO_ROOT_MAX),
        ..Default::default()
    });
    w.begin_node("")?;
    w.property_string("compatible", &names.compatible)?;
    let map = w.property_placeholder(&names.memory_map, 8)?;
    for &(name, phys) in subtrees {
        if name.is_empty() {
            return Err(Error::new(
                ErrorKind::BadStructure,
                "a KHO sub-tree needs a non-empty name",
            ));
        }
        w.begin_node(name)?;
        w.property_u64_le(&names.subtree_prop, phys)?;
        w.end_node()?;
    }
    w.fill_placeholder(map, &memory_map.to_le_bytes())?;
    w.end_node()?;
    w.finish()
}

fn u64_le_prop(node: &Node, node_desc: &str, name: &str) -> Result<u64> {
    let p = node.property(name).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("{node_desc} has no {name:?} property"),
        )
    })?;
    let b: [u8; 8] = p.value.as_slice().try_into().map_err(|_| {
        Error::new(
            ErrorKind::BadValue,
            format!(
                "{node_desc}'s {name:?} is {} bytes long, not 8",
                p.value.len()
            ),
        )
    })?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a decoded KHO root back: `(memory_map, [(sub-tree name, phys)])`, in node order.
///
/// Like the next kernel's `kho_populate()` (`fdt_node_check_compatible(fdt, 0, compatible)`):
/// a root without `compatible` is `FDT_ERR_NOTFOUND`; one whose `compatible` string list does
/// not contain `names.compatible` is `FDT_ERR_BADVALUE`. A missing `preserved-memory-map` or
/// sub-tree property is `FDT_ERR_NOTFOUND`, one that is not exactly 8 bytes `FDT_ERR_BADVALUE`
/// (`kho_retrieve_subtree` insists on 8).
pub fn kho_root_info(root: &Node, names: &KhoNames) -> Result<(u64, Vec<(String, u64)>)> {
    let compat = root.property("compatible").ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "the KHO root has no \"compatible\" property",
        )
    })?;
    // fdt_stringlist_contains: NUL-separated strings, the last one NUL-terminated.
    let v = compat.value.as_slice();
    let contains = v.last() == Some(&0)
        && v[..v.len() - 1]
            .split(|&b| b == 0)
            .any(|s| s == names.compatible.as_bytes());
    if !contains {
        return Err(Error::new(
            ErrorKind::BadValue,
            format!(
                "the KHO root is compatible with {:?}, not {:?}",
                String::from_utf8_lossy(v).trim_end_matches('\0'),
                names.compatible
            ),
        ));
    }
    let map = u64_le_prop(root, "the KHO root", &names.memory_map)?;
    let subtrees = root
        .children
        .iter()
        .map(|c| {
            let desc = format!("KHO sub-tree node {:?}", c.name);
            u64_le_prop(c, &desc, &names.subtree_prop).map(|phys| (c.name.clone(), phys))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((map, subtrees))
}
