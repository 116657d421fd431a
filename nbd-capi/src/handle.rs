//! The handle: `struct nbd_handle` of the C API.
//!
//! Lock order: `inner` first, then `name` (only for debug messages, which
//! may be printed with `inner` held). `debug` is atomic and read without
//! any lock. No thread is ever created: sync calls drive the connection on
//! the caller's thread, releasing `inner` while blocked in poll(2) so other
//! threads' calls on the same handle make progress meanwhile.

use crate::driver::{CmdBuf, Connection};
use crate::errors::{self, err, Error};
use crate::settings::Settings;
use nbd_core::client::{Command, Phase};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Where the handle stands, as the generated state checks see it (the
/// table's `api::State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Created,
    Connecting,
    Negotiating,
    Connected,
    Closed,
    Dead,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            State::Created => "newly created",
            State::Connecting => "connecting",
            State::Negotiating => "negotiating",
            State::Connected => "connected with the server",
            State::Closed => "shut down",
            State::Dead => "dead",
        }
    }
}

/// What the handle holds under its lock.
pub struct Inner {
    pub settings: Settings,
    pub conn: Option<Connection>,
    /// Set when connecting failed before the client existed, or when the
    /// connection was dropped (a panic while it was running).
    pub dead: Option<Error>,
    /// The subprocess of nbd_connect_command, reaped on close.
    pub child: Option<libc::pid_t>,
}

#[allow(non_camel_case_types)]
pub struct nbd_handle {
    inner: Mutex<Inner>,
    /// Signalled whenever the thread blocked in poll(2) returns.
    cond: Condvar,
    debug: AtomicBool,
    name: Mutex<CString>,
}

static HANDLE_COUNT: AtomicU64 = AtomicU64::new(0);

