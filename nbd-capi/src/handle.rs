//! The handle: `struct nbd_handle` of the C API.
//!
//! Lock order: `inner` first, then `name` (only for debug messages, which
//! may be printed with `inner` held). `debug` is atomic and read without
//! any lock. No thread is ever created: sync calls drive the connection on
//! the caller's thread, releasing `inner` while blocked in poll(2) so other
//! threads' calls on the same handle make progress meanwhile.
//!
//! The caller's callbacks run on the thread holding `inner` (as in libnbd,
//! "callbacks are invoked with the lock held"). A callback that calls back
//! into the same handle would deadlock there; instead every call on a
//! handle whose lock this thread holds fails with EDEADLK (see
//! [`HeldMark`] and `ffi::handle`).

use crate::callbacks::{CmdCallbacks, Debug};
use crate::connect::sock::ActivationDir;
use crate::connect::uri::Endpoint;
use crate::driver::{CmdBuf, Connection};
use crate::errors::{self, err, Error};
use crate::settings::Settings;
use nbd_core::client::{Command, Phase};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::cell::Cell;
use std::ffi::CString;
use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

thread_local! {
    /// The handle whose lock (or debug callback) this thread holds, if any.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as holding a handle while it lives.
pub struct HeldMark {
    prev: usize,
}

impl HeldMark {
    fn new(h: &nbd_handle) -> Self {
        let prev = HELD.with(|c| c.replace(h as *const nbd_handle as usize));
        HeldMark { prev }
    }
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        HELD.with(|c| c.set(self.prev));
    }
}

/// Whether this thread is inside a callback of (holds the lock of) `h`.
pub fn held_by_this_thread(h: *const nbd_handle) -> bool {
    !h.is_null() && HELD.with(|c| c.get()) == h as usize
}

/// The handle's lock, held; marks the thread for the EDEADLK check.
pub struct Held<'a> {
    // Declared first: dropped (unlocked) before the mark goes away.
    pub g: MutexGuard<'a, Inner>,
    _mark: HeldMark,
}

impl Deref for Held<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.g
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.g
    }
}

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
    /// The subprocess of nbd_connect_command or of socket activation,
    /// reaped when the handle is freed.
    pub child: Option<libc::pid_t>,
    /// Where the handle connects (or tried to), for nbd_get_uri and the
    /// TLS host name; set by `connect::open_*` also when opening fails.
    pub endpoint: Option<Endpoint>,
    /// The private directory of a socket-activated server, removed (and
    /// the server sent SIGTERM, as libnbd does: it does not exit when its
    /// client goes) when the handle is freed.
    pub activation: Option<ActivationDir>,
}

impl Inner {
    /// Where the handle stands.
    pub fn state(&self) -> State {
        if self.dead.is_some() {
            return State::Dead;
        }
        match &self.conn {
            None => State::Created,
            Some(c) => match c.client.phase() {
                Phase::Connecting => State::Connecting,
                Phase::Negotiating => State::Negotiating,
                Phase::Ready | Phase::Processing => State::Connected,
                Phase::Closed => State::Closed,
                Phase::Dead => State::Dead,
            },
        }
    }

    /// Marks a handle whose connection attempt failed as dead.
    pub fn set_dead(&mut self, e: &Error) {
        self.dead = Some(e.clone());
    }

    /// The state check: ENOTCONN while not yet connected, EINVAL in any
    /// other state the call may not run in.
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
}

/// The handle's name and debug callback, under their own lock so debug
/// messages can be emitted with or without `inner` held.
struct DebugState {
    name: CString,
    callback: Option<Debug>,
}

