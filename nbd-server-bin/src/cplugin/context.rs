//! What the `nbdkit_*` functions know about the call they are made from:
//! the connection the server is working for (`nbdkit_export_name`,
//! `nbdkit_is_tls`, `nbdkit_peer_*`) and the errno a failing callback
//! chose (`nbdkit_set_error`).
//!
//! nbdkit keeps these per thread, and C plugins can only reach them that
//! way: the wrapper ([`super::plugin`]) sets them around each callback with
//! [`Call::enter`] and reads the error back after it.

use std::cell::{Cell, RefCell};
use std::os::raw::c_int;

use nbd_core::server::backend::ConnectionInfo;

thread_local! {
    static CONNECTION: RefCell<Option<ConnectionInfo>> = const { RefCell::new(None) };
    /// The errno of `nbdkit_set_error`, 0 when not called.
    static SET_ERROR: Cell<c_int> = const { Cell::new(0) };
}

/// One callback into the plugin on this thread: the connection it serves
/// (if any) is current until the value is dropped.
pub struct Call {
    previous: Option<ConnectionInfo>,
}

impl Call {
    pub fn enter(info: Option<&ConnectionInfo>) -> Call {
        SET_ERROR.with(|e| e.set(0));
        let previous = CONNECTION.with(|c| c.replace(info.cloned()));
        Call { previous }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let p = self.previous.take();
        CONNECTION.with(|c| *c.borrow_mut() = p);
    }
}

/// Runs `f` with the current connection's facts, if a callback for a
/// connection is running on this thread.
pub fn with_connection<T>(f: impl FnOnce(Option<&ConnectionInfo>) -> T) -> T {
    CONNECTION.with(|c| f(c.borrow().as_ref()))
}

/// The name nbdkit gives the current thread in a plugin's messages: a
/// request worker's `NAME.W`, else within a connection `NAME[N]` (just
/// `NAME` under -s, whose connection is 0), else none.
pub fn thread_name() -> String {
    let Some(name) = super::loaded_name() else {
        return String::new();
    };
    with_connection(|c| match (c, crate::log::worker()) {
        (Some(_), Some(w)) => format!("{name}.{w}"),
        (Some(c), None) if c.id > 0 => format!("{name}[{}]", c.id),
        (Some(_), None) => name,
        (None, _) => String::new(),
    })
}

/// `nbdkit_set_error`.
pub fn set_error(errno: c_int) {
    SET_ERROR.with(|e| e.set(errno));
}

/// What `nbdkit_set_error` recorded since [`Call::enter`], 0 if nothing.
pub fn take_error() -> c_int {
    SET_ERROR.with(|e| e.replace(0))
}

/// Strings handed to the plugin that it does not free
/// (`nbdkit_strdup_intern`, `nbdkit_export_name`): kept per connection
/// until it closes, or for the life of the server when made outside one,
/// as nbdkit does.
static INTERNED: parking_lot::Mutex<Vec<(Option<u64>, std::ffi::CString)>> =
    parking_lot::Mutex::new(Vec::new());

/// Keeps `s` alive as long as the current connection (or the server) and
/// returns its address.
pub fn intern(s: std::ffi::CString) -> *const std::os::raw::c_char {
    let owner = with_connection(|c| c.map(|c| c.id));
    let p = s.as_ptr();
    // The CString's heap buffer does not move when the CString does.
    INTERNED.lock().push((owner, s));
    p
}

/// The connection `id` closed: its interned strings go.
pub fn forget_connection(id: u64) {
    INTERNED.lock().retain(|(o, _)| *o != Some(id));
}
