//! The pause filter: holds requests back while told to, for example while
//! a snapshot of the storage is taken (nbdkit-pause-filter(1)).
//!
//! `pause-control=SOCKET` (required) is a Unix socket the filter listens
//! on, one control connection at a time, for one-byte commands: `p`
//! pauses: requests that arrive afterwards wait, and the answer `P` is
//! sent once every request already running has finished; `r` resumes
//! them and answers `R`. Space, tab and newline are ignored; any other
//! byte is answered `X`. Reads, writes, zeroes, trims, block status and
//! cache requests are held; flushes are not, as in nbdkit.
//!
//! The socket is bound when the server starts (an old file at the path is
//! removed first); the thread that answers it starts once the server is
//! in its final process (after daemonising).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Condvar, Mutex};

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "pause",
    params: &[(
        "pause-control",
        "the Unix socket taking the commands p (pause) and r (resume)",
    )],
    open: |p, _| Ok(Arc::new(Pause::open(p)?)),
};

/// The longest path a Unix socket address holds, without its NUL.
const UNIX_PATH_MAX: usize = 107;

#[derive(Default)]
struct State {
    paused: bool,
    /// Requests running now.
    running: u32,
}

/// The pause itself, shared by the filter and the control thread.
#[derive(Default)]
struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

impl Gate {
    /// A request may start once no pause holds it back.
    fn enter(&self) -> Running<'_> {
        let mut s = self.state.lock().unwrap();
        while s.paused {
            s = self.changed.wait(s).unwrap();
        }
        s.running += 1;
        Running(self)
    }

    /// Stops new requests and waits for the running ones to finish.
    fn pause(&self) {
        let mut s = self.state.lock().unwrap();
        if s.paused {
            return;
        }
        s.paused = true;
        crate::log::debug!("pause: pausing, waiting for requests to complete");
        while s.running > 0 {
            s = self.changed.wait(s).unwrap();
        }
        crate::log::debug!("pause: paused");
    }

    fn resume(&self) {
        let mut s = self.state.lock().unwrap();
        if s.paused {
            s.paused = false;
            self.changed.notify_all();
            crate::log::debug!("pause: resumed");
        }
    }

    /// The answer to one control byte, or `None` for one that is ignored.
    fn command(&self, c: u8) -> Option<u8> {
        match c {
            b'p' => self.pause(),
            b'r' => self.resume(),
            b' ' | b'\t' | b'\n' => return None,
            _ => return Some(b'X'),
        }
        Some(c.to_ascii_uppercase())
    }
}

/// A request running; it ends when this is dropped.
struct Running<'a>(&'a Gate);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap();
        s.running -= 1;
        self.0.changed.notify_all();
    }
}

pub struct Pause {
    gate: Arc<Gate>,
    /// The control socket, until the control thread takes it.
    listener: Mutex<Option<UnixListener>>,
}

impl Pause {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let Some(path) = p.take("pause-control") else {
            return Err("pause-control socket was not set".into());
        };
        let path = std::path::absolute(&path).map_err(|e| format!("{path}: {e}"))?;
        let len = path.as_os_str().len();
        if len > UNIX_PATH_MAX {
            return Err(format!(
                "pause-control socket path too long: length {len} > max {UNIX_PATH_MAX} bytes"
            ));
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Pause {
            gate: Default::default(),
            listener: Mutex::new(Some(listener)),
        })
    }
}

/// Serves control connections, one at a time, for as long as the server
/// runs.
fn control(listener: UnixListener, gate: Arc<Gate>) {
    for s in listener.incoming() {
        let mut s = match s {
            Ok(s) => s,
            Err(e) => {
                crate::log::error!("accept: {e}");
                continue;
            }
        };
        let mut c = [0u8; 1];
        while let Ok(1) = s.read(&mut c) {
            if let Some(answer) = gate.command(c[0]) {
                if s.write_all(&[answer]).is_err() {
                    break;
                }
            }
        }
    }
}

impl Filter for Pause {
    fn after_fork(&self) -> std::result::Result<(), String> {
        if let Some(l) = self.listener.lock().unwrap().take() {
            let gate = Arc::clone(&self.gate);
            std::thread::Builder::new()
                .name("pause-control".into())
                .spawn(move || control(l, gate))
                .map_err(|e| format!("pthread_create: {e}"))?;
        }
        Ok(())
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Pause {
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let _r = self.gate.enter();
        next.read(r)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let _r = self.gate.enter();
        next.pwrite(buf, offset, fua)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        let _r = self.gate.enter();
        next.trim(count, offset, fua)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let _r = self.gate.enter();
        next.zero(count, offset, flags)
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        let _r = self.gate.enter();
        next.cache(count, offset)
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        let _r = self.gate.enter();
        next.extents(count, offset, sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn pause_waits_for_running_requests_and_holds_new_ones() {
        let gate = Arc::new(Gate::default());
        let running = gate.enter();
        let g = Arc::clone(&gate);
        let paused = Arc::new(AtomicBool::new(false));
        let p = Arc::clone(&paused);
        let t = std::thread::spawn(move || {
            assert_eq!(g.command(b'p'), Some(b'P'));
            p.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !paused.load(Ordering::SeqCst),
            "paused with a request running"
        );
        drop(running);
        t.join().unwrap();
        // A new request waits for the resume.
        let g = Arc::clone(&gate);
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let t = std::thread::spawn(move || {
            let _r = g.enter();
            d.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!done.load(Ordering::SeqCst), "a request ran while paused");
        assert_eq!(gate.command(b'r'), Some(b'R'));
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(gate.command(b'\n'), None);
        assert_eq!(gate.command(b'q'), Some(b'X'));
        // A second resume, or pause, answers again.
        assert_eq!(gate.command(b'r'), Some(b'R'));
    }

    #[test]
    fn control_socket() {
        let dir = std::env::temp_dir().join(format!("nbd-rs-pause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("ctl");
        std::fs::write(&sock, b"stale").unwrap();
        let mut p = Params::new(
            "pause",
            vec![("pause-control".into(), sock.display().to_string())],
        );
        let f = (FILTER.open)(&mut p, false).unwrap();
        f.after_fork().unwrap();
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(b"p r\nz").unwrap();
        let mut got = [0u8; 3];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"PRX");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn required_and_bounded() {
        let mut p = Params::new("pause", vec![]);
        assert!((FILTER.open)(&mut p, false)
            .err()
            .unwrap()
            .contains("pause-control socket was not set"));
        let long = format!("/tmp/{}", "x".repeat(200));
        let mut p = Params::new("pause", vec![("pause-control".into(), long)]);
        assert!((FILTER.open)(&mut p, false)
            .err()
            .unwrap()
            .contains("too long"));
    }
}
