//! Making connected sockets: Unix, TCP, vsock, a subprocess on a
//! socketpair, a subprocess by systemd socket activation. No handle here:
//! each function returns the socket (and the child), and the caller decides
//! whether to run the handshake now (sync calls) or later (aio calls).
//!
//! Subprocesses: everything the child needs is prepared before fork(2);
//! after it the child makes only async-signal-safe calls (dup2, fcntl,
//! signal, getpid, execvp, write, _exit) and touches only memory prepared
//! before, since the program may have other threads.

use crate::errors::{err, Error};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;

pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

pub fn socket(domain: i32) -> Result<OwnedFd, Error> {
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

fn sockaddr_un(path: &[u8]) -> Result<libc::sockaddr_un, Error> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.len() >= addr.sun_path.len() {
        return Err(err(libc::ENAMETOOLONG, "socket name too long"));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as c_char;
    }
    Ok(addr)
}

const SUN_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;

/// A stream socket connected to the Unix socket at `path`.
pub fn unix(path: &CStr) -> Result<OwnedFd, Error> {
    let addr = sockaddr_un(path.to_bytes())?;
    let fd = socket(libc::AF_UNIX)?;
    // SAFETY: addr is a sockaddr_un of SUN_LEN bytes.
    unsafe { connect(&fd, (&addr as *const libc::sockaddr_un).cast(), SUN_LEN)? };
    Ok(fd)
}

/// A socket connected to `cid`:`port` over AF_VSOCK.
pub fn vsock(cid: u32, port: u32) -> Result<OwnedFd, Error> {
    // SAFETY: an all-zero sockaddr_vm is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    let fd = socket(libc::AF_VSOCK)?;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a sockaddr_vm of len bytes.
    unsafe { connect(&fd, (&addr as *const libc::sockaddr_vm).cast(), len)? };
    Ok(fd)
}

/// How one address is connected: blocking for the sync calls, started
/// without waiting for the AIO calls.
///
/// # Safety
/// Callers pass `addr` pointing to a socket address of `len` bytes.
pub type ConnectFn =
    unsafe fn(&OwnedFd, *const libc::sockaddr, libc::socklen_t) -> Result<(), Error>;

/// getaddrinfo, then each address in turn until one connects.
pub fn tcp(hostname: &CStr, port: &CStr) -> Result<OwnedFd, Error> {
    tcp_with(hostname, port, connect)
}

/// getaddrinfo, then each address in turn until `connect_one` succeeds
/// on one of them (for a non-blocking connect: until one is under way).
pub fn tcp_with(hostname: &CStr, port: &CStr, connect_one: ConnectFn) -> Result<OwnedFd, Error> {
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
        match unsafe { connect_one(&fd, ai.ai_addr, ai.ai_addrlen) } {
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

/// argv as execvp wants it (pointers into `argv`, NULL-terminated), and
/// the message the child writes if exec fails.
fn exec_args(argv: &[&CStr], call: &str) -> Result<(Vec<*const c_char>, CString), Error> {
    if argv.is_empty() {
        return Err(err(libc::EINVAL, "missing command name in argv list"));
    }
    let mut ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let msg = CString::new(format!(
        "libnbd: {call}: cannot run {}\n",
        argv[0].to_string_lossy()
    ))
    .unwrap_or_default();
    Ok((ptrs, msg))
}

/// Kills (SIGTERM) and reaps a child we failed to connect to.
fn abandon(pid: libc::pid_t) {
    // SAFETY: plain syscalls on our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && errno() == libc::EINTR {}
    }
}

/// Runs `argv` with its stdin and stdout on one end of a socketpair and
/// returns the other end (as `nbdkit -s` expects) and the child's pid.
pub fn command(argv: &[&CStr]) -> Result<(OwnedFd, libc::pid_t), Error> {
    let (ptrs, msg) = exec_args(argv, "connect_command")?;
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
    // on data prepared before the fork.
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
            libc::_exit(if errno() == libc::ENOENT { 127 } else { 126 });
        }
    }
    drop(theirs);
    Ok((ours, pid))
}

