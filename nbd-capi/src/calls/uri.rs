//! NBD URI settings and nbd_get_uri (URIs are parsed and built by
//! `nbd_core::uri`). The wrappers check the flags and enum arguments.

use crate::connect;
use crate::errors::Error;
use crate::handle::{nbd_handle, Held};
use std::ffi::CString;

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
