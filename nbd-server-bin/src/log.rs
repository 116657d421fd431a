//! Where messages go (nbdkit-service(1), LOGGING).
//!
//! Errors go to standard error, to the system log or nowhere (`--log`).
//! Without `--log`: standard error in the foreground (and with socket
//! activation), the system log once forked into the background. Debug
//! messages (`-v`) always go to standard error, never to the system log.
//!
//! The system log is written like libc's syslog(3): one RFC 3164 datagram
//! per message, `<PRI>Mmm dd hh:mm:ss nbdkit[PID]: MSG`, facility user,
//! to the /dev/log datagram socket. For tests only, the environment
//! variable `NBDKIT_TEST_SYSLOG_SOCKET` names another socket (nbdkit has
//! no option for this path).

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use parking_lot::Mutex;

use crate::cli::LogDest;

/// The environment variable that overrides /dev/log, for tests only.
pub const TEST_SYSLOG_ENV: &str = "NBDKIT_TEST_SYSLOG_SOCKET";

const STDERR: u8 = 0;
const SYSLOG: u8 = 1;
const NULL: u8 = 2;

static DEST: AtomicU8 = AtomicU8::new(STDERR);
static VERBOSE: AtomicBool = AtomicBool::new(false);
static SYSLOG_SOCK: Mutex<Option<UnixDatagram>> = Mutex::new(None);
/// The name messages carry (`nbdkit` unless a binary sets another).
static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
/// A log file (xnbd-server's `--logpath`): when set, messages go there.
static LOG_FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Names the program in messages (once, at startup).
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("nbdkit")
}

/// Sends messages to `f` (appended, one line each) from now on.
pub fn set_file(f: std::fs::File) {
    *LOG_FILE.lock() = Some(f);
}

/// Writes to the log file if there is one; false if there is none.
fn to_file(kind: &str, msg: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write;
    match LOG_FILE.lock().as_mut() {
        Some(f) => {
            let _ = writeln!(
                f,
                "{} {}[{}]: {kind}{msg}",
                timestamp(),
                program(),
                std::process::id()
            );
            true
        }
        None => false,
    }
}

/// An informational message: to the log file or the system log when one
/// was chosen, else to standard error.
pub fn log_info(msg: std::fmt::Arguments<'_>) {
    if to_file("", msg) {
        return;
    }
    match DEST.load(Ordering::SeqCst) {
        SYSLOG => syslog(6, &format!("{msg}")),
        NULL => {}
        _ => eprintln!("{}: {msg}", program()),
    }
}

/// Sets where errors go from now on.
pub fn set_dest(d: LogDest) {
    let v = match d {
        LogDest::Stderr => STDERR,
        LogDest::Syslog => SYSLOG,
        LogDest::Null => NULL,
    };
    DEST.store(v, Ordering::SeqCst);
}

pub fn set_verbose(v: bool) {
    VERBOSE.store(v, Ordering::SeqCst);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// An error message: `nbdkit: error: MSG` on stderr, or to syslog.
pub fn log_error(msg: std::fmt::Arguments<'_>) {
    log_error_in("", msg)
}

thread_local! {
    /// This thread's number among its connection's request workers, when
    /// requests run on workers (see [`WorkerName`]).
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// While alive, this thread is worker `n` of its connection: nbdkit
/// names a plugin's messages from its request workers `NAME.N`, and
/// those from the connection's own thread `NAME[CONNECTION]`.
pub struct WorkerName(());

impl WorkerName {
    pub fn set(n: usize) -> WorkerName {
        WORKER.with(|w| w.set(Some(n)));
        WorkerName(())
    }
}

impl Drop for WorkerName {
    fn drop(&mut self) {
        WORKER.with(|w| w.set(None));
    }
}

/// This thread's worker number, if it is serving requests as one.
pub fn worker() -> Option<usize> {
    WORKER.with(|w| w.get())
}

/// An error message from a thread that serves a connection, named as
/// nbdkit names such threads: the plugin's name, with the connection's
/// number when it has one (not under `-s`), as in
/// `nbdkit: perl[2]: error: MSG`.
/// `thread` empty: not named (`nbdkit: error: MSG`).
pub fn log_error_in(thread: &str, msg: std::fmt::Arguments<'_>) {
    let kind = if thread.is_empty() {
        "error: ".to_string()
    } else {
        format!("{thread}: error: ")
    };
    if to_file(&kind, msg) {
        return;
    }
    match DEST.load(Ordering::SeqCst) {
        SYSLOG => syslog(3, &format!("{kind}{msg}")),
        NULL => {}
        _ => eprintln!("{}: {kind}{msg}", program()),
    }
}

/// A debug message (`-v`): always standard error.
pub fn log_debug(msg: std::fmt::Arguments<'_>) {
    if verbose() {
        eprintln!("{}: debug: {msg}", program());
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)*) => { $crate::log::log_error(format_args!($($arg)*)) };
}
#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)*) => {
        if $crate::log::verbose() {
            $crate::log::log_debug(format_args!($($arg)*))
        }
    };
}
// Exported so that the binaries use them as `log::error!`, `log::debug!`.
pub use crate::{__log_debug as debug, __log_error as error};

fn syslog_path() -> std::path::PathBuf {
    std::env::var_os(TEST_SYSLOG_ENV)
        .filter(|p| !p.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| "/dev/log".into())
}

/// Local time as syslog writes it: "Mmm dd hh:mm:ss" (day padded with a
/// space).
fn timestamp() -> String {
    // SAFETY: time and localtime_r fill locals.
    let tm = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MON[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// One RFC 3164 record, facility user (1).
pub fn format_record(severity: u8, pid: u32, msg: &str) -> String {
    let pri = 8 + severity as u32;
    format!("<{pri}>{} {}[{pid}]: {msg}", timestamp(), program())
}

/// Sends one message to the system log. If the log socket is missing, the
/// message goes to standard error rather than being lost.
fn syslog(severity: u8, msg: &str) {
    let rec = format_record(severity, std::process::id(), msg);
    let mut g = SYSLOG_SOCK.lock();
    for _ in 0..2 {
        if g.is_none() {
            *g = UnixDatagram::unbound()
                .and_then(|s| s.connect(syslog_path()).map(|()| s))
                .ok();
        }
        match g.as_ref().map(|s| s.send(rec.as_bytes())) {
            Some(Ok(_)) => return,
            // The log daemon restarted: reconnect once.
            Some(Err(_)) => *g = None,
            None => break,
        }
    }
    eprintln!("{}: {msg}", program());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_format() {
        let r = format_record(3, 42, "error: x");
        assert!(r.starts_with("<11>"), "{r}");
        assert!(r.ends_with(" nbdkit[42]: error: x"), "{r}");
        // "<11>Mmm dd hh:mm:ss " is 4 + 16 bytes.
        assert_eq!(&r[20..], "nbdkit[42]: error: x");
        assert_eq!(&r[10..11], " ");
        assert_eq!(&r[13..14], ":");
    }
}
