use super::invalidation::psi_aligned_address;
use super::*;
use crate::{ContextEntry, FaultReason, FaultRecord, Gather, PageTable, Prot, RootEntry};
use physmem::{Config, PhysMem};

const SID: u16 = 0x0100; // 01:00.0
const DID: u16 = 7;

struct Rig {
    mem: PhysMem,
    unit: Unit,
    pt: PageTable,
    root: u64,
    ctx_table: u64,
}

impl Rig {
    fn new(config: UnitConfig, levels: u32) -> Rig {
        let mut mem = PhysMem::new(Config { size: 64 << 30, seed: 42 }).unwrap();
        let unit = Unit::new(config).unwrap();
        let pt = PageTable::new(&mut mem, unit.pagetable_config(levels).unwrap()).unwrap();
        let root = mem.alloc(0, true).unwrap();
        let ctx_table = mem.alloc(0, true).unwrap();
        let re = RootEntry::new(ctx_table);
        mem.write_u64(root + 16 * (SID >> 8) as u64, re.lo).unwrap();
        let mut rig = Rig { mem, unit, pt, root, ctx_table };
        rig.set_context(ContextEntry::new(rig.pt.pgd(), rig.pt.aw(), DID, TranslationType::MultiLevel, false));
        unit_on(&mut rig.unit, root);
        rig
    }

    fn set_context(&mut self, ce: ContextEntry) {
        let pa = self.ctx_table + 16 * (SID & 0xff) as u64;
        self.mem.write_u64(pa, ce.lo).unwrap();
        self.mem.write_u64(pa + 8, ce.hi).unwrap();
    }

    fn map(&mut self, iova: u64, pa: u64, size: u64, prot: Prot) {
        let mut g = Gather::default();
        self.pt.map(&mut self.mem, iova, pa, size, prot, &mut g).unwrap();
        assert!(g.freelist().is_empty());
    }

    fn xlate(&mut self, iova: u64, write: bool) -> std::result::Result<u64, FaultReason> {
        self.unit.translate(&self.mem, SID, iova, write)
    }

    fn leaf_pa(&self, iova: u64) -> u64 {
        self.pt.walk(&self.mem, iova).unwrap().last().unwrap().pte_pa
    }
}

fn unit_on(unit: &mut Unit, root: u64) {
    unit.write_reg(RTADDR_REG, 8, root).unwrap();
    unit.write_reg(GCMD_REG, 4, GCMD_SRTP as u64).unwrap();
    assert_ne!(unit.read_reg(GSTS_REG, 4).unwrap() as u32 & GSTS_RTPS, 0);
    unit.write_reg(GCMD_REG, 4, GCMD_TE as u64).unwrap();
    assert_ne!(unit.read_reg(GSTS_REG, 4).unwrap() as u32 & GSTS_TES, 0);
}

#[test]
fn cap_and_ecap_encode_the_configuration() {
    let u = Unit::new(UnitConfig::default()).unwrap();
    let cap = u.cap();
    use crate::regs::field::*;
    assert_eq!(cap_sagaw(cap), 0b0110, "39- and 48-bit");
    assert_eq!(cap_mgaw(cap), 48);
    assert_eq!(cap >> 16 & 0x3f, 0x2f);
    assert_eq!(cap_super_page_val(cap), 3);
    assert_eq!(cap_nd(cap), 6);
    assert_ne!(cap & CAP_PSI, 0);
    assert_eq!(cap_max_amask_val(cap), 18);
    assert_eq!(cap_num_fault_regs(cap), 8);
    assert_eq!(u.ecap() & (ECAP_C | ECAP_SC | ECAP_PT), ECAP_C | ECAP_SC | ECAP_PT);
    let u57 = Unit::new(UnitConfig { address_width: 57, ..Default::default() }).unwrap();
    assert_eq!(cap_sagaw(u57.cap()), 0b1110);
    let u39 = Unit::new(UnitConfig { address_width: 39, superpage_1g: false, psi: false, ..Default::default() }).unwrap();
    assert_eq!(cap_sagaw(u39.cap()), 0b0010);
    assert_eq!(u39.cap() >> 16 & 0x3f, 0x26);
    assert_eq!(cap_super_page_val(u39.cap()), 1);
    assert_eq!(u39.cap() & CAP_PSI, 0);
    assert!(u39.pagetable_config(4).is_err());
    assert!(Unit::new(UnitConfig { address_width: 40, ..Default::default() }).is_err());
    assert!(Unit::new(UnitConfig { fault_records: 0, ..Default::default() }).is_err());
}

/// Cache sizes are refused before anything is allocated: a size that wrapped from -1 in a
/// binding (u32::MAX) is a configuration error, not an allocation failure that aborts.
#[test]
fn cache_sizes_are_capped_before_allocation() {
    let with = |f: fn(&mut UnitConfig)| {
        let mut c = UnitConfig::default();
        f(&mut c);
        Unit::new(c)
    };
    for bad in [
        with(|c| c.iotlb_entries = u32::MAX),
        with(|c| c.iotlb_entries = MAX_CACHE_ENTRIES + 1),
        with(|c| c.psc_entries = u32::MAX),
        with(|c| c.context_cache_entries = MAX_CACHE_ENTRIES + 1),
        with(|c| c.iotlb_ways = 0),
        with(|c| c.iotlb_ways = MAX_IOTLB_WAYS + 1),
        with(|c| c.iotlb_ways = u32::MAX),
    ] {
        let e = bad.unwrap_err();
        assert!(matches!(e, Error::BadConfig(_)), "{e:?}");
        assert_eq!(e.code(), "ERR_VTD_CONFIG");
    }
    let max = with(|c| {
        c.iotlb_entries = MAX_CACHE_ENTRIES;
        c.iotlb_ways = MAX_IOTLB_WAYS;
        c.psc_entries = MAX_CACHE_ENTRIES;
        c.context_cache_entries = MAX_CACHE_ENTRIES;
    })
    .unwrap();
    assert_eq!(max.cache_capacity(), (MAX_CACHE_ENTRIES as usize, MAX_CACHE_ENTRIES as usize, MAX_CACHE_ENTRIES as usize));
    let off = with(|c| {
        c.iotlb_entries = 0;
        c.psc_entries = 0;
        c.context_cache_entries = 0;
    })
    .unwrap();
    assert_eq!(off.cache_capacity(), (0, 0, 0));
}

