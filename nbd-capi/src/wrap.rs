//! The machinery every generated wrapper uses: the panic boundary, the
//! return kinds (what a call returns on success and on error) and the debug
//! trace of each call.

use crate::consts::LIBNBD_STRICT_FLAGS;
use crate::errors::{self, Error};
use crate::ffi;
use crate::handle::{nbd_handle, Inner};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use errors::set_context;

/// How a return kind of the API table crosses into C.
pub trait RetKind {
    /// What the hand-written body returns on success.
    type Rust;
    /// What the C caller gets.
    type C;
    fn to_c(v: Self::Rust) -> Result<Self::C, Error>;
    /// The value for failure, including a caught panic.
    fn error() -> Self::C;
    /// For the debug trace: `ret=...`.
    fn show(v: &Self::Rust) -> String;
}

/// The return kinds, named as in the table (`api::Ret`).
pub mod ret {
    use super::*;

    pub struct Void;
    pub struct Err;
    pub struct Bool;
    pub struct Int64;
    pub struct StaticString;
    pub struct String;
    pub struct Handle;
    pub struct PlainInt;
    pub struct PlainConstString;
    pub struct Int;
    pub struct UInt;
    pub struct UInt32;
    pub struct UIntPtr;
    pub struct SSize;
    pub struct UInt64;

    /// Kinds that are a plain number, with the value returned on error.
    macro_rules! number {
        ($k:ident, $t:ty, $err:expr) => {
            impl RetKind for $k {
                type Rust = $t;
                type C = $t;
                fn to_c(v: $t) -> Result<$t, Error> {
                    Ok(v)
                }
                fn error() -> $t {
                    $err
                }
                fn show(v: &$t) -> std::string::String {
                    format!("ret={v}")
                }
            }
        };
    }
    number!(Int, c_int, -1);
    // The calls that cannot fail still have an error value for a NULL
    // handle (EFAULT), which libnbd 1.14.2 would crash on.
    number!(UInt, std::os::raw::c_uint, 0);
    number!(UInt32, u32, 0);
    number!(UIntPtr, usize, 0);
    number!(SSize, libc::ssize_t, -1);
    // The nbd_stats_* counters: they cannot fail either.
    number!(UInt64, u64, 0);

    impl RetKind for Void {
        type Rust = ();
        type C = ();
        fn to_c(_: ()) -> Result<(), Error> {
            Ok(())
        }
        fn error() {}
        fn show(_: &()) -> std::string::String {
            "ret=".into()
        }
    }
    impl RetKind for Err {
        type Rust = ();
        type C = c_int;
        fn to_c(_: ()) -> Result<c_int, Error> {
            Ok(0)
        }
        fn error() -> c_int {
            -1
        }
        fn show(_: &()) -> std::string::String {
            "ret=0".into()
        }
    }
    impl RetKind for Bool {
        type Rust = bool;
        type C = c_int;
        fn to_c(v: bool) -> Result<c_int, Error> {
            Ok(c_int::from(v))
        }
        fn error() -> c_int {
            -1
        }
        fn show(v: &bool) -> std::string::String {
            format!("ret={}", c_int::from(*v))
        }
    }
    impl RetKind for Int64 {
        type Rust = i64;
        type C = i64;
        fn to_c(v: i64) -> Result<i64, Error> {
            Ok(v)
        }
        fn error() -> i64 {
            -1
        }
        fn show(v: &i64) -> std::string::String {
            format!("ret={v}")
        }
    }
    impl RetKind for StaticString {
        type Rust = &'static CStr;
        type C = *const c_char;
        fn to_c(v: &'static CStr) -> Result<*const c_char, Error> {
            Ok(v.as_ptr())
        }
        fn error() -> *const c_char {
            std::ptr::null()
        }
        fn show(v: &&'static CStr) -> std::string::String {
            format!("ret={:?}", v.to_string_lossy())
        }
    }
    impl RetKind for String {
        type Rust = CString;
        type C = *mut c_char;
        fn to_c(v: CString) -> Result<*mut c_char, Error> {
            ffi::malloc_cstring(&v)
        }
        fn error() -> *mut c_char {
            std::ptr::null_mut()
        }
        fn show(v: &CString) -> std::string::String {
            format!("ret={:?}", v.to_string_lossy())
        }
    }
    impl RetKind for Handle {
        type Rust = Box<nbd_handle>;
        type C = *mut nbd_handle;
        fn to_c(v: Box<nbd_handle>) -> Result<*mut nbd_handle, Error> {
            Ok(ffi::into_raw(v))
        }
        fn error() -> *mut nbd_handle {
            std::ptr::null_mut()
        }
        fn show(_: &Box<nbd_handle>) -> std::string::String {
            "ret=<handle>".into()
        }
    }
    impl RetKind for PlainInt {
        type Rust = c_int;
        type C = c_int;
        fn to_c(v: c_int) -> Result<c_int, Error> {
            Ok(v)
        }
        fn error() -> c_int {
            0
        }
        fn show(v: &c_int) -> std::string::String {
            format!("ret={v}")
        }
    }
    impl RetKind for PlainConstString {
        type Rust = *const c_char;
        type C = *const c_char;
        fn to_c(v: *const c_char) -> Result<*const c_char, Error> {
            Ok(v)
        }
        fn error() -> *const c_char {
            std::ptr::null()
        }
        fn show(_: &*const c_char) -> std::string::String {
            "ret=<string>".into()
        }
    }
}

