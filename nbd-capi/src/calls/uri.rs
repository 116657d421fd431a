//! NBD URI settings and nbd_get_uri (parsing is in `crate::connect::uri`).

use crate::connect;
use crate::consts::{LIBNBD_ALLOW_TRANSPORT_MASK, LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE};
use crate::errors::{err, Error};
use crate::handle::nbd_handle;
use std::ffi::CString;

pub fn set_uri_allow_transports(h: &nbd_handle, mask: u32) -> Result<(), Error> {
    if mask & !LIBNBD_ALLOW_TRANSPORT_MASK != 0 {
        return Err(err(
            libc::EINVAL,
            format!("mask: invalid value for flag: 0x{mask:x}"),
        ));
    }
    h.lock().settings.uri_allow_transports = mask;
    Ok(())
}

pub fn set_uri_allow_tls(h: &nbd_handle, tls: libc::c_int) -> Result<(), Error> {
    if !(LIBNBD_TLS_DISABLE..=LIBNBD_TLS_REQUIRE).contains(&tls) {
        return Err(err(
            libc::EINVAL,
            format!("tls: invalid value for parameter: {tls}"),
        ));
    }
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
