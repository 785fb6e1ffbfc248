//! The DMA-remapping unit: registers, the translation path, caches, invalidation, fault log.
use physmem::PhysMem;

use crate::cache::{iotlb_level, key, psc_level, CachedContext, ContextCache, SetAssoc};
use crate::entry::*;
use crate::fault::{FaultLog, FaultReason, FaultRecord};
use crate::pgtable::{Gather, PageTableConfig};
use crate::regs::*;
use crate::{Error, Result};

const INTERRUPT_FIRST: u64 = 0xfee0_0000;
const INTERRUPT_LAST: u64 = 0xfeef_ffff;

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
    /// IOTLB entries; 0 disables the IOTLB.
    pub iotlb_entries: u32,
    /// IOTLB associativity.
    pub iotlb_ways: u32,
    /// Paging-structure-cache entries (non-leaf entries); 0 disables it.
    pub psc_entries: u32,
    /// Context-cache entries; 0 disables it.
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

/// Granularity of a context-cache invalidation (CCMD.CIRG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextInvalidation {
    /// Every cached context entry.
    Global,
    /// Entries of one domain.
    Domain(u16),
    /// Entries of one requester; `fm` (0..=3) masks SID bits 2, 2:1 or 2:0.
    Device {
        /// Domain id (recorded; the model invalidates by requester).
        did: u16,
        /// Requester id.
        sid: u16,
        /// Function mask.
        fm: u8,
    },
}

/// Granularity of an IOTLB invalidation (IOTLB_REG.IIRG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IotlbInvalidation {
    /// Everything, in every domain.
    Global,
    /// One domain.
    Domain(u16),
    /// 2^`am` pages at `addr` of one domain; `ih` keeps paging-structure-cache entries.
    Page {
        /// Domain id.
        did: u16,
        /// Address; bits below the mask are ignored.
        addr: u64,
        /// Address mask: 2^am pages.
        am: u8,
        /// Invalidation hint: only leaf entries changed.
        ih: bool,
    },
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

/// Where a DMA transfer stopped: the translation of one of its pages faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaFault {
    /// The address of the faulting request: the transfer's first byte in the faulting page
    /// (the start of the transfer, or a page boundary).
    pub iova: u64,
    /// The fault reason, as [`Unit::translate`] returned it.
    pub reason: FaultReason,
}

/// The pieces of a transfer of `len` bytes at `iova`, one per 4 KiB page it touches:
/// `(iova of the first byte, offset in the buffer, length)`.
fn dma_pages(iova: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        (off < len).then(|| {
            let at = iova + off as u64;
            let n = ((0x1000 - (at & 0xfff)) as usize).min(len - off);
            off += n;
            (at, off - n, n)
        })
    })
}

/// What the translation path needs from the context of one requester.
enum Route {
    /// TE off or TT = pass-through: the address is the physical address.
    Identity,
    /// Translate through the domain's second-level tables.
    Translate(CachedContext),
}

