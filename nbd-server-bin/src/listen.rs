//! Listening sockets: TCP, Unix, AF_VSOCK and sockets inherited through
//! socket activation (nbdkit-service(1)); accepting, and the accept loop
//! of `nbdkit` and `xnbd-server`; and who the peer of an accepted socket
//! is.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    SockaddrStorage,
};

use nbd_core::server::backend::Peer;

use crate::conn::{self, Server};
use crate::log;

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
pub const FIRST_ACTIVATION_FD: RawFd = 3;
/// At most this many inherited sockets, as nbdkit.
const MAX_ACTIVATION_FDS: u32 = 16;

/// Accepts on every listener, each on its own thread, forever; each
/// connection is served on its own thread, named `{name}-c{id}` (ids
/// from 1, across all listeners).
pub fn serve_all(listeners: Vec<Listener>, srv: Arc<Server>, opts: AcceptOpts, name: &'static str) {
    let next_id = Arc::new(AtomicUsize::new(0));
    for l in listeners {
        let srv = Arc::clone(&srv);
        let next_id = Arc::clone(&next_id);
        std::thread::spawn(move || accept_loop(l, srv, next_id, opts, name));
    }
}

fn accept_loop(
    l: Listener,
    srv: Arc<Server>,
    next_id: Arc<AtomicUsize>,
    opts: AcceptOpts,
    name: &'static str,
) {
    loop {
        let fd = match l.accept(opts) {
            Ok(fd) => fd,
            Err(e) => {
                log::error!("accept: {e}");
                // Out of descriptors and the like: do not spin.
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let srv = Arc::clone(&srv);
        let r = std::thread::Builder::new()
            .name(format!("{name}-c{id}"))
            .stack_size(conn::THREAD_STACK)
            .spawn(move || {
                let peer = peer_of(fd.as_raw_fd());
                let wr = File::from(fd);
                if let Ok(rd) = wr.try_clone() {
                    conn::serve(srv, rd, wr, id, peer);
                }
            });
        if let Err(e) = r {
            log::error!("cannot start a thread: {e}");
        }
    }
}

/// Binds `[::]:port`, plus `0.0.0.0:port` where IPv6 sockets are
/// v6-only, without listening yet: [`listen_all`] starts accepting (the
/// caller may get ready in between, so a client that gets through finds
/// it ready). Port 0: the system picks one (the same for both). Returns
/// the sockets and the port, or the IPv6 and the IPv4 errors.
pub fn bind_any(port: u16) -> Result<(Vec<OwnedFd>, u16), (io::Error, io::Error)> {
    let mut ls = Vec::new();
    match bind_tcp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Ok(l) => {
            let v6only = v6only(&l);
            let port = local_port(&l).unwrap_or(port);
            ls.push(l);
            if v6only {
                if let Ok(l4) = bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) {
                    ls.push(l4);
                }
            }
            Ok((ls, port))
        }
        Err(e6) => match bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) {
            Ok(l) => {
                let port = local_port(&l).unwrap_or(port);
                ls.push(l);
                Ok((ls, port))
            }
            Err(e) => Err((e6, e)),
        },
    }
}

/// One socket on the wildcard address of one family (`nbdkit -4` or
/// `-6`); an IPv6 one is made v6-only, so IPv4 clients are refused.
pub fn bind_any_of_family(port: u16, ipv6: bool) -> io::Result<(OwnedFd, u16)> {
    let fd = if ipv6 {
        let fd = sock::socket(
            AddressFamily::Inet6,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let _ = sock::setsockopt(&fd, sockopt::ReuseAddr, &true);
        sock::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        sock::bind(
            fd.as_raw_fd(),
            &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)),
        )?;
        fd
    } else {
        bind_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?
    };
    let port = local_port(&fd).unwrap_or(port);
    Ok((fd, port))
}

/// The port a bound socket has.
pub fn local_port(fd: &OwnedFd) -> Option<u16> {
    let sa: SockaddrStorage = sock::getsockname(fd.as_raw_fd()).ok()?;
    sa.as_sockaddr_in6()
        .map(|a| a.port())
        .or_else(|| sa.as_sockaddr_in().map(|a| a.port()))
}

