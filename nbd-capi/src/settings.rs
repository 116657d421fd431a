//! Everything a caller can set on a handle, in one place.
//!
//! Each field is one libnbd setting (its setter and getter are named in
//! the comment). The handle keeps a `Settings` under its lock; connecting
//! turns it into the core's negotiation [`Config`] through
//! [`Settings::core_config`], the one place that mapping is written.

use crate::consts::{
    LIBNBD_ALLOW_TRANSPORT_MASK, LIBNBD_HANDSHAKE_FLAG_MASK, LIBNBD_STRICT_MASK, LIBNBD_TLS_ALLOW,
    LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE,
};
use nbd_core::client::{Config, Tls};
use std::ffi::CString;

#[derive(Clone, Debug)]
pub struct Settings {
    /// nbd_set_export_name / nbd_get_export_name.
    pub export_name: CString,
    /// nbd_set_request_structured_replies / nbd_get_request_structured_replies.
    pub request_structured_replies: bool,
    /// nbd_set_request_extended_headers / nbd_get_request_extended_headers
    /// (libnbd 1.18: on by default).
    pub request_extended_headers: bool,
    /// nbd_set_handshake_flags / nbd_get_handshake_flags.
    pub handshake_flags: u32,
    /// nbd_set_full_info / nbd_get_full_info.
    pub full_info: bool,
    /// nbd_set_request_block_size / nbd_get_request_block_size.
    pub request_block_size: bool,
    /// nbd_set_opt_mode / nbd_get_opt_mode.
    pub opt_mode: bool,
    /// nbd_set_strict_mode / nbd_get_strict_mode (LIBNBD_STRICT_*).
    pub strict: u32,
    /// nbd_set_pread_initialize / nbd_get_pread_initialize.
    pub pread_initialize: bool,
    /// nbd_add_meta_context / nbd_get_nr_meta_contexts /
    /// nbd_get_meta_context / nbd_clear_meta_contexts.
    pub meta_contexts: Vec<CString>,
    /// nbd_set_tls / nbd_get_tls (LIBNBD_TLS_*).
    pub tls: i32,
    /// nbd_set_tls_certificates (no getter in libnbd).
    pub tls_certificates: Option<CString>,
    /// nbd_set_tls_verify_peer / nbd_get_tls_verify_peer.
    pub tls_verify_peer: bool,
    /// nbd_set_tls_username / nbd_get_tls_username; None means "not set":
    /// the getter then reports $LOGNAME, as libnbd does.
    pub tls_username: Option<CString>,
    /// nbd_set_tls_psk_file (no getter in libnbd).
    pub tls_psk_file: Option<CString>,
    /// nbd_set_uri_allow_transports (LIBNBD_ALLOW_TRANSPORT_*).
    pub uri_allow_transports: u32,
    /// nbd_set_uri_allow_tls (LIBNBD_TLS_*).
    pub uri_allow_tls: i32,
    /// nbd_set_uri_allow_local_file.
    pub uri_allow_local_file: bool,
    /// nbd_set_private_data / nbd_get_private_data.
    pub private_data: usize,
    /// nbd_set_request_meta_context / nbd_get_request_meta_context:
    /// whether connecting (or nbd_opt_go / nbd_opt_info) sends
    /// SET_META_CONTEXT by itself.
    pub request_meta_context: bool,
    /// nbd_set_socket_activation_name / nbd_get_socket_activation_name:
    /// LISTEN_FDNAMES for nbd_connect_systemd_socket_activation; empty
    /// means none (the server sees "unknown").
    pub socket_activation_name: CString,
    /// nbd_set_tls_hostname / nbd_get_tls_hostname: the name the server's
    /// certificate is checked against (and sent as SNI), in preference to
    /// the host connected to.
    pub tls_hostname: Option<CString>,
    /// nbd_set_tls_priority / nbd_get_tls_priority: the GnuTLS priority
    /// string; None means ours (`crate::tls::DEFAULT_PRIORITY`).
    pub tls_priority: Option<CString>,
    /// nbd_set_uri_allow_tls_priority: whether a URI's `tls-priority=`
    /// is honoured.
    pub uri_allow_tls_priority: bool,
}

impl Default for Settings {
    /// libnbd's defaults.
    fn default() -> Self {
        Settings {
            export_name: CString::default(),
            request_structured_replies: true,
            request_extended_headers: true,
            handshake_flags: LIBNBD_HANDSHAKE_FLAG_MASK,
            full_info: false,
            request_block_size: true,
            opt_mode: false,
            strict: LIBNBD_STRICT_MASK,
            pread_initialize: true,
            meta_contexts: Vec::new(),
            tls: LIBNBD_TLS_DISABLE,
            tls_certificates: None,
            tls_verify_peer: true,
            tls_username: None,
            tls_psk_file: None,
            uri_allow_transports: LIBNBD_ALLOW_TRANSPORT_MASK,
            uri_allow_tls: LIBNBD_TLS_ALLOW,
            uri_allow_local_file: false,
            private_data: 0,
            request_meta_context: true,
            socket_activation_name: CString::default(),
            tls_hostname: None,
            tls_priority: None,
            uri_allow_tls_priority: false,
        }
    }
}

impl Settings {
    /// What the core client negotiates with, from these settings.
    pub fn core_config(&self) -> Config {
        Config {
            export_name: self.export_name.as_bytes().to_vec(),
            request_structured_replies: self.request_structured_replies,
            request_extended_headers: self.request_extended_headers,
            meta_contexts: self
                .meta_contexts
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect(),
            handshake_flags: self.handshake_flags,
            full_info: self.full_info,
            request_block_size: self.request_block_size,
            request_meta_context: self.request_meta_context,
            opt_mode: self.opt_mode,
            strict: self.strict,
            tls: match self.tls {
                LIBNBD_TLS_DISABLE => Tls::Disable,
                LIBNBD_TLS_REQUIRE => Tls::Require,
                _ => Tls::Allow,
            },
        }
    }

    /// What the connection needs to set up TLS. `hostname` is the host
    /// connected to over TCP, if any; a name set with nbd_set_tls_hostname
    /// takes its place (and gives a Unix socket a name to check).
    pub fn tls_params(&self, hostname: Option<CString>) -> crate::tls::Params {
        let username = self.tls_psk_file.as_ref().and_then(|_| {
            self.tls_username
                .clone()
                .or_else(crate::tls::local_username)
        });
        crate::tls::Params {
            psk_file: self.tls_psk_file.clone(),
            username,
            certificates: self.tls_certificates.clone(),
            verify_peer: self.tls_verify_peer,
            hostname: self.tls_hostname.clone().or(hostname),
            priority: self.tls_priority.clone(),
        }
    }
}
