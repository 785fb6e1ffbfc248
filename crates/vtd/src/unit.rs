//! The DMA-remapping unit: its configuration, CAP/ECAP and state. The rest follows the VT-d
//! specification's chapters, one module each:
//!
//! - `translation`: DMA remapping (chapter 3): context resolution, IOTLB, second-level walk;
//! - `dma`: a device's transfer as one translation request per 4 KiB page;
//! - `invalidation`: caching translation information and invalidating it (chapter 6);
//! - `faults`: primary fault recording (chapter 7);
//! - `registers`: the register file (chapter 11): GCMD/GSTS, CCMD, IOTLB_REG, FSTS, FRCD.
use crate::cache::{ContextCache, SetAssoc};
use crate::entry::*;
use crate::fault::FaultLog;
use crate::pgtable::PageTableConfig;
use crate::regs::*;
use crate::{Error, Result};

mod dma;
mod faults;
mod invalidation;
mod registers;
mod translation;

pub use dma::DmaFault;
pub use invalidation::{ContextInvalidation, IotlbInvalidation};

/// Largest IOTLB, paging-structure cache and context cache, in entries. The set-associative
/// caches are allocated whole when the unit is made, so a size is bounded before it can ask the
/// allocator for more than the host has (an allocation failure aborts the process).
pub const MAX_CACHE_ENTRIES: u32 = 1 << 16;
/// Largest IOTLB associativity: a lookup searches every way of a set.
pub const MAX_IOTLB_WAYS: u32 = 1024;

/// Configuration of a unit: what CAP/ECAP advertise and how large the caches are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitConfig {
    /// MGAW in bits: 39, 48 or 57. SAGAW advertises every paging depth up to it (as QEMU does).
    pub address_width: u32,
    /// CAP.SLLPS bit 0: 2 MiB second-level pages.
    pub superpage_2m: bool,
    /// CAP.SLLPS bit 1: 1 GiB second-level pages.
    pub superpage_1g: bool,
    /// CAP.ND: 2^(4 + 2·ND) domain ids; 0..=6.
    pub nd: u8,
    /// CAP.PSI: page-selective IOTLB invalidation.
    pub psi: bool,
    /// CAP.MAMV: the largest PSI address mask.
    pub mamv: u8,
    /// CAP.CM: caching mode (advertised; the model never caches faulting translations).
    pub caching_mode: bool,
    /// CAP.ESRTPS: SRTP also invalidates every cache.
    pub esrtps: bool,
    /// ECAP.C: page-walk coherency.
    pub coherent: bool,
    /// ECAP.SC: snoop control; SNP (bit 11) is reserved in leaves without it.
    pub snoop_control: bool,
    /// ECAP.PT: pass-through context entries.
    pub pass_through: bool,
    /// ECAP.DT: device-TLB (TT = 1 context entries).
    pub device_tlb: bool,
    /// ECAP.QI: queued invalidation. Advertised only: the model has no invalidation queue
    /// (IQA/IQH/IQT) and invalidates through CCMD and IOTLB_REG.
    pub queued_invalidation: bool,
    /// ECAP.IR: interrupt remapping. Advertised only: the model remaps DMA, not interrupts.
    pub interrupt_remapping: bool,
    /// ECAP.MHMV: the largest interrupt-entry-cache invalidation handle mask, 0..=15.
    pub mhmv: u8,
    /// Treat PTE bit 62 (TM) as ignored in 4 KiB entries, as pre-3.2 hardware did.
    pub stale_tm: bool,
    /// Fault-recording registers (CAP.NFR + 1), 1..=256.
    pub fault_records: u32,
    /// IOTLB entries, at most [`MAX_CACHE_ENTRIES`]; 0 disables the IOTLB.
    pub iotlb_entries: u32,
    /// IOTLB associativity, 1..=[`MAX_IOTLB_WAYS`].
    pub iotlb_ways: u32,
    /// Paging-structure-cache entries (non-leaf entries), at most [`MAX_CACHE_ENTRIES`]; 0 disables it.
    pub psc_entries: u32,
    /// Context-cache entries, at most [`MAX_CACHE_ENTRIES`]; 0 disables it.
    pub context_cache_entries: u32,
}