impl nbd_handle {
    pub fn new() -> Self {
        // libnbd names handles nbd1, nbd2, ... in creation order.
        let n = HANDLE_COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        // libnbd turns debugging on when LIBNBD_DEBUG is exactly "1".
        let debug = std::env::var_os("LIBNBD_DEBUG").is_some_and(|v| v == "1");
        nbd_handle {
            inner: Mutex::new(Inner {
                settings: Settings::default(),
                conn: None,
                dead: None,
                child: None,
            }),
            cond: Condvar::new(),
            debug: AtomicBool::new(debug),
            name: Mutex::new(CString::new(format!("nbd{n}")).unwrap_or_default()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    pub fn set_debug(&self, on: bool) {
        self.debug.store(on, Ordering::Relaxed);
    }

    pub fn debug_on(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> CString {
        self.name.lock().clone()
    }

    pub fn set_name(&self, name: CString) {
        *self.name.lock() = name;
    }

    /// Prints a debug message as libnbd does:
    /// `libnbd: debug: NAME: CONTEXT: MESSAGE` on stderr.
    pub fn debug(&self, msg: &str) {
        if !self.debug_on() {
            return;
        }
        let name = self.name();
        let line = match errors::context() {
            Some(ctx) => format!("libnbd: debug: {}: {ctx}: {msg}\n", name.to_string_lossy()),
            None => format!("libnbd: debug: {}: {msg}\n", name.to_string_lossy()),
        };
        // One write, so lines from threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// The `enter:` trace line of a call; returns whether tracing is on.
    pub fn trace_enter(&self, args: impl FnOnce() -> String) -> bool {
        if !self.debug_on() {
            return false;
        }
        let args = args();
        if args.is_empty() {
            self.debug("enter:");
        } else {
            self.debug(&format!("enter: {args}"));
        }
        true
    }

    pub fn state(&self) -> State {
        Self::state_of(&self.lock())
    }

    fn state_of(inner: &Inner) -> State {
        if inner.dead.is_some() {
            return State::Dead;
        }
        match &inner.conn {
            None => State::Created,
            Some(c) => match c.client.phase() {
                Phase::Connecting | Phase::Negotiating => State::Connecting,
                Phase::Ready | Phase::Processing => State::Connected,
                Phase::Closed => State::Closed,
                Phase::Dead => State::Dead,
            },
        }
    }

    /// The generated wrappers' state check: ENOTCONN while not yet
    /// connected, EINVAL in any other state the call may not run in.
    pub fn check_state(&self, allowed: &[State]) -> Result<(), Error> {
        let s = self.state();
        if allowed.contains(&s) {
            return Ok(());
        }
        let errno = if s == State::Created {
            libc::ENOTCONN
        } else {
            libc::EINVAL
        };
        let want: Vec<&str> = allowed.iter().map(|a| a.describe()).collect();
        Err(err(
            errno,
            format!(
                "invalid state: {}: the handle must be {}",
                s.describe(),
                want.join(", or ")
            ),
        ))
    }

    /// Takes over a connected socket and runs the handshake to the end.
    pub fn attach(&self, sock: OwnedFd, child: Option<libc::pid_t>) -> Result<(), Error> {
        let mut g = self.lock();
        if child.is_some() {
            g.child = child;
        }
        let config = g.settings.core_config();
        match Connection::new(sock, config) {
            Ok(c) => g.conn = Some(c),
            Err(e) => {
                g.dead = Some(e.clone());
                return Err(e);
            }
        }
        self.debug("connected; negotiating");
        self.wait(&mut g, |c| match c.client.phase() {
            Phase::Ready | Phase::Processing => Some(Ok(())),
            Phase::Dead | Phase::Closed => Some(Err(fatal(c))),
            Phase::Connecting | Phase::Negotiating => None,
        })
    }

    /// Marks a handle whose connection attempt failed as dead.
    pub fn set_dead(&self, e: &Error) {
        self.lock().dead = Some(e.clone());
    }

    /// Sends one command and waits for its reply.
    pub fn run(&self, cmd: Command, buf: CmdBuf) -> Result<(), Error> {
        let mut g = self.lock();
        let conn = conn_mut(&mut g)?;
        let cookie = conn.client.submit(cmd, buf).map_err(|(e, _)| e)?;
        self.wait(&mut g, |c| c.take_done(cookie))
    }

    /// Disconnects cleanly and waits until the server has closed.
    pub fn shutdown(&self) -> Result<(), Error> {
        let mut g = self.lock();
        let conn = conn_mut(&mut g)?;
        if matches!(conn.client.phase(), Phase::Closed | Phase::Dead) {
            return Ok(());
        }
        conn.client.disconnect()?;
        self.wait(&mut g, |c| match c.client.phase() {
            Phase::Closed | Phase::Dead => Some(Ok(())),
            _ => None,
        })
    }

    /// Drives the connection until `check` has an answer. Releases the lock
    /// while blocked in poll(2); one thread polls at a time, the others
    /// wait on `cond` and look for their own answers whenever it returns.
    ///
    /// If anything here panics, the connection is dropped, and with it
    /// every caller buffer it refers to, before the panic goes on.
    fn wait<T>(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        mut check: impl FnMut(&mut Connection) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let r = catch_unwind(AssertUnwindSafe(|| loop {
            let conn = conn_mut(g)?;
            conn.pump();
            if let Some(r) = check(conn) {
                self.cond.notify_all();
                return r;
            }
            if conn.polling {
                if conn.client.wants_write() {
                    conn.wake_poller();
                }
                self.cond.wait(g);
                continue;
            }
            let events = conn.direction();
            if events == 0 {
                // Nothing can move any more, and no answer: the connection
                // is finished without one.
                return Err(fatal(conn));
            }
            conn.polling = true;
            let (sock, wake) = (conn.fd(), conn.wake_fd());
            let res = MutexGuard::unlocked(g, || Connection::poll(sock, wake, events));
            if let Some(conn) = g.conn.as_mut() {
                conn.polling = false;
                if let Err(e) = res {
                    conn.client.fail(e);
                }
            }
            self.cond.notify_all();
        }));
        match r {
            Ok(r) => r,
            Err(panic) => {
                g.conn = None;
                g.dead = Some(err(libc::EIO, "connection dropped after an internal error"));
                self.cond.notify_all();
                resume_unwind(panic)
            }
        }
    }
}

impl Default for nbd_handle {
    fn default() -> Self {
        Self::new()
    }
}

fn conn_mut<'a>(g: &'a mut MutexGuard<'_, Inner>) -> Result<&'a mut Connection, Error> {
    if let Some(e) = &g.dead {
        return Err(e.clone());
    }
    g.conn
        .as_mut()
        .ok_or_else(|| err(libc::ENOTCONN, "not connected"))
}

/// Why a connection ended.
fn fatal(c: &Connection) -> Error {
    match c.client.fatal_error() {
        Some(e) => e.clone(),
        None => match c.client.phase() {
            Phase::Closed => err(libc::ESHUTDOWN, "connection closed"),
            _ => err(libc::ECONNRESET, "connection ended unexpectedly"),
        },
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Close the socket first: a subprocess server exits on EOF.
        self.conn = None;
        if let Some(pid) = self.child.take() {
            let mut status = 0;
            loop {
                // SAFETY: plain syscall on our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
        }
    }
}
