//! A short busy-poll before a synchronous call blocks for the server.
//!
//! A synchronous call (nbd_pread and the like) sends its request and then
//! sleeps in poll(2) until the reply comes. Where a core that goes idle
//! is slow to wake (virtual machines with halt-polling, deep C-states),
//! that wake-up can cost more than the server's work: the caller's thread is asleep when the reply arrives and
//! takes tens of microseconds to run again. libnbd always sleeps.
//!
//! So before it blocks for a reply, the wait polls its descriptors with a
//! zero timeout for up to [`limit`] (50 µs unless `LIBNBD_SPIN_US` says
//! otherwise; 0 turns it off), under nbd-core's rules that bound the CPU
//! this burns ([`nbd_core::spin`]): a spin that finds nothing makes the
//! connection block at once for its next waits, doubling up to 64 while
//! spins keep failing (so a slow server, or a machine too busy to run it
//! promptly, costs a spin now and then), and at most one thread per spare
//! core spins in the process (none on one core). It spins on the caller's
//! thread, as the wait itself does: the library still starts no threads.
//!
//! Only waits for commands' replies spin (handle.rs decides): not the
//! handshake's, whose few waits per connection are often on a server slow
//! to start one, so a new connection's first spins would mostly fail
//! (connect/close cycles were 10 % slower with them), nor the wait for the
//! server to close after NBD_CMD_DISC. The AIO calls never spin: their
//! caller owns the waiting.

use nbd_core::spin::{limit_from_env, SpinBackoff, SpinSlot};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one spin may last (`LIBNBD_SPIN_US`, read once).
pub fn limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| limit_from_env("LIBNBD_SPIN_US"))
}

/// Polls `fds` with a zero timeout until one is ready or `limit` has
/// passed, if the back-off and a free slot allow a spin at all. Returns
/// the number of ready descriptors as poll(2) does (0: none, block now;
/// -1: poll failed, errno set).
pub fn spin(backoff: &mut SpinBackoff, fds: &mut [libc::pollfd], limit: Duration) -> i32 {
    if limit.is_zero() || !backoff.may_spin() {
        return 0;
    }
    match SpinSlot::take() {
        Some(_slot) => poll_until(backoff, fds, limit),
        None => 0,
    }
}

/// The spin itself, once allowed; sets the back-off by its outcome.
fn poll_until(backoff: &mut SpinBackoff, fds: &mut [libc::pollfd], limit: Duration) -> i32 {
    let t0 = Instant::now();
    loop {
        // SAFETY: fds is a valid array of fds.len() pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        if r != 0 {
            backoff.spun(r > 0);
            return r;
        }
        if t0.elapsed() >= limit {
            backoff.spun(false);
            return 0;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn pollin(fd: i32) -> libc::pollfd {
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }
    }

    // These call `poll_until` directly: `spin` also needs one of the
    // process's spinning slots, which the other tests' waits may hold.
    #[test]
    fn a_spin_gives_up_at_its_limit_and_sees_data_that_comes() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut backoff = SpinBackoff::default();
        let limit = Duration::from_micros(200);
        // Nothing comes: the spin lasts its limit and backs off.
        let mut fds = [pollin(b.as_raw_fd())];
        let t0 = Instant::now();
        assert_eq!(poll_until(&mut backoff, &mut fds, limit), 0);
        assert!(t0.elapsed() >= limit);
        assert_eq!(backoff.waits_before_next_spin(), 1);
        assert!(!backoff.may_spin());
        // A reply arrives while spinning: seen, and the back-off resets.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            a.write_all(b"x").unwrap();
            a
        });
        let mut r = 0;
        while r == 0 {
            r = poll_until(&mut backoff, &mut fds, limit);
        }
        assert_eq!(r, 1);
        assert!(fds[0].revents & libc::POLLIN != 0);
        assert_eq!(backoff.waits_before_next_spin(), 0);
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_spin_is_off_at_limit_zero() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut backoff = SpinBackoff::default();
        let mut fds = [pollin(b.as_raw_fd())];
        assert_eq!(spin(&mut backoff, &mut fds, Duration::ZERO), 0);
        // Not a failed spin: no back-off.
        assert_eq!(backoff.waits_before_next_spin(), 0);
    }
}
