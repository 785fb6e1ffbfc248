//! Caching translation information and invalidating it (VT-d spec chapter 6): context-cache,
//! IOTLB and paging-structure-cache invalidation, and Linux's flush of a gather.
use physmem::PhysMem;

use super::Unit;
use crate::cache::{iotlb_level, psc_level};
use crate::pgtable::Gather;
use crate::{Error, Result};

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

impl Unit {
    /// Drops every cached entry (SRTP, a change of TE).
    pub(super) fn reset_caches(&mut self) {
        self.iotlb.clear();
        self.psc.clear();
        self.ctx.retain(|_, _| false);
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
