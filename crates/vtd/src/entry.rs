//! Bit-exact encodings of legacy-mode root entries, context entries and second-level paging
//! entries, with the reserved-bit masks QEMU checks (`intel_iommu_internal.h`).

/// Root/context entry present bit.
pub const P: u64 = 1 << 0;
/// Context entry: fault processing disable.
pub const CTX_FPD: u64 = 1 << 1;
/// Second-level PTE: read.
pub const SL_R: u64 = 1 << 0;
/// Second-level PTE: write.
pub const SL_W: u64 = 1 << 1;
/// Second-level PTE: page size (leaf at level 2 or 3).
pub const SL_PS: u64 = 1 << 7;
/// Second-level PTE: snoop; reserved unless ECAP.SC.
pub const SL_SNP: u64 = 1 << 11;
/// Second-level PTE: transient mapping, reserved since VT-d 3.2.
pub const SL_TM: u64 = 1 << 62;
/// Bits the hardware ignores in a second-level PTE: 61:52 and 63 (`VTD_SL_IGN_COM`).
pub const SL_IGN: u64 = 0xbff0_0000_0000_0000;

/// Translation type of a legacy context entry (lo bits 3:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranslationType {
    /// 0: untranslated and translated requests go through the second-level tables.
    MultiLevel = 0,
    /// 1: as 0, and translation requests (ATS) are allowed; needs ECAP.DT.
    DeviceTlb = 1,
    /// 2: untranslated requests pass through unchanged; needs ECAP.PT.
    PassThrough = 2,
    /// 3: reserved.
    Reserved = 3,
}

impl TranslationType {
    /// Decodes the two TT bits.
    pub fn from_bits(v: u64) -> Self {
        match v & 3 {
            0 => Self::MultiLevel,
            1 => Self::DeviceTlb,
            2 => Self::PassThrough,
            _ => Self::Reserved,
        }
    }
}

/// `(1 << haw) - 1`: the host-address-width mask.
pub const fn haw_mask(haw: u32) -> u64 {
    if haw >= 64 {
        u64::MAX
    } else {
        (1u64 << haw) - 1
    }
}

/// Root entry reserved bits in legacy mode (`VTD_ROOT_ENTRY_RSVD(aw)`); `hi` must be zero too.
pub const fn root_rsvd_lo(haw: u32) -> u64 {
    0xffe | !haw_mask(haw)
}

/// Context entry lo reserved bits (`VTD_CONTEXT_ENTRY_RSVD_LO(aw)`).
pub const fn context_rsvd_lo(haw: u32) -> u64 {
    0xff0 | !haw_mask(haw)
}

/// Context entry hi reserved bits (`VTD_CONTEXT_ENTRY_RSVD_HI`): bit 7 and 63:24.
pub const CONTEXT_RSVD_HI: u64 = 0xffff_ffff_ff00_0080;

/// A legacy-mode root entry (16 bytes, one per bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootEntry {
    /// Low quadword: P (bit 0) and the context-table pointer (63:12).
    pub lo: u64,
    /// High quadword: reserved in legacy mode.
    pub hi: u64,
}

impl RootEntry {
    /// A present entry pointing at the context table at `ctp`.
    pub fn new(ctp: u64) -> Self {
        RootEntry { lo: (ctp & !0xfff) | P, hi: 0 }
    }
    /// Present bit.
    pub fn present(&self) -> bool {
        self.lo & P != 0
    }
    /// Context-table pointer.
    pub fn ctp(&self) -> u64 {
        self.lo & !0xfff
    }
}

/// A legacy-mode context entry (16 bytes, one per devfn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextEntry {
    /// Low quadword: P, FPD, TT (3:2), SLPTPTR (63:12).
    pub lo: u64,
    /// High quadword: AW (2:0), AVAIL (6:3), DID (23:8).
    pub hi: u64,
}

impl ContextEntry {
    /// A present entry as Linux's `domain_context_mapping_one` writes it.
    pub fn new(slptptr: u64, aw: u8, did: u16, tt: TranslationType, fpd: bool) -> Self {
        let mut lo = (slptptr & !0xfff) | ((tt as u64) << 2) | P;
        if fpd {
            lo |= CTX_FPD;
        }
        ContextEntry { lo, hi: (aw as u64 & 7) | ((did as u64) << 8) }
    }
    /// Present bit.
    pub fn present(&self) -> bool {
        self.lo & P != 0
    }
    /// Fault processing disable.
    pub fn fpd(&self) -> bool {
        self.lo & CTX_FPD != 0
    }
    /// Translation type.
    pub fn tt(&self) -> TranslationType {
        TranslationType::from_bits(self.lo >> 2)
    }
    /// Second-level page-table pointer.
    pub fn slptptr(&self) -> u64 {
        self.lo & !0xfff
    }
    /// Address width field: levels = AW + 2.
    pub fn aw(&self) -> u8 {
        (self.hi & 7) as u8
    }
    /// Domain id.
    pub fn did(&self) -> u16 {
        (self.hi >> 8) as u16
    }
}

