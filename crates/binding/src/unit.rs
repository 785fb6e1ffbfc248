//! The VT-d unit: registers, DMA translation, fault log, caches and their invalidation.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use vtd::{ContextInvalidation, IotlbInvalidation, PageTable, Unit, UnitConfig};

use crate::arrays::{overlap, U64Out, U8Out};
use crate::error::{invalid, u16_arg, u64_arg, u8_arg, vtd_err, Code};
use crate::memory::{NativeMemory, SharedMem};
use crate::node_api::External;
use crate::pagetable::{NativeGather, NativePageTable};

/// Unit configuration; absent fields take the defaults of `vtd::UnitConfig`.
#[napi(object)]
pub struct UnitOptions {
    /// 39, 48 or 57.
    pub address_width: Option<u32>,
    /// SLLPS 2 MiB.
    pub superpage_2m: Option<bool>,
    /// SLLPS 1 GiB.
    pub superpage_1g: Option<bool>,
    /// CAP.ND.
    pub nd: Option<u32>,
    /// CAP.PSI.
    pub psi: Option<bool>,
    /// CAP.MAMV.
    pub mamv: Option<u32>,
    /// CAP.CM.
    pub caching_mode: Option<bool>,
    /// CAP.ESRTPS.
    pub esrtps: Option<bool>,
    /// ECAP.C.
    pub coherent: Option<bool>,
    /// ECAP.SC.
    pub snoop_control: Option<bool>,
    /// ECAP.PT.
    pub pass_through: Option<bool>,
    /// ECAP.DT.
    pub device_tlb: Option<bool>,
    /// ECAP.QI (advertised only).
    pub queued_invalidation: Option<bool>,
    /// ECAP.IR (advertised only).
    pub interrupt_remapping: Option<bool>,
    /// ECAP.MHMV.
    pub mhmv: Option<u32>,
    /// TM bit ignored in 4K leaves.
    pub stale_tm: Option<bool>,
    /// Fault-recording registers.
    pub fault_records: Option<u32>,
    /// IOTLB entries.
    pub iotlb_entries: Option<u32>,
    /// IOTLB associativity.
    pub iotlb_ways: Option<u32>,
    /// Paging-structure-cache entries.
    pub psc_entries: Option<u32>,
    /// Context-cache entries.
    pub context_cache_entries: Option<u32>,
}

fn unit_config(o: UnitOptions) -> Result<UnitConfig, Code> {
    let d = UnitConfig::default();
    Ok(UnitConfig {
        address_width: o.address_width.unwrap_or(d.address_width),
        superpage_2m: o.superpage_2m.unwrap_or(d.superpage_2m),
        superpage_1g: o.superpage_1g.unwrap_or(d.superpage_1g),
        nd: u8_arg(o.nd.unwrap_or(d.nd as u32), 6, "nd")?,
        psi: o.psi.unwrap_or(d.psi),
        mamv: u8_arg(o.mamv.unwrap_or(d.mamv as u32), 63, "mamv")?,
        caching_mode: o.caching_mode.unwrap_or(d.caching_mode),
        esrtps: o.esrtps.unwrap_or(d.esrtps),
        coherent: o.coherent.unwrap_or(d.coherent),
        snoop_control: o.snoop_control.unwrap_or(d.snoop_control),
        pass_through: o.pass_through.unwrap_or(d.pass_through),
        device_tlb: o.device_tlb.unwrap_or(d.device_tlb),
        queued_invalidation: o.queued_invalidation.unwrap_or(d.queued_invalidation),
        interrupt_remapping: o.interrupt_remapping.unwrap_or(d.interrupt_remapping),
        mhmv: u8_arg(o.mhmv.unwrap_or(d.mhmv as u32), 15, "mhmv")?,
        stale_tm: o.stale_tm.unwrap_or(d.stale_tm),
        fault_records: o.fault_records.unwrap_or(d.fault_records),
        iotlb_entries: o.iotlb_entries.unwrap_or(d.iotlb_entries),
        iotlb_ways: o.iotlb_ways.unwrap_or(d.iotlb_ways),
        psc_entries: o.psc_entries.unwrap_or(d.psc_entries),
        context_cache_entries: o.context_cache_entries.unwrap_or(d.context_cache_entries),
    })
}

/// The pinned register view.
#[napi(object)]
pub struct Registers {
    /// CAP_REG.
    pub cap: BigInt,
    /// ECAP_REG.
    pub ecap: BigInt,
    /// GSTS_REG.
    pub gsts: u32,
    /// RTADDR_REG.
    pub rtaddr: BigInt,
}

