//! The connections being served, so that the server lets those whose
//! client has already gone close their chains before it exits.
//!
//! When nbdkit's `--run` command ends (or on SIGTERM), nbdkit's main
//! thread goes on to `cleanup` and `unload` at once, and a connection
//! thread still serving a client is simply ended with the process. But a
//! client that disconnected before that (the usual `--run` case: the
//! command's client has finished) has had its connection closed by then
//! (filters' `finalize` and `close`, the plugin's `close`), and plugins
//! and filters rely on that. Here a connection thread may not yet have
//! noticed the hang-up when the exit signal arrives, so the exit waits,
//! for a bounded time, for every connection that is not serving a
//! connected client: those whose client hung up, and those closing.

use std::collections::HashMap;
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How many connections have not yet closed their chain.
static COUNT: Mutex<usize> = Mutex::new(0);
static ALL_CLOSED: Condvar = Condvar::new();

/// The sockets of connections in the transmission phase, by connection
/// number. A socket is removed before it is closed, and shut down only
/// under the lock, so a number reused by another file is never touched.
static SOCKETS: Mutex<Option<HashMap<usize, RawFd>>> = Mutex::new(None);

/// While alive, one connection counts as live (from its start until its
/// chain is closed).
pub struct Live(());

impl Live {
    pub fn enter() -> Live {
        *COUNT.lock() += 1;
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut n = COUNT.lock();
        *n -= 1;
        if *n == 0 {
            ALL_CLOSED.notify_all();
        }
    }
}

/// While alive, connection `id`'s socket `fd` may be shut down at exit.
/// Must be dropped before `fd` is closed.
pub struct Registered(usize);

pub fn register(id: usize, fd: RawFd) -> Registered {
    SOCKETS
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(id, fd);
    Registered(id)
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(m) = SOCKETS.lock().as_mut() {
            m.remove(&self.0);
        }
    }
}

/// Whether the client on `fd` has hung up (or the socket has failed).
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd, no wait; `fd` is open while registered.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Connections that are live but not serving a connected client.
fn finishing() -> usize {
    let serving = SOCKETS
        .lock()
        .as_ref()
        .map_or(0, |m| m.values().filter(|&&fd| !hung_up(fd)).count());
    COUNT.lock().saturating_sub(serving)
}

/// At exit: waits up to `limit` until every connection is either closed
/// or still serving a connected client. Returns whether none was left
/// finishing.
pub fn wait_for_finishing(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if finishing() == 0 {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Woken when a connection closes; polled for hang-ups.
        let mut n = COUNT.lock();
        if *n > 0 {
            ALL_CLOSED.wait_for(&mut n, (deadline - now).min(Duration::from_millis(10)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A connection whose client has gone is waited for until it closes;
    /// one whose client is still there is not.
    #[test]
    fn exit_waits_for_connections_whose_client_has_gone() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (busy, busy_client) = UnixStream::pair().unwrap();
        let id = usize::MAX - 7;
        let busy_id = usize::MAX - 8;
        let busy_live = Live::enter();
        let busy_reg = register(busy_id, busy.as_raw_fd());
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let live = Live::enter();
            let reg = register(id, ours.as_raw_fd());
            tx.send(()).unwrap();
            let mut b = [0u8; 1];
            // EOF once the client hangs up; then a slow close.
            let n = std::io::Read::read(&mut &ours, &mut b).unwrap();
            drop(reg);
            drop(ours);
            std::thread::sleep(Duration::from_millis(200));
            drop(live);
            n
        });
        rx.recv().unwrap();
        drop(theirs);
        assert!(wait_for_finishing(Duration::from_secs(60)));
        // The closing connection had ended by then.
        assert!(t.is_finished());
        assert_eq!(t.join().unwrap(), 0);
        drop(busy_reg);
        drop(busy_live);
        drop((busy, busy_client));
    }
}
