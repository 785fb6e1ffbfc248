//! Primary fault recording (VT-d spec chapter 7): which faults reach the fault-recording
//! registers, and FSTS as the log sets it.
use super::Unit;
use crate::fault::{FaultReason, FaultRecord};
use crate::regs::*;

impl Unit {
    /// Counts a faulted request and records it, unless FPD suppresses it (qualified faults
    /// only) or the log drops it (collapse, overflow).
    #[cold]
    pub(super) fn fault(&mut self, sid: u16, iova: u64, reason: FaultReason, write: bool, fpd: bool) {
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

    /// FSTS_REG as the log sets it: PFO, PPF and FRI.
    pub(super) fn fsts(&self) -> u32 {
        (self.faults.pfo as u32 * FSTS_PFO) | ((self.faults.pending() as u32) * FSTS_PPF)
            | (self.faults.fri() as u32) << 8
    }
}
