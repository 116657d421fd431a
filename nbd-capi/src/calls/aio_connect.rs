//! Connecting without waiting: each call starts a non-blocking connect(2)
//! (or takes a socket or subprocess) and hands it to the handle with
//! `attach_async`; the handle is "connecting" until the caller's event
//! loop (nbd_aio_notify_*, nbd_poll) or a sync call moves it on. A
//! connect(2) that fails at once leaves the handle dead, as in libnbd.
//! The whole call runs under the handle lock, as in libnbd.

use crate::connect::sock::{errno, socket};
use crate::connect::uri::Endpoint;
use crate::connect::{self, Opened};
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Held, Inner};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::{c_char, c_int};

fn failed(g: &mut Inner, e: Error) -> Error {
    g.set_dead(&e);
    e
}

/// A non-blocking connect(2): Ok once connected or under way.
///
/// # Safety
/// `addr` points to a socket address of `len` bytes.
unsafe fn start_connect(
    fd: &OwnedFd,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Result<(), Error> {
    crate::driver::set_nonblocking(fd.as_raw_fd())?;
    loop {
        // SAFETY: per the contract.
        if unsafe { libc::connect(fd.as_raw_fd(), addr, len) } == 0 {
            return Ok(());
        }
        match errno() {
            libc::EINTR => continue,
            libc::EINPROGRESS => return Ok(()),
            e => return Err(err(e, "connect")),
        }
    }
}

pub fn aio_connect(
    h: &nbd_handle,
    g: &mut Held<'_>,
    addr: (*const libc::sockaddr, libc::socklen_t),
) -> Result<(), Error> {
    let (addr, len) = addr;
    let r = (|| {
        if (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
            return Err(err(libc::EINVAL, "socket address too short"));
        }
        // SAFETY: addr is non-NULL (checked by the wrapper) and at least
        // long enough for its family (checked above).
        let family = unsafe { (*addr).sa_family };
        // SAFETY: as above.
        if let Some(ep) = unsafe { endpoint_of(addr, len) } {
            connect::remember(g, ep);
        }
        let fd = socket(i32::from(family))?;
        // SAFETY: the caller gave len bytes of address.
        unsafe { start_connect(&fd, addr, len)? };
        Ok(fd)
    })();
    let fd = r.map_err(|e| failed(g, e))?;
    h.attach_async(g, fd, None)
}

/// What nbd_get_uri will name for a socket address given to
/// nbd_aio_connect, as libnbd does: an IPv4 or IPv6 address and port in
/// numeric form, or a Unix socket's path. None for anything else.
///
/// # Safety
/// `addr` points to a socket address of `len` bytes.
unsafe fn endpoint_of(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<Endpoint> {
    let len = len as usize;
    // SAFETY (all reads): the family says which structure it is and the
    // length is checked against it first; read_unaligned as the caller's
    // buffer need not be aligned for it.
    match i32::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            let sin = unsafe { addr.cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            tcp(ip.to_string(), u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let sin6 = unsafe { addr.cast::<libc::sockaddr_in6>().read_unaligned() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            tcp(ip.to_string(), u16::from_be(sin6.sin6_port))
        }
        libc::AF_UNIX => {
            let base = std::mem::offset_of!(libc::sockaddr_un, sun_path);
            let path_len = len.checked_sub(base)?.min(108);
            let path = unsafe { std::slice::from_raw_parts(addr.cast::<u8>().add(base), path_len) };
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            // An abstract socket (leading NUL) has no path to name.
            if end == 0 {
                return None;
            }
            let socket = std::ffi::CString::new(&path[..end]).ok()?;
            Some(Endpoint::Unix { socket })
        }
        _ => None,
    }
}

fn tcp(host: String, port: u16) -> Option<Endpoint> {
    Some(Endpoint::Tcp {
        host: std::ffi::CString::new(host).ok()?,
        port: std::ffi::CString::new(port.to_string()).ok()?,
    })
}

/// Hands a socket (and subprocess) from the connect module's `open_*`
/// functions to the handle without waiting; their errors kill the handle.
fn attach_opened(
    h: &nbd_handle,
    g: &mut Held<'_>,
    open: impl FnOnce(&mut Inner) -> Result<Opened, Error>,
) -> Result<(), Error> {
    let o = open(g).map_err(|e| failed(g, e))?;
    h.attach_async(g, o.sock, o.child)
}

/// Parses and applies the URI (whose errors leave the handle newly
/// created, as in libnbd), then starts connecting to what it names.
pub fn aio_connect_uri(h: &nbd_handle, g: &mut Held<'_>, uri: &CStr) -> Result<(), Error> {
    match connect::apply_uri(h, g, uri)? {
        Endpoint::Unix { socket } => aio_connect_unix(h, g, &socket),
        Endpoint::Tcp { host, port } => aio_connect_tcp(h, g, &host, &port),
        ep @ (Endpoint::Vsock { .. } | Endpoint::Ssh(_)) => {
            attach_opened(h, g, |g| connect::open_endpoint(g, &ep))
        }
    }
}

/// vsock connects are local to the host: the connect module's blocking
/// connect(2) returns at once.
pub fn aio_connect_vsock(
    h: &nbd_handle,
    g: &mut Held<'_>,
    cid: u32,
    port: u32,
) -> Result<(), Error> {
    attach_opened(h, g, |g| connect::open_vsock(g, cid, port))
}

pub fn aio_connect_systemd_socket_activation(
    h: &nbd_handle,
    g: &mut Held<'_>,
    argv: Vec<&CStr>,
) -> Result<(), Error> {
    attach_opened(h, g, |g| connect::open_systemd_socket_activation(g, &argv))
}

pub fn aio_connect_unix(h: &nbd_handle, g: &mut Held<'_>, unixsocket: &CStr) -> Result<(), Error> {
    connect::remember(
        g,
        Endpoint::Unix {
            socket: unixsocket.to_owned(),
        },
    );
    let r = (|| {
        // SAFETY: an all-zero sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let path = unixsocket.to_bytes();
        if path.len() >= addr.sun_path.len() {
            return Err(err(libc::ENAMETOOLONG, "socket name too long"));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as c_char;
        }
        let fd = socket(libc::AF_UNIX)?;
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: addr is a sockaddr_un of len bytes.
        unsafe { start_connect(&fd, (&addr as *const libc::sockaddr_un).cast(), len)? };
        Ok(fd)
    })();
    let fd = r.map_err(|e| failed(g, e))?;
    h.attach_async(g, fd, None)
}

/// getaddrinfo, then a non-blocking connect to the first address that
/// does not fail at once. (libnbd also moves on to the next address when a
/// connect under way fails later; we report that failure instead.)
pub fn aio_connect_tcp(
    h: &nbd_handle,
    g: &mut Held<'_>,
    hostname: &CStr,
    port: &CStr,
) -> Result<(), Error> {
    connect::remember(
        g,
        Endpoint::Tcp {
            host: hostname.to_owned(),
            port: port.to_owned(),
        },
    );
    let fd = tcp_start(hostname, port).map_err(|e| failed(g, e))?;
    h.attach_async(g, fd, None)
}

fn tcp_start(hostname: &CStr, port: &CStr) -> Result<OwnedFd, Error> {
    crate::connect::sock::tcp_with(hostname, port, start_connect)
}

/// Takes over a connected socket: the handle closes it.
pub fn aio_connect_socket(h: &nbd_handle, g: &mut Held<'_>, sock: c_int) -> Result<(), Error> {
    attach_opened(h, g, |g| connect::open_socket(g, sock))
}

pub fn aio_connect_command(
    h: &nbd_handle,
    g: &mut Held<'_>,
    argv: Vec<&CStr>,
) -> Result<(), Error> {
    attach_opened(h, g, |g| connect::open_command(g, &argv))
}
