//! How a filter asks the server to exit (exitlast, exitwhen).
//!
//! [`request`] records the request and then, unless the server installed
//! its own handler with [`set_handler`], raises SIGTERM in this process:
//! the server's signal thread already treats SIGTERM as "clean up and exit
//! 0", so the request is honoured with no further wiring. A server that
//! wants a gentler path (stop accepting, let connections finish) installs
//! a handler at startup and may poll [`requested`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static HANDLER: OnceLock<fn()> = OnceLock::new();

/// Asks the server to shut down. Idempotent.
pub fn request() {
    if REQUESTED.swap(true, Ordering::SeqCst) {
        return;
    }
    match HANDLER.get() {
        Some(h) => h(),
        // SAFETY: kill(2) on our own pid with a signal number.
        None => unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        },
    }
}

/// Whether a shutdown has been requested.
#[allow(dead_code)]
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Installs the server's handler for [`request`] (once; later calls are
/// ignored and return `false`).
#[allow(dead_code)]
pub fn set_handler(h: fn()) -> bool {
    HANDLER.set(h).is_ok()
}
