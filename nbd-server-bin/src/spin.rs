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
//! So a reader whose last wait for the client was short polls the socket
//! (poll(2) with a zero timeout) for up to [`limit`] before it blocks. The
//! CPU this burns is bounded three ways:
//! - a wait that outlasts the spin turns spinning off for the connection,
//!   until a wait is short again (an idle or slow client costs one spin,
//!   not one per request);
//! - at most one thread per spare core spins at a time ([`budget`]), so a
//!   busy server does not take cores from its clients or its own workers,
//!   and a one-core machine never spins;
//! - only plain sockets spin (a TLS session may hold decrypted bytes the
//!   socket does not show).
//!
//! `NBDKIT_SPIN_US` sets the limit in microseconds (0 turns spinning off),
//! for measuring.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The longest spin when `NBDKIT_SPIN_US` does not say.
const DEFAULT_LIMIT: Duration = Duration::from_micros(50);

/// Threads spinning now, across every connection.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// How long one spin may last.
pub fn limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("NBDKIT_SPIN_US")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_micros)
            .unwrap_or(DEFAULT_LIMIT)
    })
}

/// How many threads may spin at once: the cores beyond one.
fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() - 1)
            .unwrap_or(0)
    })
}

/// One reader's spinning state.
#[derive(Debug)]
pub struct Spinner {
    /// The last wait for the client was short enough to catch by spinning.
    short_waits: bool,
}

impl Default for Spinner {
    fn default() -> Self {
        Spinner { short_waits: true }
    }
}

/// What [`Spinner::before_read`] found: the read will not block, or it may
/// and is being timed.
#[derive(Debug)]
pub enum Wait {
    Ready,
    Timed(Instant),
    Untimed,
}

impl Spinner {
    /// Call before a read that may block on `fd` (None: not a plain
    /// socket). Spins if this reader's waits have been short and a spinning
    /// slot is free.
    pub fn before_read(&mut self, fd: Option<RawFd>) -> Wait {
        let limit = limit();
        let Some(fd) = fd else {
            return Wait::Untimed;
        };
        if limit.is_zero() {
            return Wait::Untimed;
        }
        if self.short_waits {
            if let Some(_slot) = Slot::take() {
                let t0 = Instant::now();
                loop {
                    if readable(fd) {
                        return Wait::Ready;
                    }
                    if t0.elapsed() >= limit {
                        break;
                    }
                    std::hint::spin_loop();
                }
                // The client took longer than a spin: stop until a wait
                // is short again.
                self.short_waits = false;
            }
        }
        Wait::Timed(Instant::now())
    }

    /// Call after the read that [`Spinner::before_read`] prepared.
    pub fn after_read(&mut self, wait: Wait) {
        if let Wait::Timed(t0) = wait {
            if t0.elapsed() <= limit() {
                self.short_waits = true;
            }
        }
    }

    /// Whether the next read may spin (for tests).
    pub fn will_spin(&self) -> bool {
        self.short_waits
    }
}

/// A place among the threads allowed to spin, given back on drop.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let budget = budget();
        let mut n = SPINNING.load(Ordering::Relaxed);
        loop {
            if n >= budget {
                return None;
            }
            match SPINNING.compare_exchange_weak(n, n + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(Slot),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, Ordering::Release);
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
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn spins_while_waits_are_short_and_stops_after_a_long_one() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut s = Spinner::default();
        assert!(s.will_spin());
        // Data already there: ready at once, spinning stays on.
        a.write_all(b"x").unwrap();
        assert!(matches!(
            s.before_read(Some(b.as_raw_fd())),
            Wait::Ready | Wait::Timed(_)
        ));
        assert!(s.will_spin());
        let mut buf = [0u8; 1];
        std::io::Read::read(&mut &b, &mut buf).unwrap();
        // Nothing comes: the spin fails (when a slot was free) and the
        // wait is timed; a long wait keeps spinning off.
        let w = s.before_read(Some(b.as_raw_fd()));
        assert!(matches!(w, Wait::Timed(_)));
        std::thread::sleep(limit() * 4);
        s.after_read(w);
        assert!(!s.will_spin() || budget() == 0);
        // A short wait turns it back on.
        let w = s.before_read(Some(b.as_raw_fd()));
        s.after_read(w);
        assert!(s.will_spin());
    }

    #[test]
    fn only_plain_sockets_spin() {
        let mut s = Spinner::default();
        assert!(matches!(s.before_read(None), Wait::Untimed));
        assert!(s.will_spin());
    }
}
