//! Writer and reader together: random trees (numeric node names and 1-byte properties, as KHO
//! writes them) survive encode → decode in both layouts, and whatever a mutated blob decodes to
//! re-encodes to a blob that decodes to the same tree.
use fdt::{decode, encode, Layout, Node, Property, Validation, WriterOptions};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9]{1,3}", "[a-z][a-z0-9,._+-]{0,12}(@[0-9a-f]{1,4})?"]
}

fn prop_name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z#][a-z0-9,._+?#-]{0,20}", Just("iova-start".to_string()), Just("iova-len".to_string()), Just("bus".to_string())]
}

fn node(depth: u32) -> BoxedStrategy<Node> {
    let props = || prop::collection::vec((prop_name(), prop::collection::vec(any::<u8>(), 0..12)), 0..5);
    let leaf = (name(), props()).prop_map(|(name, props)| Node { name, properties: dedup_props(props), children: vec![] });
    if depth == 0 {
        return leaf.boxed();
    }
    (name(), props(), prop::collection::vec(node(depth - 1), 0..4))
        .prop_map(|(name, props, children)| Node { name, properties: dedup_props(props), children: dedup_children(children) })
        .boxed()
}

fn dedup_props(props: Vec<(String, Vec<u8>)>) -> Vec<Property> {
    let mut out: Vec<Property> = Vec::new();
    for (name, value) in props {
        if !out.iter().any(|p| p.name == name) {
            out.push(Property { name, value });
        }
    }
    out
}

fn dedup_children(children: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for c in children {
        if !out.iter().any(|o| o.name == c.name) {
            out.push(c);
        }
    }
    out
}

fn root() -> impl Strategy<Value = Node> {
    node(3).prop_map(|mut n| {
        n.name = String::new();
        n
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn trees_round_trip_in_both_layouts(tree in root()) {
        for layout in [Layout::Libfdt, Layout::Dtc] {
            let blob = encode(&tree, WriterOptions { layout, ..Default::default() }, &[]).unwrap();
            let back = decode(&blob, Validation::Dtc).unwrap();
            prop_assert_eq!(&back.root, &tree);
            prop_assert_eq!(back.version, 17);
        }
    }

    #[test]
    fn mutated_blobs_decode_to_trees_that_re_encode(tree in root(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<Option<prop::sample::Index>>()) {
        let mut blob = encode(&tree, WriterOptions::default(), &[]).unwrap();
        for (i, x) in &flips {
            let i = i.index(blob.len());
            blob[i] ^= x | 1;
        }
        if let Some(c) = cut {
            blob.truncate(c.index(blob.len() + 1));
        }
        if let Ok(fdt) = decode(&blob, Validation::Structural) {
            // Whatever was accepted must be expressible again, and read back the same.
            if let Ok(again) = encode(&fdt.root, WriterOptions::default(), &fdt.reserve) {
                let back = decode(&again, Validation::Structural).unwrap();
                prop_assert_eq!(back.root, fdt.root);
                prop_assert_eq!(back.reserve, fdt.reserve);
            }
        }
    }
}
