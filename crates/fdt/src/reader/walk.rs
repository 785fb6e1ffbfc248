//! The structure walk: the reservation map, then the structure block token by token as
//! `fdt_next_tag` and `fdt_check_full` see it (steps 8 and 9 of the list in [`reader`](super)),
//! without recursion.
use super::checks::{check_node_name, check_prop_name, Frame};
use super::header::{Header, INT_MAX, OFF_OFF_STRUCT, OFF_TOTALSIZE};
use super::{bad, be32, be64, show, trunc, Sink};
use crate::{
    Error, ErrorKind, ReserveEntry, Result, Validation, FDT_BEGIN_NODE, FDT_END, FDT_END_NODE,
    FDT_NOP, FDT_PROP, MAX_DEPTH,
};

/// Walks the reservation map and the structure block of a blob whose header passed
/// [`parse_header`](super::header::parse_header), reporting to `sink`.
pub(super) fn walk<'a, S: Sink<'a>>(
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
