//! The one error type of the crate, named after libfdt's error codes.
use std::fmt;

/// libfdt's error codes (`libfdt.h`), with the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 1: a requested node or property does not exist.
    NotFound = 1,
    /// 2: a node or property to create already exists.
    Exists = 2,
    /// 3: the blob would exceed its size cap.
    NoSpace = 3,
    /// 4: an offset is out of bounds or points at the wrong kind of tag.
    BadOffset = 4,
    /// 5: a badly formatted path.
    BadPath = 5,
    /// 6: an invalid phandle.
    BadPhandle = 6,
    /// 7: a sequential-write call in the wrong state, or an incomplete tree.
    BadState = 7,
    /// 8: the blob or a block is truncated or overflows its bounds.
    Truncated = 8,
    /// 9: no 0xd00dfeed magic.
    BadMagic = 9,
    /// 10: a version that is not handled.
    BadVersion = 10,
    /// 11: a corrupt structure block (misnesting, bad tags, named or second root, bad names at
    /// the `dtc`/`strict` validation levels).
    BadStructure = 11,
    /// 12: blocks in an order a read-write operation cannot handle.
    BadLayout = 12,
    /// 13: an internal assertion failed.
    Internal = 13,
    /// 14: a bad `#address-cells`-like value.
    BadNCells = 14,
    /// 15: an unexpected property value (e.g. a string with an interior NUL).
    BadValue = 15,
    /// 16: an overlay that cannot be applied.
    BadOverlay = 16,
    /// 17: no phandle values left.
    NoPhandles = 17,
    /// 18: invalid flags.
    BadFlags = 18,
    /// 19: a misaligned blob or block.
    Alignment = 19,
}

impl ErrorKind {
    /// libfdt's name: `FDT_ERR_BADMAGIC`, ...
    pub const fn name(self) -> &'static str {
        use ErrorKind::*;
        match self {
            NotFound => "FDT_ERR_NOTFOUND",
            Exists => "FDT_ERR_EXISTS",
            NoSpace => "FDT_ERR_NOSPACE",
            BadOffset => "FDT_ERR_BADOFFSET",
            BadPath => "FDT_ERR_BADPATH",
            BadPhandle => "FDT_ERR_BADPHANDLE",
            BadState => "FDT_ERR_BADSTATE",
            Truncated => "FDT_ERR_TRUNCATED",
            BadMagic => "FDT_ERR_BADMAGIC",
            BadVersion => "FDT_ERR_BADVERSION",
            BadStructure => "FDT_ERR_BADSTRUCTURE",
            BadLayout => "FDT_ERR_BADLAYOUT",
            Internal => "FDT_ERR_INTERNAL",
            BadNCells => "FDT_ERR_BADNCELLS",
            BadValue => "FDT_ERR_BADVALUE",
            BadOverlay => "FDT_ERR_BADOVERLAY",
            NoPhandles => "FDT_ERR_NOPHANDLES",
            BadFlags => "FDT_ERR_BADFLAGS",
            Alignment => "FDT_ERR_ALIGNMENT",
        }
    }
}

/// An error: libfdt's kind, the byte offset in the blob where it was found (decoding), and what
/// exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The libfdt error kind.
    pub kind: ErrorKind,
    /// Byte offset into the blob, when the error is about a blob.
    pub offset: Option<usize>,
    /// A precise human-readable description.
    pub detail: String,
}

impl Error {
    /// An error of `kind` with `detail`, at no particular offset.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error { kind, offset: None, detail: detail.into() }
    }

    /// An error of `kind` at byte `offset` of the blob.
    pub fn at(kind: ErrorKind, offset: usize, detail: impl Into<String>) -> Self {
        Error { kind, offset: Some(offset), detail: detail.into() }
    }

    /// The stable code: libfdt's name.
    pub fn code(&self) -> &'static str {
        self.kind.name()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at offset {:#x}: {}", self.kind.name(), o, self.detail),
            None => write!(f, "{}: {}", self.kind.name(), self.detail),
        }
    }
}

impl std::error::Error for Error {}

/// Result of an FDT operation.
pub type Result<T> = std::result::Result<T, Error>;
