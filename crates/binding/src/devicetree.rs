//! Flattened Device Tree (the `fdt` crate).
//!
//! Errors: the napi error's `code` is libfdt's name (`FDT_ERR_TRUNCATED`, ...) and its message
//! starts with `<name> at offset 0x<hex>: ` when the error is about a byte of the blob, else with
//! `<name>: `; ts/fdt parses that prefix into `FdtError.offset`.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::arrays::{u32_array, u64_array, u8_array};
use crate::error::{err, invalid, out_of_range, u64_arg, up_to, Code};

/// Largest blob the writer and encoder produce (their limit whatever `maxSize` says), and the
/// decoders and the DTS renderer take: 64 MiB (ts `FDT_SIZE_MAX`). libfdt's own limit, INT32_MAX,
/// would let one placeholder ask for 2 GiB; KHO's largest tree is 10 MiB.
const FDT_SIZE_MAX: usize = 64 << 20;

/// A blob the decoders take: at most [`FDT_SIZE_MAX`] bytes (DTS text is several times larger).
fn blob_arg(blob: &[u8]) -> Result<&[u8], Code> {
    if blob.len() > FDT_SIZE_MAX {
        return Err(out_of_range("blob.length", &format!("<= {FDT_SIZE_MAX}"), blob.len()));
    }
    Ok(blob)
}

fn fdt_err(e: fdt::Error) -> Error<Code> {
    let msg = match e.offset {
        Some(o) => format!("{} at offset {:#x}: {}", e.code(), o, e.detail),
        None => format!("{}: {}", e.code(), e.detail),
    };
    err(e.code(), msg)
}

fn fdt_layout_arg(layout: &str) -> Result<fdt::Layout, Code> {
    match layout {
        "libfdt" => Ok(fdt::Layout::Libfdt),
        "dtc" => Ok(fdt::Layout::Dtc),
        _ => Err(invalid(format!("layout must be 'libfdt' or 'dtc', not {layout:?}"))),
    }
}

fn fdt_validation_arg(v: &str) -> Result<fdt::Validation, Code> {
    match v {
        "structural" => Ok(fdt::Validation::Structural),
        "dtc" => Ok(fdt::Validation::Dtc),
        "strict" => Ok(fdt::Validation::Strict),
        _ => Err(invalid(format!("validate must be 'structural', 'dtc' or 'strict', not {v:?}"))),
    }
}

fn fdt_options(layout: &str, max_size: Option<f64>, no_name_dedup: bool, boot_cpuid_phys: u32) -> Result<fdt::WriterOptions, Code> {
    let max_size = match max_size {
        None => FDT_SIZE_MAX,
        Some(m) if m >= 0.0 && m.fract() == 0.0 && m <= FDT_SIZE_MAX as f64 => m as usize,
        Some(m) => return Err(out_of_range("maxSize", &up_to(FDT_SIZE_MAX), m)),
    };
    let max_size = Some(max_size);
    Ok(fdt::WriterOptions { layout: fdt_layout_arg(layout)?, max_size, no_name_dedup, boot_cpuid_phys })
}

/// libfdt's sequential-write API (`fdt_create` .. `fdt_finish`) over `fdt::FdtWriter`.
#[napi]
pub struct NativeFdtWriter {
    /// `None` once `finish` succeeded.
    w: Option<fdt::FdtWriter>,
}

impl NativeFdtWriter {
    fn w(&mut self) -> Result<&mut fdt::FdtWriter, Code> {
        self.w.as_mut().ok_or_else(|| err("FDT_ERR_BADSTATE", "FDT_ERR_BADSTATE: the writer has already finished"))
    }
}

#[napi]
impl NativeFdtWriter {
    /// A writer: `layout` is `"libfdt"` or `"dtc"`; `maxSize` null for no cap.
    #[napi(constructor, catch_unwind, strict)]
    pub fn new(layout: String, max_size: Option<f64>, no_name_dedup: bool, boot_cpuid_phys: u32) -> Result<Self, Code> {
        let options = fdt_options(&layout, max_size, no_name_dedup, boot_cpuid_phys)?;
        Ok(NativeFdtWriter { w: Some(fdt::FdtWriter::new(options)) })
    }

    /// The blob size so far (0 once finished).
    #[napi(getter, catch_unwind)]
    pub fn size(&self) -> f64 {
        self.w.as_ref().map_or(0, |w| w.size()) as f64
    }