impl Default for UnitConfig {
    fn default() -> Self {
        UnitConfig {
            address_width: 48,
            superpage_2m: true,
            superpage_1g: true,
            nd: 6,
            psi: true,
            mamv: 18,
            caching_mode: false,
            esrtps: false,
            coherent: true,
            snoop_control: true,
            pass_through: true,
            device_tlb: false,
            queued_invalidation: false,
            interrupt_remapping: false,
            mhmv: 0,
            stale_tm: false,
            fault_records: 8,
            iotlb_entries: 512,
            iotlb_ways: 8,
            psc_entries: 128,
            context_cache_entries: 64,
        }
    }
}

/// Counters of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Translations served by the IOTLB.
    pub iotlb_hits: u64,
    /// Translations that missed the IOTLB.
    pub iotlb_misses: u64,
    /// Page walks started (after an IOTLB miss).
    pub walks: u64,
    /// Walks that started below the top thanks to the paging-structure cache.
    pub psc_hits: u64,
    /// Context-cache hits.
    pub context_hits: u64,
    /// Context-cache misses (root/context table reads).
    pub context_misses: u64,
    /// Faulted requests.
    pub faults: u64,
    /// Faults written to a fault-recording register.
    pub faults_recorded: u64,
    /// Faults not recorded: FPD, collapse or overflow.
    pub faults_dropped: u64,
    /// Requests that passed untranslated (TE off or pass-through).
    pub passthrough: u64,
    /// Context-cache invalidations performed.
    pub context_invalidations: u64,
    /// IOTLB invalidations performed.
    pub iotlb_invalidations: u64,
}

/// One VT-d DMA-remapping hardware unit (legacy mode).
#[derive(Debug, Clone)]
pub struct Unit {
    config: UnitConfig,
    cap: u64,
    ecap: u64,
    haw: u32,
    /// `slpte_addr`'s mask for `haw`, computed once for the walk.
    addr_mask: u64,
    /// The reserved-bit masks of second-level PTEs by `slpte_kind` (`SlpteRsvd::by_kind`).
    rsvd_by_kind: [u64; 16],
    gsts: u32,
    rtaddr: u64,
    root: u64,
    ccmd: u64,
    iva: u64,
    iotlb_reg: u64,
    iotlb: SetAssoc,
    psc: SetAssoc,
    ctx: ContextCache,
    faults: FaultLog,
    stats: Stats,
}