/// One fault record.
#[napi(object)]
pub struct Fault {
    /// Requester id.
    pub sid: u32,
    /// Faulting page address.
    pub iova: BigInt,
    /// Fault reason (0x1..=0xE).
    pub reason: u32,
    /// Whether the request was a write.
    pub write: bool,
}

/// Unit counters (numbers: they stay far below 2^53).
#[napi(object)]
pub struct UnitStats {
    /// IOTLB hits.
    pub iotlb_hits: f64,
    /// IOTLB misses.
    pub iotlb_misses: f64,
    /// Page walks.
    pub walks: f64,
    /// Faulted requests.
    pub faults: f64,
    /// Walks resumed from the paging-structure cache.
    pub psc_hits: f64,
    /// Context-cache hits.
    pub context_hits: f64,
    /// Context-cache misses.
    pub context_misses: f64,
    /// Faults recorded in FRCD registers.
    pub faults_recorded: f64,
    /// Faults not recorded (FPD, collapse, overflow).
    pub faults_dropped: f64,
    /// Untranslated requests (TE off, pass-through).
    pub passthrough: f64,
    /// Context-cache invalidations.
    pub context_invalidations: f64,
    /// IOTLB invalidations.
    pub iotlb_invalidations: f64,
}

/// Entries held and capacity of each cache.
#[napi(object)]
pub struct CacheOccupancy {
    /// IOTLB entries held.
    pub iotlb: u32,
    /// IOTLB capacity.
    pub iotlb_capacity: u32,
    /// Paging-structure-cache entries held.
    pub psc: u32,
    /// Paging-structure-cache capacity.
    pub psc_capacity: u32,
    /// Context-cache entries held.
    pub context: u32,
    /// Context-cache capacity.
    pub context_capacity: u32,
}

/// A VT-d DMA-remapping unit over a memory.
#[napi]
pub struct NativeUnit {
    mem: SharedMem,
    unit: Unit,
    /// The caches' capacity, as V8 sees it.
    #[allow(dead_code)]
    external: External,
    last_fault: u32,
    last_fault_iova: u64,
}

fn dma_args(sid: u32, iova: &BigInt, len: usize) -> Result<(u16, u64), Code> {
    let sid = u16_arg(sid, "sid")?;
    let iova = u64_arg(iova, "iova")?;
    if iova.checked_add(len as u64).is_none() {
        return Err(invalid(format!("iova {iova:#x} + {len} bytes overflows 64 bits")));
    }
    Ok((sid, iova))
}

fn granularity_name(g: IotlbInvalidation) -> &'static str {
    match g {
        IotlbInvalidation::Global => "global",
        IotlbInvalidation::Domain(_) => "domain",
        IotlbInvalidation::Page { .. } => "page",
    }
}

#[napi]
impl NativeUnit {
    /// A unit with translation disabled.
    #[napi(constructor, catch_unwind)]
    pub fn new(env: Env, mem: &NativeMemory, options: UnitOptions) -> Result<Self, Code> {
        let unit = Unit::new(unit_config(options)?).map_err(vtd_err)?;
        // Tag, value, permission and LRU stamp per IOTLB/PSC entry; a hash entry per context.
        let (iotlb, psc, ctx) = unit.cache_capacity();
        let bytes = (iotlb + psc) as u64 * 25 + ctx as u64 * 48 + std::mem::size_of::<NativeUnit>() as u64;
        let external = External::new(&env, bytes);
        Ok(NativeUnit { mem: mem.mem.clone(), unit, external, last_fault: 0, last_fault_iova: 0 })
    }

    /// CAP, ECAP, GSTS, RTADDR.
    #[napi(catch_unwind)]
    pub fn registers(&self) -> Registers {
        Registers {
            cap: BigInt::from(self.unit.cap()),
            ecap: BigInt::from(self.unit.ecap()),
            gsts: self.unit.gsts(),
            rtaddr: BigInt::from(self.unit.rtaddr()),
        }
    }

    /// MMIO read.
    #[napi(catch_unwind)]
    pub fn read_register(&self, offset: u32, size: u32) -> Result<u64, Code> {
        self.unit.read_reg(offset, size).map_err(vtd_err)
    }

    /// MMIO write.
    #[napi(catch_unwind)]
    pub fn write_register(&mut self, offset: u32, size: u32, value: BigInt) -> Result<(), Code> {
        let v = u64_arg(&value, "value")?;
        self.unit.write_reg(offset, size, v).map_err(vtd_err)
    }

    /// RTADDR + GCMD.SRTP.
    #[napi(catch_unwind)]
    pub fn set_root_table(&mut self, pa: BigInt) -> Result<(), Code> {
        self.unit.set_root_table(u64_arg(&pa, "pa")?);
        Ok(())
    }

