//! The register file (VT-d spec chapter 11): GCMD/GSTS (root table pointer, translation
//! enable), CCMD and IOTLB_REG invalidation commands, FSTS and the fault-recording registers.
use super::{ContextInvalidation, IotlbInvalidation, Unit};
use crate::regs::*;
use crate::{Error, Result};

impl Unit {
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
}
