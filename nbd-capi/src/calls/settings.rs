//! Per-handle settings.

use crate::callbacks;
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Held};
use std::ffi::{CStr, CString};

pub fn set_debug(h: &nbd_handle, debug: bool) -> Result<(), Error> {
    h.set_debug(debug);
    Ok(())
}

pub fn get_debug(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.debug_on())
}

pub fn set_handle_name(h: &nbd_handle, handle_name: &CStr) -> Result<(), Error> {
    #[cfg(test)]
    if handle_name.to_bytes() == b"__panic__" {
        panic!("deliberate panic to test the boundary");
    }
    h.set_name(handle_name.to_owned());
    Ok(())
}

pub fn get_handle_name(h: &nbd_handle) -> Result<CString, Error> {
    Ok(h.name())
}

pub fn set_export_name(_h: &nbd_handle, g: &mut Held<'_>, export_name: &CStr) -> Result<(), Error> {
    if export_name.to_bytes().len() > nbd_core::limits::MAX_STRING {
        return Err(err(
            libc::ENAMETOOLONG,
            "export name too long for NBD protocol",
        ));
    }
    g.settings.export_name = export_name.to_owned();
    Ok(())
}

pub fn get_export_name(h: &nbd_handle) -> Result<CString, Error> {
    Ok(h.lock().settings.export_name.clone())
}

pub fn set_debug_callback(h: &nbd_handle, debug_callback: callbacks::Debug) -> Result<(), Error> {
    h.set_debug_callback(Some(debug_callback));
    Ok(())
}

pub fn clear_debug_callback(h: &nbd_handle) -> Result<(), Error> {
    h.set_debug_callback(None);
    Ok(())
}

/// Returns the old value.
pub fn set_private_data(h: &nbd_handle, private_data: usize) -> Result<usize, Error> {
    Ok(std::mem::replace(
        &mut h.lock().settings.private_data,
        private_data,
    ))
}

pub fn get_private_data(h: &nbd_handle) -> Result<usize, Error> {
    Ok(h.lock().settings.private_data)
}

pub fn set_request_block_size(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    request: bool,
) -> Result<(), Error> {
    g.settings.request_block_size = request;
    Ok(())
}

pub fn get_request_block_size(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.lock().settings.request_block_size)
}

pub fn set_full_info(_h: &nbd_handle, g: &mut Held<'_>, request: bool) -> Result<(), Error> {
    g.settings.full_info = request;
    Ok(())
}

pub fn get_full_info(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.lock().settings.full_info)
}

pub fn set_request_structured_replies(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    request: bool,
) -> Result<(), Error> {
    g.settings.request_structured_replies = request;
    Ok(())
}

pub fn get_request_structured_replies(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.lock().settings.request_structured_replies)
}

pub fn set_handshake_flags(_h: &nbd_handle, g: &mut Held<'_>, flags: u32) -> Result<(), Error> {
    g.settings.handshake_flags = flags;
    Ok(())
}

pub fn get_handshake_flags(h: &nbd_handle) -> Result<u32, Error> {
    Ok(h.lock().settings.handshake_flags)
}

pub fn set_pread_initialize(h: &nbd_handle, request: bool) -> Result<(), Error> {
    h.lock().settings.pread_initialize = request;
    Ok(())
}

pub fn get_pread_initialize(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.lock().settings.pread_initialize)
}

/// Takes effect at once, also on a connected handle.
pub fn set_strict_mode(h: &nbd_handle, flags: u32) -> Result<(), Error> {
    let mut g = h.lock();
    g.settings.strict = flags;
    if let Some(c) = g.conn.as_mut() {
        c.client.config_mut().strict = flags;
    }
    Ok(())
}

pub fn get_strict_mode(h: &nbd_handle) -> Result<u32, Error> {
    Ok(h.lock().settings.strict)
}

pub fn set_opt_mode(_h: &nbd_handle, g: &mut Held<'_>, enable: bool) -> Result<(), Error> {
    g.settings.opt_mode = enable;
    Ok(())
}

pub fn get_opt_mode(h: &nbd_handle) -> Result<bool, Error> {
    Ok(h.lock().settings.opt_mode)
}

pub fn add_meta_context(_h: &nbd_handle, g: &mut Held<'_>, name: &CStr) -> Result<(), Error> {
    if name.to_bytes().len() > nbd_core::limits::MAX_STRING {
        return Err(err(
            libc::ENAMETOOLONG,
            "meta context name too long for NBD protocol",
        ));
    }
    g.settings.meta_contexts.push(name.to_owned());
    Ok(())
}

pub fn get_nr_meta_contexts(h: &nbd_handle) -> Result<libc::ssize_t, Error> {
    Ok(h.lock().settings.meta_contexts.len() as libc::ssize_t)
}

pub fn get_meta_context(h: &nbd_handle, i: usize) -> Result<CString, Error> {
    h.lock()
        .settings
        .meta_contexts
        .get(i)
        .cloned()
        .ok_or_else(|| err(libc::EINVAL, "meta context request out of range"))
}

pub fn clear_meta_contexts(_h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    g.settings.meta_contexts.clear();
    Ok(())
}