/// Whether an IPv6 socket refuses IPv4 (net.ipv6.bindv6only).
fn v6only(fd: &OwnedFd) -> bool {
    sock::getsockopt(fd, sockopt::Ipv6V6Only).unwrap_or(true)
}

/// A TCP socket bound to `addr` (SO_REUSEADDR), not listening.
fn bind_tcp(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = sock::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let _ = sock::setsockopt(&fd, sockopt::ReuseAddr, &true);
    match addr {
        SocketAddr::V6(a) => sock::bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?,
        SocketAddr::V4(a) => sock::bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
    }
    Ok(fd)
}

/// Starts listening on the bound sockets.
pub fn listen_all(fds: Vec<OwnedFd>) -> io::Result<Vec<Listener>> {
    fds.into_iter()
        .map(|fd| {
            sock::listen(&fd, sock::Backlog::MAXCONN)?;
            Ok(Listener(fd))
        })
        .collect()
}

/// A connection on inherited descriptors (`nbdkit -s`: standard input
/// and output; `xnbd-server --inetd`: standard input both ways): our own
/// duplicates of them, to read and to write.
pub fn inherited_connection(
    rd: std::os::unix::io::BorrowedFd<'_>,
    wr: std::os::unix::io::BorrowedFd<'_>,
) -> io::Result<(File, File)> {
    Ok((
        File::from(rd.try_clone_to_owned()?),
        File::from(wr.try_clone_to_owned()?),
    ))
}

/// A listening socket of any family.
pub struct Listener(pub OwnedFd);