    /// `fdt_add_reservemap_entry`.
    #[napi(catch_unwind)]
    pub fn add_reservemap_entry(&mut self, address: BigInt, size: BigInt) -> Result<(), Code> {
        let entry = fdt::ReserveEntry { address: u64_arg(&address, "address")?, size: u64_arg(&size, "size")? };
        self.w()?.add_reservemap_entry(entry).map_err(fdt_err)
    }

    /// `fdt_begin_node`.
    #[napi(catch_unwind, strict)]
    pub fn begin_node(&mut self, name: String) -> Result<(), Code> {
        self.w()?.begin_node(&name).map_err(fdt_err)
    }

    /// `fdt_end_node`.
    #[napi(catch_unwind)]
    pub fn end_node(&mut self) -> Result<(), Code> {
        self.w()?.end_node().map_err(fdt_err)
    }

    /// `fdt_property`: raw bytes.
    #[napi(catch_unwind, strict)]
    pub fn property(&mut self, name: String, value: &[u8]) -> Result<(), Code> {
        self.w()?.property(&name, value).map_err(fdt_err)
    }

    /// An empty property.
    #[napi(catch_unwind, strict)]
    pub fn property_empty(&mut self, name: String) -> Result<(), Code> {
        self.w()?.property_empty(&name).map_err(fdt_err)
    }

    /// A big-endian u32 cell.
    #[napi(catch_unwind, strict)]
    pub fn property_u32(&mut self, name: String, v: u32) -> Result<(), Code> {
        self.w()?.property_u32(&name, v).map_err(fdt_err)
    }

    /// A big-endian u64.
    #[napi(catch_unwind, strict)]
    pub fn property_u64(&mut self, name: String, v: BigInt) -> Result<(), Code> {
        let v = u64_arg(&v, "value")?;
        self.w()?.property_u64(&name, v).map_err(fdt_err)
    }

    /// Big-endian cells.
    #[napi(catch_unwind, strict)]
    pub fn property_cells(&mut self, name: String, cells: Uint32Array) -> Result<(), Code> {
        self.w()?.property_cells(&name, &cells).map_err(fdt_err)
    }

    /// A NUL-terminated string.
    #[napi(catch_unwind, strict)]
    pub fn property_string(&mut self, name: String, s: String) -> Result<(), Code> {
        self.w()?.property_string(&name, &s).map_err(fdt_err)
    }

    /// A string list.
    #[napi(catch_unwind, strict)]
    pub fn property_string_list(&mut self, name: String, list: Vec<String>) -> Result<(), Code> {
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        self.w()?.property_string_list(&name, &list).map_err(fdt_err)
    }

    /// A little-endian u32 (KHO native value).
    #[napi(catch_unwind, strict)]
    pub fn property_u32_le(&mut self, name: String, v: u32) -> Result<(), Code> {
        self.w()?.property_u32_le(&name, v).map_err(fdt_err)
    }

    /// A little-endian u64 (KHO native value).
    #[napi(catch_unwind, strict)]
    pub fn property_u64_le(&mut self, name: String, v: BigInt) -> Result<(), Code> {
        let v = u64_arg(&v, "value")?;
        self.w()?.property_u64_le(&name, v).map_err(fdt_err)
    }

    /// `fdt_property_placeholder`: returns a handle for `fillPlaceholder`.
    #[napi(catch_unwind, strict)]
    pub fn property_placeholder(&mut self, name: String, len: u32) -> Result<u32, Code> {
        self.w()?.property_placeholder(&name, len as usize).map(|h| h as u32).map_err(fdt_err)
    }

    /// Writes `data` at the start of a placeholder's value.
    #[napi(catch_unwind)]
    pub fn fill_placeholder(&mut self, handle: u32, data: &[u8]) -> Result<(), Code> {
        self.w()?.fill_placeholder(handle as usize, data).map_err(fdt_err)
    }

    /// `fdt_finish`: the blob. A failed finish leaves the writer usable (e.g. close the open
    /// nodes and finish again); a successful one ends it.
    #[napi(catch_unwind)]
    pub fn finish<'e>(&mut self, env: &'e Env) -> Result<Uint8ArraySlice<'e>, Code> {
        // FdtWriter::finish consumes the writer; finish a copy so an error changes nothing.
        let blob = self.w()?.clone().finish().map_err(fdt_err)?;
        let array = u8_array(env, &blob)?;
        self.w = None;
        Ok(array)
    }
}

