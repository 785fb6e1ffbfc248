//! The strings table of [`FdtWriter`](crate::FdtWriter): property names stored once, shared by
//! suffix exactly as libfdt or dtc share them.
use crate::Layout;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

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
pub(super) struct StringTable {
    pub(super) layout: Layout,
    dedup: bool,
    /// Stored names with their NULs, oldest first (dtc's block; libfdt's reversed at finish).
    pub(super) bytes: Vec<u8>,
    /// (start in `bytes`, length without NUL) of each stored name.
    names: Vec<(u32, u32)>,
    /// The trie; node 0 is the root (the empty suffix).
    nodes: Vec<TrieNode>,
    /// Exact names looked up so far → the trie node on whose edge they end (re-found if a
    /// split has shortened that node since).
    cache: HashMap<Box<[u8]>, u32, NameHasherBuilder>,
}

impl StringTable {
    pub(super) fn new(layout: Layout, no_dedup: bool) -> Self {
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

    pub(super) fn len(&self) -> usize {
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
    pub(super) fn lookup(&mut self, name: &[u8]) -> Option<u32> {
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
    pub(super) fn insert(&mut self, name: &[u8]) -> u32 {
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
    use crate::{FdtWriter, WriterOptions};

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
