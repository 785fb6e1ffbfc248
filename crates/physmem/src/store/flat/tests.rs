use super::*;

/// Whether the host maps a page for frame `fn_`.
fn in_core(s: &FlatStore, fn_: u64) -> bool {
    let mut v = 0u8;
    // SAFETY: one page inside our mapping.
    let r = unsafe { libc::mincore(s.base.add((fn_ << FRAME_SHIFT) as usize).cast(), 4096, &mut v) };
    assert_eq!(r, 0);
    v & 1 == 1
}

#[test]
fn a_written_frame_is_resident_and_a_dropped_one_gives_its_page_back() {
    let _budget = BUDGET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = FlatStore::new(1 << 28).expect("a 1 TiB flat mapping");
    assert_eq!(s.host_bytes(), 8192 * 12, "only the leaf table and counts");
    assert!(s.get(5).is_none());
    assert!(!in_core(&s, 5), "reading an untouched frame allocates nothing");
    s.get_mut(5, || 7)[0] = 1;
    assert_eq!(s.get(5).unwrap()[..2], [1, 7], "materialised with its fill byte");
    assert!(in_core(&s, 5));
    assert_eq!(s.host_bytes(), 2 * 4096 + 8192 * 12, "the frame and one bitmap leaf");
    assert_eq!(s.remove_range(0, 1 << 28), 1);
    assert!(s.get(5).is_none());
    assert!(!in_core(&s, 5), "given back");
    assert_eq!((s.resident(), s.pages), (0, 0));
    s.get_mut(5, || 0);
    assert_eq!(s.get(5).unwrap()[0], 0, "a given-back frame reads as zero before its fill is written");
}

#[test]
fn range_operations_drop_exactly_the_frames_in_range() {
    let _budget = BUDGET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = FlatStore::new(1 << 20).unwrap();
    // Two words, two bitmap pages, and frames far apart.
    let frames = [10u64, 11, 63, 64, 600, 32_767, 32_768, 300_000];
    for f in frames {
        s.get_mut(f, || 0)[0] = f as u8;
    }
    assert_eq!((s.resident(), s.pages), (8, 3));
    assert_eq!(s.remove_range(11, 53), 2, "frames 11 and 63 lie in [11, 64)");
    assert!(s.get(11).is_none() && s.get(63).is_none());
    assert_eq!(s.get(10).unwrap()[0], 10);
    assert_eq!(s.get(64).unwrap()[0], 64);
    assert!(in_core(&s, 10) && !in_core(&s, 11));
    assert_eq!(s.remove_range(32_767, 2), 2);
    assert_eq!(s.pages, 2, "the second bitmap leaf went");
    let mut seen = Vec::new();
    assert_eq!(
        s.retain(|f| {
            seen.push(f);
            f == 600
        }),
        3
    );
    assert_eq!(seen, [10, 64, 600, 300_000], "ascending order");
    assert_eq!((s.resident(), s.get(600).unwrap()[0]), (1, 600u64 as u8));
    assert!(!in_core(&s, 10) && !in_core(&s, 64) && in_core(&s, 600) && !in_core(&s, 300_000));
}

#[test]
fn the_address_space_budget_is_kept() {
    let _budget = BUDGET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert!(FlatStore::new((FLAT_MAX >> FRAME_SHIFT) + 1).is_none(), "larger than FLAT_MAX");
    // 16 TiB reservations: at most four fit the 64 TiB budget.
    let stores: Vec<_> = (0..5).map_while(|_| FlatStore::new(FLAT_MAX >> FRAME_SHIFT)).collect();
    assert!(stores.len() <= 4);
    drop(stores);
    assert!(FlatStore::new(1 << 20).is_some(), "dropped stores gave their address space back");
}
