//! A device's DMA transfer: one translation request per 4 KiB page it touches, stopping at the
//! first page that faults.
use physmem::PhysMem;

use super::Unit;
use crate::fault::FaultReason;
use crate::{Error, Result};

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

impl Unit {
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
}

fn check_dma_range(iova: u64, len: usize) -> Result<()> {
    match iova.checked_add(len as u64) {
        Some(_) => Ok(()),
        None => Err(Error::OutOfRange { iova, size: len as u64, width: 64 }),
    }
}
