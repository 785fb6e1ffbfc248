//! Arrays crossing to JavaScript: V8-owned copies out, zero-copy typed arrays in.

use napi::bindgen_prelude::*;

use crate::error::{err, Code};

fn napi_err(e: napi::Error) -> Error<Code> {
    err("ERR_NATIVE_ALLOCATION", format!("cannot create a JavaScript array: {}", e.reason))
}

/// A `Uint8Array` over a new V8-owned `ArrayBuffer` of `len` bytes that `fill` writes. V8-owned:
/// the garbage collector frees it like any array, with no finalizer to wait for.
pub(crate) fn new_u8_array<'e>(env: &'e Env, len: usize, fill: impl FnOnce(&mut [u8]) -> Result<(), Code>) -> Result<Uint8ArraySlice<'e>, Code> {
    use napi::sys;
    let raw = env.raw();
    let (mut data, mut ab) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: plain Node-API calls on the calling thread's env; `data` points at `len` bytes of
    // the new buffer (or is null for 0), which nothing else sees before `fill` returns.
    unsafe {
        if sys::napi_create_arraybuffer(raw, len, &mut data, &mut ab) != sys::Status::napi_ok {
            return Err(err("ERR_NATIVE_ALLOCATION", format!("cannot allocate a {len}-byte ArrayBuffer")));
        }
        let bytes: &mut [u8] = if len == 0 || data.is_null() { &mut [] } else { std::slice::from_raw_parts_mut(data.cast(), len) };
        fill(bytes)?;
        let mut ta = std::ptr::null_mut();
        if sys::napi_create_typedarray(raw, sys::TypedarrayType::uint8_array, len, ab, 0, &mut ta) != sys::Status::napi_ok {
            return Err(err("ERR_NATIVE_ALLOCATION", "cannot create a Uint8Array"));
        }
        Uint8ArraySlice::from_napi_value(raw, ta).map_err(napi_err)
    }
}

pub(crate) fn u8_array<'e>(env: &'e Env, data: &[u8]) -> Result<Uint8ArraySlice<'e>, Code> {
    new_u8_array(env, data.len(), |b| {
        b.copy_from_slice(data);
        Ok(())
    })
}

pub(crate) fn u64_array<'e>(env: &'e Env, data: &[u64]) -> Result<BigUint64ArraySlice<'e>, Code> {
    BigUint64ArraySlice::copy_from(env, data).map_err(napi_err)
}

pub(crate) fn u32_array<'e>(env: &'e Env, data: &[u32]) -> Result<Uint32ArraySlice<'e>, Code> {
    Uint32ArraySlice::copy_from(env, data).map_err(napi_err)
}

/// Whether two typed arrays share a byte: views of one `ArrayBuffer` passed as two arguments.
pub(crate) fn overlap<A, B>(a: &[A], b: &[B]) -> bool {
    let (a, b) = (a.as_ptr_range(), b.as_ptr_range());
    a.start != a.end && b.start != b.end && (a.start as usize) < b.end as usize && (b.start as usize) < a.end as usize
}

// napi-derive reads a literal `&mut [T]` argument as a class reference; through an alias it
// takes the zero-copy typed-array path (`FromNapiValue for &mut [T]`).
pub(crate) type U64Out<'a> = &'a mut [u64];
pub(crate) type U8Out<'a> = &'a mut [u8];
