//! A short busy-poll before a reader blocks, for clients that answer fast.
//!
//! A synchronous client (one request in flight) turns every request into a
//! round trip, and each round trip puts the reading thread to sleep in
//! read(2) until the client's next request. Where a core that goes idle is
//! slow to wake (virtual machines with halt-polling, deep C-states), that
//! wake-up costs more than serving the request: on the 2-core VM of
//! BENCHMARKS.md, synchronous 4 KiB reads ran at about 12,000 a second
//! with the reader blocking at once, and at about 35,000 when it first
//! polled the socket for up to 50 µs.
//!
//! So before it blocks, a reader polls the socket (poll(2) with a zero
//! timeout) for up to [`limit`], under the back-off and the per-process
//! limit of `nbd_core::spin` (a spin that finds nothing makes the reader
//! block at once for its next waits; at most one thread per spare core
//! spins). Only plain sockets spin: a TLS session may hold decrypted bytes
//! the socket does not show.
//!
//! `NBDKIT_SPIN_US` sets the limit in microseconds (0 turns spinning off),
//! for measuring.

use nbd_core::spin::{limit_from_env, SpinBackoff, SpinSlot};
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one spin may last (`NBDKIT_SPIN_US`, read once).
fn limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| limit_from_env("NBDKIT_SPIN_US"))
}

/// One reader's spinning state.
#[derive(Debug, Default)]
pub struct Spinner {
    backoff: SpinBackoff,
}

impl Spinner {
    /// Call before a read that may block on `fd` (None: not a plain
    /// socket). Returns once `fd` is readable or the read should block:
    /// after a spin that found nothing, while backing off, or when no
    /// spinning slot is free.
    pub fn before_read(&mut self, fd: Option<RawFd>) {
        let limit = limit();
        let Some(fd) = fd else {
            return;
        };
        if limit.is_zero() || !self.backoff.may_spin() {
            return;
        }
        if let Some(_slot) = SpinSlot::take() {
            self.spin(fd, limit);
        }
    }

    /// Polls `fd` until it is readable or `limit` has passed, and sets the
    /// back-off by the outcome.
    fn spin(&mut self, fd: RawFd, limit: Duration) {
        let t0 = Instant::now();
        let found = loop {
            if readable(fd) {
                break true;
            }
            if t0.elapsed() >= limit {
                break false;
            }
            std::hint::spin_loop();
        };
        self.backoff.spun(found);
    }

    /// How many waits block at once before the next spin (for tests).
    pub fn waits_before_next_spin(&self) -> u32 {
        self.backoff.waits_before_next_spin()
    }
}

/// Whether a read on `fd` would return at once (data, end of file or an
/// error), without taking anything from it.
fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    // The spins here call `spin` directly: `before_read` also needs one of
    // the process's spinning slots, which other tests may hold.
    const LIMIT: Duration = Duration::from_micros(50);

    #[test]
    fn failed_spins_back_off_and_a_success_resets() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut s = Spinner::default();
        // Nothing comes: each failed spin doubles the waits that block at
        // once, up to 64.
        for want in [1, 2, 4, 8, 16, 32, 64, 64] {
            s.spin(fd, LIMIT);
            assert_eq!(s.waits_before_next_spin(), want);
            for _ in 0..want {
                s.before_read(Some(fd));
            }
            assert_eq!(s.waits_before_next_spin(), 0);
        }
        // Data there: the spin succeeds at once, and the back-off resets.
        a.write_all(b"x").unwrap();
        s.spin(fd, LIMIT);
        assert_eq!(s.waits_before_next_spin(), 0);
        b.read_exact(&mut [0u8; 1]).unwrap();
        s.spin(fd, LIMIT);
        assert_eq!(s.waits_before_next_spin(), 1);
    }
}