// The op stream of `fdtEncode`, built by ts/fdt/ops.ts (all integers little-endian):
// 1 BEGIN_NODE u32 len, name (UTF-8) | 2 END_NODE | 3 PROP u32 len, name, u32 len, value |
// 4 RESERVE u64 address, u64 size.
struct Ops<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Ops<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Code> {
        let s = self.at.checked_add(n).and_then(|end| self.b.get(self.at..end)).ok_or_else(|| invalid("truncated FDT op stream"))?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<usize, Code> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()) as usize)
    }
    fn u64(&mut self) -> Result<u64, Code> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn str(&mut self) -> Result<&'a str, Code> {
        let n = self.u32()?;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| invalid("FDT op stream: name is not UTF-8"))
    }
}

/// Encodes a tree flattened into an op stream (one call per tree); the bytes are exactly those
/// of `fdt::encode` with the same options.
#[napi(catch_unwind, strict)]
pub fn fdt_encode<'e>(env: &'e Env, ops: &[u8], layout: String, max_size: Option<f64>, no_name_dedup: bool, boot_cpuid_phys: u32) -> Result<Uint8ArraySlice<'e>, Code> {
    let mut w = fdt::FdtWriter::new(fdt_options(&layout, max_size, no_name_dedup, boot_cpuid_phys)?);
    let mut ops = Ops { b: ops, at: 0 };
    while ops.at < ops.b.len() {
        let op = ops.bytes(1)?[0];
        match op {
            1 => w.begin_node(ops.str()?).map_err(fdt_err)?,
            2 => w.end_node().map_err(fdt_err)?,
            3 => {
                let name = ops.str()?;
                let n = ops.u32()?;
                w.property(name, ops.bytes(n)?).map_err(fdt_err)?
            }
            4 => {
                let entry = fdt::ReserveEntry { address: ops.u64()?, size: ops.u64()? };
                w.add_reservemap_entry(entry).map_err(fdt_err)?
            }
            _ => return Err(invalid(format!("FDT op stream: unknown op {op}"))),
        }
    }
    u8_array(env, &w.finish().map_err(fdt_err)?)
}

/// A decoded blob, flattened for ts/fdt to rebuild `FdtNode`s without one N-API call per node.
#[napi(object)]
pub struct NativeDecodedFdt<'e> {
    /// Header `version`.
    pub version: u32,
    /// Header `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// Reservation entries as address, size pairs.
    pub reserve: BigUint64ArraySlice<'e>,
    /// Pre-order: per node `name start, name end, #properties, #children`, then per property
    /// `name start, name end, value length` (names are UTF-16 ranges of `names`, values are
    /// consecutive in `data`).
    pub shape: Uint32ArraySlice<'e>,
    /// Node names, then each distinct property name once.
    pub names: String,
    /// Property values, concatenated.
    pub data: Uint8ArraySlice<'e>,
}

fn utf16_len(s: &str) -> u32 {
    if s.is_ascii() {
        s.len() as u32
    } else {
        s.encode_utf16().count() as u32
    }
}

fn flatten_fdt<'e>(env: &'e Env, f: fdt::Fdt) -> Result<NativeDecodedFdt<'e>, Code> {
    struct Acc<'a> {
        shape: Vec<u32>,
        names: String,
        names_len: u32,
        data: Vec<u8>,
        props: std::collections::HashMap<&'a str, (u32, u32)>,
    }
    impl<'a> Acc<'a> {
        fn name(&mut self, s: &str) -> (u32, u32) {
            let start = self.names_len;
            self.names.push_str(s);
            self.names_len += utf16_len(s);
            (start, self.names_len)
        }
        // The decoder bounds depth (fdt::MAX_DEPTH), so this recursion is shallow.
        fn node(&mut self, n: &'a fdt::Node) {
            let (s, e) = self.name(&n.name);
            self.shape.extend_from_slice(&[s, e, n.properties.len() as u32, n.children.len() as u32]);
            for p in &n.properties {
                let (s, e) = match self.props.get(p.name.as_str()) {
                    Some(&r) => r,
                    None => {
                        let r = self.name(&p.name);
                        self.props.insert(&p.name, r);
                        r
                    }
                };
                self.data.extend_from_slice(&p.value);
                self.shape.extend_from_slice(&[s, e, p.value.len() as u32]);
            }
            for c in &n.children {
                self.node(c);
            }
        }
    }
    let mut acc = Acc { shape: Vec::new(), names: String::new(), names_len: 0, data: Vec::new(), props: Default::default() };
    acc.node(&f.root);
    let (shape, names, data) = (acc.shape, acc.names, acc.data);
    let reserve: Vec<u64> = f.reserve.iter().flat_map(|r| [r.address, r.size]).collect();
    Ok(NativeDecodedFdt {
        version: f.version,
        boot_cpuid_phys: f.boot_cpuid_phys,
        reserve: u64_array(env, &reserve)?,
        shape: u32_array(env, &shape)?,
        names,
        data: u8_array(env, &data)?,
    })
}