/// The unit QEMU 7.2 emulates with `-device intel-iommu,intremap=on,caching-mode=on` (legacy mode,
/// aw-bits 39, under TCG): CAP and ECAP as a Linux 7.3 guest read them, field by field.
#[test]
fn qemu_7_2_intel_iommu_registers() {
    let u = Unit::new(UnitConfig {
        address_width: 39,
        caching_mode: true,
        fault_records: 1,
        coherent: false,
        snoop_control: false,
        queued_invalidation: true,
        interrupt_remapping: true,
        mhmv: 15,
        ..Default::default()
    })
    .unwrap();
    use crate::regs::field::*;
    let (cap, ecap) = (u.cap(), u.ecap());
    assert_eq!(cap, 0x00d2_008c_2226_0286, "cap {cap:#018x}");
    assert_eq!(ecap, 0x0000_0000_00f0_0f4a, "ecap {ecap:#018x}");
    assert_eq!(cap_nd(cap), 6);
    assert_ne!(cap & CAP_CM, 0);
    assert_eq!(cap_sagaw(cap), 0b0010, "39-bit only");
    assert_eq!(cap_mgaw(cap), 39);
    assert_eq!(cap_fault_reg_offset(cap), 0x220);
    assert_eq!(cap_super_page_val(cap), 3);
    assert_ne!(cap & CAP_PSI, 0);
    assert_eq!(cap_num_fault_regs(cap), 1);
    assert_eq!(cap_max_amask_val(cap), 18);
    assert_eq!(cap >> 54 & 3, 3, "DWD and DRD");
    assert_eq!(ecap & (ECAP_C | ECAP_DT | ECAP_SC), 0);
    assert_eq!(ecap & (ECAP_QI | ECAP_IR | ECAP_PT), ECAP_QI | ECAP_IR | ECAP_PT);
    assert_eq!(ecap_iotlb_offset(ecap), 0xf0);
    assert_eq!(ecap >> 20 & 0xf, 15, "MHMV");
    assert_eq!(ecap & 1 << 4, 0, "no EIM");
    assert!(Unit::new(UnitConfig { mhmv: 16, ..Default::default() }).is_err());
}

#[test]
fn translation_off_passes_addresses_through() {
    let mut unit = Unit::new(UnitConfig::default()).unwrap();
    let mem = PhysMem::new(Config { size: 1 << 30, seed: 0 }).unwrap();
    assert_eq!(unit.translate(&mem, SID, 0x1234_5678, true), Ok(0x1234_5678));
    assert_eq!(unit.stats().passthrough, 1);
}

#[test]
fn translates_through_4k_2m_and_1g_leaves() {
    for levels in [3, 4, 5] {
        let cfg = UnitConfig { address_width: 57, ..Default::default() };
        let mut r = Rig::new(cfg, levels);
        r.map(0x1000, 0x4000_5000, 0x1000, Prot::RW);
        r.map(0x20_0000, 0x8020_0000, 0x20_0000, Prot::RW);
        r.map(0x4000_0000, 0x1_4000_0000, 0x4000_0000, Prot::R);
        assert_eq!(r.xlate(0x1abc, false), Ok(0x4000_5abc));
        assert_eq!(r.xlate(0x3f_fff8, true), Ok(0x803f_fff8));
        assert_eq!(r.xlate(0x7fff_fff0, false), Ok(0x1_7fff_fff0));
        assert_eq!(r.xlate(0x7fff_fff0, true), Err(FaultReason::Write));
        let steps = r.pt.walk(&r.mem, 0x20_0000).unwrap();
        assert_eq!(steps.len() as u32, levels - 1, "2 MiB leaf at level 2");
        assert_eq!(steps.last().unwrap().pte, 0x8020_0000 | SL_PS | SL_R | SL_W);
        let steps = r.pt.walk(&r.mem, 0x4000_0000).unwrap();
        assert_eq!(steps.last().unwrap().pte, 0x1_4000_0000 | SL_PS | SL_R);
        assert_eq!(steps.last().unwrap().level, 3);
        for s in &steps[..steps.len() - 1] {
            assert_eq!(s.pte & 0xfff, SL_R | SL_W, "non-leaf entries are table|R|W");
        }
    }
}