/// One VT-d DMA-remapping hardware unit (legacy mode).
#[derive(Debug, Clone)]
pub struct Unit {
    config: UnitConfig,
    cap: u64,
    ecap: u64,
    haw: u32,
    rsvd: SlpteRsvd,
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
        if config.iotlb_ways == 0 {
            return Err(Error::BadConfig("IOTLB associativity must be at least 1".into()));
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
            rsvd: SlpteRsvd::new(haw, config.snoop_control, config.stale_tm),
            iotlb: SetAssoc::new(config.iotlb_entries, config.iotlb_ways),
            psc: SetAssoc::new(config.psc_entries, 4),
            ctx: ContextCache::new(config.context_cache_entries),
            faults: FaultLog::new(config.fault_records as usize),
            config,
            cap,
            ecap,
            haw,
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

    fn reset_caches(&mut self) {
        self.iotlb.clear();
        self.psc.clear();
        self.ctx.retain(|_, _| false);
    }

    /// Writes RTADDR and issues GCMD.SRTP: the unit latches the root table and invalidates every
    /// cache (QEMU `vtd_handle_gcmd_srtp`).
    pub fn set_root_table(&mut self, root: u64) {
        self.rtaddr = root & !0xfff;
        let cmd = (self.gsts & GSTS_TES) | GCMD_SRTP;
        self.gcmd(cmd);
    }

    /// Sets or clears GCMD.TE; either change resets every cache (QEMU `vtd_handle_gcmd_te`).
    pub fn enable_translation(&mut self, on: bool) {
        let cmd = if on { GCMD_TE } else { 0 };
        self.gcmd(cmd);
    }

    fn gcmd(&mut self, cmd: u32) {
        if cmd & GCMD_SRTP != 0 {
            // RTADDR's low bits (TTM/SMT) are kept in the register but legacy mode uses 63:12.
            self.root = self.rtaddr & !0xfff;
            self.gsts |= GSTS_RTPS;
            self.reset_caches();
        }
        let te = cmd & GCMD_TE != 0;
        if te != (self.gsts & GSTS_TES != 0) {
            if te {
                self.gsts |= GSTS_TES;
            } else {
                self.gsts &= !GSTS_TES;
            }
            self.reset_caches();
        }
    }

    /// Reads a register (`size` 4 or 8 bytes, as the register is wide).
    pub fn read_reg(&self, offset: u32, size: u32) -> Result<u64> {
        let bad = Err(Error::BadRegister { offset, size });
        let v = match (offset, size) {
            (VER_REG, 4) => 0x10,
            (CAP_REG, 8) => self.cap,
            (ECAP_REG, 8) => self.ecap,
            (GCMD_REG, 4) => 0,
            (GSTS_REG, 4) => self.gsts as u64,
            (RTADDR_REG, 8) => self.rtaddr,
            (CCMD_REG, 8) => self.ccmd,
            (FSTS_REG, 4) => self.fsts() as u64,
            (IVA_REG, 8) => self.iva,
            (IOTLB_REG, 8) => self.iotlb_reg,
            (o, 8) if o >= FRCD_REG && ((o - FRCD_REG) as usize) < 16 * self.faults.len() && o % 8 == 0 => {
                let i = ((o - FRCD_REG) / 16) as usize;
                match self.faults.get(i) {
                    Some(r) => {
                        let (lo, hi) = r.encode();
                        if (o - FRCD_REG).is_multiple_of(16) {
                            lo
                        } else {
                            hi
                        }
                    }
                    None => 0,
                }
            }
            _ => return bad,
        };
        Ok(v)
    }

    fn fsts(&self) -> u32 {
        (self.faults.pfo as u32 * FSTS_PFO) | ((self.faults.pending() as u32) * FSTS_PPF)
            | (self.faults.fri() as u32) << 8
    }

    /// Writes a register with hardware semantics: GCMD runs TE/SRTP, CCMD with ICC and
    /// IOTLB_REG with IVT run the invalidation and report the granularity performed (CAIG,
    /// IAIG; 0 when the request was invalid), FSTS.PFO and FRCD.F are write-1-to-clear.
    /// Writes to read-only registers are ignored.
    pub fn write_reg(&mut self, offset: u32, size: u32, value: u64) -> Result<()> {
        match (offset, size) {
            (VER_REG, 4) | (CAP_REG, 8) | (ECAP_REG, 8) | (GSTS_REG, 4) => {}
            (GCMD_REG, 4) => self.gcmd(value as u32),
            (RTADDR_REG, 8) => self.rtaddr = value,
            (CCMD_REG, 8) => {
                self.ccmd = value;
                if value & CCMD_ICC != 0 {
                    let did = value as u16;
                    let sid = (value >> 16) as u16;
                    let fm = ((value >> 32) & 3) as u8;
                    let req = match (value >> 61) & 3 {
                        1 => Some(ContextInvalidation::Global),
                        2 => Some(ContextInvalidation::Domain(did)),
                        3 => Some(ContextInvalidation::Device { did, sid, fm }),
                        _ => None,
                    };
                    let caig = match req {
                        Some(r) => {
                            self.invalidate_context(r);
                            (value >> 61) & 3
                        }
                        None => 0,
                    };
                    self.ccmd = (value & !(CCMD_ICC | 3 << 59)) | caig << 59;
                }
            }
            (IVA_REG, 8) => self.iva = value,
            (IOTLB_REG, 8) => {
                self.iotlb_reg = value;
                if value & IOTLB_IVT != 0 {
                    let did = (value >> 32) as u16;
                    let req = match (value >> 60) & 3 {
                        1 => Some(IotlbInvalidation::Global),
                        2 => Some(IotlbInvalidation::Domain(did)),
                        3 => Some(IotlbInvalidation::Page {
                            did,
                            addr: self.iva & !0xfff,
                            am: (self.iva & 0x3f) as u8,
                            ih: self.iva & (1 << 6) != 0,
                        }),
                        _ => None,
                    };
                    let iaig = match req.map(|r| self.invalidate_iotlb(r)) {
                        Some(Ok(done)) => match done {
                            IotlbInvalidation::Global => 1,
                            IotlbInvalidation::Domain(_) => 2,
                            IotlbInvalidation::Page { .. } => 3,
                        },
                        _ => 0,
                    };
                    self.iotlb_reg = (value & !(IOTLB_IVT | 3 << 57)) | iaig << 57;
                }
            }
            (FSTS_REG, 4) => {
                if value as u32 & FSTS_PFO != 0 {
                    self.faults.pfo = false;
                }
            }
            (o, 8) if o >= FRCD_REG && ((o - FRCD_REG) as usize) < 16 * self.faults.len() && o % 8 == 0 => {
                if (o - FRCD_REG) % 16 == 8 && value & (1 << 63) != 0 {
                    self.faults.clear(((o - FRCD_REG) / 16) as usize);
                }
            }
            _ => return Err(Error::BadRegister { offset, size }),
        }
        Ok(())
    }

    /// Invalidates context-cache entries.
    pub fn invalidate_context(&mut self, req: ContextInvalidation) {
        self.stats.context_invalidations += 1;
        match req {
            ContextInvalidation::Global => {
                self.ctx.retain(|_, _| false);
            }
            ContextInvalidation::Domain(did) => {
                self.ctx.retain(|_, c| c.did != did);
            }
            ContextInvalidation::Device { sid, fm, .. } => {
                let mask: u16 = match fm {
                    0 => 0xffff,
                    1 => !0b100,
                    2 => !0b110,
                    _ => !0b111,
                };
                self.ctx.retain(|s, _| s & mask != sid & mask);
            }
        }
    }

    /// Invalidates IOTLB and paging-structure-cache entries. Returns the granularity actually
    /// performed: a PSI on a unit without CAP.PSI is done as a domain-selective invalidation.
    pub fn invalidate_iotlb(&mut self, req: IotlbInvalidation) -> Result<IotlbInvalidation> {
        let done = match req {
            IotlbInvalidation::Page { am, .. } if am > self.config.mamv => {
                return Err(Error::InvalidAddressMask { am, mamv: self.config.mamv })
            }
            IotlbInvalidation::Page { did, .. } if !self.config.psi => IotlbInvalidation::Domain(did),
            other => other,
        };
        self.stats.iotlb_invalidations += 1;
        match done {
            IotlbInvalidation::Global => {
                self.iotlb.clear();
                self.psc.clear();
            }
            IotlbInvalidation::Domain(did) => {
                self.iotlb.invalidate_domain(did);
                self.psc.invalidate_domain(did);
            }
            IotlbInvalidation::Page { did, addr, am, ih } => {
                let span = 1u64.checked_shl(12 + am as u32).unwrap_or(0).wrapping_sub(1);
                let start = addr & !span;
                let end = start | span;
                self.iotlb.invalidate_range(did, start, end, iotlb_level);
                if !ih {
                    self.psc.invalidate_range(did, start, end, psc_level);
                }
            }
        }
        Ok(done)
    }

    /// Linux's `cache_tag_flush_range` + `iommu_put_pages_list` for one unit: flushes the
    /// gathered range of domain `did` with a PSI whose address and mask are computed as
    /// `calculate_psi_aligned_address` does (IH = 1 exactly when no table page was freed), or a
    /// DSI when the unit lacks PSI or the mask exceeds MAMV; only then frees the freelist.
    pub fn iotlb_sync(&mut self, mem: &mut PhysMem, did: u16, gather: &mut Gather) -> Result<IotlbInvalidation> {
        let Some((start, end)) = gather.range() else {
            // Nothing was gathered: nothing can be cached for it either.
            debug_assert!(gather.freelist().is_empty());
            return Ok(IotlbInvalidation::Domain(did));
        };
        let (addr, mask) = psi_aligned_address(start, end);
        let ih = gather.freelist().is_empty();
        let req = if !self.config.psi || mask > self.config.mamv as u32 {
            IotlbInvalidation::Domain(did)
        } else {
            IotlbInvalidation::Page { did, addr, am: mask as u8, ih }
        };
        let done = self.invalidate_iotlb(req)?;
        for &pa in gather.freelist() {
            mem.free_order(pa, 0)?;
        }
        gather.reset();
        Ok(done)
    }

    #[cold]
    fn fault(&mut self, sid: u16, iova: u64, reason: FaultReason, write: bool, fpd: bool) {
        self.stats.faults += 1;
        if fpd && reason.qualified() {
            self.stats.faults_dropped += 1;
        } else if self.faults.record(FaultRecord { sid, addr: iova & !0xfff, reason, write }) {
            self.stats.faults_recorded += 1;
        } else {
            self.stats.faults_dropped += 1;
        }
    }

    /// Pending fault records, oldest first.
    pub fn fault_records(&self) -> Vec<FaultRecord> {
        self.faults.records()
    }

    /// Clears every fault record and FSTS.PFO, as the driver's fault handler does; returns how
    /// many records were pending.
    pub fn clear_faults(&mut self) -> usize {
        self.faults.clear_all()
    }

    /// Resolves the requester's context: the context cache, else the root and context tables in
    /// QEMU's check order. A fault carries the FPD bit of the context entry if one was read.
    fn route(&mut self, mem: &PhysMem, sid: u16) -> std::result::Result<Route, (FaultReason, bool)> {
        if self.gsts & GSTS_TES == 0 {
            return Ok(Route::Identity);
        }
        let ctx = match self.ctx.get(sid) {
            Some(c) => {
                self.stats.context_hits += 1;
                c
            }
            None => {
                self.stats.context_misses += 1;
                let c = self.read_context(mem, sid)?;
                self.ctx.insert(sid, c);
                c
            }
        };
        Ok(match ctx.tt {
            TranslationType::PassThrough => Route::Identity,
            _ => Route::Translate(ctx),
        })
    }

    fn read_context(&self, mem: &PhysMem, sid: u16) -> std::result::Result<CachedContext, (FaultReason, bool)> {
        let re_pa = self.root + ((sid >> 8) as u64) * 16;
        let (Some(re_lo), Some(re_hi)) = (mem.dma_read_u64(re_pa), mem.dma_read_u64(re_pa + 8)) else {
            return Err((FaultReason::RootTableInv, false));
        };
        let re = RootEntry { lo: re_lo, hi: re_hi };
        if !re.present() {
            return Err((FaultReason::RootEntryP, false));
        }
        if re.lo & root_rsvd_lo(self.haw) != 0 || re.hi != 0 {
            return Err((FaultReason::RootEntryRsvd, false));
        }
        let ce_pa = re.ctp() + ((sid & 0xff) as u64) * 16;
        let (Some(ce_lo), Some(ce_hi)) = (mem.dma_read_u64(ce_pa), mem.dma_read_u64(ce_pa + 8)) else {
            return Err((FaultReason::ContextTableInv, false));
        };
        let ce = ContextEntry { lo: ce_lo, hi: ce_hi };
        let fpd = ce.fpd();
        if !ce.present() {
            return Err((FaultReason::ContextEntryP, fpd));
        }
        if ce.lo & context_rsvd_lo(self.haw) != 0 || ce.hi & CONTEXT_RSVD_HI != 0 {
            return Err((FaultReason::ContextEntryRsvd, fpd));
        }
        let levels = ce.aw() as u32 + 2;
        if !self.supports_levels(levels) {
            return Err((FaultReason::ContextEntryInv, fpd));
        }
        let tt_ok = match ce.tt() {
            TranslationType::MultiLevel => true,
            TranslationType::DeviceTlb => self.config.device_tlb,
            TranslationType::PassThrough => self.config.pass_through,
            TranslationType::Reserved => false,
        };
        if !tt_ok {
            return Err((FaultReason::ContextEntryInv, fpd));
        }
        Ok(CachedContext { did: ce.did(), slptptr: ce.slptptr(), levels, tt: ce.tt(), fpd })
    }

    /// Translates one DMA request from requester `sid`. `Err` is the fault reason; the fault is
    /// recorded (unless FPD or the log's policy drops it) and counted.
    pub fn translate(&mut self, mem: &PhysMem, sid: u16, iova: u64, write: bool) -> std::result::Result<u64, FaultReason> {
        match self.route(mem, sid) {
            Ok(Route::Identity) => {
                self.stats.passthrough += 1;
                Ok(iova)
            }
            Ok(Route::Translate(ctx)) => self.translate_in(mem, sid, &ctx, iova, write),
            Err((reason, fpd)) => {
                self.fault(sid, iova, reason, write, fpd);
                Err(reason)
            }
        }
    }

    /// Translates a batch of requests from one requester: `out[i]` gets the physical address
    /// of `iovas[i]` or `u64::MAX`, and `reasons[i]` (when given) the fault reason or 0.
    /// Returns how many faulted. The context is resolved once, as the batch is one burst.
    pub fn translate_batch(
        &mut self,
        mem: &PhysMem,
        sid: u16,
        iovas: &[u64],
        out: &mut [u64],
        write: bool,
        mut reasons: Option<&mut [u8]>,
    ) -> usize {
        let n = iovas.len().min(out.len());
        let route = self.route(mem, sid);
        let mut faulted = 0;
        for i in 0..n {
            let r = match &route {
                Ok(Route::Identity) => {
                    self.stats.passthrough += 1;
                    Ok(iovas[i])
                }
                Ok(Route::Translate(ctx)) => self.translate_in(mem, sid, ctx, iovas[i], write),
                Err((reason, fpd)) => {
                    self.fault(sid, iovas[i], *reason, write, *fpd);
                    Err(*reason)
                }
            };
            let (pa, fr) = match r {
                Ok(pa) => (pa, 0),
                Err(reason) => {
                    faulted += 1;
                    (u64::MAX, reason as u8)
                }
            };
            out[i] = pa;
            if let Some(rs) = reasons.as_deref_mut() {
                if let Some(slot) = rs.get_mut(i) {
                    *slot = fr;
                }
            }
        }
        faulted
    }

    /// A device reads `buf.len()` bytes at `iova` (memory read TLPs, one translation request per
    /// 4 KiB page, each through [`translate`](Self::translate): the context and IOTLB caches,
    /// walks and fault recording behave exactly as for that many `translate` calls). The
    /// transfer stops at the first page that faults: `buf` holds the bytes of the earlier pages
    /// and is untouched from the faulting page on; the fault is returned as `Ok(Err(_))`.
    /// Untranslated requests (TE off, pass-through) read memory at the IOVA.
    ///
    /// Errors: `iova + buf.len()` overflows ([`Error::OutOfRange`], nothing done), or a page
    /// translates to an address beyond memory ([`Error::Mem`]: the root complex aborts the
    /// request; the earlier pages were transferred).
    pub fn dma_read(&mut self, mem: &PhysMem, sid: u16, iova: u64, buf: &mut [u8]) -> Result<std::result::Result<(), DmaFault>> {
        check_dma_range(iova, buf.len())?;
        for (at, off, n) in dma_pages(iova, buf.len()) {
            match self.translate(mem, sid, at, false) {
                Ok(pa) => mem.read(pa, &mut buf[off..off + n])?,
                Err(reason) => return Ok(Err(DmaFault { iova: at, reason })),
            }
        }
        Ok(Ok(()))
    }

    /// A device writes `data` at `iova` (posted write TLPs, one translation request per 4 KiB
    /// page): as [`dma_read`](Self::dma_read), with write requests; the pages before the first
    /// faulting one are written to memory, nothing from it on.
    pub fn dma_write(&mut self, mem: &mut PhysMem, sid: u16, iova: u64, data: &[u8]) -> Result<std::result::Result<(), DmaFault>> {
        check_dma_range(iova, data.len())?;
        for (at, off, n) in dma_pages(iova, data.len()) {
            match self.translate(mem, sid, at, true) {
                Ok(pa) => mem.write(pa, &data[off..off + n])?,
                Err(reason) => return Ok(Err(DmaFault { iova: at, reason })),
            }
        }
        Ok(Ok(()))
    }

    // Always inlined: in the cdylib LTO otherwise keeps these out of the batch loop (+3 ns a hit).
    #[inline(always)]
    fn translate_in(&mut self, mem: &PhysMem, sid: u16, ctx: &CachedContext, iova: u64, write: bool) -> std::result::Result<u64, FaultReason> {
        let need = if write { SL_W as u8 } else { SL_R as u8 };
        let deny = if write { FaultReason::Write } else { FaultReason::Read };
        let width = levels_to_width(ctx.levels).min(self.config.address_width);
        if iova >> width != 0 {
            self.fault(sid, iova, FaultReason::AddrBeyondMgaw, write, ctx.fpd);
            return Err(FaultReason::AddrBeyondMgaw);
        }
        // IOTLB: one probe per page size that has entries.
        for kind in 0..3 {
            if self.iotlb.counts[kind] == 0 {
                continue;
            }
            let shift = level_shift(kind as u32 + 1);
            if let Some((base, perm)) = self.iotlb.lookup(key(ctx.did, kind as u32, iova >> shift)) {
                self.stats.iotlb_hits += 1;
                if perm & need == 0 {
                    self.fault(sid, iova, deny, write, ctx.fpd);
                    return Err(deny);
                }
                return Ok(base | (iova & ((1u64 << shift) - 1)));
            }
        }
        self.stats.iotlb_misses += 1;
        self.stats.walks += 1;
        match self.walk(mem, ctx, iova, need, deny) {
            Ok((base, level, perm)) => {
                let shift = level_shift(level);
                self.iotlb.insert(key(ctx.did, level - 1, iova >> shift), base, perm);
                Ok(base | (iova & ((1u64 << shift) - 1)))
            }
            Err(reason) => {
                self.fault(sid, iova, reason, write, ctx.fpd);
                Err(reason)
            }
        }
    }

    /// The second-level walk of QEMU's `vtd_iova_to_slpte`, resumed below the top when the
    /// paging-structure cache holds a non-leaf entry. Returns (page base, leaf level, R|W).
    #[inline(always)]
    fn walk(&mut self, mem: &PhysMem, ctx: &CachedContext, iova: u64, need: u8, deny: FaultReason) -> std::result::Result<(u64, u32, u8), FaultReason> {
        let mut level = ctx.levels;
        let mut table = ctx.slptptr;
        let mut perm = (SL_R | SL_W) as u8;
        for l in 2..=ctx.levels {
            let kind = (l - 2) as usize;
            if self.psc.counts[kind] == 0 {
                continue;
            }
            if let Some((next, p)) = self.psc.lookup(key(ctx.did, l - 2, iova >> level_shift(l))) {
                self.stats.psc_hits += 1;
                if p & need == 0 {
                    return Err(deny);
                }
                level = l - 1;
                table = next;
                perm = p;
                break;
            }
        }
        loop {
            let Some(pte) = mem.dma_read_u64(table + 8 * level_index(iova, level)) else {
                return Err(if level == ctx.levels { FaultReason::ContextEntryInv } else { FaultReason::PagingEntryInv });
            };
            perm &= (pte & (SL_R | SL_W)) as u8;
            if pte as u8 & need == 0 {
                return Err(deny);
            }
            if pte & self.rsvd.mask(pte, level) != 0 {
                return Err(FaultReason::PagingEntryRsvd);
            }
            let addr = slpte_addr(pte, self.haw);
            if slpte_is_leaf(pte, level) {
                let last = addr + (level_size(level) - 1);
                if !(addr > INTERRUPT_LAST || last < INTERRUPT_FIRST) {
                    return Err(FaultReason::InterruptAddr);
                }
                return Ok((addr, level, perm));
            }
            self.psc.insert(key(ctx.did, level - 2, iova >> level_shift(level)), addr, perm);
            table = addr;
            level -= 1;
        }
    }
}

fn check_dma_range(iova: u64, len: usize) -> Result<()> {
    match iova.checked_add(len as u64) {
        Some(_) => Ok(()),
        None => Err(Error::OutOfRange { iova, size: len as u64, width: 64 }),
    }
}

/// `calculate_psi_aligned_address` (drivers/iommu/intel/cache.c): the PSI address and mask
/// covering the byte range `[start, end]`.
pub(crate) fn psi_aligned_address(start: u64, end: u64) -> (u64, u32) {
    const MAX_AGAW_PFN_WIDTH: u32 = 52;
    let pages = ((start & 0xfff) + (end - start + 1) + 0xfff) >> 12; // aligned_nrpages
    let aligned = pages.next_power_of_two();
    let bitmask = aligned - 1;
    let mut mask = aligned.trailing_zeros();
    let pfn = start >> 12;
    if bitmask & pfn != 0 {
        let end_pfn = pfn + pages - 1;
        let shared = !(pfn ^ end_pfn) & !bitmask;
        mask = if shared != 0 { shared.trailing_zeros() } else { MAX_AGAW_PFN_WIDTH };
    }
    let addr = if mask >= 52 { 0 } else { start & !((0x1000u64 << mask) - 1) };
    (addr, mask)
}

#[cfg(test)]
mod tests;
