//! Credentials: X.509 certificates (client or server), PSK for the client
//! (a user name and a hex key) and for the server (psktool's file). Each
//! is freed when dropped; a session keeps the credentials it uses alive
//! (see `Session::set_credentials`).

use std::ffi::CStr;
use std::os::raw::c_uint;

use crate::error::{check, Error};
use crate::secret::Zeroizing;
use crate::{self as sys, creds_t};

/// Any of the credentials a session can use.
pub enum Credentials {
    Certificate(Certificate),
    PskClient(PskClient),
    PskServer(PskServer),
}

impl Credentials {
    pub(crate) fn raw(&self) -> (std::os::raw::c_int, creds_t) {
        match self {
            Credentials::Certificate(c) => (sys::GNUTLS_CRD_CERTIFICATE, c.0),
            Credentials::PskClient(c) => (sys::GNUTLS_CRD_PSK, c.0),
            Credentials::PskServer(c) => (sys::GNUTLS_CRD_PSK, c.0),
        }
    }

    pub fn is_certificate(&self) -> bool {
        matches!(self, Credentials::Certificate(_))
    }
}

/// X.509 credentials.
pub struct Certificate(creds_t);

/// PSK credentials of a client.
pub struct PskClient(creds_t);

/// PSK credentials of a server.
pub struct PskServer(creds_t);

// SAFETY: credentials are read-only once loaded; GnuTLS allows sharing
// them between sessions in different threads.
unsafe impl Send for Certificate {}
unsafe impl Sync for Certificate {}
unsafe impl Send for PskClient {}
unsafe impl Sync for PskClient {}
unsafe impl Send for PskServer {}
unsafe impl Sync for PskServer {}

impl Drop for Certificate {
    fn drop(&mut self) {
        // SAFETY: allocated by the matching call, freed once.
        unsafe { sys::gnutls_certificate_free_credentials(self.0) }
    }
}

impl Drop for PskClient {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { sys::gnutls_psk_free_client_credentials(self.0) }
    }
}

impl Drop for PskServer {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { sys::gnutls_psk_free_server_credentials(self.0) }
    }
}

impl Certificate {
    pub fn new() -> Result<Self, Error> {
        let mut c: creds_t = std::ptr::null_mut();
        // SAFETY: c is written by the call.
        check("gnutls_certificate_allocate_credentials", unsafe {
            sys::gnutls_certificate_allocate_credentials(&mut c)
        })?;
        Ok(Certificate(c))
    }

    /// Trusts the system's CAs.
    pub fn set_system_trust(&self) -> Result<(), Error> {
        // SAFETY: valid credentials.
        check("gnutls_certificate_set_x509_system_trust", unsafe {
            sys::gnutls_certificate_set_x509_system_trust(self.0)
        })?;
        Ok(())
    }

    /// Trusts the CAs of a PEM file. The error names `what`.
    pub fn set_trust_file(&self, file: &CStr, what: &str) -> Result<(), Error> {
        // SAFETY: valid credentials and path; returns a count or an error.
        let r = unsafe {
            sys::gnutls_certificate_set_x509_trust_file(
                self.0,
                file.as_ptr(),
                sys::GNUTLS_X509_FMT_PEM,
            )
        };
        check(what, r).map(drop)
    }

    /// Adds the revocation list of a PEM file.
    pub fn set_crl_file(&self, file: &CStr, what: &str) -> Result<(), Error> {
        // SAFETY: as above.
        let r = unsafe {
            sys::gnutls_certificate_set_x509_crl_file(
                self.0,
                file.as_ptr(),
                sys::GNUTLS_X509_FMT_PEM,
            )
        };
        check(what, r).map(drop)
    }

    /// Our own certificate and key, PEM files.
    pub fn set_key_file(&self, cert: &CStr, key: &CStr, what: &str) -> Result<(), Error> {
        // SAFETY: as above.
        let r = unsafe {
            sys::gnutls_certificate_set_x509_key_file(
                self.0,
                cert.as_ptr(),
                key.as_ptr(),
                sys::GNUTLS_X509_FMT_PEM,
            )
        };
        check(what, r).map(drop)
    }
}

impl PskClient {
    /// A client's PSK: `user` and its key in hex. The key is wiped when
    /// this returns, whatever GnuTLS said (GnuTLS keeps its own copy).
    pub fn new(user: &CStr, mut hex_key: Zeroizing<Vec<u8>>) -> Result<Self, Error> {
        let mut c: creds_t = std::ptr::null_mut();
        // SAFETY: c is written by the call.
        check("gnutls_psk_allocate_client_credentials", unsafe {
            sys::gnutls_psk_allocate_client_credentials(&mut c)
        })?;
        let creds = PskClient(c);
        let datum = sys::gnutls_datum_t {
            data: hex_key.as_mut_ptr(),
            size: hex_key.len() as c_uint,
        };
        // SAFETY: valid credentials, user name and key datum (GnuTLS
        // copies both).
        let r = unsafe {
            sys::gnutls_psk_set_client_credentials(
                c,
                user.as_ptr(),
                &datum,
                sys::GNUTLS_PSK_KEY_HEX,
            )
        };
        drop(hex_key); // Zeroizing: wiped now
        check("gnutls_psk_set_client_credentials", r)?;
        Ok(creds)
    }
}

impl PskServer {
    /// A server's PSKs, from psktool's `user:hexkey` file.
    pub fn from_file(file: &CStr) -> Result<Self, Error> {
        let mut c: creds_t = std::ptr::null_mut();
        // SAFETY: c is written by the call.
        check("gnutls_psk_allocate_server_credentials", unsafe {
            sys::gnutls_psk_allocate_server_credentials(&mut c)
        })?;
        let creds = PskServer(c);
        // SAFETY: valid credentials and path.
        check("gnutls_psk_set_server_credentials_file", unsafe {
            sys::gnutls_psk_set_server_credentials_file(c, file.as_ptr())
        })?;
        Ok(creds)
    }
}
