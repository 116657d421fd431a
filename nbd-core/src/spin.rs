//! When a thread about to block for its peer should busy-poll first, and
//! which threads may.
//!
//! A synchronous round trip (one request in flight) puts the waiting side
//! to sleep until the other side answers. Where a core that goes idle is
//! slow to wake (virtual machines with halt-polling, deep C-states), that
//! wake-up can cost more than the work it waits for, so both our server
//! (waiting for a client's next request) and our library (waiting for a
//! server's reply) first poll their socket without blocking for a few tens
//! of microseconds. The polling itself, and its clock, belong to those
//! callers; this module holds the two rules that keep the CPU it burns
//! bounded, shared so that both sides follow the same ones:
//!
//! - [`SpinBackoff`]: a spin that finds nothing makes its thread block at
//!   once for its next 1, 2, 4 ... up to [`MAX_BACKOFF`] waits (doubling
//!   while spins keep failing, back to none after one succeeds), so an
//!   idle or slow peer, or a machine too busy to run the peer promptly,
//!   costs a spin now and then, not one per wait;
//! - [`SpinSlot`]: at most one thread per spare core (the cores beyond
//!   one) spins at a time in the whole process, so spinning never takes
//!   the last core from the threads doing the work, and a one-core
//!   machine never spins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The longest spin unless the caller's environment variable says.
pub const DEFAULT_LIMIT: Duration = Duration::from_micros(50);

/// The spin limit an environment variable sets, in microseconds (0 turns
/// spinning off); [`DEFAULT_LIMIT`] when it is unset or not a number.
/// Read once by each caller and kept.
pub fn limit_from_env(var: &str) -> Duration {
    limit_from(std::env::var(var).ok().as_deref())
}

/// The spin limit a variable's value sets (None: unset).
fn limit_from(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_micros)
        .unwrap_or(DEFAULT_LIMIT)
}

/// The longest back-off, in waits.
pub const MAX_BACKOFF: u32 = 64;

/// One waiting thread's (or connection's) back-off.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpinBackoff {
    /// Waits still to block at once before the next spin.
    skip: u32,
    /// The back-off after the next failed spin (0: none yet).
    backoff: u32,
}

impl SpinBackoff {
    /// Whether this wait may spin: false while backing off (and the wait
    /// is counted against the back-off).
    pub fn may_spin(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Records how a spin ended: `found` when what it waited for came.
    pub fn spun(&mut self, found: bool) {
        if found {
            self.backoff = 0;
            self.skip = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
            self.skip = self.backoff;
        }
    }

    /// How many waits block at once before the next spin.
    pub fn waits_before_next_spin(&self) -> u32 {
        self.skip
    }
}

/// Threads spinning now, in the whole process.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// How many threads may spin at once: the cores beyond one.
fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() - 1)
            .unwrap_or(0)
    })
}

/// A place among the threads allowed to spin, given back on drop.
#[derive(Debug)]
pub struct SpinSlot(());

impl SpinSlot {
    /// A place, if one is free.
    pub fn take() -> Option<SpinSlot> {
        let budget = budget();
        let mut n = SPINNING.load(Ordering::Relaxed);
        loop {
            if n >= budget {
                return None;
            }
            match SPINNING.compare_exchange_weak(n, n + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(SpinSlot(())),
                Err(now) => n = now,
            }
        }
    }
}

impl Drop for SpinSlot {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_spins_back_off_and_a_success_resets() {
        let mut b = SpinBackoff::default();
        assert!(b.may_spin());
        // Nothing comes: each failed spin doubles the waits that block at
        // once, up to 64.
        for want in [1, 2, 4, 8, 16, 32, 64, 64] {
            b.spun(false);
            assert_eq!(b.waits_before_next_spin(), want);
            for _ in 0..want {
                assert!(!b.may_spin());
            }
            assert!(b.may_spin());
        }
        // A success resets the back-off: the next failure blocks only once.
        b.spun(true);
        assert_eq!(b.waits_before_next_spin(), 0);
        assert!(b.may_spin());
        b.spun(false);
        assert_eq!(b.waits_before_next_spin(), 1);
    }

    #[test]
    fn the_limit_comes_from_its_variable_or_the_default() {
        // The parsing only: setting variables would race with other
        // threads of the test process reading the environment.
        assert_eq!(limit_from(None), DEFAULT_LIMIT);
        assert_eq!(limit_from(Some("0")), Duration::ZERO);
        assert_eq!(limit_from(Some("120")), Duration::from_micros(120));
        assert_eq!(limit_from(Some("fast")), DEFAULT_LIMIT);
        assert_eq!(
            limit_from_env("NBD_CORE_SPIN_TEST_UNSET_VARIABLE"),
            DEFAULT_LIMIT
        );
    }

    #[test]
    fn slots_are_at_most_the_spare_cores_and_come_back() {
        // Other tests in this process do not take slots, so all are free.
        let slots: Vec<SpinSlot> = std::iter::from_fn(SpinSlot::take).take(64).collect();
        assert_eq!(slots.len(), budget().min(64));
        assert!(SpinSlot::take().is_none() || budget() > 64);
        drop(slots);
        assert_eq!(SpinSlot::take().is_some(), budget() > 0);
    }
}
