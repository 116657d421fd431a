//! libnbd.so.0: the libnbd 1.14 C API over nbd-core.
//!
//! - `gen/src/api.rs` is the table of every call; `cargo run -p
//!   nbd-capi-gen` writes `src/generated/exports.rs` (the exported
//!   wrappers) and `libnbd.syms` (the version script) from it, and cbindgen
//!   writes `include/libnbd.h` from the Rust definitions.
//! - [`calls`] holds the hand-written bodies, [`handle`] the handle and its
//!   sync wait loop, [`driver`] the socket I/O around the core client.
//! - [`ffi`] is the only module that turns C pointers into Rust values;
//!   [`wrap`] is the panic boundary; [`errors`] the thread-local errors.
#![allow(clippy::missing_safety_doc)]

pub mod callbacks;
pub mod calls;
pub mod connect;
pub mod consts;
pub mod driver;
pub mod errors;
pub mod ffi;
pub mod handle;
pub(crate) mod settings;
pub(crate) mod spin;
/// cbindgen:ignore
pub(crate) mod tls;
pub mod transitions;
pub mod wrap;

#[rustfmt::skip]
pub mod generated {
    //! Written by nbd-capi-gen: do not edit.
    pub mod exports;
}

pub use consts::*;
pub use generated::exports::*;
pub use handle::nbd_handle;

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// A panic inside a call's body, through the real exported wrapper,
    /// comes back as the call's error value (the hook is test-only).
    #[test]
    fn panic_in_a_call_returns_an_error() {
        let name = CString::new("__panic__").unwrap();
        unsafe {
            let h = nbd_create();
            assert!(!h.is_null());
            assert_eq!(nbd_set_handle_name(h, name.as_ptr()), -1);
            assert_eq!(nbd_get_errno(), libc::EIO);
            let msg = std::ffi::CStr::from_ptr(nbd_get_error()).to_str().unwrap();
            assert!(
                msg.starts_with("nbd_set_handle_name: internal error (panic: "),
                "{msg}"
            );
            // The handle still works.
            assert_eq!(nbd_set_debug(h, false), 0);
            nbd_close(h);
        }
    }
}