/// Paging levels for an address width: 39 → 3, 48 → 4, 57 → 5 (`agaw_to_level`).
pub const fn width_to_levels(width: u32) -> u32 {
    (width - 30) / 9 + 2
}

/// Address width covered by a table of `levels` levels: 30 + 9 × (levels − 2) + 9.
pub const fn levels_to_width(levels: u32) -> u32 {
    12 + 9 * levels
}

/// Shift of the address bits that index level `level` (1 = the 4 KiB leaf table).
pub const fn level_shift(level: u32) -> u32 {
    12 + 9 * (level - 1)
}

/// Bytes mapped by one entry at `level`: 4 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB.
pub const fn level_size(level: u32) -> u64 {
    1u64 << level_shift(level)
}

/// Index of `iova` in a table at `level`.
#[inline]
pub const fn level_index(iova: u64, level: u32) -> u64 {
    (iova >> level_shift(level)) & 0x1ff
}

/// Whether a second-level PTE is present: there is no P bit, R or W makes it present.
#[inline]
pub const fn slpte_present(pte: u64) -> bool {
    pte & (SL_R | SL_W) != 0
}

/// Whether a present entry at `level` is a leaf.
#[inline]
pub const fn slpte_is_leaf(pte: u64, level: u32) -> bool {
    level == 1 || (pte & SL_PS != 0 && (level == 2 || level == 3))
}

/// `level` and the PS bit of `pte` as one index below 16: what [`SlpteRsvd::by_kind`] and
/// [`SLPTE_LEAF_KINDS`] are indexed by.
#[inline]
pub const fn slpte_kind(pte: u64, level: u32) -> usize {
    ((level as usize) << 1 | ((pte & SL_PS) != 0) as usize) & 15
}

/// The kinds (see [`slpte_kind`]) that are leaves: level 1, and PS=1 at levels 2 and 3; as
/// [`slpte_is_leaf`], one bit per kind.
pub const SLPTE_LEAF_KINDS: u16 = 1 << 2 | 1 << 3 | 1 << 5 | 1 << 7;

/// The address field of a second-level PTE (`VTD_PT_BASE_ADDR_MASK(aw)`).
#[inline]
pub const fn slpte_addr(pte: u64, haw: u32) -> u64 {
    pte & !0xfff & haw_mask(haw)
}

/// The reserved-bit masks of second-level PTEs for one unit, indexed by level: `table[level]`
/// for non-leaf (and 4 KiB) entries, `large[level]` for PS=1 entries at levels 2 and 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlpteRsvd {
    /// Masks for entries without PS (index 0 is `!0`: level 0 never exists).
    pub table: [u64; 6],
    /// Masks for PS=1 leaves at levels 2 and 3 (other indexes unused).
    pub large: [u64; 6],
}

impl SlpteRsvd {
    /// QEMU's masks for a host address width. `snoop` (ECAP.SC or scalable mode) frees bit 11
    /// in leaf entries; `stale_tm` frees bit 62 in 4 KiB entries.
    pub const fn new(haw: u32, snoop: bool, stale_tm: bool) -> Self {
        let base = !(haw_mask(haw) | SL_IGN);
        let snp = if snoop { 0 } else { SL_SNP };
        let l1 = if stale_tm { (SL_SNP | base) & !SL_TM } else { SL_SNP | base };
        SlpteRsvd {
            table: [
                !0,
                if snoop { l1 & !SL_SNP } else { l1 },
                SL_SNP | base,
                SL_SNP | base,
                SL_SNP | SL_PS | base,
                SL_SNP | SL_PS | base,
            ],
            large: [!0, !0, 0x1f_f000 | snp | base, 0x3fff_f000 | snp | base, !0, !0],
        }
    }

