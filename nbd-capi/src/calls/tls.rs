//! TLS settings. Connecting turns them into the core's TLS mode and the
//! connection's TLS parameters (`Settings::core_config`,
//! `Settings::tls_params`); the session itself is `crate::tls`.

use crate::consts::{LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE};
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Held};
use std::ffi::{CStr, CString};

pub fn set_tls(_h: &nbd_handle, g: &mut Held<'_>, tls: libc::c_int) -> Result<(), Error> {
    if !(LIBNBD_TLS_DISABLE..=LIBNBD_TLS_REQUIRE).contains(&tls) {
        return Err(err(
            libc::EINVAL,
            format!("tls: invalid value for parameter: {tls}"),
        ));
    }
    g.settings.tls = tls;
    Ok(())
}

pub fn get_tls(_h: &nbd_handle, g: &mut Held<'_>) -> Result<libc::c_int, Error> {
    Ok(g.settings.tls)
}

/// Whether the connection runs over TLS.
pub fn get_tls_negotiated(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.conn.as_ref().is_some_and(|c| c.tls_negotiated()))
}

pub fn set_tls_certificates(_h: &nbd_handle, g: &mut Held<'_>, dir: &CStr) -> Result<(), Error> {
    g.settings.tls_certificates = Some(dir.to_owned());
    Ok(())
}

pub fn set_tls_verify_peer(_h: &nbd_handle, g: &mut Held<'_>, verify: bool) -> Result<(), Error> {
    g.settings.tls_verify_peer = verify;
    Ok(())
}

pub fn get_tls_verify_peer(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.tls_verify_peer)
}

pub fn set_tls_username(_h: &nbd_handle, g: &mut Held<'_>, username: &CStr) -> Result<(), Error> {
    g.settings.tls_username = Some(username.to_owned());
    Ok(())
}

/// The user name set, else the local one (`crate::tls::login_name`).
pub fn get_tls_username(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    if let Some(u) = g.settings.tls_username.clone() {
        return Ok(u);
    }
    crate::tls::login_name()
}

pub fn set_tls_psk_file(_h: &nbd_handle, g: &mut Held<'_>, filename: &CStr) -> Result<(), Error> {
    g.settings.tls_psk_file = Some(filename.to_owned());
    Ok(())
}

/// TLS is built in (GnuTLS).
pub fn supports_tls(_h: &nbd_handle, _g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(true)
}

pub fn set_tls_hostname(_h: &nbd_handle, g: &mut Held<'_>, hostname: &CStr) -> Result<(), Error> {
    g.settings.tls_hostname = Some(hostname.to_owned());
    Ok(())
}

/// The name in effect: the one set with nbd_set_tls_hostname, else the
/// host connected to over TCP, else the empty string.
pub fn get_tls_hostname(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    if let Some(n) = &g.settings.tls_hostname {
        return Ok(n.clone());
    }
    Ok(match &g.endpoint {
        Some(crate::connect::uri::Endpoint::Tcp { host, .. }) => host.clone(),
        _ => CString::default(),
    })
}

/// Checked by GnuTLS when the TLS session is set up: an invalid string
/// makes connecting fail then, not here (libnbd does the same).
pub fn set_tls_priority(_h: &nbd_handle, g: &mut Held<'_>, priority: &CStr) -> Result<(), Error> {
    g.settings.tls_priority = Some(priority.to_owned());
    Ok(())
}

/// The priority string set, else ours (`crate::tls::DEFAULT_PRIORITY`).
pub fn get_tls_priority(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    Ok(g.settings
        .tls_priority
        .clone()
        .unwrap_or_else(|| crate::tls::DEFAULT_PRIORITY.to_owned()))
}
