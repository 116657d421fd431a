//! Thread-local errors, as libnbd's lib/errors.c keeps them.
//!
//! - Each API call that may fail first names itself as the thread's error
//!   *context*; the message of any error it then sets is prefixed with it:
//!   `nbd_pread: request out of bounds: Invalid argument`.
//! - The last error of this thread stays until the next one replaces it: a
//!   successful call does not clear it (libnbd's rule: callers look at it
//!   only after a call has failed).
//! - Setting an error never touches C's `errno`.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};

pub use nbd_core::client::Error;

thread_local! {
    static CONTEXT: Cell<Option<&'static str>> = const { Cell::new(None) };
    static LAST: RefCell<Option<(CString, c_int)>> = const { RefCell::new(None) };
}

/// Names the API call now running on this thread.
pub fn set_context(name: &'static str) {
    CONTEXT.with(|c| c.set(Some(name)));
}

/// The API call now running on this thread, if any.
pub fn context() -> Option<&'static str> {
    CONTEXT.with(|c| c.get())
}

/// strerror(3) for `errnum`, thread-safely.
pub fn strerror(errnum: c_int) -> String {
    let mut buf = [0 as c_char; 256];
    // SAFETY: buf is writable for its length; the XSI strerror_r the libc
    // crate binds NUL-terminates within it on success.
    let r = unsafe { libc::strerror_r(errnum, buf.as_mut_ptr(), buf.len()) };
    if r != 0 {
        return format!("Unknown error {errnum}");
    }
    // SAFETY: NUL-terminated by strerror_r (checked above).
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The message nbd_get_error returns for `err` raised in `context`:
/// `CONTEXT: MESSAGE`, with `: strerror(errno)` appended when errno is set.
pub fn format(context: Option<&str>, err: &Error) -> String {
    let ctx = context.unwrap_or("unknown");
    if err.errno == 0 {
        format!("{ctx}: {}", err.message)
    } else {
        format!("{ctx}: {}: {}", err.message, strerror(err.errno))
    }
}

/// Records `err` as this thread's last error.
pub fn set(err: &Error) {
    let msg = format(context(), err);
    // Interior NULs cannot be carried by a C string: drop them.
    let msg = CString::new(msg.replace('\0', "")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = Some((msg, err.errno)));
}

/// nbd_get_error: the last error message of this thread, or NULL. The
/// pointer stays valid until this thread's next error.
pub fn last_message() -> *const c_char {
    LAST.with(|l| match &*l.borrow() {
        Some((m, _)) => m.as_ptr(),
        None => std::ptr::null(),
    })
}

/// nbd_get_errno: the errno of this thread's last error, 0 if none.
pub fn last_errno() -> c_int {
    LAST.with(|l| l.borrow().as_ref().map_or(0, |(_, e)| *e))
}

/// Shorthand for an error with an errno and a message.
pub fn err(errno: c_int, message: impl Into<String>) -> Error {
    Error::new(errno, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_string() -> Option<String> {
        let p = last_message();
        if p.is_null() {
            None
        } else {
            Some(unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string())
        }
    }

    #[test]
    fn prefix_and_strerror() {
        set_context("nbd_pread");
        set(&err(libc::EINVAL, "request out of bounds"));
        assert_eq!(
            last_string().unwrap(),
            "nbd_pread: request out of bounds: Invalid argument"
        );
        assert_eq!(last_errno(), libc::EINVAL);
        set(&err(0, "no errno"));
        assert_eq!(last_string().unwrap(), "nbd_pread: no errno");
        assert_eq!(last_errno(), 0);
    }

    #[test]
    fn per_thread_and_errno_untouched() {
        set_context("nbd_zero");
        // SAFETY: errno location is thread-local and always valid.
        unsafe { *libc::__errno_location() = 12345 };
        set(&err(libc::ENOSPC, "x"));
        assert_eq!(unsafe { *libc::__errno_location() }, 12345);
        std::thread::spawn(|| {
            assert!(last_message().is_null());
            assert_eq!(last_errno(), 0);
            set_context("nbd_flush");
            set(&err(libc::EIO, "y"));
            assert_eq!(last_errno(), libc::EIO);
        })
        .join()
        .unwrap();
        assert_eq!(last_errno(), libc::ENOSPC);
        assert_eq!(
            last_string().unwrap(),
            "nbd_zero: x: No space left on device"
        );
    }

    #[test]
    fn interior_nul_is_dropped() {
        set_context("nbd_x");
        set(&err(0, "a\0b"));
        assert_eq!(last_string().unwrap(), "nbd_x: ab");
    }
}
