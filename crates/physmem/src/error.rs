//! The one error type of the crate.
use std::fmt;

/// Errors of [`PhysMem`](crate::PhysMem) operations. Each has a stable [`code`](Error::code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The configured size is zero, not a multiple of 4 KiB, or above 2^52.
    BadSize {
        /// The size asked for.
        size: u64,
    },
    /// An access or range reaches beyond the configured size.
    OutOfRange {
        /// Start of the range.
        pa: u64,
        /// Length of the range.
        len: u64,
        /// The memory size.
        size: u64,
    },
    /// An address is not aligned as the operation requires.
    Unaligned {
        /// The address.
        pa: u64,
        /// The alignment required.
        align: u64,
    },
    /// An allocation order above [`MAX_ORDER`](crate::MAX_ORDER).
    BadOrder {
        /// The order asked for.
        order: u8,
    },
    /// No free naturally aligned block of the order exists.
    OutOfMemory {
        /// The order asked for.
        order: u8,
    },
    /// A claimed range is not entirely free.
    NotFree {
        /// Start of the range.
        pa: u64,
        /// Length of the range.
        len: u64,
    },
    /// A range to free or preserve is not entirely allocated.
    NotAllocated {
        /// Start of the range.
        pa: u64,
        /// Length of the range.
        len: u64,
    },
    /// A range is covered by a preservation mark.
    Preserved {
        /// Start of the range.
        pa: u64,
        /// Length of the range.
        len: u64,
    },
    /// No preservation mark with this address and order exists.
    NotPreserved {
        /// The address.
        pa: u64,
        /// The order.
        order: u8,
    },
}

impl Error {
    /// A stable string code, used as the JavaScript error's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadSize { .. } => "ERR_PHYSMEM_SIZE",
            Error::OutOfRange { .. } => "ERR_PHYSMEM_RANGE",
            Error::Unaligned { .. } => "ERR_PHYSMEM_ALIGN",
            Error::BadOrder { .. } => "ERR_PHYSMEM_ORDER",
            Error::OutOfMemory { .. } => "ERR_PHYSMEM_NOMEM",
            Error::NotFree { .. } => "ERR_PHYSMEM_NOT_FREE",
            Error::NotAllocated { .. } => "ERR_PHYSMEM_NOT_ALLOCATED",
            Error::Preserved { .. } => "ERR_PHYSMEM_PRESERVED",
            Error::NotPreserved { .. } => "ERR_PHYSMEM_NOT_PRESERVED",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadSize { size } => write!(
                f,
                "memory size {size:#x} must be a non-zero multiple of 4 KiB and at most 2^52 bytes"
            ),
            Error::OutOfRange { pa, len, size } => {
                write!(f, "range {pa:#x}+{len:#x} is beyond memory of {size:#x} bytes")
            }
            Error::Unaligned { pa, align } => write!(f, "address {pa:#x} is not {align:#x}-aligned"),
            Error::BadOrder { order } => write!(f, "order {order} is above the maximum {}", crate::MAX_ORDER),
            Error::OutOfMemory { order } => write!(f, "no free block of order {order}"),
            Error::NotFree { pa, len } => write!(f, "range {pa:#x}+{len:#x} is not entirely free"),
            Error::NotAllocated { pa, len } => write!(f, "range {pa:#x}+{len:#x} is not entirely allocated"),
            Error::Preserved { pa, len } => write!(f, "range {pa:#x}+{len:#x} overlaps preserved memory"),
            Error::NotPreserved { pa, order } => {
                write!(f, "no preservation mark at {pa:#x} with order {order}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Result of a memory operation.
pub type Result<T> = std::result::Result<T, Error>;
