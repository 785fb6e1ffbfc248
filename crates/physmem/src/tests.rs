use super::*;

fn mem(size: u64) -> PhysMem {
    PhysMem::new(Config { size, seed: 7 }).unwrap()
}

#[test]
fn rejects_bad_sizes() {
    for size in [0, 4095, MAX_SIZE + FRAME_SIZE] {
        assert_eq!(PhysMem::new(Config { size, seed: 0 }).unwrap_err(), Error::BadSize { size });
    }
    assert!(PhysMem::new(Config { size: MAX_SIZE, seed: 0 }).is_ok());
}

#[test]
fn huge_memory_is_sparse() {
    let mut m = mem(MAX_SIZE);
    let s = m.stats();
    assert!(s.host_bytes < 1 << 20, "{s:?}");
    m.write_u64(MAX_SIZE - 8, 42).unwrap();
    assert_eq!(m.read_u64(MAX_SIZE - 8).unwrap(), 42);
    assert_eq!(m.stats().frames_resident, 1);
    assert!(m.stats().host_bytes < 1 << 20);
}

#[test]
fn bytes_cross_frames_and_untouched_reads_zero() {
    let mut m = mem(1 << 30);
    let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    m.write(0x2000_0ff0, &data).unwrap();
    let mut back = vec![0; data.len()];
    m.read(0x2000_0ff0, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(m.stats().frames_resident, 4);
    let mut z = [1u8; 16];
    m.read(0x3000_0000, &mut z).unwrap();
    assert_eq!(z, [0; 16]);
}

#[test]
fn words_are_little_endian_and_checked() {
    let mut m = mem(1 << 20);
    m.write_u64(0x100, 0x0102_0304_0506_0708).unwrap();
    let mut b = [0u8; 8];
    m.read(0x100, &mut b).unwrap();
    assert_eq!(b, [8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(m.read_u64(0x101).unwrap_err(), Error::Unaligned { pa: 0x101, align: 8 });
    assert!(matches!(m.read_u64(1 << 20), Err(Error::OutOfRange { .. })));
    assert!(matches!(m.write(u64::MAX - 2, &[1, 2, 3, 4]), Err(Error::OutOfRange { .. })));
    assert_eq!(m.dma_read_u64(1 << 20), None);
}

#[test]
fn allocator_is_seeded_aligned_and_avoids_reserved() {
    let run = |seed| {
        let mut m = PhysMem::new(Config { size: 8 << 30, seed }).unwrap();
        (0..64).map(|i| m.alloc((i % 10) as u8, false).unwrap()).collect::<Vec<_>>()
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
    for (i, pa) in a.iter().enumerate() {
        let len = FRAME_SIZE << (i % 10);
        assert_eq!(pa % len, 0);
        for (s, e) in RESERVED_RANGES {
            assert!(pa + len <= s || *pa >= e, "{pa:#x} overlaps reserved");
        }
    }
    let mut sorted = a.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), a.len());
}

#[test]
fn out_of_memory_and_free_accounting() {
    let mut m = mem(4 << 20); // 1 MiB reserved, 3 MiB usable
    let free0 = m.stats().frames_free;
    assert_eq!(free0, 768);
    let big = m.alloc(9, false).unwrap(); // 2 MiB
    assert_eq!(m.alloc(9, false).unwrap_err(), Error::OutOfMemory { order: 9 });
    let mut small = vec![];
    while let Ok(pa) = m.alloc(0, false) {
        small.push(pa);
    }
    assert_eq!(small.len(), 256);
    assert_eq!(m.stats().frames_free, 0);
    assert_eq!(m.free(big, 2 << 20), Ok(()));
    assert!(matches!(m.free(big, 4096), Err(Error::NotAllocated { .. })), "double free");
    assert!(matches!(m.free(0, 4096), Err(Error::NotAllocated { .. })), "reserved");
    for pa in small {
        m.free_order(pa, 0).unwrap();
    }
    assert_eq!(m.stats().frames_free, free0);
    assert_eq!(m.stats().frames_allocated, 0);
    assert_eq!(m.alloc(MAX_ORDER + 1, false).unwrap_err(), Error::BadOrder { order: MAX_ORDER + 1 });
}

#[test]
fn free_poisons_and_zeroed_alloc_is_zero() {
    let mut m = mem(1 << 30);
    let pa = m.alloc(1, true).unwrap();
    m.write_u64(pa, 5).unwrap();
    m.free_order(pa, 1).unwrap();
    assert_eq!(m.read_u64(pa).unwrap(), 0x6b6b_6b6b_6b6b_6b6b);
    m.claim(pa, 2 * FRAME_SIZE).unwrap();
    m.fill_range(pa, 2 * FRAME_SIZE, 0).unwrap();
    assert_eq!(m.read_u64(pa).unwrap(), 0);
    assert!(matches!(m.claim(pa, FRAME_SIZE), Err(Error::NotFree { .. })));
}

#[test]
fn preserve_rules() {
    let mut m = mem(1 << 30);
    let pa = m.alloc(2, false).unwrap();
    assert!(matches!(m.preserve(pa + FRAME_SIZE, 1), Err(Error::Unaligned { .. })));
    m.preserve(pa, 2).unwrap();
    assert!(matches!(m.preserve(pa + 2 * FRAME_SIZE, 0), Err(Error::Preserved { .. })));
    assert!(matches!(m.free_order(pa, 2), Err(Error::Preserved { .. })));
    assert!(m.is_preserved(pa + 3 * FRAME_SIZE));
    assert!(!m.is_preserved(pa + 4 * FRAME_SIZE));
    assert_eq!(m.unpreserve(pa, 1).unwrap_err(), Error::NotPreserved { pa, order: 1 });
    let free_pa = 0x3000_0000;
    assert!(matches!(m.preserve(free_pa, 0), Err(Error::NotAllocated { .. })));
    assert_eq!(m.preserved(), vec![(pa, 2)]);
    m.unpreserve(pa, 2).unwrap();
    assert!(m.preserved().is_empty());
}

#[test]
fn scrub_keeps_preserved_and_poisons_the_rest() {
    let mut m = mem(1 << 40);
    let keep = m.alloc(1, true).unwrap();
    let lose = m.alloc(0, true).unwrap();
    m.write_u64(keep + FRAME_SIZE, 0x1122).unwrap();
    m.write_u64(lose, 0x3344).unwrap();
    m.write_u64(0x5000_0000, 1).unwrap(); // written but never allocated
    m.preserve(keep, 1).unwrap();
    let r = m.scrub();
    assert_eq!(r.preserved_frames, 2);
    assert_eq!(r.poisoned_frames, 2);
    assert_eq!(m.read_u64(keep + FRAME_SIZE).unwrap(), 0x1122);
    assert_eq!(m.read_u64(keep).unwrap(), 0, "zeroed, preserved frame keeps its zeros");
    assert_eq!(m.read_u64(lose).unwrap(), 0x6b6b_6b6b_6b6b_6b6b);
    assert_eq!(m.read_u64(0x7000_0000).unwrap(), 0x6b6b_6b6b_6b6b_6b6b, "never touched");
    let s = m.stats();
    assert_eq!(s.frames_allocated, 2, "preserved block stays allocated for the new kernel");
    assert_eq!(s.frames_preserved, 0, "marks are consumed");
    assert_eq!(s.frames_resident, 1);
    assert!(m.is_allocated(keep, 2 * FRAME_SIZE));
    m.claim(lose, FRAME_SIZE).unwrap();
    let z = m.alloc(0, true).unwrap();
    assert_eq!(m.read_u64(z).unwrap(), 0, "zeroed allocation after scrub really is zero");
}

#[test]
fn scrub_frees_exactly_the_gaps_between_preserved_blocks() {
    // Blocks next to each other, next to the reserved ranges and at the end of memory: the
    // free extents are the gaps between them less the reserved ranges, and fills survive only
    // inside the blocks (also where one block's fill continues into the next).
    let size = 8 << 20; // 2048 frames; the low reserved range is the first 256
    let mut m = mem(size);
    let blocks = [(0x10_0000, 0), (0x10_1000, 0), (0x10_2000, 1), (0x10_4000, 0), (0x20_0000, 2), (size - 0x2000, 1)];
    for &(pa, order) in &blocks {
        m.claim(pa, FRAME_SIZE << order).unwrap();
        m.fill_range(pa, FRAME_SIZE << order, 0x5a).unwrap();
        m.preserve(pa, order).unwrap();
    }
    let lost = m.alloc(0, false).unwrap();
    m.fill_range(lost, FRAME_SIZE, 0x5a).unwrap();
    let r = m.scrub();
    let kept: u64 = blocks.iter().map(|&(_, o)| 1u64 << o).sum();
    assert_eq!(r.preserved_frames, kept);
    assert_eq!(r.free_frames, 2048 - 256 - kept);
    assert_eq!(m.stats().frames_allocated, kept);
    for &(pa, order) in &blocks {
        assert!(m.is_allocated(pa, FRAME_SIZE << order));
        let last = pa + (FRAME_SIZE << order) - 8;
        assert_eq!((m.read_u64(pa).unwrap(), m.read_u64(last).unwrap()), (0x5a5a_5a5a_5a5a_5a5a, 0x5a5a_5a5a_5a5a_5a5a));
    }
    assert!(!m.is_allocated(lost, FRAME_SIZE));
    assert_eq!(m.read_u64(lost).unwrap(), 0x6b6b_6b6b_6b6b_6b6b, "its fill went with it");
    // Every free frame can be had, and none of them is preserved or reserved.
    let mut got = 0;
    while let Ok(pa) = m.alloc(0, false) {
        assert!(pa >= 0x10_0000 && !blocks.iter().any(|&(b, o)| pa >= b && pa < b + (FRAME_SIZE << o)), "{pa:#x}");
        got += 1;
    }
    assert_eq!(got, r.free_frames);
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        #[test]
        fn writes_read_back_like_a_byte_map(ops in prop::collection::vec((0u64..(64 << 20) - 64, prop::collection::vec(any::<u8>(), 1..64)), 1..64)) {
            let mut m = PhysMem::new(Config { size: 64 << 20, seed: 3 }).unwrap();
            let mut model: HashMap<u64, u8> = HashMap::new();
            for (pa, data) in &ops {
                m.write(*pa, data).unwrap();
                for (i, b) in data.iter().enumerate() { model.insert(pa + i as u64, *b); }
            }
            for (pa, data) in &ops {
                let mut buf = vec![0; data.len()];
                m.read(*pa, &mut buf).unwrap();
                for (i, b) in buf.iter().enumerate() {
                    prop_assert_eq!(*b, model[&(pa + i as u64)]);
                }
            }
        }

        #[test]
        fn fills_and_writes_read_back_like_a_flat_array(ops in prop::collection::vec((any::<bool>(), 0u64..(2 << 20), 0u64..40_000, any::<u8>()), 1..40)) {
            let size = 2u64 << 20;
            let mut m = PhysMem::new(Config { size, seed: 1 }).unwrap();
            let mut model = vec![0u8; size as usize];
            for (is_fill, pa, len, byte) in ops {
                let len = len.min(size - pa);
                if is_fill {
                    m.fill_range(pa, len, byte).unwrap();
                } else {
                    m.write(pa, &vec![byte; len as usize]).unwrap();
                }
                model[pa as usize..(pa + len) as usize].fill(byte);
            }
            let mut all = vec![0u8; size as usize];
            m.read(0, &mut all).unwrap();
            prop_assert!(all == model, "memory differs from the flat model");
        }

        #[test]
        fn alloc_free_keeps_accounting(orders in prop::collection::vec(0u8..6, 1..200), seed in any::<u64>()) {
            let mut m = PhysMem::new(Config { size: 256 << 20, seed }).unwrap();
            let free0 = m.stats().frames_free;
            let mut blocks = vec![];
            for o in orders {
                let pa = m.alloc(o, false).unwrap();
                prop_assert_eq!(pa % (FRAME_SIZE << o), 0);
                for &(q, qo) in &blocks {
                    let (a, b) = (pa, pa + (FRAME_SIZE << o));
                    let (c, d) = (q, q + (FRAME_SIZE << qo));
                    prop_assert!(b <= c || d <= a, "overlap");
                }
                blocks.push((pa, o));
            }
            let used: u64 = blocks.iter().map(|&(_, o)| 1u64 << o).sum();
            prop_assert_eq!(m.stats().frames_free, free0 - used);
            for (pa, o) in blocks { m.free_order(pa, o).unwrap(); }
            prop_assert_eq!(m.stats().frames_free, free0);
        }
    }
}

#[test]
fn filling_untouched_memory_costs_nothing_and_reads_back() {
    let mut m = mem(1 << 40);
    let before = m.stats().host_bytes;
    m.fill_range(0x1_0000_0000, 1 << 39, 0x55).unwrap(); // 512 GiB
    assert_eq!(m.stats().frames_resident, 0);
    assert!(m.stats().host_bytes < before + 4096);
    assert_eq!(m.read_u64(0x1_0000_0000).unwrap(), 0x5555_5555_5555_5555);
    assert_eq!(m.read_u64(0x1_0000_0000 + (1 << 39) - 8).unwrap(), 0x5555_5555_5555_5555);
    assert_eq!(m.read_u64(0x1_0000_0000 + (1 << 39)).unwrap(), 0);
    // a partial-frame fill inside it materialises just that frame
    m.fill_range(0x1_0000_0800, 0x10, 0x11).unwrap();
    assert_eq!(m.stats().frames_resident, 1);
    let mut b = [0u8; 4];
    m.read(0x1_0000_07fe, &mut b).unwrap();
    assert_eq!(b, [0x55, 0x55, 0x11, 0x11]);
    // overlapping fills split and coalesce
    m.fill_range(0x1_0020_0000, 0x1000, 0).unwrap();
    assert_eq!(m.read_u64(0x1_0020_0000).unwrap(), 0);
    assert_eq!(m.read_u64(0x1_0020_1000).unwrap(), 0x5555_5555_5555_5555);
    m.fill_range(0x1_0020_0000, 0x1000, 0x55).unwrap();
    assert_eq!(m.read_u64(0x1_0020_0000).unwrap(), 0x5555_5555_5555_5555);
}

#[test]
fn preserve_many_is_all_or_nothing() {
    let mut m = mem(1 << 30);
    let pas: Vec<u64> = (0..8).map(|_| m.alloc(1, false).unwrap()).collect();
    m.preserve_many(&pas[..4], 1).unwrap();
    assert_eq!(m.preserved().len(), 4);
    // a block already marked (by an earlier call) fails the batch after two new marks
    let before = m.preserved();
    let batch = [pas[4], pas[5], pas[0], pas[6]];
    assert!(matches!(m.preserve_many(&batch, 1), Err(Error::Preserved { .. })));
    assert_eq!(m.preserved(), before, "the marks of the failed call are removed, the earlier ones kept");
    // a duplicate inside the batch
    assert!(matches!(m.preserve_many(&[pas[4], pas[4]], 1), Err(Error::Preserved { .. })));
    assert_eq!(m.preserved(), before);
    // a misaligned block, a bad order: the usual errors
    assert!(matches!(m.preserve_many(&[pas[4], pas[7] + FRAME_SIZE], 1), Err(Error::Unaligned { .. })));
    assert_eq!(m.preserve_many(&[pas[4]], MAX_ORDER + 1).unwrap_err(), Error::BadOrder { order: MAX_ORDER + 1 });
    assert_eq!(m.preserved(), before);
    m.preserve_many(&[], 0).unwrap();
    m.preserve_many(&pas[4..], 1).unwrap();
    assert_eq!(m.stats().frames_preserved, 16);
}

#[test]
fn preserve_many_of_many_blocks_is_all_or_nothing_with_the_first_error() {
    // Past 64 blocks the checks are merged; a failure falls back to block-by-block order, so
    // the error is the first failing block's and no mark of the call stays.
    let mut m = mem(1 << 30);
    let pas: Vec<u64> = (0..200).map(|_| m.alloc(1, false).unwrap()).collect();
    let lone = m.alloc(1, false).unwrap();
    m.preserve(lone, 1).unwrap();
    let free_one = m.alloc(1, false).unwrap();
    m.free(free_one, 2 * FRAME_SIZE).unwrap();
    let cases: [(Vec<u64>, Error); 4] = [
        ([&pas[..100], &[pas[50]]].concat(), Error::Preserved { pa: pas[50], len: 2 * FRAME_SIZE }),
        ([&pas[..100], &[lone]].concat(), Error::Preserved { pa: lone, len: 2 * FRAME_SIZE }),
        ([&pas[..100], &[free_one]].concat(), Error::NotAllocated { pa: free_one, len: 2 * FRAME_SIZE }),
        ([&pas[..100], &[pas[3] + FRAME_SIZE]].concat(), Error::Unaligned { pa: pas[3] + FRAME_SIZE, align: 2 * FRAME_SIZE }),
    ];
    for (list, want) in cases {
        assert_eq!(m.preserve_many(&list, 1), Err(want));
        assert_eq!(m.preserved(), vec![(lone, 1)], "nothing of the call stays");
    }
    let mut reversed = pas.clone();
    reversed.reverse();
    m.preserve_many(&reversed, 1).unwrap();
    assert_eq!(m.stats().frames_preserved, 2 * 201);
    assert!(pas.iter().all(|&pa| m.is_preserved(pa) && m.is_preserved(pa + FRAME_SIZE)));
    assert_eq!(m.preserve_many(&pas[..64], 1), Err(Error::Preserved { pa: pas[0], len: 2 * FRAME_SIZE }));
}

#[test]
fn is_allocated_many_checks_every_range() {
    let mut m = mem(1 << 30);
    let pas: Vec<u64> = (0..4).map(|_| m.alloc(0, false).unwrap()).collect();
    assert!(m.is_allocated_many(&pas, FRAME_SIZE));
    assert!(m.is_allocated_many(&[], FRAME_SIZE), "vacuously true");
    let mut with_free = pas.clone();
    m.free(pas[2], FRAME_SIZE).unwrap();
    assert!(!m.is_allocated_many(&with_free, FRAME_SIZE));
    with_free.remove(2);
    assert!(m.is_allocated_many(&with_free, FRAME_SIZE));
    assert!(!m.is_allocated_many(&[0], FRAME_SIZE), "reserved low memory");
    assert!(!m.is_allocated_many(&with_free, 0), "an empty range is not a frame range");
    assert!(!m.is_allocated_many(&[1 << 30], FRAME_SIZE), "beyond memory");
}

#[test]
fn is_allocated_many_merges_many_ranges_as_each_would_answer() {
    // Past 64 ranges the check is a merge against the extents: it must agree with the
    // one-by-one answer for every mix (unsorted, duplicates, 2-frame ranges, a free frame, a
    // reserved one, one straddling the end of an allocation).
    let mut m = mem(1 << 30);
    let pas: Vec<u64> = (0..300).map(|_| m.alloc(1, false).unwrap()).collect();
    for &pa in pas.iter().step_by(7) {
        m.free(pa + FRAME_SIZE, FRAME_SIZE).unwrap();
    }
    let firsts: Vec<u64> = pas.iter().rev().copied().collect();
    let seconds: Vec<u64> = pas.iter().map(|pa| pa + FRAME_SIZE).collect();
    let mut mixed = firsts.clone();
    mixed.extend_from_slice(&firsts[..10]);
    for (list, len) in [(&firsts, FRAME_SIZE), (&seconds, FRAME_SIZE), (&firsts, 2 * FRAME_SIZE), (&mixed, FRAME_SIZE)] {
        let one_by_one = list.iter().all(|&pa| m.is_allocated(pa, len));
        assert_eq!(m.is_allocated_many(list, len), one_by_one, "{} ranges of {len:#x}", list.len());
    }
    assert!(m.is_allocated_many(&firsts, FRAME_SIZE));
    assert!(!m.is_allocated_many(&seconds, FRAME_SIZE));
    let mut with_reserved = firsts.clone();
    with_reserved.push(0x1000);
    assert!(!m.is_allocated_many(&with_reserved, FRAME_SIZE), "reserved low memory");
    let kept: Vec<u64> = pas.iter().enumerate().filter(|(i, _)| i % 7 != 0).map(|(_, pa)| pa + FRAME_SIZE).collect();
    assert!(kept.len() >= 64 && m.is_allocated_many(&kept, FRAME_SIZE));
}

#[test]
fn read_u64s_matches_read_u64_across_frames_and_fills() {
    let mut m = mem(1 << 30);
    let pa = m.alloc(1, true).unwrap();
    for i in 0..1024u64 {
        if i % 3 == 0 {
            m.write_u64(pa + 8 * i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
        }
    }
    m.fill_range(pa + FRAME_SIZE, FRAME_SIZE, 0x6b).unwrap();
    let mut words = vec![0u64; 1000];
    m.read_u64s(pa + 200, &mut words).unwrap();
    for (i, &w) in words.iter().enumerate() {
        assert_eq!(w, m.read_u64(pa + 200 + 8 * i as u64).unwrap(), "word {i}");
    }
    let untouched = 0x2000_0000;
    let mut t = [1u64; 3];
    m.read_u64s(untouched, &mut t).unwrap();
    assert_eq!(t, [0; 3]);
    assert_eq!(m.read_u64s(pa + 4, &mut t).unwrap_err(), Error::Unaligned { pa: pa + 4, align: 8 });
    assert!(matches!(m.read_u64s((1 << 30) - 16, &mut t), Err(Error::OutOfRange { .. })));
    m.read_u64s(1 << 30, &mut []).unwrap();
}

#[test]
fn free_releases_frame_storage_and_host_bytes_return_to_zero() {
    let mut m = mem(1 << 30);
    assert_eq!(m.stats().host_bytes, 0, "an untouched memory holds no frame storage");
    let data = [0xa5u8; FRAME_SIZE as usize];
    let mut pas = vec![];
    for i in 0..2000 {
        let pa = m.alloc((i % 3) as u8, i % 2 == 0).unwrap();
        m.write(pa, &data).unwrap();
        pas.push((pa, (i % 3) as u8));
    }
    let s = m.stats();
    assert_eq!(s.frames_resident, 2000);
    assert!(s.host_bytes >= 2000 * FRAME_SIZE, "{s:?}");
    for (i, &(pa, order)) in pas.iter().enumerate() {
        m.free_order(pa, order).unwrap();
        // Poison is what a frame without data reads as: nothing is kept to show it.
        assert_eq!(m.read_u64(pa).unwrap(), 0x6b6b_6b6b_6b6b_6b6b);
        assert_eq!(m.stats().frames_resident, 2000 - 1 - i as u64);
    }
    let s = m.stats();
    assert_eq!((s.frames_resident, s.host_bytes, s.frames_allocated), (0, 0, 0), "{s:?}");
    // Metadata is counted apart: the free extents coalesced back, but freed blocks read as
    // poison and the never-touched frames between them as zero, one fill extent per gap.
    assert!(s.metadata_bytes <= 2001 * 48 + 4 * 40, "{s:?}");
}

#[test]
fn alloc_write_free_cycles_keep_no_storage() {
    let mut m = mem(1 << 30);
    let data = [1u8; FRAME_SIZE as usize];
    for _ in 0..20_000 {
        let pa = m.alloc(0, false).unwrap();
        m.write(pa, &data).unwrap();
        assert_eq!(m.read_u64(pa).unwrap(), 0x0101_0101_0101_0101);
        m.free_order(pa, 0).unwrap();
    }
    let s = m.stats();
    assert_eq!((s.frames_resident, s.host_bytes), (0, 0), "{s:?}");
}

#[test]
fn whole_frame_fills_release_storage_partial_ones_keep_it() {
    let mut m = mem(1 << 30);
    let pa = m.alloc(2, false).unwrap();
    m.write(pa, &[7u8; 4 * FRAME_SIZE as usize]).unwrap();
    assert_eq!(m.stats().frames_resident, 4);
    // Zero the middle two frames and a few bytes on either side.
    m.fill_range(pa + FRAME_SIZE - 8, 2 * FRAME_SIZE + 16, 0).unwrap();
    assert_eq!(m.stats().frames_resident, 2, "the two whole frames read as their fill now");
    let mut b = vec![0u8; 4 * FRAME_SIZE as usize];
    m.read(pa, &mut b).unwrap();
    let f = FRAME_SIZE as usize;
    assert!(b[..f - 8].iter().all(|&x| x == 7) && b[f - 8..3 * f + 8].iter().all(|&x| x == 0) && b[3 * f + 8..].iter().all(|&x| x == 7));
    m.fill_range(pa, 4 * FRAME_SIZE, 0x6b).unwrap();
    assert_eq!(m.stats().host_bytes, 0);
}

#[test]
fn scrub_releases_storage_of_everything_not_preserved() {
    let mut m = mem(1 << 40);
    let keep = m.alloc(0, false).unwrap();
    m.write_u64(keep, 1).unwrap();
    let lose = m.alloc(0, false).unwrap();
    m.write_u64(lose, 2).unwrap();
    m.preserve(keep, 0).unwrap();
    m.scrub();
    assert_eq!(m.stats().frames_resident, 1);
    m.free_order(keep, 0).unwrap();
    assert_eq!(m.stats().host_bytes, 0);
    m.write_u64(lose, 3).unwrap();
    m.scrub();
    assert_eq!(m.stats().host_bytes, 0, "nothing preserved: nothing kept");
    assert_eq!(m.read_u64(lose).unwrap(), 0x6b6b_6b6b_6b6b_6b6b);
}

#[test]
fn flat_up_to_flat_max_and_dma_reads_see_fills_data_and_zero_words() {
    let _budget = crate::store::BUDGET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut m = mem(1 << 40);
    assert!(!m.is_flat(), "no storage before the first write");
    let pa = m.alloc(0, true).unwrap();
    m.write_u64(pa, 7).unwrap();
    assert!(m.is_flat());
    // A resident frame's zero word, its data, a freed frame's poison, a filled frame's byte.
    assert_eq!(m.dma_read_u64(pa + 8), Some(0));
    assert_eq!(m.dma_read_u64(pa), Some(7));
    let other = m.alloc(0, false).unwrap();
    m.write_u64(other, 1).unwrap();
    m.free(other, FRAME_SIZE).unwrap();
    assert_eq!(m.dma_read_u64(other), Some(u64::from_ne_bytes([POISON; 8])));
    m.fill_range(other, FRAME_SIZE, 0x5a).unwrap();
    assert_eq!(m.dma_read_u64(other + 64), Some(0x5a5a_5a5a_5a5a_5a5a));
    assert_eq!(m.dma_read_u64(1 << 39), Some(0), "never written: the cold-boot fill");
    m.free(pa, FRAME_SIZE).unwrap();
    assert!(!m.is_flat() && m.host_bytes() == 0, "the mapping goes with the last frame");
    let mut big = mem(FLAT_MAX * 2);
    big.write_u64(FLAT_MAX, 1).unwrap();
    assert!(!big.is_flat(), "larger than FLAT_MAX: the radix index");
    assert_eq!(big.dma_read_u64(FLAT_MAX), Some(1));
}
