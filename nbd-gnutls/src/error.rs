//! A GnuTLS failure: the call that failed, its error code and GnuTLS's
//! message, and the one mapping to an errno.

use std::fmt;
use std::os::raw::c_int;

/// A failed GnuTLS call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What failed: the GnuTLS function, or the file it was given.
    pub what: String,
    /// GnuTLS's (negative) error code.
    pub code: c_int,
}

impl Error {
    pub fn new(what: impl Into<String>, code: c_int) -> Self {
        Error {
            what: what.into(),
            code,
        }
    }

    /// GnuTLS's message for the code.
    pub fn message(&self) -> String {
        crate::strerror(self.code)
    }

    /// Whether the session may go on (a warning, AGAIN, INTERRUPTED).
    pub fn is_fatal(&self) -> bool {
        is_fatal(self.code)
    }

    /// The errno a caller reports: every GnuTLS failure is EIO, as libnbd
    /// and nbdkit report them.
    pub fn errno(&self) -> c_int {
        libc::EIO
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.message())
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// Whether an error code ends the session.
pub fn is_fatal(code: c_int) -> bool {
    // SAFETY: a pure function of an integer.
    unsafe { crate::gnutls_error_is_fatal(code) != 0 }
}

/// `Ok(code)` for a code that is not an error, else the error.
pub fn check(what: &str, code: c_int) -> Result<c_int, Error> {
    if code < 0 {
        Err(Error::new(what, code))
    } else {
        Ok(code)
    }
}
