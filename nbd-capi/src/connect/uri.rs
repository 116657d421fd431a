//! nbd_connect_uri, nbd_aio_connect_uri and nbd_get_uri on a handle. The
//! URIs themselves are parsed, checked and built by `nbd_core::uri`
//! (pure); what is here reads or changes the handle, or opens the socket.

pub use nbd_core::uri::*;

use super::{endpoint, open_ssh, open_tcp, open_unix, open_vsock, Opened};
use crate::consts::{
    LIBNBD_ALLOW_TRANSPORT_SSH, LIBNBD_ALLOW_TRANSPORT_TCP, LIBNBD_ALLOW_TRANSPORT_UNIX,
    LIBNBD_ALLOW_TRANSPORT_VSOCK, LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE,
};
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Inner};
use crate::settings::Settings;
use std::ffi::{CStr, CString};

/// A URI error as libnbd reports it.
pub fn uri_error(e: UriError) -> Error {
    let errno = match e.kind {
        UriErrorKind::Invalid => libc::EINVAL,
        UriErrorKind::NotPermitted => libc::EPERM,
        UriErrorKind::Unsupported => libc::EPROTONOSUPPORT,
    };
    err(errno, e.message)
}

/// What nbd_set_uri_allow_* permit.
pub fn permitted(s: &Settings) -> Permitted {
    let t = s.uri_allow_transports;
    Permitted {
        tcp: t & LIBNBD_ALLOW_TRANSPORT_TCP != 0,
        unix: t & LIBNBD_ALLOW_TRANSPORT_UNIX != 0,
        vsock: t & LIBNBD_ALLOW_TRANSPORT_VSOCK != 0,
        ssh: t & LIBNBD_ALLOW_TRANSPORT_SSH != 0,
        tls: match s.uri_allow_tls {
            LIBNBD_TLS_DISABLE => TlsRule::Forbidden,
            LIBNBD_TLS_REQUIRE => TlsRule::Required,
            _ => TlsRule::Optional,
        },
        local_file: s.uri_allow_local_file,
        tls_priority: s.uri_allow_tls_priority,
    }
}

/// The first half of nbd_connect_uri / nbd_aio_connect_uri: parses
/// `raw`, checks it against nbd_set_uri_allow_*, and applies it to the
/// handle's settings (TLS mode, TLS files, user name, export name) as
/// libnbd does. Its errors leave the handle as it was (newly created, not
/// dead), as in libnbd. Returns where to connect: [`open_endpoint`].
pub fn apply_uri(h: &nbd_handle, g: &mut Inner, raw: &CStr) -> Result<Endpoint, Error> {
    let u = parse(raw.to_bytes()).map_err(uri_error)?;
    {
        let s = &mut g.settings;
        check_allowed(&u, &permitted(s)).map_err(uri_error)?;
        if u.export_name.as_bytes().len() > nbd_core::limits::MAX_STRING {
            return Err(err(
                libc::ENAMETOOLONG,
                "export name too long for NBD protocol",
            ));
        }
        if u.tls {
            s.tls = LIBNBD_TLS_REQUIRE;
        }
        if let Some(c) = &u.tls_certificates {
            s.tls_certificates = Some(c.clone());
        }
        if let Some(f) = &u.tls_psk_file {
            s.tls_psk_file = Some(f.clone());
        }
        // Over ssh the URI's user is the ssh login; only tls-username
        // names the TLS user. Elsewhere tls-username overrides it.
        let tls_user = match u.endpoint {
            Endpoint::Ssh(_) => u.tls_username.as_ref(),
            _ => u.tls_username.as_ref().or(u.user.as_ref()),
        };
        if let Some(user) = tls_user {
            s.tls_username = Some(user.clone());
        }
        if let Some(name) = &u.tls_hostname {
            s.tls_hostname = Some(name.clone());
        }
        if let Some(v) = u.tls_verify_peer {
            s.tls_verify_peer = v;
        }
        // check_allowed refused it unless nbd_set_uri_allow_tls_priority.
        if let Some(p) = &u.tls_priority {
            s.tls_priority = Some(p.clone());
        }
        s.export_name = u.export_name.clone();
    }
    for (n, v) in &u.ignored {
        h.debug(&format!("ignoring query parameter {n}={v}"));
    }
    Ok(u.endpoint)
}

/// The second half of nbd_connect_uri: opens the transport the URI named.
/// Its errors kill the handle, as any failed connection attempt.
pub fn open_endpoint(g: &mut Inner, ep: &Endpoint) -> Result<Opened, Error> {
    match ep {
        Endpoint::Tcp { host, port } => open_tcp(g, host, port),
        Endpoint::Unix { socket } => open_unix(g, socket),
        Endpoint::Vsock { cid, port } => open_vsock(g, *cid, *port),
        Endpoint::Ssh(t) => open_ssh(g, t),
    }
}

/// nbd_get_uri: a URI naming the handle's connection, from where it
/// connected and its settings (libnbd 1.14's rules: `nbds` when TLS is
/// required or was negotiated, the user name only when set explicitly,
/// the TLS files when set).
pub fn uri_of(g: &Inner) -> Result<CString, Error> {
    let Some(ep) = endpoint(g) else {
        return Err(err(
            libc::EINVAL,
            "cannot construct a URI for this connection type",
        ));
    };
    let s = &g.settings;
    let negotiated = g.conn.as_ref().is_some_and(|c| c.tls_negotiated());
    let parts = UriParts {
        tls: s.tls == LIBNBD_TLS_REQUIRE || negotiated,
        user: s.tls_username.as_ref().map(|c| c.to_bytes()),
        export_name: s.export_name.to_bytes(),
        tls_certificates: s.tls_certificates.as_ref().map(|c| c.to_bytes()),
        tls_psk_file: s.tls_psk_file.as_ref().map(|c| c.to_bytes()),
    };
    let text = render(&ep, &parts).map_err(uri_error)?;
    CString::new(text).map_err(|_| err(libc::EINVAL, "URI contains a NUL byte"))
}