#[test]
fn superpage_selection_follows_alignment_and_sllps() {
    // 2 MiB + 4 KiB at an IOVA/PA pair aligned to 2 MiB: one 2M leaf and one 4K leaf.
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0x4000_0000, 0x2_0000_0000, 0x20_1000, Prot::RW);
    assert_eq!(r.pt.walk(&r.mem, 0x4000_0000).unwrap().last().unwrap().level, 2);
    assert_eq!(r.pt.walk(&r.mem, 0x4020_0000).unwrap().last().unwrap().level, 1);
    // misaligned PA: only 4K pages even though the IOVA is 1 GiB aligned
    r.map(0x8000_0000, 0x3_0000_1000, 0x40_0000, Prot::RW);
    assert_eq!(r.pt.walk(&r.mem, 0x8000_0000).unwrap().last().unwrap().level, 1);
    // a 1 GiB aligned GiB becomes a 1G leaf; without SLLPS 1G it becomes 512 2M leaves
    r.map(0xc000_0000, 0x4_0000_0000, 0x4000_0000, Prot::RW);
    assert_eq!(r.pt.walk(&r.mem, 0xc000_0000).unwrap().last().unwrap().level, 3);
    let mut r2 = Rig::new(UnitConfig { superpage_1g: false, ..Default::default() }, 4);
    r2.map(0xc000_0000, 0x4_0000_0000, 0x4000_0000, Prot::RW);
    assert_eq!(r2.pt.walk(&r2.mem, 0xc000_0000).unwrap().last().unwrap().level, 2);
    let mut r3 = Rig::new(UnitConfig { superpage_1g: false, superpage_2m: false, ..Default::default() }, 3);
    r3.map(0, 0x4_0000_0000, 0x40_0000, Prot::RW);
    assert_eq!(r3.pt.walk(&r3.mem, 0x20_0000).unwrap().last().unwrap().level, 1);
    assert_eq!(r3.pt.iova_to_phys(&r3.mem, 0x20_0123).unwrap(), Some(0x4_0020_0123));
}

#[test]
fn map_errors_change_nothing() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0x10_0000, 0x1000_0000, 0x2000, Prot::RW);
    let mut g = Gather::default();
    let before = r.mem.stats().frames_allocated;
    assert_eq!(r.pt.map(&mut r.mem, 0x0f_f000, 0x2000_0000, 0x3000, Prot::RW, &mut g), Err(Error::AlreadyMapped { iova: 0x10_0000 }));
    assert_eq!(r.pt.map(&mut r.mem, 0x1001, 0, 0x1000, Prot::RW, &mut g), Err(Error::Unaligned { value: 0x1001, align: 4096 }));
    assert_eq!(r.pt.map(&mut r.mem, 0, 0, 0x1000, Prot::default(), &mut g), Err(Error::NoPermission));
    assert_eq!(r.pt.map(&mut r.mem, 0, 0, 0, Prot::RW, &mut g), Err(Error::EmptyRange));
    assert!(matches!(r.pt.map(&mut r.mem, 1 << 48, 0, 0x1000, Prot::RW, &mut g), Err(Error::OutOfRange { .. })));
    assert!(matches!(r.pt.map(&mut r.mem, 0, 64 << 30, 0x1000, Prot::RW, &mut g), Err(Error::Mem(_))));
    assert_eq!(r.mem.stats().frames_allocated, before);
    assert_eq!(r.pt.iova_to_phys(&r.mem, 0x0f_f000).unwrap(), None);
}

#[test]
fn every_context_and_root_fault_in_qemu_order() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0, 0x1000_0000, 0x1000, Prot::RW);
    let ce = ContextEntry::new(r.pt.pgd(), r.pt.aw(), DID, TranslationType::MultiLevel, false);
    let sid_pa = r.ctx_table + 16 * (SID & 0xff) as u64;
    let root_pa = r.root + 16;
    let expect = |r: &mut Rig, reason: FaultReason| {
        r.unit.invalidate_context(ContextInvalidation::Global);
        assert_eq!(r.xlate(0, false), Err(reason));
    };
    // 0x8: the root table is not readable (beyond memory)
    r.unit.set_root_table(r.mem.size());
    expect(&mut r, FaultReason::RootTableInv);
    r.unit.set_root_table(r.root);
    // 0x1, 0xA
    r.mem.write_u64(root_pa, 0).unwrap();
    expect(&mut r, FaultReason::RootEntryP);
    r.mem.write_u64(root_pa, RootEntry::new(r.ctx_table).lo | 0x2).unwrap();
    expect(&mut r, FaultReason::RootEntryRsvd);
    r.mem.write_u64(root_pa, RootEntry::new(r.ctx_table).lo).unwrap();
    r.mem.write_u64(root_pa + 8, 1).unwrap();
    expect(&mut r, FaultReason::RootEntryRsvd);
    r.mem.write_u64(root_pa + 8, 0).unwrap();
    // 0x9: context table beyond memory
    r.mem.write_u64(root_pa, RootEntry::new(r.mem.size() - 4096 * 2 + (1 << 45)).lo).unwrap();
    expect(&mut r, FaultReason::ContextTableInv);
    r.mem.write_u64(root_pa, RootEntry::new(r.ctx_table).lo).unwrap();
    // 0x2, 0xB (lo and hi), 0x3 (AW, TT)
    r.mem.write_u64(sid_pa, 0).unwrap();
    expect(&mut r, FaultReason::ContextEntryP);
    r.mem.write_u64(sid_pa, ce.lo | 0x10).unwrap();
    expect(&mut r, FaultReason::ContextEntryRsvd);
    r.mem.write_u64(sid_pa, ce.lo).unwrap();
    r.mem.write_u64(sid_pa + 8, ce.hi | 0x80).unwrap();
    expect(&mut r, FaultReason::ContextEntryRsvd);
    r.mem.write_u64(sid_pa + 8, (ce.hi & !7) | 3).unwrap(); // 5-level on a 48-bit unit
    expect(&mut r, FaultReason::ContextEntryInv);
    r.mem.write_u64(sid_pa + 8, ce.hi).unwrap();
    r.mem.write_u64(sid_pa, ce.lo | 3 << 2).unwrap();
    expect(&mut r, FaultReason::ContextEntryInv);
    r.mem.write_u64(sid_pa, ce.lo | 1 << 2).unwrap(); // TT=1 without ECAP.DT
    expect(&mut r, FaultReason::ContextEntryInv);
    // pass-through with ECAP.PT
    r.mem.write_u64(sid_pa, (ce.lo & !(3 << 2)) | 2 << 2).unwrap();
    r.unit.invalidate_context(ContextInvalidation::Global);
    assert_eq!(r.xlate(0x1234_5000, true), Ok(0x1234_5000));
    r.mem.write_u64(sid_pa, ce.lo).unwrap();
    r.unit.invalidate_context(ContextInvalidation::Global);
    assert_eq!(r.xlate(0x10, true), Ok(0x1000_0010));
}

