//! Sleeps that end early, as nbdkit_nanosleep's do: when the server is
//! shutting down, or when the client of the connection the sleeping
//! thread serves has hung up.
//!
//! A sleep inside a request (the delay filter's, a C plugin's
//! nbdkit_nanosleep) would otherwise keep a dead connection open for its
//! whole length, and with it anything the connection holds: under
//! `noparallel serialize=connections` the next client would wait for a
//! reply nobody reads. The connection's threads name their client's
//! socket here ([`watch_client`]); a sleep polls it for a hang-up
//! (POLLRDHUP, or POLLHUP/POLLERR, which also come once our own side shut
//! the socket down on killing the connection).

use std::cell::Cell;
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

thread_local! {
    /// The client socket (or input pipe) of the connection this thread
    /// is serving, while it serves it.
    static CLIENT_FD: Cell<Option<RawFd>> = const { Cell::new(None) };
}

/// While alive, sleeps on this thread watch `fd` for a hang-up.
pub struct Watching {
    before: Option<RawFd>,
}

/// Marks this thread as serving the client on `fd` until the guard drops.
/// The descriptor must stay open while the guard lives.
pub fn watch_client(fd: RawFd) -> Watching {
    Watching {
        before: CLIENT_FD.with(|c| c.replace(Some(fd))),
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        CLIENT_FD.with(|c| c.set(self.before));
    }
}

/// Why a sleep ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutShort {
    /// The server is shutting down.
    Shutdown,
    /// The client of this thread's connection went away.
    HungUp,
}

/// How often a sleep looks at the shutdown flag, which has no descriptor.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// Sleeps for `d`, or less if the server shuts down or this thread's
/// client hangs up.
pub fn sleep(d: Duration) -> Result<(), CutShort> {
    let fd = CLIENT_FD.with(Cell::get);
    sleep_watching(d, fd, shutdown_requested)
}

/// The server's shutdown flag.
#[cfg(not(test))]
fn shutdown_requested() -> bool {
    crate::process::shutdown::requested()
}

/// Unit tests share one process, in which exitlast's and exitwhen's own
/// tests raise the shutdown flag: read there, it would end other tests'
/// sleeps (the delay filter's) at random. This module's tests give
/// `sleep_watching` a flag of their own instead.
#[cfg(test)]
fn shutdown_requested() -> bool {
    false
}

/// [`sleep`], with the client socket and the shutdown flag given (tests
/// give their own: other tests in the process may request a shutdown).
fn sleep_watching(
    d: Duration,
    fd: Option<RawFd>,
    shutting_down: impl Fn() -> bool,
) -> Result<(), CutShort> {
    let end = Instant::now() + d;
    loop {
        if shutting_down() {
            return Err(CutShort::Shutdown);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        let slice = (end - now).min(SHUTDOWN_CHECK);
        match fd {
            Some(fd) if hung_up(fd, slice) => return Err(CutShort::HungUp),
            Some(_) => {}
            None => std::thread::sleep(slice),
        }
    }
}

/// Waits up to `timeout` for `fd` to report a hang-up; true if it did.
/// Data waiting to be read (the client's next requests) does not count.
fn hung_up(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // Rounded up, so that a short remainder still waits.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, for the length given.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r <= 0 {
        // A timeout, or EINTR: the caller's loop looks again.
        return false;
    }
    p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_hang_up_ends_the_sleep() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = Some(ours.as_raw_fd());
        // Pending data is not a hang-up: the sleep runs its course.
        use std::io::Write;
        (&theirs).write_all(b"x").unwrap();
        assert_eq!(
            sleep_watching(Duration::from_millis(10), fd, || false),
            Ok(())
        );
        drop(theirs);
        assert_eq!(
            sleep_watching(Duration::from_secs(30), fd, || false),
            Err(CutShort::HungUp)
        );
        assert_eq!(
            sleep_watching(Duration::from_secs(30), None, || true),
            Err(CutShort::Shutdown)
        );
    }

    #[test]
    fn the_thread_watches_its_client() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        {
            let _w = watch_client(ours.as_raw_fd());
            assert_eq!(CLIENT_FD.with(Cell::get), Some(ours.as_raw_fd()));
        }
        assert_eq!(CLIENT_FD.with(Cell::get), None);
        drop(theirs);
        assert_eq!(
            sleep_watching(Duration::from_millis(1), None, || false),
            Ok(())
        );
    }
}