impl Unit {
    /// A unit with translation disabled and empty caches.
    pub fn new(config: UnitConfig) -> Result<Self> {
        if ![39, 48, 57].contains(&config.address_width) {
            return Err(Error::BadConfig(format!(
                "address width {} is not 39, 48 or 57",
                config.address_width
            )));
        }
        if config.nd > 6 {
            return Err(Error::BadConfig(format!("ND {} is above 6", config.nd)));
        }
        if config.mamv > 63 {
            return Err(Error::BadConfig(format!("MAMV {} does not fit 6 bits", config.mamv)));
        }
        if config.mhmv > 15 {
            return Err(Error::BadConfig(format!("MHMV {} does not fit 4 bits", config.mhmv)));
        }
        if !(1..=256).contains(&config.fault_records) {
            return Err(Error::BadConfig(format!(
                "{} fault-recording registers: must be 1..=256",
                config.fault_records
            )));
        }
        if !(1..=MAX_IOTLB_WAYS).contains(&config.iotlb_ways) {
            return Err(Error::BadConfig(format!("IOTLB associativity {} is not in 1..={MAX_IOTLB_WAYS}", config.iotlb_ways)));
        }
        for (what, n) in [
            ("IOTLB", config.iotlb_entries),
            ("paging-structure cache", config.psc_entries),
            ("context cache", config.context_cache_entries),
        ] {
            if n > MAX_CACHE_ENTRIES {
                return Err(Error::BadConfig(format!("{what} of {n} entries: at most {MAX_CACHE_ENTRIES}")));
            }
        }
        let levels = width_to_levels(config.address_width);
        let sagaw: u64 = (1..=levels - 2).map(|aw| 1u64 << aw).sum();
        let sllps = config.superpage_2m as u64 | (config.superpage_1g as u64) << 1;
        let cap = config.nd as u64
            | (config.caching_mode as u64) << 7
            | sagaw << 8
            | (config.address_width as u64 - 1) << 16
            | ((FRCD_REG as u64) >> 4) << 24
            | sllps << 34
            | (config.psi as u64) << 39
            | (config.fault_records as u64 - 1) << 40
            | (config.mamv as u64) << 48
            | 3 << 54 // DWD, DRD: QEMU advertises write and read draining
            | (config.esrtps as u64) << 63;
        let ecap = config.coherent as u64
            | (config.queued_invalidation as u64) << 1
            | (config.device_tlb as u64) << 2
            | (config.interrupt_remapping as u64) << 3
            | (config.pass_through as u64) << 6
            | (config.snoop_control as u64) << 7
            | ((IVA_REG as u64) >> 4) << 8
            | (config.mhmv as u64) << 20;
        let haw = config.address_width.min(52);
        Ok(Unit {
            rsvd_by_kind: SlpteRsvd::new(haw, config.snoop_control, config.stale_tm).by_kind(),
            iotlb: SetAssoc::new(config.iotlb_entries, config.iotlb_ways),
            psc: SetAssoc::new(config.psc_entries, 4),
            ctx: ContextCache::new(config.context_cache_entries),
            faults: FaultLog::new(config.fault_records as usize),
            config,
            cap,
            ecap,
            haw,
            addr_mask: slpte_addr(!0, haw),
            gsts: 0,
            rtaddr: 0,
            root: 0,
            ccmd: 0,
            iva: 0,
            iotlb_reg: 0,
            stats: Stats::default(),
        })
    }

    /// The configuration the unit was built with.
    pub fn config(&self) -> &UnitConfig {
        &self.config
    }
    /// CAP_REG.
    pub fn cap(&self) -> u64 {
        self.cap
    }
    /// ECAP_REG.
    pub fn ecap(&self) -> u64 {
        self.ecap
    }
    /// GSTS_REG.
    pub fn gsts(&self) -> u32 {
        self.gsts
    }
    /// RTADDR_REG as last written.
    pub fn rtaddr(&self) -> u64 {
        self.rtaddr
    }
    /// The host address width used for address fields and reserved bits.
    pub fn haw(&self) -> u32 {
        self.haw
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Entries currently held: (IOTLB, paging-structure cache, context cache).
    pub fn cache_occupancy(&self) -> (usize, usize, usize) {
        (self.iotlb.len(), self.psc.len(), self.ctx.len())
    }

    /// Capacity of (IOTLB, paging-structure cache, context cache) after rounding to whole sets.
    pub fn cache_capacity(&self) -> (usize, usize, usize) {
        (self.iotlb.capacity(), self.psc.capacity(), self.config.context_cache_entries as usize)
    }

    /// Whether `levels`-level tables are in SAGAW.
    pub fn supports_levels(&self, levels: u32) -> bool {
        (3..=5).contains(&levels) && self.cap >> 8 & (1 << (levels - 2)) != 0
    }

    /// The page-table configuration Linux would derive from this unit for a `levels` domain:
    /// leaf levels from SLLPS, snoop from ECAP.SC, the host address width.
    pub fn pagetable_config(&self, levels: u32) -> Result<PageTableConfig> {
        if !self.supports_levels(levels) {
            return Err(Error::UnsupportedLevels { levels });
        }
        let sllps = (self.cap >> 34) & 3;
        Ok(PageTableConfig {
            levels,
            leaf_levels: 1 | ((sllps as u8) << 1),
            snoop: self.config.snoop_control,
            haw: self.haw,
        })
    }
}

#[cfg(test)]
mod tests;
