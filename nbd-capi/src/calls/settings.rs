//! Per-handle settings.

use crate::callbacks;
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Held};
use std::ffi::{CStr, CString};

pub fn set_debug(h: &nbd_handle, _g: &mut Held<'_>, debug: bool) -> Result<(), Error> {
    h.set_debug(debug);
    Ok(())
}

pub fn get_debug(h: &nbd_handle, _g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(h.debug_on())
}

pub fn set_handle_name(h: &nbd_handle, _g: &mut Held<'_>, handle_name: &CStr) -> Result<(), Error> {
    #[cfg(test)]
    if handle_name.to_bytes() == b"__panic__" {
        panic!("deliberate panic to test the boundary");
    }
    h.set_name(handle_name.to_owned());
    Ok(())
}

pub fn get_handle_name(h: &nbd_handle, _g: &mut Held<'_>) -> Result<CString, Error> {
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

pub fn get_export_name(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    Ok(g.settings.export_name.clone())
}

pub fn set_debug_callback(
    h: &nbd_handle,
    _g: &mut Held<'_>,
    debug_callback: callbacks::Debug,
) -> Result<(), Error> {
    h.set_debug_callback(Some(debug_callback));
    Ok(())
}

pub fn clear_debug_callback(h: &nbd_handle, _g: &mut Held<'_>) -> Result<(), Error> {
    h.set_debug_callback(None);
    Ok(())
}

/// Returns the old value.
pub fn set_private_data(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    private_data: usize,
) -> Result<usize, Error> {
    Ok(std::mem::replace(
        &mut g.settings.private_data,
        private_data,
    ))
}

pub fn get_private_data(_h: &nbd_handle, g: &mut Held<'_>) -> Result<usize, Error> {
    Ok(g.settings.private_data)
}

pub fn set_request_block_size(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    request: bool,
) -> Result<(), Error> {
    g.settings.request_block_size = request;
    Ok(())
}

pub fn get_request_block_size(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.request_block_size)
}

pub fn set_full_info(_h: &nbd_handle, g: &mut Held<'_>, request: bool) -> Result<(), Error> {
    g.settings.full_info = request;
    Ok(())
}

pub fn get_full_info(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.full_info)
}

pub fn set_request_structured_replies(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    request: bool,
) -> Result<(), Error> {
    g.settings.request_structured_replies = request;
    Ok(())
}

pub fn get_request_structured_replies(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.request_structured_replies)
}

pub fn set_request_extended_headers(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    request: bool,
) -> Result<(), Error> {
    g.settings.request_extended_headers = request;
    Ok(())
}

pub fn get_request_extended_headers(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.request_extended_headers)
}

pub fn set_handshake_flags(_h: &nbd_handle, g: &mut Held<'_>, flags: u32) -> Result<(), Error> {
    g.settings.handshake_flags = flags;
    Ok(())
}

pub fn get_handshake_flags(_h: &nbd_handle, g: &mut Held<'_>) -> Result<u32, Error> {
    Ok(g.settings.handshake_flags)
}

pub fn set_pread_initialize(_h: &nbd_handle, g: &mut Held<'_>, request: bool) -> Result<(), Error> {
    g.settings.pread_initialize = request;
    Ok(())
}

pub fn get_pread_initialize(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.pread_initialize)
}

/// Takes effect at once, also on a connected handle.
pub fn set_strict_mode(_h: &nbd_handle, g: &mut Held<'_>, flags: u32) -> Result<(), Error> {
    g.settings.strict = flags;
    if let Some(c) = g.conn.as_mut() {
        c.client.config_mut().strict = flags;
    }
    Ok(())
}

pub fn get_strict_mode(_h: &nbd_handle, g: &mut Held<'_>) -> Result<u32, Error> {
    Ok(g.settings.strict)
}

pub fn set_opt_mode(_h: &nbd_handle, g: &mut Held<'_>, enable: bool) -> Result<(), Error> {
    g.settings.opt_mode = enable;
    Ok(())
}

pub fn get_opt_mode(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.opt_mode)
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

pub fn get_nr_meta_contexts(_h: &nbd_handle, g: &mut Held<'_>) -> Result<libc::ssize_t, Error> {
    Ok(g.settings.meta_contexts.len() as libc::ssize_t)
}

pub fn get_meta_context(_h: &nbd_handle, g: &mut Held<'_>, i: usize) -> Result<CString, Error> {
    g.settings
        .meta_contexts
        .get(i)
        .cloned()
        .ok_or_else(|| err(libc::EINVAL, "meta context request out of range"))
}

pub fn clear_meta_contexts(_h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    g.settings.meta_contexts.clear();
    Ok(())
}

pub fn set_request_meta_context(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    request: bool,
) -> Result<(), Error> {
    g.settings.request_meta_context = request;
    Ok(())
}

pub fn get_request_meta_context(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.settings.request_meta_context)
}

/// The name goes to the server in LISTEN_FDNAMES, an environment
/// variable of colon-separated names: so a name is short and plain, as
/// libnbd asks ("a short alphanumeric string").
pub fn set_socket_activation_name(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    socket_name: &CStr,
) -> Result<(), Error> {
    let b = socket_name.to_bytes();
    if b.len() > 255 {
        return Err(err(libc::EINVAL, "socket name too long"));
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
    {
        return Err(err(
            libc::EINVAL,
            "invalid socket name: use letters, digits, '-', '_' and '.'",
        ));
    }
    g.settings.socket_activation_name = socket_name.to_owned();
    Ok(())
}

pub fn get_socket_activation_name(_h: &nbd_handle, g: &mut Held<'_>) -> Result<CString, Error> {
    Ok(g.settings.socket_activation_name.clone())
}