/// The private directory and socket of a socket-activated server; both
/// are removed when the handle is closed (or at once if connecting fails).
#[derive(Debug)]
pub struct ActivationDir {
    pub dir: CString,
    pub sock: CString,
}

impl ActivationDir {
    pub fn remove(&self) {
        // SAFETY: plain syscalls on paths we created.
        unsafe {
            libc::unlink(self.sock.as_ptr());
            libc::rmdir(self.dir.as_ptr());
        }
    }
}

/// The fd systemd's protocol passes the first socket on.
const FIRST_LISTEN_FD: libc::c_int = 3;
const LISTEN_PID: &[u8] = b"LISTEN_PID=";

/// Formats `n` in decimal into `buf` followed by a NUL, without
/// allocating (async-signal-safe). `buf` must hold 21 bytes.
fn itoa_nul(mut n: u64, buf: &mut [u8]) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    buf[..len].copy_from_slice(&digits[i..]);
    buf[len] = 0;
}

extern "C" {
    static mut environ: *const *const c_char;
}

/// systemd socket activation, as libnbd does it: a listening Unix socket
/// in a new private directory under /tmp (short enough for sun_path),
/// passed to `argv` as fd 3 with LISTEN_FDS=1 and LISTEN_PID=<its pid> in
/// its environment (any inherited LISTEN_* dropped), and LISTEN_FDNAMES=
/// `name` when a name is given (nbd_set_socket_activation_name; without
/// it the server sees "unknown"); then a socket
/// connected to it. Returns that socket, the child, and the directory to
/// remove later.
pub fn activation(
    argv: &[&CStr],
    name: &CStr,
) -> Result<(OwnedFd, libc::pid_t, ActivationDir), Error> {
    let (ptrs, msg) = exec_args(argv, "connect_systemd_socket_activation")?;
    let msg = msg.as_bytes();

    let mut template = *b"/tmp/libnbdXXXXXX\0";
    // SAFETY: template is a writable NUL-terminated buffer ending in XXXXXX.
    if unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) }.is_null() {
        return Err(err(errno(), "mkdtemp"));
    }
    let dir = CStr::from_bytes_until_nul(&template)
        .map_err(|_| err(libc::EIO, "mkdtemp"))?
        .to_owned();
    let mut sock = dir.as_bytes().to_vec();
    sock.extend_from_slice(b"/sock");
    let dir = ActivationDir {
        dir,
        sock: CString::new(sock).map_err(|_| err(libc::EIO, "mkdtemp"))?,
    };
    let r = activation_in(&dir, &ptrs, msg, name);
    match r {
        Ok((fd, pid)) => Ok((fd, pid, dir)),
        Err(e) => {
            dir.remove();
            Err(e)
        }
    }
}

