//! Legacy-mode fault reasons and the fault-recording registers.

/// A legacy-mode DMA-remapping fault reason (FRCD.FR), with QEMU's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultReason {
    /// 0x1: root entry not present.
    RootEntryP = 0x1,
    /// 0x2: context entry not present.
    ContextEntryP = 0x2,
    /// 0x3: invalid context entry (AW not in SAGAW, unsupported TT, top-level read error).
    ContextEntryInv = 0x3,
    /// 0x4: address beyond the domain's or the unit's address width.
    AddrBeyondMgaw = 0x4,
    /// 0x5: write without W.
    Write = 0x5,
    /// 0x6: read without R.
    Read = 0x6,
    /// 0x7: a next-level page-table pointer is not readable.
    PagingEntryInv = 0x7,
    /// 0x8: the root table address is not readable.
    RootTableInv = 0x8,
    /// 0x9: the context table pointer is not readable.
    ContextTableInv = 0x9,
    /// 0xA: reserved bits set in a root entry.
    RootEntryRsvd = 0xa,
    /// 0xB: reserved bits set in a context entry.
    ContextEntryRsvd = 0xb,
    /// 0xC: reserved bits set in a paging entry.
    PagingEntryRsvd = 0xc,
    /// 0xD: translation type blocks the request.
    ContextEntryTt = 0xd,
    /// 0xE: the translated address lies in the interrupt range 0xFEE0_0000..=0xFEEF_FFFF.
    InterruptAddr = 0xe,
}

impl FaultReason {
    /// Whether FPD in the context entry can suppress recording (QEMU `vtd_qualified_faults`).
    pub const fn qualified(self) -> bool {
        !matches!(
            self,
            FaultReason::RootEntryP
                | FaultReason::RootTableInv
                | FaultReason::ContextTableInv
                | FaultReason::RootEntryRsvd
                | FaultReason::ContextEntryRsvd
        )
    }

    /// Decodes a reason byte.
    pub const fn from_u8(v: u8) -> Option<Self> {
        use FaultReason::*;
        Some(match v {
            0x1 => RootEntryP,
            0x2 => ContextEntryP,
            0x3 => ContextEntryInv,
            0x4 => AddrBeyondMgaw,
            0x5 => Write,
            0x6 => Read,
            0x7 => PagingEntryInv,
            0x8 => RootTableInv,
            0x9 => ContextTableInv,
            0xa => RootEntryRsvd,
            0xb => ContextEntryRsvd,
            0xc => PagingEntryRsvd,
            0xd => ContextEntryTt,
            0xe => InterruptAddr,
            _ => return None,
        })
    }

    /// Linux's text for the reason (`dma_remap_fault_reasons[]`).
    pub const fn linux_text(self) -> &'static str {
        use FaultReason::*;
        match self {
            RootEntryP => "Present bit in root entry is clear",
            ContextEntryP => "Present bit in context entry is clear",
            ContextEntryInv => "Invalid context entry",
            AddrBeyondMgaw => "Access beyond MGAW",
            Write => "PTE Write access is not set",
            Read => "PTE Read access is not set",
            PagingEntryInv => "Next page table ptr is invalid",
            RootTableInv => "Root table address invalid",
            ContextTableInv => "Context table ptr is invalid",
            RootEntryRsvd => "non-zero reserved fields in RTP",
            ContextEntryRsvd => "non-zero reserved fields in CTP",
            PagingEntryRsvd => "non-zero reserved fields in PTE",
            ContextEntryTt => "PCE for translation request specifies blocking",
            InterruptAddr => "Untranslated request to interrupt address range",
        }
    }
}

/// One fault-recording register's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// Requester id `bus << 8 | devfn`.
    pub sid: u16,
    /// Faulting page address (FRCD.FI, bits 63:12; the hardware drops the page offset).
    pub addr: u64,
    /// Reason.
    pub reason: FaultReason,
    /// Whether the request was a write (FRCD.T is 1 for reads).
    pub write: bool,
}

impl FaultRecord {
    /// The 128-bit register image `(lo, hi)` with F set.
    pub fn encode(&self) -> (u64, u64) {
        let mut hi = self.sid as u64 | (self.reason as u64) << 32 | 1 << 63;
        if !self.write {
            hi |= 1 << 62;
        }
        (self.addr & !0xfff, hi)
    }
}

/// The primary fault log: NFR+1 recording registers used as a ring, with QEMU's policy — a new
/// fault is dropped while PFO is set, while a record of the same requester is pending
/// (collapse), or when the next register is still full (which sets PFO).
#[derive(Debug, Clone)]
pub(crate) struct FaultLog {
    regs: Vec<Option<FaultRecord>>,
    fri: usize,
    pub(crate) pfo: bool,
}

impl FaultLog {
    pub(crate) fn new(n: usize) -> Self {
        FaultLog { regs: vec![None; n], fri: 0, pfo: false }
    }

    /// Records a fault; returns whether it was recorded.
    pub(crate) fn record(&mut self, rec: FaultRecord) -> bool {
        if self.pfo || self.regs.iter().flatten().any(|r| r.sid == rec.sid) {
            return false;
        }
        if self.regs[self.fri].is_some() {
            self.pfo = true;
            return false;
        }
        self.regs[self.fri] = Some(rec);
        self.fri = (self.fri + 1) % self.regs.len();
        true
    }

    pub(crate) fn fri(&self) -> usize {
        self.fri
    }

    pub(crate) fn len(&self) -> usize {
        self.regs.len()
    }

    pub(crate) fn get(&self, i: usize) -> Option<FaultRecord> {
        self.regs.get(i).copied().flatten()
    }

    pub(crate) fn clear(&mut self, i: usize) {
        if let Some(r) = self.regs.get_mut(i) {
            *r = None;
        }
    }

    pub(crate) fn pending(&self) -> bool {
        self.regs.iter().any(Option::is_some)
    }

    /// Pending records, oldest first (the ring order starting at FRI).
    pub(crate) fn records(&self) -> Vec<FaultRecord> {
        let n = self.regs.len();
        (0..n).filter_map(|i| self.regs[(self.fri + i) % n]).collect()
    }

    /// Clears every record and PFO; returns how many records were pending.
    pub(crate) fn clear_all(&mut self) -> usize {
        let n = self.regs.iter().filter(|r| r.is_some()).count();
        self.regs.iter_mut().for_each(|r| *r = None);
        self.pfo = false;
        n
    }
}
