//! Connecting: a Unix socket, TCP, or a subprocess on a socketpair. Each
//! makes a connected socket, then the handle runs the handshake on it.

use crate::errors::{err, Error};
use crate::handle::nbd_handle;
use nbd_core::client::Error as CoreError;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::raw::c_char;

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A failed connection attempt leaves the handle dead, as in libnbd.
fn failed(h: &nbd_handle, e: CoreError) -> Error {
    h.set_dead(&e);
    e
}

pub(crate) fn socket(domain: i32) -> Result<OwnedFd, Error> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(errno(), "socket"));
    }
    // SAFETY: fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// connect(2), retried on EINTR.
///
/// # Safety
/// `addr` points to a socket address of `len` bytes.
unsafe fn connect(
    fd: &OwnedFd,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Result<(), Error> {
    loop {
        // SAFETY: per the contract.
        if unsafe { libc::connect(fd.as_raw_fd(), addr, len) } == 0 {
            return Ok(());
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(err(e, "connect")),
        }
    }
}

pub fn connect_unix(h: &nbd_handle, unixsocket: &CStr) -> Result<(), Error> {
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
        unsafe { connect(&fd, (&addr as *const libc::sockaddr_un).cast(), len)? };
        Ok(fd)
    })();
    let fd = r.map_err(|e| failed(h, e))?;
    h.attach(fd, None)
}

pub fn connect_tcp(h: &nbd_handle, hostname: &CStr, port: &CStr) -> Result<(), Error> {
    let fd = tcp(hostname, port).map_err(|e| failed(h, e))?;
    h.attach(fd, None)
}

/// getaddrinfo, then each address in turn until one connects.
fn tcp(hostname: &CStr, port: &CStr) -> Result<OwnedFd, Error> {
    // SAFETY: an all-zero addrinfo is a valid hints structure.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut list: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C strings and hints; list receives the result.
    let r = unsafe { libc::getaddrinfo(hostname.as_ptr(), port.as_ptr(), &hints, &mut list) };
    if r != 0 {
        // SAFETY: gai_strerror returns a static string.
        let why = unsafe { CStr::from_ptr(libc::gai_strerror(r)) };
        return Err(err(
            0,
            format!(
                "getaddrinfo: {}:{}: {}",
                hostname.to_string_lossy(),
                port.to_string_lossy(),
                why.to_string_lossy()
            ),
        ));
    }
    let mut last = err(libc::ENOENT, "connect: no address to connect to");
    let mut p = list;
    let mut found = None;
    while !p.is_null() {
        // SAFETY: p is an element of the list getaddrinfo returned.
        let ai = unsafe { &*p };
        p = ai.ai_next;
        let fd = match socket(ai.ai_family) {
            Ok(fd) => fd,
            Err(e) => {
                last = e;
                continue;
            }
        };
        // SAFETY: ai_addr is ai_addrlen bytes, per getaddrinfo.
        match unsafe { connect(&fd, ai.ai_addr, ai.ai_addrlen) } {
            Ok(()) => {
                found = Some(fd);
                break;
            }
            Err(e) => last = e,
        }
    }
    // SAFETY: list came from getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(list) };
    let fd = found.ok_or(last)?;
    // Requests are small and latency-bound: do not let Nagle delay them.
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int option; failure is harmless.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

/// Runs `argv` with its stdin and stdout on one end of a socketpair and
/// talks NBD over the other (as `nbdkit -s` expects). The child is reaped
/// when the handle is closed.
pub fn connect_command(h: &nbd_handle, argv: Vec<&CStr>) -> Result<(), Error> {
    let (fd, pid) = spawn(&argv).map_err(|e| failed(h, e))?;
    h.attach(fd, Some(pid))
}

pub(crate) fn spawn(argv: &[&CStr]) -> Result<(OwnedFd, libc::pid_t), Error> {
    if argv.is_empty() {
        return Err(err(libc::EINVAL, "missing command name in argv list"));
    }
    // Everything the child needs is prepared before fork: after it, in a
    // possibly multi-threaded program, the child may only make
    // async-signal-safe calls.
    let mut ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let msg = CString::new(format!(
        "libnbd: connect_command: cannot run {}\n",
        argv[0].to_string_lossy()
    ))
    .unwrap_or_default();
    let msg = msg.as_bytes();

    let mut sv = [0 as libc::c_int; 2];
    // SAFETY: sv receives two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } < 0
    {
        return Err(err(errno(), "socketpair"));
    }
    // SAFETY: both fds are new and ours.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };

    // SAFETY: fork; the child below only calls async-signal-safe functions
    // (dup2, signal, execvp as libnbd does, write, _exit) on data prepared
    // before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(err(errno(), "fork"));
    }
    if pid == 0 {
        // SAFETY: see above. dup2 clears FD_CLOEXEC on the copies; the
        // originals close on exec.
        unsafe {
            let t = theirs.as_raw_fd();
            if libc::dup2(t, 0) < 0 || libc::dup2(t, 1) < 0 {
                libc::_exit(126);
            }
            // A parent that ignores SIGPIPE must not pass that on.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(126);
        }
    }
    drop(theirs);
    Ok((ours, pid))
}