    /// Both masks by `slpte_kind(pte, level)`, so a walk indexes instead of branching.
    pub const fn by_kind(&self) -> [u64; 16] {
        let mut m = [!0u64; 16];
        let mut level = 0;
        while level < 6 {
            m[level << 1] = self.table[level];
            m[level << 1 | 1] = if level == 2 || level == 3 { self.large[level] } else { self.table[level] };
            level += 1;
        }
        m
    }

    /// The mask that applies to `pte` at `level`.
    #[inline]
    pub const fn mask(&self, pte: u64, level: u32) -> u64 {
        if (level == 2 || level == 3) && pte & SL_PS != 0 {
            self.large[level as usize]
        } else {
            self.table[level as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_the_masks_and_leaves_as_the_branches_do() {
        let r = SlpteRsvd::new(48, false, false);
        let m = r.by_kind();
        for level in 1..=5 {
            for pte in [0x1003u64, 0x1083] {
                assert_eq!(m[slpte_kind(pte, level)], r.mask(pte, level), "level {level} pte {pte:#x}");
                assert_eq!(SLPTE_LEAF_KINDS >> slpte_kind(pte, level) & 1 == 1, slpte_is_leaf(pte, level));
            }
        }
    }

    #[test]
    fn masks_match_the_reference_numbers() {
        assert_eq!(root_rsvd_lo(48), 0xffff_0000_0000_0ffe);
        assert_eq!(root_rsvd_lo(39), 0xffff_ff80_0000_0ffe);
        assert_eq!(context_rsvd_lo(48), 0xffff_0000_0000_0ff0);
        let r48 = SlpteRsvd::new(48, false, false);
        assert_eq!(r48.table[1], 0x400f_0000_0000_0800);
        assert_eq!(r48.table[2], 0x400f_0000_0000_0800);
        assert_eq!(r48.table[3], 0x400f_0000_0000_0800);
        assert_eq!(r48.table[4], 0x400f_0000_0000_0880);
        assert_eq!(r48.large[2], 0x400f_0000_001f_f800);
        assert_eq!(r48.large[3], 0x400f_0000_3fff_f800);
        let r39 = SlpteRsvd::new(39, false, false);
        assert_eq!(r39.table[1], 0x400f_ff80_0000_0800);
        assert_eq!(r39.table[4], 0x400f_ff80_0000_0880);
        assert_eq!(r39.large[2], 0x400f_ff80_001f_f800);
        assert_eq!(r39.large[3], 0x400f_ff80_3fff_f800);
        assert_eq!(SlpteRsvd::new(39, false, true).table[1], 0x000f_ff80_0000_0800);
        assert_eq!(SlpteRsvd::new(48, false, true).table[1], 0x000f_0000_0000_0800);
        let sc = SlpteRsvd::new(48, true, false);
        assert_eq!(sc.table[1], 0x400f_0000_0000_0000);
        assert_eq!(sc.table[2], 0x400f_0000_0000_0800, "SNP stays reserved in non-leaf entries");
        assert_eq!(sc.large[2], 0x400f_0000_001f_f000);
        assert_eq!(r48.mask(SL_PS | 3, 1), r48.table[1], "PS is ignored at level 1");
        assert_eq!(r48.mask(SL_PS | 3, 4), r48.table[4]);
    }

    #[test]
    fn entries_encode_like_linux() {
        let c = ContextEntry::new(0x1234_5000, 2, 0xabcd, TranslationType::MultiLevel, false);
        assert_eq!(c.lo, 0x1234_5001);
        assert_eq!(c.hi, 0x00ab_cd02);
        assert_eq!((c.aw(), c.did(), c.tt(), c.fpd()), (2, 0xabcd, TranslationType::MultiLevel, false));
        let pt = ContextEntry::new(0, 0, 1, TranslationType::PassThrough, true);
        assert_eq!(pt.lo, 0b1011);
        assert_eq!(RootEntry::new(0x7000).lo, 0x7001);
        assert_eq!(width_to_levels(39), 3);
        assert_eq!(width_to_levels(48), 4);
        assert_eq!(width_to_levels(57), 5);
        assert_eq!(levels_to_width(4), 48);
        assert_eq!(level_index(0x0000_7fff_ffff_f000, 4), 0xff);
        assert_eq!(level_size(3), 1 << 30);
        assert!(!slpte_present(SL_PS | 0x1000));
        assert!(slpte_is_leaf(SL_PS | 1, 3) && !slpte_is_leaf(SL_PS | 1, 4));
        assert_eq!(slpte_addr(0xfff0_1234_5678_9fff, 48), 0x1234_5678_9000);
    }
}
