//! Register offsets and the CAP/ECAP encodings of a unit (VT-d spec chapter 11; Linux
//! `drivers/iommu/intel/iommu.h`; QEMU's register layout for the offsets).

/// Version register (32-bit).
pub const VER_REG: u32 = 0x00;
/// Capability register (64-bit).
pub const CAP_REG: u32 = 0x08;
/// Extended capability register (64-bit).
pub const ECAP_REG: u32 = 0x10;
/// Global command register (32-bit, write).
pub const GCMD_REG: u32 = 0x18;
/// Global status register (32-bit, read).
pub const GSTS_REG: u32 = 0x1c;
/// Root table address register (64-bit).
pub const RTADDR_REG: u32 = 0x20;
/// Context command register (64-bit).
pub const CCMD_REG: u32 = 0x28;
/// Fault status register (32-bit).
pub const FSTS_REG: u32 = 0x34;
/// Invalidate address register, at ECAP.IRO × 16 (QEMU's 0xf0).
pub const IVA_REG: u32 = 0xf0;
/// IOTLB invalidate register, IVA + 8.
pub const IOTLB_REG: u32 = 0xf8;
/// First fault-recording register, at CAP.FRO × 16 (QEMU's 0x220).
pub const FRCD_REG: u32 = 0x220;

/// GCMD/GSTS: translation enable / status.
pub const GCMD_TE: u32 = 1 << 31;
/// GCMD: set root table pointer; GSTS: root table pointer status.
pub const GCMD_SRTP: u32 = 1 << 30;
/// GSTS.TES.
pub const GSTS_TES: u32 = 1 << 31;
/// GSTS.RTPS.
pub const GSTS_RTPS: u32 = 1 << 30;

/// FSTS: primary fault overflow (RW1C).
pub const FSTS_PFO: u32 = 1 << 0;
/// FSTS: primary pending fault (RO: some FRCD has F set).
pub const FSTS_PPF: u32 = 1 << 1;

/// CCMD: invalidate context cache (set by software, cleared by hardware when done).
pub const CCMD_ICC: u64 = 1 << 63;
/// IOTLB_REG: invalidate IOTLB.
pub const IOTLB_IVT: u64 = 1 << 63;

/// CAP.PSI: page-selective invalidation.
pub const CAP_PSI: u64 = 1 << 39;
/// CAP.CM: caching mode.
pub const CAP_CM: u64 = 1 << 7;
/// CAP.ESRTPS: SRTP also invalidates every cache.
pub const CAP_ESRTPS: u64 = 1 << 63;

/// ECAP.C: page-walk coherency.
pub const ECAP_C: u64 = 1 << 0;
/// ECAP.QI: queued invalidation.
pub const ECAP_QI: u64 = 1 << 1;
/// ECAP.DT: device-TLB.
pub const ECAP_DT: u64 = 1 << 2;
/// ECAP.IR: interrupt remapping.
pub const ECAP_IR: u64 = 1 << 3;
/// ECAP.PT: pass-through translation type.
pub const ECAP_PT: u64 = 1 << 6;
/// ECAP.SC: snoop control (PTE bit 11).
pub const ECAP_SC: u64 = 1 << 7;

/// Field extractors, named as Linux's `cap_*`/`ecap_*` macros.
pub mod field {
    /// CAP.ND: number of domains = 2^(4 + 2·ND).
    pub const fn cap_nd(cap: u64) -> u64 {
        cap & 7
    }
    /// CAP.SAGAW (bits 12:8).
    pub const fn cap_sagaw(cap: u64) -> u64 {
        (cap >> 8) & 0x1f
    }
    /// CAP.MGAW + 1, in bits.
    pub const fn cap_mgaw(cap: u64) -> u64 {
        ((cap >> 16) & 0x3f) + 1
    }
    /// CAP.FRO × 16: offset of the first fault-recording register.
    pub const fn cap_fault_reg_offset(cap: u64) -> u64 {
        ((cap >> 24) & 0x3ff) * 16
    }
    /// CAP.SLLPS (bits 37:34).
    pub const fn cap_super_page_val(cap: u64) -> u64 {
        (cap >> 34) & 0xf
    }
    /// CAP.NFR + 1: number of fault-recording registers.
    pub const fn cap_num_fault_regs(cap: u64) -> u64 {
        ((cap >> 40) & 0xff) + 1
    }
    /// CAP.MAMV.
    pub const fn cap_max_amask_val(cap: u64) -> u64 {
        (cap >> 48) & 0x3f
    }
    /// ECAP.IRO × 16: offset of the IVA register.
    pub const fn ecap_iotlb_offset(ecap: u64) -> u64 {
        ((ecap >> 8) & 0x3ff) * 16
    }
}

#[cfg(test)]
mod tests {
    use super::field::*;
    use super::*;

    #[test]
    fn offsets_agree_with_capability_fields() {
        let unit = crate::Unit::new(crate::UnitConfig::default()).unwrap();
        let (cap, ecap) = (unit.cap(), unit.ecap());
        assert_eq!(cap_fault_reg_offset(cap), FRCD_REG as u64);
        assert_eq!(ecap_iotlb_offset(ecap), IVA_REG as u64);
        assert_eq!(IOTLB_REG, IVA_REG + 8);
    }
}
