//! Opening connections: from a handle's settings (or a URI applied to
//! them) to a connected socket and maybe a child process, without running
//! the handshake. The sync nbd_connect_* calls attach the result at once
//! (`nbd_handle::attach`); the aio calls are meant to hand it to
//! `attach_async` instead, with the same error rule as the sync calls in
//! `calls/connect.rs`: an `open_*` error marks the handle dead, an
//! [`apply_uri`] error does not. For example nbd_aio_connect_uri is
//! `apply_uri`, then `open_endpoint`, then `attach_async(o.sock, o.child)`.
//!
//! - [`uri`]: pure URI parsing, checking and rendering.
//! - [`sock`]: the sockets and subprocesses themselves.
//!
//! Each `open_*` records where the handle connects (for nbd_get_uri, also
//! after a failure, as libnbd; the TLS session also takes the host name
//! from there). On error the caller marks the handle dead, as a failed
//! connection attempt does in libnbd.
//!
//! What a connection leaves behind (the endpoint for nbd_get_uri, the
//! subprocess and the private directory of socket activation) lives in
//! the handle (`handle::Inner`), and goes when the handle is freed.

pub mod sock;
pub mod uri;

use crate::consts::LIBNBD_TLS_REQUIRE;
use crate::errors::{err, Error};
use crate::handle::nbd_handle;
use std::ffi::{CStr, CString};
use std::os::fd::OwnedFd;
use uri::Endpoint;

/// A connected socket, and the server subprocess behind it if we started
/// one (reaped when the handle is closed).
#[derive(Debug)]
pub struct Opened {
    pub sock: OwnedFd,
    pub child: Option<libc::pid_t>,
}

/// Records where the handle connects, for nbd_get_uri.
pub fn remember(h: &nbd_handle, ep: Endpoint) {
    h.lock().endpoint = Some(ep);
}

/// Where the handle connected (or tried to), if it was to an address
/// nbd_get_uri can name.
pub fn endpoint(h: &nbd_handle) -> Option<Endpoint> {
    h.lock().endpoint.clone()
}

pub fn open_unix(h: &nbd_handle, path: &CStr) -> Result<Opened, Error> {
    remember(
        h,
        Endpoint::Unix {
            socket: path.to_owned(),
        },
    );
    Ok(Opened {
        sock: sock::unix(path)?,
        child: None,
    })
}

pub fn open_tcp(h: &nbd_handle, host: &CStr, port: &CStr) -> Result<Opened, Error> {
    remember(
        h,
        Endpoint::Tcp {
            host: host.to_owned(),
            port: port.to_owned(),
        },
    );
    Ok(Opened {
        sock: sock::tcp(host, port)?,
        child: None,
    })
}

pub fn open_vsock(h: &nbd_handle, cid: u32, port: u32) -> Result<Opened, Error> {
    remember(h, Endpoint::Vsock { cid, port });
    Ok(Opened {
        sock: sock::vsock(cid, port)?,
        child: None,
    })
}

pub fn open_command(_h: &nbd_handle, argv: &[&CStr]) -> Result<Opened, Error> {
    let (sock, pid) = sock::command(argv)?;
    Ok(Opened {
        sock,
        child: Some(pid),
    })
}

/// nbd_connect_socket: the caller's connected socket. libnbd owns it from
/// the moment the call starts (and closes it, also when connecting
/// fails); a negative fd is EBADF and is not touched.
pub fn open_socket(_h: &nbd_handle, fd: libc::c_int) -> Result<Opened, Error> {
    if fd < 0 {
        return Err(err(libc::EBADF, format!("invalid socket: {fd}")));
    }
    // SAFETY: the caller passes ownership of a valid fd (nbd_connect_socket(3)).
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Ok(Opened { sock, child: None })
}

pub fn open_systemd_socket_activation(h: &nbd_handle, argv: &[&CStr]) -> Result<Opened, Error> {
    let (sock, pid, dir) = sock::activation(argv)?;
    let path = dir.sock.clone();
    {
        let mut g = h.lock();
        g.endpoint = Some(Endpoint::Unix { socket: path });
        // A handle connects once, so there is no earlier directory.
        g.activation = Some(dir);
    }
    Ok(Opened {
        sock,
        child: Some(pid),
    })
}

/// The first half of nbd_connect_uri / nbd_aio_connect_uri: parses
/// `raw`, checks it against nbd_set_uri_allow_*, and applies it to the
/// handle's settings (TLS mode, TLS files, user name, export name) as
/// libnbd does. Its errors leave the handle as it was (newly created, not
/// dead), as in libnbd. Returns where to connect: [`open_endpoint`].
pub fn apply_uri(h: &nbd_handle, raw: &CStr) -> Result<Endpoint, Error> {
    let u = uri::parse(raw.to_bytes())?;
    {
        let mut g = h.lock();
        let s = &mut g.settings;
        uri::check_allowed(
            &u,
            s.uri_allow_transports,
            s.uri_allow_tls,
            s.uri_allow_local_file,
        )?;
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
        if let Some(user) = u.tls_username.as_ref().or(u.user.as_ref()) {
            s.tls_username = Some(user.clone());
        }
        if let Some(v) = u.tls_verify_peer {
            s.tls_verify_peer = v;
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
pub fn open_endpoint(h: &nbd_handle, ep: &Endpoint) -> Result<Opened, Error> {
    match ep {
        Endpoint::Tcp { host, port } => open_tcp(h, host, port),
        Endpoint::Unix { socket } => open_unix(h, socket),
        Endpoint::Vsock { cid, port } => open_vsock(h, *cid, *port),
    }
}

/// nbd_get_uri: a URI naming the handle's connection, from where it
/// connected and its settings (libnbd 1.14's rules: `nbds` when TLS is
/// required or was negotiated, the user name only when set explicitly,
/// the TLS files when set).
pub fn uri_of(h: &nbd_handle) -> Result<CString, Error> {
    let Some(ep) = endpoint(h) else {
        return Err(err(
            libc::EINVAL,
            "cannot construct a URI for this connection type",
        ));
    };
    let g = h.lock();
    let s = &g.settings;
    let negotiated = g.conn.as_ref().is_some_and(|c| c.tls_negotiated());
    let parts = uri::UriParts {
        tls: s.tls == LIBNBD_TLS_REQUIRE || negotiated,
        user: s.tls_username.as_ref().map(|c| c.to_bytes()),
        export_name: s.export_name.to_bytes(),
        tls_certificates: s.tls_certificates.as_ref().map(|c| c.to_bytes()),
        tls_psk_file: s.tls_psk_file.as_ref().map(|c| c.to_bytes()),
    };
    let text = uri::render(&ep, &parts)?;
    CString::new(text).map_err(|_| err(libc::EINVAL, "URI contains a NUL byte"))
}