#[test]
fn every_paging_fault() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0, 0x1000_0000, 0x1000, Prot::R);
    // 0x4: beyond the 48-bit width of a 4-level domain
    assert_eq!(r.xlate(1 << 48, false), Err(FaultReason::AddrBeyondMgaw));
    // 0x6 / 0x5: not present yields read/write faults, and R-only denies writes
    assert_eq!(r.xlate(0x5000, false), Err(FaultReason::Read));
    assert_eq!(r.xlate(0x5000, true), Err(FaultReason::Write));
    assert_eq!(r.xlate(0, true), Err(FaultReason::Write));
    // 0xC: reserved bit 11 (SNP) set in a 4K leaf on a unit without snoop control
    let mut nosc = Rig::new(UnitConfig { snoop_control: false, ..Default::default() }, 4);
    nosc.map(0, 0x1000_0000, 0x1000, Prot::RW);
    let leaf = nosc.leaf_pa(0);
    nosc.mem.write_u64(leaf, 0x1000_0000 | SL_SNP | 3).unwrap();
    assert_eq!(nosc.xlate(0, false), Err(FaultReason::PagingEntryRsvd));
    // ... and permission is checked before reserved bits
    nosc.mem.write_u64(leaf, 0x1000_0000 | SL_SNP | 1).unwrap();
    assert_eq!(nosc.xlate(0, true), Err(FaultReason::Write));
    // 0xC: PS at level 4
    let top = r.pt.walk(&r.mem, 0).unwrap()[0];
    r.mem.write_u64(top.pte_pa, top.pte | SL_PS).unwrap();
    r.unit.invalidate_iotlb(IotlbInvalidation::Domain(DID)).unwrap(); // the PML4E is cached
    assert_eq!(r.xlate(0, false), Err(FaultReason::PagingEntryRsvd));
    r.mem.write_u64(top.pte_pa, top.pte).unwrap();
    r.unit.invalidate_iotlb(IotlbInvalidation::Domain(DID)).unwrap();
    // 0x7: a next-level pointer beyond memory
    let l2 = r.pt.walk(&r.mem, 0).unwrap()[2];
    r.mem.write_u64(l2.pte_pa, ((60u64 << 30) + (8 << 30)) | 3).unwrap();
    r.unit.invalidate_iotlb(IotlbInvalidation::Domain(DID)).unwrap();
    assert_eq!(r.xlate(0, false), Err(FaultReason::PagingEntryInv));
    r.mem.write_u64(l2.pte_pa, l2.pte).unwrap();
    r.unit.invalidate_iotlb(IotlbInvalidation::Domain(DID)).unwrap();
    // 0x3: the top-level table itself is not readable
    let mut bad = Rig::new(UnitConfig::default(), 4);
    bad.set_context(ContextEntry::new(bad.mem.size(), 2, DID, TranslationType::MultiLevel, false));
    assert_eq!(bad.xlate(0, false), Err(FaultReason::ContextEntryInv));
    // 0xE: a translation landing in the interrupt window
    r.map(0x10_0000, 0xfee0_0000, 0x1000, Prot::RW);
    assert_eq!(r.xlate(0x10_0000, true), Err(FaultReason::InterruptAddr));
    assert_eq!(r.xlate(0, false), Ok(0x1000_0000));
}

#[test]
fn fault_log_records_collapses_and_overflows() {
    let mut r = Rig::new(UnitConfig { fault_records: 2, ..Default::default() }, 4);
    assert_eq!(r.xlate(0x5abc, true), Err(FaultReason::Write));
    assert_eq!(r.xlate(0x6000, false), Err(FaultReason::Read)); // same SID: collapsed
    let recs = r.unit.fault_records();
    assert_eq!(recs, vec![FaultRecord { sid: SID, addr: 0x5000, reason: FaultReason::Write, write: true }]);
    let (lo, hi) = (r.unit.read_reg(FRCD_REG, 8).unwrap(), r.unit.read_reg(FRCD_REG + 8, 8).unwrap());
    assert_eq!(lo, 0x5000);
    assert_eq!(hi, 1 << 63 | 5 << 32 | SID as u64, "F, FR, SID; T=0 for a write");
    assert_eq!(r.unit.read_reg(FSTS_REG, 4).unwrap(), (FSTS_PPF | 1 << 8) as u64);
    // other requesters fill the second register, then overflow
    assert!(r.unit.translate(&r.mem, 0x0200, 0, false).is_err()); // root entry of bus 2 absent
    assert!(r.unit.translate(&r.mem, 0x0300, 0, false).is_err());
    assert_eq!(r.unit.fault_records().len(), 2);
    assert_eq!(r.unit.read_reg(FSTS_REG, 4).unwrap() as u32 & FSTS_PFO, FSTS_PFO);
    let s = r.unit.stats();
    assert_eq!((s.faults, s.faults_recorded, s.faults_dropped), (4, 2, 2));
    // software clears FRCD 0 (W1C on F) and PFO; new faults record again
    r.unit.write_reg(FRCD_REG + 8, 8, 1 << 63).unwrap();
    r.unit.write_reg(FSTS_REG, 4, FSTS_PFO as u64).unwrap();
    assert_eq!(r.unit.fault_records().len(), 1);
    assert!(r.xlate(0x7000, false).is_err());
    assert_eq!(r.unit.fault_records().len(), 2);
    assert_eq!(r.unit.clear_faults(), 2);
    assert_eq!(r.unit.read_reg(FSTS_REG, 4).unwrap() as u32 & (FSTS_PFO | FSTS_PPF), 0);
}

