//! Opening connections: from a handle's settings (or a URI applied to
//! them) to a connected socket and maybe a child process, without running
//! the handshake. The sync nbd_connect_* calls attach the result at once
//! (`nbd_handle::attach`); the aio calls hand it to `attach_async`
//! instead, with the same error rule as the sync calls in
//! `calls/connect.rs`: an `open_*` error marks the handle dead, an
//! [`apply_uri`] error does not. For example nbd_aio_connect_uri is
//! `apply_uri`, then `open_endpoint`, then `attach_async(g, o.sock, o.child)`.
//! Everything here runs in the wrapper's critical section and works on the
//! held lock (`g`), never locking the handle itself.
//!
//! - [`uri`]: nbd_connect_uri and nbd_get_uri on a handle; the URIs
//!   themselves are parsed and built by `nbd_core::uri`.
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

use crate::errors::{err, Error};
use crate::handle::Inner;
use std::ffi::CStr;
use std::os::fd::OwnedFd;
use uri::Endpoint;
pub use uri::{apply_uri, open_endpoint, uri_of};

/// A connected socket, and the server subprocess behind it if we started
/// one (reaped when the handle is closed).
#[derive(Debug)]
pub struct Opened {
    pub sock: OwnedFd,
    pub child: Option<libc::pid_t>,
}

/// Records where the handle connects, for nbd_get_uri.
pub fn remember(g: &mut Inner, ep: Endpoint) {
    g.endpoint = Some(ep);
}

/// Where the handle connected (or tried to), if it was to an address
/// nbd_get_uri can name.
pub fn endpoint(g: &Inner) -> Option<Endpoint> {
    g.endpoint.clone()
}

pub fn open_unix(g: &mut Inner, path: &CStr) -> Result<Opened, Error> {
    remember(
        g,
        Endpoint::Unix {
            socket: path.to_owned(),
        },
    );
    Ok(Opened {
        sock: sock::unix(path)?,
        child: None,
    })
}

pub fn open_tcp(g: &mut Inner, host: &CStr, port: &CStr) -> Result<Opened, Error> {
    remember(
        g,
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

pub fn open_vsock(g: &mut Inner, cid: u32, port: u32) -> Result<Opened, Error> {
    remember(g, Endpoint::Vsock { cid, port });
    Ok(Opened {
        sock: sock::vsock(cid, port)?,
        child: None,
    })
}

/// `nbd+ssh://`: the local ssh(1) with the command line the URI parser
/// built (`SshTarget::argv`, which ends the options with `--` and has
/// checked what reaches the remote shell), as a subprocess on a
/// socketpair, as nbd_connect_command runs its server.
pub fn open_ssh(g: &mut Inner, t: &uri::SshTarget) -> Result<Opened, Error> {
    remember(g, Endpoint::Ssh(t.clone()));
    let argv = t.argv();
    let refs: Vec<&CStr> = argv.iter().map(|a| a.as_c_str()).collect();
    let (sock, pid) = sock::command(&refs)?;
    Ok(Opened {
        sock,
        child: Some(pid),
    })
}

pub fn open_command(_g: &mut Inner, argv: &[&CStr]) -> Result<Opened, Error> {
    let (sock, pid) = sock::command(argv)?;
    Ok(Opened {
        sock,
        child: Some(pid),
    })
}

/// nbd_connect_socket: the caller's connected socket. libnbd owns it from
/// the moment the call starts (and closes it, also when connecting
/// fails); a negative fd is EBADF and is not touched.
pub fn open_socket(_g: &mut Inner, fd: libc::c_int) -> Result<Opened, Error> {
    if fd < 0 {
        return Err(err(libc::EBADF, format!("invalid socket: {fd}")));
    }
    // SAFETY: the caller passes ownership of a valid fd (nbd_connect_socket(3)).
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Ok(Opened { sock, child: None })
}

pub fn open_systemd_socket_activation(g: &mut Inner, argv: &[&CStr]) -> Result<Opened, Error> {
    let name = g.settings.socket_activation_name.clone();
    let (sock, pid, dir) = sock::activation(argv, &name)?;
    let path = dir.sock.clone();
    g.endpoint = Some(Endpoint::Unix { socket: path });
    // A handle connects once, so there is no earlier directory.
    g.activation = Some(dir);
    Ok(Opened {
        sock,
        child: Some(pid),
    })
}
