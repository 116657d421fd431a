//! TLS settings. Connecting turns them into the core's TLS mode and the
//! connection's TLS parameters (`Settings::core_config`,
//! `Settings::tls_params`); the session itself is `crate::tls`.

use crate::consts::{LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE};
use crate::errors::{err, Error};
use crate::handle::nbd_handle;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;

extern "C" {
    /// POSIX; thread-safe (unlike getlogin). Not bound by the libc crate.
    fn getlogin_r(buf: *mut c_char, size: libc::size_t) -> libc::c_int;
}

pub fn set_tls(h: &nbd_handle, tls: libc::c_int) -> Result<(), Error> {
    if !(LIBNBD_TLS_DISABLE..=LIBNBD_TLS_REQUIRE).contains(&tls) {
        return Err(err(
            libc::EINVAL,
            format!("tls: invalid value for parameter: {tls}"),
        ));
    }
    h.lock().settings.tls = tls;
    Ok(())
}

pub fn get_tls(h: &nbd_handle) -> Result<libc::c_int, Error> {
    Ok(h.lock().settings.tls)
}

/// Whether the connection runs over TLS.
pub fn get_tls_negotiated(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.lock().conn.as_ref().is_some_and(|c| c.tls_negotiated()))
}

pub fn set_tls_certificates(h: &nbd_handle, dir: &CStr) -> Result<(), Error> {
    h.lock().settings.tls_certificates = Some(dir.to_owned());
    Ok(())
}

pub fn set_tls_verify_peer(h: &nbd_handle, verify: bool) -> Result<(), Error> {
    h.lock().settings.tls_verify_peer = verify;
    Ok(())
}

pub fn get_tls_verify_peer(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.lock().settings.tls_verify_peer)
}

pub fn set_tls_username(h: &nbd_handle, username: &CStr) -> Result<(), Error> {
    h.lock().settings.tls_username = Some(username.to_owned());
    Ok(())
}

/// The user name set, else the local one: $LOGNAME (even empty), else
/// getlogin_r(3), else its error (ENXIO without a controlling terminal),
/// as libnbd 1.14.
pub fn get_tls_username(h: &nbd_handle) -> Result<CString, Error> {
    if let Some(u) = h.lock().settings.tls_username.clone() {
        return Ok(u);
    }
    if let Some(v) = std::env::var_os("LOGNAME") {
        return CString::new(v.as_bytes()).map_err(|_| err(libc::EINVAL, "LOGNAME"));
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let r = unsafe { getlogin_r(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return Err(err(r, "getlogin_r"));
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_owned())
        .map_err(|_| err(libc::ERANGE, "getlogin_r"))
}

pub fn set_tls_psk_file(h: &nbd_handle, filename: &CStr) -> Result<(), Error> {
    h.lock().settings.tls_psk_file = Some(filename.to_owned());
    Ok(())
}

/// TLS is built in (GnuTLS).
pub fn supports_tls(_h: &nbd_handle) -> Result<bool, Error> {
    Ok(true)
}
