//! dtc's `checks.c` name checks (`Validation::Dtc`) and the specification's limits
//! (`Validation::Strict`), per node against its parent's frame.
use std::collections::HashSet;

use super::{bad, show};
use crate::Error;

/// Per-node state for the dtc-level checks.
#[derive(Default)]
pub(super) struct Frame<'a> {
    pub(super) props: NameSet<'a>,
    pub(super) children: NameSet<'a>,
    pub(super) has_child: bool,
}

/// A set of names: a linear scan while small (most nodes have a handful of properties), a
/// hash set (SipHash, so crafted input cannot force collisions) beyond.
#[derive(Default)]
pub(super) struct NameSet<'a> {
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

    pub(super) fn clear(&mut self) {
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

/// dtc (and strict) checks of a non-root node name, against its parent's frame.
pub(super) fn check_node_name<'a>(
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

pub(super) fn check_prop_name<'a>(
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
