//! The system GnuTLS as a safe API, for both sides: the client
//! (nbd-capi's `tls.rs`) and the server (nbd-server-bin's `tls.rs`).
//! Credentials (`creds`), sessions with their transports (`session`),
//! errors with the one mapping to errno (`error`), the wiping of secrets
//! (`secret`), how a message becomes records (`send`), the default
//! priority strings (`priority`), and the digests,
//! PBKDF2 and ciphers of disk encryption (`crypto`). The `extern "C"`
//! declarations below are the only ones in the workspace, and private to
//! this crate: other crates reach GnuTLS through the types only. Linked
//! against the system's libgnutls30, as libnbd and nbdkit are.
#![allow(non_camel_case_types)]

pub mod creds;
pub mod crypto;
pub mod error;
pub mod priority;
pub mod secret;
pub mod send;
pub mod session;

pub use creds::{Certificate, Credentials, PskClient, PskServer};
pub use error::Error;
pub use session::{Buffers, RecvHalf, SendHalf, Session, Side};

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_uint, c_void};

pub(crate) type gnutls_session_t = *mut c_void;
pub(crate) type gnutls_certificate_credentials_t = *mut c_void;
pub(crate) type gnutls_psk_client_credentials_t = *mut c_void;
/// Any credentials handle (certificate, or PSK client or server).
pub(crate) type creds_t = *mut c_void;
pub(crate) type gnutls_transport_ptr_t = *mut c_void;

#[repr(C)]
pub(crate) struct gnutls_datum_t {
    pub(crate) data: *mut u8,
    pub(crate) size: c_uint,
}

pub(crate) type PushFn =
    unsafe extern "C" fn(gnutls_transport_ptr_t, *const c_void, usize) -> isize;
pub(crate) type PullFn = unsafe extern "C" fn(gnutls_transport_ptr_t, *mut c_void, usize) -> isize;
pub(crate) type PullTimeoutFn = unsafe extern "C" fn(gnutls_transport_ptr_t, c_uint) -> c_int;

pub const GNUTLS_CLIENT: c_uint = 1 << 1;
pub const GNUTLS_NONBLOCK: c_uint = 1 << 3;
pub const GNUTLS_CRD_CERTIFICATE: c_int = 1;
pub const GNUTLS_CRD_PSK: c_int = 4;
pub const GNUTLS_X509_FMT_PEM: c_int = 1;
pub const GNUTLS_PSK_KEY_HEX: c_int = 1;
pub const GNUTLS_NAME_DNS: c_int = 1;
pub const GNUTLS_E_AGAIN: c_int = -28;
pub const GNUTLS_E_INTERRUPTED: c_int = -52;
pub const GNUTLS_E_PUSH_ERROR: c_int = -53;
pub const GNUTLS_E_PREMATURE_TERMINATION: c_int = -110;
pub const GNUTLS_SERVER: c_uint = 1;
pub const GNUTLS_CERT_REQUIRE: c_int = 2;
pub const GNUTLS_RECORD_WAIT: c_uint = 1;
pub const GNUTLS_SHUT_WR: c_int = 1;