#[test]
fn fpd_suppresses_qualified_faults_only() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.set_context(ContextEntry::new(r.pt.pgd(), r.pt.aw(), DID, TranslationType::MultiLevel, true));
    assert_eq!(r.xlate(0x5000, false), Err(FaultReason::Read));
    assert!(r.unit.fault_records().is_empty());
    assert_eq!(r.unit.stats().faults, 1);
    // not-present context entry with FPD: still suppressed (QEMU reads FPD from the entry)
    let pa = r.ctx_table + 16 * (SID & 0xff) as u64;
    r.mem.write_u64(pa, CTX_FPD).unwrap();
    r.unit.invalidate_context(ContextInvalidation::Global);
    assert_eq!(r.xlate(0, false), Err(FaultReason::ContextEntryP));
    assert!(r.unit.fault_records().is_empty());
    // reserved bits in the context entry are not qualified: recorded despite FPD
    r.mem.write_u64(pa, CTX_FPD | P | 0x10).unwrap();
    assert_eq!(r.xlate(0, false), Err(FaultReason::ContextEntryRsvd));
    assert_eq!(r.unit.fault_records().len(), 1);
}

#[test]
fn stale_iotlb_keeps_translating_until_invalidated() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0x1000, 0x1000_0000, 0x1000, Prot::RW);
    assert_eq!(r.xlate(0x1008, false), Ok(0x1000_0008));
    // the kernel rewrites the PTE behind the hardware's back
    let leaf = r.leaf_pa(0x1000);
    r.mem.write_u64(leaf, 0x2000_0000 | 3).unwrap();
    assert_eq!(r.xlate(0x1008, false), Ok(0x1000_0008), "stale IOTLB entry");
    r.unit.invalidate_iotlb(IotlbInvalidation::Page { did: DID + 1, addr: 0x1000, am: 0, ih: true }).unwrap();
    assert_eq!(r.xlate(0x1008, false), Ok(0x1000_0008), "other domain's PSI does not touch it");
    r.unit.invalidate_iotlb(IotlbInvalidation::Page { did: DID, addr: 0x1000, am: 0, ih: true }).unwrap();
    assert_eq!(r.xlate(0x1008, false), Ok(0x2000_0008));
    // cleared PTE: still cached until a DSI
    r.mem.write_u64(leaf, 0).unwrap();
    assert_eq!(r.xlate(0x1008, true), Ok(0x2000_0008));
    r.unit.invalidate_iotlb(IotlbInvalidation::Domain(DID)).unwrap();
    assert_eq!(r.xlate(0x1008, true), Err(FaultReason::Write));
    let s = r.unit.stats();
    assert_eq!(s.iotlb_hits, 3);
    assert_eq!(s.iotlb_misses, 3);
}

#[test]
fn stale_context_cache_until_invalidated() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0, 0x1000_0000, 0x1000, Prot::RW);
    assert!(r.xlate(0, false).is_ok());
    let pa = r.ctx_table + 16 * (SID & 0xff) as u64;
    r.mem.write_u64(pa, 0).unwrap();
    r.mem.write_u64(pa + 8, 0).unwrap();
    r.unit.invalidate_iotlb(IotlbInvalidation::Global).unwrap();
    assert!(r.xlate(0, false).is_ok(), "cached context entry still used");
    r.unit.invalidate_context(ContextInvalidation::Device { did: DID, sid: SID | 7, fm: 2 });
    assert!(r.xlate(0, false).is_ok(), "FM=2 masks bits 2:1 only, bit 0 differs");
    r.unit.invalidate_context(ContextInvalidation::Device { did: DID, sid: SID | 7, fm: 3 });
    assert_eq!(r.xlate(0, false), Err(FaultReason::ContextEntryP));
}

#[test]
fn psi_with_superpages_and_ih_semantics() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0x20_0000, 0x4020_0000, 0x20_0000, Prot::RW); // one 2M leaf
    r.map(0x40_0000, 0x5000_0000, 0x1000, Prot::RW); // a 4K leaf in the next 2M
    assert!(r.xlate(0x20_0000, false).is_ok());
    assert!(r.xlate(0x40_0000, false).is_ok());
    let (tlb, psc, _) = r.unit.cache_occupancy();
    assert_eq!(tlb, 2);
    assert!(psc >= 3, "PML4E, PDPE and the PDE of the 4K leaf are cached");
    // a 4K PSI at an address inside the 2M page drops the whole superpage entry
    r.unit.invalidate_iotlb(IotlbInvalidation::Page { did: DID, addr: 0x3f_f000, am: 0, ih: true }).unwrap();
    assert_eq!(r.unit.cache_occupancy().0, 1);
    // IH=1 keeps paging-structure entries: a stale PDE keeps pointing at the old L1 table
    let pde = r.pt.walk(&r.mem, 0x40_0000).unwrap()[2];
    let new_l1 = r.mem.alloc(0, true).unwrap();
    r.mem.write_u64(new_l1, 0x6000_0000 | 3).unwrap();
    r.mem.write_u64(pde.pte_pa, new_l1 | 3).unwrap();
    r.unit.invalidate_iotlb(IotlbInvalidation::Page { did: DID, addr: 0x40_0000, am: 0, ih: true }).unwrap();
    assert_eq!(r.xlate(0x40_0000, false), Ok(0x5000_0000), "walk resumed from the cached PDE");
    r.unit.invalidate_iotlb(IotlbInvalidation::Page { did: DID, addr: 0x40_0000, am: 0, ih: false }).unwrap();
    assert_eq!(r.xlate(0x40_0000, false), Ok(0x6000_0000), "IH=0 dropped the PDE");
    assert!(r.unit.stats().psc_hits >= 1);
    assert_eq!(
        r.unit.invalidate_iotlb(IotlbInvalidation::Page { did: DID, addr: 0, am: 19, ih: false }),
        Err(Error::InvalidAddressMask { am: 19, mamv: 18 })
    );
}

