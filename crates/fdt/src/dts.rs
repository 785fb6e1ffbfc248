//! A `dtc -I dtb -O dts`-like renderer.
//!
//! Output follows dtc's `treesource.c`: `/dts-v1/;`, a blank line, one
//! `/memreserve/\t0x%016x 0x%016x;` line per reservation, then the tree with one tab per level,
//! properties first, a blank line before each child node, `};` closing lines. Values are guessed
//! as dtc's `guess_value_type` does:
//! - a string (list) when the last byte is NUL, every byte is printable ASCII, NUL or one of
//!   `\a\b\t\n\v\f\r`, and NULs are at most half of the bytes; a list is printed as
//!   `"a", "b"` (dtc >= 1.7; dtc 1.6.1 prints `"a\0b"`), with C escapes;
//! - otherwise big-endian cells `<0x%02x ...>` when the length is a multiple of 4;
//! - otherwise bytes `[%02x ...]`;
//! - empty properties as `name;`.
//!
//! The blob is decoded at [`Validation::Structural`] (libfdt's acceptance), so unlike dtc this
//! renders trees with bad names or duplicates (dtc stops on its `checks.c` errors unless `-f`)
//! and blobs starting with a NOP (dtc 1.6.1 refuses them). Checked identical to dtc 1.6.1's
//! output on test_tree1 in all block orders, v16 and v3 blobs, and a value-guessing corpus,
//! except for string lists (`"a\0b"` there). Pre-v16 blobs print their `name` properties, which
//! dtc drops.
use std::fmt::Write;

use crate::{decode, Node, Result, Validation};

/// Renders a blob as DTS text, close to `dtc -O dts` (`/dts-v1/;`, reservations, strings,
/// cells, bytes).
pub fn to_dts(blob: &[u8]) -> Result<String> {
    let fdt = decode(blob, Validation::Structural)?;
    let mut out = String::from("/dts-v1/;\n\n");
    for r in &fdt.reserve {
        let _ = writeln!(out, "/memreserve/\t{:#018x} {:#018x};", r.address, r.size);
    }
    // Explicit stack: (node, level, index of the next child to print).
    let mut stack: Vec<(&Node, usize)> = vec![(&fdt.root, 0)];
    open_node(&mut out, &fdt.root, 0);
    while let Some(top) = stack.last_mut() {
        let (node, next) = *top;
        if let Some(child) = node.children.get(next) {
            top.1 += 1;
            let level = stack.len();
            out.push('\n');
            open_node(&mut out, child, level);
            stack.push((child, 0));
        } else {
            stack.pop();
            tabs(&mut out, stack.len());
            out.push_str("};\n");
        }
    }
    Ok(out)
}

fn tabs(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push('\t');
    }
}

fn open_node(out: &mut String, node: &Node, level: usize) {
    tabs(out, level);
    if node.name.is_empty() {
        out.push_str("/ {\n");
    } else {
        out.push_str(&node.name);
        out.push_str(" {\n");
    }
    for p in &node.properties {
        tabs(out, level + 1);
        out.push_str(&p.name);
        write_value(out, &p.value);
    }
}

fn is_string_byte(c: u8) -> bool {
    (0x20..0x7f).contains(&c) || c == 0 || (7..=13).contains(&c)
}

fn write_value(out: &mut String, v: &[u8]) {
    let Some(&last) = v.last() else {
        out.push_str(";\n");
        return;
    };
    out.push_str(" =");
    let nnul = v.iter().filter(|&&c| c == 0).count();
    if last == 0 && v.iter().all(|&c| is_string_byte(c)) && nnul <= v.len() - nnul {
        // Strings: split after every NUL (dtc's add_string_markers).
        let body = &v[..v.len() - 1];
        for (i, s) in body.split(|&c| c == 0).enumerate() {
            out.push_str(if i == 0 { " \"" } else { ", \"" });
            for &c in s {
                match c {
                    7 => out.push_str("\\a"),
                    8 => out.push_str("\\b"),
                    b'\t' => out.push_str("\\t"),
                    b'\n' => out.push_str("\\n"),
                    11 => out.push_str("\\v"),
                    12 => out.push_str("\\f"),
                    b'\r' => out.push_str("\\r"),
                    b'\\' => out.push_str("\\\\"),
                    b'"' => out.push_str("\\\""),
                    c => out.push(c as char),
                }
            }
            out.push('"');
        }
    } else if v.len().is_multiple_of(4) {
        out.push_str(" <");
        for (i, c) in v.chunks_exact(4).enumerate() {
            let cell = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let _ = write!(out, "{}{cell:#04x}", if i == 0 { "" } else { " " });
        }
        out.push('>');
    } else {
        out.push_str(" [");
        for (i, b) in v.iter().enumerate() {
            let _ = write!(out, "{}{b:02x}", if i == 0 { "" } else { " " });
        }
        out.push(']');
    }
    out.push_str(";\n");
}