#[link(name = "gnutls")]
extern "C" {
    pub(crate) fn gnutls_init(session: *mut gnutls_session_t, flags: c_uint) -> c_int;
    pub(crate) fn gnutls_deinit(session: gnutls_session_t);
    pub(crate) fn gnutls_priority_set_direct(
        session: gnutls_session_t,
        priorities: *const c_char,
        err_pos: *mut *const c_char,
    ) -> c_int;
    pub(crate) fn gnutls_server_name_set(
        session: gnutls_session_t,
        kind: c_int,
        name: *const c_void,
        name_length: usize,
    ) -> c_int;
    pub(crate) fn gnutls_credentials_set(
        session: gnutls_session_t,
        kind: c_int,
        cred: *mut c_void,
    ) -> c_int;
    pub(crate) fn gnutls_certificate_allocate_credentials(
        res: *mut gnutls_certificate_credentials_t,
    ) -> c_int;
    pub(crate) fn gnutls_certificate_free_credentials(sc: gnutls_certificate_credentials_t);
    pub(crate) fn gnutls_certificate_set_x509_system_trust(
        cred: gnutls_certificate_credentials_t,
    ) -> c_int;
    pub(crate) fn gnutls_certificate_set_x509_trust_file(
        cred: gnutls_certificate_credentials_t,
        cafile: *const c_char,
        fmt: c_int,
    ) -> c_int;
    pub(crate) fn gnutls_certificate_set_x509_crl_file(
        cred: gnutls_certificate_credentials_t,
        crlfile: *const c_char,
        fmt: c_int,
    ) -> c_int;
    pub(crate) fn gnutls_certificate_set_x509_key_file(
        cred: gnutls_certificate_credentials_t,
        certfile: *const c_char,
        keyfile: *const c_char,
        fmt: c_int,
    ) -> c_int;
    pub(crate) fn gnutls_session_set_verify_cert(
        session: gnutls_session_t,
        hostname: *const c_char,
        flags: c_uint,
    );
    pub(crate) fn gnutls_psk_allocate_client_credentials(
        sc: *mut gnutls_psk_client_credentials_t,
    ) -> c_int;
    pub(crate) fn gnutls_psk_free_client_credentials(sc: gnutls_psk_client_credentials_t);
    pub(crate) fn gnutls_psk_set_client_credentials(
        res: gnutls_psk_client_credentials_t,
        username: *const c_char,
        key: *const gnutls_datum_t,
        flags: c_int,
    ) -> c_int;
    pub(crate) fn gnutls_transport_set_ptr(session: gnutls_session_t, ptr: gnutls_transport_ptr_t);
    pub(crate) fn gnutls_transport_set_push_function(session: gnutls_session_t, f: PushFn);
    pub(crate) fn gnutls_transport_set_pull_function(session: gnutls_session_t, f: PullFn);
    pub(crate) fn gnutls_transport_set_pull_timeout_function(
        session: gnutls_session_t,
        f: PullTimeoutFn,
    );
    pub(crate) fn gnutls_transport_set_errno(session: gnutls_session_t, err: c_int);
    pub(crate) fn gnutls_handshake(session: gnutls_session_t) -> c_int;
    pub(crate) fn gnutls_bye(session: gnutls_session_t, how: c_int) -> c_int;
    pub(crate) fn gnutls_handshake_set_timeout(session: gnutls_session_t, ms: c_uint);
    pub(crate) fn gnutls_record_send(
        session: gnutls_session_t,
        data: *const c_void,
        n: usize,
    ) -> isize;
    pub(crate) fn gnutls_record_recv(
        session: gnutls_session_t,
        data: *mut c_void,
        n: usize,
    ) -> isize;
    pub(crate) fn gnutls_record_check_pending(session: gnutls_session_t) -> usize;
    pub(crate) fn gnutls_record_cork(session: gnutls_session_t);
    pub(crate) fn gnutls_record_uncork(session: gnutls_session_t, flags: c_uint) -> c_int;
    pub(crate) fn gnutls_error_is_fatal(error: c_int) -> c_int;
    pub(crate) fn gnutls_strerror(error: c_int) -> *const c_char;
    pub(crate) fn gnutls_handshake_get_last_in(session: gnutls_session_t) -> c_int;
    pub(crate) fn gnutls_handshake_get_last_out(session: gnutls_session_t) -> c_int;
    pub(crate) fn gnutls_protocol_get_version(session: gnutls_session_t) -> c_int;
    pub(crate) fn gnutls_protocol_get_name(version: c_int) -> *const c_char;
    pub(crate) fn gnutls_cipher_get(session: gnutls_session_t) -> c_int;
    pub(crate) fn gnutls_cipher_get_name(algorithm: c_int) -> *const c_char;
    pub(crate) fn gnutls_certificate_server_set_request(session: gnutls_session_t, req: c_int);
    pub(crate) fn gnutls_psk_allocate_server_credentials(sc: *mut creds_t) -> c_int;
    pub(crate) fn gnutls_psk_free_server_credentials(sc: creds_t);
    pub(crate) fn gnutls_psk_set_server_credentials_file(
        res: creds_t,
        password_file: *const c_char,
    ) -> c_int;
    pub(crate) fn gnutls_transport_set_int2(session: gnutls_session_t, r: c_int, s: c_int);
    pub(crate) fn gnutls_transport_set_ptr2(
        session: gnutls_session_t,
        recv_ptr: gnutls_transport_ptr_t,
        send_ptr: gnutls_transport_ptr_t,
    );
    // Crypto primitives (crypto.rs).
    pub(crate) fn gnutls_hash_get_len(algorithm: c_int) -> c_uint;
    pub(crate) fn gnutls_hash_fast(
        algorithm: c_int,
        text: *const c_void,
        textlen: usize,
        digest: *mut c_void,
    ) -> c_int;
    pub(crate) fn gnutls_pbkdf2(
        mac: c_int,
        key: *const gnutls_datum_t,
        salt: *const gnutls_datum_t,
        iter_count: c_uint,
        output: *mut c_void,
        length: usize,
    ) -> c_int;
    pub(crate) fn gnutls_cipher_init(
        handle: *mut *mut c_void,
        cipher: c_int,
        key: *const gnutls_datum_t,
        iv: *const gnutls_datum_t,
    ) -> c_int;
    pub(crate) fn gnutls_cipher_set_iv(handle: *mut c_void, iv: *mut c_void, ivlen: usize);
    pub(crate) fn gnutls_cipher_encrypt(
        handle: *mut c_void,
        text: *mut c_void,
        textlen: usize,
    ) -> c_int;
    pub(crate) fn gnutls_cipher_decrypt(
        handle: *mut c_void,
        text: *mut c_void,
        textlen: usize,
    ) -> c_int;
    pub(crate) fn gnutls_cipher_deinit(handle: *mut c_void);
}

/// GnuTLS's message for an error code.
pub fn strerror(code: c_int) -> String {
    // SAFETY: gnutls_strerror returns a static string (or NULL, checked).
    let p = unsafe { gnutls_strerror(code) };
    if p.is_null() {
        return format!("GnuTLS error {code}");
    }
    // SAFETY: non-null, static, NUL-terminated.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn strerror_names_again() {
        assert!(super::strerror(super::GNUTLS_E_AGAIN).contains("again"));
    }
}
