//! Pin and area bookkeeping of the simulated kernel, in pure Rust: what mapping a large area does
//! per physically contiguous run, so that it costs one N-API crossing whatever the area's size.
//!
//! - [`PinCounts`]: `struct page` pin counts by PFN (a whole 2 MiB chunk is one counter);
//! - [`Folios`]: a shmem object's folio table, filled from the page allocator on first touch
//!   (2 MiB folios where a whole aligned 2 MiB of the object exists, else 4 KiB pages);
//! - [`PagesRuns`]: an `iopt_pages`' pinned runs and the windows of page indices its areas use,
//!   and the map batch of a window.
//!
//! Page numbers are `u64`; nothing here knows Node or the memory's bytes (the frame allocator is
//! a [`FrameSource`]).

mod folios;
mod pages;
mod pins;

pub use folios::{Folio, Folios, FrameSource, Truncated};
pub use pages::PagesRuns;
pub use pins::PinCounts;

/// Pages per PMD-sized folio (2 MiB).
pub const HPAGE_PAGES: u64 = 512;
/// Order of a PMD-sized folio.
pub const HPAGE_ORDER: u8 = 9;

/// A physically contiguous run: page index `idx` onwards maps PFN `pfn` onwards, `len` pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub idx: u64,
    pub pfn: u64,
    pub len: u64,
}

/// Why a fault-in or pin failed, as the kernel answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// EFAULT: a page at or beyond the end of the object (SIGBUS).
    Fault,
    /// ENOMEM: the page allocator has no frame left.
    NoMem,
    /// EINVAL: a folio adopted at a wrong or taken index.
    Inval,
}

/// Appends a run to `out`, extending the last one when logically and physically contiguous.
pub(crate) fn push_run(out: &mut Vec<Run>, idx: u64, pfn: u64, len: u64) {
    if let Some(r) = out.last_mut() {
        if r.idx + r.len == idx && r.pfn + r.len == pfn {
            r.len += len;
            return;
        }
    }
    out.push(Run { idx, pfn, len });
}