#[test]
fn psi_without_cap_psi_is_done_as_dsi() {
    let mut u = Unit::new(UnitConfig { psi: false, ..Default::default() }).unwrap();
    let done = u.invalidate_iotlb(IotlbInvalidation::Page { did: 3, addr: 0, am: 0, ih: false }).unwrap();
    assert_eq!(done, IotlbInvalidation::Domain(3));
    u.write_reg(IVA_REG, 8, 0x1000).unwrap();
    u.write_reg(IOTLB_REG, 8, IOTLB_IVT | 3 << 60 | 3 << 32).unwrap();
    let reg = u.read_reg(IOTLB_REG, 8).unwrap();
    assert_eq!(reg & IOTLB_IVT, 0, "IVT cleared when done");
    assert_eq!((reg >> 57) & 3, 2, "IAIG reports domain-selective");
    u.write_reg(CCMD_REG, 8, CCMD_ICC | 1 << 61).unwrap();
    let ccmd = u.read_reg(CCMD_REG, 8).unwrap();
    assert_eq!((ccmd >> 63, (ccmd >> 59) & 3), (0, 1));
    assert_eq!(u.read_reg(0x1000, 8), Err(Error::BadRegister { offset: 0x1000, size: 8 }));
    assert_eq!(u.read_reg(VER_REG, 4), Ok(0x10));
}

#[test]
fn freelist_is_released_only_after_the_flush() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0, 0x1000_0000, 0x20_0000 - 0x1000, Prot::RW); // 511 4K pages: one L1 table
    assert_eq!(r.xlate(0x1000, false), Ok(0x1000_1000));
    let l1 = r.pt.walk(&r.mem, 0x1000).unwrap()[2].pte & !0xfff;
    let mut g = Gather::default();
    // unmapping the whole 2M span detaches the L1 table onto the freelist
    assert_eq!(r.pt.unmap(&mut r.mem, 0, 0x20_0000, &mut g).unwrap(), 0x20_0000);
    assert_eq!(g.freelist(), &[l1]);
    assert!(r.mem.is_allocated(l1, 4096), "still allocated before the flush");
    assert_eq!(r.xlate(0x1000, false), Ok(0x1000_1000), "the stale IOTLB entry still works");
    r.unit.invalidate_iotlb(IotlbInvalidation::Page { did: DID, addr: 0x1000, am: 0, ih: true }).unwrap();
    assert_eq!(r.xlate(0x2000, false), Ok(0x1000_2000), "the cached PDE still reaches the old table");
    let done = r.unit.iotlb_sync(&mut r.mem, DID, &mut g).unwrap();
    assert_eq!(done, IotlbInvalidation::Page { did: DID, addr: 0, am: 9, ih: false }, "IH=0 because a table was freed");
    assert!(!r.mem.is_allocated(l1, 4096));
    assert!(g.freelist().is_empty() && g.range().is_none());
    assert_eq!(r.xlate(0x1000, false), Err(FaultReason::Read));
    // leaf-only unmap: IH=1
    r.map(0x40_0000, 0x2000_0000, 0x2000, Prot::RW);
    r.pt.unmap(&mut r.mem, 0x40_0000, 0x1000, &mut g).unwrap();
    assert_eq!(r.unit.iotlb_sync(&mut r.mem, DID, &mut g).unwrap(), IotlbInvalidation::Page { did: DID, addr: 0x40_0000, am: 0, ih: true });
}

#[test]
fn unmap_rounds_up_to_the_superpage_and_refuses_splits() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0x4000_0000, 0x1_0000_0000, 0x4000_0000, Prot::RW);
    let mut g = Gather::default();
    assert_eq!(r.pt.unmap(&mut r.mem, 0x4000_1000, 0x1000, &mut g), Err(Error::SplitsSuperpage { iova: 0x4000_0000, size: 0x4000_0000 }));
    assert_eq!(r.pt.unmap(&mut r.mem, 0x4000_0000, 0x1000, &mut g).unwrap(), 0x4000_0000, "intel_iommu_unmap grows the size");
    assert_eq!(r.pt.iova_to_phys(&r.mem, 0x7fff_ffff).unwrap(), None);
    r.map(0x20_0000, 0x3000_0000, 0x20_0000, Prot::RW);
    assert!(matches!(r.pt.unmap(&mut r.mem, 0x1f_f000, 0x2000, &mut g), Err(Error::SplitsSuperpage { .. })));
    assert_eq!(r.pt.iova_to_phys(&r.mem, 0x20_0000).unwrap(), Some(0x3000_0000));
}

#[test]
fn superpage_over_an_emptied_table_frees_it_through_the_gather() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0x20_0000, 0x3000_0000, 0x1000, Prot::RW);
    let mut g = Gather::default();
    r.pt.unmap(&mut r.mem, 0x20_0000, 0x1000, &mut g).unwrap();
    assert!(g.freelist().is_empty(), "a partial unmap keeps the L1 table");
    r.unit.iotlb_sync(&mut r.mem, DID, &mut g).unwrap();
    let l1 = r.pt.walk(&r.mem, 0x20_0000).unwrap()[2].pte & !0xfff;
    r.pt.map(&mut r.mem, 0x20_0000, 0x4020_0000, 0x20_0000, Prot::RW, &mut g).unwrap();
    assert_eq!(g.freelist(), &[l1]);
    assert_eq!(r.pt.walk(&r.mem, 0x20_0000).unwrap().last().unwrap().level, 2);
}

