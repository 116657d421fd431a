//! The exitwhen filter: the server exits when an event happens outside
//! it — a file appears or goes away, a pipe closes, a process exits, or a
//! script says so (nbdkit-exitwhen-filter(1)).
//!
//! `exit-when-file-created=`, `exit-when-file-deleted=`,
//! `exit-when-pipe-closed=FD`, `exit-when-process-exits=PID`,
//! `exit-when-script=SCRIPT` (exit status 88 means "exit"), each
//! repeatable, checked every `exit-when-poll=SECS` (default 60, fractions
//! allowed). When an event happens the server exits at once if no client
//! is connected, else new clients are refused and it exits when the last
//! one goes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nbd_core::server::backend::{ConnectionInfo, Error, Result};

use crate::chain::{Below, Filter, FilterHandle, OpenNext};
use crate::params::{parse_duration, Params};
use crate::process::shutdown;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "exitwhen",
    params: &[
        ("exit-when-file-created", "exit when this file exists"),
        (
            "exit-when-file-deleted",
            "exit when this file does not exist",
        ),
        (
            "exit-when-pipe-closed",
            "exit when the other end of this file descriptor closes",
        ),
        (
            "exit-when-process-exits",
            "exit when the process with this ID exits",
        ),
        (
            "exit-when-script",
            "exit when this shell script exits with status 88",
        ),
        (
            "exit-when-poll",
            "seconds between checks of the events (default 60)",
        ),
    ],
    open: |p, _| Ok(Arc::new(ExitWhen::open(p)?)),
};

#[derive(Debug, Clone)]
enum Event {
    Created(PathBuf),
    Deleted(PathBuf),
    PipeClosed(i32),
    ProcessExits(i32),
    Script(String),
}

pub struct ExitWhen {
    state: Arc<ExitState>,
}

struct ExitState {
    events: Vec<Event>,
    poll: Duration,
    fired: AtomicBool,
    /// Clients connected now.
    count: AtomicU64,
    /// The process the poller runs in (a fork loses threads).
    poller_pid: AtomicI32,
}

impl ExitState {
    fn check(&self) -> bool {
        self.events.iter().any(|e| match e {
            Event::Created(p) => p.exists(),
            Event::Deleted(p) => !p.exists(),
            Event::PipeClosed(fd) => {
                let mut pfd = libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll of one descriptor with no wait.
                let r = unsafe { libc::poll(&mut pfd, 1, 0) };
                r > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
            }
            // SAFETY: kill with signal 0 only checks the process exists.
            Event::ProcessExits(pid) => (unsafe { libc::kill(*pid, 0) }) != 0,
            Event::Script(s) => std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(s)
                .status()
                .map(|st| st.code() == Some(88))
                .unwrap_or(false),
        })
    }

    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) == 0 {
            shutdown::request();
        }
    }

    fn ensure_poller(self: &Arc<Self>) {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        if self.poller_pid.swap(me, Ordering::SeqCst) == me {
            return;
        }
        let st = Arc::clone(self);
        std::thread::spawn(move || loop {
            if st.check() {
                st.fire();
                return;
            }
            std::thread::sleep(st.poll);
        });
    }
}

impl ExitWhen {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let mut events = Vec::new();
        for v in p.take_all("exit-when-file-created") {
            events.push(Event::Created(v.into()));
        }
        for v in p.take_all("exit-when-file-deleted") {
            events.push(Event::Deleted(v.into()));
        }
        for v in p.take_all("exit-when-pipe-closed") {
            events.push(Event::PipeClosed(
                v.parse()
                    .map_err(|_| p.err(format!("bad file descriptor: {v}")))?,
            ));
        }
        for v in p.take_all("exit-when-process-exits") {
            events.push(Event::ProcessExits(
                v.parse()
                    .map_err(|_| p.err(format!("bad process ID: {v}")))?,
            ));
        }
        for v in p.take_all("exit-when-script") {
            events.push(Event::Script(v));
        }
        let poll = p
            .take_with("exit-when-poll", parse_duration)?
            .unwrap_or(Duration::from_secs(60));
        if poll.is_zero() {
            return Err(p.err("exit-when-poll must be greater than 0"));
        }
        let state = Arc::new(ExitState {
            events,
            poll,
            fired: AtomicBool::new(false),
            count: AtomicU64::new(0),
            poller_pid: AtomicI32::new(0),
        });
        Ok(ExitWhen { state })
    }
}

impl Filter for ExitWhen {
    /// Polling starts in the server's final process, before any client
    /// connects (a thread started earlier would not survive --fork's
    /// fork), so an event that happens before the first connection still
    /// ends the server.
    fn after_fork(&self) -> std::result::Result<(), String> {
        if !self.state.events.is_empty() {
            self.state.ensure_poller();
        }
        Ok(())
    }

    fn preconnect(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<()> {
        if !self.state.events.is_empty() {
            self.state.ensure_poller();
        }
        next.preconnect(info)
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        if self.state.fired.load(Ordering::SeqCst) {
            return Err(Error::new(
                libc::ESHUTDOWN,
                "exitwhen: exit condition met, refusing new clients",
            ));
        }
        next.open(info)?;
        self.state.count.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(self))
    }
}

impl FilterHandle for ExitWhen {
    fn close(&self, _info: &ConnectionInfo) {
        if self.state.count.fetch_sub(1, Ordering::SeqCst) == 1
            && self.state.fired.load(Ordering::SeqCst)
        {
            shutdown::request();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::info;

    #[test]
    fn bad_values() {
        let e = |k: &str, v: &str| {
            let mut p = Params::new("exitwhen", vec![(k.into(), v.into())]);
            ExitWhen::open(&mut p).err().unwrap()
        };
        assert!(e("exit-when-pipe-closed", "x").contains("bad file descriptor"));
        assert!(e("exit-when-process-exits", "x").contains("bad process ID"));
        assert!(e("exit-when-poll", "0").contains("greater than 0"));
    }

    #[test]
    fn refuses_new_clients_once_fired() {
        use crate::chain::Chain;
        use crate::plugins::null::Null;
        // No events: no poller; the event is made to have happened.
        let mut p = Params::new("exitwhen", vec![]);
        let f = Arc::new(ExitWhen::open(&mut p).unwrap());
        f.state.fired.store(true, Ordering::SeqCst);
        let chain = Arc::new(Chain::new(Arc::new(Null::new(0)), vec![f]));
        let info = info();
        assert_eq!(chain.open(info).err().unwrap().errno, libc::ESHUTDOWN);
    }
}
