//! What the server told us about the export, and about this library.

use crate::consts::{
    LIBNBD_SIZE_MAXIMUM, LIBNBD_SIZE_MINIMUM, LIBNBD_SIZE_PAYLOAD, LIBNBD_SIZE_PREFERRED,
};
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Held};
use nbd_core::client::{ExportInfo, Protocol};
use nbd_core::wire::consts::tx_flags;
use std::ffi::{CStr, CString};
use std::os::raw::c_int;

const fn cstr(b: &'static [u8]) -> &'static CStr {
    match CStr::from_bytes_with_nul(b) {
        Ok(s) => s,
        Err(_) => panic!("not NUL-terminated"),
    }
}

/// The version of libnbd whose API and ABI this library implements. Programs
/// print it (`nbdinfo --version`) and compare it to decide which calls they
/// may use, so it is libnbd's number, not this crate's: the release whose
/// 165 calls we export. The Makefile reads libnbd.pc's Version from here.
pub(crate) const LIBNBD_VERSION: &CStr = cstr(b"1.24.4\0");

/// The package name programs print next to the version.
pub(crate) const PACKAGE_NAME: &CStr = cstr(b"libnbd\0");

pub fn get_version(_h: &nbd_handle, _g: &mut Held<'_>) -> Result<&'static CStr, Error> {
    Ok(LIBNBD_VERSION)
}

pub fn get_package_name(_h: &nbd_handle, _g: &mut Held<'_>) -> Result<&'static CStr, Error> {
    Ok(PACKAGE_NAME)
}

fn with_export<T>(g: &Held<'_>, f: impl FnOnce(&ExportInfo) -> T) -> Result<T, Error> {
    g.conn
        .as_ref()
        .and_then(|c| c.client.export())
        .map(f)
        .ok_or_else(|| err(libc::EINVAL, "export information is not available"))
}

pub fn get_size(_h: &nbd_handle, g: &mut Held<'_>) -> Result<i64, Error> {
    let size = with_export(g, |e| e.size)?;
    i64::try_from(size).map_err(|_| err(libc::EOVERFLOW, "export size does not fit in int64_t"))
}

pub fn get_protocol(_h: &nbd_handle, g: &mut Held<'_>) -> Result<&'static CStr, Error> {
    let p = g
        .conn
        .as_ref()
        .and_then(|c| c.client.protocol())
        .ok_or_else(|| err(libc::EINVAL, "protocol is not known yet"))?;
    Ok(match p {
        Protocol::Oldstyle => cstr(b"oldstyle\0"),
        Protocol::Newstyle => cstr(b"newstyle\0"),
        Protocol::FixedNewstyle => cstr(b"newstyle-fixed\0"),
    })
}

fn flag(g: &Held<'_>, f: u16) -> Result<bool, Error> {
    with_export(g, |e| e.has_flag(f))
}

pub fn is_read_only(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::READ_ONLY)
}

pub fn can_flush(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::SEND_FLUSH)
}

pub fn can_fua(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::SEND_FUA)
}

pub fn is_rotational(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::ROTATIONAL)
}

pub fn can_trim(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::SEND_TRIM)
}

pub fn can_zero(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::SEND_WRITE_ZEROES)
}

pub fn can_fast_zero(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::SEND_FAST_ZERO)
}

/// The DF flag only means something with structured replies.
pub fn can_df(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    with_export(g, |e| e.structured_replies && e.has_flag(tx_flags::SEND_DF))
}

pub fn can_multi_conn(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::CAN_MULTI_CONN)
}

pub fn can_cache(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::SEND_CACHE)
}

fn info_string(v: Option<&Vec<u8>>, what: &str) -> Result<CString, Error> {
    let v = v.ok_or_else(|| err(libc::ENOTSUP, format!("server did not advertise {what}")))?;
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    Ok(CString::new(&v[..end]).unwrap_or_default())
}

pub fn get_canonical_export_name(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    with_export(g, |e| {
        info_string(e.canonical_name.as_ref(), "a canonical name")
    })?
}

pub fn get_export_description(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    with_export(g, |e| info_string(e.description.as_ref(), "a description"))?
}

/// LIBNBD_SIZE_*: 0 when the server advertised no constraints, except
/// LIBNBD_SIZE_PAYLOAD, the client's own write limit, never 0.
pub fn get_block_size(_h: &nbd_handle, g: &mut Held<'_>, size_type: c_int) -> Result<i64, Error> {
    let (bs, payload) = with_export(g, |e| (e.block_size, e.payload_maximum()))?;
    let (min, pref, max) = bs.unwrap_or((0, 0, 0));
    match size_type {
        LIBNBD_SIZE_MINIMUM => Ok(i64::from(min)),
        LIBNBD_SIZE_PREFERRED => Ok(i64::from(pref)),
        LIBNBD_SIZE_MAXIMUM => Ok(i64::from(max)),
        LIBNBD_SIZE_PAYLOAD => Ok(payload as i64),
        _ => Err(err(libc::EINVAL, format!("unknown size_type: {size_type}"))),
    }
}

/// Whether the server agreed to structured replies; known while
/// negotiating too.
pub fn get_structured_replies_negotiated(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    g.conn
        .as_ref()
        .map(|c| c.client.structured_replies())
        .ok_or_else(|| err(libc::EINVAL, "not connected"))
}

/// Whether 32-byte headers are in use (libnbd 1.18); sticky, as libnbd's.
pub fn get_extended_headers_negotiated(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    g.conn
        .as_ref()
        .map(|c| c.client.extended_headers())
        .ok_or_else(|| err(libc::EINVAL, "not connected"))
}

/// Whether the server takes block status filtered by a payload.
pub fn can_block_status_payload(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    flag(g, tx_flags::BLOCK_STATUS_PAYLOAD)
}

/// Whether the server agreed to the meta context `metacontext`.
pub fn can_meta_context(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    metacontext: &CStr,
) -> Result<bool, Error> {
    with_export(g, |e| {
        e.meta_contexts
            .iter()
            .any(|(_, n)| n[..] == *metacontext.to_bytes())
    })
}

/// Names this implementation, where libnbd puts its packager's version.
const VERSION_EXTRA: &CStr = cstr(b"nbd-rs: Rust reimplementation of libnbd\0");

pub fn get_version_extra(_h: &nbd_handle, _g: &mut Held<'_>) -> Result<&'static CStr, Error> {
    Ok(VERSION_EXTRA)
}

/// An estimate of the handle's memory: the handle itself, and, while
/// connected, the connection (its receive buffer included). Commands in
/// flight and the caller's buffers are not counted.
pub fn get_handle_size(_h: &nbd_handle, g: &mut Held<'_>) -> Result<libc::ssize_t, Error> {
    let mut n = std::mem::size_of::<nbd_handle>();
    if let Some(c) = g.conn.as_ref() {
        n += c.approximate_size();
    }
    Ok(n as libc::ssize_t)
}
