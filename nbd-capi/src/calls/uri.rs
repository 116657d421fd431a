//! NBD URI settings and nbd_get_uri (URIs are parsed and built by
//! `nbd_core::uri`). The wrappers check the flags and enum arguments.

use crate::connect;
use crate::errors::Error;
use crate::handle::{nbd_handle, Held};
use std::ffi::{CStr, CString};

pub fn set_uri_allow_transports(_h: &nbd_handle, g: &mut Held<'_>, mask: u32) -> Result<(), Error> {
    g.settings.uri_allow_transports = mask;
    Ok(())
}

pub fn set_uri_allow_tls(_h: &nbd_handle, g: &mut Held<'_>, tls: libc::c_int) -> Result<(), Error> {
    g.settings.uri_allow_tls = tls;
    Ok(())
}

pub fn set_uri_allow_local_file(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    allow: bool,
) -> Result<(), Error> {
    g.settings.uri_allow_local_file = allow;
    Ok(())
}

pub fn supports_uri(_h: &nbd_handle, _g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(true)
}

pub fn get_uri(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    connect::uri_of(g)
}

pub fn set_uri_allow_tls_priority(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    allow: bool,
) -> Result<(), Error> {
    g.settings.uri_allow_tls_priority = allow;
    Ok(())
}

/// The NBD URI schemes libnbd 1.24 knows, `+ssh` included.
const SCHEMES: &[&str] = &[
    "nbd",
    "nbds",
    "nbd+unix",
    "nbds+unix",
    "nbd+vsock",
    "nbds+vsock",
    "nbd+ssh",
    "nbds+ssh",
];

/// libnbd's heuristic: does the string start with an NBD URI scheme
/// (in any case) followed by a colon? It says nothing of whether
/// connecting would work.
pub fn is_uri(_h: &nbd_handle, _g: &mut Held<'_>, uri: &CStr) -> Result<bool, Error> {
    let b = uri.to_bytes();
    let Some(colon) = b.iter().position(|&c| c == b':') else {
        return Ok(false);
    };
    let scheme = &b[..colon];
    Ok(SCHEMES
        .iter()
        .any(|s| s.as_bytes().eq_ignore_ascii_case(scheme)))
}