    /// GCMD.TE.
    #[napi(catch_unwind)]
    pub fn enable_translation(&mut self, on: bool) {
        self.unit.enable_translation(on);
    }

    /// Batch translation: `out[i]` = PA or 2^64-1, `faults[i]` = reason or 0. Returns how many
    /// faulted.
    #[napi(catch_unwind)]
    pub fn translate(&mut self, sid: u32, iovas: &[u64], #[napi(ts_arg_type = "BigUint64Array")] out: U64Out, write: bool, #[napi(ts_arg_type = "Uint8Array | null")] faults: Option<U8Out>) -> Result<u32, Code> {
        let sid = u16_arg(sid, "sid")?;
        // Views of one buffer would alias the `&mut` slices: refuse them.
        if overlap(iovas, out) {
            return Err(invalid("out must not share memory with iovas"));
        }
        if faults.as_deref().is_some_and(|f| overlap(f, iovas) || overlap(f, out)) {
            return Err(invalid("faults must not share memory with iovas or out"));
        }
        if out.len() < iovas.len() {
            return Err(invalid(format!("out holds {} entries, iovas {}", out.len(), iovas.len())));
        }
        if let Some(f) = &faults {
            if f.len() < iovas.len() {
                return Err(invalid(format!("faults holds {} entries, iovas {}", f.len(), iovas.len())));
            }
        }
        let mem = self.mem.borrow();
        Ok(self.unit.translate_batch(&mem, sid, iovas, out, write, faults) as u32)
    }

    /// One translation: the PA, or 2^64-1 on a fault (never a PA: PAs are below 2^52), whose
    /// reason `last_fault` then returns. Scalar arguments and result keep the call cheap.
    #[napi(catch_unwind)]
    pub fn translate_one(&mut self, sid: u32, iova: BigInt, write: bool) -> Result<u64, Code> {
        let sid = u16_arg(sid, "sid")?;
        let iova = u64_arg(&iova, "iova")?;
        let mem = self.mem.borrow();
        Ok(match self.unit.translate(&mem, sid, iova, write) {
            Ok(pa) => {
                self.last_fault = 0;
                pa
            }
            Err(reason) => {
                self.last_fault = reason as u32;
                self.last_fault_iova = iova;
                u64::MAX
            }
        })
    }

    /// The fault reason of the last `translate_one`, `dma_read` or `dma_write`, 0 if it
    /// succeeded.
    #[napi(getter)]
    pub fn last_fault(&self) -> u32 {
        self.last_fault
    }

    /// The IOVA of the faulting request of the last `translate_one`, `dma_read` or `dma_write`
    /// that faulted: for DMA, the transfer's first byte in the faulting page. 0 after a call
    /// that succeeded.
    #[napi(getter)]
    pub fn last_fault_iova(&self) -> u64 {
        self.last_fault_iova
    }

    fn dma_done(&mut self, r: vtd::Result<std::result::Result<(), vtd::DmaFault>>) -> Result<u32, Code> {
        let (reason, iova) = match r.map_err(vtd_err)? {
            Ok(()) => (0, 0),
            Err(f) => (f.reason as u32, f.iova),
        };
        self.last_fault = reason;
        self.last_fault_iova = iova;
        Ok(reason)
    }

    /// A device reads `buf.length` bytes at `iova` into `buf` (zero-copy), one translation
    /// request per 4 KiB page. Returns 0, or the fault reason of the first faulting page; the
    /// bytes before it were transferred, `buf` is untouched from it on, `lastFaultIova` is
    /// where it starts.
    #[napi(catch_unwind)]
    pub fn dma_read(&mut self, sid: u32, iova: BigInt, #[napi(ts_arg_type = "Uint8Array")] buf: U8Out) -> Result<u32, Code> {
        let (sid, iova) = dma_args(sid, &iova, buf.len())?;
        let r = self.unit.dma_read(&self.mem.borrow(), sid, iova, buf);
        self.dma_done(r)
    }

    /// A device writes `buf` at `iova`, one translation request per 4 KiB page. Returns 0, or
    /// the fault reason of the first faulting page (earlier pages were written, nothing from
    /// it on; `lastFaultIova` is where it starts).
    #[napi(catch_unwind)]
    pub fn dma_write(&mut self, sid: u32, iova: BigInt, buf: &[u8]) -> Result<u32, Code> {
        let (sid, iova) = dma_args(sid, &iova, buf.len())?;
        let r = self.unit.dma_write(&mut self.mem.borrow_mut(), sid, iova, buf);
        self.dma_done(r)
    }

    /// Pending fault records, oldest first.
    #[napi(catch_unwind)]
    pub fn faults(&self) -> Vec<Fault> {
        self.unit
            .fault_records()
            .into_iter()
            .map(|f| Fault { sid: f.sid as u32, iova: BigInt::from(f.addr), reason: f.reason as u32, write: f.write })
            .collect()
    }

