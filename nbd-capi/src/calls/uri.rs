//! NBD URI settings and nbd_get_uri (URIs are parsed and built by
//! `nbd_core::uri`). The wrappers check the flags and enum arguments.

use crate::connect;
use crate::errors::Error;
use crate::handle::nbd_handle;
use std::ffi::CString;

pub fn set_uri_allow_transports(h: &nbd_handle, mask: u32) -> Result<(), Error> {
    h.lock().settings.uri_allow_transports = mask;
    Ok(())
}

pub fn set_uri_allow_tls(h: &nbd_handle, tls: libc::c_int) -> Result<(), Error> {
    h.lock().settings.uri_allow_tls = tls;
    Ok(())
}

pub fn set_uri_allow_local_file(h: &nbd_handle, allow: bool) -> Result<(), Error> {
    h.lock().settings.uri_allow_local_file = allow;
    Ok(())
}

pub fn supports_uri(_h: &nbd_handle) -> Result<bool, Error> {
    Ok(true)
}

pub fn get_uri(h: &nbd_handle) -> Result<CString, Error> {
    connect::uri_of(h)
}