#[allow(non_camel_case_types)]
pub struct nbd_handle {
    inner: Mutex<Inner>,
    /// Signalled whenever the thread blocked in poll(2) returns.
    cond: Condvar,
    debug: AtomicBool,
    name: Mutex<DebugState>,
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
                endpoint: None,
                activation: None,
            }),
            cond: Condvar::new(),
            debug: AtomicBool::new(debug),
            name: Mutex::new(DebugState {
                name: CString::new(format!("nbd{n}")).unwrap_or_default(),
                callback: None,
            }),
        }
    }

    pub fn lock(&self) -> Held<'_> {
        Held {
            g: self.inner.lock(),
            _mark: HeldMark::new(self),
        }
    }

    pub fn set_debug(&self, on: bool) {
        self.debug.store(on, Ordering::Relaxed);
    }

    pub fn debug_on(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> CString {
        self.name.lock().name.clone()
    }

    pub fn set_name(&self, name: CString) {
        self.name.lock().name = name;
    }

    /// Replaces the debug callback (None clears it); the old one's free
    /// runs once, outside the lock.
    pub fn set_debug_callback(&self, cb: Option<Debug>) {
        let old = std::mem::replace(&mut self.name.lock().callback, cb);
        drop(old);
    }

    /// Emits a debug message as libnbd does: to the debug callback if one
    /// is set, else `libnbd: debug: NAME: CONTEXT: MESSAGE` on stderr.
    pub fn debug(&self, msg: &str) {
        if !self.debug_on() {
            return;
        }
        let mut d = self.name.lock();
        if let Some(cb) = d.callback.as_mut() {
            let ctx = CString::new(errors::context().unwrap_or("unknown")).unwrap_or_default();
            let m = CString::new(msg.replace('\0', "")).unwrap_or_default();
            let _mark = HeldMark::new(self);
            cb.call(&ctx, &m);
            return;
        }
        let name = d.name.clone();
        drop(d);
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

    /// The generated wrappers' critical section: `f` runs with the handle
    /// lock held, once for the whole call: zeroing the read buffer, the
    /// state check, the flags checks against the strict mode, and the
    /// body, which releases the lock only while blocked in poll(2). The
    /// body must not lock the handle again (`g` is the lock).
    pub fn with_lock<T>(
        &self,
        f: impl FnOnce(&mut Held<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut g = self.lock();
        let r = f(&mut g);
        self.print_transitions(&mut g);
        r
    }

    /// LIBNBD_DEBUG: prints the state transitions the connection recorded
    /// since last time, and starts or stops recording them as debugging
    /// is on or off (nbd_set_debug may change it at any time).
    pub fn print_transitions(&self, g: &mut Inner) {
        let on = self.debug_on();
        let Some(conn) = g.conn.as_mut() else {
            return;
        };
        match (&mut conn.transitions, on) {
            (None, true) => {
                let now = conn.state_name();
                conn.transitions = Some(crate::transitions::Transitions::starting_at(now));
            }
            (Some(_), false) => conn.transitions = None,
            _ => {}
        }
        let Some(lines) = conn.transitions.as_mut().map(|t| t.take()) else {
            return;
        };
        for line in lines {
            self.debug(&line);
            // As libnbd, name the TLS session once its handshake is over
            // (asked only then: this runs on every call and wait).
            if line.contains("TLS_HANDSHAKE -> ") {
                if let Some(tls) = conn.tls_description() {
                    self.debug(&format!("connection is using TLS: {tls}"));
                }
            }
        }
    }

    /// Takes over a socket (connected, or with a non-blocking connect(2)
    /// under way) and starts the handshake without waiting for it: the
    /// nbd_aio_connect* calls. The handle is connecting meanwhile; the
    /// caller's event loop (or a sync call) moves it on.
    pub fn attach_async(
        &self,
        g: &mut Held<'_>,
        sock: OwnedFd,
        child: Option<libc::pid_t>,
    ) -> Result<(), Error> {
        self.attach_locked(g, sock, child, false)?;
        if let Some(c) = g.conn.as_mut() {
            c.flush_writes();
        }
        Ok(())
    }

    fn attach_locked(
        &self,
        g: &mut Held<'_>,
        sock: OwnedFd,
        child: Option<libc::pid_t>,
        connected: bool,
    ) -> Result<(), Error> {
        if child.is_some() {
            g.child = child;
        }
        let config = g.settings.core_config();
        match Connection::new(sock, config, connected) {
            Ok(mut c) => {
                // Even with TLS disabled: nbd_opt_starttls may still ask
                // for it in option mode.
                let host = match g.endpoint.clone() {
                    Some(Endpoint::Tcp { host, .. }) => Some(host),
                    _ => None,
                };
                c.tls_params = g.settings.tls_params(host);
                if self.debug_on() {
                    c.transitions = Some(crate::transitions::Transitions::new());
                }
                g.conn = Some(c)
            }
            Err(e) => {
                g.dead = Some(e.clone());
                return Err(e);
            }
        }
        self.debug("connected; negotiating");
        Ok(())
    }

    /// Takes over a socket and runs the handshake to the end (to the
    /// negotiating state in option mode): attach_async, then wait.
    /// `connected`: the socket is known to be connected (we connected it);
    /// otherwise the kernel is asked, and a connect under way is waited for.
    pub fn attach(
        &self,
        g: &mut Held<'_>,
        sock: OwnedFd,
        child: Option<libc::pid_t>,
        connected: bool,
    ) -> Result<(), Error> {
        self.attach_locked(g, sock, child, connected)?;
        self.wait_connected(g)
    }

    /// Waits until the handshake is over (or paused for option mode).
    pub fn wait_connected(&self, g: &mut Held<'_>) -> Result<(), Error> {
        self.wait(g, |c| match c.client.phase() {
            Phase::Ready | Phase::Processing | Phase::Negotiating => Some(Ok(())),
            Phase::Dead | Phase::Closed => Some(Err(fatal(c))),
            Phase::Connecting => None,
        })
    }

    /// Sends one command and waits for its reply.
    pub fn run(&self, g: &mut Held<'_>, cmd: Command, buf: CmdBuf) -> Result<(), Error> {
        self.run_with(g, cmd, buf, None)
    }

    /// Sends one command with callbacks and waits for its reply. Runs in
    /// the wrapper's critical section: a refused command's frees run with
    /// the lock held, as libnbd's FREE_CALLBACK does before unlocking.
    pub fn run_with(
        &self,
        g: &mut Held<'_>,
        cmd: Command,
        buf: CmdBuf,
        cbs: Option<CmdCallbacks>,
    ) -> Result<(), Error> {
        self.run_filtered(g, cmd, buf, &[], cbs)
    }

    /// [`Self::run_with`] for a block status filtered to the contexts
    /// `filter` (none: not filtered).
    pub fn run_filtered(
        &self,
        g: &mut Held<'_>,
        cmd: Command,
        buf: CmdBuf,
        filter: &[u32],
        mut cbs: Option<CmdCallbacks>,
    ) -> Result<(), Error> {
        let cookie = submit(g, cmd, buf, filter, &mut cbs)?;
        let done = self.wait(g, |c| c.take_done(cookie).map(Ok))?;
        match done.result {
            // A command stranded by the connection's end completes with
            // ENOTCONN (what its callbacks see); the sync call reports why
            // the connection ended, as libnbd's does from its poll.
            Err(e) if e.errno == libc::ENOTCONN => match g.conn.as_ref() {
                Some(c) if c.client.fatal_error().is_some() => Err(fatal(c)),
                _ => Err(e),
            },
            r => r,
        }
    }

    /// Queues one command and starts sending it: the AIO calls. Returns
    /// its cookie. Refused commands drop `cbs` (their frees run) without
    /// calling the completion.
    pub fn aio(
        &self,
        g: &mut Held<'_>,
        cmd: Command,
        buf: CmdBuf,
        cbs: Option<CmdCallbacks>,
    ) -> Result<u64, Error> {
        self.aio_filtered(g, cmd, buf, &[], cbs)
    }

    /// [`Self::aio`] for a block status filtered to the contexts `filter`.
    pub fn aio_filtered(
        &self,
        g: &mut Held<'_>,
        cmd: Command,
        buf: CmdBuf,
        filter: &[u32],
        mut cbs: Option<CmdCallbacks>,
    ) -> Result<u64, Error> {
        let cookie = submit(g, cmd, buf, filter, &mut cbs)?;
        if let Some(c) = g.conn.as_mut() {
            c.flush_writes();
            if c.polling && c.client.wants_write() {
                c.wake_poller();
            }
        }
        Ok(cookie)
    }

    /// Drives the connection until `check` has an answer (for calls
    /// outside this module: options in opt mode).
    pub fn wait_for<T>(
        &self,
        g: &mut Held<'_>,
        check: impl FnMut(&mut Connection) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        self.wait(g, check)
    }

    /// Disconnects cleanly and waits until the server has closed.
    pub fn shutdown(&self, g: &mut Held<'_>) -> Result<(), Error> {
        let conn = conn_mut(g)?;
        if matches!(conn.client.phase(), Phase::Closed | Phase::Dead) {
            return Ok(());
        }
        // After nbd_aio_disconnect, nbd_shutdown only waits (as libnbd).
        if !conn.client.disconnect_requested() {
            conn.client.disconnect()?;
        }
        self.wait(g, |c| match c.client.phase() {
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
        held: &mut Held<'_>,
        mut check: impl FnMut(&mut Connection) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let g = &mut held.g;
        // The caller has usually just queued a request: send it and go
        // straight to poll(2) for the answer, rather than try a recv(2)
        // that cannot succeed yet. poll sees data that is already there,
        // so nothing is missed; later rounds read and write as usual.
        let mut first = true;
        let r = catch_unwind(AssertUnwindSafe(|| loop {
            let conn = conn_mut(g)?;
            if std::mem::take(&mut first) {
                conn.pump_write();
            } else {
                conn.pump();
            }
            self.print_transitions(g);
            let conn = conn_mut(g)?;
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
            let wake = conn.wake_fd()?;
            conn.polling = true;
            let sock = conn.fd();
            // Spin only while waiting for commands' replies: the
            // handshake's few waits are often on a server slow to start a
            // connection, where each new connection's first spins would
            // fail (they cost connect/close cycles 10 % in BENCHMARKS.md).
            let may_spin =
                conn.client.phase() == Phase::Processing && !conn.client.disconnect_sent();
            let mut spin = conn.spin;
            let res = MutexGuard::unlocked(g, || {
                Connection::poll(sock, wake, events, may_spin.then_some(&mut spin))
            });
            if let Some(conn) = g.conn.as_mut() {
                conn.polling = false;
                conn.spin = spin;
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

/// Submits a command; its callbacks, if any, are taken from `cbs` and
/// remembered by cookie. On failure they stay in `cbs`, for the caller to
/// drop (run their frees) once the lock is released.
fn submit(
    g: &mut Held<'_>,
    cmd: Command,
    mut buf: CmdBuf,
    filter: &[u32],
    cbs: &mut Option<CmdCallbacks>,
) -> Result<u64, Error> {
    // nbd_set_pread_initialize: the generated wrapper has zeroed the
    // buffer before any check (wrap::initialize).
    buf.kind = cmd.kind;
    let conn = conn_mut(g)?;
    let cookie = if filter.is_empty() {
        conn.client.submit(cmd, buf)
    } else {
        conn.client.submit_block_status_filter(cmd, filter, buf)
    }
    .map_err(|(e, _)| e)?;
    if let Some(c) = cbs.take() {
        if !c.is_empty() {
            conn.cbs.insert(cookie, c);
        }
    }
    Ok(cookie)
}

pub fn conn_mut(g: &mut Inner) -> Result<&mut Connection, Error> {
    if let Some(e) = &g.dead {
        return Err(e.clone());
    }
    g.conn
        .as_mut()
        .ok_or_else(|| err(libc::ENOTCONN, "not connected"))
}

/// Why a connection ended.
pub fn fatal(c: &Connection) -> Error {
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
        // Close the socket first: a subprocess server exits on EOF; a
        // socket-activated one is told to go.
        self.conn = None;
        if let (Some(pid), Some(_)) = (self.child, &self.activation) {
            // SAFETY: plain syscall; the child is ours and not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
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
        if let Some(dir) = self.activation.take() {
            dir.remove();
        }
    }
}
