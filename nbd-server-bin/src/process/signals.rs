//! Signals are taken synchronously: every thread blocks them (the mask is
//! inherited by the threads started afterwards) and one thread waits for
//! them with sigwait(2). No handler runs inside another thread's code.

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

/// The signals that end the server (after its clean-up).
pub const EXIT: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// A set of signals taken by sigwait.
pub struct Signals(SigSet);

impl Signals {
    pub fn new(signals: &[Signal]) -> Self {
        Signals(signals.iter().copied().collect())
    }

    /// Blocks the set in this thread and in every thread it starts from
    /// now on, so that `wait` receives them.
    pub fn block(&self) {
        // pthread_sigmask fails only for an invalid `how`.
        let _ = self.0.thread_block();
    }

    /// The next signal of the set (blocked beforehand).
    pub fn wait(&self) -> Signal {
        loop {
            if let Ok(s) = self.0.wait() {
                return s;
            }
        }
    }
}

/// Unblocks every signal in this thread: for a child between fork and
/// exec (a signal mask survives exec). Async-signal-safe.
pub fn unblock_all() {
    let _ = SigSet::empty().thread_set_mask();
}

/// `--exit-with-parent`: SIGTERM when the parent dies. `parent` is our
/// parent at startup; false if it is already gone.
pub fn term_on_parent_death(parent: Pid) -> bool {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    nix::unistd::getppid() == parent
}
