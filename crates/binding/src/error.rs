//! The error status type, its stable string codes, and the argument checks that raise
//! `ERR_INVALID_ARG_VALUE` before anything native runs.

use napi::bindgen_prelude::*;

/// The error status type: a stable string code.
#[derive(Debug, Clone, Copy)]
pub struct Code(&'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}


pub(crate) fn err(code: &'static str, msg: impl Into<String>) -> Error<Code> {
    Error::new(Code(code), msg.into())
}

pub(crate) fn mem_err(e: physmem::Error) -> Error<Code> {
    err(e.code(), e.to_string())
}

pub(crate) fn vtd_err(e: vtd::Error) -> Error<Code> {
    err(e.code(), e.to_string())
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error<Code> {
    err("ERR_INVALID_ARG_VALUE", msg)
}

/// A non-negative bigint that fits 64 bits.
pub(crate) fn u64_arg(v: &BigInt, name: &str) -> Result<u64, Code> {
    let (negative, value, lossless) = v.get_u64();
    if negative && value != 0 || !lossless {
        return Err(invalid(format!("{name} must be a bigint in 0..2^64")));
    }
    Ok(value)
}

pub(crate) fn u8_arg(v: u32, max: u32, name: &str) -> Result<u8, Code> {
    if v > max {
        return Err(invalid(format!("{name} must be at most {max}")));
    }
    Ok(v as u8)
}

pub(crate) fn u16_arg(v: u32, name: &str) -> Result<u16, Code> {
    u16::try_from(v).map_err(|_| invalid(format!("{name} must fit 16 bits")))
}