/// Runs a call's body. An error is recorded as the thread's last error and
/// becomes the return kind's error value; so does a panic, which never
/// unwinds into C.
pub fn boundary<R: RetKind, F>(f: F) -> R::C
where
    F: FnOnce() -> Result<R::Rust, Error>,
{
    match catch_unwind(AssertUnwindSafe(|| f().and_then(R::to_c))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            errors::set(&e);
            R::error()
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<std::string::String>().cloned())
                .unwrap_or_default();
            // Building the error could itself panic (allocation failure
            // aborts anyway); nothing else here can.
            let _ = catch_unwind(|| {
                errors::set(&errors::err(
                    libc::EIO,
                    format!("internal error (panic: {what})"),
                ))
            });
            R::error()
        }
    }
}

/// nbd_set_pread_initialize: a read buffer is zeroed before any check, so
/// a refused read never leaves the caller's old bytes (CVE-2022-0485).
pub fn initialize(g: &Inner, buf: &mut [u8]) {
    if g.settings.pread_initialize {
        buf.fill(0);
    }
}

/// An enum argument: one of `allowed`, else EINVAL.
pub fn check_enum(name: &str, v: c_int, allowed: &[c_int]) -> Result<(), Error> {
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(errors::err(
        libc::EINVAL,
        format!("{name}: invalid value for parameter: {v}"),
    ))
}

/// A flags argument: bits outside `mask` are EINVAL.
pub fn check_flags(name: &str, v: u32, mask: u32) -> Result<(), Error> {
    if v & !mask == 0 {
        return Ok(());
    }
    Err(errors::err(
        libc::EINVAL,
        format!("{name}: invalid value for flag: 0x{v:x}"),
    ))
}

/// LIBNBD_CMD_FLAG_* of a command accepting `mask`: other bits are EINVAL
/// with LIBNBD_STRICT_FLAGS on (the default), and always above 16 bits
/// (the wire's flags field); with strict flags off the rest go to the
/// server as they are.
pub fn check_cmd_flags(g: &Inner, name: &str, v: u32, mask: u32) -> Result<(), Error> {
    if g.settings.strict & LIBNBD_STRICT_FLAGS != 0 || v > u32::from(u16::MAX) {
        check_flags(name, v, mask)
    } else {
        Ok(())
    }
}

/// Traces a call's result when the handle debugs (libnbd's `leave:` line).
pub fn trace_leave<R: RetKind>(h: &nbd_handle, tracing: bool, r: &Result<R::Rust, Error>) {
    if !tracing {
        return;
    }
    match r {
        Ok(v) => h.debug(&format!("leave: {}", R::show(v))),
        Err(e) => h.debug(&format!(
            "leave: error=\"{}\"",
            errors::format(errors::context(), e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error_value() {
        set_context("nbd_test");
        let r = boundary::<ret::Int64, _>(|| panic!("deliberate"));
        assert_eq!(r, -1);
        assert_eq!(errors::last_errno(), libc::EIO);
        let msg = unsafe { CStr::from_ptr(errors::last_message()) };
        assert!(msg
            .to_str()
            .unwrap()
            .starts_with("nbd_test: internal error (panic: deliberate)"));
        assert!(boundary::<ret::String, _>(|| panic!()).is_null());
    }

    #[test]
    fn error_is_recorded() {
        set_context("nbd_test2");
        let r = boundary::<ret::Bool, _>(|| Err(errors::err(libc::ENOTCONN, "nope")));
        assert_eq!(r, -1);
        assert_eq!(errors::last_errno(), libc::ENOTCONN);
        assert_eq!(boundary::<ret::Bool, _>(|| Ok(true)), 1);
        // Success does not clear the last error.
        assert_eq!(errors::last_errno(), libc::ENOTCONN);
    }
}