fn activation_in(
    dir: &ActivationDir,
    ptrs: &[*const c_char],
    msg: &[u8],
    name: &CStr,
) -> Result<(OwnedFd, libc::pid_t), Error> {
    let addr = sockaddr_un(dir.sock.to_bytes())?;
    let listener = socket(libc::AF_UNIX)?;
    let ap = (&addr as *const libc::sockaddr_un).cast();
    // SAFETY: addr is a sockaddr_un of SUN_LEN bytes.
    if unsafe { libc::bind(listener.as_raw_fd(), ap, SUN_LEN) } < 0 {
        return Err(err(
            errno(),
            format!("bind: {}", dir.sock.to_string_lossy()),
        ));
    }
    // SAFETY: plain syscall on our socket.
    if unsafe { libc::listen(listener.as_raw_fd(), libc::SOMAXCONN) } < 0 {
        return Err(err(errno(), "listen"));
    }

    // The child's environment: LISTEN_PID (its digits written by the
    // child, in its own copy of this buffer), LISTEN_FDS=1, then ours
    // without any LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES.
    let mut pid_var = [0u8; 11 + 21];
    pid_var[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
    let fds_var = b"LISTEN_FDS=1\0";
    let mut kept = Vec::new();
    for (k, v) in std::env::vars_os() {
        let k = k.as_bytes();
        if k == b"LISTEN_PID" || k == b"LISTEN_FDS" || k == b"LISTEN_FDNAMES" {
            continue;
        }
        let mut kv = k.to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if let Ok(c) = CString::new(kv) {
            kept.push(c);
        }
    }
    if !name.is_empty() {
        let mut kv = b"LISTEN_FDNAMES=".to_vec();
        kv.extend_from_slice(name.to_bytes());
        if let Ok(c) = CString::new(kv) {
            kept.insert(0, c);
        }
    }
    let mut envp: Vec<*const c_char> = vec![pid_var.as_ptr().cast(), fds_var.as_ptr().cast()];
    envp.extend(kept.iter().map(|c| c.as_ptr()));
    envp.push(std::ptr::null());
    let lfd = listener.as_raw_fd();

    // SAFETY: fork; the child below only calls async-signal-safe functions
    // on data prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(err(errno(), "fork"));
    }
    if pid == 0 {
        // SAFETY: see above; pid_var and envp are this process's copies.
        unsafe {
            if lfd != FIRST_LISTEN_FD {
                // dup2 leaves FD_CLOEXEC clear on fd 3; the original
                // closes on exec.
                if libc::dup2(lfd, FIRST_LISTEN_FD) < 0 {
                    libc::_exit(126);
                }
            } else {
                let flags = libc::fcntl(lfd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(lfd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    libc::_exit(126);
                }
            }
            let p = pid_var.as_mut_ptr().add(LISTEN_PID.len());
            itoa_nul(libc::getpid() as u64, std::slice::from_raw_parts_mut(p, 21));
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            environ = envp.as_ptr();
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(if errno() == libc::ENOENT { 127 } else { 126 });
        }
    }
    drop(listener);
    match unix(&dir.sock) {
        Ok(fd) => Ok((fd, pid)),
        Err(e) => {
            abandon(pid);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itoa() {
        let mut b = [0xffu8; 21];
        itoa_nul(0, &mut b);
        assert_eq!(&b[..2], b"0\0");
        itoa_nul(4194304, &mut b);
        assert_eq!(&b[..8], b"4194304\0");
        itoa_nul(u64::MAX, &mut b);
        assert_eq!(&b[..21], b"18446744073709551615\0");
    }

    #[test]
    fn empty_argv_is_einval() {
        assert_eq!(command(&[]).unwrap_err().errno, libc::EINVAL);
        assert_eq!(activation(&[], c"").unwrap_err().errno, libc::EINVAL);
    }

    /// The child sees fd 3 listening, LISTEN_FDS=1, LISTEN_PID = its own
    /// pid, and no inherited LISTEN_FDNAMES, or the name given; the
    /// directory is private.
    #[test]
    fn activation_environment() {
        for (name, seen) in [("", "unset"), ("nbd-0", "nbd-0")] {
            activation_sees(name, seen);
        }
    }

    fn activation_sees(name: &str, names_seen: &str) {
        let sh = CString::new("/bin/sh").unwrap();
        let dash_c = CString::new("-c").unwrap();
        // Accept one connection on fd 3 with nothing but the shell: write
        // the facts to a file the test reads.
        let out =
            std::env::temp_dir().join(format!("nbd-sa-{}-{}", std::process::id(), name.len()));
        let script = CString::new(format!(
            "{{ echo \"pid=$$ lp=$LISTEN_PID lf=$LISTEN_FDS names=${{LISTEN_FDNAMES-unset}}\"; \
             ls -l /proc/$$/fd/3; }} > {} 2>&1",
            out.display()
        ))
        .unwrap();
        let name = CString::new(name).unwrap();
        let (fd, pid, dir) = activation(&[&sh, &dash_c, &script], &name).unwrap();
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        drop(fd);
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert!(dir.dir.to_bytes().starts_with(b"/tmp/libnbd"), "{dir:?}");
        assert!(std::path::Path::new(dir.sock.to_str().unwrap()).exists());
        dir.remove();
        assert!(!std::path::Path::new(dir.dir.to_str().unwrap()).exists());
        assert!(
            text.contains(&format!("pid={pid} lp={pid} lf=1 names={names_seen}")),
            "{text}"
        );
        assert!(text.contains("socket:"), "{text}");
    }
}
