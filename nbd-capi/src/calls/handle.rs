//! Creating and closing handles, and reading this thread's last error.

use crate::errors::{self, Error};
use crate::ffi;
use crate::handle::nbd_handle;
use std::os::raw::{c_char, c_int};

pub fn create() -> Result<Box<nbd_handle>, Error> {
    let h = Box::new(nbd_handle::new());
    h.debug("opening handle");
    Ok(h)
}

/// Frees the handle: closes the connection and reaps a subprocess.
///
/// # Safety
/// `h` is a non-NULL pointer from nbd_create, not used again.
pub unsafe fn close(h: *mut nbd_handle) -> Result<(), Error> {
    if crate::handle::held_by_this_thread(h) {
        // From inside the handle's own callback: freeing it now would pull
        // the connection from under the caller. Refuse (and leak).
        return Err(crate::errors::err(
            libc::EDEADLK,
            "cannot close a handle from inside its own callback",
        ));
    }
    // SAFETY: per the contract (the wrapper has checked NULL).
    let h = unsafe { ffi::from_raw(h) };
    h.debug("closing handle");
    drop(h);
    Ok(())
}

pub fn get_error() -> Result<*const c_char, Error> {
    Ok(errors::last_message())
}

pub fn get_errno() -> Result<c_int, Error> {
    Ok(errors::last_errno())
}
