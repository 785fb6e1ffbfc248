//! A bit-exact model of an Intel VT-d DMA-remapping unit in legacy mode, for the iommu-liveupdate
//! simulator.
//!
//! The unit's tables live in simulated physical memory ([`physmem::PhysMem`]) exactly as the
//! hardware reads them: a root table of 256 [`RootEntry`]s, context tables of 256
//! [`ContextEntry`]s and 3/4/5-level second-level page tables. A DMA request is translated the way
//! QEMU's `vtd_do_iommu_translate` checks it, with the legacy fault reasons in the same order,
//! through a context cache, an IOTLB and a paging-structure cache that keep stale entries until
//! software invalidates them, as hardware does.
//!
//! [`PageTable`] is the kernel side: Linux's `__domain_mapping` / `domain_unmap` page-table code,
//! choosing superpages by alignment and handing freed table pages to a [`Gather`] that is released
//! only by [`Unit::iotlb_sync`], after the IOTLB flush.
//!
//! ```
//! use physmem::{Config, PhysMem};
//! use vtd::{ContextEntry, Gather, PageTable, Prot, RootEntry, TranslationType, Unit, UnitConfig};
//! let mut mem = PhysMem::new(Config { size: 1 << 32, seed: 1 }).unwrap();
//! let mut unit = Unit::new(UnitConfig::default()).unwrap();
//! let mut pt = PageTable::new(&mut mem, unit.pagetable_config(4).unwrap()).unwrap();
//! let mut gather = Gather::default();
//! pt.map(&mut mem, 0x10_0000, 0x4000_0000, 0x20_0000, Prot::RW, &mut gather).unwrap();
//! let root = mem.alloc(0, true).unwrap();
//! let ctx = mem.alloc(0, true).unwrap();
//! let re = RootEntry::new(ctx);
//! mem.write_u64(root, re.lo).unwrap();
//! let ce = ContextEntry::new(pt.pgd(), 2, 1, TranslationType::MultiLevel, false);
//! mem.write_u64(ctx + 8 * 2, ce.lo).unwrap(); // devfn 1 → offset 16
//! mem.write_u64(ctx + 8 * 3, ce.hi).unwrap();
//! unit.set_root_table(root);
//! unit.enable_translation(true);
//! assert_eq!(unit.translate(&mem, 0x0001, 0x10_0123, true), Ok(0x4000_0123));
//! ```
#![deny(missing_docs)]

mod cache;
pub mod entry;
mod fault;
mod pgtable;
pub mod regs;
mod unit;
pub mod verify;

pub use cache::CachedContext;
pub use entry::{ContextEntry, RootEntry, SlpteRsvd, TranslationType};
pub use fault::{FaultReason, FaultRecord};
pub use pgtable::{Gather, MappedSummary, PageTable, PageTableConfig, Prot, WalkStep};
pub use unit::{ContextInvalidation, DmaFault, IotlbInvalidation, Stats, Unit, UnitConfig, MAX_CACHE_ENTRIES, MAX_IOTLB_WAYS};

use std::fmt;

/// Errors of the VT-d model's software interfaces (faults of DMA requests are not errors: they
/// are [`FaultReason`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A physical-memory operation failed.
    Mem(physmem::Error),
    /// A unit configuration value is out of range.
    BadConfig(String),
    /// An address or size is not aligned as required.
    Unaligned {
        /// The value.
        value: u64,
        /// The alignment required.
        align: u64,
    },
    /// A zero-length range.
    EmptyRange,
    /// A range reaches beyond the page table's address width.
    OutOfRange {
        /// Start of the range.
        iova: u64,
        /// Its length.
        size: u64,
        /// The address width in bits.
        width: u32,
    },
    /// A mapping with neither read nor write permission.
    NoPermission,
    /// Snoop requested on a unit without ECAP.SC.
    SnoopUnsupported,
    /// Part of the range to map is already mapped.
    AlreadyMapped {
        /// The first mapped IOVA found.
        iova: u64,
    },
    /// The range would split a superpage mapping.
    SplitsSuperpage {
        /// Start of the superpage.
        iova: u64,
        /// Its size.
        size: u64,
    },
    /// Paging levels not supported by the unit (SAGAW).
    UnsupportedLevels {
        /// The levels asked for.
        levels: u32,
    },
    /// A register access at an offset or size the unit does not implement.
    BadRegister {
        /// Offset.
        offset: u32,
        /// Access size in bytes.
        size: u32,
    },
    /// A page-selective invalidation with an address mask above CAP.MAMV.
    InvalidAddressMask {
        /// The mask asked for.
        am: u8,
        /// CAP.MAMV.
        mamv: u8,
    },
    /// A page table audited by [`PageTable::mapped_pages`] is not a tree that can be adopted.
    Corrupt {
        /// The table page at fault.
        table: u64,
        /// What is wrong with it.
        why: Corruption,
    },
}