/// Decodes and validates a blob (`validate`: `"structural"`, `"dtc"`, `"strict"`).
#[napi(catch_unwind, strict)]
pub fn fdt_decode<'e>(env: &'e Env, blob: &[u8], validate: String) -> Result<NativeDecodedFdt<'e>, Code> {
    let f = fdt::decode(blob_arg(blob)?, fdt_validation_arg(&validate)?).map_err(fdt_err)?;
    flatten_fdt(env, f)
}

/// Validates a blob without building a tree.
#[napi(catch_unwind, strict)]
pub fn fdt_check(blob: &[u8], validate: String) -> Result<(), Code> {
    fdt::check(blob_arg(blob)?, fdt_validation_arg(&validate)?).map_err(fdt_err)
}

/// Renders a blob as DTS text (`dtc -I dtb -O dts`).
#[napi(catch_unwind)]
pub fn fdt_to_dts(blob: &[u8]) -> Result<String, Code> {
    fdt::to_dts(blob_arg(blob)?).map_err(fdt_err)
}

/// The size cap of a KHO root tree (one page).
#[napi]
pub fn fdt_kho_root_max() -> u32 {
    fdt::kho::KHO_ROOT_MAX as u32
}

/// The decoder's deepest nesting (the root is depth 1).
#[napi]
pub fn fdt_max_depth() -> u32 {
    fdt::MAX_DEPTH as u32
}

/// A KHO root tree as `kho_finalize()` builds it.
#[napi(catch_unwind, strict)]
#[allow(clippy::too_many_arguments)]
pub fn fdt_kho_root<'e>(env: &'e Env, compatible: String, memory_map_prop: String, subtree_prop: String, memory_map: BigInt, names: Vec<String>, phys: Vec<BigInt>, layout: String) -> Result<Uint8ArraySlice<'e>, Code> {
    if names.len() != phys.len() {
        return Err(invalid("one physical address per sub-tree name"));
    }
    let kho_names = fdt::kho::KhoNames { compatible, memory_map: memory_map_prop, subtree_prop };
    let phys = phys.iter().map(|p| u64_arg(p, "phys")).collect::<Result<Vec<_>, _>>()?;
    let subtrees: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(phys).collect();
    let blob = fdt::kho::kho_root(&kho_names, u64_arg(&memory_map, "memoryMap")?, &subtrees, fdt_layout_arg(&layout)?).map_err(fdt_err)?;
    u8_array(env, &blob)
}

/// A KHO sub-tree reference read back from a root.
#[napi(object)]
pub struct NativeKhoSubtree {
    /// Node name.
    pub name: String,
    /// Physical address of its blob.
    pub phys: BigInt,
}

/// What `fdtKhoRootInfo` reads from a KHO root blob.
#[napi(object)]
pub struct NativeKhoRootInfo {
    /// The preserved-memory map's physical address.
    pub memory_map: BigInt,
    /// The sub-trees, in node order.
    pub subtrees: Vec<NativeKhoSubtree>,
}

/// Decodes a KHO root blob (structural validation) and reads its addresses back.
#[napi(catch_unwind, strict)]
pub fn fdt_kho_root_info(blob: &[u8], compatible: String, memory_map_prop: String, subtree_prop: String) -> Result<NativeKhoRootInfo, Code> {
    let f = fdt::decode(blob_arg(blob)?, fdt::Validation::Structural).map_err(fdt_err)?;
    let kho_names = fdt::kho::KhoNames { compatible, memory_map: memory_map_prop, subtree_prop };
    let (map, subtrees) = fdt::kho::kho_root_info(&f.root, &kho_names).map_err(fdt_err)?;
    Ok(NativeKhoRootInfo {
        memory_map: BigInt::from(map),
        subtrees: subtrees.into_iter().map(|(name, phys)| NativeKhoSubtree { name, phys: BigInt::from(phys) }).collect(),
    })
}