/// Socket activation: `Ok(None)` when it is not asked for (no LISTEN_PID,
/// or a LISTEN_PID that is another process's: then the variables are
/// ignored, as nbdkit does), `Ok(Some(fds))` with the inherited listening
/// sockets, `Err` when the variables are for us but wrong. The variables
/// are removed so that child processes do not see them. Call before any
/// thread starts (it changes the environment).
pub fn activation() -> Result<Option<Vec<Listener>>, String> {
    let pid = match std::env::var("LISTEN_PID")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        Some(p) => p,
        None => return Ok(None),
    };
    if pid != std::process::id() {
        eprintln!("nbdkit: LISTEN_PID was not for us (ignored)");
        return Ok(None);
    }
    let n = match std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        Some(n) => n,
        None => return Ok(None),
    };
    if n == 0 || n > MAX_ACTIVATION_FDS {
        return Err(format!(
            "socket activation: LISTEN_FDS={n} out of range (1 to {MAX_ACTIVATION_FDS})"
        ));
    }
    for v in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    let mut ls = Vec::new();
    for i in 0..n as RawFd {
        let fd = FIRST_ACTIVATION_FD + i;
        // SAFETY: fcntl on an integer descriptor; checks that it is open.
        let ok = unsafe {
            let f = libc::fcntl(fd, libc::F_GETFD);
            f != -1 && libc::fcntl(fd, libc::F_SETFD, f | libc::FD_CLOEXEC) != -1
        };
        if !ok {
            return Err(format!(
                "socket activation: invalid file descriptor fd = {fd}: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: the descriptor is open and was given to us to own.
        ls.push(Listener(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    Ok(Some(ls))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Listens on AF_VSOCK port `port` of every CID (VMADDR_CID_ANY).
pub fn bind_vsock(port: u32) -> io::Result<(Listener, u32)> {
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = cvt(libc::socket(
            libc::AF_VSOCK,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let owned = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_vm = zeroed();
        sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        sa.svm_port = port;
        sa.svm_cid = libc::VMADDR_CID_ANY;
        cvt(libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ))?;
        cvt(libc::listen(fd, libc::SOMAXCONN))?;
        let mut len = size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        let mut got: libc::sockaddr_vm = zeroed();
        let actual =
            if libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut len) == 0 {
                got.svm_port
            } else {
                port
            };
        Ok((Listener(owned), actual))
    }
}

/// Options applied to every accepted socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptOpts {
    /// SO_KEEPALIVE on TCP connections (`--keep-alive`).
    pub keep_alive: bool,
}

impl Listener {
    /// Waits for a client. TCP connections get TCP_NODELAY (and
    /// SO_KEEPALIVE if asked).
    pub fn accept(&self, opts: AcceptOpts) -> io::Result<OwnedFd> {
        loop {
            // SAFETY: accept4 on our listening descriptor.
            let r = unsafe {
                libc::accept4(
                    self.0.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    _ => return Err(e),
                }
            }
            // SAFETY: accept4 returned a new descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(r) };
            if is_inet(r) {
                set_int_opt(r, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
                if opts.keep_alive {
                    set_int_opt(r, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
                }
            }
            return Ok(fd);
        }
    }
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: setsockopt with a pointer to a local int.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn local_family(fd: RawFd) -> Option<libc::c_int> {
    // SAFETY: getsockname into a local sockaddr_storage.
    unsafe {
        let mut ss: libc::sockaddr_storage = zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
            return None;
        }
        Some(ss.ss_family as libc::c_int)
    }
}

fn is_inet(fd: RawFd) -> bool {
    matches!(local_family(fd), Some(libc::AF_INET) | Some(libc::AF_INET6))
}

/// Whether `fd` is a socket that accepts connections.
pub fn is_listening(fd: RawFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    r == 0 && v != 0
}

/// Who is on the other end of `fd`: address for TCP, credentials for Unix
/// sockets (SO_PEERCRED), CID and port for AF_VSOCK; `Other` for anything
/// else (a pipe with `-s`, a socketpair without credentials).
pub fn peer_of(fd: RawFd) -> Peer {
    // SAFETY: getpeername/getsockopt into locals of the right size.
    unsafe {
        let mut ss: libc::sockaddr_storage = zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
            return Peer::Other;
        }
        match ss.ss_family as libc::c_int {
            libc::AF_INET => {
                let sa = &*(&ss as *const _ as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
                Peer::Tcp(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sa.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sa = &*(&ss as *const _ as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
                // An IPv4 client of our dual-stack socket is an IPv4 peer,
                // as nbdkit (one socket per family) sees it.
                if let Some(v4) = ip.to_ipv4_mapped() {
                    return Peer::Tcp(SocketAddr::V4(SocketAddrV4::new(
                        v4,
                        u16::from_be(sa.sin6_port),
                    )));
                }
                Peer::Tcp(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(sa.sin6_port),
                    sa.sin6_flowinfo,
                    sa.sin6_scope_id,
                )))
            }
            libc::AF_UNIX => {
                let mut cred: libc::ucred = zeroed();
                let mut clen = size_of::<libc::ucred>() as libc::socklen_t;
                if libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_PEERCRED,
                    &mut cred as *mut _ as *mut libc::c_void,
                    &mut clen,
                ) == 0
                {
                    Peer::Unix {
                        pid: Some(cred.pid),
                        uid: Some(cred.uid),
                        gid: Some(cred.gid),
                    }
                } else {
                    Peer::Unix {
                        pid: None,
                        uid: None,
                        gid: None,
                    }
                }
            }
            libc::AF_VSOCK => {
                let sa = &*(&ss as *const _ as *const libc::sockaddr_vm);
                Peer::Vsock {
                    cid: sa.svm_cid,
                    port: sa.svm_port,
                }
            }
            _ => Peer::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn ipv4_clients_of_a_dual_stack_socket_are_ipv4_peers() {
        let l = match std::net::TcpListener::bind("[::]:0") {
            Ok(l) => l,
            Err(_) => return, // no IPv6 here: nothing to map
        };
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        match peer_of(s.as_raw_fd()) {
            Peer::Tcp(SocketAddr::V4(a)) => {
                assert_eq!(*a.ip(), Ipv4Addr::LOCALHOST);
                assert_eq!(a.port(), c.local_addr().unwrap().port());
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn peers() {
        let (a, _b) = UnixStream::pair().unwrap();
        match peer_of(a.as_raw_fd()) {
            Peer::Unix { pid, uid, .. } => {
                assert_eq!(pid, Some(std::process::id() as i32));
                // SAFETY: getuid has no preconditions.
                assert_eq!(uid, Some(unsafe { libc::getuid() }));
            }
            p => panic!("{p:?}"),
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(peer_of(s.as_raw_fd()), Peer::Tcp(c.local_addr().unwrap()));
        assert!(is_listening(l.as_raw_fd()));
        assert!(!is_listening(s.as_raw_fd()));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(peer_of(f.as_raw_fd()), Peer::Other);
    }
}