/// Why [`PageTable::mapped_pages`] refused a table ([`Error::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The table is reached a second time: a cycle, or a table shared by two entries.
    ReachedTwice,
    /// Reaching it would visit more table pages than the caller allowed.
    TooManyTables {
        /// The caller's bound.
        max: usize,
    },
    /// The table lies beyond memory.
    BeyondMemory,
}

impl Error {
    /// A stable string code, used as the JavaScript error's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Mem(e) => e.code(),
            Error::BadConfig(_) => "ERR_VTD_CONFIG",
            Error::Unaligned { .. } => "ERR_VTD_ALIGN",
            Error::EmptyRange => "ERR_VTD_EMPTY_RANGE",
            Error::OutOfRange { .. } => "ERR_VTD_RANGE",
            Error::NoPermission => "ERR_VTD_NO_PERMISSION",
            Error::SnoopUnsupported => "ERR_VTD_SNOOP",
            Error::AlreadyMapped { .. } => "ERR_VTD_ALREADY_MAPPED",
            Error::SplitsSuperpage { .. } => "ERR_VTD_SPLITS_SUPERPAGE",
            Error::UnsupportedLevels { .. } => "ERR_VTD_LEVELS",
            Error::BadRegister { .. } => "ERR_VTD_REGISTER",
            Error::InvalidAddressMask { .. } => "ERR_VTD_ADDRESS_MASK",
            Error::Corrupt { .. } => "ERR_VTD_CORRUPT",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Mem(e) => e.fmt(f),
            Error::BadConfig(why) => write!(f, "invalid unit configuration: {why}"),
            Error::Unaligned { value, align } => write!(f, "{value:#x} is not {align:#x}-aligned"),
            Error::EmptyRange => write!(f, "the range is empty"),
            Error::OutOfRange { iova, size, width } => {
                write!(f, "range {iova:#x}+{size:#x} is beyond the {width}-bit address width")
            }
            Error::NoPermission => write!(f, "a mapping needs read or write permission"),
            Error::SnoopUnsupported => write!(f, "snoop control (ECAP.SC) is not supported by the unit"),
            Error::AlreadyMapped { iova } => write!(f, "IOVA {iova:#x} is already mapped"),
            Error::SplitsSuperpage { iova, size } => {
                write!(f, "the range splits the {size:#x}-byte superpage at {iova:#x}")
            }
            Error::UnsupportedLevels { levels } => write!(f, "{levels}-level tables are not in SAGAW"),
            Error::BadRegister { offset, size } => {
                write!(f, "no {size}-byte register at offset {offset:#x}")
            }
            Error::InvalidAddressMask { am, mamv } => {
                write!(f, "address mask {am} is above CAP.MAMV {mamv}")
            }
            Error::Corrupt { table, why } => match why {
                Corruption::ReachedTwice => write!(f, "corrupt page table: table {table:#x} is reached twice"),
                Corruption::TooManyTables { max } => {
                    write!(f, "corrupt page table: reaching table {table:#x} visits more than {max} table pages")
                }
                Corruption::BeyondMemory => write!(f, "corrupt page table: table {table:#x} lies beyond memory"),
            },
        }
    }
}

impl std::error::Error for Error {}

impl From<physmem::Error> for Error {
    fn from(e: physmem::Error) -> Self {
        Error::Mem(e)
    }
}

/// Result of a VT-d model operation.
pub type Result<T> = std::result::Result<T, Error>;