#[test]
fn walk_into_scrubbed_memory_faults_with_reserved_bits() {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0, 0x1000_0000, 0x1000, Prot::RW);
    let l1 = r.pt.walk(&r.mem, 0).unwrap()[3].pte_pa & !0xfff;
    r.unit.invalidate_iotlb(IotlbInvalidation::Global).unwrap();
    // preserve everything but the L1 table, then scrub
    for pa in r.pt.table_pages(&r.mem).unwrap().into_iter().filter(|&p| p != l1).chain([r.root, r.ctx_table]) {
        r.mem.preserve(pa, 0).unwrap();
    }
    r.mem.scrub();
    assert_eq!(r.xlate(0, false), Err(FaultReason::PagingEntryRsvd));
}

#[test]
fn psi_address_matches_linux() {
    assert_eq!(psi_aligned_address(0x1000, 0x1fff), (0x1000, 0));
    assert_eq!(psi_aligned_address(0, 0x1f_ffff), (0, 9));
    assert_eq!(psi_aligned_address(0x3000, 0x4fff), (0, 3), "unaligned pair grows the mask");
    assert_eq!(psi_aligned_address(0x1000, 0x3fff), (0, 2));
    assert_eq!(psi_aligned_address(0, (1 << 48) - 1), (0, 36));
}

/// Three pages at 0x10_0000 on scattered frames: RW, RW, then `third`.
fn dma_rig(third: Prot) -> Rig {
    let mut r = Rig::new(UnitConfig::default(), 4);
    r.map(0x10_0000, 0x4000_0000, 0x1000, Prot::RW);
    r.map(0x10_1000, 0x2000_5000, 0x1000, Prot::RW);
    r.map(0x10_2000, 0x3000_9000, 0x1000, third);
    r
}

#[test]
fn dma_crosses_pages_one_translation_each() {
    let mut r = dma_rig(Prot::RW);
    let data: Vec<u8> = (0..0x2400u32).map(|i| (i * 7 + 1) as u8).collect();
    // 0x10_0ff0..0x10_33f0 touches four pages: 0x10 bytes, two whole pages, 0x3f0 bytes
    r.map(0x10_3000, 0x5000_0000, 0x1000, Prot::RW);
    assert_eq!(r.unit.dma_write(&mut r.mem, SID, 0x10_0ff0, &data), Ok(Ok(())));
    let s = r.unit.stats();
    assert_eq!((s.iotlb_misses, s.walks, s.iotlb_hits), (4, 4, 0), "one translation request per page");
    let mut phys = vec![0u8; 0x10];
    r.mem.read(0x4000_0ff0, &mut phys).unwrap();
    assert_eq!(phys, data[..0x10]);
    let mut phys = vec![0u8; 0x1000];
    r.mem.read(0x2000_5000, &mut phys).unwrap();
    assert_eq!(phys, data[0x10..0x1010]);
    r.mem.read(0x3000_9000, &mut phys).unwrap();
    assert_eq!(phys, data[0x1010..0x2010]);
    let mut phys = vec![0u8; 0x3f0];
    r.mem.read(0x5000_0000, &mut phys).unwrap();
    assert_eq!(phys, data[0x2010..]);
    // the same transfer read back hits the IOTLB for every page
    let mut back = vec![0u8; data.len()];
    assert_eq!(r.unit.dma_read(&r.mem, SID, 0x10_0ff0, &mut back), Ok(Ok(())));
    assert_eq!(back, data);
    let s = r.unit.stats();
    assert_eq!((s.iotlb_misses, s.walks, s.iotlb_hits), (4, 4, 4));
    assert_eq!(s.context_hits + s.context_misses, 8, "each page is a request of its own");
    // within one page: one request
    let mut small = [0u8; 8];
    assert_eq!(r.unit.dma_read(&r.mem, SID, 0x10_1ff8, &mut small), Ok(Ok(())));
    assert_eq!(small, data[0x1008..0x1010]);
    assert_eq!(r.unit.stats().iotlb_hits, 5);
    // nothing to transfer: no request at all
    assert_eq!(r.unit.dma_read(&r.mem, SID, 1 << 60, &mut []), Ok(Ok(())));
    assert_eq!(r.unit.stats().iotlb_hits + r.unit.stats().faults, 5);
}

