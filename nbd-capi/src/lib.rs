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

pub mod calls;
pub mod consts;
pub mod driver;
pub mod errors;
pub mod ffi;
pub mod handle;
pub mod wrap;

#[rustfmt::skip]
pub mod generated {
    //! Written by nbd-capi-gen: do not edit.
    pub mod exports;
}

pub use consts::*;
pub use generated::exports::*;
pub use handle::nbd_handle;
