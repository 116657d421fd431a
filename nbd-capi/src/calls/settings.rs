//! Per-handle settings.

use crate::errors::{err, Error};
use crate::handle::nbd_handle;
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

pub fn set_export_name(h: &nbd_handle, export_name: &CStr) -> Result<(), Error> {
    if export_name.to_bytes().len() > nbd_core::limits::MAX_STRING {
        return Err(err(
            libc::ENAMETOOLONG,
            "export name too long for NBD protocol",
        ));
    }
    h.lock().settings.export_name = export_name.to_owned();
    Ok(())
}

pub fn get_export_name(h: &nbd_handle) -> Result<CString, Error> {
    Ok(h.lock().settings.export_name.clone())
}
