//! The header: `fdt_check_header` and the block bounds of `fdt_check_full`, in libfdt's order
//! (steps 1 to 7 of the list in [`reader`](super)).
use super::{be32, trunc};
use crate::{Error, ErrorKind, Result, FDT_MAGIC};

const FDT_SW_MAGIC: u32 = !FDT_MAGIC;
const FDT_V1_SIZE: usize = 28;
const FDT_V2_SIZE: usize = 32;
const FDT_V3_SIZE: usize = 36;
const FDT_V17_SIZE: usize = 40;
pub(super) const INT_MAX: u64 = i32::MAX as u64;

pub(super) const OFF_TOTALSIZE: usize = 0x04;
pub(super) const OFF_OFF_STRUCT: usize = 0x08;
const OFF_OFF_STRINGS: usize = 0x0c;
const OFF_OFF_RSVMAP: usize = 0x10;
const OFF_VERSION: usize = 0x14;
const OFF_LAST_COMP: usize = 0x18;
const OFF_BOOT_CPUID: usize = 0x1c;
const OFF_SIZE_STRINGS: usize = 0x20;
const OFF_SIZE_STRUCT: usize = 0x24;

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
pub(super) struct Header {
    pub(super) version: u32,
    pub(super) boot_cpuid_phys: u32,
    pub(super) totalsize: usize,
    pub(super) off_rsvmap: usize,
    /// Absolute start and end of the structure block (v < 17: up to `totalsize`).
    pub(super) struct_start: usize,
    pub(super) struct_end: usize,
    pub(super) off_strings: usize,
    pub(super) size_strings: usize,
}

pub(super) fn parse_header(blob: &[u8]) -> Result<Header> {
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
