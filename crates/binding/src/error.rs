//! The error status type, its stable string codes, and the argument checks that raise
//! `ERR_OUT_OF_RANGE` / `ERR_INVALID_ARG_VALUE` before anything native runs. ts/native-check.ts
//! checks every argument first, with the same ranges; these hold for a caller of the bare addon.

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

/// Node's `ERR_OUT_OF_RANGE`, in Node's words.
pub(crate) fn out_of_range(name: &str, range: &str, received: impl std::fmt::Display) -> Error<Code> {
    err("ERR_OUT_OF_RANGE", format!("The value of \"{name}\" is out of range. It must be {range}. Received {received}"))
}

/// An integer in `0..=max` as the error says it: `an integer >= 0 && <= 18`.
pub(crate) fn up_to(max: impl std::fmt::Display) -> String {
    format!("an integer >= 0 && <= {max}")
}

/// A non-negative bigint that fits 64 bits.
pub(crate) fn u64_arg(v: &BigInt, name: &str) -> Result<u64, Code> {
    let (negative, value, lossless) = v.get_u64();
    if negative && value != 0 || !lossless {
        let sign = if v.sign_bit { "-" } else { "" };
        let received = match v.words[..] {
            [lo] => format!("{sign}{lo}n"),
            [lo, hi] => format!("{sign}{}n", (hi as u128) << 64 | lo as u128),
            _ => format!("a {}-bit bigint", v.words.len() * 64),
        };
        return Err(out_of_range(name, ">= 0n && < 2n ** 64n", received));
    }
    Ok(value)
}

pub(crate) fn u8_arg(v: u32, max: u32, name: &str) -> Result<u8, Code> {
    if v > max {
        return Err(out_of_range(name, &up_to(max), v));
    }
    Ok(v as u8)
}

pub(crate) fn u16_arg(v: u32, name: &str) -> Result<u16, Code> {
    u16::try_from(v).map_err(|_| out_of_range(name, &up_to(u16::MAX), v))
}