#[test]
fn dma_stops_at_the_first_faulting_page() {
    // write: the third page is read-only, so pages one and two land and the third faults 0x5
    let mut r = dma_rig(Prot::R);
    r.mem.fill_range(0x3000_9000, 0x1000, 0xee).unwrap();
    let data = vec![0x5au8; 0x2000];
    let fault = DmaFault { iova: 0x10_2000, reason: FaultReason::Write };
    assert_eq!(r.unit.dma_write(&mut r.mem, SID, 0x10_0800, &data), Ok(Err(fault)));
    let mut phys = vec![0u8; 0x800];
    r.mem.read(0x4000_0800, &mut phys).unwrap();
    assert!(phys.iter().all(|&b| b == 0x5a));
    let mut phys = vec![0u8; 0x1000];
    r.mem.read(0x2000_5000, &mut phys).unwrap();
    assert!(phys.iter().all(|&b| b == 0x5a));
    r.mem.read(0x3000_9000, &mut phys).unwrap();
    assert!(phys.iter().all(|&b| b == 0xee), "nothing of the faulting page is written");
    assert_eq!(r.unit.fault_records(), vec![FaultRecord { sid: SID, addr: 0x10_2000, reason: FaultReason::Write, write: true }]);
    assert_eq!(r.unit.stats().faults, 1, "the transfer stops at the fault");
    r.unit.clear_faults();

    // read: the third page is write-only, faulting 0x6; the buffer keeps its bytes from there
    let mut r = dma_rig(Prot::W);
    r.mem.fill_range(0x2000_5000, 0x1000, 0x11).unwrap();
    let mut buf = vec![0xaau8; 0x1800];
    let fault = DmaFault { iova: 0x10_2000, reason: FaultReason::Read };
    assert_eq!(r.unit.dma_read(&r.mem, SID, 0x10_1800, &mut buf), Ok(Err(fault)));
    assert!(buf[..0x800].iter().all(|&b| b == 0x11));
    assert!(buf[0x800..].iter().all(|&b| b == 0xaa));
    assert_eq!(r.unit.fault_records(), vec![FaultRecord { sid: SID, addr: 0x10_2000, reason: FaultReason::Read, write: false }]);
    // a fault on the first page reports the first byte, the record its page
    r.unit.clear_faults();
    let fault = DmaFault { iova: 0x10_2010, reason: FaultReason::Read };
    assert_eq!(r.unit.dma_read(&r.mem, SID, 0x10_2010, &mut buf), Ok(Err(fault)));
    assert_eq!(r.unit.fault_records()[0].addr, 0x10_2000);
    // unmapped and beyond the width
    assert_eq!(r.unit.dma_read(&r.mem, SID, 0x10_3000, &mut buf).unwrap().unwrap_err().reason, FaultReason::Read);
    assert_eq!(r.unit.dma_write(&mut r.mem, SID, 1 << 48, &buf).unwrap().unwrap_err().reason, FaultReason::AddrBeyondMgaw);
}

#[test]
fn dma_range_errors_and_untranslated_requests() {
    let mut r = dma_rig(Prot::RW);
    let mut buf = [0u8; 16];
    assert_eq!(r.unit.dma_read(&r.mem, SID, u64::MAX - 7, &mut buf), Err(Error::OutOfRange { iova: u64::MAX - 7, size: 16, width: 64 }));
    assert_eq!(r.unit.stats().faults + r.unit.stats().iotlb_misses, 0, "nothing was requested");
    // TE off: the IOVA is the address; beyond memory the root complex aborts
    r.unit.enable_translation(false);
    assert_eq!(r.unit.dma_write(&mut r.mem, SID, 0x2000_5ff8, &[1; 16]), Ok(Ok(())));
    assert_eq!(r.mem.read_u64(0x2000_6000).unwrap(), 0x0101_0101_0101_0101);
    let end = r.mem.size();
    r.mem.write_u64(end - 8, 0x0807_0605_0403_0201).unwrap();
    buf.fill(0xcc);
    assert!(matches!(r.unit.dma_read(&r.mem, SID, end - 8, &mut buf), Err(Error::Mem(physmem::Error::OutOfRange { .. }))));
    assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc], "the page inside memory was transferred");
    assert_eq!(r.unit.stats().passthrough, 4);
}

#[test]
fn a_batch_is_the_same_requests_one_at_a_time() {
    // Hits, misses of each page size, a read-only page written, holes, an IOVA beyond the
    // address width, and the same pages again (now hits), with the IOTLB and PSC small enough
    // to evict: one batch and the same requests through `translate` leave the same results,
    // reasons, counters, fault records and cache contents.
    let config = UnitConfig { iotlb_entries: 8, iotlb_ways: 2, psc_entries: 4, fault_records: 4, ..Default::default() };
    let rig = || {
        let mut r = Rig::new(config.clone(), 4);
        r.map(0x10_0000, 0x1000_0000, 0x40_0000, Prot::RW); // 4 KiB and 2 MiB leaves
        r.map(0x4000_0000, 0x8000_0000, 0x4000_0000, Prot::RW); // a 1 GiB leaf
        r.map(0x90_0000, 0x2000_0000, 0x1000, Prot::R);
        r
    };
    let mut iovas = vec![];
    for round in 0..3u64 {
        for base in [0x10_0000u64, 0x20_0000, 0x30_0008, 0x4000_1000, 0x90_0000, 0xa0_0000, 1 << 48, 0x7fff_f000] {
            iovas.push(base + round * 0x1000);
        }
    }
    for write in [false, true] {
        let (mut one, mut batch) = (rig(), rig());
        let want: Vec<_> = iovas.iter().map(|&iova| one.xlate(iova, write)).collect();
        let mut out = vec![0; iovas.len()];
        let mut reasons = vec![0xee; iovas.len()];
        let faulted = batch.unit.translate_batch(&batch.mem, SID, &iovas, &mut out, write, Some(&mut reasons));
        assert_eq!(faulted, want.iter().filter(|r| r.is_err()).count());
        for (i, w) in want.iter().enumerate() {
            match w {
                Ok(pa) => assert_eq!((out[i], reasons[i]), (*pa, 0), "request {i}"),
                Err(reason) => assert_eq!((out[i], reasons[i]), (u64::MAX, *reason as u8), "request {i}"),
            }
        }
        // The batch resolves its context once (one burst): the context cache is asked once.
        let same_context = |s: Stats| Stats { context_hits: 0, ..s };
        assert_eq!(same_context(batch.unit.stats()), same_context(one.unit.stats()), "write {write}");
        assert_eq!(batch.unit.fault_records(), one.unit.fault_records());
        assert_eq!(batch.unit.cache_occupancy(), one.unit.cache_occupancy());
        // The same entries are cached: translating everything again hits and misses alike.
        let again: Vec<_> = iovas.iter().map(|&iova| one.xlate(iova, write)).collect();
        let again_b: Vec<_> = iovas.iter().map(|&iova| batch.xlate(iova, write)).collect();
        assert_eq!((again, same_context(batch.unit.stats())), (again_b, same_context(one.unit.stats())));
    }
}
