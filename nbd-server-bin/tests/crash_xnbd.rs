//! Crash consistency of xnbd-server's proxy: SIGKILL under a writing
//! client, with and without `xnbd-bgctl --cache-all` running beside it,
//! then a restart on the same cache image and bitmap. Every block must
//! read as the remote's data or as a write that may have landed, and
//! every write acknowledged with FUA or before an acknowledged FLUSH must
//! be there; never zeros, never stale data over a durable write. See
//! crash/mod.rs for the loop and what a SIGKILL can show. Also
//! `xnbd-server --target`, which writes its image itself.

mod common;
mod crash;

use std::io::BufRead;
use std::net::TcpStream;
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use crash::*;
use nbd_core::wire::consts::cmd;

const XNBD_SERVER: &str = env!("CARGO_BIN_EXE_xnbd-server");
const XNBD_BGCTL: &str = env!("CARGO_BIN_EXE_xnbd-bgctl");

/// The port in `nbd://HOST:PORT/` (nbdkit --print-uri) or in xnbd-server's
/// startup message ("... on port PORT").
fn port_in(line: &str) -> Option<u16> {
    if let Some(rest) = line.strip_prefix("nbd://") {
        return rest.split('/').next()?.rsplit(':').next()?.parse().ok();
    }
    let rest = &line[line.find(" on port ")? + 9..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Starts `cmd` and waits for the line that names its port, on standard
/// output or standard error; the servers print it once they accept
/// connections, on a port they chose (port 0).
fn start_on_port(mut cmd: Command, on_stderr: bool) -> (Child, u16) {
    if on_stderr {
        cmd.stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = cmd.stdin(Stdio::null()).spawn().expect("start server");
    let pipe: Box<dyn std::io::Read + Send> = if on_stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // Passes every line on, so that the pipe never fills.
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(pipe).lines() {
            let Ok(l) = l else { break };
            eprintln!("{l}");
            if let Some(p) = port_in(&l) {
                let _ = tx.send(p);
            }
        }
    });
    let t = Instant::now();
    loop {
        if let Ok(p) = rx.recv_timeout(Duration::from_millis(10)) {
            return (child, p);
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{cmd:?} exited: {st}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{cmd:?} did not start"
        );
    }
}

/// Our raw client over TCP (its socket type is a Unix stream, but it only
/// reads and writes the descriptor).
fn tcp_client(port: u16) -> Client {
    let t = TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.set_nodelay(true).unwrap();
    // SAFETY: the descriptor moves from the TcpStream.
    let s = unsafe { UnixStream::from_raw_fd(t.into_raw_fd()) };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    Client::connect(s, true, true)
}

/// The remote: our nbdkit serving `img` read-only; killed on drop.
struct Remote(Child, u16);

impl Remote {
    fn start(img: &Path) -> Remote {
        let mut cmd = Command::new(BIN);
        cmd.args(["-f", "-p", "0", "--print-uri", "-r", "file"])
            .arg(img);
        let (c, p) = start_on_port(cmd, false);
        Remote(c, p)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// xnbd-server on a port it picks, started again with the same arguments
/// after each kill.
struct Xnbd {
    args: Vec<String>,
    child: Option<Child>,
    port: u16,
}

impl Xnbd {
    fn new(remote_port: u16, cache: &Path, bitmap: &Path, ctl: &Path) -> Xnbd {
        let s = |p: &Path| p.to_str().unwrap().to_string();
        Xnbd {
            args: vec![
                "--lport".into(),
                "0".into(),
                "--proxy".into(),
                "127.0.0.1".into(),
                remote_port.to_string(),
                s(cache),
                s(bitmap),
                s(ctl),
            ],
            child: None,
            port: 0,
        }
    }
}

impl Xnbd {
    /// Not a proxy: `xnbd-server --target IMAGE`, which writes the image
    /// itself.
    fn target(img: &Path) -> Xnbd {
        Xnbd {
            args: vec![
                "--lport".into(),
                "0".into(),
                "--target".into(),
                img.to_str().unwrap().into(),
            ],
            child: None,
            port: 0,
        }
    }
}

impl Target for Xnbd {
    fn start(&mut self) -> (u32, Client) {
        let mut cmd = Command::new(XNBD_SERVER);
        cmd.args(&self.args);
        let (child, port) = start_on_port(cmd, true);
        let pid = child.id();
        self.child = Some(child);
        self.port = port;
        (pid, tcp_client(port))
    }
    fn connect(&self) -> Client {
        tcp_client(self.port)
    }
    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Xnbd {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Blocks the bitmap file claims cached.
fn claimed(bitmap: &Path) -> Vec<u64> {
    let raw = std::fs::read(bitmap).unwrap_or_default();
    let mut v = Vec::new();
    for (i, c) in raw.chunks_exact(8).enumerate() {
        let w = u64::from_ne_bytes(c.try_into().unwrap());
        for bit in 0..64 {
            if w & (1 << bit) != 0 && (i as u64 * 64 + bit) < NBLOCKS {
                v.push(i as u64 * 64 + bit);
            }
        }
    }
    v
}

#[test]
fn xnbd_proxy_keeps_flushed_writes_and_never_serves_stale_blocks() {
    let d = TempDir::new("crash-xnbd-proxy");
    let remote_img = d.path().join("remote.img");
    std::fs::write(&remote_img, initial_disk()).unwrap();
    let remote = Remote::start(&remote_img);
    let (cache, bitmap, ctl) = (
        d.path().join("cache.img"),
        d.path().join("bitmap"),
        d.path().join("ctl"),
    );
    let mut t = Xnbd::new(remote.1, &cache, &bitmap, &ctl);
    // Every other round, xnbd-bgctl --cache-all runs beside the writer,
    // a few blocks per request so that it is still running at the kill.
    let mut round = 0;
    let ctl2 = ctl.clone();
    crash_loop("xnbd proxy", &mut t, Promise::FlushOrFua, |_| {
        round += 1;
        (round % 2 == 0).then(|| {
            Command::new(XNBD_BGCTL)
                .args(["--blocks-per-request", "1", "--cache-all"])
                .arg(&ctl2)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
    });
    drop(t);
    assert!(
        std::fs::read(&remote_img).unwrap() == initial_disk(),
        "the proxy wrote to its remote"
    );
}

/// Only --cache-all and a client that does nothing but FLUSH (so that the
/// bitmap is written while blocks are being fetched): after the kill,
/// every block the bitmap claims holds the remote's data in the cache
/// image, and the disk reads as the remote.
#[test]
fn xnbd_cache_all_killed_leaves_no_false_bits() {
    let d = TempDir::new("crash-xnbd-cache-all");
    let remote_img = d.path().join("remote.img");
    let want = initial_disk();
    std::fs::write(&remote_img, &want).unwrap();
    let remote = Remote::start(&remote_img);
    let (cache, bitmap, ctl) = (
        d.path().join("cache.img"),
        d.path().join("bitmap"),
        d.path().join("ctl"),
    );
    let mut t = Xnbd::new(remote.1, &cache, &bitmap, &ctl);
    let mut rng = Rng::new(seed());
    quiet_writers();
    let (mut seen_claims, mut partial_rounds) = (0, 0);
    for round in 0..iterations() {
        let (pid, mut c) = t.start();
        // Flushes until the server is gone.
        let flusher = std::thread::Builder::new()
            .name(WRITER.into())
            .spawn(move || {
                while let Ok(r) = catch_unwind(AssertUnwindSafe(|| c.cmd(cmd::FLUSH, 0, 0, 0, &[])))
                {
                    assert_eq!(r.error, 0, "flush failed");
                }
            })
            .unwrap();
        let mut bg = Command::new(XNBD_BGCTL)
            .args(["--blocks-per-request", "1", "--cache-all"])
            .arg(&ctl)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.below(100)));
        sigkill(pid);
        t.reap();
        let _ = flusher.join();
        let _ = bg.kill();
        let _ = bg.wait();
        let image = std::fs::read(&cache).unwrap();
        let claims = claimed(&bitmap);
        seen_claims = seen_claims.max(claims.len());
        if !claims.is_empty() && claims.len() < NBLOCKS as usize {
            partial_rounds += 1;
        }
        for b in claims {
            let r = (b * BS) as usize..((b + 1) * BS) as usize;
            assert!(
                image[r.clone()] == want[r],
                "round {round}: the bitmap claims block {b}, the cache image does not hold it"
            );
        }
        let (pid2, mut c) = t.start();
        assert!(
            read_disk(&mut c) == want,
            "round {round}: stale or zero data"
        );
        sigkill(pid2);
        t.reap();
        // Start afresh: a full bitmap leaves --cache-all nothing to do.
        std::fs::remove_file(&bitmap).unwrap();
        std::fs::remove_file(&cache).unwrap();
    }
    eprintln!(
        "at most {seen_claims} blocks claimed at a kill; {partial_rounds} kills in the middle"
    );
}

#[test]
fn xnbd_target_keeps_flushed_and_fua_writes() {
    let (_d, img) = disk("crash-xnbd-target");
    let mut t = Xnbd::target(&img);
    crash_loop("xnbd target", &mut t, Promise::FlushOrFua, |_| None);
}
