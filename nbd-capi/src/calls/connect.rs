//! Connecting: each call opens a connected socket (and maybe a server
//! subprocess) through `crate::connect`, then the handle runs the
//! handshake on it. A failed attempt leaves the handle dead, as in libnbd.
//!
//! The whole call runs under the handle lock, as in libnbd (the wrapper
//! checks the handle is newly created in the same critical section); it
//! is released only while blocked in poll(2) during the handshake.

use crate::connect::{self, Opened};
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Held, Inner};
use std::ffi::CStr;

/// Opens with `open`, then runs the handshake to the end. Every socket
/// opened here is connected when `open` returns (a blocking connect(2) or
/// a socketpair); only a caller's socket (nbd_connect_socket) goes
/// through [`connect_with_checked`].
fn connect_with(
    h: &nbd_handle,
    g: &mut Held<'_>,
    open: impl FnOnce(&mut Inner) -> Result<Opened, Error>,
) -> Result<(), Error> {
    connect_opened(h, g, open, true)
}

/// [`connect_with`] for a socket that may still be connecting: the
/// kernel is asked.
fn connect_with_checked(
    h: &nbd_handle,
    g: &mut Held<'_>,
    open: impl FnOnce(&mut Inner) -> Result<Opened, Error>,
) -> Result<(), Error> {
    connect_opened(h, g, open, false)
}

fn connect_opened(
    h: &nbd_handle,
    g: &mut Held<'_>,
    open: impl FnOnce(&mut Inner) -> Result<Opened, Error>,
    connected: bool,
) -> Result<(), Error> {
    match open(g) {
        Ok(o) => h.attach(g, o.sock, o.child, connected),
        Err(e) => {
            g.set_dead(&e);
            Err(e)
        }
    }
}

/// A URI that does not parse or is not allowed leaves the handle newly
/// created (libnbd's behaviour); failing to connect kills it.
pub fn connect_uri(h: &nbd_handle, g: &mut Held<'_>, uri: &CStr) -> Result<(), Error> {
    let ep = connect::apply_uri(h, g, uri)?;
    connect_with(h, g, |g| connect::open_endpoint(g, &ep))
}

pub fn connect_unix(h: &nbd_handle, g: &mut Held<'_>, unixsocket: &CStr) -> Result<(), Error> {
    connect_with(h, g, |g| connect::open_unix(g, unixsocket))
}

pub fn connect_vsock(h: &nbd_handle, g: &mut Held<'_>, cid: u32, port: u32) -> Result<(), Error> {
    connect_with(h, g, |g| connect::open_vsock(g, cid, port))
}

pub fn connect_tcp(
    h: &nbd_handle,
    g: &mut Held<'_>,
    hostname: &CStr,
    port: &CStr,
) -> Result<(), Error> {
    connect_with(h, g, |g| connect::open_tcp(g, hostname, port))
}

/// The caller's connected socket; ours from now on (closed with the
/// handle, or at once if connecting fails).
pub fn connect_socket(h: &nbd_handle, g: &mut Held<'_>, sock: libc::c_int) -> Result<(), Error> {
    connect_with_checked(h, g, |g| connect::open_socket(g, sock))
}

/// Runs `argv` with its stdin and stdout on one end of a socketpair and
/// talks NBD over the other (as `nbdkit -s` expects). The child is reaped
/// when the handle is closed.
pub fn connect_command(h: &nbd_handle, g: &mut Held<'_>, argv: Vec<&CStr>) -> Result<(), Error> {
    connect_with(h, g, |g| connect::open_command(g, &argv))
}

/// Runs `argv` as a systemd socket-activated server (LISTEN_FDS=1, the
/// listening socket on fd 3) and connects to it. The server is sent
/// SIGTERM and reaped when the handle is closed.
pub fn connect_systemd_socket_activation(
    h: &nbd_handle,
    g: &mut Held<'_>,
    argv: Vec<&CStr>,
) -> Result<(), Error> {
    connect_with(h, g, |g| connect::open_systemd_socket_activation(g, &argv))
}

/// Sends `signum` (0 means SIGTERM) to the server subprocess of
/// nbd_connect_command or nbd_connect_systemd_socket_activation.
pub fn kill_subprocess(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    signum: libc::c_int,
) -> Result<(), Error> {
    let Some(pid) = g.child else {
        return Err(err(libc::ESRCH, "no subprocess exists"));
    };
    let signum = if signum == 0 { libc::SIGTERM } else { signum };
    if signum < 0 {
        return Err(err(
            libc::EINVAL,
            format!("invalid signal number: {signum}"),
        ));
    }
    // SAFETY: plain syscall; the child is ours and reaped only on close.
    if unsafe { libc::kill(pid, signum) } < 0 {
        return Err(err(connect::sock::errno(), "kill"));
    }
    Ok(())
}

/// The pid of the server subprocess of nbd_connect_command or
/// nbd_connect_systemd_socket_activation.
pub fn get_subprocess_pid(_h: &nbd_handle, g: &mut Held<'_>) -> Result<i64, Error> {
    match g.child {
        Some(pid) => Ok(i64::from(pid)),
        None => Err(err(libc::ESRCH, "no subprocess exists")),
    }
}

/// AF_VSOCK is built in on Linux (nbd_connect_vsock).
pub fn supports_vsock(_h: &nbd_handle, _g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(cfg!(target_os = "linux"))
}