    /// Clears the fault log; returns how many records were pending.
    #[napi(catch_unwind)]
    pub fn clear_faults(&mut self) -> u32 {
        self.unit.clear_faults() as u32
    }

    /// Counters.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> UnitStats {
        let s = self.unit.stats();
        UnitStats {
            iotlb_hits: s.iotlb_hits as f64,
            iotlb_misses: s.iotlb_misses as f64,
            walks: s.walks as f64,
            faults: s.faults as f64,
            psc_hits: s.psc_hits as f64,
            context_hits: s.context_hits as f64,
            context_misses: s.context_misses as f64,
            faults_recorded: s.faults_recorded as f64,
            faults_dropped: s.faults_dropped as f64,
            passthrough: s.passthrough as f64,
            context_invalidations: s.context_invalidations as f64,
            iotlb_invalidations: s.iotlb_invalidations as f64,
        }
    }

    /// Cache occupancy and capacity.
    #[napi(catch_unwind)]
    pub fn cache_occupancy(&self) -> CacheOccupancy {
        let (iotlb, psc, context) = self.unit.cache_occupancy();
        let (ic, pc, cc) = self.unit.cache_capacity();
        CacheOccupancy {
            iotlb: iotlb as u32,
            iotlb_capacity: ic as u32,
            psc: psc as u32,
            psc_capacity: pc as u32,
            context: context as u32,
            context_capacity: cc as u32,
        }
    }

    /// Context-cache invalidation: granularity "global" | "domain" | "device".
    #[napi(catch_unwind, strict)]
    pub fn invalidate_context(&mut self, granularity: String, did: u32, sid: u32, fm: u32) -> Result<(), Code> {
        let did = u16_arg(did, "did")?;
        let req = match granularity.as_str() {
            "global" => ContextInvalidation::Global,
            "domain" => ContextInvalidation::Domain(did),
            "device" => ContextInvalidation::Device { did, sid: u16_arg(sid, "sid")?, fm: u8_arg(fm, 3, "fm")? },
            g => return Err(invalid(format!("unknown context invalidation granularity {g:?}"))),
        };
        self.unit.invalidate_context(req);
        Ok(())
    }

    /// IOTLB invalidation: granularity "global" | "domain" | "page"; returns the granularity
    /// performed.
    #[napi(catch_unwind, strict, ts_return_type = "'global' | 'domain' | 'page'")]
    pub fn invalidate_iotlb(&mut self, granularity: String, did: u32, addr: BigInt, am: u32, ih: bool) -> Result<&'static str, Code> {
        let did = u16_arg(did, "did")?;
        let req = match granularity.as_str() {
            "global" => IotlbInvalidation::Global,
            "domain" => IotlbInvalidation::Domain(did),
            "page" => IotlbInvalidation::Page { did, addr: u64_arg(&addr, "addr")?, am: u8_arg(am, 63, "am")?, ih },
            g => return Err(invalid(format!("unknown IOTLB invalidation granularity {g:?}"))),
        };
        self.unit.invalidate_iotlb(req).map(granularity_name).map_err(vtd_err)
    }

    /// Flushes what `gather` collected for domain `did`, then frees its table pages.
    #[napi(catch_unwind, ts_return_type = "'global' | 'domain' | 'page'")]
    pub fn iotlb_sync(&mut self, did: u32, gather: &mut NativeGather) -> Result<&'static str, Code> {
        let did = u16_arg(did, "did")?;
        let mut mem = self.mem.borrow_mut();
        self.unit.iotlb_sync(&mut mem, did, &mut gather.inner).map(granularity_name).map_err(vtd_err)
    }

    /// A fresh page table for this unit with `levels` levels.
    #[napi(catch_unwind)]
    pub fn create_page_table(&self, levels: u32) -> Result<NativePageTable, Code> {
        let config = self.unit.pagetable_config(levels).map_err(vtd_err)?;
        let pt = PageTable::new(&mut self.mem.borrow_mut(), config).map_err(vtd_err)?;
        Ok(NativePageTable { mem: self.mem.clone(), pt })
    }

    /// Adopts existing tables at `pgd` (re-hydration after kexec).
    #[napi(catch_unwind)]
    pub fn adopt_page_table(&self, pgd: BigInt, levels: u32) -> Result<NativePageTable, Code> {
        let config = self.unit.pagetable_config(levels).map_err(vtd_err)?;
        let pt = PageTable::from_raw(u64_arg(&pgd, "pgd")?, config).map_err(vtd_err)?;
        Ok(NativePageTable { mem: self.mem.clone(), pt })
    }
}
