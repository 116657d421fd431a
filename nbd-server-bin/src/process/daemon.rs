//! Going into the background. Both forks must happen before any thread
//! is started.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::io::IntoRawFd;

use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, setsid, ForkResult};

/// In the daemon: tells the waiting parent that we are ready.
pub struct Ready(File);

impl Ready {
    /// The parent exits 0 and its caller may connect.
    pub fn notify(self) {
        let mut f = self.0;
        let _ = f.write_all(b"1");
    }
}

/// Forks into the background, in a new session. The parent waits until
/// the daemon calls `Ready::notify`, then exits 0; if the daemon dies
/// first, the parent exits with its status (at least 1).
pub fn fork_when_ready() -> io::Result<Ready> {
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: the caller starts no thread before this.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(rd);
            let _ = setsid();
            Ok(Ready(File::from(wr)))
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut b = [0u8; 1];
            // read_exact retries after EINTR.
            if File::from(rd).read_exact(&mut b).is_ok() {
                _exit(0);
            }
            let code = match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => c.max(1),
                _ => 1,
            };
            _exit(code)
        }
    }
}

/// Forks; the parent exits 0 at once (the caller has bound its sockets
/// already). The child runs in a new session.
pub fn fork_detached() -> io::Result<()> {
    // SAFETY: the caller starts no thread before this.
    match unsafe { fork() }? {
        ForkResult::Child => {
            let _ = setsid();
            Ok(())
        }
        ForkResult::Parent { .. } => _exit(0),
    }
}

/// Standard input and output, and standard error unless `keep_stderr`,
/// to /dev/null.
pub fn null_stdio(keep_stderr: bool) {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    // It may itself be 0, 1 or 2 when those were closed: kept open then.
    let null = null.into_raw_fd();
    let last = if keep_stderr { 1 } else { 2 };
    for fd in 0..=last {
        let _ = nix::unistd::dup2(null, fd);
    }
    if null > 2 {
        let _ = nix::unistd::close(null);
    }
}

/// The parent of a fork leaves with _exit(2): the clean-up (atexit
/// handlers, buffered output) belongs to the child.
fn _exit(code: i32) -> ! {
    // SAFETY: _exit takes an integer and does not return.
    unsafe { libc::_exit(code) }
}
