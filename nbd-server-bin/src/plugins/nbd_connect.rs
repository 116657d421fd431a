//! The nbd plugin's less common ways to reach its server: AF_VSOCK, and a
//! server it runs itself with systemd socket activation (libnbd's
//! nbd_connect_systemd_socket_activation, which nbdkit's plugin uses).

use std::io;
use std::mem::{size_of, zeroed};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// A connected AF_VSOCK stream socket to `cid`:`port`.
pub fn vsock(cid: u32, port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket calls on a descriptor owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_vm = zeroed();
        sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        sa.svm_cid = cid;
        sa.svm_port = port;
        if libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ) == -1
        {
            return Err(io::Error::last_os_error());
        }
        Ok(owned)
    }
}

/// The descriptor socket activation hands over (SD_LISTEN_FDS_START).
const LISTEN_FD: libc::c_int = 3;

/// Runs `argv` as an NBD server listening on a socket we made, handed
/// over as systemd does (fd 3, `LISTEN_FDS=1`, `LISTEN_PID` its own pid),
/// and returns our connection to it.
///
/// The socket lives in a private directory, removed once connected: the
/// server keeps its listening descriptor, nobody else can reach it. The
/// server gets SIGTERM when this process ends (PR_SET_PDEATHSIG), so it
/// does not outlive us, as libnbd's does not.
pub fn socket_activation(argv: &[String]) -> io::Result<OwnedFd> {
    let dir = PrivateDir::new()?;
    let path = dir.0.join("sock");
    let listener = UnixListener::bind(&path)?;
    let listen_fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the server's pid, known only in the child: a
    // shell sets it and execs the server in its own place.
    cmd.args(["-c", "LISTEN_PID=$$; export LISTEN_PID; exec \"$@\""])
        .arg("sh")
        .args(argv)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_FDNAMES")
        // Our standard input and output may be the client's (-s).
        .stdin(Stdio::null())
        .stdout(Stdio::from(io::stderr()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The server blocks its exit signals in every thread (they go
            // to its signal loop): unblocked here, or the server could
            // not be stopped, by PR_SET_PDEATHSIG's SIGTERM among others.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
            }
            if listen_fd == LISTEN_FD {
                // dup2 onto itself keeps close-on-exec: clear it.
                if libc::fcntl(LISTEN_FD, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(listen_fd, LISTEN_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Reaped when it ends, so it does not linger as a zombie.
    std::thread::spawn(move || child.wait());
    let stream = UnixStream::connect(&path)?;
    drop(listener);
    Ok(stream.into())
}

/// A directory only we can use, removed (with what is left in it) on drop.
struct PrivateDir(std::path::PathBuf);

impl PrivateDir {
    fn new() -> io::Result<PrivateDir> {
        use std::ffi::OsString;
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let mut template = std::env::temp_dir()
            .join("nbdkit-nbd-XXXXXX")
            .as_os_str()
            .as_bytes()
            .to_vec();
        template.push(0);
        // SAFETY: a NUL-terminated template that mkdtemp fills in place.
        if unsafe { libc::mkdtemp(template.as_mut_ptr() as *mut libc::c_char) }.is_null() {
            return Err(io::Error::last_os_error());
        }
        template.pop();
        Ok(PrivateDir(OsString::from_vec(template).into()))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
